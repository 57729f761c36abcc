//! Joining NATS: credentials read from their file, a server that lets anyone in told
//! apart, the permission violations NATS reports on the connection kept, and the buckets
//! and streams made or found by nodes that start together.

use super::*;

/// `options` with the NATS credentials in `path`: a `.creds` file (a user JWT and its
/// seed) or a user's nkey seed alone. Neither the file's content nor the seed is shown.
pub(super) async fn with_credentials(
    options: async_nats::ConnectOptions,
    path: &std::path::Path,
) -> Result<async_nats::ConnectOptions, ClusterError> {
    let failed = |reason: String| ClusterError::Credentials {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| failed(e.to_string()))?;
    if meta.len() > 64 << 10 {
        return Err(failed("over 64 KiB: not a credentials file".into()));
    }
    if let Some(mode) = trust::exposed(&meta) {
        return Err(failed(format!(
            "other users may read or change it (mode {mode:o}): chmod 600 it"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    if text.contains("-----BEGIN NATS USER JWT-----") {
        return options
            .credentials(&text)
            .map_err(|_| failed("a .creds file whose JWT or seed cannot be read".into()));
    }
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    match nkeys::KeyPair::from_seed(seed) {
        Ok(pair) if matches!(pair.key_pair_type(), nkeys::KeyPairType::User) => {
            Ok(options.nkey(seed.to_owned()))
        }
        _ => Err(failed(
            "neither a .creds file nor a user nkey seed (`SU…`, as `baton cluster init` writes)"
                .into(),
        )),
    }
}

/// A key-value bucket: its stream made here, as JetStream's key-value convention (ADR-8)
/// lays it out, then opened. (The client's own `create_key_value` first asks for account
/// fields that Debian's nats-server 2.9 does not send.)
pub(super) async fn bucket(
    context: &jetstream::Context,
    config: kv::Config,
    refused: &Refusals,
) -> Result<kv::Store, ClusterError> {
    let name = config.bucket.clone();
    ensure_stream(
        context,
        stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: config.history.max(1),
            max_bytes: if config.max_bytes > 0 {
                config.max_bytes
            } else {
                -1
            },
            max_age: config.max_age,
            max_message_size: config.max_value_size,
            storage: config.storage,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: 1,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        },
        refused,
    )
    .await?;
    context
        .get_key_value(&name)
        .await
        .map_err(|e| js(format!("bucket {name}"))(e.to_string()))
}

/// How many times a node tries to make or find a stream that nodes starting together
/// race to create.
const CREATE_TRIES: u32 = 8;

/// The stream `config` names, made unless it is there. Nodes started together race to
/// make it: the loser's create fails (JetStream answers "subjects overlap" or "already in
/// use"), so a failed create is followed by a lookup, and both are tried again after a
/// pause that grows, before the error is given.
pub(super) async fn ensure_stream(
    context: &jetstream::Context,
    config: stream::Config,
    refused: &Refusals,
) -> Result<stream::Stream, ClusterError> {
    let name = config.name.clone();
    let mut last = String::new();
    for attempt in 0..CREATE_TRIES {
        match context.get_or_create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error.to_string(),
        }
        refused.check()?;
        if let Ok(stream) = context.get_stream(&name).await {
            return Ok(stream);
        }
        refused.check()?;
        tokio::time::sleep(Duration::from_millis(25 << attempt.min(5))).await;
    }
    Err(js(format!("stream {name}"))(last))
}

/// The permission violations NATS reported on this node's connection (the server says
/// so on the connection, and a refused JetStream call only times out).
#[derive(Debug, Clone, Default)]
pub(super) struct Refusals(Arc<std::sync::Mutex<Option<String>>>);

impl Refusals {
    /// Connect options that note violations (and log every connection event, as the
    /// client's default does).
    pub(super) fn watch(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        let seen = self.clone();
        options.event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(message)) =
                    &event
                {
                    if message.contains("Permissions Violation") {
                        if let Ok(mut slot) = seen.0.lock() {
                            *slot = Some(message.clone());
                        }
                    }
                }
                tracing::info!("cluster: NATS: {event}");
            }
        })
    }

    /// `Err` once NATS refused something.
    fn check(&self) -> Result<(), ClusterError> {
        match self.0.lock().ok().and_then(|slot| slot.clone()) {
            Some(message) => Err(ClusterError::NotANode(message)),
            None => Ok(()),
        }
    }
}

/// The object store `config` names, made unless it is there (raced as [`ensure_stream`]).
pub(super) async fn ensure_object_store(
    context: &jetstream::Context,
    config: object_store::Config,
    refused: &Refusals,
) -> Result<object_store::ObjectStore, ClusterError> {
    let name = config.bucket.clone();
    let mut last = String::new();
    for attempt in 0..CREATE_TRIES {
        if let Ok(store) = context.get_object_store(&name).await {
            return Ok(store);
        }
        refused.check()?;
        match context.create_object_store(config.clone()).await {
            Ok(store) => return Ok(store),
            Err(error) => last = error.to_string(),
        }
        refused.check()?;
        tokio::time::sleep(Duration::from_millis(25 << attempt.min(5))).await;
    }
    Err(js(format!("object store {name}"))(last))
}

/// `addrs` without any user or password they carry.
fn anonymous(addrs: &[async_nats::ServerAddr]) -> Vec<async_nats::ServerAddr> {
    addrs
        .iter()
        .filter_map(|addr| {
            let mut url = addr.clone().into_inner();
            let _ = url.set_username("");
            let _ = url.set_password(None);
            async_nats::ServerAddr::from_url(url).ok()
        })
        .collect()
}

/// Whether the servers let in a client with no credentials and no client certificate.
pub(super) async fn admits_anonymous(
    addrs: &[async_nats::ServerAddr],
    ca: Option<&PathBuf>,
) -> bool {
    let mut options = async_nats::ConnectOptions::new()
        .name("baton anonymous-access check")
        .connection_timeout(Duration::from_secs(5));
    if let Some(ca) = ca {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    // The client logs the refusal as an error: here it is the answer hoped for, so the
    // check runs with no subscriber.
    use tracing::instrument::WithSubscriber;
    let probe = options
        .connect(anonymous(addrs))
        .with_subscriber(tracing::subscriber::NoSubscriber::default());
    match probe.await {
        Ok(client) => {
            let _ = client.drain().await;
            true
        }
        Err(_) => false,
    }
}
