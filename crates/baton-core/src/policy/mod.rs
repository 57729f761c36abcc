//! Pre-warming policies: events in, actions out. The runtime and the simulator drive the
//! same policies; a policy never touches an instance itself.
//!
//! Here: the vocabulary (what a policy hears, [`PolicyEvent`]; what it asks for,
//! [`Action`]; how eviction weighs an instance or a bet, [`IdleInstance`]) and the
//! [`Policy`] trait. [`ChainPolicy`] is baton's (module `chain`); [`NextPolicy`] is the
//! single next-task behaviour of US 9,811,363 and [`baselines`] the published keep-alive
//! and prediction policies, kept for comparison; [`spec`] builds any of them by name.

pub mod baselines;
mod chain;
pub mod idle;
pub mod spec;
pub mod starts;

pub use chain::{
    ChainPolicy, ChainPolicyConfig, BET_MIN_HOLD_US, MAX_REWARM_INSTANCES, TEMPLATE_KEEP_FACTOR,
    TEMPLATE_KEEP_MIN_US,
};

pub use baselines::{
    GreedyDualPolicy, HistogramPolicy, MlpPolicy, NonePolicy, OraclePolicy, TtlPolicy,
};

use crate::context::CallContext;
use crate::exec::ColdStarts;
use crate::ids::TaskId;
use crate::predict::PredictContext;
use crate::tdg::SnapshotCell;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a policy hears.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PolicyEvent {
    /// An invocation started.
    Start {
        /// The task.
        task: TaskId,
        /// Its invocation id.
        invocation: u64,
        /// When, µs.
        at_us: u64,
        /// What is known about its situation.
        context: PredictContext,
        /// This start is the request's first call below its entry: the route (in `context`)
        /// has just become known, and `entry_start_us` is when the request arrived.
        reveals_route: Option<u64>,
        /// How long the step waits for its instance before it runs, µs (a cold start, the
        /// rest of a late pre-warm): what it calls comes that much later than the learned
        /// delays say; 0 when its instance was ready.
        wait_us: u64,
    },
    /// An invocation ended.
    End {
        /// The task.
        task: TaskId,
        /// Its invocation id.
        invocation: u64,
        /// When, µs.
        at_us: u64,
    },
    /// Time passed.
    Tick {
        /// Now, µs.
        at_us: u64,
    },
    /// An idle instance of `task` was evicted to make room.
    Evicted {
        /// The task.
        task: TaskId,
        /// When, µs.
        at_us: u64,
    },
}

/// What a policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Have an instance of `task` ready at `at_us` and keep it until `until_us`.
    PreWarm {
        /// The task.
        task: TaskId,
        /// Ready by, µs.
        at_us: u64,
        /// Keep until, µs.
        until_us: u64,
        /// The plan it belongs to.
        plan: Option<u64>,
        /// The reservation holding its resources (its cores, GPU units), by id.
        reservation: Option<u64>,
        /// Probability it will be used.
        probability: f64,
    },
    /// Keep the instance that just finished warm until `until_us`.
    KeepAlive {
        /// The task.
        task: TaskId,
        /// Until, µs.
        until_us: u64,
    },
    /// [`Action::KeepAlive`], and the deadline stays the instance's through its later
    /// runs: whatever keep-alive a later end asks for it, it is kept until then (and let
    /// go at its first end after). Set once: an instance already pinned keeps its first
    /// deadline. The paper's hybrid histogram, as dslab-faas implements it, gives an
    /// instance the range's window once, while the idle times are uncertain.
    PinKeepAlive {
        /// The task.
        task: TaskId,
        /// Until, µs.
        until_us: u64,
    },
    /// Hold `task`'s template (the cheap warmth tier: a process that has imported the
    /// function, so a start is a fork of it instead of a start from nothing) until
    /// `until_us`, starting it if none is held. Only a policy that
    /// [`Policy::manages_templates`] asks for it; hosts without templates for `task`
    /// ignore it.
    HoldTemplate {
        /// The task.
        task: TaskId,
        /// Until, µs.
        until_us: u64,
    },
    /// Let the idle instances of `task` that this policy asked for go.
    Release {
        /// The task.
        task: TaskId,
        /// The plan whose pre-warm is given up, if any.
        plan: Option<u64>,
    },
}

/// An idle instance as eviction weighs it; the host (the simulator's engine, the
/// runtime's planner) says what it holds and what its task's cold start costs there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleInstance {
    /// Its task.
    pub task: TaskId,
    /// When it went idle, µs.
    pub idle_since_us: u64,
    /// The memory it holds, MiB.
    pub memory_mib: u64,
    /// What starting another instance of its task costs, µs.
    pub cold_start_us: u64,
    /// `Some` for a bet rather than a kept instance: a pre-warm asking for room
    /// ([`Policy::bet_priority`]), or a pre-warmed instance no step has used yet, with its
    /// probability of use (the weight of its claims) and when its claim ends, µs.
    pub bet: Option<(f64, u64)>,
    /// How many idle instances of its task an arrival would take before this one (0: the
    /// next arrival's); the host fills it in with [`crate::exec::line_up`]. A busy
    /// function's surplus instance is not used until as many arrivals come at once.
    pub ahead: u32,
}

/// A pre-warming policy.
pub trait Policy: Send {
    /// Its name in reports.
    fn name(&self) -> &str;
    /// Reacts to `event`, appending actions to `out`. `host` says what starting each task
    /// costs where the policy runs (the simulator's cost table, the runtime's measurements
    /// and priors): the one cold-start estimate, as the executor times pre-warms with it.
    fn on_event(&mut self, event: &PolicyEvent, host: &dyn ColdStarts, out: &mut Vec<Action>);
    /// When memory runs short at `now_us`, idle instances are evicted lowest priority
    /// first. The default is least recently used (the time the instance went idle).
    fn evict_priority(&self, instance: &IdleInstance, now_us: u64) -> f64 {
        let _ = now_us;
        instance.idle_since_us as f64
    }
    /// The priority, on [`Policy::evict_priority`]'s scale, of a pre-warm of `bet.task`
    /// asking at `now_us` for room it does not find free (`bet.bet` holds its probability
    /// and the end of its claim): the host evicts for it only idle instances below it. The
    /// default evicts nothing (the baselines' pre-warms take only free memory).
    fn bet_priority(&self, bet: &IdleInstance, now_us: u64) -> f64 {
        let _ = (bet, now_us);
        f64::NEG_INFINITY
    }
    /// Whether a host with templates holds each function's template only as this
    /// policy's [`Action::HoldTemplate`]s say (and as long as a cold start that made one
    /// needs it), instead of for as long as the function is deployed (the default: every
    /// baseline). The warmth tiers: none, a template, a warm instance.
    fn manages_templates(&self) -> bool {
        false
    }
}

/// Plans of a route's task set (planned when the route becomes known) take ids from here
/// up, apart from the assembler's path plans.
pub const ROUTE_PLAN_IDS: u64 = u64::MAX / 2;

/// Whether plan `id` is a route-set plan.
pub fn is_route_plan(id: u64) -> bool {
    id >= ROUTE_PLAN_IDS
}

/// The single-next-task policy (US 9,811,363): when a task starts, pre-load the most likely
/// next task if its first-order probability reaches `threshold`, for `keep_us`.
#[derive(Debug)]
pub struct NextPolicy {
    graph: Arc<SnapshotCell>,
    threshold: f64,
    keep_us: u64,
}

impl NextPolicy {
    /// A next-task policy.
    pub fn new(graph: Arc<SnapshotCell>, threshold: f64, keep_us: u64) -> NextPolicy {
        NextPolicy {
            graph,
            threshold,
            keep_us,
        }
    }
}

impl Policy for NextPolicy {
    fn name(&self) -> &str {
        "next"
    }

    fn on_event(&mut self, event: &PolicyEvent, _host: &dyn ColdStarts, out: &mut Vec<Action>) {
        match *event {
            PolicyEvent::Start { task, at_us, .. } => {
                let snapshot = self.graph.load();
                let (dist, _) = snapshot.step_dist(&CallContext::first_order(task), false);
                if let Some(best) = dist.targets.first() {
                    if best.probability >= self.threshold {
                        out.push(Action::PreWarm {
                            task: best.task,
                            at_us,
                            until_us: at_us + self.keep_us,
                            plan: None,
                            reservation: None,
                            probability: best.probability,
                        });
                    }
                }
            }
            PolicyEvent::End { task, at_us, .. } => out.push(Action::KeepAlive {
                task,
                until_us: at_us + self.keep_us,
            }),
            PolicyEvent::Tick { .. } | PolicyEvent::Evicted { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests;
