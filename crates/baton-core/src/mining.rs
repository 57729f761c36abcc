//! Callers mined from timing, for logs that name none (Azure Functions, a collector that
//! drops parent ids): time-windowed co-occurrence within an application, as Defuse (Shen et
//! al., ICDCS 2021) mines function dependencies. A call of `b` that starts within the
//! window after a call of `a` of the same group (and, for logs with exact run times, inside
//! `a`'s run) counts for the pair; a pair is a dependency when it was seen often enough
//! (`min_support`), follows most calls of `a` (`min_confidence`), and far more often than
//! `b`'s own rate would place a call there by chance (`min_lift`). The [`Miner`] counts
//! online, as requests stream in, and re-forms caller-less calls into call trees: each
//! takes, among the calls before it that a mined dependency links to it, the latest to
//! start (the innermost, for nested runs). Requests that name their callers pass unchanged.

use crate::request::{Invocation, Request};
use crate::TaskId;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What counts as a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MinerConfig {
    /// A callee starts at most this long after its caller starts, µs.
    pub window_us: u64,
    /// A callee runs inside its caller's run (logs with exact run times: spans).
    pub nested: bool,
    /// Calls of the caller followed by the callee, at least.
    pub min_support: u64,
    /// Of the caller's calls, the share followed by the callee, at least.
    pub min_confidence: f64,
    /// That share ÷ the chance of the callee's own rate placing a call there, at least.
    pub min_lift: f64,
    /// Largest request a mined link may grow (calls).
    pub max_request: usize,
    /// How far a nested callee may end past its caller, µs (timestamps rounded to
    /// milliseconds, as Alibaba's, put some a little past).
    pub slack_us: u64,
}

impl MinerConfig {
    /// Defaults for a window of `window_us`.
    pub fn new(window_us: u64, nested: bool) -> MinerConfig {
        MinerConfig {
            window_us: window_us.max(1),
            nested,
            min_support: 1,
            // A caller may call a callee on some of its routes only: a low share still
            // counts when chance cannot explain it (the lift).
            min_confidence: 0.01,
            min_lift: 3.0,
            max_request: 512,
            slack_us: 1_000,
        }
    }
}

/// How a pair was seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EdgeStats {
    /// Calls of the caller the callee followed.
    pub support: u64,
    /// `support` ÷ the caller's calls.
    pub confidence: f64,
    /// `confidence` ÷ the chance of a callee call there by its own rate.
    pub lift: f64,
}

/// A recent caller-less call of a group: a possible caller of what starts after it.
#[derive(Debug, Clone)]
struct Recent {
    task: TaskId,
    start_us: u64,
    end_us: u64,
    /// Callee tasks already counted for it (each once).
    counted: Vec<TaskId>,
    /// Its tree, and its index in it.
    tree: u64,
    index: u32,
}

/// Per-task totals.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    calls: u64,
    run_us: u64,
}

/// Online dependency mining and caller assignment (see the module docs).
#[derive(Debug, Clone)]
pub struct Miner {
    config: MinerConfig,
    group_of: FxHashMap<TaskId, u32>,
    totals: FxHashMap<TaskId, Totals>,
    pairs: FxHashMap<(TaskId, TaskId), u64>,
    recent: FxHashMap<u32, VecDeque<Recent>>,
    first_us: Option<u64>,
    last_us: u64,
    /// Trees of caller-less calls still open to new calls, by id.
    open: std::collections::BTreeMap<u64, OpenTree>,
    next_tree: u64,
}

/// A tree of linked calls, open while a later call may still join it.
#[derive(Debug, Clone, Default)]
struct OpenTree {
    /// Its calls in start order, parents as indices among them.
    calls: Vec<Invocation>,
    last_start_us: u64,
}

impl Miner {
    /// A miner with nothing seen.
    pub fn new(config: MinerConfig) -> Miner {
        Miner {
            config,
            group_of: FxHashMap::default(),
            totals: FxHashMap::default(),
            pairs: FxHashMap::default(),
            recent: FxHashMap::default(),
            first_us: None,
            last_us: 0,
            open: std::collections::BTreeMap::new(),
            next_tree: 0,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    /// Puts `task` in `group` (an application); tasks not put anywhere share group 0.
    pub fn set_group(&mut self, task: TaskId, group: u32) {
        self.group_of.insert(task, group);
    }

    fn group(&self, task: TaskId) -> u32 {
        self.group_of.get(&task).copied().unwrap_or(0)
    }

    /// Whether `a` (started `a_start`, ending `a_end`) may have called a call of
    /// `b_start..b_end`.
    fn may_call(&self, a_start: u64, a_end: u64, b_start: u64, b_end: u64) -> bool {
        a_start <= b_start
            && b_start - a_start <= self.config.window_us
            && (!self.config.nested || b_end <= a_end + self.config.slack_us)
    }

    /// Counts one call of `task` in the totals; returns its start, taken as now if it
    /// came before the latest seen (calls come in start order).
    fn count_call(&mut self, task: TaskId, start_us: u64, run_us: u64) -> u64 {
        let start_us = start_us.max(self.last_us);
        self.first_us.get_or_insert(start_us);
        self.last_us = start_us;
        let totals = self.totals.entry(task).or_default();
        totals.calls += 1;
        totals.run_us += run_us;
        start_us
    }

    /// How `from` → `to` was seen, if at all.
    pub fn stats(&self, from: TaskId, to: TaskId) -> Option<EdgeStats> {
        let support = *self.pairs.get(&(from, to))?;
        let caller = self.totals.get(&from)?;
        let callee = self.totals.get(&to)?;
        let confidence = support as f64 / caller.calls.max(1) as f64;
        let span_us = self
            .last_us
            .saturating_sub(self.first_us.unwrap_or(0))
            .max(1) as f64;
        // Where a call of `to` would count: the window, or (nested) the caller's mean run.
        let reach_us = if self.config.nested {
            (caller.run_us as f64 / caller.calls.max(1) as f64).min(self.config.window_us as f64)
        } else {
            self.config.window_us as f64
        };
        let chance = 1.0 - (-(callee.calls as f64 / span_us) * reach_us).exp();
        Some(EdgeStats {
            support,
            confidence,
            lift: confidence / chance.max(1e-12),
        })
    }

    /// Whether `from` → `to` is a dependency by the settings.
    pub fn is_edge(&self, from: TaskId, to: TaskId) -> bool {
        self.stats(from, to).is_some_and(|s| {
            s.support >= self.config.min_support
                && s.confidence >= self.config.min_confidence
                && s.lift >= self.config.min_lift
        })
    }

    /// Every dependency mined so far, sorted.
    pub fn edges(&self) -> Vec<(TaskId, TaskId, EdgeStats)> {
        let mut out: Vec<(TaskId, TaskId, EdgeStats)> = self
            .pairs
            .keys()
            .filter(|&&(a, b)| self.is_edge(a, b))
            .filter_map(|&(a, b)| Some((a, b, self.stats(a, b)?)))
            .collect();
        out.sort_by_key(|&(a, b, _)| (a, b));
        out
    }

    /// Counts the caller-less calls of `requests` (single-call requests) and re-forms them
    /// into call trees by the dependencies mined so far; requests that name callers pass
    /// unchanged. [`Miner::push`] then [`Miner::flush`]; the result is sorted by start.
    pub fn regroup(&mut self, requests: Vec<Request>) -> Vec<Request> {
        let mut out = self.push(requests);
        out.extend(self.flush());
        out.sort_by_key(|r| r.start_us());
        out
    }

    /// Streams requests in: those naming callers come back at once; each caller-less call
    /// (a single-call request) is counted, then linked to the latest call before it, within
    /// the window, that a dependency mined so far says may have called it, and held until
    /// no later call can join its tree (its calls all started a window before the latest
    /// call seen). Calls come in start order (a late one is taken as coming now).
    pub fn push(&mut self, requests: Vec<Request>) -> Vec<Request> {
        let (mut lone, mut out): (Vec<Request>, Vec<Request>) = requests
            .into_iter()
            .partition(|r| r.invocations().len() == 1 && r.invocations()[0].parent.is_none());
        lone.sort_by_key(|r| r.start_us());
        for request in lone {
            self.take(request.invocations()[0]);
        }
        out.extend(self.release(false));
        out
    }

    /// Every tree still held, as requests (at the end of a log).
    pub fn flush(&mut self) -> Vec<Request> {
        self.release(true)
    }

    /// Calls held for linking.
    pub fn held(&self) -> usize {
        self.open.values().map(|t| t.calls.len()).sum()
    }

    /// Counts a caller-less `call` against the recent calls of its group, then links it
    /// into the tree of its mined caller among them, or starts a tree.
    fn take(&mut self, call: Invocation) {
        let start = self.count_call(call.task, call.start_us, call.usage.wall_us);
        let end = start + call.usage.wall_us;
        let group = self.group(call.task);
        let window = self.config.window_us;
        let mut recent = std::mem::take(self.recent.entry(group).or_default());
        while recent.front().is_some_and(|r| r.start_us + window < start) {
            recent.pop_front();
        }
        for caller in recent.iter_mut() {
            if caller.task != call.task
                && self.may_call(caller.start_us, caller.end_us, start, end)
                && !caller.counted.contains(&call.task)
            {
                caller.counted.push(call.task);
                *self.pairs.entry((caller.task, call.task)).or_default() += 1;
            }
        }
        let caller = recent.iter().rev().find(|c| {
            c.task != call.task
                && self.may_call(c.start_us, c.end_us, start, end)
                && self
                    .open
                    .get(&c.tree)
                    .is_some_and(|t| t.calls.len() < self.config.max_request)
                && self.is_edge(c.task, call.task)
        });
        let (tree, parent) = match caller {
            Some(c) => (c.tree, Some(c.index)),
            None => {
                self.next_tree += 1;
                (self.next_tree, None)
            }
        };
        let open = self.open.entry(tree).or_default();
        let index = open.calls.len() as u32;
        open.calls.push(Invocation { parent, ..call });
        open.last_start_us = open.last_start_us.max(start);
        recent.push_back(Recent {
            task: call.task,
            start_us: start,
            end_us: end,
            counted: Vec::new(),
            tree,
            index,
        });
        self.recent.insert(group, recent);
    }

    /// The trees no later call can join (all, when `everything`), as requests.
    fn release(&mut self, everything: bool) -> Vec<Request> {
        let horizon = self.last_us.saturating_sub(self.config.window_us);
        let closed: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, t)| everything || t.last_start_us < horizon)
            .map(|(&id, _)| id)
            .collect();
        closed
            .into_iter()
            .filter_map(|id| self.open.remove(&id))
            .map(|tree| Request::build(tree.calls).0)
            .collect()
    }

    /// Links the calls of each request that names none of its callers (two or more calls,
    /// every one a root: a log keeping trace ids but no parent ids) by the dependencies
    /// mined so far, its own calls counted first; each call's caller is sought among the
    /// request's calls only. Other requests pass unchanged.
    pub fn relink(&mut self, requests: Vec<Request>) -> Vec<Request> {
        requests
            .into_iter()
            .map(|request| {
                let calls = request.invocations();
                if calls.len() < 2 || calls.iter().any(|c| c.parent.is_some()) {
                    return request;
                }
                let mut sorted = calls.to_vec();
                sorted.sort_by_key(|c| c.start_us);
                self.count_within(&sorted);
                let invocations = self
                    .parents_within(&sorted)
                    .into_iter()
                    .zip(&sorted)
                    .map(|(parent, call)| Invocation {
                        parent: parent.map(|p| p as u32),
                        ..*call
                    })
                    .collect();
                Request::build(invocations).0
            })
            .collect()
    }

    /// Counts the calls of one request (in start order), each caller and callee task once.
    fn count_within(&mut self, calls: &[Invocation]) {
        let mut counted: Vec<Vec<TaskId>> = vec![Vec::new(); calls.len()];
        for (i, call) in calls.iter().enumerate() {
            self.count_call(call.task, call.start_us, call.usage.wall_us);
            let end = call.start_us + call.usage.wall_us;
            for (j, caller) in calls[..i].iter().enumerate() {
                if caller.task != call.task
                    && self.may_call(
                        caller.start_us,
                        caller.start_us + caller.usage.wall_us,
                        call.start_us,
                        end,
                    )
                    && !counted[j].contains(&call.task)
                {
                    counted[j].push(call.task);
                    *self.pairs.entry((caller.task, call.task)).or_default() += 1;
                }
            }
        }
    }

    /// Each call's caller among the calls before it (in start order): the latest to start
    /// that may have called it by a mined dependency.
    fn parents_within(&self, calls: &[Invocation]) -> Vec<Option<usize>> {
        calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let end = call.start_us + call.usage.wall_us;
                (0..i).rev().find(|&j| {
                    let a = &calls[j];
                    a.task != call.task
                        && self.may_call(
                            a.start_us,
                            a.start_us + a.usage.wall_us,
                            call.start_us,
                            end,
                        )
                        && self.is_edge(a.task, call.task)
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Usage;
    use crate::LabelId;

    fn lone(task: u32, start_us: u64, wall_us: u64) -> Request {
        Request::build(vec![Invocation {
            task: TaskId(task),
            label: LabelId(task),
            parent: None,
            start_us,
            usage: Usage {
                wall_us,
                ..Usage::default()
            },
            waited_us: 0,
        }])
        .0
    }

    /// 40 requests a (100 ms) → b (at +10 ms, 50 ms) → c (at +20 ms, 10 ms), one every 10 s,
    /// with a call of d (unrelated) 5 s after each.
    fn traffic() -> Vec<Request> {
        let mut out = Vec::new();
        for k in 0..40u64 {
            let t = k * 10_000_000;
            out.push(lone(0, t, 100_000));
            out.push(lone(1, t + 10_000, 50_000));
            out.push(lone(2, t + 20_000, 10_000));
            out.push(lone(3, t + 5_000_000, 1_000));
        }
        out
    }

    fn edges(miner: &Miner) -> Vec<(u32, u32)> {
        miner.edges().iter().map(|&(a, b, _)| (a.0, b.0)).collect()
    }

    #[test]
    fn nested_calls_are_mined_and_linked_into_their_trees() {
        let mut miner = Miner::new(MinerConfig::new(200_000, true));
        let requests = miner.regroup(traffic());
        // a → b and b → c, and a → c (c runs inside a too): the grandparent link is a
        // dependency, but each c takes its innermost caller, b.
        assert_eq!(edges(&miner), [(0, 1), (0, 2), (1, 2)]);
        let trees: Vec<&Request> = requests
            .iter()
            .filter(|r| r.invocations().len() > 1)
            .collect();
        // Online: the first request's calls come before their dependencies are sure (one
        // sighting in a span of milliseconds is no evidence); each later one is a tree.
        assert_eq!(trees.len(), 39);
        for tree in trees {
            let tasks: Vec<(u32, Option<u32>)> = tree
                .invocations()
                .iter()
                .map(|i| (i.task.0, i.parent))
                .collect();
            assert_eq!(tasks, [(0, None), (1, Some(0)), (2, Some(1))]);
        }
        // d stays alone: it follows nothing within the window.
        assert_eq!(requests.len(), 39 + 3 + 40);
    }

    #[test]
    fn a_stream_holds_a_tree_until_no_call_can_join_it() {
        let mut miner = Miner::new(MinerConfig::new(200_000, true));
        let mut out = Vec::new();
        for request in traffic() {
            out.extend(miner.push(vec![request]));
        }
        // Each tree went once the next call came a window later; the last d is held until
        // a later call passes its window.
        assert_eq!(miner.held(), 1);
        out.extend(miner.flush());
        assert_eq!(miner.held(), 0);
        assert_eq!(out.len(), 39 + 3 + 40);
        assert_eq!(
            out.iter().map(|r| r.invocations().len()).sum::<usize>(),
            160
        );
    }

    #[test]
    fn chance_company_is_not_a_dependency() {
        // Windowed (no run times): d comes 5 s after a, beyond 1 s; within 6 s it would
        // follow every a, but so would any call of a task that frequent by chance.
        let mut miner = Miner::new(MinerConfig::new(6_000_000, false));
        miner.regroup(traffic());
        let s = miner.stats(TaskId(0), TaskId(3)).unwrap();
        assert_eq!(s.support, 40);
        assert!(s.lift < 3.0, "{s:?}");
        assert!(!miner.is_edge(TaskId(0), TaskId(3)));
    }

    #[test]
    fn requests_that_name_callers_pass_and_groups_keep_apart() {
        let mut miner = Miner::new(MinerConfig::new(200_000, true));
        // b in another group: nothing links a to it.
        miner.set_group(TaskId(1), 1);
        let known = Request::build(vec![
            Invocation {
                parent: None,
                ..lone(5, 1, 10).invocations()[0]
            },
            Invocation {
                parent: Some(0),
                ..lone(6, 2, 5).invocations()[0]
            },
        ])
        .0;
        let mut input = traffic();
        input.push(known.clone());
        let requests = miner.regroup(input);
        assert!(requests.contains(&known));
        assert!(!miner.is_edge(TaskId(0), TaskId(1)));
        assert!(miner.is_edge(TaskId(0), TaskId(2)));
    }

    #[test]
    fn a_request_keeping_its_trace_is_linked_inside_itself() {
        let mut miner = Miner::new(MinerConfig::new(200_000, true));
        // The calls of each request known, their links not: every call a root.
        let requests: Vec<Request> = (0..10u64)
            .map(|k| {
                let t = k * 1_000_000;
                let calls = [
                    lone(0, t, 100_000),
                    lone(1, t + 10_000, 50_000),
                    lone(2, t + 20_000, 10_000),
                ];
                Request::build(calls.iter().map(|r| r.invocations()[0]).collect()).0
            })
            .collect();
        let linked = miner.relink(requests);
        assert_eq!(linked.len(), 10);
        // The first requests come before any dependency is sure (support 3): their calls
        // stay roots; the later ones are trees.
        let parents: Vec<Option<u32>> = linked[9].invocations().iter().map(|i| i.parent).collect();
        assert_eq!(parents, [None, Some(0), Some(1)]);
        assert_eq!(linked[0].roots().len(), 3);
    }

    #[test]
    fn a_request_stops_growing_at_its_bound() {
        let mut config = MinerConfig::new(1_000_000_000, false);
        config.max_request = 3;
        config.min_lift = 0.0;
        let mut miner = Miner::new(config);
        // a, b alternating every ms: every call links to the one before, up to 3 a tree.
        let input: Vec<Request> = (0..30u64)
            .map(|k| lone((k % 2) as u32, k * 1_000, 10))
            .collect();
        let requests = miner.regroup(input);
        assert!(requests.iter().all(|r| r.invocations().len() <= 3));
        assert_eq!(
            requests
                .iter()
                .map(|r| r.invocations().len())
                .sum::<usize>(),
            30
        );
    }
}
