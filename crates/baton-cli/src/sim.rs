//! `baton sim`: replay a trace through every pre-warming policy and compare them.

use crate::load::{self, FormatArg};
use anyhow::{bail, Context, Result};
use baton_core::exec::Reuse;
use baton_core::policy::spec::PolicyName;
use baton_core::{Costs, TdgConfig};
use baton_sim::engine::{PlannerLag, SimConfig};
use baton_sim::{report, PolicyResult, Simulation};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(flatten)]
    input: load::TraceInput,
    /// Policies to run: `all` or a comma-separated list of none, ttl, histogram,
    /// greedy-dual, next, mlp, chain, oracle.
    #[arg(long, default_value = "all")]
    policies: String,
    /// Start of the training window (learning policies learn here; nothing is scored).
    #[arg(long)]
    train_since: Option<String>,
    /// End of the training window and start of the replay.
    #[arg(long)]
    train_until: String,
    /// End of the replay (default: end of the trace).
    #[arg(long)]
    test_until: Option<String>,
    /// Node memory for instances, GiB.
    #[arg(long, default_value_t = 8.0)]
    memory_gib: f64,
    /// Which idle instance of a function an arrival takes: `recent` (idle the shortest
    /// time, as `baton serve` does by default) or `oldest` (`baton serve --reuse oldest`;
    /// dslab-faas's own invoker sits between the two, see docs/sim/validation.md).
    #[arg(long, default_value_t)]
    reuse: Reuse,
    /// Also write the replayed invocations to this CSV (`function,start_s,duration_s,
    /// memory_mib`, in start order), e.g. to run another simulator on exactly the same
    /// arrivals (scripts/dslab-check.sh does, for docs/sim/validation.md).
    #[arg(long)]
    export_arrivals: Option<PathBuf>,
    /// Calls arrive when their callers' runs reach them: a caller that waits for a cold
    /// start calls that much later, as on a live server (default: every invocation at its
    /// recorded start).
    #[arg(long)]
    causal: bool,
    /// Worker starts under way at once on the node, at most (0: no bound). `baton serve`
    /// allows as many as its cores; a start past them waits for one to finish, and a call
    /// waiting so takes an instance of its function that frees first.
    #[arg(long, default_value_t = 0)]
    start_slots: usize,
    /// How long after a call's start or end the node's planner carries out the pre-warms
    /// due at once that the policy decided there, ms (0: at that instant). A live
    /// planner runs behind the requests (`/v1/pool` `planner_lag_ms_median`): a call of
    /// the function that comes first starts its own instance, and the pre-warm is dropped.
    #[arg(long, default_value_t = 0.0)]
    planner_lag_ms: f64,
    /// Node cores (the chain policy's pool).
    #[arg(long, default_value_t = 2)]
    cores: u32,
    /// Cold-start time of every function, ms. The default, 50, is baton's slow backend
    /// class as measured on these machines (a Python worker's interpreter start, 11–55 ms;
    /// a wasm compile is 12–17 ms); JVM services such as TrainTicket's take seconds.
    #[arg(long, default_value_t = 50.0)]
    cold_start_ms: f64,
    /// Instance memory of a function with no memory figure in the data, MiB.
    #[arg(long, default_value_t = 256)]
    instance_mib: u64,
    /// Model templates, as `baton serve` keeps for Python functions: every function has one
    /// from the start, and a cold start is a fork from it taking this long, ms (`baton
    /// bench coldstart` measures it: about 15 ms here). A policy that manages templates
    /// (chain) lets a function's go when it is not used for long; its next start is then
    /// from nothing (the cost table's cold start). Needs --template-mib.
    #[arg(long, requires = "template_mib")]
    template_start_ms: Option<f64>,
    /// A template's own memory, MiB (held by every function for the whole replay, or as
    /// long as a policy that manages templates holds it; counted as idle memory; `baton bench coldstart` measures its PSS: about 11 MiB here).
    #[arg(long, requires = "template_start_ms")]
    template_mib: Option<u64>,
    /// Model each template's spare, as `baton serve` keeps one: a worker forked ahead that
    /// a start (cold or pre-warm) takes in this long, ms (`baton bench coldstart`'s
    /// "template's spare" row: under 1 ms here); the next one is ready a fork later.
    /// Needs the template options and --spare-mib.
    #[arg(long, requires_all = ["template_start_ms", "spare_mib"])]
    spare_start_ms: Option<f64>,
    /// A spare's own memory, MiB, held with its template (`baton bench coldstart`
    /// measures its private pages: about 1 MiB here).
    #[arg(long, requires = "spare_start_ms")]
    spare_mib: Option<u64>,
    /// Per-service memory from a pod-metrics CSV (PodName, MemoryUsage(Mi); median per
    /// service), e.g. shared/data/trainticket-nezha/pod_metrics_2023-01-30.csv.xz.
    #[arg(long)]
    memory_from: Option<PathBuf>,
    /// Sweeps: `memory=2,4,8` (GiB) and/or `knob=0.25,1,4` (each policy's main setting
    /// scaled); may be given twice.
    #[arg(long)]
    sweep: Vec<String>,
    /// The trace's callers: `keep` them, `drop` them (every call a request of its own, as a
    /// log that names none), or `mine` them back from timing (co-occurrence within
    /// --mine-window-ms; the header scores the mined links against the trace's).
    #[arg(long, value_enum, default_value = "keep")]
    callers: crate::callers::Callers,
    /// With `--callers mine`: a callee starts at most this long after its caller, ms.
    /// Callees must also run inside their callers' runs unless the trace is Azure's (whose
    /// run times are per-function means).
    #[arg(long, default_value_t = 1000.0)]
    mine_window_ms: f64,
    /// With `--callers mine`: a dependency's least support, confidence and lift
    /// (`SUPPORT,CONFIDENCE,LIFT`; default: baton_core::mining's).
    #[arg(long)]
    mine_thresholds: Option<String>,
    /// Freeze the graph after training (default: learning policies keep learning).
    #[arg(long)]
    offline: bool,
    /// Where to write results.md, results.csv, results.json and pareto.svg.
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_list(text: &str, what: &str) -> Result<Vec<f64>> {
    text.split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0 && *x <= 1e6)
                .with_context(|| format!("--sweep {what}: `{v}` is not a number in (0, 1e6]"))
        })
        .collect()
}

/// Median memory per service from a pod-metrics CSV.
fn pod_memory(path: &std::path::Path) -> Result<Vec<(String, u64)>> {
    let reader = baton_trace::open::open_log(path)?;
    let source = path.display().to_string();
    let mut report = baton_trace::report::ReadReport::default();
    let mut columns: Option<(usize, usize)> = None;
    let mut header_error = None;
    let mut by_service: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    baton_trace::report::for_each_csv_row(&source, reader, &mut report, |_, line_no, fields| {
        let Some((pod, memory)) = columns else {
            let find = |name: &str| fields.iter().position(|f| f.trim() == name);
            match (find("PodName"), find("MemoryUsage(Mi)")) {
                (Some(p), Some(m)) => columns = Some((p, m)),
                _ => {
                    header_error = Some(format!(
                        "{source}:{line_no}: header lacks PodName or MemoryUsage(Mi)"
                    ));
                    return std::ops::ControlFlow::Break(());
                }
            }
            return std::ops::ControlFlow::Continue(());
        };
        if let (Some(pod), Some(Ok(mib))) = (
            fields.get(pod),
            fields.get(memory).map(|m| m.trim().parse::<f64>()),
        ) {
            if mib.is_finite() && mib > 0.0 {
                by_service
                    .entry(baton_trace::spans::service_of_pod(pod.trim()).to_owned())
                    .or_default()
                    .push(mib);
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    if let Some(error) = header_error {
        bail!(error);
    }
    if let Some(broken) = report.broken.first() {
        bail!("{broken}");
    }
    Ok(by_service
        .into_iter()
        .map(|(service, mut values)| {
            values.sort_by(f64::total_cmp);
            (service, values[values.len() / 2].ceil() as u64)
        })
        .collect())
}

/// Writes the replay's invocations as `function,start_s,duration_s,memory_mib`.
fn export_arrivals(path: &std::path::Path, simulation: &Simulation) -> Result<()> {
    use std::io::Write;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let names = simulation.graph().tasks();
    writeln!(out, "function,start_s,duration_s,memory_mib")?;
    for arrival in simulation.arrivals() {
        let name = names.name(arrival.task.0);
        // A name with a comma or quote (none in the Azure traces) is quoted as CSV does.
        let name = if name.contains([',', '"', '\n']) {
            format!("\"{}\"", name.replace('"', "\"\""))
        } else {
            name.to_owned()
        };
        writeln!(
            out,
            "{name},{:.6},{:.6},{}",
            arrival.start_us as f64 / 1e6,
            arrival.duration_us as f64 / 1e6,
            simulation.costs().memory_mib(arrival.task)
        )?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The memory of every task with a figure, MiB: the trace's own, or with `memory_from` the
/// median pod memory of its service (a task of none takes `instance_mib`); and a note saying
/// which.
pub fn task_memory(
    loaded: &load::Loaded,
    memory_from: Option<&std::path::Path>,
    instance_mib: u64,
) -> Result<(Vec<(baton_core::TaskId, u64)>, String)> {
    let tasks = loaded.tdg.tasks();
    let Some(path) = memory_from else {
        let note = if loaded.memory_mib.is_empty() {
            format!("{instance_mib} MiB for every function")
        } else {
            format!(
                "from the trace for {} of {} functions, {instance_mib} MiB for the rest",
                loaded.memory_mib.len(),
                tasks.len()
            )
        };
        return Ok((loaded.memory_mib.clone(), note));
    };
    let services = pod_memory(path)?;
    let mut memory: std::collections::BTreeMap<baton_core::TaskId, u64> =
        loaded.memory_mib.iter().copied().collect();
    for (service, mib) in &services {
        for index in 0..tasks.len() as u32 {
            let name = tasks.name(index);
            if name == service || name.starts_with(&format!("{service}:")) {
                memory.insert(baton_core::TaskId(index), *mib);
            }
        }
    }
    let note = format!(
        "median pod memory for {} of {} functions from {}, {instance_mib} MiB for the rest",
        memory.len(),
        tasks.len(),
        path.display(),
    );
    Ok((memory.into_iter().collect(), note))
}

pub fn sim(args: SimArgs) -> Result<()> {
    let mut memories = vec![args.memory_gib];
    let mut knobs = vec![1.0];
    for sweep in &args.sweep {
        match sweep.split_once('=') {
            Some(("memory", list)) => memories = parse_list(list, "memory")?,
            Some(("knob", list)) => knobs = parse_list(list, "knob")?,
            _ => bail!("--sweep `{sweep}`: expected memory=LIST or knob=LIST"),
        }
    }
    let policies: Vec<&str> = if args.policies == "all" {
        PolicyName::ALL.iter().map(|p| p.as_str()).collect()
    } else {
        let names: Vec<&str> = args.policies.split(',').map(str::trim).collect();
        for name in &names {
            name.parse::<PolicyName>()?;
        }
        names
    };

    let loaded = args.input.load(TdgConfig::default())?;
    let day = loaded.day_ns();
    let train_window = load::window(args.train_since.as_deref(), Some(&args.train_until), day)?;
    let test_window = load::window(Some(&args.train_until), args.test_until.as_deref(), day)?;
    let nested = !matches!(
        load::concrete_format(args.input.format, &args.input.trace)?,
        FormatArg::Azure2019 | FormatArg::Azure2021
    );
    if !(args.mine_window_ms.is_finite() && args.mine_window_ms > 0.0) {
        bail!(
            "--mine-window-ms {}: expected a positive number",
            args.mine_window_ms
        );
    }
    let mut miner =
        baton_core::mining::MinerConfig::new((args.mine_window_ms * 1000.0) as u64, nested);
    if let Some(text) = &args.mine_thresholds {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let bad = || {
            anyhow::anyhow!(
                "--mine-thresholds `{text}`: expected SUPPORT,CONFIDENCE,LIFT (e.g. 5,0.2,3)"
            )
        };
        let [support, confidence, lift] = parts[..] else {
            return Err(bad());
        };
        miner.min_support = support.parse().map_err(|_| bad())?;
        miner.min_confidence = confidence.parse().map_err(|_| bad())?;
        miner.min_lift = lift.parse().map_err(|_| bad())?;
    }
    let (train, test, callers_note) = crate::callers::apply(
        args.callers,
        loaded.in_window(train_window),
        loaded.in_window(test_window).to_vec(),
        miner,
    );
    let train = &train[..];
    if test.is_empty() {
        bail!("the replay window holds no request");
    }
    let mut tdg = loaded.tdg.clone();
    load::learn(&mut tdg, train);

    let mut costs = Costs::new((args.cold_start_ms * 1000.0) as u64, args.instance_mib);
    if let (Some(start_ms), Some(memory_mib)) = (args.template_start_ms, args.template_mib) {
        if !(start_ms.is_finite() && start_ms >= 0.0) {
            bail!("--template-start-ms {start_ms}: expected a duration in ms");
        }
        let spare = match (args.spare_start_ms, args.spare_mib) {
            (Some(ms), _) if !(ms.is_finite() && ms >= 0.0) => {
                bail!("--spare-start-ms {ms}: expected a duration in ms")
            }
            (Some(ms), Some(memory_mib)) => Some(baton_core::costs::SpareCosts {
                start_us: (ms * 1000.0) as u64,
                memory_mib,
            }),
            _ => None,
        };
        costs.templates = Some(baton_core::costs::TemplateCosts {
            start_us: (start_ms * 1000.0) as u64,
            memory_mib,
            spare,
        });
    }
    let (memory, memory_note) =
        task_memory(&loaded, args.memory_from.as_deref(), args.instance_mib)?;
    for (task, mib) in memory {
        costs.set_memory_mib(task, mib);
    }
    let mut simulation = Simulation::new(tdg, test, costs);
    simulation.online = !args.offline;
    simulation.cores = args.cores;
    let header = format!(
        "replay: {} requests, {} invocations, trained on {} requests; cold start {} ms for every function{}; instance memory: {}; learning policies {} during the replay",
        simulation.arrivals().iter().map(|a| a.request).max().map_or(0, |m| m + 1),
        simulation.arrivals().len(),
        train.len(),
        args.cold_start_ms,
        match simulation.costs().templates {
            Some(t) => format!(
                " (templates: a start forked from one takes {} ms; each holds {} MiB, counted as idle; chain manages its own{})",
                t.start_us as f64 / 1000.0,
                t.memory_mib,
                match t.spare {
                    Some(spare) => format!(
                        "; each keeps a spare taken in {} ms, holding {} MiB more",
                        spare.start_us as f64 / 1000.0,
                        spare.memory_mib
                    ),
                    None => String::new(),
                }
            ),
            None => String::new(),
        },
        memory_note,
        if args.offline { "frozen" } else { "keep learning" },
    );
    let header = match args.reuse {
        Reuse::Recent => header,
        Reuse::Oldest => format!("{header}; an arrival takes the instance idle the longest"),
    };
    let header = match callers_note {
        Some(note) => format!("{header}; {note}"),
        None => header,
    };
    let header = match args.start_slots {
        0 => header,
        n => format!("{header}; at most {n} starts under way at once"),
    };
    let header = if args.causal {
        format!("{header}; a call comes when its caller's run reaches it (after its caller's wait)")
    } else {
        header
    };
    eprintln!("{header}");
    if let Some(path) = &args.export_arrivals {
        export_arrivals(path, &simulation)?;
        eprintln!(
            "wrote {} arrivals to {}",
            simulation.arrivals().len(),
            path.display()
        );
    }

    let mut results: Vec<PolicyResult> = Vec::new();
    for &memory_gib in &memories {
        for policy in &policies {
            let policy_knobs: &[f64] = if matches!(*policy, "none" | "oracle") {
                &[1.0]
            } else {
                &knobs
            };
            for &knob in policy_knobs {
                let config = SimConfig {
                    memory_mib: (memory_gib * 1024.0) as u64,
                    reuse: args.reuse,
                    causal: args.causal,
                    start_slots: args.start_slots,
                    planner_lag: PlannerLag::fixed((args.planner_lag_ms.max(0.0) * 1000.0) as u64),
                    ..SimConfig::default()
                };
                let bar =
                    crate::progress::bar(&format!("{policy} knob {knob} {memory_gib} GiB"), 0);
                let result = simulation.run(policy, knob, &config, |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })?;
                bar.finish();
                results.push(result);
            }
        }
    }

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let markdown = format!("{header}\n\n{}", report::markdown(&results));
    let write = |name: &str, text: &str| -> Result<()> {
        let path = args.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("results.md", &markdown)?;
    write("results.csv", &report::csv(&results))?;
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "header": header,
        "results": results.iter().map(|r| {
            let mut value = serde_json::to_value(r).unwrap_or_default();
            if let Some(stats) = value.get_mut("stats").and_then(|s| s.as_object_mut()) {
                // Per-request vectors are large; the summary figures carry them.
                stats.remove("request_latency_us");
                stats.remove("request_critical_cold");
            }
            value
        }).collect::<Vec<_>>(),
    }))?;
    write("results.json", &json)?;
    let title = format!(
        "{} — cold starts vs idle memory",
        args.input
            .trace
            .first()
            .and_then(|p| p.file_name())
            .map_or("trace".into(), |n| n.to_string_lossy())
    );
    write("pareto.svg", &report::pareto_svg(&results, &title))?;
    eprintln!(
        "wrote results.md, results.csv, results.json and pareto.svg to {}",
        args.out.display()
    );
    if args.json {
        println!("{json}");
    } else {
        println!("{markdown}");
    }
    Ok(())
}
