//! `baton bench peers`: the same three-step chain (a → b → c, a small JSON payload, trivial
//! work) on baton and on the serverless runtimes people use today, measured in one run on
//! this machine, interleaved: serverless-offline (an AWS Lambda emulator, a calling b
//! calling c through its HTTP front door), Google's functions-framework (one process per
//! function, chained over HTTP), and baton (wasm guests and Python workers chained by the
//! director, entered through baton's HTTP API).
//!
//! Scenarios: (a) warm single invocation, (b) warm chain end to end, (c) the chain after an
//! idle period longer than the keep-alive (serverless-offline's idle Lambda termination and
//! baton's keep-alive are both set below it; baton has prediction on), (d) chain throughput
//! at a fixed concurrency for a bounded time. Every server binds 127.0.0.1 and every process
//! started is stopped by its process group at the end, on failure too.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PEERS: [&str; 3] = ["serverless-offline", "functions-framework", "wasmtime"];

/// `baton bench peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// Leave a peer out: serverless-offline, functions-framework or wasmtime (repeatable).
    #[arg(long)]
    skip_peer: Vec<String>,
    /// Warm requests per system and scenario.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Cold-after-idle chains per system.
    #[arg(long, default_value_t = 5)]
    cold_runs: usize,
    /// Idle period before each cold-after-idle chain, seconds (keep-alives are set to a
    /// third of it).
    #[arg(long, default_value_t = 6.0)]
    idle_secs: f64,
    /// Concurrent clients in the throughput scenario.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Duration of the throughput scenario per system, seconds.
    #[arg(long, default_value_t = 5.0)]
    throughput_secs: f64,
    /// Where the peers are installed (ignored by git).
    #[arg(long, default_value = ".peers")]
    peers_dir: PathBuf,
    /// The bench's app sources (default: ./bench/peers).
    #[arg(long)]
    bench_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

mod client;
mod systems;

use client::{call, throughput, wait_ready, Conn};
use systems::{baton_system, setup_peers, start_baton, start_ff, start_sls, Proc, System};

/// Summary of one system in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// System.
    pub system: String,
    /// Scenario.
    pub scenario: String,
    /// Samples.
    pub n: usize,
    /// Median, ms (throughput: requests per second).
    pub p50: f64,
    /// 99th percentile, ms (throughput: none).
    pub p99: f64,
}

fn summary(system: &str, scenario: &str, mut samples: Vec<f64>) -> Cell {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| baton_core::rank::nearest_rank(&samples, q).unwrap_or(0.0);
    Cell {
        system: system.into(),
        scenario: scenario.into(),
        n: samples.len(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct PeersReport {
    /// When and where.
    pub machine: String,
    /// Versions and settings of each system.
    pub systems: Vec<(String, String)>,
    /// Peers left out and why.
    pub skipped: Vec<(String, String)>,
    /// Every measurement.
    pub cells: Vec<Cell>,
}

pub fn run(args: PeersArgs) -> Result<()> {
    for skip in &args.skip_peer {
        if !PEERS.contains(&skip.as_str()) {
            bail!("--skip-peer {skip:?}: expected one of {}", PEERS.join(", "));
        }
    }
    anyhow::ensure!(
        args.requests > 0 && args.cold_runs > 0,
        "--requests and --cold-runs must be positive"
    );
    let bench = args.bench_dir.clone().unwrap_or_else(|| {
        let local = PathBuf::from("bench/peers");
        if local.exists() {
            local
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers")
        }
    });
    let bench = bench
        .canonicalize()
        .with_context(|| format!("bench sources {}", bench.display()))?;
    let examples = baton_runtime::bench::examples_dir(None).canonicalize()?;
    let keep_alive = Duration::from_secs_f64((args.idle_secs / 3.0).max(1.0));
    let mut skipped: Vec<(String, String)> = args
        .skip_peer
        .iter()
        .map(|s| (s.clone(), "--skip-peer".to_owned()))
        .collect();
    let wants = |name: &str| !args.skip_peer.iter().any(|s| s == name);

    let mut procs: Vec<Proc> = Vec::new();
    let mut systems: Vec<System> = Vec::new();
    let (server, baton_data) = start_baton(&bench, &examples, keep_alive)?;
    systems.push(baton_system(&server, "wasm", "w"));
    systems.push(baton_system(&server, "python", "p"));
    if wants("serverless-offline") || wants("functions-framework") {
        let peers_dir = std::fs::create_dir_all(&args.peers_dir)
            .map(|()| args.peers_dir.clone())
            .with_context(|| format!("creating {}", args.peers_dir.display()))?;
        let peers = setup_peers(&bench, &peers_dir, &args.skip_peer)?;
        if wants("serverless-offline") {
            systems.push(start_sls(&bench, &peers, keep_alive, &mut procs)?);
        }
        if wants("functions-framework") {
            systems.push(start_ff(&bench, &peers, &mut procs)?);
        }
    }
    if wants("wasmtime") {
        let found = Command::new("wasmtime").arg("--version").output().is_ok();
        skipped.push((
            "wasmtime".into(),
            if found {
                "`wasmtime serve` needs a wasi-http component; no such guest is built here yet"
                    .into()
            } else {
                "no wasmtime CLI on the PATH".into()
            },
        ));
    }
    for system in &systems {
        wait_ready(&system.name, &system.chain, Duration::from_secs(30))?;
    }
    let progress = !args.json;
    let mut cells = Vec::new();

    // (a), (b): warm, interleaved request by request, each system on its own keep-alive
    // connection (as a real client holds one).
    for (scenario, chain) in [("warm single", false), ("warm chain", true)] {
        let mut conns: Vec<Conn> = systems
            .iter()
            .map(|s| Conn::new(if chain { &s.chain } else { &s.single }))
            .collect();
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
        for _ in 0..args.requests / 10 + 5 {
            for conn in &mut conns {
                conn.call()?;
            }
        }
        let bar = progress.then(|| crate::progress::counter(scenario, args.requests as u64));
        for _ in 0..args.requests {
            for (k, conn) in conns.iter_mut().enumerate() {
                samples[k].push(conn.call()?.as_secs_f64() * 1e3);
            }
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        for (system, samples) in systems.iter().zip(samples) {
            cells.push(summary(&system.name, scenario, samples));
        }
    }
    // (c): idle past every keep-alive, then the chain on each system in turn.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    let bar = progress.then(|| {
        crate::progress::counter(
            &format!("cold after {:.0} s idle:", args.idle_secs),
            args.cold_runs as u64,
        )
    });
    for _ in 0..args.cold_runs {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        std::thread::sleep(Duration::from_secs_f64(args.idle_secs));
        for (k, system) in systems.iter().enumerate() {
            samples[k].push(call(&system.chain)?.as_secs_f64() * 1e3);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for (system, samples) in systems.iter().zip(samples) {
        cells.push(summary(&system.name, "chain after idle", samples));
    }
    // (d): throughput, one system at a time.
    for system in &systems {
        let bar =
            progress.then(|| crate::progress::counter(&format!("throughput: {}", system.name), 1));
        let (rate, failed) = throughput(&system.chain, args.concurrency, args.throughput_secs)?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if failed > 0 {
            eprintln!("{}: {failed} requests failed under load", system.name);
        }
        cells.push(Cell {
            system: system.name.clone(),
            scenario: format!("chain throughput ({} clients)", args.concurrency),
            n: 1,
            p50: rate,
            p99: 0.0,
        });
    }
    let machine = format!(
        "{} cores, {}; cgroup moves (each forked Python worker makes one): {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        baton_runtime::limits::MoveMode::now()
    );
    let report = PeersReport {
        machine,
        systems: systems
            .iter()
            .map(|s| (s.name.clone(), s.note.clone()))
            .collect(),
        skipped,
        cells,
    };
    drop(procs);
    server.stop();
    let _ = std::fs::remove_dir_all(&baton_data);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &PeersReport) {
    println!("machine: {}", report.machine);
    for (name, note) in &report.systems {
        println!("  {name}: {note}");
    }
    for (name, why) in &report.skipped {
        println!("  {name}: skipped ({why})");
    }
    let baton = "baton (wasm)";
    println!(
        "\n| scenario | system | p50 | p99 | peer / baton (wasm) at p50 |\n|---|---|---:|---:|---:|"
    );
    for cell in &report.cells {
        let reference = report
            .cells
            .iter()
            .find(|c| c.system == baton && c.scenario == cell.scenario)
            .map_or(0.0, |c| c.p50);
        let throughput = cell.scenario.starts_with("chain throughput");
        let ratio = if throughput {
            reference / cell.p50.max(1e-9)
        } else {
            cell.p50 / reference.max(1e-9)
        };
        if throughput {
            println!(
                "| {} | {} | {:.0} req/s | | {:.1}x |",
                cell.scenario, cell.system, cell.p50, ratio
            );
        } else {
            println!(
                "| {} | {} | {:.2} ms | {:.2} ms | {:.1}x |",
                cell.scenario, cell.system, cell.p50, cell.p99, ratio
            );
        }
    }
}
