#!/usr/bin/env python3
"""Writes MODEL_DIR/sd-manifest.json: the file list the browser page downloads from a model
URL, with each file's size and the SHA-256 of each CHUNK_BYTES piece of it (the page checks
them on download and on every read from its cache, so a corrupt or partial file is fetched
again, never used; piece by piece, so it never holds a whole multi-GB weights file to hash it).

    python3 scripts/web-manifest.py models/sd15     # then serve models/ anywhere, CORS allowed
    python3 scripts/web-manifest.py --chunk-bytes 65536 DIR   # smaller pieces (the browser test)
"""
import hashlib
import json
import os
import sys

# The tiny fixture's diffusers oracle. (The VAE encoder is listed: the page fetches it only for
# image-to-image and inpainting.)
SKIP_DIRS = {"expected"}
CHUNK_BYTES = 64 << 20


def manifest(root, chunk_bytes=CHUNK_BYTES):
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel == "sd-manifest.json" or name.startswith("."):
                continue
            chunks = []
            with open(os.path.join(dirpath, name), "rb") as f:
                while True:
                    piece = f.read(chunk_bytes)
                    if not piece and chunks:
                        break
                    chunks.append(hashlib.sha256(piece).hexdigest())
                    if len(piece) < chunk_bytes:
                        break
            files.append({"path": rel, "size": os.path.getsize(os.path.join(dirpath, name)), "sha256_chunks": chunks})
    return {"chunk_bytes": chunk_bytes, "files": files}


if __name__ == "__main__":
    args = sys.argv[1:]
    chunk_bytes = CHUNK_BYTES
    if len(args) == 3 and args[0] == "--chunk-bytes":
        chunk_bytes, args = int(args[1]), args[2:]
    if len(args) != 1 or not os.path.isdir(args[0]) or chunk_bytes <= 0:
        sys.exit("usage: web-manifest.py [--chunk-bytes N] MODEL_DIR")
    out = os.path.join(args[0], "sd-manifest.json")
    with open(out, "w") as f:
        json.dump(manifest(args[0], chunk_bytes), f, indent=1)
        f.write("\n")
    print(out)
