//! The execution director: runs an invocation and hands each output straight to the next
//! step's instance on the same thread (a function call, or a pipe write to a warm worker;
//! no HTTP), tells the policy what starts and ends and carries out what it asks through the
//! proactive allocator, writes an execution record for every step (kept, appended to the
//! log file, and learned when the request ends).
//!
//! The next step is named by a declared sequence, or by the output itself: an output that
//! begins with `@next NAME\n` continues at `NAME` with the rest as its payload. A wasm
//! guest may also call another function synchronously with the `baton.invoke` import: a
//! nested call, recorded as a child of the caller.
//!
//! Pre-warms are carried out at their planned instant (ready just before the step's
//! expected start, see [`crate::alloc`]), on the cores the step's reservation named, after
//! the auxiliary services the function needs are ready. A step nobody planned for takes a
//! committed reservation, which preempts speculative ones when the pool is full.

use crate::alloc::{start_instant, PrewarmJob, Scheduler};
use crate::manifest::{FunctionKind, FunctionSpec};
use crate::pool::{Lease, WarmPool, Warmth};
use crate::process::{Placement, WorkerError};
use crate::services::{ServiceError, Services};
use crate::trace_context::{SpanId, TraceId, TraceParent};
use crate::wasm::{NestedCall, WasmEngine, WasmError, WasmFunction};
use baton_core::context::Prev;
use baton_core::pool::{ReservationKind, ReservationRequest, Window};
use baton_core::{
    Action, Policy, PolicyEvent, PredictContext, ResourcePool, SnapshotCell, TaskId, Tdg,
};
use baton_trace::schema::{ExecutionRecord, Status};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Longest chain (and deepest nesting) the director follows before refusing.
pub const MAX_HOPS: usize = 64;

/// Records kept in memory (the log file keeps all).
pub const MAX_KEPT_RECORDS: usize = 100_000;

/// Hop latencies kept for reports (ns).
const HOP_SAMPLES: usize = 4096;

/// At most one graph snapshot is published per this interval while requests stream in; the
/// allocator's clock publishes what is left (a snapshot costs time in the graph's size).
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// How often the allocator thread expires idle instances and ticks the policy.
const HOUSEKEEPING: Duration = Duration::from_millis(50);

/// Cold start assumed for a function never started yet.
const DEFAULT_COLD_PROCESS: Duration = Duration::from_millis(150);
/// Compile-or-load time assumed for a wasm function never loaded yet.
const DEFAULT_COLD_WASM: Duration = Duration::from_millis(20);

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

/// A pre-linked wasm function and, while unused, the plan that pre-warmed it.
struct LoadedWasm {
    function: Arc<WasmFunction>,
    prewarmed: Option<Option<u64>>,
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

/// Counts of the director's work.
#[derive(Debug, Default)]
pub struct DirectorCounters {
    /// Invocations (requests) run.
    pub invocations: AtomicU64,
    /// Steps run, nested ones included.
    pub steps: AtomicU64,
    /// Steps that started cold.
    pub cold_steps: AtomicU64,
    /// Steps served by an instance a pre-warm made.
    pub prewarmed_steps: AtomicU64,
    /// Of those, steps that had to wait for their pre-warm to finish (it started late).
    pub late_prewarms: AtomicU64,
    /// Steps that failed.
    pub failed_steps: AtomicU64,
    /// Pre-warms carried out (process and wasm).
    pub prewarms: AtomicU64,
    /// Of those, pre-warms an idle worker already covered (its deadline was extended).
    pub prewarms_covered: AtomicU64,
    /// Committed reservations that preempted speculative ones.
    pub preemptions: AtomicU64,
}

/// The records of one request while it runs.
struct RequestState {
    trace: String,
    records: Vec<ExecutionRecord>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Execution records: the last [`MAX_KEPT_RECORDS`] in memory, all in the log file.
struct RecordLog {
    kept: VecDeque<ExecutionRecord>,
    file: Option<BufWriter<File>>,
    write_errors: u64,
}

/// Receives every finished request's records while the learner is locked, so whatever it
/// persists is exactly what the learner has seen (a snapshot taken with
/// [`Director::with_learner`] matches the records persisted before it).
pub type RecordSink = Box<dyn Fn(&[ExecutionRecord], RecordSource) + Send + Sync>;

/// Where records came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSource {
    /// Executions this director ran.
    Baton,
    /// Foreign logs it learned.
    Ingested,
}

impl RecordSource {
    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordSource::Baton => "baton",
            RecordSource::Ingested => "ingested",
        }
    }
}

/// Runs chains. Build it, then [`Director::into_shared`] to start the allocator's clock
/// and allow nested calls.
pub struct Director {
    pool: Arc<WarmPool>,
    sequences: RwLock<HashMap<String, Vec<String>>>,
    learner: Mutex<Tdg>,
    graph: Arc<SnapshotCell>,
    policy: Mutex<Box<dyn Policy>>,
    reservations: Option<ResourcePool>,
    services: Option<Arc<Services>>,
    scheduler: Option<Scheduler>,
    origin: (Instant, u64),
    next_id: AtomicU64,
    log: Mutex<RecordLog>,
    hops: Mutex<VecDeque<u64>>,
    wasm: Option<Arc<WasmEngine>>,
    wasm_loaded: Arc<Mutex<HashMap<String, LoadedWasm>>>,
    wasm_load_us: Mutex<HashMap<String, u64>>,
    me: Weak<Director>,
    sink: Option<RecordSink>,
    /// When the graph was last published, and whether the learner has learned since.
    published: Mutex<(Option<Instant>, bool)>,
    /// The counts.
    pub counters: DirectorCounters,
}

impl std::fmt::Debug for Director {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Director")
            .field("pool", &self.pool)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Director {
    /// A director over `pool`, learning into `learner` (published through `graph`, which
    /// `policy` reads). Each function's declared limits are told to the learner.
    pub fn new(
        pool: Arc<WarmPool>,
        mut learner: Tdg,
        graph: Arc<SnapshotCell>,
        policy: Box<dyn Policy>,
    ) -> Director {
        for spec in pool.functions() {
            let task = learner.intern_task(&spec.name);
            learner.declare(task, spec.limits);
        }
        let epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Director {
            pool,
            sequences: RwLock::new(HashMap::new()),
            learner: Mutex::new(learner),
            graph,
            policy: Mutex::new(policy),
            reservations: None,
            services: None,
            scheduler: None,
            origin: (Instant::now(), epoch_us),
            next_id: AtomicU64::new(1),
            log: Mutex::new(RecordLog {
                kept: VecDeque::new(),
                file: None,
                write_errors: 0,
            }),
            hops: Mutex::new(VecDeque::new()),
            wasm: None,
            wasm_loaded: Arc::new(Mutex::new(HashMap::new())),
            wasm_load_us: Mutex::new(HashMap::new()),
            me: Weak::new(),
            sink: None,
            published: Mutex::new((None, false)),
            counters: DirectorCounters::default(),
        }
    }

    /// Lets the director run wasm functions on `engine`.
    pub fn with_wasm(mut self, engine: Arc<WasmEngine>) -> Director {
        self.wasm = Some(engine);
        self
    }

    /// The resource pool the policy reserves in: pre-warmed workers run on the cores their
    /// reservation named, and unplanned steps take committed reservations in it.
    pub fn with_reservations(mut self, reservations: ResourcePool) -> Director {
        self.reservations = Some(reservations);
        self
    }

    /// The auxiliary services functions may need.
    pub fn with_services(mut self, services: Services) -> Director {
        self.services = Some(Arc::new(services));
        self
    }

    /// Appends every execution record to `path` (schema v1 JSONL).
    pub fn with_log(self, path: &Path) -> std::io::Result<Director> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        lock(&self.log).file = Some(BufWriter::new(file));
        Ok(self)
    }

    /// Hands every finished request's records to `sink` (see [`RecordSink`]).
    pub fn with_sink(mut self, sink: RecordSink) -> Director {
        self.sink = Some(sink);
        self
    }

    /// Adds or replaces a function (a replaced wasm module is loaded anew).
    pub fn deploy(&self, spec: FunctionSpec) {
        {
            let mut learner = lock(&self.learner);
            let task = learner.intern_task(&spec.name);
            learner.declare(task, spec.limits);
        }
        lock(&self.wasm_loaded).remove(&spec.name);
        self.pool.deploy(spec);
    }

    /// Removes a function; returns whether it existed.
    pub fn undeploy(&self, name: &str) -> bool {
        lock(&self.wasm_loaded).remove(name);
        self.pool.remove(name)
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

    /// The published graph.
    pub fn graph(&self) -> &Arc<SnapshotCell> {
        &self.graph
    }

    /// The policy's name.
    pub fn policy_name(&self) -> String {
        lock(&self.policy).name().to_owned()
    }

    /// Runs `f` on the learner while no request can be learned (for consistent snapshots).
    pub fn with_learner<T>(&self, f: impl FnOnce(&Tdg) -> T) -> T {
        f(&lock(&self.learner))
    }

    /// Learns foreign execution records (grouped into requests by trace and parent links),
    /// hands them to the sink, and publishes the graph; returns how many requests.
    pub fn learn_records(&self, records: &[ExecutionRecord]) -> u64 {
        let mut learner = lock(&self.learner);
        let (requests, report) = baton_trace::requests::group_requests(
            records,
            &mut learner,
            baton_trace::requests::TimeWindow::default(),
        );
        for request in &requests {
            learner.observe_request(request);
        }
        if let Some(sink) = &self.sink {
            sink(records, RecordSource::Ingested);
        }
        self.publish(learner);
        report.requests
    }

    /// Shares the director and starts the allocator's clock (pre-warms at their planned
    /// instant, housekeeping). Without it pre-warms start at once and guests cannot make
    /// nested calls.
    pub fn into_shared(self) -> std::io::Result<Arc<Director>> {
        let mut started: std::io::Result<()> = Ok(());
        let director = Arc::new_cyclic(|me: &Weak<Director>| {
            let mut director = self;
            director.me = me.clone();
            let (run, keep, rank) = (me.clone(), me.clone(), me.clone());
            // Idle workers over the pool's memory budget go lowest policy priority first.
            director
                .pool
                .set_evict_priority(Box::new(move |function: &str, since: Instant| {
                    rank.upgrade()
                        .map_or(0.0, |director| director.evict_priority(function, since))
                }));
            match Scheduler::start(
                HOUSEKEEPING,
                Box::new(move |job| {
                    if let Some(director) = run.upgrade() {
                        director.carry_out(job);
                    }
                }),
                Box::new(move |now| {
                    if let Some(director) = keep.upgrade() {
                        director.housekeeping(now);
                    }
                }),
            ) {
                Ok(scheduler) => director.scheduler = Some(scheduler),
                Err(error) => started = Err(error),
            }
            director
        });
        started.map(|()| director)
    }

    /// The policy's eviction priority of an idle worker of `function` idle since `since`.
    fn evict_priority(&self, function: &str, since: Instant) -> f64 {
        let task = self.task(function);
        let since_us =
            self.origin.1 + since.saturating_duration_since(self.origin.0).as_micros() as u64;
        lock(&self.policy).evict_priority(task, since_us)
    }

    /// The allocator's clock, when shared.
    pub fn scheduler(&self) -> Option<&Scheduler> {
        self.scheduler.as_ref()
    }

    /// The auxiliary services.
    pub fn services(&self) -> Option<&Arc<Services>> {
        self.services.as_ref()
    }

    /// Declares a sequence: invoking `name` runs `steps` in order.
    pub fn declare_sequence(&self, name: &str, steps: Vec<String>) {
        self.sequences
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), steps);
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<WarmPool> {
        &self.pool
    }

    /// The records kept in memory, oldest first.
    pub fn records(&self) -> Vec<ExecutionRecord> {
        lock(&self.log).kept.iter().cloned().collect()
    }

    /// Records that could not be written to the log file.
    pub fn log_write_errors(&self) -> u64 {
        lock(&self.log).write_errors
    }

    /// The last hop latencies (previous output to the next step holding its input), ns.
    pub fn hop_samples(&self) -> Vec<u64> {
        lock(&self.hops).iter().copied().collect()
    }

    /// The clock records and the policy use, µs since the epoch.
    pub fn now_us(&self) -> u64 {
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

    fn is_wasm(&self, name: &str) -> bool {
        self.pool
            .spec(name)
            .is_some_and(|s| matches!(s.kind, FunctionKind::Wasm { .. }))
    }

    /// Starts the services `spec` needs; returns the time waited.
    fn ensure_services(services: Option<&Services>, spec: &FunctionSpec) -> Result<u64, StepError> {
        let mut waited = Duration::ZERO;
        for name in &spec.services {
            let services = services.ok_or_else(|| ServiceError::Unknown(name.clone()))?;
            waited += services.ensure(name)?;
        }
        Ok(waited.as_micros() as u64)
    }

    /// Compiles (or loads from the cache) and pre-links a wasm function in the background.
    fn prewarm_wasm(&self, name: &str, plan: Option<u64>) {
        let (Some(engine), Some(spec)) = (self.wasm.clone(), self.pool.spec(name)) else {
            return;
        };
        if lock(&self.wasm_loaded).contains_key(name) {
            return;
        }
        let loaded = Arc::clone(&self.wasm_loaded);
        let services = self.services.clone();
        let me = self.me.clone();
        let name = name.to_owned();
        let _ = std::thread::Builder::new()
            .name(format!("baton-prewarm-{name}"))
            .spawn(move || {
                if Director::ensure_services(services.as_deref(), &spec).is_err() {
                    return;
                }
                let started = Instant::now();
                if let Ok(function) = engine.load(&spec) {
                    if let Some(director) = me.upgrade() {
                        director.note_wasm_load(&name, started.elapsed());
                    }
                    lock(&loaded).entry(name).or_insert(LoadedWasm {
                        function: Arc::new(function),
                        prewarmed: Some(plan),
                    });
                }
            });
    }

    fn note_wasm_load(&self, name: &str, took: Duration) {
        lock(&self.wasm_load_us).insert(name.to_owned(), took.as_micros() as u64);
    }

    /// The instance for a step: a pooled worker, or a pre-linked wasm function; with how it
    /// was obtained, the wait, and the plan that pre-warmed it.
    fn acquire(&self, name: &str) -> Result<(Running, Obtained), StepError> {
        let spec = self
            .pool
            .spec(name)
            .ok_or_else(|| StepError::Unknown(name.to_owned()))?;
        let service_wait = Director::ensure_services(self.services.as_deref(), &spec)?;
        if !matches!(spec.kind, FunctionKind::Wasm { .. }) {
            if self.pool.idle_count(name) == 0 {
                // Needed before its planned instant: a pre-warm still waiting on the clock
                // would only be wasted now; the step starts its own instance.
                if let Some(scheduler) = &self.scheduler {
                    scheduler.cancel_one(name);
                }
            }
            let lease = self.pool.take(name)?;
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
            .wasm
            .as_ref()
            .ok_or_else(|| StepError::NoWasmEngine(name.to_owned()))?;
        if let Some(loaded) = lock(&self.wasm_loaded).get_mut(name) {
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
        let started = Instant::now();
        let function = Arc::new(engine.load(&spec)?);
        self.note_wasm_load(name, started.elapsed());
        lock(&self.wasm_loaded).insert(
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

    /// How long `name` takes to get ready from nothing, as measured (or assumed).
    fn cold_estimate(&self, name: &str) -> Duration {
        if self.is_wasm(name) {
            lock(&self.wasm_load_us)
                .get(name)
                .map_or(DEFAULT_COLD_WASM, |&us| Duration::from_micros(us))
        } else {
            self.pool
                .cold_start_estimate(name)
                .unwrap_or(DEFAULT_COLD_PROCESS)
        }
    }

    /// The cores and GPU units the plan's reservation for the step ready at `at_us` holds.
    fn placement(&self, plan: Option<u64>, at_us: u64) -> Placement {
        let (Some(reservations), Some(plan)) = (&self.reservations, plan) else {
            return Placement::default();
        };
        reservations
            .reservations()
            .into_iter()
            .find(|r| r.request.plan == Some(plan) && r.request.window.start_us == at_us)
            .map(|r| Placement {
                cores: r.cores,
                gpu_units: r.request.needs.gpu_units,
            })
            .unwrap_or_default()
    }

    /// Carries out a pre-warm now.
    fn carry_out(&self, job: PrewarmJob) {
        self.counters.prewarms.fetch_add(1, Ordering::Relaxed);
        if self.is_wasm(&job.function) {
            self.prewarm_wasm(&job.function, job.plan);
            return;
        }
        // An idle worker is already there: keep it for the step instead of starting another.
        if self.pool.extend_idle(&job.function, job.until) {
            self.counters
                .prewarms_covered
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let services = self.services.clone();
        let Some(spec) = self.pool.spec(&job.function) else {
            return;
        };
        self.pool.prewarm_with(
            &job.function,
            job.until,
            job.plan,
            job.placement,
            move || {
                Director::ensure_services(services.as_deref(), &spec)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
    }

    /// Publishes the learner's graph now.
    fn publish(&self, learner: MutexGuard<'_, Tdg>) {
        let mut learner = learner;
        let snapshot = learner.snapshot();
        *lock(&self.published) = (Some(Instant::now()), false);
        drop(learner);
        self.graph.publish(snapshot);
    }

    fn housekeeping(&self, now: Instant) {
        if lock(&self.published).1 {
            self.publish(lock(&self.learner));
        }
        self.pool.expire(now);
        if let Some(services) = &self.services {
            services.stop_idle(now);
        }
        self.tell(
            PolicyEvent::Tick {
                at_us: self.now_us(),
            },
            None,
        );
    }

    /// Tells the policy `event` and carries out what it asks; returns the keep-alive it set
    /// for `finished`, if any.
    fn tell(&self, event: PolicyEvent, finished: Option<TaskId>) -> Option<u64> {
        let mut actions = Vec::new();
        lock(&self.policy).on_event(&event, &mut actions);
        let mut keep = None;
        for action in actions {
            match action {
                Action::PreWarm {
                    task,
                    at_us,
                    until_us,
                    plan,
                    probability,
                } => {
                    let function = self.task_name(task);
                    if self.pool.spec(&function).is_none() {
                        continue; // learned from a foreign log: nothing to start here
                    }
                    let ready_at = self.instant_of(at_us);
                    let job = PrewarmJob {
                        placement: self.placement(plan, at_us),
                        function,
                        ready_at,
                        until: self.instant_of(until_us),
                        plan,
                        probability,
                    };
                    let now = Instant::now();
                    let start = start_instant(ready_at, self.cold_estimate(&job.function), now);
                    match &self.scheduler {
                        Some(scheduler) if start > now => scheduler.schedule(start, job),
                        _ => self.carry_out(job),
                    }
                }
                Action::KeepAlive { task, until_us } if Some(task) == finished => {
                    keep = Some(until_us);
                }
                Action::Release {
                    task,
                    plan: Some(plan),
                } => {
                    // The plan's windows are over: drop what has not started yet. Workers
                    // already started stay until their own deadline (a late pre-warm is
                    // still the best instance for its step).
                    let function = self.task_name(task);
                    if let Some(scheduler) = &self.scheduler {
                        scheduler.cancel(&function, Some(plan));
                    }
                }
                Action::KeepAlive { .. } | Action::Release { .. } => {}
            }
        }
        keep
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
        self.counters.invocations.fetch_add(1, Ordering::Relaxed);
        if self.scheduler.is_none() {
            self.pool.expire(Instant::now());
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

    /// A committed reservation for a step nobody planned, preempting speculative ones when
    /// the pool is full. `None` when there is no pool or even preemption cannot make room
    /// (the step then runs unreserved).
    fn reserve_unplanned(&self, spec: &FunctionSpec) -> Option<baton_core::Reservation> {
        let reservations = self.reservations.as_ref()?;
        let now = self.now_us();
        let request = ReservationRequest {
            needs: spec.limits,
            window: Window {
                start_us: now,
                end_us: now + spec.timeout_ms * 1000,
            },
            kind: ReservationKind::Committed,
            probability: 1.0,
            plan: None,
        };
        let (reservation, preempted) = reservations.reserve_committed(request).ok()?;
        self.counters
            .preemptions
            .fetch_add(preempted.len() as u64, Ordering::Relaxed);
        Some(reservation)
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
        self.counters.steps.fetch_add(1, Ordering::Relaxed);
        let task = self.task(name);
        let start_us = self.now_us();
        let index = {
            let mut request = lock(state);
            let index = request.records.len();
            let record = ExecutionRecord {
                ts_ns: start_us * 1_000,
                task: name.to_owned(),
                invocation: SpanId::random().to_string(),
                parent: parent.map(|(p, _)| request.records[p].invocation.clone()),
                trace: Some(request.trace.clone()),
                ..ExecutionRecord::default()
            };
            request.records.push(record);
            index
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
                self.counters.failed_steps.fetch_add(1, Ordering::Relaxed);
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
        // A step nobody planned for takes a committed reservation (preempting speculation).
        let _committed = (warmth != Warmth::Prewarmed)
            .then(|| self.reserve_unplanned(&spec))
            .flatten();
        self.tell(
            PolicyEvent::Start {
                task,
                invocation: self.next_id.fetch_add(1, Ordering::Relaxed),
                at_us: start_us,
                context: PredictContext {
                    route: None,
                    prev: Prev::Start,
                    grand_caller: parent.map(|(_, t)| t),
                    operation: None,
                },
                reveals_route: None,
            },
            None,
        );
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
                match self.wasm.as_ref() {
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
            self.counters.cold_steps.fetch_add(1, Ordering::Relaxed);
        }
        if warmth == Warmth::Prewarmed {
            self.counters
                .prewarmed_steps
                .fetch_add(1, Ordering::Relaxed);
            record.chain = Some(plan.map_or("prewarmed".to_owned(), |p| format!("plan-{p}")));
        }
        let warmth_word = match warmth {
            Warmth::Cold => "cold",
            Warmth::Warm => "warm",
            Warmth::Prewarmed if late => "prewarm-late",
            Warmth::Prewarmed => "prewarmed",
        };
        if warmth == Warmth::Prewarmed && late {
            self.counters.late_prewarms.fetch_add(1, Ordering::Relaxed);
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
            let mut hops = lock(&self.hops);
            if hops.len() == HOP_SAMPLES {
                hops.pop_front();
            }
            hops.push_back(hop);
        }
        let keep = self.tell(
            PolicyEvent::End {
                task,
                invocation: index as u64,
                at_us: end_us,
            },
            Some(task),
        );
        if let (Some(until), Running::Process(lease)) = (keep, running) {
            self.pool
                .give_back(name, lease.worker, self.instant_of(until));
        }
        record.status = Some(match &result {
            Ok(_) => Status::Ok,
            Err(source) => {
                self.counters.failed_steps.fetch_add(1, Ordering::Relaxed);
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

    /// Logs the request's records and learns it, then publishes the graph.
    fn finish(&self, state: &Arc<Mutex<RequestState>>) -> Vec<ExecutionRecord> {
        let records = std::mem::take(&mut lock(state).records);
        {
            let mut log = lock(&self.log);
            let log = &mut *log;
            for record in &records {
                if log.kept.len() == MAX_KEPT_RECORDS {
                    log.kept.pop_front();
                }
                log.kept.push_back(record.clone());
                if let Some(file) = log.file.as_mut() {
                    if record.write_line(file).is_err() {
                        log.write_errors += 1;
                    }
                }
            }
            if let Some(file) = log.file.as_mut() {
                if file.flush().is_err() {
                    log.write_errors += 1;
                }
            }
        }
        // The same conversion a restarted server replays its log through (warm timing:
        // waits removed), so a restored graph equals one that never stopped.
        let mut learner = lock(&self.learner);
        let mut grouper = baton_trace::requests::RequestGrouper::new();
        for record in &records {
            grouper.push(record, &mut learner);
        }
        let (requests, _) = grouper.finish(baton_trace::requests::TimeWindow::default());
        for request in &requests {
            learner.observe_request(request);
        }
        if let Some(sink) = &self.sink {
            sink(&records, RecordSource::Baton);
        }
        // Publish now unless a snapshot went out moments ago; then the clock does it.
        let recent = self.scheduler.is_some()
            && lock(&self.published)
                .0
                .is_some_and(|at| at.elapsed() < PUBLISH_EVERY);
        if recent {
            lock(&self.published).1 = true;
        } else {
            self.publish(learner);
        }
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
