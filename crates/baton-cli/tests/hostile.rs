//! What a function, or the host, cannot take from `baton serve` (a real process, since a
//! signal's disposition is the process's): a worker that closes its end of a pipe or kills
//! the template it was forked from breaks only itself; a host with no working sandbox
//! refuses process functions, in `serve` and in `up`, and one without a private network
//! the functions that reserve bandwidth, each saying how to install what is missing.

mod common;

use common::{baton, ok, serve, serve_under};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Deploys `examples/python/upper.py` as `name` on the server at `url`.
fn deploy_upper(url: &str, dir: &Path, name: &str) -> std::process::Output {
    deploy_upper_with(url, dir, name, "")
}

/// [`deploy_upper`] with `extra` manifest lines.
fn deploy_upper_with(url: &str, dir: &Path, name: &str, extra: &str) -> std::process::Output {
    let manifest = dir.join(format!("{name}.toml"));
    let code = examples().join("python").display().to_string();
    std::fs::write(
        &manifest,
        format!(
            "name = \"{name}\"\nkind = \"process\"\ncommand = [\"python3\", \"-u\", \"upper.py\"]\nworkdir = {code:?}\n{extra}\n"
        ),
    )
    .unwrap();
    baton(&["deploy", "--server", url, &manifest.display().to_string()])
}

fn invoke(url: &str, function: &str, data: &str) -> std::process::Output {
    baton(&["invoke", function, "--data", data, "--server", url])
}

/// Invokes `function` until it answers `expected` (a worker lost to the last attack may
/// fail a call or two while it is replaced), at most 20 tries in 20 s.
fn answers_again(url: &str, function: &str, data: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    for _ in 0..20 {
        let out = invoke(url, function, data);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && last.contains(expected) {
            return;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("`{function}` never answered {expected:?} again; last: {last}");
}

#[test]
fn a_function_that_closes_its_pipe_or_kills_its_template_breaks_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url, _) = serve(&dir.path().join("data"));
    for name in ["fragile", "bystander"] {
        let out = deploy_upper(&url, dir.path(), name);
        assert!(out.status.success(), "{out:?}");
    }
    ok(&["invoke", "bystander", "--data", "calm", "--server", &url]);

    // Each attack, then calls that write to the dead pipe (SIGPIPE killed the server here
    // before it ignored the signal): the server lives, the bystander is served, and the
    // attacker's function comes back on a new worker.
    for attack in [
        "close-stdin",
        "kill-template",
        "close-stdin",
        "kill-template",
    ] {
        let out = invoke(&url, "fragile", attack);
        eprintln!(
            "{attack}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..3 {
            let _ = invoke(&url, "fragile", "again");
        }
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "the server died after {attack}"
        );
        let calm = ok(&["invoke", "bystander", "--data", "calm", "--server", &url]);
        assert!(calm.contains("CALM"), "{calm}");
        answers_again(&url, "fragile", "back", "BACK");
    }
    assert!(server.0.try_wait().unwrap().is_none());
}

/// The wrapper that runs baton where `program` is gone (a private mount namespace with
/// `/dev/null` bound over it), or `None` when this host cannot make one (not root, no
/// `unshare`, or no such program): the test then says so and checks what it can.
fn hiding(program: &str) -> Option<Vec<String>> {
    let path = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .into_iter()
        .map(|dir| format!("{dir}/{program}"))
        .find(|p| Path::new(p).exists())?;
    let script = format!("mount --bind /dev/null {path} && exec \"$@\"");
    let wrapper: Vec<String> = ["unshare", "--mount", "sh", "-c", &script, "sh"]
        .map(str::to_owned)
        .to_vec();
    let probe = std::process::Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .args([path.as_str(), "--version"])
        .output()
        .ok()?;
    // /dev/null cannot be run.
    (!probe.status.success() && probe.stdout.is_empty()).then_some(wrapper)
}

#[test]
fn a_host_without_a_working_sandbox_refuses_process_functions_in_serve_and_up() {
    let Some(wrapper) = hiding("bwrap") else {
        eprintln!(
            "PATH TAKEN: this host cannot hide bubblewrap from a child (needs root and \
             unshare --mount); the refusal is not exercised here"
        );
        return;
    };
    eprintln!("PATH TAKEN: baton under a mount namespace whose bwrap is /dev/null");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, log) = serve_under(&wrapper, &dir.path().join("data"));
    assert!(log.contains("sandbox: MISSING"), "{log}");
    assert!(log.contains("process functions are REFUSED"), "{log}");

    // Deploy: 503 with the install hint; nothing deployed.
    let out = deploy_upper(&url, dir.path(), "refused");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "deployed without a sandbox: {out:?}");
    assert!(said.contains("apt-get install bubblewrap"), "{said}");
    assert!(said.contains("503"), "{said}");
    let listed = ok(&["functions", "list", "--server", &url]);
    assert!(!listed.contains("refused"), "{listed}");
    // Wasm functions are still served.
    let wasm = examples().join("order/validate.toml").display().to_string();
    ok(&["deploy", "--server", &url, &wasm]);

    // `baton up` on the same host: told at start, and its deploy refused.
    let root = dir.path().join("apps");
    let root = root.display().to_string();
    ok(&["new", "hello", "--lang", "python", "--dir", &root]);
    let app = format!("{root}/hello");
    let baton = env!("CARGO_BIN_EXE_baton");
    let up = std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .args([baton, "up", &app, "--once", "hello", "--data", "x"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(
        !up.status.success(),
        "up ran a process function unjailed: {said}"
    );
    assert!(said.contains("sandbox: MISSING"), "{said}");
    assert!(said.contains("apt-get install bubblewrap"), "{said}");

    // Unjailed only when asked for by name, and then it runs.
    let up = std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .args([baton, "up", &app, "--once", "hello", "--data", "x"])
        .arg("--insecure-unjailed-process-functions")
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(String::from_utf8_lossy(&up.stderr).contains("NONE, by request"));
}

#[test]
fn a_host_without_a_private_network_refuses_functions_that_reserve_bandwidth() {
    let Some(wrapper) = hiding("slirp4netns") else {
        eprintln!(
            "PATH TAKEN: this host cannot hide slirp4netns from a child (needs root, unshare \
             --mount and slirp4netns); the refusal is not exercised here"
        );
        return;
    };
    eprintln!("PATH TAKEN: baton under a mount namespace whose slirp4netns is /dev/null");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, log) = serve_under(&wrapper, &dir.path().join("data"));
    assert!(log.contains("NO private network"), "{log}");
    let out = deploy_upper_with(&url, dir.path(), "online", "net_mbps = 8");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "deployed without a private network: {out:?}"
    );
    assert!(
        said.contains("503") && said.contains("apt-get install slirp4netns"),
        "{said}"
    );
    // A function without network still runs there.
    let out = deploy_upper(&url, dir.path(), "offline");
    assert!(out.status.success(), "{out:?}");
    let ran = ok(&["invoke", "offline", "--data", "fine", "--server", &url]);
    assert!(ran.contains("FINE"), "{ran}");
}
