//! `baton load`'s live side: deploys the plan's functions to a server, teaches it the
//! training chains, runs the test chains at their times (one thread per chain in flight),
//! samples `/v1/pool` for idle memory, and reads what the server counted.

use super::plan::{Chain, Plan};
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use baton_core::sync::Unpoisoned;
use baton_server::client::Client;
use baton_trace::schema::ExecutionRecord;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The replay function's program (see its docstring).
const WORKER: &str = include_str!("replay_worker.py");
/// baton's worker helper, beside it.
const WORKER_HELPER: &str = include_str!("../../../../examples/python/baton_worker.py");
/// Memory each worker writes and holds, MiB (the declared memory is the trace's).
pub const TOUCH_MIB: u64 = 1;
/// Largest body of one `POST /v1/logs`, bytes (the server's default cap is 16 MiB).
const LOG_CHUNK_BYTES: usize = 4 << 20;

/// What the server's pool says of itself, read before the replay.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    /// Its policy's name.
    pub policy: String,
    /// Its knob.
    pub knob: f64,
    /// Its reuse rule.
    pub reuse: String,
    /// Memory its instances may hold, MiB.
    pub memory_mib: u64,
    /// Its cores.
    pub cores: u32,
    /// Worker starts it allows under way at once.
    pub start_slots: usize,
}

/// Reads the server's policy and capacity from `/v1/pool`.
pub fn server_facts(client: &Client) -> Result<ServerFacts> {
    let pool = pool(client)?;
    if pool["keep_alive_secs"].is_number() {
        bail!(
            "the server keeps instances for a fixed --keep-alive-secs, which `baton sim` does not model: restart it without"
        );
    }
    let text = |key: &str| pool[key].as_str().map(str::to_owned);
    Ok(ServerFacts {
        policy: text("policy").context("/v1/pool has no policy")?,
        knob: pool["policy_knob"].as_f64().unwrap_or(1.0),
        reuse: text("reuse").unwrap_or_else(|| "recent".into()),
        memory_mib: pool["capacity"]["memory_mib"]
            .as_u64()
            .context("/v1/pool has no capacity.memory_mib")?,
        cores: pool["capacity"]["cores"].as_u64().unwrap_or(2) as u32,
        start_slots: pool["start_slots"]
            .as_u64()
            .context("/v1/pool has no start_slots (a server older than this client)")?
            as usize,
    })
}

fn pool(client: &Client) -> Result<Value> {
    let response = client.get("/v1/pool")?;
    if response.status != 200 {
        bail!("GET /v1/pool: {} {}", response.status, response.text());
    }
    Ok(response.json())
}

/// Deploys every function of `plan` as a Python worker running `replay_worker.py`.
pub fn deploy(client: &Client, plan: &Plan) -> Result<()> {
    let dir = tempfile::tempdir().context("cannot make a directory for the replay function")?;
    std::fs::write(dir.path().join("replay_worker.py"), WORKER)?;
    std::fs::write(dir.path().join("baton_worker.py"), WORKER_HELPER)?;
    let code = base64::engine::general_purpose::STANDARD
        .encode(baton_runtime::code::pack_dir(dir.path())?);
    for function in &plan.functions {
        // A step's own time, four times over, and never under 10 s.
        let timeout_ms = (function.longest_us / 250).clamp(10_000, 86_400_000);
        let manifest = format!(
            "name = \"{}\"\nkind = \"process\"\ncommand = [\"python3\", \"-u\", \"replay_worker.py\"]\n\
             memory_mib = {}\ntimeout_ms = {timeout_ms}\nmax_instances = 64\ntemplate = false\n\
             [env]\nBATON_REPLAY_TOUCH_MIB = \"{TOUCH_MIB}\"\n",
            function.name, function.memory_mib
        );
        let body = json!({ "manifest": manifest, "code_base64": code });
        crate::server::put_function(
            client,
            &function.name,
            &body,
            &format!("deploying `{}` (trace function `{}`)", function.name, function.task),
        )
        .map_err(|e| {
            // A server that refuses process functions says how to allow them; `baton load`
            // needs them whatever else went wrong.
            if format!("{e:#}").contains("--allow-process-functions") {
                e
            } else {
                e.context("`baton load` deploys Python workers (the server needs --allow-process-functions)")
            }
        })?;
    }
    Ok(())
}

/// Teaches the server the training chains (`POST /v1/logs`, in chunks); returns the
/// records sent.
pub fn teach(client: &Client, plan: &Plan, origin_ns: u64) -> Result<usize> {
    let records = plan.records(&plan.train, "train-", origin_ns);
    let mut body = String::new();
    let send = |body: &str| -> Result<()> {
        let response =
            client.request("POST", "/v1/logs", "application/x-ndjson", body.as_bytes())?;
        if response.status != 200 {
            bail!("POST /v1/logs: {} {}", response.status, response.text());
        }
        Ok(())
    };
    for record in &records {
        body.push_str(&record.to_json().to_string());
        body.push('\n');
        if body.len() > LOG_CHUNK_BYTES {
            send(&body)?;
            body.clear();
        }
    }
    if !body.is_empty() {
        send(&body)?;
    }
    Ok(records.len())
}

/// The id of the server's last execution record (`Baton-Last-Id`).
pub fn last_record_id(client: &Client) -> Result<u64> {
    let response = client.get("/v1/logs?tail=0")?;
    if response.status != 200 {
        bail!("GET /v1/logs: {} {}", response.status, response.text());
    }
    response
        .header("baton-last-id")
        .and_then(|id| id.parse().ok())
        .context("GET /v1/logs: no Baton-Last-Id")
}

/// Every execution record the server wrote after record `id`, in order.
pub fn records_after(client: &Client, mut id: u64) -> Result<Vec<ExecutionRecord>> {
    let mut out = Vec::new();
    loop {
        let response = client.get(&format!("/v1/logs?after={id}&tail=10000"))?;
        if response.status != 200 {
            bail!("GET /v1/logs: {} {}", response.status, response.text());
        }
        let text = response.text();
        let before = out.len();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            out.push(
                ExecutionRecord::parse(line)
                    .with_context(|| format!("GET /v1/logs after {id}, line {}", n + 1))?,
            );
        }
        let last = response
            .header("baton-last-id")
            .and_then(|id| id.parse().ok())
            .unwrap_or(id);
        if out.len() == before || last == id {
            return Ok(out);
        }
        id = last;
    }
}

/// Now, ns since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What the replay saw from the client's side and the server's counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Observed {
    /// Chains sent.
    pub requests: u64,
    /// Chains that failed (a status other than 200, or no answer), by first error.
    pub failed: u64,
    /// The first few failures.
    pub failures: Vec<String>,
    /// Steps run (the server's count).
    pub steps: u64,
    /// Cold starts (the server's count) and their causes.
    pub cold_starts: u64,
    /// First / busy / evicted / expired.
    pub cold_causes: [u64; 4],
    /// Steps a pre-warm served.
    pub prewarmed_steps: u64,
    /// Each chain's latency less its steps' own time, µs (answered chains).
    pub added_us: Vec<u64>,
    /// How long each cold step waited for its worker, µs.
    pub cold_wait_us: Vec<u64>,
    /// Idle memory over the replay, GB·s (from `/v1/pool` samples).
    pub idle_gb_s: f64,
    /// `/v1/pool` samples taken.
    pub samples: u64,
    /// How late chains were sent, µs (the driver's own lag).
    pub late_us: Vec<u64>,
    /// The replay's wall time, s.
    pub seconds: f64,
    /// The server's median worker start after the replay (`/v1/pool` `start_ms_median`),
    /// µs: a start itself, without waiting for a slot.
    pub start_us: Option<u64>,
    /// The server's median planner lag after the replay (`/v1/pool`
    /// `planner_lag_ms_median`), µs.
    pub planner_lag_us: Option<u64>,
    /// Its 99th percentile (`planner_lag_ms_p99`), µs.
    pub planner_lag_p99_us: Option<u64>,
    /// Its 20 equally likely values (`planner_lag_ms_quantiles`), µs.
    pub planner_lags_us: Vec<u64>,
    /// Every counter of `/v1/pool` over the replay (after less before).
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// Runs the test chains, chain `i` at `start + at_us − test_start_us`.
pub fn replay(client: &Client, plan: &Plan, start: Instant, threads: usize) -> Result<Observed> {
    let before = pool(client)?;
    let longest: u64 = plan
        .test
        .iter()
        .map(|c| c.steps.iter().map(|s| s.own_us).sum::<u64>())
        .max()
        .unwrap_or(0);
    let client = client
        .clone()
        .within(Duration::from_micros(longest) * 4 + Duration::from_secs(60));
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let observed = Mutex::new(Observed::default());
    let samples: Mutex<Vec<(f64, f64)>> = Mutex::new(Vec::new());
    let chains: Vec<(String, String, u64, &Chain)> = plan
        .test
        .iter()
        .map(|c| {
            let first = plan.functions[c.steps[0].function as usize].name.clone();
            let own: u64 = c.steps.iter().map(|s| s.own_us).sum();
            (first, plan.payload(c), own, c)
        })
        .collect();
    let bar = crate::progress::bar("replay", chains.len() as u64);
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(|| sample(&client, start, &done, &samples));
        let mut workers = Vec::new();
        for _ in 0..threads.max(1) {
            workers.push(scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((first, payload, own_us, chain)) = chains.get(i) else {
                    break;
                };
                let due = start + Duration::from_micros(chain.at_us - plan.test_start_us);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let late = Instant::now().saturating_duration_since(due).as_micros() as u64;
                let sent = Instant::now();
                let answer = client.request(
                    "POST",
                    &format!("/v1/functions/{first}/invoke"),
                    "application/octet-stream",
                    payload.as_bytes(),
                );
                let took = sent.elapsed().as_micros() as u64;
                // The answer is read before the lock is taken: threads wait only to add.
                let (cold_waits, failure) = match answer {
                    Ok(response) if response.status == 200 => {
                        let steps = response.json();
                        let waits: Vec<u64> = steps["steps"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|step| step["cold"] == Value::Bool(true))
                            .map(|step| step["ready_wait_us"].as_u64().unwrap_or(0))
                            .collect();
                        (waits, None)
                    }
                    Ok(response) => (
                        Vec::new(),
                        Some(format!("{}: {}", response.status, response.text())),
                    ),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                let mut seen = observed.lock_unpoisoned();
                seen.requests += 1;
                seen.late_us.push(late);
                match failure {
                    None => {
                        seen.added_us.push(took.saturating_sub(*own_us));
                        seen.cold_wait_us.extend(cold_waits);
                    }
                    Some(why) => {
                        seen.failed += 1;
                        if seen.failures.len() < 5 {
                            seen.failures.push(why);
                        }
                    }
                }
                drop(seen);
                bar.inc(1);
            }));
        }
        for worker in workers {
            let _ = worker.join();
        }
        done.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    bar.finish();
    let after = pool(&client)?;
    let mut seen = observed.into_inner_unpoisoned();
    seen.seconds = start.elapsed().as_secs_f64();
    let counter = |name: &str| {
        after["counters"][name]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before["counters"][name].as_u64().unwrap_or(0))
    };
    seen.steps = counter("steps");
    seen.cold_starts = counter("cold_starts");
    seen.cold_causes = [
        counter("cold_first"),
        counter("cold_concurrent"),
        counter("cold_evicted"),
        counter("cold_expired"),
    ];
    seen.prewarmed_steps = counter("prewarmed_steps");
    seen.start_us = after["start_ms_median"]
        .as_f64()
        .map(|ms| (ms * 1000.0).round() as u64);
    let us = |key: &str| after[key].as_f64().map(|ms| (ms * 1000.0).round() as u64);
    seen.planner_lag_us = us("planner_lag_ms_median");
    seen.planner_lag_p99_us = us("planner_lag_ms_p99");
    seen.planner_lags_us = after["planner_lag_ms_quantiles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ms| ms.as_f64().map(|ms| (ms * 1000.0).round() as u64))
        .collect();
    seen.counters = after["counters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, _)| (name.clone(), counter(name)))
        .collect();
    let samples = samples.into_inner_unpoisoned();
    seen.samples = samples.len() as u64;
    seen.idle_gb_s = samples
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum::<f64>()
        / 1024.0;
    Ok(seen)
}

/// Samples `/v1/pool`'s idle memory (MiB) every 100 ms until `done`, as (s since `start`,
/// MiB); the last sample is taken once `done` is set.
fn sample(client: &Client, start: Instant, done: &AtomicBool, out: &Mutex<Vec<(f64, f64)>>) {
    loop {
        let finished = done.load(Ordering::Relaxed);
        if let Ok(response) = client.get("/v1/pool") {
            if let Some(mib) = response.json()["idle_memory_mib"].as_f64() {
                out.lock_unpoisoned()
                    .push((start.elapsed().as_secs_f64(), mib));
            }
        }
        if finished {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
