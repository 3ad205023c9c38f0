#!/usr/bin/env python3
"""sd-kernels' hot kernels alone, under wasmtime and under Bacalhau's engine, side by side.

    python3 scripts/bench-kernels.py [--wasi-runner PATH] [--rounds N]

Builds crates/sd-kernels/examples/kernel_bench.rs for wasm32-wasip1, ships it with
tools/wasm-ship exactly as scripts/build-wasm.sh ships sd.wasm (so the GEMM tile's marked loop
is unrolled and wazero's addressing applied), runs it under wasmtime and wasi-runner
(wazero v1.12.0 with Bacalhau's settings) `--rounds` times each, alternating, and prints each
kernel's best time per engine and their ratio. A kernel change measured here in seconds still
has to be measured on the UNet (`sd --bench unet`); this is the quick loop before it. Fails if
a kernel's checksum differs between the engines.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench  # noqa: E402  (machine(), wasmtime_path())

LINE = re.compile(r"^(\S+) (\S+): ([0-9.]+) s, ([0-9.]+) (\S+) \(checksum (\S+)\)$")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wasi-runner", default=os.environ.get("WASI_RUNNER"), help="default: $WASI_RUNNER, else scripts/build-wasi-runner.sh")
    p.add_argument("--rounds", type=int, default=2, help="runs per engine, alternating (default 2)")
    args = p.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--locked", "--release", "-q", "-p", "sd-kernels", "--example", "kernel_bench",
                    "--target", "wasm32-wasip1"], cwd=ROOT, check=True)
    env = {k: v for k, v in os.environ.items() if k != "RUSTFLAGS"}
    subprocess.run(["cargo", "build", "--locked", "--release", "-q", "-p", "wasm-ship"], cwd=ROOT, check=True, env=env)
    runner = args.wasi_runner or subprocess.run([os.path.join(HERE, "build-wasi-runner.sh")], capture_output=True, text=True,
                                                check=True).stdout.strip().splitlines()[-1]
    wasmtime = bench.wasmtime_path() or sys.exit("no wasmtime: scripts/install-deps.sh installs it")
    with tempfile.TemporaryDirectory() as work:
        module = os.path.join(work, "kernel_bench.wasm")
        subprocess.run([os.path.join(target, "release", "wasm-ship"), os.path.join(target, "wasm32-wasip1", "release", "examples", "kernel_bench.wasm"),
                        module, "kernel_bench"], check=True, stdout=subprocess.DEVNULL)
        engines = {"wasmtime": [wasmtime, "run", module], "wasi-runner": [runner, module]}
        best, unit, checksums = {}, {}, {}
        for _ in range(args.rounds):
            for engine, cmd in engines.items():
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                for line in out.splitlines():
                    m = LINE.match(line.strip())
                    if not m:
                        continue
                    key = f"{m.group(1)} {m.group(2)}"
                    seconds = float(m.group(3))
                    best[(key, engine)] = min(best.get((key, engine), seconds), seconds)
                    unit[key] = m.group(5)
                    checksums.setdefault(key, set()).add(m.group(6))
    print(f"{bench.machine()}; best of {args.rounds} runs per engine, each its kernel's best of 30-60")
    print(f"{'kernel':36} {'wasmtime':>12} {'wasi-runner':>12} {'ratio':>7}")
    for key in unit:
        a, b = best.get((key, "wasmtime")), best.get((key, "wasi-runner"))
        print(f"{key:36} {a * 1e3:10.2f}ms {b * 1e3:10.2f}ms {b / a:6.2f}x")
    # Each engine's own pick of the tile's builds (the module times them and keeps the
    # fastest): the ratio users see.
    for shape in dict.fromkeys(k.split(" ", 1)[1] for k in unit if k.startswith("gemm_")):
        builds = [k for k in unit if k.startswith("gemm_") and k.endswith(" " + shape)]
        picks = [min(best[(b, e)] for b in builds) for e in engines]
        print(f"{'gemm, faster build ' + shape:36} {picks[0] * 1e3:10.2f}ms {picks[1] * 1e3:10.2f}ms {picks[1] / picks[0]:6.2f}x")
    differ = [k for k, sums in checksums.items() if len(sums) > 1]
    if differ:
        sys.exit(f"checksums differ between the engines: {differ}")


if __name__ == "__main__":
    main()
