//! Functions: deploy (a manifest with its module or its code, staged and checked), list,
//! describe and remove (`/v1/functions`).

use super::*;
use baton_core::sync::Unpoisoned;

/// What `PUT /v1/functions/{name}` accepts as JSON (raw TOML is accepted too, and then
/// refused for want of an upload).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployBody {
    manifest: String,
    /// A wasm function's module, base64.
    module_base64: Option<String>,
    /// A process function's directory as a tar.gz, base64.
    code_base64: Option<String>,
}

/// A request refused: the status and the message of its JSON error body.
type Refusal = (StatusCode, String);

fn decode_base64(field: &str, value: Option<String>) -> Result<Option<Vec<u8>>, Refusal> {
    value
        .map(|v| base64::engine::general_purpose::STANDARD.decode(v.trim()))
        .transpose()
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{field}: {e}")))
}

/// Why this node refuses `spec`, a process function, for want of a jail or of the
/// private network its reserved bandwidth needs (fail closed), if it does.
fn sandbox_refusal(state: &AppState, spec: &FunctionSpec) -> Option<String> {
    use baton_runtime::sandbox::{NoSandbox, Sandbox};
    match &state.detection.sandbox.sandbox {
        Sandbox::Missing { why } => Some(NoSandbox::Missing { why: why.clone() }.to_string()),
        Sandbox::Bubblewrap {
            network: Err(why), ..
        } if spec.limits.net_mbps > 0 && spec.services.is_empty() => {
            Some(NoSandbox::NoNetwork { why: why.clone() }.to_string())
        }
        _ => None,
    }
}

/// What a deploy uploads: the bytes the function runs from. Paths in a manifest (`module`,
/// `workdir`) name files on the client's machine; the server never opens them.
fn deploy_upload(
    state: &AppState,
    spec: &FunctionSpec,
    module: Option<Vec<u8>>,
    code: Option<Vec<u8>>,
) -> Result<Vec<u8>, Refusal> {
    let bad = |message: &str| Err((StatusCode::BAD_REQUEST, message.to_owned()));
    let refusal = sandbox_refusal(state, spec);
    match (&spec.kind, module, code) {
        (FunctionKind::Wasm { .. }, Some(module), None) => Ok(module),
        (FunctionKind::Wasm { .. }, _, Some(_)) => {
            bad("`code_base64` is for process functions; a wasm function uploads `module_base64`")
        }
        (FunctionKind::Wasm { .. }, None, None) => bad(
            "a wasm function needs `module_base64`, the module's bytes: the server opens no \
             path a request names",
        ),
        (FunctionKind::Process { .. }, _, _) if !state.allow_process_functions => Err((
            StatusCode::FORBIDDEN,
            "process functions are disabled on this server (start it with \
             --allow-process-functions); wasm functions are always accepted"
                .to_owned(),
        )),
        (FunctionKind::Process { .. }, _, _) if refusal.is_some() => {
            Err((StatusCode::SERVICE_UNAVAILABLE, refusal.unwrap_or_default()))
        }
        (FunctionKind::Process { .. }, Some(_), _) => {
            bad("a module was uploaded for a process function; it uploads `code_base64`")
        }
        (FunctionKind::Process { command }, None, Some(code)) => {
            let program = std::path::Path::new(&command[0]);
            let inside = program.is_relative()
                && program
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return bad(
                    "`command`'s program must be a name on the server's PATH (`python3`) or a \
                     path inside the uploaded code, not an absolute path or one with `..`",
                );
            }
            Ok(code)
        }
        (FunctionKind::Process { .. }, None, None) => bad(
            "a process function needs `code_base64`, a tar.gz of its directory (`baton \
             deploy` packs it): the server opens no path a request names",
        ),
    }
}

pub(super) async fn put_function(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = content_type(&headers).starts_with("application/json");
    let (manifest, module, code) = if is_json {
        let body: DeployBody = match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        };
        let decoded = decode_base64("module_base64", body.module_base64)
            .and_then(|module| Ok((module, decode_base64("code_base64", body.code_base64)?)));
        match decoded {
            Ok((module, code)) => (body.manifest, module, code),
            Err((status, message)) => return error(status, message),
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => (text, None, None),
            Err(_) => return error(StatusCode::BAD_REQUEST, "the manifest is not UTF-8 TOML"),
        }
    };
    let spec = match FunctionSpec::from_toml(&manifest) {
        Ok(spec) => spec,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if spec.name != name {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the manifest names `{}` but the path names `{name}`",
                spec.name
            ),
        );
    }
    let upload = match check_upload(&state, &spec, module, code) {
        Ok(upload) => upload,
        Err((status, message)) => return error(status, message),
    };
    let state2 = Arc::clone(&state);
    let installed =
        tokio::task::spawn_blocking(move || install(&state2, &manifest, spec, upload)).await;
    let (hash, existed) = match installed {
        Ok(Ok(installed)) => installed,
        Ok(Err((status, message))) => return error(status, message),
        Err(e) => return internal(e),
    };
    // Shared after it works here: a deploy the cluster sees is one that loads.
    let sharing = match &state.cluster {
        Some(cluster) => Some(
            cluster
                .share(&state, crate::cluster::trust::Purpose::Function, &name)
                .await,
        ),
        None => None,
    };
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut body = json!({ "name": name, "module_hash": hash, "replaced": existed });
    add_sharing(&mut body, sharing.as_ref());
    (status, Json(body)).into_response()
}

/// What a deploy must carry before anything is written: the upload its kind needs, a
/// memory limit this node can give.
pub(crate) fn check_upload(
    state: &AppState,
    spec: &FunctionSpec,
    module: Option<Vec<u8>>,
    code: Option<Vec<u8>>,
) -> Result<Vec<u8>, Refusal> {
    let node_mib = state.reservations.capacity().memory_mib;
    if spec.limits.memory_mib > node_mib {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "manifest field `memory_mib`: {} MiB is more than this node gives functions \
                 ({node_mib} MiB)",
                spec.limits.memory_mib
            ),
        ));
    }
    deploy_upload(state, spec, module, code)
}

/// Stages an upload, checks that it loads, stores the function and deploys it (blocking:
/// compiling a module takes milliseconds). The deploy handler and the cluster's registry
/// watcher both come here. Returns the upload's content key and whether the function
/// replaced one.
pub(crate) fn install(
    state: &AppState,
    manifest: &str,
    spec: FunctionSpec,
    upload: Vec<u8>,
) -> Result<(String, bool), Refusal> {
    // The server's own failures name its paths: they go to its log, never to the client.
    let server = |e: &dyn std::fmt::Display| {
        tracing::error!("deploying `{}`: {e}", spec.name);
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server could not store the function; its log says why".to_owned(),
        )
    };
    let hash = baton_core::ids::content_key(&upload);
    let _uploads = state.uploads.lock_unpoisoned();
    // What is uploaded must be usable before it is stored: a broken module or archive is
    // a 400, not a failure at the first invocation.
    match &spec.kind {
        FunctionKind::Wasm { .. } => {
            let path = state.dirs.modules.join(format!("{hash}.wasm"));
            std::fs::write(&path, &upload).map_err(|e| server(&e))?;
            let mut candidate = spec.clone();
            candidate.kind = FunctionKind::Wasm { module: path };
            state
                .engine
                .load(&candidate)
                .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        }
        FunctionKind::Process { .. } => {
            let dir = state.dirs.code.join(&hash);
            baton_runtime::code::unpack(&upload, &dir).map_err(|e| match e {
                baton_runtime::code::CodeError::Io { .. } => server(&e),
                refused => (StatusCode::BAD_REQUEST, refused.to_string()),
            })?;
        }
    }
    let name = spec.name.clone();
    let existed = state.director.pool().spec(&name).is_some();
    state
        .store
        .put_function(&name, manifest, Some(&upload))
        .map_err(|e| server(&e))?;
    let spec =
        materialize(&state.store, &state.dirs, manifest, Some(&hash)).map_err(|e| server(&e))?;
    state.director.deploy(spec);
    // The version it replaced, if no other function uses its upload.
    crate::sweep_uploads(&state.store, &state.dirs, &state.disk);
    Ok((hash, existed))
}

pub(super) fn describe(spec: &FunctionSpec, manifest: Option<String>) -> Value {
    let (kind, target) = match &spec.kind {
        // The module's file name (its content key), not where this server keeps it.
        FunctionKind::Wasm { module } => (
            "wasm",
            module
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        FunctionKind::Process { command } => ("process", command.join(" ")),
    };
    json!({
        "name": spec.name,
        "kind": kind,
        "target": target,
        "memory_mib": spec.limits.memory_mib,
        "cpu_millicores": spec.limits.cpu_millicores,
        "cores": spec.limits.cores,
        "net_mbps": spec.limits.net_mbps,
        "gpu_units": spec.limits.gpu_units,
        "timeout_ms": spec.timeout_ms,
        "pure": spec.pure,
        "services": spec.services,
        "manifest": manifest,
    })
}

pub(super) async fn list_functions(State(state): State<Shared>) -> Response {
    let functions: Vec<Value> = state
        .director
        .pool()
        .functions()
        .iter()
        .map(|spec| describe(spec, None))
        .collect();
    Json(json!({ "functions": functions })).into_response()
}

pub(super) async fn get_function(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Response {
    let Some(spec) = state.director.pool().spec(&name) else {
        return error(StatusCode::NOT_FOUND, format!("unknown function `{name}`"));
    };
    let stored = state.store.function(&name).ok().flatten();
    let hash = stored.as_ref().and_then(|f| f.module_hash.clone());
    let mut described = describe(&spec, stored.map(|f| f.manifest));
    // Which upload it runs (the same on every node of a cluster once installed).
    if let (Some(fields), Some(hash)) = (described.as_object_mut(), hash) {
        fields.insert("module_hash".into(), hash.into());
    }
    Json(described).into_response()
}

/// A removed function leaves the graph too, and a snapshot keeps it out after a restart
/// (the records before it are not replayed).
pub(crate) async fn forget_in_graph(state: &Shared, name: &str) {
    let (state, name) = (Arc::clone(state), name.to_owned());
    let _ = tokio::task::spawn_blocking(move || {
        if state.director.forget_task(&name) {
            if let Err(error) = crate::snapshot(&state.director, &state.writer) {
                tracing::error!("snapshot after removing `{name}` failed: {error}");
            }
        }
    })
    .await;
}

pub(super) async fn delete_function(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Response {
    if !state.director.undeploy(&name) {
        return error(StatusCode::NOT_FOUND, format!("unknown function `{name}`"));
    }
    if let Err(e) = state.store.delete_function(&name) {
        return internal(e);
    }
    let sweeper = Arc::clone(&state);
    let _ = tokio::task::spawn_blocking(move || {
        let _uploads = sweeper.uploads.lock_unpoisoned();
        crate::sweep_uploads(&sweeper.store, &sweeper.dirs, &sweeper.disk);
    })
    .await;
    forget_in_graph(&state, &name).await;
    match &state.cluster {
        Some(cluster) => {
            let sharing = cluster
                .share(&state, crate::cluster::trust::Purpose::Function, &name)
                .await;
            removed_response(&sharing)
        }
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Adds to a deploy's or declaration's answer whether the cluster has it (`"cluster":
/// "shared"`) or this node keeps it until the registry takes it (`"pending"`, and why).
pub(super) fn add_sharing(body: &mut Value, sharing: Option<&crate::cluster::Sharing>) {
    let (Some(sharing), Some(fields)) = (sharing, body.as_object_mut()) else {
        return;
    };
    fields.insert("cluster".into(), sharing.as_str().into());
    if let crate::cluster::Sharing::Pending(why) = sharing {
        fields.insert(
            "cluster_note".into(),
            format!("done on this node; the cluster gets it when the registry takes it ({why})")
                .into(),
        );
    }
}

/// A removal's answer in a cluster: 204, with `Baton-Cluster: pending` when the registry
/// has not taken it yet.
pub(super) fn removed_response(sharing: &crate::cluster::Sharing) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        "baton-cluster",
        axum::http::HeaderValue::from_static(sharing.as_str()),
    );
    response
}
