//! The dashboard at `/ui`, loaded in headless Chromium after the order app's traffic.

use super::*;

/// Headless Chromium (Debian's `chromium`, installed by `.ci/run`); `None` (said loudly)
/// outside CI when it is missing.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing: .ci/run installs it (apt-get install chromium)"
        );
        eprintln!("NOT RUN: chromium is not installed (apt-get install chromium)");
    }
    found
}

/// Chromium, headless, on `url`, with `what` (`--dump-dom`, `--screenshot=…`); its stdout.
fn headless(chromium: &Path, profile: &Path, what: &str, url: &str) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_draws_the_order_apps_graph_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {});
    let api = client(&server);
    deploy_order_app(&api);
    let order = r#"{"order":1,"item":"book","qty":1,"credit":100}"#;
    for _ in 0..4 {
        let response = invoke(&api, "validate", order);
        assert_eq!(response.status, 200, "{}", response.text());
    }
    // The page is public (it holds no data); the data needs the token, given in the hash.
    let page = Client::new(&format!("http://{}", server.addr), None)
        .unwrap()
        .get("/ui")
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(page.header("content-security-policy").is_some());
    let url = format!("http://{}/ui#token={TOKEN}", server.addr);
    let dom = headless(&chromium, &dir.path().join("profile"), "--dump-dom", &url);
    for task in ["validate", "price", "reserve", "notify"] {
        assert!(
            dom.contains(&format!("data-task=\"{task}\"")),
            "no node {task} in\n{dom}"
        );
    }
    assert!(
        dom.contains(r#"data-from="validate" data-to="price""#),
        "no edge validate -> price in\n{dom}"
    );
    assert!(
        dom.contains("class=\"invocation\""),
        "no recent invocations in\n{dom}"
    );
    let status = dom
        .split("id=\"status\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or("");
    assert!(status.contains("tasks,"), "the page's status: {status}");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    headless(
        &chromium,
        &dir.path().join("profile"),
        &format!("--screenshot={}", shot.display()),
        &url,
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!(
        "dashboard screenshot: {} ({} bytes)",
        shot.display(),
        png.len()
    );
    server.stop();
}
