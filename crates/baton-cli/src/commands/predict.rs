//! `baton predict`: the most likely chains from a running task (or, with `--set`, the task
//! set of a route), from a saved state, logs, or a running server.

use super::*;
use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    source: Source,
    /// The running task.
    #[arg(long, required_unless_present = "set")]
    from: Option<String>,
    /// Instead of chains, the set of tasks a request on `--route` touches (each with the
    /// probability that it runs at least once and its start offset), and the set baton
    /// announces at entry.
    #[arg(long)]
    set: bool,
    /// How many chains.
    #[arg(short, long, default_value_t = 5)]
    n: usize,
    /// Most steps per chain.
    #[arg(long, default_value_t = 5)]
    depth: usize,
    /// Drop chains below this probability.
    #[arg(long, default_value_t = 1e-4)]
    min_probability: f64,
    /// The request's route (operation of the first call below the entry), if known.
    #[arg(long)]
    route: Option<String>,
    /// The running task's previous call: a task name, or `start` if it made none yet.
    #[arg(long)]
    prev: Option<String>,
    /// First order only (no contexts).
    #[arg(long)]
    first_order: bool,
    /// Quantile of history to size steps by.
    #[arg(long, value_enum, default_value = "p95")]
    quantile: QuantileArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `baton predict` against a running server (`GET /v1/predictions`: chains from `from`).
fn predict_remote(args: &PredictArgs, server: &str) -> Result<()> {
    anyhow::ensure!(
        !args.set && args.route.is_none() && args.prev.is_none(),
        "--set, --route and --prev need --state or --log (a server predicts from a start)"
    );
    let from = args.from.as_deref().unwrap_or_default();
    let client = crate::server::connect(server, args.source.token.clone())?;
    let response = crate::server::checked(
        client.get(&format!(
            "/v1/predictions?from={}&n={}&depth={}",
            query_escape(from),
            args.n,
            args.depth
        ))?,
        &format!("predictions from `{from}`"),
    )?;
    let document = response.json();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    for chain in document["chains"].as_array().into_iter().flatten() {
        let tasks: Vec<&str> = chain["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        println!(
            "{:.4}  {}{}",
            chain["probability"].as_f64().unwrap_or(0.0),
            tasks.join(" → "),
            if chain["ended"] == true { " (end)" } else { "" }
        );
    }
    let rhythm = &document["rhythm"];
    if let (Some(period), Some(next), Some(window)) = (
        rhythm["period_ms"].as_f64(),
        rhythm["next_start_unix_ms"].as_u64(),
        rhythm["window_ms"].as_f64(),
    ) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let when = if next >= now_ms {
            format!("in {}", seconds(next - now_ms))
        } else {
            format!("{} ago (overdue)", seconds(now_ms - next))
        };
        println!(
            "rhythm: {} start(s) every {}, next {when} ± {}",
            rhythm["starts_per_period"].as_u64().unwrap_or(1),
            seconds(period as u64),
            seconds(window as u64)
        );
    }
    Ok(())
}

/// `ms` as people read a duration: `45 s`, `15 min 40 s`, `2 h 5 min`.
fn seconds(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s % 60 == 0 => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

pub fn predict(args: PredictArgs) -> Result<()> {
    if let Some(server) = server_of(&args.source.server, &args.source.state, &args.source.log) {
        return predict_remote(&args, &server);
    }
    let source = &args.source;
    let snapshot = snapshot_of(
        source.state.as_ref(),
        &source.log,
        source.format,
        &source.model,
        &source.window,
    )?;
    let route = match &args.route {
        Some(name) => Some(
            snapshot
                .label_id(name)
                .with_context(|| format!("unknown route `{name}`"))?,
        ),
        None => None,
    };
    let prev = match args.prev.as_deref() {
        None => Prev::Unknown,
        Some("start") => Prev::Start,
        Some(name) => Prev::After(
            snapshot
                .task_id(name)
                .with_context(|| format!("unknown task `{name}` in --prev"))?,
        ),
    };
    if args.set {
        return print_entry_set(&snapshot, args.route.as_deref(), route, args.json);
    }
    let from_name = args.from.as_deref().unwrap_or_default();
    let from = snapshot
        .task_id(from_name)
        .with_context(|| format!("unknown task `{from_name}`: not in the learned graph"))?;
    let options = PredictOptions {
        n: args.n,
        max_depth: args.depth,
        min_probability: args.min_probability,
        use_context: !args.first_order,
        ..PredictOptions::default()
    };
    let context = PredictContext {
        route,
        prev,
        grand_caller: None,
        operation: None,
    };
    let profiles = snapshot.chain_profiles(from, &context, &options, args.quantile.into());
    if args.json {
        let chains: Vec<_> = profiles
            .iter()
            .map(|p| {
                json!({
                    "probability": p.chain.probability,
                    "ended": p.chain.ended,
                    "steps": p.steps.iter().zip(&p.chain.contexts).map(|(s, used)| json!({
                        "task": snapshot.task_name(s.task),
                        "context": snapshot.context_name(*used),
                        "reach_probability": s.reach_probability,
                        "start_offset_us": s.start_offset_us,
                        "earliest_offset_us": s.earliest_offset_us,
                        "duration_us": s.duration_us,
                        "needs": s.needs,
                    })).collect::<Vec<_>>(),
                    "total": p.total,
                    "peak": p.peak,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "from": from_name,
                "graph_version": snapshot.version(),
                "chains": chains,
            }))?
        );
        return Ok(());
    }
    println!(
        "chains from {from_name} (graph version {})",
        snapshot.version()
    );
    if profiles.is_empty() {
        println!("  none above probability {}", args.min_probability);
    }
    for (rank, profile) in profiles.iter().enumerate() {
        println!(
            "\n#{} p={:.4} {} peak {} MiB, {} mCPU",
            rank + 1,
            profile.chain.probability,
            if profile.chain.ended {
                "ends"
            } else {
                "cut at depth"
            },
            profile.peak.memory_mib,
            profile.peak.total_cpu_millicores(),
        );
        if profile.steps.is_empty() {
            println!("   (stops after {from_name})");
        }
        for (step, used) in profile.steps.iter().zip(&profile.chain.contexts) {
            println!(
                "   +{:>8.2} ms  {:<40} reach {:.3}  {:>5} MiB {:>5} mCPU  [{}]",
                step.start_offset_us as f64 / 1000.0,
                snapshot.task_name(step.task),
                step.reach_probability,
                step.needs.memory_mib,
                step.needs.total_cpu_millicores(),
                snapshot.context_name(*used),
            );
        }
    }
    Ok(())
}

fn print_entry_set(
    snapshot: &TdgSnapshot,
    route_name: Option<&str>,
    route: Option<baton_core::LabelId>,
    json: bool,
) -> Result<()> {
    let (set, used_route) = snapshot.entry_set(route);
    let announced = |task| set.best_set.contains(&task);
    if json {
        let tasks: Vec<_> = set
            .tasks
            .iter()
            .map(|t| {
                json!({
                    "task": snapshot.task_name(t.task),
                    "probability": t.probability,
                    "offset_p10_us": t.offset_p10_us,
                    "offset_p50_us": t.offset_p50_us,
                    "announced": announced(t.task),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "route": route_name,
                "used_route": used_route,
                "requests": set.requests,
                "expected_recall": set.best_set_recall,
                "expected_precision": set.best_set_precision,
                "tasks": tasks,
            }))?
        );
        return Ok(());
    }
    println!(
        "tasks of a request on {} ({:.1} requests of history{})",
        route_name.unwrap_or("any route"),
        set.requests,
        if used_route || route.is_none() {
            ""
        } else {
            "; too little for this route, all routes shown"
        }
    );
    println!(
        "{:>6}  {:>9}  {:>9}  {:<9} task",
        "p", "p10 ms", "p50 ms", "announced"
    );
    for task in &set.tasks {
        println!(
            "{:>6.3}  {:>9.2}  {:>9.2}  {:<9} {}",
            task.probability,
            task.offset_p10_us as f64 / 1000.0,
            task.offset_p50_us as f64 / 1000.0,
            if announced(task.task) { "yes" } else { "" },
            snapshot.task_name(task.task)
        );
    }
    println!(
        "announced set: expected recall {:.3}, precision {:.3} on history",
        set.best_set_recall, set.best_set_precision
    );
    Ok(())
}
