//! OTLP/HTTP protobuf for traces: the messages of `opentelemetry/proto/collector/trace/v1`
//! that carry spans (field numbers as in opentelemetry-proto 1.x), derived with `prost`.
//! Execution records become spans ([`encode_records`], what `baton serve --otlp-endpoint`
//! sends), and a request's spans become records through the same path as OTLP/JSON
//! ([`read_otlp_proto`]): the protobuf is turned into the JSON mapping and read by
//! [`crate::otlp`].

// The messages' fields are the proto's own, named and numbered as there.
#![allow(missing_docs)]

use crate::report::ReadReport;
use crate::schema::{ExecutionRecord, Status};
use crate::spans::SpanOptions;
use prost::Message;
use serde_json::{json, Value};

/// `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `Resource`.
#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`.
#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

/// `InstrumentationScope`.
#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `Span` (the fields baton reads or writes).
#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    /// `SpanKind`: 2 is SERVER.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<SpanStatus>,
}

/// `Status`: code 1 is OK, 2 is ERROR.
#[derive(Clone, PartialEq, Message)]
pub struct SpanStatus {
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(int32, tag = "3")]
    pub code: i32,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue` (the scalar cases).
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
    pub value: Option<any_value::Value>,
}

/// `AnyValue`'s cases.
pub mod any_value {
    /// The value.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A string.
        #[prost(string, tag = "1")]
        StringValue(String),
        /// A boolean.
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        /// An integer.
        #[prost(int64, tag = "3")]
        IntValue(i64),
        /// A float.
        #[prost(double, tag = "4")]
        DoubleValue(f64),
    }
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// `text` as `len` bytes: its hex when it is exactly that, else a stable hash of it (ids
/// from foreign logs need not be hex). Zero bytes are never returned (an all-zero id is
/// invalid in OTLP).
fn id_bytes(text: &str, len: usize) -> Vec<u8> {
    let hex = text.len() == 2 * len
        && text.bytes().all(|b| b.is_ascii_hexdigit())
        && text.bytes().any(|b| b != b'0');
    if hex {
        return (0..len)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
    }
    // FNV-1a, spread over `len` bytes.
    let mut out = Vec::with_capacity(len);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    while out.len() < len {
        for b in text.bytes().chain([out.len() as u8]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        out.extend_from_slice(&hash.to_be_bytes());
    }
    out.truncate(len);
    if out.iter().all(|b| *b == 0) {
        out[len - 1] = 1;
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One span per record, under one resource per function (`service.name` the function,
/// `service.namespace` = `namespace`), as OpenTelemetry's FaaS conventions have it (and as
/// baton reads foreign spans: a service is a task): the span's name is the task, its ids the record's trace, invocation and parent, its
/// attributes `faas.name`, `faas.coldstart` and baton's own (`baton.cold_start_us`,
/// `baton.warmth`, `baton.tier`, `baton.chain`), its status ERROR when the step failed.
pub fn encode_records(records: &[ExecutionRecord], namespace: &str) -> Vec<u8> {
    use any_value::Value as V;
    let span = |r: &ExecutionRecord| {
        let mut attributes = vec![attribute("faas.name", V::StringValue(r.task.clone()))];
        if let Some(cold) = r.cold {
            attributes.push(attribute("faas.coldstart", V::BoolValue(cold)));
        }
        if let Some(us) = r.cold_start_us {
            attributes.push(attribute(
                "baton.cold_start_us",
                V::IntValue(i64::try_from(us).unwrap_or(i64::MAX)),
            ));
        }
        for key in ["warmth", "tier"] {
            if let Some(text) = r.extra.get(key).and_then(|v| v.as_str()) {
                attributes.push(attribute(
                    &format!("baton.{key}"),
                    V::StringValue(text.into()),
                ));
            }
        }
        if let Some(chain) = &r.chain {
            attributes.push(attribute("baton.chain", V::StringValue(chain.clone())));
        }
        let failed = r.status.is_some_and(|s| s != Status::Ok);
        Span {
            trace_id: id_bytes(r.trace.as_deref().unwrap_or(&r.invocation), 16),
            span_id: id_bytes(&r.invocation, 8),
            parent_span_id: r
                .parent
                .as_deref()
                .map_or_else(Vec::new, |p| id_bytes(p, 8)),
            name: r.task.clone(),
            kind: 2,
            start_time_unix_nano: r.ts_ns,
            end_time_unix_nano: r.ts_ns.saturating_add(r.duration_us.saturating_mul(1_000)),
            attributes,
            status: Some(SpanStatus {
                message: if failed {
                    r.extra
                        .get("error")
                        .and_then(|e| e.as_str())
                        .unwrap_or("failed")
                        .to_owned()
                } else {
                    String::new()
                },
                code: if failed { 2 } else { 1 },
            }),
        }
    };
    let mut by_task: Vec<(&str, Vec<Span>)> = Vec::new();
    for r in records {
        match by_task.iter_mut().find(|(task, _)| *task == r.task) {
            Some((_, spans)) => spans.push(span(r)),
            None => by_task.push((&r.task, vec![span(r)])),
        }
    }
    let resource_spans = by_task
        .into_iter()
        .map(|(task, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", V::StringValue(task.into())),
                    attribute("service.namespace", V::StringValue(namespace.into())),
                ],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "baton".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

/// The JSON mapping of a decoded request (ids in hex, times as strings), as OTLP/JSON
/// writes it.
fn to_json(request: &ExportTraceServiceRequest) -> Value {
    use any_value::Value as V;
    let value = |v: &Option<AnyValue>| match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(V::StringValue(s)) => json!({ "stringValue": s }),
        Some(V::BoolValue(b)) => json!({ "boolValue": b }),
        Some(V::IntValue(i)) => json!({ "intValue": i.to_string() }),
        Some(V::DoubleValue(d)) => json!({ "doubleValue": d }),
        None => json!({}),
    };
    let attributes = |attributes: &[KeyValue]| -> Vec<Value> {
        attributes
            .iter()
            .map(|a| json!({ "key": a.key, "value": value(&a.value) }))
            .collect()
    };
    let resource_spans: Vec<Value> = request
        .resource_spans
        .iter()
        .map(|rs| {
            let scopes: Vec<Value> = rs
                .scope_spans
                .iter()
                .map(|ss| {
                    let spans: Vec<Value> = ss
                        .spans
                        .iter()
                        .map(|s| {
                            json!({
                                "traceId": hex(&s.trace_id),
                                "spanId": hex(&s.span_id),
                                "parentSpanId": hex(&s.parent_span_id),
                                "name": s.name,
                                "kind": s.kind,
                                "startTimeUnixNano": s.start_time_unix_nano.to_string(),
                                "endTimeUnixNano": s.end_time_unix_nano.to_string(),
                                "attributes": attributes(&s.attributes),
                            })
                        })
                        .collect();
                    json!({ "spans": spans })
                })
                .collect();
            json!({
                "resource": { "attributes": attributes(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes)) },
                "scopeSpans": scopes,
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

/// Reads an OTLP/HTTP protobuf `ExportTraceServiceRequest` (named `source` in messages)
/// into invocation records; a body that does not decode is one skipped line, named.
pub fn read_otlp_proto(
    source: &str,
    body: &[u8],
    options: SpanOptions,
    report: &mut ReadReport,
) -> Vec<ExecutionRecord> {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            let document = to_json(&request).to_string();
            crate::otlp::read_otlp(source, document.as_bytes(), options, report)
        }
        Err(error) => {
            report.lines += 1;
            report.skip(
                source,
                1,
                format!("not an OTLP ExportTraceServiceRequest (protobuf): {error}"),
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(task: &str, invocation: &str, parent: Option<&str>, ts_ns: u64) -> ExecutionRecord {
        ExecutionRecord {
            ts_ns,
            task: task.into(),
            invocation: invocation.into(),
            duration_us: 250,
            parent: parent.map(str::to_owned),
            trace: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            cold: Some(parent.is_none()),
            status: Some(Status::Ok),
            ..ExecutionRecord::default()
        }
    }

    #[test]
    fn records_become_spans_and_spans_become_the_same_calls() {
        let records = vec![
            record(
                "validate",
                "00f067aa0ba902b7",
                None,
                1_700_000_000_000_000_000,
            ),
            record(
                "price",
                "00f067aa0ba902b8",
                Some("00f067aa0ba902b7"),
                1_700_000_000_000_300_000,
            ),
        ];
        let body = encode_records(&records, "shop");
        let request = ExportTraceServiceRequest::decode(&body[..]).unwrap();
        assert_eq!(request.resource_spans.len(), 2, "a resource per function");
        let price = &request.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(price.name, "price");
        assert_eq!(hex(&price.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(
            price.end_time_unix_nano - price.start_time_unix_nano,
            250_000
        );
        let mut report = ReadReport::default();
        let back = read_otlp_proto("body", &body, SpanOptions::default(), &mut report);
        assert_eq!(back.len(), 2, "{report:?}");
        let price = back.iter().find(|r| r.parent.is_some()).unwrap();
        let validate = back.iter().find(|r| r.parent.is_none()).unwrap();
        assert_eq!(price.parent.as_deref(), Some(validate.invocation.as_str()));
        assert_eq!(
            price.trace.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(validate.task.starts_with("validate"), "{}", validate.task);
        assert!(price.task.starts_with("price"), "{}", price.task);
    }

    #[test]
    fn a_body_that_is_not_protobuf_is_reported_not_a_panic() {
        let mut report = ReadReport::default();
        let records = read_otlp_proto(
            "junk",
            b"\xff\xff\xff\xff",
            SpanOptions::default(),
            &mut report,
        );
        assert!(records.is_empty());
        assert_eq!(report.skipped, 1);
        assert!(format!("{report:?}").contains("ExportTraceServiceRequest"));
    }

    #[test]
    fn ids_that_are_not_hex_get_stable_nonzero_bytes() {
        assert_eq!(
            id_bytes("00f067aa0ba902b7", 8),
            vec![0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        let a = id_bytes("r1.0", 8);
        assert_eq!(a, id_bytes("r1.0", 8));
        assert_ne!(a, id_bytes("r1.1", 8));
        assert_eq!(id_bytes("x", 16).len(), 16);
        assert_ne!(id_bytes("0000000000000000", 8), vec![0; 8]);
    }
}
