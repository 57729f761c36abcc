//! Simulator throughput per policy, in replayed invocations per second, on a synthetic
//! workload of 100,000 requests (about 200,000 invocations) over 50 functions, each request
//! a short chain; and one request that is a chain 10,000 and 40,000 calls deep (each call
//! waits for the next), whose time per invocation must not grow with the depth (it did:
//! every arrival scanned the busy callers). Run: `cargo bench -p baton-sim --bench sim`.

use baton_core::policy::spec::PolicyName;
use baton_core::request::{Invocation, Request, Usage};
use baton_core::{Costs, LabelId, Tdg, TdgConfig};
use baton_sim::engine::SimConfig;
use baton_sim::Simulation;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn workload(n_requests: u64) -> (Tdg, Vec<Request>, Vec<Request>) {
    let mut tdg = Tdg::new(TdgConfig::default());
    let tasks: Vec<_> = (0..50).map(|i| tdg.intern_task(&format!("f{i}"))).collect();
    let mut rng = Rng(99);
    let mut all = Vec::new();
    let mut t = 0;
    for _ in 0..n_requests {
        t += 1_000 + rng.below(9_000);
        let head = rng.below(10) as usize;
        let mut invocations = vec![Invocation {
            task: tasks[head],
            label: LabelId(0),
            parent: None,
            start_us: t,
            waited_us: 0,
            usage: Usage {
                wall_us: 20_000,
                ..Usage::default()
            },
        }];
        let mut current = head;
        for step in 1..=rng.below(3) {
            current = (current * 5 + 1 + rng.below(2) as usize) % 50;
            invocations.push(Invocation {
                task: tasks[current],
                label: LabelId(0),
                parent: Some(step as u32 - 1),
                start_us: t + step * 5_000,
                waited_us: 0,
                usage: Usage {
                    wall_us: 10_000,
                    ..Usage::default()
                },
            });
        }
        all.push(Request::build(invocations).0);
    }
    let test = all.split_off(all.len() / 5);
    (tdg, all, test)
}

fn simulate(c: &mut Criterion) {
    let (mut tdg, train, test) = workload(125_000);
    for request in &train {
        tdg.observe_request(request);
    }
    let simulation = Simulation::new(tdg, test, Costs::new(50_000, 128));
    let n = simulation.arrivals().len() as u64;
    let mut group = c.benchmark_group("sim_replay");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    let config = SimConfig {
        memory_mib: 4 * 1024,
        ..SimConfig::default()
    };
    for policy in PolicyName::ALL.map(PolicyName::as_str) {
        group.bench_function(BenchmarkId::new(format!("{n} invocations"), policy), |b| {
            b.iter(|| {
                simulation
                    .run(policy, 1.0, &config, |_, _| {})
                    .expect("known policy")
            })
        });
    }
    group.finish();
}

/// One request: a chain `depth` calls deep over 10 functions, each call inside its caller.
fn deep_chain(depth: u32) -> (Tdg, Request) {
    let mut tdg = Tdg::new(TdgConfig::default());
    let tasks: Vec<_> = (0..10).map(|i| tdg.intern_task(&format!("f{i}"))).collect();
    let invocations = (0..depth)
        .map(|i| Invocation {
            task: tasks[(i % 10) as usize],
            label: LabelId(0),
            parent: i.checked_sub(1),
            start_us: u64::from(i),
            waited_us: 0,
            usage: Usage {
                wall_us: 1,
                ..Usage::default()
            },
        })
        .collect();
    (tdg, Request::build(invocations).0)
}

fn deep(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim_deep_chain");
    group.sample_size(10);
    for depth in [10_000u32, 40_000] {
        let (tdg, request) = deep_chain(depth);
        let simulation = Simulation::new(tdg, vec![request], Costs::new(50_000, 128));
        group.throughput(Throughput::Elements(u64::from(depth)));
        group.bench_function(BenchmarkId::new("chain", depth), |b| {
            b.iter(|| {
                simulation
                    .run("chain", 1.0, &SimConfig::default(), |_, _| {})
                    .expect("known policy")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, simulate, deep);
criterion_main!(benches);
