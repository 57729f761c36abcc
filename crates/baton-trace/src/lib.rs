//! baton's log formats: the execution-log schema v1 (JSONL) and readers that turn foreign
//! traces (span CSV) into the same records, then into requests for the learner.
//!
//! Input is never trusted: a bad line is reported with its file and number and skipped, a
//! stream that breaks off (truncated `.xz`) keeps what came before it, and the
//! [`report::ReadReport`] says what was lost.
#![deny(missing_docs)]

pub mod alibaba;
pub mod azure;
pub mod jsonl;
pub mod open;
pub mod otlp;
pub mod otlp_proto;
pub mod render;
pub mod report;
pub mod requests;
pub mod schema;
pub mod spans;
pub mod summary;

use report::ReadReport;
use schema::ExecutionRecord;
use std::path::Path;

/// The formats [`read_log`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Schema v1 JSONL.
    Jsonl,
    /// Span CSV (TrainTicket / Nezha layout).
    Spans(spans::SpanOptions),
    /// OTLP/JSON spans.
    Otlp(spans::SpanOptions),
    /// Alibaba microservice call graphs (2021 or 2022 layout).
    Alibaba,
}

/// A format told from a file's first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedFormat {
    /// The first line is a JSON object.
    Jsonl,
    /// The first line is a span CSV header.
    Spans,
    /// Azure Functions 2019 invocation counts (a `HashFunction` column and minute columns).
    Azure2019,
    /// Azure Functions 2021 invocations (`app,func,end_timestamp,duration`).
    Azure2021,
    /// OTLP/JSON (a JSON object with `resourceSpans`).
    Otlp,
    /// Alibaba call graphs (a header with `traceid`, `rpcid` or `rpc_id`, `um`, `dm`).
    Alibaba,
}

/// Why a format could not be told.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The file could not be opened or read.
    #[error(transparent)]
    Open(#[from] open::OpenError),
    /// The first line is neither.
    #[error(
        "{path}: cannot tell the log format from its first line {line:?}; name it with --format"
    )]
    Unknown {
        /// The file.
        path: String,
        /// The start of its first line.
        line: String,
    },
}

/// Tells the format of `path` from its first non-empty line (after decompression).
pub fn detect_format(path: &Path) -> Result<DetectedFormat, DetectError> {
    // A pipe is read once: the peek keeps what it read for the reader that follows.
    let line = open::peek_first_line(path)?;
    let first = line.trim();
    if first.starts_with('{') && first.contains("\"resourceSpans\"") {
        Ok(DetectedFormat::Otlp)
    } else if first.starts_with('{') {
        Ok(DetectedFormat::Jsonl)
    } else if first.contains("traceid") && (first.contains("rpcid") || first.contains("rpc_id")) {
        Ok(DetectedFormat::Alibaba)
    } else if first.contains("TraceID") && first.contains("SpanID") {
        Ok(DetectedFormat::Spans)
    } else if first.contains("HashFunction") {
        Ok(DetectedFormat::Azure2019)
    } else if first.starts_with("app,func,end_timestamp,duration") {
        Ok(DetectedFormat::Azure2021)
    } else {
        Err(DetectError::Unknown {
            path: path.display().to_string(),
            line: first.chars().take(60).collect(),
        })
    }
}

/// Reads one log file (plain, `.gz` or `.xz`) into records; problems go to `report`.
/// A file that cannot be opened is reported as broken and yields nothing.
pub fn read_log(path: &Path, format: LogFormat, report: &mut ReadReport) -> Vec<ExecutionRecord> {
    let mut records = Vec::new();
    read_log_each(path, format, report, |r| records.push(r));
    records
}

/// [`read_log`], handing each record to `each` as it is read: an execution log (JSONL) is
/// never held whole in memory.
pub fn read_log_each(
    path: &Path,
    format: LogFormat,
    report: &mut ReadReport,
    each: impl FnMut(ExecutionRecord),
) {
    let source = path.display().to_string();
    let reader = match open::open_log(path) {
        Ok(reader) => reader,
        Err(error) => {
            report.broken.push(error.to_string());
            return;
        }
    };
    match format {
        LogFormat::Jsonl => {
            let part = jsonl::read_jsonl(&source, reader, each);
            report.merge(part);
        }
        LogFormat::Spans(options) => {
            spans::read_spans(&source, reader, options, report)
                .into_iter()
                .for_each(each);
        }
        LogFormat::Otlp(options) => {
            otlp::read_otlp(&source, reader, options, report)
                .into_iter()
                .for_each(each);
        }
        LogFormat::Alibaba => alibaba::read_alibaba(&source, reader, report)
            .into_iter()
            .for_each(each),
    }
}
