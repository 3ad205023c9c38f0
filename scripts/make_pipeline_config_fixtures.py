#!/usr/bin/env python3
"""Builds fixtures/tiny-pipeline-config/: what diffusers' StableDiffusionPipeline does to the
scheduler config it loads (the oracle for tests/pipeline_config.rs and
src/schedulers/pipeline_config.rs).

Regenerate (from the repo root, after scripts/make_fixtures.py; CPU, no network, ~1 minute):

    python3 scripts/make_pipeline_config_fixtures.py

StableDiffusionPipeline.__init__ rewrites the config of the scheduler it is given: a
steps_offset other than 1 becomes 1, clip_sample true becomes false. Each case saves the tiny
model's torch modules (rebuilt with scripts/make_fixtures.py's seeds and scales, checked against
fixtures/tiny: one UNet call, one VAE encoder call, and two of its pictures regenerated through
this script's path) with a scheduler config as diffusers' save_pretrained writes it, loads them
with StableDiffusionPipeline.from_pretrained, and runs either the pipeline's own scheduler or
the pipeline built with `scheduler=XScheduler.from_config(<the saved config>)` (what sd.wasm's
--scheduler stands for: the pipeline given that scheduler, so its rewrite applies).

Each case also records the picture sd.wasm made before it applied the rewrite (the saved config
fed straight to the scheduler class) and how far it is from diffusers' picture: the script
fails unless every case moves more than THRESHOLD/255, so the fixture can tell the two apart.
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
from make_img2img_fixtures import check_same_weights  # noqa: E402
from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

OUT = os.path.join(mf.REPO, "fixtures", "tiny-pipeline-config")
# As tests/parity.rs's guidance variant: 5 times the tolerance. A steps_offset of 0 instead of 1
# shifts every timestep by one of 1000, which moves this tiny model's picture by 4-24/255
# depending on seed and step count; the cases below pick ones that move it more than this.
THRESHOLD = 10
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")

# (case, scheduler config, --scheduler or None for the model's own, other args than
# make_fixtures.case_args' defaults, whether the picture is an oracle)
CASES = [
    # An old-style PNDM config (steps_offset 0, no clip_sample) with DDIM given to the pipeline:
    # DDIM's own clip_sample default (true) and steps_offset 0 are both rewritten: no clipping.
    ("pndm-saved-ddim", "pndm-saved", "ddim", {}, True),
    # The same with clip_sample false (as SD 1.5's PNDM config has it).
    ("pndm-saved-clip-false-ddim", "pndm-saved-clip-false", "ddim", {"steps": 25, "seed": 3}, True),
    # The same config with the model's own PNDM: steps_offset 0 runs as 1.
    ("pndm-saved-own", "pndm-saved", None, {"steps": 25, "seed": 3}, True),
    # A DDIM config as DDIMScheduler() saves it (steps_offset 0, clip_sample true), its own
    # scheduler: runs with steps_offset 1 and without clipping.
    ("ddim-saved-own", "ddim-saved", None, {}, True),
    # SD 1.5's PNDM config with clip_sample true, DDIM given: clip_sample arrives false.
    ("sd15-clip-true-ddim", "sd15-clip-true", "ddim", {}, True),
]

README = """# `tiny-pipeline-config/`: the scheduler config as diffusers' pipeline runs it

Made by `scripts/make_pipeline_config_fixtures.py` (after `make_fixtures.py`) from the same torch
modules as `tiny/`. `StableDiffusionPipeline.__init__` rewrites the scheduler config it loads
(steps_offset != 1 becomes 1, clip_sample true becomes false); the networks are `tiny/`'s, only
`scheduler/scheduler_config.json` changes (the tests copy `tiny/`, put `configs/<config>.json`
in its place and its class in `model_index.json`).

- `configs/`: scheduler configs as diffusers' `save_pretrained` writes them (`pndm-saved`:
  `PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, <SD betas>)`, so steps_offset 0 and
  no clip_sample; `ddim-saved`: `DDIMScheduler(set_alpha_to_one=False, <SD betas>)`, so steps_offset 0
  and clip_sample true), and `sd15-clip-true` (`tiny/`'s SD 1.5 config with clip_sample true).
- `cases.json`: `{name, config, args, png, old_behaviour_png, ran_with, old_ran_with, scheduler}`. `args` as
  `tiny/expected/cases.json` (`scheduler` null: the pipeline's own scheduler; a name: the
  pipeline built with `scheduler=XScheduler.from_config(<saved config>)`, so its rewrite applies).
  `png` is diffusers' picture; `old_behaviour_png` the picture with the saved config fed straight
  to the scheduler class (what sd.wasm did before it applied the pipeline's rewrite); `ran_with` /
  `old_ran_with` the steps_offset and clip_sample each scheduler ran with. `scheduler`: the
  scheduler the pipeline runs, checked on its own: its timesteps for `args.steps` and its first
  step on a fixed [1, 4, 2, 2] sample and model output.
- `sensitivity.json`: per case, the max |difference| between the two pictures (`moved`, each >
  `threshold`); whether the scheduler without the rewrite has other timesteps, and how far its
  first step is (`old_scheduler`: one of the two, asserted by the script); and for DDIM how far
  the first step moves with clip_sample flipped (`clip_flipped_step_moved`, > 0.1: the step
  check sees clipping).
"""


def saved_config_text(scheduler):
    """scheduler_config.json as save_pretrained writes it for `scheduler`."""
    with tempfile.TemporaryDirectory() as d:
        scheduler.save_config(d)
        with open(os.path.join(d, "scheduler_config.json"), encoding="utf-8") as f:
            return f.read()


def config_texts():
    with open(os.path.join(mf.OUT, "scheduler", "scheduler_config.json"), encoding="utf-8") as f:
        sd15 = json.load(f)
    pndm_saved = saved_config_text(PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **BETAS))
    return {
        "pndm-saved": pndm_saved,
        "pndm-saved-clip-false": json.dumps(dict(json.loads(pndm_saved), clip_sample=False), indent=2, sort_keys=True) + "\n",
        "ddim-saved": saved_config_text(DDIMScheduler(set_alpha_to_one=False, **BETAS)),
        "sd15-clip-true": json.dumps(dict(sd15, clip_sample=True), indent=2, sort_keys=True) + "\n",
    }


def load_pipeline(torch_dir, config_text):
    """StableDiffusionPipeline.from_pretrained on the saved torch modules, with `config_text` as
    scheduler/scheduler_config.json (and its class in model_index.json, where from_pretrained
    reads which class to load)."""
    with open(os.path.join(torch_dir, "scheduler", "scheduler_config.json"), "w", encoding="utf-8") as f:
        f.write(config_text)
    index_path = os.path.join(torch_dir, "model_index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    index["scheduler"] = ["diffusers", json.loads(config_text)["_class_name"]]
    mf.write_json(index_path, index)
    pipe = StableDiffusionPipeline.from_pretrained(torch_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def with_scheduler(pipe, scheduler):
    """The pipeline built with `scheduler` given (its __init__ rewrites that scheduler's config)."""
    return mf.make_pipeline(pipe.text_encoder, pipe.tokenizer, pipe.unet, pipe.vae, scheduler)


def own_scheduler_name(config):
    """The command-line name of the config's own class."""
    return next(n for n, (cls, kw) in mf.SCHEDULERS.items() if cls.__name__ == config["_class_name"] and not kw)


def ran_with(scheduler):
    return {k: scheduler.config.get(k) for k in ("steps_offset", "clip_sample")} | {"class": type(scheduler).__name__}


def scheduler_check(scheduler, steps):
    """The scheduler's timesteps and its first step on a fixed sample (x0 far outside [-1, 1],
    so clipping shows)."""
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 2, 2, generator=g) * 2
    model_output = torch.randn(1, 4, 2, 2, generator=g)
    t = scheduler.timesteps[0]
    prev = scheduler.step(model_output, t, sample, return_dict=False)[0]
    flat = lambda x: [float(v) for v in x.flatten()]  # noqa: E731
    return {"timesteps": [float(v) for v in scheduler.timesteps], "shape": list(sample.shape),
            "sample": flat(sample), "model_output": flat(model_output), "prev_sample": flat(prev)}


def step_distance(a, b):
    return float(np.abs(np.array(a["prev_sample"]) - np.array(b["prev_sample"])).max())


def max_diff(a, b):
    return int(np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max())


def check_known_cases(torch_dir):
    """The saved modules and this script's path reproduce fixtures/tiny's oracle pictures."""
    with open(os.path.join(mf.OUT, "scheduler", "scheduler_config.json"), encoding="utf-8") as f:
        sd15 = f.read()
    with open(os.path.join(mf.EXP, "cases.json"), encoding="utf-8") as f:
        known = {c["name"]: c for c in json.load(f)}
    for name in ("pndm", "ddim"):
        pipe = load_pipeline(torch_dir, sd15)
        img = mf.run(pipe, pipe.scheduler.config, known[name]["args"])[0]
        d = max_diff(img, Image.open(os.path.join(mf.EXP, known[name]["png"])))
        print(f"fixtures/tiny case {name} regenerated: max |diff| {d}/255")
        assert d == 0, f"the rebuilt pipeline does not reproduce fixtures/tiny's {name} picture ({d}/255)"


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    text_encoder, unet, vae = mf.build_models(mf.SENSITIVITY_SCALES)
    check_same_weights(unet, vae)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(mf.OUT, "tokenizer"))
    torch_dir = tempfile.mkdtemp()
    mf.make_pipeline(text_encoder, tokenizer, unet, vae, PNDMScheduler()).save_pretrained(torch_dir)
    check_known_cases(torch_dir)

    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "configs"))
    with open(os.path.join(OUT, "README.md"), "w", encoding="utf-8") as f:
        f.write(README)
    texts = config_texts()
    for name, text in texts.items():
        with open(os.path.join(OUT, "configs", f"{name}.json"), "w", encoding="utf-8") as f:
            f.write(text)

    manifest, sens = [], {"threshold": THRESHOLD, "moved": {}, "old_scheduler": {}, "clip_flipped_step_moved": {}}
    for name, config_name, scheduler, other_args, picture in CASES:
        args = mf.case_args(scheduler, **other_args)
        config = json.loads(texts[config_name])
        # Before: the saved config straight into the scheduler class, no pipeline rewrite.
        old_args = dict(args, scheduler=scheduler or own_scheduler_name(config))
        pipe = load_pipeline(torch_dir, texts[config_name])
        if scheduler is not None:
            pipe = with_scheduler(pipe, mf.make_scheduler(scheduler, config))
        own = dict(args, scheduler=None)
        entry = {"name": name, "config": f"configs/{config_name}.json", "args": args, "png": None,
                 "old_behaviour_png": None, "ran_with": None, "old_ran_with": None}
        runs = pipe.scheduler
        if picture:
            img = mf.run(pipe, pipe.scheduler.config, own)[0]
            old = mf.run(pipe, config, old_args)[0]
            entry["png"], entry["old_behaviour_png"] = f"{name}.png", f"{name}-old-behaviour.png"
            img.save(os.path.join(OUT, entry["png"]))
            old.save(os.path.join(OUT, entry["old_behaviour_png"]))
            moved = max_diff(img, old)
            assert moved > THRESHOLD, (name, moved)
            sens["moved"][name] = moved
        before = mf.make_scheduler(old_args["scheduler"], config)
        entry["ran_with"], entry["old_ran_with"] = ran_with(runs), ran_with(before)
        entry["scheduler"], old_check = scheduler_check(runs, args["steps"]), scheduler_check(before, args["steps"])
        step_moved = step_distance(entry["scheduler"], old_check)
        timesteps_moved = entry["scheduler"]["timesteps"] != old_check["timesteps"]
        assert timesteps_moved or step_moved > 0.1, (name, step_moved)
        sens["old_scheduler"][name] = {"timesteps_differ": timesteps_moved, "step_moved": step_moved}
        if "clip_sample" in runs.config:
            # The step check sees clipping: the same scheduler with clip_sample flipped.
            flipped = type(runs).from_config(runs.config, clip_sample=not runs.config.clip_sample)
            sens["clip_flipped_step_moved"][name] = step_distance(entry["scheduler"], scheduler_check(flipped, args["steps"]))
            assert sens["clip_flipped_step_moved"][name] > 0.1, (name, sens["clip_flipped_step_moved"])
        print(f"case {name:26s} runs with {entry['ran_with']}; before: {entry['old_ran_with']}; "
              f"picture moved {sens['moved'].get(name)}/255, step moved {step_moved:.4f}, timesteps moved {timesteps_moved}")
        manifest.append(entry)
    mf.write_json(os.path.join(OUT, "cases.json"), manifest)
    mf.write_json(os.path.join(OUT, "sensitivity.json"), sens)
    shutil.rmtree(torch_dir)


if __name__ == "__main__":
    main()
