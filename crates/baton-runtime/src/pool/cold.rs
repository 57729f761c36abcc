//! Cold-start estimates: what starting a worker of each function takes, as measured
//! here (the tail of its recent starts), and, for a function never started yet, a prior
//! from the functions that start the same way. The one estimate the planner times
//! pre-warms with and the policy weighs plans and evictions by.

use super::{lock, State, WarmPool, COLD_SAMPLES};
use crate::manifest::{FunctionKind, FunctionSpec};
use crate::process::Worker;
use baton_core::sync::UnpoisonedRw;
use std::time::Duration;

impl WarmPool {
    /// The cold start of `name` to plan pre-warms with, if any was measured.
    ///
    /// The 90th percentile (nearest rank) of the function's last [`COLD_SAMPLES`] cold
    /// starts: a pre-warm timed by it is late only when a start falls in its tail. A start
    /// forked from a template, say, mostly waits for the kernel's cgroup migration, whose
    /// time swings with the machine's load; a mean would put half of them late.
    pub fn cold_start_estimate(&self, name: &str) -> Option<Duration> {
        estimate(&lock(&self.state), name)
    }

    /// Notes a measured cold start of `name` (a wasm load, say): the one estimate the
    /// planner times pre-warms with.
    pub fn note_cold_start(&self, name: &str, took: Duration) {
        WarmPool::note_cold_start_in(&mut lock(&self.state), name, took);
    }

    /// Notes `worker`'s start as a cold-start sample of `name`, unless it took a spare: a
    /// spare's take is no start to plan by, so the estimate stays what a start takes when
    /// the spare is gone (the simulator's `Host` says the same).
    pub(super) fn note_worker_start_in(state: &mut State, name: &str, worker: &Worker) {
        if !worker.is_spare() {
            WarmPool::note_cold_start_in(state, name, worker.cold_start());
        }
    }

    pub(super) fn note_cold_start_in(state: &mut State, name: &str, took: Duration) {
        let samples = state.cold_us.entry(name.to_owned()).or_default();
        if samples.len() >= COLD_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(took.as_micros() as u64);
    }

    /// The median of every function's recent worker starts (the samples the estimates are
    /// made from: a start itself, without any wait for a start slot), if any was measured.
    pub fn start_median(&self) -> Option<Duration> {
        let state = lock(&self.state);
        let mut all: Vec<u64> = state.cold_us.values().flatten().copied().collect();
        drop(state);
        all.sort_unstable();
        baton_core::rank::nearest_rank(&all, 0.5).map(Duration::from_micros)
    }

    /// What `spec`, never started here yet, is expected to take to start: the median of
    /// the estimates of the functions that start the same way (process functions run by
    /// the same program, both from a template or both not; wasm functions), if any of them
    /// was measured. The first plans of a new function are then not blind.
    pub fn cold_start_prior(&self, spec: &FunctionSpec) -> Option<Duration> {
        let siblings: Vec<String> = self
            .functions
            .read_unpoisoned()
            .values()
            .filter(|other| other.name != spec.name && starts_alike(other, spec))
            .map(|other| other.name.clone())
            .collect();
        let state = lock(&self.state);
        let mut estimates: Vec<Duration> = siblings
            .iter()
            .filter_map(|name| estimate(&state, name))
            .collect();
        drop(state);
        estimates.sort_unstable();
        estimates.get(estimates.len().checked_sub(1)? / 2).copied()
    }
}

/// The 90th percentile (nearest rank) of `name`'s recent cold starts, if any.
fn estimate(state: &State, name: &str) -> Option<Duration> {
    let mut sorted: Vec<u64> = state.cold_us.get(name)?.iter().copied().collect();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64 * 0.9).ceil() as usize).clamp(1, sorted.len());
    Some(Duration::from_micros(sorted[rank - 1]))
}

/// Whether `a` and `b` start the same way (see [`WarmPool::cold_start_prior`]).
fn starts_alike(a: &FunctionSpec, b: &FunctionSpec) -> bool {
    match (&a.kind, &b.kind) {
        (FunctionKind::Process { command: x }, FunctionKind::Process { command: y }) => {
            x.first() == y.first() && a.template == b.template
        }
        (FunctionKind::Wasm { .. }, FunctionKind::Wasm { .. }) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::Isolation;

    #[test]
    fn the_cold_start_estimate_is_the_tail_of_the_recent_starts() {
        let pool = WarmPool::new(Vec::new(), Isolation::none());
        assert_eq!(pool.cold_start_estimate("f"), None);
        let ms = Duration::from_millis;
        pool.note_cold_start("f", ms(10));
        assert_eq!(pool.cold_start_estimate("f"), Some(ms(10)));
        // 14 starts of 10 ms and 2 of 40 ms: the 90th percentile is in the tail.
        for _ in 0..13 {
            pool.note_cold_start("f", ms(10));
        }
        pool.note_cold_start("f", ms(40));
        assert_eq!(pool.cold_start_estimate("f"), Some(ms(10)), "1 in 15");
        pool.note_cold_start("f", ms(40));
        assert_eq!(pool.cold_start_estimate("f"), Some(ms(40)), "2 in 16");
        // Only the last 16 count: the slow ones age out.
        for _ in 0..COLD_SAMPLES {
            pool.note_cold_start("f", ms(12));
        }
        assert_eq!(pool.cold_start_estimate("f"), Some(ms(12)));
    }

    #[test]
    fn a_function_never_started_is_expected_to_start_as_its_kin() {
        let spec = |name: &str, program: &str, template: bool| {
            FunctionSpec::from_toml(&format!(
                "name = \"{name}\"\nkind = \"process\"\ncommand = [\"{program}\", \"{name}.py\"]\ntemplate = {template}\n"
            ))
            .unwrap()
        };
        let pool = WarmPool::new(
            vec![
                spec("a", "python3", true),
                spec("b", "python3", true),
                spec("c", "python3", true),
                spec("new", "python3", true),
                spec("plain", "python3", false),
                spec("node", "node", true),
            ],
            Isolation::none(),
        );
        let ms = Duration::from_millis;
        let new = pool.spec("new").unwrap();
        assert_eq!(pool.cold_start_prior(&new), None, "nothing measured yet");
        pool.note_cold_start("a", ms(3));
        pool.note_cold_start("b", ms(5));
        pool.note_cold_start("c", ms(40));
        pool.note_cold_start("plain", ms(90));
        pool.note_cold_start("node", ms(70));
        assert_eq!(
            pool.cold_start_prior(&new),
            Some(ms(5)),
            "the median of a, b, c"
        );
        assert_eq!(
            pool.cold_start_prior(&pool.spec("plain").unwrap()),
            None,
            "no kin without a template"
        );
        pool.note_cold_start("new", ms(4));
        assert_eq!(
            pool.cold_start_prior(&pool.spec("a").unwrap()),
            Some(ms(5)),
            "its own starts do not count for itself: b, c, new"
        );
    }
}
