//! The chain and next policies on small hand-built graphs: plans, releases, the steps they
//! consume, re-warms.

use super::*;
use crate::assembler::{Assembler, AssemblerConfig};
use crate::reservation::ResourcePool;
use crate::resources::ResourceVec;
use crate::test_support::{branching, FixedCold};

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
            wait_us: 0,
        },
        &FixedCold(50_000),
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
    policy.on_event(
        &PolicyEvent::Tick { at_us: 10_000_000 },
        &FixedCold(50_000),
        &mut actions,
    );
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
            wait_us: 0,
        };
        policy.on_event(&start, &FixedCold(50_000), actions);
        let end = PolicyEvent::End {
            task: a,
            invocation: at,
            at_us: at + 1_000,
        };
        policy.on_event(&end, &FixedCold(50_000), actions);
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
        wait_us: 0,
    };
    let mut actions = Vec::new();
    NextPolicy::new(Arc::clone(&graph), 0.5, 1_000).on_event(
        &start,
        &FixedCold(50_000),
        &mut actions,
    );
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
    NextPolicy::new(graph, 0.7, 1_000).on_event(&start, &FixedCold(50_000), &mut actions);
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
        wait_us: 0,
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
    policy.on_event(&start(a, 1, t), &FixedCold(50_000), &mut actions);
    assert_eq!(prewarms_of_b(&actions), 1, "request 1 plans b");
    for event in [
        start(d, 2, t + 8_000),
        end(d, 2, t + 13_000),
        end(a, 1, t + 50_000),
    ] {
        policy.on_event(&event, &FixedCold(50_000), &mut actions);
    }
    actions.clear();
    policy.on_event(&start(a, 3, t + 200_000), &FixedCold(50_000), &mut actions);
    assert_eq!(prewarms_of_b(&actions), 1, "request 2 plans b");
    policy.on_event(&start(b, 4, t + 205_000), &FixedCold(50_000), &mut actions);
    actions.clear();
    policy.on_event(&start(a, 5, t + 300_000), &FixedCold(50_000), &mut actions);
    assert_eq!(
        prewarms_of_b(&actions),
        1,
        "request 3 plans b: request 2's step was consumed by its own b"
    );
}

/// A chain policy on `tdg`'s graph with a 10 min keep-alive for every task.
fn chain_on(tdg: &mut crate::tdg::Tdg) -> ChainPolicy {
    chain_keeping(tdg, 600_000_000)
}

/// A chain policy on `tdg`'s graph keeping every task `keep_us`.
fn chain_keeping(tdg: &mut crate::tdg::Tdg, keep_us: u64) -> ChainPolicy {
    ChainPolicy::new(
        Arc::new(SnapshotCell::new(tdg.snapshot())),
        ResourcePool::new(ResourceVec {
            memory_mib: 1 << 20,
            ..ResourceVec::ZERO
        }),
        Assembler::new(AssemblerConfig::default()),
        ChainPolicyConfig {
            keep_alive_us: keep_us,
            entry_keep_alive_us: keep_us,
            set_threshold: None,
        },
    )
}

fn prewarms(actions: &[Action], of: TaskId) -> Vec<(u64, u64)> {
    actions
        .iter()
        .filter_map(|action| match *action {
            Action::PreWarm {
                task,
                at_us,
                until_us,
                plan: None,
                ..
            } if task == of => Some((at_us, until_us)),
            _ => None,
        })
        .collect()
}

const MINUTE: u64 = 60_000_000;

#[test]
fn a_timer_learned_from_a_trace_is_prewarmed_before_its_first_call_is_seen() {
    // An hourly job learned from logs (08:00, 09:00, 10:00, each call anywhere in its
    // minute), then the policy starts: its first tick asks for the 11:00 call.
    let mut tdg = crate::test_support::tdg();
    for (hour, second) in [(8, 20), (9, 50), (10, 5)] {
        let at = hour * 60 * MINUTE + second * 1_000_000;
        let request = crate::test_support::request(&mut tdg, &[("job", None, at, 2_000_000, 64)]);
        tdg.observe_request(&request);
    }
    let job = tdg.intern_task("job");
    let mut policy = chain_on(&mut tdg);
    let mut actions = Vec::new();
    let now = 10 * 60 * MINUTE + 30 * MINUTE;
    policy.on_event(
        &PolicyEvent::Tick { at_us: now },
        &FixedCold(50_000),
        &mut actions,
    );
    let asked = prewarms(&actions, job);
    assert_eq!(asked.len(), 1, "{actions:?}");
    let (ready, until) = asked[0];
    let eleven = 11 * 60 * MINUTE;
    assert!(ready <= eleven && eleven + MINUTE <= until, "{asked:?}");
    assert!(
        until - ready <= 10 * MINUTE,
        "a window, not a keep-alive: {asked:?}"
    );
    actions.clear();
    policy.on_event(
        &PolicyEvent::Tick { at_us: now + 1 },
        &FixedCold(50_000),
        &mut actions,
    );
    assert!(
        actions.is_empty(),
        "asked once per graph version: {actions:?}"
    );
}

/// Every 30 min (the odd ones 20 s late), a burst of three calls of `job` at once, each
/// running 5 s, through `policy`; the actions of the last burst.
fn bursts_every_half_hour(policy: &mut ChainPolicy, job: TaskId) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut invocation = 0;
    for k in 0..4u64 {
        actions.clear();
        let at = k * 30 * MINUTE + (k % 2) * 20_000_000;
        for i in 0..3 {
            invocation += 1;
            let start = PolicyEvent::Start {
                task: job,
                invocation,
                at_us: at + i * 1_000,
                context: PredictContext::default(),
                reveals_route: None,
                wait_us: 0,
            };
            policy.on_event(&start, &FixedCold(50_000), &mut actions);
        }
        for i in 0..3 {
            let end = PolicyEvent::End {
                task: job,
                invocation: invocation - 2 + i,
                at_us: at + 5_000_000 + i,
            };
            policy.on_event(&end, &FixedCold(50_000), &mut actions);
        }
    }
    actions
}

#[test]
fn a_live_rhythm_lets_the_instance_go_and_rewarms_as_many_as_the_burst_needed() {
    // Nothing learned before; the rhythm's window (±90 s, for a 75 % bet) is shorter than
    // the 10 min keep-alive.
    let mut tdg = crate::test_support::tdg();
    let job = tdg.intern_task("job");
    let mut policy = chain_on(&mut tdg);
    let actions = bursts_every_half_hour(&mut policy, job);
    let last_end = 3 * 30 * MINUTE + 20_000_000 + 5_000_002;
    let asked = prewarms(&actions, job);
    assert_eq!(
        asked.len(),
        3,
        "three instances for a burst of three: {actions:?}"
    );
    let next = 4 * 30 * MINUTE;
    assert!(asked
        .iter()
        .all(|&(ready, until)| ready <= next && next + 20_000_000 <= until));
    let kept = actions.iter().rev().find_map(|action| match *action {
        Action::KeepAlive { until_us, .. } => Some(until_us),
        _ => None,
    });
    assert_eq!(
        kept,
        Some(last_end + crate::arrival::EPISODE_GAP_US),
        "kept only while the burst may go on, not 10 min: {actions:?}"
    );
}

#[test]
fn a_rhythm_window_wider_than_the_keep_alive_warrants_gets_one_instance() {
    // The same bursts where a finished instance is kept 1 min: holding three instances
    // through a 3 min window for a 75 % bet costs more per expected use than the keep-alive
    // would; one is re-warmed, the burst's others start when it comes.
    let mut tdg = crate::test_support::tdg();
    let job = tdg.intern_task("job");
    let mut policy = chain_keeping(&mut tdg, MINUTE);
    let actions = bursts_every_half_hour(&mut policy, job);
    let asked = prewarms(&actions, job);
    assert_eq!(asked.len(), 1, "one instance: {actions:?}");
    let next = 4 * 30 * MINUTE;
    let (ready, until) = asked[0];
    assert!(ready <= next && next + 20_000_000 <= until, "{asked:?}");
}

#[test]
fn without_a_rhythm_a_finished_instance_keeps_the_fixed_keep_alive() {
    let mut tdg = crate::test_support::tdg();
    let job = tdg.intern_task("job");
    let mut policy = chain_on(&mut tdg);
    let mut actions = Vec::new();
    for (i, minute) in [0u64, 20, 21, 50, 100].into_iter().enumerate() {
        actions.clear();
        let at = minute * MINUTE;
        let start = PolicyEvent::Start {
            task: job,
            invocation: i as u64,
            at_us: at,
            context: PredictContext::default(),
            reveals_route: None,
            wait_us: 0,
        };
        policy.on_event(&start, &FixedCold(50_000), &mut actions);
        let end = PolicyEvent::End {
            task: job,
            invocation: i as u64,
            at_us: at + 1_000,
        };
        policy.on_event(&end, &FixedCold(50_000), &mut actions);
    }
    assert_eq!(
        actions,
        [Action::KeepAlive {
            task: job,
            until_us: 100 * MINUTE + 1_000 + 600_000_000
        }]
    );
}

#[test]
fn chain_policy_evicts_what_saves_least_cold_start_per_mib_held() {
    // a and b are called every second, c once, d every 10 s; sizes and cold starts come
    // with each instance, as the host knows them.
    let (mut tdg, [a, b, c, d]) = branching();
    let graph = Arc::new(SnapshotCell::new(tdg.snapshot()));
    let mut policy = ChainPolicy::new(
        graph,
        ResourcePool::new(ResourceVec::ZERO),
        Assembler::new(AssemblerConfig::default()),
        ChainPolicyConfig::default(),
    );
    let mut out = Vec::new();
    let mut invocation = 0;
    let mut call = |policy: &mut ChainPolicy, task: TaskId, at_us: u64| {
        invocation += 1;
        for event in [
            PolicyEvent::Start {
                task,
                invocation,
                at_us,
                context: PredictContext::default(),
                reveals_route: None,
                wait_us: 0,
            },
            PolicyEvent::End {
                task,
                invocation,
                at_us: at_us + 1_000,
            },
        ] {
            policy.on_event(&event, &FixedCold(50_000), &mut out);
        }
    };
    for i in 0..40 {
        for task in [a, b] {
            call(&mut policy, task, i * 1_000_000);
        }
    }
    call(&mut policy, c, 0);
    for at in [
        9_000_000, 19_000_000, 29_000_000, 39_000_000, 49_000_000, 59_000_000,
    ] {
        call(&mut policy, d, at);
    }
    let now = 60_000_000;
    let since = 50_000_000;
    let in_line = |task, idle_since_us, memory_mib, cold_start_us, ahead| {
        let instance = IdleInstance {
            task,
            idle_since_us,
            memory_mib,
            cold_start_us,
            bet: None,
            ahead,
        };
        policy.evict_priority(&instance, now)
    };
    let p = |task, idle_since_us, memory_mib, cold_start_us| {
        in_line(task, idle_since_us, memory_mib, cold_start_us, 0)
    };
    assert!(
        p(a, since, 512, 50_000) < p(a, since, 128, 50_000),
        "big goes first"
    );
    assert!(
        p(a, since, 128, 50_000) < p(a, since, 128, 500_000),
        "cheap goes first"
    );
    assert!(
        p(c, since, 128, 50_000) < p(b, since, 128, 50_000),
        "rare goes first"
    );
    assert!(
        in_line(a, now - 1_000, 128, 50_000, 1) < p(a, now - 2_000, 128, 50_000),
        "of one task, the one an arrival takes last goes first"
    );
    assert!(
        in_line(a, 10_000_000, 128, 50_000, 1) < in_line(a, since, 128, 50_000, 1),
        "a surplus instance ages out"
    );
    assert!(
        p(d, now - 1_000, 128, 50_000) < p(a, now - 2_000_000, 128, 50_000),
        "a task called every 10 s, just used, goes before one called every second"
    );
    assert!(
        p(a, 0, 128, 50_000) < p(d, now - 1_000, 128, 50_000),
        "a task silent for 60 of its 1 s gaps has stopped: it goes first"
    );
    assert!(p(a, now, 0, 0).is_finite(), "idle 0 µs, no size, no cost");
    assert!(
        p(a, u64::MAX, 128, 50_000).is_finite(),
        "idle since the future"
    );
    // A pre-warm asking for room, held until its claim ends 500 ms from now, against an
    // instance of the same task idle 10 s: a sure bet displaces it, a 1 % one does not.
    let bet = |probability: f64| {
        let instance = IdleInstance {
            task: a,
            idle_since_us: now,
            memory_mib: 128,
            cold_start_us: 50_000,
            bet: Some((probability, now + 500_000)),
            ahead: 0,
        };
        policy.bet_priority(&instance, now)
    };
    let idle_10s = p(a, since, 128, 50_000);
    assert!(
        bet(1.0) > idle_10s,
        "a sure bet outranks an instance idle 10 s"
    );
    assert!(bet(0.01) < idle_10s, "a 1 % bet does not");
    assert!(bet(0.5) < bet(1.0));
    let ending = IdleInstance {
        task: a,
        idle_since_us: now,
        memory_mib: 128,
        cold_start_us: 50_000,
        bet: Some((1.0, now)),
        ahead: 0,
    };
    assert!(
        policy.evict_priority(&ending, now).is_finite(),
        "claim ending now"
    );
}

#[test]
fn a_baselines_prewarm_evicts_nothing() {
    let bet = IdleInstance {
        task: TaskId(0),
        idle_since_us: 5,
        memory_mib: 128,
        cold_start_us: 50_000,
        bet: Some((1.0, 10)),
        ahead: 0,
    };
    let policy = crate::policy::baselines::TtlPolicy::new(1_000);
    assert_eq!(policy.bet_priority(&bet, 5), f64::NEG_INFINITY);
    assert_eq!(
        policy.evict_priority(&bet, 5),
        5.0,
        "an unused pre-warm: least recently used, as any"
    );
}

#[test]
fn chain_policy_keeps_a_bursts_surplus_as_long_as_such_bursts_come() {
    // Every 10 s two calls of a run at once (a called task: not an entry); the one that
    // ends while the other still runs is kept 1.5 × 10 s, the last one the fixed 1 s.
    let (mut tdg, [a, b, _, _]) = branching();
    let graph = Arc::new(SnapshotCell::new(tdg.snapshot()));
    let mut policy = ChainPolicy::new(
        graph,
        ResourcePool::new(ResourceVec::ZERO),
        Assembler::new(AssemblerConfig::default()),
        ChainPolicyConfig {
            keep_alive_us: 1_000_000,
            entry_keep_alive_us: 600_000_000,
            set_threshold: None,
        },
    );
    let context = PredictContext {
        grand_caller: Some(b),
        ..PredictContext::default()
    };
    let keeps = |policy: &mut ChainPolicy, at_us: u64| {
        let mut out = Vec::new();
        for (invocation, offset) in [(1, 0), (2, 1_000)] {
            let start = PolicyEvent::Start {
                task: a,
                invocation: at_us + invocation,
                at_us: at_us + offset,
                context,
                reveals_route: None,
                wait_us: 0,
            };
            policy.on_event(&start, &FixedCold(50_000), &mut out);
        }
        let mut kept = Vec::new();
        for (invocation, offset) in [(1, 5_000), (2, 6_000)] {
            let mut out = Vec::new();
            let end = PolicyEvent::End {
                task: a,
                invocation: at_us + invocation,
                at_us: at_us + offset,
            };
            policy.on_event(&end, &FixedCold(50_000), &mut out);
            kept.extend(out.iter().filter_map(|action| match *action {
                Action::KeepAlive { task, until_us } if task == a => {
                    Some(until_us - (at_us + offset))
                }
                _ => None,
            }));
        }
        kept
    };
    assert_eq!(
        keeps(&mut policy, 0),
        [1_000_000, 1_000_000],
        "no burst seen yet"
    );
    let mut last = Vec::new();
    for i in 1..20 {
        last = keeps(&mut policy, i * 10_000_000);
    }
    assert_eq!(last[1], 1_000_000, "the last to end: the fixed keep-alive");
    let surplus = last[0] as f64;
    assert!(
        (14_000_000.0..16_000_000.0).contains(&surplus),
        "the one ending while the other runs: 1.5 × 10 s, got {surplus}"
    );
}
