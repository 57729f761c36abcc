//! Helpers for the unit tests: small graphs learned from hand-written requests.

use crate::exec::ColdStarts;
use crate::ids::{LabelId, TaskId};
use crate::request::{Invocation, Request, Usage};
use crate::tdg::{Tdg, TdgConfig};

/// One invocation of a hand-written request: (task name, parent index, start µs, wall µs,
/// peak MiB).
pub type Call<'a> = (&'a str, Option<u32>, u64, u64, u64);

/// Builds a request, interning names into `tdg`.
pub fn request(tdg: &mut Tdg, calls: &[Call<'_>]) -> Request {
    let invocations = calls
        .iter()
        .map(|&(name, parent, start_us, wall_us, mib)| Invocation {
            task: tdg.intern_task(name),
            label: LabelId(tdg.intern_label(name).0),
            parent,
            start_us,
            waited_us: 0,
            usage: Usage {
                wall_us,
                cpu_us: Some(wall_us / 2),
                mem_peak_mib: Some(mib),
                ..Usage::default()
            },
        })
        .collect();
    Request::build(invocations).0
}

/// A learner without decay.
pub fn tdg() -> Tdg {
    Tdg::new(TdgConfig {
        half_life_us: None,
        ..TdgConfig::default()
    })
}

/// The graph `a → b → c` (6 of 10 requests; b needs 300 MiB) and `a → d` (4 of 10; 10 MiB).
pub fn branching() -> (Tdg, [TaskId; 4]) {
    let mut tdg = tdg();
    for i in 0..10u64 {
        let t = i * 1_000_000;
        let request = if i % 5 < 3 {
            request(
                &mut tdg,
                &[
                    ("a", None, t, 50_000, 10),
                    ("b", Some(0), t + 5_000, 30_000, 300),
                    ("c", Some(1), t + 15_000, 10_000, 20),
                ],
            )
        } else {
            request(
                &mut tdg,
                &[
                    ("a", None, t, 50_000, 10),
                    ("d", Some(0), t + 8_000, 5_000, 10),
                ],
            )
        };
        tdg.observe_request(&request);
    }
    let ids = ["a", "b", "c", "d"].map(|n| tdg.intern_task(n));
    (tdg, ids)
}

/// A host where every task takes the same time to start, µs.
pub struct FixedCold(pub u64);

impl ColdStarts for FixedCold {
    fn cold_start_us(&self, _task: TaskId) -> u64 {
        self.0
    }
}
