//! The planner: the proactive allocator's one thread, and everything off the request path.
//!
//! A request thread only pushes [`Msg`]s into a bounded inbox (a lock held for a push, a
//! wake-up only when the planner sleeps) and reads immutable state. The planner owns the
//! policy, driven through the plan executor of `baton_core::exec` exactly as the simulator
//! drives it: it turns step starts and ends into decisions, reserves committed resources
//! for steps nobody planned, keeps the timed pre-warm jobs (started at the executor's
//! `start_at_us`, one lead before the step's expected start, on the cores their reservation
//! holds), settles each finished worker's keep-alive, releases unused pre-warms, evicts
//! over the idle-memory budget in the policy's order, writes the execution log, learns
//! finished requests and publishes the graph. Every housekeeping period it also expires
//! idle workers, stops idle services and ticks the policy.
//!
//! Nothing here calls back into the director, and no worker is killed while the pool's
//! lock is held.

use crate::manifest::{FunctionKind, FunctionSpec};
use crate::pool::{WarmPool, PREWARM_GRACE};
use crate::process::Placement;
use crate::services::Services;
use crate::wasm::{WasmEngine, WasmFunction};
use baton_core::clock::Clock;
use baton_core::exec::{ColdStarts, Decision, Executor};
use baton_core::pool::{ReservationKind, ReservationRequest, Window};
use baton_core::{
    LabelId, PolicyEvent, PredictContext, Reservation, ResourcePool, ResourceVec, SnapshotCell,
    TaskId, Tdg,
};
use baton_trace::schema::ExecutionRecord;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the planner expires idle workers, stops idle services and ticks the policy.
pub const HOUSEKEEPING: Duration = Duration::from_millis(50);

/// At most one graph snapshot is published per this interval while requests stream in;
/// housekeeping publishes what is left (a snapshot costs time in the graph's size).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// Messages waiting for the planner at most; past it, step events are dropped (counted)
/// and a finished request's records wait for room.
pub const INBOX_BOUND: usize = 65_536;

/// Started pre-warm jobs remembered for reports.
const HISTORY: usize = 1024;

/// Cold start assumed for a process function never started yet.
const DEFAULT_COLD_PROCESS: Duration = Duration::from_millis(150);
/// Compile-or-load time assumed for a wasm function never loaded yet.
const DEFAULT_COLD_WASM: Duration = Duration::from_millis(20);

/// How long a step that found no warm instance waits for the planner to catch up before
/// starting one itself.
pub const CATCH_UP: Duration = Duration::from_millis(20);

/// A finished worker is given back this long before the planner settles its real
/// keep-alive (microseconds later, unless the planner is far behind).
pub const PROVISIONAL_KEEP: Duration = Duration::from_secs(1);

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The runtime's clock: µs since the epoch, read from a monotonic origin (the core's
/// [`Clock`], so the planner and the records share one time).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
    epoch_us: u64,
}

impl SystemClock {
    /// A clock starting now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
            epoch_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }

    /// The instant of `us`.
    pub fn instant_of(&self, us: u64) -> Instant {
        self.origin + Duration::from_micros(us.saturating_sub(self.epoch_us))
    }

    /// The µs of `instant`.
    pub fn us_of(&self, instant: Instant) -> u64 {
        self.epoch_us + instant.saturating_duration_since(self.origin).as_micros() as u64
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        self.epoch_us + self.origin.elapsed().as_micros() as u64
    }
}

/// Counts of the director's and the planner's work.
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
    /// Of those, pre-warms an idle worker already covered (claimed, its deadline extended).
    pub prewarms_covered: AtomicU64,
    /// Pre-warms planned when a request's route became known (the route's task set).
    pub route_prewarms: AtomicU64,
    /// Unused pre-warms released when their plan's windows ended.
    pub released: AtomicU64,
    /// Committed reservations that preempted speculative ones.
    pub preemptions: AtomicU64,
    /// Step events dropped because the planner's inbox was full.
    pub dropped_events: AtomicU64,
    /// Execution records that could not be written to the log file.
    pub log_write_errors: AtomicU64,
}

/// Receives every finished request's records while the learner is locked, so whatever it
/// persists is exactly what the learner has seen.
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

/// A pre-linked wasm function and, while unused, the plan that pre-warmed it.
pub(crate) struct LoadedWasm {
    pub(crate) function: Arc<WasmFunction>,
    pub(crate) prewarmed: Option<Option<u64>>,
}

/// A function's ids in the learner: its task and its operation label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    pub(crate) task: TaskId,
    pub(crate) label: LabelId,
}

/// What the director and the planner share.
pub(crate) struct Node {
    pub(crate) pool: Arc<WarmPool>,
    pub(crate) wasm: Option<Arc<WasmEngine>>,
    pub(crate) wasm_loaded: Mutex<HashMap<String, LoadedWasm>>,
    pub(crate) services: Option<Arc<Services>>,
    pub(crate) reservations: Option<ResourcePool>,
    pub(crate) clock: SystemClock,
    pub(crate) learner: Mutex<Tdg>,
    pub(crate) graph: Arc<SnapshotCell>,
    /// Function name → ids, read by request threads without touching the learner.
    pub(crate) ids: RwLock<HashMap<String, Ids>>,
    pub(crate) counters: DirectorCounters,
    pub(crate) sink: Option<RecordSink>,
    pub(crate) history: Mutex<VecDeque<Started>>,
    pub(crate) pending: AtomicUsize,
    inbox: Mutex<Inbox>,
    wake: Condvar,
    /// The planner when no thread runs it (a director never shared): messages are handled
    /// on the sender's thread, by the same code.
    pub(crate) inline: Mutex<Option<Planner>>,
}

#[derive(Default)]
struct Inbox {
    messages: VecDeque<Msg>,
    sleeping: bool,
    running: bool,
    stop: bool,
}

impl Node {
    pub(crate) fn new(pool: Arc<WarmPool>, learner: Tdg, graph: Arc<SnapshotCell>) -> Node {
        Node {
            pool,
            wasm: None,
            wasm_loaded: Mutex::new(HashMap::new()),
            services: None,
            reservations: None,
            clock: SystemClock::new(),
            learner: Mutex::new(learner),
            graph,
            ids: RwLock::new(HashMap::new()),
            counters: DirectorCounters::default(),
            sink: None,
            history: Mutex::new(VecDeque::new()),
            pending: AtomicUsize::new(0),
            inbox: Mutex::new(Inbox::default()),
            wake: Condvar::new(),
            inline: Mutex::new(None),
        }
    }

    /// The ids of `name`, interned on first sight.
    pub(crate) fn ids(&self, name: &str) -> Ids {
        if let Some(&ids) = self.ids.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return ids;
        }
        let ids = {
            let mut learner = lock(&self.learner);
            Ids {
                task: learner.intern_task(name),
                label: learner.intern_label(name),
            }
        };
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), ids);
        ids
    }

    /// How long `spec` takes to get ready from nothing: the pool's measurement (process
    /// starts and wasm loads alike), else a default by kind. The one estimate.
    pub(crate) fn cold_estimate(&self, spec: &FunctionSpec) -> Duration {
        self.pool
            .cold_start_estimate(&spec.name)
            .unwrap_or(match spec.kind {
                FunctionKind::Wasm { .. } => DEFAULT_COLD_WASM,
                FunctionKind::Process { .. } => DEFAULT_COLD_PROCESS,
            })
    }

    /// Starts the services `spec` needs; returns the time waited, µs.
    pub(crate) fn ensure_services(
        services: Option<&Services>,
        spec: &FunctionSpec,
    ) -> Result<u64, crate::services::ServiceError> {
        let mut waited = Duration::ZERO;
        for name in &spec.services {
            let services =
                services.ok_or_else(|| crate::services::ServiceError::Unknown(name.clone()))?;
            waited += services.ensure(name)?;
        }
        Ok(waited.as_micros() as u64)
    }

    /// Hands `message` to the planner: its thread's inbox, or the inline planner.
    pub(crate) fn send(&self, message: Msg) {
        let mut inbox = lock(&self.inbox);
        if inbox.running {
            if inbox.messages.len() >= INBOX_BOUND {
                match message {
                    Msg::Start { .. } | Msg::End { .. } => {
                        self.counters.dropped_events.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Msg::Finished(_) | Msg::Sync(_) | Msg::Needed(..) => {
                        // Records are not dropped: wait for room (the planner drains).
                        while inbox.messages.len() >= INBOX_BOUND && !inbox.stop {
                            drop(inbox);
                            std::thread::sleep(Duration::from_millis(1));
                            inbox = lock(&self.inbox);
                        }
                    }
                }
            }
            inbox.messages.push_back(message);
            if inbox.sleeping {
                inbox.sleeping = false;
                drop(inbox);
                self.wake.notify_one();
            }
            return;
        }
        drop(inbox);
        if let Some(planner) = lock(&self.inline).as_mut() {
            planner.handle(message);
        }
    }

    /// Waits until the planner has handled every message sent before.
    pub(crate) fn sync(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        self.send(Msg::Sync(done));
        let _ = wait.recv_timeout(Duration::from_secs(30));
    }

    /// Publishes the learner's graph now.
    pub(crate) fn publish(&self, learner: MutexGuard<'_, Tdg>) {
        let mut learner = learner;
        let snapshot = learner.snapshot();
        drop(learner);
        self.graph.publish(snapshot);
    }

    /// Stops the planner's thread (it ends after the message it is handling).
    pub(crate) fn stop(&self) {
        lock(&self.inbox).stop = true;
        self.wake.notify_all();
    }
}

/// What a request thread tells the planner.
pub(crate) enum Msg {
    /// A step started.
    Start {
        task: TaskId,
        invocation: u64,
        at_us: u64,
        context: PredictContext,
        reveals_route: Option<u64>,
        /// Its instance was pre-warmed for it (its plan's reservation backs it).
        planned: bool,
        /// What it needs and for how long, µs, for a committed reservation when unplanned.
        needs: (ResourceVec, u64),
    },
    /// A step ended; its worker (by pid) was given back, if it is a process.
    End {
        task: TaskId,
        function: String,
        invocation: u64,
        at_us: u64,
        worker: Option<u32>,
    },
    /// A request finished with these records.
    Finished(Vec<ExecutionRecord>),
    /// A step found no warm instance of this function: the planner catches up with the
    /// events before (a pre-warm planned for the step starts now, and the step waits for
    /// it), drops a pre-warm of it still waiting for its instant (it would be wasted), and
    /// answers.
    Needed(String, std::sync::mpsc::Sender<()>),
    /// Answer once everything before is handled.
    Sync(std::sync::mpsc::Sender<()>),
}

/// One pre-warm to carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct PrewarmJob {
    /// The function.
    pub function: String,
    /// When its instance should be ready.
    pub ready_at: Instant,
    /// Kept until, if unused.
    pub until: Instant,
    /// The plan it belongs to.
    pub plan: Option<u64>,
    /// Probability it will be used.
    pub probability: f64,
    /// Where it runs (the reserved cores and GPU units).
    pub placement: Placement,
}

/// A started job, for reports and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The job.
    pub job: PrewarmJob,
    /// When it was planned.
    pub scheduled: Instant,
    /// When it was due.
    pub due: Instant,
    /// When it actually started.
    pub started: Instant,
}

/// The planner's state, owned by its thread. See the module docs.
pub(crate) struct Planner {
    node: Arc<Node>,
    executor: Executor,
    /// Pre-warms waiting for their instant, by (due µs, sequence): the job and when it
    /// was planned.
    jobs: BTreeMap<(u64, u64), (PrewarmJob, Instant)>,
    sequence: u64,
    committed: HashMap<u64, Reservation>,
    log: Option<BufWriter<File>>,
    publish_pending: bool,
    last_publish: Option<Instant>,
    decisions: Vec<Decision>,
    /// Whether jobs wait for their instant (a thread runs the planner) or start at once.
    timed: bool,
}

/// The node's cold starts, by task, for the executor.
struct NodeColdStarts<'a>(&'a Node);

impl ColdStarts for NodeColdStarts<'_> {
    fn cold_start_us(&self, task: TaskId) -> u64 {
        let name = lock(&self.0.learner).tasks().name(task.0).to_owned();
        self.0
            .pool
            .spec(&name)
            .map_or(0, |spec| self.0.cold_estimate(&spec).as_micros() as u64)
    }
}

impl Planner {
    pub(crate) fn new(
        node: Arc<Node>,
        executor: Executor,
        log: Option<BufWriter<File>>,
    ) -> Planner {
        Planner {
            node,
            executor,
            jobs: BTreeMap::new(),
            sequence: 0,
            committed: HashMap::new(),
            log,
            publish_pending: false,
            last_publish: None,
            decisions: Vec::new(),
            timed: false,
        }
    }

    /// Runs the planner on its own thread until the node is stopped.
    pub(crate) fn spawn(mut self) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.timed = true;
        let node = Arc::clone(&self.node);
        lock(&node.inbox).running = true;
        std::thread::Builder::new()
            .name("baton-planner".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            let messages: Vec<Msg> = {
                let mut inbox = lock(&self.node.inbox);
                loop {
                    if inbox.stop {
                        return;
                    }
                    if !inbox.messages.is_empty() {
                        break inbox.messages.drain(..).collect();
                    }
                    let now = Instant::now();
                    let due = self
                        .jobs
                        .keys()
                        .next()
                        .map_or(next_housekeeping, |&(us, _)| {
                            self.node.clock.instant_of(us).min(next_housekeeping)
                        });
                    if due <= now {
                        break Vec::new();
                    }
                    inbox.sleeping = true;
                    let (guard, _) = self
                        .node
                        .wake
                        .wait_timeout(inbox, due - now)
                        .unwrap_or_else(|p| p.into_inner());
                    inbox = guard;
                    inbox.sleeping = false;
                }
            };
            for message in messages {
                self.handle(message);
            }
            self.run_due_jobs();
            if Instant::now() >= next_housekeeping {
                self.housekeeping();
                next_housekeeping = Instant::now() + HOUSEKEEPING;
            }
        }
    }

    pub(crate) fn handle(&mut self, message: Msg) {
        match message {
            Msg::Start {
                task,
                invocation,
                at_us,
                context,
                reveals_route,
                planned,
                needs,
            } => {
                if !planned {
                    if let Some(reservation) = self.reserve_unplanned(at_us, needs) {
                        self.committed.insert(invocation, reservation);
                    }
                }
                self.tell(PolicyEvent::Start {
                    task,
                    invocation,
                    at_us,
                    context,
                    reveals_route,
                });
                self.apply_all(None);
            }
            Msg::End {
                task,
                function,
                invocation,
                at_us,
                worker,
            } => {
                self.committed.remove(&invocation);
                self.tell(PolicyEvent::End {
                    task,
                    invocation,
                    at_us,
                });
                let keep = self.apply_all(Some(task));
                if let Some(pid) = worker {
                    let until = self.node.clock.instant_of(keep.unwrap_or(at_us));
                    self.node.pool.settle(&function, pid, until);
                }
                self.enforce_budget();
            }
            Msg::Finished(records) => self.finished(&records),
            Msg::Needed(function, done) => {
                self.run_due_jobs();
                let key = self
                    .jobs
                    .iter()
                    .find(|(_, (job, _))| job.function == function)
                    .map(|(key, _)| *key);
                if let Some(key) = key {
                    self.jobs.remove(&key);
                }
                self.node.pending.store(self.jobs.len(), Ordering::Relaxed);
                let _ = done.send(());
            }
            Msg::Sync(done) => {
                let _ = done.send(());
            }
        }
    }

    fn tell(&mut self, event: PolicyEvent) {
        let cold = NodeColdStarts(&self.node);
        self.executor.handle(&event, &cold, &mut self.decisions);
    }

    /// Carries out the decisions made; returns the keep-alive set for `finished`.
    fn apply_all(&mut self, finished: Option<TaskId>) -> Option<u64> {
        let mut keep = None;
        let now = self.node.clock.now_us();
        for decision in std::mem::take(&mut self.decisions) {
            match decision {
                Decision::Prewarm {
                    task,
                    start_at_us,
                    ready_at_us,
                    until_us,
                    plan,
                    reservation,
                    probability,
                } => {
                    let function = self.name_of(task);
                    if self.node.pool.spec(&function).is_none() {
                        continue; // learned from a foreign log: nothing to start here
                    }
                    if plan.is_some_and(baton_core::policy::is_route_plan) {
                        self.node
                            .counters
                            .route_prewarms
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let clock = self.node.clock;
                    let job = PrewarmJob {
                        placement: self.placement(reservation),
                        function,
                        ready_at: clock.instant_of(ready_at_us),
                        until: clock.instant_of(until_us),
                        plan,
                        probability,
                    };
                    if self.timed && start_at_us > now {
                        self.sequence += 1;
                        self.jobs
                            .insert((start_at_us, self.sequence), (job, Instant::now()));
                    } else {
                        self.carry_out(job, Instant::now(), clock.instant_of(start_at_us));
                    }
                }
                Decision::KeepAlive { task, until_us } if Some(task) == finished => {
                    keep = Some(until_us);
                }
                Decision::KeepAlive { .. } => {}
                Decision::Release { task, plan } => {
                    let function = self.name_of(task);
                    self.jobs
                        .retain(|_, (job, _)| !(job.function == function && job.plan == plan));
                    let mut released = self.node.pool.release_unused(&function, plan);
                    let unused_wasm = {
                        let mut loaded = lock(&self.node.wasm_loaded);
                        let unused = loaded
                            .get(&function)
                            .is_some_and(|l| l.prewarmed == Some(plan));
                        unused.then(|| loaded.remove(&function))
                    };
                    released += usize::from(unused_wasm.is_some());
                    self.node
                        .counters
                        .released
                        .fetch_add(released as u64, Ordering::Relaxed);
                }
            }
        }
        self.node.pending.store(self.jobs.len(), Ordering::Relaxed);
        keep
    }

    fn name_of(&self, task: TaskId) -> String {
        lock(&self.node.learner).tasks().name(task.0).to_owned()
    }

    /// The cores and GPU units reservation `id` holds.
    fn placement(&self, id: Option<u64>) -> Placement {
        let (Some(reservations), Some(id)) = (&self.node.reservations, id) else {
            return Placement::default();
        };
        reservations
            .get(id)
            .map(|r| Placement {
                cores: r.cores,
                gpu_units: r.request.needs.gpu_units,
            })
            .unwrap_or_default()
    }

    /// A committed reservation for a step nobody planned, preempting speculative ones when
    /// the pool is full. `None` when there is no pool or even preemption cannot make room
    /// (the step then runs unreserved).
    fn reserve_unplanned(&self, at_us: u64, needs: (ResourceVec, u64)) -> Option<Reservation> {
        let reservations = self.node.reservations.as_ref()?;
        let request = ReservationRequest {
            needs: needs.0,
            window: Window {
                start_us: at_us,
                end_us: at_us + needs.1,
            },
            kind: ReservationKind::Committed,
            probability: 1.0,
            plan: None,
        };
        let (reservation, preempted) = reservations.reserve_committed(request).ok()?;
        self.node
            .counters
            .preemptions
            .fetch_add(preempted.len() as u64, Ordering::Relaxed);
        Some(reservation)
    }

    fn run_due_jobs(&mut self) {
        let now_us = self.node.clock.now_us();
        while let Some(entry) = self.jobs.first_entry() {
            if entry.key().0 > now_us {
                break;
            }
            let ((due, _), (job, scheduled)) = entry.remove_entry();
            let due = self.node.clock.instant_of(due);
            self.carry_out(job, scheduled, due);
        }
        self.node.pending.store(self.jobs.len(), Ordering::Relaxed);
    }

    /// Carries out a pre-warm now: an idle worker claimed, or a new instance started.
    fn carry_out(&mut self, job: PrewarmJob, scheduled: Instant, due: Instant) {
        let node = &self.node;
        node.counters.prewarms.fetch_add(1, Ordering::Relaxed);
        {
            let mut history = lock(&node.history);
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(Started {
                job: job.clone(),
                scheduled,
                due,
                started: Instant::now(),
            });
        }
        let Some(spec) = node.pool.spec(&job.function) else {
            return;
        };
        if matches!(spec.kind, FunctionKind::Wasm { .. }) {
            prewarm_wasm(node, spec, job.plan);
            return;
        }
        // An idle worker no other pre-warm counts on: keep it for the step instead.
        if node.pool.claim_idle(&job.function, job.until) {
            node.counters
                .prewarms_covered
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let services = node.services.clone();
        node.pool.prewarm_with(
            &job.function,
            job.until.max(job.ready_at + PREWARM_GRACE),
            job.plan,
            job.placement,
            move || {
                Node::ensure_services(services.as_deref(), &spec)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
    }

    /// Logs, learns and hands on a finished request's records, then publishes the graph
    /// unless a snapshot went out moments ago (housekeeping publishes the rest).
    fn finished(&mut self, records: &[ExecutionRecord]) {
        if let Some(file) = self.log.as_mut() {
            let mut failed = 0;
            for record in records {
                if record.write_line(file).is_err() {
                    failed += 1;
                }
            }
            if file.flush().is_err() {
                failed += 1;
            }
            self.node
                .counters
                .log_write_errors
                .fetch_add(failed, Ordering::Relaxed);
        }
        // The same conversion a restarted server replays its log through (warm timing:
        // waits removed), so a restored graph equals one that never stopped.
        let mut learner = lock(&self.node.learner);
        let mut grouper = baton_trace::requests::RequestGrouper::new();
        for record in records {
            grouper.push(record, &mut learner);
        }
        let (requests, _) = grouper.finish(baton_trace::requests::TimeWindow::default());
        for request in &requests {
            learner.observe_request(request);
        }
        if let Some(sink) = &self.node.sink {
            sink(records, RecordSource::Baton);
        }
        let recent = self.timed
            && self
                .last_publish
                .is_some_and(|at| at.elapsed() < PUBLISH_EVERY);
        if recent {
            self.publish_pending = true;
        } else {
            self.node.publish(learner);
            self.last_publish = Some(Instant::now());
            self.publish_pending = false;
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if self.publish_pending {
            self.node.publish(lock(&self.node.learner));
            self.last_publish = Some(now);
            self.publish_pending = false;
        }
        self.node.pool.expire(now);
        if let Some(services) = &self.node.services {
            services.stop_idle(now);
        }
        if let Some(reservations) = &self.node.reservations {
            reservations.expire(self.node.clock.now_us());
        }
        let at_us = self.node.clock.now_us();
        self.tell(PolicyEvent::Tick { at_us });
        self.apply_all(None);
        self.enforce_budget();
    }

    /// Evicts idle workers, lowest policy priority first, while their declared memory is
    /// over the pool's idle budget.
    fn enforce_budget(&mut self) {
        let Some(budget) = self.node.pool.idle_budget_mib() else {
            return;
        };
        let idle = self.node.pool.idle();
        let mut used: u64 = idle.iter().map(|i| i.memory_mib).sum();
        if used <= budget {
            return;
        }
        let mut ranked: Vec<(f64, usize)> = idle
            .iter()
            .enumerate()
            .map(|(at, i)| {
                let task = self.node.ids(&i.function).task;
                let since = self.node.clock.us_of(i.since);
                (self.executor.evict_priority(task, since), at)
            })
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, at) in ranked {
            if used <= budget {
                break;
            }
            let victim = &idle[at];
            if self.node.pool.evict(&victim.function, victim.pid) {
                used -= victim.memory_mib;
                let task = self.node.ids(&victim.function).task;
                let at_us = self.node.clock.now_us();
                self.tell(PolicyEvent::Evicted { task, at_us });
            }
        }
        self.apply_all(None);
    }
}

/// Compiles (or loads from the cache) and pre-links a wasm function in the background.
fn prewarm_wasm(node: &Arc<Node>, spec: Arc<FunctionSpec>, plan: Option<u64>) {
    let Some(engine) = node.wasm.clone() else {
        return;
    };
    if lock(&node.wasm_loaded).contains_key(&spec.name) {
        return;
    }
    let node = Arc::clone(node);
    let _ = std::thread::Builder::new()
        .name(format!("baton-prewarm-{}", spec.name))
        .spawn(move || {
            if Node::ensure_services(node.services.as_deref(), &spec).is_err() {
                return;
            }
            let started = Instant::now();
            if let Ok(function) = engine.load(&spec) {
                node.pool.note_cold_start(&spec.name, started.elapsed());
                lock(&node.wasm_loaded)
                    .entry(spec.name.clone())
                    .or_insert(LoadedWasm {
                        function: Arc::new(function),
                        prewarmed: Some(plan),
                    });
            }
        });
}
