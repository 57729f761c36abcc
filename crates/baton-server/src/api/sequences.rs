//! Sequences: a named list of functions, invoked like a function (`/v1/sequences`).

use super::{error, internal, Shared};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceBody {
    steps: Vec<String>,
}

/// `POST /v1/sequences/{name}`: declares (or replaces) a sequence of deployed functions.
pub(super) async fn put(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if !baton_runtime::manifest::is_valid_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("a sequence name is {}", baton_runtime::manifest::NAME_RULE),
        );
    }
    let body: SequenceBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    if body.steps.is_empty() || body.steps.len() > baton_runtime::director::MAX_HOPS {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "`steps` has {} entries; a sequence has 1 to {}",
                body.steps.len(),
                baton_runtime::director::MAX_HOPS
            ),
        );
    }
    for step in &body.steps {
        if state.director.pool().spec(step).is_some() {
            continue;
        }
        // In a cluster, a function deployed through another node is a step as soon as the
        // registry holds it, before this node has installed it.
        let shared = match &state.cluster {
            Some(cluster) => match cluster.has_function(step).await {
                Ok(shared) => shared,
                Err(e) => {
                    return error(
                        StatusCode::BAD_GATEWAY,
                        format!(
                        "step `{step}` is not installed here and the registry did not answer: {e}"
                    ),
                    )
                }
            },
            None => false,
        };
        if !shared {
            return error(
                StatusCode::BAD_REQUEST,
                format!("step `{step}` is not a deployed function"),
            );
        }
    }
    let shared_function = match &state.cluster {
        Some(cluster) => cluster.has_function(&name).await.unwrap_or(false),
        None => false,
    };
    if shared_function || state.director.pool().spec(&name).is_some() {
        return error(
            StatusCode::CONFLICT,
            format!("`{name}` is already a function"),
        );
    }
    if let Err(e) = state.store.put_sequence(&name, &body.steps) {
        return internal(e);
    }
    if let Err(e) = state.director.declare_sequence(&name, body.steps.clone()) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let sharing = match &state.cluster {
        Some(cluster) => Some(
            cluster
                .share(&state, crate::cluster::trust::Purpose::Sequence, &name)
                .await,
        ),
        None => None,
    };
    let mut out = json!({ "name": name, "steps": body.steps });
    super::functions::add_sharing(&mut out, sharing.as_ref());
    (StatusCode::CREATED, Json(out)).into_response()
}

/// `GET /v1/sequences`.
pub(super) async fn list(State(state): State<Shared>) -> Response {
    let sequences: Vec<Value> = state
        .director
        .sequences()
        .into_iter()
        .map(|(name, steps)| json!({ "name": name, "steps": steps }))
        .collect();
    Json(json!({ "sequences": sequences })).into_response()
}

/// `GET /v1/sequences/{name}`.
pub(super) async fn get(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    match state.director.sequence(&name) {
        Some(steps) => Json(json!({ "name": name, "steps": steps })).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("unknown sequence `{name}`")),
    }
}

/// `DELETE /v1/sequences/{name}`: the sequence goes; its functions stay.
pub(super) async fn delete(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    if !state.director.remove_sequence(&name) {
        return error(StatusCode::NOT_FOUND, format!("unknown sequence `{name}`"));
    }
    if let Err(e) = state.store.delete_sequence(&name) {
        return internal(e);
    }
    match &state.cluster {
        Some(cluster) => {
            let sharing = cluster
                .share(&state, crate::cluster::trust::Purpose::Sequence, &name)
                .await;
            super::functions::removed_response(&sharing)
        }
        None => StatusCode::NO_CONTENT.into_response(),
    }
}
