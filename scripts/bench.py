#!/usr/bin/env python3
"""One evaluation of a network (the UNet by default; --networks also the VAE decoder, the TAESD
decoder and the text encoder): its time in sd.wasm (under wasmtime, and under wasi-runner:
Bacalhau's engine and settings, its ratio to wasmtime against the 1.25x goal), the native build,
onnxruntime, OpenVINO and onnxruntime-web (wasm backend, under Node) on the same ONNX files,
latent sizes and thread count, with the ratios to OpenVINO and to onnxruntime-web.

    nice -n 5 python3 scripts/bench.py                              # 32x32 and 64x64, 2 runs
    nice -n 5 python3 scripts/bench.py --latents 64 --runs 3 --json bench.json
    nice -n 5 python3 scripts/bench.py --skip-wasm --skip-native    # the peers only
    nice -n 5 python3 scripts/bench.py --latents 32 --skip-native --skip-peers   # sd.wasm only
    nice -n 5 python3 scripts/bench.py --latents 32 --skip-native --peers onnxruntime-web
        # sd.wasm against onnxruntime-web only (no plain fp32 dir needed)
    nice -n 5 python3 scripts/bench.py --latents 64 --skip-wasm --threads 2 --native-threads 1 2
        # the native build at 1 and 2 threads (speed-up printed), the peers at 2 (all cores here)
    nice -n 5 python3 scripts/bench.py --networks unet vae-decoder taesd-decoder text-encoder --latents 64
        # every network: the decoders at a 64x64 latent (512x512 pictures), the text encoder once

Networks (--networks, default unet), each from its folder of the model dir, with random inputs
of the shapes and element types its ONNX graph declares:
  unet           unet/               sample [1, C, L, L], timestep, encoder_hidden_states [1, 77, D]
  vae-decoder    vae_decoder/        latent_sample [1, C, L, L] -> sample (a 8L x 8L picture)
  taesd-decoder  vae_decoder_taesd/  the same interface (a model dir without that folder gets a
                                     "not in this model dir" row: scripts/convert.py --random-init
                                     taesd DIR adds one)
  text-encoder   text_encoder/       input_ids [1, 77] (start token, 3 words, end/padding); no
                                     latent, so measured once whatever --latents says
C is the graph's latent channel count (vae_decoder/config.json's latent_channels when the graph
leaves it open, else 4). sd.wasm and the native build run `sd --bench NETWORK`.

A benchmark, not a test: it prints numbers and fails only when it cannot measure at all.
Goals: UNet: sd.wasm <= 1.5x OpenVINO native, native build <= 1.0x (medians, same latent,
OpenVINO on the plain fp32 UNet being the peer of record); sd.wasm <= 0.8x onnxruntime-web (the
other WebAssembly engine, on the converted UNet). VAE decoder (512x512: --latents 64): sd.wasm
<= 0.8x onnxruntime-web. The TAESD decoder and the text encoder get their ratios, no goal. The
first lines give the CPU and its SIMD extensions, which decide most of the ratios.

Model forms, both SD 1.5 shapes with random weights (timing does not depend on the values),
made with scripts/convert.py when missing (several minutes each):
  converted   fp16 weights at rest + com.microsoft MultiHeadAttention: what sd.wasm runs
  plain fp32  optimum-style export: what the native peers are built for
onnxruntime-web runs only the converted networks, the files sd.wasm runs: its wasm32 heap is
capped at 4 GiB, and 3.4 GB of plain fp32 UNet weights would leave the activations little of it.
Every measurement runs in its own process, so a UNet (up to 3.4 GB) never shares memory with
the next one and a crash costs one row. Each prints one JSON line on stdout, as
`sd --bench NETWORK` does: {"network": NETWORK, "latent", "load_s", "warmup_s", "runs_s": [...],
"threads"}. Every engine reports load (read + compile) time, then --runs runs after one warm-up
run (the first run pays the first touch of its memory: page faults); OpenVINO
gets static shapes and its effective settings are recorded in --json. onnxruntime-web runs in
scripts/bench-ort-web.mjs under node, single-threaded (no worker threads) with graph
optimizations off (they would fold the fp16 weights' Casts into f32); on first use bench.py
installs it with npm into ~/.cache/sd-wasm/npm.
"""
import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "sd-wasm")
CACHE = os.path.join(CACHE_ROOT, "models")
NPM_PREFIX = os.path.join(os.path.expanduser("~"), ".cache", "sd-wasm", "npm")
ORT_WEB_PACKAGE = "onnxruntime-web@1.30"  # pinned minor: the version the 0.8x goal was set against
ORT_WEB_SCRIPT = os.path.join(HERE, "bench-ort-web.mjs")
UNET = os.path.join("unet", "model.onnx")
TEXT_LEN = 77
# A short prompt's ids in CLIP's vocabulary: start, three words ("a photo of"), then the end
# token repeated as padding up to TEXT_LEN, as SD 1.5's tokenizer pads.
TOKENS = (49406, 320, 1125, 539)
END_TOKEN = 49407
TIMESTEP = 500.0
SEED = 0

CONVERTED, PLAIN = "converted", "plain fp32"
PEERS = ("onnxruntime", "openvino")  # Python packages, run by this script in a child process
ORT_WEB = "onnxruntime-web"          # npm package, run by bench-ort-web.mjs under node
ALL_PEERS = PEERS + (ORT_WEB,)
WASI_RUNNER = "wasi-runner"          # sd.wasm under Bacalhau's engine and settings
# Bacalhau's engine against wasmtime on the same module: per run, and on load.
WAZERO_GOALS = (("median_s", 1.25), ("load_s", 2.0))
REFERENCE = ("openvino", PLAIN)
WEB_REFERENCE = (ORT_WEB, CONVERTED)
GOALS = (("sd.wasm", CONVERTED, 1.5), ("sd-relaxed.wasm", CONVERTED, 1.5), ("native", CONVERTED, 1.0))
WEB_GOALS = (("sd.wasm", CONVERTED, 0.8), ("sd-relaxed.wasm", CONVERTED, 0.8))

# ---------------------------------------------------------------------------------------------
# Peer side (runs in a child process: `bench.py --peer ENGINE --peer-network NETWORK
# --peer-model NETWORK/model.onnx ...`)
# ---------------------------------------------------------------------------------------------


def graph_inputs(path):
    """(name, numpy dtype, dims with None for a symbolic one) of each input of the graph that
    is not an initializer: element types and fixed dims come from the file, not from guesses."""
    import onnx
    from onnx import helper

    graph = onnx.load(path, load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    for inp in graph.input:
        if inp.name not in initializers:
            t = inp.type.tensor_type
            yield inp.name, helper.tensor_dtype_to_np_dtype(t.elem_type), [d.dim_value or None for d in t.shape.dim]


def graph_outputs(path):
    import onnx

    return [o.name for o in onnx.load(path, load_external_data=False).graph.output]


def latent_channels(path, dims):
    """The graph's channel dim when it fixes one, else the model dir's
    vae_decoder/config.json latent_channels (what sd.wasm reads), else 4."""
    if len(dims) > 1 and dims[1]:
        return dims[1]
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "vae_decoder", "config.json")
    try:
        with open(config) as f:
            return int(json.load(f).get("latent_channels", 4))
    except (OSError, ValueError, TypeError):
        return 4


def unexpected(path, name):
    return ValueError(f"unexpected input {name!r} of {path}")


def unet_feeds(path, latent, rng):
    """The converted UNet takes a scalar timestep, the plain one a [1] timestep."""
    import numpy as np

    feeds = {}
    for name, dtype, dims in graph_inputs(path):
        if name == "sample":
            feeds[name] = rng.standard_normal((1, latent_channels(path, dims), latent, latent)).astype(dtype)
        elif name == "encoder_hidden_states":
            feeds[name] = rng.standard_normal((1, TEXT_LEN, dims[2])).astype(dtype)
        elif name == "timestep":
            feeds[name] = np.full((1,) * len(dims), TIMESTEP, dtype=dtype)
        else:
            raise unexpected(path, name)
    return feeds


def decoder_feeds(path, latent, rng):
    """The VAE and TAESD decoders: one latent_sample [1, C, L, L]."""
    feeds = {}
    for name, dtype, dims in graph_inputs(path):
        if name != "latent_sample":
            raise unexpected(path, name)
        feeds[name] = rng.standard_normal((1, latent_channels(path, dims), latent, latent)).astype(dtype)
    return feeds


def text_feeds(path, latent, rng):
    """The text encoder: input_ids [1, 77] in the graph's integer type (int32 in convert.py's
    export, int64 in optimum's); `latent` is unused."""
    import numpy as np

    ids = list(TOKENS) + [END_TOKEN] * (TEXT_LEN - len(TOKENS))
    feeds = {}
    for name, dtype, dims in graph_inputs(path):
        if name != "input_ids":
            raise unexpected(path, name)
        feeds[name] = np.array([ids], dtype=dtype)
    return feeds


class Network(NamedTuple):
    folder: str       # in the model dir
    feeds: Callable   # (model.onnx path, latent, numpy Generator) -> {input: array}
    output: str       # what the pipeline reads: the peers that can fetch one output fetch only it
    per_latent: bool  # measured at each --latents size; the text encoder once
    goals: tuple      # (ratio key, goals) printed under the table


NETWORKS = {
    "unet": Network("unet", unet_feeds, "out_sample", True, (("ratio", GOALS), ("ratio_web", WEB_GOALS))),
    "vae-decoder": Network("vae_decoder", decoder_feeds, "sample", True, (("ratio_web", WEB_GOALS),)),
    "taesd-decoder": Network("vae_decoder_taesd", decoder_feeds, "sample", True, ()),
    "text-encoder": Network("text_encoder", text_feeds, "last_hidden_state", False, ()),
}


def load_onnxruntime(path, feeds, outputs, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return (lambda: session.run(outputs, feeds)), {"intra_op_num_threads": threads, "outputs": outputs}


def openvino_config(threads):
    """OpenVINO's CPU settings for every measurement (scripts/bench_pictures_openvino.py too)."""
    return {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        # Otherwise OpenVINO computes in bf16/f16 on CPUs that have it, and quantizes the
        # activations of layers with compressed (here fp16) weights to int8.
        "INFERENCE_PRECISION_HINT": "f32",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
    }


def load_openvino(path, feeds, outputs, threads):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    # Static shapes, as sd.wasm gets for one latent size: OpenVINO's fastest configuration.
    model.reshape({name: list(a.shape) for name, a in feeds.items()})
    compiled = core.compile_model(model, "CPU", openvino_config(threads))
    request = compiled.create_infer_request()
    effective = {k: compiled.get_property(k) for k in
                 ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT")}
    effective = {k: v.get_type_name() if isinstance(v, ov.Type) else str(v) for k, v in effective.items()}
    return (lambda: request.infer(feeds)), effective


LOADERS = {"onnxruntime": load_onnxruntime, "openvino": load_openvino}


def first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def peer_main(engine, network, path, latent, runs, threads):
    import numpy as np

    spec = NETWORKS[network]
    feeds = spec.feeds(path, latent, np.random.default_rng(SEED))
    # Only the output the pipeline reads, where the graph has it (the text encoder also gives
    # pooler_output and the clip_skip_N hidden states); None: all of them.
    outputs = [spec.output] if spec.output in graph_outputs(path) else None
    start = time.perf_counter()
    try:
        run, config = LOADERS[engine](path, feeds, outputs, threads)
    except Exception as e:  # an engine rejecting the graph is a result, not a crash
        print(json.dumps({"error": f"does not load: {first_line(e)}"}))
        return
    load_s = time.perf_counter() - start
    times = []
    try:
        for _ in range(runs + 1):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    except Exception as e:
        print(json.dumps({"error": f"does not run: {first_line(e)}"}))
        return
    print(json.dumps({"network": network, "latent": latent, "load_s": load_s, "warmup_s": times[0],
                      "runs_s": times[1:], "threads": threads, "config": config}))


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def ensure_model(path, plain):
    """convert.py writes model_index.json last, so its presence marks a finished dir."""
    if os.path.exists(os.path.join(path, "model_index.json")) and os.path.exists(os.path.join(path, UNET)):
        return
    flags = ["--random-init", "sd15", "--no-encoder"] + (["--plain"] if plain else [])
    print(f"bench: {path} missing, running convert.py {' '.join(flags)} (several minutes)", file=sys.stderr)
    subprocess.run([sys.executable, os.path.join(HERE, "convert.py"), *flags, path],
                   stdout=sys.stderr, check=True)


def ort_web_entry():
    """The installed package.json, whose presence marks a finished npm install."""
    return os.path.join(NPM_PREFIX, "node_modules", ORT_WEB, "package.json")


def ensure_ort_web():
    """Installs onnxruntime-web into NPM_PREFIX on first use; a failure leaves its rows as errors."""
    if os.path.exists(ort_web_entry()):
        return
    print(f"bench: installing {ORT_WEB_PACKAGE} into {NPM_PREFIX}", file=sys.stderr)
    os.makedirs(NPM_PREFIX, exist_ok=True)
    try:
        subprocess.run(["npm", "install", "--prefix", NPM_PREFIX, ORT_WEB_PACKAGE, "--no-audit", "--no-fund"],
                       stdout=sys.stderr, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"bench: npm install failed: {first_line(e)}", file=sys.stderr)


def wasmtime_path():
    try:
        return subprocess.run([os.path.join(HERE, "wasmtime-path")], capture_output=True, text=True,
                              check=True).stdout.strip()
    except subprocess.CalledProcessError:
        return None


def measure(cmd, needs, network, form, model_dir):
    """Runs one measurement process; returns its JSON result, or {"error": ...}."""
    folder = NETWORKS[network].folder
    if not os.path.exists(os.path.join(model_dir, folder, "model.onnx")):
        plain = "--plain " if form == PLAIN else ""
        hint = f" (scripts/convert.py {plain}--random-init taesd DIR adds one)" if network == "taesd-decoder" else ""
        return {"error": f"{folder}/ not in this model dir: {model_dir}{hint}"}
    missing = [path for path in needs if not (path and os.path.exists(path))]
    if missing:
        return {"error": f"not found: {missing[0]}"}
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "error" in result or result.get("network") == network:
                return result
    tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["no output"]
    return {"error": f"exit code {proc.returncode}: {tail[0][:300]}"}


def measurements(args, network, latent, wasmtime):
    """(engine, model form, command, files the command needs, model dir) for one network at one
    latent size (None: the text encoder, which has none)."""
    size = [] if latent is None else ["--latent", str(latent)]
    ours = ["--bench", network, *size, "--runs", str(args.runs)]
    if not args.skip_wasm:
        # sd-relaxed.wasm (scripts/build-wasm.sh --relaxed) is measured when it has been built.
        modules = [("sd.wasm", args.wasm)] + [("sd-relaxed.wasm", args.relaxed_wasm)] * os.path.exists(args.relaxed_wasm)
        for engine, module in modules:
            yield engine, CONVERTED, [wasmtime, "run", "-W", "max-memory-size=4294967296",
                                      "--dir", f"{args.models}::/models", module, *ours,
                                      "--threads", str(args.threads), "--models", "/models"], \
                [wasmtime or "wasmtime", module], args.models
        if not args.skip_wasi_runner:
            # Bacalhau's engine and settings (wazero v1.12.0, scripts/build-wasi-runner.sh).
            yield WASI_RUNNER, CONVERTED, [args.wasi_runner, "--memory", "4GiB", "-i", f"{args.models}:/models",
                                          args.wasm, "--", *ours, "--models", "/models"], \
                [args.wasi_runner, args.wasm], args.models
    if not args.skip_native:
        # Always named: the native build's own default is every core.
        for threads in args.native_threads or [args.threads]:
            yield "native", CONVERTED, [args.native, *ours, "--threads", str(threads), "--models", args.models], \
                [args.native], args.models
    folder = NETWORKS[network].folder
    for engine in (e for e in PEERS if e in args.peers):
        for form, path in ((CONVERTED, args.models), (PLAIN, args.plain_models)):
            yield engine, form, [sys.executable, os.path.abspath(__file__), "--peer", engine, "--peer-network", network,
                                 "--peer-model", os.path.join(path, folder, "model.onnx"), *size,
                                 "--runs", str(args.runs), "--threads", str(args.threads)], [], path
    if ORT_WEB in args.peers:
        # No --max-old-space-size: the weights' buffers and the wasm heap live outside V8's heap.
        yield ORT_WEB, CONVERTED, [args.node, ORT_WEB_SCRIPT, os.path.join(args.models, folder),
                                   "-" if latent is None else str(latent), str(args.runs), network], \
            [args.node, ORT_WEB_SCRIPT, ort_web_entry()], args.models


def cpu():
    """The CPU model and which SIMD extensions it has: they decide most of the ratios (wasm SIMD
    is 128-bit, so sd.wasm and onnxruntime-web get 128-bit vectors (FMA with relaxed SIMD) where
    the native engines use AVX2/AVX-512)."""
    model, flags = "unknown", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    simd = [f for f in ("sse4_2", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return {"model": model, "simd": simd}


def machine(found=None):
    """One line for the output; scripts/bench_pictures.py prints it too."""
    found = found or cpu()
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / (1 << 20)
    return f"{found['model']}, {len(os.sched_getaffinity(0))} cores, {mem_gib:.0f} GiB, {' '.join(found['simd'])}"


def versions(wasmtime, node):
    found = {}
    for package in PEERS:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    try:
        with open(ort_web_entry()) as f:
            found[ORT_WEB] = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        found[ORT_WEB] = "not installed"
    if node:
        found["node"] = tool_version(node, "not installed")
    found["wasmtime"] = tool_version(wasmtime, "not installed (scripts/install-deps.sh)") if wasmtime else "not used"
    return found


def tool_version(tool, missing):
    """`TOOL --version`, or `missing` when it does not run."""
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return missing


def add_ratios(rows):
    """ratio: to OpenVINO (plain fp32); ratio_web: to onnxruntime-web (converted); each on the
    same network at the same latent."""
    for key, peer in (("ratio", REFERENCE), ("ratio_web", WEB_REFERENCE)):
        reference = {(r["network"], r["latent"]): r["median_s"] for r in rows
                     if (r["engine"], r["model"]) == peer and "median_s" in r}
        for r in rows:
            if "median_s" in r and (r["network"], r["latent"]) in reference:
                r[key] = r["median_s"] / reference[(r["network"], r["latent"])]


def size_text(latent):
    return "-" if latent is None else f"{latent}x{latent}"


def cases(rows):
    """The (network, latent) pairs measured, in their order."""
    return list(dict.fromkeys((r["network"], r["latent"]) for r in rows))


def print_table(rows):
    print(f"{'network':<13} {'engine':<15} {'model':<10} {'latent':>6} {'threads':>7} {'load s':>8} {'min s':>8} "
          f"{'median s':>8} {'x OpenVINO':>10} {'x ort-web':>9}")
    for r in rows:
        head = f"{r['network']:<13} {r['engine']:<15} {r['model']:<10} {size_text(r['latent']):>6} "
        if "error" in r:
            print(f"{head}{'':>7} {r['error']}")
            continue
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
        ratio_web = f"{r['ratio_web']:.2f}x" if "ratio_web" in r else ""
        print(f"{head}{r.get('threads', '?'):>7} {r['load_s']:>8.2f} {r['min_s']:>8.3f} {r['median_s']:>8.3f} "
              f"{ratio:>10} {ratio_web:>9}")
    peers = {"ratio": "OpenVINO", "ratio_web": ORT_WEB}
    for network, latent in cases(rows):
        parts = []
        for key, goals in NETWORKS[network].goals:
            for engine, form, goal in goals:
                # The most threads an engine was measured at (the native build at every core).
                row = max((r for r in rows if (r["network"], r["engine"], r["model"], r["latent"])
                           == (network, engine, form, latent)),
                          key=lambda r: r.get("threads", 0), default=None)
                ratio = row and row.get(key)
                verdict = "not measured" if ratio is None else \
                    f"{ratio:.2f}x (goal <= {goal}x: {'met' if ratio <= goal else 'NOT met'})"
                parts.append(f"{engine}/{peers[key]} {verdict}")
        if parts:
            print(f"goals, {network} at {size_text(latent)}: " + "; ".join(parts))
    # Bacalhau's engine over wasmtime, the same module and work.
    for network, latent in cases(rows):
        same = {r["engine"]: r for r in rows if (r["network"], r["latent"]) == (network, latent)
                and r["engine"] in ("sd.wasm", WASI_RUNNER) and "median_s" in r}
        if len(same) == 2:
            print(f"{WASI_RUNNER}/wasmtime, {network} at {size_text(latent)}: " + "; ".join(
                f"{'run' if key == 'median_s' else 'load'} {same[WASI_RUNNER][key] / same['sd.wasm'][key]:.2f}x "
                f"(goal <= {goal}x: {'met' if same[WASI_RUNNER][key] / same['sd.wasm'][key] <= goal else 'NOT met'})"
                for key, goal in WAZERO_GOALS))
    # The native build's speed-up over its own single-threaded run (the goal: >= 1.8x
    # at 2 threads on a 2-core machine), when --native-threads measured more than one count.
    for network, latent in cases(rows):
        native = {r["threads"]: r["median_s"] for r in rows
                  if (r["network"], r["engine"], r["latent"]) == (network, "native", latent) and "median_s" in r}
        if 1 in native and len(native) > 1:
            print(f"native speed-up, {network} at {size_text(latent)}: " + ", ".join(
                f"{n} threads {native[1] / native[n]:.2f}x" for n in sorted(native) if n > 1)
                + " (vs 1 thread, median; goal >= 1.8x at 2 threads)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", nargs="+", choices=tuple(NETWORKS), default=["unet"], metavar="NETWORK",
                   help=f"the networks to measure (default unet; any of {' '.join(NETWORKS)})")
    p.add_argument("--latents", type=int, nargs="+", default=[32, 64],
                   help="latent sizes (default 32 64; the pictures the decoders make are 8x that)")
    p.add_argument("--runs", type=int, default=2, help="timed runs after one warm-up (default 2)")
    p.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1)")
    p.add_argument("--models", default=os.path.join(CACHE, "sd15"), help="converted model dir")
    p.add_argument("--plain-models", default=os.path.join(CACHE, "sd15-plain"), help="plain fp32 model dir")
    p.add_argument("--wasm", default=os.path.join(ROOT, "dist", "sd.wasm"))
    p.add_argument("--relaxed-wasm", default=os.path.join(ROOT, "dist", "sd-relaxed.wasm"))
    p.add_argument("--native", default=os.path.join(ROOT, "target", "release", "sd"))
    p.add_argument("--node", default="node", help="node for onnxruntime-web (default: node on PATH)")
    p.add_argument("--native-threads", type=int, nargs="+",
                   help="measure the native build at each of these thread counts (default: --threads)")
    p.add_argument("--skip-wasm", action="store_true")
    p.add_argument("--skip-native", action="store_true")
    p.add_argument("--wasi-runner", default=os.path.join(CACHE_ROOT, "bin", "wasi-runner"),
                   help="Bacalhau's engine (scripts/build-wasi-runner.sh builds it)")
    p.add_argument("--skip-wasi-runner", action="store_true", help="no sd.wasm under wasi-runner (minutes per UNet run)")
    p.add_argument("--skip-peers", action="store_true", help="no peers at all (and no plain fp32 dir needed)")
    p.add_argument("--peers", nargs="+", choices=ALL_PEERS, default=list(ALL_PEERS), metavar="PEER",
                   help=f"the peers to measure (default all: {' '.join(ALL_PEERS)}); the plain fp32 dir "
                        f"is needed only for onnxruntime and openvino")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    p.add_argument("--peer-network", choices=tuple(NETWORKS), default="unet", help=argparse.SUPPRESS)
    p.add_argument("--peer-model", help=argparse.SUPPRESS)
    p.add_argument("--latent", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs < 1 or args.threads < 1 or min(args.native_threads or [1]) < 1:
        p.error("--runs, --threads and --native-threads must be at least 1")
    if args.peer:
        peer_main(args.peer, args.peer_network, args.peer_model, args.latent, args.runs, args.threads)
        return
    if args.skip_peers:
        args.peers = []
    args.node = shutil.which(args.node) or args.node  # a path, for measure()'s existence check
    args.models, args.plain_models = os.path.abspath(args.models), os.path.abspath(args.plain_models)
    # First, so a long run shows what it runs on before any number.
    found_cpu = cpu()
    print(f"bench: {found_cpu['model']}, SIMD: {' '.join(found_cpu['simd']) or 'none found'}",
          file=sys.stderr, flush=True)
    ensure_model(args.models, plain=False)
    if any(e in args.peers for e in PEERS):
        ensure_model(args.plain_models, plain=True)
    if ORT_WEB in args.peers:
        ensure_ort_web()

    wasmtime = None if args.skip_wasm else wasmtime_path()
    networks = list(dict.fromkeys(args.networks))
    info = {"machine": machine(found_cpu), "cpu": found_cpu, "threads": args.threads, "runs": args.runs,
            "networks": networks,
            "versions": versions(wasmtime, args.node if ORT_WEB in args.peers else None),
            "models": {CONVERTED: args.models, PLAIN: args.plain_models}}
    rows = []
    for network in networks:
        for latent in args.latents if NETWORKS[network].per_latent else [None]:
            for engine, form, cmd, needs, model_dir in measurements(args, network, latent, wasmtime):
                print(f"bench: {network}, {engine} ({form}) at {size_text(latent)} ...", file=sys.stderr, flush=True)
                result = measure(cmd, needs, network, form, model_dir)
                # Ours last: sd --bench text-encoder reports the latent it ignored.
                row = {**result, "network": network, "engine": engine, "model": form, "latent": latent}
                if "runs_s" in result:
                    row.update(min_s=min(result["runs_s"]), median_s=statistics.median(result["runs_s"]))
                done = row["error"] if "error" in row else f"median {row['median_s']:.3f} s"
                print(f"bench:   {done}", file=sys.stderr, flush=True)
                rows.append(row)
    add_ratios(rows)

    print(f"machine:  {info['machine']}")
    print(f"threads:  {args.threads}" + (" (onnxruntime-web: 1)" if ORT_WEB in args.peers and args.threads != 1 else "")
          + f", runs: {args.runs} after one warm-up")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"models:   converted = {args.models} (fp16 weights at rest, MultiHeadAttention), "
          f"plain fp32 = {args.plain_models}")
    print()
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**info, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
