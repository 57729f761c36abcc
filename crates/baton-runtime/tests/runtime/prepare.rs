//! Functions made ready at deploy: a wasm module compiled, linked and instantiated ahead,
//! so its first step is warm; a Python function's template started ahead, so its first
//! worker is a fork. Which path ran (jail, limits) is printed.

use crate::common::{isolation, process_spec, wasm_spec};
use baton_core::policy::TtlPolicy;
use baton_core::{SnapshotCell, Tdg, TdgConfig};
use baton_runtime::director::Director;
use baton_runtime::pool::WarmPool;
use baton_runtime::wasm::WasmEngine;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_deployed_function_is_ready_before_its_first_call() {
    let cache = tempfile::tempdir().unwrap();
    let engine = Arc::new(WasmEngine::new(cache.path(), 16, 64).unwrap());
    let pool = WarmPool::new(Vec::new(), isolation());
    let tdg = Tdg::new(TdgConfig::default());
    let graph = Arc::new(SnapshotCell::new(tdg.clone().snapshot()));
    let director = Director::new(pool, tdg, graph, Box::new(TtlPolicy::new(60_000_000)))
        .with_wasm(engine)
        .into_shared()
        .unwrap();
    director.deploy(wasm_spec("upper", "wat/upper_native.wat", ""));
    director.deploy(process_spec("py-upper", "upper.py", "timeout_ms = 10000"));

    // Both are prepared in the background; wait for the template (the slower).
    let deadline = Instant::now() + Duration::from_secs(20);
    while director
        .pool()
        .templates()
        .first()
        .and_then(|t| t.pid)
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            director.pool().templates()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let counters = director.counters();
    assert_eq!(counters.template_starts.load(Ordering::Relaxed), 1);
    // It holds memory while nothing runs: counted, measured.
    let held = director.pool().template_memory_mib();
    eprintln!("template memory: {held} MiB (PSS)");
    assert!((1..128).contains(&held), "{held} MiB");
    assert_eq!(counters.cold_starts.load(Ordering::Relaxed), 0);

    let wasm = director.invoke("upper", b"deployed").unwrap();
    assert_eq!(wasm.output, b"DEPLOYED");
    assert_eq!(wasm.records[0].cold, Some(false), "compiled at deploy");
    assert_eq!(counters.instances_ahead.load(Ordering::Relaxed), 1);

    let python = director.invoke("py-upper", b"forked").unwrap();
    assert_eq!(python.output, b"FORKED");
    let record = &python.records[0];
    eprintln!(
        "first Python call: cold start {:?} µs, {}",
        record.cold_start_us, record.extra["limits"]
    );
    assert_eq!(record.cold, Some(true), "a new worker, but");
    assert_eq!(record.extra["tier"], "forked", "forked from its template");
    assert_eq!(counters.template_starts.load(Ordering::Relaxed), 1);
    assert_eq!(counters.forked_starts.load(Ordering::Relaxed), 1);

    // Replaced, the function's template goes (its workers keep theirs until they end).
    director.deploy(process_spec("py-upper", "upper.py", "timeout_ms = 9000"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters.template_starts.load(Ordering::Relaxed) < 2 {
        assert!(
            Instant::now() < deadline,
            "no new template after a redeploy"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(director.undeploy("py-upper"));
    assert!(director.pool().templates().is_empty());
    assert_eq!(director.pool().template_memory_mib(), 0);
}

#[test]
fn a_held_template_is_started_and_let_go_when_its_hold_ends() {
    // The warmth tiers as the planner carries them out (`Decision::HoldTemplate`): a hold
    // starts the template in the background; housekeeping after the hold lets it go; the
    // next cold start starts one again and forks from it.
    let spec = Arc::new(process_spec("held", "upper.py", "timeout_ms = 10000"));
    let pool = Arc::new(WarmPool::new(vec![(*spec).clone()], isolation()));
    let alive = |pool: &WarmPool| pool.templates().first().and_then(|t| t.pid).is_some();
    assert!(!alive(&pool));
    pool.hold_template(&spec, Instant::now() + Duration::from_secs(600));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !alive(&pool) {
        assert!(Instant::now() < deadline, "{:?}", pool.templates());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pool.counters.template_starts.load(Ordering::Relaxed), 1);
    // Held again while alive: extended, not started twice.
    pool.hold_template(&spec, Instant::now() + Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.counters.template_starts.load(Ordering::Relaxed), 1);
    // Still held: housekeeping keeps it.
    pool.expire(Instant::now());
    assert!(alive(&pool));
    assert_eq!(pool.counters.templates_retired.load(Ordering::Relaxed), 0);
    // Past its hold: let go, its memory with it.
    pool.expire(Instant::now() + Duration::from_secs(601));
    assert!(!alive(&pool), "{:?}", pool.templates());
    assert_eq!(pool.counters.templates_retired.load(Ordering::Relaxed), 1);
    assert_eq!(pool.template_memory_mib(), 0);
    // The next cold start starts one again, and its worker is a fork.
    let lease = pool.take("held").unwrap();
    assert_eq!(pool.counters.template_starts.load(Ordering::Relaxed), 2);
    assert_eq!(pool.counters.forked_starts.load(Ordering::Relaxed), 1);
    drop(lease);
}
