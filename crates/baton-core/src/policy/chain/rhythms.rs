//! The chain policy's re-warms by rhythm: a task whose starts come in episodes at a
//! steady period gets its next episode's instances ready over the window the rhythm
//! expects (no plan: a re-warm), as many as its last episodes needed at once; tasks the
//! graph knows but the policy has not met get theirs once per graph version.

use super::{ChainPolicy, MAX_REWARM_INSTANCES};
use crate::arrival::Episodes;
use crate::ids::TaskId;
use crate::policy::Action;

impl ChainPolicy {
    /// `task`'s episodes, seeded from the graph when it is first met.
    pub(super) fn episodes(&mut self, task: TaskId) -> &mut Episodes {
        if self.episodes.len() <= task.index() {
            self.episodes.resize(task.index() + 1, None);
        }
        let graph = &self.graph;
        self.episodes[task.index()]
            .get_or_insert_with(|| graph.load().episodes(task).cloned().unwrap_or_default())
    }

    /// The window in which `task`'s rhythm expects its next start, when it ends after
    /// `not_before_us` (what a kept instance covers already needs no pre-warm).
    pub(super) fn rhythm_window(
        &mut self,
        task: TaskId,
        not_before_us: u64,
    ) -> Option<(u64, u64, f64)> {
        let rhythm = self.episodes(task).rhythm()?;
        let (from, until) = rhythm.window();
        (until > not_before_us).then_some((from, until, rhythm.probability()))
    }

    /// Asks for `task` to be ready over `[ready, until)` (a re-warm: no plan), as many
    /// instances as its last episodes needed at once (one when the window is wide),
    /// replacing the re-warm asked for at
    /// its last end if that is still to come.
    pub(super) fn rewarm(
        &mut self,
        task: TaskId,
        now_us: u64,
        window: (u64, u64, f64),
        out: &mut Vec<Action>,
    ) {
        let (ready, until, probability) = window;
        let ready = ready.max(now_us);
        let c = *self.concurrency(task);
        // A burst's instances are worth holding through the window only when it is no
        // longer, per expected use, than the keep-alive holds a finished instance: a wide
        // window (a rhythm with a loose period) gets one instance, the burst's others
        // start when it comes. Sixteen instances held through a 40-min window for a
        // 75 % bet were 88k of TrainTicket 15:00-24:00's 107k wasted GB·s.
        let held = until.saturating_sub(ready) as f64;
        let instances = if held <= probability * self.keep_alive_us(task) as f64 {
            c.peak.max(c.last_peak).clamp(1, MAX_REWARM_INSTANCES)
        } else {
            1
        };
        if self.rewarms.get(&task) == Some(&(ready, until, instances)) {
            return; // asked for already (another end of the same episode)
        }
        if self.rewarms.get(&task).is_some_and(|&(r, _, _)| now_us < r) {
            out.push(Action::Release { task, plan: None });
        }
        for _ in 0..instances {
            out.push(Action::PreWarm {
                task,
                at_us: ready,
                until_us: until,
                plan: None,
                reservation: None,
                probability,
            });
        }
        self.rewarms.insert(task, (ready, until, instances));
    }

    /// Once per graph version: the tasks the graph knows but this policy has not met yet
    /// (after a restart, or tasks learned from a trace) get their rhythm's next start
    /// pre-warmed, as if their last end had just been seen.
    pub(super) fn rhythms_of_unmet(&mut self, now_us: u64, out: &mut Vec<Action>) {
        let snapshot = self.graph.load();
        if self.rhythms_seen == Some(snapshot.version()) {
            return;
        }
        self.rhythms_seen = Some(snapshot.version());
        for index in 0..snapshot.n_tasks() {
            let task = TaskId(index as u32);
            let met = self.episodes.get(index).is_some_and(Option::is_some);
            if met || snapshot.episodes(task).is_none_or(Episodes::is_empty) {
                continue;
            }
            if let Some(window) = self.rhythm_window(task, now_us) {
                if self
                    .rewarms
                    .get(&task)
                    .is_none_or(|&(_, until, _)| until <= now_us)
                {
                    self.rewarm(task, now_us, window, out);
                }
            }
        }
    }
}
