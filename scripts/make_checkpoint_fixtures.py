#!/usr/bin/env python3
"""Builds fixtures/tiny-checkpoint/: the tiny SD 1.5 model (fixtures/tiny's weights) as
Automatic1111/Civitai-style single-file checkpoints, a template for its shapes, and diffusers'
pictures from those files, the oracle for sd.wasm's `--checkpoint`.

    python3 scripts/make_checkpoint_fixtures.py          # CPU, no network, ~1 min

- `tiny-fp32-ema.safetensors`: fp32, every weight in the original layout (scripts/checkpoint_keys.py,
  checked here against diffusers' own conversion), plus `model_ema.*` copies of the UNet with
  other values (training checkpoints carry both; Automatic1111 and diffusers use the non-EMA
  ones; fp16 here, to keep the file small) and the position_ids buffer real checkpoints have.
- `tiny-fp16-novae.safetensors`: fp16, without the VAE (pruned checkpoints often have none),
  with `tiny-vae.safetensors` (a separate VAE file: `encoder.*`, `decoder.*` keys, as
  Automatic1111's VAE folder holds them).
- `template/`: `scripts/convert.py --template` of these shapes (weights at rest in fp16 from 256
  elements, as SD 1.5's are from 65536): graphs, checkpoint.json maps, no weights.
- `sd2/`: a tiny SD 2.x (OpenCLIP text encoder with fused q/k/v, v-prediction, DDIM):
  `tiny-sd2-bf16.safetensors` (bf16), `template/`, and `sd2-stored-fp16.png`, diffusers'
  from_single_file picture with the weights rounded as the template stores them.
- `fp32.png`, `fp16.png`: diffusers' `StableDiffusionPipeline.from_single_file` on each file
  (fp16 with `vae=` the VAE file), PNDM, the fixtures' prompt and seed; `ema.png` is the picture
  had the EMA weights been used (how far that is from fp32.png is in cases.json).
  `fp32-stored-fp16.png`: the fp32 file's weights rounded as the template stores them, what
  sd.wasm computes; `style-0.8-stored-fp16.png`: the same with fixtures/tiny-lora's style LoRA
  fused at 0.8 into the rounded weights, then rounded again.
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fixture_imports  # noqa: E402

fixture_imports.stub_if_absent("onnxruntime", "open_clip")
import checkpoint_keys as ck  # noqa: E402
import convert  # noqa: E402
import make_fixtures as mf  # noqa: E402

OUT = os.path.join(mf.REPO, "fixtures", "tiny-checkpoint")
TEMPLATE = os.path.join(OUT, "template")
# Weights of at least this many elements are stored fp16 in the template (SD 1.5's: 65536).
TEMPLATE_FP16_MIN = 256


def write_template(text_encoder, unet, vae, template=TEMPLATE, tokenizer=None, scheduler=None):
    if os.path.exists(template):
        shutil.rmtree(template)
    modules = {"text_encoder": text_encoder, "unet": unet, "vae": vae}
    convert.unique_values(modules)
    for name in ("unet", "vae"):
        modules[name].set_attn_processor(convert.ExportAttnProcessor("fused"))
    with torch.no_grad():
        convert.export_text_encoder(text_encoder, template, TEMPLATE_FP16_MIN)
        convert.export_unet(unet, template, TEMPLATE_FP16_MIN, scalar_timestep=True)
        convert.export_vae(vae, template, TEMPLATE_FP16_MIN)
    convert.strip_to_template(template, modules)
    shutil.copytree(tokenizer or os.path.join(mf.OUT, "tokenizer"), os.path.join(template, "tokenizer"))
    if scheduler:
        convert.write_scheduler(template, scheduler)
    else:
        shutil.copytree(os.path.join(mf.OUT, "scheduler"), os.path.join(template, "scheduler"))
    convert.write_model_index(template)


def diffusers_folder(text_encoder, unet, vae, tokenizer, scheduler):
    """The pipeline's configs in diffusers' layout: from_single_file's `config=` (it would
    otherwise fetch SD 1.5's from the hub)."""
    folder = tempfile.mkdtemp()
    mf.make_pipeline(text_encoder, tokenizer, unet, vae, scheduler).save_pretrained(folder)
    return folder


def single_file_pipeline(path, config, **kw):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_single_file(path, config=config, torch_dtype=torch.float32,
                                                    safety_checker=None, requires_safety_checker=False, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def same_weights(pipe, modules):
    for name, module in modules.items():
        got = dict(getattr(pipe, name).named_parameters())
        for key, param in module.named_parameters():
            assert torch.equal(got[key].float(), param.float()), f"{name}.{key}: diffusers read another value"


def sd2():
    """The tiny SD 2.x family as scripts/make_family_fixtures.py builds it (same seed and
    scales), as a single file, its template and diffusers' picture."""
    import make_family_fixtures as ff
    from diffusers import DDIMScheduler
    from transformers import CLIPTokenizer

    out = os.path.join(OUT, "sd2")
    os.makedirs(out, exist_ok=True)

    def build():
        text_encoder, pad, unet, vae, scheduler, _ = convert.random_family("sd21", True, 0)
        ff.tweak({"text_encoder": text_encoder, "unet": unet, "vae": vae})
        return text_encoder, pad, unet, vae, scheduler

    text_encoder, pad, unet, vae, scheduler = build()
    state = ck.ldm_state_dict(text_encoder, unet, vae)
    ck.check_against_diffusers(state, text_encoder, unet, vae)
    # bf16, as some checkpoints are: every value is read widened, then stored as the template says.
    path = os.path.join(out, "tiny-sd2-bf16.safetensors")
    save_file({k: v.bfloat16().contiguous() for k, v in state.items()}, path)
    tokenizer_dir = tempfile.mkdtemp()
    convert.write_random_tokenizer(tokenizer_dir, pad)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(tokenizer_dir, "tokenizer"))
    config = diffusers_folder(text_encoder, unet, vae, tokenizer, DDIMScheduler.from_config(scheduler))
    pipe = single_file_pipeline(path, config)
    for name in ("text_encoder", "unet", "vae"):
        convert.round_to_fp16(getattr(pipe, name), TEMPLATE_FP16_MIN)
    with torch.no_grad():
        image = pipe(prompt=mf.PROMPT, negative_prompt=mf.NEGATIVE, num_inference_steps=mf.STEPS, guidance_scale=mf.GUIDANCE,
                     width=16, height=16, generator=torch.Generator("cpu").manual_seed(mf.SEED)).images[0]
    image.save(os.path.join(out, "sd2-stored-fp16.png"))
    text_encoder, pad, unet, vae, scheduler = build()
    write_template(text_encoder, unet, vae, os.path.join(out, "template"), os.path.join(tokenizer_dir, "tokenizer"),
                   scheduler)
    shutil.rmtree(config)
    shutil.rmtree(tokenizer_dir)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    from diffusers import AutoencoderKL, PNDMScheduler
    from transformers import CLIPTokenizer

    os.makedirs(OUT, exist_ok=True)
    text_encoder, unet, vae = mf.build_models(mf.SENSITIVITY_SCALES)
    state = ck.ldm_state_dict(text_encoder, unet, vae)
    ck.check_against_diffusers(state, text_encoder, unet, vae)

    g = torch.Generator().manual_seed(5)
    ema = {}
    for key, value in state.items():
        if key.startswith(ck.UNET_PREFIX):
            # The original code's EMA names: the key after "model." with its dots removed.
            flat = "model_ema." + "".join(key.split(".")[1:])
            # fp16 to keep the fixture small: a reader must skip these whatever their type.
            noise = torch.randn(value.shape, generator=g) * (value.std() if value.numel() > 1 else 0.1)
            ema[flat] = (value + noise).half()
    position_ids = {ck.CLIP_PREFIX + "embeddings.position_ids": torch.arange(77)[None]}
    fp32 = os.path.join(OUT, "tiny-fp32-ema.safetensors")
    save_file({**state, **ema, **position_ids}, fp32, metadata={"format": "pt"})
    fp16 = os.path.join(OUT, "tiny-fp16-novae.safetensors")
    save_file({k: v.half().contiguous() for k, v in state.items() if not k.startswith(ck.VAE_PREFIX)}, fp16)
    vae_file = os.path.join(OUT, "tiny-vae.safetensors")
    save_file({k[len(ck.VAE_PREFIX):]: v.contiguous() for k, v in state.items() if k.startswith(ck.VAE_PREFIX)},
              vae_file)

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(mf.OUT, "tokenizer"))
    base_config = PNDMScheduler.from_pretrained(os.path.join(mf.OUT, "scheduler")).config
    config = diffusers_folder(text_encoder, unet, vae, tokenizer, PNDMScheduler.from_config(base_config))
    modules = {"text_encoder": text_encoder, "unet": unet, "vae": vae}

    pipe = single_file_pipeline(fp32, config)
    same_weights(pipe, modules)
    pictures = {"fp32": mf.image_u8(pipe, base_config, mf.case_args("pndm"))}
    pipe = single_file_pipeline(fp16, config, vae=AutoencoderKL.from_single_file(vae_file, config=config,
                                                                                  subfolder="vae"))
    pictures["fp16"] = mf.image_u8(pipe, base_config, mf.case_args("pndm"))
    # sd.wasm keeps weights at rest as the template stores them (fp16 from 256 elements here):
    # the fp32 file's picture with that rounding, and with fixtures/tiny-lora's style LoRA fused
    # first (diffusers' load_lora_weights + fuse_lora, as make_lora_fixtures.py does).
    pipe = single_file_pipeline(fp32, config)
    for name in modules:
        convert.round_to_fp16(getattr(pipe, name), TEMPLATE_FP16_MIN)
    pictures["fp32-stored-fp16"] = mf.image_u8(pipe, base_config, mf.case_args("pndm"))
    # The LoRA is merged into the stored (rounded) weights and the sum stored again, as sd.wasm
    # (and Automatic1111 with fp16 weights) does.
    pipe = single_file_pipeline(fp32, config)
    for name in modules:
        convert.round_to_fp16(getattr(pipe, name), TEMPLATE_FP16_MIN)
    pipe.load_lora_weights(os.path.join(mf.REPO, "fixtures", "tiny-lora"), weight_name="style.safetensors")
    pipe.fuse_lora(lora_scale=0.8)
    pipe.unload_lora_weights()
    for name in modules:
        convert.round_to_fp16(getattr(pipe, name), TEMPLATE_FP16_MIN)
    pictures["style-0.8-stored-fp16"] = mf.image_u8(pipe, base_config, mf.case_args("pndm"))
    ema_unet = {k: ema["model_ema." + "".join(k.split(".")[1:])].float() if k.startswith(ck.UNET_PREFIX) else v
                for k, v in state.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ema-as-main.safetensors")
        save_file(ema_unet, path)
        pictures["ema"] = mf.image_u8(single_file_pipeline(path, config), base_config, mf.case_args("pndm"))
    for name, image in pictures.items():
        Image.fromarray(image).save(os.path.join(OUT, f"{name}.png"))

    def diff(a, b):
        return int(np.abs(pictures[a].astype(int) - pictures[b].astype(int)).max())

    import hashlib

    # Automatic1111's "Model hash": the first 10 hex digits of the whole file's SHA-256.
    sha256 = {os.path.basename(f): hashlib.sha256(open(f, "rb").read()).hexdigest() for f in (fp32, fp16, vae_file)}
    cases = {"args": mf.case_args("pndm"), "fp32_vs_fp16_max_abs_diff": diff("fp32", "fp16"),
             "fp32_vs_stored_fp16_max_abs_diff": diff("fp32", "fp32-stored-fp16"),
             "fp32_vs_ema_max_abs_diff": diff("fp32", "ema"), "sha256": sha256}
    print(cases)
    assert cases["fp32_vs_ema_max_abs_diff"] > 50, "the EMA weights must move the picture far"

    write_template(*mf.build_models(mf.SENSITIVITY_SCALES))
    mf.write_json(os.path.join(OUT, "cases.json"), cases)
    shutil.rmtree(config)
    sd2()


if __name__ == "__main__":
    main()
