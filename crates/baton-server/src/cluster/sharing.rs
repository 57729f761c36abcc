//! How this node's registry changes reach the cluster, and which entries it has applied.
//!
//! A deploy, removal or sequence made here is first a *pending* change (its name and
//! version), then put into the registry by compare-and-set against what the registry
//! holds: the later version wins, explicitly. An entry the registry holds with a later
//! version supersedes this node's change, which is dropped (and said so); an earlier one is
//! written over. A change that cannot be put (NATS unreachable, or another node's write in
//! between) stays pending and is tried again every [`PUBLISH_EVERY`], so a node that
//! deployed while NATS was down shares it when NATS answers again.
//!
//! Pending changes and the version applied per entry are kept in the node's store
//! ([`REGISTRY_KEY`]): a change survives a restart, and an entry older than the one
//! applied is refused as a replay after a restart too. The entry's content is read from the
//! node when it is put, so a pending change always shares what this node holds now.

use super::*;
use baton_core::sync::Unpoisoned;
use std::collections::BTreeMap;

/// The store's `meta` key for [`RegistryState`].
const REGISTRY_KEY: &str = "cluster.registry";
/// How often pending changes are tried again, and the state saved when it changed.
const PUBLISH_EVERY: Duration = Duration::from_secs(2);

/// The registry as this node knows it: versions applied, changes not yet shared. Keys are
/// `function/NAME` and `sequence/NAME`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RegistryState {
    applied: BTreeMap<String, u64>,
    pending: BTreeMap<String, u64>,
    #[serde(skip)]
    dirty: bool,
}

/// Whether a change reached the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// In the registry.
    Shared,
    /// Kept on this node until the registry takes it; why it has not yet.
    Pending(String),
}

impl Sharing {
    /// What a response says of it (`"shared"` or `"pending"`).
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Sharing::Shared => "shared",
            Sharing::Pending(_) => "pending",
        }
    }
}

fn state_key(purpose: Purpose, name: &str) -> String {
    format!("{purpose}/{name}")
}

fn parse_key(key: &str) -> Option<(Purpose, &str)> {
    match key.split_once('/')? {
        ("function", name) => Some((Purpose::Function, name)),
        ("sequence", name) => Some((Purpose::Sequence, name)),
        _ => None,
    }
}

impl Cluster {
    fn registry(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.registry.lock_unpoisoned()
    }

    /// Takes the registry state saved in `store` (at start, before the watchers run).
    pub(super) fn restore_registry(&self, store: &baton_store::Store) {
        let saved = match store.mark(REGISTRY_KEY) {
            Ok(Some(text)) => text,
            Ok(None) => return,
            Err(error) => {
                tracing::error!("cluster: reading the registry state: {error}");
                return;
            }
        };
        match serde_json::from_str::<RegistryState>(&saved) {
            Ok(state) => {
                if !state.pending.is_empty() {
                    tracing::info!(
                        "cluster: {} registry changes made here are not shared yet: sharing them",
                        state.pending.len()
                    );
                }
                let last = state.applied.values().copied().max().unwrap_or(0);
                self.last_version.fetch_max(last, Ordering::Relaxed);
                *self.registry() = state;
            }
            Err(error) => {
                tracing::error!("cluster: the saved registry state is unreadable: {error}")
            }
        }
    }

    /// A version for an entry this node writes: now, or one past the last it gave or
    /// applied.
    fn next_version(&self) -> u64 {
        let now = now_ns();
        let mut last = self.last_version.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_version.compare_exchange(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Whether registry `version` of `name` is new here (and then it is applied). An older
    /// one is refused: a replay, counted, unless this node holds a later change of its own
    /// not shared yet (then the older one lost, and this node's is shared next). The same
    /// one is not new.
    pub(super) fn apply_version(&self, purpose: Purpose, name: &str, version: u64) -> bool {
        let key = state_key(purpose, name);
        let mut state = self.registry();
        let known = state.applied.get(&key).copied().unwrap_or(0);
        if version < known {
            let ours = state.pending.contains_key(&key);
            drop(state);
            if ours {
                tracing::info!(
                    "cluster: {purpose} `{name}`: this node's later change, not shared yet, wins over the registry's"
                );
            } else {
                self.reject(purpose, name, &"older than the version applied (a replay)");
            }
            return false;
        }
        if version == known && version != 0 {
            return false;
        }
        state.applied.insert(key, version);
        state.dirty = true;
        drop(state);
        self.last_version.fetch_max(version, Ordering::Relaxed);
        true
    }

    /// Shares this node's current `name` (a function or sequence as its store holds it,
    /// or its removal when the store holds none): pending first, then put.
    pub(crate) async fn share(&self, state: &AppState, purpose: Purpose, name: &str) -> Sharing {
        let version = self.next_version();
        {
            let mut registry = self.registry();
            let key = state_key(purpose, name);
            registry.pending.insert(key.clone(), version);
            registry.applied.insert(key, version);
            registry.dirty = true;
        }
        // Kept before it is tried: a node stopped right after still shares it when it
        // comes back.
        self.save_registry(&state.store).await;
        let connected =
            self.context.client().connection_state() == async_nats::connection::State::Connected;
        let shared = if connected {
            publish(self, state, purpose, name, version)
                .await
                .map_err(|e| e.to_string())
        } else {
            Err("NATS is unreachable".to_owned())
        };
        match shared {
            Ok(()) => Sharing::Shared,
            Err(why) => {
                tracing::warn!(
                    "cluster: {purpose} `{name}` is kept on this node until the registry takes it: {why}"
                );
                Sharing::Pending(why)
            }
        }
    }

    /// Saves the registry state in `store` if it changed since it was last saved.
    async fn save_registry(&self, store: &Arc<baton_store::Store>) {
        let saved = {
            let mut registry = self.registry();
            if !registry.dirty {
                return;
            }
            registry.dirty = false;
            serde_json::to_string(&*registry).ok()
        };
        let Some(text) = saved else { return };
        let store = Arc::clone(store);
        let written =
            tokio::task::spawn_blocking(move || store.set_mark(REGISTRY_KEY, &text)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::error!("cluster: the registry state could not be saved");
            self.registry().dirty = true;
        }
    }

    /// Drops a pending change once shared or superseded (unless a later one replaced it).
    fn settle(&self, purpose: Purpose, name: &str, version: u64) {
        let mut registry = self.registry();
        let key = state_key(purpose, name);
        if registry.pending.get(&key) == Some(&version) {
            registry.pending.remove(&key);
            registry.dirty = true;
        }
    }
}

/// Puts this node's change of `name` (at `version`) into the registry by compare-and-set,
/// unless the registry holds a later version.
async fn publish(
    cluster: &Cluster,
    state: &AppState,
    purpose: Purpose,
    name: &str,
    version: u64,
) -> Result<(), ClusterError> {
    let bucket = match purpose {
        Purpose::Function => &cluster.functions,
        Purpose::Sequence => &cluster.sequences,
        _ => return Ok(()),
    };
    let failed = |e: String| js(format!("sharing {purpose} `{name}`"))(e);
    let entry = bucket
        .entry(name)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (held, revision) = match &entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let held = match purpose {
                Purpose::Function => cluster
                    .opened::<SharedFunction>(purpose, name, &entry.value)
                    .map(|f| f.version),
                _ => cluster
                    .opened::<SharedSequence>(purpose, name, &entry.value)
                    .map(|s| s.version),
            };
            (held.unwrap_or(0), entry.revision)
        }
        Some(entry) => (0, entry.revision),
        None => (0, 0),
    };
    if held > version {
        cluster.settle(purpose, name, version);
        tracing::warn!(
            "cluster: this node's change of {purpose} `{name}` is superseded by a later one in the registry, which this node applies"
        );
        return Ok(());
    }
    if held == version {
        cluster.settle(purpose, name, version);
        return Ok(());
    }
    let store_failed = |e: baton_store::StoreError| failed(e.to_string());
    let value = match purpose {
        Purpose::Function => {
            let shared = match state.store.function(name).map_err(store_failed)? {
                Some(stored) => {
                    let hash = stored.module_hash.unwrap_or_default();
                    if cluster.modules.info(&hash).await.is_err() {
                        let upload = state
                            .store
                            .module(&hash)
                            .map_err(store_failed)?
                            .ok_or_else(|| failed(format!("upload {hash} is not in the store")))?;
                        cluster
                            .modules
                            .put(hash.as_str(), &mut std::io::Cursor::new(upload))
                            .await
                            .map_err(|e| failed(format!("storing upload {hash}: {e}")))?;
                    }
                    SharedFunction {
                        manifest: stored.manifest,
                        module_hash: hash,
                        node: cluster.node.clone(),
                        version,
                        removed: false,
                    }
                }
                None => SharedFunction {
                    manifest: String::new(),
                    module_hash: String::new(),
                    node: cluster.node.clone(),
                    version,
                    removed: true,
                },
            };
            cluster.sealed(purpose, name, &shared, "sharing function")?
        }
        _ => {
            // The director holds what the store holds, without reading every sequence.
            let steps = state.director.sequence(name);
            let shared = SharedSequence {
                removed: steps.is_none(),
                steps: steps.unwrap_or_default(),
                version,
            };
            cluster.sealed(purpose, name, &shared, "sharing sequence")?
        }
    };
    // Against the revision read: a write by another node in between fails this one,
    // which is tried again (and compared again) later.
    let put = if revision == 0 {
        bucket
            .create(name, value.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        bucket
            .update(name, value.into(), revision)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    put.map_err(failed)?;
    cluster.settle(purpose, name, version);
    Ok(())
}

/// Shares pending changes every [`PUBLISH_EVERY`] and saves the registry state when it
/// changed.
pub(super) async fn keep_registry(
    cluster: Arc<Cluster>,
    state: Weak<AppState>,
) -> Result<(), ClusterError> {
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return Ok(());
        };
        cluster.save_registry(&state.store).await;
        let connected =
            cluster.context.client().connection_state() == async_nats::connection::State::Connected;
        let pending: Vec<(String, u64)> = cluster
            .registry()
            .pending
            .iter()
            .filter(|_| connected)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (key, version) in pending {
            let Some((purpose, name)) = parse_key(&key) else {
                continue;
            };
            match publish(&cluster, &state, purpose, name, version).await {
                Ok(()) => {
                    cluster
                        .counters
                        .pending_shared
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "cluster: {purpose} `{name}`, changed on this node while the registry could not take it, is settled"
                    );
                }
                Err(error) => {
                    tracing::debug!("cluster: {purpose} `{name}` still pending: {error}");
                    break;
                }
            }
        }
        cluster.save_registry(&state.store).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_kind_and_the_entry() {
        assert_eq!(state_key(Purpose::Function, "a/b"), "function/a/b");
        assert_eq!(parse_key("function/a/b"), Some((Purpose::Function, "a/b")));
        assert_eq!(parse_key("sequence/s"), Some((Purpose::Sequence, "s")));
        assert_eq!(parse_key("node/x"), None);
        let state = RegistryState {
            applied: [("function/f".to_owned(), 3)].into(),
            pending: [("sequence/s".to_owned(), 4)].into(),
            dirty: true,
        };
        let back: RegistryState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!((back.applied, back.pending), (state.applied, state.pending));
    }
}
