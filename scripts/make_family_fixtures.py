#!/usr/bin/env python3
"""Builds fixtures/tiny-sd21/, fixtures/tiny-sd-turbo/, fixtures/tiny-lcm/ and
fixtures/tiny-lcm-lora/: the model families beyond SD 1.x, made by scripts/convert.py itself (--random-init FAMILY --tiny, so the converter's fp16
weights at rest and fused MultiHeadAttention are what sd.wasm reads), plus diffusers' own
pictures from the same torch modules as the oracle (expected/cases.json, like fixtures/tiny).

    python3 scripts/make_family_fixtures.py        # ~3 minutes, CPU, no network
    python3 scripts/make_family_fixtures.py lcm    # one of them

  * sd21: v-prediction, DDIM (the checkpoint's scheduler) and Euler, OpenCLIP-style text
    encoder (gelu), "!" as pad token, linear projections in the transformer blocks.
  * sd-turbo: trailing timestep spacing, one step, guidance 0 (no unconditional pass), decoded
    by the full VAE and by TAESD (--vae taesd).
  * lcm: a UNet with a guidance embedding (time_cond_proj_dim, `timestep_cond`) and the LCM
    scheduler, against diffusers' LatentConsistencyModelPipeline: 4 steps at guidance 8 and 1.
  * lcm-lora: the tiny SD 1.5 model with an LCM-LoRA-like LoRA (made here with peft, random
    weights) fused by `convert.py --lora --lora-scale 0.8`, against diffusers running the
    unfused LoRA (load_lora_weights, scale 0.8) with LCMScheduler: 4 steps, guidance 1.
expected/sensitivity.json records how far one changed word, the wrong pad token, the wrong
prediction type and a small guidance change move diffusers' picture (for lcm also: the
guidance embedding zeroed, as a pipeline that drops `timestep_cond` runs, guidance ignored,
and w = guidance instead of guidance − 1; for lcm-lora: the LoRA dropped, scale 1 instead of
0.8); the script fails unless every one moves it well past the tests' 2/255 tolerance.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import convert  # noqa: E402

REPO = os.path.dirname(HERE)
PROMPT = "a lighthouse at dusk, oil painting"
SEED = 42
MIN_SENSITIVITY = 10  # /255; tests allow 2

# Random tiny weights are flat: scale what carries the prompt into the picture.
SCALES = {"token_embedding": 10.0, "attn2.to_v": 8.0, "attn2.to_out.0": 8.0, "conv_out": 2.0}
# lcm: the guidance embedding's projection, and a larger output (a 4-step picture is flatter):
# guidance 8 -> 7.5 then moves the picture 20/255 instead of 10.
FAMILY_SCALES = {"lcm": {"cond_proj": 100.0, "conv_out": 3.0}}

CASES = {
    "sd21": [
        dict(name="ddim-v", scheduler=None, steps=8, guidance_scale=7.5),
        dict(name="euler-v", scheduler="euler", steps=6, guidance_scale=7.5),
    ],
    "sd-turbo": [
        dict(name="turbo-1-step", scheduler=None, steps=1, guidance_scale=0.0),
        dict(name="turbo-1-step-taesd", scheduler=None, steps=1, guidance_scale=0.0, vae="taesd"),
        dict(name="turbo-2-steps-euler-a", scheduler="euler-a", steps=2, guidance_scale=0.0),
    ],
    "lcm": [
        dict(name="lcm-4-steps-guidance-8", scheduler=None, steps=4, guidance_scale=8.0),
        dict(name="lcm-4-steps-guidance-1", scheduler=None, steps=4, guidance_scale=1.0),
    ],
}


def tweak(modules, scales=SCALES):
    with torch.no_grad():
        for name, module in modules.items():
            for pname, p in module.named_parameters():
                for key, scale in scales.items():
                    if key in pname and (name != "vae" or key == "conv_out") and name != "taesd":
                        p.mul_(scale)


def scheduler_for(name, config):
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler

    cls = {None: None, "euler": EulerDiscreteScheduler, "euler-a": EulerAncestralDiscreteScheduler,
           "ddim": DDIMScheduler, "lcm": LCMScheduler}[name]
    if cls is None:
        import diffusers

        cls = getattr(diffusers, config["_class_name"])
    return cls.from_config(config)


def pipeline(model_dir, torch_dir, vae="vae", pad=None):
    """diffusers' pipeline for the model: LatentConsistencyModelPipeline for a UNet with a
    guidance embedding, else StableDiffusionPipeline."""
    from diffusers import (AutoencoderKL, AutoencoderTiny, LatentConsistencyModelPipeline, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"pad_token": pad} if pad else {}
    vae_cls = AutoencoderTiny if vae == "taesd" else AutoencoderKL
    unet = UNet2DConditionModel.from_pretrained(os.path.join(torch_dir, "unet"))
    pipeline_cls = LatentConsistencyModelPipeline if unet.config.time_cond_proj_dim else StableDiffusionPipeline
    pipe = pipeline_cls(
        vae=vae_cls.from_pretrained(os.path.join(torch_dir, vae)),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(torch_dir, "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(model_dir, "tokenizer"), **kw),
        unet=unet,
        scheduler=scheduler_for(None, json.load(open(os.path.join(model_dir, "scheduler", "scheduler_config.json")))),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe, model_dir, case, prompt=PROMPT, prediction_type=None, **call):
    config = json.load(open(os.path.join(model_dir, "scheduler", "scheduler_config.json")))
    if prediction_type:
        config = dict(config, prediction_type=prediction_type)
    pipe.scheduler = scheduler_for(case["scheduler"], config)
    with torch.no_grad():
        image = pipe(prompt=prompt, num_inference_steps=case["steps"], guidance_scale=case["guidance_scale"],
                     generator=torch.Generator("cpu").manual_seed(SEED), output_type="pil", **call).images[0]
    return image


def embedding_sensitivity(pipe, model_dir, case, image):
    """How far an LCM picture moves with the guidance embedding zeroed (what a pipeline that
    drops `timestep_cond` computes: cond_proj has no bias), with w = guidance instead of
    guidance − 1, and with the guidance ignored (w = 0, guidance 1's embedding)."""
    embed = pipe.get_guidance_scale_embedding
    pipe.get_guidance_scale_embedding = lambda w, **kw: torch.zeros_like(embed(w, **kw))
    try:
        zeroed = render(pipe, model_dir, case)
    finally:
        pipe.get_guidance_scale_embedding = embed
    off_by_one = render(pipe, model_dir, dict(case, guidance_scale=case["guidance_scale"] + 1))
    moved = {"guidance_embedding_zeroed": diff(image, zeroed), "guidance_off_by_one": diff(image, off_by_one)}
    if case["guidance_scale"] != 1:
        moved["guidance_ignored"] = diff(image, render(pipe, model_dir, dict(case, guidance_scale=1.0)))
    return moved


def diff(a, b):
    return int(np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max())


def save_case(exp, case, image):
    """Writes diffusers' picture; returns the case's cases.json entry."""
    image.save(os.path.join(exp, case["name"] + ".png"))
    return {"name": case["name"], "png": case["name"] + ".png",
            "args": {"prompt": PROMPT, "negative_prompt": None, "seed": SEED, "steps": case["steps"],
                     "guidance_scale": case["guidance_scale"], "width": 16, "height": 16,
                     "scheduler": case["scheduler"], "eta": None, "latents": None, "vae": case.get("vae")}}


def write_expected(family, exp, cases, sensitivity):
    with open(os.path.join(exp, "cases.json"), "w") as f:
        json.dump(cases, f, indent=2)
    with open(os.path.join(exp, "sensitivity.json"), "w") as f:
        json.dump(sensitivity, f, indent=2)
    print(family, json.dumps(sensitivity))
    weak = {k: v for case in sensitivity.values() for k, v in case.items() if v < MIN_SENSITIVITY}
    if weak:
        sys.exit(f"{family}: the fixture is too flat for {weak} (< {MIN_SENSITIVITY}/255): raise SCALES")


PREVIEW_NAME = "preview-euler-a-step-1"


def save_preview_oracle(out, torch_dir, exp):
    """What `--preview-every 1` shows after step 1 of 4 (euler-a, guidance 0) on a model with
    TAESD: the latents at that point, as diffusers' callback_on_step_end sees them, decoded by
    TAESD. Returns how far that is from the next step's preview and from the finished picture
    (TAESD-decoded), so a preview of the wrong step cannot pass."""
    pipe = pipeline(out, torch_dir, vae="taesd")
    pipe.scheduler = scheduler_for("euler-a", json.load(open(os.path.join(out, "scheduler", "scheduler_config.json"))))
    seen = {}

    def grab(_pipe, step, _t, tensors):
        seen.setdefault(step, tensors["latents"].clone())
        return tensors

    def picture(latents):
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        return pipe.image_processor.postprocess(decoded, output_type="pil")[0]

    with torch.no_grad():
        final = pipe(prompt=PROMPT, num_inference_steps=4, guidance_scale=0.0, output_type="latent",
                     generator=torch.Generator("cpu").manual_seed(SEED), callback_on_step_end=grab,
                     callback_on_step_end_tensor_inputs=["latents"]).images
        preview = picture(seen[0])
        moved = {"next_step": diff(preview, picture(seen[1])), "finished_picture": diff(preview, picture(final))}
    preview.save(os.path.join(exp, PREVIEW_NAME + ".png"))
    return moved


def build(family):
    out = os.path.join(REPO, "fixtures", f"tiny-{family}")
    exp = os.path.join(out, "expected")
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as torch_dir:
        convert.convert(convert.parse_args(["--random-init", family, "--tiny", "--fp16-min-elements", "1024",
                                            "--no-encoder", "--save-torch", torch_dir, out]),
                        tweak=lambda modules: tweak(modules, dict(SCALES, **FAMILY_SCALES.get(family, {}))))
        os.makedirs(exp)
        cases, sensitivity = [], {}
        for case in CASES[family]:
            vae = case.get("vae", "vae")
            pipe = pipeline(out, torch_dir, vae="taesd" if vae == "taesd" else "vae")
            image = render(pipe, out, case)
            cases.append(save_case(exp, case, image))
            moved = {}
            if case is CASES[family][0]:
                moved["changed_word"] = diff(image, render(pipe, out, case, prompt=PROMPT.replace("dusk", "dawn")))
                wrong_pad = "!" if convert.FAMILIES[family][1] == "<|endoftext|>" else "<|endoftext|>"
                moved["pad_token"] = diff(image, render(pipeline(out, torch_dir, pad=wrong_pad), out, case))
                config = json.load(open(os.path.join(out, "scheduler", "scheduler_config.json")))
                wrong = "epsilon" if config["prediction_type"] == "v_prediction" else "v_prediction"
                moved["prediction_type"] = diff(image, render(pipe, out, case, prediction_type=wrong))
                nudged = dict(case, guidance_scale=case["guidance_scale"] - 0.5 if case["guidance_scale"] > 1 else 1.5)
                moved["guidance"] = diff(image, render(pipe, out, nudged))
            if pipe.unet.config.time_cond_proj_dim:
                moved.update(embedding_sensitivity(pipe, out, case, image))
            if moved:
                sensitivity[case["name"]] = moved
        if family == "sd-turbo":
            sensitivity[PREVIEW_NAME] = save_preview_oracle(out, torch_dir, exp)
        write_expected(family, exp, cases, sensitivity)


LORA_SCALE = 0.8
LORA_CASE = dict(name="lcm-lora-4-steps-guidance-1", scheduler=None, steps=4, guidance_scale=1.0)
# peft's LoRA layers on the layers LCM-LoRA adapts; rank 4, alpha 8 (so alpha / r = 2 is used).
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "time_emb_proj"]
LORA_STD = 0.2


def make_lora(path):
    """A LoRA in diffusers' format for the tiny SD 1.5 UNet, with random weights."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = convert.random_family("sd15", True, 0)[2]
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS)
    unet.add_adapter(config)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * LORA_STD)
    StableDiffusionPipeline.save_lora_weights(os.path.dirname(path), unet_lora_layers=get_peft_model_state_dict(unet),
                                              weight_name=os.path.basename(path),
                                              unet_lora_adapter_metadata=config.to_dict())


def base_pipeline(model_dir):
    """diffusers' pipeline over the converter's base modules (before the LoRA), with the
    model dir's (LCM) scheduler."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    text_encoder, _, unet, vae, _, _ = convert.random_family("sd15", True, 0)
    modules = dict(text_encoder=text_encoder, unet=unet, vae=vae)
    tweak(modules)
    for module in modules.values():
        convert.round_to_fp16(module, LORA_FP16_MIN)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(os.path.join(model_dir, "tokenizer")),
        unet=unet, scheduler=scheduler_for(None, json.load(open(os.path.join(model_dir, "scheduler",
                                                                             "scheduler_config.json")))),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Only the token embedding (1.6M elements) is stored fp16: the LoRA's layers stay f32, so the
# fused export and diffusers' unfused LoRA compute with the same values.
LORA_FP16_MIN = 1 << 20


def build_lcm_lora():
    """fixtures/tiny-lcm-lora."""
    family = "lcm-lora"
    out = os.path.join(REPO, "fixtures", f"tiny-{family}")
    exp = os.path.join(out, "expected")
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        lora = os.path.join(tmp, "lora", "pytorch_lora_weights.safetensors")
        make_lora(lora)
        torch_dir = os.path.join(tmp, "torch")
        convert.convert(convert.parse_args(["--random-init", "sd15", "--tiny", "--fp16-min-elements", str(LORA_FP16_MIN),
                                            "--no-encoder", "--lora", lora, "--lora-scale", str(LORA_SCALE),
                                            "--save-torch", torch_dir, out]), tweak=tweak)
        os.makedirs(exp)
        pipe = base_pipeline(out)
        base = render(pipe, out, LORA_CASE)
        pipe.load_lora_weights(os.path.dirname(lora), weight_name=os.path.basename(lora))
        image = render(pipe, out, LORA_CASE, cross_attention_kwargs={"scale": LORA_SCALE})
        cases = [save_case(exp, LORA_CASE, image)]
        moved = {
            "changed_word": diff(image, render(pipe, out, LORA_CASE, prompt=PROMPT.replace("dusk", "dawn"),
                                               cross_attention_kwargs={"scale": LORA_SCALE})),
            "lora_dropped": diff(image, base),
            "lora_scale_1": diff(image, render(pipe, out, LORA_CASE)),
        }
        # The converter's fused torch modules give diffusers' unfused picture (not a test of
        # sd.wasm: of the fusing itself).
        fused = diff(image, render(pipeline(out, torch_dir), out, LORA_CASE))
        print(f"{family}: fused modules vs unfused LoRA in diffusers: max difference {fused}/255")
        if fused > 1:
            sys.exit(f"{family}: the fused LoRA moves diffusers' picture {fused}/255")
        write_expected(family, exp, cases, {LORA_CASE["name"]: moved})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families", nargs="*", default=list(CASES) + ["lcm-lora"])
    for family in p.parse_args().families:
        build_lcm_lora() if family == "lcm-lora" else build(family)


if __name__ == "__main__":
    main()
