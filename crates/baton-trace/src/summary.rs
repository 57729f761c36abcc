//! A node's traffic summarized for the cluster: requests alike become one representative
//! request whose records carry their `count`, so what a node sends grows with the variety
//! of its requests (the graph), not with their number (the traffic).
//!
//! Two requests are alike when they have the same tasks and operations in the same call
//! tree, and every step's delay after its caller, run time and use (CPU, memory, network,
//! GPU, cold start) fall in the same buckets of the learner's histograms
//! ([`baton_core::histogram`]: 1/8 of a power of two). A representative takes each
//! bucket's midpoint, so a learner that observes it `count` times holds the same
//! histograms and counts as one that observed every request. What differs: the decay
//! weight is taken at the first request's instant (a summary spans a fraction of a
//! second, the half-life minutes), a histogram's maximum is a bucket's midpoint, the drift
//! monitor sees a summary once, and arrival rhythms are not learned from summaries
//! ([`baton_core::Tdg::observe_request`]).

use crate::requests::{group_requests, TimeWindow};
use crate::schema::ExecutionRecord;
use baton_core::histogram::{bucket_of, bucket_value};
use baton_core::request::Request;
use baton_core::{Tdg, TdgConfig};
use rustc_hash::FxHashMap;

/// A summary of some records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// The representatives' records (each with its `count`).
    pub records: Vec<ExecutionRecord>,
    /// Requests summarized (a representative's count included).
    pub requests: u64,
    /// Representative requests.
    pub shapes: u64,
}

/// One step of a request's shape: names as interned in the summary's scratch learner,
/// values as histogram buckets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Step {
    task: u32,
    label: u32,
    parent: Option<u32>,
    /// After its caller's start (after the request's start for a root).
    delay: u16,
    wall: u16,
    cpu: Option<u16>,
    mem: Option<u16>,
    net: Option<u16>,
    gpu: Option<u16>,
    cold: Option<u16>,
}

fn shape_of(request: &Request) -> Vec<Step> {
    let invocations = request.invocations();
    let start = request.start_us().unwrap_or(0);
    invocations
        .iter()
        .map(|inv| {
            let since = inv
                .parent
                .and_then(|p| invocations.get(p as usize))
                .map_or(start, |parent| parent.start_us);
            Step {
                task: inv.task.0,
                label: inv.label.0,
                parent: inv.parent,
                delay: bucket_of(inv.start_us.saturating_sub(since)),
                wall: bucket_of(inv.usage.wall_us),
                cpu: inv.usage.cpu_us.map(bucket_of),
                mem: inv.usage.mem_peak_mib.map(bucket_of),
                net: inv.usage.net_bytes.map(bucket_of),
                gpu: inv.usage.gpu_us.map(bucket_of),
                cold: inv.usage.cold_start_us.map(bucket_of),
            }
        })
        .collect()
}

/// The start of each step of `shape` after the request's `start`, µs: its caller's plus
/// its delay (a caller given after its callee, or a cycle, counts from the request).
fn starts(shape: &[Step], start: u64) -> Vec<u64> {
    let mut out: Vec<Option<u64>> = vec![None; shape.len()];
    for index in 0..shape.len() {
        // Walk up to a step already placed (or a root), then back down.
        let mut chain = vec![index];
        while let Some(parent) = shape[*chain.last().unwrap_or(&index)].parent {
            let parent = parent as usize;
            if parent >= shape.len() || out[parent].is_some() || chain.contains(&parent) {
                break;
            }
            chain.push(parent);
        }
        for &step in chain.iter().rev() {
            if out[step].is_some() {
                continue;
            }
            let base = shape[step]
                .parent
                .and_then(|p| out.get(p as usize).copied().flatten())
                .unwrap_or(start);
            out[step] = Some(base + bucket_value(shape[step].delay));
        }
    }
    out.into_iter().map(|s| s.unwrap_or(start)).collect()
}

/// Summarizes `records` (whole requests of one application, `app`): requests alike become
/// one representative whose records carry their count. `prefix` makes the
/// representatives' invocation and trace ids unique (a node's name and a sequence number).
pub fn summarize(records: &[ExecutionRecord], app: Option<&str>, prefix: &str) -> Summary {
    let mut names = Tdg::new(TdgConfig::default());
    let (requests, _) = group_requests(records, &mut names, TimeWindow::default());
    // Shapes in order of first appearance: (shape, requests, first start).
    let mut index: FxHashMap<Vec<Step>, usize> = FxHashMap::default();
    let mut shapes: Vec<(Vec<Step>, u64, u64)> = Vec::new();
    for request in &requests {
        let shape = shape_of(request);
        let count = request.multiplicity();
        match index.get(&shape) {
            Some(&at) => shapes[at].1 += count,
            None => {
                index.insert(shape.clone(), shapes.len());
                shapes.push((shape, count, request.start_us().unwrap_or(0)));
            }
        }
    }
    let mut summary = Summary {
        requests: shapes.iter().map(|s| s.1).sum(),
        shapes: shapes.len() as u64,
        records: Vec::new(),
    };
    for (k, (shape, count, start)) in shapes.into_iter().enumerate() {
        let trace = format!("{prefix}-{k}");
        for (i, (step, at)) in shape.iter().zip(starts(&shape, start)).enumerate() {
            let task = names.tasks().name(step.task).to_owned();
            let label = names.labels().name(step.label);
            let ms = |bucket: u16| bucket_value(bucket) as f64 / 1000.0;
            summary.records.push(ExecutionRecord {
                ts_ns: at.saturating_mul(1_000),
                invocation: format!("{trace}-{i}"),
                duration_us: bucket_value(step.wall),
                parent: step.parent.map(|p| format!("{trace}-{p}")),
                trace: Some(trace.clone()),
                app: app.map(str::to_owned),
                cold: step.cold.map(|_| true),
                cpu_ms: step.cpu.map(ms),
                mem_peak_mib: step.mem.map(|b| bucket_value(b) as f64),
                net_bytes: step.net.map(bucket_value),
                gpu_ms: step.gpu.map(ms),
                operation: (label != task).then(|| label.to_owned()),
                cold_start_us: step.cold.map(bucket_value),
                count: Some(count),
                task,
                ..ExecutionRecord::default()
            });
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::TdgSnapshot;

    /// `n` requests of a chain a → b → c (and some a → d), with jittered delays, run times
    /// and use, and a cold start now and then.
    fn traffic(n: u64) -> Vec<ExecutionRecord> {
        let mut records = Vec::new();
        for r in 0..n {
            let t0 = 1_000_000_000 + r * 3_000; // µs
            let jitter = |k: u64| (r * 7919 + k * 104_729) % 97;
            let trace = format!("t{r}");
            let step =
                |task: &str, i: u32, parent: Option<u32>, at: u64, wall: u64| ExecutionRecord {
                    ts_ns: at * 1_000,
                    task: task.into(),
                    invocation: format!("{trace}-{i}"),
                    duration_us: wall,
                    parent: parent.map(|p| format!("{trace}-{p}")),
                    trace: Some(trace.clone()),
                    app: Some("shop".into()),
                    cpu_ms: Some((wall / 2) as f64 / 1000.0),
                    mem_peak_mib: Some(20.0 + (jitter(9) % 3) as f64),
                    cold_start_us: (r % 17 == 0).then_some(40_000 + jitter(5) * 100),
                    cold: (r % 17 == 0).then_some(true),
                    operation: (task == "a").then(|| "POST /order".to_owned()),
                    ..ExecutionRecord::default()
                };
            records.push(step("a", 0, None, t0, 900 + jitter(1)));
            if r % 5 == 4 {
                records.push(step("d", 1, Some(0), t0 + 100 + jitter(2), 300));
                continue;
            }
            records.push(step("b", 1, Some(0), t0 + 120 + jitter(2), 400 + jitter(3)));
            records.push(step("c", 2, Some(1), t0 + 300 + jitter(4), 200 + jitter(6)));
        }
        records
    }

    fn learn(records: &[ExecutionRecord]) -> TdgSnapshot {
        // No decay: the two learners must hold the same counts.
        let mut tdg = Tdg::new(TdgConfig {
            half_life_us: None,
            ..TdgConfig::default()
        });
        // Names interned in another order than the summary's.
        tdg.intern_task("unrelated");
        let (requests, _) = group_requests(records, &mut tdg, TimeWindow::default());
        for request in &requests {
            tdg.observe_request(request);
        }
        tdg.snapshot()
    }

    #[test]
    fn a_summary_teaches_what_the_requests_it_stands_for_teach() {
        let records = traffic(2_000);
        let summary = summarize(&records, Some("shop"), "n1-7");
        assert_eq!(summary.requests, 2_000);
        eprintln!(
            "{} records of 2,000 requests summarized in {} records ({} shapes)",
            records.len(),
            summary.records.len(),
            summary.shapes
        );
        assert!(
            summary.records.len() * 10 < records.len(),
            "{} records for {} (shapes {})",
            summary.records.len(),
            records.len(),
            summary.shapes
        );
        assert!(summary
            .records
            .iter()
            .all(|r| r.count.is_some() && r.app.as_deref() == Some("shop")));
        let (raw, summed) = (learn(&records), learn(&summary.records));
        let mut compared = 0;
        for (caller, target) in raw.edges() {
            let name = raw.task_name(caller);
            let other = summed.task_id(name).unwrap();
            let callee = raw.task_name(target.task);
            let twin = summed
                .edges()
                .find(|(c, t)| *c == other && summed.task_name(t.task) == callee)
                .unwrap_or_else(|| panic!("edge {name} → {callee} lost"))
                .1;
            assert!(
                (twin.probability - target.probability).abs() < 1e-9,
                "{name} → {callee}"
            );
            // The same bucket (a quantile in the top bucket is capped by the largest
            // value seen, which a summary knows only as the bucket's midpoint).
            let same = |a: u64, b: u64| bucket_of(a) == bucket_of(b);
            assert!(
                same(twin.delay_p10_us, target.delay_p10_us)
                    && same(twin.delay_p90_us, target.delay_p90_us),
                "{name} → {callee}: {twin:?} against {target:?}"
            );
            let relative = (twin.delay_mean_us as f64 - target.delay_mean_us as f64).abs()
                / target.delay_mean_us as f64;
            assert!(
                relative < 0.07,
                "{name} → {callee}: mean delay off by {relative}"
            );
            compared += 1;
        }
        assert_eq!(compared, 3, "a→b, b→c, a→d");
        for task in ["a", "b", "c", "d"] {
            let (x, y) = (
                raw.profile(raw.task_id(task).unwrap()).unwrap(),
                summed.profile(summed.task_id(task).unwrap()).unwrap(),
            );
            for (m, (p, q)) in x.metrics.iter().zip(&y.metrics).enumerate() {
                let (Some(p), Some(q)) = (p, q) else {
                    assert_eq!(p.is_some(), q.is_some(), "{task} metric {m}");
                    continue;
                };
                let same = |a: u64, b: u64| bucket_of(a) == bucket_of(b);
                assert!(
                    same(p.p50, q.p50) && same(p.p95, q.p95) && same(p.p99, q.p99),
                    "{task} metric {m}: {p:?} against {q:?}"
                );
            }
        }
        // The route's entry set: the same requests, and the same best set by name.
        let route = |s: &TdgSnapshot| {
            let set = s.entry_set(s.label_id("POST /order")).0.clone();
            let mut best: Vec<String> = set
                .best_set
                .iter()
                .map(|t| s.task_name(*t).to_owned())
                .collect();
            best.sort();
            (set.requests, best)
        };
        let (x, y) = (route(&raw), route(&summed));
        assert!((x.0 - y.0).abs() < 1e-9 && x.0 > 0.0, "{x:?} {y:?}");
        assert_eq!(x.1, y.1);
    }

    #[test]
    fn a_summary_of_summaries_adds_their_counts() {
        let records = traffic(300);
        let once = summarize(&records, None, "a");
        let twice = summarize(&once.records, None, "b");
        assert_eq!(twice.requests, 300);
        assert_eq!(twice.shapes, once.shapes);
        assert!(summarize(&[], None, "c").records.is_empty());
    }
}
