//! Runs dslab-faas on the arrivals `baton sim --export-arrivals` wrote and prints, per
//! policy, what `baton sim` prints for the same replay: invocations, cold starts, their
//! ratio and the memory held idle (GB·s), as one JSON object per line.
//!
//! Usage: `dslab-check ARRIVALS.csv --cold-start-ms MS [--ttl-min 10] [--histogram-hours 4]
//! [--reuse dslab|recent|oldest] [--per-function]`.
//!
//! `--per-function` adds each function's cold starts (`function_cold_starts`, by name).
//!
//! `--reuse` is which idle container an invocation takes: `dslab` (the default) is
//! dslab-faas's own invoker, the first free container of the app in its set's order (a
//! container freed goes to the end; one taken is swap-removed, so the order mixes oldest
//! and newest); `recent` takes the container idle the shortest time (baton's rule) and
//! `oldest` the one idle the longest, through an invoker written here that is dslab's
//! `FIFOInvoker` but for that choice. They tell how much of a difference between the
//! simulators is the reuse rule.
//!
//! The arrivals file (`function,start_s,duration_s,memory_mib`, one row per invocation in
//! start order) is the replay window baton ran, so both simulators see the same
//! invocations. Each function is an application of its own with one function, one
//! invocation per container at a time, its memory as the container's and the cold start
//! as the container's deployment time; one host with memory and cores for everything
//! (`ignored` CPU policy: an invocation takes its duration), as `baton sim` with memory
//! unbounded. The policies are the two the issue names:
//! - `ttl`: `FixedTimeColdStartPolicy(keepalive, 0, reset_keepalive = true)`, the window
//!   restarted by every invocation (baton's `ttl`);
//! - `histogram`: `HybridHistogramPolicy(range, 60 s, 2.0, 0.5, 0.15, 0.1)`, dslab's version
//!   of Shahrad et al. (ATC'20).
//!
//! Idle memory is dslab's wasted resource time (memory × time a container sits idle), up
//! to the last invocation's end, where baton stops charging: the simulation is stepped to
//! that instant, where its end event charges the containers still idle (stepped to the
//! last event instead, dslab also charges each keep-alive that runs past it).

use dslab_faas::coldstart::{ColdStartPolicy, FixedTimeColdStartPolicy};
use dslab_faas::config::Config;
use dslab_faas::container::{ContainerManager, ContainerStatus};
use dslab_faas::cpu::IgnoredCpuPolicy;
use dslab_faas::deployer::BasicDeployer;
use dslab_faas::extra::hybrid_histogram::HybridHistogramPolicy;
use dslab_faas::function::FunctionRegistry;
use dslab_faas::invocation::Invocation;
use dslab_faas::invoker::{DequeuedInvocation, FIFOInvoker, Invoker, InvokerDecision};
use dslab_faas::scheduler::BasicScheduler;
use dslab_faas::simulation::ServerlessSimulation;
use dslab_faas::stats::Stats;
use dslab_faas::trace::{ApplicationData, RequestData, Trace};
use simcore::simulation::Simulation;
use std::cell::{Cell, RefCell};
use std::process::ExitCode;
use std::rc::Rc;

struct Arrivals {
    names: Vec<String>,
    memory_mib: Vec<u64>,
    requests: Vec<RequestData>,
    cold_start_s: f64,
    end_s: f64,
}

impl Trace for Arrivals {
    fn app_iter(&self) -> Box<dyn Iterator<Item = ApplicationData> + '_> {
        Box::new(self.memory_mib.iter().map(|&mib| {
            ApplicationData::new(1, self.cold_start_s, 1.0, vec![("mem".to_string(), mib)])
        }))
    }
    fn request_iter(&self) -> Box<dyn Iterator<Item = RequestData> + '_> {
        Box::new(self.requests.iter().copied())
    }
    fn function_iter(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        Box::new(0..self.memory_mib.len())
    }
    fn is_ordered_by_time(&self) -> bool {
        true
    }
    fn simulation_end(&self) -> Option<f64> {
        Some(self.end_s)
    }
}

fn read(path: &str, cold_start_s: f64) -> Result<Arrivals, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut names: std::collections::HashMap<String, usize> = Default::default();
    let mut arrivals = Arrivals {
        names: Vec::new(),
        memory_mib: Vec::new(),
        requests: Vec::new(),
        cold_start_s,
        end_s: 0.0,
    };
    for (i, line) in text.lines().enumerate().skip(1) {
        // From the right: a function's name may hold commas.
        let mut fields: Vec<&str> = line.rsplitn(4, ',').collect();
        fields.reverse();
        let bad = || {
            format!(
                "{path}:{}: expected function,start_s,duration_s,memory_mib",
                i + 1
            )
        };
        if fields.len() != 4 {
            return Err(bad());
        }
        let start: f64 = fields[1].parse().map_err(|_| bad())?;
        let duration: f64 = fields[2].parse().map_err(|_| bad())?;
        let memory: u64 = fields[3].parse().map_err(|_| bad())?;
        let next = names.len();
        let id = *names.entry(fields[0].to_owned()).or_insert(next);
        if id == arrivals.memory_mib.len() {
            arrivals.names.push(fields[0].to_owned());
            arrivals.memory_mib.push(memory);
        }
        if arrivals.requests.last().is_some_and(|r| r.time > start) {
            return Err(format!("{path}:{}: arrivals out of start order", i + 1));
        }
        arrivals.requests.push(RequestData {
            id,
            duration,
            time: start,
        });
        arrivals.end_s = arrivals.end_s.max(start + duration);
    }
    Ok(arrivals)
}

/// Which idle container an invocation takes.
#[derive(Clone, Copy, PartialEq)]
enum Reuse {
    Dslab,
    Recent,
    Oldest,
}

/// dslab's `FIFOInvoker` with the idle container chosen by `Reuse` (memory is unbounded
/// here, so nothing ever waits in its queue; an invocation that finds no room is counted
/// in `rejected` and reported).
struct ChoosingInvoker {
    reuse: Reuse,
    rejected: Rc<Cell<u64>>,
}

impl Invoker for ChoosingInvoker {
    fn dequeue(
        &mut self,
        _fr: Rc<RefCell<FunctionRegistry>>,
        _cm: &mut ContainerManager,
        _stats: &mut Stats,
        _time: f64,
    ) -> Vec<DequeuedInvocation> {
        Vec::new()
    }

    fn invoke(
        &mut self,
        invocation: &Invocation,
        fr: Rc<RefCell<FunctionRegistry>>,
        cm: &mut ContainerManager,
        time: f64,
    ) -> InvokerDecision {
        let registry = fr.borrow();
        let app = registry
            .get_app(invocation.app_id)
            .expect("the app of an invocation");
        let mut idle: Option<(usize, f64)> = None;
        let mut deploying: Option<(usize, f64)> = None;
        for c in cm.get_possible_containers(app, true) {
            if c.status == ContainerStatus::Deploying {
                let wait = c.deployment_time + c.last_change - time;
                if deploying.is_none_or(|(_, w)| wait < w) {
                    deploying = Some((c.id, wait));
                }
            } else {
                let better = idle.is_none_or(|(_, since)| match self.reuse {
                    Reuse::Recent => c.last_change > since,
                    _ => c.last_change < since,
                });
                if better {
                    idle = Some((c.id, c.last_change));
                }
            }
        }
        if let Some((id, _)) = idle {
            return InvokerDecision::Warm(id);
        }
        if let Some((id, wait)) = deploying {
            return InvokerDecision::Cold((id, wait));
        }
        match cm.try_deploy(app, time) {
            Some(deployed) => InvokerDecision::Cold(deployed),
            None => {
                self.rejected.set(self.rejected.get() + 1);
                InvokerDecision::Queued
            }
        }
    }

    fn queue_len(&self) -> usize {
        0
    }
}

/// Invocations, cold starts, idle GB·s, and each function's cold starts (by name).
fn run(
    arrivals: &Arrivals,
    policy: Box<dyn ColdStartPolicy>,
    reuse: Reuse,
) -> (u64, u64, f64, Vec<(String, u64)>) {
    let memory: u64 = arrivals.memory_mib.iter().sum::<u64>() * 1024;
    let config = Config {
        coldstart_policy: policy,
        cpu_policy: Box::<IgnoredCpuPolicy>::default(),
        idle_deployer: Box::new(BasicDeployer {}),
        scheduler: Box::new(BasicScheduler {}),
        hosts: Vec::new(),
    };
    let mut sim = ServerlessSimulation::new(Simulation::new(1), config);
    let resources = vec![sim.create_resource("mem", memory)];
    let rejected = Rc::new(Cell::new(0));
    let invoker: Box<dyn Invoker> = match reuse {
        Reuse::Dslab => Box::new(FIFOInvoker::new()),
        _ => Box::new(ChoosingInvoker {
            reuse,
            rejected: Rc::clone(&rejected),
        }),
    };
    sim.add_host(
        Some(invoker),
        dslab_faas::resource::ResourceProvider::new(resources),
        1 << 20,
    );
    sim.load_trace(arrivals);
    // Up to the last invocation's end (the simulation's end event, which charges the idle
    // containers up to then), not the keep-alives after it: baton charges idle memory up
    // to the same instant.
    sim.step_for_duration(arrivals.end_s);
    if rejected.get() > 0 {
        eprintln!(
            "{} invocations found no room (memory should be unbounded)",
            rejected.get()
        );
    }
    let all = sim.stats();
    let per_function = arrivals
        .names
        .iter()
        .enumerate()
        .map(|(id, name)| {
            (
                name.clone(),
                all.func_stats.get(id).map_or(0, |s| s.cold_starts),
            )
        })
        .collect();
    let stats = sim.global_stats();
    let idle_mib_s = stats.wasted_resource_time[0].sum();
    (
        stats.invocation_stats.invocations,
        stats.invocation_stats.cold_starts,
        idle_mib_s / 1024.0, // MiB·s -> GiB·s, which `baton sim` reports as GB·s
        per_function,
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: f64| -> Result<f64, String> {
        match args.iter().position(|a| a == name) {
            None => Ok(default),
            Some(i) => args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number")),
        }
    };
    let parsed = (|| -> Result<_, String> {
        let path = args.first().filter(|a| !a.starts_with("--")).ok_or(
            "usage: dslab-check ARRIVALS.csv --cold-start-ms MS [--ttl-min 10] [--histogram-hours 4]",
        )?;
        Ok((
            path.clone(),
            flag("--cold-start-ms", 1000.0)?,
            flag("--ttl-min", 10.0)?,
            flag("--histogram-hours", 4.0)?,
            match args
                .iter()
                .position(|a| a == "--reuse")
                .map(|i| args.get(i + 1).map(String::as_str))
            {
                None | Some(Some("dslab")) => Reuse::Dslab,
                Some(Some("recent")) => Reuse::Recent,
                Some(Some("oldest")) => Reuse::Oldest,
                _ => return Err("--reuse takes dslab, recent or oldest".into()),
            },
        ))
    })();
    let (path, cold_ms, ttl_min, hours, reuse) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let arrivals = match read(&path, cold_ms / 1000.0) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let per_function_wanted = args.iter().any(|a| a == "--per-function");
    let policies: Vec<(&str, Box<dyn ColdStartPolicy>)> = vec![
        (
            "ttl",
            Box::new(FixedTimeColdStartPolicy::new(ttl_min * 60.0, 0.0, true)),
        ),
        (
            "histogram",
            Box::new(HybridHistogramPolicy::new(
                3600.0 * hours,
                60.0,
                2.0,
                0.5,
                0.15,
                0.1,
            )),
        ),
    ];
    for (name, policy) in policies {
        let (invocations, cold, idle_gb_s, per_function) = run(&arrivals, policy, reuse);
        let functions = if per_function_wanted {
            let each: Vec<String> = per_function
                .iter()
                .map(|(f, n)| format!("{:?}:{n}", f))
                .collect();
            format!(",\"function_cold_starts\":{{{}}}", each.join(","))
        } else {
            String::new()
        };
        println!(
            "{{\"policy\":\"{name}\",\"invocations\":{invocations},\"cold_starts\":{cold},\"cold_ratio\":{:.6},\"idle_gb_s\":{idle_gb_s:.1}{functions}}}",
            cold as f64 / invocations.max(1) as f64
        );
    }
    ExitCode::SUCCESS
}
