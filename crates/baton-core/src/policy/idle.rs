//! Each task's idle-time model: how long after an instance of it finishes the task starts
//! again, and the keep-alive and re-warm that serve those gaps with no more cold starts and
//! no more idle time than a fixed keep-alive would on the same gaps.
//!
//! Per task, a log-bucketed histogram of gaps (from the task's last end to its next start
//! when none of its instances runs), its weights halved whenever they pass [`MAX_WEIGHT`],
//! so that a change in traffic is followed within a few hundred gaps. The model is one
//! instance's: a task more than [`MAX_OVERLAP`] of whose starts come while another of its
//! instances runs (it needs several at once) keeps the fixed keep-alive.
//! From [`MIN_SAMPLES`] gaps on, [`IdleModel::after_end`] chooses, over the histogram's
//! bucket edges, a keep-alive `K` and, optionally, a re-warm window `[R, H]`: the instance
//! is let go at `K`, and a new one is ready at `R` and kept until `H`. Of the choices whose
//! expected idle time per gap is no more than the fixed keep-alive's `T`, it takes the one
//! that leaves the fewest gaps cold, then the one with the least idle time. `K = T` is
//! always a candidate, so on the gaps seen the choice is never worse than the fixed
//! keep-alive in either measure; for bursts separated by long pauses it keeps an instance
//! through the burst, lets it go, and has one ready again where the next burst begins. The
//! choice is made on the gaps spread a little (`SPREAD`) and held to the guarantee on the
//! gaps as seen; a re-warm must also win clearly there ([`CLEAR_GAIN`]).
//! Every bound is a bucket edge, so a chosen keep or window covers each gap of the buckets
//! it spans (buckets are 1/8 of a power of two wide). With fewer gaps, the fixed keep-alive.
//!
//! Shahrad et al. (ATC'20) take a pre-warm instant and a keep-alive from percentiles of the
//! idle-time distribution; this takes them from the expected cost against keep-alive, so
//! that it can only improve on it.

use crate::histogram::{bucket_of, bucket_range, LogHistogram};
use crate::ids::TaskId;

/// Gaps needed before the model is trusted over the fixed keep-alive.
pub const MIN_SAMPLES: f64 = 10.0;

/// Past this total weight, a task's gap weights are halved.
pub const MAX_WEIGHT: f64 = 512.0;

/// A choice other than the fixed keep-alive may expect at most this share of its idle
/// time: what the model leaves out (a new instance's start, the grace it is kept after
/// ready, gaps a little off the ones seen) costs a few per cent.
pub const IDLE_SHARE: f64 = 0.9;

/// A re-warm is chosen only when, on the gaps as seen, it leaves at least this fraction
/// fewer gaps cold (and one whole gap fewer) than the fixed keep-alive, or holds this
/// fraction less idle time at no more cold gaps: the distribution it is chosen on will have
/// moved by the time it is used, and a marginal win on the past (TrainTicket's services,
/// called every few seconds by many requests at once) turned into a loss on the replay.
pub const CLEAR_GAIN: f64 = 0.25;

/// Past this fraction of starts made while another instance ran, a task keeps the fixed
/// keep-alive.
pub const MAX_OVERLAP: f64 = 0.05;

/// A task's choice is made again after this many new gaps.
const RESOLVE_EVERY: u32 = 16;

/// At most this many groups of buckets are searched (adjacent buckets merged beyond it).
const MAX_GROUPS: usize = 24;

/// An instance is let go for a re-warm only when it would stay gone at least this long, µs,
/// and at least [`RELEASE_STARTS`] starts' time: a shorter release saves little memory and
/// costs a start (CPU, and a first call slower than a used instance's).
pub const MIN_RELEASE_US: u64 = 500_000;

/// See [`MIN_RELEASE_US`].
pub const RELEASE_STARTS: u64 = 20;

/// What to do with a task's instance that just finished, relative to its end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmth {
    /// Keep it this long, µs (0: let it go at once).
    pub keep_us: u64,
    /// Then have a new one ready in this window.
    pub rewarm: Option<Rewarm>,
}

/// A window in which a new instance is kept ready, relative to the end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rewarm {
    /// Ready by, µs after the end.
    pub ready_us: u64,
    /// Kept until, µs after the end.
    pub until_us: u64,
    /// Probability that the next start falls in the window, given that it comes after the
    /// keep-alive.
    pub probability: f64,
}

#[derive(Debug, Clone, Default)]
struct TaskIdle {
    last_end_us: Option<u64>,
    /// Instances running now.
    running: u32,
    /// Starts while another instance ran (decayed with the gaps).
    overlapped: f64,
    gaps: LogHistogram,
    new_gaps: u32,
    /// The choice made for this fixed keep-alive, while fewer than `RESOLVE_EVERY` gaps
    /// came since.
    chosen: Option<(u64, Warmth)>,
}

/// The idle-time models of all tasks. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct IdleModel {
    tasks: Vec<TaskIdle>,
}

impl IdleModel {
    fn task(&mut self, task: TaskId) -> &mut TaskIdle {
        if self.tasks.len() <= task.index() {
            self.tasks.resize(task.index() + 1, TaskIdle::default());
        }
        &mut self.tasks[task.index()]
    }

    /// `task` started at `at_us`: the gap since its last end is learned.
    pub fn on_start(&mut self, task: TaskId, at_us: u64) {
        let idle = self.task(task);
        idle.running += 1;
        if idle.running > 1 {
            // No instance of it was idle: a start that needs one more, not a gap.
            idle.overlapped += 1.0;
        } else if let Some(end) = idle.last_end_us {
            idle.gaps.record(at_us.saturating_sub(end), 1.0);
            idle.new_gaps += 1;
        }
        if idle.gaps.total_weight() + idle.overlapped > MAX_WEIGHT {
            idle.gaps.scale(0.5);
            idle.overlapped *= 0.5;
        }
    }

    /// How many instances of `task` run now (starts seen minus ends).
    pub fn running(&self, task: TaskId) -> u32 {
        self.tasks.get(task.index()).map_or(0, |t| t.running)
    }

    /// How many gaps of `task` the model holds (decayed).
    pub fn samples(&self, task: TaskId) -> f64 {
        self.tasks
            .get(task.index())
            .map_or(0.0, |t| t.gaps.total_weight())
    }

    /// An instance of `task` finished at `at_us`; a fixed keep-alive would keep it
    /// `keep_us`; a new instance takes `start_us()` from its start until it is ready (its
    /// memory is held from then: a re-warm's cost; asked only when the choice is made
    /// again). What to do instead (see the module docs).
    pub fn after_end(
        &mut self,
        task: TaskId,
        at_us: u64,
        keep_us: u64,
        start_us: impl FnOnce() -> u64,
    ) -> Warmth {
        let idle = self.task(task);
        idle.last_end_us = Some(at_us);
        idle.running = idle.running.saturating_sub(1);
        // A task whose instances overlap is served by several: one instance's gaps do not
        // say how long each should be kept, and the fixed keep-alive stands.
        let gaps = idle.gaps.total_weight();
        if gaps < MIN_SAMPLES || idle.overlapped > MAX_OVERLAP * (gaps + idle.overlapped) {
            return Warmth {
                keep_us,
                rewarm: None,
            };
        }
        if let Some((keep, warmth)) = idle.chosen {
            if keep == keep_us && idle.new_gaps < RESOLVE_EVERY {
                return warmth;
            }
        }
        let warmth = choose(&idle.gaps, keep_us, start_us());
        idle.chosen = Some((keep_us, warmth));
        idle.new_gaps = 0;
        warmth
    }
}

/// A group of adjacent buckets: [low, high), value, weight.
#[derive(Debug, Clone, Copy)]
struct Group {
    low: f64,
    high: f64,
    mid: f64,
    weight: f64,
}

/// Each gap also counts, with [`SPREAD`]'s weights, for the buckets next to its own (about
/// ±12 % and ±25 %): the next gap is as likely a little longer or shorter than one seen, so
/// a window closes a little past the gaps seen instead of exactly on them. The choice is
/// made on this spread distribution, and held to the guarantee on the gaps as seen.
const SPREAD: [f64; 3] = [1.0, 0.5, 0.25];

/// Gaps as groups of buckets, in increasing order, with prefix sums of weight and of
/// weight × gap.
#[derive(Debug)]
struct Dist {
    groups: Vec<Group>,
    w: Vec<f64>,
    x: Vec<f64>,
}

impl Dist {
    fn new(buckets: impl IntoIterator<Item = (u16, f64)>, max_groups: usize) -> Dist {
        let all: Vec<Group> = buckets
            .into_iter()
            .filter(|&(_, w)| w > 0.0)
            .map(|(bucket, weight)| {
                let (low, width) = bucket_range(bucket);
                Group {
                    low: low as f64,
                    high: (low + width) as f64,
                    mid: low as f64 + (width as f64 - 1.0) / 2.0,
                    weight,
                }
            })
            .collect();
        let groups: Vec<Group> = if all.len() <= max_groups {
            all
        } else {
            all.chunks(all.len().div_ceil(max_groups))
                .map(|chunk| {
                    let weight: f64 = chunk.iter().map(|g| g.weight).sum();
                    Group {
                        low: chunk[0].low,
                        high: chunk[chunk.len() - 1].high,
                        mid: chunk.iter().map(|g| g.mid * g.weight).sum::<f64>() / weight,
                        weight,
                    }
                })
                .collect()
        };
        let (mut w, mut x) = (vec![0.0], vec![0.0]);
        for g in &groups {
            w.push(w[w.len() - 1] + g.weight);
            x.push(x[x.len() - 1] + g.weight * g.mid);
        }
        Dist { groups, w, x }
    }

    /// How many groups have a value of at most `v`.
    fn upto(&self, v: f64) -> usize {
        self.groups.partition_point(|g| g.mid <= v)
    }

    /// For a keep `k` and a window `[r, h]`: the groups `..a` are kept, `j..e` are served
    /// by the window (a value in `[r, h]`), the rest are cold.
    fn regions(&self, k: f64, r: f64, h: f64) -> (usize, usize, usize) {
        let a = self.upto(k);
        let j = self.groups.partition_point(|g| g.mid < r).max(a);
        (a, j, self.upto(h).max(j))
    }

    /// The weight of gaps left cold and the weighted idle time, for a keep `k` and a
    /// window `[r, h]` (a new instance held from `start` before `r` whenever a gap reaches
    /// `r`).
    fn cost(&self, k: f64, window: Option<(f64, f64)>, start: f64) -> (f64, f64) {
        let n = self.groups.len();
        let total = self.w[n];
        let a = self.upto(k);
        let after = total - self.w[a];
        let kept = self.x[a] + k * after;
        let Some((r, h)) = window else {
            return (after, kept);
        };
        let (_, j, e) = self.regions(k, r, h);
        let warm = self.w[e] - self.w[j];
        let past = total - self.w[e];
        let cold = (self.w[j] - self.w[a]) + past;
        let idle =
            kept + (self.x[e] - self.x[j] - r * warm) + (h - r) * past + start * (warm + past);
        (cold, idle)
    }
}

/// The choice for gaps `gaps` against a fixed keep-alive of `keep_us`, for instances that
/// take `start_us` to start.
fn choose(gaps: &LogHistogram, keep_us: u64, start_us: u64) -> Warmth {
    let fixed = Warmth {
        keep_us,
        rewarm: None,
    };
    let seen: Vec<(u16, f64)> = gaps
        .buckets()
        .map(|(low, _, w)| (bucket_of(low), w))
        .collect();
    let raw = Dist::new(seen.iter().copied(), usize::MAX);
    let mut spread: std::collections::BTreeMap<u16, f64> = std::collections::BTreeMap::new();
    for &(bucket, weight) in &seen {
        for (distance, share) in SPREAD.iter().enumerate() {
            let distance = distance as u16;
            for near in [bucket.checked_sub(distance), bucket.checked_add(distance)]
                .into_iter()
                .take(if distance == 0 { 1 } else { 2 })
                .flatten()
            {
                *spread.entry(near).or_default() += weight * share;
            }
        }
    }
    let smooth = Dist::new(spread, MAX_GROUPS);
    let n = smooth.groups.len();
    if n == 0 || raw.groups.is_empty() {
        return fixed;
    }
    let (t, start) = (keep_us as f64, start_us as f64);
    let eps = 1e-9;
    // The guarantee, on the gaps as seen and on the spread ones.
    let (raw_cold_t, raw_idle_t) = raw.cost(t, None, 0.0);
    let (cold_t, idle_t) = smooth.cost(t, None, 0.0);
    let allowed = |k: f64, window: Option<(f64, f64)>, idle: f64| {
        if idle > idle_t * IDLE_SHARE + eps {
            return false;
        }
        let (raw_cold, raw_idle) = raw.cost(k, window, start);
        let no_worse = raw_cold <= raw_cold_t + eps && raw_idle <= raw_idle_t * IDLE_SHARE + eps;
        // A re-warm must earn its place on the gaps as seen (see CLEAR_GAIN).
        let clear = raw_cold <= raw_cold_t * (1.0 - CLEAR_GAIN) - 1.0
            || (raw_cold <= raw_cold_t + eps && raw_idle <= raw_idle_t * (1.0 - CLEAR_GAIN));
        no_worse && (window.is_none() || clear)
    };
    // (cold, idle, K, window) of the best so far, on the spread distribution.
    let mut best = (cold_t, idle_t, t, None::<(f64, f64)>);
    let better = |cold: f64, idle: f64, best: &(f64, f64, f64, Option<(f64, f64)>)| {
        cold < best.0 - eps || (cold <= best.0 + eps && idle < best.1 - eps)
    };
    let mut keeps: Vec<f64> = [0.0, t]
        .into_iter()
        .chain(smooth.groups.iter().map(|g| g.high))
        .collect();
    keeps.sort_by(f64::total_cmp);
    keeps.dedup();
    let min_release = (MIN_RELEASE_US as f64).max((RELEASE_STARTS * start_us) as f64);
    for &k in &keeps {
        let (cold, idle) = smooth.cost(k, None, start);
        if better(cold, idle, &best) && allowed(k, None, idle) {
            best = (cold, idle, k, None);
        }
        let a = smooth.upto(k);
        for j in a..n {
            let r = smooth.groups[j].low.max(k);
            if r - k < min_release {
                continue;
            }
            for e in j..n {
                let h = smooth.groups[e].high;
                let (cold, idle) = smooth.cost(k, Some((r, h)), start);
                if better(cold, idle, &best) && allowed(k, Some((r, h)), idle) {
                    best = (cold, idle, k, Some((r, h)));
                }
            }
        }
    }
    let (_, _, k, window) = best;
    if k == t && window.is_none() {
        return fixed;
    }
    // Bucket edges: a keep to a bucket's upper edge covers every gap in it, a window from
    // a bucket's lower edge to another's upper edge every gap in those.
    let keep = k.ceil() as u64;
    let Some((r, h)) = window else {
        return Warmth {
            keep_us: keep,
            rewarm: None,
        };
    };
    let (a, j, e) = smooth.regions(k, r, h);
    let after = smooth.w[n] - smooth.w[a];
    Warmth {
        keep_us: keep,
        rewarm: Some(Rewarm {
            ready_us: r as u64,
            until_us: h.ceil() as u64,
            probability: if after > 0.0 {
                (smooth.w[e] - smooth.w[j]) / after
            } else {
                0.0
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    fn model_with(gaps: &[u64]) -> (IdleModel, u64) {
        let mut model = IdleModel::default();
        let task = TaskId(0);
        let mut now = 1_000 * MS;
        let _ = model.after_end(task, now, 0, || 0);
        for &gap in gaps {
            now += gap;
            model.on_start(task, now);
            now += MS;
            let _ = model.after_end(task, now, 0, || 0);
        }
        (model, now)
    }

    /// Fraction of `gaps` left cold and idle time per gap under `warmth`.
    fn outcome(warmth: Warmth, gaps: &[u64]) -> (f64, f64) {
        let (mut cold, mut idle) = (0.0, 0.0);
        for &x in gaps {
            let k = warmth.keep_us;
            if x <= k {
                idle += x as f64;
                continue;
            }
            idle += k as f64;
            match warmth.rewarm {
                Some(r) if r.ready_us <= x && x <= r.until_us => idle += (x - r.ready_us) as f64,
                Some(r) => {
                    cold += 1.0;
                    if x > r.until_us {
                        idle += (r.until_us - r.ready_us) as f64;
                    }
                }
                None => cold += 1.0,
            }
        }
        (cold / gaps.len() as f64, idle / gaps.len() as f64)
    }

    #[test]
    fn bursts_apart_are_kept_through_the_burst_and_rewarmed_for_the_next() {
        // Gaps of 20–200 ms inside bursts, 2.5–4 s between them; a fixed keep-alive of 2 s
        // leaves every burst's first start cold.
        let mut gaps = Vec::new();
        for i in 0..60u64 {
            gaps.push(if i % 5 == 4 {
                2_500 * MS + (i * 37 % 1_500) * MS
            } else {
                20 * MS + (i * 53 % 180) * MS
            });
        }
        let (mut model, now) = model_with(&gaps);
        let warmth = model.after_end(TaskId(0), now, 2_000 * MS, || 5 * MS);
        let rewarm = warmth.rewarm.expect("a re-warm for the next burst");
        assert!(warmth.keep_us < 300 * MS, "{warmth:?}");
        let long: Vec<u64> = gaps.iter().copied().filter(|&g| g > 1_000 * MS).collect();
        let (first, last) = (long.iter().min().unwrap(), long.iter().max().unwrap());
        assert!(
            rewarm.ready_us <= *first && rewarm.until_us >= *last,
            "{warmth:?}"
        );
        let fixed = Warmth {
            keep_us: 2_000 * MS,
            rewarm: None,
        };
        let (cold, idle) = outcome(warmth, &gaps);
        let (cold_fixed, idle_fixed) = outcome(fixed, &gaps);
        assert!(
            cold < cold_fixed && idle <= idle_fixed,
            "{cold} {idle} vs {cold_fixed} {idle_fixed}"
        );
        assert_eq!(cold, 0.0);
    }

    #[test]
    fn never_worse_than_the_fixed_keep_alive_on_the_gaps_seen() {
        // Several shapes of gaps and keep-alives: the choice never leaves more gaps cold or
        // holds more idle time than the fixed keep-alive on the same gaps (within what the
        // buckets round off).
        let shapes: Vec<Vec<u64>> = vec![
            (0..40).map(|i| (i % 7 + 1) * 100 * MS).collect(),
            (0..40)
                .map(|i| if i % 2 == 0 { 5 * MS } else { 90_000 * MS })
                .collect(),
            (0..40).map(|i| (i * i % 97) * 1_000 * MS).collect(),
            vec![0; 40],
        ];
        for gaps in &shapes {
            for keep in [0, 50 * MS, 1_000 * MS, 60_000 * MS] {
                let (mut model, now) = model_with(gaps);
                let warmth = model.after_end(TaskId(0), now, keep, || 0);
                let fixed = Warmth {
                    keep_us: keep,
                    rewarm: None,
                };
                let (cold, idle) = outcome(warmth, gaps);
                let (cold_fixed, idle_fixed) = outcome(fixed, gaps);
                assert!(cold <= cold_fixed + 1e-9, "{gaps:?} {keep}: {warmth:?}");
                assert!(
                    idle <= idle_fixed * 1.07 + 1.0,
                    "{gaps:?} {keep}: {warmth:?} {idle} vs {idle_fixed}"
                );
            }
        }
    }

    #[test]
    fn an_instance_is_not_let_go_for_a_short_while() {
        // Gaps of 20–200 ms only: letting the instance go between calls and starting a new
        // one saves a few ms of memory per gap and costs a start each time.
        let gaps: Vec<u64> = (0..60u64).map(|i| 20 * MS + (i * 53 % 180) * MS).collect();
        let (mut model, now) = model_with(&gaps);
        let warmth = model.after_end(TaskId(0), now, 2_000 * MS, || 5 * MS);
        assert_eq!(warmth.rewarm, None, "{warmth:?}");
        assert!(warmth.keep_us >= 199 * MS, "{warmth:?}");
    }

    #[test]
    fn a_task_that_runs_several_instances_at_once_keeps_the_fixed_keep_alive() {
        // Bursts apart as above, but each burst's calls overlap in pairs.
        let mut model = IdleModel::default();
        let task = TaskId(0);
        let mut now = 1_000 * MS;
        for i in 0..40u64 {
            now += if i % 5 == 4 { 3_000 * MS } else { 50 * MS };
            model.on_start(task, now);
            model.on_start(task, now + MS);
            let _ = model.after_end(task, now + 2 * MS, 2_000 * MS, || 5 * MS);
            let _ = model.after_end(task, now + 3 * MS, 2_000 * MS, || 5 * MS);
        }
        let warmth = model.after_end(task, now + 4 * MS, 2_000 * MS, || 5 * MS);
        assert_eq!(
            warmth,
            Warmth {
                keep_us: 2_000 * MS,
                rewarm: None
            }
        );
    }

    #[test]
    fn too_few_gaps_keep_the_fixed_keep_alive() {
        let (mut model, now) = model_with(&[3_000 * MS; 5]);
        let warmth = model.after_end(TaskId(0), now, 2_000 * MS, || 5 * MS);
        assert_eq!(
            warmth,
            Warmth {
                keep_us: 2_000 * MS,
                rewarm: None
            }
        );
        assert_eq!(model.samples(TaskId(0)), 5.0);
    }
}
