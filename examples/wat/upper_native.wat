;; The upper-case guest on baton's own imports instead of WASI: it takes its payload with
;; `baton.input` and gives its result with `baton.output`, so the host never builds a WASI
;; context for it (the cheapest hop). Payloads up to 60 KiB.
(module
  (import "baton" "input" (func $input (param i32 i32) (result i32)))
  (import "baton" "output" (func $output (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle")
    (local $n i32) (local $i i32) (local $c i32)
    (local.set $n (call $input (i32.const 1024) (i32.const 61440)))
    (block $end
      (loop $up
        (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 (i32.add (i32.const 1024) (local.get $i)) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $up)))
    (drop (call $output (i32.const 1024) (local.get $n)))))
