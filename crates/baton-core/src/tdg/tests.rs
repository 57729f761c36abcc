//! The learner's tests: transitions, decay, forgetting; properties; state round trips.

use super::*;
use crate::context::Prev;

/// Without decay: `a` calls `b` three times (100 µs after it starts), `c` once (300 µs),
/// and ends once.
fn a_calls_b_thrice_c_once_and_stops() -> (Tdg, [TaskId; 3]) {
    let mut tdg = Tdg::new(TdgConfig {
        half_life_us: None,
        ..TdgConfig::default()
    });
    let a = tdg.intern_task("a");
    let b = tdg.intern_task("b");
    let c = tdg.intern_task("c");
    let context = CallContext::first_order(a);
    for _ in 0..3 {
        tdg.observe_call(&context, Some(b), 100, 1);
    }
    tdg.observe_call(&context, Some(c), 300, 1);
    tdg.observe_call(&context, None, 0, 1);
    (tdg, [a, b, c])
}

#[test]
fn transitions_and_stop_are_learned() {
    let (mut tdg, [a, b, c]) = a_calls_b_thrice_c_once_and_stops();
    let snapshot = tdg.snapshot();
    let dist = snapshot.first_order(a);
    assert_eq!(dist.targets[0].task, b);
    assert!((dist.targets[0].probability - 0.6).abs() < 1e-12);
    assert!((dist.stop_probability - 0.2).abs() < 1e-12);
    assert_eq!(dist.targets[1].delay_mean_us, 304);
    assert_eq!(snapshot.first_order(c).stop_probability, 1.0);
}

#[test]
fn a_forgotten_task_leaves_the_graph_and_the_rest_renormalises() {
    let (mut tdg, [a, b, c]) = a_calls_b_thrice_c_once_and_stops();
    tdg.observe_call(&CallContext::first_order(b), Some(c), 50, 1);
    assert!(tdg.forget("b"));
    assert!(!tdg.forget("nobody"));
    let snapshot = tdg.snapshot();
    let dist = snapshot.first_order(a);
    assert_eq!(dist.targets.len(), 1, "{dist:?}");
    assert_eq!(dist.targets[0].task, c);
    assert!((dist.targets[0].probability - 0.5).abs() < 1e-12);
    assert!((dist.stop_probability - 0.5).abs() < 1e-12);
    assert!(snapshot.first_order(b).targets.is_empty());
    assert!(snapshot.edges().all(|(from, t)| from != b && t.task != b));
    // Learned again from scratch when it comes back.
    tdg.observe_call(&CallContext::first_order(a), Some(b), 100, 2);
    assert_eq!(tdg.snapshot().first_order(a).targets.len(), 2);
}

#[test]
fn decay_follows_drift() {
    let hour = 3_600_000_000;
    let mut tdg = Tdg::new(TdgConfig {
        half_life_us: Some(hour / 4),
        ..TdgConfig::default()
    });
    let a = tdg.intern_task("a");
    let b = tdg.intern_task("b");
    let c = tdg.intern_task("c");
    let context = CallContext::first_order(a);
    for i in 0..100 {
        tdg.observe_call(&context, Some(b), 1, i);
    }
    for i in 0..20 {
        tdg.observe_call(&context, Some(c), 1, 2 * hour + i);
    }
    let snapshot = tdg.snapshot();
    assert_eq!(snapshot.first_order(a).targets[0].task, c, "recent wins");
}

#[test]
fn rebase_keeps_probabilities() {
    let mut tdg = Tdg::new(TdgConfig {
        half_life_us: Some(10),
        ..TdgConfig::default()
    });
    let a = tdg.intern_task("a");
    let b = tdg.intern_task("b");
    let context = CallContext {
        prev: Prev::Start,
        ..CallContext::first_order(a)
    };
    let mut t = 0;
    for _ in 0..50 {
        t += 1_000;
        tdg.observe_call(&context, Some(b), 1, t);
        tdg.observe_call(&context, None, 1, t);
    }
    let snapshot = tdg.snapshot();
    let dist = snapshot.first_order(a);
    assert!((dist.targets[0].probability - 0.5).abs() < 1e-9);
    assert!(dist.targets[0].probability.is_finite());
}

#[test]
fn predictors_read_while_the_learner_writes() {
    let mut tdg = Tdg::new(TdgConfig::default());
    let a = tdg.intern_task("a");
    let b = tdg.intern_task("b");
    let cell = Arc::new(SnapshotCell::new(tdg.snapshot()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let cell = Arc::clone(&cell);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut last_version, mut reads) = (0, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                    let snapshot = cell.load();
                    assert!(snapshot.version() >= last_version, "versions never go back");
                    last_version = snapshot.version();
                    let chains = snapshot.predict(
                        a,
                        &crate::PredictContext::default(),
                        &crate::PredictOptions::default(),
                    );
                    let total: f64 = chains.iter().map(|c| c.probability).sum();
                    assert!(total <= 1.0 + 1e-9);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..2_000u64 {
        let context = CallContext::first_order(a);
        tdg.observe_call(&context, Some(b), 10, i);
        tdg.observe_call(&context, None, 0, i);
        if i % 100 == 0 {
            cell.publish(tdg.snapshot());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("reader thread") > 0);
    }
    assert_eq!(cell.load().version(), 21);
}

#[test]
fn snapshot_cell_swaps_without_disturbing_readers() {
    let mut tdg = Tdg::new(TdgConfig::default());
    let cell = SnapshotCell::new(tdg.snapshot());
    let held = cell.load();
    tdg.intern_task("x");
    cell.publish(tdg.snapshot());
    assert_eq!(held.version(), 1);
    assert_eq!(cell.load().version(), 2);
}

mod properties {
    use super::*;
    use crate::ids::LabelId;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn probabilities_and_stop_sum_to_one(
            events in proptest::collection::vec(
                (0u32..5, proptest::option::of(0u32..5), 0u32..3, 0u32..3, 0u64..10_000_000),
                1..200,
            ),
            half_life_s in proptest::option::of(1u64..100),
        ) {
            let mut tdg = Tdg::new(TdgConfig {
                half_life_us: half_life_s.map(|s| s * 1_000_000),
                ..TdgConfig::default()
            });
            let ids: Vec<TaskId> = (0..5).map(|i| tdg.intern_task(&format!("t{i}"))).collect();
            let mut t = 0;
            for (caller, callee, prev, route, dt) in events {
                t += dt;
                let context = CallContext {
                    caller: ids[caller as usize],
                    prev: match prev { 0 => Prev::Start, 1 => Prev::Unknown, _ => Prev::After(ids[0]) },
                    route: (route > 0).then_some(LabelId(route)),
                    grand_caller: None,
                    caller_operation: None,
                };
                tdg.observe_call(&context, callee.map(|c| ids[c as usize]), 5, t);
            }
            let snapshot = tdg.snapshot();
            let dists = snapshot
                .parts()
                .first_order
                .iter()
                .chain(snapshot.parts().contexts.values());
            for dist in dists {
                if dist.count > 0.0 {
                    let sum: f64 = dist.targets.iter().map(|t| t.probability).sum::<f64>()
                        + dist.stop_probability;
                    prop_assert!((sum - 1.0).abs() < 1e-9, "sum {}", sum);
                    prop_assert!(dist.targets.iter().all(|t| t.probability >= 0.0));
                }
            }
        }
    }
}

mod state_tests {
    use super::*;
    use crate::request::Invocation;

    fn request(tdg: &mut Tdg, names: &[&str], at_us: u64) -> Request {
        let label = tdg.intern_label(names[0]);
        let calls = names
            .iter()
            .enumerate()
            .map(|(i, name)| Invocation {
                task: tdg.intern_task(name),
                label,
                parent: (i > 0).then(|| i as u32 - 1),
                start_us: at_us + i as u64 * 1_000,
                waited_us: 0,
                usage: Usage {
                    wall_us: 500,
                    ..Usage::default()
                },
            })
            .collect();
        Request::build(calls).0
    }

    #[test]
    fn a_restored_learner_goes_on_as_if_it_never_stopped() {
        let paths: [&[&str]; 3] = [&["a", "b", "c"], &["a", "b", "d"], &["x", "b", "c"]];
        let mut straight = Tdg::new(TdgConfig::default());
        let mut first_half = Tdg::new(TdgConfig::default());
        for i in 0..40u64 {
            let path = paths[(i % 3) as usize];
            let r = request(&mut straight, path, i * 60_000_000);
            straight.observe_request(&r);
            if i < 20 {
                let r = request(&mut first_half, path, i * 60_000_000);
                first_half.observe_request(&r);
            }
        }
        let saved = serde_json::to_string(&first_half.state()).unwrap();
        let state: TdgState = serde_json::from_str(&saved).unwrap();
        let mut restored = Tdg::from_state(TdgConfig::default(), state).unwrap();
        for i in 20..40u64 {
            let r = request(&mut restored, paths[(i % 3) as usize], i * 60_000_000);
            restored.observe_request(&r);
        }
        let a = serde_json::to_string(straight.snapshot().parts()).unwrap();
        let b = serde_json::to_string(restored.snapshot().parts()).unwrap();
        assert_eq!(a, b);

        // Other context kinds: refused rather than misread.
        let other = TdgConfig {
            contexts: Vec::new(),
            ..TdgConfig::default()
        };
        assert!(Tdg::from_state(other, first_half.state()).is_none());
    }
}

#[test]
fn episodes_of_starts_are_learned_kept_with_the_state_and_forgotten() {
    let mut tdg = crate::test_support::tdg();
    for minute in [0u64, 15, 30, 45] {
        let at = minute * 60_000_000;
        let request = crate::test_support::request(&mut tdg, &[("job", None, at, 1_000, 64)]);
        tdg.observe_request(&request);
    }
    let job = tdg.intern_task("job");
    let snapshot = tdg.snapshot();
    let episodes = snapshot.episodes(job).cloned().unwrap();
    assert_eq!(episodes.starts().len(), 4);
    assert_eq!(episodes.rhythm().map(|r| r.next_us), Some(60 * 60_000_000));
    let json = serde_json::to_string(&tdg.state()).unwrap();
    let restored = Tdg::from_state(tdg.config().clone(), serde_json::from_str(&json).unwrap())
        .unwrap()
        .snapshot();
    assert_eq!(restored.episodes(job), snapshot.episodes(job));
    // A state saved before episodes were learned still loads, and learns them from then on.
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("arrivals");
    let mut old =
        Tdg::from_state(tdg.config().clone(), serde_json::from_value(old).unwrap()).unwrap();
    assert_eq!(old.snapshot().episodes(job), None);
    old.observe_start(job, 5);
    assert_eq!(
        old.snapshot().episodes(job).map(|e| e.starts()),
        Some(vec![5])
    );
    assert!(tdg.forget("job"));
    assert!(tdg.snapshot().episodes(job).is_some_and(|e| e.is_empty()));
}

/// `a` calls `b` (with a 10 % chance of `d` instead) every second for two hours, then `c`
/// (with `d` as before): how long until `c` is the most likely successor, and the
/// half-life in use then.
fn minutes_to_learn_a_shift(drift_half_life_us: Option<u64>) -> (u64, Option<u64>) {
    let mut tdg = Tdg::new(TdgConfig {
        drift_half_life_us,
        ..TdgConfig::default()
    });
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| tdg.intern_task(n));
    let context = CallContext::first_order(a);
    let second = 1_000_000;
    let callee = |i: u64, usual| if i % 10 == 3 { d } else { usual };
    for i in 0..7_200 {
        tdg.observe_call(&context, Some(callee(i, b)), 100, i * second);
    }
    assert!(!tdg.drifting(), "a steady mix is no drift");
    for i in 7_200..7_200 + 3 * 3_600 {
        tdg.observe_call(&context, Some(callee(i, c)), 100, i * second);
        if tdg.snapshot().first_order(a).targets[0].task == c {
            return ((i - 7_200) / 60, tdg.half_life_us());
        }
    }
    panic!("never learned");
}

#[test]
fn a_shift_in_the_mix_is_learned_in_minutes_not_over_the_hour() {
    let (adaptive, half_life) = minutes_to_learn_a_shift(Some(300_000_000));
    let (fixed, _) = minutes_to_learn_a_shift(None);
    eprintln!("c overtakes b after {adaptive} min (drift), {fixed} min (fixed 1 h half-life)");
    // Fixed: two hours of `b` weigh 3/4 of a steady hour's worth; `c` outweighs them after
    // 0.81 half-lives (48 min). Drift: the past is cut to five minutes' worth, so about
    // one short half-life.
    assert!(adaptive <= 10, "{adaptive} min");
    assert!(fixed >= 40, "{fixed} min");
    assert_eq!(half_life, Some(300_000_000), "shortened while it drifts");
}

#[test]
fn the_usual_half_life_returns_once_the_new_mix_is_learned() {
    let mut tdg = Tdg::new(TdgConfig::default());
    let [a, b, c] = ["a", "b", "c"].map(|n| tdg.intern_task(n));
    let context = CallContext::first_order(a);
    let second = 1_000_000;
    for i in 0..7_200 {
        tdg.observe_call(&context, Some(b), 100, i * second);
    }
    let mut shortened = false;
    for i in 7_200..7_200 + 3_600 {
        tdg.observe_call(&context, Some(c), 100, i * second);
        shortened |= tdg.drifting();
    }
    assert!(shortened);
    assert!(!tdg.drifting());
    assert_eq!(tdg.half_life_us(), Some(3_600_000_000));
    // The drift state survives a state round trip.
    let restored = Tdg::from_state(TdgConfig::default(), tdg.state()).unwrap();
    assert_eq!(restored.half_life_us(), tdg.half_life_us());
}
