//! Asynchronous invocations after the 202 (`/v1/invocations`): the latest listed, one read
//! back with its response, an ended one forgotten. In a cluster the shared records answer.

use super::{error, internal, Shared};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
pub(super) struct InvocationsQuery {
    function: Option<String>,
    limit: Option<usize>,
}

/// Most invocations listed at once.
const MAX_LISTED: usize = 1000;

/// `GET /v1/invocations`: the latest asynchronous invocations, newest first (ids, states,
/// times; `GET /v1/invocations/{id}` has the response).
pub(super) async fn list(
    State(state): State<Shared>,
    Query(query): Query<InvocationsQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(50).min(MAX_LISTED);
    if let Some(cluster) = &state.cluster {
        // In a cluster, every node's: the shared records answer.
        return match cluster
            .recent_invocations(query.function.as_deref(), limit)
            .await
        {
            Ok(list) => {
                Json(json!({ "invocations": list.iter().map(|i| i.summary()).collect::<Vec<_>>() }))
                    .into_response()
            }
            Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
        };
    }
    match state
        .store
        .recent_invocations(query.function.as_deref(), limit)
    {
        Ok(list) => {
            let invocations: Vec<Value> = list
                .into_iter()
                .map(|i| {
                    json!({
                        "id": i.id,
                        "function": i.function,
                        "state": i.state,
                        "error": i.error,
                        "created_ns": i.created_ns,
                    })
                })
                .collect();
            Json(json!({ "invocations": invocations })).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `DELETE /v1/invocations/{id}`: forgets an invocation that has ended (its record and
/// response); one still queued or running is refused (409).
pub(super) async fn delete(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let removal = match &state.cluster {
        Some(cluster) => match cluster.delete_invocation(&id).await {
            Ok(removal) => {
                // This node's own copy, if it accepted it, goes too.
                let _ = state.store.delete_invocation(&id);
                removal
            }
            Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
        },
        None => match state.store.delete_invocation(&id) {
            Ok(removal) => removal,
            Err(e) => return internal(e),
        },
    };
    match removal {
        baton_store::Removal::Removed => StatusCode::NO_CONTENT.into_response(),
        baton_store::Removal::NotEnded(now) => error(
            StatusCode::CONFLICT,
            format!("invocation `{id}` is {now}: it can be removed once it has ended"),
        ),
        baton_store::Removal::Unknown => {
            error(StatusCode::NOT_FOUND, format!("unknown invocation `{id}`"))
        }
    }
}

pub(super) async fn get(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    if let Some(cluster) = &state.cluster {
        // In a cluster any node may have run it: the shared record answers.
        return match cluster.invocation(&id).await {
            Ok(Some(shared)) => Json(shared).into_response(),
            Ok(None) => error(StatusCode::NOT_FOUND, format!("unknown invocation `{id}`")),
            Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
        };
    }
    match state.store.invocation(&id) {
        Ok(Some(stored)) => {
            let response: Value = stored
                .response
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null);
            Json(json!({
                "id": stored.id,
                "function": stored.function,
                "state": stored.state,
                "error": stored.error,
                "response": response,
            }))
            .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("unknown invocation `{id}`")),
        Err(e) => internal(e),
    }
}
