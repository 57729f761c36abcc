//! Exponential time decay by forward decay: weights are stored already scaled up by their
//! arrival time, so an update touches one number and ratios (probabilities) need no decay at all.
//!
//! An event at time `t` is stored with weight `2^((t - landmark) / half_life)`. Its weight seen
//! from `now` is the stored weight times `2^(-(now - landmark) / half_life)`, the same factor
//! for every event, so a ratio of stored weights is already the decayed ratio. Only absolute
//! counts (how much history backs a context) need the factor. When the exponent grows large,
//! the owner rebases: multiplies every stored weight by `rebase_factor` and moves the landmark,
//! which is rare (every ~900 half-lives) and so amortised O(1).

use serde::{Deserialize, Serialize};

/// Exponent (in half-lives) past which the owner must rebase to stay far from `f64` overflow.
const REBASE_AFTER_HALF_LIVES: f64 = 900.0;

/// The decay clock of one learner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decay {
    /// Half-life in microseconds; `None` disables decay (every event weighs 1).
    pub half_life_us: Option<u64>,
    /// Time (µs) at which a stored weight of 1 means one event.
    pub landmark_us: u64,
}

impl Decay {
    /// A decay with the given half-life (`None`: no decay) and the landmark at `landmark_us`.
    pub fn new(half_life_us: Option<u64>, landmark_us: u64) -> Decay {
        Decay {
            half_life_us: half_life_us.filter(|&h| h > 0),
            landmark_us,
        }
    }

    fn exponent(&self, t_us: u64) -> f64 {
        match self.half_life_us {
            Some(half_life) => (t_us as f64 - self.landmark_us as f64) / half_life as f64,
            None => 0.0,
        }
    }

    /// The stored weight of one event at `t_us`.
    pub fn weight_at(&self, t_us: u64) -> f64 {
        self.exponent(t_us).exp2()
    }

    /// Converts a stored weight to an event count seen from `now_us`.
    pub fn effective(&self, stored: f64, now_us: u64) -> f64 {
        stored * (-self.exponent(now_us)).exp2()
    }

    /// Whether an event at `t_us` requires a rebase first.
    pub fn needs_rebase(&self, t_us: u64) -> bool {
        self.exponent(t_us) > REBASE_AFTER_HALF_LIVES
    }

    /// Moves the landmark to `t_us`; returns the factor every stored weight must be multiplied by.
    pub fn rebase(&mut self, t_us: u64) -> f64 {
        let factor = (-self.exponent(t_us)).exp2();
        self.landmark_us = t_us;
        factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_half_life_halves_the_effective_count() {
        let decay = Decay::new(Some(1_000), 0);
        let stored = decay.weight_at(0);
        assert!((decay.effective(stored, 1_000) - 0.5).abs() < 1e-12);
        let recent = decay.weight_at(2_000);
        assert!((recent / stored - 4.0).abs() < 1e-9);
    }

    #[test]
    fn no_half_life_means_plain_counts() {
        let decay = Decay::new(None, 5);
        assert_eq!(decay.weight_at(1 << 60), 1.0);
        assert_eq!(decay.effective(3.0, 1 << 60), 3.0);
        assert!(!decay.needs_rebase(u64::MAX));
    }

    #[test]
    fn rebase_keeps_effective_counts() {
        let mut decay = Decay::new(Some(10), 0);
        let t = 9_100;
        assert!(decay.needs_rebase(t));
        let stored = decay.weight_at(t - 10);
        let before = decay.effective(stored, t);
        let factor = decay.rebase(t);
        let after = decay.effective(stored * factor, t);
        assert!((before - after).abs() < 1e-9 * before.max(1.0));
        assert!(!decay.needs_rebase(t + 10));
    }
}
