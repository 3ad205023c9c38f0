;; Loads for tools/wasm-ship's rewrite of marked functions (wazero_addressing): constant
;; address adds folded into load offsets, v128.load32_splat as f32.load + f32x4.splat. _start
;; exits with a checksum of what $kernel_wasm_ship_unroll computes, so the rewritten module must
;; exit with the same code as this one (computed independently: 21).
;; Binary: wat2wasm --enable-all wazero-addressing.wat -o wazero-addressing.wasm
(module $addressing
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory 1)
  ;; Memory 0..64: f32 values 1, 2, ..., 16. For i in 0..n: acc += load(p + 16) * splat(p[1])
  ;; + splat(p[3]) - load(p + 12 - 4); p advances 4 bytes per step (wrapping at 32).
  (func $kernel_wasm_ship_unroll (param $n i32) (result f32)
    (local $i i32) (local $p i32) (local $acc v128)
    loop $l
      local.get $acc
      local.get $p
      i32.const 16
      i32.add
      v128.load
      local.get $p
      i32.const 4
      i32.add
      v128.load32_splat
      f32x4.mul
      f32x4.add
      local.get $p
      v128.load32_splat offset=12
      f32x4.add
      local.get $p
      i32.const 12
      i32.add
      i32.const -4
      i32.add
      v128.load
      f32x4.sub
      local.set $acc
      local.get $p
      i32.const 4
      i32.add
      i32.const 31
      i32.and
      local.set $p
      local.get $i
      i32.const 1
      i32.add
      local.tee $i
      local.get $n
      i32.lt_u
      br_if $l
    end
    local.get $acc
    f32x4.extract_lane 0
    local.get $acc
    f32x4.extract_lane 3
    f32.add)
  (func (export "_start")
    (local $i i32)
    loop $fill
      local.get $i
      i32.const 4
      i32.mul
      local.get $i
      i32.const 1
      i32.add
      f32.convert_i32_u
      f32.store
      local.get $i
      i32.const 1
      i32.add
      local.tee $i
      i32.const 16
      i32.lt_u
      br_if $fill
    end
    i32.const 10
    call $kernel_wasm_ship_unroll
    i32.trunc_f32_u
    i32.const 251
    i32.rem_u
    call $proc_exit)
  (export "memory" (memory 0)))
