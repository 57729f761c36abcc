//! Arrivals on the engine's node: which instance a call takes, waiting for a start slot
//! or for an instance of its function being pre-warmed (`crate::slots`), starts and ends
//! told to the policy, and a request's latency once its last call ends.

use super::{added_latency, Engine, Event, END_ORDER};
use crate::slots::Waiter;
use baton_core::context::Prev;
use baton_core::exec::{choose_for_arrival, cold_cause, PREWARM_GRACE_US};
use baton_core::{PolicyEvent, PredictContext, TaskId};
use std::cmp::Reverse;

impl Engine<'_> {
    /// Arrival `index` comes at `at_us`: it takes the instance the executor's rule picks,
    /// else starts one if a start slot is free, else waits for a slot (or an instance).
    pub(super) fn arrive(&mut self, index: u32, at_us: u64) {
        let task = self.arrivals[index as usize].task;
        self.now = self.now.max(at_us);
        let now = self.now;
        let slot = task.index();
        if self.stats.function_invocations.len() <= slot {
            self.stats.function_invocations.resize(slot + 1, 0);
            self.stats.function_cold_starts.resize(slot + 1, 0);
        }
        self.stats.function_invocations[slot] += 1;
        self.task_instances(task);
        self.last_asked_us[slot] = Some(now);
        let (chosen, starting) = self.choose_ready(task);
        if chosen.is_none() && (starting || !self.slots.free(now)) {
            self.slots.wait(Waiter::Arrival {
                arrival: index,
                since_us: now,
                instance_only: starting,
            });
            if starting {
                let wait = self.expected_ready_us(task).saturating_sub(now);
                self.tell_start(index, wait);
            } else {
                let at = self.slots.first_free_us();
                self.schedule(at, Event::SlotFree);
            }
            return;
        }
        self.serve(index, now, chosen);
    }

    /// The ready instance of `task` an arrival takes now (the executor's rule), and whether
    /// one is being pre-warmed (without a ready one, the arrival waits for it, or for one
    /// that ends first, as a step waits in the pool).
    pub(super) fn choose_ready(&mut self, task: TaskId) -> (Option<u32>, bool) {
        let now = self.now;
        let candidates = self.candidates(task, now, now);
        let ready = candidates.into_iter().filter(|c| c.ready_at <= now);
        let chosen = choose_for_arrival(ready, now, self.config.reuse).map(|id| id as u32);
        (chosen, self.prewarm_under_way(task))
    }

    /// Whether an instance of `task` is being pre-warmed: started and not ready yet, or
    /// waiting for a start slot.
    fn prewarm_under_way(&self, task: TaskId) -> bool {
        let now = self.now;
        self.queued_by_task[task.index()] > 0
            || self.by_task[task.index()]
                .iter()
                .any(|&i| self.instances[i as usize].ready_at_us > now)
    }

    /// When the first instance of `task` being pre-warmed is expected to be ready: the
    /// earliest started one's ready time, else (all wait for a slot) one start from now.
    pub(super) fn expected_ready_us(&self, task: TaskId) -> u64 {
        let now = self.now;
        self.by_task[task.index()]
            .iter()
            .map(|&id| self.instances[id as usize].ready_at_us)
            .filter(|&ready| ready > now)
            .min()
            .unwrap_or_else(|| now + self.cold_estimate_us(task))
    }

    /// Waiting starts take the slots free now, first come first: a pre-warm starts, an
    /// arrival takes a ready instance of its function or starts one (or, one being
    /// pre-warmed now, waits for an instance only).
    pub(super) fn serve_waiting(&mut self) {
        let now = self.now;
        while let Some(waiter) = self.slots.next_waiting(now) {
            match waiter {
                Waiter::Arrival {
                    arrival, since_us, ..
                } => {
                    let task = self.arrivals[arrival as usize].task;
                    match self.choose_ready(task) {
                        (None, true) => self.slots.wait(Waiter::Arrival {
                            arrival,
                            since_us,
                            instance_only: true,
                        }),
                        (chosen, _) => self.serve(arrival, since_us, chosen),
                    }
                }
                Waiter::Prewarm(queued) => self.begin_prewarm(queued, true),
            }
        }
        if self.slots.waiting_for_slot() {
            let at = self.slots.first_free_us();
            self.schedule(at, Event::SlotFree);
        }
    }

    /// Pre-warmed instance `id` is ready: an arrival waiting for its function takes it. If
    /// no other instance of the function is being pre-warmed, the arrivals still waiting
    /// for one want a slot as well.
    pub(super) fn ready(&mut self, id: u32) {
        let instance = &self.instances[id as usize];
        let task = instance.task;
        if instance.alive && !instance.busy && instance.ready_at_us <= self.now {
            self.hand_to_waiting(task, id);
        }
        self.no_start_under_way(task);
    }

    /// If no instance of `task` is being pre-warmed, the arrivals waiting for one want a
    /// slot as well.
    pub(super) fn no_start_under_way(&mut self, task: TaskId) {
        if !self.prewarm_under_way(task) {
            let arrivals = self.arrivals;
            self.slots.need_slot(|a| arrivals[a as usize].task == task);
            self.serve_waiting();
        }
    }

    /// Instance `id` of `task` became free for an arrival (idle, or a pre-warm started): the
    /// first arrival of `task` waiting for a slot takes it.
    pub(super) fn hand_to_waiting(&mut self, task: TaskId, id: u32) {
        if !self.slots.anyone_waiting() {
            return;
        }
        let arrivals = self.arrivals;
        if let Some((index, since)) = self
            .slots
            .take_waiting(|a| arrivals[a as usize].task == task)
        {
            self.serve(index, since, Some(id));
        }
    }

    /// Serves arrival `index`, which came at `since_us`, now: on instance `chosen`, or on a
    /// new one (a cold start, in a start slot).
    pub(super) fn serve(&mut self, index: u32, since_us: u64, chosen: Option<u32>) {
        let arrival = self.arrivals[index as usize];
        let now = self.now;
        let task = arrival.task;
        let slot = task.index();
        let (instance, delay) = match chosen {
            Some(id) => {
                let instance = &self.instances[id as usize];
                let delay = instance.ready_at_us.saturating_sub(now);
                if instance.prewarm.is_some() && !instance.used {
                    self.stats.prewarm_hits += 1;
                    // Late: it waited for its pre-warm (or for a slot the pre-warms held).
                    if delay > 0 || since_us < now {
                        self.stats.late_prewarm_hits += 1;
                    }
                }
                (id, delay)
            }
            None => {
                let cold = match self.templates.as_mut() {
                    Some(templates) => templates.cold_start(self.costs, task, now),
                    None => self.costs.cold_start_us(task),
                };
                if !self.make_room(self.costs.memory_mib(task)) {
                    self.stats.overcommits += 1;
                }
                self.stats.cold_starts += 1;
                self.stats.function_cold_starts[slot] += 1;
                let busy = self.busy_by_task[slot] as usize;
                self.stats
                    .cold_causes
                    .add(cold_cause(busy, self.gone[slot]));
                self.cold[index as usize] = true;
                let slot_taken = self.slots.take(now, cold);
                debug_assert!(slot_taken, "an arrival starts only in a free slot");
                (self.new_instance(task, now + cold, None), cold)
            }
        };
        self.mark_busy(instance, now);
        // What it waited for a slot or an instance counts in its wait.
        let waited = now - since_us;
        self.delay_us[index as usize] = waited + delay;
        let end = now + delay + arrival.duration_us;
        // Ends go after every other event of their instant, the latest-started first: a
        // call ends before its caller when both end at one microsecond, as it does live.
        self.queue.push(Reverse((
            end,
            END_ORDER - u64::from(index),
            Event::End {
                instance,
                arrival: index,
            },
        )));
        self.tell_start(index, delay);
        let (requests, arrivals) = (self.requests, self.arrivals);
        self.schedule
            .came(requests, arrivals, index, since_us, waited + delay);
    }

    /// Tells the policy that arrival `index` starts now with `wait_us` ahead of it (once:
    /// an arrival waiting for a pre-warm is told when it comes, as the pool tells the
    /// planner before a step waits for one).
    pub(super) fn tell_start(&mut self, index: u32, wait_us: u64) {
        if std::mem::replace(&mut self.told[index as usize], true) {
            return;
        }
        let arrival = self.arrivals[index as usize];
        let request = &self.requests[arrival.request as usize];
        let invocation = &request.invocations()[arrival.index as usize];
        let grand_caller = invocation
            .parent
            .map(|p| request.invocations()[p as usize].task);
        let reveals_route = request.entry().and_then(|entry| {
            let first = *request.children(entry).first()?;
            (first == arrival.index).then(|| request.invocations()[entry as usize].start_us)
        });
        self.tell(PolicyEvent::Start {
            task: arrival.task,
            invocation: u64::from(index),
            at_us: self.now,
            context: PredictContext {
                route: request
                    .route()
                    .filter(|_| reveals_route.is_some() || Some(arrival.index) != request.entry()),
                prev: Prev::Start,
                grand_caller,
                operation: Some(invocation.label),
            },
            reveals_route,
            // Its calls come later by its wait: causally, the wait added here; as
            // recorded, only where the recorded starts include it.
            wait_us: if self.config.causal {
                wait_us
            } else {
                invocation.waited_us
            },
        });
    }

    pub(super) fn end(&mut self, id: u32, arrival: u32) {
        let now = self.now;
        self.stats.served += 1;
        let task = self.instances[id as usize].task;
        self.busy_by_task[task.index()] -= 1;
        {
            let instance = &mut self.instances[id as usize];
            instance.busy = false;
            instance.idle_from_us = Some(now);
            instance.last_idle_since_us = now;
            // Pre-warms still counting on it keep it, whatever the policy says next.
            instance.keep_until_us = instance
                .claims
                .hold_until(now, PREWARM_GRACE_US)
                .unwrap_or(now);
        }
        if self.instances[id as usize].alive {
            self.task_instances(task).push(id);
        }
        if self.last_finished.len() <= task.index() {
            self.last_finished.resize(task.index() + 1, None);
        }
        self.last_finished[task.index()] = Some(id);
        self.tell(PolicyEvent::End {
            task,
            invocation: u64::from(arrival),
            at_us: now,
        });
        let instance = &self.instances[id as usize];
        if instance.alive && !instance.busy {
            self.hand_to_waiting(task, id);
        }
        let instance = &self.instances[id as usize];
        if instance.alive && !instance.busy {
            if instance.keep_until_us <= now {
                self.release(id, now);
            } else {
                self.ensure_expiry(id);
            }
        }
        let request = self.arrivals[arrival as usize].request as usize;
        self.remaining[request] -= 1;
        if self.remaining[request] == 0 {
            self.finish_request(request);
            if self.learner.is_some() {
                self.schedule(
                    now,
                    Event::Learn {
                        request: request as u32,
                    },
                );
            }
        }
    }

    pub(super) fn finish_request(&mut self, request: usize) {
        let r = &self.requests[request];
        // Per invocation of the request: its delay and whether it was cold.
        let mut delay = vec![0u64; r.invocations().len()];
        let mut cold = vec![false; r.invocations().len()];
        for &global in &self.of_request[request] {
            let index = self.arrivals[global as usize].index as usize;
            delay[index] = self.delay_us[global as usize];
            cold[index] = self.cold[global as usize];
        }
        let (latency, n_cold) = added_latency(r, &delay, &cold);
        self.stats.request_latency_us[request] = latency;
        self.stats.request_critical_cold[request] = n_cold;
    }
}
