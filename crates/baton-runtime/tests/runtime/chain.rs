//! The director running a branching chain of real Python workers: the first request is
//! cold; once learned, the predicted steps are pre-warmed and start warm; a mispredicted
//! branch falls back to a cold start and is recorded as such; reservations are released.

use crate::common::python;
use baton_runtime::isolation;
use baton_runtime::manifest::FunctionSpec;
use std::path::Path;

/// A step started the plain way (no template): the test is about prediction hiding whole
/// interpreter starts, with their margins (forked workers are tested in `prepare.rs`,
/// `sandbox.rs` and `failures.rs`).
fn step(name: &str, next: &str, next_alt: &str) -> FunctionSpec {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python");
    FunctionSpec::from_toml(&format!(
        "name = \"{name}\"\nkind = \"process\"\ncommand = [{:?}, \"-u\", \"step.py\"]\nworkdir = {:?}\nmemory_mib = 128\ntimeout_ms = 10000\npure = true\ntemplate = false\n[env]\nNEXT = \"{next}\"\nNEXT_ALT = \"{next_alt}\"\n",
        python(),
        dir.display().to_string()
    ))
    .unwrap()
}

#[test]
fn learned_chains_start_warm_and_mispredictions_start_cold() {
    let detection = isolation::detect();
    eprint!("{detection}");
    // validate → price → (reserve | reject on "alt") → notify
    let functions = vec![
        step("validate", "price", ""),
        step("price", "reserve", "reject"),
        step("reserve", "notify", ""),
        step("reject", "notify", ""),
        step("notify", "", ""),
    ];
    // No keep-alive at all: anything warm was predicted.
    let (director, reservations) =
        crate::common::predicting_director(functions, detection.isolation(), 0);

    let first = director.invoke("validate", b"order-1").unwrap();
    assert_eq!(first.output, b"ORDER-1");
    let path: Vec<&str> = first.records.iter().map(|r| r.task.as_str()).collect();
    assert_eq!(path, ["validate", "price", "reserve", "notify"]);
    assert!(
        first.records.iter().all(|r| r.cold == Some(true)),
        "nothing learned yet"
    );
    assert!(first.records[1..].iter().all(|r| r.parent.is_some()));

    let mut planned = 0;
    for i in 2..5 {
        let outcome = director
            .invoke("validate", format!("order-{i}").as_bytes())
            .unwrap_or_else(|e| panic!("request {i}: {e}; steps {:?}", e.steps()));
        let cold: Vec<(&str, bool)> = outcome
            .records
            .iter()
            .map(|r| (r.task.as_str(), r.cold == Some(true)))
            .collect();
        eprintln!("request {i}: {cold:?}");
        assert_eq!(
            cold[0],
            ("validate", true),
            "the chain head is not predicted"
        );
        // Pre-warmed by a plan, or (the policy's idle model keeping what it pre-warmed for
        // the last request) still warm: never cold.
        assert!(
            outcome.records[1..].iter().all(|r| r.cold == Some(false)
                && (r.chain.as_deref().is_some_and(|c| c.starts_with("plan-"))
                    || r.extra["warmth"] == "warm")),
            "every predicted step pre-warmed or kept: {cold:?}"
        );
        planned += outcome.records[1..]
            .iter()
            .filter(|r| r.chain.as_deref().is_some_and(|c| c.starts_with("plan-")))
            .count() as u64;
    }

    // The branch the graph has never seen: reject is cold, and recorded as cold.
    let branch = director.invoke("validate", b"alt-order").unwrap();
    let path: Vec<(&str, bool)> = branch
        .records
        .iter()
        .map(|r| (r.task.as_str(), r.cold == Some(true)))
        .collect();
    eprintln!("mispredicted: {path:?}");
    assert_eq!(path[2], ("reject", true));
    assert_eq!(branch.records.len(), 4);

    let counters = &director.pool().counters;
    let used = counters
        .prewarms_used
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        planned >= 3,
        "a request's predicted steps at least were pre-warmed"
    );
    assert!(
        used >= planned,
        "{used} pre-warms used for {planned} planned steps"
    );
    assert_eq!(
        director
            .counters()
            .steps
            .load(std::sync::atomic::Ordering::Relaxed),
        4 * 5
    );
    // The policy's plans hold their reservations as guards: dropping the director (and so
    // the policy) releases every one.
    drop(director);
    assert!(reservations.is_empty(), "{:?}", reservations.reservations());
}

/// The planner hears of a step when its cold start begins, not when it ends: what follows
/// is pre-warmed meanwhile (as the simulator starts it at the arrival). The head takes
/// about a second to start (its interpreter sleeps before it runs step.py), its successor a
/// fraction of that, so the successor's pre-warm, started at the head's arrival, is ready
/// long before the head ends; told only after the head's start, it would come late.
#[test]
fn what_follows_a_cold_step_is_prewarmed_during_its_cold_start() {
    let detection = isolation::detect();
    eprint!("{detection}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python");
    let slow = FunctionSpec::from_toml(&format!(
        "name = \"slow\"\nkind = \"process\"\ncommand = [{:?}, \"-u\", \"-c\", \"import runpy, time; time.sleep(0.8); runpy.run_path('step.py', run_name='__main__')\"]\nworkdir = {:?}\nmemory_mib = 128\ntimeout_ms = 10000\npure = true\ntemplate = false\n[env]\nNEXT = \"quick\"\n",
        python(),
        dir.display().to_string()
    ))
    .unwrap();
    let (director, _reservations) = crate::common::predicting_director(
        vec![slow, step("quick", "", "")],
        detection.isolation(),
        0,
    );
    for i in 0..5 {
        let outcome = director.invoke("slow", b"x").unwrap();
        let steps: Vec<(&str, Option<&str>, u64)> = outcome
            .records
            .iter()
            .zip(&outcome.steps)
            .map(|(r, s)| (r.task.as_str(), s.warmth_word(), s.wait_us))
            .collect();
        eprintln!("request {i}: {steps:?}");
        assert_eq!(outcome.output, b"X");
        assert_eq!(
            steps[0].1,
            Some("cold"),
            "no keep-alive: the head starts cold"
        );
        assert!(
            steps[0].2 >= 800_000,
            "the head's start sleeps 0.8 s: {steps:?}"
        );
        if i > 1 {
            // Pre-warmed while slow started and ready before slow ended (or kept from the
            // last request by the policy's idle model): neither cold nor waited for.
            assert!(
                matches!(steps[1].1, Some("prewarmed" | "warm")),
                "learned, quick is ready when slow calls it: {steps:?}"
            );
        }
    }
}
