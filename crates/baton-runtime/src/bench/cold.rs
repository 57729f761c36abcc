//! `baton bench coldstart`: pre-warmed versus cold for a C guest compiled to wasm (compile
//! not cached, then cached on disk) and for a Python worker that imports heavy standard
//! modules, started plain (jailed and bare), forked from its template, and taken as its
//! template's spare through the warm pool (a worker forked ahead, as `baton serve` keeps
//! one per template), with the memory of each warmth tier: a compiled wasm module, a plain
//! worker, a template, a spare and a forked worker.

use super::{setup, spec, tempfile_dir, time_ns, wasm_spec, BenchError, Summary};
use crate::process::Worker;
use crate::wasm::WasmEngine;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// One pre-warmed-versus-cold comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ColdRow {
    /// What is compared.
    pub case: String,
    /// Pre-warmed invocation.
    pub warm: Summary,
    /// Cold invocation (start + invocation).
    pub cold: Summary,
    /// `cold.p50 / warm.p50`.
    pub ratio_p50: f64,
}

/// `baton bench coldstart`'s figures.
#[derive(Debug, Clone, Serialize)]
pub struct ColdReport {
    /// One row per backend and cache state.
    pub rows: Vec<ColdRow>,
    /// How worker limits were applied.
    pub limits: String,
    /// What moving a process into its groups costs here (median, µs), which every forked
    /// start pays with cgroup v1; `None` without cgroup v1.
    pub move_us: Option<f64>,
    /// The kernel mode that made it cheap, if any (see `baton doctor`).
    pub move_mode: crate::limits::MoveMode,
    /// Memory of each tier: what a compiled, pre-linked wasm module adds to the host, a
    /// Python worker started plain, its template, and a worker forked from it (each after
    /// one invocation).
    pub memory: Vec<MemoryRow>,
}

/// A process's memory: proportional (shared pages split among their users) and resident.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryRow {
    /// Which process.
    pub case: String,
    /// Proportional set size, KiB (`/proc/PID/smaps_rollup`).
    pub pss_kib: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Its private pages (clean and dirty), KiB: what it adds beside the processes it
    /// shares pages with (a forked worker beside its template).
    pub private_kib: u64,
}

/// `pid`'s memory as `case` (zeros when it cannot be read).
fn memory_row(case: &str, pid: u32) -> MemoryRow {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    MemoryRow {
        case: case.into(),
        pss_kib: field("Pss:"),
        rss_kib: field("Rss:"),
        private_kib: field("Private_Clean:") + field("Private_Dirty:"),
    }
}

fn row(case: &str, warm: Vec<u64>, cold: Vec<u64>) -> ColdRow {
    let (warm, cold) = (Summary::of(warm), Summary::of(cold));
    ColdRow {
        case: case.into(),
        ratio_p50: cold.p50_us / warm.p50_us.max(1e-3),
        warm,
        cold,
    }
}

/// Measures pre-warmed versus cold invocations: the C guest `validate.wasm` (compile not
/// cached; cached on disk) and the Python worker `price.py` (heavy imports), `cold_runs`
/// cold starts each.
pub fn coldstart(examples: &Path, cold_runs: usize) -> Result<ColdReport, BenchError> {
    let payload = br#"{"order":7,"item":"lamp","qty":2,"credit":500}"#;
    let guest = wasm_spec("validate", &examples.join("wasm/validate.wasm"))?;
    let mut rows = Vec::new();

    // wasm, pre-linked: instantiate + run.
    let cache = tempfile_dir("cold")?;
    let engine = WasmEngine::new(&cache, 8, 64).map_err(setup("wasm engine"))?;
    let warm_fn = engine.load(&guest).map_err(setup("validate.wasm"))?;
    // The compiled tier's memory: what this process grows by when one more module is
    // compiled and pre-linked (its code mapped, its linker), the engine being up already.
    let other = wasm_spec("reserve", &examples.join("wasm/reserve.wasm"))?;
    let before = memory_row("", std::process::id());
    let other = engine.load(&other).map_err(setup("reserve.wasm"))?;
    let after = memory_row("", std::process::id());
    drop(other);
    let module = MemoryRow {
        case: "wasm module compiled, pre-linked (+host)".into(),
        pss_kib: after.pss_kib.saturating_sub(before.pss_kib),
        rss_kib: after.rss_kib.saturating_sub(before.rss_kib),
        private_kib: after.private_kib.saturating_sub(before.private_kib),
    };
    let mut warm = Vec::new();
    for _ in 0..(cold_runs * 20).max(200) {
        warm.push(time_ns(|| {
            engine
                .invoke(&warm_fn, payload)
                .map(drop)
                .map_err(setup("validate.wasm"))
        })?);
    }
    // Cold, on the same long-lived engine as the runtime uses: the module is not in
    // memory, and either not in the disk cache (compile + link + run) or in it (load +
    // link + run).
    let mut uncached = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..cold_runs {
        engine
            .evict_cached(&guest)
            .map_err(setup("validate.wasm"))?;
        uncached.push(time_ns(|| {
            let function = engine.load(&guest).map_err(setup("validate.wasm"))?;
            if function.from_cache {
                return Err(BenchError::Setup("expected a compile".into()));
            }
            engine
                .invoke(&function, payload)
                .map(drop)
                .map_err(setup("validate.wasm"))
        })?);
        cached.push(time_ns(|| {
            let function = engine.load(&guest).map_err(setup("validate.wasm"))?;
            if !function.from_cache {
                return Err(BenchError::Setup("expected the disk cache".into()));
            }
            engine
                .invoke(&function, payload)
                .map(drop)
                .map_err(setup("validate.wasm"))
        })?);
    }
    rows.push(row(
        "wasm C guest, compile not cached",
        warm.clone(),
        uncached,
    ));
    rows.push(row("wasm C guest, compile cached on disk", warm, cached));
    let _ = std::fs::remove_dir_all(&cache);

    // Python worker with heavy imports: spawn → ready → first invoke, against a warm one.
    let isolation = crate::isolation::detect().isolation();
    let price = spec(&format!(
        "name = \"price\"\nkind = \"process\"\ncommand = [\"python3\", \"-u\", \"price.py\"]\nworkdir = {:?}\nmemory_mib = 256\ntimeout_ms = 20000\n",
        examples.join("python").display().to_string()
    ))?;
    let mut worker = Worker::spawn(&price, &isolation).map_err(setup("price.py"))?;
    let limits = worker.limits().to_owned();
    let mut warm = Vec::new();
    for _ in 0..(cold_runs * 20).max(200) {
        warm.push(time_ns(|| {
            worker.invoke(payload).map(drop).map_err(setup("price.py"))
        })?);
    }
    // The same cold start jailed, bare and forked from a template (jailed), interleaved,
    // so that the jail's cost and the template's gain are read off one run.
    let bare = crate::isolation::Isolation {
        sandbox: crate::sandbox::Sandbox::Unjailed,
        ..isolation.clone()
    };
    let template = Arc::new(
        crate::process::Template::start(&price, &isolation).map_err(setup("price.py template"))?,
    );
    // The same with limits by rlimit, which a fork inherits: no cgroup migration (on cgroup
    // v1 a migration waits for an RCU grace period unless `favordynmods` or expedited
    // grace periods are set:
    // `limits::move_cost`, reported beside).
    let inherited = crate::isolation::Isolation {
        limits: crate::limits::Mechanism::Rlimit,
        ..isolation.clone()
    };
    let rlimit_template = Arc::new(
        crate::process::Template::start(&price, &inherited).map_err(setup("price.py template"))?,
    );
    let placement = crate::process::Placement::default();
    // The runtime's own path for a cold start with a spare ready: the pool's take.
    let pool = crate::pool::WarmPool::new(vec![price.clone()], isolation.clone());
    pool.prepare_template(&Arc::new(price.clone()));
    let mut spared = Vec::new();
    let (mut cold, mut cold_bare, mut forked) = (Vec::new(), Vec::new(), Vec::new());
    let mut forked_rlimit = Vec::new();
    let mut memory = vec![
        module,
        memory_row("python worker, started plain", worker.pid()),
    ];
    for run in 0..cold_runs {
        for (isolation, samples) in [(&isolation, &mut cold), (&bare, &mut cold_bare)] {
            samples.push(time_ns(|| {
                let mut worker = Worker::spawn(&price, isolation).map_err(setup("price.py"))?;
                worker.invoke(payload).map(drop).map_err(setup("price.py"))
            })?);
        }
        let mut child = None;
        forked.push(time_ns(|| {
            let mut worker = template
                .fork(&price, &isolation, &placement)
                .map_err(setup("price.py forked"))?;
            let result = worker
                .invoke(payload)
                .map(drop)
                .map_err(setup("price.py forked"));
            child = Some(worker);
            result
        })?);
        forked_rlimit.push(time_ns(|| {
            let mut worker = rlimit_template
                .fork(&price, &inherited, &placement)
                .map_err(setup("price.py forked"))?;
            worker
                .invoke(payload)
                .map(drop)
                .map_err(setup("price.py forked"))
        })?);
        let spare = wait_for_spare(&pool, &price)?;
        if run == 0 {
            if let Some(child) = &child {
                memory.push(memory_row("its template", template.pid()));
                memory.push(memory_row("a worker forked from it", child.pid()));
            }
            memory.push(memory_row("a spare (forked ahead, no call yet)", spare));
        }
        let mut lease = None;
        spared.push(time_ns(|| {
            let taken = lease.insert(pool.take("price").map_err(setup("price.py spare"))?);
            if !taken.worker.is_spare() {
                return Err(BenchError::Setup("price.py: expected its spare".into()));
            }
            taken
                .worker
                .invoke(payload)
                .map(drop)
                .map_err(setup("price.py spare"))
        })?);
        drop(lease);
    }
    let jailed = if isolation.sandbox.is_jailed() {
        "python worker (heavy imports), sandboxed"
    } else {
        "python worker (heavy imports), NO sandbox here"
    };
    rows.push(row(jailed, warm.clone(), cold));
    rows.push(row(
        "python worker (heavy imports), bare",
        warm.clone(),
        cold_bare,
    ));
    rows.push(row(
        "python worker forked from its template",
        warm.clone(),
        forked,
    ));
    rows.push(row(
        "  forked, limits by rlimit (no cgroup move)",
        warm.clone(),
        forked_rlimit,
    ));
    rows.push(row("python worker, its template's spare", warm, spared));
    let move_us = crate::limits::move_cost(&isolation.limits, 7)
        .map_err(BenchError::Setup)?
        .map(|d| d.as_secs_f64() * 1e6);
    Ok(ColdReport {
        rows,
        limits,
        move_us,
        move_mode: crate::limits::MoveMode::now(),
        memory,
    })
}

/// The pid of `pool`'s spare of `spec` once it is ready (at most the function's timeout).
fn wait_for_spare(
    pool: &crate::pool::WarmPool,
    spec: &crate::manifest::FunctionSpec,
) -> Result<u32, BenchError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(spec.timeout_ms);
    loop {
        let info = pool.templates();
        if let Some(pid) = info.iter().find_map(|t| t.pid.and(t.spare)) {
            return Ok(pid);
        }
        if std::time::Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "{}: no spare within {} ms: {info:?}",
                spec.name, spec.timeout_ms
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
