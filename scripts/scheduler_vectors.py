#!/usr/bin/env python3
"""Generate tests/data/scheduler_vectors.json: reference values from diffusers for src/schedulers.

Each case builds a diffusers scheduler exactly as `scheduler_from_config(name, config)` should on the
Rust side (XScheduler.from_config(config, **name_overrides)) and records, for a few step counts,
scheduler.timesteps and init_noise_sigma, plus one full denoising trajectory driven the way
StableDiffusionPipeline drives it. The noise a scheduler draws inside step() is recorded per step so
the Rust test can replay it (the torch-compatible RNG lives elsewhere in the crate).

Usage: python scripts/scheduler_vectors.py [output.json]   (needs diffusers 0.42.1, torch, scipy)
"""
import copy
import inspect
import json
import os
import sys

import numpy as np
import torch
import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.schedulers import (
    scheduling_ddim,
    scheduling_dpmsolver_multistep,
    scheduling_euler_ancestral_discrete,
    scheduling_euler_discrete,
    scheduling_lcm,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert import SD21_SCHEDULER  # noqa: E402

diffusers.utils.logging.set_verbosity_error()  # from_config warns about every ignored key

EXPECTED_DIFFUSERS = "0.42.1"
SHAPE = (1, 4, 3, 5)
TIMESTEP_COUNTS = [1, 4, 10, 25]
TRAJECTORY_STEPS = 6

# Command-line name -> (diffusers class, keys the name pins). Mirrors src/schedulers/mod.rs.
NAMES = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
    ),
    "dpm++2m-karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "lms": (LMSDiscreteScheduler, {}),
    "lcm": (LCMScheduler, {}),
}
CLASSES = {cls.__name__: cls for cls, _ in NAMES.values()}

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
SD15 = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
# stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json (the converter's --random-init sd21)
SD21 = dict(SD21_SCHEDULER, _diffusers_version="0.8.0", skip_prk_steps=True)
# "Common Diffusion Noise Schedules and Sample Steps are Flawed" setup on top of SD 2.1.
SD21_TRAILING = dict(SD21, timestep_spacing="trailing", rescale_betas_zero_snr=True)

# Noise drawn by schedulers inside step(), in draw order.
DRAWS = []


def _recording(orig):
    def randn_tensor(*args, **kwargs):
        t = orig(*args, **kwargs)
        DRAWS.append(t.clone())
        return t

    return randn_tensor


for _mod in (
    scheduling_ddim,
    scheduling_dpmsolver_multistep,
    scheduling_euler_ancestral_discrete,
    scheduling_euler_discrete,
    scheduling_lcm,
):
    _mod.randn_tensor = _recording(_mod.randn_tensor)


def f32_list(t):
    """Shortest decimal that round-trips each float32 (keeps the file small; values are compared
    with a tolerance)."""
    a = t.detach().to(torch.float32).reshape(-1).numpy()
    return [float(str(np.float32(v))) for v in a]


def exact(v):
    """Exact value of a float32/int64 scalar as a JSON number (timesteps are compared exactly)."""
    return float(v.item() if hasattr(v, "item") else v)


def build(name, config, extra):
    if name is None:
        cls, pinned = CLASSES[config["_class_name"]], {}
    else:
        cls, pinned = NAMES[name]
    return cls.from_config(copy.deepcopy(config), **pinned, **extra)


def step_kwargs(sched, eta, generator):
    # What StableDiffusionPipeline.prepare_extra_step_kwargs passes.
    params = set(inspect.signature(sched.step).parameters)
    kw = {}
    if "eta" in params:
        kw["eta"] = eta
    if "generator" in params:
        kw["generator"] = generator
    return kw


def trajectory(sched, n, eta):
    sched.set_timesteps(n)
    gen = torch.Generator().manual_seed(0)
    init_noise = torch.randn(SHAPE, generator=gen)
    latents = init_noise * sched.init_noise_sigma
    fixed = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    record = {
        "num_inference_steps": n,
        "init_noise": f32_list(init_noise),
        "initial": f32_list(latents),
        "fixed": f32_list(fixed),
        "steps": [],
    }
    for t in sched.timesteps:
        x = sched.scale_model_input(latents, t)
        # Identity for PNDM/DDIM/DPM/LCM: stored as null to keep the file small.
        scaled = None if torch.equal(x, latents) else f32_list(x)
        model_output = 0.3 * x + 0.5 * fixed
        DRAWS.clear()
        latents = sched.step(model_output, t, latents, **step_kwargs(sched, eta, gen)).prev_sample
        record["steps"].append(
            {"t": exact(t), "scaled": scaled, "noise": [f32_list(d) for d in DRAWS], "out": f32_list(latents)}
        )
    return record


def add_noise_record(sched, n):
    sched.set_timesteps(n)
    t = sched.timesteps[1:2]
    original = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    out = sched.add_noise(original, noise, t)
    return {
        "num_inference_steps": n,
        "timestep": exact(t[0]),
        "original": f32_list(original),
        "noise": f32_list(noise),
        "out": f32_list(out),
    }


def case(case_id, name, config, extra=None, eta=0.0, counts=TIMESTEP_COUNTS, traj_steps=TRAJECTORY_STEPS):
    extra = extra or {}
    # The Rust side receives the config with the extra keys merged in (same effect as from_config kwargs).
    rust_config = dict(config, **extra)
    record = {"id": case_id, "name": name, "config": rust_config, "eta": eta, "timesteps": []}
    for n in counts:
        s = build(name, config, extra)
        s.set_timesteps(n)
        record["timesteps"].append(
            {
                "n": n,
                "timesteps": [exact(t) for t in s.timesteps],
                "init_noise_sigma": exact(torch.as_tensor(s.init_noise_sigma, dtype=torch.float32)),
            }
        )
    if traj_steps is not None:
        record["trajectory"] = trajectory(build(name, config, extra), traj_steps, eta)
        record["add_noise"] = add_noise_record(build(name, config, extra), traj_steps)
    return record


def main():
    if diffusers.__version__ != EXPECTED_DIFFUSERS:
        print(f"warning: diffusers {diffusers.__version__}, the vectors are meant to come from {EXPECTED_DIFFUSERS}",
              file=sys.stderr)
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "scheduler_vectors.json"
    )
    cases = []
    for label, cfg in (("sd15", SD15), ("sd21", SD21), ("sd21-trailing-zsnr", SD21_TRAILING)):
        for name in NAMES:
            cases.append(case(f"{label}/{name}", name, cfg))
    cases.append(case("sd15/ddim-eta0.5", "ddim", SD15, eta=0.5))
    # (eta=1 with zero terminal SNR gives NaN in diffusers: 1 - a_prev - std^2 rounds below zero.)
    cases.append(case("sd21/ddim-eta0.8", "ddim", SD21, eta=0.8))

    # Config-driven (no --scheduler override): _class_name picks the class, class defaults fill the rest.
    cases.append(case("pndm-prk-defaults", None, {"_class_name": "PNDMScheduler"}, counts=[4, 10, 25], traj_steps=5))
    cases.append(
        case(
            "ddim-sample-clip-linspace",
            None,
            {"_class_name": "DDIMScheduler", "prediction_type": "sample", "timestep_spacing": "linspace",
             "clip_sample_range": 0.8},
            eta=0.3,
        )
    )
    cases.append(case("euler-defaults", None, {"_class_name": "EulerDiscreteScheduler"}))
    cases.append(case("euler-karras", None, dict(SD15, _class_name="EulerDiscreteScheduler", use_karras_sigmas=True)))
    cases.append(
        case(
            "euler-exp-sigmamin-final",
            None,
            dict(SD15, _class_name="EulerDiscreteScheduler", use_exponential_sigmas=True,
                 final_sigmas_type="sigma_min", timestep_spacing="trailing"),
        )
    )
    cases.append(
        case(
            "euler-loglinear-cosine",
            None,
            {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "squaredcos_cap_v2",
             "interpolation_type": "log_linear", "prediction_type": "v_prediction"},
        )
    )
    cases.append(case("euler-a-defaults-leading", None, {"_class_name": "EulerAncestralDiscreteScheduler",
                                                         "timestep_spacing": "leading", "steps_offset": 1}))
    cases.append(case("lms-karras", None, dict(SD15, _class_name="LMSDiscreteScheduler", use_karras_sigmas=True)))
    cases.append(case("lms-sample-trailing", None, dict(SD15, _class_name="LMSDiscreteScheduler",
                                                        prediction_type="sample", timestep_spacing="trailing")))
    dpm = dict(SD15, _class_name="DPMSolverMultistepScheduler")
    cases.append(case("dpm-sde++", None, dict(dpm, algorithm_type="sde-dpmsolver++")))
    cases.append(case("dpm-order3-heun-leading", None, dict(dpm, solver_order=3, solver_type="heun",
                                                            timestep_spacing="leading")))
    cases.append(case("dpm-order3-lower-final-off", None, dict(dpm, solver_order=3, lower_order_final=False,
                                                               final_sigmas_type="sigma_min")))
    cases.append(case("dpm-dpmsolver-sigmamin", None, dict(dpm, algorithm_type="dpmsolver",
                                                          final_sigmas_type="sigma_min", prediction_type="v_prediction")))
    cases.append(case("dpm-sde-dpmsolver-heun", None, dict(dpm, algorithm_type="sde-dpmsolver", solver_type="heun",
                                                          final_sigmas_type="sigma_min")))
    cases.append(case("dpm-lu-trailing", None, dict(dpm, use_lu_lambdas=True, timestep_spacing="trailing")))
    # Cosine + Karras truncates (does not round) timesteps; diffusers then repeats 998 and its step index
    # runs past the end, so only the schedule is recorded.
    cases.append(case("dpm-karras-cosine", None, {"_class_name": "DPMSolverMultistepScheduler",
                                                  "beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True},
                      traj_steps=None))
    cases.append(case("dpm-karras-sample-euler-final", None, dict(dpm, use_karras_sigmas=True, prediction_type="sample",
                                                                  euler_at_final=True, lower_order_final=False)))
    cases.append(case("dpm-exponential", None, dict(dpm, use_exponential_sigmas=True)))
    cases.append(case("dpm-lambda-clipped-cosine", None, {"_class_name": "DPMSolverMultistepScheduler",
                                                          "beta_schedule": "squaredcos_cap_v2",
                                                          "lambda_min_clipped": -5.1, "prediction_type": "v_prediction"}))
    cases.append(case("euler-continuous-v", None, dict(SD21, _class_name="EulerDiscreteScheduler",
                                                       timestep_type="continuous")))
    cases.append(case("lms-exponential-leading", None, dict(SD15, _class_name="LMSDiscreteScheduler",
                                                            use_exponential_sigmas=True, timestep_spacing="leading")))
    cases.append(case("lcm-defaults-clip", None, {"_class_name": "LCMScheduler", "original_inference_steps": 40,
                                                  "clip_sample": True, "timestep_scaling": 7.5}))
    trained = [round(float(b), 8) for b in np.linspace(0.0002, 0.03, 200) ** 1.1]
    cases.append(case("ddim-trained-betas", None, {"_class_name": "DDIMScheduler", "num_train_timesteps": 200,
                                                   "trained_betas": trained, "set_alpha_to_one": False}))

    data = {
        "generator": "scripts/scheduler_vectors.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "shape": list(SHAPE),
        "model_output": "0.3 * scale_model_input(latents, t) + 0.5 * fixed",
        "cases": cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(data, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out_path} ({os.path.getsize(out_path)} bytes)")


if __name__ == "__main__":
    main()
