//! What reading a log met: lines, records, and every skipped line with its number and why.

use serde::Serialize;
use std::fmt;
use std::io::BufRead;
use std::ops::ControlFlow;

/// How many problems are kept verbatim; the rest are only counted.
pub const MAX_KEPT_ERRORS: usize = 50;

/// One skipped line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// The file.
    pub source: String,
    /// 1-based line number.
    pub line: u64,
    /// Why it was skipped.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.source, self.line, self.message)
    }
}

/// The outcome of reading one or more logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadReport {
    /// Lines read (header included).
    pub lines: u64,
    /// Records produced.
    pub records: u64,
    /// Lines skipped.
    pub skipped: u64,
    /// The first [`MAX_KEPT_ERRORS`] skipped lines.
    pub errors: Vec<LineError>,
    /// A stream that broke off (truncated or corrupt compression, I/O error): where and why.
    /// Everything before it was kept.
    pub broken: Vec<String>,
    /// Notes about records kept with a repair (e.g. a missing parent).
    pub notes: Vec<String>,
}

impl ReadReport {
    /// Records a skipped line.
    pub fn skip(&mut self, source: &str, line: u64, message: impl Into<String>) {
        self.skipped += 1;
        if self.errors.len() < MAX_KEPT_ERRORS {
            self.errors.push(LineError {
                source: source.to_owned(),
                line,
                message: message.into(),
            });
        }
    }

    /// Adds another report's counts and problems to this one.
    pub fn merge(&mut self, other: ReadReport) {
        self.lines += other.lines;
        self.records += other.records;
        self.skipped += other.skipped;
        let room = MAX_KEPT_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
        self.broken.extend(other.broken);
        self.notes.extend(other.notes);
    }
}

/// Calls `visit(report, line_no, line)` for every non-empty line of `reader` (line ending
/// removed), counting lines in `report`, skipping invalid UTF-8 with its line number, and
/// recording a stream that breaks off (truncated compression, I/O error) with the last good
/// line. `visit` returns `ControlFlow::Break(())` to stop reading.
pub fn for_each_line(
    source: &str,
    mut reader: impl BufRead,
    report: &mut ReadReport,
    mut visit: impl FnMut(&mut ReadReport, u64, &str) -> ControlFlow<()>,
) {
    let mut buffer = Vec::new();
    let mut line_no = 0u64;
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                report.broken.push(format!(
                    "{source}: stream broke off after line {line_no}: {error}"
                ));
                return;
            }
        }
        line_no += 1;
        report.lines += 1;
        let Ok(line) = std::str::from_utf8(&buffer) else {
            report.skip(source, line_no, "not valid UTF-8");
            continue;
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if visit(report, line_no, line).is_break() {
            return;
        }
    }
}
