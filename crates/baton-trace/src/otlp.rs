//! OTLP/JSON spans (the OpenTelemetry collector's file exporter, or an
//! `ExportTraceServiceRequest` body): one JSON document per line, or one document for the
//! whole file. Service = the resource's `service.name`; operation = the span's `name`.
//! Spans become invocations exactly as span CSV rows do (see [`crate::spans`]).

use crate::report::ReadReport;
use crate::schema::ExecutionRecord;
use crate::spans::{SpanOptions, SpanTable};
use serde_json::Value;
use std::io::BufRead;

fn nanos(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn service_name(resource: &Value) -> Option<&str> {
    resource
        .get("attributes")?
        .as_array()?
        .iter()
        .find(|a| a.get("key").and_then(Value::as_str) == Some("service.name"))?
        .get("value")?
        .get("stringValue")?
        .as_str()
}

/// Adds the spans of one OTLP document; returns how many spans it held and how many were
/// skipped, with the reason of the first skip.
fn add_document(document: &Value, table: &mut SpanTable) -> (u64, u64, Option<String>) {
    let (mut seen, mut skipped, mut first_reason) = (0, 0, None);
    let empty = Vec::new();
    let resources = document
        .get("resourceSpans")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for resource_spans in resources {
        let service = resource_spans
            .get("resource")
            .and_then(service_name)
            .unwrap_or("unknown_service");
        let scopes = resource_spans
            .get("scopeSpans")
            .or_else(|| resource_spans.get("instrumentationLibrarySpans"))
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        for scope in scopes {
            for span in scope
                .get("spans")
                .and_then(Value::as_array)
                .unwrap_or(&empty)
            {
                seen += 1;
                let text = |key| span.get(key).and_then(Value::as_str).unwrap_or("");
                let (trace, id) = (text("traceId"), text("spanId"));
                let start = nanos(span.get("startTimeUnixNano"));
                let end = nanos(span.get("endTimeUnixNano"));
                let reason = match (trace.is_empty() || id.is_empty(), start, end) {
                    (true, _, _) => Some("span without traceId or spanId"),
                    (_, Some(s), Some(e)) if e >= s => None,
                    _ => Some("span without valid startTimeUnixNano/endTimeUnixNano"),
                };
                if let Some(reason) = reason {
                    skipped += 1;
                    first_reason.get_or_insert_with(|| reason.to_owned());
                    continue;
                }
                let (start, end) = (start.unwrap_or(0), end.unwrap_or(0));
                let parent = Some(text("parentSpanId")).filter(|p| !p.is_empty());
                table.push(
                    trace,
                    id,
                    parent,
                    service,
                    text("name"),
                    start,
                    (end - start) / 1_000,
                );
            }
        }
    }
    (seen, skipped, first_reason)
}

/// Reads OTLP/JSON from `reader` (named `source` in messages) into invocation records.
pub fn read_otlp(
    source: &str,
    mut reader: impl BufRead,
    options: SpanOptions,
    report: &mut ReadReport,
) -> Vec<ExecutionRecord> {
    let mut table = SpanTable::default();
    let mut text = String::new();
    if let Err(error) = reader.read_to_string(&mut text) {
        report.broken.push(format!(
            "{source}: stream broke off: {error}; what came before was kept"
        ));
    }
    let mut add = |report: &mut ReadReport, line: u64, document: &Value| {
        let (seen, skipped, reason) = add_document(document, &mut table);
        report.lines += 1;
        if seen == 0 {
            report.skip(
                source,
                line,
                "no resourceSpans[].scopeSpans[].spans[] in this document",
            );
        } else if skipped > 0 {
            report.skipped += skipped;
            report.notes.push(format!(
                "{source}:{line}: {skipped} of {seen} spans skipped ({})",
                reason.unwrap_or_default()
            ));
        }
    };
    // One document for the whole file, or one per line.
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(document) if !text.trim().is_empty() => add(report, 1, &document),
        _ => {
            for (index, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(line) {
                    Ok(document) => add(report, index as u64 + 1, &document),
                    Err(error) => {
                        report.lines += 1;
                        report.skip(source, index as u64 + 1, format!("not JSON: {error}"));
                    }
                }
            }
        }
    }
    table.into_records(source, options, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, id: &str, parent: &str, name: &str, start: u64, end: u64) -> String {
        format!(
            r#"{{"traceId":"{trace}","spanId":"{id}","parentSpanId":"{parent}","name":"{name}","startTimeUnixNano":"{start}","endTimeUnixNano":"{end}"}}"#
        )
    }

    fn document(service: &str, spans: &[String]) -> String {
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{service}"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            spans.join(",")
        )
    }

    #[test]
    fn documents_per_line_become_invocations() {
        let log = [
            document(
                "frontend",
                &[
                    span("t1", "a", "", "GET /", 1_000, 9_000),
                    span("t1", "b", "a", "client", 2_000, 8_000),
                ],
            ),
            "garbage".to_owned(),
            document(
                "cart",
                &[
                    span("t1", "c", "b", "GetCart", 3_000, 7_000),
                    span("t1", "", "b", "x", 1, 2),
                ],
            ),
        ]
        .join("\n");
        let mut report = ReadReport::default();
        let records = read_otlp(
            "o.json",
            log.as_bytes(),
            SpanOptions::default(),
            &mut report,
        );
        let tasks: Vec<(&str, Option<&str>)> = records
            .iter()
            .map(|r| (r.task.as_str(), r.parent.as_deref()))
            .collect();
        assert_eq!(tasks, [("frontend", None), ("cart", Some("a"))]);
        assert_eq!(records[1].duration_us, 4);
        assert_eq!(report.errors[0].line, 2);
        assert!(report
            .notes
            .iter()
            .any(|n| n.contains("1 of 2 spans skipped")));
    }

    #[test]
    fn one_document_for_the_whole_file() {
        let log = format!(
            "\n{}\n",
            document("svc", &[span("t", "s", "", "op", 5, 10_005)])
        );
        let mut report = ReadReport::default();
        let records = read_otlp(
            "o.json",
            log.as_bytes(),
            SpanOptions {
                operation_tasks: true,
            },
            &mut report,
        );
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].task, "svc:op");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text, and near-valid documents with broken fields, read without panicking.
        #[test]
        fn arbitrary_input_never_panics(text in ".{0,300}", start in ".{0,6}", end in ".{0,6}", parent in ".{0,3}") {
            let mut report = ReadReport::default();
            let _ = read_otlp("f.json", text.as_bytes(), SpanOptions::default(), &mut report);
            let document = format!(
                r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"t","spanId":"s","parentSpanId":"{parent}","startTimeUnixNano":"{start}","endTimeUnixNano":"{end}"}}]}}]}}]}}"#
            );
            let mut report = ReadReport::default();
            let _ = read_otlp("f.json", document.as_bytes(), SpanOptions::default(), &mut report);
        }
    }
}
