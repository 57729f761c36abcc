//! Idle workers coming and going: given back after a step (settled by the planner),
//! claimed by a pre-warm, released unused, evicted over the budget, expired.

use super::{lock, Idle, WarmPool, PREWARM_GRACE};
use crate::process::Worker;
use baton_core::exec::{choose_for_prewarm, Claim, Claims, Gone, Prewarm};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// How a finished worker's keep-alive is settled: the policy's decision for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// None: released now (unless a pre-warm counts on it), a pinned deadline
    /// notwithstanding (a policy that pre-warms after a run unloads the instance).
    Release,
    /// Kept until the deadline given, or until its pinned one if it has one.
    Until,
    /// Kept until its pinned deadline, the one given pinned if it has none
    /// (`Decision::PinKeepAlive`).
    Pin,
}

impl WarmPool {
    /// Removes the idle worker `pid` of `name` to make room (the planner's choice); returns
    /// whether it was idle. It is killed after the lock is released.
    pub fn evict(&self, name: &str, pid: u32) -> bool {
        let evicted = {
            let mut state = lock(&self.state);
            let list = state.idle.get_mut(name);
            let evicted = list.and_then(|list| {
                let at = list.iter().position(|i| i.worker.pid() == pid)?;
                Some(list.swap_remove(at))
            });
            if evicted.is_some() {
                state.gone.insert(name.to_owned(), Gone::Evicted);
            }
            evicted
        };
        let Some(evicted) = evicted else {
            return false;
        };
        if evicted.prewarmed.is_some() {
            self.counters
                .prewarms_wasted
                .fetch_add(1, Ordering::Relaxed);
        }
        self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        drop(evicted);
        true
    }

    /// Returns a worker to the pool, with the claims it carried, until `keep_until` (the
    /// planner settles the real deadline with [`WarmPool::settle`]); returns its pid, or
    /// `None` when it was dead and dropped.
    pub fn give_back(
        &self,
        name: &str,
        worker: Worker,
        claims: Claims<Instant>,
        keep_until: Instant,
    ) -> Option<u32> {
        if !worker.is_alive() {
            return None;
        }
        // Pre-warms still counting on it keep it, whatever the policy says next.
        let mut claims = claims;
        let keep_until = claims
            .hold_until(Instant::now(), PREWARM_GRACE)
            .map_or(keep_until, |until| keep_until.max(until));
        let pid = worker.pid();
        let mut state = lock(&self.state);
        state.idle.entry(name.to_owned()).or_default().push(Idle {
            worker,
            until: keep_until,
            since: Instant::now(),
            prewarmed: None,
            claims,
            settling: true,
        });
        drop(state);
        // A request waiting at the function's cap can take it now.
        self.started.notify_all();
        Some(pid)
    }

    /// Sets how long the idle worker `pid` of `name` is kept (the policy's keep-alive, as
    /// `keep` says). Nothing happens if it is no longer idle.
    pub fn settle(&self, name: &str, pid: u32, until: Instant, keep: Keep) {
        let released = {
            let mut state = lock(&self.state);
            let Some(list) = state.idle.get_mut(name) else {
                return;
            };
            let Some(at) = list.iter().position(|i| i.worker.pid() == pid) else {
                return;
            };
            let entry = &mut list[at];
            entry.settling = false;
            let until = match keep {
                Keep::Release => until,
                Keep::Until => entry.worker.pinned_until().unwrap_or(until),
                Keep::Pin => entry.worker.pin_keep_alive(until),
            };
            entry.claims.forget_ended(Instant::now());
            if !entry.claims.is_empty() {
                // A pre-warm counts on it now: its deadline stands.
                entry.until = entry.until.max(until);
                None
            } else if until > Instant::now() {
                entry.until = until;
                None
            } else {
                let released = list.swap_remove(at);
                state.gone.insert(name.to_owned(), Gone::Ended);
                Some(released)
            }
        };
        drop(released);
    }

    /// Releases the idle, never-used workers pre-warmed for `plan` whose keep time is over
    /// (the executor's rule); returns how many.
    pub fn release_unused(&self, name: &str, plan: Option<u64>) -> usize {
        let mut released = Vec::new();
        let now = Instant::now();
        {
            let mut state = lock(&self.state);
            if let Some(list) = state.idle.get_mut(name) {
                let mut index = 0;
                while index < list.len() {
                    if list[index].prewarmed == Some(Prewarm { plan }) && list[index].until <= now {
                        released.push(list.swap_remove(index));
                    } else {
                        index += 1;
                    }
                }
            }
            if !released.is_empty() {
                state.gone.insert(name.to_owned(), Gone::Ended);
            }
        }
        self.counters
            .prewarms_wasted
            .fetch_add(released.len() as u64, Ordering::Relaxed);
        released.len()
    }

    /// Claims an idle worker of `name` for a pre-warm due now, by the executor's rule (one
    /// whose claims over the pre-warm's interval leave room for it: two sure pre-warms for
    /// one time get two workers, two even bets share one, pre-warms one after another
    /// share one), and keeps it until at least `until`; returns whether there was one.
    /// Then no new process is needed.
    pub fn claim_idle(&self, name: &str, claim: Claim<Instant>, until: Instant) -> bool {
        let mut state = lock(&self.state);
        let Some(list) = state.idle.get_mut(name) else {
            return false;
        };
        let now = Instant::now();
        let candidates = list.iter().map(|i| i.candidate(claim.from, claim.until));
        let Some(pid) = choose_for_prewarm(candidates, claim.from, now, claim.weight) else {
            return false;
        };
        let Some(idle) = list.iter_mut().find(|i| u64::from(i.worker.pid()) == pid) else {
            return false;
        };
        idle.claims.push(claim);
        idle.until = idle.until.max(until);
        true
    }

    /// Releases idle workers whose deadline has passed; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut expired = Vec::new();
        {
            let mut state = lock(&self.state);
            let state = &mut *state;
            for (name, list) in state.idle.iter_mut() {
                let before = expired.len();
                let mut index = 0;
                while index < list.len() {
                    if list[index].until <= now {
                        expired.push(list.swap_remove(index));
                    } else {
                        index += 1;
                    }
                }
                if expired.len() > before {
                    state.gone.insert(name.clone(), Gone::Ended);
                }
            }
        }
        for idle in &expired {
            if idle.prewarmed.is_some() {
                self.counters
                    .prewarms_wasted
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let retired = self.templates.retire(now);
        self.counters
            .templates_retired
            .fetch_add(retired as u64, Ordering::Relaxed);
        expired.len()
    }
}
