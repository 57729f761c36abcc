//! `--callers` of `baton sim`: keep a trace's callers, drop them (every call a request of
//! its own, as in a log that names none), or drop them and mine them back
//! ([`baton_core::mining::Miner`]), scored against the callers the trace named.

use baton_core::mining::{Miner, MinerConfig};
use baton_core::request::{Invocation, Request};
use baton_core::TaskId;
use clap::ValueEnum;
use rustc_hash::FxHashMap;

/// What becomes of a trace's callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Callers {
    /// As the trace names them.
    Keep,
    /// None, and no trace ids: every call a request of its own.
    Drop,
    /// As `drop`, then mined back from timing (co-occurrence within a window).
    Mine,
    /// No parent ids, trace ids kept: each request's calls known, their links not.
    DropParents,
    /// As `drop-parents`, then mined back inside each request.
    MineParents,
}

/// Each request with its calls kept and their links dropped (every call a root).
pub fn unlinked(requests: &[Request]) -> Vec<Request> {
    requests
        .iter()
        .map(|r| {
            let calls = r
                .invocations()
                .iter()
                .enumerate()
                .filter(|&(i, _)| r.is_reachable(i as u32))
                .map(|(_, call)| Invocation {
                    parent: None,
                    ..*call
                })
                .collect();
            Request::build(calls).0
        })
        .collect()
}

/// Every reachable call of `requests` as a request of its own, in start order.
pub fn lone_calls(requests: &[Request]) -> Vec<Request> {
    let mut out: Vec<Request> = requests
        .iter()
        .flat_map(|r| {
            r.invocations()
                .iter()
                .enumerate()
                .filter(|&(i, _)| r.is_reachable(i as u32))
                .map(|(_, call)| {
                    Request::build(vec![Invocation {
                        parent: None,
                        ..*call
                    }])
                    .0
                })
        })
        .collect();
    out.sort_by_key(|r| r.start_us());
    out
}

/// Caller → callee task pairs of `requests`, with how many calls each link stands for.
fn links(requests: &[Request]) -> FxHashMap<(TaskId, TaskId), u64> {
    let mut out: FxHashMap<(TaskId, TaskId), u64> = FxHashMap::default();
    for request in requests {
        let calls = request.invocations();
        for call in calls {
            if let Some(parent) = call.parent {
                *out.entry((calls[parent as usize].task, call.task))
                    .or_default() += 1;
            }
        }
    }
    out
}

/// Mined links against the trace's: distinct pairs, and calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Distinct caller → callee pairs mined, and named by the trace.
    pub mined: usize,
    /// Distinct pairs the trace names.
    pub named: usize,
    /// Mined pairs the trace names ÷ mined pairs.
    pub precision: f64,
    /// Named pairs mined ÷ named pairs.
    pub recall: f64,
    /// Calls whose named link is a mined pair ÷ calls with a named caller.
    pub call_recall: f64,
}

/// Scores the links of `mined` against those of `named` (the same calls).
pub fn score(named: &[Request], mined: &[Request]) -> Score {
    let (truth, found) = (links(named), links(mined));
    let hits = found.keys().filter(|k| truth.contains_key(k)).count();
    let calls: u64 = truth.values().sum();
    let covered: u64 = truth
        .iter()
        .filter(|(k, _)| found.contains_key(k))
        .map(|(_, n)| n)
        .sum();
    Score {
        mined: found.len(),
        named: truth.len(),
        precision: hits as f64 / found.len().max(1) as f64,
        recall: hits as f64 / truth.len().max(1) as f64,
        call_recall: covered as f64 / calls.max(1) as f64,
    }
}

/// Applies `callers` to the training and test windows: (training, test, a note for the
/// header). Mining counts the training window, then the test window as it goes (the
/// learner's way online).
pub fn apply(
    callers: Callers,
    train: &[Request],
    test: Vec<Request>,
    config: MinerConfig,
) -> (Vec<Request>, Vec<Request>, Option<String>) {
    match callers {
        Callers::Keep => (train.to_vec(), test, None),
        Callers::Drop => (
            lone_calls(train),
            lone_calls(&test),
            Some("callers dropped: every call a request of its own".into()),
        ),
        Callers::DropParents => (
            unlinked(train),
            unlinked(&test),
            Some("parent ids dropped: each request's calls known, not their links".into()),
        ),
        Callers::Mine | Callers::MineParents => {
            let mut miner = Miner::new(config);
            let (train_mined, test_mined, what) = if callers == Callers::Mine {
                let train_mined = miner.regroup(lone_calls(train));
                (train_mined, miner.regroup(lone_calls(&test)), "callers")
            } else {
                let train_mined = miner.relink(unlinked(train));
                (train_mined, miner.relink(unlinked(&test)), "parent ids")
            };
            let s = score(&test, &test_mined);
            let note = format!(
                "{what} dropped and mined back ({} ms window{}): {} dependencies; in the replay, {} caller → callee pairs mined against {} named, precision {:.3}, recall {:.3}, calls whose link was mined {:.3}",
                config.window_us as f64 / 1000.0,
                if config.nested { ", callees inside their callers' runs" } else { "" },
                miner.edges().len(),
                s.mined,
                s.named,
                s.precision,
                s.recall,
                s.call_recall
            );
            (train_mined, test_mined, Some(note))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::call;

    #[test]
    fn dropped_callers_are_mined_back_and_scored() {
        let requests: Vec<Request> = (0..30u64)
            .map(|k| {
                let t = k * 5_000_000;
                Request::build(vec![
                    call(0, None, t, 100_000),
                    call(1, Some(0), t + 10_000, 50_000),
                    call(2, Some(1), t + 20_000, 10_000),
                ])
                .0
            })
            .collect();
        let lone = lone_calls(&requests);
        assert_eq!(lone.len(), 90);
        assert!(lone.iter().all(|r| r.invocations()[0].parent.is_none()));
        let dropped = score(&requests, &lone);
        assert_eq!((dropped.mined, dropped.named, dropped.recall), (0, 2, 0.0));
        let (_, mined, note) = apply(
            Callers::Mine,
            &requests[..10],
            requests[10..].to_vec(),
            MinerConfig::new(200_000, true),
        );
        let s = score(&requests[10..], &mined);
        assert_eq!(
            (s.precision, s.recall, s.call_recall),
            (1.0, 1.0, 1.0),
            "{note:?}"
        );
        assert!(note.unwrap().contains("precision 1.000"));
    }
}
