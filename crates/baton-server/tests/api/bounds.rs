//! The bounds an HTTP client meets: bodies (413), per-function queues (429), every error
//! as one JSON body, and connections (at most so many, each with a deadline for its
//! request's head).

use super::*;

#[test]
fn oversized_bodies_and_full_queues_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.max_body_bytes = 64 << 10;
        c.queue_depth = 1;
        c.policy = PolicySpec::new(PolicyName::Ttl);
    });
    let api = client(&server);
    let response = put_python(&api, "slow", &python_manifest("slow", "upper.py", ""));
    assert_eq!(response.status, 201, "{}", response.text());
    let big = vec![b'x'; 100 << 10];
    let response = api
        .request(
            "POST",
            "/v1/functions/slow/invoke",
            "application/octet-stream",
            &big,
        )
        .unwrap();
    assert_eq!(response.status, 413);
    assert!(response.json()["error"].is_string(), "{}", response.text());

    // One request holds the only slot; the next is refused with Retry-After.
    let accepted = api
        .request(
            "POST",
            "/v1/functions/slow/invoke?async=true",
            "application/octet-stream",
            b"sleep:1.5",
        )
        .unwrap();
    assert_eq!(accepted.status, 202);
    std::thread::sleep(Duration::from_millis(100));
    // Still running: it cannot be forgotten yet.
    let running = accepted.header("location").unwrap().to_owned();
    let early = api.request("DELETE", &running, "text/plain", b"").unwrap();
    assert_refused(&early, 409, "once it has ended");
    let refused = invoke(&api, "slow", "now");
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    let metrics = api.get("/metrics").unwrap().text();
    assert_eq!(metric(&metrics, "baton_requests_rejected_total"), 1.0);
    server.stop();
}

#[test]
fn every_error_is_one_json_body_and_bounds_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {});
    let api = client(&server);
    let cases: [(&str, &str, u16); 4] = [
        ("GET", "/no/such/route", 404),
        ("DELETE", "/v1/logs", 405),
        ("GET", "/v1/predictions?from=x&n=abc", 400),
        ("GET", "/v1/predictions", 400),
    ];
    for (method, path, status) in cases {
        let response = api.request(method, path, "application/json", b"").unwrap();
        assert_eq!(
            response.status,
            status,
            "{method} {path}: {}",
            response.text()
        );
        assert!(
            response
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{method} {path}: {:?}",
            response.headers
        );
        let message = response.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(!message.is_empty(), "{method} {path}: {}", response.text());
    }
    let wrong_method = api
        .request("DELETE", "/v1/logs", "application/json", b"")
        .unwrap();
    assert!(
        wrong_method.header("allow").is_some(),
        "405 keeps its Allow header"
    );
    // A function may not ask for more memory than the node has.
    let huge = "name = \"huge\"\nkind = \"wasm\"\nmodule = \"x.wasm\"\nmemory_mib = 1048576\n";
    let response = put_json(
        &api,
        "huge",
        &json!({ "manifest": huge, "module_base64": "AA==" }),
    );
    assert_refused(&response, 400, "memory_mib");
    // A name that is not a safe identifier is refused.
    let dots = "name = \"..\"\nkind = \"wasm\"\nmodule = \"x.wasm\"\n";
    let response = put_json(
        &api,
        "..",
        &json!({ "manifest": dots, "module_base64": "AA==" }),
    );
    assert!(response.status >= 400, "{}", response.text());
    // An empty token is no token.
    let empty = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), empty.path().to_owned());
    config.token = Some("  ".into());
    let error = RunningServer::start(config).unwrap_err().to_string();
    assert!(error.contains("token is empty"), "{error}");
}

#[test]
fn idle_connections_are_bounded_and_timed_out() {
    // Two connections allowed, 300 ms to send a request's head. Two clients that connect
    // and send nothing (or half a head) hold both; a third request waits in the backlog
    // until the timeout closes one, then is served; the silent ones are closed (EOF), not
    // kept forever.
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.max_connections = 2;
        config.header_read_timeout = Duration::from_millis(300);
    });
    let silent = std::net::TcpStream::connect(server.addr).unwrap();
    let mut trickle = std::net::TcpStream::connect(server.addr).unwrap();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    // Both are accepted (served connections), not just queued: give the loop a moment.
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let response = client(&server).get("/healthz").unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status, 200);
    assert!(
        waited >= Duration::from_millis(200),
        "served after {waited:?}: the bound of 2 connections did not hold"
    );
    for (name, mut stream) in [("silent", silent), ("trickling", trickle)] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        // Closed by the server: EOF (maybe after a 408), or a reset; never a timeout.
        match stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(error) => assert!(
                !matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the {name} connection was kept open: {error}"
            ),
        }
    }
    // A request on a connection of its own is still served at once.
    assert_eq!(client(&server).get("/healthz").unwrap().status, 200);
    drop(server);
    // A bound past what the semaphore can count is taken as its most, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| config.max_connections = usize::MAX);
    assert_eq!(client(&server).get("/healthz").unwrap().status, 200);
}

#[test]
fn a_body_that_trickles_is_cut_off_and_its_connection_freed() {
    // One connection allowed, 400 ms for a body once its head is in. A client that sends
    // its head and then a byte now and then is answered 408 and closed, so the next client
    // is served; a body sent at once is unaffected.
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.max_connections = 1;
        config.body_read_timeout = Duration::from_millis(400);
    });
    assert_eq!(
        wasm_deploy(&client(&server), "upper", "../examples/wat/upper.wat").status,
        201
    );
    let mut slow = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        slow,
        "POST /v1/functions/upper/invoke HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\nab",
        server.addr
    )
    .unwrap();
    let trickler = std::thread::spawn(move || {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(100));
            if slow.write_all(b"c").is_err() {
                break;
            }
        }
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        let _ = slow.read_to_string(&mut answer);
        answer
    });
    // The only slot is held until the trickler is cut off, then this is served.
    let response = invoke(&client(&server), "upper", "next");
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = trickler.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 0.4 s"), "{answer}");
}
