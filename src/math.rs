//! Transcendental functions with the same bits on every target. `f64::ln` and the like call
//! the platform's libm: wasi-libc's in `dist/sd.wasm`, a Rust port of an older musl in the
//! browser build, glibc natively; those disagree in the last bit for some inputs (measured
//! over 10^6 inputs each: f64 `ln` and `exp`, f32 `ln`, `exp` and `powf` differ between
//! wasm32-wasip1 and wasm32-unknown-unknown), and one such bit in the noise or the timestep
//! embedding made the page's picture differ from the CLI's. The `libm` crate is the same Rust
//! code on every target.

pub fn ln(x: f64) -> f64 {
    libm::log(x)
}

pub fn ln_1p(x: f64) -> f64 {
    libm::log1p(x)
}

pub fn exp(x: f64) -> f64 {
    libm::exp(x)
}

pub fn sin(x: f64) -> f64 {
    libm::sin(x)
}

pub fn cos(x: f64) -> f64 {
    libm::cos(x)
}

pub fn powf(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

pub fn expf(x: f32) -> f32 {
    libm::expf(x)
}

pub fn sinf(x: f32) -> f32 {
    libm::sinf(x)
}

pub fn cosf(x: f32) -> f32 {
    libm::cosf(x)
}

pub fn lnf(x: f32) -> f32 {
    libm::logf(x)
}
