#!/usr/bin/env python3
"""Builds fixtures/tiny-lora/: kohya-format LoRA files for the tiny SD 1.5 model (fixtures/tiny)
and diffusers' pictures with them fused, the oracle for sd.wasm's `--lora`. Also writes the
weight maps (unet/weights.json, text_encoder/weights.json) that scripts/convert.py now writes
into every model dir, into fixtures/tiny, leaving its other files as they are.

    python3 scripts/make_lora_fixtures.py          # CPU, no network, ~1 min

The torch modules are rebuilt exactly as scripts/make_fixtures.py builds them (same seeds and
scales); the weight map finds every weight in the committed ONNX files by value, so a mismatch
between the two fails here. The LoRA is written straight in kohya's format (`lora_unet_…`,
`lora_te_text_model_…`, `.lora_down.weight`, `.lora_up.weight`, `.alpha`), random, with
alpha ≠ rank, on every attention projection, the feed-forward layers, proj_in/proj_out (1×1
convs in SD 1.5), time_emb_proj, resnet conv1/conv2 (LoCon: 3×3 down, 1×1 up) and the text
encoder's attention and MLP layers; diffusers reads it with its own kohya conversion
(`pipe.load_lora_weights(file)`) and merges it with `pipe.fuse_lora(lora_scale=S)`.
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fixture_imports  # noqa: E402

fixture_imports.stub_if_absent("onnxruntime", "open_clip")
import make_fixtures as mf  # noqa: E402
from convert import UNetWrapper, export, write_weight_map  # noqa: E402

TINY = mf.OUT
OUT = os.path.join(mf.REPO, "fixtures", "tiny-lora")
RANK = 4
ALPHA = 2.0
SCALE = 0.8
# A second, smaller LoRA (UNet attention only, no alpha: alpha = rank) stacked on the first.
RANK_B = 2


def kohya_name(prefix, module_name):
    return prefix + module_name.replace(".", "_")


def lora_pair(weight, rank, generator, strength):
    """Random down/up for one weight: Linear [out, in] → down [r, in], up [out, r]; Conv
    [out, in, kh, kw] → down [r, in, kh, kw], up [out, r, 1, 1] (LoCon)."""
    out_features = weight.shape[0]
    down_shape = (rank,) + tuple(weight.shape[1:])
    up_shape = (out_features, rank) + (1,) * (weight.ndim - 2)
    fan_in = int(np.prod(weight.shape[1:]))
    down = torch.randn(down_shape, generator=generator) / fan_in**0.5
    up = torch.randn(up_shape, generator=generator) * strength * float(weight.std()) * fan_in**0.5 / rank**0.5
    return down.half(), up.half()


def unet_targets(unet, attention_only):
    for name, module in unet.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if ".transformer_blocks." in name and leaf in ("to_q", "to_k", "to_v"):
            yield name, module
        elif name.endswith("to_out.0") and ".transformer_blocks." in name:
            yield name, module
        elif attention_only:
            continue
        elif name.endswith(("ff.net.0.proj", "ff.net.2")) or leaf in ("proj_in", "proj_out", "time_emb_proj"):
            yield name, module
        elif ".resnets." in name and leaf in ("conv1", "conv2"):
            yield name, module


def text_targets(text_encoder):
    for name, module in text_encoder.named_modules():
        if name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
            yield name, module


def make_lora(unet, text_encoder, seed, rank, alpha, attention_only, strength):
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    parts = [("lora_unet_", unet_targets(unet, attention_only))]
    if not attention_only:
        parts.append(("lora_te_", text_targets(text_encoder)))
    for prefix, targets in parts:
        for name, module in targets:
            # kohya names the text encoder's modules under text_model (transformers 4's layout).
            key = kohya_name(prefix, ("text_model." + name) if prefix == "lora_te_" else name)
            down, up = lora_pair(module.weight, rank, g, strength)
            tensors[key + ".lora_down.weight"] = down
            tensors[key + ".lora_up.weight"] = up
            if alpha is not None:
                tensors[key + ".alpha"] = torch.tensor(alpha).half()
    return tensors


def check_every_layer_merged(pipe, lora, scale):
    """diffusers merged every module of the file (W += S · alpha/r · up·down), none skipped."""
    text_encoder, unet, _ = mf.build_models(mf.SENSITIVITY_SCALES)
    merged = 0
    for prefix, fused, original in (("lora_unet_", pipe.unet, unet), ("lora_te_", pipe.text_encoder, text_encoder)):
        fused_params = dict(fused.named_parameters())
        for name, param in original.named_parameters():
            module = name[: -len(".weight")]
            key = kohya_name(prefix, ("text_model." + module) if prefix == "lora_te_" else module)
            if key + ".lora_down.weight" not in lora:
                continue
            down, up = lora[key + ".lora_down.weight"].float(), lora[key + ".lora_up.weight"].float()
            rank = down.shape[0]
            alpha = float(lora[key + ".alpha"]) if key + ".alpha" in lora else rank
            delta = (up.flatten(1) @ down.flatten(1)).reshape(param.shape)
            expected = param + scale * alpha / rank * delta
            assert torch.allclose(fused_params[name], expected, atol=1e-5), key
            merged += 1
    modules = len({k.split(".")[0] for k in lora})
    assert merged == modules, (merged, modules)
    print(f"diffusers merged all {merged} modules of the LoRA")


def picture(pipe, base_config, prompt=mf.PROMPT):
    return mf.image_u8(pipe, base_config, mf.case_args("pndm", prompt=prompt))


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    from diffusers import PNDMScheduler
    from transformers import CLIPTokenizer

    os.makedirs(OUT, exist_ok=True)
    text_encoder, unet, vae = mf.build_models(mf.SENSITIVITY_SCALES)
    for network, module, prefix in (("unet", unet, ""), ("text_encoder", text_encoder, "text_model.")):
        missing = write_weight_map(os.path.join(TINY, network, "model.onnx"), module, strip_prefix=prefix)
        lora_able = [n for n in missing if not n.startswith("embeddings.")]
        assert not lora_able, f"{network}: weights not found in the ONNX file: {lora_able}"

    # The UNet as scripts/convert.py stores weights at rest (fp16, a Cast in front; here from 256
    # elements, so that the tiny UNet's weights are fp16 as SD 1.5's are): sd.wasm merges into
    # fp16 initializers (MatMul-transposed and conv) there. The picture is checked against the
    # same fp32 oracle, so the fp16 rounding of every weight is in its tolerance.
    g = torch.Generator().manual_seed(0)
    fp16_unet = export(UNetWrapper(unet), (torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0]),
                                           torch.randn(1, 77, mf.HIDDEN, generator=g)),
                       os.path.join(OUT, "unet-fp16", "model.onnx"), ["sample", "timestep", "encoder_hidden_states"],
                       ["out_sample"], {"sample": {0: "batch_size", 2: "height", 3: "width"},
                                        "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
                                        "out_sample": {0: "batch_size", 2: "height", 3: "width"}},
                       external_data=True, fp16_min_elements=256)
    assert not write_weight_map(fp16_unet, unet)

    style = make_lora(unet, text_encoder, seed=7, rank=RANK, alpha=ALPHA, attention_only=False, strength=0.6)
    detail = make_lora(unet, text_encoder, seed=8, rank=RANK_B, alpha=None, attention_only=True, strength=0.6)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA)}
    save_file({k: v.contiguous() for k, v in style.items()}, os.path.join(OUT, "style.safetensors"), metadata=meta)
    save_file({k: v.contiguous() for k, v in detail.items()}, os.path.join(OUT, "detail.safetensors"))

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(TINY, "tokenizer"))
    base_config = PNDMScheduler.from_pretrained(os.path.join(TINY, "scheduler")).config

    def pipeline():
        # Fresh modules per case: fuse_lora changes them in place.
        te, un, va = mf.build_models(mf.SENSITIVITY_SCALES)
        return mf.make_pipeline(te, tokenizer, un, va, PNDMScheduler.from_config(base_config))

    cases = {}
    baseline = picture(pipeline(), base_config)
    for name, loras in [
        ("style-0.8", [("style", SCALE)]),
        ("style-0.8-detail-1.5", [("style", SCALE), ("detail", 1.5)]),
    ]:
        pipe = pipeline()
        for file, scale in loras:
            pipe.load_lora_weights(OUT, weight_name=f"{file}.safetensors", adapter_name=file)
        # fuse_lora(lora_scale=S) scales every adapter alike; per-adapter scales go through
        # set_adapters, which fuse_lora then merges as they are.
        pipe.set_adapters([f for f, _ in loras], adapter_weights=[s for _, s in loras])
        pipe.fuse_lora(lora_scale=1.0, adapter_names=[f for f, _ in loras])
        pipe.unload_lora_weights()
        image = picture(pipe, base_config)
        Image.fromarray(image).save(os.path.join(OUT, f"{name}.png"))
        diff = np.abs(image.astype(int) - baseline.astype(int))
        cases[name] = {"loras": loras, "png": f"{name}.png", "max_abs_diff_to_no_lora": int(diff.max()),
                       "mean_abs_diff_to_no_lora": round(float(diff.mean()), 2)}
        print(name, cases[name])
    # The plain fuse_lora(lora_scale=S) route on one LoRA must give the same picture.
    pipe = pipeline()
    pipe.load_lora_weights(OUT, weight_name="style.safetensors")
    pipe.fuse_lora(lora_scale=SCALE)
    pipe.unload_lora_weights()
    check_every_layer_merged(pipe, style, SCALE)
    same = np.abs(picture(pipe, base_config).astype(int) - np.asarray(Image.open(os.path.join(OUT, "style-0.8.png"))).astype(int))
    assert same.max() <= 1, same.max()
    for name, case in cases.items():
        assert case["max_abs_diff_to_no_lora"] > 40, (name, case)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"prompt": mf.PROMPT, "negative_prompt": mf.NEGATIVE, "seed": mf.SEED, "steps": mf.STEPS,
                   "guidance_scale": mf.GUIDANCE, "scheduler": "pndm", "width": mf.WIDTH, "height": mf.HEIGHT,
                   "rank": RANK, "alpha": ALPHA, "cases": cases}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
