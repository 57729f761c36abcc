//! The pool's own tests: what a request asks is remembered, a removed function leaves
//! nothing behind, a step's start counts against the budget from when it is decided.

use super::*;

/// A pool of one function `f` whose program exits at once: a request for it fails, but
/// it did ask.
fn pool_of_a_dud() -> Arc<WarmPool> {
    let spec = FunctionSpec::from_toml(
        "name = \"f\"\nkind = \"process\"\ncommand = [\"true\"]\ntemplate = false\ntimeout_ms = 2000\n",
    )
    .unwrap();
    WarmPool::new(vec![spec], Isolation::none())
}

#[test]
fn a_request_asking_for_a_worker_is_remembered_for_pre_warms_due_at_once() {
    let pool = pool_of_a_dud();
    let before = Instant::now();
    assert!(!pool.asked_since("f", before));
    assert!(pool.take("f").is_err());
    assert!(pool.asked_since("f", before), "asked after `before`");
    assert!(!pool.asked_since("f", Instant::now()), "not after now");
    assert!(!pool.asked_since("g", before), "another function");
    // An unknown function is refused before it counts as asked.
    assert!(pool.take("g").is_err());
    assert!(!pool.asked_since("g", before));
}

#[test]
fn a_steps_start_counts_against_the_budget_before_the_planner_hears_of_it() {
    // The planner weighs a pre-warm against the room left; a step's cold start must be
    // in it from the moment the step tells the planner, not only once admitted.
    let spec = FunctionSpec::from_toml(
        "name = \"f\"\nkind = \"process\"\ncommand = [\"true\"]\ntemplate = false\nmemory_mib = 100\ntimeout_ms = 2000\n",
    )
    .unwrap();
    let pool = WarmPool::with_budget(vec![spec], Isolation::none(), Some(250));
    assert_eq!(pool.room_mib(), Some(250));
    let seen = Mutex::new(Vec::new());
    let told = |warmth: Warmth, _: Duration| {
        seen.lock_unpoisoned().push((warmth, pool.room_mib()));
    };
    // The program exits at once: the step fails after its worker was admitted.
    let _ = pool.take_telling("f", &told);
    assert_eq!(*seen.lock_unpoisoned(), [(Warmth::Cold, Some(150))]);
    assert_eq!(pool.room_mib(), Some(250), "nothing left counted after it");
}

#[test]
fn a_removed_function_leaves_nothing_keyed_by_its_name() {
    // Names come from clients: when it was asked for, its cold-start samples and when
    // its latest pre-warm began all go with it.
    let pool = pool_of_a_dud();
    let before = Instant::now();
    assert!(pool.take("f").is_err());
    assert!(pool.asked_since("f", before));
    pool.note_cold_start("f", Duration::from_millis(5));
    let now = Instant::now();
    let claim = Claim::new(now, now, 1.0);
    pool.prewarm_with("f", now, None, claim, Placement::default(), || Ok(()));
    assert!(lock(&pool.state).prewarm_began.contains_key("f"));
    assert!(pool.remove("f"));
    assert!(!pool.asked_since("f", before));
    assert_eq!(pool.cold_start_estimate("f"), None);
    assert!(!lock(&pool.state).prewarm_began.contains_key("f"));
}
