//! The policies the field uses today, on the same [`Policy`] trait as baton's, so the
//! simulator and the runtime compare them on one code path.
//!
//! - [`NonePolicy`]: no keep-alive; every invocation after an instance ends is cold.
//! - [`TtlPolicy`]: keep an instance a fixed time after use (AWS Lambda, OpenWhisk).
//! - [`HistogramPolicy`]: Shahrad et al., ATC'20: per-function idle-time histogram; unload
//!   after use and pre-warm at the 5th percentile of idle time, keep to the 99th; a forecast
//!   for idle times beyond the histogram's range; a 4-hour keep-alive when the histogram
//!   is not concentrated (checked against dslab-faas: docs/sim/validation.md).
//! - [`GreedyDualPolicy`]: FaaSCache (ASPLOS'21): keep everything, evict the lowest
//!   Greedy-Dual-Size-Frequency priority `clock + frequency × cold cost ÷ size` under pressure.
//! - [`MlpPolicy`]: Xanadu (Middleware'20): pre-warm the single most likely path, each step
//!   just in time, no resource check.
//! - [`OraclePolicy`]: knows every arrival and has an instance ready exactly at each one.

use super::{Action, IdleInstance, Policy, PolicyEvent};
use crate::costs::Costs;
use crate::exec::ColdStarts;
use crate::ids::TaskId;
use crate::predict::{PredictContext, PredictOptions};
use crate::profile::NeedQuantile;
use crate::tdg::SnapshotCell;
use std::sync::Arc;

/// No keep-alive at all.
#[derive(Debug, Default)]
pub struct NonePolicy;

impl Policy for NonePolicy {
    fn name(&self) -> &str {
        "none"
    }
    fn on_event(&mut self, _event: &PolicyEvent, _host: &dyn ColdStarts, _out: &mut Vec<Action>) {}
}

/// Keep each instance `keep_us` after it finishes.
#[derive(Debug)]
pub struct TtlPolicy {
    keep_us: u64,
}

impl TtlPolicy {
    /// A fixed keep-alive of `keep_us` (the field's default is 10 minutes).
    pub fn new(keep_us: u64) -> TtlPolicy {
        TtlPolicy { keep_us }
    }
}

impl Policy for TtlPolicy {
    fn name(&self) -> &str {
        "ttl"
    }
    fn on_event(&mut self, event: &PolicyEvent, _host: &dyn ColdStarts, out: &mut Vec<Action>) {
        if let PolicyEvent::End { task, at_us, .. } = *event {
            out.push(Action::KeepAlive {
                task,
                until_us: at_us + self.keep_us,
            });
        }
    }
}

const MINUTE_US: u64 = 60_000_000;

/// Per-task idle-time histogram of the hybrid policy: one-minute bins over the range, the
/// idle times beyond it counted apart, and the sum of every idle time for the forecast.
#[derive(Debug, Default, Clone)]
struct IdleHistogram {
    last_end_us: Option<u64>,
    /// The task's runs under way (invocation, start µs): an arrival while one runs finds
    /// the task busy, not idle. A run whose end was never heard of (an event dropped under
    /// overload) is forgotten once it started a whole range ago.
    running: Vec<(u64, u64)>,
    bins: Vec<u32>,
    /// Idle times inside the range, and the sum of their bins' squares (for the CV).
    in_range: u32,
    squares: u64,
    out_of_bounds: u32,
    idle_sum_us: u128,
}

/// What the histogram of a task says (Shahrad et al., §4.2).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pattern {
    /// Too few or too spread idle times (the bins' CV under the threshold): a fixed
    /// keep-alive of the whole range.
    Uncertain,
    /// Concentrated idle times: pre-warm at the head, keep to the tail.
    Certain,
    /// Mostly idle times beyond the range: forecast the next one (the paper's ARIMA; here
    /// the mean idle time).
    OutOfBounds,
}

impl IdleHistogram {
    fn add(&mut self, idle_us: u64, n_bins: u64) {
        self.idle_sum_us += u128::from(idle_us);
        let bin = idle_us / MINUTE_US;
        if bin >= n_bins {
            self.out_of_bounds += 1;
            return;
        }
        if self.bins.len() <= bin as usize {
            self.bins.resize(bin as usize + 1, 0);
        }
        let count = &mut self.bins[bin as usize];
        self.squares += 2 * u64::from(*count) + 1;
        *count += 1;
        self.in_range += 1;
    }

    /// The coefficient of variation of the bin counts over all `n_bins` bins (high: the
    /// idle times gather in a few bins).
    fn cv(&self, n_bins: u64) -> f64 {
        if self.in_range == 0 || n_bins < 2 {
            return 0.0;
        }
        let n = n_bins as f64;
        let mean = f64::from(self.in_range) / n;
        let variance = (self.squares as f64 - n * mean * mean).max(0.0) / (n - 1.0);
        variance.sqrt() / mean
    }

    fn pattern(&self, n_bins: u64, cv_threshold: f64, oob_threshold: f64) -> Pattern {
        let seen = self.in_range + self.out_of_bounds;
        if seen > 0 && f64::from(self.out_of_bounds) >= oob_threshold * f64::from(seen) {
            Pattern::OutOfBounds
        } else if self.cv(n_bins) < cv_threshold {
            Pattern::Uncertain
        } else {
            Pattern::Certain
        }
    }

    /// The first bin where the in-range idle times up to it reach fraction `q`.
    fn percentile_bin(&self, q: f64) -> u64 {
        let mut seen = 0u32;
        for (bin, &count) in self.bins.iter().enumerate() {
            seen += count;
            if f64::from(seen) >= q * f64::from(self.in_range) {
                return bin as u64;
            }
        }
        self.bins.len().saturating_sub(1) as u64
    }

    fn mean_idle_us(&self) -> u64 {
        let seen = u128::from(self.in_range + self.out_of_bounds);
        (self.idle_sum_us / seen.max(1)) as u64
    }
}

/// Shahrad et al.'s hybrid histogram policy (USENIX ATC'20, §4.2), as the paper and
/// dslab-faas's `HybridHistogramPolicy` run it:
/// - each task's idle times (from an end to the next start, 0 when another run of the
///   task was under way at the start) go into one-minute bins over a
///   4-hour range;
/// - **certain** (the bins' coefficient of variation at least 2): unload after each run and
///   pre-warm at the 5th percentile less 10 % (kept loaded when that is under a minute),
///   keep to the 99th percentile's bin end plus 10 %;
/// - **out of bounds** (at least half the idle times beyond the range): pre-warm at 85 % of
///   the forecast idle time, keep to 115 % (the paper fits an ARIMA model; the forecast
///   here is the mean idle time, which is what such a model gives on the few, long idle
///   times these tasks have);
/// - **uncertain** (anything else, a task not seen idle yet included): a fixed keep-alive
///   of the whole range, set once per instance ([`Action::PinKeepAlive`]): an instance
///   given it keeps that deadline through its later runs, even once the pattern is
///   certain, as dslab-faas keeps a container's first window (a certain pattern's
///   pre-warm still unloads it after a run).
///
/// `scale` (the knob) stretches the range's keep-alive and the tail.
#[derive(Debug)]
pub struct HistogramPolicy {
    n_bins: u64,
    cv_threshold: f64,
    oob_threshold: f64,
    scale: f64,
    tasks: Vec<IdleHistogram>,
}

impl HistogramPolicy {
    /// The paper's settings (4-hour range in one-minute bins, CV threshold 2, out of bounds
    /// from half the idle times, 10 % histogram and 15 % forecast margins), the range's
    /// keep-alive and the tail stretched by `scale` (1.0 is the paper's).
    pub fn new(scale: f64) -> HistogramPolicy {
        HistogramPolicy {
            n_bins: 240,
            cv_threshold: 2.0,
            oob_threshold: 0.5,
            scale,
            tasks: Vec::new(),
        }
    }

    fn histogram(&mut self, task: TaskId) -> &mut IdleHistogram {
        if self.tasks.len() <= task.index() {
            self.tasks
                .resize(task.index() + 1, IdleHistogram::default());
        }
        &mut self.tasks[task.index()]
    }
}

impl Policy for HistogramPolicy {
    fn name(&self) -> &str {
        "histogram"
    }

    fn on_event(&mut self, event: &PolicyEvent, _host: &dyn ColdStarts, out: &mut Vec<Action>) {
        match *event {
            PolicyEvent::Start {
                task,
                invocation,
                at_us,
                ..
            } => {
                let n_bins = self.n_bins;
                let histogram = self.histogram(task);
                let range_us = n_bins * MINUTE_US;
                histogram
                    .running
                    .retain(|&(_, started)| started.saturating_add(range_us) > at_us);
                if let Some(last_end) = histogram.last_end_us {
                    // Idle is the time since the last end with nothing running (the paper's
                    // idle time; dslab-faas gets the same by taking it at the run's end).
                    let idle = if histogram.running.is_empty() {
                        at_us.saturating_sub(last_end)
                    } else {
                        0
                    };
                    histogram.add(idle, n_bins);
                }
                histogram.running.push((invocation, at_us));
            }
            PolicyEvent::End {
                task,
                invocation,
                at_us,
            } => {
                let (n_bins, cv, oob, scale) = (
                    self.n_bins,
                    self.cv_threshold,
                    self.oob_threshold,
                    self.scale,
                );
                let histogram = self.histogram(task);
                histogram.running.retain(|&(id, _)| id != invocation);
                histogram.last_end_us = Some(at_us);
                // (pre-warm after, keep until) the end, µs.
                let pattern = histogram.pattern(n_bins, cv, oob);
                let (head_us, tail_us) = match pattern {
                    Pattern::Uncertain => (0.0, (n_bins * MINUTE_US) as f64 * scale),
                    Pattern::Certain => {
                        let head = histogram.percentile_bin(0.05);
                        let tail = histogram.percentile_bin(0.99) + 1;
                        (
                            (head * MINUTE_US) as f64 * 0.9,
                            (tail * MINUTE_US) as f64 * 1.1 * scale,
                        )
                    }
                    Pattern::OutOfBounds => {
                        let forecast = histogram.mean_idle_us() as f64;
                        (forecast * 0.85, forecast * 1.15 * scale)
                    }
                };
                if head_us >= 1.0 {
                    out.push(Action::PreWarm {
                        task,
                        at_us: at_us + head_us as u64,
                        until_us: at_us + tail_us.max(head_us + 1.0) as u64,
                        plan: None,
                        reservation: None,
                        probability: 1.0,
                    });
                } else if matches!(pattern, Pattern::Uncertain) {
                    // The range's window, once per instance (as dslab-faas's policy keeps
                    // it): a pattern that turns certain later does not cut it short.
                    out.push(Action::PinKeepAlive {
                        task,
                        until_us: at_us + tail_us as u64,
                    });
                } else {
                    out.push(Action::KeepAlive {
                        task,
                        until_us: at_us + tail_us as u64,
                    });
                }
            }
            PolicyEvent::Tick { .. } | PolicyEvent::Evicted { .. } => {}
        }
    }
}

/// FaaSCache's Greedy-Dual keep-alive. See the module docs.
#[derive(Debug)]
pub struct GreedyDualPolicy {
    costs: Arc<Costs>,
    max_keep_us: u64,
    clock: f64,
    frequency: Vec<u64>,
    priority: Vec<f64>,
}

impl GreedyDualPolicy {
    /// Keeps instances up to `max_keep_us` (FaaSCache keeps them until evicted: give a day).
    pub fn new(costs: Arc<Costs>, max_keep_us: u64) -> GreedyDualPolicy {
        GreedyDualPolicy {
            costs,
            max_keep_us,
            clock: 0.0,
            frequency: Vec::new(),
            priority: Vec::new(),
        }
    }
}

impl Policy for GreedyDualPolicy {
    fn name(&self) -> &str {
        "greedy-dual"
    }

    fn on_event(&mut self, event: &PolicyEvent, _host: &dyn ColdStarts, out: &mut Vec<Action>) {
        match *event {
            PolicyEvent::End { task, at_us, .. } => {
                if self.frequency.len() <= task.index() {
                    self.frequency.resize(task.index() + 1, 0);
                    self.priority.resize(task.index() + 1, 0.0);
                }
                self.frequency[task.index()] += 1;
                let cost = self.costs.cold_start_us(task) as f64;
                let size = self.costs.memory_mib(task).max(1) as f64;
                self.priority[task.index()] =
                    self.clock + self.frequency[task.index()] as f64 * cost / size;
                out.push(Action::KeepAlive {
                    task,
                    until_us: at_us.saturating_add(self.max_keep_us),
                });
            }
            PolicyEvent::Evicted { task, .. } => {
                self.clock = self
                    .priority
                    .get(task.index())
                    .copied()
                    .unwrap_or(self.clock);
            }
            PolicyEvent::Start { .. } | PolicyEvent::Tick { .. } => {}
        }
    }

    fn evict_priority(&self, instance: &IdleInstance, _now_us: u64) -> f64 {
        self.priority
            .get(instance.task.index())
            .copied()
            .unwrap_or(0.0)
    }
}

/// Xanadu's most-likely-path pre-warming. See the module docs.
#[derive(Debug)]
pub struct MlpPolicy {
    graph: Arc<SnapshotCell>,
    hold_us: u64,
    keep_alive_us: u64,
}

impl MlpPolicy {
    /// Pre-warmed steps are held `hold_us` past their expected start; finished instances
    /// are kept `keep_alive_us` (the platform's keep-alive, as for the chain policy).
    pub fn new(graph: Arc<SnapshotCell>, hold_us: u64, keep_alive_us: u64) -> MlpPolicy {
        MlpPolicy {
            graph,
            hold_us,
            keep_alive_us,
        }
    }
}

impl Policy for MlpPolicy {
    fn name(&self) -> &str {
        "mlp"
    }

    fn on_event(&mut self, event: &PolicyEvent, _host: &dyn ColdStarts, out: &mut Vec<Action>) {
        if let PolicyEvent::End { task, at_us, .. } = *event {
            if self.keep_alive_us > 0 {
                out.push(Action::KeepAlive {
                    task,
                    until_us: at_us + self.keep_alive_us,
                });
            }
            return;
        }
        let PolicyEvent::Start { task, at_us, .. } = *event else {
            return;
        };
        let snapshot = self.graph.load();
        let options = PredictOptions {
            n: 1,
            use_context: false,
            ..PredictOptions::default()
        };
        let profiles = snapshot.chain_profiles(
            task,
            &PredictContext::default(),
            &options,
            NeedQuantile::P50,
        );
        if let Some(path) = profiles.first() {
            for step in &path.steps {
                out.push(Action::PreWarm {
                    task: step.task,
                    at_us: at_us + step.start_offset_us,
                    until_us: at_us + step.start_offset_us + step.duration_us + self.hold_us,
                    plan: None,
                    reservation: None,
                    probability: step.reach_probability,
                });
            }
        }
    }
}

/// One arrival as the oracle sees it: (task, start µs, duration µs), indexed by invocation id.
pub type Arrival = (TaskId, u64, u64);

/// The clairvoyant policy. See the module docs. Every arrival gets a pre-warm ready exactly
/// at its start whose window covers its run, released when it ends: no cold start while
/// memory allows, and at most the idle memory of one cold-start window per invocation. (The
/// executor lets a pre-warm claim an idle instance whose claimed runs are over by then, as
/// it does for every policy; the oracle plans no keep-alive of its own: reuse planned on
/// the recorded times breaks as soon as one delay shifts an end.)
#[derive(Debug)]
pub struct OraclePolicy {
    /// Just-in-time pre-warms still to announce: (ready at, run time, task), earliest
    /// first.
    prewarms: Vec<(u64, u64, TaskId)>,
    next_prewarm: usize,
    horizon_us: u64,
}

impl OraclePolicy {
    /// Plans every arrival of `arrivals` with `costs`.
    pub fn new(arrivals: &[Arrival], costs: &Costs) -> OraclePolicy {
        let mut prewarms: Vec<(u64, u64, TaskId)> = arrivals
            .iter()
            .map(|&(task, start, duration)| (start, duration, task))
            .collect();
        prewarms.sort();
        let max_cold = arrivals
            .iter()
            .map(|&(task, _, _)| costs.cold_start_us(task))
            .max()
            .unwrap_or(0);
        OraclePolicy {
            prewarms,
            next_prewarm: 0,
            // Announce early enough that every instance starts a full cold start ahead.
            horizon_us: max_cold + 2_000_000,
        }
    }

    fn announce(&mut self, now_us: u64, out: &mut Vec<Action>) {
        while let Some(&(at_us, run_us, task)) = self.prewarms.get(self.next_prewarm) {
            if at_us > now_us + self.horizon_us {
                break;
            }
            out.push(Action::PreWarm {
                task,
                at_us,
                // Its step holds the instance until it ends: the window covers it, so no
                // other arrival's pre-warm counts on the instance meanwhile.
                until_us: at_us + run_us.max(1),
                plan: None,
                reservation: None,
                probability: 1.0,
            });
            self.next_prewarm += 1;
        }
    }
}

impl Policy for OraclePolicy {
    fn name(&self) -> &str {
        "oracle"
    }

    fn on_event(&mut self, event: &PolicyEvent, _host: &dyn ColdStarts, out: &mut Vec<Action>) {
        let (PolicyEvent::Tick { at_us }
        | PolicyEvent::Evicted { at_us, .. }
        | PolicyEvent::Start { at_us, .. }
        | PolicyEvent::End { at_us, .. }) = *event;
        self.announce(at_us, out);
    }
}

#[cfg(test)]
mod tests;
