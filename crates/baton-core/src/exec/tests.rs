//! The plan executor's tests: lead times, which instance an arrival or a pre-warm takes,
//! claims and run times, and the keep-alives and trail it keeps.

use super::*;
use crate::policy::baselines::TtlPolicy;

#[test]
fn line_up_counts_the_instances_of_a_task_an_arrival_takes_first() {
    let instance = |task: u32, idle_since_us: u64, bet: bool| IdleInstance {
        task: TaskId(task),
        idle_since_us,
        memory_mib: 128,
        cold_start_us: 50_000,
        bet: bet.then_some((0.5, 1_000)),
        ahead: 99,
    };
    let listed = [
        instance(0, 10, false),
        instance(1, 20, false),
        instance(0, 30, false),
        instance(0, 5, true),
        instance(0, 20, false),
    ];
    let ahead = |reuse| {
        let mut instances = listed;
        line_up(&mut instances, reuse);
        instances.map(|i| i.ahead)
    };
    assert_eq!(ahead(Reuse::Recent), [2, 0, 0, 0, 1]);
    assert_eq!(ahead(Reuse::Oldest), [0, 0, 2, 0, 1]);
}

fn c(id: u64, ready_at: u64, keep_until: u64, idle_since: u64, claimed: bool) -> Candidate<u64> {
    Candidate {
        id,
        ready_at,
        keep_until,
        idle_since,
        claims: if claimed { FULL_CLAIMS } else { 0.0 },
    }
}

#[test]
fn pre_warms_start_one_lead_before_their_ready_time_never_in_the_past() {
    assert_eq!(lead_us(100_000), 127_000);
    assert_eq!(prewarm_start_us(500_000, 100_000, 0), 373_000);
    assert_eq!(prewarm_start_us(500_000, 1_000_000, 7), 7);
    assert_eq!(prewarm_start_us(u64::MAX, u64::MAX, 0), 0, "no overflow");
}

#[test]
fn an_arrival_takes_the_ready_instance_idle_the_shortest_time_else_the_first_starting() {
    let all = [
        c(1, 0, 900, 40, false),
        c(2, 0, 500, 20, false),
        c(3, 0, 500, 30, false),
        c(4, 200, 2_000, 0, true),
    ];
    assert_eq!(
        choose_for_arrival(all, 100, Reuse::Recent),
        Some(1),
        "idle latest, though kept longest: the others may age out"
    );
    assert_eq!(
        choose_for_arrival([c(8, 0, 900, 30, false), all[2]], 100, Reuse::Recent),
        Some(3),
        "idle as long: expires first"
    );
    assert_eq!(
        choose_for_arrival(
            [all[0], all[1], c(6, 0, 2_000, 0, true)],
            100,
            Reuse::Recent
        ),
        Some(6),
        "claimed first"
    );
    assert_eq!(
        choose_for_arrival([all[3], c(5, 150, 0, 0, false)], 100, Reuse::Recent),
        Some(4),
        "starting, claimed first (a late pre-warm's own step)"
    );
    assert_eq!(
        choose_for_arrival(
            [c(7, 300, 0, 0, false), c(5, 150, 0, 0, false)],
            100,
            Reuse::Recent
        ),
        Some(5),
        "starting, ready first"
    );
    assert_eq!(
        choose_for_arrival(Vec::<Candidate<u64>>::new(), 100, Reuse::Recent),
        None
    );
    // Named on the command line and back.
    for reuse in Reuse::ALL {
        assert_eq!(reuse.to_string().parse::<Reuse>(), Ok(reuse));
    }
    assert_eq!("lru".parse::<Reuse>(), Err(UnknownReuse("lru".into())));
    // Oldest: the one idle the longest, ties again by expiry; claims still come first.
    assert_eq!(choose_for_arrival(all, 100, Reuse::Oldest), Some(2));
    assert_eq!(
        choose_for_arrival([c(8, 0, 400, 20, false), all[1]], 100, Reuse::Oldest),
        Some(8),
        "idle as long: expires first"
    );
    assert_eq!(
        choose_for_arrival([all[1], c(6, 0, 2_000, 90, true)], 100, Reuse::Oldest),
        Some(6),
        "claimed first"
    );
}

#[test]
fn run_times_jump_to_a_longer_run_and_sink_slowly_and_lengthen_claims() {
    let start = |invocation, at_us| PolicyEvent::Start {
        task: TaskId(2),
        invocation,
        at_us,
        context: Default::default(),
        reveals_route: None,
        wait_us: 0,
    };
    let end = |invocation, at_us| PolicyEvent::End {
        task: TaskId(2),
        invocation,
        at_us,
    };
    let mut runs = RunTimes::default();
    assert_eq!(runs.run_us(TaskId(2)), 0, "nothing seen");
    for event in [start(1, 0), start(2, 10), end(2, 1_010), end(1, 8_000)] {
        runs.observe(&event);
    }
    assert_eq!(runs.run_us(TaskId(2)), 8_000, "the longer run");
    runs.observe(&start(3, 9_000));
    runs.observe(&end(3, 9_000));
    assert_eq!(runs.run_us(TaskId(2)), 7_000, "an eighth towards 0");
    runs.observe(&end(99, 20_000));
    assert_eq!(
        runs.run_us(TaskId(2)),
        7_000,
        "an end never started is ignored"
    );
    assert_eq!(runs.run_us(TaskId(7)), 0);
    // The executor lengthens a pre-warm's claim by the run time it saw.
    let mut executor = Executor::new(Box::new(crate::policy::baselines::OraclePolicy::new(
        &[(TaskId(2), 50_000, 1_000), (TaskId(2), 5_000_000, 1_000)],
        &Costs::new(10_000, 64),
    )));
    let mut out = Vec::new();
    let tick = PolicyEvent::Tick { at_us: 3_000_000 };
    for event in [start(1, 0), end(1, 4_000), tick] {
        executor.handle(&event, &Costs::new(10_000, 64), &mut out);
    }
    let claims: Vec<_> = out
        .iter()
        .filter_map(|d| match *d {
            Decision::Prewarm {
                until_us,
                claim_until_us,
                ..
            } => Some((until_us, claim_until_us)),
            _ => None,
        })
        .collect();
    assert_eq!(
        claims,
        [(51_000, 51_000), (5_001_000, 5_005_000)],
        "announced before a run was seen, then after one of 4 ms"
    );
    assert_eq!(executor.runs.run_us(TaskId(2)), 4_000);
}

#[test]
fn a_prewarm_claims_the_oldest_unclaimed_instance_ready_in_time() {
    let all = [
        c(7, 0, 0, 0, false),
        c(3, 0, 0, 0, true),
        c(5, 400, 0, 0, false),
    ];
    assert_eq!(choose_for_prewarm(all, 100, 50, 1.0), Some(7));
    assert_eq!(choose_for_prewarm(all, 500, 50, 1.0), Some(5));
    assert_eq!(choose_for_prewarm([all[1]], 500, 50, 1.0), None, "claimed");
}

#[test]
fn pre_warms_share_an_instance_while_their_probabilities_add_up_to_one_use() {
    let with = |id, claims| Candidate {
        claims,
        ..c(id, 0, 0, 0, false)
    };
    let one = [with(1, 0.4)];
    assert_eq!(choose_for_prewarm(one, 0, 0, 0.6), Some(1), "0.4 + 0.6");
    assert_eq!(
        choose_for_prewarm(one, 0, 0, 0.7),
        None,
        "0.4 + 0.7: start one"
    );
    assert_eq!(
        choose_for_prewarm([with(1, 0.5), with(2, 0.2), with(3, 0.2)], 0, 0, 0.5),
        Some(2),
        "the least claimed, then the oldest"
    );
    assert_eq!(choose_for_prewarm(one, 0, 0, f64::NAN), None, "NaN is sure");
    assert_eq!(choose_for_prewarm([with(1, 0.995)], 0, 0, 0.0), None);
    assert_eq!(claim_weight(-1.0), MIN_CLAIM);
    assert_eq!(claim_weight(7.0), 1.0);
    // A partly claimed instance is a claimed one to an arrival.
    assert_eq!(
        choose_for_arrival([c(4, 0, 100, 0, false), with(9, 0.1)], 5, Reuse::Recent),
        Some(9)
    );
}

#[test]
fn the_executor_times_keep_alives_and_keeps_a_trail() {
    let mut executor = Executor::new(Box::new(TtlPolicy::new(1_000)));
    executor.keep_trail();
    let mut out = Vec::new();
    let costs = Costs::new(50, 64);
    executor.handle(
        &PolicyEvent::End {
            task: TaskId(3),
            invocation: 1,
            at_us: 10,
        },
        &costs,
        &mut out,
    );
    assert_eq!(
        out,
        [Decision::KeepAlive {
            task: TaskId(3),
            until_us: 1_010
        }]
    );
    assert_eq!(executor.take_trail(), [(10, out[0])]);
    assert!(executor.take_trail().is_empty());
}
