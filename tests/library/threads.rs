//! `--threads` natively: tract splits its matrix products over output tiles (each tile's whole
//! reduction on one thread) and its row-wise ops on row boundaries, so a picture's bytes must
//! not depend on the thread count. The thread count is process-wide (tract's default
//! executor), so the command-line test runs the native `sd` binary once per count, each in its
//! own process; the library test installs its pools only on its own thread
//! (`multithread_tract_scope`), so nothing leaks into the tests beside it.

use crate::common::*;
use sd_wasm::models::threads::pool;
use sd_wasm::pipeline::generate;
use sd_wasm::request::GenerateRequest;
use sd_wasm::schedulers::SchedulerKind;
use std::process::Command;
use tract_linalg::multithread::{multithread_tract_scope, Executor};

/// 128×128 on the tiny model: a 64×64 latent (its VAE scales by 2), where the UNet's convs
/// have 4,096 output columns, far over tract's threading threshold (64 tiles); at the
/// fixtures' usual 16×16 (an 8×8 latent) most products are below it and run on one thread.
const SIDE: &str = "128";

fn sd(threads: usize, output: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sd"));
    cmd.arg("--models").arg(tiny_model()).arg("--output").arg(output);
    cmd.args(["--prompt", "a lighthouse at dusk", "--seed", "7", "--steps", "3", "--scheduler", "euler-a"]);
    cmd.args(["--width", SIDE, "--height", SIDE, "--quiet", "--threads", &threads.to_string()]);
    cmd.output().expect("running the native sd")
}

#[test]
fn the_native_cli_writes_the_same_png_at_1_2_and_4_threads() {
    let dir = scratch("threads-cli");
    let mut pngs = Vec::new();
    for threads in [1, 2, 4] {
        let path = dir.join(format!("{threads}.png"));
        let run = sd(threads, &path);
        assert!(run.status.success(), "--threads {threads}: {}", String::from_utf8_lossy(&run.stderr));
        pngs.push(std::fs::read(&path).unwrap());
    }
    assert_eq!(read_png(&dir.join("1.png")).width, 128);
    assert!(pngs[0] == pngs[1], "2 threads: a different PNG than 1 thread");
    assert!(pngs[0] == pngs[2], "4 threads: a different PNG than 1 thread");
    let run = sd(0, &dir.join("0.png"));
    assert_eq!(run.status.code(), Some(2), "{}", String::from_utf8_lossy(&run.stderr));
}

/// CPU seconds the calling thread has used (Linux: /proc/thread-self/stat, in clock ticks).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The same pixels through the library at 1 and 2 threads, and each of the two pool threads
/// did a real share of the work (its CPU time, read by each worker itself afterwards): the
/// products really were split, not run on one worker.
#[test]
#[cfg(target_os = "linux")]
fn two_pool_threads_share_the_work_and_the_pixels_are_the_same() {
    let request = GenerateRequest {
        prompt: "a lighthouse at dusk".into(),
        width: Some(128),
        height: Some(128),
        steps: 3,
        seed: 7,
        scheduler: SchedulerKind::parse("euler-a"),
        ..Default::default()
    };
    let files = sd_wasm::model_dir::DirFiles::open(tiny_model()).unwrap();
    let one = multithread_tract_scope(Executor::SingleThread, || generate(&files, &request, &mut Quiet).unwrap());
    let executor = pool(2).unwrap();
    let Executor::MultiThread(workers) = &executor else { panic!("not a pool") };
    let workers = workers.clone();
    let two = multithread_tract_scope(executor, || generate(&files, &request, &mut Quiet).unwrap());
    assert!(one.image == two.image, "2 threads: different pixels than 1 thread");
    let ticks = workers.broadcast(|_| thread_cpu_ticks());
    let total: u64 = ticks.iter().sum();
    eprintln!("CPU ticks per pool thread: {ticks:?}");
    assert!(total >= 10, "the pool did almost nothing: {ticks:?} ticks");
    for t in &ticks {
        assert!(*t * 5 >= total, "one pool thread did under a fifth of the work: {ticks:?} ticks");
    }
}
