//! The systems under test: baton started in this process with both chains deployed,
//! and the peers (serverless-offline, functions-framework) installed and started as
//! process groups that are stopped when dropped, on failure too.

use super::client::wait_ready;
use anyhow::{bail, Context, Result};
use baton_core::policy::spec::{PolicyName, PolicySpec};
use baton_server::client::Client;
use baton_server::{RunningServer, ServerConfig};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process group started for the bench; stopped when dropped.
pub(super) struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn start(name: &str, command: &mut Command) -> Result<Proc> {
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let quiet = |signal: &str| {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        quiet("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        quiet("-KILL");
        let _ = self.child.wait();
        eprintln!("stopped {} (process group {})", self.name, self.child.id());
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One system under test: where its single function and its chain head answer.
pub(super) struct System {
    pub(super) name: String,
    pub(super) single: (Client, String),
    pub(super) chain: (Client, String),
    pub(super) note: String,
}

pub(super) fn baton_system(server: &RunningServer, kind: &str, prefix: &str) -> System {
    let client = Client::new(&format!("http://{}", server.addr), None).expect("loopback URL");
    System {
        name: format!("baton ({kind})"),
        single: (client.clone(), format!("/v1/functions/{prefix}c/invoke")),
        chain: (client, format!("/v1/functions/{prefix}a/invoke")),
        note: format!(
            "baton {}, chained by the director, entered through baton's HTTP API",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

/// Starts baton on a fresh data directory (returned, for removal) with both chains deployed.
pub(super) fn start_baton(
    bench: &Path,
    examples: &Path,
    keep_alive: Duration,
) -> Result<(RunningServer, PathBuf)> {
    let data = baton_runtime::bench::tempfile_dir("peers")?;
    let mut config = ServerConfig::new("127.0.0.1:0".parse()?, data.clone());
    config.policy = PolicySpec {
        keep_alive_us: Some(keep_alive.as_micros() as u64),
        ..PolicySpec::new(PolicyName::Chain)
    };
    config.allow_process_functions = true;
    let server = RunningServer::start(config)?;
    let client = Client::new(&format!("http://{}", server.addr), None)?;
    let code = base64_encode(&baton_runtime::code::pack_dir(&examples.join("python"))?);
    for (name, next) in [("a", "b"), ("b", "c"), ("c", "")] {
        let module = std::fs::read(bench.join(format!("baton/{name}.wat")))
            .with_context(|| format!("reading bench/peers/baton/{name}.wat"))?;
        let wasm = serde_json::json!({
            "manifest": format!("name = \"w{name}\"\nkind = \"wasm\"\nmodule = \"{name}.wat\"\nmemory_mib = 16\npure = true\n"),
            "module_base64": base64_encode(&module),
        });
        let python = serde_json::json!({
            "manifest": format!(
                "name = \"p{name}\"\nkind = \"process\"\ncommand = [\"python3\", \"-u\", \"step.py\"]\nmemory_mib = 64\npure = true\n[env]\nNEXT = \"{}\"\n",
                if next.is_empty() { String::new() } else { format!("p{next}") }
            ),
            "code_base64": code,
        });
        for (fname, body, kind) in [
            (format!("w{name}"), wasm.to_string(), "application/json"),
            (format!("p{name}"), python.to_string(), "application/json"),
        ] {
            let response = client.request(
                "PUT",
                &format!("/v1/functions/{fname}"),
                kind,
                body.as_bytes(),
            )?;
            if response.status >= 300 {
                bail!("deploying {fname} on baton: {}", response.text());
            }
        }
    }
    Ok((server, data))
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(super) fn setup_peers(bench: &Path, peers_dir: &Path, skip: &[String]) -> Result<PathBuf> {
    let mut command = Command::new(bench.join("setup.sh"));
    command.arg(peers_dir);
    if skip.iter().any(|s| s == "serverless-offline") {
        command.env("SKIP_SLS", "1");
    }
    if skip.iter().any(|s| s == "functions-framework") {
        command.env("SKIP_FF", "1");
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("running bench/peers/setup.sh")?;
    if !output.status.success() {
        bail!(
            "installing the peers failed ({}); see the message above, or leave a peer out with --skip-peer NAME",
            output.status
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// The version an npm package installed under `peers` says it is.
fn npm_version(peers: &Path, package: &str) -> String {
    std::fs::read_to_string(peers.join(format!("node/node_modules/{package}/package.json")))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The first line a program prints for `args`, or "?".
fn version_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("?")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "?".into())
}

pub(super) fn start_sls(
    bench: &Path,
    peers: &Path,
    keep_alive: Duration,
    procs: &mut Vec<Proc>,
) -> Result<System> {
    let app = peers.join("sls-app");
    std::fs::create_dir_all(&app)?;
    for file in ["serverless.yml", "handler.js"] {
        std::fs::copy(bench.join("sls").join(file), app.join(file))
            .with_context(|| format!("copying bench/peers/sls/{file}"))?;
    }
    let link = app.join("node_modules");
    if !link.exists() {
        std::os::unix::fs::symlink(peers.join("node/node_modules"), &link)?;
    }
    let (http, lambda) = (free_port()?, free_port()?);
    let idle = keep_alive.as_secs().max(1).to_string();
    procs.push(Proc::start(
        "serverless-offline",
        Command::new(peers.join("node/node_modules/.bin/serverless"))
            .args([
                "offline",
                "start",
                "--host",
                "127.0.0.1",
                "--httpPort",
                &http.to_string(),
                "--lambdaPort",
                &lambda.to_string(),
                "--terminateIdleLambdaTime",
                &idle,
            ])
            .current_dir(&app)
            .env("BENCH_HTTP_PORT", http.to_string())
            .env("SLS_TELEMETRY_DISABLED", "1")
            .env("SLS_NOTIFICATIONS_MODE", "off")
            .env("SLS_INTERACTIVE_SETUP_DISABLE", "1"),
    )?);
    let client = Client::new(&format!("http://127.0.0.1:{http}"), None)?;
    let system = System {
        name: "serverless-offline".into(),
        single: (client.clone(), "/c".into()),
        chain: (client, "/a".into()),
        note: format!(
            "serverless {} + serverless-offline {} on node {}, idle Lambdas terminated after {idle} s",
            npm_version(peers, "serverless"),
            npm_version(peers, "serverless-offline"),
            version_of(Path::new("node"), &["--version"])
        ),
    };
    wait_ready("serverless-offline", &system.chain, Duration::from_secs(90))?;
    Ok(system)
}

pub(super) fn start_ff(bench: &Path, peers: &Path, procs: &mut Vec<Proc>) -> Result<System> {
    let ports = [free_port()?, free_port()?, free_port()?];
    for (i, target) in ["a", "b", "c"].iter().enumerate() {
        let mut command = Command::new(peers.join("venv/bin/functions-framework"));
        command.args([
            "--target",
            target,
            "--source",
            &bench.join("ff/main.py").display().to_string(),
            "--host",
            "127.0.0.1",
            "--port",
            &ports[i].to_string(),
        ]);
        if i < 2 {
            command.env("NEXT_URL", format!("http://127.0.0.1:{}/", ports[i + 1]));
        }
        procs.push(Proc::start(
            &format!("functions-framework {target}"),
            &mut command,
        )?);
    }
    let client = |port: u16| Client::new(&format!("http://127.0.0.1:{port}"), None);
    let system = System {
        name: "functions-framework".into(),
        single: (client(ports[2])?, "/".into()),
        chain: (client(ports[0])?, "/".into()),
        note: format!(
            "functions-framework {} on {}, one always-on process per function (no idle expiry)",
            version_of(
                &peers.join("venv/bin/python"),
                &[
                    "-c",
                    "import importlib.metadata as m; print(m.version('functions-framework'))"
                ]
            ),
            version_of(&peers.join("venv/bin/python"), &["--version"])
        ),
    };
    wait_ready(
        "functions-framework",
        &system.chain,
        Duration::from_secs(60),
    )?;
    Ok(system)
}
