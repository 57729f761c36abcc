//! The wasm backend: compiled, pre-linked functions, each with its next instance made
//! ahead by the planner's thread (see [`WasmBackend`]).

use super::{ensure_services, Acquired, Backend, Instance, RunFacts, StepCall, StepError, Tier};
use crate::manifest::FunctionSpec;
use crate::node::lock;
use crate::planner::PrewarmJob;
use crate::pool::{WarmPool, Warmth};
use crate::services::Services;
use crate::wasm::{Ready, Spent, WasmEngine, WasmError, WasmFunction};
use baton_core::exec::Prewarm;
use baton_core::sync::UnpoisonedWait;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// A pre-linked wasm function, while unused the plan that pre-warmed it, and its next
/// instance made ahead.
struct LoadedWasm {
    function: Arc<WasmFunction>,
    prewarmed: Option<Prewarm>,
    spare: Option<Ready>,
}

/// A loaded function taken for a step: it, its warmth, its plan, its spare.
type Taken = (Arc<WasmFunction>, Warmth, Option<u64>, Option<Ready>);

/// Loaded functions by name.
type Loaded = Arc<Mutex<HashMap<String, LoadedWasm>>>;

/// A load under way off the request path (a pre-warm's or a deployment's): a step of the
/// function waits for it instead of compiling the module a second time, as a step waits
/// for a worker process still starting.
struct Loading {
    started: Instant,
    done: Mutex<bool>,
    ended: Condvar,
}

/// Loads under way by name.
type Underway = Arc<Mutex<HashMap<String, Arc<Loading>>>>;

/// Registers a load of `name` under way unless one is (or the function is loaded); the
/// returned guard ends it, waking the steps that wait, however the load ends.
fn begin_loading(underway: &Underway, loaded: &Loaded, name: &str) -> Option<LoadingGuard> {
    let mut underway_now = lock(underway);
    if underway_now.contains_key(name) || lock(loaded).contains_key(name) {
        return None;
    }
    let loading = Arc::new(Loading {
        started: Instant::now(),
        done: Mutex::new(false),
        ended: Condvar::new(),
    });
    underway_now.insert(name.to_owned(), Arc::clone(&loading));
    Some(LoadingGuard {
        underway: Arc::clone(underway),
        name: name.to_owned(),
        loading,
    })
}

/// Ends a load under way when dropped (see [`begin_loading`]).
struct LoadingGuard {
    underway: Underway,
    name: String,
    loading: Arc<Loading>,
}

impl Drop for LoadingGuard {
    fn drop(&mut self) {
        lock(&self.underway).remove(&self.name);
        *lock(&self.loading.done) = true;
        self.loading.ended.notify_all();
    }
}

/// Wasm guests: functions compiled (or loaded from the disk cache) and pre-linked once,
/// each with its next instance made ahead (a spare) by the planner's thread, so a step
/// finds its instance ready and a hand-off is a copy of the input and a call. Spent
/// instances go back to the planner's thread too, which frees them (resetting a guest's
/// memory takes microseconds). Spares and spent instances together hold at most a quarter
/// of the engine's instance slots; a step that finds no free slot frees them and retries.
pub(crate) struct WasmBackend {
    pub(crate) engine: Option<Arc<WasmEngine>>,
    loaded: Loaded,
    underway: Underway,
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
            underway: Arc::new(Mutex::new(HashMap::new())),
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
            Some(prewarm) => (Warmth::Prewarmed, prewarm.plan),
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
}

/// How many spares and spent instances hold slots now.
fn slots_held(loaded: &Loaded, spent: &Mutex<Vec<Spent>>) -> usize {
    let spares = lock(loaded).values().filter(|l| l.spare.is_some()).count();
    spares + lock(spent).len()
}

/// Loads `spec` (compiled, or from the disk cache) off the request path unless it is
/// loaded already, notes the load as its cold start, makes its first instance ahead when a
/// slot for spares is free, and keeps it (`prewarmed`: the plan it is for, if any). A
/// module that does not load is left for its first step to report.
fn load_ahead(
    engine: &WasmEngine,
    loaded: &Loaded,
    spent: &Mutex<Vec<Spent>>,
    pool: &WarmPool,
    spec: &FunctionSpec,
    prewarmed: Option<Prewarm>,
) {
    if lock(loaded).contains_key(&spec.name) {
        return;
    }
    let started = Instant::now();
    let Ok(function) = engine.load(spec) else {
        return;
    };
    pool.note_cold_start(&spec.name, started.elapsed());
    let spare = (slots_held(loaded, spent) < slots_for_spares(engine))
        .then(|| engine.ready(&function).ok())
        .flatten();
    lock(loaded).entry(spec.name.clone()).or_insert(LoadedWasm {
        function: Arc::new(function),
        prewarmed,
        spare,
    });
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
        chosen: &dyn Fn(Warmth, std::time::Duration),
    ) -> Result<Acquired, StepError> {
        let engine = Arc::clone(self.engine(&spec.name)?);
        let mut found = self.take_loaded(&spec.name);
        let mut waited = None;
        if found.is_none() {
            let loading = lock(&self.underway).get(&spec.name).cloned();
            if let Some(loading) = loading {
                // A load under way: the step waits for it (a late pre-warm when a plan
                // asked for it), as the pool's steps wait for a worker still starting.
                chosen(Warmth::Prewarmed, loading.started.elapsed());
                let since = Instant::now();
                let mut done = lock(&loading.done);
                while !*done {
                    done = loading.ended.wait_unpoisoned(done);
                }
                drop(done);
                waited = Some(since.elapsed());
                found = self.take_loaded(&spec.name);
            }
        }
        if let Some((function, warmth, plan, ready)) = found {
            // Waited for a deployment's load: that wait was its cold start.
            let warmth = match (waited, warmth) {
                (Some(_), Warmth::Warm) => Warmth::Cold,
                (_, warmth) => warmth,
            };
            return Ok(Acquired {
                tier: if ready.is_some() {
                    Tier::Instance
                } else {
                    Tier::Module
                },
                instance: Box::new(WasmInstance {
                    engine,
                    function,
                    ready,
                    spent: None,
                    loaded: Arc::clone(&self.loaded),
                    spent_queue: Arc::clone(&self.spent),
                }),
                warmth,
                wait_us: waited.map_or(0, |w| w.as_micros() as u64),
                plan,
                late: waited.is_some() && warmth == Warmth::Prewarmed,
            });
        }
        if waited.is_none() {
            chosen(Warmth::Cold, std::time::Duration::ZERO);
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
            tier: Tier::Compiled,
        })
    }

    /// Compiles (or loads from the cache) and pre-links the function in the background.
    fn prewarm(
        &self,
        spec: Arc<FunctionSpec>,
        job: &PrewarmJob,
        _admit: &dyn Fn(u64) -> bool,
    ) -> bool {
        let Some(engine) = self.engine.clone() else {
            return false;
        };
        if lock(&self.loaded).contains_key(&spec.name) {
            return true;
        }
        let Some(guard) = begin_loading(&self.underway, &self.loaded, &spec.name) else {
            return false; // under way already
        };
        let (loaded, spent, pool, services, plan) = (
            Arc::clone(&self.loaded),
            Arc::clone(&self.spent),
            Arc::clone(&self.pool),
            self.services.clone(),
            job.plan,
        );
        let _ = std::thread::Builder::new()
            .name(format!("baton-prewarm-{}", spec.name))
            .spawn(move || {
                if ensure_services(services.as_deref(), &spec).is_ok() {
                    load_ahead(
                        &engine,
                        &loaded,
                        &spent,
                        &pool,
                        &spec,
                        Some(Prewarm { plan }),
                    );
                }
                drop(guard);
            });
        false
    }

    fn release_unused(&self, name: &str, plan: Option<u64>, _at_us: u64) -> usize {
        let mut loaded = lock(&self.loaded);
        let unused = loaded
            .get(name)
            .is_some_and(|l| l.prewarmed == Some(Prewarm { plan }));
        usize::from(unused && loaded.remove(name).is_some())
    }

    fn settle(
        &self,
        _name: &str,
        _id: u32,
        _until: Instant,
        _until_us: u64,
        _at_us: u64,
        _keep: crate::pool::Keep,
    ) {
    }

    fn forget(&self, name: &str) {
        let gone = lock(&self.loaded).remove(name);
        drop(gone);
    }

    fn prepare(&self, spec: Arc<FunctionSpec>) {
        let Some(engine) = self.engine.clone() else {
            return;
        };
        let Some(guard) = begin_loading(&self.underway, &self.loaded, &spec.name) else {
            return;
        };
        let (loaded, spent, pool) = (
            Arc::clone(&self.loaded),
            Arc::clone(&self.spent),
            Arc::clone(&self.pool),
        );
        let _ = std::thread::Builder::new()
            .name(format!("baton-prepare-{}", spec.name))
            .spawn(move || {
                load_ahead(&engine, &loaded, &spent, &pool, &spec, None);
                drop(guard);
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
        if slots_held(&self.loaded, &self.spent) >= slots_for_spares(engine) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::Isolation;
    use std::sync::mpsc;

    fn backend() -> (WasmBackend, Arc<FunctionSpec>, tempfile::TempDir) {
        let cache = tempfile::tempdir().unwrap();
        let mut backend = WasmBackend::new(WarmPool::new(vec![], Isolation::none()));
        backend.engine = Some(Arc::new(WasmEngine::new(cache.path(), 8, 16).unwrap()));
        let module =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wat/upper.wat");
        let spec = FunctionSpec::from_toml(&format!(
            "name = \"upper\"\nkind = \"wasm\"\nmodule = {module:?}\n"
        ))
        .unwrap();
        (backend, Arc::new(spec), cache)
    }

    /// Runs a step of `spec` on its own thread against a load held under way by `guard`;
    /// `finish_load` runs once the step has said it waits; returns what the step got.
    fn step_during_a_load(
        backend: &WasmBackend,
        spec: &Arc<FunctionSpec>,
        guard: LoadingGuard,
        finish_load: impl FnOnce(),
    ) -> Acquired {
        let (told, heard) = mpsc::channel();
        std::thread::scope(|s| {
            let step = s.spawn(|| {
                let chosen = |warmth: Warmth, _: std::time::Duration| {
                    let _ = told.send(warmth);
                };
                backend.acquire(spec, &chosen)
            });
            assert_eq!(
                heard.recv().unwrap(),
                Warmth::Prewarmed,
                "the step said it waits for the load under way"
            );
            finish_load();
            drop(guard);
            step.join().unwrap().unwrap()
        })
    }

    #[test]
    fn a_step_waits_for_a_pre_warms_load_under_way_instead_of_compiling_again() {
        let (backend, spec, _cache) = backend();
        let guard = begin_loading(&backend.underway, &backend.loaded, "upper").unwrap();
        assert!(
            begin_loading(&backend.underway, &backend.loaded, "upper").is_none(),
            "one load of a function at a time"
        );
        let engine = backend.engine.clone().unwrap();
        let acquired = step_during_a_load(&backend, &spec, guard, || {
            let (loaded, spent, pool) = (&backend.loaded, &backend.spent, &backend.pool);
            let plan = Some(7);
            load_ahead(&engine, loaded, spent, pool, &spec, Some(Prewarm { plan }));
        });
        assert_eq!(acquired.warmth, Warmth::Prewarmed);
        assert!(acquired.late, "it waited for the rest of the pre-warm");
        assert_eq!(acquired.plan, Some(7));
        assert_ne!(acquired.tier, Tier::Compiled, "not compiled a second time");
        assert!(lock(&backend.underway).is_empty());
    }

    #[test]
    fn a_step_whose_awaited_load_fails_loads_the_module_itself() {
        let (backend, spec, _cache) = backend();
        let guard = begin_loading(&backend.underway, &backend.loaded, "upper").unwrap();
        // The load ends without a module (a service that did not start, say).
        let acquired = step_during_a_load(&backend, &spec, guard, || {});
        assert_eq!(acquired.warmth, Warmth::Cold);
        assert_eq!(acquired.tier, Tier::Compiled);
        assert!(lock(&backend.loaded).contains_key("upper"));
    }
}
