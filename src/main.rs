//! The WASI (and native) command-line front end. Bacalhau passes argv[0] as "", and reads
//! the exit code only from proc_exit, hence the explicit `exit`.

/// Out of memory: our one-line message and exit 4 instead of a trap (see ExitOnOom).
#[global_allocator]
static ALLOCATOR: sd_wasm::error::ExitOnOom = sd_wasm::error::ExitOnOom;

fn main() {
    // A panic (tract panics when an allocation fails) must still end as one `error:` line and
    // a documented exit code, not as a wasm trap.
    std::panic::set_hook(Box::new(|info| {
        let message = sd_wasm::error::panic_message(info);
        if message.contains("allocate") {
            eprintln!("error: out of memory ({message}): {}", sd_wasm::error::MORE_MEMORY);
        } else {
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            eprintln!("error: internal failure{at}: {message}");
        }
        std::process::exit(sd_wasm::ErrorKind::Runtime.exit_code());
    }));
    std::process::exit(sd_wasm::cli::run_os(std::env::args_os().skip(1)));
}
