//! The n most likely chains from a task: exact k-best search over the frozen graph.
//!
//! A chain's probability is the product of its transition probabilities times the stop
//! probability of its last task (or, when it reaches the depth limit, the product alone:
//! it is then truncated, not ended). Every extension multiplies by a probability ≤ 1, so a
//! best-first search that pops items by probability emits complete chains in order; the
//! first n popped are the n best. Ties are broken by the task sequence, so the order is
//! deterministic. A task may repeat in a chain at most `max_repeats` times.

use crate::context::{CallContext, Prev};
use crate::ids::{LabelId, TaskId};
use crate::snapshot::{ContextUsed, TdgSnapshot};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Knobs of a prediction. Defaults: 5 chains, depth 5, floor 1e-4, 2 repeats, contexts on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictOptions {
    /// How many chains.
    pub n: usize,
    /// Most steps after the starting task.
    pub max_depth: usize,
    /// Chains (and prefixes) below this probability are dropped.
    pub min_probability: f64,
    /// How often one task may appear in a chain, the start included.
    pub max_repeats: usize,
    /// Whether to condition on contexts (else first order only).
    pub use_context: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            n: 5,
            max_depth: 5,
            min_probability: 1e-4,
            max_repeats: 2,
            use_context: true,
        }
    }
}

impl PredictOptions {
    pub(crate) fn cache_bits(&self) -> [u64; 5] {
        [
            self.n as u64,
            self.max_depth as u64,
            self.min_probability.to_bits(),
            self.max_repeats as u64,
            u64::from(self.use_context),
        ]
    }
}

/// What is known about the running task's situation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PredictContext {
    /// The request's route, once known.
    pub route: Option<LabelId>,
    /// The running task's previous call (for the first step).
    pub prev: Prev,
    /// The task that called the running task.
    pub grand_caller: Option<TaskId>,
    /// The running invocation's operation, when known.
    pub operation: Option<LabelId>,
}

impl Default for PredictContext {
    fn default() -> Self {
        PredictContext {
            route: None,
            prev: Prev::Unknown,
            grand_caller: None,
            operation: None,
        }
    }
}

/// One predicted chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    /// The tasks, the starting task first.
    pub tasks: Vec<TaskId>,
    /// Probability of exactly this chain (ended) or of this prefix (truncated).
    pub probability: f64,
    /// True when the chain ends by the stop probability, false when cut at the depth limit.
    pub ended: bool,
    /// The distribution each step used, one per step after the start.
    pub contexts: Vec<ContextUsed>,
    /// The transition probability of each step (in that distribution).
    pub step_probabilities: Vec<f64>,
}

impl Chain {
    /// The tasks after the start: what is to be pre-warmed.
    pub fn steps(&self) -> &[TaskId] {
        &self.tasks[1..]
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    task: TaskId,
    parent: u32,
    depth: u16,
    context: ContextUsed,
    probability: f64,
}

const NO_PARENT: u32 = u32::MAX;

#[derive(Debug)]
struct Item {
    probability: f64,
    node: u32,
    complete: Option<bool>,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        self.probability
            .total_cmp(&other.probability)
            .then(other.node.cmp(&self.node))
            .then(self.complete.cmp(&other.complete))
    }
}

fn step_context(nodes: &[Node], node: &Node, start: &PredictContext) -> CallContext {
    if node.parent == NO_PARENT {
        CallContext {
            caller: node.task,
            prev: start.prev,
            route: start.route,
            grand_caller: start.grand_caller,
            caller_operation: start.operation,
        }
    } else {
        CallContext {
            caller: node.task,
            prev: Prev::Unknown,
            route: start.route,
            grand_caller: Some(nodes[node.parent as usize].task),
            caller_operation: None,
        }
    }
}

fn chain_of(nodes: &[Node], node: u32, probability: f64, ended: bool) -> Chain {
    let mut tasks = Vec::new();
    let mut contexts = Vec::new();
    let mut step_probabilities = Vec::new();
    let mut cursor = node;
    while cursor != NO_PARENT {
        let n = &nodes[cursor as usize];
        tasks.push(n.task);
        if n.parent != NO_PARENT {
            contexts.push(n.context);
            step_probabilities.push(n.probability);
        }
        cursor = n.parent;
    }
    tasks.reverse();
    contexts.reverse();
    step_probabilities.reverse();
    Chain {
        tasks,
        probability,
        ended,
        contexts,
        step_probabilities,
    }
}

fn repeats(nodes: &[Node], mut node: u32, task: TaskId) -> usize {
    let mut count = 0;
    while node != NO_PARENT {
        let n = &nodes[node as usize];
        count += usize::from(n.task == task);
        node = n.parent;
    }
    count
}

/// Sorts chains best first: probability, then ended before truncated, then task sequence.
pub fn sort_chains(chains: &mut [Chain]) {
    chains.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(b.ended.cmp(&a.ended))
            .then(a.tasks.cmp(&b.tasks))
    });
}

impl TdgSnapshot {
    /// The `options.n` most likely chains from `from`. See the module docs.
    pub fn predict(
        &self,
        from: TaskId,
        context: &PredictContext,
        options: &PredictOptions,
    ) -> Vec<Chain> {
        if options.n == 0 {
            return Vec::new();
        }
        let mut nodes = vec![Node {
            task: from,
            parent: NO_PARENT,
            depth: 0,
            context: ContextUsed::FirstOrder,
            probability: 1.0,
        }];
        if options.max_depth == 0 {
            return vec![chain_of(&nodes, 0, 1.0, false)];
        }
        let floor = options.min_probability.max(0.0);
        let mut heap = BinaryHeap::new();
        heap.push(Item {
            probability: 1.0,
            node: 0,
            complete: None,
        });
        let mut found: Vec<Chain> = Vec::new();
        while let Some(item) = heap.pop() {
            if found.len() >= options.n && item.probability < found[options.n - 1].probability {
                break;
            }
            if let Some(ended) = item.complete {
                found.push(chain_of(&nodes, item.node, item.probability, ended));
                continue;
            }
            let node = nodes[item.node as usize];
            let call = step_context(&nodes, &node, context);
            let (dist, used) = self.step_dist(&call, options.use_context);
            let stop = item.probability * dist.stop_probability;
            if stop > 0.0 && stop >= floor {
                heap.push(Item {
                    probability: stop,
                    node: item.node,
                    complete: Some(true),
                });
            }
            for target in &dist.targets {
                let probability = item.probability * target.probability;
                if probability <= 0.0 || probability < floor {
                    // Targets are sorted by probability: the rest are below the floor too.
                    break;
                }
                if repeats(&nodes, item.node, target.task) >= options.max_repeats {
                    continue;
                }
                let depth = node.depth + 1;
                let index = u32::try_from(nodes.len()).expect("search stays below 2^32 nodes");
                nodes.push(Node {
                    task: target.task,
                    parent: item.node,
                    depth,
                    context: used,
                    probability: target.probability,
                });
                heap.push(Item {
                    probability,
                    node: index,
                    complete: (usize::from(depth) >= options.max_depth).then_some(false),
                });
            }
        }
        sort_chains(&mut found);
        found.truncate(options.n);
        found
    }

    /// The most likely next tasks of `from` in `context`, best first, the chain end left out.
    pub fn next_tasks(
        &self,
        from: TaskId,
        context: &PredictContext,
        use_context: bool,
    ) -> (Vec<(TaskId, f64)>, ContextUsed) {
        let call = CallContext {
            caller: from,
            prev: context.prev,
            route: context.route,
            grand_caller: context.grand_caller,
            caller_operation: context.operation,
        };
        let (dist, used) = self.step_dist(&call, use_context);
        (
            dist.targets
                .iter()
                .map(|t| (t.task, t.probability))
                .collect(),
            used,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdg::{Tdg, TdgConfig};
    use proptest::prelude::*;

    /// A snapshot from first-order edge counts: `edges[i]` = (callee or None for stop, count).
    fn snapshot_of(n_tasks: usize, edges: &[(usize, Option<usize>, u32)]) -> TdgSnapshot {
        let mut tdg = Tdg::new(TdgConfig {
            half_life_us: None,
            contexts: Vec::new(),
            ..TdgConfig::default()
        });
        let ids: Vec<TaskId> = (0..n_tasks)
            .map(|i| tdg.intern_task(&format!("t{i}")))
            .collect();
        for &(from, to, count) in edges {
            for _ in 0..count {
                tdg.observe_call(
                    &CallContext::first_order(ids[from]),
                    to.map(|t| ids[t]),
                    10,
                    1,
                );
            }
        }
        tdg.snapshot()
    }

    fn brute_force(snapshot: &TdgSnapshot, from: TaskId, options: &PredictOptions) -> Vec<Chain> {
        fn walk(
            snapshot: &TdgSnapshot,
            path: &mut Vec<TaskId>,
            steps: &mut Vec<f64>,
            probability: f64,
            options: &PredictOptions,
            out: &mut Vec<Chain>,
        ) {
            let chain = |path: &Vec<TaskId>, steps: &Vec<f64>, probability, ended| Chain {
                tasks: path.clone(),
                probability,
                ended,
                contexts: vec![ContextUsed::FirstOrder; path.len() - 1],
                step_probabilities: steps.clone(),
            };
            if path.len() - 1 == options.max_depth {
                if probability > 0.0 && probability >= options.min_probability {
                    out.push(chain(path, steps, probability, false));
                }
                return;
            }
            let dist = snapshot.first_order(*path.last().unwrap());
            let end = probability * dist.stop_probability;
            if end > 0.0 && end >= options.min_probability {
                out.push(chain(path, steps, end, true));
            }
            for target in &dist.targets {
                let p = probability * target.probability;
                let seen = path.iter().filter(|t| **t == target.task).count();
                if p > 0.0 && p >= options.min_probability && seen < options.max_repeats {
                    path.push(target.task);
                    steps.push(target.probability);
                    walk(snapshot, path, steps, p, options, out);
                    path.pop();
                    steps.pop();
                }
            }
        }
        let mut out = Vec::new();
        walk(
            snapshot,
            &mut vec![from],
            &mut Vec::new(),
            1.0,
            options,
            &mut out,
        );
        sort_chains(&mut out);
        out.truncate(options.n);
        out
    }

    #[test]
    fn chains_end_by_the_learned_stop_probability() {
        // a -> b (3), a -> c (1); b stops; c -> a (1), c stops (1).
        let snapshot = snapshot_of(
            3,
            &[
                (0, Some(1), 3),
                (0, Some(2), 1),
                (1, None, 1),
                (2, Some(0), 1),
                (2, None, 1),
            ],
        );
        let options = PredictOptions {
            use_context: false,
            ..PredictOptions::default()
        };
        let chains = snapshot.predict(TaskId(0), &PredictContext::default(), &options);
        let names: Vec<Vec<u32>> = chains
            .iter()
            .map(|c| c.tasks.iter().map(|t| t.0).collect())
            .collect();
        assert_eq!(names[0], [0, 1]);
        assert!((chains[0].probability - 0.75).abs() < 1e-12);
        assert_eq!(names[1], [0, 2]);
        assert!((chains[1].probability - 0.125).abs() < 1e-12);
        // The loop a -> c -> a is allowed once more (max_repeats 2), not forever.
        assert!(names.iter().any(|n| n.starts_with(&[0, 2, 0, 1])));
        assert!(names
            .iter()
            .all(|n| n.iter().filter(|&&t| t == 0).count() <= 2));
    }

    #[test]
    fn unknown_task_predicts_only_the_end() {
        let snapshot = snapshot_of(1, &[]);
        let chains = snapshot.predict(
            TaskId(7),
            &PredictContext::default(),
            &PredictOptions::default(),
        );
        assert_eq!(chains.len(), 1);
        assert!(chains[0].steps().is_empty() && chains[0].ended);
    }

    proptest! {
        #[test]
        fn k_best_equals_brute_force(
            n_tasks in 2usize..6,
            raw_edges in proptest::collection::vec((0usize..6, proptest::option::of(0usize..6), 1u32..4), 0..20),
            n in 1usize..8,
            max_depth in 0usize..5,
            max_repeats in 1usize..3,
            floor_exp in 0u32..4,
        ) {
            let edges: Vec<_> = raw_edges
                .into_iter()
                .map(|(a, b, c)| (a % n_tasks, b.map(|b| b % n_tasks), c))
                .collect();
            let snapshot = snapshot_of(n_tasks, &edges);
            let options = PredictOptions {
                n,
                max_depth,
                min_probability: if floor_exp == 0 { 0.0 } else { 10f64.powi(-(floor_exp as i32)) },
                max_repeats,
                use_context: false,
            };
            for from in 0..n_tasks as u32 {
                let fast = snapshot.predict(TaskId(from), &PredictContext::default(), &options);
                let slow = brute_force(&snapshot, TaskId(from), &options);
                prop_assert_eq!(fast, slow);
            }
        }
    }
}
