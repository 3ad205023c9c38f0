;; wazero v1.12.0 (Bacalhau v1.9.3's engine) miscompiles this on amd64 when
;; WithCloseOnContextDone(true) is set (Bacalhau always sets it): the f32 `select` returns a stale
;; register whenever its condition is false (wazero#2534: xmmCMov's destination is not declared
;; as read). The module exits with the number of wrong picks: 0 is right, 5 shows the bug.
;; Binary: wasm-tools parse wazero-float-select.wat -o wazero-float-select.wasm
(module $repro
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory 1)
  ;; returns how many of i in 0..n picked the wrong operand of an f32 select(a, b, i < h)
  (func $bad (param $n i32) (param $h i32) (param $a f32) (param $b f32) (result i32)
    (local $i i32) (local $bad i32)
    block
      loop
        local.get $i
        local.get $n
        i32.eq
        br_if 1
        local.get $a
        local.get $b
        local.get $i
        local.get $h
        i32.lt_u
        select
        local.get $b
        f32.eq
        local.get $i
        local.get $h
        i32.lt_u
        i32.xor     ;; 1 when right: (picked b) xor (i<h) ... picked b iff i>=h
        i32.eqz
        local.get $bad
        i32.add
        local.set $bad
        local.get $i
        i32.const 1
        i32.add
        local.set $i
        br 0
      end
    end
    local.get $bad)
  (func (export "_start")
    i32.const 10
    i32.const 5
    f32.const 1.5
    f32.const -1.5
    call $bad
    call $proc_exit)
)
