//! Pre-warms and the policy's other decisions on the engine's node: an idle instance
//! claimed or a new one started (in a free start slot, or in its turn in the node's line,
//! holding no memory until then), keep-alives, templates held and plans released.

use super::{Engine, Event};
use crate::slots::Waiter;
use baton_core::exec::{
    choose_for_prewarm, claim_weight, Candidate, Decision, Prewarm, PREWARM_GRACE_US,
};
use baton_core::policy::IdleInstance;
use baton_core::TaskId;

/// A pre-warm waiting for a start slot: its task and plan, and its window as asked when it
/// was decided, µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct QueuedPrewarm {
    task: TaskId,
    plan: Option<u64>,
    queued_at_us: u64,
    ready_at_us: u64,
    until_us: u64,
    claim_us: (u64, u64),
    probability: f64,
}

impl Engine<'_> {
    /// Starts or claims an instance of `task` ready at, kept until (if unused) and claimed
    /// over the times of `window` (µs). The claim spans the policy's window and the task's
    /// run time from the ready time the policy asked for, even when the instance can only
    /// be ready later: an arrival in that interval answers it. A pre-warm due at once since
    /// `at_once_since` (carried out after the planner's lag) that no idle instance covers
    /// is not started when a step of its task came meanwhile, as in the runtime.
    pub(super) fn start_prewarm(
        &mut self,
        task: TaskId,
        (ready_at_us, until_us, (claim_from, claim_until)): (u64, u64, (u64, u64)),
        (plan, probability): (Option<u64>, f64),
        at_once_since: Option<u64>,
    ) {
        let now = self.now;
        let until_us = until_us.max(ready_at_us + PREWARM_GRACE_US);
        // An idle instance whose claims leave room for this one serves: extend and claim
        // it. Claims keep concurrent needs apart: two sure pre-warms of one task for the
        // same time get two instances, two even bets share one, pre-warms one after another
        // share one.
        let candidates = self.candidates(task, claim_from, claim_until);
        let existing =
            choose_for_prewarm(candidates, ready_at_us, now, probability).map(|id| id as u32);
        if let Some(id) = existing {
            let instance = &mut self.instances[id as usize];
            instance.claims.add(claim_from, claim_until, probability);
            if instance.keep_until_us < until_us {
                instance.keep_until_us = until_us;
                self.ensure_expiry(id);
            }
            self.stats.prewarms_extended += 1;
            return;
        }
        if at_once_since.is_some_and(|since| self.asked_after(task, since)) {
            self.stats.prewarms_overtaken += 1;
            return;
        }
        let queued = QueuedPrewarm {
            task,
            plan,
            queued_at_us: now,
            ready_at_us,
            until_us,
            claim_us: (claim_from, claim_until),
            probability,
        };
        if !self.room_for_prewarm(&queued) {
            self.stats.prewarms_failed += 1;
            return;
        }
        if self.slots.free(now) {
            self.begin_prewarm(queued, false);
        } else {
            // It waits for a slot as the pool's pre-warm thread does: no instance yet and no
            // memory held, but its function's steps wait for it.
            self.task_instances(task);
            self.queued_by_task[task.index()] += 1;
            self.slots.wait(Waiter::Prewarm(queued));
            let at = self.slots.first_free_us();
            self.schedule(at, Event::SlotFree);
        }
    }

    /// Whether memory is free for pre-warm `queued` now, or idle instances the policy
    /// values below its bet make way for it (the bet is weighed only then).
    pub(super) fn room_for_prewarm(&mut self, queued: &QueuedPrewarm) -> bool {
        let now = self.now;
        let memory_mib = self.costs.memory_mib(queued.task);
        if self.free_mib >= memory_mib as i64 {
            return true;
        }
        let bet = IdleInstance {
            task: queued.task,
            idle_since_us: now,
            memory_mib,
            cold_start_us: self.cold_estimate_us(queued.task),
            bet: Some((claim_weight(queued.probability), queued.claim_us.1)),
            ahead: 0,
        };
        let worth = self.policy.bet_priority(&bet, now);
        self.evict_below(memory_mib, Some(worth))
    }

    /// Starts pre-warm `queued` in a free start slot, if memory is still free for it: its
    /// window moves by the time it waited for the slot, and a step waiting for its function
    /// takes it when it is ready.
    pub(super) fn begin_prewarm(&mut self, queued: QueuedPrewarm, from_line: bool) {
        let now = self.now;
        let task = queued.task;
        let waited = now - queued.queued_at_us;
        if from_line {
            self.queued_by_task[task.index()] -= 1;
            if !self.room_for_prewarm(&queued) {
                self.stats.prewarms_failed += 1;
                self.no_start_under_way(task);
                return;
            }
        }
        if let Some(templates) = self.templates.as_mut() {
            templates.prewarm_start(self.costs, task, now);
        }
        let hold = queued
            .ready_at_us
            .saturating_sub(queued.queued_at_us)
            .max(self.cold_estimate_us(task));
        let slot_taken = self.slots.take(now, hold);
        debug_assert!(slot_taken, "a pre-warm starts only in a free slot");
        let ready_at_us = queued.ready_at_us + waited;
        let id = self.new_instance(task, ready_at_us, Some(Prewarm { plan: queued.plan }));
        let (claim_from, claim_until) = queued.claim_us;
        let instance = &mut self.instances[id as usize];
        instance.keep_until_us = queued.until_us + waited;
        // Ready later than asked, its step waits for it and holds it as much longer.
        let late = ready_at_us.saturating_sub(claim_from);
        instance
            .claims
            .add(claim_from, claim_until + late, queued.probability);
        self.stats.prewarms_started += 1;
        self.stats.prewarm_sources.count(queued.plan, false);
        self.ensure_expiry(id);
        if ready_at_us <= now {
            self.ready(id);
        } else {
            self.schedule(ready_at_us, Event::Ready { instance: id });
        }
    }

    /// Every live instance of `task` that is not busy, as the executor's rules see it, with
    /// the weight of its claims over `from..=until` (an arrival's instant, a pre-warm's
    /// interval).
    pub(super) fn candidates(
        &mut self,
        task: TaskId,
        from: u64,
        until: u64,
    ) -> Vec<Candidate<u64>> {
        self.task_instances(task);
        let instances = &self.instances;
        self.by_task[task.index()]
            .iter()
            .map(|&id| {
                let i = &instances[id as usize];
                Candidate {
                    id: u64::from(id),
                    ready_at: i.ready_at_us,
                    keep_until: i.keep_until_us,
                    idle_since: i.last_idle_since_us,
                    claims: i.claims.over(from, until),
                }
            })
            .collect()
    }

    /// Keeps the instance of `task` that just finished until `until_us`, or until its
    /// pinned deadline if it has one (`pin`: pins `until_us` if it has none).
    fn keep_alive(&mut self, task: TaskId, until_us: u64, pin: bool) {
        let Some(Some(id)) = self.last_finished.get(task.index()).copied() else {
            return;
        };
        let instance = &mut self.instances[id as usize];
        if pin && instance.pinned_until_us.is_none() {
            instance.pinned_until_us = Some(until_us);
        }
        let until_us = instance.pinned_until_us.unwrap_or(until_us);
        if instance.alive && !instance.busy && until_us > instance.keep_until_us {
            instance.keep_until_us = until_us;
            self.ensure_expiry(id);
        }
    }

    pub(super) fn apply(&mut self, decision: &Decision) {
        let now = self.now;
        match *decision {
            Decision::Prewarm {
                task,
                start_at_us,
                ready_at_us,
                until_us,
                claim_until_us,
                plan,
                probability,
                ..
            } => {
                let cold = self.cold_estimate_us(task);
                // Due at once: carried out after the planner's lag (the live planner runs
                // behind the requests).
                let lag = if start_at_us <= now {
                    self.draw_lag()
                } else {
                    0
                };
                let at_once_since = (lag > 0).then_some(now);
                let start_at_us = if at_once_since.is_some() {
                    now + lag
                } else {
                    start_at_us
                };
                let ready_at = (start_at_us + cold).max(ready_at_us);
                if start_at_us > now {
                    let epoch = self.releases.get(&(task, plan)).copied().unwrap_or(0);
                    self.schedule(
                        start_at_us,
                        Event::PrewarmStart {
                            task,
                            ready_at_us: ready_at,
                            until_us,
                            claim_us: (ready_at_us, claim_until_us),
                            plan,
                            probability_ppm: (claim_weight(probability) * 1e6) as u32,
                            epoch,
                            at_once_since,
                        },
                    );
                } else {
                    let window = (ready_at, until_us, (ready_at_us, claim_until_us));
                    self.start_prewarm(task, window, (plan, probability), None);
                }
            }
            Decision::KeepAlive { task, until_us } => self.keep_alive(task, until_us, false),
            Decision::PinKeepAlive { task, until_us } => self.keep_alive(task, until_us, true),
            Decision::HoldTemplate { task, until_us } => {
                if let Some(templates) = self.templates.as_mut() {
                    templates.hold(self.costs, task, now, until_us);
                }
            }
            Decision::Release { task, plan } => {
                *self.releases.entry((task, plan)).or_default() += 1;
                self.task_instances(task);
                let instances = &self.instances;
                let mut unused: Vec<u32> = self.by_task[task.index()]
                    .iter()
                    .copied()
                    .filter(|&id| {
                        let instance = &instances[id as usize];
                        !instance.busy
                            && !instance.used
                            && instance.prewarm == Some(Prewarm { plan })
                            && instance.keep_until_us <= now
                    })
                    .collect();
                // Oldest first, whatever the list's order: the run stays the same.
                unused.sort_unstable();
                for id in unused {
                    self.release(id, now);
                }
            }
        }
    }
}
