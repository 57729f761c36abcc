//! What reading a log met: lines, records, and every skipped line with its number and why.

use serde::Serialize;
use std::fmt;
use std::io::{BufRead, Read};
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

/// Calls `visit(report, line_no, fields)` for every row of the CSV `reader` (`line_no`: the
/// line the row begins on), counting lines in `report`. Fields follow RFC 4180 (the `csv`
/// crate): a quoted field may hold commas, doubled quotes and line breaks; rows may have
/// any number of fields (each reader checks what it needs). Blank lines are skipped; a row
/// that is not valid UTF-8 is skipped with its line number; a stream that breaks off
/// (truncated compression, I/O error) is recorded with the last good line. `visit` returns
/// `ControlFlow::Break(())` to stop reading.
pub fn for_each_csv_row(
    source: &str,
    reader: impl Read,
    report: &mut ReadReport,
    mut visit: impl FnMut(&mut ReadReport, u64, &[String]) -> ControlFlow<()>,
) {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(LineCounter::new(reader));
    let mut record = csv::ByteRecord::new();
    let mut fields: Vec<String> = Vec::new();
    let mut last_line = 0u64;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                report.broken.push(format!(
                    "{source}: stream broke off after line {last_line}: {error}"
                ));
                break;
            }
        }
        let byte = record.position().map_or(0, |p| p.byte());
        let line_no = csv.get_mut().line_of(byte);
        last_line = line_no;
        fields.clear();
        let mut utf8 = true;
        for field in record.iter() {
            match std::str::from_utf8(field) {
                Ok(text) => fields.push(text.to_owned()),
                Err(_) => {
                    utf8 = false;
                    break;
                }
            }
        }
        if !utf8 {
            report.skip(source, line_no, "not valid UTF-8");
            continue;
        }
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if visit(report, line_no, &fields).is_break() {
            break;
        }
    }
    report.lines += csv.get_ref().lines_read();
}

/// A reader that notes where its line breaks are, so that a CSV row's byte offset gives its
/// line (the `csv` crate's own line count leaves blank lines out). Only the breaks past the
/// last row asked about are kept: the CSV reader's buffer's worth.
struct LineCounter<R> {
    inner: R,
    offset: u64,
    /// Line breaks not yet passed: where each begins (`\r\n` at its `\r`) and its length.
    breaks: std::collections::VecDeque<(u64, u64)>,
    /// Line breaks passed.
    passed: u64,
    /// Whether the last byte read was not a line break (a last line without one).
    open_line: bool,
    /// Whether the last byte read was `\r`.
    after_cr: bool,
}

impl<R: Read> LineCounter<R> {
    fn new(inner: R) -> LineCounter<R> {
        LineCounter {
            inner,
            offset: 0,
            breaks: std::collections::VecDeque::new(),
            passed: 0,
            open_line: false,
            after_cr: false,
        }
    }

    /// The 1-based line of the row read from byte `offset` on (asked for in increasing
    /// order). The CSV reader gives a row the offset where it began to look for it, so blank
    /// lines before the row are stepped over.
    fn line_of(&mut self, mut offset: u64) -> u64 {
        while let Some(&(at, len)) = self.breaks.front() {
            if at + len <= offset {
                self.breaks.pop_front();
                self.passed += 1;
            } else if at <= offset {
                // The row was looked for from a line break (a blank line, or the `\n` of a
                // `\r\n`): it begins after it.
                self.breaks.pop_front();
                self.passed += 1;
                offset = at + len;
            } else {
                break;
            }
        }
        self.passed + 1
    }

    /// Lines read so far (a last line without a line break counts).
    fn lines_read(&self) -> u64 {
        self.passed + self.breaks.len() as u64 + u64::from(self.open_line)
    }
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, &byte) in buf[..n].iter().enumerate() {
            let at = self.offset + i as u64;
            if byte == b'\n' {
                self.breaks
                    .push_back(if self.after_cr { (at - 1, 2) } else { (at, 1) });
            }
            self.after_cr = byte == b'\r';
        }
        if n > 0 {
            self.open_line = buf[n - 1] != b'\n';
        }
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &[u8]) -> (Vec<(u64, Vec<String>)>, ReadReport) {
        let mut report = ReadReport::default();
        let mut out = Vec::new();
        for_each_csv_row("t.csv", text, &mut report, |_, line, fields| {
            out.push((line, fields.to_vec()));
            ControlFlow::Continue(())
        });
        (out, report)
    }

    #[test]
    fn quoted_fields_hold_commas_quotes_and_line_breaks() {
        let (rows, report) = rows(b"a,b,c\n1,\"x, \"\"y\"\"\",3\n2,\"two\nlines\",4\n\n5,short\n");
        assert_eq!(
            rows,
            [
                (1, vec!["a".into(), "b".into(), "c".into()]),
                (2, vec!["1".into(), "x, \"y\"".into(), "3".into()]),
                (3, vec!["2".into(), "two\nlines".into(), "4".into()]),
                (6, vec!["5".into(), "short".into()]),
            ]
        );
        assert_eq!(report.lines, 6);
        assert!(report.errors.is_empty() && report.broken.is_empty());
        let (rows, _) = self::rows(b"a\n\"b\nc\"\nd\n");
        assert_eq!(rows[2].0, 4, "{rows:?}");
        let (rows, _) = self::rows(b"a\n\nd\n");
        assert_eq!(rows[1].0, 3, "{rows:?}");
        let (rows, report) = self::rows(b"a\r\n\r\n\r\nd\r\n\"e\r\nf\",1\r\ng");
        let lines: Vec<u64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(lines, [1, 4, 5, 7], "{rows:?}");
        assert_eq!(rows[2].1, ["e\r\nf", "1"]);
        assert_eq!(report.lines, 7, "a last line without a break counts");
    }

    #[test]
    fn a_row_that_is_not_utf8_is_skipped_with_its_line() {
        let (rows, report) = rows(b"a,b\n\xff\xfe,1\nc,d\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(report.skipped, 1);
        assert_eq!(report.errors[0].line, 2);
        assert_eq!(report.errors[0].to_string(), "t.csv:2: not valid UTF-8");
    }
}
