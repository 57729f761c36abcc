//! Drift: noticing that what the learner predicts stopped matching what happens, so that
//! a shift in the request mix is learned in minutes rather than over the decay's hour.
//!
//! Before each transition updates the graph, the learner asks how probable it found it
//! (the first-order probability of the callee, or of the stop). [`DriftMonitor`] keeps two
//! moving means of that probability, a fast one (the last ~[`FAST_EVENTS`] transitions)
//! and a slow one (~[`SLOW_EVENTS`]). When the fast mean falls clearly below the slow one
//! (to [`DRIFT_RATIO`] of it and at least [`DRIFT_GAP`] lower) and stays so for
//! [`PERSIST_US`], the mix has changed: the learner shortens its half-life (a rebase, O(graph), then forward decay as before) so the
//! new mix outweighs the old within minutes. Once the fast mean is back near the slow one
//! ([`SETTLED_RATIO`]), and at least [`MIN_DWELL_US`] later, the usual half-life returns.
//!
//! Pure: probabilities and times come in, a [`Shift`] comes out when the half-life should
//! change.

use serde::{Deserialize, Serialize};

/// Transitions the fast mean spans (its weight is the reciprocal).
pub const FAST_EVENTS: f64 = 64.0;
/// Transitions the slow mean spans.
pub const SLOW_EVENTS: f64 = 4096.0;
/// Transitions seen before any verdict.
pub const MIN_EVENTS: u64 = 512;
/// Drift: the fast mean at most this share of the slow one...
pub const DRIFT_RATIO: f64 = 0.75;
/// ...and at least this much lower.
pub const DRIFT_GAP: f64 = 0.05;
/// Settled: the fast mean back to at least this share of the slow one.
pub const SETTLED_RATIO: f64 = 0.95;
/// Least time a half-life stays once changed, µs (a verdict per minute at most).
pub const MIN_DWELL_US: u64 = 60_000_000;
/// How long predictions must stay clearly worse before the half-life is shortened, µs: a
/// burst of unusual requests (a fault, a retry storm) that passes within it leaves the
/// learned mix alone.
pub const PERSIST_US: u64 = 60_000_000;

/// What the learner should do with its half-life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shift {
    /// The mix changed: use the short half-life.
    Shorten,
    /// Predictions match again: back to the usual half-life.
    Restore,
}

/// Moving means of how probable the learner found what happened. See the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftMonitor {
    fast: f64,
    slow: f64,
    events: u64,
    drifting: bool,
    changed_at_us: u64,
    /// Since when predictions have been clearly worse, while not drifting yet.
    #[serde(default)]
    worse_since_us: Option<u64>,
}

impl DriftMonitor {
    /// Notes that a transition seen at `at_us` had been given `probability`; says whether
    /// the half-life should change now.
    pub fn observe(&mut self, probability: f64, at_us: u64) -> Option<Shift> {
        let p = if probability.is_finite() {
            probability.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if self.events == 0 {
            self.fast = p;
            self.slow = p;
        } else {
            self.fast += (p - self.fast) / FAST_EVENTS;
            self.slow += (p - self.slow) / SLOW_EVENTS;
        }
        self.events = self.events.saturating_add(1);
        if self.events < MIN_EVENTS || at_us < self.changed_at_us.saturating_add(MIN_DWELL_US) {
            return None;
        }
        let shift = if self.drifting {
            (self.fast >= SETTLED_RATIO * self.slow).then_some(Shift::Restore)
        } else if self.fast <= DRIFT_RATIO * self.slow && self.slow - self.fast >= DRIFT_GAP {
            let since = *self.worse_since_us.get_or_insert(at_us);
            (at_us >= since.saturating_add(PERSIST_US)).then_some(Shift::Shorten)
        } else {
            self.worse_since_us = None;
            None
        }?;
        self.worse_since_us = None;
        self.drifting = shift == Shift::Shorten;
        self.changed_at_us = at_us;
        Some(shift)
    }

    /// Whether the mix is drifting (the short half-life is in use).
    pub fn drifting(&self) -> bool {
        self.drifting
    }

    /// The fast and the slow mean of the probability given to what happened.
    pub fn means(&self) -> (f64, f64) {
        (self.fast, self.slow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(monitor: &mut DriftMonitor, p: f64, n: u64, t: &mut u64) -> Vec<(u64, Shift)> {
        let mut shifts = Vec::new();
        for _ in 0..n {
            *t += 100_000;
            if let Some(shift) = monitor.observe(p, *t) {
                shifts.push((*t, shift));
            }
        }
        shifts
    }

    #[test]
    fn a_fall_in_accuracy_shortens_and_a_recovery_restores() {
        let mut monitor = DriftMonitor::default();
        let mut t = 0;
        assert!(feed(&mut monitor, 0.9, 5_000, &mut t).is_empty(), "steady");
        // A burst of misses shorter than PERSIST_US (50 × 0.1 s) changes nothing.
        assert!(
            feed(&mut monitor, 0.1, 50, &mut t).is_empty(),
            "a passing burst"
        );
        assert!(feed(&mut monitor, 0.9, 2_000, &mut t).is_empty());
        let shifts = feed(&mut monitor, 0.1, 1_000, &mut t);
        assert_eq!(shifts.len(), 1);
        assert_eq!(shifts[0].1, Shift::Shorten);
        assert!(monitor.drifting());
        // Relearned: accuracy back; not before the dwell, then restored.
        let shifts = feed(&mut monitor, 0.9, 2_000, &mut t);
        assert_eq!(shifts.len(), 1, "{shifts:?}");
        assert_eq!(shifts[0].1, Shift::Restore);
        assert!(!monitor.drifting());
    }

    #[test]
    fn noise_around_a_low_accuracy_is_no_drift() {
        // A task whose successors are a fair coin among three: p is 1/3 on average, and
        // varies from transition to transition; never a drift.
        let mut monitor = DriftMonitor::default();
        let mut t = 0;
        let mut all = Vec::new();
        for i in 0..20_000u64 {
            t += 100_000;
            let p = [0.1, 0.3, 0.6][(i * 7 % 3) as usize];
            all.extend(monitor.observe(p, t));
        }
        assert!(all.is_empty(), "{all:?}");
    }

    #[test]
    fn no_verdict_before_enough_history_or_within_the_dwell() {
        let mut monitor = DriftMonitor::default();
        let mut t = 0;
        assert!(feed(&mut monitor, 0.9, MIN_EVENTS - 1, &mut t).is_empty());
        let mut quick = DriftMonitor::default();
        // Events 1 µs apart: the first verdict waits for the dwell from time 0.
        for i in 0..10_000u64 {
            let p = if i < 5_000 { 0.9 } else { 0.0 };
            assert!(quick.observe(p, i).is_none());
        }
        // Judged from the end of the dwell on: shortened once worse has lasted PERSIST_US.
        assert!(
            quick.observe(f64::NAN, MIN_DWELL_US).is_none(),
            "NaN counts as a miss"
        );
        assert!(quick.observe(0.0, MIN_DWELL_US + PERSIST_US - 1).is_none());
        assert_eq!(
            quick.observe(0.0, MIN_DWELL_US + PERSIST_US),
            Some(Shift::Shorten)
        );
    }
}
