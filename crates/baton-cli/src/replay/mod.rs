//! `baton load`: replays a trace against a live `baton serve`, then runs `baton sim` on the
//! same plan with the server's policy, knob, reuse rule, memory and measured cold start,
//! and prints both side by side. The plan ([`plan`]) is made once and read by both; the
//! live side ([`live`]) deploys, teaches, runs and samples.

mod live;
pub mod plan;

use crate::load;
use anyhow::{Context, Result};
use baton_core::{Costs, TaskId, Tdg, TdgConfig};
use baton_sim::engine::{PlannerLag, SimConfig, LAG_QUANTILES};
use baton_sim::{PolicyResult, Simulation};
use baton_trace::requests::{RequestGrouper, TimeWindow};
use baton_trace::schema::ExecutionRecord;
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Smallest memory a replay function declares, MiB (its Python worker must fit).
pub const MIN_MEMORY_MIB: u64 = 64;
/// Cold start the simulator is given when the replay had none to measure, µs.
const DEFAULT_COLD_US: u64 = 50_000;

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    remote: crate::server::Remote,
    #[command(flatten)]
    input: load::TraceInput,
    /// Start of the training window (the server is taught it; nothing is run).
    #[arg(long)]
    train_since: Option<String>,
    /// End of the training window and start of the replay.
    #[arg(long)]
    train_until: String,
    /// End of the replay.
    #[arg(long)]
    test_until: String,
    /// Compress time: the trace's arrivals and run times divided by this (1: real time).
    /// Policies keep their own settings, so the simulator runs the compressed plan too.
    #[arg(long, default_value_t = 10.0)]
    speed: f64,
    /// Instance memory of a function with no memory figure, MiB.
    #[arg(long, default_value_t = 256)]
    instance_mib: u64,
    /// Per-service memory from a pod-metrics CSV (as `baton sim --memory-from`).
    #[arg(long)]
    memory_from: Option<PathBuf>,
    /// Client threads (default: twice the most chains the plan has in flight, plus 8).
    #[arg(long)]
    threads: Option<usize>,
    /// Where to write load.json (both sides' figures and the plan's summary).
    #[arg(long, default_value = "load-out")]
    out: PathBuf,
}

pub fn load(args: LoadArgs) -> Result<()> {
    let client = args.remote.client()?;
    let facts = live::server_facts(&client)?;
    let loaded = args.input.load(TdgConfig::default())?;
    let day = loaded.day_ns();
    let train_window = load::window(args.train_since.as_deref(), Some(&args.train_until), day)?;
    let test_window = load::window(Some(&args.train_until), Some(&args.test_until), day)?;
    let train = loaded.in_window(train_window);
    let test = loaded.in_window(test_window);
    let (memory, memory_note) =
        crate::sim::task_memory(&loaded, args.memory_from.as_deref(), args.instance_mib)?;
    let memory: HashMap<TaskId, u64> = memory.into_iter().collect();
    let test_start_us = test_window.since_ns.unwrap_or(0) / 1_000;
    let origin_us = train
        .first()
        .and_then(|r| r.start_us())
        .map_or(test_start_us, |s| s.min(test_start_us));
    let plan = plan::plan(
        &plan::Source {
            train,
            test,
            task_name: &|t: TaskId| loaded.tdg.tasks().name(t.0).to_owned(),
            memory_mib: &|t: TaskId| {
                memory
                    .get(&t)
                    .copied()
                    .unwrap_or(args.instance_mib)
                    .max(MIN_MEMORY_MIB)
            },
            origin_us,
            test_start_us,
        },
        args.speed,
    )?;
    let window_s = test_window
        .until_ns
        .unwrap_or(0)
        .saturating_sub(test_window.since_ns.unwrap_or(0)) as f64
        / 1e9;
    eprintln!(
        "plan: {} functions; {} training chains; {} test chains of {} steps over {:.0} s of trace, {:.1} s at speed {}; memory: {memory_note} (at least {MIN_MEMORY_MIB} MiB); server: {} knob {}, reuse {}, {} MiB, {} cores",
        plan.functions.len(),
        plan.train.len(),
        plan.test.len(),
        plan.test_steps(),
        window_s,
        window_s / args.speed,
        args.speed,
        facts.policy,
        facts.knob,
        facts.reuse,
        facts.memory_mib,
        facts.cores,
    );

    live::deploy(&client, &plan)?;
    // Training ends where the replay begins: now, then a second for the threads to start.
    let train_origin_ns = live::now_ns().saturating_sub(plan.test_start_us * 1_000);
    let taught = live::teach(&client, &plan, train_origin_ns)?;
    let lead = Duration::from_secs(1);
    let start = Instant::now() + lead;
    let test_origin_ns =
        (live::now_ns() + lead.as_nanos() as u64).saturating_sub(plan.test_start_us * 1_000);
    let threads = args.threads.unwrap_or_else(|| plan.max_in_flight() * 2 + 8);
    eprintln!("taught {taught} training records; replaying with {threads} client threads");
    let last_id = live::last_record_id(&client)?;
    let observed = live::replay(&client, &plan, start, threads)?;
    let served = live::records_after(&client, last_id)?;

    // What a start takes, as the server measured it (a step's wait may include waiting
    // for a start slot, which the simulator adds itself).
    let cold_us = observed
        .start_us
        .or_else(|| median(&observed.cold_wait_us))
        .unwrap_or(DEFAULT_COLD_US);
    let lag_us = observed.planner_lag_us.unwrap_or(0);
    // The server's lags as measured, else none (a server older than this client).
    let lags = match <[u64; LAG_QUANTILES]>::try_from(observed.planner_lags_us.as_slice()) {
        Ok(lags) => PlannerLag(lags),
        Err(_) => PlannerLag::fixed(lag_us),
    };
    let train_records = plan.records(&plan.train, "train-", train_origin_ns);
    let simulated = simulate(
        &plan,
        &facts,
        (cold_us, lags),
        args.instance_mib,
        &train_records,
        Arrivals::Planned(plan.records(&plan.test, "test-", test_origin_ns)),
    )?;
    let as_served = simulate(
        &plan,
        &facts,
        (cold_us, lags),
        args.instance_mib,
        &train_records,
        Arrivals::Served(served),
    )?;
    let table = render(&observed, &simulated, &as_served, (cold_us, lag_us));
    println!("{table}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let path = args.out.join(format!("load-{}.json", facts.policy));
    let slim = |result: &PolicyResult| -> Result<serde_json::Value> {
        let mut value = serde_json::to_value(result)?;
        if let Some(stats) = value.get_mut("stats").and_then(|s| s.as_object_mut()) {
            stats.remove("request_latency_us");
            stats.remove("request_critical_cold");
        }
        Ok(value)
    };
    let mut live_value = serde_json::to_value(&observed)?;
    if let Some(live) = live_value.as_object_mut() {
        for bulky in ["added_us", "cold_wait_us", "late_us"] {
            live.remove(bulky);
        }
        live.insert("added_p50_ms".into(), ms(&observed.added_us, 0.5).into());
        live.insert("added_p99_ms".into(), ms(&observed.added_us, 0.99).into());
        live.insert("late_p99_ms".into(), ms(&observed.late_us, 0.99).into());
    }
    let json = serde_json::json!({
        "trace": args.input.trace,
        "window": [args.train_until, args.test_until],
        "speed": args.speed,
        "policy": facts.policy,
        "knob": facts.knob,
        "reuse": facts.reuse,
        "memory_mib": facts.memory_mib,
        "functions": plan.functions.len(),
        "chains": plan.test.len(),
        "cold_start_us": cold_us,
        "planner_lag_us": lags.0,
        "live": live_value,
        "sim": slim(&simulated)?,
        "sim_as_served": slim(&as_served)?,
        "table": table,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    if observed.failed > 0 {
        anyhow::bail!(
            "{} of {} chains failed; first: {}",
            observed.failed,
            observed.requests,
            observed.failures.join(" | ")
        );
    }
    Ok(())
}

/// What the simulator replays.
enum Arrivals {
    /// The plan's test records, replayed causally: a step comes when the one before it has
    /// run, after whatever wait the simulation put before it (as the server runs a chain).
    Planned(Vec<ExecutionRecord>),
    /// The records the server wrote: each step when it ran (after its chain's earlier
    /// waits), grouped keeping those starts, as the conformance test replays a director's.
    Served(Vec<ExecutionRecord>),
}

/// `baton sim` with the server's policy, knob, reuse rule, memory and cores and the cold
/// start it measured: trained on the records the server was taught, replaying `arrivals`.
fn simulate(
    plan: &plan::Plan,
    facts: &live::ServerFacts,
    (cold_us, planner_lag): (u64, PlannerLag),
    instance_mib: u64,
    train_records: &[ExecutionRecord],
    arrivals: Arrivals,
) -> Result<PolicyResult> {
    let mut tdg = Tdg::new(TdgConfig::default());
    let group = |records: &[ExecutionRecord], grouper: RequestGrouper, tdg: &mut Tdg| {
        let mut grouper = grouper;
        for record in records {
            grouper.push(record, tdg);
        }
        let (mut requests, _) = grouper.finish(TimeWindow::default());
        requests.sort_by_key(|r| r.start_us());
        requests
    };
    let train = group(train_records, RequestGrouper::new(), &mut tdg);
    load::learn(&mut tdg, &train);
    let (test, causal) = match arrivals {
        Arrivals::Planned(records) => (group(&records, RequestGrouper::new(), &mut tdg), true),
        Arrivals::Served(records) => (
            group(
                &records,
                RequestGrouper::new().keep_recorded_starts(),
                &mut tdg,
            ),
            false,
        ),
    };
    let mut costs = Costs::new(cold_us, instance_mib);
    for function in &plan.functions {
        costs.set_memory_mib(tdg.intern_task(&function.name), function.memory_mib);
    }
    let mut simulation = Simulation::new(tdg, test, costs);
    simulation.cores = facts.cores;
    let config = SimConfig {
        memory_mib: facts.memory_mib,
        reuse: facts.reuse.parse()?,
        causal,
        start_slots: facts.start_slots,
        planner_lag,
        ..SimConfig::default()
    };
    Ok(simulation.run(&facts.policy, facts.knob, &config, |_, _| {})?)
}

fn median(values: &[u64]) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    baton_core::rank::nearest_rank(&sorted, 0.5)
}

/// The `q` quantile of `us`, in ms (0 for none).
fn ms(us: &[u64], q: f64) -> f64 {
    let mut sorted = us.to_vec();
    sorted.sort_unstable();
    baton_core::rank::nearest_rank(&sorted, q).unwrap_or(0) as f64 / 1000.0
}

/// The live-against-simulated table (markdown): the simulator on the plan, and on the
/// arrivals as the server served them.
fn render(
    live: &live::Observed,
    sim: &PolicyResult,
    served: &PolicyResult,
    (cold_us, lag_us): (u64, u64),
) -> String {
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else if a == 0.0 {
            "=".into()
        } else {
            "—".into()
        }
    };
    let live_ratio = live.cold_starts as f64 / live.steps.max(1) as f64;
    let (p50, p99) = (ms(&live.added_us, 0.5), ms(&live.added_us, 0.99));
    type Pick = fn(&PolicyResult) -> f64;
    let rows: [(&str, f64, usize, Pick); 12] = [
        ("steps run", live.steps as f64, 0, |r| {
            r.stats.invocations as f64
        }),
        ("cold starts", live.cold_starts as f64, 0, |r| {
            r.stats.cold_starts as f64
        }),
        ("cold-start ratio", live_ratio, 4, |r| r.cold_start_ratio),
        ("cold: first", live.cold_causes[0] as f64, 0, |r| {
            r.stats.cold_causes.first as f64
        }),
        ("cold: busy", live.cold_causes[1] as f64, 0, |r| {
            r.stats.cold_causes.concurrent as f64
        }),
        ("cold: evicted", live.cold_causes[2] as f64, 0, |r| {
            r.stats.cold_causes.evicted as f64
        }),
        ("cold: expired", live.cold_causes[3] as f64, 0, |r| {
            r.stats.cold_causes.expired as f64
        }),
        (
            "steps a pre-warm served",
            live.prewarmed_steps as f64,
            0,
            |r| r.stats.prewarm_hits as f64,
        ),
        (
            "pre-warms overtaken",
            live.counters
                .get("prewarms_overtaken")
                .copied()
                .unwrap_or(0) as f64,
            0,
            |r| r.stats.prewarms_overtaken as f64,
        ),
        ("added latency p50, ms", p50, 1, |r| r.latency_p50_ms),
        ("added latency p99, ms", p99, 1, |r| r.latency_p99_ms),
        ("idle memory, GB·s", live.idle_gb_s, 1, |r| r.idle_gb_s),
    ];
    let mut out = format!(
        "{} (knob {}): {} chains in {:.1} s, {} failed; a worker start took {:.1} ms and the planner lagged {:.2} ms behind a step's start, p99 {:.2} ms (the server's measures, given to the simulator); sends late by p99 {:.1} ms\n\n\
         | | live | sim, planned arrivals | live ÷ sim | sim, arrivals as served | live ÷ sim |\n|---|---|---|---|---|---|\n",
        sim.policy,
        sim.knob,
        live.requests,
        live.seconds,
        live.failed,
        cold_us as f64 / 1000.0,
        lag_us as f64 / 1000.0,
        live.planner_lag_p99_us.unwrap_or(0) as f64 / 1000.0,
        ms(&live.late_us, 0.99),
    );
    for (what, value, digits, pick) in rows {
        let (a, b) = (pick(sim), pick(served));
        out.push_str(&format!(
            "| {what} | {value:.digits$} | {a:.digits$} | {} | {b:.digits$} | {} |\n",
            ratio(value, a),
            ratio(value, b)
        ));
    }
    out
}
