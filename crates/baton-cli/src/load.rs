//! Loading logs and saved states for the commands, and parsing their time and duration
//! arguments.

use anyhow::{bail, Context, Result};
use baton_core::snapshot::SnapshotParts;
use baton_core::{Request, Tdg, TdgConfig, TdgSnapshot};
use baton_trace::report::ReadReport;
use baton_trace::requests::{RequestGrouper, TimeWindow};
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
    /// Azure Functions 2019 per-minute invocation counts (durations and memory beside).
    Azure2019,
    /// Azure Functions 2021 per-invocation trace (app,func,end_timestamp,duration).
    Azure2021,
    /// OpenTelemetry OTLP/JSON spans.
    Otlp,
    /// Alibaba microservice call graphs (2021 or 2022 layout).
    Alibaba,
}

/// A trace to read, as `sim` and `load` take it.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceInput {
    /// The trace (plain, .gz or .xz).
    #[arg(long, required = true, num_args = 1..)]
    pub trace: Vec<PathBuf>,
    /// Trace format (auto: told by the first line).
    #[arg(long, value_enum, default_value = "auto")]
    pub format: FormatArg,
    /// Tasks are service:operation instead of service (span logs).
    #[arg(long)]
    pub operations: bool,
    #[command(flatten)]
    pub trace_args: TraceArgs,
}

impl TraceInput {
    /// Reads the trace into requests (see [`load`]).
    pub fn load(&self, config: TdgConfig) -> Result<Loaded> {
        load(
            &self.trace,
            self.format,
            self.operations,
            &self.trace_args,
            config,
        )
    }
}

/// Options of traces that are not execution logs (Azure).
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Azure 2019 durations file (default: beside the invocations file, same prefix).
    #[arg(long)]
    pub durations: Option<PathBuf>,
    /// Azure 2019 memory file (default: beside the invocations file, same prefix).
    #[arg(long)]
    pub memory: Option<PathBuf>,
    /// Seed of the expansion of per-minute counts into arrivals (Azure 2019).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where a minute's invocations arrive inside it (Azure 2019): `random` (uniformly,
    /// seeded) or `even` (evenly spread).
    #[arg(long, default_value_t)]
    pub arrivals: baton_trace::azure::Arrivals,
    /// Where a trace names no callers (Azure): mine them within each app
    /// (`baton_core::mining`): an invocation becomes the callee of the latest earlier one of
    /// another function of its app within this many ms that a mined dependency links to it.
    #[arg(long)]
    pub infer_chains_ms: Option<f64>,
}

/// The format of `paths`, detected from the first when `auto`.
pub fn concrete_format(format: FormatArg, paths: &[PathBuf]) -> Result<FormatArg> {
    if format != FormatArg::Auto {
        return Ok(format);
    }
    let Some(first) = paths.first() else {
        bail!("no log given");
    };
    Ok(match baton_trace::detect_format(first)? {
        baton_trace::DetectedFormat::Jsonl => FormatArg::Jsonl,
        baton_trace::DetectedFormat::Spans => FormatArg::Spans,
        baton_trace::DetectedFormat::Azure2019 => FormatArg::Azure2019,
        baton_trace::DetectedFormat::Azure2021 => FormatArg::Azure2021,
        baton_trace::DetectedFormat::Otlp => FormatArg::Otlp,
        baton_trace::DetectedFormat::Alibaba => FormatArg::Alibaba,
    })
}

/// The record reader for `format` (execution logs and spans only).
pub fn resolve_format(
    format: FormatArg,
    operation_tasks: bool,
    paths: &[PathBuf],
) -> Result<LogFormat> {
    match concrete_format(format, paths)? {
        FormatArg::Jsonl => Ok(LogFormat::Jsonl),
        FormatArg::Spans => Ok(LogFormat::Spans(SpanOptions { operation_tasks })),
        FormatArg::Otlp => Ok(LogFormat::Otlp(SpanOptions { operation_tasks })),
        FormatArg::Alibaba => Ok(LogFormat::Alibaba),
        other => bail!("{other:?} traces are not execution logs; learn, eval and sim read them directly, convert does not"),
    }
}

/// A trace turned into requests, with what reading met.
pub struct Loaded {
    /// The learner, with every task interned (nothing learned yet).
    pub tdg: Tdg,
    /// Every request, sorted by start.
    pub requests: Vec<Request>,
    /// Per-function memory found in the trace, MiB.
    pub memory_mib: Vec<(baton_core::TaskId, u64)>,
    /// What reading met.
    pub read: ReadReport,
    /// Requests whose parent links were repaired.
    pub missing_parents: u64,
    /// Records dropped in parent cycles, and requests dropped whole for having no root.
    pub cycles: u64,
    /// Requests dropped whole: every record in a parent cycle.
    pub rootless: u64,
}

impl Loaded {
    /// Start of the first request, ns (the day `HH:MM` times refer to).
    pub fn day_ns(&self) -> Option<u64> {
        self.requests
            .first()
            .and_then(|r| r.start_us())
            .map(|us| us * 1_000)
    }

    /// The requests starting inside `window` (a contiguous run: requests are sorted).
    pub fn in_window(&self, window: TimeWindow) -> &[Request] {
        let start = |r: &Request| r.start_us().unwrap_or(0).saturating_mul(1_000);
        let from = self
            .requests
            .partition_point(|r| window.since_ns.is_some_and(|s| start(r) < s));
        let to = self
            .requests
            .partition_point(|r| window.until_ns.is_none_or(|u| start(r) < u));
        &self.requests[from..to.max(from)]
    }
}

/// Per task, the largest `mem_peak_mib` its invocations recorded (an instance must hold
/// its largest run), for the tasks that recorded any.
fn peak_memory(requests: &[Request]) -> Vec<(baton_core::TaskId, u64)> {
    let mut peaks: std::collections::BTreeMap<baton_core::TaskId, u64> = Default::default();
    for invocation in requests.iter().flat_map(|r| r.invocations()) {
        if let Some(mib) = invocation.usage.mem_peak_mib.filter(|&mib| mib > 0) {
            let peak = peaks.entry(invocation.task).or_default();
            *peak = (*peak).max(mib);
        }
    }
    peaks.into_iter().collect()
}

/// Reads any supported trace into requests; prints what reading met.
pub fn load(
    paths: &[PathBuf],
    format: FormatArg,
    operation_tasks: bool,
    trace: &TraceArgs,
    config: TdgConfig,
) -> Result<Loaded> {
    let mut tdg = Tdg::new(config);
    let options = baton_trace::azure::AzureOptions {
        seed: trace.seed,
        arrivals: trace.arrivals,
        infer_chains_us: trace.infer_chains_ms.map(|ms| (ms * 1000.0) as u64),
        ..Default::default()
    };
    let mut read = ReadReport::default();
    // Told once: `auto` reads the first line of the first file.
    let format = concrete_format(format, paths)?;
    let loaded = match format {
        FormatArg::Azure2019 | FormatArg::Azure2021 => {
            let azure2019 = format == FormatArg::Azure2019;
            let mut requests = Vec::new();
            let mut memory_mib = Vec::new();
            for path in paths {
                let trace = if azure2019 {
                    baton_trace::azure::read_azure2019(
                        path,
                        trace.durations.as_deref(),
                        trace.memory.as_deref(),
                        &options,
                        &mut tdg,
                        &mut read,
                    )
                } else {
                    baton_trace::azure::read_azure2021(path, &options, &mut tdg, &mut read)
                }?;
                requests.extend(trace.requests);
                memory_mib.extend(trace.memory_mib);
            }
            requests.sort_by_key(|r| r.start_us());
            Loaded {
                tdg,
                requests,
                memory_mib,
                read,
                missing_parents: 0,
                cycles: 0,
                rootless: 0,
            }
        }
        _ => {
            let format = resolve_format(format, operation_tasks, paths)?;
            // Records are grouped as they are read: none is kept whole.
            let mut grouper = RequestGrouper::new();
            for path in paths {
                baton_trace::read_log_each(path, format, &mut read, |record| {
                    grouper.push(&record, &mut tdg)
                });
            }
            let (requests, grouped) = grouper.finish(TimeWindow::default());
            let memory_mib = peak_memory(&requests);
            Loaded {
                tdg,
                requests,
                memory_mib,
                read,
                missing_parents: grouped.missing_parents,
                cycles: grouped.cycles,
                rootless: grouped.rootless,
            }
        }
    };
    print_read_report(&loaded.read);
    if loaded.cycles > 0 {
        eprintln!(
            "  dropped {} records caught in parent cycles ({} requests had no root left)",
            loaded.cycles, loaded.rootless
        );
    }
    if loaded.requests.is_empty() {
        bail!("no usable records in {}", describe_paths(paths));
    }
    Ok(loaded)
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

/// Learns `requests` into `tdg`.
pub fn learn(tdg: &mut Tdg, requests: &[Request]) {
    for request in requests {
        tdg.observe_request(request);
    }
}

/// Everything `learn` produced from logs.
pub struct Learned {
    /// The learner.
    pub tdg: Tdg,
    /// What reading met.
    pub read: ReadReport,
    /// Requests learned.
    pub requests: u64,
    /// Requests left out by the window.
    pub outside_window: u64,
    /// Records whose parent is not in the log.
    pub missing_parents: u64,
    /// Time spent learning (not reading), seconds.
    pub learn_seconds: f64,
}

/// Reads, groups and learns logs in the window `since`..`until`.
pub fn learn_logs(
    paths: &[PathBuf],
    format: FormatArg,
    operation_tasks: bool,
    trace: &TraceArgs,
    since: Option<&str>,
    until: Option<&str>,
    config: TdgConfig,
) -> Result<Learned> {
    let loaded = load(paths, format, operation_tasks, trace, config)?;
    let window = window(since, until, loaded.day_ns())?;
    let selected = loaded.in_window(window);
    let mut tdg = loaded.tdg.clone();
    let started = std::time::Instant::now();
    learn(&mut tdg, selected);
    let learn_seconds = started.elapsed().as_secs_f64();
    Ok(Learned {
        learn_seconds,
        requests: selected.len() as u64,
        outside_window: (loaded.requests.len() - selected.len()) as u64,
        missing_parents: loaded.missing_parents,
        read: loaded.read,
        tdg,
    })
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
