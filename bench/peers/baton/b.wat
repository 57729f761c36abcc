;; Bench step b: passes its payload on to "wc" (c on baton) (baton imports, no WASI).
(module
  (import "baton" "input" (func $input (param i32 i32) (result i32)))
  (import "baton" "output" (func $output (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "@next wc\n")
  (func (export "handle")
    (local $n i32)
    (local.set $n (call $input (i32.const 1024) (i32.const 61440)))
    (drop (call $output (i32.const 0) (i32.const 9)))
    (drop (call $output (i32.const 1024) (local.get $n)))))
