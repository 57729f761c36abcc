//! Grouping execution records into requests for the learner.
//!
//! Records group by `trace`; a record without one joins the request of its root caller
//! (found through `parent` links). This is the one conversion from execution records to
//! the learner's input: the director learns its requests live through it and a restarted
//! server replays its log through it, so both learn the same warm timing. A parent id missing from the log makes its record a root
//! of the same request (counted). Requests are kept when their entry starts inside the
//! window, and come back in start order, so decay sees time move forward.

use crate::schema::ExecutionRecord;
use baton_core::request::{Invocation, Request, RequestIssue, Usage};
use baton_core::Tdg;
use rustc_hash::FxHashMap;

/// A half-open time window `[since, until)` in epoch ns; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWindow {
    /// Inclusive start, ns.
    pub since_ns: Option<u64>,
    /// Exclusive end, ns.
    pub until_ns: Option<u64>,
}

impl TimeWindow {
    /// Whether `t_ns` is inside.
    pub fn contains(&self, t_ns: u64) -> bool {
        self.since_ns.is_none_or(|s| t_ns >= s) && self.until_ns.is_none_or(|u| t_ns < u)
    }
}

/// What grouping met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupReport {
    /// Requests built (inside the window).
    pub requests: u64,
    /// Requests left out by the window.
    pub outside_window: u64,
    /// Records whose parent is not in the log (kept as roots).
    pub missing_parents: u64,
    /// Records dropped because their parent links form a cycle.
    pub cycles: u64,
    /// Requests dropped whole: every record in a parent cycle, no root to start from.
    pub rootless: u64,
    /// Records whose start or run time was beyond belief and clamped.
    pub clamped: u64,
}

fn usage_of(record: &ExecutionRecord) -> Usage {
    let ms_to_us = |ms: f64| (ms * 1000.0).round() as u64;
    Usage {
        wall_us: record.duration_us,
        cpu_us: record.cpu_ms.map(ms_to_us),
        mem_peak_mib: record.mem_peak_mib.map(|m| m.ceil() as u64),
        net_bytes: record.net_bytes,
        gpu_us: record.gpu_ms.map(ms_to_us),
        cold_start_us: record.cold_start_us,
    }
}

/// A 128-bit key for an id string: ids are compared by key, so a record costs a few dozen
/// bytes instead of its strings (two independent 64-bit hashes: a collision among even
/// billions of ids is beyond belief).
fn key_of(id: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut low = rustc_hash::FxHasher::default();
    id.hash(&mut low);
    let mut high = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut high);
    (u128::from(high.finish()) << 64) | u128::from(low.finish())
}

/// The ids of one record, as keys: needed to group and link, dropped before requests are
/// built.
#[derive(Debug, Clone, Copy)]
struct Keys {
    invocation: u128,
    parent: Option<u128>,
    trace: Option<u128>,
    /// How long the step waited for its instance (`ready_wait_us`, baton's own records).
    wait_us: u64,
    /// How many invocations alike the record stands for (`count`, a summary's).
    count: u64,
}

/// How long a step of baton's own waited for its instance (a cold start, the rest of a
/// late pre-warm): its record's `ready_wait_us`; 0 for foreign records.
fn wait_of(record: &ExecutionRecord) -> u64 {
    record.ready_wait_us.unwrap_or(0)
}

/// Groups records into requests as they stream in, keeping only what grouping needs of each
/// (ids as keys, interned names, usage): memory grows with the records' count, not with
/// their text. [`group_requests`] is this over a slice.
#[derive(Debug, Default)]
pub struct RequestGrouper {
    keys: Vec<Keys>,
    invocations: Vec<Invocation>,
    /// Keep each start as recorded instead of removing the waits before it.
    recorded_starts: bool,
}

impl RequestGrouper {
    /// An empty grouper.
    pub fn new() -> RequestGrouper {
        RequestGrouper::default()
    }

    /// Keeps every start as recorded (each run still without its own wait): the requests
    /// exactly as they ran, for a simulator that adds its own waits (the conformance test
    /// replays a director's records so). Learning uses the default, warm timing.
    pub fn keep_recorded_starts(mut self) -> RequestGrouper {
        self.recorded_starts = true;
        self
    }

    /// Adds one record, interning its task and operation names into `tdg`.
    pub fn push(&mut self, record: &ExecutionRecord, tdg: &mut Tdg) {
        let task = tdg.intern_task(&record.task);
        let label = tdg.intern_label(record.operation.as_deref().unwrap_or(&record.task));
        let wait_us = wait_of(record);
        self.keys.push(Keys {
            invocation: key_of(&record.invocation),
            parent: record.parent.as_deref().map(key_of),
            trace: record.trace.as_deref().map(key_of),
            wait_us,
            count: record.count.unwrap_or(1),
        });
        let mut usage = usage_of(record);
        if wait_us > 0 {
            usage.wall_us = usage.wall_us.saturating_sub(wait_us).max(1);
        }
        self.invocations.push(Invocation {
            task,
            label,
            parent: None,
            start_us: record.ts_ns / 1_000,
            usage,
            waited_us: if self.recorded_starts { wait_us } else { 0 },
        });
    }

    /// The requests whose entry starts inside `window`, in start order.
    pub fn finish(self, window: TimeWindow) -> (Vec<Request>, GroupReport) {
        let RequestGrouper {
            recorded_starts,
            keys,
            mut invocations,
        } = self;
        let mut report = GroupReport::default();
        // Each record's group: its trace, else the root reached through parent links
        // (tagged apart, so a trace key never meets an invocation key). Groups are numbered
        // in order of first appearance.
        let mut group_of: Vec<u32> = Vec::with_capacity(keys.len());
        let mut n_groups = 0u32;
        {
            let untraced = keys.iter().any(|k| k.trace.is_none());
            let by_invocation: FxHashMap<u128, usize> = if untraced {
                keys.iter()
                    .enumerate()
                    .map(|(i, k)| (k.invocation, i))
                    .collect()
            } else {
                FxHashMap::default()
            };
            let mut numbers: FxHashMap<(bool, u128), u32> = FxHashMap::default();
            for (index, key) in keys.iter().enumerate() {
                let group = match key.trace {
                    Some(trace) => (true, trace),
                    None => {
                        let mut cursor = index;
                        for _ in 0..1_000 {
                            match keys[cursor].parent.and_then(|p| by_invocation.get(&p)) {
                                Some(&parent) if parent != cursor => cursor = parent,
                                _ => break,
                            }
                        }
                        (false, keys[cursor].invocation)
                    }
                };
                let number = *numbers.entry(group).or_insert_with(|| {
                    n_groups += 1;
                    n_groups - 1
                });
                group_of.push(number);
            }
        }
        // Members of each group, in record order (a counting sort).
        let mut starts = vec![0u32; n_groups as usize + 1];
        for &group in &group_of {
            starts[group as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut members = vec![0u32; keys.len()];
        {
            let mut next = starts.clone();
            for (index, &group) in group_of.iter().enumerate() {
                members[next[group as usize] as usize] = index as u32;
                next[group as usize] += 1;
            }
        }
        drop(group_of);
        // Parents, each looked up among its own request's records; and warm timing: a
        // request's steps run one after another, so every wait (a cold start, a late
        // pre-warm) delays all later steps. The graph learns each start without the waits
        // before it (and each run without its own, above); cold starts are learned apart.
        // Otherwise one cold request would teach pre-warms to come a cold start too late.
        for group in 0..n_groups as usize {
            let span = &members[starts[group] as usize..starts[group + 1] as usize];
            let local: FxHashMap<u128, u32> = span
                .iter()
                .enumerate()
                .map(|(i, &r)| (keys[r as usize].invocation, i as u32))
                .collect();
            let mut waited_before = 0u64;
            for &r in span {
                let invocation = &mut invocations[r as usize];
                invocation.start_us = invocation.start_us.saturating_sub(waited_before);
                if !recorded_starts {
                    waited_before += keys[r as usize].wait_us;
                }
                invocation.parent = keys[r as usize].parent.and_then(|p| {
                    let found = local.get(&p).copied();
                    if found.is_none() {
                        report.missing_parents += 1;
                    }
                    found
                });
            }
        }
        let counts: Vec<u64> = keys.iter().map(|k| k.count).collect();
        drop(keys);
        let mut requests = Vec::with_capacity(n_groups as usize);
        for group in 0..n_groups as usize {
            let span = &members[starts[group] as usize..starts[group + 1] as usize];
            let (request, issues) =
                Request::build(span.iter().map(|&r| invocations[r as usize]).collect());
            // A summary's records all carry its count.
            let count = span.iter().map(|&r| counts[r as usize]).max().unwrap_or(1);
            let request = request.with_multiplicity(count);
            for issue in &issues {
                match issue {
                    RequestIssue::Cycle { .. } => report.cycles += 1,
                    RequestIssue::Implausible { .. } => report.clamped += 1,
                    RequestIssue::DanglingParent { .. } => {}
                }
            }
            match request.start_us() {
                Some(start) if window.contains(start.saturating_mul(1_000)) => {
                    requests.push(request)
                }
                Some(_) => report.outside_window += 1,
                None => report.rootless += 1,
            }
        }
        requests.sort_by_key(|r| r.start_us());
        report.requests = requests.len() as u64;
        (requests, report)
    }
}

/// Groups `records` into requests, interning task and operation names into `tdg`.
pub fn group_requests(
    records: &[ExecutionRecord],
    tdg: &mut Tdg,
    window: TimeWindow,
) -> (Vec<Request>, GroupReport) {
    let mut grouper = RequestGrouper::new();
    for record in records {
        grouper.push(record, tdg);
    }
    grouper.finish(window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::TdgConfig;

    fn record(task: &str, invocation: &str, parent: Option<&str>, ts_ns: u64) -> ExecutionRecord {
        ExecutionRecord {
            ts_ns,
            task: task.into(),
            invocation: invocation.into(),
            duration_us: 10,
            parent: parent.map(Into::into),
            ..ExecutionRecord::default()
        }
    }

    #[test]
    fn records_without_trace_group_by_root() {
        let records = vec![
            record("a", "1", None, 1_000),
            record("b", "2", Some("1"), 2_000),
            record("c", "3", Some("2"), 3_000),
            record("a", "4", None, 10_000),
            record("b", "5", Some("4"), 11_000),
            record("x", "6", Some("gone"), 12_000),
        ];
        let mut tdg = Tdg::new(TdgConfig::default());
        let (requests, report) = group_requests(&records, &mut tdg, TimeWindow::default());
        let sizes: Vec<usize> = requests.iter().map(|r| r.invocations().len()).collect();
        assert_eq!(sizes, [3, 2, 1]);
        assert_eq!(report.missing_parents, 1);
        let (windowed, report) = group_requests(
            &records,
            &mut tdg,
            TimeWindow {
                since_ns: Some(5_000),
                until_ns: Some(11_000),
            },
        );
        assert_eq!(windowed.len(), 1);
        assert_eq!(report.outside_window, 2);
    }

    #[test]
    fn a_request_caught_in_a_parent_cycle_is_counted_not_lost() {
        let mut cyclic = vec![
            record("a", "1", Some("2"), 1_000),
            record("b", "2", Some("1"), 2_000),
            record("c", "3", None, 3_000),
        ];
        for r in &mut cyclic[..2] {
            r.trace = Some("t1".into());
        }
        cyclic[2].trace = Some("t2".into());
        let mut tdg = Tdg::new(TdgConfig::default());
        let (requests, report) = group_requests(&cyclic, &mut tdg, TimeWindow::default());
        assert_eq!(requests.len(), 1);
        assert_eq!(report.cycles, 2);
        assert_eq!(report.rootless, 1);
        assert_eq!(report.outside_window, 0);
    }
}
