//! The WebAssembly backend: one shared wasmtime engine with the pooling allocator (memory
//! isolation between instances in one process), modules compiled once and cached on disk,
//! pre-linked `InstancePre`s, WASI preview 1 with the payload on stdin and the result on
//! stdout, a per-instance memory limit, and an epoch-based timeout. Guests get no
//! filesystem, network, arguments or environment.
//!
//! Warmth tiers: compiled (a `Module`), pre-linked (a [`WasmFunction`] holding the
//! `InstancePre`), instantiated (a store per invocation: the pooling allocator makes that
//! about a microsecond).

use crate::manifest::{FunctionKind, FunctionSpec};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

/// Epoch tick: timeouts are counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Largest output kept from a guest (64 MiB).
const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// Why a wasm function could not be loaded or run.
#[derive(Debug, Error)]
pub enum WasmError {
    /// The engine could not be configured.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The spec is not a wasm function.
    #[error("function `{0}` is not a wasm function")]
    NotWasm(String),
    /// The module file could not be read.
    #[error("function `{function}`: cannot read module {path}: {source}")]
    Read {
        /// The function.
        function: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The module does not compile or link (a broken module).
    #[error("function `{function}`: invalid module: {message}")]
    Invalid {
        /// The function.
        function: String,
        /// What wasmtime said.
        message: String,
    },
    /// The guest ran past its timeout and was interrupted.
    #[error("function `{function}`: timed out after {timeout_ms} ms")]
    Timeout {
        /// The function.
        function: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The guest wanted more memory than its limit.
    #[error("function `{function}`: out of memory (limit {limit_mib} MiB)")]
    OutOfMemory {
        /// The function.
        function: String,
        /// The limit.
        limit_mib: u64,
    },
    /// The guest trapped or exited with a failure.
    #[error("function `{function}` failed: {message}")]
    Failed {
        /// The function.
        function: String,
        /// What happened.
        message: String,
    },
}

impl WasmError {
    /// The execution-record status word.
    pub fn status(&self) -> &'static str {
        match self {
            WasmError::Timeout { .. } => "timeout",
            WasmError::OutOfMemory { .. } => "oom",
            _ => "error",
        }
    }
}

/// Per-invocation host state: WASI and the memory limiter.
struct Host {
    wasi: WasiP1Ctx,
    limit_bytes: usize,
    denied: bool,
}

impl ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.limit_bytes;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The shared engine; create one per process.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<Host>,
    cache_dir: PathBuf,
    ticking: Arc<AtomicBool>,
}

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

/// A compiled, pre-linked function ready to instantiate.
pub struct WasmFunction {
    name: String,
    pre: InstancePre<Host>,
    limit_mib: u64,
    timeout_ms: u64,
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

/// A stable 128-bit content key (two SipHash passes with different prefixes).
fn content_key(bytes: &[u8]) -> String {
    let half = |salt: u8| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut hasher);
        bytes.hash(&mut hasher);
        hasher.finish()
    };
    format!("{:016x}{:016x}-{}", half(1), half(2), bytes.len())
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
            .max_memory_size((max_memory_mib << 20) as usize);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
            .epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let mut linker: Linker<Host> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |host: &mut Host| &mut host.wasi)
            .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        std::fs::create_dir_all(cache_dir).map_err(|e| {
            WasmError::Engine(format!("cannot create cache {}: {e}", cache_dir.display()))
        })?;
        let ticking = Arc::new(AtomicBool::new(true));
        let (ticker_engine, flag) = (engine.clone(), Arc::clone(&ticking));
        std::thread::Builder::new()
            .name("baton-wasm-epoch".into())
            .spawn(move || {
                while flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| WasmError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(WasmEngine {
            engine,
            linker,
            cache_dir: cache_dir.to_owned(),
            ticking,
        })
    }

    fn cache_path(&self, bytes: &[u8]) -> PathBuf {
        // The key covers the content and the engine (wasmtime version and the settings that
        // shape compiled code); wasmtime checks both again when it deserializes.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
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
        let bytes = std::fs::read(module).map_err(|source| WasmError::Read {
            function: spec.name.clone(),
            path: module.clone(),
            source,
        })?;
        let invalid = |e: wasmtime::Error| WasmError::Invalid {
            function: spec.name.clone(),
            message: format!("{e:#}"),
        };
        let cached = self.cache_path(&bytes);
        let mut from_cache = false;
        let compiled = match self.deserialize(&cached) {
            Some(module) => {
                from_cache = true;
                module
            }
            None => {
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
        let pre = self.linker.instantiate_pre(&compiled).map_err(invalid)?;
        Ok(WasmFunction {
            name: spec.name.clone(),
            pre,
            limit_mib: spec.limits.memory_mib,
            timeout_ms: spec.timeout_ms,
            from_cache,
        })
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
        let stdout = MemoryOutputPipe::new(MAX_OUTPUT_BYTES);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(payload.to_vec()))
            .stdout(stdout.clone())
            .build_p1();
        let mut store = Store::new(
            &self.engine,
            Host {
                wasi,
                limit_bytes: (function.limit_mib << 20) as usize,
                denied: false,
            },
        );
        store.limiter(|host| host);
        let ticks = (function.timeout_ms as u128 * 1000 / EPOCH_TICK.as_micros()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        let failed = |message: String| WasmError::Failed {
            function: function.name.clone(),
            message,
        };
        let instance = function
            .pre
            .instantiate(&mut store)
            .map_err(|e| failed(format!("instantiation: {e:#}")))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| failed(format!("no `_start`: {e:#}")))?;
        match start.call(&mut store, ()) {
            Ok(()) => {}
            Err(error) => {
                if let Some(exit) = error.downcast_ref::<I32Exit>() {
                    if exit.0 != 0 {
                        return Err(failed(format!("exit status {}", exit.0)));
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
                    return Err(failed(format!("{error:#}")));
                }
            }
        }
        drop(store);
        Ok(stdout.contents().to_vec())
    }
}
