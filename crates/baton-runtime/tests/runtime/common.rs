//! Helpers shared by the runtime's integration tests.

use std::process::Command;

/// The real Python interpreter, not a version-manager shim (a shim adds its own start-up
/// time to every worker).
pub fn python() -> String {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is installed (.ci/run installs it)");
    String::from_utf8(output.stdout)
        .expect("a UTF-8 path")
        .trim()
        .to_owned()
}

/// This machine's isolation for workers, with what was detected printed (`--nocapture`
/// shows which jail and limits ran). `BATON_EXPECT_LIMITS=cgroup-v1|cgroup-v2` (set by
/// `.ci/guest-v2.sh` in its cgroup v2 guest) makes any other mechanism a failure, so a
/// run meant for one hierarchy cannot pass on a fallback.
#[allow(dead_code)]
pub fn isolation() -> baton_runtime::isolation::Isolation {
    let detection = baton_runtime::isolation::detect();
    eprint!("{detection}");
    let isolation = detection.isolation();
    // CI installs bubblewrap (.ci/run): there a missing sandbox is a broken setup, not a
    // fallback path to test.
    if std::env::var_os("CI").is_some() {
        assert!(
            !matches!(
                isolation.sandbox,
                baton_runtime::sandbox::Sandbox::Missing { .. }
            ),
            "CI is set but this machine has no sandbox (.ci/run installs bubblewrap): {detection}"
        );
    }
    if let Ok(expected) = std::env::var("BATON_EXPECT_LIMITS") {
        let found = match &isolation.limits {
            baton_runtime::limits::Mechanism::CgroupV1 { .. } => "cgroup-v1",
            baton_runtime::limits::Mechanism::CgroupV2 { .. } => "cgroup-v2",
            baton_runtime::limits::Mechanism::Rlimit => "rlimit",
            baton_runtime::limits::Mechanism::None => "none",
        };
        assert_eq!(found, expected, "BATON_EXPECT_LIMITS: {detection}");
    }
    isolation
}

/// A file under the repository's `examples/`.
#[allow(dead_code)]
pub fn example(path: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path)
        .display()
        .to_string()
}

/// A Python process function running `examples/python/<script>` in that directory, with
/// `extra` TOML lines.
#[allow(dead_code)]
pub fn process_spec(
    name: &str,
    script: &str,
    extra: &str,
) -> baton_runtime::manifest::FunctionSpec {
    baton_runtime::manifest::FunctionSpec::from_toml(&format!(
        "name = \"{name}\"\nkind = \"process\"\ncommand = [{:?}, \"-u\", {script:?}]\nworkdir = {:?}\n{extra}\n",
        python(),
        example("python")
    ))
    .unwrap()
}

/// A wasm function running `examples/<module>`, with `extra` TOML lines.
#[allow(dead_code)]
pub fn wasm_spec(name: &str, module: &str, extra: &str) -> baton_runtime::manifest::FunctionSpec {
    baton_runtime::manifest::FunctionSpec::from_toml(&format!(
        "name = \"{name}\"\nkind = \"wasm\"\nmodule = {:?}\n{extra}\n",
        example(module)
    ))
    .unwrap()
}

/// A director over `functions` whose only way to have a warm instance is a prediction: the
/// chain policy with no keep-alive, reserving in a pool of 4 CPUs' millicores, `cores`
/// named cores and 2 GiB; returns it (not yet shared) and the pool.
#[allow(dead_code)]
pub fn predicting_director(
    functions: Vec<baton_runtime::manifest::FunctionSpec>,
    isolation: baton_runtime::isolation::Isolation,
    cores: u32,
) -> (baton_runtime::director::Director, baton_core::ResourcePool) {
    use baton_core::{
        Assembler, AssemblerConfig, ChainPolicy, ChainPolicyConfig, ResourcePool, ResourceVec,
        SnapshotCell, Tdg, TdgConfig,
    };
    use std::sync::Arc;
    let pool = baton_runtime::pool::WarmPool::new(functions, isolation);
    let tdg = Tdg::new(TdgConfig {
        half_life_us: None,
        ..TdgConfig::default()
    });
    let graph = Arc::new(SnapshotCell::new(tdg.clone().snapshot()));
    let reservations = ResourcePool::new(ResourceVec {
        cpu_millicores: 4_000,
        cores,
        memory_mib: 2_048,
        net_mbps: 1_000,
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
    let director = baton_runtime::director::Director::new(pool, tdg, graph, Box::new(policy))
        .with_reservations(reservations.clone());
    (director, reservations)
}
