//! The simulator on small hand-built traces with known answers, and its invariants on
//! random ones: every arrival served exactly once, the same input gives the same table,
//! the oracle is never worse than another policy at the same memory.

use baton_core::exec::ColdCauses;
use baton_core::policy::spec::PolicyName;
use baton_core::request::{Invocation, Request, Usage};
use baton_core::{Costs, LabelId, Tdg, TdgConfig};
use baton_sim::engine::SimConfig;

fn policy_names() -> [&'static str; 8] {
    PolicyName::ALL.map(PolicyName::as_str)
}
use baton_sim::{PolicyResult, Simulation};
use proptest::prelude::*;

/// A request: start µs and its calls as (task, parent index, offset µs, duration µs).
type Spec = (u64, Vec<(u32, Option<u32>, u64, u64)>);

const SECOND: u64 = 1_000_000;
const MINUTE: u64 = 60 * SECOND;

/// Requests from (start µs, [(task, parent, offset µs, duration µs)]); tasks interned as
/// `t<n>`.
fn requests(tdg: &mut Tdg, specs: &[Spec]) -> Vec<Request> {
    let mut out: Vec<Request> = specs
        .iter()
        .map(|(start, calls)| {
            let invocations = calls
                .iter()
                .map(|&(task, parent, offset, duration)| {
                    let id = tdg.intern_task(&format!("t{task}"));
                    Invocation {
                        task: id,
                        label: LabelId(tdg.intern_label(&format!("t{task}")).0),
                        parent,
                        start_us: start + offset,
                        waited_us: 0,
                        usage: Usage {
                            wall_us: duration,
                            ..Usage::default()
                        },
                    }
                })
                .collect();
            Request::build(invocations).0
        })
        .collect();
    out.sort_by_key(|r| r.start_us());
    out
}

fn simulation(specs: &[Spec], train: &[Spec]) -> Simulation {
    let mut tdg = Tdg::new(TdgConfig::default());
    for request in requests(&mut tdg, train) {
        tdg.observe_request(&request);
    }
    let test = requests(&mut tdg, specs);
    Simulation::new(tdg, test, Costs::new(100_000, 100))
}

fn run(sim: &Simulation, policy: &str, knob: f64, memory_mib: u64) -> PolicyResult {
    run_causal(sim, policy, knob, memory_mib, false)
}

/// [`run`], calls arriving when their callers' runs reach them when `causal`.
fn run_causal(
    sim: &Simulation,
    policy: &str,
    knob: f64,
    memory_mib: u64,
    causal: bool,
) -> PolicyResult {
    let config = SimConfig {
        memory_mib,
        causal,
        ..SimConfig::default()
    };
    sim.run(policy, knob, &config, |_, _| {})
        .expect("known policy")
}

/// One function invoked alone at the given times (1 ms runs).
fn single(times: &[u64]) -> Vec<Spec> {
    times
        .iter()
        .map(|&t| (t, vec![(0, None, 0, 1_000)]))
        .collect()
}

#[test]
fn none_is_always_cold() {
    let sim = simulation(&single(&[0, SECOND, 2 * SECOND, 3 * SECOND]), &[]);
    let result = run(&sim, "none", 1.0, 1 << 20);
    assert_eq!(result.stats.cold_starts, 4);
    assert_eq!(result.cold_start_ratio, 1.0);
    assert_eq!(result.idle_gb_s, 0.0, "released as soon as it ends");
    assert_eq!(
        result.latency_p50_ms, 100.0,
        "each request pays one 100 ms cold start"
    );
}

#[test]
fn ttl_is_cold_exactly_after_gaps_longer_than_its_keep_alive() {
    // Keep-alive 10 min × knob 0.1 = 60 s. Gaps: 30 s (warm), 90 s (cold), 59 s (warm),
    // 61 s (cold). The first arrival is cold too.
    let mut t = 0;
    let mut times = vec![t];
    for gap in [30, 90, 59, 61] {
        t += gap * SECOND;
        times.push(t);
    }
    let sim = simulation(&single(&times), &[]);
    let result = run(&sim, "ttl", 0.1, 1 << 20);
    assert_eq!(result.stats.cold_starts, 3);
    // The first call, then twice after the keep-alive ended.
    assert_eq!(
        result.stats.cold_causes,
        ColdCauses {
            first: 1,
            expired: 2,
            ..ColdCauses::default()
        }
    );
    // Idle time: kept 60 s after each run, cut short by the next use. Runs last 1 ms, plus
    // 100 ms when cold: 0→0.101 (cold), idle to 30; 30.001, idle 60 s, expires; 120→120.101
    // (cold), idle to 179; 179.001, idle 60 s; 240 (cold) to 240.101, where the replay
    // ends: what is kept past it is not charged.
    let idle_s = (30.0 - 0.101) + 60.0 + (179.0 - 120.101) + 60.0;
    let expected_gb_s = idle_s * 100.0 / 1024.0;
    assert!(
        (result.idle_gb_s - expected_gb_s).abs() < 0.01,
        "{} vs {expected_gb_s}",
        result.idle_gb_s
    );
    // Wasted: the idle stretches that ended in an expiry, not a use (two 60 s ones).
    let wasted_gb_s = 2.0 * 60.0 * 100.0 / 1024.0;
    assert!(
        (result.wasted_gb_s - wasted_gb_s).abs() < 0.01,
        "{} vs {wasted_gb_s}",
        result.wasted_gb_s
    );
    // One function, cold 3 times in 5.
    assert_eq!(result.p75_function_cold_rate, 0.6);
}

#[test]
fn with_templates_a_cold_start_is_a_fork_and_templates_hold_memory() {
    // One function, 4 calls 1 s apart, no keep-alive: every call is cold, and with
    // templates each costs the fork (15 ms), not the 100 ms start; its template holds
    // 11 MiB over the replay (0 to 3.001 s: the last call ends 15 ms + 1 ms after 3 s).
    let mut tdg = Tdg::new(TdgConfig::default());
    let test = requests(&mut tdg, &single(&[0, SECOND, 2 * SECOND, 3 * SECOND]));
    let mut costs = Costs::new(100_000, 100);
    costs.templates = Some(baton_core::costs::TemplateCosts {
        start_us: 15_000,
        memory_mib: 11,
        spare: None,
    });
    let sim = Simulation::new(tdg, test, costs);
    let result = run(&sim, "none", 1.0, 1 << 20);
    assert_eq!(result.stats.cold_starts, 4);
    assert_eq!(result.latency_p50_ms, 15.0);
    let span_s = 3.0 + 0.015 + 0.001;
    let template_gb_s = span_s * 11.0 / 1024.0;
    assert!(
        (result.template_gb_s - template_gb_s).abs() < 1e-6,
        "{} vs {template_gb_s}",
        result.template_gb_s
    );
    assert_eq!(result.idle_gb_s, result.template_gb_s, "nothing else idles");
    // The executor times pre-warms with the same cost (its lead is 1.25 × it + 2 ms).
    assert_eq!(sim.costs().cold_start_us(baton_core::TaskId(0)), 15_000);
}

#[test]
fn the_chain_policy_holds_a_template_long_after_its_last_end_then_lets_it_go() {
    // The warmth tiers: one function (an entry: its worker kept 10 min × knob 0.01 = 6 s),
    // called at 0, 300, 1000 and 1200 s. Its template, made at deploy, is held ten
    // keep-alives, at least 10 min, after each end. So: 0 a fork (15 ms), 300 a fork,
    // 1000 from nothing (100 ms: the hold ended at 900.016 s), 1200 a fork. Every
    // baseline holds every template throughout: all four are forks.
    let mut tdg = Tdg::new(TdgConfig::default());
    let times = [0, 300 * SECOND, 1000 * SECOND, 1200 * SECOND];
    let test = requests(&mut tdg, &single(&times));
    let mut costs = Costs::new(100_000, 100);
    costs.templates = Some(baton_core::costs::TemplateCosts {
        start_us: 15_000,
        memory_mib: 11,
        spare: None,
    });
    let sim = Simulation::new(tdg, test, costs);
    let chain = run(&sim, "chain", 0.01, 1 << 20);
    assert_eq!(chain.stats.cold_starts, 4);
    assert_eq!(chain.stats.forked_starts, 3);
    assert_eq!(chain.stats.templates_started, 1);
    let mut latencies = chain.stats.request_latency_us.clone();
    latencies.sort_unstable();
    assert_eq!(latencies, [15_000, 15_000, 15_000, 100_000]);
    // Held 0 to 900.016 s, then 1000 s to the replay's end (1200.016 s).
    let held_s = 900.016 + 200.016;
    let template_gb_s = held_s * 11.0 / 1024.0;
    assert!(
        (chain.template_gb_s - template_gb_s).abs() < 1e-6,
        "{} vs {template_gb_s}",
        chain.template_gb_s
    );
    let ttl = run(&sim, "ttl", 0.01, 1 << 20);
    assert_eq!(ttl.stats.forked_starts, 4);
    assert_eq!(ttl.stats.templates_started, 0);
    assert!(ttl.template_gb_s > chain.template_gb_s);
}

#[test]
fn the_p75_function_cold_rate_ranks_functions_by_their_own_rate() {
    // Four functions, each called 4 times 2 min apart (past ttl's 60 s at knob 0.1) except
    // where noted: t0 every 10 s (cold once of 4), t1, t2, t3 every 2 min (cold 4 of 4).
    // Rates: 0.25, 1, 1, 1 → p75 (nearest rank over 4) is 1; t0 alone gives 0.25.
    let mut specs = Vec::new();
    for i in 0..4u64 {
        specs.push((i * 10 * SECOND, vec![(0, None, 0, 1_000)]));
        for task in 1..4u32 {
            specs.push((
                i * 2 * MINUTE + u64::from(task),
                vec![(task, None, 0, 1_000)],
            ));
        }
    }
    let sim = simulation(&specs, &[]);
    let result = run(&sim, "ttl", 0.1, 1 << 20);
    assert_eq!(result.stats.function_invocations, [4, 4, 4, 4]);
    assert_eq!(result.stats.function_cold_starts, [1, 4, 4, 4]);
    assert_eq!(result.p75_function_cold_rate, 1.0);
    let alone = simulation(&single(&[0, 10 * SECOND, 20 * SECOND, 30 * SECOND]), &[]);
    assert_eq!(
        run(&alone, "ttl", 0.1, 1 << 20).p75_function_cold_rate,
        0.25
    );
}

#[test]
fn cascading_cold_starts_add_up_on_the_critical_path() {
    // a calls b, then c one after the other; b calls d. With no keep-alive, all four are
    // cold: a, then b and d in sequence, then c: 4 cold starts on the critical path.
    let chain = vec![
        (0, None, 0, 100_000),
        (1, Some(0), 1_000, 30_000),
        (3, Some(1), 2_000, 10_000),
        (2, Some(0), 40_000, 30_000),
    ];
    let sim = simulation(&[(0, chain.clone())], &[]);
    let result = run(&sim, "none", 1.0, 1 << 20);
    assert_eq!(result.stats.request_critical_cold, vec![4]);
    assert_eq!(result.stats.request_latency_us, vec![400_000]);
    // Overlapping siblings run in parallel: only the slower branch counts.
    let parallel = vec![
        (0, None, 0, 100_000),
        (1, Some(0), 1_000, 30_000),
        (2, Some(0), 2_000, 30_000),
    ];
    let sim = simulation(&[(0, parallel)], &[]);
    let result = run(&sim, "none", 1.0, 1 << 20);
    assert_eq!(result.stats.request_critical_cold, vec![2]);
}

/// a → b → c, b 300 ms after a, c 300 ms after b.
fn abc(t: u64) -> Spec {
    (
        t,
        vec![
            (0, None, 0, 900_000),
            (1, Some(0), 300_000, 500_000),
            (2, Some(1), 600_000, 100_000),
        ],
    )
}

#[test]
fn chain_prewarms_a_learned_chain_before_it_is_called() {
    // Requests 11 to 33 minutes apart (longer than any keep-alive here), irregularly: b and
    // c are predicted by the chain, whatever becomes of the heads (a rhythm seen by chance
    // in a few of their gaps may have one ready).
    let gaps = [
        11, 19, 13, 23, 12, 17, 29, 14, 21, 11, 26, 15, 12, 31, 18, 13, 24, 11, 16, 27, 12, 20, 14,
        33, 11, 22, 17, 13, 28,
    ];
    let starts: Vec<u64> = std::iter::once(0)
        .chain(gaps.iter().scan(0, |t, gap| {
            *t += gap * MINUTE;
            Some(*t)
        }))
        .collect();
    let train: Vec<_> = starts[..20].iter().map(|&t| abc(t)).collect();
    let test: Vec<_> = starts[20..].iter().map(|&t| abc(t)).collect();
    let sim = simulation(&test, &train);
    let none = run(&sim, "none", 1.0, 1 << 20);
    let chain = run(&sim, "chain", 1.0, 1 << 20);
    assert_eq!(none.stats.cold_starts, 30);
    assert_eq!(none.stats.function_cold_starts, [10, 10, 10]);
    // b and c were pre-warmed in time, at every request.
    let cold = &chain.stats.function_cold_starts;
    assert_eq!(cold[1..], [0, 0], "{:?}", chain.stats);
    assert!(cold[0] <= 10);
    assert_eq!(chain.stats.late_prewarm_hits, 0);
    let ttl = run(&sim, "ttl", 1.0, 1 << 20);
    assert_eq!(
        ttl.stats.cold_starts, 30,
        "gaps outlast a 10-minute keep-alive"
    );
}

#[test]
fn a_planner_behind_the_requests_is_overtaken_by_a_call_that_comes_first() {
    // a calls b 1 ms into its run and c at 600 ms; cold starts take 100 ms. b's pre-warm is
    // due at once when a starts. A planner that carries it out later than b comes is
    // overtaken: b starts its own instance (cold) and the pre-warm is dropped, as the
    // runtime drops it. c's pre-warm, timed ahead, does not care.
    let call = |t: u64| -> Spec {
        (
            t,
            vec![
                (0, None, 0, 900_000),
                (1, Some(0), 1_000, 500_000),
                (2, Some(1), 600_000, 100_000),
            ],
        )
    };
    let starts: Vec<u64> = (0..30u64)
        .map(|i| i * 23 * MINUTE + (i % 7) * MINUTE)
        .collect();
    let train: Vec<_> = starts[..20].iter().map(|&t| call(t)).collect();
    let test: Vec<_> = starts[20..].iter().map(|&t| call(t)).collect();
    let sim = simulation(&test, &train);
    let with_lag = |lag_us: u64| {
        let config = SimConfig {
            memory_mib: 1 << 20,
            planner_lag: baton_sim::engine::PlannerLag::fixed(lag_us),
            ..SimConfig::default()
        };
        sim.run("chain", 1.0, &config, |_, _| {})
            .expect("known policy")
            .stats
    };
    let at_once = with_lag(0);
    assert_eq!(at_once.function_cold_starts[1..], [0, 0], "{at_once:?}");
    assert_eq!(at_once.prewarms_overtaken, 0);
    // b waits for its pre-warm where a was not itself pre-warmed (by its rhythm).
    assert!(at_once.late_prewarm_hits > 0, "{at_once:?}");
    // Behind by half a millisecond: the pre-warm still starts before b comes.
    let close = with_lag(500);
    assert_eq!(close.function_cold_starts[1..], [0, 0], "{close:?}");
    assert_eq!(close.prewarms_overtaken, 0);
    // Behind by 5 ms: every such b comes first, starts its own instance, and its pre-warm
    // is not started.
    let behind = with_lag(5_000);
    let overtaken = behind.prewarms_overtaken;
    assert!(overtaken > 0, "{behind:?}");
    assert_eq!(
        behind.function_cold_starts[1..],
        [overtaken, 0],
        "{behind:?}"
    );
    assert_eq!(behind.late_prewarm_hits, 0);
    assert_eq!(
        behind.prewarms_started + overtaken,
        at_once.prewarms_started,
        "the overtaken pre-warms are not started"
    );
}

#[test]
fn chain_prewarms_periodic_heads_by_their_rhythm_and_their_calls_by_the_chain() {
    // The same chain every 11 minutes: the heads' rhythm (learned in training) has each
    // head ready too. The first head of the replay is asked for when the replay begins,
    // at its own instant: it waits for its start, the one late pre-warm.
    let train: Vec<_> = (0..20).map(|i| abc(i * 11 * MINUTE)).collect();
    let test: Vec<_> = (20..30).map(|i| abc(i * 11 * MINUTE)).collect();
    let sim = simulation(&test, &train);
    let chain = run(&sim, "chain", 1.0, 1 << 20);
    assert_eq!(chain.stats.cold_starts, 0, "{:?}", chain.stats);
    assert_eq!(chain.stats.prewarm_hits, 30);
    assert_eq!(chain.stats.late_prewarm_hits, 1);
    assert_eq!(chain.stats.request_latency_us[0], 100_000);
    assert!(chain.stats.request_latency_us[1..].iter().all(|&l| l == 0));
}

#[test]
fn memory_pressure_evicts_and_is_counted() {
    // Two functions alternate; room for one instance only.
    let specs: Vec<_> = (0..6)
        .map(|i| (i * SECOND, vec![(i as u32 % 2, None, 0, 1_000)]))
        .collect();
    let sim = simulation(&specs, &[]);
    let result = run(&sim, "ttl", 1.0, 100);
    assert_eq!(result.stats.cold_starts, 6);
    assert_eq!(result.stats.evictions, 5);
    // Each function's first call, then every call after the other one evicted it.
    assert_eq!(
        result.stats.cold_causes,
        ColdCauses {
            first: 2,
            evicted: 4,
            ..ColdCauses::default()
        }
    );
    let roomy = run(&sim, "ttl", 1.0, 200);
    assert_eq!(roomy.stats.cold_starts, 2);
    assert_eq!(roomy.stats.cold_causes.first, 2);
}

#[test]
fn causally_a_call_comes_after_its_callers_cold_start() {
    // A chain t0 → t1 → t0, each step 1 ms and calling the next as it ends; a cold start
    // takes 100 ms. As recorded, the second t0 comes at 2 ms while the first still starts:
    // a third, concurrent cold start. Causally, t1 comes once t0 has started and run (101
    // ms), and the second t0 once t1 has (202 ms): t0's instance is idle by then.
    let chain = vec![
        (0, None, 0, 1_000),
        (1, Some(0), 1_000, 1_000),
        (0, Some(1), 2_000, 1_000),
    ];
    let sim = simulation(&[(0, chain)], &[]);
    let recorded = run(&sim, "ttl", 1.0, 1 << 20);
    assert_eq!(
        recorded.stats.cold_causes,
        ColdCauses {
            first: 2,
            concurrent: 1,
            ..ColdCauses::default()
        }
    );
    let causal = run_causal(&sim, "ttl", 1.0, 1 << 20, true);
    assert_eq!(
        causal.stats.cold_causes,
        ColdCauses {
            first: 2,
            ..ColdCauses::default()
        }
    );
    // Its latency: two cold starts on the critical path either way.
    assert_eq!(causal.stats.request_latency_us, vec![200_000]);
    assert_eq!(causal.stats.request_critical_cold, vec![2]);
}

#[test]
fn starts_beyond_the_nodes_slots_wait_and_may_take_an_instance_that_frees() {
    // One start slot, cold starts of 100 ms. t0 comes at 0 (cold, runs 10 ms: idle at 110
    // ms), t1 at 1 ms (no slot: it waits, starts at 100 ms), t0 again at 50 ms (no idle
    // instance, and t1 is first in line for the next slot): at 110 ms t0's instance is
    // idle and it takes it, warm, 60 ms after it came.
    let specs = vec![
        (0, vec![(0, None, 0, 10_000)]),
        (1_000, vec![(1, None, 0, 10_000)]),
        (50_000, vec![(0, None, 0, 10_000)]),
    ];
    let sim = simulation(&specs, &[]);
    let config = SimConfig {
        memory_mib: 1 << 20,
        start_slots: 1,
        ..SimConfig::default()
    };
    let result = sim
        .run("ttl", 1.0, &config, |_, _| {})
        .expect("known policy");
    assert_eq!(result.stats.cold_starts, 2);
    assert_eq!(result.stats.served, 3);
    assert_eq!(
        result.stats.request_latency_us,
        vec![100_000, 199_000, 60_000]
    );
    // Without a bound, t0's second call finds its instance busy: a third cold start.
    let free = run(&sim, "ttl", 1.0, 1 << 20);
    assert_eq!(free.stats.cold_starts, 3);
    assert_eq!(
        free.stats.request_latency_us,
        vec![100_000, 100_000, 100_000]
    );
}

#[test]
fn pre_warms_waiting_for_a_start_slot_hold_no_memory_and_keep_their_turn() {
    // Three functions called once each at 10 s, every call known to the oracle; one start
    // slot (100 ms starts) and room for two 100 MiB instances. The three pre-warms are
    // due at once: the first starts, the other two wait in line holding nothing, and each
    // starts when the slot frees. The first call's instance ends (10 ms run, not kept), so
    // the third finds room when its turn comes: no call is cold, no pre-warm fails, and the
    // later calls wait for their pre-warms in the order they were decided.
    // (A call of t9 at 0 starts the replay's clock, so the later pre-warms have their
    // lead.)
    let mut specs: Vec<Spec> = vec![(0, vec![(9, None, 0, 1_000)])];
    specs.extend((0..3).map(|task| (10 * SECOND, vec![(task, None, 0, 10_000)])));
    let sim = simulation(&specs, &specs);
    let config = SimConfig {
        memory_mib: 200,
        start_slots: 1,
        ..SimConfig::default()
    };
    let result = sim
        .run("oracle", 1.0, &config, |_, _| {})
        .expect("known policy");
    // (t9's pre-warm, due at the replay's start, is late.)
    assert_eq!(result.stats.cold_starts, 0, "{:?}", result.stats);
    assert_eq!(result.stats.prewarms_failed, 0);
    assert_eq!(result.stats.prewarms_started, 4);
    assert_eq!(result.stats.prewarm_hits, 4);
    assert_eq!(result.stats.late_prewarm_hits, 3);
    let mut latency = result.stats.request_latency_us[1..].to_vec();
    latency.sort_unstable();
    assert_eq!(latency[0], 0, "the first is ready in time");
    assert!(
        0 < latency[1] && latency[1] < latency[2],
        "the others wait their turn: {latency:?}"
    );
    // With a slot each, all three are ready in time.
    let unbounded = run(&sim, "oracle", 1.0, 1 << 20);
    assert_eq!(unbounded.stats.cold_starts, 0);
    assert_eq!(unbounded.stats.late_prewarm_hits, 1, "t9's");
}

#[test]
fn a_call_waiting_for_a_pre_warm_takes_an_instance_that_ends_first() {
    // t0 is called at 0.9 s for 250 ms and again at 1.1 s; t1 and t2 at 1 s. The oracle
    // pre-warms every call one lead (127 ms) ahead, but with one start slot of 127 ms they
    // start one after another: t0's first at 773 ms, t1's and t2's, then t0's second at
    // 1.154 s, ready at 1.281 s. The call at 1.1 s waits for whichever instance of t0 is
    // free first: the first call's, at 1.15 s (50 ms), not the late pre-warm (181 ms).
    let specs: Vec<Spec> = vec![
        (0, vec![(9, None, 0, 1_000)]),
        (900_000, vec![(0, None, 0, 250_000)]),
        (SECOND, vec![(1, None, 0, 10_000)]),
        (SECOND, vec![(2, None, 0, 10_000)]),
        (SECOND + 100_000, vec![(0, None, 0, 10_000)]),
    ];
    let sim = simulation(&specs, &specs);
    let config = SimConfig {
        memory_mib: 1 << 20,
        start_slots: 1,
        ..SimConfig::default()
    };
    let result = sim
        .run("oracle", 1.0, &config, |_, _| {})
        .expect("known policy");
    assert_eq!(result.stats.served, 5);
    assert_eq!(result.stats.cold_starts, 0);
    let latency = &result.stats.request_latency_us;
    assert_eq!(latency.last(), Some(&50_000), "{latency:?}");
}

#[test]
fn the_histograms_uncertain_window_is_pinned_to_its_instance() {
    // Calls at 0, 10 s and 20 s, then 30 min later. The first end knows no idle time
    // (uncertain): the instance is kept the range, 4 h, pinned. The next ends see 10 s idle
    // times (certain: kept 1.1 min), but the pinned deadline stands, as dslab-faas keeps a
    // container's first window: the call 30 min later is warm.
    let sim = simulation(
        &single(&[0, 10 * SECOND, 20 * SECOND, 20 * SECOND + 30 * MINUTE]),
        &[],
    );
    let result = run(&sim, "histogram", 1.0, 1 << 20);
    assert_eq!(result.stats.cold_starts, 1, "{:?}", result.stats);
    // A second instance (two calls at once) idles only after the pattern is certain: its
    // window is the tail's, not pinned, and it goes after 1.1 min.
    let mut specs = single(&[0, 10 * SECOND, 20 * SECOND]);
    specs.push((30 * SECOND, vec![(0, None, 0, 5 * SECOND)]));
    specs.push((31 * SECOND, vec![(0, None, 0, 1_000)]));
    specs.push((32 * SECOND + 10 * MINUTE, vec![(0, None, 0, 5 * SECOND)]));
    specs.push((33 * SECOND + 10 * MINUTE, vec![(0, None, 0, 1_000)]));
    let sim = simulation(&specs, &[]);
    let result = run(&sim, "histogram", 1.0, 1 << 20);
    // Cold: the first call, the call at 31 s (the first instance busy), and one of the two
    // after 10 min (only the pinned instance is left).
    assert_eq!(result.stats.cold_starts, 3, "{:?}", result.stats);
}

#[test]
fn a_call_while_every_instance_is_busy_is_a_concurrent_cold_start() {
    // Three overlapping 10 s calls of one function, then one after they all ended: two
    // extra instances are started for concurrency; the last call finds one idle.
    let specs: Vec<_> = [0, SECOND, 2 * SECOND, 30 * SECOND]
        .iter()
        .map(|&t| (t, vec![(0, None, 0, 10 * SECOND)]))
        .collect();
    let sim = simulation(&specs, &[]);
    let result = run(&sim, "ttl", 1.0, 1 << 20);
    assert_eq!(
        result.stats.cold_causes,
        ColdCauses {
            first: 1,
            concurrent: 2,
            ..ColdCauses::default()
        }
    );
    // Without keep-alive, the last call is cold again, for the end of the last instance.
    let none = run(&sim, "none", 1.0, 1 << 20);
    assert_eq!(
        none.stats.cold_causes,
        ColdCauses {
            first: 1,
            concurrent: 2,
            expired: 1,
            ..ColdCauses::default()
        }
    );
}

#[test]
fn unknown_policy_is_an_error() {
    let sim = simulation(&single(&[0]), &[]);
    let error = sim
        .run("lru", 1.0, &SimConfig::default(), |_, _| {})
        .unwrap_err();
    assert!(error.to_string().contains("unknown policy `lru`"));
}

fn random_specs() -> impl Strategy<Value = Vec<Spec>> {
    proptest::collection::vec(
        (
            0u64..600,
            proptest::collection::vec((0u32..5, 0u64..2_000, 1u64..3_000), 1..5),
        ),
        1..25,
    )
    .prop_map(|requests| {
        requests
            .into_iter()
            .map(|(start_s, calls)| {
                let calls = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, (task, offset_ms, duration_ms))| {
                        let parent = (i > 0).then_some(0);
                        let offset = if i == 0 { 0 } else { offset_ms * 1_000 };
                        (task, parent, offset, duration_ms * 1_000)
                    })
                    .collect();
                (start_s * SECOND, calls)
            })
            .collect()
    })
}

fn table(results: &[PolicyResult]) -> Vec<String> {
    // Everything but the policy's own CPU time, which is wall clock.
    results
        .iter()
        .map(|r| {
            let mut stats = r.stats.clone();
            stats.policy_ns = 0;
            format!(
                "{} {} {:?} {} {:?}",
                r.policy, r.cold_start_ratio, r.prewarm_precision, r.idle_gb_s, stats
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_arrival_is_served_once_and_runs_repeat(specs in random_specs(), memory in 100u64..1_000) {
        let train = specs.clone();
        let sim = simulation(&specs, &train);
        let first: Vec<PolicyResult> = policy_names().iter().map(|p| run(&sim, p, 1.0, memory)).collect();
        for result in &first {
            prop_assert_eq!(result.stats.served, result.stats.invocations, "{}", result.policy);
            prop_assert_eq!(result.stats.invocations as usize, sim.arrivals().len());
            prop_assert!(result.stats.cold_starts <= result.stats.invocations);
            prop_assert_eq!(result.stats.cold_causes.total(), result.stats.cold_starts, "{}", result.policy);
            let sources = result.stats.prewarm_sources;
            prop_assert_eq!(sources.route_started + sources.path_started + sources.unplanned_started, result.stats.prewarms_started, "{}", result.policy);
            prop_assert_eq!(sources.route_used + sources.path_used + sources.unplanned_used, result.stats.prewarms_used, "{}", result.policy);
            prop_assert!(sources.route_used <= sources.route_started && sources.path_used <= sources.path_started && sources.unplanned_used <= sources.unplanned_started, "{}", result.policy);
        }
        let again: Vec<PolicyResult> = policy_names().iter().map(|p| run(&sim, p, 1.0, memory)).collect();
        prop_assert_eq!(table(&first), table(&again));
        // Causally too: every arrival once, and runs repeat.
        let causal: Vec<PolicyResult> = policy_names().iter().map(|p| run_causal(&sim, p, 1.0, memory, true)).collect();
        for result in &causal {
            prop_assert_eq!(result.stats.served, result.stats.invocations, "{}", result.policy);
            prop_assert_eq!(result.stats.cold_causes.total(), result.stats.cold_starts, "{}", result.policy);
        }
        let again: Vec<PolicyResult> = policy_names().iter().map(|p| run_causal(&sim, p, 1.0, memory, true)).collect();
        prop_assert_eq!(table(&causal), table(&again));
        // With one start slot: every arrival once still.
        let config = SimConfig { memory_mib: memory, causal: true, start_slots: 1, ..SimConfig::default() };
        for policy in policy_names() {
            let result = sim.run(policy, 1.0, &config, |_, _| {}).expect("known policy");
            prop_assert_eq!(result.stats.served, result.stats.invocations, "{}", result.policy);
            prop_assert_eq!(result.stats.cold_causes.total(), result.stats.cold_starts, "{}", result.policy);
        }
    }

    #[test]
    fn the_oracle_with_room_for_everything_is_never_cold_and_wastes_no_prewarm(specs in random_specs()) {
        let sim = simulation(&specs, &specs);
        let oracle = run(&sim, "oracle", 1.0, 1 << 20);
        // One instance asked for at each arrival: no cold start, and (claims keeping
        // concurrent arrivals on separate instances) every instance it started was used.
        prop_assert_eq!(oracle.stats.cold_starts, 0);
        prop_assert_eq!(oracle.stats.prewarms_used, oracle.stats.prewarms_started);
    }
}

#[test]
fn a_very_deep_call_chain_does_not_overflow_the_stack() {
    let depth = 200_000u32;
    // Calls spaced beyond the 100 ms cold start, so instances do not pile up.
    let calls: Vec<_> = (0..depth)
        .map(|i| (i % 3, i.checked_sub(1), u64::from(i) * 200_000, 5))
        .collect();
    let sim = simulation(&[(0, calls)], &[]);
    let result = run(&sim, "none", 1.0, 1 << 30);
    assert_eq!(result.stats.request_critical_cold, vec![depth]);
}

#[test]
fn chain_rewarms_a_bursty_function_with_fewer_cold_starts_and_no_more_memory_than_ttl() {
    // One function called in bursts of four, 300 ms apart, 3 s between bursts; both
    // policies keep an instance 1.2 s after use (ttl: 10 min × 0.002; chain, for a task
    // nobody calls: 10 min × 0.002). ttl is cold at every burst's start; chain learns the
    // gaps, lets the instance go after the burst and has one ready for the next.
    let mut times = Vec::new();
    let mut t = 0;
    for _ in 0..60 {
        for _ in 0..4 {
            times.push(t);
            t += 3 * SECOND / 10;
        }
        t += 3 * SECOND;
    }
    let sim = simulation(&single(&times), &[]);
    let ttl = run(&sim, "ttl", 0.002, 1 << 20);
    let chain = run(&sim, "chain", 0.002, 1 << 20);
    eprintln!(
        "ttl: {} cold, {:.2} GB·s idle; chain: {} cold, {:.2} GB·s idle",
        ttl.stats.cold_starts, ttl.idle_gb_s, chain.stats.cold_starts, chain.idle_gb_s
    );
    assert_eq!(ttl.stats.cold_starts, 60, "every burst's first call");
    assert!(
        chain.stats.cold_starts <= 10,
        "only while it learns: {}",
        chain.stats.cold_starts
    );
    assert!(
        chain.idle_gb_s <= ttl.idle_gb_s,
        "{} vs {}",
        chain.idle_gb_s,
        ttl.idle_gb_s
    );
}

#[test]
fn chain_serves_timers_learned_in_training_warm_with_less_memory_than_ttl_and_histogram() {
    // Three jobs nothing calls: hourly, every 15 min, and twice per half hour (at :00 and
    // :20), each call anywhere in its minute (as Azure 2019's counts are expanded). Two
    // hours are learned, the next six replayed. A 10 min keep-alive covers few of the
    // gaps; histogram learns them only during the replay and holds them warm meanwhile
    // with its 4 h keep-alive, at more idle memory than chain's timed re-warms.
    let jitter = |k: u64| (k * 37 % 60) * SECOND;
    let mut specs: Vec<Spec> = Vec::new();
    for hour in 0..8u64 {
        specs.push((
            hour * 60 * MINUTE + jitter(hour),
            vec![(0, None, 0, SECOND)],
        ));
    }
    for k in 0..32u64 {
        specs.push((k * 15 * MINUTE + jitter(k + 7), vec![(1, None, 0, SECOND)]));
    }
    for k in 0..16u64 {
        for offset in [0, 20] {
            let at = k * 30 * MINUTE + offset * MINUTE + jitter(k + offset);
            specs.push((at, vec![(2, None, 0, SECOND)]));
        }
    }
    let (train, test): (Vec<Spec>, Vec<Spec>) = specs
        .into_iter()
        .partition(|(start, _)| *start < 120 * MINUTE);
    let sim = simulation(&test, &train);
    let chain = run(&sim, "chain", 1.0, 1 << 20);
    for baseline in ["ttl", "histogram"] {
        let other = run(&sim, baseline, 1.0, 1 << 20);
        eprintln!(
            "{baseline}: {} cold, {:.2} GB·s; chain: {} cold, {:.2} GB·s",
            other.stats.cold_starts, other.idle_gb_s, chain.stats.cold_starts, chain.idle_gb_s
        );
        if baseline == "ttl" {
            assert!(other.stats.cold_starts >= 20, "ttl misses the long gaps");
        }
        assert!(
            chain.stats.cold_starts <= other.stats.cold_starts,
            "{baseline}"
        );
        assert!(chain.idle_gb_s < other.idle_gb_s, "{baseline}");
    }
    assert!(
        chain.stats.cold_starts <= 2,
        "the timers' calls come warm from the first one on: {} of {}",
        chain.stats.cold_starts,
        chain.stats.invocations
    );
}
