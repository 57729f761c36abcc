//! Every policy by name, with its defaults and its one knob: the single place `baton sim`,
//! `baton serve`, the demo and the CLI build policies from. The knob multiplies the
//! policy's main setting, so a sweep traces each policy's curve:
//!
//! | policy | knob scales | at 1.0 |
//! |---|---|---|
//! | `none` | nothing | — |
//! | `ttl` | keep-alive | 10 min |
//! | `histogram` | keep-alive window (and its fallback) | ATC'20 settings, 10 min fallback |
//! | `greedy-dual` | longest keep-alive | 24 h (in effect: until evicted) |
//! | `next` | how long the pre-load and a finished instance are kept (threshold 0.5) | 10 min |
//! | `mlp` | keep-alive of a finished instance (pre-warmed steps are held 1 s) | 60 s |
//! | `chain` | keep-alive of a finished instance (entry tasks: 10 min × knob) | 60 s |
//! | `oracle` | nothing (it needs the future: the simulator only) | — |
//!
//! A [`PolicySpec`] may instead fix the keep-alive of every finished instance
//! (`keep_alive_us`): the demo compares `ttl` and `chain` at one keep-alive that way.

use super::baselines::{self, Arrival as OracleArrival};
use super::{ChainPolicy, ChainPolicyConfig, NextPolicy, Policy};
use crate::assembler::{Assembler, AssemblerConfig};
use crate::costs::Costs;
use crate::reservation::ResourcePool;
use crate::tdg::SnapshotCell;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use thiserror::Error;

/// A policy's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// No keep-alive.
    None,
    /// Fixed keep-alive.
    Ttl,
    /// ATC'20 hybrid histogram.
    Histogram,
    /// FaaSCache's Greedy-Dual.
    GreedyDual,
    /// The single most likely next task (US 9,811,363).
    Next,
    /// Xanadu's most likely path.
    Mlp,
    /// baton's chain policy.
    Chain,
    /// Knows every arrival (simulator only).
    Oracle,
}

impl PolicyName {
    /// Every policy, in report order.
    pub const ALL: [PolicyName; 8] = [
        PolicyName::None,
        PolicyName::Ttl,
        PolicyName::Histogram,
        PolicyName::GreedyDual,
        PolicyName::Next,
        PolicyName::Mlp,
        PolicyName::Chain,
        PolicyName::Oracle,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::None => "none",
            PolicyName::Ttl => "ttl",
            PolicyName::Histogram => "histogram",
            PolicyName::GreedyDual => "greedy-dual",
            PolicyName::Next => "next",
            PolicyName::Mlp => "mlp",
            PolicyName::Chain => "chain",
            PolicyName::Oracle => "oracle",
        }
    }

    /// Whether it reads the learned graph (and so wants an online learner in a replay).
    pub fn learns(self) -> bool {
        matches!(self, PolicyName::Next | PolicyName::Mlp | PolicyName::Chain)
    }

    /// Whether it needs the arrivals to come (only a replay has them).
    pub fn needs_future(self) -> bool {
        self == PolicyName::Oracle
    }
}

impl std::fmt::Display for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a policy could not be named or built.
#[derive(Debug, Error, PartialEq)]
pub enum SpecError {
    /// Not a policy.
    #[error(
        "unknown policy `{0}`; known: none, ttl, histogram, greedy-dual, next, mlp, chain, oracle"
    )]
    Unknown(String),
    /// The oracle outside a replay.
    #[error("policy `{0}` needs the arrivals to come: only `baton sim` can run it")]
    NeedsFuture(PolicyName),
    /// A knob that is not a positive finite number.
    #[error("policy knob must be a positive number, not {0}")]
    BadKnob(f64),
}

impl std::str::FromStr for PolicyName {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<PolicyName, SpecError> {
        PolicyName::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| SpecError::Unknown(s.to_owned()))
    }
}

/// A policy to build: its name, its knob, and optionally one keep-alive for every
/// finished instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolicySpec {
    /// Which policy.
    pub name: PolicyName,
    /// Its main setting's multiplier (1.0: the default).
    pub knob: f64,
    /// Keep every finished instance this long instead (ttl, next, mlp, chain), µs.
    pub keep_alive_us: Option<u64>,
}

impl PolicySpec {
    /// `name` at its defaults.
    pub fn new(name: PolicyName) -> PolicySpec {
        PolicySpec {
            name,
            knob: 1.0,
            keep_alive_us: None,
        }
    }

    /// `name` with `knob`.
    pub fn with_knob(name: PolicyName, knob: f64) -> Result<PolicySpec, SpecError> {
        if !(knob.is_finite() && knob > 0.0) {
            return Err(SpecError::BadKnob(knob));
        }
        Ok(PolicySpec {
            knob,
            ..PolicySpec::new(name)
        })
    }
}

/// What policies are built from.
#[derive(Debug, Clone)]
pub struct PolicyInputs<'a> {
    /// The published graph (learning policies read it).
    pub graph: Arc<SnapshotCell>,
    /// Per-task cold-start times and memory (greedy-dual's costs).
    pub costs: Arc<Costs>,
    /// The pool the chain policy reserves in.
    pub pool: ResourcePool,
    /// The arrivals to come (the oracle's; `None` outside a replay).
    pub future: Option<&'a [OracleArrival]>,
}

const MINUTE_US: f64 = 60e6;

/// Builds the policy `spec` names.
pub fn build(spec: PolicySpec, inputs: &PolicyInputs<'_>) -> Result<Box<dyn Policy>, SpecError> {
    let knob = spec.knob;
    if !(knob.is_finite() && knob > 0.0) {
        return Err(SpecError::BadKnob(knob));
    }
    let scaled = |us: f64| spec.keep_alive_us.unwrap_or((us * knob).max(0.0) as u64);
    let policy: Box<dyn Policy> = match spec.name {
        PolicyName::None => Box::new(baselines::NonePolicy),
        PolicyName::Ttl => Box::new(baselines::TtlPolicy::new(scaled(10.0 * MINUTE_US))),
        PolicyName::Histogram => Box::new(baselines::HistogramPolicy::new(knob)),
        PolicyName::GreedyDual => Box::new(baselines::GreedyDualPolicy::new(
            Arc::clone(&inputs.costs),
            (24.0 * 60.0 * MINUTE_US * knob) as u64,
        )),
        PolicyName::Next => Box::new(NextPolicy::new(
            Arc::clone(&inputs.graph),
            0.5,
            scaled(10.0 * MINUTE_US),
        )),
        PolicyName::Mlp => Box::new(baselines::MlpPolicy::new(
            Arc::clone(&inputs.graph),
            1_000_000,
            scaled(MINUTE_US),
        )),
        PolicyName::Chain => Box::new(ChainPolicy::new(
            Arc::clone(&inputs.graph),
            inputs.pool.clone(),
            Assembler::new(AssemblerConfig::default()),
            ChainPolicyConfig {
                keep_alive_us: scaled(MINUTE_US),
                entry_keep_alive_us: scaled(10.0 * MINUTE_US),
                set_threshold: Some(0.5),
            },
        )),
        PolicyName::Oracle => {
            let future = inputs.future.ok_or(SpecError::NeedsFuture(spec.name))?;
            Box::new(baselines::OraclePolicy::new(future, &inputs.costs))
        }
    };
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ResourceVec;

    fn inputs() -> PolicyInputs<'static> {
        PolicyInputs {
            graph: Arc::new(SnapshotCell::new(
                crate::tdg::Tdg::new(crate::tdg::TdgConfig::default()).snapshot(),
            )),
            costs: Arc::new(Costs::new(1_000, 64)),
            pool: ResourcePool::new(ResourceVec::ZERO),
            future: None,
        }
    }

    #[test]
    fn every_name_round_trips_and_builds_under_its_own_name() {
        for name in PolicyName::ALL {
            assert_eq!(name.as_str().parse::<PolicyName>(), Ok(name));
            let future = [];
            let inputs = PolicyInputs {
                future: Some(&future),
                ..inputs()
            };
            let policy = build(PolicySpec::new(name), &inputs).unwrap();
            assert_eq!(policy.name(), name.as_str());
        }
        assert!(matches!(
            "lru".parse::<PolicyName>(),
            Err(SpecError::Unknown(_))
        ));
    }

    #[test]
    fn the_oracle_needs_the_future_and_knobs_must_be_positive() {
        assert_eq!(
            build(PolicySpec::new(PolicyName::Oracle), &inputs()).err(),
            Some(SpecError::NeedsFuture(PolicyName::Oracle))
        );
        assert!(PolicySpec::with_knob(PolicyName::Ttl, 0.0).is_err());
        assert!(PolicySpec::with_knob(PolicyName::Ttl, f64::NAN).is_err());
    }
}
