//! The WASI (and native) command-line front end. Bacalhau passes argv[0] as "", and reads
//! the exit code only from proc_exit, hence the explicit `exit`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sd_wasm::cli::run(&args));
}
