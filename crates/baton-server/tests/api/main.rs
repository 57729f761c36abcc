//! Black-box tests through the HTTP API on loopback: deploy, invoke (sync and async),
//! sequences, log ingestion, graph and predictions, metrics, and every kind of bad input.

use base64::Engine as _;
use baton_core::policy::spec::{PolicyName, PolicySpec};
use baton_server::client::{Client, Response};
use baton_server::{RunningServer, ServerConfig, ROUTES};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod bounds;
mod browser;
mod dashboard;
mod disk;
mod otlp;

const TOKEN: &str = "s3cret";

/// Declares sequence `name` of `steps`.
fn declare(api: &Client, name: &str, steps: &[&str]) -> Response {
    api.request(
        "POST",
        &format!("/v1/sequences/{name}"),
        "application/json",
        json!({ "steps": steps }).to_string().as_bytes(),
    )
    .unwrap()
}

/// Asserts that `response` answered `status` with a body that says `says`.
fn assert_refused(response: &Response, status: u16, says: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert!(
        response.text().contains(says),
        "expected {says:?} in {}",
        response.text()
    );
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn start(dir: &Path, configure: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_owned());
    config.token = Some(TOKEN.into());
    config.allow_process_functions = true;
    configure(&mut config);
    RunningServer::start(config).unwrap()
}

fn client(server: &RunningServer) -> Client {
    Client::new(&format!("http://{}", server.addr), Some(TOKEN.into())).unwrap()
}

fn wasm_deploy(client: &Client, name: &str, module: &str) -> Response {
    let bytes = std::fs::read(examples().join(module)).unwrap();
    let body = json!({
        "manifest": format!("name = \"{name}\"\nkind = \"wasm\"\nmodule = \"uploaded.wasm\"\nmemory_mib = 16\ntimeout_ms = 2000\npure = true\n"),
        "module_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
    });
    put_json(client, name, &body)
}

fn python_manifest(name: &str, script: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"process\"\ncommand = [\"python3\", \"-u\", {script:?}]\nmemory_mib = 128\ntimeout_ms = 10000\n{extra}"
    )
}

/// Deploys a process function whose code is `examples/python`, packed as `baton deploy`
/// packs it.
fn put_python(client: &Client, name: &str, manifest: &str) -> Response {
    let code = baton_runtime::code::pack_dir(&examples().join("python")).unwrap();
    let body = json!({
        "manifest": manifest,
        "code_base64": base64::engine::general_purpose::STANDARD.encode(code),
    });
    put_json(client, name, &body)
}

fn put_toml(client: &Client, name: &str, manifest: &str) -> Response {
    client
        .request(
            "PUT",
            &format!("/v1/functions/{name}"),
            "application/toml",
            manifest.as_bytes(),
        )
        .unwrap()
}

fn invoke(client: &Client, name: &str, payload: &str) -> Response {
    client
        .request(
            "POST",
            &format!("/v1/functions/{name}/invoke"),
            "application/octet-stream",
            payload.as_bytes(),
        )
        .unwrap()
}

/// `promtool check metrics` (Debian's `prometheus`, installed by `.ci/run`) reads the
/// scrape without a problem; without promtool, under CI the test fails, elsewhere it says
/// that this check did not run.
fn promtool_accepts(metrics: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing: .ci/run installs it (apt-get install prometheus)"
        );
        eprintln!("NOT CHECKED: promtool is not installed (apt-get install prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("promtool check metrics: no problem found");
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

/// Deploys the order pipeline: C guests uploaded as modules, Python workers as code.
pub fn deploy_order_app(client: &Client) {
    for name in ["validate", "reserve", "reject"] {
        let response = wasm_deploy(client, name, &format!("wasm/{name}.wasm"));
        assert_eq!(response.status, 201, "{}", response.text());
    }
    for (name, script) in [("price", "price.py"), ("notify", "notify.py")] {
        let response = put_python(client, name, &python_manifest(name, script, "pure = true"));
        assert_eq!(response.status, 201, "{}", response.text());
    }
}

#[test]
fn the_api_deploys_invokes_learns_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.policy = PolicySpec::new(PolicyName::Chain)
    });
    eprint!("{}", server.detection);
    let api = client(&server);

    // Auth.
    assert_eq!(api.get("/healthz").unwrap().status, 200);
    let anonymous = Client::new(&format!("http://{}", server.addr), None).unwrap();
    assert_eq!(anonymous.get("/v1/functions").unwrap().status, 401);
    let wrong = Client::new(&format!("http://{}", server.addr), Some("nope".into())).unwrap();
    let response = wrong.get("/metrics").unwrap();
    assert_refused(&response, 401, "bearer token");

    deploy_order_app(&api);
    let listed = api.get("/v1/functions").unwrap().json();
    assert_eq!(listed["functions"].as_array().unwrap().len(), 5);

    // Bad manifests and modules: 400 with the reason.
    let response = put_toml(
        &api,
        "bad",
        "name = \"bad\"\nkind = \"lambda\"\ncommand = [\"x\"]",
    );
    assert_refused(&response, 400, "manifest field `kind`");
    let response = put_toml(&api, "other", &python_manifest("mismatch", "upper.py", ""));
    assert_refused(&response, 400, "path names `other`");
    let body = json!({
        "manifest": "name = \"broken\"\nkind = \"wasm\"\nmodule = \"x.wasm\"\n",
        "module_base64": base64::engine::general_purpose::STANDARD.encode(b"not a module"),
    });
    let response = api
        .request(
            "PUT",
            "/v1/functions/broken",
            "application/json",
            body.to_string().as_bytes(),
        )
        .unwrap();
    assert_refused(&response, 400, "invalid module");

    // Deployed functions are made ready in the background: the wasm modules compiled and
    // instantiated, the Python functions' templates started, each with its spare.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pool = api.get("/v1/pool").unwrap().json();
        let modules = pool["loaded_modules"].as_array().unwrap().len();
        let templates = pool["templates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["pid"].is_u64() && t["spare"].is_u64())
            .count();
        if modules == 3 && templates == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not prepared: {pool}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Invoke: the first request is cold (its Python workers are their templates' spares),
    // later ones warm or pre-warmed.
    let order = r#"{"order":1,"item":"book","qty":2,"credit":100}"#;
    let first = invoke(&api, "validate", order).json();
    assert_eq!(first["cold"], true, "{first}");
    assert!(first["output"]
        .as_str()
        .unwrap()
        .contains(r#""notified":true"#));
    assert_eq!(first["steps"].as_array().unwrap().len(), 4);
    for _ in 0..3 {
        let again = invoke(&api, "validate", order).json();
        assert_eq!(again["cold"], false, "{again}");
    }
    let missing = invoke(&api, "nobody", "x");
    assert_eq!(missing.status, 404);
    assert!(missing
        .text()
        .contains("unknown function or sequence `nobody`"));

    // Metrics count cold starts and hits per function.
    let metrics = api.get("/metrics").unwrap().text();
    assert_eq!(
        metric(&metrics, "baton_invocations_total{function=\"price\"}"),
        4.0
    );
    assert_eq!(
        metric(&metrics, "baton_cold_starts_total{function=\"price\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "baton_cold_starts_total{function=\"validate\"}"),
        0.0,
        "compiled at deploy"
    );
    // Each step's warmth tier, by function: price's one cold step took its template's
    // spare (both made at deploy), the other three ran on a warm worker; validate's steps
    // on instances made ahead or instantiated from the module compiled at deploy.
    let tier = |function: &str, tier: &str| {
        let line = format!("baton_steps_by_tier_total{{function=\"{function}\",tier=\"{tier}\"}}");
        metrics
            .lines()
            .find(|l| l.starts_with(&line))
            .map_or(0.0, |_| metric(&metrics, &line))
    };
    assert_eq!(tier("price", "spare"), 1.0, "{metrics}");
    assert_eq!(tier("price", "forked"), 0.0);
    assert_eq!(tier("price", "worker"), 3.0);
    assert_eq!(tier("price", "spawned"), 0.0);
    assert_eq!(
        tier("validate", "instance") + tier("validate", "compiled"),
        metric(&metrics, "baton_invocations_total{function=\"validate\"}")
    );
    assert_eq!(metric(&metrics, "baton_hop_latency_seconds_count"), 12.0);
    assert_eq!(
        metric(
            &metrics,
            "baton_step_duration_seconds_count{function=\"price\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &metrics,
            "baton_cold_start_duration_seconds_count{function=\"price\"}"
        ),
        1.0
    );
    assert!(metrics.contains("baton_reservations "));
    assert!(metrics.contains("baton_idle_memory_bytes "));
    assert_eq!(metric(&metrics, "baton_learner_half_life_seconds"), 3600.0);
    assert_eq!(metric(&metrics, "baton_learner_drifting"), 0.0);
    assert!(metrics.contains("baton_build_info{version=\""), "{metrics}");
    promtool_accepts(&metrics);

    // Async: 202, then the stored outcome.
    let accepted = api
        .request(
            "POST",
            "/v1/functions/validate/invoke?async=true",
            "application/octet-stream",
            order.as_bytes(),
        )
        .unwrap();
    assert_eq!(accepted.status, 202);
    let location = accepted.header("location").unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let state = api.get(&location).unwrap().json();
        if state["state"] == "succeeded" || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["response"]["output"]
        .as_str()
        .unwrap()
        .contains("reserved"));
    assert_eq!(api.get("/v1/invocations/nope").unwrap().status, 404);
    // Forgotten once ended: its record goes.
    let forget = |path: &str| api.request("DELETE", path, "text/plain", b"").unwrap();
    assert_eq!(forget(&location).status, 204);
    assert_eq!(api.get(&location).unwrap().status, 404);
    assert_eq!(forget(&location).status, 404);

    // Sequences.
    assert_eq!(
        wasm_deploy(&api, "upper", "../examples/wat/upper.wat").status,
        201
    );
    let response = declare(&api, "shout", &["upper", "upper"]);
    assert_eq!(response.status, 201, "{}", response.text());
    let shouted = invoke(&api, "shout", "hey").json();
    assert_eq!(shouted["output"], "HEY");
    assert_eq!(shouted["steps"].as_array().unwrap().len(), 2);
    let response = declare(&api, "bad", &["ghost"]);
    assert_refused(&response, 400, "`ghost`");
    let shout = api.get("/v1/sequences/shout").unwrap().json();
    assert_eq!(shout["steps"], json!(["upper", "upper"]));
    assert_eq!(api.get("/v1/sequences/ghost").unwrap().status, 404);
    assert_eq!(
        api.request("DELETE", "/v1/sequences/shout", "text/plain", b"")
            .unwrap()
            .status,
        204
    );
    assert_eq!(api.get("/v1/sequences/shout").unwrap().status, 404);
    assert_eq!(
        api.request("DELETE", "/v1/sequences/shout", "text/plain", b"")
            .unwrap()
            .status,
        404
    );
    assert_eq!(invoke(&api, "upper", "still").json()["output"], "STILL");
    let response = declare(&api, "shout", &["upper", "upper"]);
    assert_eq!(response.status, 201, "declared again after its removal");

    // Foreign logs change the graph and the predictions.
    let mut log = String::new();
    // Recent timestamps: the graph decays (half-life 1 h), so years-old records would
    // weigh nothing next to the live ones.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for i in 0..6 {
        let ts = now_ns - 60_000_000_000 + i * 1_000_000_000;
        log.push_str(&format!("{{\"ts\":{ts},\"task\":\"cart\",\"invocation\":\"c{i}\",\"trace\":\"t{i}\",\"duration_us\":900}}\n"));
        log.push_str(&format!("{{\"ts\":{},\"task\":\"checkout\",\"invocation\":\"k{i}\",\"parent\":\"c{i}\",\"trace\":\"t{i}\",\"duration_us\":300}}\n", ts + 100_000));
    }
    log.push_str("this line is broken\n");
    let response = api
        .request("POST", "/v1/logs", "application/x-ndjson", log.as_bytes())
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let report = response.json();
    assert_eq!(report["records"], 12);
    assert_eq!(report["skipped"], 1);
    assert!(
        report["errors"][0].as_str().unwrap().contains("body:13"),
        "{report}"
    );
    let predicted = api.get("/v1/predictions?from=cart&n=3").unwrap().json();
    assert_eq!(
        predicted["chains"][0]["tasks"],
        json!(["cart", "checkout"]),
        "{predicted}"
    );
    assert_eq!(
        predicted["rhythm"],
        Value::Null,
        "six starts a second apart"
    );
    assert_eq!(api.get("/v1/predictions?from=ghost").unwrap().status, 404);
    // A job that ran every 15 minutes over the last hour: its rhythm and next start.
    let minute_ns = 60_000_000_000u64;
    let timer: String = (0..4u64)
        .map(|k| {
            let ts = now_ns - 60 * minute_ns + k * 15 * minute_ns + k * 7_000_000_000;
            format!(
                "{{\"ts\":{ts},\"task\":\"report\",\"invocation\":\"r{k}\",\"duration_us\":500}}\n"
            )
        })
        .collect();
    let response = api
        .request("POST", "/v1/logs", "application/x-ndjson", timer.as_bytes())
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let rhythm = api.get("/v1/predictions?from=report").unwrap().json()["rhythm"].clone();
    let period = rhythm["period_ms"].as_f64().unwrap();
    assert!((14.5 * 60e3..15.5 * 60e3).contains(&period), "{rhythm}");
    let next = rhythm["next_start_unix_ms"].as_u64().unwrap();
    let now_ms = now_ns / 1_000_000;
    assert!(
        next.abs_diff(now_ms + 28_000) < 5_000,
        "{rhythm} (now {now_ms})"
    );
    assert_eq!(rhythm["starts_per_period"], 1);
    let graph = api.get("/v1/graph").unwrap().json();
    let names: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["task"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"cart") && names.contains(&"price"),
        "{names:?}"
    );
    let dot = api.get("/v1/graph?format=dot").unwrap().text();
    assert!(dot.starts_with("digraph tdg"));
    let response = api
        .request("POST", "/v1/logs", "application/x-ndjson", b"garbage\n")
        .unwrap();
    assert_refused(&response, 400, "nothing to learn");
    // Records whose parent links form a cycle are dropped, and the answer says so: here
    // a request whose two records are each other's parent (lost whole), beside one whose
    // parent is missing (kept as a root).
    let looped = format!(
        "{{\"ts\":{now_ns},\"task\":\"x\",\"invocation\":\"a\",\"parent\":\"b\",\"trace\":\"loop\",\"duration_us\":1}}\n\
         {{\"ts\":{now_ns},\"task\":\"y\",\"invocation\":\"b\",\"parent\":\"a\",\"trace\":\"loop\",\"duration_us\":1}}\n\
         {{\"ts\":{now_ns},\"task\":\"z\",\"invocation\":\"c\",\"parent\":\"gone\",\"trace\":\"orphan\",\"duration_us\":1}}\n"
    );
    let response = api
        .request(
            "POST",
            "/v1/logs",
            "application/x-ndjson",
            looped.as_bytes(),
        )
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let report = response.json();
    assert_eq!(report["cycles"], 2, "{report}");
    assert_eq!(report["rootless"], 1, "{report}");
    assert_eq!(report["missing_parents"], 1, "{report}");
    assert_eq!(report["requests"], 1, "{report}");

    // A function's description names its upload by content key, not by where this server
    // keeps it.
    let described = api.get("/v1/functions/upper").unwrap().text();
    let data = dir.path().display().to_string();
    assert!(!described.contains(&data), "{described}");
    let described: serde_json::Value = serde_json::from_str(&described).unwrap();
    let hash = described["module_hash"].as_str().unwrap();
    assert_eq!(described["target"], format!("{hash}.wasm"), "{described}");

    let pool = api.get("/v1/pool").unwrap().json();
    assert_eq!(pool["policy"], "chain");
    assert!(pool["capacity"]["cores"].as_u64().unwrap() >= 1);

    // Delete.
    let response = api
        .request("DELETE", "/v1/functions/upper", "text/plain", b"")
        .unwrap();
    assert_eq!(response.status, 204);
    assert_eq!(api.get("/v1/functions/upper").unwrap().status, 404);
    server.stop();
}

#[test]
fn auth_off_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new("0.0.0.0:0".parse().unwrap(), dir.path().to_owned());
    let error = RunningServer::start(config).unwrap_err().to_string();
    assert!(
        error.contains("only allowed on a loopback address"),
        "{error}"
    );
}

#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"),
    )
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let mut routed: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
    // And every route answers (not 404/405) on a live server.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {});
    let api = client(&server);
    for (method, path) in ROUTES {
        let path = path.replace("{name}", "x").replace("{id}", "x");
        let path = if path == "/v1/predictions" {
            "/v1/predictions?from=x".into()
        } else {
            path
        };
        let response = api
            .request(method, &path, "application/json", b"{}")
            .unwrap();
        assert_ne!(response.status, 405, "{method} {path}");
        if response.status == 404 {
            assert!(
                response.json()["error"].is_string(),
                "{method} {path}: a route's own 404"
            );
        }
    }
    server.stop();
}

/// A deploy request carrying `body` as JSON.
fn put_json(client: &Client, name: &str, body: &Value) -> Response {
    client
        .request(
            "PUT",
            &format!("/v1/functions/{name}"),
            "application/json",
            body.to_string().as_bytes(),
        )
        .unwrap()
}

#[test]
fn a_deploy_never_opens_a_path_the_request_names() {
    let dir = tempfile::tempdir().unwrap();
    // A secret file, and a FIFO: opening the FIFO for reading would block the server's
    // deploy until a writer comes, which never happens, so a prompt answer proves the
    // server did not open it.
    let secret = dir.path().join("secret.wat");
    std::fs::write(&secret, "(module) ;; TOP-SECRET-LINE").unwrap();
    let fifo = dir.path().join("fifo.wasm");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let data = dir.path().join("data");
    let server = start(&data, |_| {});
    let api = client(&server);
    for path in [
        &secret,
        &fifo,
        &PathBuf::from("/etc/shadow"),
        &PathBuf::from("../../etc/hostname"),
    ] {
        let manifest = format!(
            "name = \"peek\"\nkind = \"wasm\"\nmodule = {:?}\n",
            path.display().to_string()
        );
        let started = Instant::now();
        for response in [
            put_toml(&api, "peek", &manifest),
            put_json(&api, "peek", &json!({ "manifest": manifest })),
        ] {
            assert_refused(&response, 400, "module_base64");
            assert!(
                !response.text().contains("TOP-SECRET"),
                "{}",
                response.text()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} was opened",
            path.display()
        );
    }
    // A process function's workdir is never opened either: its code must come along.
    let manifest = format!(
        "name = \"peek\"\nkind = \"process\"\ncommand = [\"python3\", \"x.py\"]\nworkdir = {:?}\n",
        dir.path().display().to_string()
    );
    let response = put_toml(&api, "peek", &manifest);
    assert_refused(&response, 400, "code_base64");
    // An absolute program, or one climbing out of the uploaded code, is refused.
    for program in ["/bin/sh", "../bin/sh"] {
        let manifest = format!("name = \"peek\"\nkind = \"process\"\ncommand = [{program:?}]\n");
        let response = put_python(&api, "peek", &manifest);
        assert_eq!(response.status, 400, "{program}: {}", response.text());
        assert!(response.text().contains("`command`"), "{}", response.text());
    }
    assert_eq!(api.get("/v1/functions/peek").unwrap().status, 404);
}

#[test]
fn process_functions_over_http_are_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.allow_process_functions = false);
    let api = client(&server);
    let response = put_python(&api, "upper", &python_manifest("upper", "upper.py", ""));
    assert_refused(&response, 403, "--allow-process-functions");
    // Wasm still deploys.
    let response = wasm_deploy(&api, "validate", "wasm/validate.wasm");
    assert_eq!(response.status, 201, "{}", response.text());
}

#[test]
fn uploaded_code_runs_and_a_hostile_archive_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {});
    let api = client(&server);
    let response = put_python(&api, "upper", &python_manifest("upper", "upper.py", ""));
    assert_eq!(response.status, 201, "{}", response.text());
    let response = api
        .request(
            "POST",
            "/v1/functions/upper/invoke",
            "application/octet-stream",
            b"jailed",
        )
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["output"], "JAILED");
    let body = json!({
        "manifest": python_manifest("evil", "upper.py", ""),
        "code_base64": base64::engine::general_purpose::STANDARD.encode(b"not a tar.gz"),
    });
    let response = put_json(&api, "evil", &body);
    assert_refused(&response, 400, "code archive");
}

#[test]
fn an_invocation_continues_the_callers_trace() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {});
    let api = client(&server);
    assert_eq!(wasm_deploy(&api, "upper", "wat/upper.wat").status, 201);
    let order = b"trace me";
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = api
        .request_with_headers(
            "POST",
            "/v1/functions/upper/invoke",
            "application/json",
            &[("traceparent", caller)],
            order,
        )
        .unwrap();
    assert_eq!(traced.status, 200, "{}", traced.text());
    let body = traced.json();
    assert_eq!(body["trace"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let span = body["steps"][0]["invocation"].as_str().unwrap();
    assert_eq!(span.len(), 16);
    assert_eq!(
        traced.header("traceparent"),
        Some(format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01").as_str())
    );
    // A malformed header starts a trace of its own.
    let fresh = api
        .request_with_headers(
            "POST",
            "/v1/functions/upper/invoke",
            "application/json",
            &[("traceparent", "00-zz-00f067aa0ba902b7-01")],
            order,
        )
        .unwrap();
    let trace = fresh.json()["trace"].as_str().unwrap().to_owned();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
}
