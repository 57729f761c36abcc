//! The backends a step runs on, behind one [`Backend`] trait: wasm guests in this process
//! (`WasmBackend`: compiled and pre-linked modules, each instance made ahead) and warm
//! worker processes (`ProcessBackend`: the [`WarmPool`]). The director and the planner
//! pick a backend by the function's kind once and never branch on it again.
//!
//! A backend hands out an [`Instance`] for a step (how it was obtained: cold, warm,
//! pre-warmed, late), runs it, and takes it back; the planner asks it to pre-warm (claim an
//! idle instance or start one) and to release unused pre-warms.

use crate::manifest::FunctionSpec;
use crate::planner::PrewarmJob;
use crate::pool::{Keep, Lease, WarmPool, Warmth, PREWARM_GRACE};
use crate::process::WorkerError;
use crate::services::{ServiceError, Services};
use crate::wasm::{NestedCall, WasmError};
use baton_core::exec::Claim;
use baton_trace::schema::Status;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

mod wasm;
pub(crate) use wasm::WasmBackend;

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
    /// The record status of this failure.
    pub fn status(&self) -> Status {
        match self {
            StepError::Process(e) => e.status(),
            StepError::Wasm(e) => e.status(),
            _ => Status::Error,
        }
    }
}

/// Starts the services `spec` needs; returns the time waited, µs.
pub(crate) fn ensure_services(
    services: Option<&Services>,
    spec: &FunctionSpec,
) -> Result<u64, ServiceError> {
    let mut waited = Duration::ZERO;
    for name in &spec.services {
        let services = services.ok_or_else(|| ServiceError::Unknown(name.clone()))?;
        waited += services.ensure(name)?;
    }
    Ok(waited.as_micros() as u64)
}

/// What a step's instance was made from (records' and the API's `tier`): for a process
/// function `worker` (one already running), `spare` (its template's spare, forked ahead),
/// `forked` (from its template now) or `spawned`; for a wasm function `instance` (made
/// ahead), `module` (instantiated from its loaded module) or `compiled` (loaded first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// A worker process already running.
    Worker,
    /// Its template's spare, forked ahead.
    Spare,
    /// Forked from its template for this step.
    Forked,
    /// Started from nothing for this step.
    Spawned,
    /// A wasm instance made ahead.
    Instance,
    /// Instantiated from its loaded module.
    Module,
    /// Its module loaded (compiled or read from the cache) for this step.
    Compiled,
}

impl Tier {
    /// Its word in records, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Worker => "worker",
            Tier::Spare => "spare",
            Tier::Forked => "forked",
            Tier::Spawned => "spawned",
            Tier::Instance => "instance",
            Tier::Module => "module",
            Tier::Compiled => "compiled",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance for one step and how it was obtained.
pub struct Acquired {
    /// The instance.
    pub instance: Box<dyn Instance>,
    /// How it was obtained.
    pub warmth: Warmth,
    /// Waiting for a cold start, or the rest of a pre-warm (services excluded), µs.
    pub wait_us: u64,
    /// The plan that pre-warmed it.
    pub plan: Option<u64>,
    /// The step waited for its pre-warm to finish starting.
    pub late: bool,
    /// What the instance was made from.
    pub tier: Tier,
}

impl std::fmt::Debug for Acquired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquired")
            .field("warmth", &self.warmth)
            .field("wait_us", &self.wait_us)
            .field("plan", &self.plan)
            .field("late", &self.late)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

/// What a step's run is given besides its input.
pub struct StepCall<'a> {
    /// When the previous step's output was ready (for the hop time).
    pub handed_at: Option<Instant>,
    /// Builds the guest's nested-call hook, for backends that let guests call.
    pub nested: &'a dyn Fn() -> Option<NestedCall>,
}

impl std::fmt::Debug for StepCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepCall")
            .field("handed_at", &self.handed_at)
            .finish_non_exhaustive()
    }
}

/// What a run measured, beyond its output: the typed facts of a step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFacts {
    /// CPU time of the function's own process, ms.
    pub cpu_ms: Option<f64>,
    /// Peak memory, MiB.
    pub mem_peak_mib: Option<f64>,
    /// Bytes in, out and through nested calls.
    pub net_bytes: Option<u64>,
    /// From the previous output to this instance holding its input, ns.
    pub hop_ns: Option<u64>,
    /// The limits it ran under.
    pub limits: Option<String>,
    /// What it wrote on stderr (bounded).
    pub stderr: Option<String>,
    /// Stderr bytes beyond the bound.
    pub stderr_dropped_bytes: u64,
}

/// One step's instance.
pub trait Instance: Send {
    /// Runs the step.
    fn run(&mut self, input: &[u8], call: &StepCall<'_>) -> (Result<Vec<u8>, StepError>, RunFacts);
    /// Gives the instance back after the step; returns the worker's pid when it is kept
    /// idle (the planner then settles its keep-alive).
    fn finish(self: Box<Self>, keep_until: Instant) -> Option<u32>;
}

/// A kind of function's runtime: where a step's instance comes from and goes back to.
pub trait Backend: Send + Sync {
    /// An instance for a step of `spec`: an idle one, a pre-warm under way, or one it
    /// starts itself at once; it never waits for the planner. Before it waits for an
    /// instance to become ready (a cold start, or a pre-warm still starting) it calls
    /// `chosen` with the warmth the step gets and how long that instance has been starting
    /// already (zero for a cold start it begins now), so the planner hears of the step at
    /// its arrival, with the wait ahead of it, and starts what follows meanwhile, as the
    /// simulator does (the step tells it after `acquire` returns when `chosen` was not
    /// called).
    fn acquire(
        &self,
        spec: &Arc<FunctionSpec>,
        chosen: &dyn Fn(Warmth, Duration),
    ) -> Result<Acquired, StepError>;
    /// Carries out a pre-warm now; returns whether an idle instance covered it. Before it
    /// starts a new instance that counts against the idle budget it asks `admit` with the
    /// instance's memory (MiB): the planner makes room by the executor's rule, or refuses.
    fn prewarm(
        &self,
        spec: Arc<FunctionSpec>,
        job: &PrewarmJob,
        admit: &dyn Fn(u64) -> bool,
    ) -> bool;
    /// Releases, at `at_us`, the unused pre-warms of `plan` for `name` past their keep;
    /// returns how many.
    fn release_unused(&self, name: &str, plan: Option<u64>, at_us: u64) -> usize;
    /// Settles how long the instance `id` given back after a step ending at `at_us` stays
    /// idle, as `keep` says: until `until` (`until_us`) or a deadline pinned to it before;
    /// released at once when that is not after `at_us`.
    fn settle(&self, name: &str, id: u32, until: Instant, until_us: u64, at_us: u64, keep: Keep);
    /// Forgets what is loaded for `name` (a function replaced or removed).
    fn forget(&self, name: &str);
    /// `spec` was deployed: makes it ready ahead in the background (wasm: compiled, linked
    /// and instantiated, so its first step is an instantiation; a process function: its
    /// template, so its first worker is a fork).
    fn prepare(&self, spec: Arc<FunctionSpec>) {
        let _ = spec;
    }
    /// After a step of `spec` ended, on the planner's thread: frees what steps left behind
    /// and makes what the next step will need ahead (wasm: its next instance).
    fn refill(&self, spec: &FunctionSpec) {
        let _ = spec;
    }
    /// Its own cold-start time for `spec`, if it knows better than the measurements.
    fn cold_estimate(&self, spec: &FunctionSpec) -> Option<Duration> {
        let _ = spec;
        None
    }
    /// Whether `spec`'s workers start from a template (the cheap warmth tier the policy
    /// may hold: [`Backend::hold_template`]).
    fn has_template(&self, spec: &FunctionSpec) -> bool {
        let _ = spec;
        false
    }
    /// Holds `spec`'s template at least until `until`, starting it in the background if
    /// none is alive (the policy's `Decision::HoldTemplate`).
    fn hold_template(&self, spec: &Arc<FunctionSpec>, until: Instant) {
        let _ = (spec, until);
    }
}

/// Warm worker processes, kept by the [`WarmPool`].
pub(crate) struct ProcessBackend {
    pub(crate) pool: Arc<WarmPool>,
    pub(crate) services: Option<Arc<Services>>,
}

struct ProcessInstance {
    lease: Lease,
    pool: Arc<WarmPool>,
}

impl Instance for ProcessInstance {
    fn run(&mut self, input: &[u8], call: &StepCall<'_>) -> (Result<Vec<u8>, StepError>, RunFacts) {
        let worker = &mut self.lease.worker;
        let mut facts = RunFacts {
            limits: Some(worker.limits().to_owned()),
            hop_ns: call.handed_at.map(|h| h.elapsed().as_nanos() as u64),
            ..RunFacts::default()
        };
        let result = worker.invoke(input).map_err(StepError::from);
        let output = worker.take_output();
        if !output.text.is_empty() {
            facts.stderr = Some(output.text);
        }
        facts.stderr_dropped_bytes = output.dropped_bytes;
        let (cpu_ms, peak_bytes) = worker.usage_of_last_invocation();
        facts.cpu_ms = cpu_ms;
        facts.mem_peak_mib = peak_bytes.map(|b| b as f64 / (1 << 20) as f64);
        if let Ok(output) = &result {
            facts.net_bytes = Some((input.len() + output.len()) as u64);
        }
        (result, facts)
    }

    fn finish(self: Box<Self>, keep_until: Instant) -> Option<u32> {
        let ProcessInstance { lease, pool } = *self;
        let name = lease.function().to_owned();
        pool.give_back(&name, lease.worker, lease.claims, keep_until)
    }
}

impl Backend for ProcessBackend {
    fn acquire(
        &self,
        spec: &Arc<FunctionSpec>,
        chosen: &dyn Fn(Warmth, Duration),
    ) -> Result<Acquired, StepError> {
        let lease = self.pool.take_telling(&spec.name, chosen)?;
        Ok(Acquired {
            warmth: lease.warmth,
            wait_us: lease.wait_us,
            plan: lease.plan,
            late: lease.waited_for_prewarm,
            tier: match lease.warmth {
                Warmth::Cold if lease.worker.is_spare() => Tier::Spare,
                Warmth::Cold if lease.worker.is_forked() => Tier::Forked,
                Warmth::Cold => Tier::Spawned,
                _ => Tier::Worker,
            },
            instance: Box::new(ProcessInstance {
                lease,
                pool: Arc::clone(&self.pool),
            }),
        })
    }

    fn prewarm(
        &self,
        spec: Arc<FunctionSpec>,
        job: &PrewarmJob,
        admit: &dyn Fn(u64) -> bool,
    ) -> bool {
        // An idle worker whose claims leave room for this one: keep it for the step instead.
        // The claim spans the policy's window and the function's run time, from its ready
        // time.
        let claim = Claim::new(job.ready_at, job.claim_until, job.probability);
        if self.pool.claim_idle(&spec.name, claim, job.until) {
            return true;
        }
        // Due at once, and a step of the function has asked for a worker since the event
        // that asked for this pre-warm: the planner runs behind the request, so that step
        // is (most likely) the one it was for, and it has its worker. In the simulator a
        // pre-warm due at once starts at its event's instant, before any later step.
        if job
            .at_once_since
            .is_some_and(|since| self.pool.asked_since(&spec.name, since))
        {
            self.pool
                .counters
                .prewarms_overtaken
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        // Over the idle budget: room made from idle workers worth less than this bet, or
        // none started (as the simulator refuses it).
        if !admit(spec.limits.memory_mib) {
            self.pool
                .counters
                .prewarms_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        let services = self.services.clone();
        let name = spec.name.clone();
        self.pool.prewarm_with(
            &name,
            job.until.max(job.ready_at + PREWARM_GRACE),
            job.plan,
            claim,
            job.placement.clone(),
            move || {
                ensure_services(services.as_deref(), &spec)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
        false
    }

    fn release_unused(&self, name: &str, plan: Option<u64>, _at_us: u64) -> usize {
        self.pool.release_unused(name, plan)
    }

    fn settle(&self, name: &str, id: u32, until: Instant, _until_us: u64, _at_us: u64, keep: Keep) {
        self.pool.settle(name, id, until, keep);
    }

    fn forget(&self, _name: &str) {}

    fn has_template(&self, spec: &FunctionSpec) -> bool {
        spec.template
    }

    fn hold_template(&self, spec: &Arc<FunctionSpec>, until: Instant) {
        self.pool.hold_template(spec, until);
    }

    fn prepare(&self, spec: Arc<FunctionSpec>) {
        if !spec.template {
            return;
        }
        let pool = Arc::clone(&self.pool);
        let _ = std::thread::Builder::new()
            .name(format!("baton-prepare-{}", spec.name))
            .spawn(move || pool.prepare_template(&spec));
    }
}
