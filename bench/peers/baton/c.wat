;; Bench step c: answers with its payload (baton imports, no WASI).
(module
  (import "baton" "input" (func $input (param i32 i32) (result i32)))
  (import "baton" "output" (func $output (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle")
    (local $n i32)
    (local.set $n (call $input (i32.const 0) (i32.const 65536)))
    (drop (call $output (i32.const 0) (local.get $n)))))
