"""Where each diffusers/transformers weight of an SD 1.x/2.x pipeline lives in an original
(CompVis/Stability, Automatic1111, Civitai) single-file checkpoint: the inverse of diffusers'
`single_file_utils` conversion, written as rules and checked against it (`check_against_diffusers`:
a checkpoint laid out by these rules converts back, through diffusers' own code, to exactly the
modules' state dicts).

scripts/convert.py uses it to write a template's `checkpoint.json` (which initializer of each
network is filled from which checkpoint tensor); scripts/make_checkpoint_fixtures.py to write
test checkpoints. sd.wasm itself knows none of these rules: it reads the map.
"""
import re

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."  # SD 1.x (OpenAI CLIP ViT-L/14)
OPEN_CLIP_PREFIX = "cond_stage_model.model."  # SD 2.x (OpenCLIP ViT-H/14)

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _resnet(rest):
    part, tail = rest.split(".", 1)
    return f"{RESNET[part]}.{tail}"


def unet_key(name, config):
    """The LDM key of UNet2DConditionModel weight `name` (no row split in the UNet)."""
    per_block = config["layers_per_block"]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    module, param = name.rsplit(".", 1)
    if module in fixed:
        return f"{UNET_PREFIX}{fixed[module]}.{param}"
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", name)
    if m:
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"{UNET_PREFIX}input_blocks.{(block + 1) * (per_block + 1)}.0.op.{rest.split('.', 1)[1]}"
        index = 1 + block * (per_block + 1) + j
        return f"{UNET_PREFIX}input_blocks.{index}." + ("0." + _resnet(rest) if kind == "resnets" else "1." + rest)
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", name)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        return f"{UNET_PREFIX}middle_block." + (f"{2 * j}.{_resnet(rest)}" if kind == "resnets" else f"1.{rest}")
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", name)
    if m:
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            has_attention = "CrossAttn" in config["up_block_types"][block]
            index = block * (per_block + 1) + per_block
            return f"{UNET_PREFIX}output_blocks.{index}.{2 if has_attention else 1}.{rest}"
        index = block * (per_block + 1) + j
        return f"{UNET_PREFIX}output_blocks.{index}." + ("0." + _resnet(rest) if kind == "resnets" else "1." + rest)
    raise KeyError(f"no LDM key for UNet weight {name}")


VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_resnet(rest):
    return rest.replace("conv_shortcut", "nin_shortcut")


def _vae_attention(rest):
    module, param = rest.rsplit(".", 1)
    return f"{VAE_ATTENTION[module]}.{param}"


def vae_key(name, config):
    """The LDM key of AutoencoderKL weight `name`; attention projections are 1×1 convs there."""
    blocks = len(config["block_out_channels"])
    if name.startswith(("quant_conv.", "post_quant_conv.")):
        return VAE_PREFIX + name
    side, rest = name.split(".", 1)
    rest = rest.replace("conv_norm_out", "norm_out")
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", rest)
    if m:
        kind, j, tail = m[1], int(m[2]), m[3]
        inner = f"mid.block_{j + 1}.{_vae_resnet(tail)}" if kind == "resnets" else f"mid.attn_1.{_vae_attention(tail)}"
        return f"{VAE_PREFIX}{side}.{inner}"
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest)
    if m:
        direction, block, kind, j, tail = m[1], int(m[2]), m[3], int(m[4]), m[5]
        level = block if direction == "down" else blocks - 1 - block
        if kind == "resnets":
            inner = f"block.{j}.{_vae_resnet(tail)}"
        else:
            inner = f"{kind[:-1].replace('sampler', 'sample')}.{tail}"
        return f"{VAE_PREFIX}{side}.{direction}.{level}.{inner}"
    return f"{VAE_PREFIX}{side}.{rest}"


def clip_key(name):
    """SD 1.x: the transformers CLIPTextModel's own names under the text model."""
    return CLIP_PREFIX + name


OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def open_clip_key(name, config):
    """SD 2.x: (key, rows) with rows the slice of OpenCLIP's fused q/k/v projection, else None."""
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    if name in fixed:
        return OPEN_CLIP_PREFIX + fixed[name], None
    m = re.match(r"encoder\.layers\.(\d+)\.(.*)\.(weight|bias)$", name)
    if not m:
        raise KeyError(f"no OpenCLIP key for text encoder weight {name}")
    layer, module, param = int(m[1]), m[2], m[3]
    prefix = f"{OPEN_CLIP_PREFIX}transformer.resblocks.{layer}."
    qkv = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
    if module in qkv:
        width = config.hidden_size
        start = qkv[module] * width
        return f"{prefix}attn.in_proj_{param}", [start, start + width]
    return f"{prefix}{OPEN_CLIP_LAYER[module]}.{param}", None


def text_model_name(name):
    """A CLIPTextModel parameter's name below `text_model` (transformers 4 has the wrapper, 5 not)."""
    return name[len("text_model."):] if name.startswith("text_model.") else name


def is_open_clip(text_encoder):
    """SD 2.x's text encoder (OpenCLIP ViT-H, GELU) rather than SD 1.x's (OpenAI CLIP, quick GELU)."""
    return text_encoder.config.hidden_act == "gelu"


def keys(network, module):
    """{parameter name: (checkpoint key, rows or None)} for every parameter of `module`."""
    out = {}
    for name, _ in module.named_parameters():
        if network == "unet":
            out[name] = (unet_key(name, module.config), None)
        elif network == "vae":
            out[name] = (vae_key(name, module.config), None)
        elif is_open_clip(module):
            out[name] = open_clip_key(text_model_name(name), module.config)
        else:
            out[name] = (clip_key(text_model_name(name)), None)
    return out


def ldm_state_dict(text_encoder, unet, vae):
    """The modules as one original-layout state dict (what a single-file checkpoint holds), with
    the shapes the original code has: VAE attention projections as 1×1 convs, OpenCLIP's q/k/v
    fused. The OpenCLIP parts transformers does not have (its last layer when the encoder was cut
    to 23, its text projection, logit scale) are absent; diffusers needs none of them."""
    state = {}
    for network, module in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae)):
        params = dict(module.named_parameters())
        for name, (key, rows) in keys(network, module).items():
            value = params[name].detach()
            if network == "vae" and ".attentions." in name and value.ndim == 2:
                value = value[:, :, None, None]
            if rows is None:
                state[key] = value.clone()
            else:
                state.setdefault(key, {})[rows[0]] = value
    for key, value in state.items():
        if isinstance(value, dict):
            state[key] = __import__("torch").cat([value[start] for start in sorted(value)], 0)
    return state


def check_against_diffusers(state, text_encoder, unet, vae):
    """diffusers' own single-file conversion of `state` gives back every weight of the modules."""
    import torch
    from diffusers.loaders import single_file_utils as s

    converted = {
        "unet": s.convert_ldm_unet_checkpoint(dict(state), dict(unet.config)),
        "vae": s.convert_ldm_vae_checkpoint(dict(state), dict(vae.config)),
    }
    if is_open_clip(text_encoder):
        converted["text_encoder"] = s.convert_open_clip_checkpoint(text_encoder, dict(state))
    else:
        converted["text_encoder"] = s.convert_ldm_clip_checkpoint(dict(state))
    for network, module in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae)):
        got = {text_model_name(k): v for k, v in converted[network].items()}
        for name, param in module.named_parameters():
            value = got.get(text_model_name(name))
            assert value is not None, f"{network}: diffusers finds no {name} in the checkpoint"
            assert torch.equal(value.reshape(param.shape).float(), param.detach().float()), f"{network}: {name} differs"
    return True


def main():
    """Writes a random-init family (scripts/convert.py's, same seed: the same weights as
    `convert.py --random-init FAMILY`) as a single-file checkpoint, for benchmarks and checks at
    real shapes; fp16 unless --fp32."""
    import argparse
    import os
    import sys

    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import convert

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("family", choices=["sd15", "sd21"])
    p.add_argument("out", help=".safetensors file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp32", action="store_true")
    args = p.parse_args()
    text_encoder, _, unet, vae, _, _ = convert.random_family(args.family, False, args.seed)
    for module in (text_encoder, unet, vae):
        convert.round_to_fp16(module, 1 << 16)  # as convert.py stores them
    state = ldm_state_dict(text_encoder, unet, vae)
    check_against_diffusers(state, text_encoder, unet, vae)
    dtype = torch.float32 if args.fp32 else torch.float16
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, args.out)
    print(f"{args.out}: {len(state)} tensors, {os.path.getsize(args.out):,} bytes")


if __name__ == "__main__":
    main()
