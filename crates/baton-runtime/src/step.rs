//! The step runner: one step of a request on the calling thread. It opens the step's
//! record, tells the planner the step started (with the simulator's context: the caller,
//! the operation, the request's route once the entry's first call reveals it) as soon as
//! the function's [`crate::backend::Backend`] has chosen its instance (before waiting for
//! a cold start, so what follows starts meanwhile), runs it, gives it back, tells
//! the planner the step ended, and closes the record with the step's typed
//! [`StepFacts`] (also written into the record for the log).

use crate::backend::{ensure_services, StepCall, StepError};
use crate::backend::{RunFacts, Tier};
use crate::director::{Director, RequestState};
use crate::manifest::FunctionSpec;
use crate::node::lock;
use crate::planner::{Msg, PROVISIONAL_KEEP};
use crate::pool::Warmth;
use crate::trace_context::SpanId;
use crate::wasm::NestedCall;
use baton_core::context::Prev;
use baton_core::{PredictContext, TaskId};
use baton_trace::schema::{ExecutionRecord, Status};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a step went, typed (its record carries the same in schema-v1 fields and `extra`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepFacts {
    /// How its instance was obtained; `None` when none was (the step failed first).
    pub warmth: Option<Warmth>,
    /// It waited for its pre-warm to finish starting.
    pub late: bool,
    /// Waiting for services, a cold start or the rest of a pre-warm, µs.
    pub wait_us: u64,
    /// From the previous output to this instance holding its input, and to its result, ns.
    pub hop_ns: Option<(u64, u64)>,
    /// What its instance was made from.
    pub tier: Option<Tier>,
    /// What the run measured.
    pub run: RunFacts,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl StepFacts {
    /// The warmth word of records and the API: cold, warm, prewarmed, prewarm-late.
    pub fn warmth_word(&self) -> Option<&'static str> {
        Some(match self.warmth? {
            Warmth::Cold => "cold",
            Warmth::Warm => "warm",
            Warmth::Prewarmed if self.late => "prewarm-late",
            Warmth::Prewarmed => "prewarmed",
        })
    }
}

impl Director {
    /// Runs one step; returns its record's index, its task and its output.
    pub(crate) fn run_step(
        &self,
        state: &Arc<Mutex<RequestState>>,
        name: &str,
        input: &[u8],
        parent: Option<(usize, TaskId)>,
        handed_at: Option<Instant>,
        depth: usize,
    ) -> (usize, TaskId, Result<Vec<u8>, StepError>) {
        let counters = &self.node.counters;
        counters.steps.fetch_add(1, Ordering::Relaxed);
        let ids = self.node.ids(name);
        let task = ids.task;
        let start_us = self.now_us();
        let (index, context, reveals_route) = {
            let mut request = lock(state);
            let index = request.records.len();
            // As the simulator tells it: the entry knows no route; the entry's first call
            // reveals it (its label) and every later step carries it.
            let reveals_route = match parent {
                Some((0, _)) if request.route.is_none() => {
                    request.route = Some(ids.label);
                    request.records.first().map(|entry| entry.ts_ns / 1_000)
                }
                _ => None,
            };
            let context = PredictContext {
                route: parent.and(request.route),
                prev: Prev::Start,
                grand_caller: parent.map(|(_, t)| t),
                operation: Some(ids.label),
            };
            let record = ExecutionRecord {
                ts_ns: start_us * 1_000,
                task: name.to_owned(),
                invocation: SpanId::random().to_string(),
                parent: parent.map(|(p, _)| request.records[p].invocation.clone()),
                trace: Some(request.trace.clone()),
                ..ExecutionRecord::default()
            };
            request.records.push(record);
            request.steps.push(StepFacts::default());
            (index, context, reveals_route)
        };
        let finish = |record: &mut ExecutionRecord, facts: StepFacts| {
            let mut request = lock(state);
            let slot = &mut request.records[index];
            record.ts_ns = slot.ts_ns;
            record.task = std::mem::take(&mut slot.task);
            record.invocation = std::mem::take(&mut slot.invocation);
            record.parent = slot.parent.take();
            record.trace = slot.trace.take();
            *slot = std::mem::take(record);
            request.steps[index] = facts;
        };
        let mut record = ExecutionRecord::default();
        let invocation = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The planner hears of the step once its instance is chosen, before the step waits
        // for it (as the simulator tells the policy at the arrival): what follows is
        // pre-warmed while this step's own cold start runs.
        let unsaid = std::cell::RefCell::new(Some((context, reveals_route)));
        // `wait_us`: the wait ahead of the step (the policy's `wait_us`).
        let tell = |spec: &FunctionSpec, warmth: Warmth, wait_us: u64| {
            let Some((context, reveals_route)) = unsaid.borrow_mut().take() else {
                return;
            };
            // The planner reserves for a step nobody planned (preempting speculation).
            self.send(Msg::Start {
                task,
                invocation,
                at_us: start_us,
                context,
                reveals_route,
                planned: warmth == Warmth::Prewarmed,
                wait_us,
                needs: (spec.limits, spec.timeout_ms * 1000),
                told: Instant::now(),
            });
        };
        self.node.advance_manual();
        let found = self.node.pool.spec(name);
        let acquired = found
            .clone()
            .ok_or_else(|| StepError::Unknown(name.to_owned()))
            .and_then(|spec| {
                let services = ensure_services(self.node.services().map(|s| &**s), &spec)?;
                let acquired =
                    self.node
                        .backend(&spec)
                        .acquire(&spec, &|warmth, started_ago| {
                            // The wait ahead, as the node's cold-start estimate has it.
                            let wait = match warmth {
                                Warmth::Warm => Duration::ZERO,
                                _ => self.node.cold_estimate(&spec).saturating_sub(started_ago),
                            };
                            tell(&spec, warmth, services + wait.as_micros() as u64);
                        })?;
                Ok((spec, services, acquired))
            });
        let (spec, service_wait, acquired) = match acquired {
            Ok(acquired) => acquired,
            Err(source) => {
                if let Some(spec) = found.filter(|_| unsaid.borrow().is_none()) {
                    // Told it started: it ended here, with no worker to give back.
                    self.send(Msg::End {
                        task,
                        spec,
                        invocation,
                        at_us: self.now_us(),
                        worker: None,
                    });
                }
                counters.failed_steps.fetch_add(1, Ordering::Relaxed);
                record.status = Some(Status::Error);
                record.cold = Some(true);
                record
                    .extra
                    .insert("error".into(), Value::from(source.to_string()));
                finish(
                    &mut record,
                    StepFacts {
                        error: Some(source.to_string()),
                        ..StepFacts::default()
                    },
                );
                return (index, task, Err(source));
            }
        };
        let warmth = acquired.warmth;
        if acquired.tier == Tier::Instance {
            counters.instances_ahead.fetch_add(1, Ordering::Relaxed);
        }
        let mut facts = StepFacts {
            warmth: Some(warmth),
            tier: Some(acquired.tier),
            late: acquired.late,
            wait_us: acquired.wait_us + service_wait,
            ..StepFacts::default()
        };
        tell(&spec, warmth, facts.wait_us);
        let nested = || -> Option<NestedCall> {
            let me = self.me.upgrade()?;
            let state = Arc::clone(state);
            Some(Arc::new(move |callee: &str, payload: &[u8]| {
                me.nested(&state, (index, task), depth + 1, callee, payload)
            }))
        };
        let mut instance = acquired.instance;
        let (result, run) = instance.run(
            input,
            &StepCall {
                handed_at,
                nested: &nested,
            },
        );
        let result_ns = handed_at.map(|handed| handed.elapsed().as_nanos() as u64);
        let end_us = self.now_us();
        // Given back for now; the planner settles how long it stays (the keep-alive).
        let worker = instance.finish(Instant::now() + PROVISIONAL_KEEP);
        self.send(Msg::End {
            task,
            spec: Arc::clone(&spec),
            invocation,
            at_us: end_us,
            worker,
        });
        facts.hop_ns = run.hop_ns.zip(result_ns);
        facts.run = run;
        facts.error = result.as_ref().err().map(ToString::to_string);
        // On the node's clock (a manual one in conformance tests), its wait included.
        record.duration_us = end_us.saturating_sub(start_us);
        self.count_and_record(&mut record, &facts, acquired.plan, &result);
        finish(&mut record, facts);
        (index, task, result)
    }

    /// Counts the step and writes its facts into its record (schema-v1 fields and
    /// `extra`, for the log and foreign readers).
    fn count_and_record(
        &self,
        record: &mut ExecutionRecord,
        facts: &StepFacts,
        plan: Option<u64>,
        result: &Result<Vec<u8>, StepError>,
    ) {
        let counters = &self.node.counters;
        let warmth = facts.warmth.unwrap_or(Warmth::Cold);
        record.cold = Some(warmth == Warmth::Cold);
        match warmth {
            Warmth::Cold => {
                record.cold_start_us = Some(facts.wait_us);
                counters.cold_steps.fetch_add(1, Ordering::Relaxed);
            }
            Warmth::Prewarmed => {
                counters.prewarmed_steps.fetch_add(1, Ordering::Relaxed);
                if facts.late {
                    counters.late_prewarms.fetch_add(1, Ordering::Relaxed);
                }
                record.chain = Some(plan.map_or("prewarmed".to_owned(), |p| format!("plan-{p}")));
            }
            Warmth::Warm => {}
        }
        let run = &facts.run;
        record.cpu_ms = run.cpu_ms;
        record.mem_peak_mib = run.mem_peak_mib;
        record.net_bytes = run.net_bytes;
        let extra = &mut record.extra;
        if let Some(limits) = &run.limits {
            extra.insert("limits".into(), Value::from(limits.as_str()));
        }
        if let Some(tier) = facts.tier {
            extra.insert("tier".into(), Value::from(tier.as_str()));
        }
        if let Some(stderr) = &run.stderr {
            extra.insert("stderr".into(), Value::from(stderr.as_str()));
        }
        if run.stderr_dropped_bytes > 0 {
            extra.insert(
                "stderr_dropped_bytes".into(),
                Value::from(run.stderr_dropped_bytes),
            );
        }
        if let Some(word) = facts.warmth_word() {
            extra.insert("warmth".into(), Value::from(word));
        }
        record.ready_wait_us = Some(facts.wait_us);
        if let Some((hop, with_result)) = facts.hop_ns {
            extra.insert("hop_ns".into(), Value::from(hop));
            extra.insert("hop_result_ns".into(), Value::from(with_result));
        }
        record.status = Some(match result {
            Ok(_) => Status::Ok,
            Err(source) => {
                counters.failed_steps.fetch_add(1, Ordering::Relaxed);
                if let Some(error) = &facts.error {
                    extra.insert("error".into(), Value::from(error.as_str()));
                }
                source.status()
            }
        });
    }
}

/// `@next NAME\nPAYLOAD` → (NAME, PAYLOAD).
pub fn parse_envelope(output: &[u8]) -> Option<(String, Vec<u8>)> {
    let rest = output.strip_prefix(b"@next ")?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    let name = std::str::from_utf8(&rest[..newline]).ok()?.trim();
    (!name.is_empty()).then(|| (name.to_owned(), rest[newline + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::parse_envelope;

    #[test]
    fn envelopes_name_the_next_step() {
        assert_eq!(
            parse_envelope(b"@next b\nhello"),
            Some(("b".into(), b"hello".to_vec()))
        );
        assert_eq!(parse_envelope(b"@next \nx"), None);
        assert_eq!(parse_envelope(b"plain output"), None);
        assert_eq!(parse_envelope(b"@next b"), None, "no payload separator");
    }
}
