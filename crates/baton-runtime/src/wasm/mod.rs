//! The WebAssembly backend: one shared wasmtime engine with the pooling allocator (memory
//! isolation between instances in one process), modules compiled once and cached on disk,
//! pre-linked `InstancePre`s, WASI preview 1 with the payload on stdin and the result on
//! stdout, a per-instance memory limit, and an epoch-based timeout. Guests get no
//! filesystem, network, arguments or environment.
//!
//! Host imports (module `baton`), for guests that want them:
//! - `input_len() -> i32`, `input(ptr, cap) -> i32`: the payload, without WASI;
//! - `output(ptr, len)`: appends to the result, without WASI;
//! - `invoke(name_ptr, name_len, payload_ptr, payload_len) -> i32`: a nested synchronous
//!   call of another function through the director; returns the result's length, or -1
//!   (the error text is then the result); `result(ptr, cap) -> i32` copies it out.
//!
//! The WASI context is built on a guest's first WASI call, so a guest that speaks only the
//! `baton` imports skips it (the cheapest hop). Bytes moved through `invoke` are charged to
//! the instance's token bucket when its function reserves bandwidth.
//!
//! Warmth tiers: compiled (a `Module`), pre-linked (a [`WasmFunction`] holding the
//! `InstancePre`), instantiated ahead ([`WasmEngine::ready`]: a store per invocation,
//! about a microsecond with the pooling allocator, made before the call so the call
//! itself is a copy of the payload and the guest's run; [`WasmEngine::run`] does both).

use crate::bucket::TokenBucket;
use crate::manifest::{FunctionKind, FunctionSpec};
use baton_core::ids::content_key;
use baton_core::sync::Unpoisoned;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
mod error;
mod host;

pub use error::WasmError;
use host::{add_baton_imports, Host};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module,
    PoolingAllocationConfig, Store, Trap, TypedFunc,
};
use wasmtime_wasi::I32Exit;

/// Epoch tick: timeouts are counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Largest output kept from a guest (64 MiB).
const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// A nested call from a guest: runs function `name` with the payload, returns its output
/// or the error's text.
pub type NestedCall = Arc<dyn Fn(&str, &[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// What one run produced besides its output.
#[derive(Debug, Clone, Default)]
pub struct WasmRun {
    /// The output (WASI stdout, then anything written with `baton.output`).
    pub output: Vec<u8>,
    /// The instance's linear memory at the end (it only grows: its peak), bytes.
    pub memory_bytes: u64,
    /// When the guest first took its payload (`baton.input` or its first WASI call).
    pub input_taken: Option<Instant>,
    /// Bytes moved through nested calls.
    pub moved_bytes: u64,
}

/// The shared engine; create one per process.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<Host>,
    cache_dir: PathBuf,
    ticker: Arc<Ticker>,
    max_instances: u32,
    /// Cache file of each module file version (path, size, modification time).
    keys: std::sync::Mutex<ModuleKeys>,
}

/// Module file version → its compiled file in the cache.
type ModuleKeys = std::collections::HashMap<(PathBuf, u64, Option<std::time::SystemTime>), PathBuf>;

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.ticker.thread.get() {
            thread.unpark();
        }
    }
}

/// The epoch clock's state: it ticks while guests run and for [`IDLE_TICKS`] ticks after,
/// then parks until a guest starts (an idle server is not woken 1,000 times a second).
#[derive(Debug, Default)]
struct Ticker {
    stop: AtomicBool,
    running: std::sync::atomic::AtomicUsize,
    parked: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

/// Ticks without a guest running before the epoch thread parks.
const IDLE_TICKS: u32 = 100;

/// A guest running: counted while it lives, so the epoch clock ticks.
struct Running<'a>(&'a Ticker);

impl Ticker {
    fn enter(&self) -> Running<'_> {
        // Sequentially consistent with the ticker's `parked` then `running` check: either
        // it sees this guest and does not park, or this sees it parked and wakes it.
        self.running.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
        Running(self)
    }

    fn run(&self, engine: &Engine) {
        let mut idle = 0;
        while !self.stop.load(Ordering::SeqCst) {
            if self.running.load(Ordering::SeqCst) == 0 {
                idle += 1;
            } else {
                idle = 0;
            }
            if idle >= IDLE_TICKS {
                self.parked.store(true, Ordering::SeqCst);
                if self.running.load(Ordering::SeqCst) == 0 && !self.stop.load(Ordering::SeqCst) {
                    std::thread::park_timeout(Duration::from_secs(1));
                }
                self.parked.store(false, Ordering::SeqCst);
                idle = 0;
                continue;
            }
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A compiled, pre-linked function ready to instantiate.
pub struct WasmFunction {
    name: String,
    pre: InstancePre<Host>,
    /// The export run: `handle` when the module has one, else `_start`.
    entry: &'static str,
    limit_mib: u64,
    timeout_ms: u64,
    net_mbps: u64,
    /// Whether the compiled module came from the disk cache.
    pub from_cache: bool,
}

impl std::fmt::Debug for WasmFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmFunction")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl WasmEngine {
    /// An engine caching compiled modules in `cache_dir`, allowing `max_instances`
    /// concurrent instances of at most `max_memory_mib` each.
    pub fn new(
        cache_dir: &Path,
        max_instances: u32,
        max_memory_mib: u64,
    ) -> Result<WasmEngine, WasmError> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_core_instances(max_instances)
            .total_memories(max_instances)
            .total_tables(max_instances)
            .max_memory_size((max_memory_mib << 20) as usize)
            // Reset a small guest's memory and tables by zeroing instead of returning the
            // pages to the kernel: a hop then costs no page faults (measured with `baton
            // bench hop`).
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
            .epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let mut linker: Linker<Host> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, Host::wasi)
            .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        add_baton_imports(&mut linker).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        std::fs::create_dir_all(cache_dir).map_err(|e| {
            WasmError::Engine(format!("cannot create cache {}: {e}", cache_dir.display()))
        })?;
        let ticker = Arc::new(Ticker::default());
        let (ticker_engine, clock) = (engine.clone(), Arc::clone(&ticker));
        let thread = std::thread::Builder::new()
            .name("baton-wasm-epoch".into())
            .spawn(move || clock.run(&ticker_engine))
            .map_err(|e| WasmError::Engine(format!("cannot start the epoch thread: {e}")))?;
        let _ = ticker.thread.set(thread.thread().clone());
        Ok(WasmEngine {
            engine,
            linker,
            cache_dir: cache_dir.to_owned(),
            ticker,
            max_instances,
            keys: std::sync::Mutex::new(ModuleKeys::new()),
        })
    }

    /// How many instances may exist at once (the pool's slots).
    pub fn max_instances(&self) -> u32 {
        self.max_instances
    }

    fn cache_path(&self, bytes: &[u8]) -> PathBuf {
        // The key covers the content and the engine (wasmtime version and the settings that
        // shape compiled code); wasmtime checks both again when it deserializes.
        let mut hasher = baton_core::ids::StableHasher::default();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        self.cache_dir.join(format!(
            "{}-engine{:016x}.cwasm",
            content_key(bytes),
            hasher.finish()
        ))
    }

    /// Compiles (or loads from the cache) and pre-links `spec`'s module.
    pub fn load(&self, spec: &FunctionSpec) -> Result<WasmFunction, WasmError> {
        let FunctionKind::Wasm { module } = &spec.kind else {
            return Err(WasmError::NotWasm(spec.name.clone()));
        };
        let read = || {
            std::fs::read(module).map_err(|source| WasmError::Read {
                function: spec.name.clone(),
                path: module.clone(),
                source,
            })
        };
        let invalid = |e: wasmtime::Error| WasmError::Invalid {
            function: spec.name.clone(),
            message: format!("{e:#}"),
        };
        // The content key of a module file is computed once per file version (path, size,
        // modification time): a cached load then reads and hashes nothing but the compiled
        // file.
        let meta = std::fs::metadata(module).map_err(|source| WasmError::Read {
            function: spec.name.clone(),
            path: module.clone(),
            source,
        })?;
        let stamp = (module.clone(), meta.len(), meta.modified().ok());
        let known = self.keys.lock_unpoisoned().get(&stamp).cloned();
        let mut bytes = None;
        let cached = match known {
            Some(path) => path,
            None => {
                let content = read()?;
                let path = self.cache_path(&content);
                self.keys.lock_unpoisoned().insert(stamp, path.clone());
                bytes = Some(content);
                path
            }
        };
        let mut from_cache = false;
        let compiled = match self.deserialize(&cached) {
            Some(module) => {
                from_cache = true;
                module
            }
            None => {
                let bytes = match bytes {
                    Some(bytes) => bytes,
                    None => read()?,
                };
                let module = Module::new(&self.engine, &bytes).map_err(invalid)?;
                if let Ok(serialized) = module.serialize() {
                    let temporary = cached.with_extension("tmp");
                    if std::fs::write(&temporary, serialized).is_ok() {
                        let _ = std::fs::rename(&temporary, &cached);
                    }
                }
                module
            }
        };
        let entry = if compiled.get_export("handle").is_some() {
            "handle"
        } else if compiled.get_export("_start").is_some() {
            "_start"
        } else {
            return Err(WasmError::Invalid {
                function: spec.name.clone(),
                message: "exports neither `handle` nor `_start`".into(),
            });
        };
        let pre = self.linker.instantiate_pre(&compiled).map_err(invalid)?;
        Ok(WasmFunction {
            name: spec.name.clone(),
            pre,
            entry,
            limit_mib: spec.limits.memory_mib,
            timeout_ms: spec.timeout_ms,
            net_mbps: spec.limits.net_mbps,
            from_cache,
        })
    }

    /// Deletes `spec`'s compiled module from the disk cache (the next load compiles);
    /// returns whether there was one.
    pub fn evict_cached(&self, spec: &FunctionSpec) -> Result<bool, WasmError> {
        let FunctionKind::Wasm { module } = &spec.kind else {
            return Err(WasmError::NotWasm(spec.name.clone()));
        };
        let bytes = std::fs::read(module).map_err(|source| WasmError::Read {
            function: spec.name.clone(),
            path: module.clone(),
            source,
        })?;
        Ok(std::fs::remove_file(self.cache_path(&bytes)).is_ok())
    }

    #[allow(unsafe_code)]
    fn deserialize(&self, path: &Path) -> Option<Module> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file is one this engine wrote into baton's own cache directory, named
        // by the content hash and wasmtime version; wasmtime checks its header and the
        // engine configuration and returns an error (we then recompile) on any mismatch.
        unsafe { Module::deserialize_file(&self.engine, path) }.ok()
    }

    /// Runs `function` once with `payload` on stdin; returns its stdout.
    pub fn invoke(&self, function: &WasmFunction, payload: &[u8]) -> Result<Vec<u8>, WasmError> {
        self.run(function, payload, None).map(|run| run.output)
    }

    /// Runs `function` once with `payload`, nested calls going to `nested`: instantiates
    /// it, then runs it as [`WasmEngine::run_ready`] does (the spent instance is freed here).
    pub fn run(
        &self,
        function: &WasmFunction,
        payload: &[u8],
        nested: Option<NestedCall>,
    ) -> Result<WasmRun, WasmError> {
        let ready = self.ready(function)?;
        self.run_ready(function, ready, payload, nested)
            .map(|(run, _spent)| run)
    }

    /// `function` instantiated ahead of its call: a store, its instance and the entry
    /// export, waiting for a payload. It holds one of the pool's instance slots and the
    /// guest's initial memory until it runs or is dropped.
    pub fn ready(&self, function: &WasmFunction) -> Result<Ready, WasmError> {
        let mut store = Store::new(
            &self.engine,
            Host {
                wasi: None,
                stdout: None,
                input: Vec::new(),
                input_taken: None,
                output: Vec::new(),
                limit_bytes: (function.limit_mib << 20) as usize,
                denied: false,
                nested: None,
                result: Vec::new(),
                bucket: None,
                moved: 0,
            },
        );
        store.limiter(|host| host);
        let failed = |message: String| WasmError::Failed {
            function: function.name.clone(),
            message,
        };
        let instance = function
            .pre
            .instantiate(&mut store)
            .map_err(|e| failed(format!("instantiation: {e:#}")))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, function.entry)
            .map_err(|e| failed(format!("`{}`: {e:#}", function.entry)))?;
        let memory = instance.get_memory(&mut store, "memory");
        Ok(Ready {
            store,
            start,
            memory,
            function: function.name.clone(),
        })
    }

    /// Runs an instance made by [`WasmEngine::ready`] for `function` once with `payload`.
    /// Returns what it produced and the spent instance: dropping that frees its pool slot
    /// and resets its memory (a few microseconds the caller may spend off its own path).
    pub fn run_ready(
        &self,
        function: &WasmFunction,
        ready: Ready,
        payload: &[u8],
        nested: Option<NestedCall>,
    ) -> Result<(WasmRun, Spent), WasmError> {
        let Ready {
            mut store,
            start,
            memory,
            function: made_for,
        } = ready;
        if made_for != function.name {
            return Err(WasmError::Failed {
                function: function.name.clone(),
                message: format!("an instance made for `{made_for}` was handed to it"),
            });
        }
        {
            let host = store.data_mut();
            host.input = payload.to_vec();
            host.nested = nested;
            host.bucket = (function.net_mbps > 0)
                .then(|| TokenBucket::new(function.net_mbps, Instant::now()));
        }
        let _running = self.ticker.enter();
        let ticks = (function.timeout_ms as u128 * 1000 / EPOCH_TICK.as_micros()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        if let Err(error) = start.call(&mut store, ()) {
            if let Some(exit) = error.downcast_ref::<I32Exit>() {
                if exit.0 != 0 {
                    return Err(WasmError::Failed {
                        function: function.name.clone(),
                        message: format!("exit status {}", exit.0),
                    });
                }
            } else if store.data().denied {
                return Err(WasmError::OutOfMemory {
                    function: function.name.clone(),
                    limit_mib: function.limit_mib,
                });
            } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                return Err(WasmError::Timeout {
                    function: function.name.clone(),
                    timeout_ms: function.timeout_ms,
                });
            } else {
                return Err(WasmError::Failed {
                    function: function.name.clone(),
                    message: format!("{error:#}"),
                });
            }
        }
        let memory_bytes = memory.map_or(0, |m| m.data_size(&store) as u64);
        let host = store.data_mut();
        let mut output = host
            .stdout
            .take()
            .map(|pipe| pipe.contents().to_vec())
            .unwrap_or_default();
        output.extend_from_slice(&host.output);
        let run = WasmRun {
            output,
            memory_bytes,
            input_taken: host.input_taken,
            moved_bytes: host.moved,
        };
        Ok((run, Spent(store)))
    }
}

/// A function instantiated ahead of its call (see [`WasmEngine::ready`]). Used once.
pub struct Ready {
    store: Store<Host>,
    start: TypedFunc<(), ()>,
    memory: Option<Memory>,
    function: String,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

/// An instance that has run: dropping it frees its pool slot and resets its memory.
pub struct Spent(#[allow(dead_code)] Store<Host>);

impl std::fmt::Debug for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spent")
    }
}
