;; A guest that never returns: stopped by the epoch timeout.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever (br $forever))))
