"""Writes the CLIP BPE tokenizer files (vocab.json, merges.txt, configs) that SD's
`tokenizer/` folder holds, built from the vocabulary open-clip-torch ships
(bpe_simple_vocab_16e6.txt.gz): the same 49408 tokens, in the same order, as
openai/clip-vit-large-patch14. No network needed."""
import gzip
import json
import os

import open_clip


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges():
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_clip_tokenizer(out_dir, pad_token="<|endoftext|>", max_length=77):
    """pad_token: SD 1.x uses "<|endoftext|>", SD 2.x (OpenCLIP) uses "!"."""
    from transformers import CLIPTokenizer

    os.makedirs(out_dir, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(" ".join(m) for m in merges) + "\n")
    tok = CLIPTokenizer(
        os.path.join(out_dir, "vocab.json"),
        os.path.join(out_dir, "merges.txt"),
        pad_token=pad_token,
        model_max_length=max_length,
    )
    tok.save_pretrained(out_dir)
    return tok


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_tokenizer(out_dir, pad_token="<|endoftext|>"):
    """vocab.json + merges.txt + special_tokens_map.json + tokenizer_config.json, as SD 1.5's hub
    tokenizer/ folder (no tokenizer.json); returns the tokenizer loaded back from that folder."""
    write_clip_tokenizer(out_dir, pad_token=pad_token)
    for f in ("tokenizer.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(out_dir, f)):
            os.remove(os.path.join(out_dir, f))

    def added(content):
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    special = {
        "bos_token": added("<|startoftext|>"),
        "eos_token": added("<|endoftext|>"),
        "pad_token": pad_token,
        "unk_token": added("<|endoftext|>"),
    }
    config = {
        "add_prefix_space": False,
        "bos_token": {"__type": "AddedToken", **added("<|startoftext|>")},
        "do_lower_case": True,
        "eos_token": {"__type": "AddedToken", **added("<|endoftext|>")},
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": pad_token,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": {"__type": "AddedToken", **added("<|endoftext|>")},
    }
    _write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(out_dir)


if __name__ == "__main__":
    import sys

    t = write_clip_tokenizer(sys.argv[1])
    print(t("a photo of an astronaut riding a horse").input_ids)
