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
