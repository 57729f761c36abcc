//! What `baton sim` measures is what `baton serve` does: one stream of requests (the
//! committed MIT TrainTicket fixture) through the real director and through the
//! simulator's engine gives the identical sequence of pre-warm, keep-alive and release
//! decisions, for every policy the server can run (the oracle needs the future).
//!
//! The director runs on a manual clock with a test backend whose cold start takes a fixed
//! time and whose instances follow the executor's rules; each step's work is the recorded
//! span (its calls at their recorded offsets, its own recorded duration). The simulator
//! then replays the director's own records (as they ran, each run without its wait) with
//! the same cold start, adding its own waits: if both sides chose the same instances, every
//! event falls at the same microsecond and the decisions agree. Both read one frozen graph
//! learned from the fixture.

use baton_core::exec::{
    choose_for_arrival, choose_for_prewarm, claim_weight, Candidate, Decision, Executor,
};
use baton_core::exec::{Prewarm, PREWARM_GRACE_US};
use baton_core::policy::spec::{self, PolicyInputs, PolicyName, PolicySpec};
use baton_core::{
    clock::ManualClock, Costs, Request, ResourcePool, ResourceVec, SnapshotCell, Tdg, TdgConfig,
};
use baton_runtime::backend::{Acquired, Backend, Instance, RunFacts, StepCall, StepError};
use baton_runtime::director::{Director, Tier};
use baton_runtime::isolation::Isolation;
use baton_runtime::manifest::FunctionSpec;
use baton_runtime::planner::PrewarmJob;
use baton_runtime::pool::{Keep, WarmPool, Warmth};
use baton_sim::engine::{self, SimConfig};
use baton_trace::requests::{RequestGrouper, TimeWindow};
use baton_trace::schema::ExecutionRecord;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The fixed cold start of every function, µs.
const COLD_US: u64 = 40_000;

/// The fixture's requests and a graph learned from them (every function's task and label
/// interned up front, so the director's and the simulator's ids agree).
fn fixture() -> (Tdg, Vec<Request>, Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/nezha-spans-faultfree-2023-01-30.csv.xz");
    let mut report = baton_trace::report::ReadReport::default();
    let records = baton_trace::read_log(
        &path,
        baton_trace::LogFormat::Spans(Default::default()),
        &mut report,
    );
    assert!(!records.is_empty(), "{report:?}");
    let mut tdg = Tdg::new(TdgConfig::default());
    let (requests, _) =
        baton_trace::requests::group_requests(&records, &mut tdg, TimeWindow::default());
    for request in &requests {
        tdg.observe_request(request);
    }
    let names: Vec<String> = (0..tdg.tasks().len() as u32)
        .map(|t| tdg.tasks().name(t).to_owned())
        .collect();
    for name in &names {
        tdg.intern_label(name);
    }
    (tdg, requests, names)
}

#[derive(Debug, Clone)]
struct Inst {
    name: String,
    ready_at: u64,
    keep_until: u64,
    idle_since: u64,
    busy: bool,
    dead: bool,
    prewarm: Option<Prewarm>,
    used: bool,
    claims: f64,
    /// Its pinned keep-alive deadline (`Keep::Pin`).
    pinned_until: Option<u64>,
}

/// Instances in manual time, by the executor's rules, and steps that replay the fixture.
struct TestBackend {
    clock: Arc<ManualClock>,
    instances: Arc<Mutex<Vec<Inst>>>,
    requests: Arc<Vec<Request>>,
    names: Arc<Vec<String>>,
}

impl TestBackend {
    fn candidates(instances: &[Inst], name: &str, at: u64) -> Vec<Candidate<u64>> {
        instances
            .iter()
            .enumerate()
            .filter(|(_, i)| i.name == name && !i.busy && !i.dead && i.keep_until >= at)
            .map(|(id, i)| Candidate {
                id: id as u64,
                ready_at: i.ready_at,
                keep_until: i.keep_until,
                idle_since: i.idle_since,
                claims: i.claims,
            })
            .collect()
    }
}

struct Step {
    id: usize,
    clock: Arc<ManualClock>,
    instances: Arc<Mutex<Vec<Inst>>>,
    requests: Arc<Vec<Request>>,
    names: Arc<Vec<String>>,
}

impl Instance for Step {
    fn run(&mut self, input: &[u8], call: &StepCall<'_>) -> (Result<Vec<u8>, StepError>, RunFacts) {
        let text = std::str::from_utf8(input).unwrap();
        let (r, i) = text.split_once(',').unwrap();
        let (r, i): (usize, u32) = (r.parse().unwrap(), i.parse().unwrap());
        let request = &self.requests[r];
        let me = &request.invocations()[i as usize];
        let run_start = baton_core::clock::Clock::now_us(&*self.clock);
        let nested = (call.nested)().expect("a shared director");
        for &child in request.children(i) {
            let c = &request.invocations()[child as usize];
            self.clock
                .set(run_start + c.start_us.saturating_sub(me.start_us));
            let name = &self.names[c.task.index()];
            nested(name, format!("{r},{child}").as_bytes()).unwrap();
        }
        self.clock.set(run_start + me.usage.wall_us);
        (Ok(Vec::new()), RunFacts::default())
    }

    fn finish(self: Box<Self>, _keep_until: Instant) -> Option<u32> {
        let now = baton_core::clock::Clock::now_us(&*self.clock);
        let mut instances = self.instances.lock().unwrap();
        let i = &mut instances[self.id];
        i.busy = false;
        i.idle_since = now;
        i.keep_until = now;
        Some(self.id as u32)
    }
}

impl Backend for TestBackend {
    fn acquire(
        &self,
        spec: &Arc<FunctionSpec>,
        told: &dyn Fn(Warmth, Duration),
    ) -> Result<Acquired, StepError> {
        let now = baton_core::clock::Clock::now_us(&*self.clock);
        let mut instances = self.instances.lock().unwrap();
        let chosen = choose_for_arrival(
            Self::candidates(&instances, &spec.name, now),
            now,
            baton_core::exec::Reuse::default(),
        );
        let (id, warmth, wait_us, plan) = match chosen {
            Some(id) => {
                let i = &mut instances[id as usize];
                let wait = i.ready_at.saturating_sub(now);
                let fresh = i.prewarm.is_some() && !i.used;
                let warmth = if fresh {
                    Warmth::Prewarmed
                } else {
                    Warmth::Warm
                };
                (id as usize, warmth, wait, i.prewarm.and_then(|p| p.plan))
            }
            None => {
                instances.push(Inst {
                    name: spec.name.clone(),
                    ready_at: now + COLD_US,
                    keep_until: now + COLD_US,
                    idle_since: now,
                    busy: false,
                    dead: false,
                    prewarm: None,
                    used: false,
                    claims: 0.0,
                    pinned_until: None,
                });
                (instances.len() - 1, Warmth::Cold, COLD_US, None)
            }
        };
        let i = &mut instances[id];
        i.busy = true;
        i.claims = 0.0;
        i.used = true;
        drop(instances);
        // The planner hears of the step before it waits, as the runtime's backends tell it.
        if wait_us > 0 {
            // How long it has been starting, so that the runtime's estimate of the wait
            // (its cold-start time less that) is the wait itself.
            told(
                warmth,
                Duration::from_micros(COLD_US.saturating_sub(wait_us)),
            );
        }
        self.clock.set(now + wait_us);
        Ok(Acquired {
            instance: Box::new(Step {
                id,
                clock: Arc::clone(&self.clock),
                instances: Arc::clone(&self.instances),
                requests: Arc::clone(&self.requests),
                names: Arc::clone(&self.names),
            }),
            warmth,
            wait_us,
            plan,
            late: warmth == Warmth::Prewarmed && wait_us > 0,
            tier: if warmth == Warmth::Cold {
                Tier::Spawned
            } else {
                Tier::Worker
            },
        })
    }

    fn prewarm(
        &self,
        spec: Arc<FunctionSpec>,
        job: &PrewarmJob,
        _admit: &dyn Fn(u64) -> bool,
    ) -> bool {
        let at = job.start_at_us;
        let ready = (at + COLD_US).max(job.ready_at_us);
        let until = job.until_us.max(ready + PREWARM_GRACE_US);
        let mut instances = self.instances.lock().unwrap();
        let candidates = Self::candidates(&instances, &spec.name, at);
        if let Some(id) = choose_for_prewarm(candidates, ready, at, job.probability) {
            let i = &mut instances[id as usize];
            i.claims += claim_weight(job.probability);
            i.keep_until = i.keep_until.max(until);
            return true;
        }
        instances.push(Inst {
            name: spec.name.clone(),
            ready_at: ready,
            keep_until: until,
            idle_since: at,
            busy: false,
            dead: false,
            prewarm: Some(Prewarm { plan: job.plan }),
            used: false,
            claims: claim_weight(job.probability),
            pinned_until: None,
        });
        false
    }

    fn release_unused(&self, name: &str, plan: Option<u64>, at_us: u64) -> usize {
        let mut released = 0;
        for i in self.instances.lock().unwrap().iter_mut() {
            if i.name == name
                && !i.busy
                && !i.dead
                && !i.used
                && i.prewarm == Some(Prewarm { plan })
                && i.keep_until <= at_us
            {
                i.dead = true;
                released += 1;
            }
        }
        released
    }

    fn settle(&self, _name: &str, id: u32, _until: Instant, until_us: u64, at_us: u64, keep: Keep) {
        let mut instances = self.instances.lock().unwrap();
        let i = &mut instances[id as usize];
        if i.dead || i.busy {
            return;
        }
        let until_us = match keep {
            Keep::Release => until_us,
            Keep::Until => i.pinned_until.unwrap_or(until_us),
            Keep::Pin => *i.pinned_until.get_or_insert(until_us),
        };
        i.keep_until = i.keep_until.max(until_us);
        if i.keep_until <= at_us {
            i.dead = true;
        }
    }

    fn forget(&self, _name: &str) {}

    fn cold_estimate(&self, _spec: &FunctionSpec) -> Option<Duration> {
        Some(Duration::from_micros(COLD_US))
    }
}

fn capacity() -> ResourceVec {
    ResourceVec {
        cpu_millicores: 2_000,
        cores: 0,
        memory_mib: 1 << 40,
        net_mbps: u64::MAX / 4,
        gpu_units: u32::MAX / 4,
    }
}

fn build(
    name: PolicyName,
    graph: &Arc<SnapshotCell>,
    costs: &Arc<Costs>,
) -> Box<dyn baton_core::Policy> {
    spec::build(
        PolicySpec::new(name),
        &PolicyInputs {
            graph: Arc::clone(graph),
            costs: Arc::clone(costs),
            pool: ResourcePool::new(capacity()),
            future: None,
        },
    )
    .unwrap()
}

/// Runs the fixture through the director; returns its decisions, its records and the
/// time of its last event.
fn through_the_director(
    name: PolicyName,
    trained: &Tdg,
    requests: &Arc<Vec<Request>>,
    names: &Arc<Vec<String>>,
) -> (Vec<(u64, Decision)>, Vec<ExecutionRecord>, u64) {
    let frozen = Arc::new(SnapshotCell::new(trained.clone().snapshot()));
    let costs = Arc::new(Costs::new(COLD_US, 1));
    let specs: Vec<FunctionSpec> = names
        .iter()
        .map(|n| {
            FunctionSpec::from_toml(&format!(
                "name = {n:?}\nkind = \"process\"\ncommand = [\"true\"]\n"
            ))
            .unwrap()
        })
        .collect();
    let first = requests[0].invocations()[requests[0].entry().unwrap() as usize].start_us;
    let clock = Arc::new(ManualClock::new(first));
    let backend = TestBackend {
        clock: Arc::clone(&clock),
        instances: Arc::new(Mutex::new(Vec::new())),
        requests: Arc::clone(requests),
        names: Arc::clone(names),
    };
    let learned = Arc::new(SnapshotCell::new(trained.clone().snapshot()));
    let director = Director::new(
        WarmPool::new(specs, Isolation::none()),
        trained.clone(),
        learned,
        build(name, &frozen, &costs),
    )
    .with_manual_clock(Arc::clone(&clock))
    .with_backend(Arc::new(backend))
    .keep_decisions()
    .into_shared()
    .unwrap();
    let mut records = Vec::new();
    for (r, request) in requests.iter().enumerate() {
        let entry = request.entry().unwrap();
        let invocation = &request.invocations()[entry as usize];
        clock.set(invocation.start_us);
        let outcome = director
            .invoke(
                &names[invocation.task.index()],
                format!("{r},{entry}").as_bytes(),
            )
            .unwrap();
        records.extend(outcome.records);
    }
    let last = baton_core::clock::Clock::now_us(&*clock);
    (director.decisions(), records, last)
}

/// Replays the director's records through the simulator's engine.
fn through_the_simulator(
    name: PolicyName,
    trained: &Tdg,
    records: &[ExecutionRecord],
    last: u64,
) -> Vec<(u64, Decision)> {
    let frozen = Arc::new(SnapshotCell::new(trained.clone().snapshot()));
    let costs = Arc::new(Costs::new(COLD_US, 1));
    let mut tdg = trained.clone();
    let mut grouper = RequestGrouper::new().keep_recorded_starts();
    for record in records {
        grouper.push(record, &mut tdg);
    }
    let (requests, _) = grouper.finish(TimeWindow::default());
    let arrivals = engine::arrivals(&requests);
    let mut executor = Executor::new(build(name, &frozen, &costs));
    executor.keep_trail();
    let config = SimConfig {
        memory_mib: 1 << 40,
        tick_us: 50_000,
        publish_every_us: u64::MAX,
        reuse: baton_core::exec::Reuse::default(),
        // The director's records hold their waits in their starts (recorded), and the test
        // backend starts without a bound.
        causal: false,
        start_slots: 0,
        // The manual clock's planner carries out what is due before each arrival.
        planner_lag: engine::PlannerLag::default(),
    };
    let stats = engine::run(
        &requests,
        &arrivals,
        &costs,
        &config,
        &mut executor,
        None,
        |_, _| {},
    );
    assert_eq!(stats.served, arrivals.len() as u64);
    executor
        .take_trail()
        .into_iter()
        .filter(|&(at, _)| at <= last)
        .collect()
}

#[test]
fn the_director_and_the_simulator_decide_alike_for_every_policy() {
    let (trained, requests, names) = fixture();
    let (requests, names) = (Arc::new(requests), Arc::new(names));
    for name in PolicyName::ALL.into_iter().filter(|p| !p.needs_future()) {
        let (live, records, last) = through_the_director(name, &trained, &requests, &names);
        let simulated = through_the_simulator(name, &trained, &records, last);
        let prewarms = live
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Prewarm { .. }))
            .count();
        eprintln!(
            "{name}: {} steps, {} decisions ({prewarms} pre-warms) live, {} simulated",
            records.len(),
            live.len(),
            simulated.len()
        );
        if let Some(at) =
            (0..live.len().max(simulated.len())).find(|&i| live.get(i) != simulated.get(i))
        {
            panic!(
                "{name}: decision {at} differs:\n  director:  {:?}\n  simulator: {:?}\n  (before: {:?})",
                live.get(at),
                simulated.get(at),
                at.checked_sub(1).and_then(|p| live.get(p))
            );
        }
        if name == PolicyName::Chain {
            // Route-set plans run live (the route taken from the request, as the simulator
            // takes it from the trace), not only path plans.
            let route = live
                .iter()
                .filter(|(_, d)| {
                    matches!(d, Decision::Prewarm { plan: Some(id), .. }
                        if baton_core::policy::is_route_plan(*id))
                })
                .count();
            eprintln!("chain: {route} of its pre-warms from route-set plans");
            assert!(route > 0, "no route-set plan ran live");
        }
    }
}

/// Arrival rhythms too: a job learned to run every 10 minutes (each call somewhere in its
/// minute) is pre-warmed by its rhythm before each call, identically live and simulated,
/// and no replayed call after the first is cold.
#[test]
fn the_director_and_the_simulator_decide_alike_for_a_timer() {
    use baton_core::request::{Invocation, Usage};
    let mut trained = Tdg::new(TdgConfig::default());
    let task = trained.intern_task("timer-job");
    let label = trained.intern_label("timer-job");
    let minute = 60_000_000;
    let at = |k: u64| 1_000_000_000 + k * 10 * minute + (k * 17 % 50) * 1_000_000;
    let request = |start_us| {
        Request::build(vec![Invocation {
            task,
            label,
            parent: None,
            start_us,
            waited_us: 0,
            usage: Usage {
                wall_us: 200_000,
                ..Usage::default()
            },
        }])
        .0
    };
    for k in 0..3 {
        trained.observe_request(&request(at(k)));
    }
    let requests = Arc::new((3..8).map(|k| request(at(k))).collect::<Vec<_>>());
    let names = Arc::new(vec!["timer-job".to_owned()]);
    let (live, records, last) =
        through_the_director(PolicyName::Chain, &trained, &requests, &names);
    let rhythm = live
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Prewarm { plan: None, .. }))
        .count();
    assert!(rhythm >= 5, "a re-warm before each call: {live:?}");
    let simulated = through_the_simulator(PolicyName::Chain, &trained, &records, last);
    assert_eq!(live, simulated);
    // Both begin at the first call: its rhythm is asked for only then. Every later call
    // finds its instance ready.
    let cold: Vec<bool> = records.iter().map(|r| r.cold == Some(true)).collect();
    assert_eq!(cold[1..], [false; 4], "{records:?}");
}
