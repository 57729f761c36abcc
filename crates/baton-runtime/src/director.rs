//! The execution director: runs an invocation and hands each output straight to the next
//! step's instance on the same thread (a function call, or a pipe write to a warm worker;
//! no HTTP), and writes an execution record for every step.
//!
//! The next step is named by a declared sequence, or by the output itself: an output that
//! begins with `@next NAME\n` continues at `NAME` with the rest as its payload. A wasm
//! guest may also call another function synchronously with the `baton.invoke` import: a
//! nested call, recorded as a child of the caller.
//!
//! The request path carries no control plane: each step tells the planner
//! ([`crate::planner`]) that it started and ended (with the context the simulator gives the
//! policy: the caller, the operation, and the request's route once its entry's first call
//! reveals it) and hands it the finished request's records; the planner decides, reserves,
//! pre-warms, settles keep-alives, logs and learns on its own thread. Function ids are
//! read from an immutable map, not the learner.

use crate::manifest::{FunctionKind, FunctionSpec};
use crate::planner::{lock, LoadedWasm, Msg, Node, Planner, Started, CATCH_UP, PROVISIONAL_KEEP};
pub use crate::planner::{DirectorCounters, RecordSink, RecordSource};
use crate::pool::{Lease, WarmPool, Warmth};
use crate::process::WorkerError;
use crate::services::{ServiceError, Services};
use crate::trace_context::{SpanId, TraceId, TraceParent};
use crate::wasm::{NestedCall, WasmEngine, WasmError, WasmFunction};
use baton_core::clock::Clock;
use baton_core::context::Prev;
use baton_core::exec::Executor;
use baton_core::{LabelId, Policy, PredictContext, ResourcePool, SnapshotCell, TaskId, Tdg};
use baton_trace::schema::{ExecutionRecord, Status};
use serde_json::Value;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;
use thiserror::Error;

/// Longest chain (and deepest nesting) the director follows before refusing.
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
    /// An auxiliary service it needs.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A wasm function without a wasm engine in this director.
    #[error("function `{0}` is wasm but this director has no wasm engine")]
    NoWasmEngine(String),
    /// Nobody deployed a function of that name.
    #[error("unknown function `{0}`")]
    Unknown(String),
    /// Nested calls went deeper than [`MAX_HOPS`].
    #[error("nested calls deeper than {MAX_HOPS}")]
    TooDeep,
}

impl StepError {
    fn status(&self) -> Status {
        let word = match self {
            StepError::Process(e) => e.status(),
            StepError::Wasm(e) => e.status(),
            _ => "error",
        };
        match word {
            "timeout" => Status::Timeout,
            "oom" => Status::Oom,
            _ => Status::Error,
        }
    }
}

/// How a step's instance was obtained, beyond [`Warmth`].
#[derive(Debug, Clone)]
struct Obtained {
    /// The function's spec, looked up once per step.
    spec: Arc<FunctionSpec>,
    warmth: Warmth,
    /// Waiting for services, a cold start, or a pre-warm still starting, µs.
    wait_us: u64,
    plan: Option<u64>,
    late: bool,
}

/// A step's instance while it runs.
enum Running {
    Process(Box<Lease>),
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

impl DirectorError {
    /// The records of the steps that ran.
    pub fn records(&self) -> &[ExecutionRecord] {
        match self {
            DirectorError::Step { records, .. } | DirectorError::TooLong { records } => records,
        }
    }
}

/// What one invocation produced.
#[derive(Debug)]
pub struct Outcome {
    /// The last step's output.
    pub output: Vec<u8>,
    /// One record per step (nested calls included), in start order.
    pub records: Vec<ExecutionRecord>,
}

/// The records of one request while it runs, and its route once known.
struct RequestState {
    trace: String,
    records: Vec<ExecutionRecord>,
    route: Option<LabelId>,
}

/// What the planner is built from, until the director is shared (or first used unshared).
struct Setup {
    policy: Box<dyn Policy>,
    log: Option<BufWriter<File>>,
}

/// Runs chains. Build it, then [`Director::into_shared`] to start the planner's thread and
/// allow nested calls (unshared, the planner runs on the caller's thread and pre-warms
/// start at once).
pub struct Director {
    node: Arc<Node>,
    sequences: RwLock<HashMap<String, Vec<String>>>,
    next_id: AtomicU64,
    me: Weak<Director>,
    setup: Mutex<Option<Setup>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Director {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Director")
            .field("pool", &self.node.pool)
            .field("counters", &self.node.counters)
            .finish_non_exhaustive()
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        self.node.stop();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Director {
    /// A director over `pool`, learning into `learner` (published through `graph`, which
    /// `policy` reads). Each function's declared limits are told to the learner.
    pub fn new(
        pool: Arc<WarmPool>,
        learner: Tdg,
        graph: Arc<SnapshotCell>,
        policy: Box<dyn Policy>,
    ) -> Director {
        let functions = pool.functions();
        let director = Director {
            node: Arc::new(Node::new(pool, learner, graph)),
            sequences: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            me: Weak::new(),
            setup: Mutex::new(Some(Setup { policy, log: None })),
            thread: None,
        };
        for spec in functions {
            director.register(&spec);
        }
        director
    }

    /// The node, while nothing else holds it (building).
    fn node_mut(&mut self) -> &mut Node {
        Arc::get_mut(&mut self.node).expect("the node is shared only once the planner is built")
    }

    /// Lets the director run wasm functions on `engine`.
    pub fn with_wasm(mut self, engine: Arc<WasmEngine>) -> Director {
        self.node_mut().wasm = Some(engine);
        self
    }

    /// The resource pool the policy reserves in: pre-warmed workers run on the cores their
    /// reservation named, and unplanned steps take committed reservations in it.
    pub fn with_reservations(mut self, reservations: ResourcePool) -> Director {
        self.node_mut().reservations = Some(reservations);
        self
    }

    /// The auxiliary services functions may need.
    pub fn with_services(mut self, services: Services) -> Director {
        self.node_mut().services = Some(Arc::new(services));
        self
    }

    /// Appends every execution record to `path` (schema v1 JSONL), from the planner.
    pub fn with_log(self, path: &Path) -> std::io::Result<Director> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        if let Some(setup) = lock(&self.setup).as_mut() {
            setup.log = Some(BufWriter::new(file));
        }
        Ok(self)
    }

    /// Hands every finished request's records to `sink` (see [`RecordSink`]).
    pub fn with_sink(mut self, sink: RecordSink) -> Director {
        self.node_mut().sink = Some(sink);
        self
    }

    /// Tells the learner about `spec` and notes its ids.
    fn register(&self, spec: &FunctionSpec) {
        let ids = self.node.ids(&spec.name);
        lock(&self.node.learner).declare(ids.task, spec.limits);
    }

    /// Adds or replaces a function (a replaced wasm module is loaded anew).
    pub fn deploy(&self, spec: FunctionSpec) {
        self.register(&spec);
        lock(&self.node.wasm_loaded).remove(&spec.name);
        self.node.pool.deploy(spec);
    }

    /// Removes a function; returns whether it existed.
    pub fn undeploy(&self, name: &str) -> bool {
        lock(&self.node.wasm_loaded).remove(name);
        self.node.pool.remove(name)
    }

    /// The declared sequences, sorted by name.
    pub fn sequences(&self) -> Vec<(String, Vec<String>)> {
        let mut all: Vec<(String, Vec<String>)> = self
            .sequences
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort();
        all
    }

    /// Removes a sequence; returns whether it existed.
    pub fn remove_sequence(&self, name: &str) -> bool {
        self.sequences
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    /// Whether `name` is a sequence.
    pub fn is_sequence(&self, name: &str) -> bool {
        self.sequences
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    /// Declares a sequence: invoking `name` runs `steps` in order.
    pub fn declare_sequence(&self, name: &str, steps: Vec<String>) {
        self.sequences
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), steps);
    }

    /// The published graph.
    pub fn graph(&self) -> &Arc<SnapshotCell> {
        &self.node.graph
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<WarmPool> {
        &self.node.pool
    }

    /// The auxiliary services.
    pub fn services(&self) -> Option<&Arc<Services>> {
        self.node.services.as_ref()
    }

    /// The counts.
    pub fn counters(&self) -> &DirectorCounters {
        &self.node.counters
    }

    /// The last pre-warm jobs started, oldest first.
    pub fn prewarm_history(&self) -> Vec<Started> {
        lock(&self.node.history).iter().cloned().collect()
    }

    /// Pre-warm jobs waiting for their instant.
    pub fn pending_prewarms(&self) -> usize {
        self.node.pending.load(Ordering::Relaxed)
    }

    /// The clock records and the policy use, µs since the epoch.
    pub fn now_us(&self) -> u64 {
        self.node.clock.now_us()
    }

    /// Runs `f` on the learner once it has learned every request finished before the call,
    /// while no request can be learned (for consistent snapshots).
    pub fn with_learner<T>(&self, f: impl FnOnce(&Tdg) -> T) -> T {
        self.sync();
        f(&lock(&self.node.learner))
    }

    /// Waits until the planner has handled everything sent before (steps, finished
    /// requests).
    pub fn sync(&self) {
        self.ensure_inline_planner();
        self.node.sync();
    }

    /// Learns foreign execution records (grouped into requests by trace and parent links),
    /// hands them to the sink, and publishes the graph; returns how many requests.
    pub fn learn_records(&self, records: &[ExecutionRecord]) -> u64 {
        let mut learner = lock(&self.node.learner);
        let (requests, report) = baton_trace::requests::group_requests(
            records,
            &mut learner,
            baton_trace::requests::TimeWindow::default(),
        );
        for request in &requests {
            learner.observe_request(request);
        }
        if let Some(sink) = &self.node.sink {
            sink(records, RecordSource::Ingested);
        }
        self.node.publish(learner);
        report.requests
    }

    /// Shares the director and starts the planner's thread (pre-warms at their planned
    /// instant, housekeeping).
    pub fn into_shared(self) -> std::io::Result<Arc<Director>> {
        let setup = lock(&self.setup).take();
        let mut started: std::io::Result<()> = Ok(());
        let director = Arc::new_cyclic(|me: &Weak<Director>| {
            let mut director = self;
            director.me = me.clone();
            if let Some(setup) = setup {
                let planner = Planner::new(
                    Arc::clone(&director.node),
                    Executor::new(setup.policy),
                    setup.log,
                );
                match planner.spawn() {
                    Ok(thread) => director.thread = Some(thread),
                    Err(error) => started = Err(error),
                }
            }
            director
        });
        started.map(|()| director)
    }

    /// An unshared director builds its planner on first use (it runs inline).
    fn ensure_inline_planner(&self) {
        if let Some(setup) = lock(&self.setup).take() {
            *lock(&self.node.inline) = Some(Planner::new(
                Arc::clone(&self.node),
                Executor::new(setup.policy),
                setup.log,
            ));
        }
    }

    /// Lets the planner catch up before a step starts an instance itself (see
    /// [`Msg::Needed`]): only on the path that would otherwise start cold.
    fn catch_up(&self, name: &str) {
        let (done, wait) = std::sync::mpsc::channel();
        self.send(Msg::Needed(name.to_owned(), done));
        let _ = wait.recv_timeout(CATCH_UP);
    }

    fn send(&self, message: Msg) {
        self.ensure_inline_planner();
        self.node.send(message);
    }

    /// The instance for a step: a pooled worker, or a pre-linked wasm function; with how it
    /// was obtained, the wait, and the plan that pre-warmed it.
    fn acquire(&self, name: &str) -> Result<(Running, Obtained), StepError> {
        let spec = self
            .node
            .pool
            .spec(name)
            .ok_or_else(|| StepError::Unknown(name.to_owned()))?;
        let service_wait = Node::ensure_services(self.node.services.as_deref(), &spec)?;
        if !matches!(spec.kind, FunctionKind::Wasm { .. }) {
            if self.node.pool.idle_count(name) == 0 {
                self.catch_up(name);
            }
            let lease = self.node.pool.take(name)?;
            let obtained = Obtained {
                spec,
                warmth: lease.warmth,
                wait_us: lease.wait_us + service_wait,
                plan: lease.plan,
                late: lease.waited_for_prewarm,
            };
            return Ok((Running::Process(Box::new(lease)), obtained));
        }
        let engine = self
            .node
            .wasm
            .as_ref()
            .ok_or_else(|| StepError::NoWasmEngine(name.to_owned()))?;
        for attempt in 0..2 {
            if let Some(loaded) = lock(&self.node.wasm_loaded).get_mut(name) {
                let (warmth, plan) = match loaded.prewarmed.take() {
                    Some(plan) => (Warmth::Prewarmed, plan),
                    None => (Warmth::Warm, None),
                };
                return Ok((
                    Running::Wasm(Arc::clone(&loaded.function)),
                    Obtained {
                        spec,
                        warmth,
                        wait_us: service_wait,
                        plan,
                        late: false,
                    },
                ));
            }
            if attempt == 0 {
                self.catch_up(name);
            }
        }
        let started = Instant::now();
        let function = Arc::new(engine.load(&spec)?);
        self.node.pool.note_cold_start(name, started.elapsed());
        lock(&self.node.wasm_loaded).insert(
            name.to_owned(),
            LoadedWasm {
                function: Arc::clone(&function),
                prewarmed: None,
            },
        );
        Ok((
            Running::Wasm(function),
            Obtained {
                spec,
                warmth: Warmth::Cold,
                wait_us: service_wait + started.elapsed().as_micros() as u64,
                plan: None,
                late: false,
            },
        ))
    }

    /// Runs `name` with `payload`, following the chain to its end, as a new trace.
    pub fn invoke(&self, name: &str, payload: &[u8]) -> Result<Outcome, DirectorError> {
        self.invoke_traced(name, payload, None)
    }

    /// [`Director::invoke`] continuing the caller's trace when `caller` is given: the
    /// records carry its trace id; each step gets a fresh span id.
    pub fn invoke_traced(
        &self,
        name: &str,
        payload: &[u8],
        caller: Option<TraceParent>,
    ) -> Result<Outcome, DirectorError> {
        self.node
            .counters
            .invocations
            .fetch_add(1, Ordering::Relaxed);
        if self.thread.is_none() {
            self.node.pool.expire(Instant::now());
        }
        let trace = caller
            .map_or_else(TraceId::random, |caller| caller.trace)
            .to_string();
        let steps: Vec<String> = self
            .sequences
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![name.to_owned()]);
        let state = Arc::new(Mutex::new(RequestState {
            trace,
            records: Vec::new(),
            route: None,
        }));
        let mut current = steps[0].clone();
        let mut input = payload.to_vec();
        let mut parent: Option<(usize, TaskId)> = None;
        let mut handed_at: Option<Instant> = None;
        for hop in 0..MAX_HOPS {
            let (index, task, result) =
                self.run_step(&state, &current, &input, parent, handed_at, 0);
            let output = match result {
                Ok(output) => output,
                Err(source) => {
                    let records = self.finish(&state);
                    return Err(DirectorError::Step {
                        step: hop,
                        source,
                        records,
                    });
                }
            };
            handed_at = Some(Instant::now());
            parent = Some((index, task));
            let next = if let Some(next) = steps.get(hop + 1) {
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
                    let records = self.finish(&state);
                    return Ok(Outcome { output, records });
                }
            }
        }
        let records = self.finish(&state);
        Err(DirectorError::TooLong { records })
    }

    /// A nested call from a guest: runs `name` as a child of record `parent`.
    fn nested(
        &self,
        state: &Arc<Mutex<RequestState>>,
        parent: (usize, TaskId),
        depth: usize,
        name: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        if depth >= MAX_HOPS {
            return Err(StepError::TooDeep.to_string());
        }
        let (_, _, result) = self.run_step(
            state,
            name,
            payload,
            Some(parent),
            Some(Instant::now()),
            depth,
        );
        result.map_err(|e| e.to_string())
    }

    /// Runs one step; returns its record's index, its task and its output.
    fn run_step(
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
            (index, context, reveals_route)
        };
        let finish = |record: &mut ExecutionRecord| {
            let mut request = lock(state);
            let slot = &mut request.records[index];
            record.ts_ns = slot.ts_ns;
            record.task = std::mem::take(&mut slot.task);
            record.invocation = std::mem::take(&mut slot.invocation);
            record.parent = slot.parent.take();
            record.trace = slot.trace.take();
            *slot = std::mem::take(record);
        };
        let mut record = ExecutionRecord::default();
        let (running, obtained) = match self.acquire(name) {
            Ok(acquired) => acquired,
            Err(source) => {
                counters.failed_steps.fetch_add(1, Ordering::Relaxed);
                record.status = Some(Status::Error);
                record.cold = Some(true);
                finish(&mut record);
                return (index, task, Err(source));
            }
        };
        let Obtained {
            spec,
            warmth,
            wait_us,
            plan,
            late,
        } = obtained;
        // The planner reserves for a step nobody planned (preempting speculation).
        let invocation = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(Msg::Start {
            task,
            invocation,
            at_us: start_us,
            context,
            reveals_route,
            planned: warmth == Warmth::Prewarmed,
            needs: (spec.limits, spec.timeout_ms * 1000),
        });
        let ran = Instant::now();
        let mut running = running;
        let mut hop_ns = None;
        let result: Result<Vec<u8>, StepError> = match &mut running {
            Running::Process(lease) => {
                record
                    .extra
                    .insert("limits".into(), Value::from(lease.worker.limits()));
                if let Some(handed) = handed_at {
                    hop_ns = Some(handed.elapsed().as_nanos() as u64);
                }
                let result = lease.worker.invoke(input).map_err(StepError::from);
                let output = lease.worker.take_output();
                if !output.text.is_empty() {
                    record
                        .extra
                        .insert("stderr".into(), Value::from(output.text));
                }
                if output.dropped_bytes > 0 {
                    record.extra.insert(
                        "stderr_dropped_bytes".into(),
                        Value::from(output.dropped_bytes),
                    );
                }
                let (cpu_ms, peak_bytes) = lease.worker.usage_of_last_invocation();
                record.cpu_ms = cpu_ms;
                record.mem_peak_mib = peak_bytes.map(|b| b as f64 / (1 << 20) as f64);
                if let Ok(output) = &result {
                    record.net_bytes = Some((input.len() + output.len()) as u64);
                }
                result
            }
            Running::Wasm(function) => {
                let nested: Option<NestedCall> = self.me.upgrade().map(|me| {
                    let state = Arc::clone(state);
                    let call: NestedCall = Arc::new(move |callee: &str, payload: &[u8]| {
                        me.nested(&state, (index, task), depth + 1, callee, payload)
                    });
                    call
                });
                match self.node.wasm.as_ref() {
                    None => Err(StepError::NoWasmEngine(name.to_owned())),
                    Some(engine) => match engine.run(function, input, nested) {
                        Ok(run) => {
                            if let (Some(handed), Some(taken)) = (handed_at, run.input_taken) {
                                hop_ns =
                                    Some(taken.saturating_duration_since(handed).as_nanos() as u64);
                            }
                            record.mem_peak_mib = Some(run.memory_bytes as f64 / (1 << 20) as f64);
                            record.net_bytes =
                                Some((input.len() + run.output.len()) as u64 + run.moved_bytes);
                            Ok(run.output)
                        }
                        Err(error) => Err(error.into()),
                    },
                }
            }
        };
        let result_ns = handed_at.map(|handed| handed.elapsed().as_nanos() as u64);
        let end_us = self.now_us();
        record.duration_us = wait_us + ran.elapsed().as_micros() as u64;
        record.cold = Some(warmth == Warmth::Cold);
        if warmth == Warmth::Cold {
            record.cold_start_us = Some(wait_us);
            counters.cold_steps.fetch_add(1, Ordering::Relaxed);
        }
        if warmth == Warmth::Prewarmed {
            counters.prewarmed_steps.fetch_add(1, Ordering::Relaxed);
            record.chain = Some(plan.map_or("prewarmed".to_owned(), |p| format!("plan-{p}")));
        }
        let warmth_word = match warmth {
            Warmth::Cold => "cold",
            Warmth::Warm => "warm",
            Warmth::Prewarmed if late => "prewarm-late",
            Warmth::Prewarmed => "prewarmed",
        };
        if warmth == Warmth::Prewarmed && late {
            counters.late_prewarms.fetch_add(1, Ordering::Relaxed);
        }
        record
            .extra
            .insert("warmth".into(), Value::from(warmth_word));
        record
            .extra
            .insert("ready_wait_us".into(), Value::from(wait_us));
        if let (Some(hop), Some(with_result)) = (hop_ns, result_ns) {
            record.extra.insert("hop_ns".into(), Value::from(hop));
            record
                .extra
                .insert("hop_result_ns".into(), Value::from(with_result));
        }
        // Given back for now; the planner settles how long it stays (the keep-alive).
        let worker = match running {
            Running::Process(lease) => {
                let lease = *lease;
                self.node
                    .pool
                    .give_back(name, lease.worker, Instant::now() + PROVISIONAL_KEEP)
            }
            Running::Wasm(_) => None,
        };
        self.send(Msg::End {
            task,
            function: name.to_owned(),
            invocation,
            at_us: end_us,
            worker,
        });
        record.status = Some(match &result {
            Ok(_) => Status::Ok,
            Err(source) => {
                counters.failed_steps.fetch_add(1, Ordering::Relaxed);
                source.status()
            }
        });
        if let Err(source) = &result {
            record
                .extra
                .insert("error".into(), Value::from(source.to_string()));
        }
        finish(&mut record);
        (index, task, result)
    }

    /// Hands the request's records to the planner (log, learning, sink) and returns them.
    fn finish(&self, state: &Arc<Mutex<RequestState>>) -> Vec<ExecutionRecord> {
        let records = std::mem::take(&mut lock(state).records);
        self.send(Msg::Finished(records.clone()));
        records
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
