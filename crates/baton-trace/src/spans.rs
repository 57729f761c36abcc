//! Span CSV logs (`TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,
//! EndTimeUnixNano,Duration`, as in the TrainTicket/Nezha releases) turned into invocations.
//!
//! A span is an invocation when it is a root (`ParentID` = `root`, or a parent missing from
//! the log) or when its service differs from its parent span's: spans inside one service
//! (handler, client call) belong to the invocation that contains them. The caller of an
//! invocation is the invocation containing its parent span. Service = pod name without its
//! last two `-` segments (the Kubernetes replica-set and pod hashes). Columns are found by
//! header name, so their order does not matter.

use crate::report::{for_each_csv_row, ReadReport};
use crate::schema::ExecutionRecord;
use rustc_hash::FxHashMap;
use std::io::BufRead;
use std::ops::ControlFlow;

/// How spans become tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanOptions {
    /// Task = `service:operation` of the invocation span instead of the service alone.
    pub operation_tasks: bool,
}

const COLUMNS: [&str; 8] = [
    "TraceID",
    "SpanID",
    "ParentID",
    "PodName",
    "OperationName",
    "StartTimeUnixNano",
    "EndTimeUnixNano",
    "Duration",
];

/// The service of a Kubernetes pod name: without the last two `-` segments when it has them.
pub fn service_of_pod(pod: &str) -> &str {
    let mut cut = pod;
    for _ in 0..2 {
        match cut.rfind('-') {
            Some(i) if i > 0 => cut = &cut[..i],
            _ => return pod,
        }
    }
    cut
}

#[derive(Debug, Default)]
struct Names {
    index: FxHashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), id);
        id
    }
}

#[derive(Debug, Clone, Copy)]
struct Span {
    trace: u32,
    id: u32,
    parent: Option<u32>,
    service: u32,
    operation: u32,
    start_ns: u64,
    duration_us: u64,
}

const NONE: u32 = u32::MAX;

/// Spans collected from any source (CSV rows, OTLP documents), resolved into invocations
/// by [`SpanTable::into_records`].
#[derive(Debug, Default)]
pub struct SpanTable {
    traces: Names,
    span_ids: Names,
    services: Names,
    operations: Names,
    spans: Vec<Span>,
}

impl SpanTable {
    /// Adds one span; `parent` is `None` for a root.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        trace: &str,
        span: &str,
        parent: Option<&str>,
        service: &str,
        operation: &str,
        start_ns: u64,
        duration_us: u64,
    ) {
        let parent = parent.map(|p| self.span_ids.intern(p));
        let span = Span {
            trace: self.traces.intern(trace),
            id: self.span_ids.intern(span),
            parent,
            service: self.services.intern(service),
            operation: self.operations.intern(operation),
            start_ns,
            duration_us,
        };
        self.spans.push(span);
    }

    /// Number of spans added.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether no span was added.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// Reads span rows from `reader` (named `source` in messages) and returns the invocations
/// as execution records, in start order. Bad rows are skipped and reported.
pub fn read_spans(
    source: &str,
    reader: impl BufRead,
    options: SpanOptions,
    report: &mut ReadReport,
) -> Vec<ExecutionRecord> {
    let mut table = SpanTable::default();
    let mut columns: Option<[usize; 8]> = None;
    let mut header_error = None;
    for_each_csv_row(source, reader, report, |report, line_no, fields| {
        let Some(columns) = columns else {
            let mut found = [0usize; 8];
            for (slot, name) in found.iter_mut().zip(COLUMNS) {
                match fields.iter().position(|f| f.trim() == name) {
                    Some(i) => *slot = i,
                    None => {
                        header_error = Some(format!(
                            "{source}:{line_no}: header lacks column `{name}` (need {})",
                            COLUMNS.join(",")
                        ));
                        return ControlFlow::Break(());
                    }
                }
            }
            columns = Some(found);
            return ControlFlow::Continue(());
        };
        if fields.len() <= columns.iter().copied().max().unwrap_or(0) {
            report.skip(
                source,
                line_no,
                format!("{} fields, expected {}", fields.len(), COLUMNS.len()),
            );
            return ControlFlow::Continue(());
        }
        let field = |i: usize| fields[columns[i]].trim();
        let number = |i: usize| -> Result<u64, String> {
            field(i).parse::<u64>().map_err(|_| {
                format!(
                    "column `{}`: expected a non-negative integer, got {:?}",
                    COLUMNS[i],
                    field(i)
                )
            })
        };
        let (start_ns, duration_us) = match (number(5), number(7)) {
            (Ok(start), Ok(duration)) => (start, duration),
            (Err(message), _) | (_, Err(message)) => {
                report.skip(source, line_no, message);
                return ControlFlow::Continue(());
            }
        };
        if field(0).is_empty() || field(1).is_empty() || field(3).is_empty() {
            report.skip(source, line_no, "empty TraceID, SpanID or PodName");
            return ControlFlow::Continue(());
        }
        let parent = match field(2) {
            "" | "root" => None,
            id => Some(id),
        };
        table.push(
            field(0),
            field(1),
            parent,
            service_of_pod(field(3)),
            field(4),
            start_ns,
            duration_us,
        );
        ControlFlow::Continue(())
    });
    if let Some(error) = header_error {
        report.broken.push(error);
        return Vec::new();
    }
    table.into_records(source, options, report)
}

impl SpanTable {
    /// Resolves the spans into invocations (see the module docs), in start order; repeated
    /// span ids and missing parents are counted in `report`.
    pub fn into_records(
        self,
        source: &str,
        options: SpanOptions,
        report: &mut ReadReport,
    ) -> Vec<ExecutionRecord> {
        let SpanTable {
            traces,
            span_ids,
            services,
            operations,
            spans,
        } = self;

        // Resolve span ids to rows; a repeated span id keeps its first row.
        let mut row_of_id = vec![NONE; span_ids.names.len()];
        let mut duplicates = 0u64;
        let mut keep = vec![true; spans.len()];
        for (row, span) in spans.iter().enumerate() {
            if row_of_id[span.id as usize] == NONE {
                row_of_id[span.id as usize] = row as u32;
            } else {
                keep[row] = false;
                duplicates += 1;
            }
        }
        if duplicates > 0 {
            report.skipped += duplicates;
            report.notes.push(format!(
                "{source}: {duplicates} rows repeat an earlier span id and were skipped"
            ));
        }
        let parent_row = |span: &Span| -> Option<u32> {
            span.parent
                .map(|p| row_of_id[p as usize])
                .filter(|&r| r != NONE)
        };
        let n = spans.len();
        let mut orphans = 0u64;
        let is_invocation: Vec<bool> = spans
            .iter()
            .map(|span| match parent_row(span) {
                None => {
                    orphans += u64::from(span.parent.is_some());
                    true
                }
                Some(p) => spans[p as usize].service != span.service,
            })
            .collect();
        if orphans > 0 {
            report.notes.push(format!(
            "{source}: {orphans} spans name a parent missing from the log; each starts a request of its own"
        ));
        }
        // The invocation containing each span: itself, or its parent's (walk up, bounded).
        let mut invocation_of = vec![NONE; n];
        for row in 0..n {
            let mut cursor = row as u32;
            let mut steps = 0;
            while !is_invocation[cursor as usize] && steps < 10_000 {
                if invocation_of[cursor as usize] != NONE {
                    break;
                }
                match parent_row(&spans[cursor as usize]) {
                    Some(p) => cursor = p,
                    None => break,
                }
                steps += 1;
            }
            invocation_of[row] = if is_invocation[cursor as usize] {
                cursor
            } else {
                invocation_of[cursor as usize]
            };
        }
        let mut records: Vec<ExecutionRecord> = Vec::new();
        for (row, span) in spans.iter().enumerate() {
            if !keep[row] || !is_invocation[row] {
                continue;
            }
            let caller = parent_row(span)
                .map(|p| invocation_of[p as usize])
                .filter(|&i| i != NONE);
            let service = &services.names[span.service as usize];
            let operation = &operations.names[span.operation as usize];
            let task = if options.operation_tasks {
                format!("{service}:{operation}")
            } else {
                service.clone()
            };
            records.push(ExecutionRecord {
                ts_ns: span.start_ns,
                task,
                invocation: span_ids.names[span.id as usize].clone(),
                duration_us: span.duration_us,
                parent: caller.map(|c| span_ids.names[spans[c as usize].id as usize].clone()),
                trace: Some(traces.names[span.trace as usize].clone()),
                operation: Some(operation.clone()),
                ..ExecutionRecord::default()
            });
        }
        records.sort_by_key(|r| r.ts_ns);
        report.records += records.len() as u64;
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n";

    #[test]
    fn spans_within_a_service_fold_into_its_invocation() {
        let log = format!(
            "{HEADER}\
             t1,g1,root,ts-gateway-service-6f6cfc45b-d9pnv,/*,1000,9000,8\n\
             t1,g2,g1,ts-gateway-service-6f6cfc45b-d9pnv,HTTP GET,1100,8000,6\n\
             t1,o1,g2,ts-order-service-5b67c48447-mv5hb,\"/api/v1/order, \"\"by\"\"\n id\",2000,7000,5\n\
             t1,o2,o1,ts-order-service-5b67c48447-mv5hb,HTTP POST,2500,6000,3\n\
             t1,s1,o2,ts-seat-service-1-2,/seat,3000,4000,1\n"
        );
        let mut report = ReadReport::default();
        let records = read_spans("s.csv", log.as_bytes(), SpanOptions::default(), &mut report);
        let tasks: Vec<(&str, Option<&str>)> = records
            .iter()
            .map(|r| (r.task.as_str(), r.parent.as_deref()))
            .collect();
        assert_eq!(
            tasks,
            [
                ("ts-gateway-service", None),
                ("ts-order-service", Some("g1")),
                ("ts-seat-service", Some("o1")),
            ]
        );
        assert_eq!(
            records[1].operation.as_deref(),
            Some("/api/v1/order, \"by\"\n id"),
            "a quoted operation keeps its comma, quotes and line break"
        );
        assert_eq!(report.records, 3);
        assert_eq!(report.skipped, 0);
    }

    #[test]
    fn bad_rows_are_reported_and_skipped() {
        let log = format!(
            "{HEADER}\
             t1,a,root,svc-x-1-2,\"/*\n\",100,200,1\n\
             t1,b,a,svc-y-1-2,/y,notanumber,200,1\n\
             t1,c,a,svc-y-1-2\n\
             t1,a,root,svc-x-1-2,/*,100,200,1\n\
             t2,d,missing,svc-z-1-2,/z,300,400,1\n"
        );
        let mut report = ReadReport::default();
        let records = read_spans("s.csv", log.as_bytes(), SpanOptions::default(), &mut report);
        assert_eq!(records.len(), 2, "a and the orphan d");
        assert_eq!(report.skipped, 3);
        // Line numbers count the line break inside the first row's quoted operation.
        assert_eq!(report.errors[0].line, 4);
        assert!(report.errors[0].message.contains("StartTimeUnixNano"));
        assert_eq!(report.errors[1].line, 5);
        assert_eq!(report.notes.len(), 2, "duplicate and orphan notes");
    }

    #[test]
    fn a_header_without_required_columns_is_refused() {
        let mut report = ReadReport::default();
        let records = read_spans(
            "s.csv",
            "a,b,c\n1,2,3\n".as_bytes(),
            SpanOptions::default(),
            &mut report,
        );
        assert!(records.is_empty());
        assert!(report.broken[0].contains("`TraceID`"));
    }

    #[test]
    fn pod_names_lose_their_hashes() {
        assert_eq!(
            service_of_pod("ts-order-service-5b67c48447-mv5hb"),
            "ts-order-service"
        );
        assert_eq!(service_of_pod("redis"), "redis");
        assert_eq!(service_of_pod("a-b"), "a-b");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary rows under a valid header: read or skipped, never a panic, and every
        /// record produced has a parent that is itself a record or none.
        #[test]
        fn arbitrary_rows_never_panic(rows in proptest::collection::vec(
            (0u8..4, 0u8..12, prop_oneof![Just("root".to_owned()), (0u8..12).prop_map(|p| p.to_string()), ".{0,4}"],
             0u8..4, ".{0,6}", ".{0,6}", ".{0,4}"),
            0..40,
        )) {
            let mut log = String::from(
                "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n",
            );
            for (trace, span, parent, pod, op, start, duration) in rows {
                log.push_str(&format!("t{trace},{span},{parent},svc{pod}-a-b,{op},{start},0,{duration}\n"));
            }
            let mut report = ReadReport::default();
            let records = read_spans("fuzz.csv", log.as_bytes(), SpanOptions::default(), &mut report);
            for record in &records {
                if let Some(parent) = &record.parent {
                    prop_assert!(records.iter().any(|r| &r.invocation == parent));
                }
            }
        }
    }
}
