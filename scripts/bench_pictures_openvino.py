#!/usr/bin/env python3
"""The OpenVINO peer of scripts/bench_pictures.py: whole pictures the way the system sd.wasm
replaces makes them (bes-dev/stable_diffusion.openvino: OpenVINO-compiled networks driven by a
Python loop with diffusers' scheduler), from the same converted model dir sd.wasm runs.

    python3 scripts/bench_pictures_openvino.py --models ~/.cache/sd-wasm/models/sd-turbo \\
        --output /tmp/out --threads 1 --prompt "a lighthouse" --preset turbo
    python3 scripts/bench_pictures_openvino.py --models ~/.cache/sd-wasm/models/sd15 --output /tmp/out \\
        --threads 2 --prompts prompts.txt --steps 20 --scheduler dpm++2m --guidance-scale 7.5

It takes sd.wasm's flags for the work (--steps, --guidance-scale, --scheduler, --vae, --preset,
--width, --height, --seed, --prompt or --prompts) and resolves --preset as sd.wasm does
(src/request/preset.rs): turbo = 1 step, guidance 0, the model's own scheduler, TAESD when the
dir has it; lcm = 4 steps of LCMScheduler, guidance 8.5 as the UNet's guidance embedding
(timestep_cond; 1 for a UNet without one), TAESD when the dir has it. Per picture: CLIPTokenizer
(padded to 77), the text encoder (a second pass on "" when classifier-free guidance runs), the
scheduler's initial noise (torch.randn), the UNet once per step — with batch 2 (unconditional,
text) when guided, as diffusers and stable_diffusion.openvino do (sd.wasm runs two batch-1
evaluations: the same arithmetic) — the scheduler's step, the latents divided by the decoder's
scaling factor, the decoder (vae_decoder/ or vae_decoder_taesd/), a PNG written with PIL. Every
network is read and compiled once per process, with static shapes and bench.py's OpenVINO
settings (f32 inference precision, no dynamic quantization, one stream, latency hint,
INFERENCE_NUM_THREADS = --threads), without a compiled-model cache: like sd.wasm, every process
starts from the ONNX files. With --threads 1 the torch side (scheduler arithmetic) is held to
one thread too. Prints one JSON line of stage timings on stdout, then exits at once (os._exit:
no teardown of the compiled networks after the last PNG).
"""
import argparse
import inspect
import json
import os
import sys
import time

START = time.monotonic()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import TEXT_LEN, openvino_config  # noqa: E402  (the per-network benchmark's settings)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="converted model dir (as sd.wasm's --models)")
    p.add_argument("--output", required=True, help="directory for the PNGs")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="OpenVINO's INFERENCE_NUM_THREADS (default: every core)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt")
    what.add_argument("--prompts", help="a file of prompts, one a line: one picture each, networks compiled once")
    # None = not given, so a preset fills it in (as sd.wasm: the user's own flags win).
    p.add_argument("--preset", choices=("turbo", "lcm"))
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance-scale", type=float)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS))
    p.add_argument("--vae", choices=("full", "taesd"))
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="accepted for sd.wasm's command lines")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


# sd.wasm's --scheduler names -> (diffusers class, config keys the name pins: src/schedulers/kind.rs)
SCHEDULERS = {
    "pndm": ("PNDMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler",
                {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler",
                       {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def resolve(args):
    """The run's steps, guidance, scheduler and decoder: the flags, else the preset as
    src/request/preset.rs fills it in for this model dir, else sd.wasm's defaults."""
    models = args.models
    scheduler_config = read_json(os.path.join(models, "scheduler", "scheduler_config.json"))
    unet_config = read_json(os.path.join(models, "unet", "config.json"), {})
    embedding_dim = unet_config.get("time_cond_proj_dim")
    taesd = os.path.exists(os.path.join(models, "vae_decoder_taesd", "model.onnx"))
    lcm = embedding_dim is not None or scheduler_config.get("_class_name") == "LCMScheduler"
    fast_decoder = "taesd" if taesd else "full"
    preset = {}
    if args.preset == "turbo":
        if scheduler_config.get("timestep_spacing") != "trailing" or lcm:
            sys.exit(f"--preset turbo is for one-step models (trailing timestep spacing); {models} is not one")
        preset = {"steps": 1, "guidance_scale": 0.0, "vae": fast_decoder}
    elif args.preset == "lcm":
        if not lcm:
            sys.exit(f"--preset lcm is for latent-consistency models; {models} is not one")
        preset = {"steps": 4, "guidance_scale": 8.5 if embedding_dim is not None else 1.0,
                  "scheduler": "lcm", "vae": fast_decoder}
    defaults = {"steps": 20, "guidance_scale": 7.5, "scheduler": None, "vae": "full"}
    run = {}
    for key, default in defaults.items():
        given = getattr(args, key)
        run[key] = given if given is not None else preset.get(key, default)
    run["embedding_dim"] = embedding_dim
    # As diffusers' pipelines (and sd.wasm's plan.rs): a UNet with a guidance embedding never
    # runs the unconditional pass.
    run["guided"] = run["guidance_scale"] > 1.0 and embedding_dim is None
    run["scheduler_config"] = scheduler_config
    return run


def make_scheduler(name, config):
    """diffusers' scheduler `name` (None: the model's own) from the model's config, after the
    rewrite StableDiffusionPipeline.__init__ does (src/schedulers/pipeline_config.rs):
    steps_offset 1, clip_sample false."""
    import diffusers

    class_name, pinned = SCHEDULERS[name] if name else (config["_class_name"], {})
    config = {**config, "steps_offset": 1, "clip_sample": False, **pinned}
    config.pop("_class_name", None)
    return getattr(diffusers, class_name).from_config(config)


def guidance_embedding(guidance_scale, dim, batch):
    """diffusers' LatentConsistencyModelPipeline.get_guidance_scale_embedding(w = scale - 1)."""
    import torch

    w = torch.tensor(guidance_scale - 1).repeat(batch) * 1000.0
    half = dim // 2
    emb = torch.exp(torch.arange(half, dtype=torch.float32) * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    emb = w.to(torch.float32)[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.numpy()


class Networks:
    """The model dir's networks compiled by OpenVINO with static shapes, as bench.py's
    load_openvino compiles its UNet."""

    def __init__(self, models, threads):
        import openvino as ov

        self.ov, self.core, self.models, self.threads = ov, ov.Core(), models, threads
        self.config = openvino_config(threads)

    def compile(self, folder, shapes, needs_outputs):
        """Reads folder/model.onnx, pins `shapes` (input name -> shape; each must be an input of
        the graph), compiles it; returns a function of the feeds giving the named outputs."""
        path = os.path.join(self.models, folder, "model.onnx")
        model = self.core.read_model(path)
        inputs = {name for i in model.inputs for name in i.get_names()}
        outputs = {name for o in model.outputs for name in o.get_names()}
        missing = [n for n in shapes if n not in inputs] + [n for n in needs_outputs if n not in outputs]
        if missing:
            raise SystemExit(f"{path}: no {missing[0]!r} among inputs {sorted(inputs)} / outputs {sorted(outputs)}")
        model.reshape({name: self.ov.PartialShape(shape) for name, shape in shapes.items()})
        compiled = self.core.compile_model(model, "CPU", self.config)
        request = compiled.create_infer_request()
        types = {name: compiled.input(name).get_element_type().to_dtype() for name in shapes}

        def run(feeds):
            result = request.infer({name: value.astype(types[name], copy=False) for name, value in feeds.items()})
            return [result[compiled.output(name)].copy() for name in needs_outputs]

        return run


def main(argv=None):
    args = parse(argv)
    run = resolve(args)
    if args.threads == 1:
        # The scheduler's torch arithmetic on one thread too (set before torch is imported).
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = "1"
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPTokenizer

    torch.set_num_threads(args.threads)
    stages = {"imports_s": time.monotonic() - START}

    if args.prompts:
        with open(args.prompts) as f:
            prompts = [line.strip() for line in f if line.strip()]
    else:
        prompts = [args.prompt]
    os.makedirs(args.output, exist_ok=True)
    models = args.models
    unet_config = read_json(os.path.join(models, "unet", "config.json"), {})
    vae_config = read_json(os.path.join(models, "vae_decoder", "config.json"), {})
    latent_channels = vae_config.get("latent_channels", 4)
    scale = 2 ** (len(vae_config.get("block_out_channels", [0] * 4)) - 1)
    latent = (latent_channels, args.height // scale, args.width // scale)
    decoder = "vae_decoder_taesd" if run["vae"] == "taesd" else "vae_decoder"
    if decoder == "vae_decoder":
        scaling = vae_config.get("scaling_factor", 0.18215)
    else:
        scaling = read_json(os.path.join(models, decoder, "config.json"), {}).get("scaling_factor", 1.0)
    hidden = unet_config.get("cross_attention_dim", 768)
    batch = 2 if run["guided"] else 1

    t0 = time.monotonic()
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(models, "tokenizer"))
    nets = Networks(models, args.threads)
    text_encoder = nets.compile("text_encoder", {"input_ids": [1, TEXT_LEN]}, ["last_hidden_state"])
    unet_shapes = {"sample": [batch, *latent], "timestep": [], "encoder_hidden_states": [batch, TEXT_LEN, hidden]}
    if run["embedding_dim"] is not None:
        unet_shapes["timestep_cond"] = [batch, run["embedding_dim"]]
    unet = nets.compile("unet", unet_shapes, ["out_sample"])
    vae = nets.compile(decoder, {"latent_sample": [1, *latent]}, ["sample"])
    stages["load_s"] = time.monotonic() - t0

    def encode(text):
        ids = tokenizer(text, padding="max_length", max_length=TEXT_LEN, truncation=True, return_tensors="np").input_ids
        return text_encoder({"input_ids": ids})[0]

    timings = {"text_s": 0.0, "denoise_s": 0.0, "decode_s": 0.0}
    nan_values = 0
    uncond = None
    for index, prompt in enumerate(prompts):
        seed = args.seed + index
        t0 = time.monotonic()
        cond = encode(prompt)
        if run["guided"] and uncond is None:
            uncond = encode(args.negative_prompt)
        hidden_states = np.concatenate([uncond, cond]) if run["guided"] else cond
        timings["text_s"] += time.monotonic() - t0

        t0 = time.monotonic()
        scheduler = make_scheduler(run["scheduler"], run["scheduler_config"])
        scheduler.set_timesteps(run["steps"])
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn((1, *latent), generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
        # As diffusers' prepare_extra_step_kwargs: the generator to the schedulers that draw noise.
        extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
        feeds = {"encoder_hidden_states": hidden_states}
        if run["embedding_dim"] is not None:
            feeds["timestep_cond"] = guidance_embedding(run["guidance_scale"], run["embedding_dim"], batch)
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(latents, t).numpy()
            feeds["sample"] = np.concatenate([x] * batch) if batch > 1 else x
            feeds["timestep"] = np.array(float(t), dtype=np.float32)
            pred = unet(feeds)[0]
            if run["guided"]:
                pred = pred[:1] + run["guidance_scale"] * (pred[1:] - pred[:1])
            latents = scheduler.step(torch.from_numpy(pred), t, latents, **extra).prev_sample
        timings["denoise_s"] += time.monotonic() - t0

        t0 = time.monotonic()
        image = vae({"latent_sample": (latents / scaling).numpy()})[0]
        nan_values += int(np.isnan(image).sum())
        pixels = np.nan_to_num(np.clip(image[0] / 2 + 0.5, 0, 1), nan=0.0)
        pixels = np.round(pixels * 255).astype(np.uint8).transpose(1, 2, 0)
        Image.fromarray(pixels).save(os.path.join(args.output, f"openvino-{index:03}-{seed}.png"))
        timings["decode_s"] += time.monotonic() - t0

    stages.update(timings)
    stages["total_s"] = time.monotonic() - START
    print(json.dumps({"pictures": len(prompts), "threads": args.threads, "steps": run["steps"],
                      "guidance_scale": run["guidance_scale"], "guided": run["guided"], "unet_batch": batch,
                      "scheduler": type(scheduler).__name__, "decoder": decoder,
                      "nan_values": nan_values,
                      **{k: round(v, 3) for k, v in stages.items()}}))


if __name__ == "__main__":
    main()
    # The PNGs are on disk: leave without tearing down the compiled networks (seconds for the
    # UNet's 3.4 GB, more on a busy machine), so the parent's wall time ends where the work
    # does, as sd.wasm's process ends right after its last PNG.
    sys.stdout.flush()
    os._exit(0)
