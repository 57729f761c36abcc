//! baton's log formats: the execution-log schema v1 (JSONL) and readers that turn foreign
//! traces (span CSV) into the same records, then into requests for the learner.
//!
//! Input is never trusted: a bad line is reported with its file and number and skipped, a
//! stream that breaks off (truncated `.xz`) keeps what came before it, and the
//! [`report::ReadReport`] says what was lost.
#![deny(missing_docs)]

pub mod jsonl;
pub mod open;
pub mod report;
pub mod requests;
pub mod schema;
pub mod spans;

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
}

/// Reads one log file (plain, `.gz` or `.xz`) into records; problems go to `report`.
/// A file that cannot be opened is reported as broken and yields nothing.
pub fn read_log(path: &Path, format: LogFormat, report: &mut ReadReport) -> Vec<ExecutionRecord> {
    let source = path.display().to_string();
    let reader = match open::open_log(path) {
        Ok(reader) => reader,
        Err(error) => {
            report.broken.push(error.to_string());
            return Vec::new();
        }
    };
    match format {
        LogFormat::Jsonl => {
            let mut records = Vec::new();
            let part = jsonl::read_jsonl(&source, reader, |r| records.push(r));
            report.merge(part);
            records
        }
        LogFormat::Spans(options) => spans::read_spans(&source, reader, options, report),
    }
}
