//! `baton demo`: the example order pipeline (validate → price → reserve | reject → notify;
//! C guests compiled to wasm and Python workers) on an in-process server on loopback,
//! driven by the same seeded mix of requests twice: with pre-warming off (instances kept
//! warm for a fixed time after use, as most platforms do) and on (baton's chain policy,
//! same keep-alive). Prints cold starts, latency per request and idle warm memory.

use crate::server::deploy_file;
use anyhow::{Context, Result};
use baton_core::policy::spec::{PolicyName, PolicySpec};
use baton_server::client::Client;
use baton_server::{RunningServer, ServerConfig};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `baton demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Requests per phase.
    #[arg(long, default_value_t = 30)]
    requests: usize,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Keep-alive after use in both phases, seconds (idle gaps are longer).
    #[arg(long, default_value_t = 2.0)]
    keep_alive_secs: f64,
    /// Requests of the same mix (another seed) each phase's server learns from before the
    /// measured ones, as a running service has history.
    #[arg(long, default_value_t = 30)]
    warmup: usize,
    /// The examples directory (default: ./examples).
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One request of the mix.
#[derive(Debug, Clone)]
struct Planned {
    gap: Duration,
    payload: String,
}

/// A small deterministic generator (64-bit LCG, high bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Bursts (20–200 ms apart) separated by idle gaps of 2.5–4 s; 70 % of orders within
/// credit (reserved), 20 % over it (rejected), 10 % invalid.
fn workload(n: usize, seed: u64, keep_alive: f64) -> Vec<Planned> {
    let mut rng = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let idle = i > 0 && rng.next() < 0.3;
            let gap = if i == 0 {
                0.0
            } else if idle {
                keep_alive + 0.5 + rng.next() * 1.5
            } else {
                0.02 + rng.next() * 0.18
            };
            let kind = rng.next();
            let payload = if kind < 0.7 {
                format!(
                    r#"{{"order":{i},"item":"book","qty":{},"credit":500}}"#,
                    1 + i % 4
                )
            } else if kind < 0.9 {
                format!(
                    r#"{{"order":{i},"item":"desk","qty":{},"credit":500}}"#,
                    2 + i % 3
                )
            } else {
                format!(r#"{{"order":{i},"qty":0}}"#)
            };
            Planned {
                gap: Duration::from_secs_f64(gap),
                payload,
            }
        })
        .collect()
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Its name.
    pub name: String,
    /// The server's policy.
    pub policy: String,
    /// Requests sent.
    pub requests: usize,
    /// Steps that started cold.
    pub cold_starts: u64,
    /// Of those, steps that took their template's spare (a worker forked ahead).
    pub spare_starts: u64,
    /// Steps served by a pre-warmed instance.
    pub prewarmed_steps: u64,
    /// Of those, steps that waited for their pre-warm to finish.
    pub late_prewarms: u64,
    /// Of those, steps of requests after an idle gap (longer than the keep-alive).
    pub late_after_idle: u64,
    /// Pre-warms planned from a request's route (its task set, once the entry's first call
    /// revealed the route), as the server counted them.
    pub route_prewarms: u64,
    /// Request latency at the client, median, ms.
    pub p50_ms: f64,
    /// Request latency at the client, 99th percentile, ms.
    pub p99_ms: f64,
    /// Request latency at the client, mean, ms.
    pub mean_ms: f64,
    /// Idle memory integrated over the phase: idle workers' declared memory and the
    /// templates' measured memory, MiB·s.
    pub idle_mib_s: f64,
    /// Mean idle memory (as `idle_mib_s`), MiB.
    pub mean_idle_mib: f64,
    /// Wall time of the phase, s.
    pub seconds: f64,
    /// From the last deploy until every function was ready (modules loaded, templates
    /// up), before the first request, ms.
    pub ready_ms: f64,
    /// Idle memory-time by what held it (`FUNCTION pre-warmed`: not used yet; `FUNCTION
    /// kept`: kept after use; `templates`), MiB·s.
    pub idle_by: std::collections::BTreeMap<String, f64>,
    /// The server's counters at the end of the phase (as `/v1/pool` shows them).
    pub counters: serde_json::Value,
    /// Each request: its gap before, its latency and its steps.
    pub each: Vec<RequestRow>,
}

/// One request of a phase.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    /// Idle time before it, ms.
    pub gap_ms: f64,
    /// Latency at the client, ms.
    pub latency_ms: f64,
    /// Each step as `function warmth/tier µs (waited µs)`: its time, wait for its instance
    /// included, and that wait.
    pub steps: Vec<String>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    baton_core::rank::nearest_rank(sorted, q).unwrap_or(0.0)
}

#[allow(clippy::too_many_arguments)]
fn run_phase(
    name: &str,
    policy: PolicyName,
    warmup: &[Planned],
    plan: &[Planned],
    examples: &Path,
    keep_alive: f64,
    progress: bool,
) -> Result<Phase> {
    let data = baton_runtime::bench::tempfile_dir(&format!("demo-{}", policy_word(policy)))?;
    let mut config = ServerConfig::new("127.0.0.1:0".parse()?, data.clone());
    // Both phases keep a finished instance equally long: the difference is prediction.
    config.policy = PolicySpec {
        keep_alive_us: Some((keep_alive * 1e6) as u64),
        ..PolicySpec::new(policy)
    };
    // The order pipeline has Python steps; they run in the sandbox like any upload.
    config.allow_process_functions = true;
    let server = RunningServer::start(config).context("starting the demo server")?;
    let client = Client::new(&format!("http://{}", server.addr), None)?;
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(examples.join("order"))
        .with_context(|| format!("reading {}", examples.join("order").display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    manifests.sort();
    let mut kinds = Vec::new();
    for path in &manifests {
        deploy_file(&client, path)?;
        let text = std::fs::read_to_string(path)?;
        let spec = baton_runtime::manifest::FunctionSpec::from_toml(&text)
            .with_context(|| format!("reading {}", path.display()))?;
        let wasm = matches!(
            spec.kind,
            baton_runtime::manifest::FunctionKind::Wasm { .. }
        );
        kinds.push((spec.name.clone(), wasm));
    }
    // A deploy makes each function ready in the background (a module compiled, a template
    // started); traffic starts once it is done, as after any deploy that is not rushed.
    let ready_after = wait_until_ready(&client, &kinds)?;
    // The warm-up: traffic the server learns from (as a running service has), not measured.
    let warming = progress
        .then(|| crate::progress::counter(&format!("{name:<24} warm-up"), warmup.len() as u64));
    for request in warmup.iter() {
        std::thread::sleep(request.gap);
        client.request(
            "POST",
            "/v1/functions/validate/invoke",
            "application/json",
            request.payload.as_bytes(),
        )?;
        if let Some(bar) = &warming {
            bar.inc(1);
        }
    }
    if let Some(bar) = warming {
        bar.finish_and_clear();
    }
    let counters_before = counters_of(&client)?;

    // Idle warm memory, sampled every 20 ms.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (flag, director) = (Arc::clone(&sampling), Arc::clone(server.director()));
        std::thread::spawn(move || {
            let (mut area, started) = (0.0, Instant::now());
            let mut by: std::collections::BTreeMap<String, f64> = Default::default();
            let mut last = Instant::now();
            while flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                let now = Instant::now();
                let dt = (now - last).as_secs_f64();
                // Idle workers' declared memory, and what templates hold (measured).
                let pool = director.pool();
                let templates = pool.template_memory_mib();
                area += templates as f64 * dt;
                *by.entry("templates".into()).or_default() += templates as f64 * dt;
                for idle in pool.idle() {
                    let what = if idle.prewarmed { "pre-warmed" } else { "kept" };
                    area += idle.memory_mib as f64 * dt;
                    *by.entry(format!("{} {what}", idle.function)).or_default() +=
                        idle.memory_mib as f64 * dt;
                }
                last = now;
            }
            (area, started.elapsed().as_secs_f64(), by)
        })
    };
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(plan.len());
    let mut rows = Vec::with_capacity(plan.len());
    let (mut cold, mut spare, mut prewarmed, mut late, mut late_after_idle) = (0, 0, 0, 0, 0);
    let measuring = progress.then(|| crate::progress::bar(name, plan.len() as u64));
    for (i, request) in plan.iter().enumerate() {
        std::thread::sleep(request.gap);
        let sent = Instant::now();
        let response = client.request(
            "POST",
            "/v1/functions/validate/invoke",
            "application/json",
            request.payload.as_bytes(),
        )?;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        let document = response.json();
        anyhow::ensure!(
            response.status == 200,
            "request {i} failed: {}",
            response.text()
        );
        rows.push(RequestRow {
            gap_ms: request.gap.as_secs_f64() * 1e3,
            latency_ms: latencies[i],
            steps: document["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|step| {
                    format!(
                        "{} {}/{} {} µs (waited {} µs)",
                        step["task"].as_str().unwrap_or("?"),
                        step["warmth"].as_str().unwrap_or("?"),
                        step["tier"].as_str().unwrap_or("?"),
                        step["duration_us"].as_u64().unwrap_or(0),
                        step["ready_wait_us"].as_u64().unwrap_or(0)
                    )
                })
                .collect(),
        });
        for step in document["steps"].as_array().into_iter().flatten() {
            match step["warmth"].as_str() {
                Some("cold") => {
                    cold += 1;
                    spare += u64::from(step["tier"] == "spare");
                }
                Some("prewarmed") => prewarmed += 1,
                Some("prewarm-late") => {
                    prewarmed += 1;
                    late += 1;
                    if request.gap.as_secs_f64() > keep_alive {
                        late_after_idle += 1;
                    }
                }
                _ => {}
            }
        }
        if let Some(bar) = &measuring {
            bar.inc(1);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let (idle_mib_s, sampled, idle_by) = sampler.join().unwrap_or_default();
    if let Some(bar) = measuring {
        bar.finish();
    }
    let pool = client.get("/v1/pool")?;
    let counters_after = serde_json::from_slice::<serde_json::Value>(&pool.body)
        .map(|v| v["counters"].clone())
        .unwrap_or_default();
    // What the measured requests did: the counters' growth since the warm-up.
    let counters: serde_json::Map<String, serde_json::Value> = counters_after
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, after)| {
            let before = counters_before[name].as_u64().unwrap_or(0);
            let grew = after.as_u64().unwrap_or(0).saturating_sub(before);
            (name.clone(), serde_json::Value::from(grew))
        })
        .collect();
    let counters = serde_json::Value::Object(counters);
    let route_prewarms = counters["route_prewarms"].as_u64().unwrap_or(0);
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Phase {
        name: name.into(),
        policy: policy_word(policy).to_owned(),
        requests: plan.len(),
        cold_starts: cold,
        spare_starts: spare,
        prewarmed_steps: prewarmed,
        late_prewarms: late,
        late_after_idle,
        route_prewarms,
        p50_ms: percentile(&sorted, 0.5),
        p99_ms: percentile(&sorted, 0.99),
        mean_ms: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
        idle_mib_s,
        mean_idle_mib: idle_mib_s / sampled.max(1e-9),
        seconds,
        ready_ms: ready_after.as_secs_f64() * 1e3,
        idle_by,
        counters,
        each: rows,
    })
}

/// The server's counters now.
fn counters_of(client: &Client) -> Result<serde_json::Value> {
    let pool: serde_json::Value = serde_json::from_slice(&client.get("/v1/pool")?.body)?;
    Ok(pool["counters"].clone())
}

/// Waits until every deployed function is ready (each wasm module loaded, each Python
/// function's template up or refused), at most 60 s; returns how long it took.
fn wait_until_ready(client: &Client, kinds: &[(String, bool)]) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let pool: serde_json::Value = serde_json::from_slice(&client.get("/v1/pool")?.body)?;
        let modules: Vec<&str> = pool["loaded_modules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect();
        let templates: Vec<&str> = pool["templates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["pid"].is_u64() || t["refused"] == true)
            .filter_map(|t| t["function"].as_str())
            .collect();
        let waiting: Vec<&str> = kinds
            .iter()
            .filter(|(name, wasm)| {
                let list = if *wasm { &modules } else { &templates };
                !list.contains(&name.as_str())
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if waiting.is_empty() {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "deployed functions not ready after 60 s: {}",
            waiting.join(", ")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn policy_word(policy: PolicyName) -> &'static str {
    policy.as_str()
}

pub fn demo(args: DemoArgs) -> Result<()> {
    anyhow::ensure!(args.requests > 0, "--requests must be positive");
    anyhow::ensure!(
        args.keep_alive_secs > 0.0,
        "--keep-alive-secs must be positive"
    );
    let examples = baton_runtime::bench::examples_dir(args.examples.as_deref());
    let plan = workload(args.requests, args.seed, args.keep_alive_secs);
    let warmup = workload(args.warmup, args.seed.wrapping_add(1), args.keep_alive_secs);
    let idle_gaps = plan
        .iter()
        .filter(|p| p.gap.as_secs_f64() > args.keep_alive_secs)
        .count();
    let progress = !args.json;
    if progress {
        eprintln!(
            "baton demo: the order pipeline (validate [C→wasm] → price [Python] → reserve | reject [C→wasm] → notify [Python])\n{} requests per phase, {} after an idle gap longer than the {} s keep-alive; same seeded mix both times, after {} warm-up requests the server learns from",
            plan.len(),
            idle_gaps,
            args.keep_alive_secs,
            args.warmup
        );
    }
    let off = run_phase(
        "pre-warming off (ttl)",
        PolicyName::Ttl,
        &warmup,
        &plan,
        &examples,
        args.keep_alive_secs,
        progress,
    )?;
    let on = run_phase(
        "pre-warming on (chain)",
        PolicyName::Chain,
        &warmup,
        &plan,
        &examples,
        args.keep_alive_secs,
        progress,
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "requests": plan.len(),
                "warmup": args.warmup,
                "after_idle_gap": idle_gaps,
                "keep_alive_s": args.keep_alive_secs,
                "seed": args.seed,
                "phases": [off, on],
            }))?
        );
        return Ok(());
    }
    println!(
        "\n{:<24} {:>11} {:>6} {:>10} {:>6} {:>10} {:>6} {:>8} {:>8} {:>8} {:>11} {:>9}",
        "",
        "cold starts",
        "spare",
        "pre-warmed",
        "late",
        "after idle",
        "route",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "idle MiB·s",
        "idle MiB"
    );
    for phase in [&off, &on] {
        println!(
            "{:<24} {:>11} {:>6} {:>10} {:>6} {:>10} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>11.0} {:>9.0}",
            phase.name,
            phase.cold_starts,
            phase.spare_starts,
            phase.prewarmed_steps,
            phase.late_prewarms,
            phase.late_after_idle,
            phase.route_prewarms,
            phase.p50_ms,
            phase.p99_ms,
            phase.mean_ms,
            phase.idle_mib_s,
            phase.mean_idle_mib
        );
    }
    println!(
        "\ncold starts avoided: {} of {}; mean latency {:.1} → {:.1} ms ({:.2} ×); \"spare\": cold starts that took their template's spare (a worker forked ahead, no fork on the way), \"late\": a pre-warm still starting when its step came (the step waited for the rest of it instead of a whole cold start), \"after idle\": of those, in requests after an idle gap; \"route\": pre-warms planned from the request's route (its task set) once its entry's first call revealed it; idle memory: idle workers' declared memory plus the templates' and their spares' measured memory (PSS)",
        off.cold_starts.saturating_sub(on.cold_starts),
        off.cold_starts,
        off.mean_ms,
        on.mean_ms,
        on.mean_ms / off.mean_ms.max(f64::MIN_POSITIVE)
    );
    Ok(())
}
