//! The wasm backend on WAT guests: a normal run, the timeout, the memory limit, a broken
//! module, the compile cache, and instances made ahead (fresh each, for their own function).

use baton_runtime::manifest::FunctionSpec;
use baton_runtime::wasm::{WasmEngine, WasmError};
use baton_trace::schema::Status;
use std::path::Path;

fn spec(name: &str, module: &Path, memory_mib: u64, timeout_ms: u64) -> FunctionSpec {
    FunctionSpec::from_toml(&format!(
        "name = \"{name}\"\nkind = \"wasm\"\nmodule = {:?}\nmemory_mib = {memory_mib}\ntimeout_ms = {timeout_ms}\n",
        module.display().to_string()
    ))
    .unwrap()
}

fn guest(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/wat")
        .join(name)
}

#[test]
fn guests_run_time_out_and_hit_their_memory_limit() {
    let cache = tempfile::tempdir().unwrap();
    let engine = WasmEngine::new(cache.path(), 16, 256).unwrap();

    let upper = engine
        .load(&spec("upper", &guest("upper.wat"), 16, 5_000))
        .unwrap();
    assert!(!upper.from_cache);
    assert_eq!(
        engine.invoke(&upper, b"hello, wasm").unwrap(),
        b"HELLO, WASM"
    );
    assert_eq!(engine.invoke(&upper, b"").unwrap(), b"");
    let big = vec![b'a'; 300_000];
    assert_eq!(engine.invoke(&upper, &big).unwrap(), vec![b'A'; 300_000]);

    let spin = engine
        .load(&spec("spin", &guest("spin.wat"), 16, 200))
        .unwrap();
    let error = engine.invoke(&spin, b"").unwrap_err();
    assert!(
        matches!(
            error,
            WasmError::Timeout {
                timeout_ms: 200,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.status(), Status::Timeout);

    let hog = engine
        .load(&spec("hog", &guest("hog.wat"), 8, 5_000))
        .unwrap();
    let error = engine.invoke(&hog, b"").unwrap_err();
    assert!(
        matches!(error, WasmError::OutOfMemory { limit_mib: 8, .. }),
        "{error}"
    );
    assert_eq!(error.status(), Status::Oom);

    // The host survived all three and still serves.
    assert_eq!(engine.invoke(&upper, b"still here").unwrap(), b"STILL HERE");

    // A second engine finds the compiled module in the cache.
    let again = WasmEngine::new(cache.path(), 4, 64).unwrap();
    let cached = again
        .load(&spec("upper", &guest("upper.wat"), 16, 5_000))
        .unwrap();
    assert!(cached.from_cache);
    assert_eq!(again.invoke(&cached, b"cached").unwrap(), b"CACHED");
}

#[test]
fn a_broken_module_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let engine = WasmEngine::new(cache.path(), 4, 64).unwrap();
    let broken = cache.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0garbage").unwrap();
    let error = engine
        .load(&spec("broken", &broken, 16, 1_000))
        .unwrap_err();
    assert!(matches!(error, WasmError::Invalid { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("function `broken`: invalid module"),
        "{error}"
    );
    let missing = engine
        .load(&spec("missing", Path::new("/nonexistent.wasm"), 16, 1_000))
        .unwrap_err();
    assert!(
        error.to_string().contains("broken") && missing.to_string().contains("/nonexistent.wasm")
    );
}

#[test]
fn instances_made_ahead_are_fresh_and_only_for_their_function() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Counts its calls in its memory and outputs the count's digit: an instance that kept
    // anything of an earlier run would say more than 1.
    let counter = dir.path().join("counter.wat");
    std::fs::write(
        &counter,
        r#"(module
  (import "baton" "output" (func $output (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle")
    (i32.store8 (i32.const 0) (i32.add (i32.load8_u (i32.const 0)) (i32.const 1)))
    (i32.store8 (i32.const 1) (i32.add (i32.load8_u (i32.const 0)) (i32.const 48)))
    (drop (call $output (i32.const 1) (i32.const 1)))))"#,
    )
    .unwrap();
    let engine = WasmEngine::new(cache.path(), 8, 64).unwrap();
    let count = engine.load(&spec("count", &counter, 16, 5_000)).unwrap();
    let upper = engine
        .load(&spec("upper", &guest("upper_native.wat"), 16, 5_000))
        .unwrap();
    let (first, second) = (engine.ready(&count).unwrap(), engine.ready(&count).unwrap());
    let (run, spent) = engine.run_ready(&count, first, b"", None).unwrap();
    assert_eq!(run.output, b"1");
    assert!(run.memory_bytes >= 65_536);
    // The second was made before the first ran, and is still held while the first's
    // spent instance lives: each has its own memory.
    let (run, _) = engine.run_ready(&count, second, b"", None).unwrap();
    assert_eq!(run.output, b"1");
    drop(spent);
    assert_eq!(engine.invoke(&count, b"").unwrap(), b"1");

    // Made for `count`, handed to `upper`: refused, naming both.
    let wrong = engine.ready(&count).unwrap();
    let error = engine
        .run_ready(&upper, wrong, b"abc", None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("upper") && error.contains("count"),
        "{error}"
    );
    let ready = engine.ready(&upper).unwrap();
    let (run, _) = engine.run_ready(&upper, ready, b"abc", None).unwrap();
    assert_eq!(run.output, b"ABC");
    assert!(run.input_taken.is_some());
}
