//! The report commands: `learn`, `predict` (`predict.rs`), `graph`, `eval`, `convert`. Each
//! prints a table for people or, with `--json`, one JSON document for programs.

mod predict;
pub use predict::{predict, PredictArgs};

use crate::load::{self, FormatArg};
use anyhow::{bail, Context, Result};
use baton_core::context::{context_kind_by_name, CONTEXT_KIND_NAMES};
use baton_core::eval::{evaluate, EvalMode, EvalReport};
use baton_core::predict::{PredictContext, PredictOptions};
use baton_core::profile::NeedQuantile;
use baton_core::{Prev, TdgConfig, TdgSnapshot};
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::PathBuf;

/// Where the graph comes from: a saved state or logs (`predict`).
#[derive(Debug, Args)]
pub struct Source {
    /// A state saved by `baton learn --save`.
    #[arg(long, conflicts_with_all = ["log", "server"])]
    state: Option<PathBuf>,
    /// Ask a running server instead: http://HOST[:PORT] or HOST:PORT (with neither --state
    /// nor --log, BATON_SERVER when set).
    #[arg(long, conflicts_with = "log")]
    server: Option<String>,
    /// Bearer token for the server (env BATON_TOKEN).
    #[arg(long, env = "BATON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Logs to learn from instead (plain, .gz or .xz).
    #[arg(long, num_args = 1..)]
    log: Vec<PathBuf>,
    /// Log format (auto: told by the first line).
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    window: WindowArgs,
}

/// How a graph is learned.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Tasks are service:operation instead of service (span logs).
    #[arg(long)]
    operations: bool,
    /// Half-life of the decay (e.g. 30m, 1h, off).
    #[arg(long, default_value = "1h")]
    half_life: String,
    /// Context kinds in backoff order, comma-separated, or `none`. Known: route+call-order,
    /// call-order, route, route+operation+call-order, operation+call-order,
    /// grand-caller+call-order, grand-caller.
    #[arg(long, default_value = "route+call-order,call-order,route")]
    contexts: String,
    /// Events a context needs before it is used.
    #[arg(long, default_value_t = 3.0)]
    min_context_count: f64,
    #[command(flatten)]
    trace: load::TraceArgs,
}

/// Which requests are learned.
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// Learn requests starting at or after this time (RFC 3339, epoch, or HH:MM UTC on the
    /// log's first day).
    #[arg(long)]
    since: Option<String>,
    /// Learn requests starting before this time.
    #[arg(long)]
    until: Option<String>,
}

impl ModelArgs {
    fn config(&self) -> Result<TdgConfig> {
        let contexts = if self.contexts == "none" {
            Vec::new()
        } else {
            self.contexts
                .split(',')
                .map(|name| {
                    context_kind_by_name(name.trim()).with_context(|| {
                        format!(
                            "unknown context `{name}`; known: {}",
                            CONTEXT_KIND_NAMES.join(", ")
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok(TdgConfig {
            half_life_us: load::parse_half_life(&self.half_life)?,
            min_context_count: self.min_context_count,
            contexts,
            ..TdgConfig::default()
        })
    }
}

fn snapshot_of(
    state: Option<&PathBuf>,
    logs: &[PathBuf],
    format: FormatArg,
    model: &ModelArgs,
    window: &WindowArgs,
) -> Result<TdgSnapshot> {
    match (state, logs.is_empty()) {
        (Some(path), _) => load::load_state(path),
        (None, false) => {
            let mut learned = load::learn_logs(
                logs,
                format,
                model.operations,
                &model.trace,
                window.since.as_deref(),
                window.until.as_deref(),
                model.config()?,
            )?;
            Ok(learned.tdg.snapshot())
        }
        (None, true) => bail!("give --state FILE or --log FILE..."),
    }
}

#[derive(Debug, Args)]
pub struct LearnArgs {
    /// Logs to learn from (plain, .gz or .xz).
    #[arg(required = true)]
    logs: Vec<PathBuf>,
    /// Log format (auto: told by the first line).
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    window: WindowArgs,
    /// Save the learned state here for `predict` and `graph`.
    #[arg(long)]
    save: Option<PathBuf>,
    /// How many transitions to list.
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn learn(args: LearnArgs) -> Result<()> {
    let mut learned = load::learn_logs(
        &args.logs,
        args.format,
        args.model.operations,
        &args.model.trace,
        args.window.since.as_deref(),
        args.window.until.as_deref(),
        args.model.config()?,
    )?;
    let snapshot = learned.tdg.snapshot();
    if let Some(path) = &args.save {
        load::save_state(&snapshot, path)?;
        eprintln!("saved state to {}", path.display());
    }
    let mut edges: Vec<_> = snapshot
        .edges()
        .map(|(from, target)| {
            let weight = snapshot.first_order(from).count * target.probability;
            (from, target, weight)
        })
        .collect();
    edges.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut tasks: Vec<_> = (0..snapshot.n_tasks() as u32)
        .map(baton_core::TaskId)
        .map(|t| (t, snapshot.first_order(t)))
        .collect();
    tasks.sort_by(|a, b| b.1.count.total_cmp(&a.1.count));
    let summary = json!({
        "lines": learned.read.lines,
        "records": learned.read.records,
        "skipped": learned.read.skipped,
        "broken": learned.read.broken,
        "requests": learned.requests,
        "outside_window": learned.outside_window,
        "missing_parents": learned.missing_parents,
        "tasks": snapshot.n_tasks(),
        "edges": edges.len(),
        "events": learned.tdg.n_events(),
        "learn_seconds": learned.learn_seconds,
        "events_per_second": learned.tdg.n_events() as f64 / learned.learn_seconds.max(1e-9),
        "top_transitions": edges.iter().take(args.top).map(|(from, t, weight)| json!({
            "from": snapshot.task_name(*from),
            "to": snapshot.task_name(t.task),
            "probability": t.probability,
            "weight": weight,
            "delay_mean_us": t.delay_mean_us,
        })).collect::<Vec<_>>(),
        "stop_probability": tasks.iter().take(args.top).map(|(t, d)| json!({
            "task": snapshot.task_name(*t),
            "stop": d.stop_probability,
            "weight": d.count,
        })).collect::<Vec<_>>(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "learned {} requests: {} tasks, {} edges, {} events in {:.1} ms ({:.2} M events/s, usage and entry sets included; {} requests outside the window, {} missing parents)",
        learned.requests,
        snapshot.n_tasks(),
        edges.len(),
        learned.tdg.n_events(),
        learned.learn_seconds * 1e3,
        learned.tdg.n_events() as f64 / learned.learn_seconds.max(1e-9) / 1e6,
        learned.outside_window,
        learned.missing_parents
    );
    println!("\ntop transitions (decayed weight)");
    println!(
        "{:>10}  {:>6}  {:>10}  from -> to",
        "weight", "p", "delay ms"
    );
    for (from, target, weight) in edges.iter().take(args.top) {
        println!(
            "{:>10.1}  {:>6.3}  {:>10.2}  {} -> {}",
            weight,
            target.probability,
            target.delay_mean_us as f64 / 1000.0,
            snapshot.task_name(*from),
            snapshot.task_name(target.task)
        );
    }
    println!("\nstop probability (busiest callers)");
    for (task, dist) in tasks.iter().take(args.top) {
        println!(
            "{:>10.1}  {:>6.3}  {}",
            dist.count,
            dist.stop_probability,
            snapshot.task_name(*task)
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum QuantileArg {
    P50,
    P95,
    P99,
    Max,
}

impl From<QuantileArg> for NeedQuantile {
    fn from(q: QuantileArg) -> NeedQuantile {
        match q {
            QuantileArg::P50 => NeedQuantile::P50,
            QuantileArg::P95 => NeedQuantile::P95,
            QuantileArg::P99 => NeedQuantile::P99,
            QuantileArg::Max => NeedQuantile::Max,
        }
    }
}

/// The server to ask: `--server`, else BATON_SERVER when no state or log is given.
pub(super) fn server_of(
    server: &Option<String>,
    state: &Option<PathBuf>,
    log: &[PathBuf],
) -> Option<String> {
    server.clone().or_else(|| {
        (state.is_none() && log.is_empty())
            .then(|| std::env::var("BATON_SERVER").ok())
            .flatten()
            .filter(|s| !s.trim().is_empty())
    })
}

/// `text` percent-encoded for a query string (all but unreserved characters).
pub(crate) fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Logs to convert (plain, .gz or .xz).
    #[arg(required = true)]
    logs: Vec<PathBuf>,
    /// Log format (auto: told by the first line).
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// Tasks are service:operation instead of service (span logs).
    #[arg(long)]
    operations: bool,
    /// Write here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn convert(args: ConvertArgs) -> Result<()> {
    let format = load::resolve_format(args.format, args.operations, &args.logs)?;
    let (records, read) = load::read_logs(&args.logs, format);
    load::print_read_report(&read);
    let mut out: Box<dyn std::io::Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for record in &records {
        record
            .write_line(&mut out)
            .context("cannot write the converted log")?;
    }
    out.flush().context("cannot write the converted log")?;
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Json,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// A state saved by `baton learn --save`.
    #[arg(long, conflicts_with = "log")]
    state: Option<PathBuf>,
    /// Logs to learn from instead (plain, .gz or .xz).
    #[arg(long, num_args = 1..)]
    log: Vec<PathBuf>,
    /// Format of the logs (auto: told by the first line).
    #[arg(long, value_enum, default_value = "auto")]
    log_format: FormatArg,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    window: WindowArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "dot")]
    format: GraphFormat,
    /// Leave out edges below this probability.
    #[arg(long, default_value_t = 0.0)]
    min_probability: f64,
    /// Ask a running server for its graph instead: http://HOST[:PORT] or HOST:PORT (with
    /// neither --state nor --log, BATON_SERVER when set).
    #[arg(long, conflicts_with_all = ["state", "log"])]
    server: Option<String>,
    /// Bearer token for --server (env BATON_TOKEN).
    #[arg(long, env = "BATON_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub fn graph(args: GraphArgs) -> Result<()> {
    if let Some(server) = &server_of(&args.server, &args.state, &args.log) {
        let client = crate::server::connect(server, args.token.clone())?;
        let format = match args.format {
            GraphFormat::Json => "json",
            GraphFormat::Dot => "dot",
        };
        let response = client.get(&format!(
            "/v1/graph?format={format}&min_probability={}",
            args.min_probability
        ))?;
        let response = crate::server::checked(response, &format!("the graph of {server}"))?;
        print!("{}", response.text());
        return Ok(());
    }
    let snapshot = snapshot_of(
        args.state.as_ref(),
        &args.log,
        args.log_format,
        &args.model,
        &args.window,
    )?;
    match args.format {
        GraphFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&baton_trace::render::graph_json(
                &snapshot,
                args.min_probability
            ))?
        ),
        GraphFormat::Dot => print!(
            "{}",
            baton_trace::render::graph_dot(&snapshot, args.min_probability)
        ),
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The log (plain, .gz or .xz).
    #[arg(long, required = true, num_args = 1..)]
    log: Vec<PathBuf>,
    /// Log format (auto: told by the first line).
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    #[command(flatten)]
    model: ModelArgs,
    /// Start of the training window.
    #[arg(long)]
    train_since: Option<String>,
    /// End of the training window = start of the test window.
    #[arg(long)]
    train_until: String,
    /// Start of the test window (default: the end of the training window).
    #[arg(long)]
    test_since: Option<String>,
    /// End of the test window (default: end of the log).
    #[arg(long)]
    test_until: Option<String>,
    /// Chains per prediction at entry.
    #[arg(short, long, default_value_t = 5)]
    n: usize,
    /// Most steps per chain.
    #[arg(long, default_value_t = 5)]
    depth: usize,
    /// Keep learning during the test window (each request once it has ended), as baton
    /// does live; the default freezes the graph after training.
    #[arg(long)]
    online: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let loaded = load::load(
        &args.log,
        args.format,
        args.model.operations,
        &args.model.trace,
        args.model.config()?,
    )?;
    let day = loaded.day_ns();
    let train_window = load::window(args.train_since.as_deref(), Some(&args.train_until), day)?;
    let test_since = args.test_since.as_deref().unwrap_or(&args.train_until);
    let test_window = load::window(Some(test_since), args.test_until.as_deref(), day)?;
    if test_window.since_ns < train_window.until_ns {
        bail!("the test window must start at or after the end of the training window");
    }
    let (train, test) = (
        loaded.in_window(train_window),
        loaded.in_window(test_window),
    );
    if train.is_empty() || test.is_empty() {
        bail!(
            "empty window: {} training and {} test requests",
            train.len(),
            test.len()
        );
    }
    let mut tdg = loaded.tdg.clone();
    let options = PredictOptions {
        n: args.n,
        max_depth: args.depth,
        ..PredictOptions::default()
    };
    let mode = if args.online {
        EvalMode::Online
    } else {
        EvalMode::Offline
    };
    let report = evaluate(&mut tdg, train, test, &options, mode);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "train_requests": train.len(),
                "test_requests": report.n_requests,
                "report": report,
            }))?
        );
        return Ok(());
    }
    print_eval(&report, train.len(), tdg.tasks().len(), mode);
    Ok(())
}

fn print_eval(report: &EvalReport, n_train: usize, n_tasks: usize, mode: EvalMode) {
    println!(
        "trained on {} requests ({} tasks); tested on {} requests, {} calls; {}",
        n_train,
        n_tasks,
        report.n_requests,
        report.n_calls,
        match mode {
            EvalMode::Offline => "graph frozen after training",
            EvalMode::Online => "graph learning on during the test (each request once ended)",
        }
    );
    println!(
        "\n{:<12} {:>7} {:>7} {:>9} {:>9} {:>11} {:>11} {:>7} {:>6}",
        "predictor",
        "next@1",
        "next@3",
        "inner@1",
        "inner@3",
        "set recall",
        "set precis",
        "set F1",
        "size"
    );
    let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    for row in &report.rows {
        println!(
            "{:<12} {:>7} {:>7} {:>9} {:>9} {:>11.3} {:>11.3} {:>7.3} {:>6.1}",
            row.name,
            cell(row.top1),
            cell(row.top3),
            cell(row.top1_below_route),
            cell(row.top3_below_route),
            row.recall,
            row.precision,
            row.f1,
            row.mean_set_size
        );
    }
    println!(
        "\ninner = calls below the route (all but each entry's first call, which defines the route)"
    );
    println!(
        "tree-global threshold {:.2} (best F1 on the training window); tree announces each route's set with the best expected F1",
        report.tree_threshold
    );
    let total: u64 = report.context_use.iter().map(|(_, n)| n).sum();
    let used: Vec<String> = report
        .context_use
        .iter()
        .map(|(name, n)| format!("{name} {:.1}%", 100.0 * *n as f64 / total.max(1) as f64))
        .collect();
    println!("chain next-callee contexts used: {}", used.join(", "));
}
