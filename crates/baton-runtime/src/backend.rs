//! The backends a step runs on, behind one [`Backend`] trait: wasm guests in this process
//! ([`WasmBackend`]: compiled and pre-linked modules, each instance made ahead) and warm
//! worker processes ([`ProcessBackend`]: the [`WarmPool`]). The director and the planner
//! pick a backend by the function's kind once and never branch on it again.
//!
//! A backend hands out an [`Instance`] for a step (how it was obtained: cold, warm,
//! pre-warmed, late), runs it, and takes it back; the planner asks it to pre-warm (claim an
//! idle instance or start one) and to release unused pre-warms.

use crate::manifest::FunctionSpec;
use crate::node::lock;
use crate::planner::PrewarmJob;
use crate::pool::{Lease, WarmPool, Warmth, PREWARM_GRACE};
use crate::process::WorkerError;
use crate::services::{ServiceError, Services};
use crate::wasm::{NestedCall, Ready, Spent, WasmEngine, WasmError, WasmFunction};
use baton_trace::schema::Status;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// The record status of this failure.
    pub fn status(&self) -> Status {
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
    /// Its instance was made ahead (a wasm spare): the step instantiates nothing.
    pub ahead: bool,
}

impl std::fmt::Debug for Acquired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquired")
            .field("warmth", &self.warmth)
            .field("wait_us", &self.wait_us)
            .field("plan", &self.plan)
            .field("late", &self.late)
            .field("ahead", &self.ahead)
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
    /// How its worker process was started: `forked` (from its function's template) or
    /// `spawned`.
    pub worker_start: Option<&'static str>,
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
    /// An instance for a step of `spec`; `catch_up` lets the planner act first when
    /// nothing warm is there (a pre-warm planned for this step starts, and is waited for).
    fn acquire(&self, spec: &Arc<FunctionSpec>, catch_up: &dyn Fn())
        -> Result<Acquired, StepError>;
    /// Carries out a pre-warm now; returns whether an idle instance covered it.
    fn prewarm(&self, spec: Arc<FunctionSpec>, job: &PrewarmJob) -> bool;
    /// Releases, at `at_us`, the unused pre-warms of `plan` for `name` past their keep;
    /// returns how many.
    fn release_unused(&self, name: &str, plan: Option<u64>, at_us: u64) -> usize;
    /// Settles how long the instance `id` given back after a step ending at `at_us` stays
    /// idle: until `until` (`until_us`); released at once when that is not after `at_us`.
    fn settle(&self, name: &str, id: u32, until: Instant, until_us: u64, at_us: u64);
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
            worker_start: Some(if worker.is_forked() {
                "forked"
            } else {
                "spawned"
            }),
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
        pool.give_back(&name, lease.worker, keep_until)
    }
}

impl Backend for ProcessBackend {
    fn acquire(
        &self,
        spec: &Arc<FunctionSpec>,
        catch_up: &dyn Fn(),
    ) -> Result<Acquired, StepError> {
        if self.pool.idle_count(&spec.name) == 0 {
            catch_up();
        }
        let lease = self.pool.take(&spec.name)?;
        Ok(Acquired {
            warmth: lease.warmth,
            wait_us: lease.wait_us,
            plan: lease.plan,
            late: lease.waited_for_prewarm,
            ahead: false,
            instance: Box::new(ProcessInstance {
                lease,
                pool: Arc::clone(&self.pool),
            }),
        })
    }

    fn prewarm(&self, spec: Arc<FunctionSpec>, job: &PrewarmJob) -> bool {
        // An idle worker no other pre-warm counts on: keep it for the step instead.
        if self.pool.claim_idle(&spec.name, job.until) {
            return true;
        }
        let services = self.services.clone();
        let name = spec.name.clone();
        self.pool.prewarm_with(
            &name,
            job.until.max(job.ready_at + PREWARM_GRACE),
            job.plan,
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

    fn settle(&self, name: &str, id: u32, until: Instant, _until_us: u64, _at_us: u64) {
        self.pool.settle(name, id, until);
    }

    fn forget(&self, _name: &str) {}

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

/// A pre-linked wasm function, while unused the plan that pre-warmed it, and its next
/// instance made ahead.
struct LoadedWasm {
    function: Arc<WasmFunction>,
    prewarmed: Option<Option<u64>>,
    spare: Option<Ready>,
}

/// A loaded function taken for a step: it, its warmth, its plan, its spare.
type Taken = (Arc<WasmFunction>, Warmth, Option<u64>, Option<Ready>);

/// Loaded functions by name.
type Loaded = Arc<Mutex<HashMap<String, LoadedWasm>>>;

/// Wasm guests: functions compiled (or loaded from the disk cache) and pre-linked once,
/// each with its next instance made ahead (a spare) by the planner's thread, so a step
/// finds its instance ready and a hand-off is a copy of the input and a call. Spent
/// instances go back to the planner's thread too, which frees them (resetting a guest's
/// memory takes microseconds). Spares and spent instances together hold at most a quarter
/// of the engine's instance slots; a step that finds no free slot frees them and retries.
pub(crate) struct WasmBackend {
    pub(crate) engine: Option<Arc<WasmEngine>>,
    loaded: Loaded,
    spent: Arc<Mutex<Vec<Spent>>>,
    /// Where load times are noted: the one cold-start estimate.
    pool: Arc<WarmPool>,
    pub(crate) services: Option<Arc<Services>>,
}

/// Instance slots spares and spent instances may hold: a quarter of the engine's.
fn slots_for_spares(engine: &WasmEngine) -> usize {
    (engine.max_instances() / 4) as usize
}

impl WasmBackend {
    pub(crate) fn new(pool: Arc<WarmPool>) -> WasmBackend {
        WasmBackend {
            engine: None,
            loaded: Arc::new(Mutex::new(HashMap::new())),
            spent: Arc::new(Mutex::new(Vec::new())),
            pool,
            services: None,
        }
    }

    fn engine(&self, name: &str) -> Result<&Arc<WasmEngine>, StepError> {
        self.engine
            .as_ref()
            .ok_or_else(|| StepError::NoWasmEngine(name.to_owned()))
    }

    /// The loaded function of `name`, if any, how it counts for this step, and its spare.
    fn take_loaded(&self, name: &str) -> Option<Taken> {
        let mut loaded = lock(&self.loaded);
        let entry = loaded.get_mut(name)?;
        let (warmth, plan) = match entry.prewarmed.take() {
            Some(plan) => (Warmth::Prewarmed, plan),
            None => (Warmth::Warm, None),
        };
        Some((
            Arc::clone(&entry.function),
            warmth,
            plan,
            entry.spare.take(),
        ))
    }

    /// The functions loaded (compiled and linked) now, by name.
    pub(crate) fn loaded_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.loaded).keys().cloned().collect();
        names.sort();
        names
    }

    /// How many spares and spent instances hold slots now.
    fn slots_held(&self) -> usize {
        let spares = lock(&self.loaded)
            .values()
            .filter(|l| l.spare.is_some())
            .count();
        spares + lock(&self.spent).len()
    }
}

/// Makes an instance of `function`; when the engine has no free slot, frees the spares
/// and spent instances first and tries once more.
fn instantiate(
    engine: &WasmEngine,
    function: &WasmFunction,
    loaded: &Loaded,
    spent: &Mutex<Vec<Spent>>,
) -> Result<Ready, WasmError> {
    engine.ready(function).or_else(|_| {
        let freed: Vec<Ready> = lock(loaded)
            .values_mut()
            .filter_map(|l| l.spare.take())
            .collect();
        let freed_spent = std::mem::take(&mut *lock(spent));
        if freed.is_empty() && freed_spent.is_empty() {
            return engine.ready(function);
        }
        drop((freed, freed_spent));
        engine.ready(function)
    })
}

struct WasmInstance {
    engine: Arc<WasmEngine>,
    function: Arc<WasmFunction>,
    /// Made ahead, if the planner had made one.
    ready: Option<Ready>,
    /// After the run, until given back.
    spent: Option<Spent>,
    loaded: Loaded,
    spent_queue: Arc<Mutex<Vec<Spent>>>,
}

impl Instance for WasmInstance {
    fn run(&mut self, input: &[u8], call: &StepCall<'_>) -> (Result<Vec<u8>, StepError>, RunFacts) {
        let mut facts = RunFacts::default();
        let ready = match self.ready.take() {
            Some(ready) => Ok(ready),
            None => instantiate(
                &self.engine,
                &self.function,
                &self.loaded,
                &self.spent_queue,
            ),
        };
        let ran = ready.and_then(|ready| {
            self.engine
                .run_ready(&self.function, ready, input, (call.nested)())
        });
        let result = match ran {
            Ok((run, spent)) => {
                self.spent = Some(spent);
                if let (Some(handed), Some(taken)) = (call.handed_at, run.input_taken) {
                    facts.hop_ns = Some(taken.saturating_duration_since(handed).as_nanos() as u64);
                }
                facts.mem_peak_mib = Some(run.memory_bytes as f64 / (1 << 20) as f64);
                facts.net_bytes = Some((input.len() + run.output.len()) as u64 + run.moved_bytes);
                Ok(run.output)
            }
            Err(error) => Err(error.into()),
        };
        (result, facts)
    }

    fn finish(self: Box<Self>, _keep_until: Instant) -> Option<u32> {
        // Freed by the planner's thread (see [`Backend::refill`]), within the bound.
        if let Some(spent) = self.spent {
            let bound = slots_for_spares(&self.engine);
            let mut queue = lock(&self.spent_queue);
            if queue.len() < bound {
                queue.push(spent);
            }
        }
        None
    }
}

impl Backend for WasmBackend {
    fn acquire(
        &self,
        spec: &Arc<FunctionSpec>,
        catch_up: &dyn Fn(),
    ) -> Result<Acquired, StepError> {
        let engine = Arc::clone(self.engine(&spec.name)?);
        let mut found = self.take_loaded(&spec.name);
        if found.is_none() {
            catch_up();
            found = self.take_loaded(&spec.name);
        }
        if let Some((function, warmth, plan, ready)) = found {
            return Ok(Acquired {
                ahead: ready.is_some(),
                instance: Box::new(WasmInstance {
                    engine,
                    function,
                    ready,
                    spent: None,
                    loaded: Arc::clone(&self.loaded),
                    spent_queue: Arc::clone(&self.spent),
                }),
                warmth,
                wait_us: 0,
                plan,
                late: false,
            });
        }
        let started = Instant::now();
        let function = Arc::new(engine.load(spec)?);
        self.pool.note_cold_start(&spec.name, started.elapsed());
        lock(&self.loaded).insert(
            spec.name.clone(),
            LoadedWasm {
                function: Arc::clone(&function),
                prewarmed: None,
                spare: None,
            },
        );
        Ok(Acquired {
            instance: Box::new(WasmInstance {
                engine,
                function,
                ready: None,
                spent: None,
                loaded: Arc::clone(&self.loaded),
                spent_queue: Arc::clone(&self.spent),
            }),
            warmth: Warmth::Cold,
            wait_us: started.elapsed().as_micros() as u64,
            plan: None,
            late: false,
            ahead: false,
        })
    }

    /// Compiles (or loads from the cache) and pre-links the function in the background.
    fn prewarm(&self, spec: Arc<FunctionSpec>, job: &PrewarmJob) -> bool {
        let Some(engine) = self.engine.clone() else {
            return false;
        };
        if lock(&self.loaded).contains_key(&spec.name) {
            return true;
        }
        let (loaded, pool, services, plan) = (
            Arc::clone(&self.loaded),
            Arc::clone(&self.pool),
            self.services.clone(),
            job.plan,
        );
        let _ = std::thread::Builder::new()
            .name(format!("baton-prewarm-{}", spec.name))
            .spawn(move || {
                if ensure_services(services.as_deref(), &spec).is_err() {
                    return;
                }
                let started = Instant::now();
                if let Ok(function) = engine.load(&spec) {
                    pool.note_cold_start(&spec.name, started.elapsed());
                    // Instantiated ahead too, unless the slots for spares are taken.
                    let spares = lock(&loaded).values().filter(|l| l.spare.is_some()).count();
                    let spare = (spares < slots_for_spares(&engine))
                        .then(|| engine.ready(&function).ok())
                        .flatten();
                    lock(&loaded)
                        .entry(spec.name.clone())
                        .or_insert(LoadedWasm {
                            function: Arc::new(function),
                            prewarmed: Some(plan),
                            spare,
                        });
                }
            });
        false
    }

    fn release_unused(&self, name: &str, plan: Option<u64>, _at_us: u64) -> usize {
        let mut loaded = lock(&self.loaded);
        let unused = loaded.get(name).is_some_and(|l| l.prewarmed == Some(plan));
        usize::from(unused && loaded.remove(name).is_some())
    }

    fn settle(&self, _name: &str, _id: u32, _until: Instant, _until_us: u64, _at_us: u64) {}

    fn forget(&self, name: &str) {
        let gone = lock(&self.loaded).remove(name);
        drop(gone);
    }

    fn prepare(&self, spec: Arc<FunctionSpec>) {
        let Some(engine) = self.engine.clone() else {
            return;
        };
        let (loaded, pool) = (Arc::clone(&self.loaded), Arc::clone(&self.pool));
        let _ = std::thread::Builder::new()
            .name(format!("baton-prepare-{}", spec.name))
            .spawn(move || {
                if lock(&loaded).contains_key(&spec.name) {
                    return;
                }
                let started = Instant::now();
                let Ok(function) = engine.load(&spec) else {
                    // A broken module is reported by its first step.
                    return;
                };
                pool.note_cold_start(&spec.name, started.elapsed());
                let spares = lock(&loaded).values().filter(|l| l.spare.is_some()).count();
                let spare = (spares < slots_for_spares(&engine))
                    .then(|| engine.ready(&function).ok())
                    .flatten();
                lock(&loaded)
                    .entry(spec.name.clone())
                    .or_insert(LoadedWasm {
                        function: Arc::new(function),
                        prewarmed: None,
                        spare,
                    });
            });
    }

    /// Frees the spent instances, then makes `spec`'s next instance if it is loaded, has
    /// none and a slot for spares is free.
    fn refill(&self, spec: &FunctionSpec) {
        let spent = std::mem::take(&mut *lock(&self.spent));
        drop(spent);
        let Some(engine) = &self.engine else {
            return;
        };
        let function = match lock(&self.loaded).get(&spec.name) {
            Some(entry) if entry.spare.is_none() => Arc::clone(&entry.function),
            _ => return,
        };
        if self.slots_held() >= slots_for_spares(engine) {
            return;
        }
        let Ok(ready) = engine.ready(&function) else {
            return;
        };
        let mut loaded = lock(&self.loaded);
        let unplaced = match loaded.get_mut(&spec.name) {
            Some(entry) if entry.spare.is_none() && Arc::ptr_eq(&entry.function, &function) => {
                entry.spare = Some(ready);
                None
            }
            _ => Some(ready),
        };
        drop(loaded);
        drop(unplaced);
    }
}
