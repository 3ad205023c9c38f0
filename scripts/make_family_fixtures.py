#!/usr/bin/env python3
"""Builds fixtures/tiny-sd21/ and fixtures/tiny-sd-turbo/: the model families beyond SD 1.x,
made by scripts/convert.py itself (--random-init FAMILY --tiny, so the converter's fp16
weights at rest and fused MultiHeadAttention are what sd.wasm reads), plus diffusers' own
pictures from the same torch modules as the oracle (expected/cases.json, like fixtures/tiny).

    python3 scripts/make_family_fixtures.py        # ~1 minute, CPU, no network

  * sd21: v-prediction, DDIM (the checkpoint's scheduler) and Euler, OpenCLIP-style text
    encoder (gelu), "!" as pad token, linear projections in the transformer blocks.
  * sd-turbo: trailing timestep spacing, one step, guidance 0 (no unconditional pass), decoded
    by the full VAE and by TAESD (--vae taesd).
expected/sensitivity.json records how far one changed word, the wrong pad token, the wrong
prediction type and a small guidance change move diffusers' picture; the script fails unless
every one moves it well past the tests' 2/255 tolerance.
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
}


def tweak(modules):
    with torch.no_grad():
        for name, module in modules.items():
            for pname, p in module.named_parameters():
                for key, scale in SCALES.items():
                    if key in pname and (name != "vae" or key == "conv_out") and name != "taesd":
                        p.mul_(scale)


def scheduler_for(name, config):
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    cls = {None: None, "euler": EulerDiscreteScheduler, "euler-a": EulerAncestralDiscreteScheduler,
           "ddim": DDIMScheduler}[name]
    if cls is None:
        import diffusers

        cls = getattr(diffusers, config["_class_name"])
    return cls.from_config(config)


def pipeline(model_dir, torch_dir, vae="vae", pad=None):
    from diffusers import AutoencoderKL, AutoencoderTiny, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"pad_token": pad} if pad else {}
    vae_cls = AutoencoderTiny if vae == "taesd" else AutoencoderKL
    pipe = StableDiffusionPipeline(
        vae=vae_cls.from_pretrained(os.path.join(torch_dir, vae)),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(torch_dir, "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(model_dir, "tokenizer"), **kw),
        unet=UNet2DConditionModel.from_pretrained(os.path.join(torch_dir, "unet")),
        scheduler=scheduler_for(None, json.load(open(os.path.join(model_dir, "scheduler", "scheduler_config.json")))),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe, model_dir, case, prompt=PROMPT, prediction_type=None):
    config = json.load(open(os.path.join(model_dir, "scheduler", "scheduler_config.json")))
    if prediction_type:
        config = dict(config, prediction_type=prediction_type)
    pipe.scheduler = scheduler_for(case["scheduler"], config)
    with torch.no_grad():
        image = pipe(prompt=prompt, num_inference_steps=case["steps"], guidance_scale=case["guidance_scale"],
                     generator=torch.Generator("cpu").manual_seed(SEED), output_type="pil").images[0]
    return image


def diff(a, b):
    return int(np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max())


def build(family):
    out = os.path.join(REPO, "fixtures", f"tiny-{family}")
    exp = os.path.join(out, "expected")
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as torch_dir:
        convert.convert(convert.parse_args(["--random-init", family, "--tiny", "--fp16-min-elements", "1024",
                                            "--no-encoder", "--save-torch", torch_dir, out]), tweak=tweak)
        os.makedirs(exp)
        cases, sensitivity = [], {}
        for case in CASES[family]:
            vae = case.get("vae", "vae")
            pipe = pipeline(out, torch_dir, vae="taesd" if vae == "taesd" else "vae")
            image = render(pipe, out, case)
            image.save(os.path.join(exp, case["name"] + ".png"))
            cases.append({"name": case["name"], "png": case["name"] + ".png",
                          "args": {"prompt": PROMPT, "negative_prompt": None, "seed": SEED, "steps": case["steps"],
                                   "guidance_scale": case["guidance_scale"], "width": 16, "height": 16,
                                   "scheduler": case["scheduler"], "eta": None, "latents": None,
                                   "vae": case.get("vae")}})
            if case is CASES[family][0]:
                moved = {"changed_word": diff(image, render(pipe, out, case, prompt=PROMPT.replace("dusk", "dawn")))}
                wrong_pad = "<|endoftext|>" if family != "sd15" else "!"
                moved["pad_token"] = diff(image, render(pipeline(out, torch_dir, pad=wrong_pad), out, case))
                config = json.load(open(os.path.join(out, "scheduler", "scheduler_config.json")))
                wrong = "epsilon" if config["prediction_type"] == "v_prediction" else "v_prediction"
                moved["prediction_type"] = diff(image, render(pipe, out, case, prediction_type=wrong))
                nudged = dict(case, guidance_scale=case["guidance_scale"] - 0.5 if case["guidance_scale"] > 1 else 1.5)
                moved["guidance"] = diff(image, render(pipe, out, nudged))
                sensitivity[case["name"]] = moved
        with open(os.path.join(exp, "cases.json"), "w") as f:
            json.dump(cases, f, indent=2)
        with open(os.path.join(exp, "sensitivity.json"), "w") as f:
            json.dump(sensitivity, f, indent=2)
    print(family, json.dumps(sensitivity))
    weak = {k: v for case in sensitivity.values() for k, v in case.items() if v < MIN_SENSITIVITY}
    if weak:
        sys.exit(f"{family}: the fixture is too flat for {weak} (< {MIN_SENSITIVITY}/255): raise SCALES")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families", nargs="*", default=list(CASES))
    for family in p.parse_args().families:
        build(family)


if __name__ == "__main__":
    main()
