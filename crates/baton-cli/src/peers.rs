//! `baton bench peers`: the same three-step chain (a → b → c, a small JSON payload, trivial
//! work) on baton and on the serverless runtimes people use today, measured in one run on
//! this machine, interleaved: serverless-offline (an AWS Lambda emulator, a calling b
//! calling c through its HTTP front door), Google's functions-framework (one process per
//! function, chained over HTTP), and baton (wasm guests and Python workers chained by the
//! director, entered through baton's HTTP API).
//!
//! Scenarios: (a) warm single invocation, (b) warm chain end to end, (c) the chain after an
//! idle period longer than the keep-alive (serverless-offline's idle Lambda termination and
//! baton's keep-alive are both set below it; baton has prediction on), (d) chain throughput
//! at a fixed concurrency for a bounded time. Every server binds 127.0.0.1 and every process
//! started is stopped by its process group at the end, on failure too.

use anyhow::{bail, Context, Result};
use baton_core::policy::spec::{PolicyName, PolicySpec};
use baton_server::client::Client;
use baton_server::{RunningServer, ServerConfig};
use clap::Args;
use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PEERS: [&str; 3] = ["serverless-offline", "functions-framework", "wasmtime"];

/// `baton bench peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// Leave a peer out: serverless-offline, functions-framework or wasmtime (repeatable).
    #[arg(long)]
    skip_peer: Vec<String>,
    /// Warm requests per system and scenario.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Cold-after-idle chains per system.
    #[arg(long, default_value_t = 5)]
    cold_runs: usize,
    /// Idle period before each cold-after-idle chain, seconds (keep-alives are set to a
    /// third of it).
    #[arg(long, default_value_t = 6.0)]
    idle_secs: f64,
    /// Concurrent clients in the throughput scenario.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Duration of the throughput scenario per system, seconds.
    #[arg(long, default_value_t = 5.0)]
    throughput_secs: f64,
    /// Where the peers are installed (ignored by git).
    #[arg(long, default_value = ".peers")]
    peers_dir: PathBuf,
    /// The bench's app sources (default: ./bench/peers).
    #[arg(long)]
    bench_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A process group started for the bench; stopped when dropped.
struct Proc {
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
struct System {
    name: String,
    single: (Client, String),
    chain: (Client, String),
    note: String,
}

const PAYLOAD: &[u8] = br#"{"order":42,"items":["a","b"],"total":12.5}"#;

/// A keep-alive HTTP/1.1 connection to one target, as a real client holds one; it
/// reconnects (inside the timed call) when the server closed it.
struct Conn {
    addr: String,
    path: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(target: &(Client, String)) -> Conn {
        Conn {
            addr: target.0.url().trim_start_matches("http://").to_owned(),
            path: target.1.clone(),
            stream: None,
        }
    }

    fn exchange(&mut self) -> std::io::Result<(u16, Vec<u8>, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.stream = Some(BufReader::new(stream));
        }
        let Some(reader) = self.stream.as_mut() else {
            return Err(std::io::Error::other("no connection"));
        };
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.path,
            self.addr,
            PAYLOAD.len()
        )
        .into_bytes();
        request.extend_from_slice(PAYLOAD);
        reader.get_mut().write_all(&request)?;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("status line {line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
            close |= lower.starts_with("connection:") && lower.contains("close");
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk"))?;
                let start = body.len();
                body.resize(start + size, 0);
                reader.read_exact(&mut body[start..])?;
                line.clear();
                reader.read_line(&mut line)?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        } else {
            reader.read_to_end(&mut body)?;
            close = true;
        }
        Ok((status, body, close))
    }

    /// One request; its latency (including a reconnect if the server had closed).
    fn call(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let result = match self.exchange() {
            Ok(ok) => Ok(ok),
            Err(_) => {
                self.stream = None;
                self.exchange()
            }
        };
        let (status, body, close) =
            result.with_context(|| format!("{}{}", self.addr, self.path))?;
        let took = started.elapsed();
        if close {
            self.stream = None;
        }
        if status != 200 {
            bail!(
                "{}{}: HTTP {status}: {}",
                self.addr,
                self.path,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(took)
    }
}

fn call(target: &(Client, String)) -> Result<Duration> {
    Conn::new(target).call()
}

/// Waits until `target` answers 200 (or fails after `limit`).
fn wait_ready(name: &str, target: &(Client, String), limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match call(target) {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() > deadline => {
                bail!("{name} did not answer within {limit:?}: {error:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Summary of one system in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// System.
    pub system: String,
    /// Scenario.
    pub scenario: String,
    /// Samples.
    pub n: usize,
    /// Median, ms (throughput: requests per second).
    pub p50: f64,
    /// 99th percentile, ms (throughput: none).
    pub p99: f64,
}

fn summary(system: &str, scenario: &str, mut samples: Vec<f64>) -> Cell {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| baton_core::rank::nearest_rank(&samples, q).unwrap_or(0.0);
    Cell {
        system: system.into(),
        scenario: scenario.into(),
        n: samples.len(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn baton_system(server: &RunningServer, kind: &str, prefix: &str) -> System {
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
fn start_baton(
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

fn setup_peers(bench: &Path, peers_dir: &Path, skip: &[String]) -> Result<PathBuf> {
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

fn start_sls(
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

fn start_ff(bench: &Path, peers: &Path, procs: &mut Vec<Proc>) -> Result<System> {
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

fn throughput(target: &(Client, String), concurrency: usize, secs: f64) -> Result<(f64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (stop, done, failed, target) = (
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&failed),
                (target.0.clone(), target.1.clone()),
            );
            std::thread::spawn(move || {
                let mut conn = Conn::new(&target);
                while !stop.load(Ordering::Relaxed) {
                    match conn.call() {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((
        done.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    ))
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct PeersReport {
    /// When and where.
    pub machine: String,
    /// Versions and settings of each system.
    pub systems: Vec<(String, String)>,
    /// Peers left out and why.
    pub skipped: Vec<(String, String)>,
    /// Every measurement.
    pub cells: Vec<Cell>,
}

pub fn run(args: PeersArgs) -> Result<()> {
    for skip in &args.skip_peer {
        if !PEERS.contains(&skip.as_str()) {
            bail!("--skip-peer {skip:?}: expected one of {}", PEERS.join(", "));
        }
    }
    anyhow::ensure!(
        args.requests > 0 && args.cold_runs > 0,
        "--requests and --cold-runs must be positive"
    );
    let bench = args.bench_dir.clone().unwrap_or_else(|| {
        let local = PathBuf::from("bench/peers");
        if local.exists() {
            local
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers")
        }
    });
    let bench = bench
        .canonicalize()
        .with_context(|| format!("bench sources {}", bench.display()))?;
    let examples = baton_runtime::bench::examples_dir(None).canonicalize()?;
    let keep_alive = Duration::from_secs_f64((args.idle_secs / 3.0).max(1.0));
    let mut skipped: Vec<(String, String)> = args
        .skip_peer
        .iter()
        .map(|s| (s.clone(), "--skip-peer".to_owned()))
        .collect();
    let wants = |name: &str| !args.skip_peer.iter().any(|s| s == name);

    let mut procs: Vec<Proc> = Vec::new();
    let mut systems: Vec<System> = Vec::new();
    let (server, baton_data) = start_baton(&bench, &examples, keep_alive)?;
    systems.push(baton_system(&server, "wasm", "w"));
    systems.push(baton_system(&server, "python", "p"));
    if wants("serverless-offline") || wants("functions-framework") {
        let peers_dir = std::fs::create_dir_all(&args.peers_dir)
            .map(|()| args.peers_dir.clone())
            .with_context(|| format!("creating {}", args.peers_dir.display()))?;
        let peers = setup_peers(&bench, &peers_dir, &args.skip_peer)?;
        if wants("serverless-offline") {
            systems.push(start_sls(&bench, &peers, keep_alive, &mut procs)?);
        }
        if wants("functions-framework") {
            systems.push(start_ff(&bench, &peers, &mut procs)?);
        }
    }
    if wants("wasmtime") {
        let found = Command::new("wasmtime").arg("--version").output().is_ok();
        skipped.push((
            "wasmtime".into(),
            if found {
                "`wasmtime serve` needs a wasi-http component; no such guest is built here yet"
                    .into()
            } else {
                "no wasmtime CLI on the PATH".into()
            },
        ));
    }
    for system in &systems {
        wait_ready(&system.name, &system.chain, Duration::from_secs(30))?;
    }
    let progress = !args.json;
    let mut cells = Vec::new();

    // (a), (b): warm, interleaved request by request, each system on its own keep-alive
    // connection (as a real client holds one).
    for (scenario, chain) in [("warm single", false), ("warm chain", true)] {
        let mut conns: Vec<Conn> = systems
            .iter()
            .map(|s| Conn::new(if chain { &s.chain } else { &s.single }))
            .collect();
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
        for _ in 0..args.requests / 10 + 5 {
            for conn in &mut conns {
                conn.call()?;
            }
        }
        let bar = progress.then(|| crate::progress::counter(scenario, args.requests as u64));
        for _ in 0..args.requests {
            for (k, conn) in conns.iter_mut().enumerate() {
                samples[k].push(conn.call()?.as_secs_f64() * 1e3);
            }
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        for (system, samples) in systems.iter().zip(samples) {
            cells.push(summary(&system.name, scenario, samples));
        }
    }
    // (c): idle past every keep-alive, then the chain on each system in turn.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    let bar = progress.then(|| {
        crate::progress::counter(
            &format!("cold after {:.0} s idle:", args.idle_secs),
            args.cold_runs as u64,
        )
    });
    for _ in 0..args.cold_runs {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        std::thread::sleep(Duration::from_secs_f64(args.idle_secs));
        for (k, system) in systems.iter().enumerate() {
            samples[k].push(call(&system.chain)?.as_secs_f64() * 1e3);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for (system, samples) in systems.iter().zip(samples) {
        cells.push(summary(&system.name, "chain after idle", samples));
    }
    // (d): throughput, one system at a time.
    for system in &systems {
        let bar =
            progress.then(|| crate::progress::counter(&format!("throughput: {}", system.name), 1));
        let (rate, failed) = throughput(&system.chain, args.concurrency, args.throughput_secs)?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if failed > 0 {
            eprintln!("{}: {failed} requests failed under load", system.name);
        }
        cells.push(Cell {
            system: system.name.clone(),
            scenario: format!("chain throughput ({} clients)", args.concurrency),
            n: 1,
            p50: rate,
            p99: 0.0,
        });
    }
    let machine = format!(
        "{} cores, {}; cgroup moves (each forked Python worker makes one): {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        baton_runtime::limits::MoveMode::now()
    );
    let report = PeersReport {
        machine,
        systems: systems
            .iter()
            .map(|s| (s.name.clone(), s.note.clone()))
            .collect(),
        skipped,
        cells,
    };
    drop(procs);
    server.stop();
    let _ = std::fs::remove_dir_all(&baton_data);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &PeersReport) {
    println!("machine: {}", report.machine);
    for (name, note) in &report.systems {
        println!("  {name}: {note}");
    }
    for (name, why) in &report.skipped {
        println!("  {name}: skipped ({why})");
    }
    let baton = "baton (wasm)";
    println!(
        "\n| scenario | system | p50 | p99 | peer / baton (wasm) at p50 |\n|---|---|---:|---:|---:|"
    );
    for cell in &report.cells {
        let reference = report
            .cells
            .iter()
            .find(|c| c.system == baton && c.scenario == cell.scenario)
            .map_or(0.0, |c| c.p50);
        let throughput = cell.scenario.starts_with("chain throughput");
        let ratio = if throughput {
            reference / cell.p50.max(1e-9)
        } else {
            cell.p50 / reference.max(1e-9)
        };
        if throughput {
            println!(
                "| {} | {} | {:.0} req/s | | {:.1}x |",
                cell.scenario, cell.system, cell.p50, ratio
            );
        } else {
            println!(
                "| {} | {} | {:.2} ms | {:.2} ms | {:.1}x |",
                cell.scenario, cell.system, cell.p50, cell.p99, ratio
            );
        }
    }
}
