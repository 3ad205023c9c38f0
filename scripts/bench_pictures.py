#!/usr/bin/env python3
"""Whole pictures, end to end: the wall time from process start to the PNG on disk (every
network load, text encoding, denoising and decoding included), for the jobs a user runs:

  sd15-20      SD 1.5, 20 steps of DPM++ 2M with classifier-free guidance, full VAE
  lcm-4        an LCM UNet (SD 1.5 shapes), --preset lcm: 4 steps, guidance 8.5 as the UNet's
               guidance embedding (no unconditional pass), TAESD
  turbo-1      SD-Turbo, --preset turbo: 1 step, guidance 0, TAESD
  turbo-8      8 prompts with SD-Turbo: one `--prompts` job (each network loaded once) against
               8 separate runs (loaded 8 times)

each under wasmtime (dist/sd.wasm, one thread), under wasi-runner (Bacalhau v1.9.3's engine and
settings, one thread), as the native build (target/release/sd, when built: cargo build
--release; --threads 1), and by the peer sd.wasm replaces: OpenVINO-compiled
networks driven by a Python loop with diffusers' scheduler (bes-dev/stable_diffusion.openvino's
way; scripts/bench_pictures_openvino.py, run as a child process like the others, its Python
imports counted) on the same model dirs, at one thread (openvino-1t) and at every core
(openvino-all). The last lines give each engine's time over openvino-1t's (and openvino-all's)
for the same case.

    nice -n 5 python3 scripts/bench_pictures.py                         # everything, 512x512
    nice -n 5 python3 scripts/bench_pictures.py --cases turbo-1 turbo-8 --engines wasmtime
    nice -n 5 python3 scripts/bench_pictures.py --cases turbo-1 lcm-4 --engines openvino-1t openvino-all

Models are random-init dirs of the real shapes made by scripts/convert.py under
~/.cache/sd-wasm/models when missing (minutes each, ~2 GB each): timing does not depend on the
weights' values. A benchmark, not a test: it prints numbers and fails only when it cannot
measure at all.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (machine(), wasmtime_path(), CACHE)

ROOT = os.path.dirname(HERE)
PROMPT = "a lighthouse at dusk, oil painting"
PROMPTS = [f"{PROMPT}, variation {i}" for i in range(8)]

# model dir name -> convert.py flags
MODELS = {
    "sd15": ["--random-init", "sd15", "--no-encoder"],
    "lcm": ["--random-init", "lcm", "--no-encoder", "--taesd", "random"],
    "sd-turbo": ["--random-init", "sd-turbo", "--no-encoder"],
}
CASES = {
    "sd15-20": ("sd15", ["--steps", "20", "--scheduler", "dpm++2m", "--guidance-scale", "7.5"]),
    "lcm-4": ("lcm", ["--preset", "lcm"]),
    "turbo-1": ("sd-turbo", ["--preset", "turbo"]),
    "turbo-8": ("sd-turbo", ["--preset", "turbo"]),
}
# The OpenVINO peer's engines -> its INFERENCE_NUM_THREADS.
OPENVINO = {"openvino-1t": 1, "openvino-all": len(os.sched_getaffinity(0))}
OPENVINO_PEER = os.path.join(HERE, "bench_pictures_openvino.py")
ENGINES = ("wasmtime", "wasi-runner", "native", *OPENVINO)


def ensure_model(name):
    """The random-init model dir `name` under the cache, made on first use. Made beside it and
    renamed when complete, so a run killed while converting leaves no dir that looks made."""
    path = os.path.join(bench.CACHE, name)
    if not os.path.exists(os.path.join(path, "model_index.json")):
        print(f"bench_pictures: making {path} (convert.py {' '.join(MODELS[name])})", file=sys.stderr)
        partial = f"{path}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(bench.CACHE, exist_ok=True)
        subprocess.run([sys.executable, os.path.join(HERE, "convert.py"), *MODELS[name], partial],
                       stdout=sys.stderr, check=True)
        shutil.rmtree(path, ignore_errors=True)
        os.rename(partial, path)
    return path


def command(engine, args, models, out):
    """The command line of one engine; sd.wasm sees /models and /outputs. The OpenVINO peer
    takes sd.wasm's flags for the work (--preset, --steps, ...)."""
    if engine in OPENVINO:
        return [sys.executable, OPENVINO_PEER, "--models", models, "--output", out, "--threads", str(OPENVINO[engine])]
    if engine == "wasmtime":
        return [args.wasmtime, "run", "-W", "max-memory-size=4294967296", "--dir", f"{models}::/models",
                "--dir", f"{out}::/outputs", args.wasm, "--"]
    if engine == "wasi-runner":
        return [args.wasi_runner, "--memory", "4GiB", "-i", f"{models}:/models", "-o", f"outputs:{out}", args.wasm, "--"]
    return [args.native, "--models", models, "--output", out, "--threads", "1"]


def timed(cmd, out):
    """Wall seconds of one process that must write at least one PNG; None with the reason."""
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - start
    pngs = [f for f in os.listdir(out) if f.endswith(".png") and "-step-" not in f]
    if proc.returncode != 0 or not pngs:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        return None, f"exit {proc.returncode}: {tail[0][:200]}"
    return seconds, None


def run_case(case, engine, args):
    model, flags = CASES[case]
    models = ensure_model(model)
    size = ["--width", str(args.size), "--height", str(args.size), "--seed", "1", "--quiet"]
    with tempfile.TemporaryDirectory() as out:
        guest_out = "/outputs" if engine in ("wasmtime", "wasi-runner") else out
        base = command(engine, args, models, out)
        if case != "turbo-8":
            return {"seconds": timed(base + ["--prompt", PROMPT, *flags, *size], out)}
        with open(os.path.join(out, "prompts.txt"), "w") as f:
            f.write("\n".join(PROMPTS) + "\n")
        one_job = timed(base + ["--prompts", os.path.join(guest_out, "prompts.txt"), *flags, *size], out)
        separate, error = 0.0, None
        for prompt in PROMPTS:
            for f in os.listdir(out):
                if f.endswith((".png", ".json")):
                    os.remove(os.path.join(out, f))
            seconds, error = timed(base + ["--prompt", prompt, *flags, *size], out)
            if seconds is None:
                break
            separate += seconds
        return {"seconds": one_job, "separate runs": (None, error) if error else (separate, None)}


def print_ratios(results):
    """Each engine's time over the OpenVINO peer's for the same case and measurement (one job,
    separate runs), also written into the results as x_<peer>: over openvino-1t for every other
    engine, over openvino-all for those that are not OpenVINO."""
    times = {(r["case"], r["what"], r["engine"]): r["seconds"] for r in results if r["seconds"] is not None}
    for peer in OPENVINO:
        for r in results:
            reference = times.get((r["case"], r["what"], peer))
            skip = {peer} if peer == "openvino-1t" else set(OPENVINO)
            if r["seconds"] is not None and reference and r["engine"] not in skip:
                r[f"x_{peer}"] = r["seconds"] / reference
    for case, what in dict.fromkeys((r["case"], r["what"]) for r in results):
        parts = []
        for peer in OPENVINO:
            ratios = [f"{r['engine']} {r[f'x_{peer}']:.2f}x" for r in results
                      if (r["case"], r["what"]) == (case, what) and f"x_{peer}" in r]
            if ratios:
                parts.append(f"over {peer}: " + ", ".join(ratios))
        if parts:
            print(f"{case:8} {what:13} " + "; ".join(parts))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--wasm", default=os.path.join(ROOT, "dist", "sd.wasm"))
    p.add_argument("--wasmtime", default=bench.wasmtime_path())
    p.add_argument("--wasi-runner", default=os.path.join(os.path.expanduser("~"), ".cache", "sd-wasm", "bin", "wasi-runner"))
    p.add_argument("--native", default=os.path.join(ROOT, "target", "release", "sd"))
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    openvino = importlib.util.find_spec("openvino") is not None
    print(f"machine: {bench.machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.size}x{args.size}"
          + (f"; openvino {importlib.metadata.version('openvino')}" if openvino and set(args.engines) & set(OPENVINO) else ""))
    rows, measured = [], 0
    for case in args.cases:
        for engine in args.engines:
            if engine in OPENVINO:
                if not openvino:
                    rows.append((case, engine, "seconds", None, "not installed: openvino (pip install openvino)"))
                    continue
            else:
                binary = {"wasmtime": args.wasmtime, "wasi-runner": args.wasi_runner, "native": args.native}[engine]
                if not (binary and os.path.exists(binary)) or (engine != "native" and not os.path.exists(args.wasm)):
                    rows.append((case, engine, "seconds", None, f"not found: {binary}"))
                    continue
            for what, (seconds, error) in run_case(case, engine, args).items():
                rows.append((case, engine, what, seconds, error))
                measured += seconds is not None
                print(f"{case:8} {engine:12} {what:13} " + (f"{seconds:8.1f} s" if seconds is not None else error),
                      flush=True)
    results = [dict(zip(("case", "engine", "what", "seconds", "error"), r)) for r in rows]
    print_ratios(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
