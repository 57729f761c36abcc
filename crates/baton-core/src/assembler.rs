//! The predictive chain assembler: the most probable chain whose steps fit the pool, as a
//! [`ChainPlan`] with a time window per step; and the entry-set plan for fanned-out requests.

use crate::chain::ChainProfile;
use crate::exec::ColdStarts;
use crate::ids::{LabelId, TaskId};
use crate::predict::{Chain, PredictContext, PredictOptions};
use crate::profile::{Metric, NeedQuantile};
use crate::reservation::{ReservationKind, ReservationRequest, ResourcePool, Window};
use crate::resources::ResourceVec;
use crate::snapshot::TdgSnapshot;
use serde::{Deserialize, Serialize};

/// Assembler settings. Defaults: predict defaults, p95 needs, truncation on, steps ready
/// 1 ms before their early start and held 100 ms past their expected end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AssemblerConfig {
    /// How chains are predicted.
    pub predict: PredictOptions,
    /// Which quantile of history to reserve.
    pub quantile: NeedQuantile,
    /// Whether a chain that does not fit may be cut to its longest fitting prefix.
    pub truncate: bool,
    /// How long before a step's early start its instance should be ready, µs.
    pub lead_us: u64,
    /// How long past a step's expected end its reservation is held, µs.
    pub slack_us: u64,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            predict: PredictOptions::default(),
            quantile: NeedQuantile::P95,
            truncate: true,
            lead_us: 1_000,
            slack_us: 100_000,
        }
    }
}

/// One step of a plan, in absolute time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The task.
    pub task: TaskId,
    /// Probability that the chain gets this far.
    pub reach_probability: f64,
    /// When its instance should be ready, µs.
    pub ready_at_us: u64,
    /// When it is expected to start, µs.
    pub expected_start_us: u64,
    /// The reservation window.
    pub window: Window,
    /// What to reserve.
    pub needs: ResourceVec,
}

impl PlannedStep {
    /// The speculative reservation request of this step for a plan of `probability`.
    pub fn reservation_request(&self, probability: f64, plan: u64) -> ReservationRequest {
        ReservationRequest {
            needs: self.needs,
            window: self.window,
            kind: ReservationKind::Speculative,
            probability,
            plan: Some(plan),
        }
    }
}

/// The chain chosen for a running task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainPlan {
    /// Plan id, unique per assembler.
    pub id: u64,
    /// The chain as predicted (before any truncation).
    pub chain: Chain,
    /// Probability used for the plan: the chain's, or the reach probability of the last
    /// kept step when truncated.
    pub probability: f64,
    /// Whether the chain was cut to fit.
    pub truncated: bool,
    /// Which of the predicted chains this is (0 = most likely).
    pub rank: usize,
    /// The steps to pre-warm.
    pub steps: Vec<PlannedStep>,
    /// Graph version it was planned on.
    pub graph_version: u64,
}

impl ChainPlan {
    /// The speculative reservation requests of every step.
    pub fn reservation_requests(&self) -> Vec<ReservationRequest> {
        self.steps
            .iter()
            .map(|s| s.reservation_request(self.probability, self.id))
            .collect()
    }
}

/// The set of steps to pre-warm at a request's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetPlan {
    /// Whether the route's own set was used (else the set over all requests).
    pub used_route: bool,
    /// The chosen steps, by decreasing expected benefit per resource.
    pub steps: Vec<PlannedStep>,
    /// Tasks above the threshold that did not fit.
    pub left_out: Vec<TaskId>,
}

/// Picks plans. Holds only a plan counter; the graph and pool are passed per call.
#[derive(Debug, Default)]
pub struct Assembler {
    config: AssemblerConfig,
    next_plan: std::sync::atomic::AtomicU64,
}

impl Assembler {
    /// An assembler with `config`.
    pub fn new(config: AssemblerConfig) -> Assembler {
        Assembler {
            config,
            next_plan: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AssemblerConfig {
        &self.config
    }

    /// A step ready `lead_us` before its early offset and held `slack_us` past its
    /// expected end, all relative to `now_us`.
    #[allow(clippy::too_many_arguments)]
    fn planned_step(
        &self,
        task: TaskId,
        reach_probability: f64,
        now_us: u64,
        early_offset_us: u64,
        expected_offset_us: u64,
        duration_us: u64,
        needs: ResourceVec,
    ) -> PlannedStep {
        let early = early_offset_us.min(expected_offset_us);
        let ready_at_us = (now_us + early).saturating_sub(self.config.lead_us);
        let end = now_us + expected_offset_us + duration_us + self.config.slack_us;
        PlannedStep {
            task,
            reach_probability,
            ready_at_us,
            expected_start_us: now_us + expected_offset_us,
            window: Window {
                start_us: ready_at_us,
                end_us: end.max(ready_at_us + 1),
            },
            needs,
        }
    }

    fn steps_of(&self, profile: &ChainProfile, now_us: u64) -> Vec<PlannedStep> {
        profile
            .steps
            .iter()
            .map(|step| {
                self.planned_step(
                    step.task,
                    step.reach_probability,
                    now_us,
                    step.earliest_offset_us,
                    step.start_offset_us,
                    step.duration_us,
                    step.needs,
                )
            })
            .collect()
    }

    /// The most probable chain from `from` whose steps fit `pool`, trying the predicted
    /// chains in order (and their longest fitting prefix when truncation is on). `None`
    /// when nothing non-empty fits or nothing is predicted.
    pub fn assemble(
        &self,
        from: TaskId,
        context: &PredictContext,
        snapshot: &TdgSnapshot,
        pool: &ResourcePool,
        now_us: u64,
    ) -> Option<ChainPlan> {
        let profiles =
            snapshot.chain_profiles(from, context, &self.config.predict, self.config.quantile);
        for (rank, profile) in profiles.iter().enumerate() {
            if profile.steps.is_empty() {
                continue;
            }
            let steps = self.steps_of(profile, now_us);
            let probability = profile.chain.probability;
            let requests: Vec<_> = steps
                .iter()
                .map(|s| s.reservation_request(probability, 0))
                .collect();
            let mut keep = steps.len();
            if !pool.fits_all(&requests) {
                if !self.config.truncate {
                    continue;
                }
                keep = (1..steps.len())
                    .rev()
                    .find(|&k| pool.fits_all(&requests[..k]))
                    .unwrap_or(0);
                if keep == 0 {
                    continue;
                }
            }
            let truncated = keep < steps.len();
            let mut steps = steps;
            steps.truncate(keep);
            let probability = if truncated {
                steps.last().map_or(probability, |s| s.reach_probability)
            } else {
                probability
            };
            return Some(ChainPlan {
                id: self
                    .next_plan
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                chain: profile.chain.clone(),
                probability,
                truncated,
                rank,
                steps,
                graph_version: snapshot.version(),
            });
        }
        None
    }

    /// At a request's entry: every task the route touches with probability ≥ `threshold`,
    /// ordered by expected benefit per resource (probability × cold-start cost, as `host`
    /// knows it, ÷ memory), kept while it fits the pool. Each step is ready just before its
    /// early start offset.
    pub fn assemble_set(
        &self,
        route: Option<LabelId>,
        threshold: f64,
        snapshot: &TdgSnapshot,
        pool: &ResourcePool,
        now_us: u64,
        host: &dyn ColdStarts,
    ) -> SetPlan {
        let (set, used_route) = snapshot.entry_set(route);
        let mut candidates: Vec<(f64, PlannedStep)> = set
            .tasks
            .iter()
            .filter(|t| t.probability >= threshold)
            .map(|t| {
                let needs = snapshot.needs(t.task, self.config.quantile);
                let profile = snapshot.profile(t.task);
                let cold = host.cold_start_us(t.task).max(1) as f64;
                let duration = profile
                    .and_then(|p| p.metric(Metric::WallUs))
                    .map_or(0, |q| q.at(self.config.quantile));
                let benefit = t.probability * cold / needs.memory_mib.max(1) as f64;
                let step = self.planned_step(
                    t.task,
                    t.probability,
                    now_us,
                    t.offset_p10_us,
                    t.offset_p50_us,
                    duration,
                    needs,
                );
                (benefit, step)
            })
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.task.cmp(&b.1.task)));
        let mut steps: Vec<PlannedStep> = Vec::new();
        let mut requests = Vec::new();
        let mut left_out = Vec::new();
        for (_, step) in candidates {
            requests.push(step.reservation_request(step.reach_probability, 0));
            if pool.fits_all(&requests) {
                steps.push(step);
            } else {
                requests.pop();
                left_out.push(step.task);
            }
        }
        SetPlan {
            used_route,
            steps,
            left_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{branching, FixedCold};

    fn pool(memory_mib: u64) -> ResourcePool {
        ResourcePool::new(ResourceVec {
            cpu_millicores: 4000,
            cores: 0,
            memory_mib,
            net_mbps: 0,
            gpu_units: 0,
        })
    }

    #[test]
    fn picks_the_most_probable_chain_that_fits() {
        let (mut tdg, [a, b, c, d]) = branching();
        let snapshot = tdg.snapshot();
        let assembler = Assembler::new(AssemblerConfig {
            truncate: false,
            ..AssemblerConfig::default()
        });
        let context = PredictContext::default();
        let roomy = assembler
            .assemble(a, &context, &snapshot, &pool(1024), 1_000)
            .unwrap();
        assert_eq!(roomy.chain.tasks, [a, b, c]);
        assert_eq!(roomy.rank, 0);
        assert!((roomy.probability - 0.6).abs() < 1e-9);
        // Steps start just before their learned delays, one after the other.
        assert!(roomy.steps[0].ready_at_us < 1_000 + 5_000);
        assert!(roomy.steps[1].expected_start_us > roomy.steps[0].expected_start_us);
        // b needs ~300 MiB: with 100 MiB free, the a→d chain is the best that fits.
        let tight = assembler
            .assemble(a, &context, &snapshot, &pool(100), 1_000)
            .unwrap();
        assert_eq!(tight.chain.tasks, [a, d]);
        assert_eq!(tight.rank, 1);
        assert!(assembler
            .assemble(a, &context, &snapshot, &pool(5), 1_000)
            .is_none());
    }

    #[test]
    fn truncates_to_the_longest_fitting_prefix() {
        let (mut tdg, [a, b, c, _]) = branching();
        let snapshot = tdg.snapshot();
        let assembler = Assembler::new(AssemblerConfig::default());
        // Room for b (≈300 MiB) but not b and c together.
        let plan = assembler
            .assemble(a, &PredictContext::default(), &snapshot, &pool(310), 0)
            .unwrap();
        assert_eq!(plan.chain.tasks, [a, b, c]);
        assert!(plan.truncated);
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(plan.steps[0].task, b);
    }

    #[test]
    fn set_plan_orders_by_benefit_per_resource_and_respects_the_pool() {
        let (mut tdg, [_, b, c, d]) = branching();
        let snapshot = tdg.snapshot();
        let assembler = Assembler::new(AssemblerConfig::default());
        let route = snapshot.label_id("b");
        let all = assembler.assemble_set(route, 0.3, &snapshot, &pool(1024), 0, &FixedCold(1));
        assert!(all.used_route);
        let tasks: Vec<TaskId> = all.steps.iter().map(|s| s.task).collect();
        assert_eq!(tasks, [c, b], "route b always runs b and c; c is cheaper");
        let tight = assembler.assemble_set(route, 0.3, &snapshot, &pool(100), 0, &FixedCold(1));
        assert_eq!(tight.left_out, [b]);
        let any = assembler.assemble_set(None, 0.3, &snapshot, &pool(1024), 0, &FixedCold(1));
        assert!(!any.used_route);
        assert!(any.steps.iter().any(|s| s.task == d));
    }
}
