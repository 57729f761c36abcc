//! What the graph learns and tells: foreign logs in, the latest records, the graph and the
//! predictions from a task (`/v1/logs`, `/v1/graph`, `/v1/predictions`).

use super::*;
use axum::http::HeaderName;

/// Which reader a body of logs goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Jsonl,
    OtlpJson,
    OtlpProto,
}

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            LogFormat::Jsonl => "jsonl",
            LogFormat::OtlpJson => "otlp",
            LogFormat::OtlpProto => "otlp-protobuf",
        }
    }
}

/// Reads `body` in `format` and learns its records; the report, or why nothing was
/// learned.
fn learn(state: &AppState, body: &[u8], format: LogFormat) -> Result<Value, String> {
    let mut report = baton_trace::report::ReadReport::default();
    let options = baton_trace::spans::SpanOptions::default();
    let records = match format {
        LogFormat::OtlpJson => baton_trace::otlp::read_otlp("body", body, options, &mut report),
        LogFormat::OtlpProto => {
            baton_trace::otlp_proto::read_otlp_proto("body", body, options, &mut report)
        }
        LogFormat::Jsonl => {
            let mut records = Vec::new();
            report = baton_trace::jsonl::read_jsonl("body", body, |r| records.push(r));
            records
        }
    };
    if records.is_empty() {
        let first = report
            .errors
            .first()
            .map(|e| e.to_string())
            .or_else(|| report.broken.first().cloned())
            .unwrap_or_else(|| "no records".into());
        return Err(format!("nothing to learn: {first}"));
    }
    let grouped = state.director.learn_records(&records, None);
    Ok(json!({
        "format": format.name(),
        "records": records.len(),
        "requests": grouped.requests,
        // Records dropped because their parent links form a cycle, and requests lost whole
        // to one (every record in it); records whose parent is missing are kept as roots.
        "cycles": grouped.cycles,
        "rootless": grouped.rootless,
        "missing_parents": grouped.missing_parents,
        "skipped": report.skipped,
        "errors": report.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    }))
}

/// `POST /v1/logs`: schema-v1 JSONL, OTLP/JSON, or OTLP protobuf (by its content type).
pub(super) async fn ingest_logs(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = body.trim_ascii_start();
    let format = if content_type(&headers).starts_with("application/x-protobuf") {
        LogFormat::OtlpProto
    } else if text.starts_with(b"{") && text.windows(13).take(4096).any(|w| w == b"resourceSpans") {
        LogFormat::OtlpJson
    } else {
        LogFormat::Jsonl
    };
    match tokio::task::spawn_blocking(move || learn(&state, &body, format)).await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(why)) => error(StatusCode::BAD_REQUEST, why),
        Err(e) => internal(e),
    }
}

/// `POST /v1/traces`: an OTLP/HTTP trace export (protobuf, or JSON), learned as spans; the
/// answer is an (empty) `ExportTraceServiceResponse` in the request's encoding, so an
/// OpenTelemetry SDK or collector can export to baton directly.
pub(super) async fn ingest_traces(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let protobuf = content_type(&headers).starts_with("application/x-protobuf");
    let format = if protobuf {
        LogFormat::OtlpProto
    } else {
        LogFormat::OtlpJson
    };
    match tokio::task::spawn_blocking(move || learn(&state, &body, format)).await {
        Ok(Ok(_)) if protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
        Ok(Ok(_)) => Json(json!({})).into_response(),
        Ok(Err(why)) => error(StatusCode::BAD_REQUEST, why),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct LogsQuery {
    tail: Option<usize>,
    function: Option<String>,
    trace: Option<String>,
    after: Option<u64>,
}

/// Execution records as schema-v1 JSONL: the last `tail` (default 20, at most 10,000)
/// that match `function` and `trace`, or, with `after`, those after that row in order (a
/// follower asks again after the `Baton-Last-Id` it got).
pub(super) async fn recent_logs(
    State(state): State<Shared>,
    Query(query): Query<LogsQuery>,
) -> Response {
    let filter = baton_store::LogFilter {
        limit: query.tail.unwrap_or(20).min(10_000),
        function: query.function,
        trace: query.trace,
        after: query.after.map(|a| i64::try_from(a).unwrap_or(i64::MAX)),
    };
    let rows = tokio::task::spawn_blocking(move || {
        state.writer.flush();
        let rows = state.store.logs(&filter)?;
        // With nothing returned, a follower goes on from where the log is now (or from
        // where it asked), not from the start.
        let last = match (rows.last(), filter.after) {
            (Some((id, _)), _) => *id,
            (None, Some(after)) => after,
            (None, None) => state.store.last_execution_id()?,
        };
        Ok::<_, baton_store::StoreError>((rows, last))
    })
    .await;
    match rows {
        Ok(Ok((rows, last))) => {
            let mut out = Vec::new();
            for (_, record) in &rows {
                let _ = record.write_line(&mut out);
            }
            (
                [
                    (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
                    (HeaderName::from_static("baton-last-id"), last.to_string()),
                ],
                out,
            )
                .into_response()
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct GraphQuery {
    format: Option<String>,
    min_probability: Option<f64>,
}

/// Drops the nodes of removed functions: nothing learned (the graph forgot them), no
/// edge, and not deployed. (A deployed function not called yet stays, at weight 0.)
fn hide_forgotten(state: &AppState, graph: &mut Value) {
    let touched: std::collections::HashSet<String> = graph["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| [&e["from"], &e["to"]])
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    let pool = state.director.pool();
    if let Some(nodes) = graph["nodes"].as_array_mut() {
        nodes.retain(|n| {
            let task = n["task"].as_str().unwrap_or("");
            n["weight"].as_f64().unwrap_or(0.0) > 0.0
                || touched.contains(task)
                || pool.spec(task).is_some()
                || state.director.is_sequence(task)
        });
    }
}

pub(super) async fn graph(
    State(state): State<Shared>,
    Query(query): Query<GraphQuery>,
) -> Response {
    let snapshot = state.director.graph().load();
    let min = query.min_probability.unwrap_or(0.0);
    match query.format.as_deref() {
        None | Some("json") => {
            let mut graph = baton_trace::render::graph_json(&snapshot, min);
            hide_forgotten(&state, &mut graph);
            Json(graph).into_response()
        }
        Some("dot") => (
            [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
            baton_trace::render::graph_dot(&snapshot, min),
        )
            .into_response(),
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            format!("format {other:?}: expected json or dot"),
        ),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PredictQuery {
    from: String,
    n: Option<usize>,
    depth: Option<usize>,
}

pub(super) async fn predictions(
    State(state): State<Shared>,
    Query(query): Query<PredictQuery>,
) -> Response {
    let snapshot = state.director.graph().load();
    let Some(task) = snapshot.task_id(&query.from) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("task `{}` is not in the graph", query.from),
        );
    };
    let options = PredictOptions {
        n: query.n.unwrap_or(5).clamp(1, 100),
        max_depth: query.depth.unwrap_or(5).clamp(1, 64),
        ..PredictOptions::default()
    };
    let context = PredictContext {
        route: None,
        prev: Prev::Start,
        grand_caller: None,
        operation: None,
    };
    let chains: Vec<Value> = snapshot
        .predict(task, &context, &options)
        .iter()
        .map(|chain| {
            json!({
                "tasks": chain.tasks.iter().map(|t| snapshot.task_name(*t)).collect::<Vec<_>>(),
                "probability": chain.probability,
                "ended": chain.ended,
            })
        })
        .collect();
    // When the task starts on its own again, if its starts have a rhythm.
    let rhythm = snapshot
        .episodes(task)
        .and_then(|episodes| episodes.rhythm())
        .map(|r| {
            json!({
                "period_ms": r.period_us as f64 / 1000.0,
                "starts_per_period": r.lag,
                "confirmations": r.confirmations,
                "next_start_unix_ms": r.next_us / 1000,
                "window_ms": r.window_us as f64 / 1000.0,
            })
        });
    Json(json!({
        "from": query.from,
        "graph_version": snapshot.version(),
        "chains": chains,
        "rhythm": rhythm,
    }))
    .into_response()
}
