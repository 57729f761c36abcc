//! Reading schema-v1 JSONL logs: bad lines are reported with their number and skipped; a
//! stream that breaks off keeps what came before it.

use crate::report::{for_each_line, ReadReport};
use crate::schema::ExecutionRecord;
use std::io::BufRead;
use std::ops::ControlFlow;

/// Reads every record of `reader` (named `source` in messages), calling `sink` for each.
pub fn read_jsonl(
    source: &str,
    reader: impl BufRead,
    mut sink: impl FnMut(ExecutionRecord),
) -> ReadReport {
    let mut report = ReadReport::default();
    for_each_line(source, reader, &mut report, |report, line_no, line| {
        match ExecutionRecord::parse(line.trim()) {
            Ok(record) => {
                report.records += 1;
                sink(record);
            }
            Err(error) => report.skip(source, line_no, error.to_string()),
        }
        ControlFlow::Continue(())
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_lines_are_skipped_with_their_numbers() {
        let log = concat!(
            r#"{"ts":1,"task":"a","invocation":"1","duration_us":5}"#,
            "\n",
            "{broken\n",
            "\n",
            r#"{"ts":2,"task":"b","invocation":"2","duration_us":"x"}"#,
            "\n",
            r#"{"ts":3,"task":"c","invocation":"3","duration_us":5,"new_field":[1]}"#,
            "\n",
        );
        let mut tasks = Vec::new();
        let report = read_jsonl("log.jsonl", log.as_bytes(), |r| tasks.push(r.task));
        assert_eq!(tasks, ["a", "c"]);
        assert_eq!(report.lines, 5);
        assert_eq!(report.skipped, 2);
        assert_eq!(report.errors[0].line, 2);
        assert_eq!(report.errors[1].line, 4);
        assert!(report.errors[1]
            .to_string()
            .starts_with("log.jsonl:4: field `duration_us`"));
    }
}
