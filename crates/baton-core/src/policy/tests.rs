//! The chain and next policies on small hand-built graphs: plans, releases, the steps they
//! consume, re-warms.

use super::*;
use crate::assembler::AssemblerConfig;
use crate::resources::ResourceVec;
use crate::test_support::branching;

#[test]
fn chain_policy_prewarms_each_step_just_in_time_and_releases() {
    let (mut tdg, [a, b, c, _]) = branching();
    let graph = Arc::new(SnapshotCell::new(tdg.snapshot()));
    let pool = ResourcePool::new(ResourceVec {
        cpu_millicores: 4000,
        memory_mib: 1024,
        ..ResourceVec::ZERO
    });
    let mut policy = ChainPolicy::new(
        graph,
        pool.clone(),
        Assembler::new(AssemblerConfig::default()),
        ChainPolicyConfig {
            keep_alive_us: 0,
            entry_keep_alive_us: 0,
            set_threshold: None,
        },
    );
    let mut actions = Vec::new();
    policy.on_event(
        &PolicyEvent::Start {
            task: a,
            invocation: 1,
            at_us: 1_000_000,
            context: PredictContext::default(),
            reveals_route: None,
        },
        &mut actions,
    );
    let prewarmed: Vec<(TaskId, u64)> = actions
        .iter()
        .filter_map(|action| match *action {
            Action::PreWarm { task, at_us, .. } => Some((task, at_us)),
            _ => None,
        })
        .collect();
    assert_eq!(prewarmed.len(), 2);
    assert_eq!(prewarmed[0].0, b);
    assert_eq!(prewarmed[1].0, c);
    assert!(
        prewarmed[0].1 > 1_000_000,
        "not all at t0: b is ready just before its delay"
    );
    assert!(prewarmed[1].1 > prewarmed[0].1);
    assert_eq!(pool.len(), 2, "both steps reserved");
    actions.clear();
    policy.on_event(&PolicyEvent::Tick { at_us: 10_000_000 }, &mut actions);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Release { .. }))
            .count(),
        2
    );
    assert!(pool.is_empty(), "reservations released with the plan");
    assert_eq!(policy.n_live_plans(), 0);
}

#[test]
fn chain_policy_rewarms_a_bursty_task_and_drops_the_rewarm_when_it_comes_early() {
    // A task alone (no graph), called in bursts 100 ms apart with 3 s between bursts;
    // a fixed keep-alive of 2 s leaves each burst's first call cold.
    let (mut tdg, [a, ..]) = branching();
    let graph = Arc::new(SnapshotCell::new(tdg.snapshot()));
    let pool = ResourcePool::new(ResourceVec {
        memory_mib: 1024,
        ..ResourceVec::ZERO
    });
    let keep = 2_000_000;
    let mut policy = ChainPolicy::new(
        graph,
        pool,
        Assembler::new(AssemblerConfig::default()),
        ChainPolicyConfig {
            keep_alive_us: keep,
            entry_keep_alive_us: keep,
            set_threshold: None,
        },
    );
    let mut actions = Vec::new();
    let mut now = 1_000_000;
    let run = |policy: &mut ChainPolicy, at: u64, actions: &mut Vec<Action>| {
        actions.clear();
        let start = PolicyEvent::Start {
            task: a,
            invocation: at,
            at_us: at,
            context: PredictContext::default(),
            reveals_route: None,
        };
        policy.on_event(&start, actions);
        let end = PolicyEvent::End {
            task: a,
            invocation: at,
            at_us: at + 1_000,
        };
        policy.on_event(&end, actions);
    };
    for i in 0..40 {
        now += if i % 4 == 0 { 3_000_000 } else { 100_000 };
        run(&mut policy, now, &mut actions);
    }
    let rewarm = actions.iter().find_map(|action| match *action {
        Action::PreWarm {
            task,
            at_us,
            until_us,
            plan: None,
            ..
        } if task == a => Some((at_us, until_us)),
        _ => None,
    });
    let (ready, until) = rewarm.expect("a re-warm for the next burst");
    let end = now + 1_000;
    assert!(
        ready > end + 500_000 && ready <= end + 3_000_000,
        "{actions:?}"
    );
    assert!(until >= end + 3_000_000, "{actions:?}");
    let kept = actions.iter().find_map(|action| match *action {
        Action::KeepAlive { until_us, .. } => Some(until_us),
        _ => None,
    });
    assert!(
        kept.is_some_and(|k| k < end + keep),
        "shorter than 2 s: {actions:?}"
    );
    // The next call comes in the burst, before the re-warm is due: it is dropped.
    run(&mut policy, now + 100_000, &mut actions);
    assert_eq!(
        actions[0],
        Action::Release {
            task: a,
            plan: None
        }
    );
}

#[test]
fn next_policy_prewarms_one_task_above_its_threshold() {
    let (mut tdg, [a, b, _, _]) = branching();
    let graph = Arc::new(SnapshotCell::new(tdg.snapshot()));
    let start = PolicyEvent::Start {
        task: a,
        invocation: 1,
        at_us: 0,
        context: PredictContext::default(),
        reveals_route: None,
    };
    let mut actions = Vec::new();
    NextPolicy::new(Arc::clone(&graph), 0.5, 1_000).on_event(&start, &mut actions);
    assert_eq!(
        actions,
        [Action::PreWarm {
            task: b,
            at_us: 0,
            until_us: 1_000,
            plan: None,
            reservation: None,
            probability: 0.6,
        }]
    );
    actions.clear();
    NextPolicy::new(graph, 0.7, 1_000).on_event(&start, &mut actions);
    assert!(actions.is_empty(), "0.6 is below the threshold");
}

#[test]
fn a_starting_step_consumes_its_own_plan_not_an_older_one() {
    // Request 1 (a at 1 s) takes the other branch, so its plan's b stays unconsumed
    // until its window ends (5 ms + 30 ms + 100 ms slack). Request 2 (a at 1.2 s) plans
    // b again; its b starts: that plan's step is consumed, not request 1's. Request 3
    // (a at 1.3 s) then gets a pre-warm for b of its own.
    let (mut tdg, [a, b, _, d]) = branching();
    let graph = Arc::new(SnapshotCell::new(tdg.snapshot()));
    let pool = ResourcePool::new(ResourceVec {
        cpu_millicores: 64_000,
        memory_mib: 64 << 10,
        ..ResourceVec::ZERO
    });
    let mut policy = ChainPolicy::new(
        graph,
        pool,
        Assembler::new(AssemblerConfig::default()),
        ChainPolicyConfig {
            keep_alive_us: 0,
            entry_keep_alive_us: 0,
            set_threshold: None,
        },
    );
    let start = |task, invocation, at_us| PolicyEvent::Start {
        task,
        invocation,
        at_us,
        context: PredictContext::default(),
        reveals_route: None,
    };
    let end = |task, invocation, at_us| PolicyEvent::End {
        task,
        invocation,
        at_us,
    };
    let prewarms_of_b = |actions: &[Action]| {
        actions
            .iter()
            .filter(|x| matches!(x, Action::PreWarm { task, .. } if *task == b))
            .count()
    };
    let mut actions = Vec::new();
    let t = 1_000_000;
    policy.on_event(&start(a, 1, t), &mut actions);
    assert_eq!(prewarms_of_b(&actions), 1, "request 1 plans b");
    for event in [
        start(d, 2, t + 8_000),
        end(d, 2, t + 13_000),
        end(a, 1, t + 50_000),
    ] {
        policy.on_event(&event, &mut actions);
    }
    actions.clear();
    policy.on_event(&start(a, 3, t + 200_000), &mut actions);
    assert_eq!(prewarms_of_b(&actions), 1, "request 2 plans b");
    policy.on_event(&start(b, 4, t + 205_000), &mut actions);
    actions.clear();
    policy.on_event(&start(a, 5, t + 300_000), &mut actions);
    assert_eq!(
        prewarms_of_b(&actions),
        1,
        "request 3 plans b: request 2's step was consumed by its own b"
    );
}
