//! Azure Functions traces: the 2019 per-minute counts (with duration and memory
//! percentiles) and the 2021 per-invocation log, turned into requests for the learner.
//!
//! **2019.** The invocations file has one row per function and one count per minute. Both
//! layouts in circulation are read, told apart by the header: Azure's original
//! `HashOwner,HashApp,HashFunction,Trigger,<minute>...` (minutes of the day, e.g. 480–959)
//! and the re-keyed `HashFunction,HashOwner,HashApp,<n>_minute...` (n = 1–1440). Counts are
//! expanded to arrivals with a documented, seeded method ([`Arrivals`]): by default the `c`
//! arrivals of a minute are placed uniformly at random inside it, from a generator seeded
//! by (seed, function, minute), so the same seed gives the same arrivals; `Even` places
//! them at the middles of `c` equal slices of the minute instead (what trace replayers such
//! as dslab-faas and invitro also offer). Each arrival's duration is drawn from the
//! function's duration percentiles (0, 1, 25, 50, 75, 99, 100) by linear interpolation of the
//! inverse CDF; memory is the function's median allocated memory. Times are µs from the
//! start of the trace's day (1970-01-01 in RFC 3339 terms, so `--train-until 10:00` works).
//!
//! **2021.** `app,func,end_timestamp,duration`, seconds from the trace start; start = end −
//! duration.
//!
//! **Chains.** Neither trace names callers. With `infer_chains_us`, callers are mined from
//! timing within each app ([`baton_core::mining::Miner`], window mode: a trace's run times
//! are per-function means, so no nesting is asked): an arrival becomes the callee of the
//! latest earlier arrival of another function of its app within the window that a mined
//! dependency links to it (trees of at most `max_chain` calls); otherwise every arrival is
//! a request of its own.

use crate::report::{for_each_csv_row, ReadReport};
use baton_core::mining::{Miner, MinerConfig};
use baton_core::request::{Invocation, Request, Usage};
use baton_core::{TaskId, Tdg};
use rustc_hash::FxHashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where a minute's invocations of an Azure 2019 function arrive inside the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrivals {
    /// Uniformly at random (seeded).
    #[default]
    Random,
    /// `c` arrivals at the middles of `c` equal slices of the minute.
    Even,
}

impl std::fmt::Display for Arrivals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arrivals::Random => "random",
            Arrivals::Even => "even",
        })
    }
}

impl std::str::FromStr for Arrivals {
    type Err = AzureError;
    fn from_str(s: &str) -> Result<Arrivals, AzureError> {
        match s {
            "random" => Ok(Arrivals::Random),
            "even" => Ok(Arrivals::Even),
            _ => Err(AzureError::UnknownArrivals(s.to_owned())),
        }
    }
}

/// How Azure traces are expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AzureOptions {
    /// Seed of the arrival and duration draws.
    pub seed: u64,
    /// Where a minute's arrivals fall inside it (Azure 2019).
    pub arrivals: Arrivals,
    /// Chain inference window, µs (`None`: every arrival is its own request).
    pub infer_chains_us: Option<u64>,
    /// Longest inferred chain.
    pub max_chain: usize,
    /// Duration of a function without duration data, ms.
    pub default_duration_ms: u64,
}

impl Default for AzureOptions {
    fn default() -> Self {
        AzureOptions {
            seed: 42,
            arrivals: Arrivals::default(),
            infer_chains_us: None,
            max_chain: 16,
            default_duration_ms: 1_000,
        }
    }
}

/// Why an Azure trace could not be read at all.
#[derive(Debug, Error)]
pub enum AzureError {
    /// A file could not be opened.
    #[error(transparent)]
    Open(#[from] crate::open::OpenError),
    /// A header lacks what the format needs.
    #[error("{path}: {message}")]
    Header {
        /// The file.
        path: String,
        /// What is missing.
        message: String,
    },
    /// Not a way to place a minute's arrivals.
    #[error("unknown arrivals `{0}`; known: random, even")]
    UnknownArrivals(String),
}

/// Requests and per-function memory read from an Azure trace.
#[derive(Debug, Default)]
pub struct AzureTrace {
    /// Requests in start order.
    pub requests: Vec<Request>,
    /// Median allocated memory per function, MiB, where known.
    pub memory_mib: Vec<(TaskId, u64)>,
    /// Functions read.
    pub n_functions: usize,
    /// Arrivals produced.
    pub n_arrivals: u64,
}

/// xorshift64*: small, seedable, and the same on every machine.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // SplitMix64 of the seed, so nearby seeds give unrelated streams (never zero).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn hash_name(name: &str) -> u64 {
    // FNV-1a: a stable per-function seed component.
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The file beside `invocations` with the same prefix and `kind` in place of
/// `invocations` (e.g. `sample500_invocations_min480-959.csv.gz` → `sample500_durations…`).
pub fn sibling_file(invocations: &Path, kind: &str) -> Option<PathBuf> {
    let name = invocations.file_name()?.to_str()?;
    let prefix = &name[..name.find("invocations")?];
    let dir = invocations
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{prefix}{kind}")))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Reads a CSV with a header into (header, rows) through `visit`; problems go to `report`.
fn read_csv(
    path: &Path,
    report: &mut ReadReport,
    mut visit: impl FnMut(&mut ReadReport, u64, &[String], &[String]),
) -> Result<(), AzureError> {
    let reader = crate::open::open_log(path)?;
    let source = path.display().to_string();
    let mut header: Option<Vec<String>> = None;
    for_each_csv_row(&source, reader, report, |report, line_no, fields| {
        match &header {
            None => header = Some(fields.iter().map(|f| f.trim().to_owned()).collect()),
            Some(names) => visit(report, line_no, names, fields),
        }
        ControlFlow::Continue(())
    });
    if header.is_none() {
        return Err(AzureError::Header {
            path: source,
            message: "empty file".into(),
        });
    }
    Ok(())
}

fn column(names: &[String], name: &str) -> Option<usize> {
    names.iter().position(|n| n == name)
}

/// Duration percentiles (ms) at 0, 1, 25, 50, 75, 99, 100 %.
type Percentiles = [f64; 7];
const PERCENTILE_POINTS: [f64; 7] = [0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0];

fn draw_duration(percentiles: &Percentiles, u: f64) -> f64 {
    for i in 1..PERCENTILE_POINTS.len() {
        if u <= PERCENTILE_POINTS[i] {
            let (q0, q1) = (PERCENTILE_POINTS[i - 1], PERCENTILE_POINTS[i]);
            let t = (u - q0) / (q1 - q0);
            return percentiles[i - 1] + t * (percentiles[i] - percentiles[i - 1]);
        }
    }
    percentiles[6]
}

fn read_durations(
    path: &Path,
    report: &mut ReadReport,
) -> Result<FxHashMap<String, Percentiles>, AzureError> {
    let mut out = FxHashMap::default();
    let source = path.display().to_string();
    let mut checked = false;
    let names_needed = [
        "percentile_Average_0",
        "percentile_Average_1",
        "percentile_Average_25",
        "percentile_Average_50",
        "percentile_Average_75",
        "percentile_Average_99",
        "percentile_Average_100",
    ];
    let mut missing = None;
    read_csv(path, report, |report, line_no, names, fields| {
        if !checked {
            checked = true;
            if column(names, "HashFunction").is_none() {
                missing = Some("HashFunction".to_owned());
            }
            if let Some(name) = names_needed.iter().find(|n| column(names, n).is_none()) {
                missing = Some((*name).to_owned());
            }
        }
        if missing.is_some() {
            return;
        }
        let get = |name: &str| {
            column(names, name)
                .and_then(|i| fields.get(i))
                .map(|f| f.trim())
        };
        let mut percentiles = [0.0; 7];
        for (slot, name) in percentiles.iter_mut().zip(names_needed) {
            match get(name)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
            {
                Some(v) => *slot = v,
                None => {
                    report.skip(
                        &source,
                        line_no,
                        format!("column `{name}`: not a non-negative number"),
                    );
                    return;
                }
            }
        }
        // Percentiles must not decrease; repair by running maximum.
        for i in 1..7 {
            percentiles[i] = percentiles[i].max(percentiles[i - 1]);
        }
        if let Some(function) = get("HashFunction") {
            out.insert(function.to_owned(), percentiles);
        }
    })?;
    if let Some(name) = missing {
        return Err(AzureError::Header {
            path: source,
            message: format!("durations header lacks `{name}`"),
        });
    }
    Ok(out)
}

fn read_memory(path: &Path, report: &mut ReadReport) -> Result<FxHashMap<String, f64>, AzureError> {
    let mut out = FxHashMap::default();
    let source = path.display().to_string();
    read_csv(path, report, |report, line_no, names, fields| {
        // Per function; in the re-keyed layout the app hash is the function hash.
        let key = column(names, "HashFunction").or_else(|| column(names, "HashApp"));
        let value = column(names, "AverageAllocatedMb_pct50")
            .or_else(|| column(names, "AverageAllocatedMb"));
        let (Some(key), Some(value)) = (key, value) else {
            report.skip(
                &source,
                line_no,
                "memory header lacks HashFunction/HashApp or AverageAllocatedMb",
            );
            return;
        };
        match (
            fields.get(key),
            fields.get(value).and_then(|v| v.trim().parse::<f64>().ok()),
        ) {
            (Some(function), Some(mb)) if mb.is_finite() && mb > 0.0 => {
                out.insert(function.trim().to_owned(), mb);
            }
            _ => report.skip(&source, line_no, "memory row without a positive value"),
        }
    })?;
    Ok(out)
}

/// One arrival before grouping.
#[derive(Debug, Clone, Copy)]
struct Raw {
    app: u32,
    task: TaskId,
    start_us: u64,
    duration_us: u64,
}

/// Groups raw arrivals into requests (see the module docs on chains).
fn into_requests(mut raws: Vec<Raw>, options: &AzureOptions, tdg: &mut Tdg) -> Vec<Request> {
    raws.sort_by_key(|r| (r.start_us, r.app, r.task));
    let mut labels: FxHashMap<TaskId, baton_core::LabelId> = FxHashMap::default();
    let mut miner = options.infer_chains_us.map(|window| {
        let mut config = MinerConfig::new(window, false);
        config.max_request = options.max_chain.max(1);
        Miner::new(config)
    });
    let lone: Vec<Request> = raws
        .iter()
        .map(|raw| {
            if let Some(miner) = miner.as_mut() {
                // Callers are sought inside the app (group 0 is "no app").
                miner.set_group(raw.task, raw.app.saturating_add(1));
            }
            let label = *labels.entry(raw.task).or_insert_with(|| {
                let name = tdg.tasks().name(raw.task.0).to_owned();
                tdg.intern_label(&name)
            });
            Request::build(vec![Invocation {
                task: raw.task,
                label,
                parent: None,
                start_us: raw.start_us,
                waited_us: 0,
                usage: Usage {
                    wall_us: raw.duration_us,
                    ..Usage::default()
                },
            }])
            .0
        })
        .collect();
    match miner.as_mut() {
        Some(miner) => miner.regroup(lone),
        None => lone,
    }
}

/// Per-minute counts above this are refused as corrupt (the busiest Azure function of 2019
/// saw well under a million a minute).
pub const MAX_COUNT_PER_MINUTE: u64 = 10_000_000;

/// Where the invocations file keeps things: the function column, the app column if any,
/// and each minute column with its minute of the day.
type InvocationsLayout = (usize, Option<usize>, Vec<(usize, u64)>);

/// Reads an Azure Functions 2019 trace. `durations` and `memory` default to the files
/// beside `invocations` with the same prefix; without durations every arrival takes
/// `options.default_duration_ms`, noted in the report.
pub fn read_azure2019(
    invocations: &Path,
    durations: Option<&Path>,
    memory: Option<&Path>,
    options: &AzureOptions,
    tdg: &mut Tdg,
    report: &mut ReadReport,
) -> Result<AzureTrace, AzureError> {
    let durations_path = durations
        .map(Path::to_owned)
        .or_else(|| sibling_file(invocations, "durations"));
    let memory_path = memory
        .map(Path::to_owned)
        .or_else(|| sibling_file(invocations, "memory"));
    let duration_table = match &durations_path {
        Some(path) => read_durations(path, report)?,
        None => {
            report.notes.push(format!(
                "{}: no durations file found beside it; every arrival takes {} ms",
                invocations.display(),
                options.default_duration_ms
            ));
            FxHashMap::default()
        }
    };
    let memory_table = match &memory_path {
        Some(path) => read_memory(path, report)?,
        None => FxHashMap::default(),
    };
    let source = invocations.display().to_string();
    let mut raws: Vec<Raw> = Vec::new();
    let mut apps: FxHashMap<String, u32> = FxHashMap::default();
    let mut memory_mib: Vec<(TaskId, u64)> = Vec::new();
    let mut layout: Option<InvocationsLayout> = None;
    let mut header_error = None;
    let mut no_duration = 0u64;
    let mut n_functions = 0usize;
    read_csv(invocations, report, |report, line_no, names, fields| {
        if header_error.is_some() {
            return;
        }
        let (function_col, app_col, minutes) = layout.get_or_insert_with(|| {
            let minutes: Vec<(usize, u64)> = names
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    if let Ok(minute) = name.parse::<u64>() {
                        Some((i, minute))
                    } else {
                        let n = name.strip_suffix("_minute")?.parse::<u64>().ok()?;
                        Some((i, n.checked_sub(1)?))
                    }
                })
                .collect();
            let function_col = column(names, "HashFunction").unwrap_or(usize::MAX);
            (function_col, column(names, "HashApp"), minutes)
        });
        if *function_col == usize::MAX || minutes.is_empty() {
            header_error = Some(
                "invocations header needs HashFunction and minute columns (`480` or `1_minute`)"
                    .to_owned(),
            );
            return;
        }
        let Some(function) = fields.get(*function_col).map(|f| f.trim()) else {
            report.skip(&source, line_no, "row shorter than the header");
            return;
        };
        if function.is_empty() {
            report.skip(&source, line_no, "empty HashFunction");
            return;
        }
        let app_name = app_col
            .and_then(|c| fields.get(c))
            .map_or(function, |a| a.trim());
        let next_app = apps.len() as u32;
        let app = *apps.entry(app_name.to_owned()).or_insert(next_app);
        let task = tdg.intern_task(function);
        n_functions += 1;
        if let Some(mb) = memory_table.get(function) {
            memory_mib.push((task, mb.ceil() as u64));
        }
        let percentiles = duration_table.get(function);
        if percentiles.is_none() {
            no_duration += 1;
        }
        let function_seed = options.seed ^ hash_name(function);
        for &(col, minute) in minutes.iter() {
            let count = match fields.get(col).map(|f| f.trim().parse::<u64>()) {
                Some(Ok(count)) if count > MAX_COUNT_PER_MINUTE => {
                    report.skip(
                        &source,
                        line_no,
                        format!("minute column {}: {count} invocations in a minute is beyond belief (limit {MAX_COUNT_PER_MINUTE})", names[col]),
                    );
                    return;
                }
                Some(Ok(count)) => count,
                Some(Err(_)) => {
                    report.skip(
                        &source,
                        line_no,
                        format!("minute column {}: not a count", names[col]),
                    );
                    return;
                }
                None => 0,
            };
            if count == 0 {
                continue;
            }
            let mut rng = Rng::new(function_seed ^ minute.wrapping_mul(0x9E37_79B9));
            for i in 0..count {
                let within = match options.arrivals {
                    Arrivals::Random => rng.unit(),
                    Arrivals::Even => (i as f64 + 0.5) / count as f64,
                };
                let start_us = minute
                    .saturating_mul(60_000_000)
                    .saturating_add((within * 60e6) as u64);
                let duration_ms = percentiles.map_or(options.default_duration_ms as f64, |p| {
                    draw_duration(p, rng.unit())
                });
                raws.push(Raw {
                    app,
                    task,
                    start_us,
                    duration_us: (duration_ms * 1000.0).round().max(1.0) as u64,
                });
            }
        }
    })?;
    if let Some(message) = header_error {
        return Err(AzureError::Header {
            path: source,
            message,
        });
    }
    if no_duration > 0 && durations_path.is_some() {
        report.notes.push(format!(
            "{source}: {no_duration} functions have no duration row; their arrivals take {} ms",
            options.default_duration_ms
        ));
    }
    let n_arrivals = raws.len() as u64;
    report.records += n_arrivals;
    Ok(AzureTrace {
        requests: into_requests(raws, options, tdg),
        memory_mib,
        n_functions,
        n_arrivals,
    })
}

/// Reads an Azure Functions 2021 per-invocation trace (`app,func,end_timestamp,duration`).
pub fn read_azure2021(
    path: &Path,
    options: &AzureOptions,
    tdg: &mut Tdg,
    report: &mut ReadReport,
) -> Result<AzureTrace, AzureError> {
    let source = path.display().to_string();
    let mut raws = Vec::new();
    let mut apps: FxHashMap<String, u32> = FxHashMap::default();
    let mut header_error = None;
    read_csv(path, report, |report, line_no, names, fields| {
        let columns = ["app", "func", "end_timestamp", "duration"].map(|n| column(names, n));
        let [Some(app_col), Some(func_col), Some(end_col), Some(duration_col)] = columns else {
            header_error
                .get_or_insert_with(|| "header needs app,func,end_timestamp,duration".to_owned());
            return;
        };
        let text = |i: usize| fields.get(i).map_or("", |f| f.trim());
        let number = |i: usize| {
            text(i)
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let (Some(end), Some(duration)) = (number(end_col), number(duration_col)) else {
            report.skip(
                &source,
                line_no,
                "end_timestamp and duration must be non-negative seconds",
            );
            return;
        };
        if text(app_col).is_empty() || text(func_col).is_empty() {
            report.skip(&source, line_no, "empty app or func");
            return;
        }
        let next_app = apps.len() as u32;
        let app = *apps.entry(text(app_col).to_owned()).or_insert(next_app);
        let task = tdg.intern_task(&format!("{}:{}", text(app_col), text(func_col)));
        raws.push(Raw {
            app,
            task,
            start_us: ((end - duration).max(0.0) * 1e6) as u64,
            duration_us: (duration * 1e6).round().max(1.0) as u64,
        });
    })?;
    if let Some(message) = header_error {
        return Err(AzureError::Header {
            path: source,
            message,
        });
    }
    let n_arrivals = raws.len() as u64;
    report.records += n_arrivals;
    let n_functions = tdg.tasks().len();
    Ok(AzureTrace {
        requests: into_requests(raws, options, tdg),
        memory_mib: Vec::new(),
        n_functions,
        n_arrivals,
    })
}

#[cfg(test)]
mod tests;
