#!/usr/bin/env python3
"""Which loops make sd.wasm leave wazero's machine code, and the list tools/wasm-ship unrolls.

    python3 scripts/profile-wazero.py                  # print the table
    python3 scripts/profile-wazero.py --write          # and rewrite tools/wasm-ship/src/hot-loops.txt
    python3 scripts/profile-wazero.py --write --merge --latent 32
                                                       # add what a larger latent makes hot
    python3 scripts/profile-wazero.py --self --as-shipped --networks unet --latent 8
                                                       # where the load's time goes, as shipped

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


def ship_named(out, as_shipped=False):
    """The unshipped module with float selects rewritten (wazero needs it), names kept (module
    name ""), nothing unrolled: every loop shows its own exits. `as_shipped`: unrolled as
    scripts/build-wasm.sh ships it, names still kept."""
    source = os.path.join(target_dir(), "wasm32-wasip1", "dist", "sd.wasm")
    if not os.path.exists(source):
        sys.exit(f"{source}: run scripts/build-wasm.sh first")
    subprocess.run(["cargo", "build", "--locked", "--release", "-q", "-p", "wasm-ship"], cwd=ROOT, check=True,
                   env={k: v for k, v in os.environ.items() if k != "RUSTFLAGS"})
    ship = os.path.join(target_dir(), "release", "wasm-ship")
    env = {k: v for k, v in os.environ.items() if k != "WASM_SHIP_UNROLL"}
    if not as_shipped:
        env["WASM_SHIP_UNROLL"] = "1:0"
    subprocess.run([ship, source, out, ""], env=env, check=True, stdout=subprocess.DEVNULL)


def unhashed(name):
    return HASH.sub("", name)


def record(runner, module, models, network, latent, runs, work):
    """perf's samples of one `--bench NETWORK` process: each a list of frames, innermost first."""
    data = os.path.join(work, f"{network}.data")
    # The GEMM tile's unrolled variant, the one the shipped module picks under wazero: the
    # one-step variant is wasmtime's pick and must stay rolled (crates/sd-kernels/src/mmm.rs).
    cmd = [runner, "--memory", "4GiB", "--env", "SD_WASM_MMM=unrolled", "-i", f"{models}:/models", module, "--", "--bench", network,
           "--runs", str(runs), "--models", "/models"] + ([] if network == "text-encoder" else ["--latent", str(latent)])
    subprocess.run(["perf", "record", "-q", "-g", "-F", "499", "-o", data, "--"] + cmd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True).stdout
    samples = []
    for sample in script.split("\n\n"):
        frames = [line.strip() for line in sample.strip().splitlines() if line.strip()]
        if frames:
            samples.append(frames)
    return samples


def exits_by_function(samples):
    """Samples inside the exit trampoline, counted for the wasm function that called it."""
    counts, total = collections.Counter(), 0
    for frames in samples:
        if TRAMPOLINE not in frames[0]:
            continue
        caller = next(filter(None, map(WASM_FRAME.search, frames[1:])), None)
        if caller:
            counts[unhashed(caller.group(1))] += 1
            total += 1
    return counts, total


def self_by_function(samples):
    """Every sample for the function it was taken in: a wasm function by its name, anything
    else (Go's runtime, the kernel) by its symbol, except the exit machinery (the trampoline
    and the Go code it runs, whichever wasm function called it), counted as one entry."""
    counts = collections.Counter()
    for frames in samples:
        if any(TRAMPOLINE in f for f in frames):
            counts["(exit check)"] += 1
            continue
        own = WASM_FRAME.search(frames[0])
        if own:
            counts[unhashed(own.group(1))] += 1
        else:
            counts["(host) " + (frames[0].split(None, 1)[1] if " " in frames[0] else frames[0])] += 1
    return counts, len(samples)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=os.path.join(CACHE, "models", "sd15"))
    p.add_argument("--networks", nargs="+", default=["unet", "vae-decoder", "text-encoder"])
    p.add_argument("--latent", type=int, default=16, help="latent side for the UNet and the decoder (default 16)")
    p.add_argument("--min-share", type=float, default=0.5, help="percent of a network's exits (default 0.5)")
    p.add_argument("--write", action="store_true", help=f"rewrite {os.path.relpath(HOT_LOOPS, ROOT)}")
    p.add_argument("--merge", action="store_true",
                   help="with --write: keep the functions already listed (each at its larger share), so profiles "
                        "at several latents add up: a larger latent shrinks the load's share of the exits")
    p.add_argument("--self", action="store_true",
                   help="print where all the samples are (each function's own time) instead of the exits")
    p.add_argument("--as-shipped", action="store_true",
                   help="profile the module unrolled as shipped (names kept) instead of with every loop rolled")
    p.add_argument("--runs", type=int, default=1, help="timed runs after the warm-up (at least 1)")
    p.add_argument("--top", type=int, default=40, help="rows of --self's table (default 40)")
    args = p.parse_args()
    if args.write and (args.self or args.as_shipped):
        sys.exit("--write needs the exits of the module with every loop rolled: no --self, no --as-shipped")
    with tempfile.TemporaryDirectory() as work:
        runner, module = os.path.join(work, "wasi-runner-perfmap"), os.path.join(work, "sd-named.wasm")
        build_runner(runner)
        ship_named(module, args.as_shipped)
        module_bytes = open(module, "rb").read()
        hot = {}
        for network in args.networks:
            samples = record(runner, module, args.models, network, args.latent, args.runs, work)
            if args.self:
                counts, total = self_by_function(samples)
                print(f"\n{network}: {total} samples (load, warm-up and {args.runs} runs), each function's own")
                for name, n in counts.most_common(args.top):
                    print(f"{100 * n / max(total, 1):6.1f} %  {name}")
                continue
            counts, total = exits_by_function(samples)
            print(f"\n{network}: {total} samples in the exit trampoline")
            for name, n in counts.most_common():
                share = 100 * n / max(total, 1)
                if share < args.min_share:
                    break
                print(f"{share:6.1f} %  {name}")
                hot[name] = max(hot.get(name, 0), share)
    if args.write:
        if args.merge:
            # Names the profiled module no longer has (code moved or renamed) are dropped:
            # wasm-ship matches them as substrings of the module's function names.
            for line in open(HOT_LOOPS):
                if not line.startswith("#") and len(line.split()) == 2:
                    share, name = line.split()
                    if name.encode() in module_bytes:
                        hot[name] = max(hot.get(name, 0), float(share))
        with open(HOT_LOOPS, "w") as f:
            f.write("# Functions whose innermost loops tools/wasm-ship unrolls: written by\n"
                    "# scripts/profile-wazero.py --write (largest share of one network's exits under\n"
                    "# Bacalhau's engine, percent; names without their hash suffix).\n")
            for name, share in sorted(hot.items(), key=lambda kv: -kv[1]):
                f.write(f"{share:.1f} {name}\n")
        print(f"\nwrote {len(hot)} functions to {os.path.relpath(HOT_LOOPS, ROOT)}")


if __name__ == "__main__":
    main()
