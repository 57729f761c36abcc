//! Prediction quality, measured the way the evaluation protocol asks: learn on one window,
//! score on a later one. Pure: the caller learns the snapshot and hands both windows in.
//!
//! Two questions are scored. Next callee: for every call in the test window, is the callee
//! the top-1 (top-3) prediction from its caller? At request entry: which downstream tasks
//! does a predictor announce when the request arrives (route known), and what fraction of
//! the tasks the request really runs it covers (recall) and of its announced tasks really
//! run (precision), averaged over requests.

use crate::context::Prev;
use crate::ids::{LabelId, TaskId};
use crate::predict::{PredictContext, PredictOptions};
use crate::request::Request;
use crate::snapshot::{ContextUsed, TdgSnapshot};
use crate::tdg::Tdg;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// One predictor's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// Predictor name.
    pub name: String,
    /// Next-callee top-1 accuracy (`None`: the predictor does not predict callees).
    pub top1: Option<f64>,
    /// Next-callee top-3 accuracy.
    pub top3: Option<f64>,
    /// Top-1 over the calls below the route, i.e. all but each entry's first call (the
    /// call that defines the route, which no context can know beforehand).
    pub top1_below_route: Option<f64>,
    /// Top-3 over the same calls.
    pub top3_below_route: Option<f64>,
    /// Mean recall of the set announced at entry.
    pub recall: f64,
    /// Mean precision of the set announced at entry (requests with an empty announcement
    /// are left out of the mean).
    pub precision: f64,
    /// F1 of the two means.
    pub f1: f64,
    /// Mean size of the announced set.
    pub mean_set_size: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// One row per predictor.
    pub rows: Vec<EvalRow>,
    /// Calls scored for next callee.
    pub n_calls: u64,
    /// Requests scored at entry.
    pub n_requests: u64,
    /// Probability threshold of the `tree-global` predictor (chosen for F1 on the training
    /// window).
    pub tree_threshold: f64,
    /// How often the `chain` predictor's next-callee step used each distribution.
    pub context_use: Vec<(String, u64)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SetScore {
    recall_sum: f64,
    n_recall: u64,
    precision_sum: f64,
    n_precision: u64,
    size_sum: f64,
    n: u64,
}

impl SetScore {
    fn add(&mut self, predicted: &[TaskId], actual: &[(TaskId, u64)]) {
        let hits = predicted
            .iter()
            .filter(|t| actual.iter().any(|(a, _)| a == *t))
            .count() as f64;
        if !actual.is_empty() {
            self.recall_sum += hits / actual.len() as f64;
            self.n_recall += 1;
        }
        if !predicted.is_empty() {
            self.precision_sum += hits / predicted.len() as f64;
            self.n_precision += 1;
        }
        self.size_sum += predicted.len() as f64;
        self.n += 1;
    }

    fn recall(&self) -> f64 {
        self.recall_sum / self.n_recall.max(1) as f64
    }

    fn precision(&self) -> f64 {
        self.precision_sum / self.n_precision.max(1) as f64
    }

    fn f1(&self) -> f64 {
        let (r, p) = (self.recall(), self.precision());
        if r + p > 0.0 {
            2.0 * r * p / (r + p)
        } else {
            0.0
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct TopK {
    n: u64,
    top1: u64,
    top3: u64,
}

impl TopK {
    fn add(&mut self, ranked: impl Iterator<Item = TaskId>, actual: TaskId) {
        self.n += 1;
        for (rank, task) in ranked.take(3).enumerate() {
            if task == actual {
                self.top1 += u64::from(rank == 0);
                self.top3 += 1;
                break;
            }
        }
    }

    fn rates(&self) -> (f64, f64) {
        let n = self.n.max(1) as f64;
        (self.top1 as f64 / n, self.top3 as f64 / n)
    }
}

fn entry_of(request: &Request) -> Option<(TaskId, Option<LabelId>)> {
    let entry = request.entry()?;
    Some((request.invocations()[entry as usize].task, request.route()))
}

fn tree_set(snapshot: &TdgSnapshot, route: Option<LabelId>, threshold: f64) -> Vec<TaskId> {
    snapshot
        .entry_set(route)
        .0
        .tasks
        .iter()
        .filter(|t| t.probability >= threshold)
        .map(|t| t.task)
        .collect()
}

/// The entry-set threshold that maximises F1 over `requests` (steps of 0.02).
pub fn best_tree_threshold(snapshot: &TdgSnapshot, requests: &[Request]) -> f64 {
    let mut best = (f64::MIN, 0.5);
    for step in 1..50 {
        let threshold = f64::from(step) * 0.02;
        let mut score = SetScore::default();
        for request in requests {
            if let Some((_, route)) = entry_of(request) {
                score.add(
                    &tree_set(snapshot, route, threshold),
                    &request.downstream_tasks(),
                );
            }
        }
        if score.f1() > best.0 {
            best = (score.f1(), threshold);
        }
    }
    best.1
}

fn union_of_steps(chains: &[crate::predict::Chain]) -> Vec<TaskId> {
    let mut set: Vec<TaskId> = chains
        .iter()
        .flat_map(|c| c.steps().iter().copied())
        .collect();
    set.sort();
    set.dedup();
    set
}

/// An upper bound for any predictor that knows only the route: per route, the best fixed
/// set chosen on the test requests themselves (it peeks; it is a bound, not a predictor).
fn route_bound(test: &[Request]) -> SetScore {
    let mut by_route: FxHashMap<Option<LabelId>, Vec<Vec<TaskId>>> = FxHashMap::default();
    for request in test {
        if request.entry().is_some() {
            let actual = request.downstream_tasks().iter().map(|&(t, _)| t).collect();
            by_route.entry(request.route()).or_default().push(actual);
        }
    }
    let mut score = SetScore::default();
    for actuals in by_route.values() {
        let mut weighted: Vec<(Vec<TaskId>, f64)> = Vec::new();
        let mut counts: FxHashMap<TaskId, u64> = FxHashMap::default();
        for actual in actuals {
            for task in actual {
                *counts.entry(*task).or_default() += 1;
            }
            match weighted.iter_mut().find(|(set, _)| set == actual) {
                Some(slot) => slot.1 += 1.0,
                None => weighted.push((actual.clone(), 1.0)),
            }
        }
        let mut ranked: Vec<(TaskId, u64)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let ranked: Vec<TaskId> = ranked.into_iter().map(|(t, _)| t).collect();
        let (best, _, _) = crate::tdg::best_f1_set(&weighted, &ranked);
        for actual in actuals {
            let actual: Vec<(TaskId, u64)> = actual.iter().map(|&t| (t, 0)).collect();
            score.add(&best, &actual);
        }
    }
    score
}

/// How the learner behaves during the test window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvalMode {
    /// Frozen after the training window.
    Offline,
    /// Keeps learning, as baton does live: a test request is learned once it has ended,
    /// i.e. before any request that starts after its end is scored (never before its own).
    Online,
}

/// Learns `train` into `tdg`, then scores `chain`, `chain-1`, `tree`, `tree-global`, `next`
/// and `frequency` on `test` (the training window also sets the `tree-global` threshold and
/// the frequency ranking). Requests must be sorted by start.
pub fn evaluate(
    tdg: &mut Tdg,
    train: &[Request],
    test: &[Request],
    options: &PredictOptions,
    mode: EvalMode,
) -> EvalReport {
    for request in train {
        tdg.observe_request(request);
    }
    let mut snapshot = tdg.snapshot();
    // Global callee frequency and mean set size on the training window.
    let mut callee_counts: FxHashMap<TaskId, u64> = FxHashMap::default();
    let mut set_sizes = 0usize;
    for request in train {
        request.for_each_call(|event| {
            if let Some(callee) = event.callee {
                *callee_counts.entry(callee).or_default() += 1;
            }
        });
        set_sizes += request.downstream_tasks().len();
    }
    let mut by_frequency: Vec<(TaskId, u64)> = callee_counts.into_iter().collect();
    by_frequency.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let frequent: Vec<TaskId> = by_frequency.iter().map(|&(t, _)| t).collect();
    let mean_set = (set_sizes as f64 / train.len().max(1) as f64).round() as usize;
    let frequent_set: Vec<TaskId> = frequent.iter().copied().take(mean_set.max(1)).collect();
    let tree_threshold = best_tree_threshold(&snapshot, train);
    // Test requests waiting to end before the online learner may see them: (end, index).
    let mut pending: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>> =
        std::collections::BinaryHeap::new();

    let first_order = PredictOptions {
        use_context: false,
        ..*options
    };
    let with_context = PredictOptions {
        use_context: true,
        ..*options
    };
    // Per predictor: [all calls, calls below the route].
    let (mut chain_calls, mut chain1_calls, mut next_calls, mut frequency_calls) = (
        [TopK::default(); 2],
        [TopK::default(); 2],
        [TopK::default(); 2],
        [TopK::default(); 2],
    );
    let mut context_use: FxHashMap<ContextUsed, u64> = FxHashMap::default();
    let mut sets = [SetScore::default(); 6];
    for (index, request) in test.iter().enumerate() {
        if mode == EvalMode::Online {
            let start = request.start_us().unwrap_or(0);
            let mut learned = false;
            while let Some(&std::cmp::Reverse((end, done))) = pending.peek() {
                if end > start {
                    break;
                }
                pending.pop();
                tdg.observe_request(&test[done]);
                learned = true;
            }
            if learned {
                snapshot = tdg.snapshot();
            }
            pending.push(std::cmp::Reverse((request.end_us().unwrap_or(0), index)));
        }
        let snapshot = &snapshot;
        let entry = request.entry();
        request.for_each_call(|event| {
            let Some(callee) = event.callee else {
                return;
            };
            let mut route = event.context.route;
            let defines_route =
                Some(event.caller_index) == entry && event.context.prev == Prev::Start;
            if defines_route {
                // The entry's first call defines the route: it is not known before it.
                route = None;
            }
            let scopes: &[usize] = if defines_route { &[0] } else { &[0, 1] };
            let context = PredictContext {
                route,
                prev: event.context.prev,
                grand_caller: event.context.grand_caller,
                operation: event.context.caller_operation,
            };
            let caller = event.context.caller;
            let (ranked, used) = snapshot.next_tasks(caller, &context, true);
            *context_use.entry(used).or_default() += 1;
            let (ranked_first_order, _) = snapshot.next_tasks(caller, &context, false);
            for &scope in scopes {
                chain_calls[scope].add(ranked.iter().map(|r| r.0), callee);
                chain1_calls[scope].add(ranked_first_order.iter().map(|r| r.0), callee);
                next_calls[scope].add(ranked_first_order.iter().take(1).map(|r| r.0), callee);
                frequency_calls[scope].add(frequent.iter().copied(), callee);
            }
        });
        let Some((entry_task, route)) = entry_of(request) else {
            continue;
        };
        let actual = request.downstream_tasks();
        let chain = snapshot.predict(
            entry_task,
            &PredictContext {
                route,
                prev: Prev::Start,
                grand_caller: None,
                operation: None,
            },
            &with_context,
        );
        sets[0].add(&union_of_steps(&chain), &actual);
        let chain1 = snapshot.predict(entry_task, &PredictContext::default(), &first_order);
        sets[1].add(&union_of_steps(&chain1), &actual);
        sets[2].add(&snapshot.entry_set(route).0.best_set, &actual);
        sets[5].add(&tree_set(snapshot, route, tree_threshold), &actual);
        let next: Vec<TaskId> = snapshot
            .first_order(entry_task)
            .targets
            .first()
            .map(|t| t.task)
            .into_iter()
            .collect();
        sets[3].add(&next, &actual);
        sets[4].add(&frequent_set, &actual);
    }
    let row = |name: &str, calls: Option<[TopK; 2]>, set: &SetScore| {
        let rates = |scope: usize| {
            calls.map_or((None, None), |c| {
                let (a, b) = c[scope].rates();
                (Some(a), Some(b))
            })
        };
        let ((top1, top3), (top1_below_route, top3_below_route)) = (rates(0), rates(1));
        EvalRow {
            name: name.to_owned(),
            top1,
            top3,
            top1_below_route,
            top3_below_route,
            recall: set.recall(),
            precision: set.precision(),
            f1: set.f1(),
            mean_set_size: set.size_sum / set.n.max(1) as f64,
        }
    };
    let snapshot = &snapshot;
    let bound = route_bound(test);
    let mut context_use: Vec<(String, u64)> = context_use
        .into_iter()
        .map(|(used, n)| (snapshot.context_name(used).to_owned(), n))
        .collect();
    context_use.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    EvalReport {
        rows: vec![
            row("chain", Some(chain_calls), &sets[0]),
            row("chain-1", Some(chain1_calls), &sets[1]),
            row("tree", None, &sets[2]),
            row("tree-global", None, &sets[5]),
            row("route-bound", None, &bound),
            row("next", Some(next_calls), &sets[3]),
            row("frequency", Some(frequency_calls), &sets[4]),
        ],
        n_calls: chain_calls[0].n,
        n_requests: sets[0].n,
        tree_threshold,
        context_use,
    }
}
