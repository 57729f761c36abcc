//! Chain profiles: for a predicted chain, when each step is expected to start and what it
//! needs, with the chain's total and peak needs. Cached per (question, graph version).

use crate::context::CallContext;
use crate::ids::TaskId;
use crate::predict::{Chain, PredictContext, PredictOptions};
use crate::profile::{Metric, NeedQuantile};
use crate::resources::ResourceVec;
use crate::snapshot::TdgSnapshot;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One step of a chain profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainStep {
    /// The task.
    pub task: TaskId,
    /// Probability that the chain gets this far.
    pub reach_probability: f64,
    /// Expected start after the chain's first task started, µs (sum of mean edge delays).
    pub start_offset_us: u64,
    /// Early start (sum of the edges' 10th-percentile delays), µs: when to be ready by.
    pub earliest_offset_us: u64,
    /// Expected run time at the chosen quantile, µs.
    pub duration_us: u64,
    /// Resources to reserve.
    pub needs: ResourceVec,
}

/// A chain with its plan-relevant numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainProfile {
    /// The chain.
    pub chain: Chain,
    /// One per task after the start.
    pub steps: Vec<ChainStep>,
    /// Sum of the steps' needs.
    pub total: ResourceVec,
    /// Largest sum of needs of steps whose windows overlap.
    pub peak: ResourceVec,
}

/// Largest sum over overlapping windows `[start, start + duration)` of the steps.
pub fn peak_needs(steps: &[ChainStep]) -> ResourceVec {
    let mut peak = ResourceVec::ZERO;
    for step in steps {
        let at = step.start_offset_us;
        let mut sum = ResourceVec::ZERO;
        for other in steps {
            let end = other
                .start_offset_us
                .saturating_add(other.duration_us.max(1));
            if other.start_offset_us <= at && at < end {
                sum += other.needs;
            }
        }
        peak = peak.max(&sum);
    }
    peak
}

impl TdgSnapshot {
    /// The profile of one chain at `quantile`.
    pub fn chain_profile(&self, chain: &Chain, quantile: NeedQuantile) -> ChainProfile {
        let mut steps = Vec::with_capacity(chain.tasks.len().saturating_sub(1));
        let (mut offset, mut earliest, mut reach) = (0u64, 0u64, 1.0f64);
        for (pair, step_probability) in chain.tasks.windows(2).zip(&chain.step_probabilities) {
            let (caller, callee) = (pair[0], pair[1]);
            // Timing lives on the first-order edge; the probability is the chain's own step.
            let dist = self.first_order(caller);
            let edge = dist.targets.iter().find(|t| t.task == callee);
            offset += edge.map_or(0, |e| e.delay_mean_us);
            earliest += edge.map_or(0, |e| e.delay_p10_us);
            reach *= step_probability;
            let duration_us = self
                .profile(callee)
                .and_then(|p| p.metric(Metric::WallUs))
                .map_or(0, |q| q.at(quantile));
            steps.push(ChainStep {
                task: callee,
                reach_probability: reach,
                start_offset_us: offset,
                earliest_offset_us: earliest,
                duration_us,
                needs: self.needs(callee, quantile),
            });
        }
        let total = steps
            .iter()
            .fold(ResourceVec::ZERO, |sum, step| sum + step.needs);
        ChainProfile {
            peak: peak_needs(&steps),
            total,
            steps,
            chain: chain.clone(),
        }
    }

    /// Predicts and profiles the chains from `from`; repeated asks of the same question
    /// on this snapshot are answered from the cache.
    pub fn chain_profiles(
        &self,
        from: TaskId,
        context: &PredictContext,
        options: &PredictOptions,
        quantile: NeedQuantile,
    ) -> Arc<Vec<ChainProfile>> {
        let bits = options.cache_bits();
        let key = (
            from,
            CallContext {
                caller: from,
                prev: context.prev,
                route: context.route,
                grand_caller: context.grand_caller,
                caller_operation: context.operation,
            },
            [bits[0], bits[1], bits[2], bits[3], bits[4], quantile as u64],
        );
        if let Ok(cache) = self.chain_cache.read() {
            if let Some(hit) = cache.get(&key) {
                return Arc::clone(hit);
            }
        }
        let profiles: Arc<Vec<ChainProfile>> = Arc::new(
            self.predict(from, context, options)
                .iter()
                .map(|chain| self.chain_profile(chain, quantile))
                .collect(),
        );
        if let Ok(mut cache) = self.chain_cache.write() {
            cache.insert(key, Arc::clone(&profiles));
        }
        profiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(start: u64, duration: u64, memory: u64) -> ChainStep {
        ChainStep {
            task: TaskId(0),
            reach_probability: 1.0,
            start_offset_us: start,
            earliest_offset_us: start,
            duration_us: duration,
            needs: ResourceVec {
                memory_mib: memory,
                ..ResourceVec::ZERO
            },
        }
    }

    #[test]
    fn peak_counts_only_overlapping_steps() {
        let steps = [step(0, 100, 10), step(50, 100, 20), step(200, 10, 40)];
        assert_eq!(peak_needs(&steps).memory_mib, 40);
        let nested = [step(0, 100, 10), step(50, 100, 20), step(60, 10, 5)];
        assert_eq!(peak_needs(&nested).memory_mib, 35);
    }
}
