//! What the node shows of itself: `/v1/pool` (policy, capacity, reservations, warm
//! instances, templates, counters, the planner's lag), `/metrics` and the dashboard page.

use super::*;

pub(super) async fn pool(State(state): State<Shared>) -> Response {
    let capacity = state.reservations.capacity();
    let mut by_plan: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for info in state.reservations.reservations() {
        let plan = info
            .request
            .plan
            .map_or("unplanned".to_owned(), |p| format!("plan-{p}"));
        by_plan.entry(plan).or_default().push(json!({
            "id": info.id,
            "kind": format!("{:?}", info.request.kind).to_lowercase(),
            "probability": info.request.probability,
            "window_us": [info.request.window.start_us, info.request.window.end_us],
            "memory_mib": info.request.needs.memory_mib,
            "cpu_millicores": info.request.needs.cpu_millicores,
            "cores": info.cores,
            "gpu_units": info.request.needs.gpu_units,
        }));
    }
    let now = Instant::now();
    let warm: Vec<Value> = state
        .director
        .pool()
        .idle()
        .into_iter()
        .map(|idle| {
            json!({
                "function": idle.function,
                "pid": idle.pid,
                "memory_mib": idle.memory_mib,
                "prewarmed": idle.prewarmed,
                "plan": idle.plan.map(|p| format!("plan-{p}")),
                "expires_in_ms": idle.until.saturating_duration_since(now).as_millis() as u64,
            })
        })
        .collect();
    // Whether each template-enabled function has its template; a refused one only says so
    // (its template's stderr may name server paths).
    let templates: Vec<Value> = state
        .director
        .pool()
        .templates()
        .into_iter()
        .map(|t| {
            json!({
                "function": t.function,
                "pid": t.pid,
                "spare": t.spare,
                "refused": t.refused.is_some(),
            })
        })
        .collect();
    let counters: serde_json::Map<String, Value> = state
        .director
        .counters()
        .read()
        .into_iter()
        .map(|(name, _, value)| (name.to_owned(), Value::from(value)))
        .collect();
    // The median, the p99, then the lag quantile points (what `baton load` gives
    // the simulator).
    let mut qs = vec![0.5, 0.99];
    qs.extend(baton_core::exec::lag_quantile_points());
    let lag_ms: Vec<f64> = state
        .director
        .planner_lags(&qs)
        .into_iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    Json(json!({
        "policy": state.policy.name.as_str(),
        "policy_knob": state.policy.knob,
        "keep_alive_secs": state.policy.keep_alive_us.map(|us| us as f64 / 1e6),
        "reuse": state.director.pool().reuse().to_string(),
        "start_slots": state.director.pool().max_cold_starts(),
        "start_ms_median": state
            .director
            .pool()
            .start_median()
            .map(|d| d.as_secs_f64() * 1000.0),
        "planner_lag_ms_median": lag_ms.first(),
        "planner_lag_ms_p99": lag_ms.get(1),
        "planner_lag_ms_quantiles": lag_ms.get(2..),
        "sandbox": state.detection.sandbox.to_string().lines().next().unwrap_or(""),
        "limits": state.detection.limits.to_string().lines().next().unwrap_or(""),
        "capacity": capacity,
        "reservations": by_plan,
        "warm_instances": warm,
        "templates": templates,
        "loaded_modules": state.director.loaded_modules(),
        "idle_memory_mib": state.director.pool().idle_memory_mib(),
        "template_memory_mib": state.director.pool().template_memory_mib(),
        "counters": counters,
        "prediction_hit_ratio": state.metrics.prediction_hit_rate(),
    }))
    .into_response()
}

/// The dashboard's page, embedded in the binary.
const DASHBOARD: &str = include_str!("../ui/index.html");

pub(super) async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

pub(super) async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}
