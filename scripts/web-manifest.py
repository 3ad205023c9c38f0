#!/usr/bin/env python3
"""Writes MODEL_DIR/sd-manifest.json: the file list the browser page downloads from a model
URL, with each file's size and SHA-256 (the page checks both on download and on every read
from its cache, so a corrupt or partial file is fetched again, never used).

    python3 scripts/web-manifest.py models/sd15     # then serve models/ anywhere, CORS allowed
"""
import hashlib
import json
import os
import sys

# The tiny fixture's diffusers oracle, and the VAE encoder (text-to-image never reads it).
SKIP_DIRS = {"expected", "vae_encoder"}


def manifest(root):
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel == "sd-manifest.json" or name.startswith("."):
                continue
            digest = hashlib.sha256()
            with open(os.path.join(dirpath, name), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            files.append({"path": rel, "size": os.path.getsize(os.path.join(dirpath, name)), "sha256": digest.hexdigest()})
    return {"files": files}


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: web-manifest.py MODEL_DIR")
    out = os.path.join(sys.argv[1], "sd-manifest.json")
    with open(out, "w") as f:
        json.dump(manifest(sys.argv[1]), f, indent=1)
        f.write("\n")
    print(out)
