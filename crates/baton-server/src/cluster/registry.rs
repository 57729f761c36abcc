//! The cluster's registry: functions and sequences from the key-value buckets, installed on
//! this node through the deploy handler's own path, removed when the registry drops them.

use super::*;

/// A bucket's entries: the latest of each key first (what a joining node must catch up
/// on), then every change.
async fn watch(bucket: &kv::Store, name: &str) -> Result<kv::Watch, ClusterError> {
    bucket
        .watch_with_history(">")
        .await
        .map_err(|e| js(format!("watching {name}"))(e.to_string()))
}

/// The next entry of a watch, with the server's state; `None` when the watch or the
/// server ended. A broken entry is logged and skipped.
async fn next_entry(
    watch: &mut kv::Watch,
    name: &str,
    state: &Weak<AppState>,
) -> Option<(Arc<AppState>, kv::Entry)> {
    loop {
        match watch.next().await? {
            Ok(entry) => return Some((state.upgrade()?, entry)),
            Err(error) => tracing::warn!("cluster: {name}: {error}"),
        }
    }
}

/// Installs what the registry holds and this node does not (at start: everything), and
/// removes what it no longer holds. An entry is believed only once its signature verifies
/// and its version is not older than the one applied; a bare delete is not believed.
pub(super) async fn watch_functions(
    cluster: Arc<Cluster>,
    state: Weak<AppState>,
) -> Result<(), ClusterError> {
    let mut watch = watch(&cluster.functions, FUNCTIONS).await?;
    while let Some((state, entry)) = next_entry(&mut watch, FUNCTIONS, &state).await {
        let name = entry.key.clone();
        let shared = match entry.operation {
            kv::Operation::Put => {
                let Some(shared) =
                    cluster.opened::<SharedFunction>(Purpose::Function, &name, &entry.value)
                else {
                    continue;
                };
                if !cluster.apply_version(Purpose::Function, &name, shared.version) {
                    continue;
                }
                Some(shared)
            }
            kv::Operation::Delete | kv::Operation::Purge if cluster.trust.is_signed() => {
                cluster.reject(Purpose::Function, &name, &BARE_DELETE);
                continue;
            }
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        match shared.filter(|shared| !shared.removed) {
            Some(shared) => match install_shared(&cluster, &state, &name, shared).await {
                Ok(true) => {
                    cluster.counters.installed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("cluster: installed `{name}` from the registry");
                }
                Ok(false) => {}
                Err(error) => {
                    cluster
                        .counters
                        .install_failed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!("cluster: function `{name}` not installed here: {error}");
                }
            },
            None => {
                let removed = {
                    let (state, name) = (Arc::clone(&state), name.clone());
                    tokio::task::spawn_blocking(move || {
                        let removed = state.director.undeploy(&name);
                        if removed {
                            let _ = state.store.delete_function(&name);
                        }
                        removed
                    })
                    .await
                    .unwrap_or(false)
                };
                if removed {
                    api::forget_in_graph(&state, &name).await;
                    tracing::info!("cluster: removed `{name}` (removed from the registry)");
                }
            }
        }
    }
    Ok(())
}

/// Why a key-value delete is not believed in a signed cluster.
const BARE_DELETE: &str = "a bare delete (a removal is a signed entry)";

/// Installs one registry entry unless this node already has exactly it. `Ok(false)`: it
/// had.
async fn install_shared(
    cluster: &Cluster,
    state: &Arc<AppState>,
    name: &str,
    shared: SharedFunction,
) -> Result<bool, String> {
    let have = state.store.function(name).map_err(|e| e.to_string())?;
    if have.as_ref().is_some_and(|f| {
        f.manifest == shared.manifest && f.module_hash.as_deref() == Some(&shared.module_hash)
    }) && state.director.pool().spec(name).is_some()
    {
        return Ok(false);
    }
    let upload = match state
        .store
        .module(&shared.module_hash)
        .map_err(|e| e.to_string())?
    {
        Some(bytes) => bytes,
        None => {
            let mut object = cluster
                .modules
                .get(&shared.module_hash)
                .await
                .map_err(|e| format!("upload {}: {e}", shared.module_hash))?;
            let mut bytes = Vec::new();
            (&mut object)
                .take(MAX_UPLOAD as u64 + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| format!("upload {}: {e}", shared.module_hash))?;
            if bytes.len() > MAX_UPLOAD {
                return Err(format!(
                    "upload {} is over {MAX_UPLOAD} bytes",
                    shared.module_hash
                ));
            }
            bytes
        }
    };
    // The signed entry names the upload by its digest: bytes that do not match it were
    // put in the object store by someone else.
    if baton_core::ids::content_key(&upload) != shared.module_hash {
        cluster.reject(
            Purpose::Function,
            name,
            &format!("upload {} does not match its digest", shared.module_hash),
        );
        return Err(format!(
            "upload {} does not match its digest: not installed",
            shared.module_hash
        ));
    }
    let spec = baton_runtime::manifest::FunctionSpec::from_toml(&shared.manifest)
        .map_err(|e| e.to_string())?;
    if spec.name != name {
        return Err(format!("the manifest names `{}`", spec.name));
    }
    let (module, code) = match spec.kind {
        baton_runtime::manifest::FunctionKind::Wasm { .. } => (Some(upload), None),
        baton_runtime::manifest::FunctionKind::Process { .. } => (None, Some(upload)),
    };
    let upload = api::check_upload(state, &spec, module, code).map_err(|(_, m)| m)?;
    let state = Arc::clone(state);
    let manifest = shared.manifest;
    tokio::task::spawn_blocking(move || api::install(&state, &manifest, spec, upload))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|(_, message)| message)?;
    Ok(true)
}

pub(super) async fn watch_sequences(
    cluster: Arc<Cluster>,
    state: Weak<AppState>,
) -> Result<(), ClusterError> {
    let mut watch = watch(&cluster.sequences, SEQUENCES).await?;
    while let Some((state, entry)) = next_entry(&mut watch, SEQUENCES, &state).await {
        let name = entry.key.clone();
        let steps = match entry.operation {
            kv::Operation::Put => {
                let Some(shared) =
                    cluster.opened::<SharedSequence>(Purpose::Sequence, &name, &entry.value)
                else {
                    continue;
                };
                if !cluster.apply_version(Purpose::Sequence, &name, shared.version) {
                    continue;
                }
                (!shared.removed).then_some(shared.steps)
            }
            kv::Operation::Delete | kv::Operation::Purge if cluster.trust.is_signed() => {
                cluster.reject(Purpose::Sequence, &name, &BARE_DELETE);
                continue;
            }
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        match steps {
            Some(steps) => {
                if state.director.sequence(&name).as_ref() != Some(&steps) {
                    if let Err(error) = state.director.declare_sequence(&name, steps.clone()) {
                        tracing::error!("cluster: not installed: {error}");
                        continue;
                    }
                    if let Err(error) = state.store.put_sequence(&name, &steps) {
                        tracing::error!("cluster: sequence `{name}`: {error}");
                    }
                }
            }
            None => {
                if state.director.remove_sequence(&name) {
                    let _ = state.store.delete_sequence(&name);
                }
            }
        }
    }
    Ok(())
}
