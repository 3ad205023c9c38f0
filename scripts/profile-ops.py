#!/usr/bin/env python3
"""Where one network evaluation's time goes: each kind of op's share and achieved GFLOP/s.

    python3 scripts/profile-ops.py                         # SD 1.5 UNet at a 32x32 latent
    python3 scripts/profile-ops.py --latents 32 64 --vae   # + 64x64, + the VAE decoder at 512x512
    python3 scripts/profile-ops.py --wasm-perf             # + perf of dist/sd.wasm under wasmtime

Native (examples/profile.rs, cargo profile `profiling`): tract runs the plan node by node
(`run_plan_with_eval`), timing each node, and counts its multiply-adds with the op's own cost
model (2 flops per multiply-add). The ops are the ones sd.wasm runs (same tract, same
optimizer, same graph rewrites); only the kernels tract-linalg picks differ (AVX2/AVX-512
natively, SIMD128 in wasm), so the shares move between kinds of op but the list does not.

--wasm-perf: `perf record` of dist/sd.wasm's unstripped build (target dir's
wasm32-wasip1/dist/sd.wasm, functions named) under `wasmtime run --profile=perfmap` doing
`--bench-unet`, then the top symbols of `perf report` (load included: a few seconds of 15+).

Model: the random-init SD 1.5 dir (scripts/convert.py --random-init sd15), timing does not
depend on the weights' values.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "sd-wasm", "models")


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def build():
    subprocess.run(["cargo", "build", "--locked", "--profile", "profiling", "--example", "profile"],
                   cwd=ROOT, check=True)
    return os.path.join(target_dir(), "profiling", "examples", "profile")


def wasm_perf(models, latent, runs, top):
    wasmtime = subprocess.run([os.path.join(HERE, "wasmtime-path")], capture_output=True, text=True,
                              check=True).stdout.strip()
    module = os.path.join(target_dir(), "wasm32-wasip1", "dist", "sd.wasm")
    data = os.path.join("/tmp", f"sd-wasm-perf-{os.getpid()}.data")
    cmd = ["perf", "record", "-F", "499", "-g", "-o", data, "--", wasmtime, "run", "--profile=perfmap",
           "-W", "max-memory-size=4294967296", "--dir", f"{models}::/models", module,
           "--bench-unet", "--latent", str(latent), "--runs", str(runs), "--models", "/models"]
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio",
                             "--percent-limit", "0.5"], capture_output=True, text=True, check=True).stdout
    lines = [l for l in report.splitlines() if l.strip() and not l.startswith("#") and "%" in l
             and not l.strip().startswith("|") and not l.strip().startswith("-")]
    print(f"\nwasm (wasmtime --profile=perfmap), UNet {latent}x{latent}, top symbols incl. load:")
    for l in lines[:top]:
        print("  " + " ".join(w for w in l.split() if w != "-"))
    os.unlink(data)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=os.path.join(CACHE, "sd15"))
    p.add_argument("--latents", type=int, nargs="+", default=[32])
    p.add_argument("--runs", type=int, default=2, help="profiled runs after one warm-up (default 2)")
    p.add_argument("--top", type=int, default=15, help="slowest nodes to list")
    p.add_argument("--vae", action="store_true", help="also the VAE decoder at a 64x64 latent (512x512)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--wasm-perf", action="store_true", help="also perf-profile dist/sd.wasm's build")
    p.add_argument("--threads", type=int, default=1, help="native threads (--threads of sd; default 1)")
    p.add_argument("--ops", help="SD_WASM_OPS for the run (tract, cast, attention, all)")
    args = p.parse_args()
    models = os.path.abspath(args.models)
    if not os.path.exists(os.path.join(models, "model_index.json")):
        print(f"profile: {models} missing, running convert.py --random-init sd15 (several minutes)", file=sys.stderr)
        subprocess.run([sys.executable, os.path.join(HERE, "convert.py"), "--random-init", "sd15", "--no-encoder",
                        models], check=True, stdout=sys.stderr)
    exe = os.path.join(target_dir(), "profiling", "examples", "profile") if args.no_build else build()
    env = dict(os.environ)
    if args.ops:
        env["SD_WASM_OPS"] = args.ops
    jobs = [("unet", latent) for latent in args.latents] + ([("vae", 64)] if args.vae else [])
    for network, latent in jobs:
        out = subprocess.run([exe, models, "--network", network, "--latent", str(latent), "--runs", str(args.runs),
                              "--top", str(args.top), "--threads", str(args.threads)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"profile: {network} at {latent} failed: {out.stderr.strip()[-2000:]}")
        print(out.stdout)
    if args.wasm_perf:
        wasm_perf(models, args.latents[0], 1, 30)


if __name__ == "__main__":
    main()
