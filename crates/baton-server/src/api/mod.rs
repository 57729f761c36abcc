//! The routes (listed in [`ROUTES`] and in `docs/openapi.json`) and their handlers;
//! functions' in `functions`, sequences' in `sequences`, the graph's and logs' in `learning`, an
//! invocation's response document in `outcome`.

use baton_core::sync::Unpoisoned;
mod auth;
mod functions;
mod invocations;
mod learning;
mod node;
mod outcome;
mod sequences;

use outcome::outcome_body;
pub(crate) use outcome::OutcomeBody;

pub(crate) use functions::{check_upload, forget_in_graph, install};

use crate::cluster::Forwarded;
use crate::{materialize, AppState};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use baton_core::context::Prev;
use baton_core::{PredictContext, PredictOptions};
use baton_runtime::manifest::{FunctionKind, FunctionSpec};
use baton_runtime::trace_context::{self, TraceParent};
use baton_store::InvocationState;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Every route: (method, path). A test checks them against `docs/openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/functions"),
    ("PUT", "/v1/functions/{name}"),
    ("GET", "/v1/functions/{name}"),
    ("DELETE", "/v1/functions/{name}"),
    ("POST", "/v1/functions/{name}/invoke"),
    ("GET", "/v1/invocations"),
    ("GET", "/v1/invocations/{id}"),
    ("DELETE", "/v1/invocations/{id}"),
    ("POST", "/v1/sequences/{name}"),
    ("GET", "/v1/sequences/{name}"),
    ("DELETE", "/v1/sequences/{name}"),
    ("GET", "/v1/sequences"),
    ("POST", "/v1/logs"),
    ("GET", "/v1/logs"),
    ("POST", "/v1/traces"),
    ("GET", "/ui"),
    ("GET", "/v1/graph"),
    ("GET", "/v1/predictions"),
    ("GET", "/v1/pool"),
];

type Shared = Arc<AppState>;

/// A JSON error: `{"error": message}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(message: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
}

/// How a request's body must arrive: at most so many bytes, within so long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyBounds {
    pub(crate) max_bytes: usize,
    pub(crate) timeout: std::time::Duration,
}

/// Reads a request's body, within its bounds, before any handler sees it: a client that
/// trickles its body holds its connection for [`BodyBounds::timeout`] at most (408), and
/// one that sends more than the bound is refused (413) without more of it buffered.
async fn body_deadline(bounds: BodyBounds, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared == Some(0) {
        return next.run(request).await;
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over this server's {} KiB limit (--max-body-mib)",
                bounds.max_bytes >> 10
            ),
        )
    };
    if declared.is_some_and(|n| n > bounds.max_bytes as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let read =
        tokio::time::timeout(bounds.timeout, axum::body::to_bytes(body, bounds.max_bytes)).await;
    match read {
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                bounds.timeout.as_secs_f64()
            ),
        ),
        Ok(Err(e)) if e.to_string().contains("length limit") => too_large(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, format!("request body: {e}")),
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
    }
}

pub(crate) fn router(state: Shared, body: BodyBounds) -> Router {
    let max_body_bytes = body.max_bytes;
    let api = Router::new()
        .route("/metrics", get(node::metrics))
        .route("/v1/functions", get(functions::list_functions))
        .route(
            "/v1/functions/{name}",
            put(functions::put_function)
                .get(functions::get_function)
                .delete(functions::delete_function),
        )
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/invocations", get(invocations::list))
        .route(
            "/v1/invocations/{id}",
            get(invocations::get).delete(invocations::delete),
        )
        .route("/v1/sequences", get(sequences::list))
        .route(
            "/v1/sequences/{name}",
            post(sequences::put)
                .get(sequences::get)
                .delete(sequences::delete),
        )
        .route(
            "/v1/logs",
            post(learning::ingest_logs).get(learning::recent_logs),
        )
        .route("/v1/traces", post(learning::ingest_traces))
        .route("/v1/graph", get(learning::graph))
        .route("/v1/predictions", get(learning::predictions))
        .route("/v1/pool", get(node::pool))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::auth,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        // The dashboard is a static page (it asks the API, with the token, for the data).
        .route("/ui", get(node::dashboard))
        .merge(api)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such route (see docs/openapi.json)",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(move |request, next| {
            body_deadline(body, request, next)
        }))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// One line per request on the `baton::access` target (info): method, path (never the
/// query, which may carry data), status and time taken. `RUST_LOG=baton::access=off`
/// silences it.
async fn access_log(request: Request, next: Next) -> Response {
    if !tracing::enabled!(target: "baton::access", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(
        target: "baton::access",
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        us = started.elapsed().as_micros() as u64,
    );
    response
}

/// Every 4xx and 5xx answers one JSON body, `{"error": message}`: the framework's own
/// rejections (body too large, bad query string, wrong method) are plain text, and are
/// rewritten here with their text as the message. Their headers (Allow, Retry-After,
/// WWW-Authenticate) are kept.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The framework's messages are short; anything longer is cut.
    let bytes = axum::body::to_bytes(body, 16 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut rebuilt = error(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}

#[derive(Debug, Deserialize)]
struct InvokeQuery {
    #[serde(default)]
    r#async: bool,
}

/// A place in `function`'s queue, released when dropped.
struct QueueSlot {
    state: Shared,
    function: String,
}

impl QueueSlot {
    fn take(state: &Shared, function: &str) -> Option<QueueSlot> {
        let mut queues = state.queues.lock_unpoisoned();
        let used = queues.entry(function.to_owned()).or_default();
        if *used >= state.queue_depth {
            return None;
        }
        *used += 1;
        Some(QueueSlot {
            state: Arc::clone(state),
            function: function.to_owned(),
        })
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        let mut queues = self.state.queues.lock_unpoisoned();
        if let Some(used) = queues.get_mut(&self.function) {
            *used = used.saturating_sub(1);
        }
    }
}

/// Whether running `name` twice is harmless: a pure function, or a sequence of pure
/// functions only (an interrupted asynchronous invocation is re-run only then).
fn pure(state: &AppState, name: &str) -> bool {
    let pool = state.director.pool();
    state
        .director
        .steps_of(name)
        .iter()
        .all(|step| pool.spec(step).is_some_and(|s| s.pure))
}

/// How long a forwarded invocation may take before it is run here instead: its steps'
/// timeouts, and 2 s for the hops.
fn forward_timeout(state: &AppState, name: &str) -> std::time::Duration {
    let pool = state.director.pool();
    let ms: u64 = state
        .director
        .steps_of(name)
        .iter()
        .filter_map(|s| pool.spec(s).map(|spec| spec.timeout_ms))
        .sum();
    std::time::Duration::from_millis(ms + 2000)
}

/// A request's content type ("" without one).
fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn known(state: &AppState, name: &str) -> bool {
    state.director.pool().spec(name).is_some() || state.director.is_sequence(name)
}

/// The caller's trace from a `traceparent` header; a malformed one is ignored and the
/// invocation starts a trace of its own, as W3C trace context asks.
fn caller_trace(headers: &HeaderMap) -> Option<TraceParent> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    TraceParent::parse(value).ok()
}

/// Runs an invocation and gives its response document as a JSON value (for the store and
/// the cluster's replies); see [`run_invocation_body`].
pub(crate) fn run_invocation(
    state: &AppState,
    name: &str,
    payload: &[u8],
    caller: Option<TraceParent>,
) -> (StatusCode, Value) {
    let (status, body) = run_invocation_body(state, name, payload, caller);
    let value = serde_json::to_value(&body)
        .unwrap_or_else(|e| json!({ "error": format!("the response could not be written: {e}") }));
    (status, value)
}

/// Runs an invocation (blocking) and gives its status and response document.
pub(crate) fn run_invocation_body(
    state: &AppState,
    name: &str,
    payload: &[u8],
    caller: Option<TraceParent>,
) -> (StatusCode, OutcomeBody) {
    let started = Instant::now();
    let result = state.director.invoke_traced(name, payload, caller);
    let (records, steps) = match &result {
        Ok(outcome) => (&outcome.records[..], &outcome.steps[..]),
        Err(e) => (e.records(), e.steps()),
    };
    state.metrics.observe(records, steps);
    outcome_body(&result, started.elapsed().as_micros() as u64)
}

/// Runs an accepted asynchronous invocation to its end (blocking) and stores the outcome.
pub(crate) fn complete_async(
    state: &AppState,
    id: &str,
    function: &str,
    payload: &[u8],
    caller: Option<TraceParent>,
) {
    let _ = state
        .store
        .set_invocation(id, InvocationState::Running, None, None);
    let (status, body) = run_invocation(state, function, payload, caller);
    let (outcome, error) = if status == StatusCode::OK {
        (InvocationState::Succeeded, None)
    } else {
        (
            InvocationState::Failed,
            body["error"].as_str().map(str::to_owned),
        )
    };
    let _ = state
        .store
        .set_invocation(id, outcome, Some(&body.to_string()), error.as_deref());
}

/// Runs an accepted asynchronous invocation on a blocking thread of `runtime`.
pub(crate) fn run_async(
    state: Shared,
    id: String,
    function: String,
    payload: Vec<u8>,
    runtime: &tokio::runtime::Handle,
) {
    runtime.spawn_blocking(move || complete_async(&state, &id, &function, &payload, None));
}

/// 202 with the invocation's id and where to ask for it.
fn accepted(id: &str) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "state": InvocationState::Queued })),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/invocations/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn invoke(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = caller_trace(&headers);
    if !known(&state, &name) {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown function or sequence `{name}`"),
        );
    }
    let Some(slot) = QueueSlot::take(&state, &name) else {
        state.metrics.rejected();
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the queue of `{name}` is full ({} waiting or running)",
                state.queue_depth
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    if query.r#async {
        let id = trace_context::invocation_id();
        let pure = pure(&state, &name);
        if let Some(cluster) = &state.cluster {
            // Into the cluster's work queue: any node runs it, and a node that dies with
            // it loses nothing (the queue hands it to another).
            drop(slot);
            return match cluster.enqueue(&id, &name, &body, pure).await {
                Ok(()) => accepted(&id),
                Err(e) => {
                    let mut response = error(e.status(), e.to_string());
                    if e.status() == StatusCode::TOO_MANY_REQUESTS {
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    }
                    response
                }
            };
        }
        if let Err(e) = state.store.put_invocation(&id, &name, &body, pure) {
            return internal(e);
        }
        let state2 = Arc::clone(&state);
        let (id2, payload) = (id.clone(), body.to_vec());
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            complete_async(&state2, &id2, &name, &payload, caller);
        });
        return accepted(&id);
    }
    // In a cluster, a process function this node holds no idle worker of goes to a node
    // that holds one (the whole chain runs there), when a cold start here costs more.
    let mut forwarded = None;
    if let Some(cluster) = &state.cluster {
        if let Some(peer) = cluster.forward_target(&state, &name) {
            let timeout = forward_timeout(&state, &name);
            match cluster.forward(&peer, &name, &body, caller, timeout).await {
                Forwarded::Answered(status, body) => forwarded = Some((status, body)),
                Forwarded::NotTaken => {}
                // It may have run there: run again here only what may run twice.
                Forwarded::Lost(why) if !pure(&state, &name) => {
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("{why}; not run here because `{name}` is not pure"),
                    );
                }
                Forwarded::Lost(why) => tracing::warn!("cluster: {why}; running it here"),
            }
        }
    }
    let (status, mut response, traceparent) = match forwarded {
        Some((status, body)) => {
            // The trace continues at the chain's first step.
            let traceparent = body["trace"]
                .as_str()
                .zip(body["steps"][0]["invocation"].as_str())
                .map(|(trace, first)| outcome::traceparent(trace, first));
            (status, Json(body).into_response(), traceparent)
        }
        // The chain runs on this worker thread (tokio moves its other tasks elsewhere): no
        // hand-off to a blocking thread and back on the request path.
        None => tokio::task::block_in_place(|| {
            let _slot = slot;
            let (status, mut body) = run_invocation_body(&state, &name, &body, caller);
            if let Some(cluster) = &state.cluster {
                body.node = Some(cluster.node.clone());
            }
            let traceparent = body.traceparent();
            (status, Json(body).into_response(), traceparent)
        }),
    };
    *response.status_mut() = status;
    if let Some(value) = traceparent.and_then(|value| HeaderValue::from_str(&value).ok()) {
        response.headers_mut().insert("traceparent", value);
    }
    response
}
