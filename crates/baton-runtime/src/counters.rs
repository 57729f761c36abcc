//! The runtime's one set of counters: the director's steps, the planner's decisions and
//! the pool's workers, shared by all three (an `Arc`), read by `/v1/pool` and `/metrics`
//! alike through [`Counters::read`].

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( #[doc = $doc:literal] $name:ident ),* $(,)?) => {
        /// Counts of the runtime's work. See the module docs.
        #[derive(Debug, Default)]
        pub struct Counters {
            $( #[doc = $doc] pub $name: AtomicU64, )*
        }

        impl Counters {
            /// Every counter as (name, what it counts, value), in a fixed order.
            pub fn read(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![ $( (stringify!($name), $doc.trim(), self.$name.load(Ordering::Relaxed)), )* ]
            }
        }
    };
}

counters! {
    /// Invocations (requests) run.
    invocations,
    /// Steps run, nested ones included.
    steps,
    /// Steps that started cold.
    cold_steps,
    /// Steps served by an instance a pre-warm made.
    prewarmed_steps,
    /// Of those, steps that waited for their pre-warm to finish starting.
    late_prewarms,
    /// Steps that failed.
    failed_steps,
    /// Pre-warms carried out (process and wasm).
    prewarms,
    /// Of those, pre-warms an idle instance covered (claimed, its deadline extended).
    prewarms_covered,
    /// Pre-warms planned when a request's route became known (the route's task set).
    route_prewarms,
    /// Unused pre-warms released when their plan's windows ended.
    released,
    /// Worker processes started by pre-warms.
    prewarm_starts,
    /// Pre-warmed workers used by a step.
    prewarms_used,
    /// Pre-warmed workers released unused (expired, evicted or released).
    prewarms_wasted,
    /// Pre-warms whose worker failed to start.
    prewarms_failed,
    /// Pre-warms not started: over the idle budget, with too little idle worth less than their bet to make room (the simulator's rule, `baton_core::exec::room`).
    prewarms_refused,
    /// Pre-warms not started: the function was at its instance cap.
    prewarms_capped,
    /// Pre-warms due at once not started: a step of the function asked for a worker after the event that asked for them (the planner is behind the request).
    prewarms_overtaken,
    /// Wasm steps whose instance the planner had made ahead (no instantiation on the way).
    instances_ahead,
    /// Steps served by an idle worker process.
    hits,
    /// Templates started (a function's first cold start, or one replacing a dead template).
    template_starts,
    /// Worker processes forked from a template for a start (cold starts and pre-warms alike; spares apart).
    forked_starts,
    /// Starts served by their template's spare, a worker forked ahead (cold starts and pre-warms alike).
    spare_starts,
    /// Spares forked (one per live template, forked again once taken).
    spares_forked,
    /// Templates let go when the policy's hold on them ended (the warmth tiers).
    templates_retired,
    /// Worker processes a step started itself (cold).
    cold_starts,
    /// Of those, the function's first worker (since it was deployed or the node started).
    cold_first,
    /// Of those, started while every worker of the function was busy (concurrency).
    cold_concurrent,
    /// Of those, after the function's last idle worker was evicted for the budget.
    cold_evicted,
    /// Of those, after the function's last worker ended (keep-alive over, released, died).
    cold_expired,
    /// Steps that waited for a worker because of a cap.
    capped_waits,
    /// Worker starts that waited for memory: the node's workers had declared all of it.
    memory_waits,
    /// Worker starts refused for memory (a step after its wait, a pre-warm or spare at once).
    memory_refused,
    /// Idle workers evicted to stay within the idle-memory budget.
    evictions,
    /// Committed reservations that preempted speculative ones.
    preemptions,
    /// Step events dropped because the planner's inbox was full.
    dropped_events,
    /// Finished requests whose records waited for room in the planner's full inbox.
    record_waits,
    /// Execution records that could not be written to the log file.
    log_write_errors,
}

impl Counters {
    /// Counts a cold start's cause (beside `cold_starts`).
    pub fn count_cold(&self, cause: baton_core::exec::ColdCause) {
        use baton_core::exec::ColdCause;
        let counter = match cause {
            ColdCause::First => &self.cold_first,
            ColdCause::Concurrent => &self.cold_concurrent,
            ColdCause::Evicted => &self.cold_evicted,
            ColdCause::Expired => &self.cold_expired,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_read_with_its_description() {
        let counters = Counters::default();
        counters.late_prewarms.fetch_add(3, Ordering::Relaxed);
        let read = counters.read();
        assert_eq!(read.len(), 37);
        let late = read.iter().find(|(n, _, _)| *n == "late_prewarms").unwrap();
        assert_eq!(late.2, 3);
        assert!(late.1.starts_with("Of those"), "{late:?}");
    }
}
