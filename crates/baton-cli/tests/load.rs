//! `baton load` against a live `baton serve` (Python workers in the sandbox): a window of
//! the TrainTicket fixture replayed for real, with `baton sim`'s figures for the same plan
//! beside it.

mod common;

use common::{baton, serve_args, start_listening};
use std::path::Path;
use std::process::Command;

#[test]
fn load_replays_a_trace_window_live_and_the_simulator_agrees() {
    let data = tempfile::tempdir().unwrap();
    let (_served, url, _, _) = start_listening(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(serve_args(data.path()))
            .args(["--allow-process-functions", "--policy", "ttl"]),
        None,
    );
    let out = tempfile::tempdir().unwrap();
    let trace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/nezha-spans-faultfree-2023-01-30.csv.xz");
    let output = baton(&[
        "load",
        "--server",
        &url,
        "--trace",
        &trace.display().to_string(),
        "--train-until",
        "11:39:20",
        "--test-until",
        "11:40",
        "--speed",
        "4",
        "--out",
        &out.path().display().to_string(),
    ]);
    let said = String::from_utf8_lossy(&output.stderr);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}\n{table}");
    assert!(table.contains("| cold-start ratio |"), "{table}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("load-ttl.json")).unwrap()).unwrap();
    let (live, sim) = (&json["live"], &json["sim"]["stats"]);
    // Every chain ran, step for step as planned.
    assert_eq!(live["failed"], 0, "{json}");
    assert_eq!(live["requests"], 32, "{json}");
    assert_eq!(live["steps"], sim["invocations"], "{json}");
    assert_eq!(live["steps"], 369, "{json}");
    // Each function's first call is cold on both sides; the rest (calls while every worker
    // is busy) within a quarter, or 4.
    assert_eq!(
        live["cold_causes"][0], sim["cold_causes"]["first"],
        "{json}"
    );
    let (a, b) = (
        live["cold_starts"].as_f64().unwrap(),
        sim["cold_starts"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= (0.25 * b).max(4.0),
        "live {a} against sim {b}: {table}"
    );
    // The idle memory sampled from /v1/pool within a quarter of the simulated.
    let (a, b) = (
        live["idle_gb_s"].as_f64().unwrap(),
        json["sim"]["idle_gb_s"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 0.25 * b,
        "idle live {a} against sim {b} GB·s: {table}"
    );
}
