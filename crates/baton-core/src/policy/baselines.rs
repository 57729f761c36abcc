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
mod tests {
    use super::*;
    use crate::test_support::FixedCold;

    fn end(task: u32, invocation: u64, at_us: u64) -> PolicyEvent {
        PolicyEvent::End {
            task: TaskId(task),
            invocation,
            at_us,
        }
    }

    fn start(task: u32, invocation: u64, at_us: u64) -> PolicyEvent {
        PolicyEvent::Start {
            task: TaskId(task),
            invocation,
            at_us,
            context: PredictContext::default(),
            reveals_route: None,
            wait_us: 0,
        }
    }

    #[test]
    fn ttl_keeps_for_its_time() {
        let mut out = Vec::new();
        TtlPolicy::new(600).on_event(&end(1, 0, 1_000), &FixedCold(50_000), &mut out);
        assert_eq!(
            out,
            [Action::KeepAlive {
                task: TaskId(1),
                until_us: 1_600
            }]
        );
    }

    /// Runs a task with the given idle times (1-minute runs) and returns the last end's
    /// actions and its time.
    fn histogram_after(
        policy: &mut HistogramPolicy,
        task: u32,
        idles: &[u64],
    ) -> (Vec<Action>, u64) {
        let mut out = Vec::new();
        let mut t = 0;
        for (i, &idle) in std::iter::once(&0).chain(idles).enumerate() {
            t += idle;
            policy.on_event(&start(task, i as u64, t), &FixedCold(50_000), &mut out);
            t += MINUTE_US;
            out.clear();
            policy.on_event(&end(task, i as u64, t), &FixedCold(50_000), &mut out);
        }
        (out, t)
    }

    #[test]
    fn histogram_follows_the_papers_three_patterns() {
        let mut policy = HistogramPolicy::new(1.0);
        // Not seen idle yet (uncertain): the range's keep-alive, 4 h, pinned to the instance.
        let (out, t) = histogram_after(&mut policy, 0, &[]);
        assert_eq!(
            out,
            [Action::PinKeepAlive {
                task: TaskId(0),
                until_us: t + 240 * MINUTE_US
            }]
        );
        // Idle times of 30 minutes gather in one bin (CV sqrt(240) ≈ 15.5): certain from
        // the first; pre-warm at 30 min × 0.9, keep to 31 min × 1.1.
        let (out, t) = histogram_after(&mut policy, 1, &[30 * MINUTE_US]);
        assert!((policy.tasks[1].cv(240) - 240f64.sqrt()).abs() < 1e-9);
        assert_eq!(
            out,
            [Action::PreWarm {
                task: TaskId(1),
                at_us: t + 27 * MINUTE_US,
                until_us: t + (31.0 * 1.1 * MINUTE_US as f64) as u64,
                plan: None,
                reservation: None,
                probability: 1.0,
            }]
        );
        // Short idle times (head bin 0): kept loaded to the tail, 1 min × 1.1.
        let (out, t) = histogram_after(&mut policy, 2, &[10_000_000; 5]);
        assert_eq!(
            out,
            [Action::KeepAlive {
                task: TaskId(2),
                until_us: t + (1.1 * MINUTE_US as f64) as u64
            }]
        );
        // Idle times spread over 100 bins: the CV falls under 2, uncertain again.
        let spread: Vec<u64> = (0..100).map(|m| m * MINUTE_US + 1).collect();
        let (out, t) = histogram_after(&mut policy, 3, &spread);
        assert!(policy.tasks[3].cv(240) < 2.0);
        assert_eq!(
            out,
            [Action::PinKeepAlive {
                task: TaskId(3),
                until_us: t + 240 * MINUTE_US
            }]
        );
        // Idle times beyond the range (5 h, 7 h): forecast 6 h, pre-warm at 85 %, keep to 115 %.
        let hour = 60 * MINUTE_US;
        let (out, t) = histogram_after(&mut policy, 4, &[5 * hour, 7 * hour]);
        let mean = policy.tasks[4].mean_idle_us() as f64;
        assert_eq!(mean, (6 * hour) as f64);
        assert_eq!(
            out,
            [Action::PreWarm {
                task: TaskId(4),
                at_us: t + (mean * 0.85) as u64,
                until_us: t + (mean * 1.15) as u64,
                plan: None,
                reservation: None,
                probability: 1.0,
            }]
        );
        // The knob stretches the range's keep-alive and the tail, not the head.
        let mut half = HistogramPolicy::new(0.5);
        let (out, t) = histogram_after(&mut half, 0, &[]);
        assert_eq!(
            out,
            [Action::PinKeepAlive {
                task: TaskId(0),
                until_us: t + 120 * MINUTE_US
            }]
        );
    }

    #[test]
    fn greedy_dual_evicts_cheap_rare_big_first() {
        let mut costs = Costs::new(1_000, 100);
        costs.set_cold_start_us(TaskId(1), 10_000);
        costs.set_memory_mib(TaskId(2), 1_000);
        let mut policy = GreedyDualPolicy::new(Arc::new(costs), u64::MAX);
        let mut out = Vec::new();
        for (task, times) in [(0, 1), (1, 1), (2, 5)] {
            for _ in 0..times {
                policy.on_event(&end(task, 0, 0), &FixedCold(50_000), &mut out);
            }
        }
        let p = |policy: &GreedyDualPolicy, t| {
            let instance = IdleInstance {
                task: TaskId(t),
                idle_since_us: 0,
                memory_mib: 1,
                cold_start_us: 1,
                bet: None,
                ahead: 0,
            };
            policy.evict_priority(&instance, 0)
        };
        // Priorities: task 0: 1 × 1000 / 100 = 10; task 1: 1 × 10000 / 100 = 100;
        // task 2: 5 × 1000 / 1000 = 5.
        assert!(
            p(&policy, 1) > p(&policy, 0),
            "expensive cold start kept longer"
        );
        assert!(p(&policy, 0) > p(&policy, 2), "big and cheap goes first");
        policy.on_event(
            &PolicyEvent::Evicted {
                task: TaskId(2),
                at_us: 1,
            },
            &FixedCold(50_000),
            &mut out,
        );
        policy.on_event(&end(0, 0, 2), &FixedCold(50_000), &mut out);
        assert_eq!(
            p(&policy, 0),
            5.0 + 2.0 * 10.0,
            "the clock rose to the evicted priority"
        );
    }

    #[test]
    fn oracle_prewarms_every_arrival_just_in_time() {
        let costs = Costs::new(100, 10);
        let a = TaskId(0);
        let arrivals = [(a, 0, 10), (a, 60, 10), (a, 5_000_000, 10)];
        let mut policy = OraclePolicy::new(&arrivals, &costs);
        let mut out = Vec::new();
        policy.on_event(
            &PolicyEvent::Tick { at_us: 0 },
            &FixedCold(50_000),
            &mut out,
        );
        let announced: Vec<u64> = out
            .iter()
            .map(|x| match x {
                Action::PreWarm {
                    at_us, until_us, ..
                } => {
                    assert_eq!(*until_us, at_us + 10, "its window covers its run");
                    *at_us
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(announced, [0, 60], "the far arrival waits for its horizon");
        out.clear();
        policy.on_event(&end(0, 1, 3_000_000), &FixedCold(50_000), &mut out);
        assert_eq!(out.len(), 1, "announced once it is within the horizon");
        assert!(out.iter().all(|x| !matches!(x, Action::KeepAlive { .. })));
    }

    #[test]
    fn an_arrival_while_a_run_is_under_way_finds_the_task_busy() {
        let mut policy = HistogramPolicy::new(1.0);
        let mut out = Vec::new();
        let cold = FixedCold(50_000);
        let hour = 60 * MINUTE_US;
        // Run 0: 0–1 min. Run 1 starts at 1 h and runs 2 h; run 2 arrives during it.
        policy.on_event(&start(7, 0, 0), &cold, &mut out);
        policy.on_event(&end(7, 0, MINUTE_US), &cold, &mut out);
        policy.on_event(&start(7, 1, hour), &cold, &mut out);
        policy.on_event(&start(7, 2, 2 * hour), &cold, &mut out);
        let bins = &policy.tasks[7].bins;
        assert_eq!(bins[59], 1, "run 1 came 59 min after run 0 ended");
        assert_eq!(
            bins[0], 1,
            "run 2 came while run 1 ran: idle 0, not 119 min"
        );
        // Run 1's end is never heard of (dropped): once it started a whole range ago it
        // no longer makes the task look busy.
        policy.on_event(&end(7, 2, 2 * hour + MINUTE_US), &cold, &mut out);
        policy.on_event(&start(7, 3, 4 * hour), &cold, &mut out);
        assert_eq!(policy.tasks[7].bins[0], 2, "run 1 still counted as running");
        policy.on_event(&end(7, 3, 4 * hour + MINUTE_US), &cold, &mut out);
        policy.on_event(&start(7, 4, 5 * hour + 11 * MINUTE_US), &cold, &mut out);
        assert_eq!(
            policy.tasks[7].bins[70], 1,
            "run 1 forgotten 4 h after its start"
        );
        assert_eq!(policy.tasks[7].bins[0], 2);
        assert_eq!(policy.tasks[7].running.len(), 1);
    }
}
