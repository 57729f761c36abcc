;; A guest that works for a while (about a quarter of a second of a core) and then passes
;; its payload on: the cluster test's invocations are still running when a node is killed.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $i i64) (local $n i32)
    (local.set $i (i64.const 500000000))
    (loop $work
      (local.set $i (i64.sub (local.get $i) (i64.const 1)))
      (br_if $work (i64.ne (local.get $i) (i64.const 0))))
    ;; iovec at 0: buffer at 1024, 64512 bytes; bytes read at 16
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 64512))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
    (local.set $n (i32.load (i32.const 16)))
    (i32.store (i32.const 32) (i32.const 1024))
    (i32.store (i32.const 36) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 48)))))
