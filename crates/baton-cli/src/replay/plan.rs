//! What `baton load` replays, computed once and run twice: by a live server and by the
//! simulator. A trace's requests become chains a server runs through its director (each
//! call tree walked depth-first, caller before callees, each step running for its own time:
//! its run time less what its callees covered), time is compressed by `speed`, and each
//! trace function gets a function name a server accepts. The chains are written as
//! execution records (schema v1) so both sides read the same requests through the same
//! grouping: the server learns the training records through `POST /v1/logs`, the simulator
//! through [`baton_trace::requests::RequestGrouper`], and the test records are what the
//! simulator replays while the server runs the chains for real.

use baton_core::request::Request;
use baton_core::TaskId;
use baton_runtime::manifest::is_valid_name;
use baton_trace::schema::ExecutionRecord;
use std::collections::HashMap;
use thiserror::Error;

/// Why a plan cannot be made.
#[derive(Debug, Error, PartialEq)]
pub enum PlanError {
    /// `--speed` must be a finite number ≥ 1 (a replay is never slower than the trace).
    #[error("--speed {0}: expected a number from 1 to 1000")]
    Speed(f64),
    /// Nothing to replay.
    #[error("the replay window holds no request")]
    Empty,
}

/// One function the replay deploys.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// Its name on the server.
    pub name: String,
    /// The trace's name for it.
    pub task: String,
    /// Its memory, MiB (what the server admits and counts for each instance).
    pub memory_mib: u64,
    /// Its longest step in the plan, µs (compressed).
    pub longest_us: u64,
}

/// One step of a chain: a function and how long it runs, µs (compressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Index into [`Plan::functions`].
    pub function: u32,
    /// Its own run time, µs.
    pub own_us: u64,
}

/// One request as a chain, starting `at_us` after the plan's origin (compressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Start, µs after the origin.
    pub at_us: u64,
    /// Its steps, in the order they run.
    pub steps: Vec<Step>,
}

/// A replay: functions, training chains (learned, not run) and test chains (run).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every function a chain names.
    pub functions: Vec<Function>,
    /// The training window's requests, as chains.
    pub train: Vec<Chain>,
    /// The replay window's requests, as chains, in start order.
    pub test: Vec<Chain>,
    /// Where the test window starts, µs after the origin (the origin is the training
    /// window's start, or the test window's when there is no training).
    pub test_start_us: u64,
    /// The compression: trace time ÷ replay time.
    pub speed: f64,
}

/// What a plan is made from.
pub struct Source<'a> {
    /// The training window's requests (may be empty).
    pub train: &'a [Request],
    /// The replay window's requests.
    pub test: &'a [Request],
    /// Names of the tasks (by `TaskId`).
    pub task_name: &'a dyn Fn(TaskId) -> String,
    /// Memory of a task, MiB.
    pub memory_mib: &'a dyn Fn(TaskId) -> u64,
    /// Start of the training window (or of the test window), µs since the epoch.
    pub origin_us: u64,
    /// Start of the test window, µs since the epoch.
    pub test_start_us: u64,
}

/// Makes the plan of `source` at `speed`.
pub fn plan(source: &Source<'_>, speed: f64) -> Result<Plan, PlanError> {
    if !(speed.is_finite() && (1.0..=1000.0).contains(&speed)) {
        return Err(PlanError::Speed(speed));
    }
    if source.test.is_empty() {
        return Err(PlanError::Empty);
    }
    let mut names = Names::default();
    let mut functions: Vec<Function> = Vec::new();
    let mut index_of: HashMap<TaskId, u32> = HashMap::new();
    let compress = |us: u64| (us as f64 / speed).round() as u64;
    let mut chains = |requests: &[Request]| -> Vec<Chain> {
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            let Some(start) = request.start_us() else {
                continue;
            };
            let mut steps = Vec::new();
            for (task, own) in linear(request) {
                let function = *index_of.entry(task).or_insert_with(|| {
                    let trace_name = (source.task_name)(task);
                    functions.push(Function {
                        name: names.name_for(&trace_name),
                        task: trace_name,
                        memory_mib: (source.memory_mib)(task),
                        longest_us: 0,
                    });
                    (functions.len() - 1) as u32
                });
                let own_us = compress(own);
                let longest = &mut functions[function as usize].longest_us;
                *longest = (*longest).max(own_us);
                steps.push(Step { function, own_us });
            }
            out.push(Chain {
                at_us: compress(start.saturating_sub(source.origin_us)),
                steps,
            });
        }
        out.sort_by_key(|c| c.at_us);
        out
    };
    let train = chains(source.train);
    let test = chains(source.test);
    Ok(Plan {
        functions,
        train,
        test,
        test_start_us: compress(source.test_start_us.saturating_sub(source.origin_us)),
        speed,
    })
}

/// A request's invocations in the order a chain runs them (depth-first, callees in start
/// order after their caller), each with its own run time: its run time less the time its
/// callees' runs cover inside it.
fn linear(request: &Request) -> Vec<(TaskId, u64)> {
    let invocations = request.invocations();
    let mut out = Vec::with_capacity(invocations.len());
    let mut stack: Vec<u32> = request.roots().iter().rev().copied().collect();
    while let Some(index) = stack.pop() {
        let invocation = &invocations[index as usize];
        let (start, end) = (
            invocation.start_us,
            invocation.start_us + invocation.usage.wall_us,
        );
        // The union of the callees' runs, clipped to the caller's.
        let mut spans: Vec<(u64, u64)> = request
            .children(index)
            .iter()
            .map(|&c| {
                let child = &invocations[c as usize];
                let from = child.start_us.clamp(start, end);
                (
                    from,
                    (child.start_us + child.usage.wall_us).clamp(from, end),
                )
            })
            .collect();
        spans.sort_unstable();
        let (mut covered, mut reach) = (0u64, start);
        for (from, to) in spans {
            let from = from.max(reach);
            if to > from {
                covered += to - from;
                reach = to;
            }
        }
        out.push((invocation.task, invocation.usage.wall_us - covered));
        stack.extend(request.children(index).iter().rev().copied());
    }
    out
}

/// Function names a server accepts, one per trace name, never two alike.
#[derive(Default)]
struct Names {
    taken: std::collections::HashSet<String>,
}

impl Names {
    /// The trace's name when a server accepts it, else its letters, digits, `-`, `_` and
    /// `.` (others become `-`), cut to fit, with a number added when that name is taken.
    fn name_for(&mut self, trace_name: &str) -> String {
        let mut base: String = trace_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if !base.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            base.insert(0, 'f');
        }
        base.truncate(56);
        let mut name = base.clone();
        let mut n = 1;
        while !is_valid_name(&name) || self.taken.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        self.taken.insert(name.clone());
        name
    }
}

impl Plan {
    /// The chains as execution records, times `origin_ns` + plan time: one trace per
    /// chain (`{prefix}{i}`), each step's parent the step before it.
    pub fn records(&self, chains: &[Chain], prefix: &str, origin_ns: u64) -> Vec<ExecutionRecord> {
        let mut out = Vec::new();
        for (i, chain) in chains.iter().enumerate() {
            let trace = format!("{prefix}{i}");
            let mut at_us = chain.at_us;
            for (k, step) in chain.steps.iter().enumerate() {
                out.push(ExecutionRecord {
                    ts_ns: origin_ns + at_us * 1_000,
                    task: self.functions[step.function as usize].name.clone(),
                    invocation: format!("{trace}.{k}"),
                    duration_us: step.own_us,
                    parent: (k > 0).then(|| format!("{trace}.{}", k - 1)),
                    trace: Some(trace.clone()),
                    ..ExecutionRecord::default()
                });
                at_us += step.own_us;
            }
        }
        out
    }

    /// The payload that runs `chain`: a line per step, `NAME OWN_US`; a step sleeps its own
    /// time and hands the lines after its own to the next (see `replay_worker.py`).
    pub fn payload(&self, chain: &Chain) -> String {
        let mut text = String::new();
        for step in &chain.steps {
            text.push_str(&self.functions[step.function as usize].name);
            text.push(' ');
            text.push_str(&step.own_us.to_string());
            text.push('\n');
        }
        text
    }

    /// The most test chains in flight at once, if each took its steps' own time and 50 ms
    /// more per step (a cold start's worth).
    pub fn max_in_flight(&self) -> usize {
        let mut edges: Vec<(u64, i32)> = Vec::with_capacity(self.test.len() * 2);
        for chain in &self.test {
            let own: u64 = chain.steps.iter().map(|s| s.own_us + 50_000).sum();
            edges.push((chain.at_us, 1));
            edges.push((chain.at_us + own, -1));
        }
        edges.sort_unstable_by_key(|&(at, delta)| (at, delta));
        let (mut now, mut most) = (0i32, 0i32);
        for (_, delta) in edges {
            now += delta;
            most = most.max(now);
        }
        most as usize
    }

    /// Steps of the test chains.
    pub fn test_steps(&self) -> usize {
        self.test.iter().map(|c| c.steps.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::call;

    /// a (0..100) calls b (10..40) and c (30..60), and b calls d (15..20).
    fn tree(at: u64) -> Request {
        Request::build(vec![
            call(0, None, at, 100),
            call(1, Some(0), at + 10, 30),
            call(2, Some(0), at + 30, 30),
            call(3, Some(1), at + 15, 5),
        ])
        .0
    }

    fn source<'a>(train: &'a [Request], test: &'a [Request]) -> Source<'a> {
        Source {
            train,
            test,
            task_name: &|t: TaskId| ["a", "b:op/x", "c", "b-op-x"][t.index()].to_owned(),
            memory_mib: &|t: TaskId| 100 + u64::from(t.0),
            origin_us: 1_000,
            test_start_us: 2_000,
        }
    }

    #[test]
    fn a_call_tree_runs_depth_first_with_each_step_its_own_time() {
        let test = [tree(2_000)];
        let plan = plan(&source(&[], &test), 1.0).unwrap();
        let chain = &plan.test[0];
        let steps: Vec<(&str, u64)> = chain
            .steps
            .iter()
            .map(|s| (plan.functions[s.function as usize].task.as_str(), s.own_us))
            .collect();
        // a's callees cover 10..60 of it (b and c overlap): 50 of its own; b's callee d
        // covers 5 of its 30.
        assert_eq!(steps, [("a", 50), ("b:op/x", 25), ("b-op-x", 5), ("c", 30)]);
        assert_eq!((chain.at_us, plan.test_start_us), (1_000, 1_000));
    }

    #[test]
    fn names_are_valid_and_unique_and_time_is_compressed() {
        let train = [tree(1_000)];
        let test = [tree(3_000), tree(2_000)];
        let plan = plan(&source(&train, &test), 10.0).unwrap();
        let names: Vec<&str> = plan.functions.iter().map(|f| f.name.as_str()).collect();
        // "b:op/x" becomes "b-op-x", which the trace's own "b-op-x" then cannot take.
        assert_eq!(names, ["a", "b-op-x", "b-op-x-2", "c"]);
        assert!(names.iter().all(|n| is_valid_name(n)));
        assert_eq!(plan.functions[1].memory_mib, 101);
        // Test chains in start order, at (start − origin) ÷ 10.
        let at: Vec<u64> = plan.test.iter().map(|c| c.at_us).collect();
        assert_eq!((at, plan.test_start_us), (vec![100, 200], 100));
        assert_eq!(plan.test[0].steps[0].own_us, 5);
        assert_eq!(plan.test_steps(), 8);
        assert_eq!(
            plan.payload(&plan.test[0]),
            "a 5\nb-op-x 3\nb-op-x-2 1\nc 3\n"
        );
    }

    #[test]
    fn records_chain_each_step_to_the_one_before() {
        let test = [tree(2_000)];
        let plan = plan(&source(&[], &test), 1.0).unwrap();
        let records = plan.records(&plan.test, "t", 5_000_000);
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].parent, None);
        assert_eq!(records[2].parent.as_deref(), Some("t0.1"));
        // Each step starts when the one before ends.
        assert_eq!(records[1].ts_ns, 5_000_000 + (1_000 + 50) * 1_000);
        assert_eq!(records[3].ts_ns, 5_000_000 + (1_000 + 80) * 1_000);
        assert!(records.iter().all(|r| r.trace.as_deref() == Some("t0")));
    }

    #[test]
    fn bad_speed_and_empty_windows_are_refused() {
        let test = [tree(2_000)];
        for speed in [0.5, f64::NAN, 1e9] {
            assert!(matches!(
                plan(&source(&[], &test), speed),
                Err(PlanError::Speed(_))
            ));
        }
        assert_eq!(plan(&source(&[], &[]), 1.0).unwrap_err(), PlanError::Empty);
    }
}
