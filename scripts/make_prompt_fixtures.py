#!/usr/bin/env python3
"""The oracle for Automatic1111-style prompts: fixtures/tiny-prompts/ and
tests/data/prompt_parse_cases.json.

    python3 scripts/make_prompt_fixtures.py      # from the repo root; CPU, no network, ~20 s

An independent Python implementation of what Automatic1111 (stable-diffusion-webui, the
"Original" emphasis, default settings) does with a prompt, written from reading its
modules/prompt_parser.py (parse_prompt_attention), modules/sd_hijack_clip.py (tokenize_line,
process_tokens, encode_with_transformers), modules/sd_emphasis.py and the cond/uncond padding of
modules/sd_samplers_cfg_denoiser.py (pad_cond), run with the real transformers CLIPTokenizer and
CLIPTextModel:

  1. The text encoder: fixtures/tiny's CLIPTextModel, rebuilt as scripts/make_fixtures.py builds
     it (checked against its committed embeddings), with its final layer norm given trained-like
     weights: a fresh LayerNorm is the identity, so every output vector has mean 0 and
     Automatic1111's mean restoration would divide rounding noise by rounding noise. Exported
     as scripts/convert.py exports text encoders (with the clip_skip_N outputs) to
     fixtures/tiny-prompts/text_encoder/, checked against torch with onnxruntime. The tests
     run fixtures/tiny with this text encoder in place of its own (fixtures/tiny itself stays
     an export without clip_skip_N: the older model dir).
  2. The parser's output for a table of prompts (tests/data/prompt_parse_cases.json) and for
     1000 random ones, with the chunks of 100 of them (tests/data/prompt_random_cases.jsonl).
  3. For each case of CASES: the chunks (ids, weights) and the text embeddings of the prompt and
     the negative prompt (.npy, fixtures/tiny-prompts/expected/), as Automatic1111 computes them.
  4. Power: how far the embeddings move without mean restoration, without weights, with the
     chunk split at 75 tokens instead of after the last comma, with clip skip 1 instead of 2
     (recorded in cases.json; the script fails unless each is over 10x the tests' tolerance).
  5. A picture: diffusers' StableDiffusionPipeline (fixtures/tiny's UNet and VAE, PNDM, its main
     case's settings) given the oracle's embeddings of a prompt longer than 77 tokens
     (prompt_embeds=...), as PNG; and how far diffusers' own handling of the same prompts
     (cut at 77 tokens, brackets as text) moves it.
"""
import json
import math
import os
import random
import re
import shutil
import sys

import numpy as np
import onnxruntime as ort
import torch
from transformers import CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
from convert import export_text_encoder  # noqa: E402

REPO = mf.REPO
MODEL = os.path.join(REPO, "fixtures", "tiny-prompts")
OUT = os.path.join(MODEL, "expected")
PARSE_CASES = os.path.join(REPO, "tests", "data", "prompt_parse_cases.json")
RANDOM_CASES = os.path.join(REPO, "tests", "data", "prompt_random_cases.jsonl")
TOLERANCE = 1e-4  # the Rust tests' relative tolerance

# ---------------------------------------------------------------------------------------------
# Automatic1111's algorithm, re-implemented
# ---------------------------------------------------------------------------------------------

# One lexical item of the emphasis syntax, tried in this order (as its re_attention).
TOKEN = re.compile(
    r"\\[()\[\]\\]"  # an escaped bracket or backslash: the character itself
    r"|\\"  # a lone backslash: nothing
    r"|[(\[]"  # opening brackets
    r"|:(?P<weight>[+-]?[.\d]+)\)"  # ":1.3)" closes a round bracket with that weight
    r"|[)\]]"  # closing brackets
    r"|[^\\()\[\]:]+"  # text
    r"|:"  # a colon that is not a weight
)
BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse(prompt):
    """[(text, weight)], BREAK as ("BREAK", -1)."""
    out, round_open, square_open = [], [], []

    def scale(start, factor):
        for item in out[start:]:
            item[1] *= factor

    for m in TOKEN.finditer(prompt):
        s, w = m.group(0), m.group("weight")
        if s[0] == "\\":
            out.append([s[1:], 1.0])
        elif s == "(":
            round_open.append(len(out))
        elif s == "[":
            square_open.append(len(out))
        elif w is not None and round_open:
            scale(round_open.pop(), float(w))
        elif s == ")" and round_open:
            scale(round_open.pop(), 1.1)
        elif s == "]" and square_open:
            scale(square_open.pop(), 1 / 1.1)
        else:
            for i, piece in enumerate(BREAK.split(s)):
                if i:
                    out.append(["BREAK", -1])
                out.append([piece, 1.0])
    for start in round_open:
        scale(start, 1.1)
    for start in square_open:
        scale(start, 1 / 1.1)
    if not out:
        out = [["", 1.0]]
    merged = [out[0]]
    for item in out[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return merged


def chunks(tokenizer, prompt, backtrack=20):
    """tokenize_line: [(ids[77], weights[77])]. backtrack=0 turns the comma rule off (a power check)."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    comma = tokenizer.get_vocab().get(",</w>")
    done, toks, wts, last_comma = [], [], [], -1

    def close():
        nonlocal toks, wts, last_comma
        ids = [bos] + toks + [eos] * (75 - len(toks)) + [eos]
        if pad != eos:  # SD 2.x: everything after the first end token becomes the pad token
            first = ids.index(eos)
            ids = ids[: first + 1] + [pad] * (len(ids) - first - 1)
        done.append((ids, [1.0] + wts + [1.0] * (76 - len(wts))))
        toks, wts, last_comma = [], [], -1

    parsed = parse(prompt)
    pieces = tokenizer([t for t, _ in parsed], truncation=False, add_special_tokens=False)["input_ids"]
    for piece, (text, weight) in zip(pieces, parsed):
        if text == "BREAK" and weight == -1:
            close()
            continue
        for t in piece:
            if t == comma:
                last_comma = len(toks)
            elif backtrack and len(toks) == 75 and last_comma != -1 and len(toks) - last_comma <= backtrack:
                keep = last_comma + 1
                moved = (toks[keep:], wts[keep:])
                toks, wts = toks[:keep], wts[:keep]
                close()
                toks, wts = list(moved[0]), list(moved[1])
            if len(toks) == 75:
                close()
            toks.append(t)
            wts.append(weight)
    if toks or not done:
        close()
    return done


def hidden(text_encoder, ids, clip_skip):
    """encode_with_transformers: the last layer, or final_layer_norm(hidden_states[-clip_skip])."""
    out = text_encoder(torch.tensor([ids]), output_hidden_states=True)
    if clip_skip > 1:
        return text_encoder.final_layer_norm(out.hidden_states[-clip_skip])
    return out.last_hidden_state


def encode(text_encoder, tokenizer, chunk_list, clip_skip=1, restore_mean=True, weighted=True):
    """process_tokens per chunk ("Original" emphasis), then the chunks along the sequence axis."""
    zs = []
    with torch.no_grad():
        for ids, weights in chunk_list:
            z = hidden(text_encoder, ids, clip_skip)
            if weighted:
                before = z.mean()
                z = z * torch.tensor(weights, dtype=torch.float32).reshape(1, -1, 1)
                if restore_mean:
                    z = z * (before / z.mean())
            zs.append(z)
    return torch.cat(zs, dim=1)


def pair(tokenizer, prompt, negative, backtrack=20):
    """Both prompts' chunks, the shorter padded with empty chunks (pad_cond with the empty prompt)."""
    cond, uncond = chunks(tokenizer, prompt, backtrack), chunks(tokenizer, negative, backtrack)
    empty = chunks(tokenizer, "")[0]
    n = max(len(cond), len(uncond))
    return cond + [empty] * (n - len(cond)), uncond + [empty] * (n - len(uncond))


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------

PARSE_PROMPTS = [
    "normal text",
    "an (important) word",
    "(unbalanced",
    "\\(literal\\]",
    "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "",
    "((word))",
    "[word]",
    "[[word]]",
    "(word:1.3)",
    "(a:0.5) b",
    "(a:-1) (b:+2) (c:.5) (d:1.)",
    "a BREAK b",
    "BREAK",
    "a BREAK BREAK b",
    "aBREAK b BREAKs BREAK_ x,BREAK,y",
    "(a BREAK b)",
    "stray) and] brackets",
    "a: b :c",
    "x:1.5) y",
    "a \\ b \\\\ c \\x",
    "[a (b] c)",
    "(a [b:1.5) c",
    "((a:1.2) b:0.8)",
    "[(a:2)]",
    "\\(a:1.5\\) (b\\):2)",
    "tabs\tand\nnewlines BREAK\n\tafter",
    "unicode (café:1.2) 日本 [🚀]",
    "[a:b:0.5] [c|d]",
]

# Random prompts from these pieces (brackets, weights, escapes, BREAK, commas, non-ASCII,
# numbers that are not weights): the parser's output for each, and the chunks of some.
RANDOM_PIECES = ["(", ")", "[", "]", ":", "\\", " ", ",", ".", "1", "0.5", ":1.3)", ":0)", ":-2)", "+", "-",
                 "BREAK", " BREAK ", "cat", "a dog", "é", "日本", "\t", "\n", "_", "x", "|", "{", ":1.2.3)", ", ",
                 "lighthouse at dusk", "\\(", "\\)", "\\\\"]


def random_prompts(count, seed=7):
    rng = random.Random(seed)
    for _ in range(count):
        yield "".join(rng.choice(RANDOM_PIECES) for _ in range(rng.choice([1, 3, 8, 20, 60, 200])))


LONG = mf.LONG_PROMPT  # about 100 tokens, commas throughout
CASES = [
    # name, prompt, negative prompt, clip skip
    ("plain", mf.PROMPT, mf.NEGATIVE, 1),
    ("emphasis", "a (lighthouse:1.3) at ((dusk)), [oil painting]", "(blurry:1.4), [[noise]]", 1),
    ("nested-escaped-unbalanced", "((a \\(tall\\) lighthouse) at [dusk, (oil:0.5) painting", "blurry)", 1),
    ("break", "a lighthouse BREAK at (dusk:1.2), oil painting", "", 1),
    ("empty", "", "", 1),
    ("long", LONG, mf.NEGATIVE, 1),
    ("long-weighted", "(masterpiece:1.2), " + LONG + ", [[sketch]]", "(worst quality:1.4), " + LONG, 1),
    ("long-no-commas", " ".join(f"word{i}" for i in range(90)), "", 1),
    ("clip-skip-2", "a (lighthouse:1.3) at dusk, oil painting", mf.NEGATIVE, 2),
    ("long-clip-skip-2", LONG, "", 2),
]


def rel_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(mf.OUT, "tokenizer"))

    # 1. The fixture's text encoder, rebuilt and proven the same; a trained-like final layer
    # norm; exported with clip_skip_N.
    text_encoder, unet, vae = mf.build_models(mf.SENSITIVITY_SCALES)
    with torch.no_grad():
        for p, name in ((mf.PROMPT, "prompt"), ("", "empty")):
            ids = tokenizer(p, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            committed = np.load(os.path.join(mf.EXP, f"text_embeddings_{name}.npy"))
            d = float(np.abs(text_encoder(ids).last_hidden_state.numpy() - committed).max())
            assert d < 1e-5, f"the rebuilt text encoder is not fixtures/tiny's ({name}: {d})"
        norm, g = text_encoder.final_layer_norm, torch.Generator().manual_seed(14)
        norm.weight.copy_(1 + 0.2 * torch.randn(norm.weight.shape, generator=g))
        norm.bias.copy_(0.5 + 0.5 * torch.randn(norm.bias.shape, generator=g))
    for generated in ("text_encoder", "expected"):
        shutil.rmtree(os.path.join(MODEL, generated), ignore_errors=True)
    ids = torch.randint(0, 49408, (2, 77), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    export_text_encoder(text_encoder, MODEL, None, external_data=False, ids=ids)
    session = ort.InferenceSession(os.path.join(MODEL, "text_encoder", "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["last_hidden_state", "pooler_output", "clip_skip_2"], names
    onnx_worst = 0.0
    for p in (mf.PROMPT, LONG):
        ids = tokenizer(p, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        outs = session.run(None, {"input_ids": ids.numpy().astype(np.int32)})
        with torch.no_grad():
            refs = [hidden(text_encoder, ids[0].tolist(), 1), None, hidden(text_encoder, ids[0].tolist(), 2)]
        for out, ref in zip(outs, refs):
            if ref is not None:
                onnx_worst = max(onnx_worst, float(np.abs(out - ref.numpy()).max()))
    assert onnx_worst < 1e-5, onnx_worst
    print(f"text encoder exported with clip_skip_2; onnxruntime vs torch max abs diff {onnx_worst:.2e}")

    # 2. The parser's table.
    def parsed_or_error(p):
        try:
            return {"prompt": p, "parsed": parse(p)}
        except ValueError:  # a "(text:1.2.3)" weight: Automatic1111 raises
            return {"prompt": p, "error": True}

    mf.write_json(PARSE_CASES, {
        "source": "scripts/make_prompt_fixtures.py: Automatic1111's parse_prompt_attention, re-implemented",
        "cases": [{"prompt": p, "parsed": parse(p)} for p in PARSE_PROMPTS],
    })
    randoms = [parsed_or_error(p) for p in random_prompts(1000)]
    for r in [r for r in randoms if "parsed" in r][:100]:
        r["chunks"] = [{"ids": ids, "weights": ws} for ids, ws in chunks(tokenizer, r["prompt"])]
    with open(RANDOM_CASES, "w", encoding="utf-8") as f:  # one case a line
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in randoms)

    # 3, 4. Embeddings and their power.
    os.makedirs(OUT, exist_ok=True)
    manifest = []
    for name, prompt, negative, clip_skip in CASES:
        cond, uncond = pair(tokenizer, prompt, negative)
        z_cond = encode(text_encoder, tokenizer, cond, clip_skip)
        z_uncond = encode(text_encoder, tokenizer, uncond, clip_skip)
        np.save(os.path.join(OUT, f"{name}_cond.npy"), z_cond.numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"{name}_uncond.npy"), z_uncond.numpy().astype(np.float32))
        power = {}
        if any(w != 1.0 for _, ws in cond for w in ws):
            power["no_mean_restoration"] = rel_diff(encode(text_encoder, tokenizer, cond, clip_skip, restore_mean=False), z_cond)
            power["no_weights"] = rel_diff(encode(text_encoder, tokenizer, cond, clip_skip, weighted=False), z_cond)
        cut_at_75, _ = pair(tokenizer, prompt, negative, backtrack=0)
        if cut_at_75 != cond:
            power["chunks_cut_at_75"] = rel_diff(encode(text_encoder, tokenizer, cut_at_75, clip_skip), z_cond)
        if clip_skip > 1:
            power["clip_skip_1"] = rel_diff(encode(text_encoder, tokenizer, cond, 1), z_cond)
        for what, moved in power.items():
            assert moved > 10 * TOLERANCE, (name, what, moved)
        manifest.append({
            "name": name, "prompt": prompt, "negative_prompt": negative, "clip_skip": clip_skip,
            "cond_chunks": [{"ids": ids, "weights": ws} for ids, ws in cond],
            "uncond_chunks": [{"ids": ids, "weights": ws} for ids, ws in uncond],
            "shape": list(z_cond.shape), "power": power,
        })
        print(f"{name}: {len(cond)} chunk(s), power {json.dumps({k: round(v, 3) for k, v in power.items()})}")

    # 5. A long prompt's picture: diffusers given the oracle's embeddings.
    long_case = next(c for c in manifest if c["name"] == "long-weighted")
    args = mf.case_args("pndm", prompt=long_case["prompt"], negative_prompt=long_case["negative_prompt"])
    pipe = mf.make_pipeline(text_encoder, tokenizer, unet, vae, mf.make_scheduler("pndm", mf.SCHEDULER_CONFIG))
    with torch.no_grad():
        image = pipe(
            prompt_embeds=torch.from_numpy(np.load(os.path.join(OUT, "long-weighted_cond.npy"))),
            negative_prompt_embeds=torch.from_numpy(np.load(os.path.join(OUT, "long-weighted_uncond.npy"))),
            num_inference_steps=args["steps"], guidance_scale=args["guidance_scale"], width=args["width"],
            height=args["height"], generator=torch.Generator("cpu").manual_seed(args["seed"]),
        ).images[0]
    image.save(os.path.join(OUT, "long-weighted-pndm.png"))
    # Power: diffusers' own reading of the same prompts (cut at 77 tokens, brackets as text).
    truncated = mf.image_u8(pipe, mf.SCHEDULER_CONFIG, args)
    moved = int(np.abs(truncated.astype(np.int16) - np.asarray(image).astype(np.int16)).max())
    assert moved > 20, moved
    print(f"long-weighted picture: diffusers' own prompt handling moves it {moved}/255")
    picture = {"case": "long-weighted", "png": "long-weighted-pndm.png", "args": args,
               "power": {"diffusers_prompt_handling_max_pixel_diff": moved}}
    mf.write_json(os.path.join(OUT, "cases.json"), {
        "tolerance": TOLERANCE, "onnx_vs_torch": onnx_worst, "cases": manifest, "picture": picture,
    })
    print(f"wrote {OUT} and {PARSE_CASES}")


if __name__ == "__main__":
    main()
