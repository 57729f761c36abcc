//! Arrival rhythms: when a task that starts on its own (a timer, a cron job, a client that
//! polls) will start again.
//!
//! A task's starts are grouped into *episodes*: a start at least [`EPISODE_GAP_US`] after
//! the previous start of the task begins a new one (calls that come closer together are
//! served by a kept instance, which needs no prediction). [`Episodes`] holds the latest
//! [`HISTORY`] episodes of a task; the learner keeps them (so they come from logs and
//! traces, survive a restart and are shared by a cluster) and the chain policy adds the
//! starts it sees live.
//!
//! [`rhythm`] looks for a period in the episode starts: for a lag `k` of 1 to [`MAX_LAG`],
//! whether `t[i] − t[i−k]` has stayed the same (within [`PERIOD_TOLERANCE`] / `k`) over the
//! last [`MIN_CONFIRMATIONS`] (+ `k` − 1) or more episodes. A lag of 1 is a plain timer (every 15 min);
//! larger lags are timers with several calls per period (at :00 and :20 each hour) and
//! other repeating patterns. The next start is then `t[n−k] + P`, expected within a window
//! as wide as the spread seen (at least [`MIN_WINDOW_SHARE`] of the period each side):
//! traces with minute resolution, such as Azure 2019's, place a call anywhere in its minute.
//!
//! SPES (Lee et al., 2024) classifies Azure functions by such patterns and pre-loads the
//! regular ones just before their next call; Shahrad et al. (ATC'20) note that timers are a
//! large share of Azure's functions. Pure: no clock, times come in as µs.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A start this long after the previous start of a task begins a new episode, µs. Two
/// minutes: a burst spread over a minute or two (a queue drained by several calls) is one
/// episode, and a function called more often than this is a kept instance's business.
pub const EPISODE_GAP_US: u64 = 120_000_000;

/// Episodes kept per task.
pub const HISTORY: usize = 24;

/// Longest repeating pattern looked for, in episodes.
pub const MAX_LAG: usize = 4;

/// A period counts once this many successive differences agree.
pub const MIN_CONFIRMATIONS: usize = 2;

/// Differences at lag 1 agree when they lie within this share of their median of each
/// other (at lag `k`, this share ÷ `k`).
pub const PERIOD_TOLERANCE: f64 = 0.2;

/// The window around a predicted start extends at least this share of the period each
/// side (and at least the spread of the differences seen).
pub const MIN_WINDOW_SHARE: f64 = 0.05;

/// Whatever the period, the window extends at least this far each side, µs.
pub const MIN_WINDOW_US: u64 = 1_000_000;

/// One episode: its first start and its latest start, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// When it began.
    pub first_us: u64,
    /// Its latest start.
    pub last_us: u64,
}

/// A task's latest episodes, oldest first. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episodes {
    episodes: VecDeque<Episode>,
    /// The rhythm of the episodes as they are (unset: not worked out since they changed).
    #[serde(skip)]
    rhythm: std::sync::OnceLock<Option<Rhythm>>,
}

impl Episodes {
    /// Learns a start at `at_us`. Starts may come out of order (requests are learned when
    /// they end): one that falls inside a known episode, or within [`EPISODE_GAP_US`] of
    /// one, joins it; one older than everything kept is dropped once the history is full.
    pub fn observe(&mut self, at_us: u64) {
        // The first episode that begins after `at_us`.
        let after = self.episodes.partition_point(|e| e.first_us <= at_us);
        if after > 0 {
            let before = &mut self.episodes[after - 1];
            if at_us < before.last_us.saturating_add(EPISODE_GAP_US) {
                before.last_us = before.last_us.max(at_us);
                self.merge_from(after - 1);
                return;
            }
        }
        if let Some(next) = self.episodes.get_mut(after) {
            if next.first_us < at_us.saturating_add(EPISODE_GAP_US) {
                next.first_us = at_us;
                self.rhythm = std::sync::OnceLock::new();
                return;
            }
        }
        if after == 0 && self.episodes.len() >= HISTORY {
            return;
        }
        self.rhythm = std::sync::OnceLock::new();
        self.episodes.insert(
            after,
            Episode {
                first_us: at_us,
                last_us: at_us,
            },
        );
        if self.episodes.len() > HISTORY {
            self.episodes.pop_front();
        }
    }

    /// After episode `index` grew, joins the next one if they now touch.
    fn merge_from(&mut self, index: usize) {
        if let (Some(&current), Some(&next)) =
            (self.episodes.get(index), self.episodes.get(index + 1))
        {
            if next.first_us < current.last_us.saturating_add(EPISODE_GAP_US) {
                self.episodes[index].last_us = current.last_us.max(next.last_us);
                self.episodes.remove(index + 1);
                self.rhythm = std::sync::OnceLock::new();
            }
        }
    }

    /// The episodes' first starts, oldest first.
    pub fn starts(&self) -> Vec<u64> {
        self.episodes.iter().map(|e| e.first_us).collect()
    }

    /// The latest start seen, µs.
    pub fn last_start_us(&self) -> Option<u64> {
        self.episodes.back().map(|e| e.last_us)
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty()
    }

    /// The rhythm of these episodes, if they have one (worked out again only after the
    /// episodes changed).
    pub fn rhythm(&self) -> Option<Rhythm> {
        *self.rhythm.get_or_init(|| rhythm(&self.starts()))
    }
}

/// A period found in a task's episode starts, and the next start it predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rhythm {
    /// The period, µs (of the whole pattern: `lag` episodes per period).
    pub period_us: u64,
    /// Episodes per period.
    pub lag: usize,
    /// Successive differences that agreed.
    pub confirmations: usize,
    /// The next start expected, µs.
    pub next_us: u64,
    /// It is expected within this much either side, µs.
    pub window_us: u64,
}

impl Rhythm {
    /// The window in which the next start is expected, `[from, until)`, µs.
    pub fn window(&self) -> (u64, u64) {
        (
            self.next_us.saturating_sub(self.window_us),
            self.next_us.saturating_add(self.window_us),
        )
    }

    /// How sure the rhythm is, from the number of agreeing differences (Laplace's rule:
    /// `c` agreeing of `c` seen, the next agrees with probability `(c + 1) / (c + 2)`).
    pub fn probability(&self) -> f64 {
        let c = self.confirmations as f64;
        (c + 1.0) / (c + 2.0)
    }
}

/// The rhythm of episode starts `starts` (oldest first), if any: the smallest lag whose
/// latest differences agree often enough ([`MIN_CONFIRMATIONS`], one more for each lag
/// past the first: longer patterns agree by chance more easily). The next start is
/// extrapolated from a least-squares line through the latest starts of the same phase, so
/// that the jitter of the last one does not carry over whole. See the module docs.
pub fn rhythm(starts: &[u64]) -> Option<Rhythm> {
    let n = starts.len();
    for lag in 1..=MAX_LAG {
        let needed = MIN_CONFIRMATIONS + lag - 1;
        if n < lag + needed {
            break;
        }
        // Differences at lag `lag`, newest first, as long as they agree.
        let mut diffs: Vec<u64> = Vec::new();
        for i in (lag..n).rev() {
            let d = starts[i].saturating_sub(starts[i - lag]);
            if d == 0 {
                break;
            }
            diffs.push(d);
            if !agree(&diffs, lag) {
                diffs.pop();
                break;
            }
        }
        if diffs.len() < needed {
            continue;
        }
        let period = median(&diffs);
        let spread =
            diffs.iter().max().copied().unwrap_or(0) - diffs.iter().min().copied().unwrap_or(0);
        // The starts of the next one's phase among those the differences cover: t[n − lag·q]
        // for q = 1, 2, …; the line through them, at q = 0.
        let base = starts[n - lag];
        let points: Vec<(f64, f64)> = (1..=diffs.len() / lag + 1)
            .map(|q| (q as f64, starts[n - lag * q] as f64 - base as f64))
            .collect();
        let next = base as f64 + intercept(&points).unwrap_or(period as f64);
        let window = spread
            .max((period as f64 * MIN_WINDOW_SHARE) as u64)
            .max(MIN_WINDOW_US);
        return Some(Rhythm {
            period_us: period,
            lag,
            confirmations: diffs.len(),
            next_us: next.max(0.0) as u64,
            window_us: window,
        });
    }
    None
}

/// The least-squares line through `points` at x = 0; `None` with fewer than two distinct x.
fn intercept(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    Some(mean_y - sxy / sxx * mean_x)
}

/// Whether the differences at `lag` lie within [`PERIOD_TOLERANCE`] of their median of
/// each other, divided by the lag: a start's jitter does not grow with the pattern's length,
/// and sums of irregular gaps agree more easily than the gaps.
fn agree(diffs: &[u64], lag: usize) -> bool {
    let (Some(&low), Some(&high)) = (diffs.iter().min(), diffs.iter().max()) else {
        return true;
    };
    (high - low) as f64 <= PERIOD_TOLERANCE * median(diffs) as f64 / lag as f64
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    crate::rank::nearest_rank(&sorted, 0.5).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000;

    fn episodes(starts: &[u64]) -> Episodes {
        let mut e = Episodes::default();
        for &s in starts {
            e.observe(s);
        }
        e
    }

    #[test]
    fn close_starts_are_one_episode_and_late_ones_join_theirs() {
        const G: u64 = EPISODE_GAP_US;
        let mut e = episodes(&[0, G / 3, G + G / 6, 4 * G]);
        assert_eq!(
            e.starts(),
            [0, 4 * G],
            "each within the gap of the one before"
        );
        assert_eq!(e.last_start_us(), Some(4 * G));
        e.observe(2 * G);
        assert_eq!(
            e.starts(),
            [0, 4 * G],
            "within the gap of the first's last start"
        );
        e.observe(10 * G);
        e.observe(7 * G);
        assert_eq!(e.starts(), [0, 4 * G, 7 * G, 10 * G], "out of order");
        e.observe(7 * G - G / 2);
        assert_eq!(
            e.starts(),
            [0, 4 * G, 7 * G - G / 2, 10 * G],
            "an earlier start moves the episode's beginning"
        );
        e.observe(6 * G);
        assert_eq!(
            e.starts(),
            [0, 4 * G, 6 * G, 10 * G],
            "within the gap before an episode: it began earlier"
        );
        let mut e = episodes(&[0, 2 * G - 2]);
        assert_eq!(e.starts(), [0, 2 * G - 2]);
        e.observe(G - 1);
        assert_eq!(e.starts(), [0], "a start joining two episodes merges them");
        assert_eq!(e.last_start_us(), Some(2 * G - 2));
    }

    #[test]
    fn history_is_bounded_and_keeps_the_latest() {
        let e = episodes(&(0..100).map(|i| i * 3 * MIN).collect::<Vec<_>>());
        assert_eq!(e.starts().len(), HISTORY);
        assert_eq!(e.starts()[0], (100 - HISTORY as u64) * 3 * MIN);
        let mut e = e;
        e.observe(0);
        assert_eq!(e.starts()[0], (100 - HISTORY as u64) * 3 * MIN, "too old");
    }

    #[test]
    fn a_timer_is_found_with_its_next_start_and_window() {
        // Every 15 min, placed anywhere in its minute (as Azure 2019 traces are expanded).
        let starts = [
            0,
            15 * MIN + 40_000_000,
            30 * MIN + 5_000_000,
            45 * MIN + 59_000_000,
        ];
        let r = rhythm(&starts).expect("a 15 min timer");
        assert_eq!(r.lag, 1);
        assert_eq!(r.confirmations, 3);
        assert!((14 * MIN..16 * MIN).contains(&r.period_us), "{r:?}");
        let (from, until) = r.window();
        assert!(from <= 60 * MIN && 61 * MIN <= until, "{r:?}");
        assert!(until - from <= 5 * MIN, "narrow: {r:?}");
        assert!(r.probability() > 0.75 && r.probability() < 1.0);
        // Exactly periodic: the next start exactly.
        let r = rhythm(&[7, 7 + MIN, 7 + 2 * MIN]).unwrap();
        assert_eq!((r.period_us, r.next_us), (MIN, 7 + 3 * MIN));
    }

    #[test]
    fn several_calls_per_period_are_a_longer_lag() {
        // At :00 and :28 of every half hour... i.e. gaps 28, 2, 28, 2 min.
        let starts: Vec<u64> = (0..6)
            .flat_map(|h| [h * 30 * MIN, h * 30 * MIN + 28 * MIN])
            .collect();
        let r = rhythm(&starts).expect("a pattern");
        assert_eq!(r.lag, 2);
        assert_eq!(r.period_us, 30 * MIN);
        assert_eq!(r.next_us, 6 * 30 * MIN, "the :00 after the last :28");
    }

    #[test]
    fn irregular_starts_and_too_few_have_no_rhythm() {
        assert_eq!(rhythm(&[]), None);
        assert_eq!(
            rhythm(&[0, 10 * MIN]),
            None,
            "one difference confirms nothing"
        );
        assert_eq!(
            rhythm(&[
                0,
                10 * MIN,
                13 * MIN,
                40 * MIN,
                41 * MIN,
                90 * MIN,
                97 * MIN
            ]),
            None
        );
        assert_eq!(rhythm(&[5, 5, 5]), None, "no zero period");
    }

    #[test]
    fn a_changed_period_is_followed_from_the_latest_differences() {
        let mut starts: Vec<u64> = (0..6).map(|i| i * 60 * MIN).collect();
        let last = *starts.last().unwrap();
        starts.extend([last + 10 * MIN, last + 20 * MIN, last + 30 * MIN]);
        let r = rhythm(&starts).unwrap();
        assert_eq!(r.period_us, 10 * MIN);
        assert_eq!(r.next_us, last + 40 * MIN);
    }

    proptest::proptest! {
        /// Any starts, in any order and at any magnitude, never panic; the episodes stay
        /// sorted, bounded and at least a gap apart; a rhythm's window holds its next start.
        #[test]
        fn arbitrary_starts_keep_the_invariants(
            starts in proptest::collection::vec(
                proptest::prop_oneof![0u64..10_000_000_000, proptest::num::u64::ANY],
                0..80,
            )
        ) {
            let mut e = Episodes::default();
            for &s in &starts {
                e.observe(s);
            }
            let firsts = e.starts();
            proptest::prop_assert!(firsts.len() <= HISTORY);
            proptest::prop_assert!(firsts.windows(2).all(|w| w[0] < w[1]));
            for pair in e.episodes.iter().zip(e.episodes.iter().skip(1)) {
                proptest::prop_assert!(pair.0.last_us.saturating_add(EPISODE_GAP_US) <= pair.1.first_us);
            }
            if let Some(r) = e.rhythm() {
                let (from, until) = r.window();
                proptest::prop_assert!(from <= r.next_us && r.next_us <= until);
                proptest::prop_assert!(r.period_us > 0 && r.lag >= 1 && r.lag <= MAX_LAG);
            }
            proptest::prop_assert_eq!(rhythm(&firsts), e.rhythm());
        }
    }
}
