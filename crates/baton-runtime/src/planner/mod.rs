//! The planner: the proactive allocator's one thread, and everything off the request path.
//!
//! A request thread only pushes `Msg`s into a bounded inbox (a lock held for a push, a
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
//! lock is held. The upkeep (the log, learning, housekeeping, the idle budget) is in
//! `upkeep.rs`.

mod upkeep;

use crate::manifest::FunctionSpec;
use crate::node::{lock, Node};
use crate::pool::Keep;
use crate::process::Placement;
use baton_core::sync::UnpoisonedWait;

use baton_core::exec::room;
use baton_core::exec::{claim_weight, ColdStarts, Decision, Executor};
use baton_core::policy::IdleInstance;
use baton_core::reservation::{ReservationKind, ReservationRequest, Window};
use baton_core::{PolicyEvent, PredictContext, Reservation, ResourceVec, TaskId};
use baton_trace::schema::ExecutionRecord;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the planner expires idle workers, stops idle services and ticks the policy.
pub const HOUSEKEEPING: Duration = Duration::from_millis(50);

/// How long the planner keeps polling its inbox after handling messages before it
/// sleeps (see `Planner::run`).
pub const SPIN: Duration = Duration::from_micros(100);

/// At most one graph snapshot is published per this interval while requests stream in;
/// housekeeping publishes what is left (a snapshot costs time in the graph's size).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// Started pre-warm jobs remembered for reports.
const HISTORY: usize = 1024;

/// A finished worker is given back this long before the planner settles its real
/// keep-alive (microseconds later, unless the planner is far behind).
pub const PROVISIONAL_KEEP: Duration = Duration::from_secs(1);

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
        /// The wait ahead of it (a cold start, the rest of a late pre-warm), µs: the
        /// policy's `wait_us`.
        wait_us: u64,
        /// What it needs and for how long, µs, for a committed reservation when unplanned.
        needs: (ResourceVec, u64),
        /// When the step told it, after it asked for its instance: a step of a function
        /// that asks later overtakes a pre-warm of it due at once decided here.
        told: Instant,
    },
    /// A step ended; its worker (by pid) was given back, if it is a process.
    End {
        task: TaskId,
        /// The function that ran (its name and backend).
        spec: Arc<FunctionSpec>,
        invocation: u64,
        at_us: u64,
        worker: Option<u32>,
    },
    /// A request finished with these records.
    Finished(Vec<ExecutionRecord>),
    /// Hand over the decisions kept since the last time (see `Director::keep_decisions`).
    Trail(std::sync::mpsc::Sender<Vec<(u64, Decision)>>),
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
    /// Its claim on the instance lasts until then (its window and the function's run
    /// time: the executor's `claim_until_us`).
    pub claim_until: Instant,
    /// When it is due to start, µs (the executor's `start_at_us`).
    pub start_at_us: u64,
    /// When the policy wants it ready, µs.
    pub ready_at_us: u64,
    /// Kept until, if unused, µs.
    pub until_us: u64,
    /// The plan it belongs to.
    pub plan: Option<u64>,
    /// Probability it will be used.
    pub probability: f64,
    /// Where it runs (the reserved cores and GPU units).
    pub placement: Placement,
    /// When the event that asked for it happened, if it is due at once: a step of the
    /// function taken since then overtook it (see `Backend::prewarm`).
    pub at_once_since: Option<Instant>,
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
    /// Time is the node's manual clock: jobs and ticks are carried out in time order as
    /// the clock is seen to move (see [`Planner::advance`]).
    manual: bool,
    next_tick_us: Option<u64>,
}

/// The node's cold starts, by task, for the executor.
struct NodeColdStarts<'a>(&'a Node);

impl ColdStarts for NodeColdStarts<'_> {
    fn cold_start_us(&self, task: TaskId) -> u64 {
        let name = lock(&self.0.learner).tasks().name(task.0).to_owned();
        self.0.cold_estimate_us(&name)
    }

    fn has_template(&self, task: TaskId) -> bool {
        let name = lock(&self.0.learner).tasks().name(task.0).to_owned();
        self.0
            .pool
            .spec(&name)
            .is_some_and(|spec| self.0.backend(&spec).has_template(&spec))
    }
}

impl Planner {
    pub(crate) fn new(
        node: Arc<Node>,
        executor: Executor,
        log: Option<BufWriter<File>>,
    ) -> Planner {
        let manual = node.manual.is_some();
        Planner {
            manual,
            // On a manual clock the inline planner keeps jobs for their instant too.
            timed: manual,
            node,
            executor,
            jobs: BTreeMap::new(),
            sequence: 0,
            committed: HashMap::new(),
            log,
            publish_pending: false,
            last_publish: None,
            decisions: Vec::new(),
            next_tick_us: None,
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
        let mut busy_at = Instant::now();
        loop {
            let messages: Vec<Msg> = {
                let mut inbox = lock(&self.node.inbox);
                loop {
                    if inbox.stop {
                        return;
                    }
                    if !inbox.messages.is_empty() {
                        self.node.queued.store(false, Ordering::Release);
                        if inbox.waiting > 0 {
                            self.node.room.notify_all();
                        }
                        break inbox.messages.drain(..).collect();
                    }
                    let now = Instant::now();
                    // Right after work, poll a little before sleeping: the rest of a
                    // request's events come within microseconds, and a sleeping planner
                    // costs each sender a wake-up (a system call and a cross-core wake).
                    if now.duration_since(busy_at) < SPIN {
                        // Polled on a flag, not the lock: senders never wait for the poller.
                        drop(inbox);
                        while !self.node.queued.load(Ordering::Acquire) && busy_at.elapsed() < SPIN
                        {
                            std::thread::yield_now();
                        }
                        // Then the messages that came, or (nothing came) a real sleep.
                        inbox = lock(&self.node.inbox);
                        continue;
                    }
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
                    let (guard, _) = self.node.wake.wait_timeout_unpoisoned(inbox, due - now);
                    inbox = guard;
                    inbox.sleeping = false;
                }
            };
            if !messages.is_empty() {
                busy_at = Instant::now();
            }
            for message in messages {
                self.handle(message);
            }
            self.run_due_jobs();
            if Instant::now() >= next_housekeeping {
                self.housekeeping(self.node.now_us());
                next_housekeeping = Instant::now() + HOUSEKEEPING;
            }
        }
    }

    pub(crate) fn handle(&mut self, message: Msg) {
        if self.manual {
            // Up to the message's own instant: a step's start is told once its instance is
            // chosen, an end after it (the clock may have moved on meanwhile).
            let until = match &message {
                Msg::Start { at_us, .. } | Msg::End { at_us, .. } => Some(*at_us),
                Msg::Finished(_) => None,
                _ => Some(self.node.now_us()),
            };
            if let Some(until) = until {
                self.advance_to(until);
            }
        }
        match message {
            Msg::Start {
                task,
                invocation,
                at_us,
                context,
                reveals_route,
                planned,
                wait_us,
                needs,
                told,
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
                    wait_us,
                });
                self.apply_all(None, at_us, told);
                self.note_lag(at_us);
            }
            Msg::End {
                task,
                spec,
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
                let keep = self.apply_all(Some(task), at_us, self.node.clock.instant_of(at_us));
                if let Some(id) = worker {
                    let (until_us, keep) = keep.unwrap_or((at_us, Keep::Release));
                    let until = self.node.clock.instant_of(until_us);
                    self.node
                        .backend(&spec)
                        .settle(&spec.name, id, until, until_us, at_us, keep);
                }
                self.note_lag(at_us);
                self.node.backend(&spec).refill(&spec);
                self.enforce_budget(at_us);
            }
            Msg::Finished(records) => self.finished(&records),
            Msg::Trail(done) => {
                let _ = done.send(self.executor.take_trail());
            }
            Msg::Sync(done) => {
                let _ = done.send(());
            }
        }
    }

    /// Notes how far behind a step's start or end (`at_us`) the planner carried out what
    /// the policy decided there.
    fn note_lag(&self, at_us: u64) {
        let lag = self.node.now_us().saturating_sub(at_us);
        let mut lags = lock(&self.node.planner_lag_us);
        if lags.len() >= crate::node::LAG_SAMPLES {
            lags.pop_front();
        }
        lags.push_back(lag);
    }

    fn tell(&mut self, event: PolicyEvent) {
        let cold = NodeColdStarts(&self.node);
        self.executor.handle(&event, &cold, &mut self.decisions);
    }

    /// Carries out the decisions made at `now` (µs) on an event that happened at `since`
    /// (a pre-warm due at once that a step of its function overtook after that is not
    /// started); returns the keep-alive set for `finished` and how.
    pub(super) fn apply_all(
        &mut self,
        finished: Option<TaskId>,
        now: u64,
        since: Instant,
    ) -> Option<(u64, Keep)> {
        let mut keep = None;
        for decision in std::mem::take(&mut self.decisions) {
            match decision {
                Decision::Prewarm {
                    task,
                    start_at_us,
                    ready_at_us,
                    until_us,
                    claim_until_us,
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
                        claim_until: clock.instant_of(claim_until_us),
                        start_at_us: start_at_us.max(now),
                        ready_at_us,
                        until_us,
                        plan,
                        probability,
                        at_once_since: (start_at_us <= now).then_some(since),
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
                    keep = Some((until_us, Keep::Until));
                }
                Decision::PinKeepAlive { task, until_us } if Some(task) == finished => {
                    keep = Some((until_us, Keep::Pin));
                }
                Decision::KeepAlive { .. } | Decision::PinKeepAlive { .. } => {}
                Decision::HoldTemplate { task, until_us } => {
                    let function = self.name_of(task);
                    if let Some(spec) = self.node.pool.spec(&function) {
                        let until = self.node.clock.instant_of(until_us);
                        self.node.backend(&spec).hold_template(&spec, until);
                    }
                }
                Decision::Release { task, plan } => {
                    let function = self.name_of(task);
                    self.jobs
                        .retain(|_, (job, _)| !(job.function == function && job.plan == plan));
                    let released = self.node.pool.spec(&function).map_or(0, |spec| {
                        self.node
                            .backend(&spec)
                            .release_unused(&function, plan, now)
                    });
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
        if self.manual {
            self.advance();
            return;
        }
        let now_us = self.node.now_us();
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
        // A new worker over the idle budget displaces idle ones the policy values below
        // its bet, or is refused: the simulator's rule for a pre-warm on a full node.
        let evicted = std::cell::RefCell::new(Vec::new());
        let at_us = node.now_us();
        let admit = |needed_mib: u64| {
            let Some((idle, evictable, left)) = self.room(at_us, needed_mib) else {
                return true;
            };
            let bet = IdleInstance {
                task: node.ids(&job.function).task,
                idle_since_us: at_us,
                memory_mib: needed_mib,
                cold_start_us: node.cold_estimate_us(&job.function),
                bet: Some((
                    claim_weight(job.probability),
                    node.clock.us_of(job.claim_until),
                )),
                ahead: 0,
            };
            let worth = self.executor.bet_priority(&bet, at_us);
            let (going, fits) = room::make_room(&evictable, left, needed_mib, Some(worth));
            if fits {
                evicted.borrow_mut().extend(self.evict(&idle, &going));
            }
            fits
        };
        if node.backend(&spec).prewarm(Arc::clone(&spec), &job, &admit) {
            node.counters
                .prewarms_covered
                .fetch_add(1, Ordering::Relaxed);
        }
        // Told now; what the policy answers is carried out with the planner's next
        // decisions.
        for task in evicted.into_inner() {
            self.tell(PolicyEvent::Evicted { task, at_us });
        }
    }

    /// On a manual clock: carries out, in time order, every pre-warm job and housekeeping
    /// tick due up to the clock's now, each at its own time, as the simulator's event
    /// queue does (ticks from the first instant the planner sees).
    pub(crate) fn advance(&mut self) {
        self.advance_to(self.node.now_us());
    }

    /// [`Planner::advance`] up to `now`.
    fn advance_to(&mut self, now: u64) {
        let period = HOUSEKEEPING.as_micros() as u64;
        let mut next_tick = *self.next_tick_us.get_or_insert(now);
        loop {
            let next_job = self.jobs.keys().next().map(|&(due, _)| due);
            match next_job {
                Some(due) if due < next_tick && due <= now => {
                    let Some(((due, _), (job, scheduled))) = self.jobs.pop_first() else {
                        break;
                    };
                    self.carry_out(job, scheduled, self.node.clock.instant_of(due));
                }
                _ if next_tick <= now => {
                    self.housekeeping(next_tick);
                    next_tick += period;
                    self.next_tick_us = Some(next_tick);
                }
                _ => break,
            }
        }
        self.node.pending.store(self.jobs.len(), Ordering::Relaxed);
    }
}
