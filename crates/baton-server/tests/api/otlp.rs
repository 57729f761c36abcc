//! OpenTelemetry through the API: spans exported to a collector and decoded by the real
//! definitions (PyPI opentelemetry-proto), and a request they encoded learned on
//! `/v1/traces`.

use super::*;

/// The Python with the real OTLP definitions (`.ci/venv.sh` installs opentelemetry-proto
/// into `.ci/.venv`); `None` (said loudly) outside CI when it is missing.
fn otlp_python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/.venv/bin/python");
    let works = std::process::Command::new(&python)
        .args(["-c", "import opentelemetry.proto"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no opentelemetry-proto in .ci/.venv: .ci/run runs .ci/venv.sh first"
    );
    eprintln!("NOT RUN: opentelemetry-proto missing (bash .ci/venv.sh installs it)");
    None
}

/// A one-request-at-a-time OTLP collector on loopback: answers 200 and hands over each
/// request's path, content type and body.
fn collector() -> (String, std::sync::mpsc::Receiver<(String, String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let (mut length, mut content_type) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or(("", ""));
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            if tx.send((path, content_type, body)).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

#[test]
fn spans_go_out_to_a_collector_and_come_in_on_v1_traces() {
    let Some(python) = otlp_python() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/otlp.py");
    let (collector_url, exported) = collector();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.otlp_endpoint = Some(collector_url.clone())
    });
    let api = client(&server);
    for name in ["first", "second"] {
        let response = wasm_deploy(&api, name, "wat/upper.wat");
        assert_eq!(response.status, 201, "{}", response.text());
    }
    let declared = api
        .request(
            "POST",
            "/v1/sequences/pair",
            "application/json",
            br#"{"steps":["first","second"]}"#,
        )
        .unwrap();
    assert_eq!(declared.status, 201, "{}", declared.text());
    let answer = invoke(&api, "pair", "hi").json();
    let trace = answer["trace"].as_str().unwrap().to_owned();

    // Out: the chain's two spans, read back by the real definitions.
    let (path, content_type, body) = exported
        .recv_timeout(Duration::from_secs(15))
        .expect("the exporter posted to the collector");
    assert_eq!(path, "/v1/traces");
    assert_eq!(content_type, "application/x-protobuf");
    let file = dir.path().join("export.pb");
    std::fs::write(&file, &body).unwrap();
    let decoded = std::process::Command::new(&python)
        .arg(&script)
        .arg("decode")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        decoded.status.success(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    let spans: Value = serde_json::from_slice(&decoded.stdout).unwrap();
    let span = |name: &str| {
        spans
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans}"))
            .clone()
    };
    let (first, second) = (span("first"), span("second"));
    assert_eq!(first["trace"], trace.as_str(), "{spans}");
    assert_eq!(second["trace"], trace.as_str());
    assert_eq!(first["span"], answer["steps"][0]["invocation"]);
    assert_eq!(first["parent"], "");
    assert_eq!(second["parent"], first["span"], "{spans}");
    assert_eq!(first["service"], "first");
    assert_eq!(first["namespace"], "baton");
    assert_eq!(first["status"], 1);
    assert_eq!(first["attributes"]["faas.name"], "first");
    assert!(
        first["attributes"]["faas.coldstart"].is_boolean(),
        "{first}"
    );
    assert!(second["end"].as_u64() > second["start"].as_u64());
    eprintln!("decoded by opentelemetry-proto: {spans}");

    // In: a request the real definitions encoded, learned as a call.
    let encoded = std::process::Command::new(&python)
        .arg(&script)
        .arg("encode")
        .output()
        .unwrap();
    assert!(encoded.status.success());
    let response = api
        .request(
            "POST",
            "/v1/traces",
            "application/x-protobuf",
            &encoded.stdout,
        )
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/x-protobuf")
    );
    let graph = api.get("/v1/graph").unwrap().json();
    let learned = graph["edges"].as_array().unwrap().iter().any(|e| {
        e["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("checkout"))
            && e["to"].as_str().is_some_and(|t| t.starts_with("payment"))
    });
    assert!(learned, "checkout -> payment not learned: {graph}");
    // Not protobuf: refused, named.
    let refused = api
        .request(
            "POST",
            "/v1/traces",
            "application/x-protobuf",
            b"\xff\xff\xff",
        )
        .unwrap();
    assert_refused(&refused, 400, "ExportTraceServiceRequest");
    server.stop();
}
