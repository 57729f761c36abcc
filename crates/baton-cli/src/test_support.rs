//! Helpers shared by the binary's unit tests.

use baton_core::request::{Invocation, Usage};
use baton_core::{LabelId, TaskId};

/// A call of task `task` (labelled as its task), started at `start_us`, running `wall_us`.
pub fn call(task: u32, parent: Option<u32>, start_us: u64, wall_us: u64) -> Invocation {
    Invocation {
        task: TaskId(task),
        label: LabelId(task),
        parent,
        start_us,
        usage: Usage {
            wall_us,
            ..Usage::default()
        },
        waited_us: 0,
    }
}
