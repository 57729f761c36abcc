//! The wasm backend on WAT guests: a normal run, the timeout, the memory limit, a broken
//! module, and the compile cache.

use baton_runtime::manifest::FunctionSpec;
use baton_runtime::wasm::{WasmEngine, WasmError};
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
    assert_eq!(error.status(), "timeout");

    let hog = engine
        .load(&spec("hog", &guest("hog.wat"), 8, 5_000))
        .unwrap();
    let error = engine.invoke(&hog, b"").unwrap_err();
    assert!(
        matches!(error, WasmError::OutOfMemory { limit_mib: 8, .. }),
        "{error}"
    );
    assert_eq!(error.status(), "oom");

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
