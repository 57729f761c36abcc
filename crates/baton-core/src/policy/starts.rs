//! Each task's starts by concurrency level: per level `k`, the last start that needed
//! more than `k` instances at once and the moving mean of the time between such starts
//! (level 0: every start). The chain policy reads them to tell when an idle instance is
//! next used, by its place in line, and how long a burst's surplus is worth keeping.

use crate::ids::TaskId;

/// How many levels of concurrency a task's start gaps are kept for: an instance further in
/// line is expected to be used no sooner than it has been idle.
pub const START_LEVELS: usize = 8;

/// The weight of each new time between starts in a task's moving mean of them.
pub const START_GAP_WEIGHT: f64 = 1.0 / 16.0;

/// A task's last start at one level and the moving mean of the time between them, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StartGap {
    /// The last such start.
    pub last_us: Option<u64>,
    /// The mean time between such starts, once two were seen.
    pub mean_us: Option<f64>,
}

impl StartGap {
    fn note(&mut self, at_us: u64) {
        if let Some(last) = self.last_us {
            let sample = at_us.saturating_sub(last) as f64;
            self.mean_us = Some(match self.mean_us {
                Some(mean) => mean + (sample - mean) * START_GAP_WEIGHT,
                None => sample,
            });
        }
        self.last_us = Some(self.last_us.map_or(at_us, |last| last.max(at_us)));
    }
}

/// Every task's [`StartGap`]s, one per level.
#[derive(Debug, Default)]
pub struct StartGaps {
    tasks: Vec<[StartGap; START_LEVELS]>,
}

impl StartGaps {
    /// A start of `task` at `at_us` while `running` of its instances run, itself included:
    /// it counts at every level below `running`.
    pub fn note(&mut self, task: TaskId, at_us: u64, running: u32) {
        if self.tasks.len() <= task.index() {
            self.tasks
                .resize(task.index() + 1, [StartGap::default(); START_LEVELS]);
        }
        let running = running.max(1) as usize;
        for gap in self.tasks[task.index()].iter_mut().take(running) {
            gap.note(at_us);
        }
    }

    /// `task`'s starts at `level` (more than `level` instances needed at once); nothing
    /// seen yet gives the default.
    pub fn at(&self, task: TaskId, level: usize) -> StartGap {
        self.tasks
            .get(task.index())
            .and_then(|g| g.get(level))
            .copied()
            .unwrap_or_default()
    }
}
