//! Counters kept by the server from every invocation's records, and the Prometheus text
//! exposition of them together with the runtime's own counters.

use baton_runtime::director::StepFacts;
use baton_runtime::pool::Warmth;
use baton_trace::schema::ExecutionRecord;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the hop-latency histogram, µs.
pub const HOP_BUCKETS_US: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 10_000.0, 100_000.0,
];

/// Per-function counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunctionCounts {
    /// Steps run.
    pub invocations: u64,
    /// Steps that started cold.
    pub cold_starts: u64,
    /// Steps served by a pre-warmed instance.
    pub prewarm_hits: u64,
    /// Steps that failed.
    pub failures: u64,
}

#[derive(Debug, Default)]
struct Inner {
    functions: BTreeMap<String, FunctionCounts>,
    hop_buckets: [u64; HOP_BUCKETS_US.len()],
    hop_count: u64,
    hop_sum_us: f64,
    /// Steps that had a predecessor (a prediction could have served them).
    predictable: u64,
    /// Of those, steps a pre-warm served.
    predicted: u64,
    requests: u64,
    rejected: u64,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one request's records, with their typed facts.
    pub fn observe(&self, records: &[ExecutionRecord], steps: &[StepFacts]) {
        let mut inner = self.lock();
        inner.requests += 1;
        for (record, facts) in records.iter().zip(steps) {
            let prewarmed = facts.warmth == Some(Warmth::Prewarmed);
            let counts = inner.functions.entry(record.task.clone()).or_default();
            counts.invocations += 1;
            counts.cold_starts += u64::from(record.cold == Some(true));
            counts.prewarm_hits += u64::from(prewarmed);
            counts.failures += u64::from(
                record
                    .status
                    .is_some_and(|s| s != baton_trace::schema::Status::Ok),
            );
            if record.parent.is_some() {
                inner.predictable += 1;
                inner.predicted += u64::from(prewarmed);
            }
            if let Some((ns, _)) = facts.hop_ns {
                let us = ns as f64 / 1e3;
                inner.hop_count += 1;
                inner.hop_sum_us += us;
                if let Some(bucket) = HOP_BUCKETS_US.iter().position(|&b| us <= b) {
                    inner.hop_buckets[bucket] += 1;
                }
            }
        }
    }

    /// Counts a request refused because its function's queue was full.
    pub fn rejected(&self) {
        self.lock().rejected += 1;
    }

    /// The counts of `function`.
    pub fn function(&self, function: &str) -> FunctionCounts {
        self.lock()
            .functions
            .get(function)
            .copied()
            .unwrap_or_default()
    }

    /// Fraction of steps with a predecessor that a pre-warm served.
    pub fn prediction_hit_rate(&self) -> f64 {
        let inner = self.lock();
        inner.predicted as f64 / inner.predictable.max(1) as f64
    }

    /// Renders the server's counters (the caller appends the runtime's gauges).
    pub fn render(&self, out: &mut String) {
        let inner = self.lock();
        fn family(out: &mut String, name: &str, kind: &str, help: &str) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        family(
            out,
            "baton_requests_total",
            "counter",
            "Invocations received (requests).",
        );
        let _ = writeln!(out, "baton_requests_total {}", inner.requests);
        family(
            out,
            "baton_requests_rejected_total",
            "counter",
            "Requests refused with 429 because the function's queue was full.",
        );
        let _ = writeln!(out, "baton_requests_rejected_total {}", inner.rejected);
        for (name, help, get) in [
            (
                "baton_invocations_total",
                "Steps run, by function.",
                (|c: &FunctionCounts| c.invocations) as fn(&FunctionCounts) -> u64,
            ),
            (
                "baton_cold_starts_total",
                "Steps that started cold, by function.",
                |c| c.cold_starts,
            ),
            (
                "baton_prewarm_hits_total",
                "Steps served by a pre-warmed instance, by function.",
                |c| c.prewarm_hits,
            ),
            (
                "baton_failures_total",
                "Steps that failed, by function.",
                |c| c.failures,
            ),
        ] {
            family(out, name, "counter", help);
            for (function, counts) in &inner.functions {
                let _ = writeln!(
                    out,
                    "{name}{{function=\"{}\"}} {}",
                    escape(function),
                    get(counts)
                );
            }
        }
        family(
            out,
            "baton_hop_latency_us",
            "histogram",
            "Hand-off latency: previous step's output to the next step holding its input, µs.",
        );
        let mut cumulative = 0;
        for (bound, count) in HOP_BUCKETS_US.iter().zip(inner.hop_buckets) {
            cumulative += count;
            let _ = writeln!(
                out,
                "baton_hop_latency_us_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "baton_hop_latency_us_bucket{{le=\"+Inf\"}} {}",
            inner.hop_count
        );
        let _ = writeln!(out, "baton_hop_latency_us_sum {}", inner.hop_sum_us);
        let _ = writeln!(out, "baton_hop_latency_us_count {}", inner.hop_count);
        family(
            out,
            "baton_prediction_hit_ratio",
            "gauge",
            "Of the steps with a predecessor, the fraction a pre-warm served.",
        );
        let _ = writeln!(
            out,
            "baton_prediction_hit_ratio {}",
            inner.predicted as f64 / inner.predictable.max(1) as f64
        );
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
