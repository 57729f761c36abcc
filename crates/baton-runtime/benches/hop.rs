//! What a hop and a cold start cost on this machine, measured in one run: a pre-linked wasm
//! guest (instantiate from the pool + run), a warm Python worker round trip, and the cold
//! starts they avoid (wasm compile without cache, wasm load from the cache, Python worker
//! start to ready). Prints medians and
//! ratios. Run: `cargo bench -p baton-runtime --bench hop`.

use baton_runtime::limits;
use baton_runtime::manifest::FunctionSpec;
use baton_runtime::process::Worker;
use baton_runtime::wasm::WasmEngine;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(n: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = String::from_utf8(
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3")
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let wasm_spec = FunctionSpec::from_toml(&format!(
        "name = \"upper\"\nkind = \"wasm\"\nmodule = {:?}\nmemory_mib = 16\n",
        root.join("examples/wat/upper.wat").display().to_string()
    ))
    .unwrap();
    let process_spec = FunctionSpec::from_toml(&format!(
        "name = \"upper\"\nkind = \"process\"\ncommand = [{python:?}, \"-u\", {:?}]\nmemory_mib = 256\n",
        root.join("examples/python/upper.py").display().to_string()
    ))
    .unwrap();
    let payload = br#"{"order": 42, "items": ["a", "b"]}"#;

    let cache = std::env::temp_dir().join(format!("baton-hop-bench-{}", std::process::id()));
    let engine = WasmEngine::new(&cache, 64, 64).unwrap();
    let function = engine.load(&wasm_spec).unwrap();
    let wasm_hop = time(20_000, || {
        engine.invoke(&function, payload).unwrap();
    });
    // Engines are made beforehand (one per sample, a fresh cache each for the cold case):
    // only compile-or-load, link and the first run are timed.
    let mut cold_engines: Vec<WasmEngine> = (0..20)
        .map(|i| {
            let fresh =
                std::env::temp_dir().join(format!("baton-hop-cold-{}-{i}", std::process::id()));
            let _ = std::fs::remove_dir_all(&fresh);
            WasmEngine::new(&fresh, 4, 64).unwrap()
        })
        .collect();
    let wasm_cold = time(20, || {
        let engine = cold_engines.pop().unwrap();
        let function = engine.load(&wasm_spec).unwrap();
        assert!(!function.from_cache);
        engine.invoke(&function, payload).unwrap();
    });
    let mut cached_engines: Vec<WasmEngine> = (0..20)
        .map(|_| WasmEngine::new(&cache, 4, 64).unwrap())
        .collect();
    let wasm_cached = time(20, || {
        let engine = cached_engines.pop().unwrap();
        let function = engine.load(&wasm_spec).unwrap();
        assert!(function.from_cache);
        engine.invoke(&function, payload).unwrap();
    });

    let mechanism = limits::detect().mechanism;
    let mut worker = Worker::spawn(&process_spec, &mechanism).unwrap();
    let process_hop = time(5_000, || {
        worker.invoke(payload).unwrap();
    });
    let process_cold = time(10, || {
        let mut worker = Worker::spawn(&process_spec, &mechanism).unwrap();
        worker.invoke(payload).unwrap();
    });
    let _ = std::fs::remove_dir_all(&cache);
    for i in 0..20 {
        let _ = std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("baton-hop-cold-{}-{i}", std::process::id())),
        );
    }

    println!("medians on this machine (payload {} bytes):", payload.len());
    println!(
        "  wasm, pre-linked, instantiate + run:   {:>10.1?}",
        wasm_hop
    );
    println!(
        "  wasm, cold (compile + link + run):     {:>10.1?}  ({:.0}x the warm hop)",
        wasm_cold,
        wasm_cold.as_secs_f64() / wasm_hop.as_secs_f64()
    );
    println!(
        "  wasm, cached (load + link + run):      {:>10.1?}  ({:.0}x)",
        wasm_cached,
        wasm_cached.as_secs_f64() / wasm_hop.as_secs_f64()
    );
    println!(
        "  python worker, warm round trip:        {:>10.1?}",
        process_hop
    );
    println!(
        "  python worker, cold (spawn + ready):   {:>10.1?}  ({:.0}x the warm round trip)",
        process_cold,
        process_cold.as_secs_f64() / process_hop.as_secs_f64()
    );
}
