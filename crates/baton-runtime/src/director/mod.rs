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

mod sequences;

use crate::backend::Backend;
pub use crate::backend::{RunFacts, StepError, Tier, MAX_HOPS};
pub use crate::counters::Counters;
use crate::manifest::FunctionSpec;
use crate::node::{lock, Node};
pub use crate::node::{Mark, RecordSink, RecordSource};
use crate::planner::{Msg, Planner, Started};
use crate::pool::WarmPool;
use crate::services::Services;
pub use crate::step::{parse_envelope, StepFacts};
use crate::trace_context::{TraceId, TraceParent};
use crate::wasm::WasmEngine;
use baton_core::clock::ManualClock;
use baton_core::exec::{Decision, Executor};
use baton_core::sync::UnpoisonedRw;
use baton_core::{LabelId, Policy, ResourcePool, SnapshotCell, TaskId, Tdg};
use baton_trace::schema::ExecutionRecord;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use thiserror::Error;

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
        /// Every step that ran, the failed one included.
        ran: Box<Ran>,
    },
    /// The chain did not end within [`MAX_HOPS`] steps.
    #[error("chain longer than {MAX_HOPS} steps; stopped")]
    TooLong {
        /// The steps that ran.
        ran: Box<Ran>,
    },
    /// A sequence with no steps, or more than [`MAX_HOPS`] (none is declared so; one
    /// could come from an old store or another node's registry).
    #[error("sequence `{name}` has {steps} steps; a sequence has 1 to {MAX_HOPS}")]
    BadSequence {
        /// The sequence.
        name: String,
        /// How many steps it has.
        steps: usize,
    },
}

/// The steps of a failed invocation that ran.
#[derive(Debug, Default)]
pub struct Ran {
    /// Their records.
    pub records: Vec<ExecutionRecord>,
    /// Their typed facts.
    pub steps: Vec<StepFacts>,
}

impl DirectorError {
    /// The records of the steps that ran.
    pub fn records(&self) -> &[ExecutionRecord] {
        match self {
            DirectorError::Step { ran, .. } | DirectorError::TooLong { ran } => &ran.records,
            DirectorError::BadSequence { .. } => &[],
        }
    }

    /// The typed facts of the steps that ran.
    pub fn steps(&self) -> &[StepFacts] {
        match self {
            DirectorError::Step { ran, .. } | DirectorError::TooLong { ran } => &ran.steps,
            DirectorError::BadSequence { .. } => &[],
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
    /// The typed facts of each step, in the records' order.
    pub steps: Vec<StepFacts>,
}

/// The records of one request while it runs, and its route once known.
pub(crate) struct RequestState {
    pub(crate) trace: String,
    pub(crate) records: Vec<ExecutionRecord>,
    pub(crate) steps: Vec<StepFacts>,
    pub(crate) route: Option<LabelId>,
}

/// What the planner is built from, until the director is shared (or first used unshared).
struct Setup {
    policy: Box<dyn Policy>,
    log: Option<BufWriter<File>>,
    keep_trail: bool,
}

impl Setup {
    fn planner(self, node: &Arc<Node>) -> Planner {
        let mut executor = Executor::new(self.policy);
        if self.keep_trail {
            executor.keep_trail();
        }
        Planner::new(Arc::clone(node), executor, self.log)
    }
}

/// Runs chains. Build it, then [`Director::into_shared`] to start the planner's thread and
/// allow nested calls (unshared, the planner runs on the caller's thread and pre-warms
/// start at once).
pub struct Director {
    pub(crate) node: Arc<Node>,
    sequences: RwLock<HashMap<String, Vec<String>>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) me: Weak<Director>,
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
        // An inline planner holds the node holding it: taken out, it goes (with its plans).
        let inline = lock(&self.node.inline).take();
        drop(inline);
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
            setup: Mutex::new(Some(Setup {
                policy,
                log: None,
                keep_trail: false,
            })),
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
        self.node_mut().wasm.engine = Some(engine);
        self
    }

    /// The resource pool the policy reserves in: pre-warmed workers run on the cores their
    /// reservation named, and unplanned steps take committed reservations in it.
    pub fn with_reservations(mut self, reservations: ResourcePool) -> Director {
        self.node_mut().reservations = Some(reservations);
        self
    }

    /// Mines callers for the calls that name none (a log of caller-less records, or
    /// functions invoked one by one) before learning them (see `baton_core::mining`).
    pub fn with_miner(mut self, config: baton_core::mining::MinerConfig) -> Director {
        *lock(&self.node_mut().miner) = Some(baton_core::mining::Miner::new(config));
        self
    }

    /// The auxiliary services functions may need.
    pub fn with_services(mut self, services: Services) -> Director {
        let services = Some(Arc::new(services));
        let node = self.node_mut();
        node.process.services = services.clone();
        node.wasm.services = services;
        self
    }

    /// Runs on `clock`, which moves only when told: records, the policy and the planner
    /// use its time, and the planner runs inline, carrying out pre-warms and housekeeping
    /// ticks in time order as the clock moves (the simulator's discipline; for
    /// conformance tests).
    pub fn with_manual_clock(mut self, clock: Arc<ManualClock>) -> Director {
        self.node_mut().manual = Some(clock);
        self
    }

    /// Runs every function on `backend` instead of the backend of its kind (tests).
    pub fn with_backend(mut self, backend: Arc<dyn Backend>) -> Director {
        self.node_mut().custom = Some(backend);
        self
    }

    /// Keeps every decision the planner's executor makes, for [`Director::decisions`].
    pub fn keep_decisions(self) -> Director {
        if let Some(setup) = lock(&self.setup).as_mut() {
            setup.keep_trail = true;
        }
        self
    }

    /// The decisions made since the last call, with their times (with
    /// [`Director::keep_decisions`]; empty otherwise).
    pub fn decisions(&self) -> Vec<(u64, Decision)> {
        let (done, wait) = std::sync::mpsc::channel();
        self.send(Msg::Trail(done));
        wait.recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_default()
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

    /// Adds or replaces a function (a replaced wasm module is loaded anew) and prepares it
    /// in the background (see [`Director::prepare`]).
    pub fn deploy(&self, spec: FunctionSpec) {
        self.register(&spec);
        self.node.wasm.forget(&spec.name);
        let name = spec.name.clone();
        self.node.pool.deploy(spec);
        if let Some(spec) = self.node.pool.spec(&name) {
            self.node.backend(&spec).prepare(Arc::clone(&spec));
        }
    }

    /// The wasm functions compiled and linked in memory now, by name.
    pub fn loaded_modules(&self) -> Vec<String> {
        self.node.wasm.loaded_names()
    }

    /// Makes every deployed function ready ahead, in the background: a wasm module
    /// compiled, linked and instantiated (its first step is then an instantiation, not a
    /// cold start), a Python function's template started (its first worker is then a fork).
    pub fn prepare(&self) {
        for spec in self.node.pool.functions() {
            self.node.backend(&spec).prepare(Arc::clone(&spec));
        }
    }

    /// Removes a function; returns whether it existed.
    pub fn undeploy(&self, name: &str) -> bool {
        self.node.wasm.forget(name);
        self.node.pool.remove(name)
    }

    /// Forgets what the graph learned of `name` (a removed function: nothing calls it any
    /// more) and publishes the graph without it. Returns whether it was in the graph.
    pub fn forget_task(&self, name: &str) -> bool {
        self.sync();
        let mut learner = lock(&self.node.learner);
        let known = learner.forget(name);
        self.node.publish(learner);
        known
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
        self.node.services()
    }

    /// The counts.
    pub fn counters(&self) -> &Counters {
        &self.node.counters
    }

    /// The last pre-warm jobs started, oldest first.
    pub fn prewarm_history(&self) -> Vec<Started> {
        lock(&self.node.history).iter().cloned().collect()
    }

    /// The planner's lag at each quantile of `qs` over the latest step starts and ends (up
    /// to 4,096): from a step's start (end) to the planner having carried out what the
    /// policy decided there (empty before any). A step of a function whose pre-warm is due at
    /// once that comes within it starts its own instance.
    pub fn planner_lags(&self, qs: &[f64]) -> Vec<Duration> {
        let mut lags: Vec<u64> = lock(&self.node.planner_lag_us).iter().copied().collect();
        lags.sort_unstable();
        qs.iter()
            .filter_map(|&q| baton_core::rank::nearest_rank(&lags, q))
            .map(Duration::from_micros)
            .collect()
    }

    /// Pre-warm jobs waiting for their instant.
    pub fn pending_prewarms(&self) -> usize {
        self.node.pending.load(Ordering::Relaxed)
    }

    /// The clock records and the policy use, µs since the epoch.
    pub fn now_us(&self) -> u64 {
        self.node.now_us()
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
    /// hands them to the sink with `mark` (see [`Mark`]), and publishes the graph; returns
    /// how many requests.
    pub fn learn_records(
        &self,
        records: &[ExecutionRecord],
        mark: Option<&Mark>,
    ) -> baton_trace::requests::GroupReport {
        let mut learner = lock(&self.node.learner);
        let requests = self
            .node
            .learn(&mut learner, records, RecordSource::Ingested, mark);
        self.node.publish(learner);
        requests
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
                let planner = setup.planner(&director.node);
                if director.node.manual.is_some() {
                    // Manual time: the planner runs inline, in time order.
                    *lock(&director.node.inline) = Some(planner);
                } else {
                    match planner.spawn() {
                        Ok(thread) => director.thread = Some(thread),
                        Err(error) => started = Err(error),
                    }
                }
            }
            director
        });
        started.map(|()| director)
    }

    /// An unshared director builds its planner on first use (it runs inline).
    fn ensure_inline_planner(&self) {
        if let Some(setup) = lock(&self.setup).take() {
            *lock(&self.node.inline) = Some(setup.planner(&self.node));
        }
    }

    pub(crate) fn send(&self, message: Msg) {
        self.ensure_inline_planner();
        self.node.send(message);
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
            .read_unpoisoned()
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![name.to_owned()]);
        let state = Arc::new(Mutex::new(RequestState {
            trace,
            records: Vec::new(),
            steps: Vec::new(),
            route: None,
        }));
        let Some(mut current) = steps.first().cloned() else {
            return Err(DirectorError::BadSequence {
                name: name.to_owned(),
                steps: 0,
            });
        };
        let mut input = payload.to_vec();
        let mut parent: Option<(usize, TaskId)> = None;
        let mut handed_at: Option<Instant> = None;
        for hop in 0..MAX_HOPS {
            let (index, task, result) =
                self.run_step(&state, &current, &input, parent, handed_at, 0);
            let output = match result {
                Ok(output) => output,
                Err(source) => {
                    let (records, steps) = self.finish(&state);
                    return Err(DirectorError::Step {
                        step: hop,
                        source,
                        ran: Box::new(Ran { records, steps }),
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
                    let (records, steps) = self.finish(&state);
                    return Ok(Outcome {
                        output,
                        records,
                        steps,
                    });
                }
            }
        }
        let (records, steps) = self.finish(&state);
        Err(DirectorError::TooLong {
            ran: Box::new(Ran { records, steps }),
        })
    }

    /// A nested call from a guest: runs `name` as a child of record `parent`.
    pub(crate) fn nested(
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

    /// Hands the request's records to the planner (log, learning, sink) and returns them.
    fn finish(&self, state: &Arc<Mutex<RequestState>>) -> (Vec<ExecutionRecord>, Vec<StepFacts>) {
        let (records, steps) = {
            let mut state = lock(state);
            (
                std::mem::take(&mut state.records),
                std::mem::take(&mut state.steps),
            )
        };
        self.send(Msg::Finished(records.clone()));
        (records, steps)
    }
}
