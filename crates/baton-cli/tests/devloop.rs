//! The developer loop, as a developer types it: `baton new` from a template (whose own
//! tests pass), `baton up` serving the app and redeploying it when a file changes, `baton
//! logs` by function, by invocation and followed, and `baton deploy DIR` to a running server,
//! with mistakes in the app's manifest named by file and function.

mod common;

use common::{baton, ok, serve, start_listening, Served};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_developer_loop_from_a_template() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let created = ok(&["new", "hello", "--lang", "python", "--dir", &root]);
    assert!(created.contains("baton.toml"), "{created}");
    let app = dir.path().join("hello");
    // The template's test passes as written.
    let unittest = Command::new("python3")
        .args(["-m", "unittest", "-q", "test_hello"])
        .current_dir(&app)
        .output()
        .unwrap();
    assert!(
        unittest.status.success(),
        "{}",
        String::from_utf8_lossy(&unittest.stderr)
    );
    // Never into an existing directory; a name that is not a module name is refused.
    let again = baton(&["new", "hello", "--dir", &root]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(!baton(&["new", "9lives", "--dir", &root]).status.success());

    let app_path = app.display().to_string();
    let once = ok(&["up", &app_path, "--once", "hello", "--data", "baton"]);
    assert_eq!(once, "hello, baton");

    // The wat template's own test script, with this baton first on PATH.
    ok(&["new", "shout", "--lang", "wat", "--dir", &root]);
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_baton")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = Command::new("sh")
        .arg(dir.path().join("shout/test.sh"))
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "{}{}",
        String::from_utf8_lossy(&script.stdout),
        String::from_utf8_lossy(&script.stderr)
    );

    // baton up: serves, and redeploys when a file changes.
    let (mut up, url, _, lines) = start_listening(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["up", &app_path, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null()),
        None,
    );
    let next_line = |want: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("baton up never printed `{want}`"));
            if line.contains(want) {
                return line;
            }
        }
    };
    let invoke = |data: &str| ok(&["invoke", "hello", "--data", data, "--server", &url]);
    assert!(invoke("you").starts_with("hello, you"));
    let source = app.join("hello.py");
    let code = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, code.replace("b\"hello, \"", "b\"hi, \"")).unwrap();
    next_line("redeployed");
    let after = invoke("you");
    assert!(after.starts_with("hi, you"), "{after}");
    // Its records: by function, by invocation (the trace an answer names), and followed.
    let logs = ok(&["logs", "--function", "hello", "--server", &url]);
    // (--once ran it too, on the same state directory.)
    assert_eq!(logs.lines().count(), 3, "{logs}");
    assert!(
        logs.lines().all(|l| l.contains(r#""task":"hello""#)),
        "{logs}"
    );
    let answer: Value = serde_json::from_str(&ok(&[
        "invoke", "hello", "--data", "me", "--json", "--server", &url,
    ]))
    .unwrap();
    let trace = answer["trace"].as_str().unwrap();
    let one = ok(&["logs", "--invocation", trace, "--server", &url]);
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(one.contains(trace), "{one}");
    let mut follower = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "logs",
            "--function",
            "hello",
            "--tail",
            "0",
            "--follow",
            "--server",
            &url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (line_tx, followed) = std::sync::mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let _follower = Served(follower);
    std::thread::sleep(Duration::from_millis(300));
    assert!(followed.try_recv().is_err(), "--tail 0 printed old records");
    invoke("later");
    let line = followed
        .recv_timeout(Duration::from_secs(20))
        .expect("the follower printed the new record");
    assert!(line.contains(r#""task":"hello""#), "{line}");
    up.kill().unwrap();
    up.wait().unwrap();

    // The app, grown to two functions and a sequence, deployed to a running server with
    // baton deploy DIR.
    let manifest = std::fs::read_to_string(app.join("baton.toml")).unwrap();
    std::fs::write(
        app.join("baton.toml"),
        format!(
            "{manifest}\n[[function]]\nname = \"shout\"\nkind = \"wasm\"\nmodule = \"../shout/shout.wat\"\n\n\
             [sequences]\ngreet = [\"hello\", \"shout\"]\n"
        ),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (_served, url, _) = serve(data.path());
    let deployed = ok(&["deploy", "--server", &url, &app_path]);
    assert!(deployed.contains("deployed hello"), "{deployed}");
    assert!(deployed.contains("deployed shout"), "{deployed}");
    assert!(
        deployed.contains("declared greet = hello → shout"),
        "{deployed}"
    );
    let greeted = ok(&["invoke", "greet", "--data", "you", "--server", &url]);
    assert!(greeted.starts_with("hello, hi, you"), "{greeted}");

    // Mistakes are named: the file, the function.
    std::fs::write(
        app.join("baton.toml"),
        "[[function]]\nname = \"hello\"\nkind = \"process\"\n",
    )
    .unwrap();
    let refused = baton(&["deploy", "--server", &url, &app_path]);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(why.contains("baton.toml") && why.contains("hello"), "{why}");
    std::fs::write(app.join("baton.toml"), "[[functions]]\nname = \"x\"\n").unwrap();
    let why = String::from_utf8_lossy(&baton(&["deploy", "--server", &url, &app_path]).stderr)
        .into_owned();
    assert!(why.contains("unknown key `functions`"), "{why}");
}
