//! What an instance of each task costs: its cold-start time and its memory. The simulator
//! charges these, and cost-aware policies (greedy-dual, oracle) weigh by them.

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
}

impl Costs {
    /// Costs with the given defaults and nothing per task.
    pub fn new(default_cold_start_us: u64, default_memory_mib: u64) -> Costs {
        Costs {
            cold_start_us: Vec::new(),
            memory_mib: Vec::new(),
            default_cold_start_us,
            default_memory_mib,
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

    /// `task`'s cold-start time, µs.
    pub fn cold_start_us(&self, task: TaskId) -> u64 {
        self.cold_start_us
            .get(task.index())
            .copied()
            .flatten()
            .unwrap_or(self.default_cold_start_us)
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
