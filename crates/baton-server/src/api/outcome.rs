//! An invocation's response document (`Outcome` in `docs/openapi.json`, its steps `Step`),
//! written straight from typed structs: no `serde_json::Value` tree on the request path.

use axum::http::StatusCode;
use base64::Engine as _;
use baton_runtime::director::{DirectorError, Outcome, StepFacts, Tier};
use baton_trace::schema::ExecutionRecord;
use serde::Serialize;

/// One step in an invocation's response document. Fields in alphabetical order: the
/// document is written straight from these types (no `Value` tree on the request path),
/// byte for byte as the sorted map it replaced.
#[derive(Debug, Serialize)]
pub(crate) struct StepBody {
    cold: Option<bool>,
    duration_us: u64,
    error: Option<String>,
    hop_ns: Option<u64>,
    invocation: String,
    parent: Option<String>,
    plan: Option<String>,
    ready_wait_us: Option<u64>,
    status: Option<&'static str>,
    stderr: Option<String>,
    stderr_dropped_bytes: Option<u64>,
    task: String,
    tier: Option<Tier>,
    warmth: Option<&'static str>,
}

impl StepBody {
    fn of(record: &ExecutionRecord, facts: &StepFacts) -> StepBody {
        StepBody {
            cold: record.cold,
            duration_us: record.duration_us,
            error: facts.error.clone(),
            hop_ns: facts.hop_ns.map(|(hop, _)| hop),
            invocation: record.invocation.clone(),
            parent: record.parent.clone(),
            plan: record.chain.clone(),
            ready_wait_us: facts.warmth.map(|_| facts.wait_us),
            status: record.status.map(|s| s.as_str()),
            stderr: facts.run.stderr.clone(),
            stderr_dropped_bytes: (facts.run.stderr_dropped_bytes > 0)
                .then_some(facts.run.stderr_dropped_bytes),
            task: record.task.clone(),
            tier: facts.tier,
            warmth: facts.warmth_word(),
        }
    }
}

/// An invocation's timings in its response document.
#[derive(Debug, Serialize)]
pub(crate) struct Timings {
    total_us: u64,
}

/// The response document of an invocation (`Outcome` in `docs/openapi.json`, its steps
/// `Step`), in alphabetical field order (see [`StepBody`]).
#[derive(Debug, Serialize)]
pub(crate) struct OutcomeBody {
    cold: bool,
    cold_steps: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// The cluster node that ran it, when in a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_base64: Option<String>,
    plan: Option<String>,
    steps: Vec<StepBody>,
    timings: Timings,
    trace: Option<String>,
}

impl OutcomeBody {
    /// The `traceparent` a response carries: the trace continues at the chain's first step.
    pub(super) fn traceparent(&self) -> Option<String> {
        let (trace, first) = (self.trace.as_ref()?, self.steps.first()?);
        Some(traceparent(trace, &first.invocation))
    }
}

/// The `traceparent` of a response whose trace is `trace` and whose chain's first step is
/// `first_step` (sampled), for this node's answers and those a peer gave.
pub(super) fn traceparent(trace: &str, first_step: &str) -> String {
    format!("00-{trace}-{first_step}-01")
}

/// The response document of an invocation and its status.
pub(super) fn outcome_body(
    result: &Result<Outcome, DirectorError>,
    total_us: u64,
) -> (StatusCode, OutcomeBody) {
    use baton_runtime::director::StepError;
    use baton_runtime::process::WorkerError;
    let (records, steps, output, error) = match result {
        Ok(outcome) => (
            &outcome.records[..],
            &outcome.steps[..],
            Some(&outcome.output),
            None,
        ),
        Err(e) => (e.records(), e.steps(), None, Some(e.to_string())),
    };
    let (output, output_base64) = match output {
        None => (None, None),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        },
    };
    let status = match result {
        Ok(_) => StatusCode::OK,
        Err(DirectorError::Step {
            source: StepError::Unknown(_),
            ..
        }) => StatusCode::NOT_FOUND,
        Err(DirectorError::Step {
            source:
                StepError::Process(
                    WorkerError::Saturated { .. }
                    | WorkerError::NoSandbox { .. }
                    | WorkerError::Network { .. }
                    | WorkerError::NoMemory { .. },
                ),
            ..
        }) => StatusCode::SERVICE_UNAVAILABLE,
        Err(_) => StatusCode::BAD_GATEWAY,
    };
    let body = OutcomeBody {
        cold: records.iter().any(|r| r.cold == Some(true)),
        cold_steps: records.iter().filter(|r| r.cold == Some(true)).count(),
        error,
        node: None,
        output,
        output_base64,
        plan: records.iter().find_map(|r| r.chain.clone()),
        steps: records
            .iter()
            .zip(steps)
            .map(|(record, facts)| StepBody::of(record, facts))
            .collect(),
        timings: Timings { total_us },
        trace: records.first().and_then(|r| r.trace.clone()),
    };
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_written_in_sorted_key_order_as_the_map_it_replaced() {
        let step = |task: &str, parent: Option<&str>| StepBody {
            cold: Some(false),
            duration_us: 12,
            error: None,
            hop_ns: parent.map(|_| 1500),
            invocation: format!("{task}-id"),
            parent: parent.map(str::to_owned),
            plan: None,
            ready_wait_us: Some(0),
            status: Some("ok"),
            stderr: Some("a line\n".into()),
            stderr_dropped_bytes: None,
            task: task.into(),
            tier: Some(Tier::Instance),
            warmth: Some("warm"),
        };
        let body = OutcomeBody {
            cold: false,
            cold_steps: 0,
            error: Some("step b failed".into()),
            node: Some("n1".into()),
            output: Some("HELLO".into()),
            output_base64: None,
            plan: Some("p".into()),
            steps: vec![step("a", None), step("b", Some("a-id"))],
            timings: Timings { total_us: 40 },
            trace: Some("t".into()),
        };
        let written = serde_json::to_string(&body).unwrap();
        // A `Value` keeps its keys sorted: the same bytes mean every struct lists its
        // fields in that order, so clients see the document they saw before.
        let sorted = serde_json::to_value(&body).unwrap().to_string();
        assert_eq!(written, sorted);
        assert!(!written.contains("output_base64"), "{written}");
        assert_eq!(body.traceparent().as_deref(), Some("00-t-a-id-01"));
    }
}
