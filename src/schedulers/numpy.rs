//! numpy-compatible helpers (float64 unless noted): where diffusers builds a schedule with numpy,
//! these reproduce numpy's results (its float64 arithmetic, and its SIMD float32 log).

/// numpy.linspace (float64): i * step + start, the last element set to stop when endpoint.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    let delta = stop - start;
    let mut y: Vec<f64> = if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            (0..num)
                .map(|i| i as f64 / div as f64 * delta + start)
                .collect()
        } else {
            (0..num).map(|i| i as f64 * step + start).collect()
        }
    } else {
        (0..num).map(|i| i as f64 * delta + start).collect()
    };
    if endpoint && num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// numpy.arange with a float step: length ceil((stop-start)/step); elements start, start+step, then
/// start + i*((start+step)-start) (numpy's fill).
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let second = start + step;
    let delta = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// numpy.round / rint (half to even).
pub(crate) fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// numpy.interp(x, arange(len(fp)), fp) with float32 fp, computed in float64.
pub(crate) fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return fp[0] as f64;
    }
    let last = (n - 1) as f64;
    if x >= last {
        return fp[n - 1] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// np.log on a float32 array: numpy's AVX2/AVX512F SIMD kernel (rational approximation with FMAs,
/// up to ~4 ulp off, not libm's logf). Matters where diffusers inverts sigmas to timesteps.
/// Inputs here are positive normal floats (sigmas); other inputs fall back to f64 ln.
pub(crate) fn numpy_logf(x: f32) -> f32 {
    if !(x.is_normal() && x > 0.0) || x.is_infinite() {
        return crate::math::ln(x as f64) as f32;
    }
    // NPY_COEFF_P0..P5_LOGf and NPY_COEFF_Q0..Q5_LOGf as float32 bits.
    const P: [u32; 6] = [
        0x0,
        0x3f80_0000,
        0x4007_361c,
        0x3fbd_70a9,
        0x3ec3_0333,
        0x3cd4_2bcd,
    ];
    const Q: [u32; 6] = [
        0x3f80_0000,
        0x4027_361c,
        0x401c_fe0d,
        0x3f7c_8ae4,
        0x3e1e_5bf3,
        0x3bc0_83df,
    ];
    let (p, q) = (P.map(f32::from_bits), Q.map(f32::from_bits));
    let bits = x.to_bits();
    let mut exponent = ((bits >> 23) as i32 - 126) as f32;
    let mut m = f32::from_bits((bits & 0x7f_ffff) | (126 << 23));
    if m <= std::f32::consts::FRAC_1_SQRT_2 {
        m = m + m;
        exponent -= 1.0;
    }
    let x = m - 1.0;
    let mut num = p[5].mul_add(x, p[4]);
    let mut den = q[5].mul_add(x, q[4]);
    for k in (0..4).rev() {
        num = num.mul_add(x, p[k]);
        den = den.mul_add(x, q[k]);
    }
    exponent.mul_add(std::f32::consts::LN_2, num / den)
}
