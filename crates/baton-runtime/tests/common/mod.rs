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

/// A file under the repository's `examples/`.
#[allow(dead_code)]
pub fn example(path: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path)
        .display()
        .to_string()
}

/// A Python process function running `examples/python/<script>`, with `extra` TOML lines.
#[allow(dead_code)]
pub fn process_spec(
    name: &str,
    script: &str,
    extra: &str,
) -> baton_runtime::manifest::FunctionSpec {
    baton_runtime::manifest::FunctionSpec::from_toml(&format!(
        "name = \"{name}\"\nkind = \"process\"\ncommand = [{:?}, \"-u\", {:?}]\n{extra}\n",
        python(),
        example(&format!("python/{script}"))
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
