#!/usr/bin/env python3
"""Turns a diffusers Stable Diffusion checkpoint into the model dir sd.wasm reads.

    python3 scripts/convert.py runwayml/stable-diffusion-v1-5 models/sd15     # hub id or folder
    python3 scripts/convert.py --random-init sd15 models/sd15-random          # same shapes, random
    python3 scripts/convert.py --random-init taesd models/sd15-random         # add a TAESD decoder
    python3 scripts/convert.py --plain --random-init sd15 models/sd15-plain   # optimum-style fp32
    python3 scripts/convert.py model.safetensors models/mine [--config DIFFUSERS_DIR]  # single file
    python3 scripts/convert.py --random-init sd15 --template templates/sd15   # for --checkpoint

A template (--template) is the model dir of a family without its weights: the graphs, configs,
tokenizer, and per network a checkpoint.json saying which tensor of an original-layout
single-file checkpoint (scripts/checkpoint_keys.py) fills each weight. sd.wasm --checkpoint
FILE runs a checkpoint through it with no Python step.

Families for --random-init: sd15, sd21 (v-prediction, OpenCLIP text encoder, 768²), sd-turbo
(SD 2.1 shapes at 512², trailing Euler, guidance 0, with TAESD), lcm (SD 1.5 shapes distilled
with a guidance embedding, time_cond_proj_dim 256, LCM scheduler: LCM Dreamshaper v7's form)
and taesd (only the TAESD decoder, added to OUT). `--tiny` shrinks every family to test size
(same structure).

What the default (non --plain) form changes against optimum's export, and why (measured in
wasm32 under wasmtime, see docs/memory-and-speed.md):
  * Weights at rest in fp16: every float initializer of >= --fp16-min-elements elements is
    stored as fp16 and Cast to f32 where it is used. tract does not constant-fold a Cast whose
    output is larger than its input, so the UNet stays 1.7 GB in memory instead of 3.4 GB: the
    fp32 SD 1.5 UNet does not fit wasm32's 4 GiB at all. Random-init weights are rounded to
    fp16 in torch first, so torch (the oracle) computes with exactly the stored values.
  * Attention as one com.microsoft MultiHeadAttention node: tract lowers it to its flash SDPA,
    which never materializes the (heads x 4096 x 4096) score tensor at a 64x64 latent (512 MiB
    per head group in the exported MatMul/Softmax/MatMul form). onnxruntime runs it too.
  * Each network's external data in one file per network, read tensor by tensor by sd.wasm,
    so no single allocation nears wasm32's 2 GiB limit.
The UNet is exported with a scalar float timestep and input_ids as int32, names as optimum's;
a UNet with a guidance embedding (time_cond_proj_dim, LCM) also takes `timestep_cond`.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

OPSET = 17
MHA_DOMAIN = "com.microsoft"

# ---------------------------------------------------------------------------------------------
# Configs of the families (the hub checkpoints' own config.json values)
# ---------------------------------------------------------------------------------------------

SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "trained_betas": None,
}
# LCMScheduler with SD's betas, as LCM Dreamshaper v7 ships it.
LCM_SCHEDULER = {
    "_class_name": "LCMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "prediction_type": "epsilon",
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "timestep_scaling": 10.0,
    "trained_betas": None,
}
SD_TURBO_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu", projection_dim=768)
OPEN_CLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                   hidden_act="gelu", projection_dim=512)

UNET_SD15 = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)
UNET_SD21 = dict(UNET_SD15, sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                 use_linear_projection=True)
VAE_SD = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512, scaling_factor=0.18215,
)

# --tiny: the same block structure, test-sized (trains nothing, exports in seconds).
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
TINY_UNET = dict(sample_size=8, layers_per_block=1, block_out_channels=(32, 64),
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                 cross_attention_dim=32, norm_num_groups=8)
TINY_VAE = dict(layers_per_block=1, block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=16, scaling_factor=0.5)
TINY_TAESD = dict(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16))

FAMILIES = {
    # text encoder, pad token, unet, scheduler, bundled TAESD (SD-Turbo runs 1 step, guidance 0)
    "sd15": (CLIP_L, "<|endoftext|>", UNET_SD15, SD15_SCHEDULER, False),
    "sd21": (OPEN_CLIP_H, "!", UNET_SD21, SD21_SCHEDULER, False),
    "sd-turbo": (OPEN_CLIP_H, "!", dict(UNET_SD21, sample_size=64), SD_TURBO_SCHEDULER, True),
    "lcm": (CLIP_L, "<|endoftext|>", dict(UNET_SD15, time_cond_proj_dim=256), LCM_SCHEDULER, False),
}

# ---------------------------------------------------------------------------------------------
# Attention as one MultiHeadAttention node
# ---------------------------------------------------------------------------------------------


class MultiHeadAttention(torch.autograd.Function):
    """Scaled dot-product attention on [B, S, heads*dim] projections; exports as
    com.microsoft MultiHeadAttention (tract: flash SDPA; onnxruntime: its CPU kernel)."""

    @staticmethod
    def forward(ctx, q, k, v, heads, scale):
        def split(x):
            return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=scale)
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)

    @staticmethod
    def symbolic(g, q, k, v, heads, scale):
        out = g.op(f"{MHA_DOMAIN}::MultiHeadAttention", q, k, v, num_heads_i=heads, scale_f=scale)
        out.setType(q.type())
        return out


def attention_per_head(q, k, v, heads, scale):
    """Attention one head at a time as plain MatMul/Softmax/MatMul: each head's score matrix
    (pixels x pixels) is the largest temporary, and tract runs both products on its SIMD
    matmul kernels (its flash SDPA runs scalar 32x32 blocks in wasm)."""
    b, s, _ = q.shape
    qs, ks, vs = (x.view(b, x.shape[1], heads, -1) for x in (q, k, v))
    outs = []
    for h in range(heads):
        scores = torch.matmul(qs[:, :, h] * scale, ks[:, :, h].transpose(1, 2))
        outs.append(torch.matmul(scores.softmax(dim=-1), vs[:, :, h]))
    return torch.cat(outs, dim=-1)


ATTENTION_FORMS = {
    "fused": lambda q, k, v, heads, scale: MultiHeadAttention.apply(q, k, v, heads, scale),
    "per-head": attention_per_head,
}


class ExportAttnProcessor:
    """diffusers' Attention forward for the configurations SD's UNet and VAE use (self- and
    cross-attention, 3D or 4D input, optional group norm and residual), with the attention core
    in the chosen export form. Anything else is refused rather than exported wrong."""

    def __init__(self, form="fused"):
        self.attention = ATTENTION_FORMS[form]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if attention_mask is not None or attn.spatial_norm is not None or attn.norm_q is not None:
            raise NotImplementedError("attention masks, spatial norm and q/k norms are not exported fused")
        residual = hidden_states
        image_shape = None
        if hidden_states.ndim == 4:
            image_shape = hidden_states.shape
            b, c, h, w = image_shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        out = self.attention(attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context),
                             attn.heads, float(attn.scale))
        out = attn.to_out[1](attn.to_out[0](out))
        if image_shape is not None:
            out = out.transpose(1, 2).reshape(image_shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


# ---------------------------------------------------------------------------------------------
# Export (names and dynamic axes as optimum's stable-diffusion ONNX configs)
# ---------------------------------------------------------------------------------------------


class UNetWrapper(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None):
        return self.unet(sample, timestep, encoder_hidden_states, timestep_cond=timestep_cond, return_dict=False)[0]


class VaeEncoderWrapper(torch.nn.Module):
    """optimum: latent_parameters = encode(sample).latent_dist.parameters (mean ++ logvar, 8 ch)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        return self.vae.encode(sample).latent_dist.parameters


class VaeDecoderWrapper(torch.nn.Module):
    """optimum: sample = decode(latent_sample) (post_quant_conv + decoder, no scaling). Also
    TAESD (AutoencoderTiny), whose decode already returns [-1, 1]."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, return_dict=False)[0]


def export(module, args, path, input_names, output_names, dynamic_axes, external_data=False,
           fp16_min_elements=None):
    """torch.onnx.export (TorchScript exporter, opset 17), then optionally fp16 weights at rest,
    then one external data file "<name>_data" beside the model (as optimum does)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = os.path.join(tmp, "model.onnx")  # > 2 GB exports spill one file per tensor here
        torch.onnx.export(module, args, raw, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
        model = onnx.load(raw)
    if fp16_min_elements is not None:
        weights_fp16_at_rest(model, fp16_min_elements)
    location = os.path.basename(path) + "_data"
    for stale in (path, os.path.join(os.path.dirname(path), location)):
        if os.path.exists(stale):
            os.remove(stale)
    if external_data:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                  size_threshold=1024, convert_attribute=True)
    else:
        onnx.save(model, path)
    onnx.checker.check_model(path)
    return path


def weights_fp16_at_rest(model, min_elements):
    """Stores each large float initializer as fp16 with a Cast to f32 in front of its users."""
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= min_elements:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "_to_f32"))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)


def round_to_fp16(module, min_elements):
    """Makes the torch module compute with exactly the values the fp16-at-rest export stores."""
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() >= min_elements:
                p.copy_(p.half().float())


def locate_weights(model, module, min_ndim):
    """{parameter name: [(initializer, transposed), …]} for every parameter of `module` with at
    least `min_ndim` axes that the ONNX model (a path or a loaded model) stores: found by value
    (the stored fp32 or fp16 bytes, as is or transposed, any shape of the same size), so it needs
    nothing from the exporter's naming. The export names a Linear's weight after its MatMul
    (`onnx::MatMul_1234`) and stores it transposed; a GroupNorm's weight becomes [C, 1, 1]."""
    import hashlib

    model = onnx.load(model) if isinstance(model, str) else model
    stored = {}
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype in (np.float32, np.float16):
            key = (array.dtype.str, array.size, hashlib.sha1(np.ascontiguousarray(array).tobytes()).digest())
            stored.setdefault(key, []).append(init.name)
    found = {}
    for name, param in module.named_parameters():
        if param.ndim < min_ndim:
            continue
        value = param.detach().float().numpy()
        for dtype in (np.float32, np.float16):
            for transposed, array in ((False, value), (True, value.T if value.ndim == 2 else None)):
                if array is None or name in found:
                    continue
                array = np.ascontiguousarray(array.astype(dtype))
                names = stored.get((array.dtype.str, array.size, hashlib.sha1(array.tobytes()).digest()))
                if names:
                    found[name] = [(n, transposed) for n in names]
    return found


WEIGHT_MAP = "weights.json"


def write_weight_map(onnx_path, module, strip_prefix=""):
    """Writes weights.json beside the network: for every weight of `module` with two or more
    axes (what a LoRA can change), the initializer that holds it and whether it is stored
    transposed. Names are the module's own parameter names less `strip_prefix`. Returns the
    names of those not found."""
    found = locate_weights(onnx_path, module, min_ndim=2)
    params = dict(module.named_parameters())
    weights, missing = {}, []
    for name, param in params.items():
        if param.ndim < 2:
            continue
        short = name[len(strip_prefix):] if name.startswith(strip_prefix) else name
        if name in found:
            initializer, transposed = found[name][0]
            weights[short] = {"initializer": initializer, "transposed": transposed, "shape": list(param.shape)}
        else:
            missing.append(short)
    write_json_map(os.path.join(os.path.dirname(onnx_path), WEIGHT_MAP), weights)
    return missing


def write_json_map(path, weights):
    """{"format": 1, "weights": {…}}, one weight per line (diffable, greppable)."""
    with open(path, "w") as f:
        rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(weights.items()))
        f.write(f'{{"format": 1, "weights": {{\n{rows}\n}}}}\n')


CHECKPOINT_MAP = "checkpoint.json"
TEMPLATE_DATA = "model.onnx_data"


def write_template_network(onnx_path, module, network):
    """Turns an exported network into a template's: every initializer that holds a weight of
    `module` becomes external data in `model.onnx_data`, a file that does not exist: sd.wasm
    fills each such range from the single-file checkpoint as it loads, tensor by tensor. All
    other initializers (shapes, constants) stay inside model.onnx. checkpoint.json beside it
    says, per range: the checkpoint key (scripts/checkpoint_keys.py), the rows of that tensor
    when the original fuses several weights (OpenCLIP's q/k/v), whether it is stored transposed,
    and the stored type and shape. Returns the parameter names it placed."""
    import checkpoint_keys

    model = onnx.load(onnx_path)
    found = locate_weights(model, module, min_ndim=0)
    keys = checkpoint_keys.keys(network, module)
    sources = {}
    for name, places in found.items():
        key, rows = keys[name]
        for initializer, transposed in places:
            sources[initializer] = {"key": key, "transposed": transposed, **({"rows": rows} if rows else {})}
    entries, offset = {}, 0
    for init in model.graph.initializer:
        if init.name not in sources:
            continue
        array = numpy_helper.to_array(init)
        length = array.nbytes
        entries[init.name] = dict(sources[init.name], offset=offset, dtype={"float16": "F16", "float32": "F32"}[
            array.dtype.name], shape=list(array.shape))
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        for k, v in (("location", TEMPLATE_DATA), ("offset", str(offset)), ("length", str(length))):
            init.external_data.add(key=k, value=v)
        offset += length
    for stale in (onnx_path, os.path.join(os.path.dirname(onnx_path), TEMPLATE_DATA)):
        os.remove(stale)
    onnx.save(model, onnx_path)
    write_json_map(os.path.join(os.path.dirname(onnx_path), CHECKPOINT_MAP), entries)
    return set(found)


class TextEncoderWrapper(torch.nn.Module):
    """CLIPTextModel's last_hidden_state and pooler_output, then one output per Automatic1111
    "Clip skip" N from 2 to the number of layers: clip_skip_N, the final layer norm of
    hidden_states[-N] (what Automatic1111 encodes with). sd.wasm keeps only the one it needs."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder
        # transformers 5's CLIPTextModel has no text_model wrapper; 4.x has.
        self.final_layer_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm

    def forward(self, input_ids):
        out = self.text_encoder(input_ids, output_hidden_states=True)
        layers = len(out.hidden_states) - 1
        skipped = [self.final_layer_norm(out.hidden_states[-n]) for n in range(2, layers + 1)]
        return (out.last_hidden_state, out.pooler_output, *skipped)


def text_encoder_outputs(text_encoder):
    """The exported text encoder's output names and dynamic axes."""
    layers = text_encoder.config.num_hidden_layers
    names = ["last_hidden_state", "pooler_output"] + [f"clip_skip_{n}" for n in range(2, layers + 1)]
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in names}
    axes["pooler_output"] = {0: "batch_size"}
    axes["input_ids"] = {0: "batch_size", 1: "sequence_length"}
    return names, axes


def export_text_encoder(text_encoder, out, fp16_min, external_data=True, ids=None):
    d = os.path.join(out, "text_encoder")
    ids = torch.zeros(1, 77, dtype=torch.int32) if ids is None else ids
    names, axes = text_encoder_outputs(text_encoder)
    path = export(TextEncoderWrapper(text_encoder), (ids,), os.path.join(d, "model.onnx"), ["input_ids"], names,
                  axes, external_data=external_data, fp16_min_elements=fp16_min)
    write_weight_map(path, text_encoder, strip_prefix="text_model.")
    text_encoder.config.save_pretrained(d)


def export_unet(unet, out, fp16_min, scalar_timestep):
    d = os.path.join(out, "unet")
    c = unet.config
    g = torch.Generator().manual_seed(0)
    timestep = torch.tensor(500.0) if scalar_timestep else torch.tensor([500.0])
    axes = {"sample": {0: "batch_size", 2: "height", 3: "width"},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
            "out_sample": {0: "batch_size", 2: "height", 3: "width"}}
    if not scalar_timestep:
        axes["timestep"] = {0: "steps"}
    inputs = ["sample", "timestep", "encoder_hidden_states"]
    args = (torch.randn(1, c.in_channels, 8, 8, generator=g), timestep,
            torch.randn(1, 77, c.cross_attention_dim, generator=g))
    if c.time_cond_proj_dim is not None:
        # The guidance embedding of an LCM UNet (optimum's name and axes).
        inputs.append("timestep_cond")
        args += (torch.randn(1, c.time_cond_proj_dim, generator=g),)
        axes["timestep_cond"] = {0: "batch_size"}
    path = export(UNetWrapper(unet), args, os.path.join(d, "model.onnx"), inputs, ["out_sample"], axes,
                  external_data=True, fp16_min_elements=fp16_min)
    write_weight_map(path, unet)
    unet.save_config(d)


def export_decoder(vae, d, fp16_min, generator=None):
    """A decoder dir (config + model.onnx): the VAE's, or TAESD's (same interface)."""
    vae.save_config(d)
    export(VaeDecoderWrapper(vae), (torch.randn(1, vae.config.latent_channels, 8, 8, generator=generator),),
           os.path.join(d, "model.onnx"), ["latent_sample"], ["sample"],
           {"latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
            "sample": {0: "batch_size", 2: "height", 3: "width"}},
           external_data=True, fp16_min_elements=fp16_min)


def export_vae(vae, out, fp16_min, encoder=True):
    g = torch.Generator().manual_seed(0)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    export_decoder(vae, os.path.join(out, "vae_decoder"), fp16_min, g)
    if encoder:
        vae.save_config(os.path.join(out, "vae_encoder"))
        export(VaeEncoderWrapper(vae), (torch.rand(1, 3, 8 * scale, 8 * scale, generator=g) * 2 - 1,),
               os.path.join(out, "vae_encoder", "model.onnx"), ["sample"], ["latent_parameters"],
               {"sample": {0: "batch_size", 2: "height", 3: "width"},
                "latent_parameters": {0: "batch_size", 2: "height_latent", 3: "width_latent"}},
               external_data=True, fp16_min_elements=fp16_min)


TAESD_DIR = "vae_decoder_taesd"


def export_taesd(taesd, out, fp16_min):
    export_decoder(taesd, os.path.join(out, TAESD_DIR), fp16_min)


# ---------------------------------------------------------------------------------------------
# Building or loading the torch modules
# ---------------------------------------------------------------------------------------------


def random_family(family, tiny, seed):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text, pad, unet_cfg, scheduler, with_taesd = FAMILIES[family]
    text = dict(text, **TINY_TEXT) if tiny else text
    unet_cfg = dict(unet_cfg, **TINY_UNET) if tiny else dict(unet_cfg)
    unet_cfg["cross_attention_dim"] = text["hidden_size"]
    if tiny and isinstance(unet_cfg.get("attention_head_dim"), tuple):
        unet_cfg["attention_head_dim"] = (4, 8)
    elif tiny:
        unet_cfg["attention_head_dim"] = 4
    vae_cfg = dict(VAE_SD, **TINY_VAE) if tiny else VAE_SD
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5,
                                                bos_token_id=0, eos_token_id=2, pad_token_id=1, **text)).eval()
    unet = UNet2DConditionModel(**unet_cfg).eval()
    vae = AutoencoderKL(**vae_cfg).eval()
    return text_encoder, pad, unet, vae, dict(scheduler), with_taesd


def random_taesd(tiny, seed):
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(**(TINY_TAESD if tiny else {})).eval()


def write_scheduler(out, config):
    os.makedirs(os.path.join(out, "scheduler"), exist_ok=True)
    with open(os.path.join(out, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def write_model_index(out):
    index = {"_class_name": "OnnxStableDiffusionPipeline", "requires_safety_checker": False}
    for sub in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        if os.path.isdir(os.path.join(out, sub)):
            index[sub] = ["diffusers", "OnnxRuntimeModel"]
    index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    with open(os.path.join(out, "scheduler", "scheduler_config.json")) as f:
        index["scheduler"] = ["diffusers", json.load(f)["_class_name"]]
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)


def write_random_tokenizer(out, pad):
    from clip_vocab import write_tokenizer

    write_tokenizer(os.path.join(out, "tokenizer"), pad_token=pad)


def fuse_lora(modules, source, scale):
    """Merges a LoRA (any format diffusers' load_lora_weights reads: a file, a folder or a hub
    id) into the UNet and the text encoder, W += scale · (alpha / r) · B·A, as diffusers'
    fuse_lora does, and removes the adapter layers. Exits, before anything is written, when
    none of its keys match a layer."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.peft_utils import recurse_remove_peft_layers
    from peft.tuners.tuners_utils import BaseTunerLayer

    where = (dict(pretrained_model_name_or_path_or_dict=os.path.dirname(source) or ".",
                  weight_name=os.path.basename(source)) if os.path.isfile(source)
             else dict(pretrained_model_name_or_path_or_dict=source))
    # The metadata holds peft's lora_alpha (scaling alpha / r), as load_lora_weights reads it.
    try:
        state_dict, alphas, metadata = StableDiffusionPipeline.lora_state_dict(**where, return_lora_metadata=True)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: {source} is not a LoRA diffusers can read ({type(e).__name__}: {e}); nothing written")
    try:
        StableDiffusionPipeline.load_lora_into_unet(state_dict, alphas, unet=modules["unet"], metadata=metadata)
        StableDiffusionPipeline.load_lora_into_text_encoder(state_dict, alphas, text_encoder=modules["text_encoder"],
                                                            metadata=metadata)
    except ValueError as e:  # peft: target modules not found in the base model
        sys.exit(f"error: {source}: its keys match no layer of the UNet or the text encoder ({e}); nothing written")
    except RuntimeError as e:  # torch: a LoRA made for other shapes (another model family)
        first = str(e).strip().splitlines()[-1].strip()
        sys.exit(f"error: {source} does not fit this model's layers ({first}); nothing written")
    fused = 0
    for name in ("unet", "text_encoder"):
        for layer in modules[name].modules():
            if isinstance(layer, BaseTunerLayer):
                if scale != 1.0:
                    layer.scale_layer(scale)
                layer.merge()
                fused += 1
        recurse_remove_peft_layers(modules[name])
    if not fused:
        sys.exit(f"error: {source}: none of its {len(state_dict)} keys match a layer of the UNet or the text "
                 f"encoder (e.g. {next(iter(state_dict), 'none')!r}); nothing written")
    print(f"{source}: fused into {fused} layers, scale {scale}")


def lcm_scheduler_config(config):
    """An LCM-LoRA's scheduler: LCMScheduler.from_config of the model's own config, as the
    LCM-LoRA model cards do."""
    import inspect

    from diffusers import LCMScheduler

    accepted = inspect.signature(LCMScheduler.__init__).parameters
    config = json.loads(LCMScheduler.from_config(config).to_json_string())
    return {k: v for k, v in config.items() if k.startswith("_") or k in accepted}


def load_checkpoint(source, config=None):
    """A diffusers pipeline folder or hub id, or a single-file checkpoint (.safetensors or .ckpt,
    as Automatic1111 and Civitai have them) read by diffusers' from_single_file, its configs from
    `config` (a diffusers folder or hub id; without it diffusers recognises the family and
    fetches that family's configs from the hub). The hub needs network, which CI does not have."""
    from diffusers import StableDiffusionPipeline

    if os.path.isfile(source):
        return StableDiffusionPipeline.from_single_file(source, torch_dtype=torch.float32, safety_checker=None,
                                                        requires_safety_checker=False,
                                                        **({"config": config} if config else {}))
    return StableDiffusionPipeline.from_pretrained(source, torch_dtype=torch.float32, safety_checker=None)


def convert(args, tweak=None):
    """Writes the model dir. `tweak(modules)` may change the random-init torch modules before
    export (test fixtures scale a few weights so a random model is not flat)."""
    out = args.out
    fp16_min = None if args.plain else args.fp16_min_elements
    modules = {}
    # What the model dir's tokenizer/ and scheduler/ get, written once nothing can fail.
    tokenizer, scheduler_config = None, None
    taesd_source = "random" if args.random_init == "taesd" else args.taesd
    if args.random_init and args.random_init != "taesd":
        text_encoder, pad, unet, vae, scheduler_config, with_taesd = random_family(args.random_init, args.tiny,
                                                                                   args.seed)
        modules.update(text_encoder=text_encoder, unet=unet, vae=vae)
        tokenizer = lambda: write_random_tokenizer(out, pad)  # noqa: E731
        taesd_source = taesd_source or ("random" if with_taesd else None)
    elif args.source:
        pipe = load_checkpoint(args.source, args.config)
        modules.update(text_encoder=pipe.text_encoder.eval(), unet=pipe.unet.eval(), vae=pipe.vae.eval())
        tokenizer = lambda: pipe.tokenizer.save_pretrained(os.path.join(out, "tokenizer"))  # noqa: E731
        scheduler_config = json.loads(pipe.scheduler.to_json_string())
    if taesd_source == "random":
        modules["taesd"] = random_taesd(args.tiny, args.seed + 1)
    elif taesd_source:
        from diffusers import AutoencoderTiny

        modules["taesd"] = AutoencoderTiny.from_pretrained(taesd_source, torch_dtype=torch.float32).eval()
    if tweak:
        tweak(modules)
    if args.template:
        unique_values(modules)
    if args.lora:
        fuse_lora(modules, args.lora, args.lora_scale)
        scheduler_config = lcm_scheduler_config(scheduler_config)
    os.makedirs(out, exist_ok=True)
    if tokenizer:
        tokenizer()
    if scheduler_config:
        write_scheduler(out, scheduler_config)
    if fp16_min and (args.random_init or taesd_source == "random"):
        for name, module in modules.items():
            if args.random_init or name == "taesd":
                round_to_fp16(module, fp16_min)
    if not args.plain:
        for name in ("unet", "vae"):
            if name in modules:
                modules[name].set_attn_processor(ExportAttnProcessor(args.attention))
    with torch.no_grad():
        if "text_encoder" in modules:
            export_text_encoder(modules["text_encoder"], out, fp16_min)
            export_unet(modules["unet"], out, fp16_min, scalar_timestep=not args.plain)
            export_vae(modules["vae"], out, fp16_min, encoder=not args.no_encoder)
            write_model_index(out)
        if "taesd" in modules:
            export_taesd(modules["taesd"], out, fp16_min)
    if args.template:
        strip_to_template(out, modules)
    if args.save_torch:
        # The same modules in diffusers' layout: the oracle for tests of this converter.
        for name, module in modules.items():
            if hasattr(module, "set_attn_processor") and module.attn_processors:
                from diffusers.models.attention_processor import AttnProcessor2_0

                module.set_attn_processor(AttnProcessor2_0())
            module.save_pretrained(os.path.join(args.save_torch, name))
    for root, _, files in sorted(os.walk(out)):
        for f in sorted(files):
            p = os.path.join(root, f)
            print(f"{os.path.getsize(p):>14,}  {os.path.relpath(p, out)}")


TEMPLATE_NETWORKS = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae", "vae_encoder": "vae"}


def unique_values(modules):
    """Random, distinct values in every weight (norms and biases start as ones and zeros), so
    that each initializer of the export is found by value as exactly one weight."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name in ("text_encoder", "unet", "vae"):
            for p in modules[name].parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def strip_to_template(out, modules):
    """A template: each network's checkpoint.json, then its weights dropped. Every weight of each
    module must be placed in one of its graphs, or a checkpoint's value for it would be lost."""
    placed = {}
    for network, module_name in TEMPLATE_NETWORKS.items():
        path = os.path.join(out, network, "model.onnx")
        if os.path.exists(path):
            placed.setdefault(module_name, set()).update(
                write_template_network(path, modules[module_name], module_name))
    for module_name, names in placed.items():
        lost = [n for n, _ in modules[module_name].named_parameters() if n not in names]
        if lost:
            raise SystemExit(f"{module_name}: weights in no initializer of the export: {lost[:8]}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", help="diffusers folder or hub id, or a single-file checkpoint "
                                             "(.safetensors/.ckpt; omit with --random-init)")
    p.add_argument("--config", help="with a single-file checkpoint: a diffusers folder or hub id whose configs "
                                    "describe it (default: diffusers recognises the family, from the hub)")
    p.add_argument("out", help="model dir to write")
    p.add_argument("--random-init", choices=sorted(FAMILIES) + ["taesd"])
    p.add_argument("--tiny", action="store_true", help="test-sized shapes of the family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--taesd", help="add a TAESD decoder: a diffusers AutoencoderTiny folder/hub id, or 'random'")
    p.add_argument("--plain", action="store_true", help="optimum-style fp32 export (no fp16 weights, no fusion)")
    p.add_argument("--fp16-min-elements", type=int, default=1 << 16,
                   help="initializers with at least this many elements are stored fp16 (default 65536)")
    p.add_argument("--attention", choices=sorted(ATTENTION_FORMS), default="fused",
                   help="fused: one MultiHeadAttention node (tract's flash SDPA); per-head: "
                        "MatMul/Softmax/MatMul one head at a time")
    p.add_argument("--no-encoder", action="store_true", help="skip vae_encoder (txt2img only)")
    p.add_argument("--template", action="store_true",
                   help="write a template for single-file checkpoints: the graphs and each network's "
                        "checkpoint.json (which checkpoint tensor fills which initializer), no weights")
    p.add_argument("--save-torch", help="also save the torch modules here (diffusers layout)")
    p.add_argument("--lora", metavar="SOURCE",
                   help="fuse this LoRA (a diffusers-format file, folder or hub id, e.g. LCM-LoRA) into the UNet "
                        "and text encoder; the scheduler config becomes LCMScheduler's")
    p.add_argument("--lora-scale", type=float, default=1.0, help="the LoRA's weight when fused (default 1)")
    args = p.parse_args(argv)
    if args.source is None and args.random_init is None:
        p.error("give a checkpoint (folder or hub id) or --random-init FAMILY")
    if args.source is not None and args.random_init is not None:
        p.error("give either a checkpoint or --random-init, not both")
    if args.lora and args.random_init == "taesd":
        p.error("--lora needs a UNet: give a checkpoint or a --random-init family")
    return args


def main(argv=None):
    convert(parse_args(argv))


if __name__ == "__main__":
    main()
