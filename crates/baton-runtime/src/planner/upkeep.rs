//! The planner's upkeep, on its thread: a finished request's records written to the log,
//! learned (through the same conversion a restart replays) and handed to the sink; the
//! periodic housekeeping; and eviction over the idle-memory budget in the policy's order.

use super::{Planner, PUBLISH_EVERY};
use crate::node::{lock, RecordSource};
use crate::pool::IdleInfo;
use baton_core::exec::line_up;
use baton_core::exec::room::{self, Evictable};
use baton_core::policy::IdleInstance;
use baton_core::{PolicyEvent, TaskId};
use baton_trace::schema::ExecutionRecord;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Planner {
    /// Logs, learns and hands on a finished request's records, then publishes the graph
    /// unless a snapshot went out moments ago (housekeeping publishes the rest).
    pub(super) fn finished(&mut self, records: &[ExecutionRecord]) {
        if let Some(file) = self.log.as_mut() {
            let mut failed = 0;
            for record in records {
                if record.write_line(file).is_err() {
                    failed += 1;
                }
            }
            if file.flush().is_err() {
                failed += 1;
            }
            self.node
                .counters
                .log_write_errors
                .fetch_add(failed, Ordering::Relaxed);
        }
        // The same conversion a restarted server replays its log through (warm timing:
        // waits removed), so a restored graph equals one that never stopped.
        let mut learner = lock(&self.node.learner);
        self.node
            .learn(&mut learner, records, RecordSource::Baton, None);
        let recent = self.timed
            && self
                .last_publish
                .is_some_and(|at| at.elapsed() < PUBLISH_EVERY);
        if recent {
            self.publish_pending = true;
        } else {
            self.node.publish(learner);
            self.last_publish = Some(Instant::now());
            self.publish_pending = false;
        }
    }

    /// The periodic work, at `at_us` on the node's clock.
    pub(super) fn housekeeping(&mut self, at_us: u64) {
        let now = Instant::now();
        if self.publish_pending {
            self.node.publish(lock(&self.node.learner));
            self.last_publish = Some(now);
            self.publish_pending = false;
        }
        self.node.pool.expire(now);
        if let Some(services) = self.node.services() {
            services.stop_idle(now);
        }
        if let Some(reservations) = &self.node.reservations {
            reservations.expire(at_us);
        }
        self.tell(PolicyEvent::Tick { at_us });
        self.apply_all(None, at_us, self.node.clock.instant_of(at_us));
        self.enforce_budget(at_us);
    }

    /// Evicts idle workers, lowest policy priority first, while the declared memory of
    /// the node's workers (and of starts waiting for room) is over the pool's budget (the executor's rule, [`room::make_room`]). Workers still
    /// settling (given back, their end not heard yet) are neither counted nor evicted: the
    /// policy has not weighed their last use, and settling them enforces the budget again.
    pub(super) fn enforce_budget(&mut self, at_us: u64) {
        let Some((idle, evictable, free)) = self.room(at_us, 0) else {
            return;
        };
        let (going, _) = room::make_room(&evictable, free, 0, None);
        if going.is_empty() {
            return;
        }
        for task in self.evict(&idle, &going) {
            self.tell(PolicyEvent::Evicted { task, at_us });
        }
        self.apply_all(None, at_us, self.node.clock.instant_of(at_us));
    }

    /// With an idle budget: the settled idle workers, as the room rule sees them (ids:
    /// their index), and what the budget has left (negative: over). When `needed_mib`
    /// fits in what is left, no worker is weighed (nothing will go): this runs at every
    /// step's end.
    pub(super) fn room(
        &self,
        at_us: u64,
        needed_mib: u64,
    ) -> Option<(Vec<IdleInfo>, Vec<Evictable>, i64)> {
        let budget = self.node.pool.idle_budget_mib()?;
        let mut idle = self.node.pool.idle();
        idle.retain(|i| !i.settling);
        let used: u64 = idle.iter().map(|i| i.memory_mib).sum();
        // The budget is the node's memory for workers: busy and starting workers, spares
        // and the starts waiting for room count against it too (the pool's admission), so
        // idle workers make room for them.
        let left = (i64::try_from(budget).unwrap_or(i64::MAX) - used as i64)
            .min(self.node.pool.room_mib().unwrap_or(i64::MAX));
        if left >= i64::try_from(needed_mib).unwrap_or(i64::MAX) {
            return Some((idle, Vec::new(), left));
        }
        let mut instances: Vec<IdleInstance> = idle
            .iter()
            .map(|i| IdleInstance {
                task: self.node.ids(&i.function).task,
                idle_since_us: self.node.clock.us_of(i.since),
                memory_mib: i.memory_mib,
                cold_start_us: self.node.cold_estimate_us(&i.function),
                // An unused pre-warm is weighed as the bet it stands for, as the
                // simulator weighs one: it keeps its room only against what is worth
                // less.
                bet: i
                    .bet
                    .map(|(weight, until)| (weight, self.node.clock.us_of(until))),
                ahead: 0,
            })
            .collect();
        line_up(&mut instances, self.node.pool.reuse());
        let evictable = idle
            .iter()
            .zip(&instances)
            .enumerate()
            .map(|(at, (i, instance))| Evictable {
                id: at as u64,
                priority: self.executor.evict_priority(instance, at_us),
                memory_mib: i.memory_mib,
                claimed: i.claimed,
            })
            .collect();
        Some((idle, evictable, left))
    }

    /// Evicts the workers of `idle` at the indices `going`; returns the tasks of those
    /// evicted (one taken by a step meanwhile is not).
    pub(super) fn evict(&self, idle: &[IdleInfo], going: &[u64]) -> Vec<TaskId> {
        going
            .iter()
            .filter_map(|&at| idle.get(at as usize))
            .filter(|victim| self.node.pool.evict(&victim.function, victim.pid))
            .map(|victim| self.node.ids(&victim.function).task)
            .collect()
    }
}
