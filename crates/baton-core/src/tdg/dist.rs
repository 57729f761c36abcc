//! A caller's decayed distribution over what follows it: its targets (a self-organising
//! list), the stop, and the total; first-order edges keep delays, context outcomes only
//! weights.

use crate::decay::Decay;
use crate::histogram::LogHistogram;
use crate::ids::TaskId;
use crate::snapshot::{FrozenDist, FrozenTarget};
use serde::{Deserialize, Serialize};

/// One outcome of a distribution: the callee, its decayed weight and, where kept, delays.
pub(crate) trait Outcome: Default {
    fn new(task: TaskId) -> Self;
    fn task(&self) -> TaskId;
    fn weight(&self) -> f64;
    fn add(&mut self, weight: f64, delay_us: u64);
    fn scale(&mut self, factor: f64);
    fn frozen(&self, probability: f64) -> FrozenTarget;
}

/// A first-order edge: weight and the delay histogram (start of caller → start of callee).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Edge {
    task: TaskId,
    weight: f64,
    delay: LogHistogram,
}

impl Outcome for Edge {
    fn new(task: TaskId) -> Self {
        Edge {
            task,
            ..Edge::default()
        }
    }
    fn task(&self) -> TaskId {
        self.task
    }
    fn weight(&self) -> f64 {
        self.weight
    }
    fn add(&mut self, weight: f64, delay_us: u64) {
        self.weight += weight;
        self.delay.record(delay_us, weight);
    }
    fn scale(&mut self, factor: f64) {
        self.weight *= factor;
        self.delay.scale(factor);
    }
    fn frozen(&self, probability: f64) -> FrozenTarget {
        FrozenTarget {
            task: self.task,
            probability,
            delay_mean_us: self.delay.mean().unwrap_or(0.0) as u64,
            delay_p10_us: self.delay.quantile(0.10).unwrap_or(0),
            delay_p90_us: self.delay.quantile(0.90).unwrap_or(0),
        }
    }
}

/// A context outcome: weight only (16 bytes), since contexts are many and delays are read
/// from the first-order edge.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Weighted {
    task: TaskId,
    weight: f64,
}

impl Outcome for Weighted {
    fn new(task: TaskId) -> Self {
        Weighted { task, weight: 0.0 }
    }
    fn task(&self) -> TaskId {
        self.task
    }
    fn weight(&self) -> f64 {
        self.weight
    }
    fn add(&mut self, weight: f64, _delay_us: u64) {
        self.weight += weight;
    }
    fn scale(&mut self, factor: f64) {
        self.weight *= factor;
    }
    fn frozen(&self, probability: f64) -> FrozenTarget {
        FrozenTarget {
            task: self.task,
            probability,
            delay_mean_us: 0,
            delay_p10_us: 0,
            delay_p90_us: 0,
        }
    }
}

/// Decayed counts of what follows one caller (in one context).
///
/// Targets are a self-organising list: an increment swaps a target one place towards the
/// front when it overtakes its neighbour, so the frequent targets are found in the first
/// slots and an update is O(1) amortised for the skewed distributions seen in practice.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Dist<T> {
    targets: Vec<T>,
    stop: f64,
    total: f64,
}

impl<T: Outcome> Dist<T> {
    /// Adds one outcome of `weight`; returns the probability the distribution gave it
    /// just before (`None` with no history), found on the same pass as the update.
    pub(super) fn observe(
        &mut self,
        callee: Option<TaskId>,
        weight: f64,
        delay_us: u64,
    ) -> Option<f64> {
        let total = self.total;
        self.total += weight;
        let prior = |had: f64| (total > 0.0).then(|| had / total);
        let Some(callee) = callee else {
            let had = self.stop;
            self.stop += weight;
            return prior(had);
        };
        let position = match self.targets.iter().position(|t| t.task() == callee) {
            Some(position) => position,
            None => {
                self.targets.push(T::new(callee));
                self.targets.len() - 1
            }
        };
        let had = self.targets[position].weight();
        self.targets[position].add(weight, delay_us);
        if position > 0 && self.targets[position - 1].weight() < self.targets[position].weight() {
            self.targets.swap(position - 1, position);
        }
        prior(had)
    }

    pub(super) fn scale(&mut self, factor: f64) {
        self.stop *= factor;
        self.total *= factor;
        for target in &mut self.targets {
            target.scale(factor);
        }
    }

    /// Drops `task` as a target; the others' probabilities renormalise.
    pub(super) fn forget(&mut self, task: TaskId) {
        if let Some(position) = self.targets.iter().position(|t| t.task() == task) {
            let weight = self.targets.remove(position).weight();
            self.total = (self.total - weight).max(self.stop);
        }
    }

    pub(super) fn freeze(&self, decay: &Decay, now_us: u64) -> FrozenDist {
        let total = self.total.max(f64::MIN_POSITIVE);
        let mut targets: Vec<FrozenTarget> = self
            .targets
            .iter()
            .map(|t| t.frozen(t.weight() / total))
            .collect();
        targets.sort_by(|a, b| {
            b.probability
                .total_cmp(&a.probability)
                .then(a.task.cmp(&b.task))
        });
        FrozenDist {
            targets,
            stop_probability: if self.total > 0.0 {
                self.stop / total
            } else {
                1.0
            },
            count: decay.effective(self.total, now_us),
        }
    }
}
