#!/usr/bin/env python3
"""Which loops make sd.wasm leave wazero's machine code, and the list tools/wasm-ship unrolls.

    python3 scripts/profile-wazero.py                  # print the table
    python3 scripts/profile-wazero.py --write          # and rewrite tools/wasm-ship/src/hot-loops.txt

Under Bacalhau's engine (wazero v1.12.0 with `WithCloseOnContextDone(true)`, which
scripts/build-wasi-runner.sh reproduces) every pass through a loop header calls a trampoline
that exits to Go to check whether the module was closed. On 2026-12-03 that was 61 % of a
UNet evaluation at 32x32 (21.95 s; 8.58 s with the check off). tools/wasm-ship unrolls the
innermost loops of the functions listed in hot-loops.txt so the check runs once per several
iterations; this script makes that list from a profile instead of by hand.

How: wazero built with its `perfmap` tag (JIT code named in /tmp/perf-PID.map), the module
from the target dir (scripts/build-wasm.sh's input) shipped with names and without unrolling,
`perf record -g` of `--bench NETWORK` for each network, and every sample taken inside the exit
trampoline counted for the wasm function that called it: the function whose loop header ran.
Its share of those samples is its share of the exits (the trampoline's cost per call is
constant). Functions at or above --min-share percent go in the list, named without the hash
suffix so the list survives rebuilds. Needs perf, go, the random-init SD 1.5 dir.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "sd-wasm")
HOT_LOOPS = os.path.join(ROOT, "tools", "wasm-ship", "src", "hot-loops.txt")
TRAMPOLINE = "check_module_exit_code_trampoline"
# A wasm function in wazero's perf map: "[index/count]module.wasm.NAME:::::Lline".
WASM_FRAME = re.compile(r"\.wasm\.(\S+?):::::")
HASH = re.compile(r"17h[0-9a-f]{16}E$")


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def build_runner(out):
    """scripts/build-wasi-runner.sh, with wazero's perfmap tag, to `out`."""
    env = dict(os.environ, WASI_RUNNER_BIN=out, GOFLAGS=(os.environ.get("GOFLAGS", "") + " -tags=perfmap").strip())
    subprocess.run([os.path.join(HERE, "build-wasi-runner.sh")], env=env, check=True, stdout=subprocess.DEVNULL)


def ship_named(out):
    """The unshipped module with float selects rewritten (wazero needs it), names kept (module
    name ""), nothing unrolled: every loop shows its own exits."""
    source = os.path.join(target_dir(), "wasm32-wasip1", "dist", "sd.wasm")
    if not os.path.exists(source):
        sys.exit(f"{source}: run scripts/build-wasm.sh first")
    subprocess.run(["cargo", "build", "--locked", "--release", "-q", "-p", "wasm-ship"], cwd=ROOT, check=True,
                   env={k: v for k, v in os.environ.items() if k != "RUSTFLAGS"})
    ship = os.path.join(target_dir(), "release", "wasm-ship")
    subprocess.run([ship, source, out, ""], env=dict(os.environ, WASM_SHIP_UNROLL="1:0"), check=True,
                   stdout=subprocess.DEVNULL)


def unhashed(name):
    return HASH.sub("", name)


def exits_by_function(runner, module, models, network, latent, work):
    data = os.path.join(work, f"{network}.data")
    # The GEMM tile's unrolled variant, the one the shipped module picks under wazero: the
    # one-step variant is wasmtime's pick and must stay rolled (crates/sd-kernels/src/mmm.rs).
    cmd = [runner, "--memory", "4GiB", "--env", "SD_WASM_MMM=unrolled", "-i", f"{models}:/models", module, "--", "--bench", network,
           "--runs", "1", "--models", "/models"] + ([] if network == "text-encoder" else ["--latent", str(latent)])
    subprocess.run(["perf", "record", "-q", "-g", "-F", "499", "-o", data, "--"] + cmd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True).stdout
    counts, total = collections.Counter(), 0
    for sample in script.split("\n\n"):
        frames = [line.strip() for line in sample.strip().splitlines() if line.strip()]
        if not frames or TRAMPOLINE not in frames[0]:
            continue
        caller = next(filter(None, map(WASM_FRAME.search, frames[1:])), None)
        if caller:
            counts[unhashed(caller.group(1))] += 1
            total += 1
    return counts, total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=os.path.join(CACHE, "models", "sd15"))
    p.add_argument("--networks", nargs="+", default=["unet", "vae-decoder", "text-encoder"])
    p.add_argument("--latent", type=int, default=16, help="latent side for the UNet and the decoder (default 16)")
    p.add_argument("--min-share", type=float, default=0.5, help="percent of a network's exits (default 0.5)")
    p.add_argument("--write", action="store_true", help=f"rewrite {os.path.relpath(HOT_LOOPS, ROOT)}")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        runner, module = os.path.join(work, "wasi-runner-perfmap"), os.path.join(work, "sd-named.wasm")
        build_runner(runner)
        ship_named(module)
        hot = {}
        for network in args.networks:
            counts, total = exits_by_function(runner, module, args.models, network, args.latent, work)
            print(f"\n{network}: {total} samples in the exit trampoline")
            for name, n in counts.most_common():
                share = 100 * n / max(total, 1)
                if share < args.min_share:
                    break
                print(f"{share:6.1f} %  {name}")
                hot[name] = max(hot.get(name, 0), share)
    if args.write:
        with open(HOT_LOOPS, "w") as f:
            f.write("# Functions whose innermost loops tools/wasm-ship unrolls: written by\n"
                    "# scripts/profile-wazero.py --write (largest share of one network's exits under\n"
                    "# Bacalhau's engine, percent; names without their hash suffix).\n")
            for name, share in sorted(hot.items(), key=lambda kv: -kv[1]):
                f.write(f"{share:.1f} {name}\n")
        print(f"\nwrote {len(hot)} functions to {os.path.relpath(HOT_LOOPS, ROOT)}")


if __name__ == "__main__":
    main()
