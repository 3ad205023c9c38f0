#!/usr/bin/env python3
"""Builds fixtures/tiny/: a TINY random-weight Stable Diffusion 1.x pipeline exported to ONNX in the
diffusers/optimum ONNX layout, plus diffusers' own outputs as the test oracle.

Regenerate (from the repo root; CPU only, no network, ~1.5 minutes):

    python3 scripts/make_fixtures.py            # writes fixtures/tiny/ and fixtures/README.md

Made with: Python 3.11, torch 2.15.0 (CPU), diffusers 0.42.1, transformers 5.24.0, onnx 1.23.2,
onnxruntime 1.32.0, open-clip-torch (only for its CLIP BPE vocabulary, see scripts/clip_vocab.py).
Other versions may initialise the random weights differently or change scheduler details; the
script then still produces a self-consistent fixture (models and oracle are regenerated together),
but the committed files will change.

What it does
  1. Builds the real diffusers/transformers classes from small configs with fixed torch seeds:
     CLIPTextModel (hidden 16, 2 layers, 4 heads, SD 1.5's token ids), UNet2DConditionModel
     (block_out_channels (32, 64), 2 layers per block, sample_size 8), AutoencoderKL
     (block_out_channels [32, 64] -> vae scale factor 2, scaling_factor 0.5).
  2. Rescales a few weights (SENSITIVITY_SCALES) so the random model is not "flat": a changed
     word, pad token, guidance scale or seed visibly changes the final image (checked, recorded
     in expected/sensitivity.json; the script fails if a threshold is not met).
  3. Exports text_encoder, unet (weights as external data in unet/model.onnx_data, as optimum
     does), vae_encoder and vae_decoder with torch.onnx.export (legacy TorchScript exporter,
     opset 17) with optimum's input/output names and dynamic axes, and checks each against torch
     with onnxruntime.
  4. Runs diffusers' StableDiffusionPipeline (torch, fp32, CPU) built from the SAME torch modules
     for each case of expected/cases.json and saves the PIL images as PNG (the main oracle), the
     float images, the final latents, tokenizer ids, text embeddings and torch.randn draws.
  5. Replays every case with the ONNX files through onnxruntime (diffusers schedulers, the same
     torch.Generator use as the pipeline) and checks the uint8 images against the oracle.
"""
import collections
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image

import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_vocab import write_clip_tokenizer, write_tokenizer  # noqa: E402
from convert import SD15_SCHEDULER, UNetWrapper, VaeDecoderWrapper, VaeEncoderWrapper, export  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "fixtures", "tiny")
EXP = os.path.join(OUT, "expected")

# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

HIDDEN = 16  # text hidden size = UNet cross_attention_dim (49408 x 16 fp32 embeddings = 3.2 MB)

# SD 1.5's scheduler/scheduler_config.json (plus prediction_type, its default).
SCHEDULER_CONFIG = dict(SD15_SCHEDULER, _diffusers_version="0.6.0")

TEXT_CONFIG = dict(
    vocab_size=49408,
    max_position_embeddings=77,
    hidden_size=HIDDEN,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    hidden_act="quick_gelu",  # as SD 1.5 (openai/clip-vit-large-patch14)
    layer_norm_eps=1e-5,
    projection_dim=HIDDEN,
    # SD 1.5's text_encoder/config.json has these (odd) ids; with eos_token_id == 2 transformers
    # pools at argmax(input_ids) (the first <|endoftext|> = 49407), the legacy CLIP behaviour.
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=HIDDEN,
    attention_head_dim=8,
    norm_num_groups=32,
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=[32, 64],  # vae scale factor 2 ** (2 - 1) = 2, deliberately not 8
    down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
    up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=16,
    scaling_factor=0.5,  # deliberately not SD's 0.18215: read it from the config
)

# Multipliers applied to the random init so that the tiny model reacts to its inputs (see
# sensitivity()). Tuned by hand; the script asserts the resulting sensitivities.
SENSITIVITY_SCALES = {
    "text_token_embedding": 10.0,
    "unet_attn2_to_k": 6.0,
    "unet_attn2_to_v": 8.0,
    "unet_attn2_to_out": 8.0,
    "unet_conv_out": 2.0,
    "vae_post_quant_conv": 0.01,
    "vae_decoder_conv_out": 1.25,
}

SEEDS = {"text_encoder": 0, "unet": 1, "vae": 2}

PROMPT = "a lighthouse at dusk, oil painting"
NEGATIVE = "blurry"
SEED = 42
STEPS = 12
GUIDANCE = 7.5
WIDTH = HEIGHT = 16  # = unet sample_size (8) x vae scale factor (2): the pipeline's default size
LONG_PROMPT = (
    "a very detailed oil painting of a tall white lighthouse standing on a rocky cliff at dusk, "
    "with crashing waves, seagulls circling overhead, a small fishing boat returning to the harbor, "
    "warm orange and purple clouds, a crescent moon rising, reflections on the wet rocks, soft "
    "impressionist brush strokes, golden hour light, dramatic atmosphere, masterpiece, trending on "
    "artstation, highly detailed, sharp focus, by a famous dutch master of the golden age, museum "
    "quality, dark vignette, canvas texture"
)
# Tokenizer-only probes (ids recorded in expected/tokens.json): case, spaces, punctuation,
# non-ASCII, and a literal special token inside the text (HF treats it as the special token).
TOKENIZER_PROBES = [
    "Hello,   WORLD!! it's 3.14 o'clock",
    "  leading and trailing spaces\tand a\nnewline  ",
    "café naïve 日本語 🚀",
    "before <|endoftext|> after",
]

SCHEDULERS = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {}),
    "dpm++2m-karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "lms": (LMSDiscreteScheduler, {}),
    "lcm": (LCMScheduler, {}),
}


def make_scheduler(name, base_config):
    """As diffusers users do: XScheduler.from_config(pipe.scheduler.config[, **overrides])."""
    cls, kw = SCHEDULERS[name]
    return cls.from_config(base_config, **kw)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def build_models(scales):
    torch.manual_seed(SEEDS["text_encoder"])
    text_config = CLIPTextConfig(**TEXT_CONFIG)
    text_config.architectures = ["CLIPTextModel"]
    text_encoder = CLIPTextModel(text_config).eval()

    torch.manual_seed(SEEDS["unet"])
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()

    torch.manual_seed(SEEDS["vae"])
    vae = AutoencoderKL(**VAE_CONFIG).eval()

    with torch.no_grad():
        text_model = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 has no wrapper
        text_model.embeddings.token_embedding.weight.mul_(scales["text_token_embedding"])
        scale_unet(unet, scales)
        vae.post_quant_conv.weight.mul_(scales["vae_post_quant_conv"])
        vae.decoder.conv_out.weight.mul_(scales["vae_decoder_conv_out"])
        vae.decoder.conv_out.bias.mul_(scales["vae_decoder_conv_out"])
    for m in (text_encoder, unet, vae):
        m.requires_grad_(False)
    return text_encoder, unet, vae


def scale_unet(unet, scales):
    """The UNet part of SENSITIVITY_SCALES (also used for the 9-channel inpainting UNet)."""
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.to_k.weight.mul_(scales["unet_attn2_to_k"])
                module.to_v.weight.mul_(scales["unet_attn2_to_v"])
                module.to_out[0].weight.mul_(scales["unet_attn2_to_out"])
        unet.conv_out.weight.mul_(scales["unet_conv_out"])
        unet.conv_out.bias.mul_(scales["unet_conv_out"])


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# ONNX export (names and dynamic axes as optimum's stable-diffusion ONNX configs)
# ---------------------------------------------------------------------------------------------


def export_unet(unet, unet_dir, g):
    """optimum's UNet export: weights as external data, dynamic batch and size."""
    export(
        UNetWrapper(unet),
        (
            torch.randn(2, unet.config.in_channels, 8, 8, generator=g),
            torch.tensor([500.0]),
            torch.randn(2, 77, HIDDEN, generator=g),
        ),
        os.path.join(unet_dir, "model.onnx"),
        ["sample", "timestep", "encoder_hidden_states"],
        ["out_sample"],
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "timestep": {0: "steps"},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
            "out_sample": {0: "batch_size", 2: "height", 3: "width"},
        },
        external_data=True,
    )
    unet.save_config(unet_dir)


def export_all(text_encoder, unet, vae):
    te_dir = os.path.join(OUT, "text_encoder")
    ids = torch.randint(0, 49408, (2, 77), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    export(
        text_encoder,
        (ids,),
        os.path.join(te_dir, "model.onnx"),
        ["input_ids"],
        ["last_hidden_state", "pooler_output"],
        {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
            "pooler_output": {0: "batch_size"},
        },
    )
    text_encoder.config.save_pretrained(te_dir)

    g = torch.Generator().manual_seed(0)
    export_unet(unet, os.path.join(OUT, "unet"), g)

    for sub in ("vae_encoder", "vae_decoder"):
        vae.save_config(os.path.join(OUT, sub))
    export(
        VaeEncoderWrapper(vae),
        (torch.rand(1, 3, 16, 16, generator=g) * 2 - 1,),
        os.path.join(OUT, "vae_encoder", "model.onnx"),
        ["sample"],
        ["latent_parameters"],
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "latent_parameters": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
        },
    )
    export(
        VaeDecoderWrapper(vae),
        (torch.randn(1, 4, 8, 8, generator=g),),
        os.path.join(OUT, "vae_decoder", "model.onnx"),
        ["latent_sample"],
        ["sample"],
        {
            "latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
            "sample": {0: "batch_size", 2: "height", 3: "width"},
        },
    )


def session(rel):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(os.path.join(OUT, rel), opts, providers=["CPUExecutionProvider"])


def verify_onnx(text_encoder, unet, vae, tokenizer):
    """Max abs diff onnxruntime vs torch for each model, on several shapes."""
    report = {}
    g = torch.Generator().manual_seed(7)

    def diff(a, b):
        return float(np.abs(np.asarray(a) - np.asarray(b)).max())

    s = session("text_encoder/model.onnx")
    worst = 0.0
    for prompts in ([PROMPT], ["", NEGATIVE], [LONG_PROMPT]):
        ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            ref = text_encoder(ids)
        out = s.run(None, {"input_ids": ids.numpy().astype(np.int32)})
        worst = max(worst, diff(out[0], ref.last_hidden_state), diff(out[1], ref.pooler_output))
    ids = torch.randint(0, 49408, (1, 9), generator=g, dtype=torch.int32)  # another sequence length
    with torch.no_grad():
        ref = text_encoder(ids)
    out = s.run(None, {"input_ids": ids.numpy()})
    worst = max(worst, diff(out[0], ref.last_hidden_state), diff(out[1], ref.pooler_output))
    report["text_encoder"] = worst

    s = session("unet/model.onnx")
    worst = 0.0
    for batch, h, w, t in ((1, 8, 8, 981.0), (2, 8, 8, 1.0), (2, 8, 12, 437.25), (1, 12, 8, 0.0)):
        x = torch.randn(batch, 4, h, w, generator=g) * 3
        ehs = torch.randn(batch, 77, HIDDEN, generator=g)
        tt = torch.tensor([t], dtype=torch.float32)
        with torch.no_grad():
            ref = unet(x, tt, ehs).sample
        out = s.run(None, {"sample": x.numpy(), "timestep": tt.numpy(), "encoder_hidden_states": ehs.numpy()})
        worst = max(worst, diff(out[0], ref) / max(1.0, float(ref.abs().max())))
    report["unet (relative to max |out|)"] = worst

    s = session("vae_decoder/model.onnx")
    worst = 0.0
    for h, w in ((8, 8), (8, 12)):
        z = torch.randn(1, 4, h, w, generator=g) * 2
        with torch.no_grad():
            ref = vae.decode(z).sample
        worst = max(worst, diff(s.run(None, {"latent_sample": z.numpy()})[0], ref))
    report["vae_decoder"] = worst

    s = session("vae_encoder/model.onnx")
    worst = 0.0
    for h, w in ((16, 16), (16, 24)):
        x = torch.rand(1, 3, h, w, generator=g) * 2 - 1
        with torch.no_grad():
            ref = vae.encode(x).latent_dist.parameters
        worst = max(worst, diff(s.run(None, {"sample": x.numpy()})[0], ref))
    report["vae_encoder"] = worst
    return report


def describe_onnx(rel):
    m = onnx.load(os.path.join(OUT, rel), load_external_data=False)

    def vi(v):
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}

    ops = collections.Counter(n.op_type for n in m.graph.node)
    domains = sorted({n.domain or "ai.onnx" for n in m.graph.node})
    return {
        "inputs": [vi(v) for v in m.graph.input],
        "outputs": [vi(v) for v in m.graph.output],
        "opset": [(o.domain or "ai.onnx", o.version) for o in m.opset_import],
        "domains": domains,
        "ops": dict(sorted(ops.items())),
    }


# ---------------------------------------------------------------------------------------------
# Pipeline runs
# ---------------------------------------------------------------------------------------------


def make_pipeline(text_encoder, tokenizer, unet, vae, scheduler):
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, base_config, args, output_type="pil", tokenizer=None):
    """One diffusers call as the case args describe it (scheduler None: the pipeline's own)."""
    if args["scheduler"] is not None:
        pipe.scheduler = make_scheduler(args["scheduler"], base_config)
    kw = {}
    if args.get("eta") is not None:
        kw["eta"] = args["eta"]
    if args.get("latents"):
        kw["latents"] = torch.from_numpy(np.load(os.path.join(EXP, args["latents"])))
    saved_tokenizer = pipe.tokenizer
    if tokenizer is not None:
        pipe.tokenizer = tokenizer
    try:
        with torch.no_grad():
            out = pipe(
                prompt=args["prompt"],
                negative_prompt=args["negative_prompt"],
                num_inference_steps=args["steps"],
                guidance_scale=args["guidance_scale"],
                width=args["width"],
                height=args["height"],
                generator=torch.Generator("cpu").manual_seed(args["seed"]),
                output_type=output_type,
                **kw,
            )
    finally:
        pipe.tokenizer = saved_tokenizer
    return out.images


def image_u8(pipe, base_config, args, tokenizer=None):
    return np.asarray(run(pipe, base_config, args, "pil", tokenizer)[0])


def case_args(scheduler="pndm", **over):
    a = {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "seed": SEED,
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "width": WIDTH,
        "height": HEIGHT,
        "scheduler": scheduler,
        "eta": None,
        "latents": None,
    }
    a.update(over)
    return a


def cases():
    out = [{"name": s, "args": case_args(s)} for s in SCHEDULERS]
    out += [
        {"name": "nonsquare-24x16-euler", "args": case_args("euler", width=24, height=16)},
        {"name": "no-negative-pndm", "args": case_args("pndm", negative_prompt=None)},
        {"name": "guidance-1-pndm", "args": case_args("pndm", guidance_scale=1.0)},
        {"name": "ddim-eta-0.5", "args": case_args("ddim", eta=0.5)},
        {"name": "given-latents-euler", "args": case_args("euler", latents="given_latents_1x4x8x8.npy")},
    ]
    return out


def stats(a, b, thresh):
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {
        "max_abs_diff": int(d.max()),
        "mean_abs_diff": round(float(d.mean()), 2),
        f"frac_values_over_{thresh}": round(float((d > thresh).mean()), 3),
    }


def histogram(img):
    h, _ = np.histogram(img, bins=8, range=(0, 256))
    return {
        "min": int(img.min()),
        "max": int(img.max()),
        "mean": round(float(img.mean()), 1),
        "std": round(float(img.std()), 1),
        "frac_0": round(float((img == 0).mean()), 3),
        "frac_255": round(float((img == 255).mean()), 3),
        "hist8": [int(x) for x in h],
    }


def sensitivity(pipe, base_config, tokenizer_bang, save_dir=None):
    """Max per-value abs difference of final uint8 images against the baseline, per scheduler."""
    changed_word = PROMPT.replace("lighthouse", "windmill")
    res = {"baseline_prompt": PROMPT, "changed_word_prompt": changed_word, "per_scheduler": {}}
    for s in SCHEDULERS:
        base = image_u8(pipe, base_config, case_args(s))
        variants = {
            "changed_word": (case_args(s, prompt=changed_word), None, 20),
            "pad_token_bang": (case_args(s), tokenizer_bang, 20),
            "guidance_7.0": (case_args(s, guidance_scale=7.0), None, 10),
            "seed_43": (case_args(s, seed=43), None, 20),
        }
        r = {"baseline_histogram": histogram(base)}
        for k, (args, tok, thresh) in variants.items():
            img = image_u8(pipe, base_config, args, tok)
            r[k] = stats(base, img, thresh)
            if save_dir and s == "pndm":
                Image.fromarray(img).save(os.path.join(save_dir, f"pndm-{k}.png"))
        res["per_scheduler"][s] = r
    return res


# ---------------------------------------------------------------------------------------------
# onnxruntime replay of a case: what the Rust side does, with diffusers' schedulers
# ---------------------------------------------------------------------------------------------


def ort_replay(args, tokenizer, base_config):
    import inspect

    te, unet, dec = (session(f"{m}/model.onnx") for m in ("text_encoder", "unet", "vae_decoder"))
    vae_config = json.load(open(os.path.join(OUT, "vae_decoder", "config.json")))
    scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    gen = torch.Generator("cpu").manual_seed(args["seed"])

    def encode(prompt):
        ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids
        return te.run(["last_hidden_state"], {"input_ids": ids.astype(np.int32)})[0]

    g = args["guidance_scale"]
    cfg = g > 1.0
    emb = encode(args["prompt"])
    if cfg:
        emb = np.concatenate([encode(args["negative_prompt"] or ""), emb])
    sched = make_scheduler(args["scheduler"], base_config)
    sched.set_timesteps(args["steps"])
    if args.get("latents"):
        latents = torch.from_numpy(np.load(os.path.join(EXP, args["latents"])))
    else:
        shape = (1, 4, args["height"] // scale, args["width"] // scale)
        latents = randn_tensor(shape, generator=gen, dtype=torch.float32)
    latents = latents * sched.init_noise_sigma
    params = set(inspect.signature(sched.step).parameters)
    extra = {}
    if "eta" in params:
        extra["eta"] = args["eta"] if args.get("eta") is not None else 0.0
    if "generator" in params:
        extra["generator"] = gen
    for t in sched.timesteps:
        x = torch.cat([latents] * 2) if cfg else latents
        x = sched.scale_model_input(x, t)
        eps = unet.run(
            None,
            {
                "sample": x.numpy(),
                "timestep": np.array([float(t)], dtype=np.float32),
                "encoder_hidden_states": emb,
            },
        )[0]
        eps = torch.from_numpy(eps)
        if cfg:
            u, c = eps.chunk(2)
            eps = u + g * (c - u)
        latents = sched.step(eps, t, latents, **extra, return_dict=False)[0]
    img = dec.run(None, {"latent_sample": (latents / vae_config["scaling_factor"]).numpy()})[0]
    img = np.clip(img / 2 + 0.5, 0, 1)[0].transpose(1, 2, 0)
    return img, (img * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def save_npy(name, arr):
    np.save(os.path.join(EXP, name), np.ascontiguousarray(arr, dtype=np.float32))
    return name


def jsonable_config(config):
    """The resolved config; `_use_default_values` (keys the class filled in with its own defaults) sorted."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items()}
    if "_use_default_values" in out:
        out["_use_default_values"] = sorted(out["_use_default_values"])
    return dict(sorted(out.items()))


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
          f"onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(EXP)

    # Tokenizer: SD 1.5's folder layout; check it tokenizes as the tokenizer.json version does.
    tokenizer = write_tokenizer(os.path.join(OUT, "tokenizer"))
    tmp = tempfile.mkdtemp()
    reference = write_clip_tokenizer(os.path.join(tmp, "ref"))
    tokenizer_bang = write_tokenizer(os.path.join(tmp, "bang"), pad_token="!")  # SD 2.x-style padding
    for p in [PROMPT, NEGATIVE, "", LONG_PROMPT] + TOKENIZER_PROBES:
        a = tokenizer(p, padding="max_length", max_length=77, truncation=True).input_ids
        b = reference(p, padding="max_length", max_length=77, truncation=True).input_ids
        assert a == b, (p, a, b)
    assert len(tokenizer(LONG_PROMPT).input_ids) > 77

    write_json(os.path.join(OUT, "scheduler", "scheduler_config.json"), SCHEDULER_CONFIG)
    base_scheduler = PNDMScheduler.from_pretrained(os.path.join(OUT, "scheduler"))

    text_encoder, unet, vae = build_models(SENSITIVITY_SCALES)
    export_all(text_encoder, unet, vae)
    write_model_index()

    onnx_diffs = verify_onnx(text_encoder, unet, vae, tokenizer)
    print("onnxruntime vs torch, max abs diff:", json.dumps(onnx_diffs, indent=1))
    for k, v in onnx_diffs.items():
        assert v < 1e-4, (k, v)
    models = {m: describe_onnx(f"{m}/model.onnx") for m in ("text_encoder", "unet", "vae_encoder", "vae_decoder")}

    pipe = make_pipeline(text_encoder, tokenizer, unet, vae, base_scheduler)
    base_config = pipe.scheduler.config
    assert pipe.vae_scale_factor == 2 and pipe.unet.config.sample_size * pipe.vae_scale_factor == WIDTH

    # Inputs and intermediate oracles.
    rng = np.random.RandomState(1234)
    save_npy("given_latents_1x4x8x8.npy", rng.standard_normal((1, 4, 8, 8)))
    for shape in ((1, 4, 8, 8), (1, 4, 8, 12)):
        draw = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(SEED), dtype=torch.float32)
        save_npy(f"randn_seed{SEED}_{'x'.join(map(str, shape))}.npy", draw.numpy())
    changed_word = PROMPT.replace("lighthouse", "windmill")
    tokens = {"max_length": 77, "padding": "max_length", "truncation": True, "pad_token": "<|endoftext|>", "ids": {}}
    tokens_bang = {"pad_token": "!", "ids": {}}
    for p in [PROMPT, NEGATIVE, "", changed_word, LONG_PROMPT] + TOKENIZER_PROBES:
        tokens["ids"][p] = tokenizer(p, padding="max_length", max_length=77, truncation=True).input_ids
        tokens_bang["ids"][p] = tokenizer_bang(p, padding="max_length", max_length=77, truncation=True).input_ids
    tokens["untruncated_length"] = {LONG_PROMPT: len(tokenizer(LONG_PROMPT).input_ids)}
    tokens["pad_bang"] = tokens_bang
    write_json(os.path.join(EXP, "tokens.json"), tokens)
    with torch.no_grad():
        for p, name in ((PROMPT, "prompt"), ("", "empty")):
            ids = tokenizer(p, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            save_npy(f"text_embeddings_{name}.npy", text_encoder(ids).last_hidden_state.numpy())

    schedulers = {}
    for s in SCHEDULERS:
        sch = make_scheduler(s, base_config)
        sch.set_timesteps(STEPS)
        schedulers[s] = {
            "class": type(sch).__name__,
            "config": jsonable_config(sch.config),
            f"timesteps_{STEPS}_steps": [float(t) for t in sch.timesteps],
            "init_noise_sigma": float(sch.init_noise_sigma),
        }
        if getattr(sch, "sigmas", None) is not None:
            schedulers[s][f"sigmas_{STEPS}_steps"] = [float(x) for x in sch.sigmas]
    write_json(os.path.join(EXP, "schedulers.json"), schedulers)

    # The cases.
    manifest, replay, timing = [], {}, {}
    for case in cases():
        name, args = case["name"], case["args"]
        png = f"{name}.png"
        t0 = time.perf_counter()
        pil = run(pipe, base_config, args, "pil")[0]
        seconds = time.perf_counter() - t0
        pil.save(os.path.join(EXP, png))
        img = run(pipe, base_config, args, "np")[0]
        assert np.array_equal((img * 255).round().astype(np.uint8), np.asarray(pil))
        latents = run(pipe, base_config, args, "latent")[0:1]
        entry = {
            "name": name,
            "args": args,
            "png": png,
            "image_npy": save_npy(f"{name}_image.npy", img),
            "final_latents_npy": save_npy(f"{name}_latents.npy", latents.numpy()),
        }
        manifest.append(entry)
        f_img, u8 = ort_replay(args, tokenizer, base_config)
        d = np.abs(u8.astype(int) - np.asarray(pil).astype(int))
        replay[name] = {
            "max_abs_diff_u8": int(d.max()),
            "values_differing": int((d > 0).sum()),
            "max_abs_diff_float": float(np.abs(f_img - img).max()),
        }
        timing[name] = round(seconds, 3)
        print(f"case {name:24s} {pil.size[0]}x{pil.size[1]} diffusers {seconds:.2f} s; onnxruntime replay: {replay[name]}")
    write_json(os.path.join(EXP, "cases.json"), manifest)

    # UNet oracle for one call: the first step of the pndm case (CFG batch: uncond, cond).
    with torch.no_grad():
        def encode(prompt):
            ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            return text_encoder(ids.input_ids).last_hidden_state

        emb = torch.cat([encode(NEGATIVE), encode(PROMPT)])
        sch = make_scheduler("pndm", base_config)
        sch.set_timesteps(STEPS)
        x = torch.from_numpy(np.load(os.path.join(EXP, f"randn_seed{SEED}_1x4x8x8.npy"))) * sch.init_noise_sigma
        x = sch.scale_model_input(torch.cat([x] * 2), sch.timesteps[0])
        t = torch.tensor([float(sch.timesteps[0])], dtype=torch.float32)
        save_npy("unet_sample.npy", x.numpy())
        save_npy("unet_timestep.npy", t.numpy())
        save_npy("unet_encoder_hidden_states.npy", emb.numpy())
        save_npy("unet_out_sample.npy", unet(x, t, emb).sample.numpy())

    # VAE encoder oracle: the pndm image in [-1, 1], NCHW.
    x = torch.from_numpy(np.load(os.path.join(EXP, "pndm_image.npy"))).permute(2, 0, 1)[None] * 2 - 1
    save_npy("vae_encoder_input.npy", x.numpy())
    with torch.no_grad():
        save_npy("vae_encoder_latent_parameters.npy", vae.encode(x).latent_dist.parameters.numpy())

    sens_dir = os.path.join(EXP, "sensitivity")
    os.makedirs(sens_dir)
    sens = sensitivity(pipe, base_config, tokenizer_bang, sens_dir)
    sens["scales"] = SENSITIVITY_SCALES
    sens["thresholds"] = {"changed_word": 20, "pad_token_bang": 20, "guidance_7.0": 10, "seed_43": 20}
    sens["variant_pngs"] = sorted(os.listdir(sens_dir))
    write_json(os.path.join(EXP, "sensitivity.json"), sens)
    print_sensitivity(sens)
    for s, r in sens["per_scheduler"].items():
        for k, thresh in sens["thresholds"].items():
            assert r[k]["max_abs_diff"] > thresh, (s, k, r[k])
        h = r["baseline_histogram"]
        assert h["std"] > 30 and h["frac_0"] + h["frac_255"] < 0.15, (s, h)

    write_json(os.path.join(EXP, "onnx_check.json"), {"onnxruntime_vs_torch_modules": onnx_diffs, "onnxruntime_replay_vs_oracle": replay})
    # diffusers' own ONNX pipeline must load the folder (its __call__ hardcodes 0.18215, so no run).
    from diffusers import OnnxStableDiffusionPipeline

    OnnxStableDiffusionPipeline.from_pretrained(OUT, provider="CPUExecutionProvider", provider_options={})
    shutil.rmtree(tmp)
    write_readme(models, sens, replay, onnx_diffs, timing)
    report(models)


def write_model_index():
    """model_index.json exactly as diffusers' OnnxStableDiffusionPipeline.save_pretrained writes it."""
    from diffusers import OnnxRuntimeModel, OnnxStableDiffusionPipeline

    parts = {m: OnnxRuntimeModel.from_pretrained(os.path.join(OUT, m), provider="CPUExecutionProvider", provider_options={}) for m in ("vae_encoder", "vae_decoder", "text_encoder", "unet")}
    pipe = OnnxStableDiffusionPipeline(
        **parts,
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(OUT, "tokenizer")),
        scheduler=PNDMScheduler.from_pretrained(os.path.join(OUT, "scheduler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_config(OUT)


def print_sensitivity(sens):
    print("sensitivity (final uint8 images vs the baseline case, per scheduler):")
    for s, r in sens["per_scheduler"].items():
        h = r["baseline_histogram"]
        parts = [f"{k} max {r[k]['max_abs_diff']:3d} ({r[k].get('frac_values_over_20', r[k].get('frac_values_over_10'))})"
                 for k in sens["thresholds"]]
        print(f"  {s:15s} baseline min {h['min']} max {h['max']} mean {h['mean']} std {h['std']} "
              f"0s {h['frac_0']} 255s {h['frac_255']} hist8 {h['hist8']}")
        print("                  " + ", ".join(parts))


def file_list():
    rows = []
    for root, _, files in os.walk(OUT):
        for f in files:
            p = os.path.join(root, f)
            rows.append((os.path.relpath(p, os.path.dirname(OUT)), os.path.getsize(p)))
    return sorted(rows)


def report(models):
    for m, d in models.items():
        print(f"{m}: domains {d['domains']} opset {d['opset']}")
        for v in d["inputs"]:
            print(f"   input  {v['name']:22s} {v['dtype']:8s} {v['shape']}")
        for v in d["outputs"]:
            print(f"   output {v['name']:22s} {v['dtype']:8s} {v['shape']}")
        print(f"   ops {d['ops']}")
    total = 0
    for p, size in file_list():
        total += size
    print(f"fixtures/tiny: {len(file_list())} files, {total / 1e6:.2f} MB")


def write_readme(models, sens, replay, onnx_diffs, timing):
    L = []
    w = L.append
    w("# Test fixtures")
    w("")
    w("`tiny/` is a TINY random-weight Stable Diffusion 1.x pipeline (real diffusers/transformers classes,")
    w("real CLIP vocabulary) exported to ONNX in the diffusers/optimum ONNX layout, plus diffusers' own")
    w("outputs as the oracle. Tests need no torch. Everything here is generated by")
    w("`scripts/make_fixtures.py`; do not edit by hand. Regenerate (CPU, no network, ~1.5 min):")
    w("")
    w("    python3 scripts/make_fixtures.py")
    w("")
    w(f"Made with torch {torch.__version__}, diffusers {diffusers.__version__}, transformers "
      f"{transformers.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__} (Python 3.11).")
    w("Other versions may change the random init, so every file changes (consistently) on regeneration.")
    w("")
    w("## The model dir `tiny/`")
    w("")
    w("| path | what |")
    w("|---|---|")
    w("| `model_index.json` | as `OnnxStableDiffusionPipeline.save_pretrained` writes it (diffusers loads the dir) |")
    w("| `scheduler/scheduler_config.json` | SD 1.5's PNDMScheduler config |")
    w("| `tokenizer/` | vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json (SD 1.5's hub layout: no tokenizer.json; pad `<\\|endoftext\\|>`) |")
    w(f"| `text_encoder/model.onnx` + config.json | CLIPTextModel: hidden {HIDDEN}, 2 layers, 4 heads, quick_gelu; SD 1.5's bos/eos/pad ids (0/2/1 -> pooled at argmax(input_ids)) |")
    w("| `unet/model.onnx` + `model.onnx_data` + config.json | UNet2DConditionModel (32, 64), 2 layers/block, sample_size 8; weights > 1 KB as external data (as optimum) |")
    w("| `vae_encoder/model.onnx`, `vae_decoder/model.onnx` (+ the VAE's config.json in each) | AutoencoderKL [32, 64]: **vae scale factor 2**, **scaling_factor 0.5** |")
    w("")
    w("Default size = unet sample_size 8 x vae scale factor 2 = 16x16 px (latents 1x4x8x8).")
    w("")
    w("ONNX graphs (opset 17, default domain only, legacy TorchScript exporter):")
    w("")
    for m, d in models.items():
        ins = ", ".join(f"`{v['name']}` {v['dtype']} {v['shape']}" for v in d["inputs"])
        outs = ", ".join(f"`{v['name']}` {v['dtype']} {v['shape']}" for v in d["outputs"])
        w(f"- `{m}`: in {ins}; out {outs}")
    w("")
    w("## Oracles `tiny/expected/`")
    w("")
    w("- `cases.json`: list of `{name, args: {prompt, negative_prompt, seed, steps, guidance_scale, width, height,")
    w("  scheduler, eta, latents}, png, image_npy, final_latents_npy}`. `png` is diffusers'")
    w("  `StableDiffusionPipeline(...)(output_type=\"pil\")` image (the main oracle); `image_npy` the float")
    w("  HWC image in [0, 1] before uint8 rounding; `final_latents_npy` the latents after the last step")
    w("  (before `/ scaling_factor`). Generator: `torch.Generator(\"cpu\").manual_seed(seed)`; schedulers built")
    w("  as `XScheduler.from_config(pipe.scheduler.config)` (dpm++2m-karras: `use_karras_sigmas=True`).")
    w("- `schedulers.json`: per scheduler name, the class, its resolved config, the 12-step timesteps (and")
    w("  sigmas) and `init_noise_sigma`.")
    w("- `given_latents_1x4x8x8.npy`: the `latents=` input of the given-latents case (unscaled; diffusers")
    w("  multiplies it by `init_noise_sigma`).")
    w("- `randn_seed42_1x4x8x8.npy`, `randn_seed42_1x4x8x12.npy`: first `torch.randn` draw of a CPU generator")
    w("  seeded 42 (the initial latents of the 16x16 and 24x16 cases, before `init_noise_sigma`).")
    w("- `tokens.json`: CLIP ids (padded to 77, truncated) for each prompt used and some tokenizer probes;")
    w("  `pad_bang` = the same with pad token `!` (SD 2.x style).")
    w("- `text_embeddings_prompt.npy`, `text_embeddings_empty.npy`: text encoder `last_hidden_state`")
    w("  [1, 77, 16] for the main prompt and for \"\".")
    w("- `vae_encoder_input.npy` [1, 3, 16, 16] (the pndm image in [-1, 1]) and `vae_encoder_latent_parameters.npy`")
    w("  [1, 8, 8, 8] (mean ++ logvar).")
    w("- `unet_sample.npy` [2, 4, 8, 8], `unet_timestep.npy` [1], `unet_encoder_hidden_states.npy` [2, 77, 16] ->")
    w("  `unet_out_sample.npy`: one UNet call (the pndm case's first step; batch = [negative \"blurry\", prompt]).")
    w("- `sensitivity.json` (+ `sensitivity/*.png`, the pndm variants) and `onnx_check.json` (below).")
    w("")
    w("Cases: " + ", ".join(f"`{n}`" for n in timing) + ". Each takes well under a second in diffusers")
    w("(16x16 or 24x16 px, 12 steps).")
    w("")
    w("## Sensitivity")
    w("")
    w("Random tiny models are flat, so some weights are scaled after the random init:")
    w(f"`{json.dumps(SENSITIVITY_SCALES)}`. Effect, measured through the full diffusers pipeline on the")
    w("final uint8 images: max |difference| to the baseline case (fraction of values differing by more")
    w("than the threshold). Baseline: main prompt, negative \"blurry\", seed 42, 12 steps, guidance 7.5, 16x16.")
    w("")
    w("| scheduler | changed word (>20) | pad `!` (>20) | guidance 7.0 (>10) | seed 43 (>20) | baseline std / 0s / 255s |")
    w("|---|---|---|---|---|---|")
    for s, r in sens["per_scheduler"].items():
        h = r["baseline_histogram"]
        cells = []
        for k, t in sens["thresholds"].items():
            cells.append(f"{r[k]['max_abs_diff']} ({r[k][f'frac_values_over_{t}']:.0%})")
        w(f"| {s} | " + " | ".join(cells) + f" | {h['std']} / {h['frac_0']:.1%} / {h['frac_255']:.1%} |")
    w("")
    stds = [float(np.load(os.path.join(EXP, f"{n}_latents.npy")).std()) for n in timing]
    w("Changed word: \"lighthouse\" -> \"windmill\". Note: the random UNet does not denoise, so the final latents")
    w(f"are large (std {min(stds):.0f} to {max(stds):.0f} over the cases); post_quant_conv is scaled down so that the VAE")
    w("decoder still reacts to their magnitude, not only to their direction (its GroupNorms remove scale).")
    w("")
    w("## ONNX checks")
    w("")
    w("onnxruntime vs the torch modules (max abs diff): " + ", ".join(f"{k} {v:.1e}" for k, v in onnx_diffs.items()) + ".")
    worst = max(r["max_abs_diff_u8"] for r in replay.values())
    w(f"Replaying every case with the ONNX files in onnxruntime (diffusers schedulers, same generator use)")
    w(f"reproduces the PNGs to within {worst}/255 (max over all cases; see `onnx_check.json`).")
    w("")
    with open(os.path.join(os.path.dirname(OUT), "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
