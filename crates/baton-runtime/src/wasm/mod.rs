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
//! `InstancePre`), instantiated (a store per invocation: the pooling allocator makes that
//! about a microsecond).

use crate::bucket::TokenBucket;
use crate::manifest::{FunctionKind, FunctionSpec};
use baton_core::ids::content_key;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
mod error;

pub use error::WasmError;
use wasmtime::{
    Caller, Config, Engine, Extern, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

/// Epoch tick: timeouts are counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Largest output kept from a guest (64 MiB).
const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// A nested call from a guest: runs function `name` with the payload, returns its output
/// or the error's text.
pub type NestedCall = Arc<dyn Fn(&str, &[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// Per-invocation host state: the payload, WASI (built on first use), the output, the
/// memory limiter, nested calls and the bandwidth bucket.
struct Host {
    wasi: Option<WasiP1Ctx>,
    stdout: Option<MemoryOutputPipe>,
    input: Vec<u8>,
    /// When the guest first took its input (the hop's end).
    input_taken: Option<Instant>,
    output: Vec<u8>,
    limit_bytes: usize,
    denied: bool,
    nested: Option<NestedCall>,
    /// Result of the last nested call.
    result: Vec<u8>,
    bucket: Option<TokenBucket>,
    /// Bytes moved through host calls.
    moved: u64,
}

impl Host {
    /// The WASI context, built on the first WASI call with the payload as stdin.
    fn wasi(&mut self) -> &mut WasiP1Ctx {
        if self.wasi.is_none() {
            self.input_taken.get_or_insert_with(Instant::now);
            let stdout = MemoryOutputPipe::new(MAX_OUTPUT_BYTES);
            self.wasi = Some(
                WasiCtxBuilder::new()
                    .stdin(MemoryInputPipe::new(std::mem::take(&mut self.input)))
                    .stdout(stdout.clone())
                    .build_p1(),
            );
            self.stdout = Some(stdout);
        }
        self.wasi
            .get_or_insert_with(|| WasiCtxBuilder::new().build_p1())
    }

    /// Charges `bytes` to the bucket and waits as long as it says.
    fn charge(&mut self, bytes: u64) {
        self.moved += bytes;
        if let Some(bucket) = self.bucket.as_mut() {
            let wait = bucket.take(bytes, Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }
}

/// Reads `len` bytes at `ptr` of the caller's memory.
fn read_guest(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return None;
    };
    let (start, len) = (usize::try_from(ptr).ok()?, usize::try_from(len).ok()?);
    memory
        .data(&caller)
        .get(start..start.checked_add(len)?)
        .map(<[u8]>::to_vec)
}

/// Copies `bytes` (cut to `cap`) to `ptr` of the caller's memory; returns the count or -1.
fn write_guest(caller: &mut Caller<'_, Host>, ptr: i32, cap: i32, bytes: &[u8]) -> i32 {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return -1;
    };
    let (Ok(start), Ok(cap)) = (usize::try_from(ptr), usize::try_from(cap)) else {
        return -1;
    };
    let n = bytes.len().min(cap);
    match memory.write(caller, start, &bytes[..n]) {
        Ok(()) => n as i32,
        Err(_) => -1,
    }
}

fn add_baton_imports(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap("baton", "input_len", |caller: Caller<'_, Host>| -> i32 {
        caller.data().input.len().min(i32::MAX as usize) as i32
    })?;
    linker.func_wrap(
        "baton",
        "input",
        |mut caller: Caller<'_, Host>, ptr: i32, cap: i32| -> i32 {
            caller
                .data_mut()
                .input_taken
                .get_or_insert_with(Instant::now);
            let input = std::mem::take(&mut caller.data_mut().input);
            let n = write_guest(&mut caller, ptr, cap, &input);
            caller.data_mut().input = input;
            n
        },
    )?;
    linker.func_wrap(
        "baton",
        "output",
        |mut caller: Caller<'_, Host>, ptr: i32, len: i32| -> i32 {
            match read_guest(&mut caller, ptr, len) {
                Some(bytes) if caller.data().output.len() + bytes.len() <= MAX_OUTPUT_BYTES => {
                    caller.data_mut().output.extend_from_slice(&bytes);
                    bytes.len() as i32
                }
                _ => -1,
            }
        },
    )?;
    linker.func_wrap(
        "baton",
        "invoke",
        |mut caller: Caller<'_, Host>, name_ptr: i32, name_len: i32, ptr: i32, len: i32| -> i32 {
            let name =
                read_guest(&mut caller, name_ptr, name_len).and_then(|n| String::from_utf8(n).ok());
            let payload = read_guest(&mut caller, ptr, len);
            let (Some(name), Some(payload)) = (name, payload) else {
                caller.data_mut().result = b"bad name or payload pointer".to_vec();
                return -1;
            };
            let Some(nested) = caller.data().nested.clone() else {
                caller.data_mut().result = b"nested calls are not available here".to_vec();
                return -1;
            };
            caller.data_mut().charge(payload.len() as u64);
            let (result, code) = match nested(&name, &payload) {
                Ok(output) => {
                    let n = output.len().min(i32::MAX as usize) as i32;
                    (output, n)
                }
                Err(message) => (message.into_bytes(), -1),
            };
            caller.data_mut().charge(result.len() as u64);
            caller.data_mut().result = result;
            code
        },
    )?;
    linker.func_wrap(
        "baton",
        "result",
        |mut caller: Caller<'_, Host>, ptr: i32, cap: i32| -> i32 {
            let result = std::mem::take(&mut caller.data_mut().result);
            let n = write_guest(&mut caller, ptr, cap, &result);
            caller.data_mut().result = result;
            n
        },
    )?;
    Ok(())
}

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
    ticker: Arc<Ticker>,
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
            keys: std::sync::Mutex::new(ModuleKeys::new()),
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
        let known = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&stamp)
            .cloned();
        let mut bytes = None;
        let cached = match known {
            Some(path) => path,
            None => {
                let content = read()?;
                let path = self.cache_path(&content);
                self.keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(stamp, path.clone());
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

    /// Runs `function` once with `payload`, nested calls going to `nested`.
    pub fn run(
        &self,
        function: &WasmFunction,
        payload: &[u8],
        nested: Option<NestedCall>,
    ) -> Result<WasmRun, WasmError> {
        let mut store = Store::new(
            &self.engine,
            Host {
                wasi: None,
                stdout: None,
                input: payload.to_vec(),
                input_taken: None,
                output: Vec::new(),
                limit_bytes: (function.limit_mib << 20) as usize,
                denied: false,
                nested,
                result: Vec::new(),
                bucket: (function.net_mbps > 0)
                    .then(|| TokenBucket::new(function.net_mbps, Instant::now())),
                moved: 0,
            },
        );
        store.limiter(|host| host);
        let _running = self.ticker.enter();
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
            .get_typed_func::<(), ()>(&mut store, function.entry)
            .map_err(|e| failed(format!("`{}`: {e:#}", function.entry)))?;
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
        let memory_bytes = instance
            .get_memory(&mut store, "memory")
            .map_or(0, |m| m.data_size(&store) as u64);
        let host = store.into_data();
        let mut output = host
            .stdout
            .map(|pipe| pipe.contents().to_vec())
            .unwrap_or_default();
        output.extend_from_slice(&host.output);
        Ok(WasmRun {
            output,
            memory_bytes,
            input_taken: host.input_taken,
            moved_bytes: host.moved,
        })
    }
}
