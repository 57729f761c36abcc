//! The warm pool: idle workers per function, kept until a deadline, with counts of hits,
//! cold starts, pre-warms used and wasted.
//!
//! A pre-warm starts a worker in the background; while it is starting, a request for the
//! same function waits for it instead of starting a duplicate (the wait is shorter than a
//! cold start, since the pre-warm began earlier). Workers are only ever handed to one
//! caller at a time.
//!
//! Instances are bounded: a function has at most its manifest's `max_instances` workers
//! (idle, busy or starting), and at most [`WarmPool::max_cold_starts`] cold starts run at
//! once on the node. A request beyond either waits for a worker to come back rather than
//! starting a storm of cold ones (a delayed warm start beats a cold start, CIDRE's point).
//! A pre-warm past the instance cap is skipped; past the start bound it waits for a slot.
//!
//! Which idle worker serves a request, and which one a pre-warm claims, is decided by the
//! plan executor's rules (`baton_core::exec`), the ones the simulator applies. The pool never
//! calls out while its lock is held, and a worker leaving it is dropped (killed, its groups
//! removed) after the lock is released. Eviction under an idle-memory budget is the
//! planner's: it ranks with the policy and calls [`WarmPool::evict`].
//!
//! Memory is admitted (`admission.rs`): with a budget, every worker's declared memory
//! counts against it from its start (a spare's from its take: until then it is its
//! template's, as in the simulator), and a start that does not fit waits (a request's) or
//! is not made (a pre-warm's).

use crate::isolation::Isolation;
use crate::manifest::FunctionSpec;
use crate::process::{Placement, Worker, WorkerError};
use baton_core::sync::{Unpoisoned, UnpoisonedRw, UnpoisonedWait};

mod admission;
mod cold;
mod idle;
mod lease;
mod spares;
mod take;
mod templates;

pub use admission::Charge;
use admission::{Admission, Expected};
use baton_core::exec::{Candidate, Claim, Claims, Gone, Prewarm, FULL_CLAIMS};
pub use idle::Keep;
pub use lease::{IdleInfo, Lease, Warmth, CAP_WAIT};
use templates::Templates;
pub use templates::{TemplateInfo, MAX_TEMPLATES};

use crate::counters::Counters;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Idle {
    worker: Worker,
    until: Instant,
    since: Instant,
    /// The plan that pre-warmed it, while unused.
    prewarmed: Option<Prewarm>,
    /// The pre-warms counting on it, each over its interval (kept while it runs: see
    /// [`Lease`]).
    claims: Claims<Instant>,
    /// Given back, its keep-alive not settled by the planner yet: requests may take it,
    /// pre-warms may not claim it (to the executor it is still finishing).
    settling: bool,
}

impl Idle {
    /// As the executor's rules see it, with the weight of its claims over `from..=until`
    /// (an arrival's instant, a pre-warm's interval).
    fn candidate(&self, from: Instant, until: Instant) -> Candidate<Instant> {
        Candidate {
            id: u64::from(self.worker.pid()),
            ready_at: self.since,
            keep_until: self.until,
            idle_since: self.since,
            claims: if self.settling {
                FULL_CLAIMS.max(self.claims.over(from, until))
            } else {
                self.claims.over(from, until)
            },
        }
    }
}

#[derive(Debug, Default)]
struct State {
    idle: HashMap<String, Vec<Idle>>,
    /// Which idle worker a step takes (the executor's rule, as in the simulator).
    reuse: baton_core::exec::Reuse,
    /// Pre-warms under way per function.
    starting: HashMap<String, usize>,
    /// When the latest pre-warm of each function began starting.
    prewarm_began: HashMap<String, Instant>,
    /// Cold starts under way per function.
    cold: HashMap<String, usize>,
    /// Processes being started on the node now: cold starts and pre-warms past their wait
    /// for a start slot.
    spawning: usize,
    /// Workers lent out per function.
    busy: HashMap<String, usize>,
    /// The last [`COLD_SAMPLES`] measured cold starts per function, µs.
    cold_us: HashMap<String, std::collections::VecDeque<u64>>,
    /// When a request last asked for a worker, per function.
    asked: HashMap<String, Instant>,
    /// How each function's last worker went, to tell why its next cold start is cold (no
    /// entry: it never had one). A start writes `Ended` ahead, so a worker lost on a path
    /// that does not say how counts as ended.
    gone: HashMap<String, Gone>,
}

/// A pre-warmed worker that became ready after (or just before) the end of the window it
/// was planned for is kept this long, so the step it was made for can still use it.
pub const PREWARM_GRACE: Duration = Duration::from_micros(baton_core::exec::PREWARM_GRACE_US);

/// Cold starts kept per function for its estimate.
pub const COLD_SAMPLES: usize = 16;

/// Idle workers per function. Cheap to share: clone the `Arc`.
pub struct WarmPool {
    functions: std::sync::RwLock<HashMap<String, Arc<FunctionSpec>>>,
    isolation: Isolation,
    state: Mutex<State>,
    started: Condvar,
    idle_budget_mib: Option<u64>,
    /// The budget as admission of every live worker's declared memory.
    admission: Arc<Admission>,
    max_cold_starts: usize,
    templates: Templates,
    /// Where spares to fork are sent (`spares.rs`).
    refills: spares::Refills,
    /// The counts (the runtime's one set, shared with the director and the planner).
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("functions", &self.functions().len())
            .field("isolation", &self.isolation)
            .field("idle_budget_mib", &self.idle_budget_mib)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every mutation is a single map update, so a poisoned state is still consistent.
    state.lock_unpoisoned()
}

impl WarmPool {
    /// A pool for `functions` whose workers run with `isolation`.
    pub fn new(functions: Vec<FunctionSpec>, isolation: Isolation) -> Arc<WarmPool> {
        WarmPool::with_budget(functions, isolation, None)
    }

    /// A pool whose workers, idle or not, declare at most `idle_budget_mib` of memory
    /// together: starts past it wait or are refused, and the planner evicts idle workers
    /// to make room.
    pub fn with_budget(
        functions: Vec<FunctionSpec>,
        isolation: Isolation,
        idle_budget_mib: Option<u64>,
    ) -> Arc<WarmPool> {
        Arc::new(WarmPool {
            functions: std::sync::RwLock::new(
                functions
                    .into_iter()
                    .map(|f| (f.name.clone(), Arc::new(f)))
                    .collect(),
            ),
            isolation,
            state: Mutex::new(State::default()),
            started: Condvar::new(),
            idle_budget_mib,
            admission: Admission::new(idle_budget_mib),
            // Each cold start is mostly CPU (an interpreter importing): more at once than
            // cores only makes each slower.
            max_cold_starts: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            templates: Templates::default(),
            refills: spares::Refills::default(),
            counters: Arc::new(Counters::default()),
        })
    }

    /// Which idle worker of a function a step takes from now on (`baton serve --reuse`;
    /// `Recent` unless set).
    pub fn set_reuse(&self, reuse: baton_core::exec::Reuse) {
        lock(&self.state).reuse = reuse;
    }

    /// Which idle worker a step takes.
    pub fn reuse(&self) -> baton_core::exec::Reuse {
        lock(&self.state).reuse
    }

    /// The idle-memory budget, MiB, if any.
    pub fn idle_budget_mib(&self) -> Option<u64> {
        self.idle_budget_mib
    }

    /// The functions, sorted by name.
    pub fn functions(&self) -> Vec<Arc<FunctionSpec>> {
        let mut all: Vec<Arc<FunctionSpec>> =
            self.functions.read_unpoisoned().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Adds or replaces a function; the idle workers of a replaced version are released.
    pub fn deploy(&self, spec: FunctionSpec) {
        let name = spec.name.clone();
        let replaced = self
            .functions
            .write_unpoisoned()
            .insert(name.clone(), Arc::new(spec))
            .is_some();
        if replaced {
            // Dropped after the lock: a worker's drop kills its tree and empties its groups.
            let stale = {
                let mut state = lock(&self.state);
                state.gone.remove(&name);
                state.idle.remove(&name)
            };
            drop(stale);
            self.templates.forget(&name);
        }
    }

    /// Removes a function and its idle workers; returns whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        let existed = self.functions.write_unpoisoned().remove(name).is_some();
        let stale = {
            let mut state = lock(&self.state);
            state.gone.remove(name);
            // Keyed by names a client chooses: nothing of a removed one stays.
            state.asked.remove(name);
            state.prewarm_began.remove(name);
            state.cold_us.remove(name);
            state.idle.remove(name)
        };
        drop(stale);
        self.templates.forget(name);
        existed
    }

    /// Starts `spec`'s template now unless it has one (or it was refused), then its spare.
    pub fn prepare_template(self: &Arc<Self>, spec: &Arc<FunctionSpec>) {
        self.templates.ensure(spec, &self.isolation, &self.counters);
        self.refill_spare(spec, Duration::ZERO);
    }

    /// Holds `spec`'s template at least until `until` (the policy's warmth tier), starting
    /// it in the background if none is alive or starting. Functions without templates:
    /// nothing. Never waits for a start (the planner calls it).
    pub fn hold_template(self: &Arc<Self>, spec: &Arc<FunctionSpec>, until: Instant) {
        if !spec.template || !self.templates.hold(&spec.name, until) {
            return;
        }
        // One start per function at a time: `ensure` holds the slot's lock while it starts.
        let pool = Arc::clone(self);
        let spec = Arc::clone(spec);
        let _ = std::thread::Builder::new()
            .name(format!("baton-template-{}", spec.name))
            .spawn(move || pool.prepare_template(&spec));
    }

    /// The memory the live templates hold, measured (their proportional set sizes), MiB:
    /// idle memory too, beside the idle workers' declared memory.
    pub fn template_memory_mib(&self) -> u64 {
        self.templates.memory_mib()
    }

    /// Every function's template state, by function.
    pub fn templates(&self) -> Vec<TemplateInfo> {
        self.templates.states()
    }

    /// A new worker of `spec`: its template's spare (no cores to pin), forked from its
    /// template, or started plain; a template started on the way has its spare forked.
    /// A step's start waits for memory (`expected`, counted from when it was decided); a
    /// pre-warm's (`None`) is admitted at once or not started.
    fn start_worker(
        self: &Arc<Self>,
        spec: &Arc<FunctionSpec>,
        placement: &Placement,
        expected: Option<Expected<'_>>,
    ) -> Result<Worker, WorkerError> {
        let charge = self.admit(&spec.name, spec.limits.memory_mib, expected)?;
        let spare = if *placement == Placement::default() {
            self.start_from_spare(spec)
        } else {
            None
        };
        let worker = match spare {
            Some(spare) => Ok(spare),
            None => {
                let worker =
                    self.templates
                        .start_worker(spec, &self.isolation, placement, &self.counters);
                self.refill_spare(spec, Duration::ZERO);
                worker
            }
        };
        worker.map(|mut worker| {
            worker.hold(charge);
            worker
        })
    }

    /// `function`'s `mib` admitted: at once, or (a step's `expected` start) once it
    /// fits, within [`CAP_WAIT`].
    fn admit(
        &self,
        function: &str,
        mib: u64,
        expected: Option<Expected<'_>>,
    ) -> Result<Charge, WorkerError> {
        let mut waited = false;
        let charge = match expected {
            Some(expected) => self.admission.admit(expected, CAP_WAIT, &mut waited),
            None => self.admission.try_admit(mib),
        };
        if waited {
            self.counters.memory_waits.fetch_add(1, Ordering::Relaxed);
        }
        charge.ok_or_else(|| {
            self.counters.memory_refused.fetch_add(1, Ordering::Relaxed);
            WorkerError::NoMemory {
                function: function.to_owned(),
                needed_mib: mib,
                capacity_mib: self.admission.capacity_mib().unwrap_or(0),
                waited_ms: if waited {
                    CAP_WAIT.as_millis() as u64
                } else {
                    0
                },
            }
        })
    }

    /// What the memory budget has left for idle workers, MiB (negative: over): the budget
    /// less every live worker's declared memory and what starts waiting for room need.
    /// `None` without a budget.
    pub fn room_mib(&self) -> Option<i64> {
        let capacity = self.admission.capacity_mib()?;
        let (admitted, waiting) = self.admission.used_mib();
        Some(
            i64::try_from(capacity).unwrap_or(i64::MAX)
                - i64::try_from(admitted.saturating_add(waiting)).unwrap_or(i64::MAX),
        )
    }

    /// Declared memory of the live workers (idle, busy, starting, spares), MiB.
    pub fn admitted_mib(&self) -> u64 {
        self.admission.used_mib().0
    }

    /// The isolation workers run with.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// Every idle worker.
    pub fn idle(&self) -> Vec<IdleInfo> {
        let now = Instant::now();
        let state = lock(&self.state);
        let mut all: Vec<IdleInfo> = state
            .idle
            .iter()
            .flat_map(|(name, list)| {
                list.iter().map(move |i| IdleInfo {
                    bet: i.prewarmed.is_some().then(|| i.claims.bet(now)),
                    function: name.clone(),
                    pid: i.worker.pid(),
                    memory_mib: i.worker.memory_mib(),
                    plan: i.prewarmed.and_then(|p| p.plan),
                    prewarmed: i.prewarmed.is_some(),
                    until: i.until,
                    since: i.since,
                    settling: i.settling,
                    claimed: !i.claims.is_empty(),
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.function, a.pid).cmp(&(&b.function, b.pid)));
        all
    }

    /// Declared memory of the idle workers, MiB.
    pub fn idle_memory_mib(&self) -> u64 {
        lock(&self.state)
            .idle
            .values()
            .flatten()
            .map(|i| i.worker.memory_mib())
            .sum()
    }

    /// Whether a request asked for a worker of `name` after `since`.
    pub fn asked_since(&self, name: &str, since: Instant) -> bool {
        lock(&self.state)
            .asked
            .get(name)
            .is_some_and(|&at| at > since)
    }

    /// The spec of `name`.
    pub fn spec(&self, name: &str) -> Option<Arc<FunctionSpec>> {
        self.functions.read_unpoisoned().get(name).cloned()
    }

    /// Idle workers of `name`.
    pub fn idle_count(&self, name: &str) -> usize {
        lock(&self.state).idle.get(name).map_or(0, Vec::len)
    }

    /// Cold starts allowed at once on this node.
    pub fn max_cold_starts(&self) -> usize {
        self.max_cold_starts
    }

    /// Waits until fewer than [`WarmPool::max_cold_starts`] processes are being started,
    /// then counts one more. Every slot taken is given back after its start (which has a
    /// timeout), so the wait ends.
    fn take_start_slot(&self) {
        let mut state = lock(&self.state);
        while state.spawning >= self.max_cold_starts {
            state = self.started.wait_unpoisoned(state);
        }
        state.spawning += 1;
    }

    /// Gives a start slot back.
    fn give_start_slot(&self) {
        let mut state = lock(&self.state);
        state.spawning = state.spawning.saturating_sub(1);
        drop(state);
        self.started.notify_all();
    }

    /// Starts a worker for `name` for `plan` on `placement` in the background, after
    /// `before` (which starts the services it needs) succeeds; kept until `until` if
    /// unused, with the pre-warm's `claim` on it. A request for `name` meanwhile waits for
    /// it rather than starting another.
    #[allow(clippy::too_many_arguments)]
    pub fn prewarm_with(
        self: &Arc<Self>,
        name: &str,
        until: Instant,
        plan: Option<u64>,
        claim: Claim<Instant>,
        placement: Placement,
        before: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) {
        let Some(spec) = self.spec(name) else {
            return;
        };
        {
            let mut state = lock(&self.state);
            let count = |map: &HashMap<String, usize>| map.get(name).copied().unwrap_or(0);
            let live = count(&state.starting)
                + count(&state.cold)
                + count(&state.busy)
                + state.idle.get(name).map_or(0, Vec::len);
            if live >= spec.max_instances as usize {
                self.counters
                    .prewarms_capped
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            *state.starting.entry(name.to_owned()).or_default() += 1;
            state.prewarm_began.insert(name.to_owned(), Instant::now());
        }
        self.counters.prewarm_starts.fetch_add(1, Ordering::Relaxed);
        // A spare needs no thread (nothing to start first, no cores to pin): taken here, it
        // is idle at once, ahead of a step that comes microseconds after the event.
        if spec.services.is_empty() && placement == Placement::default() {
            let charge = self.admission.try_admit(spec.limits.memory_mib);
            if let Some((charge, mut worker)) =
                charge.and_then(|charge| Some((charge, self.start_from_spare(&spec)?)))
            {
                worker.hold(charge);
                self.prewarm_done(name, Ok(worker), until, plan, claim);
                return;
            }
        }
        let pool = Arc::clone(self);
        let owned = name.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("baton-prewarm-{name}"))
            .spawn(move || {
                let worker = before().and_then(|()| {
                    // Past the node's start bound, a pre-warm waits for a slot on its own
                    // thread (a request meanwhile waits for it, or starts its own).
                    pool.take_start_slot();
                    let worker = pool.start_worker(&spec, &placement, None);
                    pool.give_start_slot();
                    worker.map_err(|e| e.to_string())
                });
                pool.prewarm_done(&owned, worker, until, plan, claim);
            });
        if spawned.is_err() {
            if let Some(count) = lock(&self.state).starting.get_mut(name) {
                *count = count.saturating_sub(1);
            }
            self.counters
                .prewarms_failed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A pre-warm of `name` is over: its worker idles, kept until `until` with its claim,
    /// or it failed; a request waiting for it is woken.
    fn prewarm_done(
        &self,
        name: &str,
        worker: Result<Worker, String>,
        until: Instant,
        plan: Option<u64>,
        claim: Claim<Instant>,
    ) {
        let mut state = lock(&self.state);
        if let Some(count) = state.starting.get_mut(name) {
            *count = count.saturating_sub(1);
        }
        match worker {
            Ok(worker) => {
                WarmPool::note_worker_start_in(&mut state, name, &worker);
                // The function has had a worker now (see `State::gone`).
                state.gone.insert(name.to_owned(), Gone::Ended);
                state.idle.entry(name.to_owned()).or_default().push(Idle {
                    worker,
                    until: until.max(Instant::now() + PREWARM_GRACE),
                    since: Instant::now(),
                    prewarmed: Some(Prewarm { plan }),
                    // Ready later than asked, its step waits for it and holds it as much
                    // longer (as the simulator counts it).
                    claims: Claims::from(Claim {
                        until: claim.until + Instant::now().saturating_duration_since(claim.from),
                        ..claim
                    }),
                    settling: false,
                });
            }
            Err(_) => {
                self.counters
                    .prewarms_failed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(state);
        self.started.notify_all();
    }
}

#[cfg(test)]
mod tests;
