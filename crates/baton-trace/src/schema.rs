//! Execution-log schema v1: one JSON object per line, read and written.
//!
//! Required: `ts` (start; RFC 3339 string or integer epoch ns), `task`, `invocation`,
//! `duration_us`. Optional: `parent`, `trace`, `app`, `cold`, `cpu_ms`, `mem_peak_mib`,
//! `net_bytes`, `gpu_ms`, `status` (`ok`/`error`/`timeout`/`oom`), `chain`; baton also writes
//! `operation`, `cold_start_us` and `ready_wait_us` (how long the step waited for its
//! instance: a cold start, the rest of a late pre-warm) when it knows them, and a cluster
//! node writes `count`
//! (a positive integer) on a summary record that stands for that many invocations alike.
//! Unknown fields are kept (and written back) but otherwise ignored. Every problem names
//! the line and the field.

use serde_json::{Map, Value};
use std::fmt;
use std::io::{self, Write};
use thiserror::Error;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok,
    /// The function failed.
    Error,
    /// Stopped by its timeout.
    Timeout,
    /// Stopped by its memory limit.
    Oom,
}

impl Status {
    /// The schema's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::Oom => "oom",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invocation as logged.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecutionRecord {
    /// Start, ns since the epoch.
    pub ts_ns: u64,
    /// The task (function) name.
    pub task: String,
    /// Invocation id.
    pub invocation: String,
    /// Wall time, µs.
    pub duration_us: u64,
    /// Caller invocation id.
    pub parent: Option<String>,
    /// Request (chain) id.
    pub trace: Option<String>,
    /// Application.
    pub app: Option<String>,
    /// Whether it started cold.
    pub cold: Option<bool>,
    /// CPU time, ms.
    pub cpu_ms: Option<f64>,
    /// Peak memory, MiB.
    pub mem_peak_mib: Option<f64>,
    /// Network bytes.
    pub net_bytes: Option<u64>,
    /// GPU time, ms.
    pub gpu_ms: Option<f64>,
    /// How it ended.
    pub status: Option<Status>,
    /// Id of the plan that pre-warmed it.
    pub chain: Option<String>,
    /// Operation (handler, route) inside the task.
    pub operation: Option<String>,
    /// Cold-start time, µs.
    pub cold_start_us: Option<u64>,
    /// How long the step waited for its instance (a cold start, the rest of a late
    /// pre-warm), µs: baton's own records.
    pub ready_wait_us: Option<u64>,
    /// How many invocations alike this record stands for (a cluster node's summary of its
    /// traffic, `baton_trace::summary`); `None` is one.
    pub count: Option<u64>,
    /// Fields this version does not know, kept as they came.
    pub extra: Map<String, Value>,
}

/// A problem with one field of one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// A required field is absent.
    #[error("field `{0}` missing")]
    Missing(&'static str),
    /// A field has the wrong type or value.
    #[error("field `{field}`: expected {expected}, got {got}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
        /// What it was.
        got: String,
    },
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        format!(
            "{}…",
            &text[..text.char_indices().nth(40).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text
    }
}

fn invalid(field: &'static str, expected: &'static str, value: &Value) -> RecordError {
    RecordError::Invalid {
        field,
        expected,
        got: describe(value),
    }
}

fn take_string(
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, RecordError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        // Ids are often numbers in foreign logs; accept them as their decimal text.
        Some(Value::Number(n)) if field != "task" => Ok(Some(n.to_string())),
        Some(other) => Err(invalid(field, "a string", &other)),
    }
}

fn take_u64(map: &mut Map<String, Value>, field: &'static str) -> Result<Option<u64>, RecordError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f >= 0.0 && f.is_finite() => Ok(Some(f.round() as u64)),
            _ => Err(invalid(field, "a non-negative number", &Value::Number(n))),
        },
        Some(other) => Err(invalid(field, "a non-negative number", &other)),
    }
}

fn take_f64(map: &mut Map<String, Value>, field: &'static str) -> Result<Option<f64>, RecordError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f >= 0.0 && f.is_finite() => Ok(Some(f)),
            _ => Err(invalid(field, "a non-negative number", &Value::Number(n))),
        },
        Some(other) => Err(invalid(field, "a non-negative number", &other)),
    }
}

/// Parses a timestamp: RFC 3339 text, or an integer of epoch ns.
pub fn parse_ts(value: &Value) -> Result<u64, RecordError> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| invalid("ts", "epoch ns or RFC 3339", value)),
        Value::String(s) => {
            parse_rfc3339_ns(s).ok_or_else(|| invalid("ts", "epoch ns or RFC 3339", value))
        }
        _ => Err(invalid("ts", "epoch ns or RFC 3339", value)),
    }
}

/// Parses RFC 3339 text to epoch ns (`None` if malformed or before 1970).
pub fn parse_rfc3339_ns(text: &str) -> Option<u64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos()).ok()
}

/// Formats epoch ns as RFC 3339 (UTC).
pub fn format_rfc3339_ns(ns: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

impl ExecutionRecord {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<ExecutionRecord, RecordError> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| RecordError::NotJson(e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(RecordError::NotJson(format!("got {}", kind_of(&value))));
        };
        let ts_ns = parse_ts(&map.remove("ts").ok_or(RecordError::Missing("ts"))?)?;
        let task = take_string(&mut map, "task")?.ok_or(RecordError::Missing("task"))?;
        if task.is_empty() {
            return Err(invalid("task", "a non-empty string", &Value::String(task)));
        }
        let invocation =
            take_string(&mut map, "invocation")?.ok_or(RecordError::Missing("invocation"))?;
        let duration_us =
            take_u64(&mut map, "duration_us")?.ok_or(RecordError::Missing("duration_us"))?;
        let cold = match map.remove("cold") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(other) => return Err(invalid("cold", "true or false", &other)),
        };
        let status = match take_string(&mut map, "status")?.as_deref() {
            None => None,
            Some("ok") => Some(Status::Ok),
            Some("error") => Some(Status::Error),
            Some("timeout") => Some(Status::Timeout),
            Some("oom") => Some(Status::Oom),
            Some(other) => {
                return Err(invalid(
                    "status",
                    "ok, error, timeout or oom",
                    &Value::String(other.to_owned()),
                ))
            }
        };
        Ok(ExecutionRecord {
            ts_ns,
            task,
            invocation,
            duration_us,
            parent: take_string(&mut map, "parent")?,
            trace: take_string(&mut map, "trace")?,
            app: take_string(&mut map, "app")?,
            cold,
            cpu_ms: take_f64(&mut map, "cpu_ms")?,
            mem_peak_mib: take_f64(&mut map, "mem_peak_mib")?,
            net_bytes: take_u64(&mut map, "net_bytes")?,
            gpu_ms: take_f64(&mut map, "gpu_ms")?,
            status,
            chain: take_string(&mut map, "chain")?,
            operation: take_string(&mut map, "operation")?,
            cold_start_us: take_u64(&mut map, "cold_start_us")?,
            ready_wait_us: take_u64(&mut map, "ready_wait_us")?,
            count: match map.remove("count") {
                None | Some(Value::Null) => None,
                Some(value) => match value.as_u64() {
                    Some(count) if count > 0 => Some(count),
                    _ => return Err(invalid("count", "a positive integer", &value)),
                },
            },
            extra: map,
        })
    }

    /// The record as a JSON object (schema v1).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("ts".into(), Value::String(format_rfc3339_ns(self.ts_ns)));
        map.insert("task".into(), Value::String(self.task.clone()));
        map.insert("invocation".into(), Value::String(self.invocation.clone()));
        map.insert("duration_us".into(), Value::from(self.duration_us));
        let optional_strings = [
            ("parent", &self.parent),
            ("trace", &self.trace),
            ("app", &self.app),
            ("chain", &self.chain),
            ("operation", &self.operation),
        ];
        for (field, value) in optional_strings {
            if let Some(value) = value {
                map.insert(field.into(), Value::String(value.clone()));
            }
        }
        if let Some(cold) = self.cold {
            map.insert("cold".into(), Value::Bool(cold));
        }
        for (field, value) in [
            ("cpu_ms", self.cpu_ms),
            ("mem_peak_mib", self.mem_peak_mib),
            ("gpu_ms", self.gpu_ms),
        ] {
            if let Some(value) = value {
                map.insert(field.into(), Value::from(value));
            }
        }
        for (field, value) in [
            ("net_bytes", self.net_bytes),
            ("cold_start_us", self.cold_start_us),
            ("ready_wait_us", self.ready_wait_us),
            ("count", self.count),
        ] {
            if let Some(value) = value {
                map.insert(field.into(), Value::from(value));
            }
        }
        if let Some(status) = self.status {
            map.insert("status".into(), Value::String(status.as_str().into()));
        }
        for (key, value) in &self.extra {
            map.entry(key.clone()).or_insert_with(|| value.clone());
        }
        Value::Object(map)
    }

    /// Writes the record as one line.
    pub fn write_line(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, &self.to_json())?;
        out.write_all(b"\n")
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_count_is_a_positive_integer_and_round_trips() {
        let line = r#"{"ts":1,"task":"a","invocation":"i","duration_us":5,"count":40}"#;
        let record = ExecutionRecord::parse(line).unwrap();
        assert_eq!(record.count, Some(40));
        let mut out = Vec::new();
        record.write_line(&mut out).unwrap();
        let back = ExecutionRecord::parse(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(back, record);
        for bad in ["0", "-1", "1.5", "\"x\""] {
            let line =
                format!(r#"{{"ts":1,"task":"a","invocation":"i","duration_us":5,"count":{bad}}}"#);
            let error = ExecutionRecord::parse(&line).unwrap_err().to_string();
            assert!(error.contains("`count`"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_steps_wait_for_its_instance_is_a_typed_field_and_round_trips() {
        let line = r#"{"ts":1,"task":"a","invocation":"i","duration_us":5,"ready_wait_us":1200}"#;
        let record = ExecutionRecord::parse(line).unwrap();
        assert_eq!(record.ready_wait_us, Some(1200));
        assert!(record.extra.is_empty(), "not left among the unknown fields");
        let again = ExecutionRecord::parse(&record.to_json().to_string()).unwrap();
        assert_eq!(again, record);
        let bad = r#"{"ts":1,"task":"a","invocation":"i","duration_us":5,"ready_wait_us":-1}"#;
        let error = ExecutionRecord::parse(bad).unwrap_err().to_string();
        assert!(error.contains("ready_wait_us"), "{error}");
    }

    #[test]
    fn round_trip_keeps_unknown_fields() {
        let line = r#"{"ts":"2023-01-30T14:10:00.5Z","task":"a","invocation":"1","duration_us":12,"parent":"0","cold":true,"status":"oom","vendor":{"x":1}}"#;
        let record = ExecutionRecord::parse(line).unwrap();
        assert_eq!(record.ts_ns, 1_675_087_800_500_000_000);
        assert_eq!(record.status, Some(Status::Oom));
        assert_eq!(record.extra["vendor"]["x"], 1);
        let mut out = Vec::new();
        record.write_line(&mut out).unwrap();
        let again = ExecutionRecord::parse(std::str::from_utf8(&out).unwrap().trim()).unwrap();
        assert_eq!(again, record);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"task":"a","invocation":"1","duration_us":1}"#,
                "field `ts` missing",
            ),
            (
                r#"{"ts":1,"task":"a","invocation":"1","duration_us":"slow"}"#,
                "field `duration_us`: expected a non-negative number, got \"slow\"",
            ),
            (
                r#"{"ts":1,"task":"a","invocation":"1","duration_us":-4}"#,
                "field `duration_us`: expected a non-negative number, got -4",
            ),
            (
                r#"{"ts":"yesterday","task":"a","invocation":"1","duration_us":1}"#,
                "field `ts`: expected epoch ns or RFC 3339, got \"yesterday\"",
            ),
            (
                r#"{"ts":1,"task":"a","invocation":"1","duration_us":1,"status":"meh"}"#,
                "field `status`: expected ok, error, timeout or oom, got \"meh\"",
            ),
            (r#"[1,2]"#, "not a JSON object: got an array"),
        ];
        for (line, message) in cases {
            assert_eq!(
                ExecutionRecord::parse(line).unwrap_err().to_string(),
                message
            );
        }
        assert!(matches!(
            ExecutionRecord::parse("{\"ts\":1,"),
            Err(RecordError::NotJson(_))
        ));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any line, even a near-miss of a valid record, parses or errs without panicking.
        #[test]
        fn parse_never_panics(line in ".{0,200}") {
            let _ = ExecutionRecord::parse(&line);
        }

        #[test]
        fn near_valid_records_never_panic(
            ts in prop_oneof![Just("1".to_owned()), Just("\"2026-01-01T00:00:00Z\"".to_owned()), ".{0,12}"],
            duration in prop_oneof![Just("5".to_owned()), Just("-1".to_owned()), Just("1e400".to_owned()), ".{0,8}"],
            extra in ".{0,20}",
        ) {
            let line = format!(r#"{{"ts":{ts},"task":"a","invocation":"1","duration_us":{duration}{extra}}}"#);
            let _ = ExecutionRecord::parse(&line);
        }
    }
}
