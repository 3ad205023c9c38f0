#!/usr/bin/env python3
"""A full-size model in the browser tab: SD-Turbo's real shapes (random init, made by
scripts/convert.py), 512x512, 1 step, TAESD, through the page in headless chromium, to the PNG;
its bytes against sd.wasm's under wasmtime with the same request, and its time and memory.

    scripts/build-web.sh && scripts/build-wasm.sh
    nice -n 5 python3 scripts/bench_browser.py                   # each page build the site has
    python3 scripts/bench_browser.py --variants plain threads=2 --size 256
    python3 scripts/bench_browser.py --variants plain threads=2 --profile   # + each op's time in the tab

Variants: `plain` is web/pkg (one thread, the page without cross-origin isolation);
`threads=N` is web/pkg-threads on N threads (the isolated page, when scripts/build-web.sh built
it). Prints a table: load and step seconds, the wasm memory's peak,
the tab's peak resident memory (the renderer process, which holds the worker), and whether the
PNG equals the CLI's. It fails when it cannot measure, or when the page's PNG differs from
the CLI's. With --keep DIR it leaves cli/cli.png, VARIANT/page.png and results.json (each run's
state, timings and peaks) in DIR: tests/platforms/browser_full_size.rs runs it that way and
checks the bytes itself.
"""
import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (machine(), wasmtime_path())
import bench_pictures  # noqa: E402  (ensure_model)

ROOT = os.path.dirname(HERE)
PROMPT = "a lighthouse at dusk, oil painting"


def page_run(model, variant, args, out):
    params = ([] if variant == "plain" else [variant]) + (["profile=1"] if args.profile else [])
    plain = (["--plain"] if variant == "plain" else []) + (["--query", "&".join(params)] if params else [])
    folder = ["--folder"] if args.folder else []
    cmd = ["node", os.path.join(ROOT, "tests", "browser", "bench.mjs"), "--models", f"{os.path.basename(model)}={model}", "--out", out, *plain, *folder, "--size", str(args.size), "--steps", "1", "--guidance", "0", "--decoder", "taesd", "--prompt", PROMPT]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.join(ROOT, "tests", "browser"))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"bench_browser: the page run printed nothing: {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def cli_run(model, args, out):
    cmd = [bench.wasmtime_path(), "run", "-W", "max-memory-size=4294967296", "--dir", f"{model}::/models/{os.path.basename(model)}",
           "--dir", f"{out}::/outputs", args.wasm, "--", "--models", f"/models/{os.path.basename(model)}", "--prompt", PROMPT,
           "--negative-prompt", "", "--steps", "1", "--guidance-scale", "0", "--vae", "taesd", "--seed", "1",
           "--width", str(args.size), "--height", str(args.size), "--output", "/outputs/cli.png", "--quiet"]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_browser: the CLI failed: {proc.stderr[-2000:]}")
    with open(os.path.join(out, "cli.json")) as f:
        return time.monotonic() - start, json.load(f)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an SD-Turbo-shaped model dir with vae_decoder_taesd/ (default: made under the cache)")
    p.add_argument("--wasm", default=os.path.join(ROOT, "dist", "sd.wasm"))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--folder", action="store_true", help="pick the model dir as a folder (no download into the Cache API)")
    p.add_argument("--variants", nargs="+", help="plain, threads=N (default: plain, and threads=1 threads=2 with web/pkg-threads)")
    p.add_argument("--keep", help="write the PNGs and results.json here (made empty first) instead of a temporary dir")
    p.add_argument("--profile", action="store_true",
                   help="also print each page run's per-op profile (?profile=1: every node timed in the tab, as examples/profile.rs does natively)")
    args = p.parse_args()
    model = os.path.abspath(args.model or bench_pictures.ensure_model("sd-turbo"))
    if not os.path.isdir(os.path.join(model, "vae_decoder_taesd")):
        sys.exit(f"bench_browser: {model} has no vae_decoder_taesd/ (scripts/convert.py --random-init taesd {model})")
    if not os.path.exists(os.path.join(model, "sd-manifest.json")):
        subprocess.run([sys.executable, os.path.join(HERE, "web-manifest.py"), model], check=True)
    threaded = os.path.isdir(os.path.join(ROOT, "web", "pkg-threads"))
    variants = args.variants or (["plain", "threads=1", "threads=2"] if threaded else ["plain"])

    print(bench.machine())
    print(f"model: {model} (SD-Turbo shapes, random init), {args.size}x{args.size}, 1 step, guidance 0, TAESD, seed 1")
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        os.makedirs(args.keep)
    results = {"model": model, "size": args.size, "runs": {}}
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory() as tmp:
        cli_out = os.path.join(tmp, "cli")
        os.makedirs(cli_out)
        cli_seconds, cli_meta = cli_run(model, args, cli_out)
        with open(os.path.join(cli_out, "cli.png"), "rb") as f:
            cli_png = f.read()
        t = cli_meta["timings_seconds"]
        rows = [("CLI, wasmtime", t.get("load_unet", 0.0), t["seconds_per_step"], cli_seconds, cli_meta.get("peak_memory_bytes", 0), 0, "—")]
        results["runs"]["cli"] = {"state": "done", "timings_seconds": t, "wall_seconds": cli_seconds, "peak_memory_bytes": cli_meta.get("peak_memory_bytes", 0)}
        failed = False
        for variant in variants:
            out = os.path.join(tmp, variant)
            r = page_run(model, variant, args, out)
            results["runs"][variant] = {k: r.get(k) for k in ("state", "error", "failure", "status", "build", "wall_seconds", "renderer_peak_bytes")}
            if r.get("metadata"):
                results["runs"][variant].update(timings_seconds=r["metadata"]["timings_seconds"], peak_memory_bytes=r["metadata"].get("peak_memory_bytes", 0))
            if r.get("state") != "done":
                print(f"page {variant}: {r.get('state')} {r.get('error') or r.get('failure') or r.get('status')}")
                failed = True
                continue
            with open(os.path.join(out, "page.png"), "rb") as f:
                same = f.read() == cli_png
            failed |= not same
            m = r["metadata"]
            if args.profile:
                print(f"\npage {variant}, per-op profile in the tab:\n{r.get('profile') or '(none)'}")
            rows.append((f"page {variant} ({r.get('build') or 'single-threaded'})", m["timings_seconds"].get("load_unet", 0.0),
                         m["timings_seconds"]["seconds_per_step"], r["wall_seconds"], m.get("peak_memory_bytes", 0),
                         r["renderer_peak_bytes"], "yes" if same else "NO"))
        if args.keep:
            with open(os.path.join(tmp, "results.json"), "w") as f:
                json.dump(results, f, indent=1)
    gib = 1 << 30
    print(f"{'run':48} {'UNet load s':>11} {'s/step':>8} {'wall s':>8} {'wasm peak':>10} {'tab peak':>9}  same PNG")
    for name, load, step, wall, peak, tab, same in rows:
        print(f"{name:48} {load:11.1f} {step:8.2f} {wall:8.1f} {peak / gib:8.2f} G {tab / gib:7.2f} G  {same}")
    if failed:
        sys.exit("bench_browser: a page run failed or its PNG differs from the CLI's")


if __name__ == "__main__":
    main()
