//! The director running wasm steps: the first use of a function compiles and links it
//! (cold), later uses instantiate the pre-linked module (warm), and a learned chain's next
//! wasm step is pre-linked in the background when its predecessor starts.

use baton_core::request::{Invocation, Request, Usage};
use baton_core::{
    Assembler, AssemblerConfig, ChainPolicy, ChainPolicyConfig, ResourcePool, ResourceVec,
    SnapshotCell, Tdg, TdgConfig,
};
use baton_runtime::director::Director;
use baton_runtime::isolation::Isolation;
use baton_runtime::manifest::FunctionSpec;
use baton_runtime::pool::WarmPool;
use baton_runtime::wasm::WasmEngine;
use std::path::Path;
use std::sync::Arc;

fn wasm_spec(name: &str) -> FunctionSpec {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wat/upper.wat");
    FunctionSpec::from_toml(&format!(
        "name = \"{name}\"\nkind = \"wasm\"\nmodule = {:?}\nmemory_mib = 16\ntimeout_ms = 2000\n",
        module.display().to_string()
    ))
    .unwrap()
}

#[test]
fn wasm_steps_go_cold_then_warm_and_are_prewarmed_once_learned() {
    let cache = tempfile::tempdir().unwrap();
    let engine = Arc::new(WasmEngine::new(cache.path(), 16, 64).unwrap());
    let pool = WarmPool::new(
        vec![wasm_spec("first"), wasm_spec("second"), wasm_spec("third")],
        Isolation::none(),
    );
    // The graph already knows that "third" follows "first" (as if learned from earlier logs);
    // "third" is never called before the end, so only a prediction can load it early.
    let mut tdg = Tdg::new(TdgConfig {
        half_life_us: None,
        ..TdgConfig::default()
    });
    for i in 0..2u64 {
        let (first, third) = (tdg.intern_task("first"), tdg.intern_task("third"));
        let label = tdg.intern_label("first");
        let call = |task, parent, start_us| Invocation {
            task,
            label,
            parent,
            start_us,
            waited_us: 0,
            usage: Usage {
                wall_us: 10,
                ..Usage::default()
            },
        };
        let request = Request::build(vec![
            call(first, None, i * 1_000),
            call(third, Some(0), i * 1_000 + 20),
        ])
        .0;
        tdg.observe_request(&request);
    }
    let graph = Arc::new(SnapshotCell::new(tdg.snapshot()));
    let reservations = ResourcePool::new(ResourceVec {
        cpu_millicores: 4_000,
        cores: 0,
        memory_mib: 1_024,
        net_mbps: 100,
        gpu_units: 0,
    });
    let policy = ChainPolicy::new(
        Arc::clone(&graph),
        reservations.clone(),
        Assembler::new(AssemblerConfig::default()),
        ChainPolicyConfig {
            keep_alive_us: 0,
            entry_keep_alive_us: 0,
            set_threshold: None,
        },
    );
    let director = Director::new(pool, tdg, graph, Box::new(policy)).with_wasm(engine);
    director
        .declare_sequence("pipeline", vec!["first".into(), "second".into()])
        .expect("a valid sequence");

    let outcome = director.invoke("pipeline", b"hello").unwrap();
    assert_eq!(outcome.output, b"HELLO");
    let cold: Vec<bool> = outcome
        .records
        .iter()
        .map(|r| r.cold == Some(true))
        .collect();
    assert_eq!(cold, [true, true], "first use compiles and links");
    assert!(outcome
        .records
        .iter()
        .all(|r| r.extra["tier"] == "compiled"));
    assert!(outcome
        .records
        .iter()
        .all(|r| r.cold_start_us.unwrap_or(0) > 0));

    let outcome = director.invoke("pipeline", b"again").unwrap();
    assert!(
        outcome.records.iter().all(|r| r.cold == Some(false)),
        "pre-linked: warm"
    );
    // Once the planner has seen those steps end, it has made each function's next
    // instance: the next call instantiates nothing on its way.
    director.sync();
    let ahead = || {
        director
            .counters()
            .instances_ahead
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = ahead();
    let outcome = director.invoke("pipeline", b"ahead").unwrap();
    assert_eq!(outcome.output, b"AHEAD");
    assert_eq!(ahead() - before, 2, "both steps found their instance made");
    assert!(outcome
        .records
        .iter()
        .all(|r| r.extra["tier"] == "instance"));

    // Starting "first" makes the policy predict "third"; the director pre-links it in the
    // background, so the next call of "third" finds it ready, or waits for the load under
    // way (never compiles it again), and is recorded as pre-warmed either way.
    let _ = director.invoke("first", b"alone").unwrap();
    let third = director.invoke("third", b"z").unwrap();
    assert_eq!(third.output, b"Z");
    assert_eq!(third.records[0].cold, Some(false), "{:?}", third.records[0]);
    let warmth = third.records[0].extra["warmth"]
        .as_str()
        .unwrap_or_default();
    eprintln!("third: {warmth} (prewarm-late: it waited for the load under way)");
    assert!(warmth.starts_with("prewarm"), "{warmth}");
    assert!(third.records[0]
        .chain
        .as_deref()
        .is_some_and(|c| c.starts_with("plan-")));
    assert_eq!(
        director
            .counters()
            .steps
            .load(std::sync::atomic::Ordering::Relaxed),
        2 + 2 + 2 + 1 + 1
    );

    // A plan still live when the director goes (this one runs its planner inline): its
    // reservation goes with it.
    let _ = director.invoke("first", b"again").unwrap();
    assert!(
        !reservations.is_empty(),
        "the plan for third holds its reservation"
    );
    drop(director);
    assert!(reservations.is_empty(), "{:?}", reservations.reservations());
}
