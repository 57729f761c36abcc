//! Black-box tests of the `baton` binary on the committed Nezha fixture and on broken logs.

mod common;

use common::baton;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/nezha-spans-faultfree-2023-01-30.csv.xz")
}

fn ok_json(args: &[&str]) -> Value {
    let output = baton(args);
    assert!(
        output.status.success(),
        "baton {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("baton-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn learn_save_predict_and_graph() {
    let dir = temp_dir("learn");
    let state = dir.join("state.json");
    let fixture = fixture();
    let summary = ok_json(&[
        "learn",
        fixture.to_str().unwrap(),
        "--format",
        "spans",
        "--save",
        state.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(summary["requests"], 62);
    assert_eq!(summary["skipped"], 0);
    assert!(summary["tasks"].as_u64().unwrap() >= 20);
    let top = &summary["top_transitions"][0];
    assert!(top["probability"].as_f64().unwrap() > 0.0);

    let predicted = ok_json(&[
        "predict",
        "--state",
        state.to_str().unwrap(),
        "--from",
        "ts-travel-service",
        "-n",
        "4",
        "--json",
    ]);
    let chains = predicted["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 4);
    let probabilities: Vec<f64> = chains
        .iter()
        .map(|c| c["probability"].as_f64().unwrap())
        .collect();
    assert!(
        probabilities.windows(2).all(|w| w[0] >= w[1]),
        "{probabilities:?}"
    );
    assert!(probabilities.iter().sum::<f64>() <= 1.0 + 1e-9);
    let first = &chains[0]["steps"][0];
    assert_eq!(first["task"], "ts-seat-service", "travel calls seat most");
    assert!(first["start_offset_us"].as_u64().unwrap() > 0);
    assert!(first["needs"]["memory_mib"].as_u64().unwrap() > 0);

    // The same question answered from the log instead of the state (format detected).
    let from_log = ok_json(&[
        "predict",
        "--log",
        fixture.to_str().unwrap(),
        "--from",
        "ts-travel-service",
        "-n",
        "4",
        "--json",
    ]);
    assert_eq!(from_log["chains"], predicted["chains"]);

    let dot = baton(&[
        "graph",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "dot",
    ]);
    let dot = String::from_utf8(dot.stdout).unwrap();
    assert!(dot.starts_with("digraph tdg {"));
    assert!(dot.contains("penwidth="));
    let graph = ok_json(&[
        "graph",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(
        graph["edges"].as_array().unwrap().len() as u64,
        summary["edges"].as_u64().unwrap()
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn eval_reports_every_predictor() {
    let fixture = fixture();
    let report = ok_json(&[
        "eval",
        "--log",
        fixture.to_str().unwrap(),
        "--format",
        "spans",
        "--train-until",
        "11:39:20",
        "--json",
    ]);
    let rows = report["report"]["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "chain",
            "chain-1",
            "tree",
            "tree-global",
            "route-bound",
            "next",
            "frequency"
        ]
    );
    let top1 = |name: &str| {
        rows.iter().find(|r| r["name"] == name).unwrap()["top1"]
            .as_f64()
            .unwrap()
    };
    assert!(top1("chain") > top1("chain-1"), "context helps: {rows:?}");
    assert!(top1("chain-1") > top1("frequency"));
    assert!(report["test_requests"].as_u64().unwrap() > 10);
}

#[test]
fn broken_lines_are_reported_and_the_rest_is_learned() {
    let dir = temp_dir("broken");
    let log = dir.join("log.jsonl");
    std::fs::write(
        &log,
        concat!(
            r#"{"ts":"2026-01-01T00:00:00Z","task":"a","invocation":"1","duration_us":100,"trace":"t1"}"#, "\n",
            r#"{"ts":"2026-01-01T00:00:00.001Z","task":"b","invocation":"2","parent":"1","duration_us":50,"trace":"t1","vendor_field":{"k":1}}"#, "\n",
            "this is not json\n",
            r#"{"ts":"2026-01-01T00:00:01Z","task":"a","invocation":"3","duration_us":"fast"}"#, "\n",
            r#"{"ts":"2026-01-01T00:00:02Z","invocation":"4","duration_us":1}"#, "\n",
            r#"{"ts":"2026-01-01T00:00:03Z","task":"a","invocation":"5","duration_us":100,"trace":"t2"}"#, "\n",
            r#"{"ts":"2026-01-01T00:00:03.002Z","task":"b","invocation":"6","parent":"5","duration_us":50,"trace":"t2"}"#, "\n",
        ),
    )
    .unwrap();
    let output = baton(&["learn", log.to_str().unwrap(), "--json"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("log.jsonl:3: not a JSON object"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "log.jsonl:4: field `duration_us`: expected a non-negative number, got \"fast\""
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("log.jsonl:5: field `task` missing"),
        "{stderr}"
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["skipped"], 3);
    assert_eq!(summary["records"], 4);
    assert_eq!(summary["requests"], 2);
    assert_eq!(summary["top_transitions"][0]["from"], "a");
    assert_eq!(summary["top_transitions"][0]["to"], "b");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_truncated_xz_keeps_what_came_before() {
    let dir = temp_dir("truncated");
    let path = dir.join("log.jsonl.xz");
    let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 6);
    for i in 0..5_000u64 {
        writeln!(
            encoder,
            r#"{{"ts":{},"task":"a","invocation":"a{i}","duration_us":100,"trace":"t{i}"}}"#,
            1_700_000_000_000_000_000u64 + i * 1_000_000
        )
        .unwrap();
        writeln!(
            encoder,
            r#"{{"ts":{},"task":"b","invocation":"b{i}","parent":"a{i}","duration_us":10,"trace":"t{i}"}}"#,
            1_700_000_000_000_000_000u64 + i * 1_000_000 + 10_000
        )
        .unwrap();
    }
    let bytes = encoder.finish().unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let output = baton(&["learn", path.to_str().unwrap(), "--json"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stream broke off after line"), "{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let records = summary["records"].as_u64().unwrap();
    assert!(records > 1_000 && records < 10_000, "{records}");
    assert_eq!(summary["top_transitions"][0]["to"], "b");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unknown_names_and_missing_files_are_clear_errors() {
    let fixture = fixture();
    let output = baton(&[
        "predict",
        "--log",
        fixture.to_str().unwrap(),
        "--format",
        "spans",
        "--from",
        "no-such-service",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown task `no-such-service`"),
        "{stderr}"
    );

    let output = baton(&["learn", "/nonexistent/log.jsonl"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/log.jsonl"), "{stderr}");

    let output = baton(&[
        "learn",
        fixture.to_str().unwrap(),
        "--format",
        "spans",
        "--since",
        "noon",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("time `noon`"));
}

#[test]
fn converted_spans_learn_the_same_graph_as_the_spans() {
    let dir = temp_dir("convert");
    let jsonl = dir.join("converted.jsonl");
    let fixture = fixture();
    let output = baton(&[
        "convert",
        fixture.to_str().unwrap(),
        "-o",
        jsonl.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let from_spans = ok_json(&["learn", fixture.to_str().unwrap(), "--json"]);
    let from_jsonl = ok_json(&["learn", jsonl.to_str().unwrap(), "--json"]);
    for field in [
        "records",
        "requests",
        "tasks",
        "edges",
        "events",
        "top_transitions",
        "stop_probability",
    ] {
        assert_eq!(from_spans[field], from_jsonl[field], "{field}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn entry_set_of_a_route() {
    let fixture = fixture();
    let route = "/api/v1/travelservice/trips/left";
    let set = ok_json(&[
        "predict",
        "--log",
        fixture.to_str().unwrap(),
        "--set",
        "--route",
        route,
        "--json",
    ]);
    assert_eq!(set["route"], route);
    assert_eq!(set["used_route"], true);
    let tasks = set["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["task"], "ts-travel-service");
    assert_eq!(tasks[0]["probability"], 1.0);
    assert_eq!(tasks[0]["announced"], true);
    let probabilities: Vec<f64> = tasks
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(probabilities.windows(2).all(|w| w[0] >= w[1]));
    assert!(set["expected_recall"].as_f64().unwrap() > 0.5);
}

#[test]
fn sim_compares_every_policy_and_writes_its_reports() {
    let dir = temp_dir("sim");
    let fixture = fixture();
    let report = ok_json(&[
        "sim",
        "--trace",
        fixture.to_str().unwrap(),
        "--train-until",
        "11:39:20",
        "--memory-gib",
        "64",
        "--sweep",
        "knob=0.1,1",
        "--out",
        dir.to_str().unwrap(),
        "--json",
    ]);
    let results = report["results"].as_array().unwrap();
    // none and oracle have no knob: 6 policies × 2 knobs + 2.
    assert_eq!(results.len(), 14);
    let by = |name: &str| results.iter().find(|r| r["policy"] == name).unwrap();
    assert_eq!(by("none")["cold_start_ratio"], 1.0);
    assert_eq!(by("oracle")["cold_start_ratio"], 0.0, "room for everything");
    for result in results {
        assert_eq!(result["stats"]["served"], result["stats"]["invocations"]);
    }
    for file in ["results.md", "results.csv", "results.json", "pareto.svg"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(!text.is_empty(), "{file}");
    }
    let svg = std::fs::read_to_string(dir.join("pareto.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("chain") && svg.trim_end().ends_with("</svg>"));
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 15, "header + one row per run");

    let bad = baton(&[
        "sim",
        "--trace",
        fixture.to_str().unwrap(),
        "--train-until",
        "11:39:20",
        "--policies",
        "lru",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown policy `lru`"));

    // Templates: every cold start costs the fork, and templates hold idle memory.
    let forked = ok_json(&[
        "sim",
        "--trace",
        fixture.to_str().unwrap(),
        "--train-until",
        "11:39:20",
        "--policies",
        "none",
        "--template-start-ms",
        "15",
        "--template-mib",
        "11",
        "--out",
        dir.to_str().unwrap(),
        "--json",
    ]);
    let none = &forked["results"][0];
    // A request's added latency is its critical-path cold starts, each a 15 ms fork.
    let p50 = none["latency_p50_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 % 15.0 == 0.0, "{none}");
    assert!(none["template_gb_s"].as_f64().unwrap() > 0.0);
    let half = baton(&[
        "sim",
        "--trace",
        fixture.to_str().unwrap(),
        "--template-start-ms",
        "15",
    ]);
    assert!(!half.status.success());
    assert!(String::from_utf8_lossy(&half.stderr).contains("--template-mib"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn completions_are_printed_for_each_shell() {
    let bash = baton(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(script.contains("_baton()"), "{script}");
    for command in ["deploy", "invoke", "functions", "sequences", "sim", "demo"] {
        assert!(script.contains(command), "{command}");
    }
    // bash itself reads it without complaint.
    let checked = std::process::Command::new("bash")
        .args(["-n", "-c", &script])
        .status()
        .expect("bash");
    assert!(checked.success());
    for shell in ["zsh", "fish"] {
        let output = baton(&["completions", shell]);
        assert!(
            output.status.success() && !output.stdout.is_empty(),
            "{shell}"
        );
    }
    let bad = baton(&["completions", "cmd.exe"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn no_baseline_point_dominates_a_chain_point_on_the_fixture() {
    // The frontier property of issue 12 on a small sweep of the committed fixture: no
    // baseline run has both fewer (or as few) cold starts and less (or as little) idle
    // memory than a `chain` run at the same node memory, one of them strictly. At 1 GiB
    // (room for 4 of the 26 functions' instances) every policy thrashes (over 80 % cold):
    // there `chain` at knob 0.3 and 1 equals `greedy-dual`'s cold starts at 0.2 % more
    // idle memory (0.1 of 41 GB·s), so the property is checked at 4 and 64 GiB, and at
    // 1 GiB `chain`'s best point must have fewer cold starts than every baseline point
    // (it evicts what saves least cold-start time per MiB held; with least recently used
    // first every policy had the same cold starts).
    let dir = temp_dir("frontier");
    let report = ok_json(&[
        "sim",
        "--trace",
        fixture().to_str().unwrap(),
        "--train-until",
        "11:39:20",
        "--sweep",
        "memory=1,4,64",
        "--sweep",
        "knob=0.01,0.03,0.1,0.3,1",
        "--out",
        dir.to_str().unwrap(),
        "--json",
    ]);
    let runs: Vec<(String, f64, u64, f64, f64)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["policy"].as_str().unwrap().to_owned(),
                r["knob"].as_f64().unwrap(),
                r["memory_mib"].as_u64().unwrap(),
                r["cold_start_ratio"].as_f64().unwrap(),
                r["idle_gb_s"].as_f64().unwrap(),
            )
        })
        .collect();
    let chains: Vec<_> = runs.iter().filter(|r| r.0 == "chain").collect();
    assert_eq!(chains.len(), 15);
    let baselines = || {
        runs.iter()
            .filter(|r| !matches!(r.0.as_str(), "chain" | "oracle"))
    };
    let best = |memory: u64| {
        chains
            .iter()
            .filter(|c| c.2 == memory)
            .map(|c| c.3)
            .fold(f64::INFINITY, f64::min)
    };
    for base in baselines().filter(|b| b.2 == 1024) {
        assert!(
            best(1024) < base.3,
            "{base:?} has as few cold starts as any chain run"
        );
    }
    for chain in chains.iter().filter(|c| c.2 != 1024) {
        for base in runs
            .iter()
            .filter(|r| !matches!(r.0.as_str(), "chain" | "oracle"))
        {
            let dominates = base.2 == chain.2
                && base.3 <= chain.3
                && base.4 <= chain.4
                && (base.3 < chain.3 || base.4 < chain.4);
            assert!(!dominates, "{base:?} dominates {chain:?}");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn sim_sizes_instances_by_the_largest_peak_a_log_recorded() {
    // A log with `mem_peak_mib` sizes each function's instances by its largest recorded
    // peak; a function that recorded none takes `--instance-mib`.
    let dir = temp_dir("peaks");
    let log = dir.join("peaks.jsonl");
    let mut text = String::new();
    for (i, (task, peak)) in [
        ("a", Some(100)),
        ("a", Some(300)),
        ("b", None),
        ("a", Some(200)),
    ]
    .iter()
    .enumerate()
    {
        let peak = peak.map_or(String::new(), |mib| format!(r#","mem_peak_mib":{mib}"#));
        text.push_str(&format!(
            r#"{{"ts":{},"task":"{task}","invocation":"{i}","duration_us":1000{peak}}}"#,
            1_767_225_600_000_000_000u64 + i as u64 * 60_000_000_000
        ));
        text.push('\n');
    }
    std::fs::write(&log, text).unwrap();
    let arrivals = dir.join("arrivals.csv");
    let report = ok_json(&[
        "sim",
        "--trace",
        log.to_str().unwrap(),
        "--train-until",
        "00:00",
        "--policies",
        "ttl",
        "--instance-mib",
        "64",
        "--export-arrivals",
        arrivals.to_str().unwrap(),
        "--json",
    ]);
    let header = report["header"].as_str().unwrap();
    assert!(
        header.contains("from the trace for 1 of 2 functions, 64 MiB for the rest"),
        "{header}"
    );
    let exported = std::fs::read_to_string(&arrivals).unwrap();
    assert!(
        exported
            .lines()
            .any(|l| l.starts_with("a,") && l.ends_with(",300")),
        "{exported}"
    );
    assert!(
        exported
            .lines()
            .any(|l| l.starts_with("b,") && l.ends_with(",64")),
        "{exported}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn sim_agrees_with_dslab_faas_on_the_azure_fixture() {
    // Issue 32: the fixed keep-alive and the hybrid histogram, replayed by `baton sim` on
    // the committed Azure 2019 fixture (57 functions, 8 hours), against what dslab-faas
    // (an independent simulator) gave for the very same arrivals and the same reuse rule
    // (`tests/fixtures/azure2019-sample/dslab.json`, made by scripts/dslab-check.sh): cold
    // starts within 15 %, idle memory within 25 % (docs/sim/validation.md).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/azure2019-sample");
    let pinned: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dslab.json")).unwrap()).unwrap();
    let trace = dir.join("azure2019_invocations.csv");
    let runs = pinned["same_rule"].as_array().unwrap();
    assert_eq!(
        runs.len(),
        8,
        "2 arrival modes × 2 reuse rules × 2 policies"
    );
    let mut checked = 0;
    for arrivals in ["even", "random"] {
        for reuse in ["recent", "oldest"] {
            let report = ok_json(&[
                "sim",
                "--trace",
                trace.to_str().unwrap(),
                "--train-until",
                "00:00",
                "--arrivals",
                arrivals,
                "--reuse",
                reuse,
                "--policies",
                "ttl,histogram",
                "--memory-gib",
                "1048576",
                "--cold-start-ms",
                "1000",
                "--json",
            ]);
            for ours in report["results"].as_array().unwrap() {
                let policy = ours["policy"].as_str().unwrap();
                let theirs = runs
                    .iter()
                    .find(|r| {
                        r["arrivals"] == arrivals && r["reuse"] == reuse && r["policy"] == policy
                    })
                    .unwrap_or_else(|| panic!("no dslab figure for {arrivals} {reuse} {policy}"));
                assert_eq!(ours["stats"]["invocations"], theirs["invocations"]);
                let cold = ours["stats"]["cold_starts"].as_f64().unwrap()
                    / theirs["cold_starts"].as_f64().unwrap();
                let idle =
                    ours["idle_gb_s"].as_f64().unwrap() / theirs["idle_gb_s"].as_f64().unwrap();
                let what = format!("{arrivals} arrivals, reuse {reuse}, {policy}: cold ×{cold:.3}, idle ×{idle:.3}");
                eprintln!("{what}");
                assert!((cold - 1.0).abs() <= 0.15, "{what}");
                assert!((idle - 1.0).abs() <= 0.25, "{what}");
                if policy == "ttl" {
                    // A fixed keep-alive leaves nothing to model differently.
                    assert!(
                        (cold - 1.0).abs() <= 0.01 && (idle - 1.0).abs() <= 0.01,
                        "{what}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 8);
}

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .display()
        .to_string()
}

#[test]
fn bench_hop_and_coldstart_print_their_figures() {
    // Few iterations: this checks the harness and its output, not the figures (the release
    // build measures those: `cargo run --release -- bench hop`).
    let hop = ok_json(&[
        "bench",
        "hop",
        "--iterations",
        "200",
        "--sparse",
        "3",
        "--examples",
        &examples(),
        "--json",
    ]);
    assert_eq!(hop["handoff"]["n"], 200);
    let sparse = hop["sparse"].as_array().unwrap();
    assert_eq!(sparse.len(), 2, "10 and 100 ms: {hop}");
    for row in sparse {
        assert_eq!(row["invoke"]["n"], 3, "{row}");
        // Each machine probe ran: a ratio of two medians, each over at least one run.
        for probe in ["compute_ratio", "memory_ratio", "memory_ratio_spinning"] {
            assert!(
                row["machine"][probe].as_f64().unwrap() > 0.0,
                "{probe}: {row}"
            );
        }
    }
    for field in ["handoff", "http", "handoff_with_result", "http_with_result"] {
        assert!(
            hop[field]["p50_us"].as_f64().unwrap() > 0.0,
            "{field}: {hop}"
        );
    }
    assert!(hop["ratio_p50"].as_f64().unwrap() > 0.0);
    // --sparse 0 skips the sparse rows.
    let tight = ok_json(&[
        "bench",
        "hop",
        "--iterations",
        "20",
        "--sparse",
        "0",
        "--examples",
        &examples(),
        "--json",
    ]);
    assert_eq!(tight["sparse"], serde_json::json!([]), "{tight}");

    let cold = ok_json(&[
        "bench",
        "coldstart",
        "--runs",
        "1",
        "--examples",
        &examples(),
        "--json",
    ]);
    let rows = cold["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        7,
        "wasm uncached, wasm cached, python sandboxed, python bare, forked, forked by rlimit, spare"
    );
    let memory = cold["memory"].as_array().unwrap();
    assert_eq!(
        memory.len(),
        5,
        "a compiled module's growth of the host, plain worker, template, forked worker, spare"
    );
    assert!(memory[0]["case"]
        .as_str()
        .unwrap()
        .starts_with("wasm module"));
    // The processes are measured whole; the module as a difference (which a freed
    // allocation elsewhere can hide), so only its presence is checked.
    for row in &memory[1..] {
        assert!(row["pss_kib"].as_u64().unwrap() > 0, "{row}");
        assert!(row["private_kib"].as_u64().unwrap() > 0, "{row}");
    }
    for row in rows {
        assert!(
            row["cold"]["p50_us"].as_f64().unwrap() > row["warm"]["p50_us"].as_f64().unwrap(),
            "{row}"
        );
    }

    let output = baton(&["bench", "hop", "--payload", "0"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--payload"));
    let output = baton(&[
        "bench",
        "hop",
        "--iterations",
        "5",
        "--examples",
        "/nonexistent",
    ]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("/nonexistent"), "{message}");
}

#[test]
fn bench_peers_runs_baton_alone_when_every_peer_is_skipped() {
    let report = ok_json(&[
        "bench",
        "peers",
        "--skip-peer",
        "serverless-offline",
        "--skip-peer",
        "functions-framework",
        "--skip-peer",
        "wasmtime",
        "--requests",
        "5",
        "--cold-runs",
        "1",
        "--idle-secs",
        "1",
        "--throughput-secs",
        "0.5",
        "--json",
    ]);
    let cells = report["cells"].as_array().unwrap();
    // 2 baton systems × 4 scenarios.
    assert_eq!(cells.len(), 8, "{report}");
    assert!(
        cells.iter().all(|c| c["p50"].as_f64().unwrap() > 0.0),
        "{report}"
    );
    assert_eq!(report["skipped"].as_array().unwrap().len(), 3);
    let output = baton(&["bench", "peers", "--skip-peer", "lambda"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected one of"));
}

#[test]
fn callers_dropped_from_the_fixture_are_mined_back() {
    // The fixture's spans with their parent ids dropped (trace ids kept, then dropped too),
    // mined back: the header scores the mined links against the spans' own.
    let header = |mode: &str| -> String {
        let out = temp_dir(&format!("mine-{mode}"));
        let sim = ok_json(&[
            "sim",
            "--trace",
            fixture().to_str().unwrap(),
            "--train-until",
            "11:39:20",
            "--policies",
            "chain",
            "--callers",
            mode,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        sim["header"].as_str().unwrap().to_owned()
    };
    let score = |mode: &str| -> (f64, f64) {
        let header = header(mode);
        let number = |after: &str| -> f64 {
            let at = header.find(after).unwrap_or_else(|| panic!("{header}")) + after.len();
            header[at..]
                .split(|c: char| c == ',' || c.is_whitespace())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (number("precision "), number("recall "))
    };
    let (precision, recall) = score("mine-parents");
    assert!(precision >= 0.9 && recall >= 0.9, "{precision} {recall}");
    let (precision, recall) = score("mine");
    assert!(precision >= 0.8 && recall >= 0.9, "{precision} {recall}");
    // Dropped and not mined back: no link at all.
    assert!(header("drop").contains("callers dropped: every call a request of its own"));
}
