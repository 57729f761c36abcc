//! The baseline policies' tests: each one's keep-alive and pre-warm rules on small traces.

use super::*;
use crate::test_support::FixedCold;

fn end(task: u32, invocation: u64, at_us: u64) -> PolicyEvent {
    PolicyEvent::End {
        task: TaskId(task),
        invocation,
        at_us,
    }
}

fn start(task: u32, invocation: u64, at_us: u64) -> PolicyEvent {
    PolicyEvent::Start {
        task: TaskId(task),
        invocation,
        at_us,
        context: PredictContext::default(),
        reveals_route: None,
        wait_us: 0,
    }
}

#[test]
fn ttl_keeps_for_its_time() {
    let mut out = Vec::new();
    TtlPolicy::new(600).on_event(&end(1, 0, 1_000), &FixedCold(50_000), &mut out);
    assert_eq!(
        out,
        [Action::KeepAlive {
            task: TaskId(1),
            until_us: 1_600
        }]
    );
}

/// Runs a task with the given idle times (1-minute runs) and returns the last end's
/// actions and its time.
fn histogram_after(policy: &mut HistogramPolicy, task: u32, idles: &[u64]) -> (Vec<Action>, u64) {
    let mut out = Vec::new();
    let mut t = 0;
    for (i, &idle) in std::iter::once(&0).chain(idles).enumerate() {
        t += idle;
        policy.on_event(&start(task, i as u64, t), &FixedCold(50_000), &mut out);
        t += MINUTE_US;
        out.clear();
        policy.on_event(&end(task, i as u64, t), &FixedCold(50_000), &mut out);
    }
    (out, t)
}

#[test]
fn histogram_follows_the_papers_three_patterns() {
    let mut policy = HistogramPolicy::new(1.0);
    // Not seen idle yet (uncertain): the range's keep-alive, 4 h, pinned to the instance.
    let (out, t) = histogram_after(&mut policy, 0, &[]);
    assert_eq!(
        out,
        [Action::PinKeepAlive {
            task: TaskId(0),
            until_us: t + 240 * MINUTE_US
        }]
    );
    // Idle times of 30 minutes gather in one bin (CV sqrt(240) ≈ 15.5): certain from
    // the first; pre-warm at 30 min × 0.9, keep to 31 min × 1.1.
    let (out, t) = histogram_after(&mut policy, 1, &[30 * MINUTE_US]);
    assert!((policy.tasks[1].cv(240) - 240f64.sqrt()).abs() < 1e-9);
    assert_eq!(
        out,
        [Action::PreWarm {
            task: TaskId(1),
            at_us: t + 27 * MINUTE_US,
            until_us: t + (31.0 * 1.1 * MINUTE_US as f64) as u64,
            plan: None,
            reservation: None,
            probability: 1.0,
        }]
    );
    // Short idle times (head bin 0): kept loaded to the tail, 1 min × 1.1.
    let (out, t) = histogram_after(&mut policy, 2, &[10_000_000; 5]);
    assert_eq!(
        out,
        [Action::KeepAlive {
            task: TaskId(2),
            until_us: t + (1.1 * MINUTE_US as f64) as u64
        }]
    );
    // Idle times spread over 100 bins: the CV falls under 2, uncertain again.
    let spread: Vec<u64> = (0..100).map(|m| m * MINUTE_US + 1).collect();
    let (out, t) = histogram_after(&mut policy, 3, &spread);
    assert!(policy.tasks[3].cv(240) < 2.0);
    assert_eq!(
        out,
        [Action::PinKeepAlive {
            task: TaskId(3),
            until_us: t + 240 * MINUTE_US
        }]
    );
    // Idle times beyond the range (5 h, 7 h): forecast 6 h, pre-warm at 85 %, keep to 115 %.
    let hour = 60 * MINUTE_US;
    let (out, t) = histogram_after(&mut policy, 4, &[5 * hour, 7 * hour]);
    let mean = policy.tasks[4].mean_idle_us() as f64;
    assert_eq!(mean, (6 * hour) as f64);
    assert_eq!(
        out,
        [Action::PreWarm {
            task: TaskId(4),
            at_us: t + (mean * 0.85) as u64,
            until_us: t + (mean * 1.15) as u64,
            plan: None,
            reservation: None,
            probability: 1.0,
        }]
    );
    // The knob stretches the range's keep-alive and the tail, not the head.
    let mut half = HistogramPolicy::new(0.5);
    let (out, t) = histogram_after(&mut half, 0, &[]);
    assert_eq!(
        out,
        [Action::PinKeepAlive {
            task: TaskId(0),
            until_us: t + 120 * MINUTE_US
        }]
    );
}

#[test]
fn greedy_dual_evicts_cheap_rare_big_first() {
    let mut costs = Costs::new(1_000, 100);
    costs.set_cold_start_us(TaskId(1), 10_000);
    costs.set_memory_mib(TaskId(2), 1_000);
    let mut policy = GreedyDualPolicy::new(Arc::new(costs), u64::MAX);
    let mut out = Vec::new();
    for (task, times) in [(0, 1), (1, 1), (2, 5)] {
        for _ in 0..times {
            policy.on_event(&end(task, 0, 0), &FixedCold(50_000), &mut out);
        }
    }
    let p = |policy: &GreedyDualPolicy, t| {
        let instance = IdleInstance {
            task: TaskId(t),
            idle_since_us: 0,
            memory_mib: 1,
            cold_start_us: 1,
            bet: None,
            ahead: 0,
        };
        policy.evict_priority(&instance, 0)
    };
    // Priorities: task 0: 1 × 1000 / 100 = 10; task 1: 1 × 10000 / 100 = 100;
    // task 2: 5 × 1000 / 1000 = 5.
    assert!(
        p(&policy, 1) > p(&policy, 0),
        "expensive cold start kept longer"
    );
    assert!(p(&policy, 0) > p(&policy, 2), "big and cheap goes first");
    policy.on_event(
        &PolicyEvent::Evicted {
            task: TaskId(2),
            at_us: 1,
        },
        &FixedCold(50_000),
        &mut out,
    );
    policy.on_event(&end(0, 0, 2), &FixedCold(50_000), &mut out);
    assert_eq!(
        p(&policy, 0),
        5.0 + 2.0 * 10.0,
        "the clock rose to the evicted priority"
    );
}

#[test]
fn oracle_prewarms_every_arrival_just_in_time() {
    let costs = Costs::new(100, 10);
    let a = TaskId(0);
    let arrivals = [(a, 0, 10), (a, 60, 10), (a, 5_000_000, 10)];
    let mut policy = OraclePolicy::new(&arrivals, &costs);
    let mut out = Vec::new();
    policy.on_event(
        &PolicyEvent::Tick { at_us: 0 },
        &FixedCold(50_000),
        &mut out,
    );
    let announced: Vec<u64> = out
        .iter()
        .map(|x| match x {
            Action::PreWarm {
                at_us, until_us, ..
            } => {
                assert_eq!(*until_us, at_us + 10, "its window covers its run");
                *at_us
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(announced, [0, 60], "the far arrival waits for its horizon");
    out.clear();
    policy.on_event(&end(0, 1, 3_000_000), &FixedCold(50_000), &mut out);
    assert_eq!(out.len(), 1, "announced once it is within the horizon");
    assert!(out.iter().all(|x| !matches!(x, Action::KeepAlive { .. })));
}

#[test]
fn an_arrival_while_a_run_is_under_way_finds_the_task_busy() {
    let mut policy = HistogramPolicy::new(1.0);
    let mut out = Vec::new();
    let cold = FixedCold(50_000);
    let hour = 60 * MINUTE_US;
    // Run 0: 0–1 min. Run 1 starts at 1 h and runs 2 h; run 2 arrives during it.
    policy.on_event(&start(7, 0, 0), &cold, &mut out);
    policy.on_event(&end(7, 0, MINUTE_US), &cold, &mut out);
    policy.on_event(&start(7, 1, hour), &cold, &mut out);
    policy.on_event(&start(7, 2, 2 * hour), &cold, &mut out);
    let bins = &policy.tasks[7].bins;
    assert_eq!(bins[59], 1, "run 1 came 59 min after run 0 ended");
    assert_eq!(
        bins[0], 1,
        "run 2 came while run 1 ran: idle 0, not 119 min"
    );
    // Run 1's end is never heard of (dropped): once it started a whole range ago it
    // no longer makes the task look busy.
    policy.on_event(&end(7, 2, 2 * hour + MINUTE_US), &cold, &mut out);
    policy.on_event(&start(7, 3, 4 * hour), &cold, &mut out);
    assert_eq!(policy.tasks[7].bins[0], 2, "run 1 still counted as running");
    policy.on_event(&end(7, 3, 4 * hour + MINUTE_US), &cold, &mut out);
    policy.on_event(&start(7, 4, 5 * hour + 11 * MINUTE_US), &cold, &mut out);
    assert_eq!(
        policy.tasks[7].bins[70], 1,
        "run 1 forgotten 4 h after its start"
    );
    assert_eq!(policy.tasks[7].bins[0], 2);
    assert_eq!(policy.tasks[7].running.len(), 1);
}
