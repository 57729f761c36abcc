//! `baton serve --cluster`: several nodes share their functions, sequences, learned graph
//! and asynchronous invocations through NATS JetStream, an engine that already does
//! persistence and delivery (no consensus of our own).
//!
//! What lives where:
//! - `baton-functions` (key-value): a function's manifest and the content key of its
//!   upload; the upload's bytes in `baton-modules` (object store), named by that key. Every
//!   node watches the bucket and installs what it does not have through the same path as
//!   an HTTP deploy; compiled modules stay in each node's own cache.
//! - `baton-sequences` (key-value): a sequence's steps.
//! - `BATON_RECORDS` (stream, `baton.records.<node>`): each node publishes the execution
//!   records of what it ran; each node's durable consumer learns the others' (its own were
//!   learned live), so every node predicts from the cluster's traffic. The node's SQLite
//!   store stays its local snapshot for fast restarts.
//! - `BATON_INVOCATIONS` (work-queue stream, `baton.invoke`) and `baton-invocations`
//!   (key-value): an accepted asynchronous invocation is recorded, then queued, before the
//!   202; a node claims it (compare-and-set on its record), keeps the message alive while
//!   it runs, and acknowledges it once the outcome is recorded. A node killed mid-way stops
//!   acknowledging: the queue hands the message to another node after [`ACK_WAIT`], which
//!   re-runs it if the function is pure and reports it failed otherwise, as a single node
//!   does after a restart.
//!
//! Synchronous invocations run on the node that receives them (every node holds every
//! function), so a chain's hand-offs stay in-process.
//!
//! Who may write is NATS's to decide: a node refuses a server that admits clients without
//! credentials (unless `--cluster-insecure`). What is believed is the cluster's signing
//! key's (`trust.rs`): every entry and message is signed, and checked before it is used.

use crate::{api, AppState};
use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use async_nats::HeaderMap;
use axum::http::StatusCode;
use baton_runtime::trace_context::TraceParent;
use baton_store::InvocationState;
use baton_trace::schema::ExecutionRecord;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::AsyncReadExt;

mod connect;
mod forward;
mod queue;
mod records;
mod registry;
pub mod setup;
mod sharing;
pub mod trust;

use connect::{
    admits_anonymous, bucket, ensure_object_store, ensure_stream, with_credentials, Refusals,
};
pub(crate) use forward::Forwarded;
use forward::{serve_forwarded, tell_warm, watch_peers};
pub use forward::{FORWARD_MIN, NODES};
use queue::run_queued;
pub use records::SUMMARY_EVERY;
use records::{learn_records, publish_records};
use registry::{watch_functions, watch_sequences};
pub(crate) use sharing::Sharing;
use trust::{ClusterKeys, Purpose, Trust};

/// The functions' bucket.
pub const FUNCTIONS: &str = "baton-functions";
/// The sequences' bucket.
pub const SEQUENCES: &str = "baton-sequences";
/// Asynchronous invocations' records.
pub const INVOCATIONS: &str = "baton-invocations";
/// Uploads (wasm modules, process functions' code archives) by content key.
pub const MODULES: &str = "baton-modules";
/// The execution records' stream.
pub const RECORDS: &str = "BATON_RECORDS";
/// The asynchronous invocations' work queue.
pub const WORK: &str = "BATON_INVOCATIONS";
/// How long a claimed invocation may go without a sign of life before the queue gives it
/// to another node. The running node signals every [`PROGRESS_EVERY`].
pub const ACK_WAIT: Duration = Duration::from_secs(5);
/// How often a running invocation tells the queue it is still being worked on.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Invocations waiting in the cluster's queue before a new one is refused (429).
pub const QUEUE_LIMIT: i64 = 10_000;
/// How many times a pure function's invocation is run before it is reported failed.
pub const MAX_RUNS: i64 = 3;
/// How long the record consumer gathers other nodes' records before learning them at once
/// (as the live learner publishes its graph at most every 20 ms).
const LEARN_EVERY: Duration = Duration::from_millis(20);
/// At most this many record messages are learned at once.
const LEARN_BATCH: usize = 512;
/// How long a record message delivered to a node stays its own before the stream hands it
/// out again: a node killed before it stored and acknowledged a batch gets the batch again
/// this long after the delivery, also across a restart (one that had stored it skips it:
/// which messages it learned is stored with their records).
pub const RECORDS_ACK_WAIT: Duration = Duration::from_secs(30);
/// Batches of records waiting to be published before new ones are dropped (and counted).
const RECORDS_BACKLOG: usize = 4096;
/// Largest upload fetched from the object store.
const MAX_UPLOAD: usize = 256 << 20;
/// Revisions kept of each asynchronous invocation's record.
const INVOCATION_HISTORY: i64 = 5;

/// How to join a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS servers, `nats://HOST:PORT` or `HOST:PORT`.
    pub servers: Vec<String>,
    /// This node's name: unique in the cluster; letters, digits, `-` and `_`.
    pub node: String,
    /// CA certificates (PEM) to trust for the servers; TLS is then required.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// NATS credentials: a `.creds` file (user JWT and seed) or a file holding a user's
    /// nkey seed (`SU…`, as `baton cluster init` writes).
    pub creds: Option<PathBuf>,
    /// The cluster's signing keys (`baton cluster init` writes one); required unless
    /// `insecure`.
    pub signing_key: Option<PathBuf>,
    /// Join a NATS server that admits anonymous clients, and without a signing key believe
    /// whatever is read: a private test network only.
    pub insecure: bool,
    /// How often, at most, this node publishes a summary of its traffic per application
    /// ([`records::SUMMARY_EVERY`] by default; longer in a large cluster, see
    /// docs/scale.md).
    pub summary_every: Duration,
}

/// Why the cluster could not be joined or used.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// A node name that cannot be a subject token or a consumer name.
    #[error("node name `{0}`: use 1 to 64 letters, digits, `-` or `_`")]
    NodeName(String),
    /// The NATS servers did not answer.
    #[error("cannot reach NATS at {servers}: {reason}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// The client's reason.
        reason: String,
    },
    /// A JetStream call failed.
    #[error("JetStream {what}: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The client's reason.
        reason: String,
    },
    /// The queue is at [`QUEUE_LIMIT`].
    #[error("the cluster's invocation queue is full ({QUEUE_LIMIT} waiting)")]
    QueueFull,
    /// The NATS server lets anyone in.
    #[error(
        "NATS at {0} admits clients without credentials: whoever reaches it could read and \
         change the cluster. Give it users (`baton cluster init DIR` writes keys and a \
         nats-server configuration; scripts/cluster-up.sh uses them) and join with \
         --cluster-creds, or pass --cluster-insecure on a private test network"
    )]
    Anonymous(String),
    /// No signing key and not insecure.
    #[error(
        "a cluster node needs the cluster's signing key (--cluster-signing-key FILE; \
         `baton cluster init DIR` writes one): without it, anyone who may write to NATS \
         could install code on every node. --cluster-insecure runs without, on a private \
         test network"
    )]
    NoSigningKey,
    /// The signing key file cannot be used.
    #[error(transparent)]
    Key(#[from] trust::TrustError),
    /// The NATS user may not do what a node does.
    #[error(
        "NATS refused what a node must do ({0}): join with the node role's credentials \
         (node.nk from `baton cluster init`), not a reader's"
    )]
    NotANode(String),
    /// The credentials file cannot be used.
    #[error("--cluster-creds {path}: {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ClusterError {
    /// The HTTP status a handler answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ClusterError::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

fn js(what: impl Into<String>) -> impl FnOnce(String) -> ClusterError {
    let what = what.into();
    move |reason| ClusterError::JetStream { what, reason }
}

/// A default node name: the host's name and the port served, so two nodes on one host
/// differ.
pub fn default_node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let host = if host.is_empty() { "node".into() } else { host };
    format!("{host}-{port}")
}

/// `url` with the password of its `user:password@` part replaced by `***`.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split(':').next().unwrap_or("");
    let prefix = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{prefix}{user}:***@{host}")
}

fn valid_node(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A function as the registry holds it; a removal is an entry too (`removed`), signed
/// like any other, so a bare delete written by someone without the key changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct SharedFunction {
    manifest: String,
    module_hash: String,
    node: String,
    /// When it was deployed (ns since the epoch, made to grow on each node): an entry
    /// older than the one a node applied is a replay and is refused.
    #[serde(default)]
    version: u64,
    #[serde(default)]
    removed: bool,
}

/// A sequence as the registry holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SharedSequence {
    steps: Vec<String>,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    removed: bool,
}

/// An asynchronous invocation's record, what `GET /v1/invocations/{id}` answers on any
/// node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SharedInvocation {
    id: String,
    function: String,
    /// Where it is.
    state: InvocationState,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    response: serde_json::Value,
    /// The node that accepted it, then the node running or that ran it.
    node: String,
    /// How many times it was started.
    #[serde(default)]
    runs: u32,
    pure: bool,
    created_ns: u64,
}

impl SharedInvocation {
    /// What `GET /v1/invocations` lists of it (the response is left to
    /// `GET /v1/invocations/{id}`), plus the node that ran it.
    pub(crate) fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "function": self.function,
            "state": self.state,
            "error": self.error,
            "created_ns": self.created_ns,
            "node": self.node,
        })
    }
}

/// What the cluster did on this node (logged; tests read them).
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Record batches published.
    pub records_published: AtomicU64,
    /// This node's requests summarized for the cluster.
    pub requests_summarized: AtomicU64,
    /// Records in those summaries (a representative's records each).
    pub summary_records: AtomicU64,
    /// Record batches dropped because the publisher fell behind.
    pub records_dropped: AtomicU64,
    /// Invocations learned from other nodes (a summary's record counts many).
    pub records_learned: AtomicU64,
    /// Record messages delivered again after they were learned and stored (their
    /// acknowledgement was lost, or the node was killed before it), skipped.
    pub records_redelivered: AtomicU64,
    /// Functions installed from the registry.
    pub installed: AtomicU64,
    /// Registry entries that could not be installed here.
    pub install_failed: AtomicU64,
    /// Asynchronous invocations this node ran to an end.
    pub invocations_run: AtomicU64,
    /// Of them, re-runs of invocations a stopped node had claimed.
    pub invocations_rerun: AtomicU64,
    /// Invocations a stopped node had claimed, reported failed (not pure).
    pub invocations_interrupted: AtomicU64,
    /// Synchronous invocations handed to a node with an idle worker.
    pub forwarded: AtomicU64,
    /// Synchronous invocations other nodes handed to this one.
    pub served_for_others: AtomicU64,
    /// Registry changes made here that were shared later (NATS was unreachable, or
    /// another node wrote in between).
    pub pending_shared: AtomicU64,
    /// Entries and messages refused (no or a wrong signature, or a replay), by
    /// [`Purpose`].
    pub rejected: [AtomicU64; Purpose::ALL.len()],
}

/// This node's membership.
pub(crate) struct Cluster {
    pub(crate) node: String,
    servers: String,
    context: jetstream::Context,
    functions: kv::Store,
    sequences: kv::Store,
    invocations: kv::Store,
    modules: object_store::ObjectStore,
    nodes: kv::Store,
    peers: std::sync::Mutex<forward::Peers>,
    /// Signs what this node writes and checks what it reads.
    trust: Trust,
    /// How often, at most, a summary is published per application.
    summary_every: Duration,
    /// The registry versions applied here and the changes the cluster has not got yet.
    registry: std::sync::Mutex<sharing::RegistryState>,
    /// The last version this node gave an entry (versions grow even if the clock does
    /// not).
    last_version: AtomicU64,
    records_out: tokio::sync::mpsc::Sender<Vec<ExecutionRecord>>,
    records_in: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Vec<ExecutionRecord>>>>,
    pub(crate) counters: ClusterCounters,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

/// Header `name` of a message, if it has it.
fn header(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Cluster {
    /// `value` as JSON, sealed for `purpose` under `key`.
    fn sealed(
        &self,
        purpose: Purpose,
        key: &str,
        value: &impl Serialize,
        what: &str,
    ) -> Result<Vec<u8>, ClusterError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| js(format!("{what} {key}"))(e.to_string()))?;
        Ok(self.trust.seal(purpose, key, &bytes))
    }

    /// Puts `value` as JSON under `key`, sealed for `purpose`.
    async fn put_json(
        &self,
        bucket: &kv::Store,
        purpose: Purpose,
        key: &str,
        value: &impl Serialize,
        what: &str,
    ) -> Result<u64, ClusterError> {
        let bytes = self.sealed(purpose, key, value, what)?;
        bucket
            .put(key, bytes.into())
            .await
            .map_err(|e| js(format!("{what} {key}"))(e.to_string()))
    }

    /// The JSON body of a key-value entry once its seal verifies; a refusal is counted
    /// and logged, a body that does not parse is logged.
    fn opened<T: serde::de::DeserializeOwned>(
        &self,
        purpose: Purpose,
        key: &str,
        value: &[u8],
    ) -> Option<T> {
        let body = match self.trust.open(purpose, key, value) {
            Ok(body) => body,
            Err(why) => {
                self.reject(purpose, key, &why);
                return None;
            }
        };
        match serde_json::from_slice(body) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!("cluster: {purpose} `{key}`: {error}");
                None
            }
        }
    }

    /// Counts and logs something this node refused to believe.
    fn reject(&self, purpose: Purpose, key: &str, why: &dyn std::fmt::Display) {
        self.counters.rejected[purpose.index()].fetch_add(1, Ordering::Relaxed);
        tracing::warn!("cluster: refused {purpose} `{}`: {why}", key.escape_debug());
    }
}

impl Cluster {
    /// Connects and makes sure the buckets and streams exist (the first node creates them).
    pub(crate) async fn join(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        if !valid_node(&config.node) {
            return Err(ClusterError::NodeName(config.node.clone()));
        }
        let trust = match (&config.signing_key, config.insecure) {
            (Some(path), _) => Trust::Signed(ClusterKeys::load(path)?),
            (None, true) => Trust::Unsigned,
            (None, false) => return Err(ClusterError::NoSigningKey),
        };
        // Shown in messages and logs without any password a URL carries.
        let servers = config
            .servers
            .iter()
            .map(|s| redact(s))
            .collect::<Vec<_>>()
            .join(",");
        let connect = |reason: String| ClusterError::Connect {
            servers: servers.clone(),
            reason: reason.replace(&config.servers.join(","), &servers),
        };
        let addrs: Vec<async_nats::ServerAddr> = config
            .servers
            .iter()
            .map(|s| {
                s.parse::<async_nats::ServerAddr>()
                    .map_err(|e| connect(format!("{}: {e}", redact(s))))
            })
            .collect::<Result<_, _>>()?;
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("baton {}", config.node))
            .connection_timeout(Duration::from_secs(5));
        // `nats://USER:PASSWORD@HOST:PORT`: the client takes the credentials from options.
        if let Some(addr) = addrs.iter().find(|a| a.has_user_pass()) {
            if let (Some(user), Some(password)) = (addr.username(), addr.password()) {
                options = options.user_and_password(user.to_owned(), password.to_owned());
            }
        }
        // TLS: certificate files are checked here, so that a wrong path is named as such
        // rather than as an unreachable server.
        let readable = |what: &str, path: &PathBuf| {
            std::fs::File::open(path)
                .map(|_| ())
                .map_err(|e| connect(format!("{what} {}: {e}", path.display())))
        };
        if let Some(ca) = &config.ca {
            readable("--cluster-ca", ca)?;
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &config.client_cert {
            readable("--cluster-cert", cert)?;
            readable("--cluster-key", key)?;
            options = options
                .require_tls(true)
                .add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(path) = &config.creds {
            options = with_credentials(options, path).await?;
        }
        // Credentials keep no one out of a server that also lets anyone in.
        if !config.insecure && admits_anonymous(&addrs, config.ca.as_ref()).await {
            return Err(ClusterError::Anonymous(servers));
        }
        let refused = Refusals::default();
        let client = refused
            .watch(options)
            .connect(addrs)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let context = jetstream::new(client);
        let functions = bucket(
            &context,
            kv::Config {
                bucket: FUNCTIONS.into(),
                history: 1,
                max_value_size: 1 << 20,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            &refused,
        )
        .await?;
        let sequences = bucket(
            &context,
            kv::Config {
                bucket: SEQUENCES.into(),
                history: 1,
                max_value_size: 1 << 20,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            &refused,
        )
        .await?;
        let invocations = bucket(
            &context,
            kv::Config {
                bucket: INVOCATIONS.into(),
                // Earlier revisions stay readable: a forged latest one is passed over for
                // the last that verifies.
                history: INVOCATION_HISTORY,
                max_value_size: 32 << 20,
                max_age: Duration::from_secs(24 * 3600),
                max_bytes: 1 << 30,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            &refused,
        )
        .await?;
        let nodes = bucket(
            &context,
            kv::Config {
                bucket: NODES.into(),
                history: 1,
                max_value_size: 1 << 20,
                max_age: Duration::from_secs(60),
                storage: stream::StorageType::Memory,
                ..Default::default()
            },
            &refused,
        )
        .await?;
        let modules = ensure_object_store(
            &context,
            object_store::Config {
                bucket: MODULES.into(),
                max_bytes: 4 << 30,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            &refused,
        )
        .await?;
        ensure_stream(
            &context,
            stream::Config {
                name: RECORDS.into(),
                subjects: vec!["baton.records.>".into()],
                max_bytes: 1 << 30,
                max_age: Duration::from_secs(7 * 24 * 3600),
                discard: stream::DiscardPolicy::Old,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            &refused,
        )
        .await?;
        ensure_stream(
            &context,
            stream::Config {
                name: WORK.into(),
                subjects: vec!["baton.invoke".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                max_messages: QUEUE_LIMIT,
                max_bytes: 1 << 30,
                discard: stream::DiscardPolicy::New,
                duplicate_window: Duration::from_secs(120),
                storage: stream::StorageType::File,
                ..Default::default()
            },
            &refused,
        )
        .await?;
        let (records_out, records_in) = tokio::sync::mpsc::channel(RECORDS_BACKLOG);
        Ok(Cluster {
            node: config.node.clone(),
            servers,
            context,
            functions,
            sequences,
            invocations,
            modules,
            nodes,
            peers: std::sync::Mutex::new(forward::Peers::default()),
            trust,
            summary_every: config.summary_every.max(Duration::from_millis(1)),
            registry: std::sync::Mutex::new(sharing::RegistryState::default()),
            last_version: AtomicU64::new(0),
            records_out,
            records_in: std::sync::Mutex::new(Some(records_in)),
            counters: ClusterCounters::default(),
        })
    }

    /// Queues the records of what this node ran for the cluster (called by the store
    /// writer once they are committed; never blocks: a full backlog drops the batch and
    /// counts it).
    pub(crate) fn publish_records(&self, records: &[ExecutionRecord]) {
        if records.is_empty() {
            return;
        }
        if self.records_out.try_send(records.to_vec()).is_err() {
            self.counters
                .records_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Function `name`'s registry entry, if it verifies (`None` when there is none or it
    /// does not verify, which is counted).
    async fn shared_function(&self, name: &str) -> Result<Option<SharedFunction>, ClusterError> {
        let entry = self
            .functions
            .get(name)
            .await
            .map_err(|e| js(format!("reading function `{name}`"))(e.to_string()))?;
        Ok(entry.and_then(|bytes| self.opened(Purpose::Function, name, &bytes)))
    }

    /// Whether the registry holds function `name` (deployed through any node, perhaps not
    /// yet installed on this one).
    pub(crate) async fn has_function(&self, name: &str) -> Result<bool, ClusterError> {
        Ok(self
            .shared_function(name)
            .await?
            .is_some_and(|shared| !shared.removed))
    }

    /// Starts this node's part: the record publisher and consumer, the registry watchers,
    /// the invocation worker, the forwarded-invocation answerer and the warm-set exchange, on the server's runtime. They hold the state weakly and
    /// end with the runtime.
    pub(crate) fn start(state: &Arc<AppState>, runtime: &tokio::runtime::Handle, workers: usize) {
        let Some(cluster) = state.cluster.clone() else {
            return;
        };
        let weak = Arc::downgrade(state);
        // Before the watchers: the versions applied before a restart refuse replays.
        cluster.restore_registry(&state.store);
        runtime.spawn(logged(
            "sharing this node's pending registry changes",
            sharing::keep_registry(Arc::clone(&cluster), weak.clone()),
        ));
        if let Some(records) = cluster.records_in.lock().ok().and_then(|mut r| r.take()) {
            runtime.spawn(publish_records(Arc::clone(&cluster), records));
        }
        runtime.spawn(logged(
            "learning the cluster's records",
            learn_records(Arc::clone(&cluster), weak.clone()),
        ));
        runtime.spawn(logged(
            "watching the functions",
            watch_functions(Arc::clone(&cluster), weak.clone()),
        ));
        runtime.spawn(logged(
            "watching the sequences",
            watch_sequences(Arc::clone(&cluster), weak.clone()),
        ));
        runtime.spawn(logged(
            "running queued invocations",
            run_queued(Arc::clone(&cluster), weak.clone(), workers.max(1)),
        ));
        runtime.spawn(logged(
            "answering forwarded invocations",
            serve_forwarded(Arc::clone(&cluster), weak.clone(), workers.max(1)),
        ));
        runtime.spawn(logged(
            "telling the warm set",
            tell_warm(Arc::clone(&cluster), weak),
        ));
        runtime.spawn(logged("watching the other nodes", watch_peers(cluster)));
    }
}

async fn logged(
    what: &'static str,
    task: impl std::future::Future<Output = Result<(), ClusterError>>,
) {
    if let Err(error) = task.await {
        tracing::error!("cluster: {what} stopped: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_subject_tokens() {
        assert!(valid_node("node-1"));
        assert!(valid_node("a_b"));
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(!valid_node(bad), "{bad:?}");
        }
        let default = default_node_name(8080);
        assert!(valid_node(&default), "{default}");
        assert!(default.ends_with("-8080"));
    }

    #[test]
    fn passwords_in_server_urls_are_not_shown() {
        assert_eq!(
            redact("nats://baton:s3cret@127.0.0.1:4222"),
            "nats://baton:***@127.0.0.1:4222"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("baton:p@ss@host:4222"), "baton:***@host:4222");
    }

    #[test]
    fn a_queue_error_asks_the_caller_to_come_back() {
        assert_eq!(
            ClusterError::QueueFull.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        let other = ClusterError::JetStream {
            what: "x".into(),
            reason: "y".into(),
        };
        assert_eq!(other.status(), StatusCode::BAD_GATEWAY);
    }
}
