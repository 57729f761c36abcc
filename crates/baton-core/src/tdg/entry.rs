//! Entry sets: per route, how often each task appears in a request and which whole sets
//! of tasks requests take, and the set a route's plan pre-warms ([`best_f1_set`]).

use crate::decay::Decay;
use crate::histogram::LogHistogram;
use crate::ids::TaskId;
use crate::snapshot::FrozenEntrySet;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Distinct task sets kept per route; past this, the lightest set is evicted.
const MAX_SETS_PER_ROUTE: usize = 64;

/// Per-route set statistics: how often each task appears at least once in a request, and
/// how often each whole set of tasks appears (tasks are correlated: a request takes one of
/// a few paths, so the set is chosen from whole sets, not task by task).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct EntryStats {
    requests: f64,
    #[serde(with = "super::pairs")]
    tasks: FxHashMap<TaskId, (f64, LogHistogram)>,
    sets: Vec<(Vec<TaskId>, f64)>,
}

impl EntryStats {
    /// Drops `task` from the per-task counts and from every set (sets that become equal
    /// are merged).
    pub(super) fn forget(&mut self, task: TaskId) {
        self.tasks.remove(&task);
        let mut merged: Vec<(Vec<TaskId>, f64)> = Vec::with_capacity(self.sets.len());
        for (mut set, weight) in self.sets.drain(..) {
            set.retain(|t| *t != task);
            match merged.iter_mut().find(|(s, _)| *s == set) {
                Some(slot) => slot.1 += weight,
                None => merged.push((set, weight)),
            }
        }
        self.sets = merged;
    }

    pub(super) fn observe(&mut self, downstream: &[(TaskId, u64)], weight: f64) {
        self.requests += weight;
        for &(task, offset) in downstream {
            let slot = self.tasks.entry(task).or_default();
            slot.0 += weight;
            slot.1.record(offset, weight);
        }
        // `downstream` is sorted by task id, so equal sets compare equal.
        let matches = |set: &Vec<TaskId>| {
            set.len() == downstream.len() && set.iter().zip(downstream).all(|(a, b)| *a == b.0)
        };
        match self.sets.iter_mut().find(|(set, _)| matches(set)) {
            Some(slot) => slot.1 += weight,
            None => {
                if self.sets.len() >= MAX_SETS_PER_ROUTE {
                    if let Some(lightest) = self
                        .sets
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
                        .map(|(i, _)| i)
                    {
                        self.sets.swap_remove(lightest);
                    }
                }
                self.sets
                    .push((downstream.iter().map(|&(t, _)| t).collect(), weight));
            }
        }
    }

    pub(super) fn scale(&mut self, factor: f64) {
        self.requests *= factor;
        for slot in self.tasks.values_mut() {
            slot.0 *= factor;
            slot.1.scale(factor);
        }
        for set in &mut self.sets {
            set.1 *= factor;
        }
    }

    fn best_set(&self, by_probability: &[crate::snapshot::EntryTask]) -> (Vec<TaskId>, f64, f64) {
        let ranked: Vec<TaskId> = by_probability.iter().map(|t| t.task).collect();
        best_f1_set(&self.sets, &ranked)
    }

    pub(super) fn freeze(&self, decay: &Decay, now_us: u64) -> FrozenEntrySet {
        let requests = self.requests.max(f64::MIN_POSITIVE);
        let mut tasks: Vec<_> = self
            .tasks
            .iter()
            .map(|(&task, (weight, offsets))| crate::snapshot::EntryTask {
                task,
                probability: (weight / requests).min(1.0),
                offset_p10_us: offsets.quantile(0.10).unwrap_or(0),
                offset_p50_us: offsets.quantile(0.50).unwrap_or(0),
            })
            .collect();
        tasks.sort_by(|a, b| {
            b.probability
                .total_cmp(&a.probability)
                .then(a.task.cmp(&b.task))
        });
        let (best_set, best_set_recall, best_set_precision) = self.best_set(&tasks);
        FrozenEntrySet {
            requests: decay.effective(self.requests, now_us),
            tasks,
            best_set,
            best_set_recall,
            best_set_precision,
        }
    }
}

/// The set with the best F1 of expected recall and expected precision over weighted
/// observed sets (each sorted by task id), among each observed set and each cut of
/// `ranked` (tasks by decreasing marginal probability). Returns the set and its expected
/// recall and precision. Ties go to the smaller set in task order, so the answer is
/// deterministic.
pub fn best_f1_set(sets: &[(Vec<TaskId>, f64)], ranked: &[TaskId]) -> (Vec<TaskId>, f64, f64) {
    let total: f64 = sets.iter().map(|s| s.1).sum();
    if total <= 0.0 {
        return (Vec::new(), 0.0, 0.0);
    }
    let score = |candidate: &[TaskId]| {
        let (mut recall, mut precision) = (0.0, 0.0);
        for (actual, weight) in sets {
            let hits = candidate.iter().filter(|t| actual.contains(t)).count() as f64;
            recall += weight
                * if actual.is_empty() {
                    1.0
                } else {
                    hits / actual.len() as f64
                };
            precision += weight
                * if candidate.is_empty() {
                    0.0
                } else {
                    hits / candidate.len() as f64
                };
        }
        (recall / total, precision / total)
    };
    let f1 = |(r, p): (f64, f64)| {
        if r + p > 0.0 {
            2.0 * r * p / (r + p)
        } else {
            0.0
        }
    };
    let mut candidates: Vec<Vec<TaskId>> = sets.iter().map(|s| s.0.clone()).collect();
    for cut in 1..=ranked.len() {
        let mut set = ranked[..cut].to_vec();
        set.sort();
        candidates.push(set);
    }
    let mut best = (Vec::new(), 0.0, 0.0, -1.0);
    for candidate in candidates {
        let (recall, precision) = score(&candidate);
        let value = f1((recall, precision));
        if value > best.3 || (value == best.3 && candidate < best.0) {
            best = (candidate, recall, precision, value);
        }
    }
    (best.0, best.1, best.2)
}
