#!/usr/bin/env python3
"""Writes tests/data/wazero-passes.wasm (no wat2wasm here; the module in text form is below).

A loop of the shape tools/wasm-ship runs as whole passes (tools/wasm-ship/src/passes.rs): two
pointers walked by their adds after their loads, a base never set, a count down to zero. The
kernel hashes what it loads in step order (acc = acc·31 + ...), so a load at a wrong offset, a
step lost, repeated or out of order changes the result. _start fills memory, calls the kernel
for n = 165, 31, 160 and 289 (with passes of 128 and 32: every mix of the two lengths and the
remainder) and exits with a checksum mod 113 (under wasmtime's limit of 126), computed here independently (`expected()`).

    (func $kernel_wasm_ship_unroll (param $a i32) (param $b i32) (param $c i32) (param $n i32)
                                   (result i32) (local $acc v128)
      loop $l
        ;; acc = acc·31 + b[16..32) + splat(a[4]) + b[0..16)·splat(a[0]) + splat(c[8])
        local.get $acc  i32.const 31 i32x4.splat  i32x4.mul
        local.get $b  v128.load offset=16  i32x4.add
        local.get $a  i32.load offset=4  i32x4.splat  i32x4.add
        local.get $b  v128.load  local.get $a  i32.load  i32x4.splat  i32x4.mul  i32x4.add
        local.get $c  i32.load offset=8  i32x4.splat  i32x4.add
        local.set $acc
        local.get $a  i32.const 8  i32.add  local.set $a
        local.get $b  i32.const 32  i32.add  local.set $b
        local.get $n  i32.const -1  i32.add  local.tee $n  br_if $l
      end
      lane0 + 3·lane1 + 5·lane2 + 7·lane3)
    _start: word i of memory = i · 0x9E3779B1 for i < 4096; h = 0; for n in NS:
      h = h·33 + kernel(0, 4096, 15000, n); proc_exit(h mod 113)
"""
import os

NS = [165, 31, 160, 289]
A, B, C = 0, 4096, 15000
M = 0xFFFFFFFF


def uleb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sleb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        done = (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


def i32(v):
    return b"\x41" + sleb(v)


def get(i):
    return b"\x20" + uleb(i)


def sset(i):
    return b"\x21" + uleb(i)


def simd(op):
    return b"\xfd" + uleb(op)


def mem(opcode, align, offset):
    return opcode + uleb(align) + uleb(offset)


I32_LOAD, V128_LOAD, I32_STORE = b"\x28", simd(0x00), b"\x36"
SPLAT, ADD4, MUL4 = simd(0x11), simd(0xAE), simd(0xB5)
ADD, MUL, REM_U, LT_U = b"\x6a", b"\x6c", b"\x70", b"\x49"


def lane(k):
    return simd(0x1B) + bytes([k])


def kernel_body():
    code = b"\x03\x40"  # loop
    code += get(4) + i32(31) + SPLAT + MUL4
    code += get(1) + mem(V128_LOAD, 4, 16) + ADD4
    code += get(0) + mem(I32_LOAD, 2, 4) + SPLAT + ADD4
    code += get(1) + mem(V128_LOAD, 4, 0) + get(0) + mem(I32_LOAD, 2, 0) + SPLAT + MUL4 + ADD4
    code += get(2) + mem(I32_LOAD, 2, 8) + SPLAT + ADD4
    code += sset(4)
    code += get(0) + i32(8) + ADD + sset(0)
    code += get(1) + i32(32) + ADD + sset(1)
    code += get(3) + i32(-1) + ADD + b"\x22" + uleb(3) + b"\x0d\x00"
    code += b"\x0b"  # end loop
    code += get(4) + lane(0)
    for k, f in [(1, 3), (2, 5), (3, 7)]:
        code += get(4) + lane(k) + i32(f) + MUL + ADD
    code += b"\x0b"
    return uleb(1) + uleb(1) + b"\x7b" + code  # one v128 local


def start_body():
    code = i32(0) + sset(0)
    code += b"\x03\x40" + get(0) + i32(4) + MUL + get(0) + i32(0x9E3779B1 - (1 << 32)) + MUL + mem(I32_STORE, 2, 0)
    code += get(0) + i32(1) + ADD + b"\x22\x00" + i32(4096) + LT_U + b"\x0d\x00\x0b"
    code += i32(0) + sset(1)
    for n in NS:
        code += get(1) + i32(33) + MUL + i32(A) + i32(B) + i32(C) + i32(n) + b"\x10\x01" + ADD + sset(1)
    code += get(1) + i32(113) + REM_U + b"\x10\x00\x0b"
    return uleb(1) + uleb(2) + b"\x7f" + code  # two i32 locals


def section(sid, body):
    return bytes([sid]) + uleb(len(body)) + body


def vec(items):
    return uleb(len(items)) + b"".join(items)


def name(s):
    return uleb(len(s)) + s.encode()


def module():
    types = vec([b"\x60" + vec([b"\x7f"]) + vec([]), b"\x60" + vec([b"\x7f"] * 4) + vec([b"\x7f"]), b"\x60" + vec([]) + vec([])])
    imports = vec([name("wasi_snapshot_preview1") + name("proc_exit") + b"\x00" + uleb(0)])
    funcs = vec([uleb(1), uleb(2)])
    memory = vec([b"\x00" + uleb(1)])
    exports = vec([name("_start") + b"\x00" + uleb(2), name("memory") + b"\x02" + uleb(0)])
    code = vec([uleb(len(b)) + b for b in (kernel_body(), start_body())])
    names = vec([uleb(1) + name("kernel_wasm_ship_unroll"), uleb(2) + name("_start")])
    module_name = name("passes")
    name_section = name("name") + b"\x00" + uleb(len(module_name)) + module_name + b"\x01" + uleb(len(names)) + names
    return (b"\x00asm\x01\x00\x00\x00" + section(1, types) + section(2, imports) + section(3, funcs) + section(5, memory)
            + section(7, exports) + section(10, code) + section(0, name_section))


def expected():
    words = [(i * 0x9E3779B1) & M for i in range(4096)]
    word = lambda addr: words[addr // 4]
    h = 0
    for n in NS:
        acc = [0, 0, 0, 0]
        a, b = A, B
        for _ in range(n):
            acc = [(x * 31 + word(b + 16 + 4 * k) + word(a + 4) + word(b + 4 * k) * word(a) + word(C + 8)) & M
                   for k, x in enumerate(acc)]
            a, b = a + 8, b + 32
        h = (h * 33 + acc[0] + 3 * acc[1] + 5 * acc[2] + 7 * acc[3]) & M
    return h % 113


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wazero-passes.wasm")
    with open(out, "wb") as f:
        f.write(module())
    print(f"{out}: exits with {expected()}")
