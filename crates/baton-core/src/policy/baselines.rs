//! The policies the field uses today, on the same [`Policy`] trait as baton's, so the
//! simulator and the runtime compare them on one code path.
//!
//! - [`NonePolicy`]: no keep-alive; every invocation after an instance ends is cold.
//! - [`TtlPolicy`]: keep an instance a fixed time after use (AWS Lambda, OpenWhisk).
//! - [`HistogramPolicy`]: Shahrad et al., ATC'20: per-function idle-time histogram; unload
//!   after use and pre-warm at the 5th percentile of idle time, keep to the 99th; a fixed
//!   keep-alive when the histogram is not representative.
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

/// Per-task idle-time histogram of the hybrid policy.
#[derive(Debug, Default, Clone)]
struct IdleHistogram {
    last_end_us: Option<u64>,
    minutes: Vec<u32>,
    n: u32,
    out_of_bounds: u32,
}

impl IdleHistogram {
    fn percentile_minutes(&self, q: f64) -> u64 {
        let target = (q * f64::from(self.n)).ceil().max(1.0) as u32;
        let mut seen = 0;
        for (minute, &count) in self.minutes.iter().enumerate() {
            seen += count;
            if seen >= target {
                return minute as u64;
            }
        }
        self.minutes.len() as u64
    }
}

/// Shahrad et al.'s hybrid histogram policy. See the module docs.
#[derive(Debug)]
pub struct HistogramPolicy {
    range_minutes: u64,
    min_samples: u32,
    max_out_of_bounds: f64,
    fallback_keep_us: u64,
    tail_scale: f64,
    tasks: Vec<IdleHistogram>,
}

impl HistogramPolicy {
    /// The ATC'20 settings: 4-hour range in 1-minute bins, 10 % margins, the histogram
    /// trusted from 10 samples with at most half out of range, else a `fallback_keep_us`
    /// keep-alive. `tail_scale` stretches the keep-alive window (the knob for sweeps; 1.0
    /// is the paper's).
    pub fn new(fallback_keep_us: u64, tail_scale: f64) -> HistogramPolicy {
        HistogramPolicy {
            range_minutes: 240,
            min_samples: 10,
            max_out_of_bounds: 0.5,
            fallback_keep_us,
            tail_scale,
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
            PolicyEvent::Start { task, at_us, .. } => {
                let range = self.range_minutes;
                let histogram = self.histogram(task);
                if let Some(last_end) = histogram.last_end_us {
                    let idle_minutes = at_us.saturating_sub(last_end) / MINUTE_US;
                    histogram.n += 1;
                    if idle_minutes >= range {
                        histogram.out_of_bounds += 1;
                    } else {
                        if histogram.minutes.len() <= idle_minutes as usize {
                            histogram.minutes.resize(idle_minutes as usize + 1, 0);
                        }
                        histogram.minutes[idle_minutes as usize] += 1;
                    }
                }
            }
            PolicyEvent::End { task, at_us, .. } => {
                let (min_samples, max_oob, fallback, scale) = (
                    self.min_samples,
                    self.max_out_of_bounds,
                    self.fallback_keep_us,
                    self.tail_scale,
                );
                let histogram = self.histogram(task);
                histogram.last_end_us = Some(at_us);
                let in_range = histogram.n - histogram.out_of_bounds;
                let representative = histogram.n >= min_samples
                    && f64::from(histogram.out_of_bounds) <= max_oob * f64::from(histogram.n)
                    && in_range > 0;
                if !representative {
                    out.push(Action::KeepAlive {
                        task,
                        until_us: at_us + (fallback as f64 * scale) as u64,
                    });
                    return;
                }
                // Percentiles over the in-range samples, with the paper's 10 % margins.
                let saved_n = histogram.n;
                histogram.n = in_range;
                let head_minutes = histogram.percentile_minutes(0.05);
                let tail_minutes = histogram.percentile_minutes(0.99) + 1;
                histogram.n = saved_n;
                let head_us = (head_minutes * MINUTE_US) as f64 * 0.9;
                let tail_us = (tail_minutes * MINUTE_US) as f64 * 1.1 * scale;
                if head_us >= MINUTE_US as f64 {
                    out.push(Action::PreWarm {
                        task,
                        at_us: at_us + head_us as u64,
                        until_us: at_us + tail_us.max(head_us + 1.0) as u64,
                        plan: None,
                        reservation: None,
                        probability: 1.0,
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

    fn start(task: u32, at_us: u64) -> PolicyEvent {
        PolicyEvent::Start {
            task: TaskId(task),
            invocation: 0,
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

    #[test]
    fn histogram_prewarms_at_the_fifth_percentile_once_representative() {
        let mut policy = HistogramPolicy::new(10 * MINUTE_US, 1.0);
        let mut out = Vec::new();
        let mut t = 0;
        // Idle times of exactly 30 minutes, many times.
        for i in 0..20 {
            policy.on_event(&start(0, t), &FixedCold(50_000), &mut out);
            t += MINUTE_US;
            out.clear();
            policy.on_event(&end(0, i, t), &FixedCold(50_000), &mut out);
            t += 30 * MINUTE_US;
        }
        match out[0] {
            Action::PreWarm {
                at_us, until_us, ..
            } => {
                let end = t - 30 * MINUTE_US;
                assert_eq!(at_us, end + 27 * MINUTE_US, "30 min bin × 0.9");
                assert_eq!(until_us, end + (31.0 * 1.1 * MINUTE_US as f64) as u64);
            }
            other => panic!("expected a pre-warm, got {other:?}"),
        }
        // A fresh task is not representative: fixed keep-alive.
        out.clear();
        policy.on_event(&end(5, 0, 0), &FixedCold(50_000), &mut out);
        assert_eq!(
            out,
            [Action::KeepAlive {
                task: TaskId(5),
                until_us: 10 * MINUTE_US
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
}
