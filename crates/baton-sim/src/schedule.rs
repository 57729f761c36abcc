//! When each arrival comes. As recorded (the default), every invocation arrives at its
//! recorded start. Causally ([`SimConfig::causal`](crate::engine::SimConfig)), a call
//! arrives when its caller's run reaches it: at its recorded offset from its caller's start,
//! later by the wait the simulation put before the caller's run (less any wait the recorded
//! starts already hold, `Invocation::waited_us`), as a live server runs a chain: a step that
//! waits for a cold start hands on that much later. Ties go by request, then index, in both.

use crate::engine::Arrival;
use baton_core::request::Request;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Arrivals still to come, in order.
pub(crate) struct Schedule {
    causal: bool,
    /// Next arrival of the recorded order not yet taken.
    cursor: usize,
    /// Calls released by their callers' arrival: (start, request, index, arrival id).
    released: BinaryHeap<Reverse<(u64, u32, u32, u32)>>,
    /// Arrival id of each request's invocation (`u32::MAX`: not replayed).
    global_of: Vec<Vec<u32>>,
}

impl Schedule {
    pub(crate) fn new(requests: &[Request], arrivals: &[Arrival], causal: bool) -> Schedule {
        let mut global_of: Vec<Vec<u32>> = if causal {
            requests
                .iter()
                .map(|r| vec![u32::MAX; r.invocations().len()])
                .collect()
        } else {
            Vec::new()
        };
        if causal {
            for (global, arrival) in arrivals.iter().enumerate() {
                global_of[arrival.request as usize][arrival.index as usize] = global as u32;
            }
        }
        Schedule {
            causal,
            cursor: 0,
            released: BinaryHeap::new(),
            global_of,
        }
    }

    /// Whether `arrival` comes when its caller releases it, not at its recorded start.
    fn withheld(&self, requests: &[Request], arrival: &Arrival) -> bool {
        self.causal
            && requests[arrival.request as usize].invocations()[arrival.index as usize]
                .parent
                .is_some_and(|p| {
                    self.global_of[arrival.request as usize]
                        .get(p as usize)
                        .is_some_and(|&g| g != u32::MAX)
                })
    }

    /// The next arrival and when it comes, without taking it.
    pub(crate) fn peek(
        &mut self,
        requests: &[Request],
        arrivals: &[Arrival],
    ) -> Option<(u32, u64)> {
        while let Some(arrival) = arrivals.get(self.cursor) {
            if !self.withheld(requests, arrival) {
                break;
            }
            self.cursor += 1;
        }
        let recorded = arrivals
            .get(self.cursor)
            .map(|a| ((a.start_us, a.request, a.index), self.cursor as u32));
        let released = self
            .released
            .peek()
            .map(|Reverse((at, request, index, global))| ((*at, *request, *index), *global));
        match (recorded, released) {
            (Some(a), Some(b)) if b.0 < a.0 => Some((b.1, b.0 .0)),
            (Some(a), _) => Some((a.1, a.0 .0)),
            (None, Some(b)) => Some((b.1, b.0 .0)),
            (None, None) => None,
        }
    }

    /// Takes the arrival [`Schedule::peek`] gave.
    pub(crate) fn take(&mut self, global: u32) {
        if self.cursor == global as usize {
            self.cursor += 1;
        } else {
            self.released.pop();
        }
    }

    /// Arrival `global` came at `at_us` and waits `delay_us` before it runs: its calls are
    /// released (causally; nothing to do as recorded).
    pub(crate) fn came(
        &mut self,
        requests: &[Request],
        arrivals: &[Arrival],
        global: u32,
        at_us: u64,
        delay_us: u64,
    ) {
        if !self.causal {
            return;
        }
        let arrival = arrivals[global as usize];
        let request = &requests[arrival.request as usize];
        let caller = &request.invocations()[arrival.index as usize];
        // How much later than recorded the caller runs.
        let late = (at_us + delay_us) as i64 - (caller.start_us + caller.waited_us) as i64;
        for &child in request.children(arrival.index) {
            let Some(&callee) = self.global_of[arrival.request as usize].get(child as usize) else {
                continue;
            };
            if callee == u32::MAX {
                continue;
            }
            let recorded = request.invocations()[child as usize].start_us as i64;
            let at = (recorded + late).max(at_us as i64) as u64;
            self.released
                .push(Reverse((at, arrival.request, child, callee)));
        }
    }
}
