#!/usr/bin/env python3
"""Builds fixtures/tiny-img2img/: diffusers' StableDiffusionImg2ImgPipeline and
StableDiffusionInpaintPipeline outputs on the tiny model of fixtures/tiny (the oracle for
tests/module/img2img.rs), plus the two extra networks those tests need.

Regenerate (from the repo root, after scripts/make_fixtures.py; CPU, no network, ~1 minute):

    python3 scripts/make_img2img_fixtures.py

The torch modules are rebuilt with scripts/make_fixtures.py's seeds and scales, and checked
against the committed fixtures/tiny oracles (one UNet call, one VAE encoder call) before
anything is written, so the ONNX files in fixtures/tiny and these pictures come from the same
weights.

What it writes (fixtures/tiny-img2img/):
  init.png              16x16 RGB: fixtures/tiny/expected/pndm.png (a picture with structure)
  mask.png              16x16 grayscale: white (repaint) rectangle rows 4..13, columns 6..15
  mask-inverted.png     the same inverted (for the "wrong mask moves the picture" check)
  mask-32.png           32x32 grayscale disc: resized to 16x16 by the pipeline (Lanczos, as PIL)
  unet-inpaint/         a 9-channel UNet (in_channels 9, SD inpainting layout), own seed, same scales
  vae_encoder_latent_sample/  a VAE encoder whose output is a 4-channel latent (the
                        distribution's mode) named latent_sample, instead of optimum's 8-channel
                        latent_parameters
  README.md             what is here
  cases.json            [{name, pipeline, unet, encoder, args, seeds, pngs}]
  <case>[-<seed>].png   diffusers' pictures (output_type="pil")
  sensitivity.json      how far a wrong strength / an inverted mask moves the picture
  lanczos.json          PIL's Image.resize(LANCZOS) of a random 13x11 RGB picture to several
                        sizes (what diffusers' VaeImageProcessor does to a picture or mask of
                        another size), for src/io/image.rs's resize
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
from convert import export  # noqa: E402
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

TINY = mf.OUT
OUT = os.path.join(mf.REPO, "fixtures", "tiny-img2img")
INPAINT_UNET_SEED = 3


class VaeEncoderLatentWrapper(torch.nn.Module):
    """An encoder that returns a latent, not the distribution: the mode (= mean)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        return self.vae.encode(sample).latent_dist.mode()


def check_same_weights(unet, vae):
    exp = mf.EXP
    with torch.no_grad():
        x = torch.from_numpy(np.load(os.path.join(exp, "unet_sample.npy")))
        t = torch.from_numpy(np.load(os.path.join(exp, "unet_timestep.npy")))
        h = torch.from_numpy(np.load(os.path.join(exp, "unet_encoder_hidden_states.npy")))
        d = (unet(x, t, h).sample - torch.from_numpy(np.load(os.path.join(exp, "unet_out_sample.npy")))).abs().max()
        assert d < 1e-4, f"UNet differs from fixtures/tiny ({d}): run scripts/make_fixtures.py first"
        x = torch.from_numpy(np.load(os.path.join(exp, "vae_encoder_input.npy")))
        p = vae.encode(x).latent_dist.parameters
        d = (p - torch.from_numpy(np.load(os.path.join(exp, "vae_encoder_latent_parameters.npy")))).abs().max()
        assert d < 1e-5, f"VAE differs from fixtures/tiny ({d})"


def write_inputs():
    shutil.copy(os.path.join(mf.EXP, "pndm.png"), os.path.join(OUT, "init.png"))
    m = np.zeros((16, 16), np.uint8)
    m[4:14, 6:16] = 255
    Image.fromarray(m, "L").save(os.path.join(OUT, "mask.png"))
    Image.fromarray(255 - m, "L").save(os.path.join(OUT, "mask-inverted.png"))
    yy, xx = np.mgrid[0:32, 0:32]
    disc = (((yy - 12.5) ** 2 + (xx - 18.5) ** 2) < 10.5 ** 2).astype(np.uint8) * 255
    Image.fromarray(disc, "L").save(os.path.join(OUT, "mask-32.png"))


def write_lanczos_cases():
    rng = np.random.RandomState(7)
    src = rng.randint(0, 256, (11, 13, 3)).astype(np.uint8)
    out = {"width": 13, "height": 11, "pixels": src.flatten().tolist(), "resized": []}
    for w, h in ((16, 16), (7, 5), (13, 24), (26, 11), (5, 9)):
        r = np.asarray(Image.fromarray(src, "RGB").resize((w, h), Image.LANCZOS))
        out["resized"].append({"width": w, "height": h, "pixels": r.flatten().tolist()})
    with open(os.path.join(OUT, "lanczos.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")


def case(name, pipeline, scheduler, strength, unet="regular", encoder="parameters", mask=None, seeds=(42,),
         eta=None, steps=12):
    return {
        "name": name,
        "pipeline": pipeline,
        "unet": unet,
        "encoder": encoder,
        "seeds": list(seeds),
        "args": {
            "prompt": mf.PROMPT,
            "negative_prompt": mf.NEGATIVE,
            "steps": steps,
            "guidance_scale": mf.GUIDANCE,
            "scheduler": scheduler,
            "strength": strength,
            "eta": eta,
            "init_image": "init.png",
            "mask": mask,
        },
    }


CASES = [
    case("img2img-pndm-0.75", "img2img", "pndm", 0.75),
    case("img2img-euler-a-0.5", "img2img", "euler-a", 0.5),
    case("img2img-ddim-eta-0.5-0.6", "img2img", "ddim", 0.6, eta=0.5),
    case("img2img-dpm++2m-1.0", "img2img", "dpm++2m", 1.0),
    case("img2img-latent-encoder-euler-0.6", "img2img", "euler", 0.6, encoder="latent_sample"),
    case("img2img-batch-euler-a-0.5", "img2img", "euler-a", 0.5, seeds=(42, 43)),
    case("inpaint-pndm-0.75", "inpaint", "pndm", 0.75, mask="mask.png"),
    case("inpaint-euler-1.0", "inpaint", "euler", 1.0, mask="mask.png"),
    case("inpaint-mask32-lms-0.8", "inpaint", "lms", 0.8, mask="mask-32.png"),
    case("inpaint9-pndm-1.0", "inpaint", "pndm", 1.0, unet="inpaint", mask="mask.png"),
    case("inpaint9-euler-a-0.6", "inpaint", "euler-a", 0.6, unet="inpaint", mask="mask.png"),
]

# Variants of a case whose picture must move far beyond the 2/255 tolerance.
SENSITIVITY = [
    ("img2img-pndm-0.75", "strength-0.6", {"strength": 0.6}),
    ("inpaint-pndm-0.75", "strength-0.6", {"strength": 0.6}),
    ("inpaint-pndm-0.75", "mask-inverted", {"mask": "mask-inverted.png"}),
    ("inpaint9-pndm-1.0", "mask-inverted", {"mask": "mask-inverted.png"}),
]
THRESHOLD = 20

README = """# `tiny-img2img/`: image-to-image and inpainting oracles

Made by `scripts/make_img2img_fixtures.py` (after `make_fixtures.py`; ~2 min) from the same torch
modules as `tiny/` (it rebuilds them with the same seeds and scales and checks one UNet call and one
VAE encoder call against `tiny/expected` before writing anything). `cases.json` lists each case:
`pipeline` (`img2img` = `StableDiffusionImg2ImgPipeline`, `inpaint` = `StableDiffusionInpaintPipeline`),
`unet` (`regular`, or `inpaint` = `unet-inpaint/`, a 9-channel UNet with its own seed and the same
scales), `encoder` (`parameters` = `tiny/vae_encoder`, 8 channels; `latent_sample` =
`vae_encoder_latent_sample/`, the distribution's mode as a 4-channel latent, given to diffusers as
4-channel init latents), `seeds` (one `torch.Generator` per picture), `args` and the PNGs. Inputs:
`init.png` (= `tiny/expected/pndm.png`), `mask.png` (white rectangle = repaint), `mask-inverted.png`,
`mask-32.png` (a 32×32 disc, resized by the pipeline). `sensitivity.json`: a wrong strength
(0.6 for 0.75) or an inverted mask moves diffusers' picture by far more than 20/255 (asserted, and
the variants' PNGs kept), as does a mirrored init picture.
"""


def run(pipes, base_config, c, args, seed_list, latent_encoder_vae):
    pipe = pipes[(c["pipeline"], c["unet"])]
    pipe.scheduler = mf.make_scheduler(args["scheduler"], base_config)
    image = Image.open(os.path.join(OUT, args["init_image"])).convert("RGB")
    kw = {}
    if args["eta"] is not None:
        kw["eta"] = args["eta"]
    if c["encoder"] == "latent_sample":
        # A 4-channel encoder output is the latent itself: diffusers takes such an `image` as
        # init latents as they are (no sampling, no scaling), so scale the mode here.
        x = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
        with torch.no_grad():
            image = latent_encoder_vae(x) * pipe.vae.config.scaling_factor
    generators = [torch.Generator("cpu").manual_seed(s) for s in seed_list]
    common = dict(
        prompt=args["prompt"],
        negative_prompt=args["negative_prompt"],
        num_inference_steps=args["steps"],
        guidance_scale=args["guidance_scale"],
        strength=args["strength"],
        generator=generators if len(generators) > 1 else generators[0],
        num_images_per_prompt=len(seed_list),
        output_type="pil",
        **kw,
    )
    with torch.no_grad():
        if c["pipeline"] == "img2img":
            return pipe(image=image, **common).images
        mask = Image.open(os.path.join(OUT, args["mask"]))
        return pipe(image=image, mask_image=mask, height=16, width=16, **common).images


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    text_encoder, unet, vae = mf.build_models(mf.SENSITIVITY_SCALES)
    check_same_weights(unet, vae)
    torch.manual_seed(INPAINT_UNET_SEED)
    unet9 = UNet2DConditionModel(**dict(mf.UNET_CONFIG, in_channels=9)).eval()
    mf.scale_unet(unet9, mf.SENSITIVITY_SCALES)
    unet9.requires_grad_(False)

    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    write_inputs()
    write_lanczos_cases()
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(README)
    g = torch.Generator().manual_seed(0)
    mf.export_unet(unet9, os.path.join(OUT, "unet-inpaint"), g)
    enc_dir = os.path.join(OUT, "vae_encoder_latent_sample")
    export(VaeEncoderLatentWrapper(vae), (torch.rand(1, 3, 16, 16, generator=g) * 2 - 1,),
           os.path.join(enc_dir, "model.onnx"), ["sample"], ["latent_sample"],
           {"sample": {0: "batch_size", 2: "height", 3: "width"},
            "latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"}})
    vae.save_config(enc_dir)

    # The exports against torch (onnxruntime).
    import onnxruntime as ort
    x9 = torch.randn(2, 9, 8, 8, generator=g)
    t = torch.tensor([500.0])
    h = torch.randn(2, 77, mf.HIDDEN, generator=g)
    s = ort.InferenceSession(os.path.join(OUT, "unet-inpaint", "model.onnx"), providers=["CPUExecutionProvider"])
    got = s.run(None, {"sample": x9.numpy(), "timestep": t.numpy(), "encoder_hidden_states": h.numpy()})[0]
    with torch.no_grad():
        want = unet9(x9, t, h).sample.numpy()
    onnx_check = {"unet-inpaint": float(np.abs(got - want).max() / np.abs(want).max())}
    xi = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    s = ort.InferenceSession(os.path.join(enc_dir, "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = vae.encode(xi).latent_dist.mode().numpy()
    onnx_check["vae_encoder_latent_sample"] = float(np.abs(s.run(None, {"sample": xi.numpy()})[0] - want).max())
    for k, v in onnx_check.items():
        assert v < 1e-4, (k, v)

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(TINY, "tokenizer"))
    base_config = mf.PNDMScheduler.from_pretrained(os.path.join(TINY, "scheduler")).config
    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=mf.make_scheduler("pndm", base_config),
                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipes = {
        ("img2img", "regular"): StableDiffusionImg2ImgPipeline(unet=unet, **parts),
        ("inpaint", "regular"): StableDiffusionInpaintPipeline(unet=unet, **parts),
        ("inpaint", "inpaint"): StableDiffusionInpaintPipeline(unet=unet9, **parts),
    }
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
    latent_encoder_vae = VaeEncoderLatentWrapper(vae)

    manifest = []
    for c in CASES:
        images = run(pipes, base_config, c, c["args"], c["seeds"], latent_encoder_vae)
        names = []
        for seed, img in zip(c["seeds"], images):
            png = f"{c['name']}.png" if len(c["seeds"]) == 1 else f"{c['name']}-{seed}.png"
            img.save(os.path.join(OUT, png))
            names.append(png)
        manifest.append(dict(c, pngs=names))
        print(f"case {c['name']:36s} {images[0].size}")
    # The batch case: each picture is the picture of its seed alone (one generator per image).
    for c in manifest:
        if len(c["seeds"]) > 1:
            for seed, png in zip(c["seeds"], c["pngs"]):
                alone = np.asarray(run(pipes, base_config, c, c["args"], [seed], latent_encoder_vae)[0]).astype(int)
                d = np.abs(alone - np.asarray(Image.open(os.path.join(OUT, png))).astype(int)).max()
                assert d <= 1, (c["name"], seed, d)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")

    sens = {"threshold": THRESHOLD, "variants": []}
    for base_name, variant, over in SENSITIVITY:
        c = next(x for x in manifest if x["name"] == base_name)
        args = dict(c["args"], **over)
        img = run(pipes, base_config, c, args, c["seeds"], latent_encoder_vae)[0]
        png = f"sensitivity-{base_name}-{variant}.png"
        img.save(os.path.join(OUT, png))
        base = np.asarray(Image.open(os.path.join(OUT, c["pngs"][0]))).astype(int)
        moved = int(np.abs(np.asarray(img).astype(int) - base).max())
        print(f"sensitivity {base_name} {variant}: max |diff| {moved}/255")
        assert moved > THRESHOLD, (base_name, variant, moved)
        sens["variants"].append({"case": base_name, "variant": variant, "override": over, "png": png, "moved": moved})
    # A tiny random model could ignore the init image: a different init image must move the picture.
    c = next(x for x in manifest if x["name"] == "img2img-pndm-0.75")
    flipped = os.path.join(OUT, "init-flipped.png")
    Image.open(os.path.join(OUT, "init.png")).transpose(Image.FLIP_LEFT_RIGHT).save(flipped)
    img = run(pipes, base_config, c, dict(c["args"], init_image="init-flipped.png"), c["seeds"], latent_encoder_vae)[0]
    base = np.asarray(Image.open(os.path.join(OUT, c["pngs"][0]))).astype(int)
    sens["init_flipped_moves"] = int(np.abs(np.asarray(img).astype(int) - base).max())
    assert sens["init_flipped_moves"] > THRESHOLD, sens
    os.remove(flipped)
    sens["onnx_vs_torch"] = onnx_check
    with open(os.path.join(OUT, "sensitivity.json"), "w") as f:
        json.dump(sens, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
