//! `baton bench hop` and `baton bench coldstart`: what a hop and a cold start cost on this
//! machine, measured in one run, as a table or JSON.

use anyhow::{Context, Result};
use baton_runtime::bench::{self, ColdReport, HopReport};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Which bench.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Director hand-off to a pre-warmed wasm instance versus the same hop over loopback HTTP.
    Hop(HopArgs),
    /// Pre-warmed versus cold invocations: wasm (compile not cached, cached) and Python.
    Coldstart(ColdArgs),
    /// The same three-step chain on baton and on serverless-offline and functions-framework.
    Peers(crate::peers::PeersArgs),
}

/// `baton bench hop`.
#[derive(Debug, Args)]
pub struct HopArgs {
    /// Hops measured on each side (interleaved).
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
    /// Payload size, bytes (at most 61,440: the guest's buffer).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Calls measured with an idle gap of 10 ms before each (a quarter of them for 100 ms);
    /// 0 skips the sparse rows.
    #[arg(long, default_value_t = 40)]
    sparse: usize,
    /// The examples directory (default: ./examples).
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `baton bench coldstart`.
#[derive(Debug, Args)]
pub struct ColdArgs {
    /// Cold starts measured per case.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The examples directory (default: ./examples).
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs one bench.
pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Hop(args) => {
            anyhow::ensure!(
                (1..=61_440).contains(&args.payload),
                "--payload must be 1 to 61440 bytes"
            );
            anyhow::ensure!(args.iterations > 0, "--iterations must be positive");
            let examples = bench::examples_dir(args.examples.as_deref());
            let report = bench::hop(&examples, args.iterations, args.payload, args.sparse)
                .with_context(|| format!("hop bench (examples in {})", examples.display()))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_hop(&report);
            }
        }
        BenchCommand::Peers(args) => crate::peers::run(args)?,
        BenchCommand::Coldstart(args) => {
            anyhow::ensure!(args.runs > 0, "--runs must be positive");
            let examples = bench::examples_dir(args.examples.as_deref());
            let report = bench::coldstart(&examples, args.runs).with_context(|| {
                format!("cold-start bench (examples in {})", examples.display())
            })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_cold(&report);
            }
        }
    }
    Ok(())
}

fn print_hop(report: &HopReport) {
    println!(
        "hop a → b, {} byte payload, guest {}, {} hops each side, interleaved",
        report.payload_bytes, report.guest, report.handoff.n
    );
    println!("{:<48} {:>10} {:>10}", "path", "p50 µs", "p99 µs");
    let line = |name: &str, s: &bench::Summary| {
        println!("{name:<48} {:>10.2} {:>10.2}", s.p50_us, s.p99_us);
    };
    line(
        "director hand-off (to b holding its input)",
        &report.handoff,
    );
    line("loopback HTTP (to b holding its input)", &report.http);
    line("director hop, result back", &report.handoff_with_result);
    line("loopback HTTP hop, response back", &report.http_with_result);
    println!(
        "ratio HTTP / hand-off at p50: {:.1}x (to input), {:.1}x (result back)",
        report.ratio_p50, report.ratio_with_result_p50
    );
    println!(
        "\ndirector invoke a → b, back to back: p50 {:.2} µs",
        report.invoke_tight.p50_us
    );
    for row in &report.sparse {
        println!(
            "sparse, {:>4} ms idle before each call: invoke p50 {:8.2} µs ({:.2}x tight; the engine alone {:.2}x), hand-off p50 {:6.2} µs",
            row.gap_ms, row.invoke.p50_us, row.ratio_to_tight, row.engine_ratio_to_tight, row.handoff.p50_us
        );
    }
    for row in &report.sparse {
        println!(
            "machine, {:>4} ms idle before each probe: compute {:.2}x, {} scattered cache lines {:.2}x ({:.2}x when the gap is spun, not slept; {:.0} ns more a line); the sparse invoke's extra time is {:.0} such lines",
            row.gap_ms,
            row.machine.compute_ratio,
            bench::PROBE_LINES,
            row.machine.memory_ratio,
            row.machine.memory_ratio_spinning,
            row.machine.cold_line_ns,
            row.cold_lines
        );
    }
}

fn print_cold(report: &ColdReport) {
    println!("worker limits: {}", report.limits);
    if let Some(us) = report.move_us {
        println!(
            "moving a process into its groups (every forked start does): {:.2} ms p50, {}",
            us / 1000.0,
            report.move_mode
        );
    }
    println!(
        "{:<40} {:>11} {:>11} {:>11} {:>11} {:>8}",
        "case", "warm p50 µs", "warm p99 µs", "cold p50 µs", "cold p99 µs", "cold/warm"
    );
    for row in &report.rows {
        println!(
            "{:<40} {:>11.1} {:>11.1} {:>11.1} {:>11.1} {:>7.0}x",
            row.case,
            row.warm.p50_us,
            row.warm.p99_us,
            row.cold.p50_us,
            row.cold.p99_us,
            row.ratio_p50
        );
    }
    let p50 = |prefix: &str| {
        report
            .rows
            .iter()
            .find(|r| r.case.starts_with(prefix))
            .map(|r| r.cold.p50_us)
    };
    if let (Some(fresh), Some(forked)) = (
        p50("python worker (heavy imports), sandbox")
            .or_else(|| p50("python worker (heavy imports), NO")),
        p50("python worker forked"),
    ) {
        println!(
            "python cold start: forked from a template {:.1} ms p50, a fresh interpreter {:.1} ms: {:.1}x faster",
            forked / 1000.0,
            fresh / 1000.0,
            fresh / forked.max(1e-3)
        );
        if let Some(spare) = p50("python worker, its template's spare") {
            println!(
                "python cold start: its template's spare {:.2} ms p50 (forked ahead, the cgroup move paid then): {:.0}x faster than a fresh interpreter",
                spare / 1000.0,
                fresh / spare.max(1e-3)
            );
        }
    }
    println!(
        "{:<40} {:>9} {:>9} {:>12}",
        "memory", "PSS KiB", "RSS KiB", "private KiB"
    );
    for row in &report.memory {
        println!(
            "{:<40} {:>9} {:>9} {:>12}",
            row.case, row.pss_kib, row.rss_kib, row.private_kib
        );
    }
}
