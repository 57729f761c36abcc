//! `baton serve`: the HTTP API over the runtime (axum on tokio; invocations run on blocking
//! threads, since a chain's hops stay on one thread), with the learned state, functions and
//! sequences kept in the embedded store and restored on start: the last snapshot of the
//! learner plus the execution log after it. See `docs/openapi.json` for the routes.
//!
//! A bearer token is required unless the server listens on loopback with auth explicitly
//! off. Bodies are capped; each function has a bounded queue (429 with `Retry-After` when
//! it is full). Asynchronous invocations are stored before they are accepted, so one
//! interrupted by a crash is re-run on restart when its function is pure, and reported
//! failed otherwise: never silently lost.

mod api;
pub mod client;
pub mod cluster;
pub mod listen;
pub mod metrics;
pub mod otlp_export;
mod startup;
mod uploads;
mod writer;

pub use api::ROUTES;
pub use cluster::{ClusterConfig, ClusterError};

use baton_core::policy::spec::{self, PolicyInputs, PolicyName, PolicySpec, SpecError};
use baton_core::{Costs, ResourcePool, SnapshotCell};
use baton_runtime::director::{Director, RecordSource};
use baton_runtime::isolation::{self, IsolationDetection};
use baton_runtime::limits;
use baton_runtime::pool::WarmPool;
use baton_runtime::wasm::WasmEngine;
use baton_store::{Store, StoreError};
use metrics::Metrics;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
pub(crate) use uploads::{materialize, sweep_uploads, UploadDirs};
pub use writer::Retention;
pub(crate) use writer::{snapshot, DiskCounters, Writer};

use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Where the store, uploaded modules and the compiled-module cache live.
    pub data_dir: PathBuf,
    /// The bearer token; `None` turns auth off, which is only allowed on loopback.
    pub token: Option<String>,
    /// The pre-warming policy (built by `baton_core::policy::spec`, as `baton sim` builds
    /// it).
    pub policy: PolicySpec,
    /// Which idle worker of a function a step takes (`baton sim --reuse` likewise).
    pub reuse: baton_core::exec::Reuse,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Requests waiting or running per function before 429.
    pub queue_depth: usize,
    /// HTTP connections served at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// A client must send a request's head within this, and an idle keep-alive connection
    /// is closed after it.
    pub header_read_timeout: Duration,
    /// A request's whole body must arrive within this after its head (408 otherwise), so
    /// slow bodies cannot hold the connection slots.
    pub body_read_timeout: Duration,
    /// How often the learner is snapshotted into the store.
    pub snapshot_every: Duration,
    /// Whether process functions may be deployed over HTTP (their code then arrives as a
    /// tar.gz and runs in the sandbox). Off by default: wasm guests only.
    pub allow_process_functions: bool,
    /// Whether process functions run unjailed, as the server's own user, on a host with no
    /// working sandbox (`--insecure-unjailed-process-functions`). Off: such a host refuses
    /// them at deploy and at every start, saying how to install the sandbox.
    pub unjailed_process_functions: bool,
    /// The NATS cluster to join, if any (`None`: one node, SQLite only). A node without a
    /// name is named after its host and port.
    pub cluster: Option<ClusterConfig>,
    /// Which execution records are kept (by age and bytes; pruned after each snapshot).
    pub retention: Retention,
    /// An OTLP/HTTP collector to send every execution record to as a span
    /// (`http://HOST:PORT`; `None`: no export).
    pub otlp_endpoint: Option<String>,
    /// Mine callers for calls that name none before learning them (`None`: learn them as
    /// requests of their own).
    pub mine_callers: Option<baton_core::mining::MinerConfig>,
}

impl ServerConfig {
    /// Defaults: loopback port 8080, `./baton-data`, token required, the chain policy at
    /// its defaults, 16 MiB bodies, 64 queued per function, 1024 connections with 30 s to
    /// send a request's head and 60 s for its body, a snapshot every 30 s, no process functions over HTTP.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            token: None,
            policy: PolicySpec::new(PolicyName::Chain),
            reuse: baton_core::exec::Reuse::default(),
            max_body_bytes: 16 << 20,
            queue_depth: 64,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            snapshot_every: Duration::from_secs(30),
            allow_process_functions: false,
            unjailed_process_functions: false,
            retention: Retention {
                age: Some(Duration::from_secs(7 * 86_400)),
                bytes: Some(1 << 30),
            },
            cluster: None,
            otlp_endpoint: None,
            mine_callers: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Auth off on a non-loopback address.
    #[error("--no-auth is only allowed on a loopback address, not {0}")]
    AuthRequired(SocketAddr),
    /// A token that is empty or only white space would let anyone in.
    #[error("the bearer token is empty: give a real one, or --no-auth on loopback")]
    EmptyToken,
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or socket problem.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The wasm engine could not start.
    #[error("wasm engine: {0}")]
    Wasm(String),
    /// The policy cannot run here.
    #[error(transparent)]
    Policy(#[from] SpecError),
    /// The stored state does not load.
    #[error("restoring: {0}")]
    Restore(String),
    /// A setting that cannot work (named in the message).
    #[error("{0}")]
    Config(String),
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// What a restart found, for the log and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Functions deployed again.
    pub functions: usize,
    /// Sequences declared again.
    pub sequences: usize,
    /// Whether a learner snapshot was loaded.
    pub snapshot: bool,
    /// Execution records learned again from the log after the snapshot.
    pub replayed_records: usize,
    /// Asynchronous invocations found unfinished and run again (pure functions).
    pub rerun: usize,
    /// Asynchronous invocations found unfinished and marked failed.
    pub failed: usize,
    /// Worker groups left by a killed predecessor, emptied and removed.
    pub reclaimed_groups: usize,
    /// Uploads (modules, code directories) no function used any more, removed.
    pub removed_uploads: usize,
    /// Functions that could not be restored, with the reason.
    pub skipped: Vec<String>,
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub(crate) director: Arc<Director>,
    pub(crate) store: Arc<Store>,
    pub(crate) writer: Writer,
    pub(crate) engine: Arc<WasmEngine>,
    pub(crate) reservations: ResourcePool,
    pub(crate) dirs: UploadDirs,
    /// Held while an upload is installed or the unused ones are swept, so a sweep never
    /// takes what an install is about to store.
    pub(crate) uploads: Mutex<()>,
    pub(crate) disk: Arc<DiskCounters>,
    pub(crate) allow_process_functions: bool,
    pub(crate) token: Option<String>,
    pub(crate) queue_depth: usize,
    pub(crate) queues: Mutex<HashMap<String, usize>>,
    pub(crate) metrics: Metrics,
    pub(crate) detection: IsolationDetection,
    pub(crate) policy: PolicySpec,
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// A running server; [`RunningServer::stop`] (or dropping it) shuts it down and saves a
/// last snapshot.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// What the start restored.
    pub restored: Restored,
    /// How workers are jailed and limited on this machine.
    pub detection: String,
    /// Whether worker processes run in the sandbox.
    pub sandboxed: bool,
    state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Opens the store in `config.data_dir`, restores functions, sequences and the learned
    /// graph, and starts serving on a background thread.
    pub fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
        if config.token.is_none() && !config.listen.ip().is_loopback() {
            return Err(ServerError::AuthRequired(config.listen));
        }
        if config.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ServerError::EmptyToken);
        }
        let data_dir = &config.data_dir;
        let dirs = UploadDirs {
            modules: data_dir.join("modules"),
            code: data_dir.join("code"),
        };
        for dir in [&dirs.modules, &dirs.code] {
            std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("baton-http")
            .build()
            .map_err(io("cannot start the HTTP runtime"))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(config.listen))
            .map_err(io(format!("cannot listen on {}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(io("cannot read the listening address"))?;
        // Joined before anything is restored: a node that cannot reach its cluster does
        // not serve a stale view of it.
        let cluster = match &config.cluster {
            Some(wanted) => {
                let mut wanted = wanted.clone();
                if wanted.node.is_empty() {
                    wanted.node = cluster::default_node_name(addr.port());
                }
                Some(Arc::new(runtime.block_on(cluster::Cluster::join(&wanted))?))
            }
            None => None,
        };
        let store = Arc::new(Store::open(&data_dir.join("baton.db"))?);
        let mut restored = Restored::default();
        let tdg = startup::restore_learner(&store, &mut restored)?;

        let mut functions = Vec::new();
        for stored in store.functions()? {
            match materialize(
                &store,
                &dirs,
                &stored.manifest,
                stored.module_hash.as_deref(),
            ) {
                Ok(spec) => functions.push(spec),
                // One function that cannot come back does not keep the others down.
                Err(e) => restored
                    .skipped
                    .push(format!("function `{}`: {e}", stored.name)),
            }
        }
        restored.functions = functions.len();
        let mut detection = isolation::detect();
        detection.sandbox = detection
            .sandbox
            .unjailed_if_missing(config.unjailed_process_functions);
        let isolation = detection.isolation();
        restored.reclaimed_groups = limits::reclaim_stale(&isolation.limits);
        let capacity = startup::machine_capacity();
        // Idle workers hold at most the memory reservations may use; past it the planner
        // evicts in the policy's order.
        let pool = WarmPool::with_budget(functions, isolation, Some(capacity.memory_mib));
        pool.set_reuse(config.reuse);
        let engine = Arc::new(
            WasmEngine::new(&data_dir.join("cache"), 256, 512)
                .map_err(|e| ServerError::Wasm(e.to_string()))?,
        );
        let mut seed = tdg.clone();
        let graph = Arc::new(SnapshotCell::new(seed.snapshot()));
        let reservations = ResourcePool::new(capacity);
        let policy = spec::build(
            config.policy,
            &PolicyInputs {
                graph: Arc::clone(&graph),
                // Greedy-dual's costs: the runtime's defaults until measured.
                costs: Arc::new(Costs::new(150_000, 128)),
                pool: reservations.clone(),
                future: None,
            },
        )?;
        let disk = Arc::new(DiskCounters::default());
        restored.removed_uploads = sweep_uploads(&store, &dirs, &disk);
        let writer = Writer::start(
            Arc::clone(&store),
            cluster.clone(),
            config.retention,
            Arc::clone(&disk),
        )
        .map_err(io("cannot start the store writer"))?;
        let exporter = match &config.otlp_endpoint {
            Some(endpoint) => Some(Arc::new(
                otlp_export::Exporter::start(endpoint).map_err(ServerError::Config)?,
            )),
            None => None,
        };
        let sink_exporter = exporter.clone();
        let sink_writer = writer.clone();
        let director = Director::new(pool, tdg, graph, policy)
            .with_wasm(Arc::clone(&engine))
            .with_reservations(reservations.clone())
            .with_sink(Box::new(move |records, source: RecordSource, mark| {
                // The writer also shares with the cluster what this node ran, once stored.
                sink_writer.records(records, source, mark.cloned());
                if source == RecordSource::Baton {
                    if let Some(exporter) = &sink_exporter {
                        exporter.send(records);
                    }
                }
            }));
        let director = match config.mine_callers {
            Some(mining) => director.with_miner(mining),
            None => director,
        }
        .into_shared()
        .map_err(io("cannot start the allocator"))?;
        // Restored functions are made ready ahead, as a deploy makes a new one.
        director.prepare();
        for (name, steps) in store.sequences()? {
            match director.declare_sequence(&name, steps) {
                Ok(()) => restored.sequences += 1,
                Err(e) => tracing::warn!("store: not restored: {e}"),
            }
        }

        let mut metrics = Metrics::default();
        metrics.collect_node(
            Arc::clone(&director),
            reservations.clone(),
            cluster.clone(),
            exporter.as_ref().map(|e| Arc::clone(&e.counters)),
            (Arc::clone(&store), Arc::clone(&disk)),
        );
        let state = Arc::new(AppState {
            director,
            store,
            writer,
            engine,
            reservations,
            dirs,
            uploads: Mutex::new(()),
            disk,
            allow_process_functions: config.allow_process_functions,
            token: config.token.clone(),
            queue_depth: config.queue_depth.max(1),
            queues: Mutex::new(HashMap::new()),
            metrics,
            detection: detection.clone(),
            policy: config.policy,
            cluster,
        });
        // The cluster's watchers, record streams and invocation workers; asynchronous
        // invocations run on at most twice the cores at once on this node.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        cluster::Cluster::start(&state, runtime.handle(), 2 * cores);

        // Asynchronous invocations a crash interrupted.
        for pending in state.store.unfinished_invocations()? {
            if pending.pure {
                restored.rerun += 1;
                api::run_async(
                    Arc::clone(&state),
                    pending.id,
                    pending.function,
                    pending.payload,
                    runtime.handle(),
                );
            } else {
                restored.failed += 1;
                let _ = state.store.set_invocation(
                    &pending.id,
                    baton_store::InvocationState::Failed,
                    None,
                    Some("interrupted by a server restart; not re-run because the function is not pure"),
                );
            }
        }

        let router = api::router(
            Arc::clone(&state),
            api::BodyBounds {
                max_bytes: config.max_body_bytes,
                timeout: config.body_read_timeout,
            },
        );
        let bounds = listen::Bounds {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
        };
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let snapshot_state = Arc::clone(&state);
        let every = config.snapshot_every;
        let thread = std::thread::Builder::new()
            .name("baton-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let snapshots = tokio::spawn(async move {
                        let mut tick = tokio::time::interval(every);
                        tick.tick().await;
                        loop {
                            tick.tick().await;
                            let state = Arc::clone(&snapshot_state);
                            let _ = tokio::task::spawn_blocking(move || {
                                if let Err(error) = snapshot(&state.director, &state.writer) {
                                    tracing::error!("snapshot failed: {error}");
                                }
                            })
                            .await;
                        }
                    });
                    listen::serve(listener, router, bounds, async move {
                        let _ = stopped.await;
                    })
                    .await;
                    snapshots.abort();
                });
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .map_err(io("cannot start the server thread"))?;
        Ok(RunningServer {
            addr,
            restored,
            detection: detection.to_string(),
            sandboxed: detection.sandbox.sandbox.is_jailed(),
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The director (tests and the demo read its counters).
    pub fn director(&self) -> &Arc<Director> {
        &self.state.director
    }

    /// This node's name in its cluster, if it joined one.
    pub fn cluster_node(&self) -> Option<&str> {
        self.state.cluster.as_deref().map(|c| c.node.as_str())
    }

    /// What the cluster did on this node, if it joined one.
    pub fn cluster_counters(&self) -> Option<&cluster::ClusterCounters> {
        self.state.cluster.as_deref().map(|c| &c.counters)
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Saves a snapshot of the learner now.
    pub fn snapshot(&self) -> Result<(), String> {
        snapshot(&self.state.director, &self.state.writer)
    }

    /// Waits until the server stops (it stops when [`RunningServer::stop`] is called from
    /// elsewhere, or the process ends).
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            if let Err(error) = self.snapshot() {
                tracing::error!("last snapshot failed: {error}");
            }
        }
    }

    /// Stops serving, waits for the server thread, and saves a last snapshot.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            if let Err(error) = self.snapshot() {
                tracing::error!("last snapshot failed: {error}");
            }
        }
    }

    /// Serves until SIGINT or SIGTERM, then stops (saving a last snapshot).
    pub fn serve_until_signal(self) -> Result<(), ServerError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("cannot wait for signals"))?;
        runtime.block_on(async {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(io("cannot wait for SIGTERM"))?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            Ok::<(), ServerError>(())
        })?;
        self.stop();
        Ok(())
    }

    /// A handle that stops the server from another thread (e.g. on Ctrl-C).
    pub fn stopper(&mut self) -> Option<tokio::sync::oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}
