#!/usr/bin/env python3
"""Replaces a wasm module's `name` custom section with a minimal one (module name only).

Bacalhau's tracing wrapper rejects modules without a `name` section but never reads the
function names, which are ~1.6 MB of sd.wasm; Bacalhau also refuses local modules over 10 MB.
Usage: wasm_names.py IN.wasm OUT.wasm [MODULE_NAME]"""
import sys


def leb128(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_leb(data, i):
    result = shift = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


def custom_section(name, payload):
    body = leb128(len(name)) + name + payload
    return b"\x00" + leb128(len(body)) + body


def minimal_names(data, module_name):
    if data[:8] != b"\x00asm\x01\x00\x00\x00":
        raise SystemExit("not a wasm module")
    out = bytearray(data[:8])
    i = 8
    while i < len(data):
        start = i
        section_id = data[i]
        size, body = read_leb(data, i + 1)
        end = body + size
        if section_id == 0:
            name_len, j = read_leb(data, body)
            if data[j : j + name_len] == b"name":
                i = end
                continue
        out += data[start:end]
        i = end
    module = module_name.encode()
    subsection = leb128(len(module)) + module
    out += custom_section(b"name", b"\x00" + leb128(len(subsection)) + subsection)
    return bytes(out)


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else "sd"
    data = open(src, "rb").read()
    result = minimal_names(data, name)
    open(dst, "wb").write(result)
    print(f"{dst}: {len(result)} bytes ({len(data) - len(result)} bytes of function names dropped)")
