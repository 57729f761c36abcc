//! Criterion benches of the core's hot paths: TDG ingest rate and top-5, depth-5 prediction
//! on a 10,000-task graph (cached and uncached). After criterion's report, the prediction
//! latency is also sampled call by call and printed as p50/p99, since the target is a p99.
//!
//! Run: `cargo bench -p baton-core --bench core`.

use baton_core::context::Prev;
use baton_core::profile::NeedQuantile;
use baton_core::{
    CallContext, PredictContext, PredictOptions, TaskId, Tdg, TdgConfig, TdgSnapshot,
};
use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use std::time::Instant;

const N_TASKS: u32 = 10_000;

/// xorshift64*: a deterministic generator, so every run measures the same graph.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Events over a 10,000-task graph: callers drawn uniformly (the cache-unfriendly case);
/// each task has 2-8 callees with skewed weights; each caller invocation has a route
/// (skewed over 16), makes 0-3 calls in sequence and ends; time advances 10 µs per event.
fn events(n: usize, seed: u64) -> Vec<(CallContext, Option<TaskId>, u64, u64)> {
    events_with(n, seed, |rng| rng.below(u64::from(N_TASKS)) as u32)
}

/// The same, with callers drawn from a Zipf-like popularity (task i has weight ~1/(i+1)),
/// as in real fleets where a few functions take most calls.
fn skewed_events(n: usize, seed: u64) -> Vec<(CallContext, Option<TaskId>, u64, u64)> {
    let ln_n = f64::from(N_TASKS).ln();
    events_with(n, seed, move |rng| {
        // Inverse CDF of the continuous 1/x law on [1, N]: x = N^u.
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * ln_n).exp() as u32 - 1).min(N_TASKS - 1)
    })
}

fn events_with(
    n: usize,
    seed: u64,
    mut pick_caller: impl FnMut(&mut Rng) -> u32,
) -> Vec<(CallContext, Option<TaskId>, u64, u64)> {
    let mut rng = Rng(seed);
    let fanout: Vec<Vec<u32>> = (0..N_TASKS)
        .map(|_| {
            let degree = 2 + rng.below(7) as usize;
            (0..degree)
                .map(|_| rng.below(u64::from(N_TASKS)) as u32)
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    let mut t = 1_700_000_000_000_000u64;
    while out.len() < n {
        let caller = pick_caller(&mut rng);
        let callees = &fanout[caller as usize];
        let mut prev = Prev::Start;
        let n_calls = rng.below(4);
        // One route per request (so per caller invocation), skewed over 16 routes.
        let route = Some(baton_core::LabelId((rng.next().trailing_zeros()).min(15)));
        for _ in 0..n_calls {
            // Skew: the first callee is picked half the time, the second a quarter...
            let pick = (rng.next().trailing_zeros() as usize).min(callees.len() - 1);
            let callee = TaskId(callees[pick]);
            let context = CallContext {
                caller: TaskId(caller),
                prev,
                route,
                grand_caller: None,
                caller_operation: None,
            };
            out.push((context, Some(callee), 1_000 + rng.below(5_000), t));
            prev = Prev::After(callee);
            t += 10;
        }
        let context = CallContext {
            caller: TaskId(caller),
            prev,
            route: None,
            grand_caller: None,
            caller_operation: None,
        };
        out.push((context, None, 0, t));
        t += 10;
    }
    out.truncate(n);
    out
}

fn learner(config: TdgConfig) -> Tdg {
    let mut tdg = Tdg::new(config);
    for i in 0..N_TASKS {
        tdg.intern_task(&format!("task-{i}"));
    }
    tdg
}

fn first_order_config() -> TdgConfig {
    TdgConfig {
        contexts: Vec::new(),
        ..TdgConfig::default()
    }
}

fn ingest(c: &mut Criterion) {
    let uniform = events(1_000_000, 7);
    let skewed = skewed_events(1_000_000, 7);
    let mut group = c.benchmark_group("tdg_ingest");
    group.throughput(Throughput::Elements(uniform.len() as u64));
    group.sample_size(10);
    // The last case is the one before it without the drift monitor's half-life changes
    // (the monitor still runs): what following drift costs.
    let cases = [
        ("uniform-callers/first-order", &uniform, false, true),
        ("uniform-callers/with-3-contexts", &uniform, true, true),
        ("zipf-callers/first-order", &skewed, false, true),
        ("zipf-callers/with-3-contexts", &skewed, true, true),
        (
            "zipf-callers/with-3-contexts/no-drift",
            &skewed,
            true,
            false,
        ),
    ];
    for (name, events, contexts, drift) in cases {
        group.bench_function(BenchmarkId::new("1M events", name), |b| {
            b.iter_batched_ref(
                || {
                    let mut config = if contexts {
                        TdgConfig::default()
                    } else {
                        first_order_config()
                    };
                    if !drift {
                        config.drift_half_life_us = None;
                    }
                    let mut tdg = learner(config);
                    // Warm the graph so the measured pass updates existing edges, as a
                    // long-running learner does.
                    for (context, callee, delay, at) in events {
                        tdg.observe_call(context, *callee, *delay, *at);
                    }
                    tdg
                },
                |tdg| {
                    for (context, callee, delay, at) in events {
                        tdg.observe_call(context, *callee, *delay, *at);
                    }
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn graph() -> TdgSnapshot {
    let mut tdg = learner(first_order_config());
    for (context, callee, delay, at) in events(2_000_000, 11) {
        tdg.observe_call(&context, callee, delay, at);
    }
    tdg.snapshot()
}

fn options() -> PredictOptions {
    PredictOptions {
        n: 5,
        max_depth: 5,
        min_probability: 1e-6,
        max_repeats: 2,
        use_context: true,
    }
}

fn predict(c: &mut Criterion) {
    let snapshot = graph();
    let options = options();
    let context = PredictContext::default();
    let mut group = c.benchmark_group("predict_top5_depth5_10k_tasks");
    let mut from = 0u32;
    group.bench_function("uncached", |b| {
        b.iter(|| {
            from = (from + 7) % N_TASKS;
            black_box(snapshot.predict(TaskId(from), &context, &options))
        })
    });
    for i in 0..1_000 {
        snapshot.chain_profiles(TaskId(i), &context, &options, NeedQuantile::P95);
    }
    let mut from = 0u32;
    group.bench_function("cached", |b| {
        b.iter(|| {
            from = (from + 7) % 1_000;
            black_box(snapshot.chain_profiles(TaskId(from), &context, &options, NeedQuantile::P95))
        })
    });
    group.finish();
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    baton_core::rank::nearest_rank(sorted, q).unwrap_or(0)
}

/// Per-call latency of prediction, p50 and p99, cached and uncached.
fn latency_percentiles() {
    let snapshot = graph();
    let options = options();
    let context = PredictContext::default();
    let sample = |f: &mut dyn FnMut(u32)| {
        let mut nanos: Vec<u64> = (0..100_000u32)
            .map(|i| {
                let start = Instant::now();
                f(i);
                start.elapsed().as_nanos() as u64
            })
            .collect();
        nanos.sort_unstable();
        (percentile(&nanos, 0.5), percentile(&nanos, 0.99))
    };
    let uncached = sample(&mut |i| {
        black_box(snapshot.predict(TaskId(i * 7 % N_TASKS), &context, &options));
    });
    for i in 0..1_000 {
        snapshot.chain_profiles(TaskId(i), &context, &options, NeedQuantile::P95);
    }
    let cached = sample(&mut |i| {
        black_box(snapshot.chain_profiles(
            TaskId(i * 7 % 1_000),
            &context,
            &options,
            NeedQuantile::P95,
        ));
    });
    println!("predict top-5 depth-5, 10,000 tasks, per call over 100,000 calls:");
    println!(
        "  uncached p50 {:.2} µs  p99 {:.2} µs",
        uncached.0 as f64 / 1e3,
        uncached.1 as f64 / 1e3
    );
    println!(
        "  cached   p50 {:.2} µs  p99 {:.2} µs (target p99 ≤ 5 µs)",
        cached.0 as f64 / 1e3,
        cached.1 as f64 / 1e3
    );
}

criterion_group!(benches, ingest, predict);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !std::env::args().any(|a| a == "--list") {
        latency_percentiles();
    }
}
