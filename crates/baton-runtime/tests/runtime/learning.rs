//! One conversion from execution records to the learner's input: the graph a director
//! learns live equals the graph learned by replaying its records (what a restarted server
//! does with its log), delays included, even when cold starts made the steps wait.

use crate::common::{isolation, process_spec};
use baton_core::{Tdg, TdgConfig};
use baton_trace::requests::{group_requests, TimeWindow};
use baton_trace::schema::ExecutionRecord;
use serde_json::Value;

/// The graph by names (node and edge order depends on interning order, which may differ).
fn by_names(tdg: &Tdg) -> (Vec<Value>, Vec<Value>) {
    let graph = baton_trace::render::graph_json(&tdg.clone().snapshot(), 0.0);
    let sorted = |key: &str| {
        let mut items = graph[key].as_array().unwrap().clone();
        items.sort_by_key(|v| v.to_string());
        items
    };
    (sorted("nodes"), sorted("edges"))
}

#[test]
fn a_replayed_log_teaches_the_graph_learned_live() {
    let functions = ["a", "b", "c"]
        .map(|name| process_spec(name, "upper.py", "pure = true\ntimeout_ms = 10000"))
        .to_vec();
    let (director, _) = crate::common::predicting_director(functions, isolation(), 0);
    director
        .declare_sequence("flow", vec!["a".into(), "b".into(), "c".into()])
        .expect("a valid sequence");
    let mut records: Vec<ExecutionRecord> = Vec::new();
    for payload in ["one", "two", "three"] {
        let outcome = director.invoke("flow", payload.as_bytes()).unwrap();
        records.extend(outcome.records);
    }
    let waited: u64 = records.iter().filter_map(|r| r.ready_wait_us).sum();
    assert!(waited > 0, "cold starts made steps wait");
    let live = director.with_learner(by_names);
    let mut replay = Tdg::new(TdgConfig {
        half_life_us: None,
        ..TdgConfig::default()
    });
    let (requests, _) = group_requests(&records, &mut replay, TimeWindow::default());
    assert_eq!(requests.len(), 3);
    for request in &requests {
        replay.observe_request(request);
    }
    let replayed = by_names(&replay);
    assert!(!live.1.is_empty(), "edges were learned");
    assert_eq!(live, replayed, "waits of {waited} µs in the log");
    // And the timing learned is the warm one: a→b is b's start minus a's, less the time a
    // waited for its instance, averaged over the requests (the raw difference, wait
    // included, is what a replay without the conversion would learn).
    let ts_us = |r: &ExecutionRecord| (r.ts_ns / 1_000) as f64;
    let (mut warm, mut raw) = (Vec::new(), Vec::new());
    for request in records.chunks(3) {
        let (a, b) = (&request[0], &request[1]);
        assert_eq!((a.task.as_str(), b.task.as_str()), ("a", "b"));
        let wait = a.ready_wait_us.unwrap_or(0) as f64;
        raw.push(ts_us(b) - ts_us(a));
        warm.push(ts_us(b) - ts_us(a) - wait);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (warm, raw) = (mean(&warm), mean(&raw));
    let learned = live
        .1
        .iter()
        .find(|e| e["from"] == "a" && e["to"] == "b")
        .and_then(|e| e["delay_mean_us"].as_f64())
        .expect("an a→b edge");
    eprintln!("a→b: learned {learned:.0} µs, warm {warm:.0} µs, raw {raw:.0} µs");
    assert!(
        (learned - warm).abs() <= 0.07 * warm + 50.0,
        "learned {learned}, warm {warm}"
    );
    assert!(
        (learned - raw).abs() > 0.07 * raw,
        "learned {learned} is the raw {raw}"
    );
}

/// Caller-less records (no parent, no trace: a foreign log, or functions invoked one by
/// one): `a` then, 20 ms into its run, `b`, every 2 s.
fn callerless(n: u64) -> Vec<ExecutionRecord> {
    let mut out = Vec::new();
    for k in 0..n {
        let t_ns = 1_700_000_000_000_000_000 + k * 2_000_000_000;
        for (task, offset_ms, duration_us) in [("a", 0, 100_000), ("b", 20, 30_000)] {
            out.push(ExecutionRecord {
                ts_ns: t_ns + offset_ms * 1_000_000,
                task: task.into(),
                invocation: format!("{task}{k}"),
                duration_us,
                ..ExecutionRecord::default()
            });
        }
    }
    out
}

fn director_learning(
    mining: Option<baton_core::mining::MinerConfig>,
) -> std::sync::Arc<baton_runtime::director::Director> {
    use baton_core::policy::TtlPolicy;
    use baton_core::SnapshotCell;
    let pool = baton_runtime::pool::WarmPool::new(Vec::new(), isolation());
    let tdg = Tdg::new(TdgConfig::default());
    let graph = std::sync::Arc::new(SnapshotCell::new(tdg.clone().snapshot()));
    let director =
        baton_runtime::director::Director::new(pool, tdg, graph, Box::new(TtlPolicy::new(0)));
    match mining {
        Some(config) => director.with_miner(config),
        None => director,
    }
    .into_shared()
    .unwrap()
}

#[test]
fn the_learner_mines_callers_for_calls_that_name_none() {
    let edges = |director: &baton_runtime::director::Director| director.with_learner(by_names).1;
    // Without mining, every call is a request of its own: no edge.
    let plain = director_learning(None);
    plain.learn_records(&callerless(20), None);
    assert!(edges(&plain).is_empty());
    // With it, a → b is mined and learned (the last request, held until a later call
    // passes its window, comes with the next batch).
    let mining = director_learning(Some(baton_core::mining::MinerConfig::new(500_000, true)));
    let records = callerless(21);
    mining.learn_records(&records[..40], None);
    mining.learn_records(&records[40..], None);
    let learned = edges(&mining);
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert_eq!(
        (learned[0]["from"].as_str(), learned[0]["to"].as_str()),
        (Some("a"), Some("b")),
        "{learned:?}"
    );
}
