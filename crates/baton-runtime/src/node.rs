//! What the director and the planner share (`Node`): the backends (warm worker
//! processes, wasm guests), the reservations, the clock, the learner and its published
//! graph, the name → ids map request threads read, the counters, and the planner's bounded
//! inbox.

use crate::backend::{Backend, ProcessBackend, WasmBackend};
use crate::counters::Counters;
use crate::manifest::{FunctionKind, FunctionSpec};
use crate::planner::{Msg, Planner, Started};
use crate::pool::WarmPool;
use baton_core::clock::{Clock, ManualClock};
use baton_core::mining::Miner;
use baton_core::sync::{UnpoisonedRw, UnpoisonedWait};
use baton_core::{LabelId, ResourcePool, SnapshotCell, TaskId, Tdg};
use baton_trace::schema::ExecutionRecord;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Messages waiting for the planner at most; past it, step events are dropped (counted)
/// and a finished request's records wait for room (counted: the only time a request waits
/// on the planner).
pub const INBOX_BOUND: usize = 65_536;

/// Planner lag samples kept (the latest step starts).
pub const LAG_SAMPLES: usize = 4096;

/// Cold start assumed for a process function never started yet.
const DEFAULT_COLD_PROCESS: Duration = Duration::from_millis(150);
/// Compile-or-load time assumed for a wasm function never loaded yet.
const DEFAULT_COLD_WASM: Duration = Duration::from_millis(20);

/// The one way the runtime takes a mutex (poisoned or not: [`baton_core::sync`]).
pub(crate) use baton_core::sync::lock;

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

/// Receives every finished request's records while the learner is locked, so whatever it
/// persists is exactly what the learner has seen; with them, the [`Mark`] of how far their
/// source was learned, if the caller gave one.
pub type RecordSink = Box<dyn Fn(&[ExecutionRecord], RecordSource, Option<&Mark>) + Send + Sync>;

/// A key and value to persist in one transaction with the records it comes with, such as
/// which messages of a stream those records came from: a restart finds both or neither,
/// so the records are learned exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Its name.
    pub key: String,
    /// Its value (what the caller reads back on start).
    pub value: String,
}

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

/// A function's ids in the learner: its task and its operation label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    pub(crate) task: TaskId,
    pub(crate) label: LabelId,
}

/// What the director and the planner share.
/// The miner's group of an application: its name hashed (1 and up: 0 is the group of
/// calls of no application).
fn app_group(app: &str) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    app.hash(&mut hasher);
    (hasher.finish() as u32).max(1)
}

/// Caller-less calls the miner holds at most before it lets them all go.
const MAX_HELD_CALLS: usize = 100_000;

pub(crate) struct Node {
    pub(crate) pool: Arc<WarmPool>,
    pub(crate) process: ProcessBackend,
    pub(crate) wasm: WasmBackend,
    pub(crate) reservations: Option<ResourcePool>,
    pub(crate) clock: SystemClock,
    /// A clock that moves only when told (conformance tests): then it is the node's time,
    /// and the planner runs inline, in time order.
    pub(crate) manual: Option<Arc<ManualClock>>,
    /// One backend for every function, instead of the one by kind (tests).
    pub(crate) custom: Option<Arc<dyn Backend>>,
    pub(crate) learner: Mutex<Tdg>,
    /// Mines callers for caller-less calls before the learner sees them (`baton serve
    /// --mine-callers-ms`), holding each tree until no later call can join it.
    pub(crate) miner: Mutex<Option<Miner>>,
    pub(crate) graph: Arc<SnapshotCell>,
    /// Function name → ids, read by request threads without touching the learner.
    pub(crate) ids: RwLock<HashMap<String, Ids>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) sink: Option<RecordSink>,
    pub(crate) history: Mutex<VecDeque<Started>>,
    /// The planner's lag on the latest step starts and ends, µs: from the step's start
    /// (end) to the planner having carried out what the policy decided there (at most
    /// [`LAG_SAMPLES`]).
    pub(crate) planner_lag_us: Mutex<VecDeque<u64>>,
    pub(crate) pending: AtomicUsize,
    pub(crate) inbox: Mutex<Inbox>,
    /// Set by a sender after a push, cleared by the planner when it drains the inbox: what
    /// the polling planner watches (see `planner::SPIN`).
    pub(crate) queued: std::sync::atomic::AtomicBool,
    pub(crate) wake: Condvar,
    /// Signalled by the planner when it drains a full inbox (see [`Inbox::waiting`]).
    pub(crate) room: Condvar,
    /// The planner when no thread runs it (a director never shared): messages are handled
    /// on the sender's thread, by the same code.
    pub(crate) inline: Mutex<Option<Planner>>,
}

/// The planner's inbox.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) messages: VecDeque<Msg>,
    pub(crate) sleeping: bool,
    /// Senders of records waiting for room in a full inbox (the planner wakes them).
    pub(crate) waiting: usize,
    pub(crate) running: bool,
    pub(crate) stop: bool,
}

impl Node {
    pub(crate) fn new(pool: Arc<WarmPool>, learner: Tdg, graph: Arc<SnapshotCell>) -> Node {
        Node {
            process: ProcessBackend {
                pool: Arc::clone(&pool),
                services: None,
            },
            wasm: WasmBackend::new(Arc::clone(&pool)),
            counters: Arc::clone(&pool.counters),
            pool,
            reservations: None,
            clock: SystemClock::new(),
            manual: None,
            custom: None,
            learner: Mutex::new(learner),
            miner: Mutex::new(None),
            graph,
            ids: RwLock::new(HashMap::new()),
            sink: None,
            history: Mutex::new(VecDeque::new()),
            planner_lag_us: Mutex::new(VecDeque::new()),
            pending: AtomicUsize::new(0),
            inbox: Mutex::new(Inbox::default()),
            queued: std::sync::atomic::AtomicBool::new(false),
            wake: Condvar::new(),
            room: Condvar::new(),
            inline: Mutex::new(None),
        }
    }

    /// The ids of `name`, interned on first sight.
    pub(crate) fn ids(&self, name: &str) -> Ids {
        if let Some(&ids) = self.ids.read_unpoisoned().get(name) {
            return ids;
        }
        let ids = {
            let mut learner = lock(&self.learner);
            Ids {
                task: learner.intern_task(name),
                label: learner.intern_label(name),
            }
        };
        self.ids.write_unpoisoned().insert(name.to_owned(), ids);
        ids
    }

    /// How long `spec` takes to get ready from nothing: the pool's measurement (process
    /// starts and wasm loads alike), else a default by kind. The one estimate.
    pub(crate) fn cold_estimate(&self, spec: &FunctionSpec) -> Duration {
        if let Some(known) = self.backend(spec).cold_estimate(spec) {
            return known;
        }
        self.pool
            .cold_start_estimate(&spec.name)
            .or_else(|| self.pool.cold_start_prior(spec))
            .unwrap_or(match spec.kind {
                FunctionKind::Wasm { .. } => DEFAULT_COLD_WASM,
                FunctionKind::Process { .. } => DEFAULT_COLD_PROCESS,
            })
    }

    /// [`Node::cold_estimate`] of the function `name`, µs (0 for one not deployed).
    pub(crate) fn cold_estimate_us(&self, name: &str) -> u64 {
        self.pool
            .spec(name)
            .map_or(0, |spec| self.cold_estimate(&spec).as_micros() as u64)
    }

    /// Now, µs since the epoch: the manual clock's, else the system's.
    pub(crate) fn now_us(&self) -> u64 {
        match &self.manual {
            Some(clock) => clock.now_us(),
            None => self.clock.now_us(),
        }
    }

    /// The backend that runs `spec`.
    pub(crate) fn backend(&self, spec: &FunctionSpec) -> &dyn Backend {
        if let Some(custom) = &self.custom {
            return &**custom;
        }
        match spec.kind {
            FunctionKind::Wasm { .. } => &self.wasm,
            FunctionKind::Process { .. } => &self.process,
        }
    }

    /// The services functions may need.
    pub(crate) fn services(&self) -> Option<&Arc<crate::services::Services>> {
        self.process.services.as_ref()
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
                    Msg::Finished(_) | Msg::Sync(_) | Msg::Trail(_) => {
                        // Records are not dropped: the one wait on the planner a request
                        // can meet, only with the whole bound queued (counted), until the
                        // planner drains.
                        self.counters.record_waits.fetch_add(1, Ordering::Relaxed);
                        inbox.waiting += 1;
                        while inbox.messages.len() >= INBOX_BOUND && !inbox.stop {
                            inbox = self.room.wait_unpoisoned(inbox);
                        }
                        inbox.waiting -= 1;
                    }
                }
            }
            inbox.messages.push_back(message);
            self.queued.store(true, Ordering::Release);
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

    /// On a manual clock: the inline planner carries out everything due up to now, as
    /// the simulator's queue does before an arrival (a running planner thread never
    /// makes a step wait).
    pub(crate) fn advance_manual(&self) {
        if self.manual.is_some() {
            if let Some(planner) = lock(&self.inline).as_mut() {
                planner.advance();
            }
        }
    }

    /// Waits until the planner has handled every message sent before.
    pub(crate) fn sync(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        self.send(Msg::Sync(done));
        let _ = wait.recv_timeout(Duration::from_secs(30));
    }

    /// Learns `records` into `learner` (grouped into requests by trace and parent links:
    /// the one conversion live learning, a restart's replay and ingestion share) and hands
    /// them to the sink as `source`; returns how many requests it found.
    pub(crate) fn learn(
        &self,
        learner: &mut Tdg,
        records: &[ExecutionRecord],
        source: RecordSource,
        mark: Option<&Mark>,
    ) -> baton_trace::requests::GroupReport {
        let (requests, report) = baton_trace::requests::group_requests(
            records,
            learner,
            baton_trace::requests::TimeWindow::default(),
        );
        let requests = match lock(&self.miner).as_mut() {
            Some(miner) => {
                // Callers are sought inside a call's application (its records' `app`).
                for record in records {
                    if let Some(app) = &record.app {
                        let task = learner.intern_task(&record.task);
                        miner.set_group(task, app_group(app));
                    }
                }
                let mut ready = miner.push(requests);
                // A flood of caller-less calls: past the bound, what is held is learned as
                // it stands.
                if miner.held() > MAX_HELD_CALLS {
                    ready.extend(miner.flush());
                }
                ready
            }
            None => requests,
        };
        for request in &requests {
            learner.observe_request(request);
        }
        if let Some(sink) = &self.sink {
            sink(records, source, mark);
        }
        report
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
        self.room.notify_all();
    }
}
