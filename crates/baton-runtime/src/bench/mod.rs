//! What a hop and a cold start cost on this machine, measured in one run (`baton bench hop`,
//! `baton bench coldstart`).
//!
//! Hop: a two-step sequence `a → b` of the same tiny guest. The director hands `a`'s
//! output to `b`'s pre-linked instance; the same hop over HTTP sends `a`'s output in a
//! loopback HTTP/1.1 request to a server thread in this process that runs `b` on the same
//! engine and answers with its output. Both are timed from `a`'s output being ready to `b`
//! holding its input (the hand-off), and to `b`'s output being back with the caller (the
//! hop with its result). The HTTP side is a minimal keep-alive server and client over
//! `TCP_NODELAY` sockets without any framework: a lower bound on a real gateway hop.
//!
//! Cold start: pre-warmed versus cold for a C guest compiled to wasm (compile not cached,
//! then cached on disk) and for a Python worker that imports heavy standard modules.

use baton_core::sync::Unpoisoned;
mod cold;
mod machine;
pub use cold::{coldstart, ColdReport, ColdRow, MemoryRow};
pub use machine::{MachinePenalty, LINES as PROBE_LINES};

use crate::director::Director;
use crate::manifest::FunctionSpec;
use crate::pool::WarmPool;
use crate::wasm::{WasmEngine, WasmFunction};
use baton_core::policy::NonePolicy;
use baton_core::{SnapshotCell, Tdg, TdgConfig};
use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a bench could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// Setting up or running a function failed.
    #[error("{0}")]
    Setup(String),
    /// The loopback HTTP side failed.
    #[error("loopback HTTP: {0}")]
    Http(#[from] std::io::Error),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

/// Median and tail of a set of samples, µs.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
}

impl Summary {
    /// Summarizes `samples` (ns).
    pub fn of(mut samples: Vec<u64>) -> Summary {
        samples.sort_unstable();
        let at =
            |q: f64| baton_core::rank::nearest_rank(&samples, q).map_or(0.0, |ns| ns as f64 / 1e3);
        Summary {
            n: samples.len(),
            p50_us: at(0.5),
            p99_us: at(0.99),
        }
    }
}

/// `baton bench hop`'s figures.
#[derive(Debug, Clone, Serialize)]
pub struct HopReport {
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Director hand-off: `a`'s output ready → `b` holding its input.
    pub handoff: Summary,
    /// Director hop with its result: `a`'s output ready → `b`'s output back.
    pub handoff_with_result: Summary,
    /// Loopback HTTP: `a`'s output ready → `b` holding its input in the server.
    pub http: Summary,
    /// Loopback HTTP with the response: `a`'s output ready → `b`'s output at the client.
    pub http_with_result: Summary,
    /// `http.p50 / handoff.p50`.
    pub ratio_p50: f64,
    /// `http_with_result.p50 / handoff_with_result.p50`.
    pub ratio_with_result_p50: f64,
    /// The guest.
    pub guest: String,
    /// The whole invocation `a → b` through the director, called back to back.
    pub invoke_tight: Summary,
    /// The same with the director idle in between (sparse traffic, as serverless traffic
    /// mostly is): one row per gap.
    pub sparse: Vec<SparseRow>,
}

/// The director's hop and whole invocation with an idle gap before each call.
#[derive(Debug, Clone, Serialize)]
pub struct SparseRow {
    /// The gap between calls, ms.
    pub gap_ms: u64,
    /// Hand-off (as [`HopReport::handoff`]).
    pub handoff: Summary,
    /// The whole invocation.
    pub invoke: Summary,
    /// `invoke.p50 / invoke_tight.p50`.
    pub ratio_to_tight: f64,
    /// a and b run straight on the engine (no director, no planner) after the same gap,
    /// p50 over the same calls back to back.
    pub engine_ratio_to_tight: f64,
    /// The machine's own penalty after the same gap, without baton (see `machine.rs`).
    pub machine: MachinePenalty,
    /// The invocation's extra time after the gap in the machine's cold cache lines:
    /// `(invoke.p50 − invoke_tight.p50) / machine.cold_line_ns`, about how many lines and
    /// pages the call touches that the gap took away.
    pub cold_lines: f64,
}

fn spec(text: &str) -> Result<FunctionSpec, BenchError> {
    FunctionSpec::from_toml(text).map_err(setup("manifest"))
}

fn wasm_spec(name: &str, module: &Path) -> Result<FunctionSpec, BenchError> {
    spec(&format!(
        "name = \"{name}\"\nkind = \"wasm\"\nmodule = {:?}\nmemory_mib = 16\ntimeout_ms = 5000\n",
        module.display().to_string()
    ))
}

/// A minimal HTTP/1.1 request or response head: returns the body length it announces.
fn read_head(reader: &mut impl BufRead, line: &mut String) -> std::io::Result<Option<usize>> {
    let mut length = 0;
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" {
            return Ok(Some(length));
        }
        if first {
            first = false;
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad content-length")
                })?;
            }
        }
    }
}

/// Serves `function` over keep-alive HTTP on `listener` until the client hangs up; each
/// run's input-taken instant goes to `taken`.
fn serve(
    listener: TcpListener,
    engine: Arc<WasmEngine>,
    function: Arc<WasmFunction>,
    taken: Arc<Mutex<Option<Instant>>>,
) -> std::io::Result<()> {
    let (stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut body = Vec::new();
    while let Some(length) = read_head(&mut reader, &mut line)? {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
        let run = engine
            .run(&function, &body, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        *taken.lock_unpoisoned() = run.input_taken;
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            run.output.len()
        )
        .into_bytes();
        response.extend_from_slice(&run.output);
        writer.write_all(&response)?;
    }
    Ok(())
}

/// Measures the hop (see the module docs) over `iterations` hops of `payload_bytes`.
pub fn hop(
    examples: &Path,
    iterations: usize,
    payload_bytes: usize,
    sparse_samples: usize,
) -> Result<HopReport, BenchError> {
    let guest = examples.join("wat/upper_native.wat");
    let cache = tempfile_dir("hop")?;
    let engine = Arc::new(WasmEngine::new(&cache, 16, 64).map_err(setup("wasm engine"))?);
    let pool = WarmPool::new(
        vec![wasm_spec("a", &guest)?, wasm_spec("b", &guest)?],
        crate::isolation::Isolation::none(),
    );
    let tdg = Tdg::new(TdgConfig::default());
    let graph = Arc::new(SnapshotCell::new(tdg.clone().snapshot()));
    let director = Director::new(pool, tdg, graph, Box::new(NonePolicy))
        .with_wasm(Arc::clone(&engine))
        .into_shared()
        .map_err(setup("director"))?;
    director
        .declare_sequence("ab", vec!["a".into(), "b".into()])
        .map_err(setup("sequence"))?;
    let payload: Vec<u8> = (0..payload_bytes).map(|i| b'a' + (i % 26) as u8).collect();

    // HTTP side: b served by a thread of this process.
    let b = Arc::new(
        engine
            .load(&wasm_spec("b", &guest)?)
            .map_err(setup("loading the guest"))?,
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let taken = Arc::new(Mutex::new(None));
    let server = {
        let (engine, b, taken) = (Arc::clone(&engine), Arc::clone(&b), Arc::clone(&taken));
        std::thread::Builder::new()
            .name("baton-bench-http".into())
            .spawn(move || serve(listener, engine, b, taken))?
    };
    let client = TcpStream::connect(address)?;
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = client.try_clone()?;
    let mut reader = BufReader::new(client);
    let mut line = String::new();
    let mut response = Vec::new();
    let a = engine
        .load(&wasm_spec("a", &guest)?)
        .map_err(setup("loading the guest"))?;

    // a then b on the engine, each instantiated and freed in the call, ns.
    let engine_pair = |payload: &[u8]| -> Result<u64, BenchError> {
        let started = Instant::now();
        let out = engine.invoke(&a, payload).map_err(setup("guest a"))?;
        engine.invoke(&b, &out).map_err(setup("guest b"))?;
        Ok(started.elapsed().as_nanos() as u64)
    };
    let mut handoff = Vec::with_capacity(iterations);
    let mut handoff_result = Vec::with_capacity(iterations);
    let mut http = Vec::with_capacity(iterations);
    let mut http_result = Vec::with_capacity(iterations);
    let mut invoke_tight = Vec::with_capacity(iterations);
    let mut engine_tight = Vec::with_capacity(iterations);
    let warmup = iterations / 10 + 10;
    // Interleaved, so both sides see the same machine.
    let hop_of = |payload: &[u8]| -> Result<(Option<(u64, u64)>, u64), BenchError> {
        let started = Instant::now();
        let outcome = director
            .invoke("ab", payload)
            .map_err(setup("director hop"))?;
        let took = started.elapsed().as_nanos() as u64;
        if outcome.output.len() != payload.len() {
            return Err(BenchError::Setup("director hop: wrong output".into()));
        }
        Ok((outcome.steps[1].hop_ns, took))
    };
    for i in 0..warmup + iterations {
        let (hop, took) = hop_of(&payload)?;

        // The planner polls for a moment after the director's work (see
        // `planner::SPIN`); the HTTP half waits until it is idle again, so a busy core does
        // not speed up the HTTP hop's wake-ups.
        std::thread::sleep(crate::planner::SPIN * 3);
        // The same two guests straight on the engine: the machine's baseline.
        let direct = engine_pair(&payload)?;
        // a runs here, then its output goes over HTTP to b.
        let a_output = engine.invoke(&a, &payload).map_err(setup("guest a"))?;
        let ready = Instant::now();
        let mut request = format!(
            "POST /v1/functions/b/invoke HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            a_output.len()
        )
        .into_bytes();
        request.extend_from_slice(&a_output);
        writer.write_all(&request)?;
        let length = read_head(&mut reader, &mut line)?
            .ok_or_else(|| std::io::Error::other("server closed"))?;
        response.resize(length, 0);
        reader.read_exact(&mut response)?;
        let back = ready.elapsed();
        let input_at = taken
            .lock_unpoisoned()
            .take()
            .ok_or_else(|| std::io::Error::other("no input instant"))?;
        if i >= warmup {
            if let Some((hop_ns, result_ns)) = hop {
                handoff.push(hop_ns);
                handoff_result.push(result_ns);
            }
            invoke_tight.push(took);
            engine_tight.push(direct);
            http.push(input_at.saturating_duration_since(ready).as_nanos() as u64);
            http_result.push(back.as_nanos() as u64);
        }
    }
    drop(writer);
    drop(reader);
    let _ = server.join();
    let invoke_tight = Summary::of(invoke_tight);
    let engine_tight = Summary::of(engine_tight);
    let mut sparse = Vec::new();
    let probes =
        (sparse_samples > 0).then(|| machine::Probes::new((invoke_tight.p50_us * 1e3) as u64, 200));
    for gap_ms in [10u64, 100] {
        // 0 samples: no sparse rows, and none of their gaps slept.
        let Some(probes) = &probes else { break };
        let n = if gap_ms >= 100 {
            sparse_samples.div_ceil(4).max(3)
        } else {
            sparse_samples
        };
        let (mut hops, mut invokes, mut direct) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            std::thread::sleep(Duration::from_millis(gap_ms));
            let (hop, took) = hop_of(&payload)?;
            hops.extend(hop.map(|(h, _)| h));
            invokes.push(took);
            std::thread::sleep(Duration::from_millis(gap_ms));
            direct.push(engine_pair(&payload)?);
        }
        if hops.is_empty() {
            continue;
        }
        let invoke = Summary::of(invokes);
        let machine = probes.after(Duration::from_millis(gap_ms), n);
        sparse.push(SparseRow {
            gap_ms,
            ratio_to_tight: invoke.p50_us / invoke_tight.p50_us.max(1e-3),
            engine_ratio_to_tight: Summary::of(direct).p50_us / engine_tight.p50_us.max(1e-3),
            handoff: Summary::of(hops),
            cold_lines: (invoke.p50_us - invoke_tight.p50_us).max(0.0) * 1e3
                / machine.cold_line_ns.max(1e-3),
            machine,
            invoke,
        });
    }
    drop(director);
    let _ = std::fs::remove_dir_all(&cache);
    if handoff.is_empty() {
        return Err(BenchError::Setup("the director measured no hops".into()));
    }
    let (handoff, handoff_with_result) = (Summary::of(handoff), Summary::of(handoff_result));
    let (http, http_with_result) = (Summary::of(http), Summary::of(http_result));
    Ok(HopReport {
        payload_bytes,
        ratio_p50: http.p50_us / handoff.p50_us.max(1e-3),
        ratio_with_result_p50: http_with_result.p50_us / handoff_with_result.p50_us.max(1e-3),
        handoff,
        handoff_with_result,
        http,
        http_with_result,
        guest: "examples/wat/upper_native.wat (baton imports, no WASI)".into(),
        invoke_tight,
        sparse,
    })
}

/// A fresh, empty temporary directory named after `what`, this process and a counter.
pub fn tempfile_dir(what: &str) -> Result<PathBuf, BenchError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "baton-bench-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(setup("temporary directory"))?;
    Ok(dir)
}

fn time_ns(f: impl FnOnce() -> Result<(), BenchError>) -> Result<u64, BenchError> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_nanos() as u64)
}

/// The examples directory: `dir` if given, else `./examples`, else the one this crate was
/// built from.
pub fn examples_dir(dir: Option<&Path>) -> PathBuf {
    if let Some(dir) = dir {
        return dir.to_owned();
    }
    let local = Path::new("examples");
    if local.join("wat/upper_native.wat").exists() {
        return local.to_owned();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_pick_the_median_and_the_tail() {
        let s = Summary::of((1..=100).map(|us| us * 1_000).collect());
        assert_eq!(s.n, 100);
        assert_eq!(s.p50_us, 51.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(Summary::of(Vec::new()).p50_us, 0.0);
    }
}
