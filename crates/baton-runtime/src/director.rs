//! The execution director: runs an invocation and hands each output straight to the next
//! step's worker on the same thread (a function call and a pipe write, no HTTP), tells the
//! policy what starts and ends and carries out its pre-warms and keep-alives, writes an
//! execution record for every step, and feeds each finished chain to the learner.
//!
//! The next step is named by a declared sequence, or by the output itself: an output that
//! begins with `@next NAME\n` continues at `NAME` with the rest as its payload.
//!
//! So far pre-warms start as soon as the policy asks (not at the planned instant): early
//! costs idle memory only, never a cold start.

use crate::manifest::FunctionKind;
use crate::pool::{Lease, WarmPool, Warmth};
use crate::process::WorkerError;
use crate::wasm::{WasmEngine, WasmError, WasmFunction};
use baton_core::context::Prev;
use baton_core::request::{Invocation, Request, Usage};
use baton_core::{Action, Policy, PolicyEvent, PredictContext, SnapshotCell, TaskId, Tdg};
use baton_trace::schema::{ExecutionRecord, Status};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Longest chain the director follows before refusing (a loop in the envelopes).
pub const MAX_HOPS: usize = 64;

/// Why one step failed, by backend.
#[derive(Debug, Error)]
pub enum StepError {
    /// A worker process.
    #[error(transparent)]
    Process(#[from] WorkerError),
    /// A wasm function.
    #[error(transparent)]
    Wasm(#[from] WasmError),
    /// A wasm function without a wasm engine in this director.
    #[error("function `{0}` is wasm but this director has no wasm engine")]
    NoWasmEngine(String),
}

impl StepError {
    fn status(&self) -> Status {
        let word = match self {
            StepError::Process(e) => e.status(),
            StepError::Wasm(e) => e.status(),
            StepError::NoWasmEngine(_) => "error",
        };
        match word {
            "timeout" => Status::Timeout,
            "oom" => Status::Oom,
            _ => Status::Error,
        }
    }
}

/// Pre-linked wasm functions by name, each flagged when a pre-warm loaded it and no call
/// has used it yet.
type LoadedWasm = HashMap<String, (Arc<WasmFunction>, bool)>;

/// A step's instance while it runs.
enum Running {
    Process(Lease),
    Wasm(Arc<WasmFunction>),
}

/// Why an invocation failed; the records of the steps that ran are kept.
#[derive(Debug, Error)]
pub enum DirectorError {
    /// A step failed.
    #[error("step {step} of the chain: {source}")]
    Step {
        /// Its index in the chain.
        step: usize,
        /// The backend's error.
        source: StepError,
        /// Records of every step that ran, the failed one included.
        records: Vec<ExecutionRecord>,
    },
    /// The chain did not end within [`MAX_HOPS`] steps.
    #[error("chain longer than {MAX_HOPS} steps; stopped")]
    TooLong {
        /// Records of the steps that ran.
        records: Vec<ExecutionRecord>,
    },
}

/// What one invocation produced.
#[derive(Debug)]
pub struct Outcome {
    /// The last step's output.
    pub output: Vec<u8>,
    /// One record per step, in order.
    pub records: Vec<ExecutionRecord>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs chains; share it behind an `Arc`.
pub struct Director {
    pool: Arc<WarmPool>,
    sequences: HashMap<String, Vec<String>>,
    learner: Mutex<Tdg>,
    graph: Arc<SnapshotCell>,
    policy: Mutex<Box<dyn Policy>>,
    origin: (Instant, u64),
    next_id: AtomicU64,
    log: Mutex<Vec<ExecutionRecord>>,
    wasm: Option<Arc<WasmEngine>>,
    /// Pre-linked wasm functions, and whether each was loaded by a pre-warm and not used yet.
    wasm_loaded: Arc<Mutex<LoadedWasm>>,
}

impl std::fmt::Debug for Director {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Director")
            .field("sequences", &self.sequences)
            .finish_non_exhaustive()
    }
}

impl Director {
    /// A director over `pool`, learning into `learner` (published through `graph`, which
    /// `policy` reads).
    pub fn new(
        pool: Arc<WarmPool>,
        learner: Tdg,
        graph: Arc<SnapshotCell>,
        policy: Box<dyn Policy>,
    ) -> Director {
        let epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Director {
            pool,
            sequences: HashMap::new(),
            learner: Mutex::new(learner),
            graph,
            policy: Mutex::new(policy),
            origin: (Instant::now(), epoch_us),
            next_id: AtomicU64::new(1),
            log: Mutex::new(Vec::new()),
            wasm: None,
            wasm_loaded: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Lets the director run wasm functions on `engine`.
    pub fn with_wasm(mut self, engine: Arc<WasmEngine>) -> Director {
        self.wasm = Some(engine);
        self
    }

    fn is_wasm(&self, name: &str) -> bool {
        self.pool
            .spec(name)
            .is_some_and(|s| matches!(s.kind, FunctionKind::Wasm { .. }))
    }

    /// Compiles (or loads from the cache) and pre-links a wasm function in the background.
    fn prewarm_wasm(&self, name: &str) {
        let (Some(engine), Some(spec)) = (self.wasm.clone(), self.pool.spec(name).cloned()) else {
            return;
        };
        if lock(&self.wasm_loaded).contains_key(name) {
            return;
        }
        let loaded = Arc::clone(&self.wasm_loaded);
        let name = name.to_owned();
        let _ = std::thread::Builder::new()
            .name(format!("baton-prewarm-{name}"))
            .spawn(move || {
                if let Ok(function) = engine.load(&spec) {
                    lock(&loaded)
                        .entry(name)
                        .or_insert((Arc::new(function), true));
                }
            });
    }

    /// The instance for a step: a pooled worker, or a pre-linked wasm function.
    fn acquire(&self, name: &str) -> Result<(Running, Warmth, u64), StepError> {
        if !self.is_wasm(name) {
            let lease = self.pool.take(name)?;
            let (warmth, wait_us) = (lease.warmth, lease.wait_us);
            return Ok((Running::Process(lease), warmth, wait_us));
        }
        let engine = self
            .wasm
            .as_ref()
            .ok_or_else(|| StepError::NoWasmEngine(name.to_owned()))?;
        if let Some((function, prewarmed)) = lock(&self.wasm_loaded).get_mut(name) {
            let warmth = if *prewarmed {
                Warmth::Prewarmed
            } else {
                Warmth::Warm
            };
            *prewarmed = false;
            return Ok((Running::Wasm(Arc::clone(function)), warmth, 0));
        }
        let started = Instant::now();
        let spec = self
            .pool
            .spec(name)
            .ok_or_else(|| StepError::NoWasmEngine(name.to_owned()))?;
        let function = Arc::new(engine.load(spec)?);
        lock(&self.wasm_loaded).insert(name.to_owned(), (Arc::clone(&function), false));
        Ok((
            Running::Wasm(function),
            Warmth::Cold,
            started.elapsed().as_micros() as u64,
        ))
    }

    /// Declares a sequence: invoking `name` runs `steps` in order.
    pub fn declare_sequence(&mut self, name: &str, steps: Vec<String>) {
        self.sequences.insert(name.to_owned(), steps);
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<WarmPool> {
        &self.pool
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<ExecutionRecord> {
        lock(&self.log).clone()
    }

    fn now_us(&self) -> u64 {
        self.origin.1 + self.origin.0.elapsed().as_micros() as u64
    }

    fn instant_of(&self, us: u64) -> Instant {
        self.origin.0 + Duration::from_micros(us.saturating_sub(self.origin.1))
    }

    fn task(&self, name: &str) -> TaskId {
        lock(&self.learner).intern_task(name)
    }

    fn task_name(&self, task: TaskId) -> String {
        lock(&self.learner).tasks().name(task.0).to_owned()
    }

    /// Tells the policy `event` and carries out what it asks; returns the keep-alive it set
    /// for `finished`, if any.
    fn tell(&self, event: PolicyEvent, finished: Option<TaskId>) -> Option<u64> {
        let mut actions = Vec::new();
        lock(&self.policy).on_event(&event, &mut actions);
        let mut keep = None;
        for action in actions {
            match action {
                Action::PreWarm { task, until_us, .. } => {
                    let name = self.task_name(task);
                    if self.is_wasm(&name) {
                        self.prewarm_wasm(&name);
                    } else {
                        self.pool.prewarm(&name, self.instant_of(until_us));
                    }
                }
                Action::KeepAlive { task, until_us } if Some(task) == finished => {
                    keep = Some(until_us);
                }
                Action::KeepAlive { .. } | Action::Release { .. } => {}
            }
        }
        keep
    }

    /// Runs `name` with `payload`, following the chain to its end.
    pub fn invoke(&self, name: &str, payload: &[u8]) -> Result<Outcome, DirectorError> {
        self.pool.expire(Instant::now());
        let trace = format!("r{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let steps: Vec<String> = self
            .sequences
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![name.to_owned()]);
        let mut records: Vec<ExecutionRecord> = Vec::new();
        let mut current = steps[0].clone();
        let mut input = payload.to_vec();
        let mut caller: Option<TaskId> = None;
        for step in 0..MAX_HOPS {
            let task = self.task(&current);
            let start_us = self.now_us();
            let acquired = self.acquire(&current);
            let invocation = format!("{trace}.{step}");
            let mut record = ExecutionRecord {
                ts_ns: start_us * 1_000,
                task: current.clone(),
                invocation: invocation.clone(),
                parent: records.last().map(|r| r.invocation.clone()),
                trace: Some(trace.clone()),
                ..ExecutionRecord::default()
            };
            let (mut running, warmth, wait_us) = match acquired {
                Ok(acquired) => acquired,
                Err(source) => {
                    record.status = Some(Status::Error);
                    record.cold = Some(true);
                    records.push(record);
                    return Err(self.fail(step, source, records));
                }
            };
            self.tell(
                PolicyEvent::Start {
                    task,
                    invocation: self.next_id.fetch_add(1, Ordering::Relaxed),
                    at_us: start_us,
                    context: PredictContext {
                        route: None,
                        prev: Prev::Start,
                        grand_caller: caller,
                        operation: None,
                    },
                    reveals_route: None,
                },
                None,
            );
            let ran = Instant::now();
            let result: Result<Vec<u8>, StepError> = match &mut running {
                Running::Process(lease) => lease.worker.invoke(&input).map_err(StepError::from),
                Running::Wasm(function) => self
                    .wasm
                    .as_ref()
                    .ok_or_else(|| StepError::NoWasmEngine(current.clone()))
                    .and_then(|engine| engine.invoke(function, &input).map_err(StepError::from)),
            };
            let end_us = self.now_us();
            record.duration_us = wait_us + ran.elapsed().as_micros() as u64;
            record.cold = Some(warmth == Warmth::Cold);
            if warmth == Warmth::Cold {
                record.cold_start_us = Some(wait_us);
            }
            if warmth == Warmth::Prewarmed {
                record.chain = Some("prewarmed".into());
            }
            let keep = self.tell(
                PolicyEvent::End {
                    task,
                    invocation: step as u64,
                    at_us: end_us,
                },
                Some(task),
            );
            if let (Some(until), Running::Process(lease)) = (keep, running) {
                self.pool
                    .give_back(&current, lease.worker, self.instant_of(until));
            }
            let output = match result {
                Ok(output) => output,
                Err(source) => {
                    record.status = Some(source.status());
                    records.push(record);
                    return Err(self.fail(step, source, records));
                }
            };
            record.status = Some(Status::Ok);
            records.push(record);
            caller = Some(task);
            let next = if let Some(next) = steps.get(step + 1) {
                Some((next.clone(), output.clone()))
            } else {
                parse_envelope(&output)
            };
            match next {
                Some((next, payload)) => {
                    current = next;
                    input = payload;
                }
                None => {
                    self.finish(&records);
                    return Ok(Outcome { output, records });
                }
            }
        }
        self.finish(&records);
        Err(DirectorError::TooLong { records })
    }

    fn fail(&self, step: usize, source: StepError, records: Vec<ExecutionRecord>) -> DirectorError {
        self.finish(&records);
        DirectorError::Step {
            step,
            source,
            records,
        }
    }

    /// Logs the chain's records and learns the chain, then publishes the graph.
    fn finish(&self, records: &[ExecutionRecord]) {
        lock(&self.log).extend(records.iter().cloned());
        let mut learner = lock(&self.learner);
        let invocations: Vec<Invocation> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let task = learner.intern_task(&r.task);
                let label = learner.intern_label(&r.task);
                Invocation {
                    task,
                    label,
                    parent: (i > 0).then(|| i as u32 - 1),
                    start_us: r.ts_ns / 1_000,
                    usage: Usage {
                        wall_us: r.duration_us,
                        cold_start_us: r.cold_start_us,
                        ..Usage::default()
                    },
                }
            })
            .collect();
        learner.observe_request(&Request::build(invocations).0);
        let snapshot = learner.snapshot();
        drop(learner);
        self.graph.publish(snapshot);
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
    use super::*;

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
