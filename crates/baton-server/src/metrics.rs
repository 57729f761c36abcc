//! The server's metrics, kept and encoded by `prometheus-client`: per-function counters and
//! histograms (step duration, cold start) in base units, hop latency, requests, and what
//! a pre-warm served; at each scrape, a collector reads the node's gauges (bytes), the
//! runtime's counters and, in a cluster, the cluster's. Exposed in the Prometheus text
//! format 0.0.4 (`promtool check metrics` accepts it, and so does a Prometheus scrape).
//!
//! Counting takes no lock of its own: counters and histograms are atomics, and a
//! function's series are found under the family's read lock.

use crate::cluster::Cluster;
use crate::otlp_export::ExportCounters;
use baton_core::ResourcePool;
use baton_runtime::director::{Director, StepFacts};
use baton_runtime::pool::Warmth;
use baton_trace::schema::ExecutionRecord;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Histogram bucket bounds, seconds: 1 µs to 10 s, 1–2.5–5 per decade.
pub const BUCKETS_S: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `Content-Type` of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

/// What kind of entry the cluster refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: String,
}

/// A function and the warmth tier its step's instance came from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    function: String,
    tier: String,
}

type Histograms = Family<FunctionLabel, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS_S)
}

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

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Counter,
    rejected: Counter,
    invocations: Family<FunctionLabel, Counter>,
    cold_starts: Family<FunctionLabel, Counter>,
    prewarm_hits: Family<FunctionLabel, Counter>,
    failures: Family<FunctionLabel, Counter>,
    tiers: Family<TierLabel, Counter>,
    duration: Histograms,
    cold_start: Histograms,
    hop: Histogram,
    predictable: Counter,
    predicted: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::default(),
            requests: Counter::default(),
            rejected: Counter::default(),
            invocations: Family::default(),
            cold_starts: Family::default(),
            prewarm_hits: Family::default(),
            failures: Family::default(),
            tiers: Family::default(),
            duration: Family::new_with_constructor(histogram),
            cold_start: Family::new_with_constructor(histogram),
            hop: histogram(),
            predictable: Counter::default(),
            predicted: Counter::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "baton_requests",
            "Invocations received (requests)",
            metrics.requests.clone(),
        );
        r.register(
            "baton_requests_rejected",
            "Requests refused with 429 because the function's queue was full",
            metrics.rejected.clone(),
        );
        r.register(
            "baton_invocations",
            "Steps run, by function",
            metrics.invocations.clone(),
        );
        r.register(
            "baton_cold_starts",
            "Steps that started cold, by function",
            metrics.cold_starts.clone(),
        );
        r.register(
            "baton_prewarm_hits",
            "Steps served by a pre-warmed instance, by function",
            metrics.prewarm_hits.clone(),
        );
        r.register(
            "baton_failures",
            "Steps that failed, by function",
            metrics.failures.clone(),
        );
        r.register(
            "baton_steps_by_tier",
            "Steps by function and by what their instance was made from (the warmth tier): instance (a wasm instance made ahead), compiled (instantiated from the compiled module), worker (a warm worker), spare (a worker its template forked ahead, taken by a cold start), forked (a worker forked from its template), spawned (a worker started from nothing)",
            metrics.tiers.clone(),
        );
        r.register_with_unit(
            "baton_step_duration",
            "A step's run time, by function",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        r.register_with_unit(
            "baton_cold_start_duration",
            "What a cold step waited for its instance, by function",
            Unit::Seconds,
            metrics.cold_start.clone(),
        );
        r.register_with_unit(
            "baton_hop_latency",
            "Hand-off: the previous step's output to the next step holding its input",
            Unit::Seconds,
            metrics.hop.clone(),
        );
        r.register(
            "baton_predictable_steps",
            "Steps with a predecessor (a prediction could have served them)",
            metrics.predictable.clone(),
        );
        r.register(
            "baton_predicted_steps",
            "Steps with a predecessor that a pre-warm served",
            metrics.predicted.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Adds what is read at each scrape: the node's gauges and the runtime's (and the
    /// cluster's) counters.
    pub(crate) fn collect_node(
        &mut self,
        director: Arc<Director>,
        reservations: ResourcePool,
        cluster: Option<Arc<Cluster>>,
        otlp: Option<Arc<ExportCounters>>,
        disk: (Arc<baton_store::Store>, Arc<crate::DiskCounters>),
    ) {
        self.registry.register_collector(Box::new(NodeCollector {
            director,
            reservations,
            cluster,
            otlp,
            store: disk.0,
            disk: disk.1,
        }));
    }

    /// Counts one request's records, with their typed facts.
    pub fn observe(&self, records: &[ExecutionRecord], steps: &[StepFacts]) {
        self.requests.inc();
        for (record, facts) in records.iter().zip(steps) {
            let label = FunctionLabel {
                function: record.task.clone(),
            };
            let prewarmed = facts.warmth == Some(Warmth::Prewarmed);
            self.invocations.get_or_create(&label).inc();
            // Every function's series exist from its first step, at 0 if need be.
            let cold_starts = self.cold_starts.get_or_create(&label);
            let prewarm_hits = self.prewarm_hits.get_or_create(&label);
            let failures = self.failures.get_or_create(&label);
            if record.cold == Some(true) {
                cold_starts.inc();
                if let Some(us) = record.cold_start_us {
                    self.cold_start
                        .get_or_create(&label)
                        .observe(us as f64 / 1e6);
                }
            }
            if prewarmed {
                prewarm_hits.inc();
            }
            if let Some(tier) = facts.tier {
                self.tiers
                    .get_or_create(&TierLabel {
                        function: record.task.clone(),
                        tier: tier.as_str().to_owned(),
                    })
                    .inc();
            }
            if record
                .status
                .is_some_and(|s| s != baton_trace::schema::Status::Ok)
            {
                failures.inc();
            }
            drop((cold_starts, prewarm_hits, failures));
            self.duration
                .get_or_create(&label)
                .observe(record.duration_us as f64 / 1e6);
            if record.parent.is_some() {
                self.predictable.inc();
                if prewarmed {
                    self.predicted.inc();
                }
            }
            if let Some((ns, _)) = facts.hop_ns {
                self.hop.observe(ns as f64 / 1e9);
            }
        }
    }

    /// Counts a request refused because its function's queue was full.
    pub fn rejected(&self) {
        self.rejected.inc();
    }

    /// The counts of `function`.
    pub fn function(&self, function: &str) -> FunctionCounts {
        let label = FunctionLabel {
            function: function.to_owned(),
        };
        let read =
            |family: &Family<FunctionLabel, Counter>| family.get(&label).map_or(0, |c| c.get());
        FunctionCounts {
            invocations: read(&self.invocations),
            cold_starts: read(&self.cold_starts),
            prewarm_hits: read(&self.prewarm_hits),
            failures: read(&self.failures),
        }
    }

    /// Fraction of steps with a predecessor that a pre-warm served.
    pub fn prediction_hit_rate(&self) -> f64 {
        self.predicted.get() as f64 / self.predictable.get().max(1) as f64
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!("metrics not encoded: {error}");
        }
        out
    }
}

/// What a scrape reads from the node itself.
#[derive(Debug)]
struct NodeCollector {
    director: Arc<Director>,
    reservations: ResourcePool,
    cluster: Option<Arc<Cluster>>,
    otlp: Option<Arc<ExportCounters>>,
    store: Arc<baton_store::Store>,
    disk: Arc<crate::DiskCounters>,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        let pool = self.director.pool();
        let mib = |m: u64| i64::try_from(m << 20).unwrap_or(i64::MAX);
        gauge(
            e,
            "baton_reservations",
            "Reservations held in the resource pool",
            None,
            self.reservations.len() as i64,
        )?;
        counter(
            e,
            "baton_reservation_preemptions",
            "Speculative reservations preempted by committed demand",
            self.reservations.n_preemptions(),
        )?;
        gauge(
            e,
            "baton_warm_instances",
            "Idle warm worker processes",
            None,
            pool.idle().len() as i64,
        )?;
        gauge(
            e,
            "baton_idle_memory",
            "Declared memory of idle warm workers",
            Some(&Unit::Bytes),
            mib(pool.idle_memory_mib()),
        )?;
        gauge(
            e,
            "baton_template_memory",
            "Measured memory (PSS) of the functions' templates",
            Some(&Unit::Bytes),
            mib(pool.template_memory_mib()),
        )?;
        let (half_life_us, drifting) = {
            let graph = self.director.graph().load();
            (graph.half_life_us(), graph.drifting())
        };
        gauge(
            e,
            "baton_learner_half_life",
            "Half-life of the learner's decay (shortened while the request mix drifts)",
            Some(&Unit::Seconds),
            half_life_us.map_or(0, |us| i64::try_from(us / 1_000_000).unwrap_or(i64::MAX)),
        )?;
        gauge(
            e,
            "baton_learner_drifting",
            "1 while recent calls are predicted clearly worse than usual (the mix drifts)",
            None,
            i64::from(drifting),
        )?;
        gauge(
            e,
            "baton_store_records",
            "Bytes of the execution records kept (--retain-mib, --retain-records)",
            Some(&Unit::Bytes),
            self.store
                .executions_bytes()
                .map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        )?;
        counter(
            e,
            "baton_store_records_pruned",
            "Execution records removed by the retention rule",
            self.disk.records_pruned.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "baton_store_record_bytes_pruned",
            "Bytes of the execution records removed by the retention rule",
            self.disk.record_bytes_pruned.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "baton_uploads_removed",
            "Uploaded modules and code directories removed once no function used them",
            self.disk.uploads_removed.load(Ordering::Relaxed),
        )?;
        // The runtime's counters, the same set `/v1/pool` shows.
        for (name, help, value) in self.director.counters().read() {
            counter(e, &format!("baton_runtime_{name}"), help, value)?;
        }
        if let Some(cluster) = &self.cluster {
            let c = &cluster.counters;
            for (name, help, value) in [
                (
                    "records_published",
                    "Record batches published to the cluster",
                    &c.records_published,
                ),
                (
                    "requests_summarized",
                    "This node's requests summarized for the cluster",
                    &c.requests_summarized,
                ),
                (
                    "summary_records",
                    "Records in those summaries (requests alike share one representative)",
                    &c.summary_records,
                ),
                (
                    "records_dropped",
                    "Record batches not published (backlog full or refused)",
                    &c.records_dropped,
                ),
                (
                    "records_learned",
                    "Invocations learned from other nodes' summaries",
                    &c.records_learned,
                ),
                (
                    "records_redelivered",
                    "Record messages delivered again after they were learned, skipped",
                    &c.records_redelivered,
                ),
                (
                    "installed",
                    "Functions installed from the cluster's registry",
                    &c.installed,
                ),
                (
                    "pending_shared",
                    "Registry changes made here and shared later (NATS was unreachable, or another node wrote in between)",
                    &c.pending_shared,
                ),
                (
                    "install_failed",
                    "Registry entries that could not be installed here",
                    &c.install_failed,
                ),
                (
                    "invocations_run",
                    "Queued invocations this node ran to an end",
                    &c.invocations_run,
                ),
                (
                    "invocations_rerun",
                    "Of them, re-runs of invocations a stopped node had claimed",
                    &c.invocations_rerun,
                ),
                (
                    "invocations_interrupted",
                    "Invocations a stopped node had claimed, reported failed (not pure)",
                    &c.invocations_interrupted,
                ),
                (
                    "forwarded",
                    "Synchronous invocations handed to a node with an idle worker",
                    &c.forwarded,
                ),
                (
                    "served_for_others",
                    "Synchronous invocations other nodes handed to this one",
                    &c.served_for_others,
                ),
            ] {
                counter(
                    e,
                    &format!("baton_cluster_{name}"),
                    help,
                    value.load(Ordering::Relaxed),
                )?;
            }
            let mut family = e.encode_descriptor(
                "baton_cluster_rejected",
                "Entries and messages read from NATS and refused: unsigned, signed by another key, or replayed",
                None,
                MetricType::Counter,
            )?;
            for purpose in crate::cluster::trust::Purpose::ALL {
                let label = WhatLabel {
                    what: purpose.as_str().to_owned(),
                };
                let value = c.rejected[purpose.index()].load(Ordering::Relaxed);
                ConstCounter::new(value).encode(family.encode_family(&label)?)?;
            }
        }
        if let Some(otlp) = &self.otlp {
            for (name, help, value) in [
                (
                    "exported",
                    "Spans the OTLP collector accepted",
                    &otlp.exported,
                ),
                (
                    "failed",
                    "Spans the OTLP collector refused or did not answer for",
                    &otlp.failed,
                ),
                (
                    "dropped",
                    "Spans dropped because the export queue was full",
                    &otlp.dropped,
                ),
            ] {
                counter(
                    e,
                    &format!("baton_otlp_spans_{name}"),
                    help,
                    value.load(Ordering::Relaxed),
                )?;
            }
        }
        // baton_build_info{version="…"} 1
        let info = prometheus_client::metrics::info::Info::new(vec![(
            "version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )]);
        info.encode(e.encode_descriptor(
            "baton_build",
            "The running baton",
            None,
            MetricType::Info,
        )?)
    }
}
