//! `baton serve` as a real process and the CLI as its client (the developer loop, `new`,
//! `up` and `deploy`, is in `devloop.rs`). Driven by the CLI's own client commands; then killed
//! with SIGKILL and started again on the same data directory: functions, sequences and the
//! learned graph come back, the next chain is pre-warmed without relearning, and the
//! asynchronous invocations accepted before the kill are completed (pure functions) or
//! reported failed, never lost. The CLI also talks HTTPS to a server behind a private CA
//! (`BATON_CA_CERT`), with `openssl s_server` standing in for the TLS proxy.

mod common;

use common::{baton, ok, serve, serve_args, serve_under, Served};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn get(url: &str, path: &str) -> Value {
    let client = baton_client(url);
    client.get(path).unwrap().json()
}

/// The order pipeline's part of `/v1/graph`: node weights and edges (from, to,
/// probability, mean delay µs), sorted.
type PipelineGraph = (Vec<(String, String)>, Vec<(String, String, String, String)>);

fn pipeline_graph(graph: &Value) -> PipelineGraph {
    let pipeline = ["validate", "price", "reserve", "reject", "notify"];
    let ours = |v: &Value| pipeline.contains(&v.as_str().unwrap_or(""));
    let mut nodes: Vec<(String, String)> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| ours(&n["task"]))
        .map(|n| (n["task"].to_string(), n["weight"].to_string()))
        .collect();
    nodes.sort();
    let mut edges: Vec<(String, String, String, String)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| ours(&e["from"]) && ours(&e["to"]))
        .map(|e| {
            (
                e["from"].to_string(),
                e["to"].to_string(),
                format!("{:.9}", e["probability"].as_f64().unwrap()),
                format!("{:.3}", e["delay_mean_us"].as_f64().unwrap_or(-1.0)),
            )
        })
        .collect();
    edges.sort();
    (nodes, edges)
}

fn baton_client(url: &str) -> baton_server::client::Client {
    baton_server::client::Client::new(url, None).unwrap()
}

#[test]
fn a_killed_server_comes_back_with_what_it_learned() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, url, _) = serve(&data);

    // Deploy with the CLI: the order pipeline and two slow functions, one pure.
    let mut manifests: Vec<String> = std::fs::read_dir(examples().join("order"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    manifests.sort();
    let mut args = vec!["deploy", "--server", &url];
    args.extend(manifests.iter().map(String::as_str));
    let deployed = ok(&args);
    assert_eq!(deployed.lines().count(), 5, "{deployed}");
    let slow = dir.path().join("slow.toml");
    let code = examples().join("python").display().to_string();
    for (name, pure) in [("slow-pure", true), ("slow-impure", false)] {
        std::fs::write(
            &slow,
            format!(
                "name = \"{name}\"\nkind = \"process\"\ncommand = [\"python3\", \"-u\", \"upper.py\"]\nworkdir = {code:?}\npure = {pure}\n"
            ),
        )
        .unwrap();
        ok(&["deploy", "--server", &url, &slow.display().to_string()]);
    }

    // Learn the pipeline through the CLI.
    let order = r#"{"order":1,"item":"book","qty":1,"credit":100}"#;
    for _ in 0..4 {
        let out = ok(&["invoke", "validate", "--data", order, "--server", &url]);
        assert!(out.contains(r#""status":"reserved""#), "{out}");
    }
    let logs = ok(&["logs", "--tail", "4", "--server", &url]);
    assert_eq!(logs.lines().count(), 4);
    let top = ok(&["top", "--once", "--server", &url]);
    assert!(top.contains("policy chain"), "{top}");
    let dot = ok(&["graph", "--server", &url]);
    assert!(dot.contains("digraph"));
    // What the live server learned of the pipeline (published within its 20 ms bound and
    // the 50 ms housekeeping).
    std::thread::sleep(Duration::from_millis(300));
    let learned_live = pipeline_graph(&get(&url, "/v1/graph"));
    assert_eq!(learned_live.1.len(), 3, "{learned_live:?}");

    // Accepted, then the server dies mid-way.
    let pure = ok(&[
        "invoke",
        "slow-pure",
        "--data",
        "sleep:2",
        "--async",
        "--server",
        &url,
    ]);
    let impure = ok(&[
        "invoke",
        "slow-impure",
        "--data",
        "sleep:2",
        "--async",
        "--server",
        &url,
    ]);
    std::thread::sleep(Duration::from_millis(1_500)); // a snapshot is taken every second
    server.kill().unwrap(); // SIGKILL: no shutdown, no last snapshot
    server.wait().unwrap();

    let (mut server, url, log) = serve(&data);
    eprint!("{log}");
    assert!(log.contains("7 functions"), "{log}");
    assert!(log.contains("a graph snapshot"), "{log}");
    assert!(log.contains("async: 1 re-run, 1 failed"), "{log}");

    // The same graph as the server that never stopped: counts, probabilities and delays.
    let restored = pipeline_graph(&get(&url, "/v1/graph"));
    assert_eq!(restored, learned_live);

    // The graph is back: the chain from validate is predicted before any new request.
    let predicted = get(&url, "/v1/predictions?from=validate&n=1");
    let tasks = predicted["chains"][0]["tasks"].to_string();
    assert!(
        tasks.contains("price") && tasks.contains("notify"),
        "{predicted}"
    );

    // And acted on: the next request's Python steps come from pre-warms, but for price
    // when it asks for its worker (microseconds after validate starts) before the planner
    // has heard of validate: it then starts its own at once and the pre-warm is dropped as
    // overtaken (counted), never waited for.
    let overtaken = |url: &str| {
        get(url, "/v1/pool")["counters"]["prewarms_overtaken"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = overtaken(&url);
    let response = baton_client(&url)
        .request(
            "POST",
            "/v1/functions/validate/invoke",
            "application/json",
            order.as_bytes(),
        )
        .unwrap()
        .json();
    let warmth: Vec<(String, String)> = response["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["task"].as_str().unwrap().to_owned(),
                s["warmth"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    eprintln!("first request after the restart: {warmth:?}");
    let tasks: Vec<&str> = warmth.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        tasks,
        ["validate", "price", "reserve", "notify"],
        "the whole chain ran"
    );
    for (task, how) in &warmth {
        if task == "price" && how == "cold" {
            // The planner carried it out while the chain's later steps ran.
            assert!(
                overtaken(&url) > before,
                "price started cold, and its pre-warm was not overtaken: {warmth:?}"
            );
        } else if task == "price" || task == "notify" {
            assert!(how.starts_with("prewarm"), "{task} was {how}: {warmth:?}");
        }
    }

    // The async invocations: the pure one completed, the other reported failed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pure_state = loop {
        let state = get(&url, &format!("/v1/invocations/{}", pure.trim()));
        if state["state"] == "succeeded" || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(pure_state["state"], "succeeded", "{pure_state}");
    let impure_state = get(&url, &format!("/v1/invocations/{}", impure.trim()));
    assert_eq!(impure_state["state"], "failed");
    assert!(impure_state["error"]
        .as_str()
        .unwrap()
        .contains("interrupted by a server restart"));

    // A removed function leaves the graph, and stays out of it after another SIGKILL.
    ok(&["functions", "delete", "notify", "--server", &url]);
    let mentions_notify = |graph: &Value| graph.to_string().contains("\"notify\"");
    assert!(
        !mentions_notify(&get(&url, "/v1/graph")),
        "{}",
        get(&url, "/v1/graph")
    );
    assert!(
        pipeline_graph(&get(&url, "/v1/graph")).1.len() >= 2,
        "the rest stays"
    );
    server.kill().unwrap();
    server.wait().unwrap();
    let (mut server, url, _) = serve(&data);
    let graph = get(&url, "/v1/graph");
    assert!(
        !mentions_notify(&graph),
        "notify came back after a restart: {graph}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn serve_refuses_no_auth_off_loopback_and_clients_name_the_server() {
    let output = baton(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--no-auth",
        "--data-dir",
        "/tmp/baton-never",
    ]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("only allowed on a loopback address"),
        "{message}"
    );
    // The same from the environment: every serve flag has its variable.
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("serve")
        .env("BATON_LISTEN", "0.0.0.0:0")
        .env("BATON_NO_AUTH", "1")
        .env("BATON_DATA_DIR", "/tmp/baton-never")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("only allowed on a loopback address"),
        "{message}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["serve", "--no-auth", "--data-dir", "/tmp/baton-never"])
        .env("BATON_KEEP_ALIVE_SECS", "-1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("--keep-alive-secs -1"));
    for (flag, value) in [("--max-connections", "0"), ("--header-timeout-secs", "0")] {
        let output = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "serve",
                "--no-auth",
                "--data-dir",
                "/tmp/baton-never",
                flag,
                value,
            ])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(message.contains(&format!("{flag} {value}")), "{message}");
    }
    let output = baton(&["invoke", "x", "--server", "http://127.0.0.1:1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("127.0.0.1:1"));
    assert_eq!(output.status.code(), Some(3), "unreachable");
    let output = baton(&["invoke", "x", "--server", "ftp://nowhere"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected http://HOST[:PORT]"));
    assert_eq!(output.status.code(), Some(3), "no server to reach");
    let output = baton(&["invoke"]);
    assert_eq!(output.status.code(), Some(2), "usage");
}

#[test]
fn the_cli_takes_what_people_type_and_says_how_it_ended() {
    let data = tempfile::tempdir().unwrap();
    let (_server, url, _) = serve(data.path());
    // The URL without its scheme, as typed; BATON_SERVER is honoured.
    let bare = url.trim_start_matches("http://").to_owned();
    // A directory deploys each manifest in it.
    let deployed = ok(&[
        "deploy",
        examples().join("order").to_str().unwrap(),
        "--server",
        &bare,
    ]);
    for name in ["notify", "price", "reject", "reserve", "validate"] {
        assert!(deployed.contains(name), "{deployed}");
    }
    // The payload from standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["invoke", "validate", "--data", "@-"])
        .env("BATON_SERVER", &bare)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        br#"{"order":1,"item":"book","qty":1,"credit":500}"#,
    )
    .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("book"), "{text}");
    // graph and predict ask the server BATON_SERVER names when given no state or log.
    for _ in 0..3 {
        ok(&[
            "invoke",
            "validate",
            "--server",
            &bare,
            "--data",
            r#"{"order":2,"item":"book","qty":1,"credit":500}"#,
        ]);
    }
    let started = Instant::now();
    let predicted = loop {
        let output = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["predict", "--from", "validate"])
            .env("BATON_SERVER", &bare)
            .output()
            .unwrap();
        if output.status.success() {
            break String::from_utf8_lossy(&output.stdout).into_owned();
        }
        // Learned when each request has ended; the graph is published shortly after.
        assert_eq!(output.status.code(), Some(4), "{output:?}");
        assert!(started.elapsed() < Duration::from_secs(20), "{output:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(predicted.contains("validate → price"), "{predicted}");
    assert!(!predicted.contains("rhythm"), "{predicted}");
    // A job learned from logs to run every 15 minutes (last 5 min ago): predict says when
    // it comes next.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let timer: String = (0..4u64)
        .map(|k| {
            let ts = now_ns - 3_000_000_000_000 + k * 900_000_000_000;
            format!(
                "{{\"ts\":{ts},\"task\":\"report\",\"invocation\":\"r{k}\",\"duration_us\":500}}\n"
            )
        })
        .collect();
    let posted = baton_client(&url)
        .request("POST", "/v1/logs", "application/x-ndjson", timer.as_bytes())
        .unwrap();
    assert_eq!(posted.status, 200, "{}", posted.text());
    let report = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["predict", "--from", "report"])
        .env("BATON_SERVER", &bare)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.contains("rhythm: 1 start(s) every 15 min, next in "),
        "{report}"
    );
    let graph = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["graph", "--format", "json"])
        .env("BATON_SERVER", &bare)
        .output()
        .unwrap();
    let graph: serde_json::Value = serde_json::from_slice(&graph.stdout).unwrap();
    assert!(graph.to_string().contains("price"), "{graph}");
    // What the server holds, listed, shown and removed.
    let listed = ok(&["functions", "list", "--server", &bare]);
    assert_eq!(listed.lines().count(), 5, "{listed}");
    assert!(
        listed.contains("validate") && listed.contains("wasm"),
        "{listed}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["functions", "get", "reject", "--server", &bare])).unwrap();
    assert_eq!(shown["name"], "reject");
    ok(&[
        "sequences",
        "put",
        "twice",
        "validate",
        "validate",
        "--server",
        &bare,
    ]);
    let sequences = ok(&["sequences", "list", "--server", &bare]);
    assert!(sequences.contains("twice") && sequences.contains("validate → validate"));
    ok(&["sequences", "delete", "twice", "--server", &bare]);
    assert!(!ok(&["sequences", "list", "--server", &bare]).contains("twice"));
    ok(&["functions", "delete", "reject", "--server", &bare]);
    let output = baton(&["functions", "get", "reject", "--server", &bare]);
    assert_eq!(output.status.code(), Some(4), "gone");
    // An asynchronous invocation, followed by its id.
    let id = ok(&[
        "invoke",
        "validate",
        "--async",
        "--server",
        &bare,
        "--data",
        r#"{"order":3,"item":"book","qty":1,"credit":500}"#,
    ]);
    let id = id.trim();
    let started = Instant::now();
    loop {
        let got: serde_json::Value =
            serde_json::from_str(&ok(&["invocations", "get", id, "--server", &bare])).unwrap();
        if got["state"] == "succeeded" {
            assert!(
                got["response"]["output"].as_str().unwrap().contains("book"),
                "{got}"
            );
            break;
        }
        assert_ne!(got["state"], "failed", "{got}");
        assert!(started.elapsed() < Duration::from_secs(20), "{got}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = ok(&[
        "invocations",
        "list",
        "--function",
        "validate",
        "--server",
        &bare,
    ]);
    assert!(
        listed.contains(id) && listed.contains("succeeded"),
        "{listed}"
    );
    // Forgotten: no longer listed, no longer found (exit 4: refused there).
    assert_eq!(
        ok(&["invocations", "delete", id, "--server", &bare]).trim(),
        format!("removed {id}")
    );
    let gone = baton(&["invocations", "get", id, "--server", &bare]);
    assert_eq!(gone.status.code(), Some(4), "{gone:?}");
    assert!(ok(&[
        "invocations",
        "list",
        "--function",
        "price",
        "--server",
        &bare
    ])
    .is_empty());
    let output = baton(&[
        "invocations",
        "get",
        "0190aaaa-0000-7000-8000-000000000000",
        "--server",
        &bare,
    ]);
    assert_eq!(output.status.code(), Some(4), "unknown id");
    // A name the server does not know: it answered, so 4, not 1 or 3.
    let output = baton(&["invoke", "nothing-here", "--server", &bare]);
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing-here"));
    // `top` into a closed pipe: no escape codes, no panic; it ends when the reader does.
    let mut top = Command::new("sh")
        .args([
            "-c",
            &format!(
                "{} top --server {bare} --interval 0.1 | head -3",
                env!("CARGO_BIN_EXE_baton")
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = top.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "top did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = top.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(status.success(), "{err}");
    assert!(out.starts_with("baton at http://"), "{out:?}");
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn ids_stay_unique_when_the_server_restarts_as_pid_1() {
    // In a container the server is PID 1 at every start: ids derived from the PID collide.
    let wrapper: &[&str] = &["unshare", "--pid", "--fork", "--kill-child"];
    let pid_namespaces = Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let wrapper = if pid_namespaces {
        eprintln!("path: each start as PID 1 of a new PID namespace");
        wrapper
    } else {
        eprintln!("path: unshare --pid not permitted here; plain restarts only");
        &[]
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut async_ids = std::collections::HashSet::new();
    let mut traces = std::collections::HashSet::new();
    for life in 0..2 {
        let (mut child, url, _) = serve_under(wrapper, &data);
        if life == 0 {
            let manifest = dir.path().join("upper.toml");
            let module = examples().join("wat/upper.wat");
            std::fs::write(
                &manifest,
                format!(
                    "name = \"upper\"\nkind = \"wasm\"\nmodule = {:?}\n",
                    module.display().to_string()
                ),
            )
            .unwrap();
            ok(&["deploy", "--server", &url, &manifest.display().to_string()]);
        }
        let client = baton_client(&url);
        let order = b"unique";
        for _ in 0..3 {
            let accepted = client
                .request(
                    "POST",
                    "/v1/functions/upper/invoke?async=true",
                    "application/json",
                    order,
                )
                .unwrap();
            assert_eq!(accepted.status, 202, "life {life}: {}", accepted.text());
            let id = accepted.json()["id"].as_str().unwrap().to_owned();
            assert!(
                async_ids.insert(id.clone()),
                "life {life}: async id {id} seen before"
            );
            let done = client
                .request(
                    "POST",
                    "/v1/functions/upper/invoke",
                    "application/json",
                    order,
                )
                .unwrap();
            assert_eq!(done.status, 200, "{}", done.text());
            let trace = done.json()["trace"].as_str().unwrap().to_owned();
            assert!(
                traces.insert(trace.clone()),
                "life {life}: trace {trace} seen before"
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    eprintln!(
        "{} async ids and {} traces over two lives, all distinct",
        async_ids.len(),
        traces.len()
    );
}

#[test]
fn the_server_writes_one_access_line_per_request_and_honours_rust_log() {
    let data = tempfile::tempdir().unwrap();
    let run = |rust_log: Option<&str>| -> String {
        let log_path = data.path().join("stderr.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .args(serve_args(&data.path().join("data")))
            .stderr(Stdio::from(log));
        command.env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let server = Served(command.spawn().unwrap());
        let started = Instant::now();
        let url = loop {
            let text = std::fs::read_to_string(&log_path).unwrap();
            if let Some(line) = text.lines().find(|l| l.starts_with("baton listening on ")) {
                break line
                    .trim_start_matches("baton listening on ")
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let client = baton_client(&url);
        assert_eq!(client.get("/v1/functions?secret=1").unwrap().status, 200);
        assert_eq!(client.get("/v1/nothing").unwrap().status, 404);
        std::thread::sleep(Duration::from_millis(200));
        drop(server);
        std::fs::read_to_string(&log_path).unwrap()
    };
    let text = run(None);
    let access: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("baton::access"))
        .collect();
    assert_eq!(access.len(), 2, "{text}");
    assert!(
        access[0].contains("method=GET")
            && access[0].contains("path=/v1/functions")
            && access[0].contains("status=200"),
        "{text}"
    );
    assert!(!access[0].contains("secret"), "no query in the log: {text}");
    assert!(access[1].contains("status=404"), "{text}");
    let quiet = run(Some("baton::access=off"));
    assert!(!quiet.contains("baton::access"), "{quiet}");
}

/// `baton new` → the template's own test → `baton up --once` → `baton up` redeploying a
/// changed file → `baton deploy` of the app to another server; and an app manifest with a
/// mistake is refused with the file and the function named.
#[test]
fn the_cli_talks_https_to_a_server_behind_a_private_ca() {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is missing: .ci/run installs it"
        );
        eprintln!("NOT RUN: openssl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::certificates(dir.path());
    // openssl's HTTPS file server stands in for a TLS proxy in front of baton: it answers
    // GET /v1/functions with the file www/v1/functions.
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("v1")).unwrap();
    std::fs::write(
        www.join("v1/functions"),
        r#"{"functions":[{"name":"behind-tls","kind":"wasm"}]}"#,
    )
    .unwrap();
    let pem = |name: &str| dir.path().join(name).display().to_string();
    // Port 0: it prints `ACCEPT 127.0.0.1:PORT` once bound.
    let (_tls, port) = common::start_announcing(
        Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0"])
            .args(["-cert", &pem("server.pem"), "-key", &pem("server.key")])
            .arg("-WWW")
            .current_dir(&www),
        "ACCEPT ",
        "openssl s_server",
    );
    let url = format!("https://127.0.0.1:{port}");
    let list = |ca: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command.args(["functions", "list", "--server", &url]);
        match ca {
            Some(ca) => command.env("BATON_CA_CERT", ca),
            None => command.env_remove("BATON_CA_CERT"),
        };
        command.output().unwrap()
    };
    // The private CA trusted: the list comes over TLS.
    let trusted = list(Some(&pem("ca.pem")));
    assert!(trusted.status.success(), "{trusted:?}");
    assert!(
        String::from_utf8_lossy(&trusted.stdout).contains("behind-tls"),
        "{trusted:?}"
    );
    // Not trusted: refused as unreachable, saying why; a CA file that is not there is named.
    let untrusted = list(None);
    assert_eq!(untrusted.status.code(), Some(3), "{untrusted:?}");
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("UnknownIssuer"),
        "{untrusted:?}"
    );
    let missing = list(Some("/nonexistent/ca.pem"));
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/ca.pem"),
        "{missing:?}"
    );
}
