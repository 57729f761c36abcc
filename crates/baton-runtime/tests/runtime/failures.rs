//! Failures through the director: a guest that loops forever is stopped by its timeout, one
//! that grows past its memory limit fails with `oom`, a worker that crashes is replaced;
//! each is recorded with its status and reason (a worker forked from its template too),
//! and the host keeps serving; a worker that never starts leaves no reservation behind.

use crate::common::{process_spec, wasm_spec};
use baton_core::policy::TtlPolicy;
use baton_core::{SnapshotCell, Tdg, TdgConfig};
use baton_runtime::director::{Director, DirectorError};
use baton_runtime::isolation;
use baton_runtime::pool::WarmPool;
use baton_runtime::wasm::WasmEngine;
use baton_trace::schema::Status;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[test]
fn timeouts_ooms_and_crashes_are_recorded_and_the_host_survives() {
    let cache = tempfile::tempdir().unwrap();
    let engine = Arc::new(WasmEngine::new(cache.path(), 16, 64).unwrap());
    let pool = WarmPool::new(
        vec![
            wasm_spec("spin", "wat/spin.wat", "timeout_ms = 200"),
            wasm_spec("hog", "wat/hog.wat", "memory_mib = 8"),
            process_spec("fragile", "upper.py", "timeout_ms = 5000"),
        ],
        isolation::detect().isolation(),
    );
    let tdg = Tdg::new(TdgConfig::default());
    let graph = Arc::new(SnapshotCell::new(tdg.clone().snapshot()));
    let director = Director::new(pool, tdg, graph, Box::new(TtlPolicy::new(60_000_000)))
        .with_wasm(engine)
        .into_shared()
        .unwrap();

    let status_of = |error: DirectorError| {
        eprintln!("{error}");
        let record = error.records().last().cloned().unwrap();
        (
            record.status,
            record.extra["error"].as_str().unwrap().to_owned(),
        )
    };
    let (status, why) = status_of(director.invoke("spin", b"").unwrap_err());
    assert_eq!(status, Some(Status::Timeout));
    assert!(why.contains("timed out after 200 ms"), "{why}");

    let (status, why) = status_of(director.invoke("hog", b"").unwrap_err());
    assert_eq!(status, Some(Status::Oom));
    assert!(why.contains("out of memory (limit 8 MiB)"), "{why}");

    assert_eq!(director.invoke("fragile", b"warm").unwrap().output, b"WARM");
    let (status, why) = status_of(director.invoke("fragile", b"crash").unwrap_err());
    assert_eq!(status, Some(Status::Error));
    assert!(why.contains("exit status: 3"), "{why}");
    // The dead worker was not kept: the next call starts a replacement.
    let replaced = director.invoke("fragile", b"again").unwrap();
    assert_eq!(replaced.output, b"AGAIN");
    assert_eq!(replaced.records[0].cold, Some(true), "a new worker");
    // Python: the first worker came from a template started then, the replacement from
    // the same template (the crash ended the worker, not its template): its spare, forked
    // meanwhile, or a fork if the spare was not ready yet.
    let tier = replaced.records[0].extra["tier"].clone();
    assert!(tier == "spare" || tier == "forked", "{tier}");
    assert_eq!(
        director.counters().template_starts.load(Ordering::Relaxed),
        1
    );
    let counters = director.counters();
    let forked = counters.forked_starts.load(Ordering::Relaxed);
    assert_eq!(forked + counters.spare_starts.load(Ordering::Relaxed), 2);
    // A function error is not a crash: the worker lives on and stays warm.
    let (status, why) = status_of(director.invoke("fragile", b"fail").unwrap_err());
    assert_eq!(status, Some(Status::Error));
    assert!(why.contains("ValueError: asked to fail"), "{why}");
    assert_eq!(
        director.invoke("fragile", b"ok").unwrap().records[0].cold,
        Some(false)
    );

    // Unknown functions are named, and nothing else is lost.
    let error = director.invoke("nope", b"").unwrap_err();
    assert!(
        error.to_string().contains("unknown function `nope`"),
        "{error}"
    );
    assert_eq!(director.counters().steps.load(Ordering::Relaxed), 8);
    assert_eq!(director.counters().failed_steps.load(Ordering::Relaxed), 5);
    // And the wasm guests still run after their failures.
    assert!(matches!(
        director.invoke("spin", b"").unwrap_err(),
        DirectorError::Step { .. }
    ));
}

/// A step is told to the planner before its cold start (so what follows starts meanwhile);
/// when that start fails, the step is told ended too: the reservation committed for it goes,
/// and the next request finds the node as it was.
#[test]
fn a_step_whose_worker_never_starts_leaves_no_reservation_behind() {
    let detection = isolation::detect();
    // A module that is not there: the interpreter exits before the worker's ready frame.
    let (director, reservations) = crate::common::predicting_director(
        vec![process_spec("dud", "no_such_step.py", "template = false")],
        detection.isolation(),
        0,
    );
    for _ in 0..2 {
        let error = director.invoke("dud", b"x").unwrap_err();
        eprintln!("{error}");
        let record = error.records().last().cloned().unwrap();
        assert_eq!(record.status, Some(Status::Error));
        assert!(
            reservations.is_empty(),
            "a failed cold start holds nothing: {:?}",
            reservations.reservations()
        );
    }
    assert_eq!(director.counters().failed_steps.load(Ordering::Relaxed), 2);
}
