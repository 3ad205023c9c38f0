"""Reference data for tests/library/tokenizer.rs and tests/library/rng.rs, recorded from the Python stack
diffusers runs on (transformers' CLIPTokenizer, torch's CPU generator).

  python3 scripts/make_tokenizer_cases.py            # tests/data/tokenizer_cases.json
  python3 scripts/make_tokenizer_cases.py --rng      # tests/data/torch_randn.json

Tokenizer cases use the CLIP vocab.json + merges.txt from fixtures/tiny/tokenizer/ when it
exists (so the repo holds one copy), else write them to tests/data/clip_tokenizer/ with
clip_vocab.py. transformers' tokenizer.json for that vocabulary (3.6 MB) is stored as a
skeleton without vocab and merges, which the test fills back in.
Each "layout" is a set of config files (SD 1.x / 2.x, transformers 4 and 5 styles) that the
Rust test pairs with that vocabulary; ids are recorded for both vocab.json + merges.txt and
tokenizer.json, since transformers treats the two differently for special tokens.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from clip_vocab import write_clip_tokenizer  # noqa: E402
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "tests", "data")
FIXTURE_TOKENIZER = os.path.join(ROOT, "fixtures", "tiny", "tokenizer")
OWN_TOKENIZER = os.path.join(DATA, "clip_tokenizer")

LONG = (
    "a highly detailed matte painting of a futuristic city skyline at sunset, with flying cars, neon signs, "
    "towering skyscrapers made of glass and steel, lush vertical gardens, crowds of people walking on elevated "
    "walkways, dramatic volumetric lighting, god rays through the clouds, reflections on wet streets, cinematic "
    "composition, wide angle lens, trending on artstation, unreal engine 5, octane render, 8k resolution"
)

PROMPTS = [
    # plain and SD-style
    "a photo of an astronaut riding a horse on mars",
    "A Photo Of An Astronaut Riding A Horse On Mars",
    "(masterpiece:1.2), best quality, (ultra-detailed:1.1), [worst quality:0.5], ((sharp focus)), {blue eyes}",
    "portrait of a woman, by greg rutkowski, trending on artstation, 8k, highly detailed, octane render",
    "(((cat))) [[[dog]]] <lora:style:0.8> embedding:foo BREAK bar AND baz:1.3",
    # whitespace
    "",
    " ",
    "   leading and trailing   ",
    "tabs\tand\nnewlines\r\nand  multiple   spaces",
    "only\n\n\n\nnewlines\n",
    "\u00a0non-breaking\u00a0space\u2003em space\u3000ideographic space\u202fnarrow",
    "\u0085next line\u2028line separator\u2029paragraph\u000bvertical tab\u000cform feed",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom\u2060wj",
    "control\x00chars\x01here\x7f bell\x07 esc\x1b sep\x1c\x1d\x1e\x1f",
    # contractions
    "it's don't they're we've i'm you'll he'd",
    "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
    "It'S dOn'T 'Re 'vE 'M 'lL 'D 's 't",
    "the cat's toy, the cats' toys, 'quoted' '' ''s o'clock rock'n'roll",
    "it\u2019s a curly apostrophe \u2019s and \u2018quotes\u2019 \u201cdouble\u201d",
    # punctuation and symbols
    "!!!???...,,,;;;:::---___***",
    "hello!!! what?! ...wow... (ok) [fine] {yes} <no>",
    "hello! wow!! amazing! ! !! a!b",
    "\\ backslash / slash | pipe ~ tilde ` backtick ^ caret @ at # hash % percent",
    "https://example.com/path/to/page?q=1&x=y#frag user@example.com",
    "snake_case camelCase PascalCase kebab-case dot.case SCREAMING_CASE",
    "well\u2014actually \u2013 no - yes \u2026 \u00abguillemets\u00bb \u201equote\u201c",
    "\u2211\u222b\u221a\u221e \u2264\u2265 \u00b1\u00d7\u00f7 \u03c0r\u00b2 \u2192\u21d2",
    "$100 \u20ac50 \u00a330 \u00a51000 \u20b9 \u20bf 5\u00a2",
    # numbers
    "1234567890 3.14159 1,000,000 2024-01-01 10:30pm #1 1st 2nd 3rd 4th",
    "\u0663\u0664\u0665 \u00bd \u00b2 \u216b \u2460 \u0969\u096a \u4e09\u5341 \uff11\uff12\uff13",
    # HTML
    "&amp; &lt;tag&gt; &quot;quoted&quot; &#39;apos&#39; &nbsp; &#x1F600;",
    "<b>bold</b> <a href=\"https://x.y\">link</a> <br/> <!-- comment -->",
    # accents, NFC vs NFD
    "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e na\u00efve fa\u00e7ade jalape\u00f1o",
    "Cafe\u0301 cre\u0300me bru\u0302le\u0301e nai\u0308ve fac\u0327ade jalapen\u0303o",
    "\u00c5ngstr\u00f6m \u212bngstr\u00f6m A\u030angstro\u0308m \u00c6\u00d8\u00c5 stra\u00dfe STRASSE",
    "\u0130stanbul I\u0307 \u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3 \u01c4 \u01c5 \u01c6 \u1e9e",
    "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u, ph\u1edf b\u00f2",
    "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307l\u036e\u0312\u036bg\u0301\u0317\u0355o\u0336",
    "\ufb01sh \ufb02ower \ufb00 \uff21\uff22\uff23 \uff71\uff72\uff73 \u2460\u2461",
    "\U0001d4ef\U0001d4ea\U0001d4f7\U0001d4ec\U0001d502 \U0001d565\U0001d556\U0001d569\U0001d565",
    # scripts
    "\u4e00\u53ea\u732b\u5728\u6708\u7403\u4e0a \u6771\u4eac\u30bf\u30ef\u30fc \ud55c\uad6d\uc5b4 \ud14c\uc2a4\ud2b8",
    "\u3072\u3089\u304c\u306a \u30ab\u30bf\u30ab\u30ca \uff76\uff80\uff76\uff85 \u6f22\u5b57",
    "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165 decomposed hangul",
    "\u0642\u0637\u0629 \u0639\u0644\u0649 \u0627\u0644\u0642\u0645\u0631 \u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd \u0928\u092e\u0938\u094d\u0924\u0947 \u0939\u093f\u0928\u094d\u0926\u0940",
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\u041a\u043e\u0448\u043a\u0430 \u0432 \u043a\u043e\u0441\u043c\u043e\u0441\u0435 \u0401\u0416 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8 \u0570\u0561\u0575\u0565\u0580\u0565\u0576 \u12a0\u121b\u122d\u129b \u13e3\u13b3\u13a9",
    # emoji
    "a cat \U0001f431 with sunglasses \U0001f60e",
    "family \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 and \U0001f3f3\ufe0f\u200d\U0001f308 flag",
    "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5\U0001f1eb\U0001f1f7 flags \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "\U0001f44d\U0001f3fd \U0001f44b\U0001f3ff \U0001f9d1\U0001f3fb\u200d\U0001f4bb thumbs",
    "\U0001f3a8\U0001f58c\ufe0f\U0001f5bc\ufe0f\u2764\ufe0f\u2b50 1\ufe0f\u20e3 \u00a9\ufe0f",
    # special token strings
    "<|startoftext|>a cat<|endoftext|>",
    "<|ENDOFTEXT|> <|EndOfText|> <|startoftext|>",
    "foo<|endoftext|>bar<|endoftext|><|endoftext|>",
    "a<|startoftext|>b <| endoftext |> <|endoftext",
    "<|STARTOFTEXT|> upper start <|StartOfText|>",
    # words
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
    "HeLLo WoRLD mIxEd CaSe",
    # length boundaries (75 tokens fit between bos and eos)
    "a " * 74,
    "a " * 75,
    "a " * 76,
    "a " * 100,
    LONG,
    LONG + " " + LONG,
    ("pneumonoultramicroscopicsilicovolcanoconiosis " * 10).strip(),
    "a " * 70 + "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family emoji cut in the middle",
    "a " * 73 + "hello! wow! cut",
    "word, " * 40 + "<|endoftext|> after the cut",
]



def fuzz_prompts(n=40, seed=1234):
    """Random mixes of scripts, marks, whitespace and symbols (fixed seed): catches regex and
    Unicode-table differences between the Python (Oniguruma) and Rust (fancy-regex) stacks."""
    import random

    rnd = random.Random(seed)
    pools = [
        (0x20, 0x7E), (0x09, 0x0D), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF),
        (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x206F),
        (0x2070, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFB00, 0xFFEF),
        (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF), (0xE0000, 0xE007F), (0x10000, 0x1047F),
    ]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rnd.randint(3, 40)):
            lo, hi = rnd.choice(pools)
            chars.append(chr(rnd.randint(lo, hi)))
            if rnd.random() < 0.2:
                chars.append(" ")
        out.append("".join(chars))
    return out


PROMPTS += fuzz_prompts()

# Config files of real SD tokenizer folders (the vocabulary is the same everywhere).
_STR_CFG = {
    "backend": "tokenizers",
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "model_max_length": 77,
    "pad_token": "<|endoftext|>",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}


def _legacy_token(content, type_field):
    d = {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **d} if type_field else d


def _legacy_cfg():
    # runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1 tokenizer_config.json
    return {
        "add_prefix_space": False,
        "bos_token": _legacy_token("<|startoftext|>", True),
        "do_lower_case": True,
        "eos_token": _legacy_token("<|endoftext|>", True),
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": "<|endoftext|>",
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _legacy_token("<|endoftext|>", True),
    }


def _legacy_map(pad):
    return {
        "bos_token": _legacy_token("<|startoftext|>", False),
        "eos_token": _legacy_token("<|endoftext|>", False),
        "pad_token": pad,
        "unk_token": _legacy_token("<|endoftext|>", False),
    }


def _decoder_entry(content, normalized):
    return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False,
            "single_word": False, "special": True}


LAYOUTS = {
    # transformers 5 save_pretrained (what clip_vocab.py writes): plain strings.
    "v5_pad_eot": {"tokenizer_config.json": _STR_CFG},
    "v5_pad_bang": {"tokenizer_config.json": {**_STR_CFG, "pad_token": "!"}},
    # Hub SD 1.5 / SD 2.1 folders (transformers 4.2x): AddedToken dicts + special_tokens_map.json,
    # which overrides the config's pad token.
    "legacy_sd15": {"tokenizer_config.json": _legacy_cfg(), "special_tokens_map.json": _legacy_map("<|endoftext|>")},
    "legacy_sd21": {"tokenizer_config.json": _legacy_cfg(), "special_tokens_map.json": _legacy_map("!")},
    # transformers 4.3x+ save_pretrained: added_tokens_decoder in the config (map then ignored).
    "v4_added_tokens_decoder_pad_bang": {
        "tokenizer_config.json": {
            **_legacy_cfg(),
            "pad_token": "!",
            "added_tokens_decoder": {
                "0": _decoder_entry("!", False),
                "49406": _decoder_entry("<|startoftext|>", True),
                "49407": _decoder_entry("<|endoftext|>", False),
            },
        },
        "special_tokens_map.json": _legacy_map("<|endoftext|>"),
    },
    # No config at all: CLIPTokenizer's defaults (pad <|endoftext|>, model_max_length unset -> 77 in Rust).
    "no_config": {},
}


def vocab_source():
    """The folder whose vocab.json + merges.txt the Rust test reads."""
    if os.path.isfile(os.path.join(FIXTURE_TOKENIZER, "vocab.json")):
        return FIXTURE_TOKENIZER
    write_clip_tokenizer(OWN_TOKENIZER)
    for f in os.listdir(OWN_TOKENIZER):
        if f not in ("vocab.json", "merges.txt"):
            os.remove(os.path.join(OWN_TOKENIZER, f))
    return OWN_TOKENIZER


def real_tokenizer_json(tmp, src):
    """transformers' own tokenizer.json for this vocabulary. The repo keeps only its skeleton
    (vocab and merges emptied); the Rust test fills them back in from vocab.json/merges.txt."""
    d = os.path.join(tmp, "saved")
    write_clip_tokenizer(d)
    path = os.path.join(d, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    with open(os.path.join(src, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(src, "merges.txt"), encoding="utf-8") as f:
        merges = [line.split(" ") for line in f.read().splitlines() if not line.startswith("#version")]
    assert tj["model"]["vocab"] == vocab, "tokenizer.json vocab differs from vocab.json"
    assert [list(m) for m in tj["model"]["merges"]] == merges, "tokenizer.json merges differ from merges.txt"
    skeleton = dict(tj)
    skeleton["model"] = {**tj["model"], "vocab": {}, "merges": []}
    return path, skeleton


def record(tok, prompt, max_length):
    """What diffusers' encode_prompt computes, including its truncation warning text."""
    enc = tok(prompt, padding="max_length", max_length=max_length, truncation=True)
    ids = enc.input_ids
    untruncated = tok(prompt, padding="longest").input_ids
    removed = None
    if len(untruncated) >= len(ids) and untruncated != ids:
        removed = tok.batch_decode([untruncated[max_length - 1 : -1]])[0]
    # Store only the unpadded part; the test checks the rest is pad_id.
    n = sum(enc.attention_mask)
    return {"ids": ids[:n], "removed_text": removed}


def _diff(base, cases):
    return {str(i): c for i, (b, c) in enumerate(zip(base, cases)) if b != c}


def make_tokenizer_cases(out_path):
    from transformers import CLIPTokenizer

    src = vocab_source()
    rel_src = os.path.relpath(src, ROOT)
    layouts = []
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_json, skeleton = real_tokenizer_json(tmp, src)
        for name, files in LAYOUTS.items():
            results = {}
            for path, copied in (
                ("vocab_merges", [os.path.join(src, "vocab.json"), os.path.join(src, "merges.txt")]),
                ("tokenizer_json", [tokenizer_json]),
            ):
                d = os.path.join(tmp, name + "_" + path)
                os.makedirs(d)
                for f in copied:
                    shutil.copy(f, d)
                for fname, content in files.items():
                    with open(os.path.join(d, fname), "w", encoding="utf-8") as f:
                        json.dump(content, f, indent=2)
                tok = CLIPTokenizer.from_pretrained(d)
                max_length = tok.model_max_length if tok.model_max_length < 10**6 else 77
                results[path] = {
                    "pad_id": tok.pad_token_id,
                    "max_length": max_length,
                    "cases": [record(tok, p, max_length) for p in PROMPTS],
                }
            mine = results["vocab_merges"]
            other = results["tokenizer_json"]
            assert mine["pad_id"] == other["pad_id"] and mine["max_length"] == other["max_length"]
            if base is None:
                base = mine["cases"]
            layouts.append({
                "name": name,
                "files": {k: json.dumps(v, indent=2) for k, v in files.items()},
                "pad_id": mine["pad_id"],
                "max_length": mine["max_length"],
                # by prompt index, only where this layout differs from "expected_base"
                "expected": _diff(base, mine["cases"]),
                # ... and where tokenizer.json (its added_tokens) differs from vocab.json + merges.txt
                "expected_tokenizer_json": _diff(mine["cases"], other["cases"]),
            })
            print(f"{name}: pad_id {mine['pad_id']}, {len(layouts[-1]['expected'])} cases differ from the base, "
                  f"{len(layouts[-1]['expected_tokenizer_json'])} for tokenizer.json", file=sys.stderr)
    import transformers

    out = {
        "generated_by": "scripts/make_tokenizer_cases.py",
        "transformers": transformers.__version__,
        "vocab_dir": rel_src,
        # transformers' tokenizer.json minus model.vocab/model.merges (refilled by the test)
        "tokenizer_json_skeleton": json.dumps(skeleton, ensure_ascii=False, indent=2),
        "prompts": PROMPTS,
        # ids up to the first pad (the rest is pad_id up to max_length) and diffusers' removed text,
        # for the first layout; the others list only what differs
        "expected_base": base,
        "layouts": layouts,
    }
    write_json(out_path, out)


def write_json(path, obj):
    """One case per line: readable diffs, small file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    # collapse lists of numbers onto one line
    import re

    text = re.sub(r"\[\s+([-0-9eE.,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def make_torch_randn(out_path):
    """torch.randn on the CPU generator, as diffusers draws latents and per-step noise."""
    import torch

    def draw_all(seed, shapes):
        g = torch.Generator("cpu").manual_seed(seed)
        draws = []
        for shape in shapes:
            t = torch.randn(shape, generator=g, dtype=torch.float32).flatten()
            vals = [float(x) for x in t.tolist()]
            d = {"shape": list(shape)}
            if len(vals) <= 256:
                d["values"] = vals
            else:
                # big tensors: ends plus a strided sample and sums (f64) to keep the file small
                stride = 997
                t64 = t.double()
                d.update({
                    "head": vals[:64],
                    "tail": vals[-64:],
                    "stride": stride,
                    "strided": vals[::stride],
                    "sum": float(t64.sum()),
                    "sum_sq": float((t64 * t64).sum()),
                    "sum_abs": float(t64.abs().sum()),
                })
            draws.append(d)
        return draws

    cases = []
    for seed in [0, 42, 2**32 + 5, 123456789]:
        for shape in [[1, 4, 8, 8], [1, 4, 3, 5], [7], [1, 4, 64, 64]]:
            cases.append({"name": f"seed{seed}_{'x'.join(map(str, shape))}", "seed": seed,
                          "draws": draw_all(seed, [shape])})
    sequences = {
        # latents, then Euler-ancestral-style noise from the same generator
        "sequence_latents_noise": (42, [[1, 4, 8, 8], [1, 4, 8, 8], [3]]),
        # the scalar path (< 16 values) caches its second Box-Muller value across calls,
        # and the vectorized path leaves that cache alone
        "sequence_small_cache": (7, [[7], [3], [16], [1], [15], [17], [2]]),
        "sequence_ragged": (123, [[1, 4, 3, 5], [33], [16], [31]]),
        "empty_then_small": (5, [[0], [1, 0, 3], [5]]),
    }
    for name, (seed, shapes) in sequences.items():
        cases.append({"name": name, "seed": seed, "draws": draw_all(seed, shapes)})
    out = {"generated_by": "scripts/make_tokenizer_cases.py --rng", "torch": torch.__version__, "cases": cases}
    write_json(out_path, out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rng", action="store_true", help="write tests/data/torch_randn.json instead")
    args = ap.parse_args()
    if args.rng:
        make_torch_randn(os.path.join(DATA, "torch_randn.json"))
    else:
        make_tokenizer_cases(os.path.join(DATA, "tokenizer_cases.json"))
