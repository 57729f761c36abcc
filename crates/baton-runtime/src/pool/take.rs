//! Taking a worker for a step: an idle one (by the executor's rule), else one still being
//! pre-warmed (waited for), else a cold start (its template's spare, a fork, or a plain
//! start), within the function's instance cap and the node's start bound.

use super::{lock, WarmPool};
use crate::process::{Placement, WorkerError};
use baton_core::exec::{choose_for_arrival, cold_cause, Claims, Gone};
use baton_core::sync::UnpoisonedWait;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lease::{BusySlot, Lease, Warmth, CAP_WAIT};

impl WarmPool {
    /// A worker for `name`: an idle one (pre-warmed first), else one still being pre-warmed
    /// (waited for), else a cold start, unless the function is at its instance cap or the
    /// node at its cold-start bound: then it waits for a worker to come back or a start to
    /// finish (at most [`CAP_WAIT`]).
    pub fn take(self: &Arc<Self>, name: &str) -> Result<Lease, WorkerError> {
        self.take_telling(name, &|_, _| {})
    }

    /// [`WarmPool::take`], calling `chosen` (with no lock held) before it waits for a
    /// pre-warm still starting or starts a worker cold: see `Backend::acquire`.
    pub fn take_telling(
        self: &Arc<Self>,
        name: &str,
        chosen: &dyn Fn(Warmth, Duration),
    ) -> Result<Lease, WorkerError> {
        let spec = self.spec(name).ok_or_else(|| WorkerError::Function {
            function: name.to_owned(),
            message: "unknown function".into(),
        })?;
        let asked = Instant::now();
        let mut waited = false;
        let mut capped = false;
        let mut told = false;
        let busy = || BusySlot {
            pool: Arc::clone(self),
            function: name.to_owned(),
        };
        let mut state = lock(&self.state);
        match state.asked.get_mut(name) {
            Some(at) => *at = asked,
            None => {
                state.asked.insert(name.to_owned(), asked);
            }
        }
        loop {
            let reuse = state.reuse;
            if let Some(list) = state.idle.get_mut(name) {
                // The executor's rule, as in the simulator: a claimed one, else by the
                // node's reuse setting.
                let now = Instant::now();
                let chosen =
                    choose_for_arrival(list.iter().map(|i| i.candidate(now, now)), now, reuse);
                let position = chosen
                    .and_then(|pid| list.iter().position(|i| u64::from(i.worker.pid()) == pid));
                if let Some(position) = position {
                    let mut idle = list.remove(position);
                    // The claim this step answers is settled; the others stay with the
                    // worker and come back with it.
                    idle.claims.serve(now);
                    let warmth = if idle.prewarmed.is_some() {
                        self.counters.prewarms_used.fetch_add(1, Ordering::Relaxed);
                        Warmth::Prewarmed
                    } else {
                        Warmth::Warm
                    };
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    *state.busy.entry(name.to_owned()).or_default() += 1;
                    return Ok(Lease {
                        worker: idle.worker,
                        warmth,
                        wait_us: asked.elapsed().as_micros() as u64,
                        plan: idle.prewarmed.and_then(|p| p.plan),
                        // A pre-warmed worker it had to wait for came late, whether the
                        // wait was for it or for a start slot the pre-warms held.
                        waited_for_prewarm: waited && idle.prewarmed.is_some(),
                        claims: idle.claims,
                        _busy: busy(),
                    });
                }
            }
            let count = |map: &HashMap<String, usize>| map.get(name).copied().unwrap_or(0);
            let prewarming = count(&state.starting);
            let live = prewarming + count(&state.cold) + count(&state.busy);
            let at_cap = live >= spec.max_instances as usize;
            let node_busy = state.spawning >= self.max_cold_starts;
            if prewarming == 0 && !at_cap && !node_busy {
                break;
            }
            if !told && !at_cap && !node_busy {
                // It waits for a pre-warm under way: the planner hears of the step now.
                told = true;
                let began = state.prewarm_began.get(name).map(Instant::elapsed);
                drop(state);
                chosen(Warmth::Prewarmed, began.unwrap_or_default());
                state = lock(&self.state);
                continue;
            }
            if at_cap || node_busy {
                if !capped {
                    self.counters.capped_waits.fetch_add(1, Ordering::Relaxed);
                }
                capped = true;
            }
            waited = true;
            let left = CAP_WAIT.saturating_sub(asked.elapsed());
            if left.is_zero() {
                return Err(WorkerError::Saturated {
                    function: name.to_owned(),
                    waited_ms: CAP_WAIT.as_millis() as u64,
                });
            }
            let patience = if prewarming > 0 && !at_cap && !node_busy {
                Duration::from_millis(spec.timeout_ms).min(left)
            } else {
                left
            };
            let (guard, timed_out) = self.started.wait_timeout_unpoisoned(state, patience);
            state = guard;
            if timed_out && prewarming > 0 && !at_cap && !node_busy {
                // The pre-warm never came: start one.
                break;
            }
        }
        let running = [&state.busy, &state.cold]
            .iter()
            .filter_map(|map| map.get(name))
            .sum();
        let cause = cold_cause(running, state.gone.get(name).copied());
        state.gone.insert(name.to_owned(), Gone::Ended);
        *state.cold.entry(name.to_owned()).or_default() += 1;
        state.spawning += 1;
        drop(state);
        // Its memory counts for the planner before it hears of the step.
        let expected = self.admission.expect(spec.limits.memory_mib);
        if !told {
            chosen(Warmth::Cold, Duration::ZERO);
        }
        self.counters.cold_starts.fetch_add(1, Ordering::Relaxed);
        self.counters.count_cold(cause);
        let worker = self.start_worker(&spec, &Placement::default(), Some(expected));
        let mut state = lock(&self.state);
        if let Some(cold) = state.cold.get_mut(name) {
            *cold = cold.saturating_sub(1);
        }
        state.spawning = state.spawning.saturating_sub(1);
        let worker = match worker {
            Ok(worker) => worker,
            Err(e) => {
                drop(state);
                self.started.notify_all();
                return Err(e);
            }
        };
        *state.busy.entry(name.to_owned()).or_default() += 1;
        WarmPool::note_worker_start_in(&mut state, name, &worker);
        drop(state);
        self.started.notify_all();
        Ok(Lease {
            worker,
            warmth: Warmth::Cold,
            wait_us: asked.elapsed().as_micros() as u64,
            plan: None,
            waited_for_prewarm: waited && !capped,
            claims: Claims::default(),
            _busy: busy(),
        })
    }
}
