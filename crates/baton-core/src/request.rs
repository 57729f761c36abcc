//! One request as a tree of invocations: who called whom, in which order, on which route.
//!
//! Logs give invocations with a parent link; the learner needs, per caller invocation, its
//! calls in start order, and per request its entry and route. [`Request::build`] computes
//! that once, tolerating bad links: a parent index out of range makes the invocation a root,
//! and invocations caught in a parent cycle are dropped, each reported as an issue.

use crate::context::{CallContext, Prev};
use crate::ids::{LabelId, TaskId};
use serde::{Deserialize, Serialize};

/// Measured use of one invocation. Missing measurements are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall time in µs.
    pub wall_us: u64,
    /// CPU time in µs.
    pub cpu_us: Option<u64>,
    /// Peak memory in MiB.
    pub mem_peak_mib: Option<u64>,
    /// Bytes moved over the network.
    pub net_bytes: Option<u64>,
    /// GPU time in µs.
    pub gpu_us: Option<u64>,
    /// Cold-start time in µs, for an invocation that started cold.
    pub cold_start_us: Option<u64>,
}

/// One invocation inside a request, as handed to [`Request::build`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// The task that ran.
    pub task: TaskId,
    /// Its operation (route label when it is the first call below the entry).
    pub label: LabelId,
    /// Index of the calling invocation in the same request.
    pub parent: Option<u32>,
    /// Start time, µs since the epoch.
    pub start_us: u64,
    /// What it used.
    pub usage: Usage,
    /// How long it waited for its instance before it ran, µs, when its calls' start times
    /// include that wait (baton's own records grouped keeping recorded starts, as the
    /// conformance test replays them); 0 when the starts are warm timing or it is unknown.
    #[serde(default)]
    pub waited_us: u64,
}

/// Longest run time taken as given, µs (about 11.6 days); longer is clamped to it.
pub const MAX_WALL_US: u64 = 1_000_000_000_000;

/// Latest start time taken as given, µs since the epoch (about year 2116); later is clamped.
/// Together with [`MAX_WALL_US`] this keeps every time sum far from `u64` overflow.
pub const MAX_START_US: u64 = 1 << 62 >> 10;

/// Something wrong with one request's links, reported and worked around.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RequestIssue {
    /// A start or run time beyond [`MAX_START_US`] / [`MAX_WALL_US`] was clamped.
    Implausible {
        /// Index of the invocation.
        invocation: u32,
    },
    /// The parent index points outside the request; the invocation became a root.
    DanglingParent {
        /// Index of the invocation.
        invocation: u32,
    },
    /// The invocation is part of a parent cycle and was dropped.
    Cycle {
        /// Index of the invocation.
        invocation: u32,
    },
}

/// A request: its invocations with children in start order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    invocations: Vec<Invocation>,
    /// Children of each invocation, sorted by start time then index.
    children: Vec<Vec<u32>>,
    /// Invocations without a parent, sorted by start time then index.
    roots: Vec<u32>,
    /// Whether each invocation is reachable from a root (false: dropped in a cycle).
    reachable: Vec<bool>,
    /// How many requests alike it stands for (a summary of a cluster node's traffic): the
    /// learner weighs it so many times. 1 for a request as it ran.
    #[serde(default = "one")]
    multiplicity: u64,
}

fn one() -> u64 {
    1
}

/// One caller→callee transition (or the end of a caller's calls) with its context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallEvent {
    /// The context at the moment of the call.
    pub context: CallContext,
    /// The callee, or `None` for "the caller made no further call".
    pub callee: Option<TaskId>,
    /// Start of the caller to start of the callee (0 for the end event).
    pub delay_us: u64,
    /// When it happened (µs since the epoch).
    pub at_us: u64,
    /// Index of the caller invocation in the request.
    pub caller_index: u32,
    /// Index of the callee invocation in the request.
    pub callee_index: Option<u32>,
}

impl Request {
    /// Builds the tree; returns the request and the link problems met.
    pub fn build(mut invocations: Vec<Invocation>) -> (Request, Vec<RequestIssue>) {
        let n = invocations.len();
        let mut issues = Vec::new();
        for (index, invocation) in invocations.iter_mut().enumerate() {
            if invocation.start_us > MAX_START_US || invocation.usage.wall_us > MAX_WALL_US {
                invocation.start_us = invocation.start_us.min(MAX_START_US);
                invocation.usage.wall_us = invocation.usage.wall_us.min(MAX_WALL_US);
                issues.push(RequestIssue::Implausible {
                    invocation: index as u32,
                });
            }
        }
        let mut children = vec![Vec::new(); n];
        let mut roots = Vec::new();
        for (index, invocation) in invocations.iter().enumerate() {
            match invocation.parent {
                Some(parent) if (parent as usize) < n && parent as usize != index => {
                    children[parent as usize].push(index as u32)
                }
                Some(_) => {
                    issues.push(RequestIssue::DanglingParent {
                        invocation: index as u32,
                    });
                    roots.push(index as u32);
                }
                None => roots.push(index as u32),
            }
        }
        let by_start = |a: &u32, b: &u32| {
            let (x, y) = (&invocations[*a as usize], &invocations[*b as usize]);
            x.start_us.cmp(&y.start_us).then(a.cmp(b))
        };
        roots.sort_by(by_start);
        for list in &mut children {
            list.sort_by(by_start);
        }
        let mut reachable = vec![false; n];
        let mut stack: Vec<u32> = roots.clone();
        while let Some(index) = stack.pop() {
            if reachable[index as usize] {
                continue;
            }
            reachable[index as usize] = true;
            stack.extend(children[index as usize].iter().copied());
        }
        for (index, &seen) in reachable.iter().enumerate() {
            if !seen {
                issues.push(RequestIssue::Cycle {
                    invocation: index as u32,
                });
            }
        }
        let request = Request {
            invocations,
            children,
            roots,
            reachable,
            multiplicity: 1,
        };
        (request, issues)
    }

    /// The request standing for `multiplicity` requests alike (at least 1).
    pub fn with_multiplicity(mut self, multiplicity: u64) -> Request {
        self.multiplicity = multiplicity.max(1);
        self
    }

    /// How many requests alike it stands for (1 for a request as it ran).
    pub fn multiplicity(&self) -> u64 {
        self.multiplicity
    }

    /// All invocations, in the order given.
    pub fn invocations(&self) -> &[Invocation] {
        &self.invocations
    }

    /// Children of `index` in start order.
    pub fn children(&self, index: u32) -> &[u32] {
        &self.children[index as usize]
    }

    /// The entry: the earliest root.
    pub fn entry(&self) -> Option<u32> {
        self.roots.first().copied()
    }

    /// The roots in start order.
    pub fn roots(&self) -> &[u32] {
        &self.roots
    }

    /// The route: the label of the entry's first call, if it makes one.
    pub fn route(&self) -> Option<LabelId> {
        let entry = self.entry()?;
        let first = *self.children(entry).first()?;
        Some(self.invocations[first as usize].label)
    }

    /// Start time of the entry.
    pub fn start_us(&self) -> Option<u64> {
        self.entry().map(|e| self.invocations[e as usize].start_us)
    }

    /// When the last invocation ended, µs.
    pub fn end_us(&self) -> Option<u64> {
        self.invocations
            .iter()
            .map(|i| i.start_us.saturating_add(i.usage.wall_us))
            .max()
    }

    /// Whether `index` was kept (not dropped in a parent cycle).
    pub fn is_reachable(&self, index: u32) -> bool {
        self.reachable[index as usize]
    }

    /// Calls `visit` with every transition and end event of the request, callers in tree
    /// order and calls in start order. Every call carries the request's route, also the
    /// entry's first call (which defines it): the route is a property of the request.
    pub fn for_each_call(&self, mut visit: impl FnMut(&CallEvent)) {
        let route = self.route();
        let mut stack: Vec<(u32, Option<TaskId>)> =
            self.roots.iter().rev().map(|&r| (r, None)).collect();
        while let Some((caller_index, grand_caller)) = stack.pop() {
            let caller = &self.invocations[caller_index as usize];
            let mut prev = Prev::Start;
            for &callee_index in self.children(caller_index) {
                let callee = &self.invocations[callee_index as usize];
                visit(&CallEvent {
                    context: CallContext {
                        caller: caller.task,
                        prev,
                        route,
                        grand_caller,
                        caller_operation: Some(caller.label),
                    },
                    callee: Some(callee.task),
                    delay_us: callee.start_us.saturating_sub(caller.start_us),
                    at_us: callee.start_us,
                    caller_index,
                    callee_index: Some(callee_index),
                });
                prev = Prev::After(callee.task);
            }
            visit(&CallEvent {
                context: CallContext {
                    caller: caller.task,
                    prev,
                    route,
                    grand_caller,
                    caller_operation: Some(caller.label),
                },
                callee: None,
                delay_us: 0,
                at_us: caller.start_us.saturating_add(caller.usage.wall_us),
                caller_index,
                callee_index: None,
            });
            for &child in self.children(caller_index).iter().rev() {
                stack.push((child, Some(caller.task)));
            }
        }
    }

    /// The distinct tasks invoked below the entry, each with its earliest start offset from
    /// the entry's start (µs), sorted by task id.
    pub fn downstream_tasks(&self) -> Vec<(TaskId, u64)> {
        let Some(entry) = self.entry() else {
            return Vec::new();
        };
        let entry_start = self.invocations[entry as usize].start_us;
        let mut seen: Vec<(TaskId, u64)> = Vec::new();
        for (index, invocation) in self.invocations.iter().enumerate() {
            if index as u32 == entry || !self.reachable[index] {
                continue;
            }
            let offset = invocation.start_us.saturating_sub(entry_start);
            match seen.iter_mut().find(|(task, _)| *task == invocation.task) {
                Some(slot) => slot.1 = slot.1.min(offset),
                None => seen.push((invocation.task, offset)),
            }
        }
        seen.sort_by_key(|&(task, _)| task);
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(task: u32, label: u32, parent: Option<u32>, start_us: u64) -> Invocation {
        Invocation {
            task: TaskId(task),
            label: LabelId(label),
            parent,
            start_us,
            waited_us: 0,
            usage: Usage {
                wall_us: 10,
                ..Usage::default()
            },
        }
    }

    #[test]
    fn calls_come_in_start_order_with_call_order_context() {
        // entry 0 calls 1 (route label 7) then 2; 1 calls 3.
        let (request, issues) = Request::build(vec![
            call(0, 0, None, 100),
            call(2, 8, Some(0), 130),
            call(1, 7, Some(0), 110),
            call(3, 9, Some(2), 115),
        ]);
        assert!(issues.is_empty());
        assert_eq!(request.route(), Some(LabelId(7)));
        let mut events = Vec::new();
        request.for_each_call(|e| events.push((e.context.caller, e.context.prev, e.callee)));
        assert_eq!(
            events,
            vec![
                (TaskId(0), Prev::Start, Some(TaskId(1))),
                (TaskId(0), Prev::After(TaskId(1)), Some(TaskId(2))),
                (TaskId(0), Prev::After(TaskId(2)), None),
                (TaskId(1), Prev::Start, Some(TaskId(3))),
                (TaskId(1), Prev::After(TaskId(3)), None),
                (TaskId(3), Prev::Start, None),
                (TaskId(2), Prev::Start, None),
            ]
        );
        assert_eq!(
            request.downstream_tasks(),
            vec![(TaskId(1), 10), (TaskId(2), 30), (TaskId(3), 15)]
        );
    }

    #[test]
    fn absurd_times_are_clamped_and_reported() {
        let mut absurd = call(0, 0, None, u64::MAX);
        absurd.usage.wall_us = u64::MAX;
        let (request, issues) = Request::build(vec![absurd]);
        assert_eq!(issues, vec![RequestIssue::Implausible { invocation: 0 }]);
        assert_eq!(request.invocations()[0].usage.wall_us, MAX_WALL_US);
        assert!(request.end_us().is_some());
    }

    #[test]
    fn bad_links_are_reported_not_fatal() {
        let (request, issues) = Request::build(vec![
            call(0, 0, None, 0),
            call(1, 1, Some(9), 5),
            call(2, 2, Some(3), 6),
            call(3, 3, Some(2), 7),
        ]);
        assert_eq!(
            issues,
            vec![
                RequestIssue::DanglingParent { invocation: 1 },
                RequestIssue::Cycle { invocation: 2 },
                RequestIssue::Cycle { invocation: 3 },
            ]
        );
        assert_eq!(request.roots(), &[0, 1]);
        let mut n = 0;
        request.for_each_call(|_| n += 1);
        assert_eq!(n, 2, "one end event per reachable invocation");
    }
}
