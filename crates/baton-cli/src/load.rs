//! Loading logs and saved states for the commands, and parsing their time and duration
//! arguments.

use anyhow::{bail, Context, Result};
use baton_core::snapshot::SnapshotParts;
use baton_core::{Request, Tdg, TdgConfig, TdgSnapshot};
use baton_trace::report::ReadReport;
use baton_trace::requests::{group_requests, GroupReport, TimeWindow};
use baton_trace::schema::{parse_rfc3339_ns, ExecutionRecord};
use baton_trace::spans::SpanOptions;
use baton_trace::LogFormat;
use clap::ValueEnum;
use std::path::{Path, PathBuf};

/// Log formats on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Told by the first line of the first log.
    Auto,
    /// Execution-log schema v1, one JSON object per line.
    Jsonl,
    /// Span CSV (TraceID,SpanID,ParentID,PodName,OperationName,...).
    Spans,
}

/// The reader for `format`, detecting it from the first log when `auto`.
pub fn resolve_format(
    format: FormatArg,
    operation_tasks: bool,
    paths: &[PathBuf],
) -> Result<LogFormat> {
    let spans = LogFormat::Spans(SpanOptions { operation_tasks });
    match format {
        FormatArg::Jsonl => Ok(LogFormat::Jsonl),
        FormatArg::Spans => Ok(spans),
        FormatArg::Auto => {
            let Some(first) = paths.first() else {
                bail!("no log given");
            };
            match baton_trace::detect_format(first)? {
                baton_trace::DetectedFormat::Jsonl => Ok(LogFormat::Jsonl),
                baton_trace::DetectedFormat::Spans => Ok(spans),
            }
        }
    }
}

/// Every record of `paths`, with what reading met.
pub fn read_logs(paths: &[PathBuf], format: LogFormat) -> (Vec<ExecutionRecord>, ReadReport) {
    let mut report = ReadReport::default();
    let mut records = Vec::new();
    for path in paths {
        records.extend(baton_trace::read_log(path, format, &mut report));
    }
    (records, report)
}

/// Prints what reading met to stderr: counts, the first bad lines, broken streams, notes.
pub fn print_read_report(report: &ReadReport) {
    eprintln!(
        "read {} lines: {} records, {} skipped",
        report.lines, report.records, report.skipped
    );
    for error in report.errors.iter().take(10) {
        eprintln!("  skipped {error}");
    }
    if report.skipped as usize > report.errors.len().min(10) {
        eprintln!(
            "  ... {} more skipped lines",
            report.skipped as usize - report.errors.len().min(10)
        );
    }
    for broken in &report.broken {
        eprintln!("  warning: {broken}; what came before was kept");
    }
    for note in &report.notes {
        eprintln!("  note: {note}");
    }
}

/// Parses a time: RFC 3339, epoch seconds or ns (by magnitude), or `HH:MM[:SS]` (UTC) on the
/// day of `day_of_ns`.
pub fn parse_time(text: &str, day_of_ns: Option<u64>) -> Result<u64> {
    if let Some(ns) = parse_rfc3339_ns(text) {
        return Ok(ns);
    }
    if let Ok(number) = text.parse::<u64>() {
        return Ok(if number < 100_000_000_000 {
            number * 1_000_000_000
        } else {
            number
        });
    }
    let parts: Vec<&str> = text.split(':').collect();
    if (2..=3).contains(&parts.len()) {
        let numbers: Result<Vec<u64>, _> = parts.iter().map(|p| p.parse::<u64>()).collect();
        if let Ok(numbers) = numbers {
            let Some(reference) = day_of_ns else {
                bail!("time `{text}` is a time of day, but there is no log to take the day from");
            };
            let (h, m, s) = (numbers[0], numbers[1], numbers.get(2).copied().unwrap_or(0));
            if h > 23 || m > 59 || s > 59 {
                bail!("time `{text}`: not a valid time of day");
            }
            let day_ns = 86_400 * 1_000_000_000;
            return Ok(reference / day_ns * day_ns + ((h * 60 + m) * 60 + s) * 1_000_000_000);
        }
    }
    bail!("time `{text}`: expected RFC 3339, epoch seconds/ns, or HH:MM[:SS]")
}

/// Parses a duration such as `90s`, `15m`, `1h`, `500ms`; `off` gives `None`.
pub fn parse_half_life(text: &str) -> Result<Option<u64>> {
    if text == "off" || text == "none" {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("duration `{text}`: no number"))?;
    let us_per_unit = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" | "" => 1e6,
        "m" | "min" => 60e6,
        "h" => 3_600e6,
        "d" => 86_400e6,
        other => bail!("duration `{text}`: unknown unit `{other}` (us, ms, s, m, h, d)"),
    };
    Ok(Some((value * us_per_unit) as u64))
}

/// A window from optional `--since`/`--until` texts.
pub fn window(
    since: Option<&str>,
    until: Option<&str>,
    day_of_ns: Option<u64>,
) -> Result<TimeWindow> {
    Ok(TimeWindow {
        since_ns: since.map(|t| parse_time(t, day_of_ns)).transpose()?,
        until_ns: until.map(|t| parse_time(t, day_of_ns)).transpose()?,
    })
}

/// The earliest timestamp of `records`.
pub fn first_ts(records: &[ExecutionRecord]) -> Option<u64> {
    records.iter().map(|r| r.ts_ns).min()
}

/// Learns `requests` into `tdg`.
pub fn learn(tdg: &mut Tdg, requests: &[Request]) {
    for request in requests {
        tdg.observe_request(request);
    }
}

/// Everything `learn` produced from logs.
pub struct Learned {
    pub tdg: Tdg,
    pub read: ReadReport,
    pub grouped: GroupReport,
}

/// Reads, groups and learns logs.
pub fn learn_logs(
    paths: &[PathBuf],
    format: FormatArg,
    operation_tasks: bool,
    since: Option<&str>,
    until: Option<&str>,
    config: TdgConfig,
) -> Result<Learned> {
    let format = resolve_format(format, operation_tasks, paths)?;
    let (records, read) = read_logs(paths, format);
    print_read_report(&read);
    if records.is_empty() {
        bail!("no usable records in {}", describe_paths(paths));
    }
    let window = window(since, until, first_ts(&records))?;
    let mut tdg = Tdg::new(config);
    let (requests, grouped) = group_requests(&records, &mut tdg, window);
    learn(&mut tdg, &requests);
    Ok(Learned { tdg, read, grouped })
}

pub fn describe_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Saves a snapshot as JSON.
pub fn save_state(snapshot: &TdgSnapshot, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create state file {}", path.display()))?;
    serde_json::to_writer(std::io::BufWriter::new(file), snapshot.parts())
        .with_context(|| format!("cannot write state file {}", path.display()))
}

/// Loads a snapshot saved by `learn --save`.
pub fn load_state(path: &Path) -> Result<TdgSnapshot> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open state file {}", path.display()))?;
    let parts: SnapshotParts = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a baton state file", path.display()))?;
    Ok(TdgSnapshot::new(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_take_the_log_day() {
        let day = parse_time("2023-01-30T11:38:52Z", None).unwrap();
        let t = parse_time("14:10", Some(day)).unwrap();
        assert_eq!(t, parse_time("2023-01-30T14:10:00Z", None).unwrap());
        assert_eq!(
            parse_time("1675087800", None).unwrap(),
            1_675_087_800_000_000_000
        );
        assert!(parse_time("25:00", Some(day)).is_err());
        assert!(parse_time("14:10", None).is_err());
        assert!(parse_time("soon", None).is_err());
    }

    #[test]
    fn half_lives_parse() {
        assert_eq!(parse_half_life("1h").unwrap(), Some(3_600_000_000));
        assert_eq!(parse_half_life("90s").unwrap(), Some(90_000_000));
        assert_eq!(parse_half_life("off").unwrap(), None);
        assert!(parse_half_life("3 weeks").is_err());
    }
}
