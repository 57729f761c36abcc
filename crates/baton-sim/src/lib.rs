//! baton's simulator: replays real traces through the same `Policy`, `Assembler` and
//! `ResourcePool` code the runtime uses, on a virtual clock, and reports cold starts,
//! latency and idle memory per policy.
//!
//! [`Simulation`] holds one workload (a graph learned on the training window, the test
//! requests, per-function costs); [`Simulation::run`] replays it under one policy, knob and
//! node size and returns a [`PolicyResult`] ([`engine`] replays, [`stats`] holds what a run
//! measured). [`report`] renders results as markdown, CSV, JSON and a Pareto SVG.
#![deny(missing_docs)]

mod config;
pub mod engine;
pub mod report;
mod schedule;
mod slots;
pub mod stats;
mod templates;

use baton_core::policy::baselines::Arrival as OracleArrival;
use baton_core::policy::spec::{self, PolicyInputs, PolicyName, PolicySpec, SpecError};
use baton_core::{Costs, Request, ResourcePool, ResourceVec, SnapshotCell, Tdg};
use engine::{Arrival, RunStats, SimConfig};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One workload, ready to replay under any policy.
#[derive(Debug)]
pub struct Simulation {
    trained: Tdg,
    requests: Vec<Request>,
    arrivals: Vec<Arrival>,
    costs: Arc<Costs>,
    /// Whether learning policies keep learning during the replay (as baton does live).
    pub online: bool,
    /// Node cores.
    pub cores: u32,
}

/// One policy's numbers on one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyResult {
    /// Policy name.
    pub policy: String,
    /// Its knob (1.0 = usual setting).
    pub knob: f64,
    /// Node memory, MiB.
    pub memory_mib: u64,
    /// Requests replayed.
    pub requests: u64,
    /// Cold starts ÷ invocations.
    pub cold_start_ratio: f64,
    /// Mean cold starts on a request's critical path (cascading ones add up).
    pub critical_cold_per_request: f64,
    /// Median added latency per request, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile added latency per request, ms.
    pub latency_p99_ms: f64,
    /// Memory held by instances not running, GB·s.
    pub idle_gb_s: f64,
    /// Of that, what served nothing after it (an instance's idle time from its last use, or
    /// a never-used pre-warm's whole life, to its release), GB·s.
    pub wasted_gb_s: f64,
    /// Of the idle memory, what templates held, GB·s (0 without templates).
    pub template_gb_s: f64,
    /// The 75th percentile, over the functions invoked, of each function's cold starts ÷
    /// its invocations (SPES's headline metric).
    pub p75_function_cold_rate: f64,
    /// Pre-warmed instances used before release ÷ pre-warmed instances started.
    pub prewarm_precision: Option<f64>,
    /// Invocations served by a pre-warm ÷ invocations.
    pub prewarm_recall: f64,
    /// Mean time inside the policy per event, µs (wall clock; varies run to run).
    pub policy_us_per_event: f64,
    /// The raw counts.
    pub stats: RunStats,
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    baton_core::rank::nearest_rank(sorted, q).unwrap_or(0)
}

/// The 75th percentile (nearest rank) of the per-function cold-start rates, over the
/// functions with at least one invocation.
fn p75_function_cold_rate(stats: &RunStats) -> f64 {
    let mut rates: Vec<f64> = stats
        .function_invocations
        .iter()
        .zip(&stats.function_cold_starts)
        .filter(|(&n, _)| n > 0)
        .map(|(&n, &cold)| cold as f64 / n as f64)
        .collect();
    rates.sort_by(f64::total_cmp);
    baton_core::rank::nearest_rank(&rates, 0.75).unwrap_or(0.0)
}

impl Simulation {
    /// A workload: `trained` has learned the training window; `requests` is the test
    /// window, sorted by start.
    pub fn new(trained: Tdg, requests: Vec<Request>, costs: Costs) -> Simulation {
        let arrivals = engine::arrivals(&requests);
        Simulation {
            trained,
            requests,
            arrivals,
            costs: Arc::new(costs),
            online: true,
            cores: 2,
        }
    }

    /// The arrivals to replay.
    pub fn arrivals(&self) -> &[Arrival] {
        &self.arrivals
    }

    /// The graph learned on the training window (it names the tasks).
    pub fn graph(&self) -> &Tdg {
        &self.trained
    }

    /// The costs charged.
    pub fn costs(&self) -> &Costs {
        &self.costs
    }

    /// Replays under `policy` with `knob` on a node of `config`.
    pub fn run(
        &self,
        policy: &str,
        knob: f64,
        config: &SimConfig,
        progress: impl FnMut(usize, usize),
    ) -> Result<PolicyResult, SpecError> {
        let name: PolicyName = policy.parse()?;
        let mut tdg = self.trained.clone();
        let graph = Arc::new(SnapshotCell::new(tdg.snapshot()));
        let future: Vec<OracleArrival> = if name.needs_future() {
            self.arrivals
                .iter()
                .map(|a| (a.task, a.start_us, a.duration_us))
                .collect()
        } else {
            Vec::new()
        };
        let inputs = PolicyInputs {
            graph: Arc::clone(&graph),
            costs: Arc::clone(&self.costs),
            // The node: its cores' CPU time and its memory; no named cores, network or GPU
            // limits in a replay.
            pool: ResourcePool::new(ResourceVec {
                cpu_millicores: u64::from(self.cores) * 1000,
                cores: 0,
                memory_mib: config.memory_mib,
                net_mbps: u64::MAX / 4,
                gpu_units: u32::MAX / 4,
            }),
            future: Some(&future),
        };
        let spec = PolicySpec::with_knob(name, knob)?;
        let mut executor = baton_core::exec::Executor::new(spec::build(spec, &inputs)?);
        let learner = (self.online && name.learns()).then_some((&mut tdg, &*graph));
        let stats = engine::run(
            &self.requests,
            &self.arrivals,
            &self.costs,
            config,
            &mut executor,
            learner,
            progress,
        );
        let mut latencies = stats.request_latency_us.clone();
        latencies.sort_unstable();
        let invocations = stats.invocations.max(1) as f64;
        let requests = self.requests.len().max(1) as f64;
        Ok(PolicyResult {
            policy: policy.to_owned(),
            knob,
            memory_mib: config.memory_mib,
            requests: self.requests.len() as u64,
            cold_start_ratio: stats.cold_starts as f64 / invocations,
            critical_cold_per_request: stats
                .request_critical_cold
                .iter()
                .map(|&c| f64::from(c))
                .sum::<f64>()
                / requests,
            latency_p50_ms: percentile(&latencies, 0.5) as f64 / 1000.0,
            latency_p99_ms: percentile(&latencies, 0.99) as f64 / 1000.0,
            idle_gb_s: stats.idle_mib_us / 1024.0 / 1e6,
            wasted_gb_s: stats.wasted_mib_us / 1024.0 / 1e6,
            template_gb_s: stats.template_mib_us / 1024.0 / 1e6,
            p75_function_cold_rate: p75_function_cold_rate(&stats),
            prewarm_precision: (stats.prewarms_started > 0)
                .then(|| stats.prewarms_used as f64 / stats.prewarms_started as f64),
            prewarm_recall: stats.prewarm_hits as f64 / invocations,
            policy_us_per_event: stats.policy_ns as f64
                / 1000.0
                / stats.policy_events.max(1) as f64,
            stats,
        })
    }
}
