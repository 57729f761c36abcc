//! What a web page can make a browser send: a server without a token (loopback only, what
//! `baton up` runs) refuses a foreign `Host` (DNS rebinding), a foreign `Origin`, and a
//! POST of a kind a page sends unasked (text/plain, a form), while the CLI's requests pass;
//! a server with a token takes its scheme in any case and names sequences by the rule.

use super::*;
use std::io::{Read, Write};

/// Sends one raw HTTP/1.1 request to `server` and returns its status and body.
fn raw(server: &RunningServer, head: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[test]
fn a_server_without_a_token_refuses_what_a_web_page_could_send_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.token = None);
    let api = Client::new(&format!("http://{}", server.addr), None).unwrap();
    assert_eq!(
        wasm_deploy(&api, "upper", "../examples/wat/upper.wat").status,
        201
    );
    let invoke = "POST /v1/functions/upper/invoke HTTP/1.1";
    let host = format!("Host: {}", server.addr);

    // The CLI's own requests pass: loopback Host, a content type a page cannot send unasked.
    let (status, body) = raw(
        &server,
        &format!("{invoke}\r\n{host}\r\nContent-Type: application/octet-stream"),
        "hi",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"output\":\"HI\""), "{body}");
    for loopback in ["localhost:1", "127.0.0.2", "[::1]:8080", "LOCALHOST"] {
        let (status, body) = raw(
            &server,
            &format!("{invoke}\r\nHost: {loopback}\r\nContent-Type: application/octet-stream"),
            "hi",
        );
        assert_eq!(status, 200, "{loopback}: {body}");
    }

    // A page on another site: its text/plain or form POST, its Origin, a rebound Host.
    for (head, says) in [
        (
            format!("{invoke}\r\n{host}\r\nContent-Type: text/plain"),
            "content type",
        ),
        (format!("{invoke}\r\n{host}"), "content type"),
        (
            format!("{invoke}\r\n{host}\r\nContent-Type: application/x-www-form-urlencoded"),
            "content type",
        ),
        (
            format!("{invoke}\r\n{host}\r\nContent-Type: application/json\r\nOrigin: http://evil.example"),
            "Origin",
        ),
        (
            format!("{invoke}\r\n{host}\r\nContent-Type: application/json\r\nOrigin: null"),
            "Origin",
        ),
        (
            format!("{invoke}\r\nHost: evil.example:8080\r\nContent-Type: application/json"),
            "loopback names",
        ),
        (
            "GET /v1/logs HTTP/1.1\r\nHost: rebound.example".to_owned(),
            "loopback names",
        ),
        (
            "PUT /v1/functions/x HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\nContent-Type: application/toml".to_owned(),
            "loopback names",
        ),
    ] {
        let (status, body) = raw(&server, &head, "\"x\"");
        assert_eq!(status, 403, "{head}: {body}");
        assert!(body.contains(says), "{head}: {body}");
    }
    // Nothing the page sent was run or learned: the one invocation above and its four
    // loopback variants are all the server recorded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && api.get("/v1/logs?tail=100").unwrap().text().lines().count() < 5
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let logs = api.get("/v1/logs?tail=100").unwrap().text();
    assert_eq!(logs.lines().count(), 5, "{logs}");
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_a_wrong_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {});
    for (authorization, status) in [
        (format!("Bearer {TOKEN}"), 200),
        (format!("bearer {TOKEN}"), 200),
        (format!("BEARER  {TOKEN}"), 200),
        (format!("Bearer {TOKEN}x"), 401),
        (format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]), 401),
        (format!("Basic {TOKEN}"), 401),
        ("Bearer".to_owned(), 401),
    ] {
        let (got, body) = raw(
            &server,
            &format!(
                "GET /v1/functions HTTP/1.1\r\nHost: {}\r\nAuthorization: {authorization}",
                server.addr
            ),
            "",
        );
        assert_eq!(got, status, "{authorization}: {body}");
    }
}

#[test]
fn sequence_names_follow_the_function_name_rule() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {});
    let api = client(&server);
    assert_eq!(
        wasm_deploy(&api, "upper", "../examples/wat/upper.wat").status,
        201
    );
    for name in [
        "..",
        ".hidden",
        "a%2Fb",
        "bell%07",
        "esc%1B%5B31m",
        "line%0Abreak",
    ] {
        let response = declare(&api, name, &["upper"]);
        assert_refused(&response, 400, "a sequence name is");
    }
    assert_eq!(declare(&api, "shout.v2", &["upper"]).status, 201);
    let listed = api.get("/v1/sequences").unwrap().text();
    assert!(!listed.contains(".."), "{listed}");
}
