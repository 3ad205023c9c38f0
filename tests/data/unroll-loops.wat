;; Loops for tools/wasm-ship's unroller, in function names it is told to unroll ("loops").
;; _start exits with a checksum of what they compute, so the unrolled module must exit with the
;; same code as this one. Binary: wasm-tools parse unroll-loops.wat -o unroll-loops.wasm
(module $unroll
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory 1)
  ;; while (i < n) { s += i*i; i++ }  (exit at the top, continue at the bottom)
  (func $loops_sum (param $n i32) (result i32)
    (local $i i32) (local $s i32)
    block
      loop
        local.get $i
        local.get $n
        i32.ge_u
        br_if 1
        local.get $s
        local.get $i
        local.get $i
        i32.mul
        i32.add
        local.set $s
        local.get $i
        i32.const 1
        i32.add
        local.set $i
        br 0
      end
    end
    local.get $s)
  ;; do { if (i % 4 != 1) { s += i; if (s > limit) return s * 7 }  if (i == 77) break out;
  ;;      i++ } while (i < n); return s;  out: return s + 1000
  ;; (a br_table inside the body, a return, a br_if to a label outside the loop)
  (func $loops_mixed (param $n i32) (param $limit i32) (result i32)
    (local $i i32) (local $s i32)
    block $out
      loop $l
        block $skip
          block $add
            local.get $i
            i32.const 4
            i32.rem_u
            br_table $add $skip $add $add $add
          end
          local.get $s
          local.get $i
          i32.add
          local.set $s
          local.get $s
          local.get $limit
          i32.gt_u
          if
            local.get $s
            i32.const 7
            i32.mul
            return
          end
        end
        local.get $i
        i32.const 77
        i32.eq
        br_if $out
        local.get $i
        i32.const 1
        i32.add
        local.tee $i
        local.get $n
        i32.lt_u
        br_if $l
      end
      local.get $s
      return
    end
    local.get $s
    i32.const 1000
    i32.add)
  (func (export "_start")
    i32.const 0 call $loops_sum
    i32.const 1 call $loops_sum i32.add
    i32.const 7 call $loops_sum i32.add
    i32.const 100 call $loops_sum i32.add
    i32.const 1 i32.const 100000 call $loops_mixed i32.add
    i32.const 10 i32.const 100000 call $loops_mixed i32.add
    i32.const 80 i32.const 100000 call $loops_mixed i32.add
    i32.const 200 i32.const 2000 call $loops_mixed i32.add
    i32.const 255
    i32.and
    call $proc_exit)
)
