//! What an instance of each task costs: its cold-start time and its memory. The simulator
//! charges these, and cost-aware policies (greedy-dual, oracle) weigh by them.
//!
//! With templates (the runtime's per-function "zygotes", made at deploy), a cold start is
//! a fork from the function's template: [`Costs::cold_start_us`] is then the template's
//! start time (never more than the task's own), and every function holds the template's
//! memory for as long as it is deployed.

use crate::ids::TaskId;
use serde::{Deserialize, Serialize};

/// Per-task cold-start time and instance memory, with defaults for tasks not set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Costs {
    cold_start_us: Vec<Option<u64>>,
    memory_mib: Vec<Option<u64>>,
    /// Cold-start time of a task without its own, µs.
    pub default_cold_start_us: u64,
    /// Instance memory of a task without its own, MiB.
    pub default_memory_mib: u64,
    /// Templates, when every function has one.
    #[serde(default)]
    pub templates: Option<TemplateCosts>,
}

/// What a function's template costs: a start forked from it, and the memory it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateCosts {
    /// A worker forked from the template, ready, µs.
    pub start_us: u64,
    /// The template's own memory, held while its function is deployed, MiB.
    pub memory_mib: u64,
    /// Its spare, when templates keep one (as `baton serve`'s do).
    #[serde(default)]
    pub spare: Option<SpareCosts>,
}

/// How long after a spare is taken its template starts forking the next one, µs: after the
/// burst the take belongs to, not during it. Forked at once, the next spare's fork and
/// cgroup move competed with the very steps that took spares (`baton demo` on 2 cores,
/// 2026-12-02: the predicted steps after an idle gap ran 1.4–8.9 ms and came late 2–4
/// times a run; with the fork deferred 100 ms, 0.7–2.9 ms and never late). The simulator
/// and the runtime's pool both wait this long.
pub const SPARE_REFILL_DELAY_US: u64 = 100_000;

/// What a template's spare costs: a worker forked ahead and put under its limits, which a
/// start takes instead of forking; the template forks the next one
/// [`SPARE_REFILL_DELAY_US`] later (ready a fork, [`TemplateCosts::start_us`], after that).
/// A template's first spare is forked as soon as the template is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpareCosts {
    /// A start that takes the spare: ready for its call, µs.
    pub start_us: u64,
    /// The spare's own memory (its private pages beside its template's), held with the
    /// template, MiB.
    pub memory_mib: u64,
}

impl Costs {
    /// Costs with the given defaults and nothing per task.
    pub fn new(default_cold_start_us: u64, default_memory_mib: u64) -> Costs {
        Costs {
            cold_start_us: Vec::new(),
            memory_mib: Vec::new(),
            default_cold_start_us,
            default_memory_mib,
            templates: None,
        }
    }

    fn slot<T: Clone + Default>(vector: &mut Vec<T>, task: TaskId) -> &mut T {
        if vector.len() <= task.index() {
            vector.resize(task.index() + 1, T::default());
        }
        &mut vector[task.index()]
    }

    /// Sets `task`'s cold-start time.
    pub fn set_cold_start_us(&mut self, task: TaskId, us: u64) {
        *Self::slot(&mut self.cold_start_us, task) = Some(us);
    }

    /// Sets `task`'s instance memory.
    pub fn set_memory_mib(&mut self, task: TaskId, mib: u64) {
        *Self::slot(&mut self.memory_mib, task) = Some(mib.max(1));
    }

    /// `task`'s cold-start time, µs: a start forked from its template when there are
    /// templates (at most its own).
    pub fn cold_start_us(&self, task: TaskId) -> u64 {
        let own = self.own_cold_start_us(task);
        self.templates.map_or(own, |t| t.start_us.min(own))
    }

    /// `task`'s cold-start time from nothing (no template), µs: also what starting its
    /// template takes.
    pub fn own_cold_start_us(&self, task: TaskId) -> u64 {
        self.cold_start_us
            .get(task.index())
            .copied()
            .flatten()
            .unwrap_or(self.default_cold_start_us)
    }

    /// A start of `task` forked from its template, µs (never more than its own), when
    /// there are templates.
    pub fn template_start_us(&self, task: TaskId) -> Option<u64> {
        let own = self.own_cold_start_us(task);
        self.templates.map(|t| t.start_us.min(own))
    }

    /// `task`'s instance memory, MiB.
    pub fn memory_mib(&self, task: TaskId) -> u64 {
        self.memory_mib
            .get(task.index())
            .copied()
            .flatten()
            .unwrap_or(self.default_memory_mib)
    }

    /// How many tasks have their own memory figure.
    pub fn n_with_memory(&self) -> usize {
        self.memory_mib.iter().filter(|m| m.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_make_cold_starts_forks_never_slower_than_their_own() {
        let mut costs = Costs::new(50_000, 128);
        costs.set_cold_start_us(TaskId(1), 5_000);
        costs.templates = Some(TemplateCosts {
            start_us: 15_000,
            memory_mib: 11,
            spare: None,
        });
        assert_eq!(costs.cold_start_us(TaskId(0)), 15_000);
        assert_eq!(costs.cold_start_us(TaskId(1)), 5_000, "its own is faster");
        assert_eq!(
            costs.memory_mib(TaskId(0)),
            128,
            "instances keep their memory"
        );
    }

    #[test]
    fn per_task_values_override_defaults() {
        let mut costs = Costs::new(500, 128);
        costs.set_memory_mib(TaskId(3), 300);
        assert_eq!(costs.memory_mib(TaskId(3)), 300);
        assert_eq!(costs.memory_mib(TaskId(2)), 128);
        assert_eq!(costs.memory_mib(TaskId(99)), 128);
        assert_eq!(costs.cold_start_us(TaskId(3)), 500);
        assert_eq!(costs.n_with_memory(), 1);
    }
}
