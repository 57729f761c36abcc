//! Building the policies by name, each with its main knob. The knob multiplies the
//! policy's main setting, so a sweep traces each policy's curve:
//!
//! | policy | knob scales | at 1.0 |
//! |---|---|---|
//! | `none` | nothing | — |
//! | `ttl` | keep-alive | 10 min |
//! | `histogram` | keep-alive window (and its fallback) | ATC'20 settings, 10 min fallback |
//! | `greedy-dual` | longest keep-alive | 24 h (in effect: until evicted) |
//! | `next` | how long the pre-load and a finished instance are kept | 10 min |
//! | `mlp` | keep-alive of a finished instance (pre-warmed steps are held 1 s) | 60 s |
//! | `chain` | keep-alive of a finished instance (entry tasks: 10 min × knob) | 60 s |
//! | `oracle` | nothing | — |

use crate::engine::Arrival;
use baton_core::policy::baselines::{self, Arrival as OracleArrival};
use baton_core::{
    Assembler, AssemblerConfig, ChainPolicy, ChainPolicyConfig, Costs, NextPolicy, Policy,
    ResourcePool, ResourceVec, SnapshotCell,
};
use std::sync::Arc;
use thiserror::Error;

/// Every policy, in report order.
pub const POLICY_NAMES: [&str; 8] = [
    "none",
    "ttl",
    "histogram",
    "greedy-dual",
    "next",
    "mlp",
    "chain",
    "oracle",
];

/// A policy name that is not one of [`POLICY_NAMES`].
#[derive(Debug, Error)]
#[error("unknown policy `{0}`; known: none, ttl, histogram, greedy-dual, next, mlp, chain, oracle")]
pub struct UnknownPolicy(pub String);

/// What policies are built from.
#[derive(Debug)]
pub struct PolicyInputs<'a> {
    /// The published graph (learning policies read it).
    pub graph: Arc<SnapshotCell>,
    /// Per-task cold-start times and memory.
    pub costs: Arc<Costs>,
    /// The arrivals to come (only the oracle looks).
    pub arrivals: &'a [Arrival],
    /// Node memory, MiB (the chain policy's pool).
    pub memory_mib: u64,
    /// Node cores (the chain policy's pool).
    pub cores: u32,
}

const MINUTE_US: f64 = 60e6;

/// Whether `name` reads the learned graph (and so wants an online learner in the replay).
pub fn learns(name: &str) -> bool {
    matches!(name, "next" | "mlp" | "chain")
}

/// Builds policy `name` with `knob` (1.0 = its usual setting).
pub fn build(
    name: &str,
    knob: f64,
    inputs: &PolicyInputs<'_>,
) -> Result<Box<dyn Policy>, UnknownPolicy> {
    let scaled = |us: f64| (us * knob).max(0.0) as u64;
    let policy: Box<dyn Policy> = match name {
        "none" => Box::new(baselines::NonePolicy),
        "ttl" => Box::new(baselines::TtlPolicy::new(scaled(10.0 * MINUTE_US))),
        "histogram" => Box::new(baselines::HistogramPolicy::new(
            scaled(10.0 * MINUTE_US),
            knob,
        )),
        "greedy-dual" => Box::new(baselines::GreedyDualPolicy::new(
            Arc::clone(&inputs.costs),
            scaled(24.0 * 60.0 * MINUTE_US),
        )),
        "next" => Box::new(NextPolicy::new(
            Arc::clone(&inputs.graph),
            0.5,
            scaled(10.0 * MINUTE_US),
        )),
        "mlp" => Box::new(baselines::MlpPolicy::new(
            Arc::clone(&inputs.graph),
            1_000_000,
            scaled(MINUTE_US),
        )),
        "chain" => Box::new(ChainPolicy::new(
            Arc::clone(&inputs.graph),
            ResourcePool::new(ResourceVec {
                cpu_millicores: u64::from(inputs.cores) * 1000,
                cores: 0,
                memory_mib: inputs.memory_mib,
                net_mbps: u64::MAX / 4,
                gpu_units: u32::MAX / 4,
            }),
            Assembler::new(AssemblerConfig::default()),
            ChainPolicyConfig {
                keep_alive_us: scaled(MINUTE_US),
                entry_keep_alive_us: scaled(10.0 * MINUTE_US),
                set_threshold: Some(0.5),
            },
        )),
        "oracle" => {
            let arrivals: Vec<OracleArrival> = inputs
                .arrivals
                .iter()
                .map(|a| (a.task, a.start_us, a.duration_us))
                .collect();
            Box::new(baselines::OraclePolicy::new(&arrivals, &inputs.costs))
        }
        other => return Err(UnknownPolicy(other.to_owned())),
    };
    Ok(policy)
}
