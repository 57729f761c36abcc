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

    // Both are prepared in the background; wait for the template (the slower) and its
    // spare.
    let deadline = Instant::now() + Duration::from_secs(20);
    while director
        .pool()
        .templates()
        .first()
        .and_then(|t| t.pid.and(t.spare))
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
    assert_eq!(counters.spares_forked.load(Ordering::Relaxed), 1);
    let info = director.pool().templates()[0].clone();
    let spare = info.spare.unwrap();
    // The template's forks give way to running steps; its workers run at the default
    // priority.
    assert_eq!(nice(info.pid.unwrap()), 10, "the template");
    assert_eq!(nice(spare), 0, "its spare");
    // It holds memory while nothing runs (the template and its spare): counted, measured.
    let held = director.pool().template_memory_mib();
    eprintln!("template memory: {held} MiB (PSS)");
    assert!((1..128).contains(&held), "{held} MiB");
    assert_eq!(counters.cold_starts.load(Ordering::Relaxed), 0);

    let wasm = director.invoke("upper", b"deployed").unwrap();
    assert_eq!(wasm.output, b"DEPLOYED");
    assert_eq!(wasm.records[0].cold, Some(false), "compiled at deploy");
    assert_eq!(counters.instances_ahead.load(Ordering::Relaxed), 1);

    let python = director.invoke("py-upper", b"spare").unwrap();
    assert_eq!(python.output, b"SPARE");
    let record = &python.records[0];
    eprintln!(
        "first Python call: cold start {:?} µs, {}",
        record.cold_start_us, record.extra["limits"]
    );
    assert_eq!(record.cold, Some(true), "a new worker, but");
    assert_eq!(
        record.extra["tier"], "spare",
        "its template's spare, forked ahead"
    );
    assert_eq!(counters.template_starts.load(Ordering::Relaxed), 1);
    assert_eq!(counters.spare_starts.load(Ordering::Relaxed), 1);
    assert_eq!(counters.forked_starts.load(Ordering::Relaxed), 0);
    // The spare was taken: the pool forks the next one in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    while director.pool().templates()[0]
        .spare
        .is_none_or(|pid| pid == spare)
    {
        assert!(
            Instant::now() < deadline,
            "no spare after the first was taken"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(counters.spares_forked.load(Ordering::Relaxed), 2);

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
    let spare = wait_for_spare(&pool);
    // Held again while alive: extended, not started twice.
    pool.hold_template(&spec, Instant::now() + Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.counters.template_starts.load(Ordering::Relaxed), 1);
    // Still held: housekeeping keeps it.
    pool.expire(Instant::now());
    assert!(alive(&pool));
    assert_eq!(pool.counters.templates_retired.load(Ordering::Relaxed), 0);
    // Past its hold: let go, its spare and its memory with it.
    pool.expire(Instant::now() + Duration::from_secs(601));
    assert!(!alive(&pool), "{:?}", pool.templates());
    wait_until_gone(spare);
    assert_eq!(pool.counters.templates_retired.load(Ordering::Relaxed), 1);
    assert_eq!(pool.template_memory_mib(), 0);
    // The next cold start starts one again, and its worker is a fork.
    let lease = pool.take("held").unwrap();
    assert_eq!(pool.counters.template_starts.load(Ordering::Relaxed), 2);
    assert_eq!(pool.counters.forked_starts.load(Ordering::Relaxed), 1);
    drop(lease);
}

/// The pid of `pool`'s first template's spare, once it is ready (at most 20 s).
fn wait_for_spare(pool: &WarmPool) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = pool.templates().first().and_then(|t| t.pid.and(t.spare)) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no spare: {:?}",
            pool.templates()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A pool of one Python function `name` (upper.py) whose template is started, and the pid
/// of its spare once ready.
fn pool_with_a_spare(name: &str) -> (Arc<WarmPool>, u32) {
    let spec = Arc::new(process_spec(name, "upper.py", "timeout_ms = 10000"));
    let pool = WarmPool::new(vec![(*spec).clone()], isolation());
    pool.prepare_template(&spec);
    let spare = wait_for_spare(&pool);
    (pool, spare)
}

/// Waits (at most 5 s) until process `pid` has ended and been reaped.
fn wait_until_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "process {pid} is still there");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_spare_that_died_is_never_handed_out() {
    // A spare waits for its first call for as long as its template is held: whatever ends
    // it meanwhile (the OOM killer, an operator's kill), the start that would have taken
    // it forks a worker instead, and the pool forks a new spare.
    let (pool, spare) = pool_with_a_spare("spared");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &spare.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Killed, not reaped (its template reaps it when told): a zombie, never handed out.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{spare}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z"))
    {
        assert!(Instant::now() < deadline, "spare {spare} still running");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut lease = pool.take("spared").unwrap();
    assert!(!lease.worker.is_spare(), "a dead spare was handed out");
    assert_eq!(lease.worker.invoke(b"alive").unwrap(), b"ALIVE");
    assert_eq!(pool.counters.forked_starts.load(Ordering::Relaxed), 1);
    assert_eq!(pool.counters.spare_starts.load(Ordering::Relaxed), 0);
    drop(lease);
    wait_until_gone(spare);
    // A new spare replaces it, and serves the next start.
    let next = wait_for_spare(&pool);
    assert_ne!(next, spare);
    let mut lease = pool.take("spared").unwrap();
    assert!(lease.worker.is_spare());
    assert_eq!(lease.worker.pid(), next);
    assert_eq!(lease.worker.invoke(b"spare").unwrap(), b"SPARE");
    assert_eq!(pool.counters.spare_starts.load(Ordering::Relaxed), 1);
}

/// Process `pid`'s nice value (`/proc/PID/stat`, field 19).
fn nice(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(16).unwrap().parse().unwrap()
}

#[test]
fn a_prewarm_takes_a_ready_spare_before_it_returns() {
    // A pre-warm of a function with a spare ready (no services, no cores to pin) needs no
    // thread: the worker idles before the planner's call returns, so a step that comes
    // microseconds after the event that asked for it finds it ready. The next spare is
    // forked after the refill delay.
    let (pool, spare) = pool_with_a_spare("ahead");
    let now = Instant::now();
    let claim = baton_core::exec::Claim {
        from: now,
        until: now + Duration::from_secs(1),
        weight: 1.0,
    };
    let until = now + Duration::from_secs(60);
    pool.prewarm_with("ahead", until, Some(7), claim, Default::default(), || {
        Err("the spare needs nothing started first".into())
    });
    assert_eq!(pool.idle_count("ahead"), 1, "idle before the call returned");
    assert_eq!(pool.counters.spare_starts.load(Ordering::Relaxed), 1);
    let mut lease = pool.take("ahead").unwrap();
    assert_eq!(lease.worker.pid(), spare);
    assert_eq!(lease.plan, Some(7));
    assert_eq!(lease.worker.invoke(b"ahead").unwrap(), b"AHEAD");
    assert_ne!(wait_for_spare(&pool), spare, "a new spare after the delay");
}
