//! Function manifests: TOML read into a wire struct that refuses unknown fields, then
//! validated into a [`FunctionSpec`]. Every problem names the field.
//!
//! ```toml
//! name = "price"
//! kind = "process"              # or "wasm"
//! command = ["python3", "-u", "examples/python/price.py"]   # process
//! # module = "examples/wasm/price.wasm"                     # wasm
//! memory_mib = 128
//! cpu_millicores = 500
//! cores = 1                     # dedicated cores to pin its workers to (default 0)
//! net_mbps = 10
//! gpu_units = 0
//! timeout_ms = 5000
//! max_processes = 64            # processes and threads of one worker at once
//! max_instances = 8             # workers of this function at once (idle, busy, starting)
//! pure = true                   # safe to run speculatively
//! services = ["cache"]          # auxiliary services it needs
//! workdir = "/srv/fns"          # where a process runs (default: the manifest's directory)
//! template = true               # fork workers from a template of it (default: Python); the
//!                               # template and its one spare are beside max_instances
//! [env]
//! LEVEL = "info"
//! ```

use baton_core::ResourceVec;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// What a manifest says, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestWire {
    name: String,
    kind: String,
    command: Option<Vec<String>>,
    module: Option<PathBuf>,
    memory_mib: Option<u64>,
    cpu_millicores: Option<u64>,
    cores: Option<u32>,
    net_mbps: Option<u64>,
    gpu_units: Option<u32>,
    timeout_ms: Option<u64>,
    max_processes: Option<u32>,
    max_instances: Option<u32>,
    #[serde(default)]
    pure: bool,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<PathBuf>,
    template: Option<bool>,
}

/// How a function runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionKind {
    /// A long-lived worker process speaking the framed protocol.
    Process {
        /// Program and arguments.
        command: Vec<String>,
    },
    /// A WebAssembly module (WASI preview 1).
    Wasm {
        /// The module file.
        module: PathBuf,
    },
}

/// A validated function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Its name.
    pub name: String,
    /// How it runs.
    pub kind: FunctionKind,
    /// Declared limits (memory, CPU, network, GPU).
    pub limits: ResourceVec,
    /// Longest run allowed, ms.
    pub timeout_ms: u64,
    /// Processes and threads one worker may have at once.
    pub max_processes: u32,
    /// Workers of this function at once (idle, busy or starting).
    pub max_instances: u32,
    /// Whether it may run speculatively.
    pub pure: bool,
    /// Auxiliary services it needs.
    pub services: Vec<String>,
    /// Environment of its instances.
    pub env: BTreeMap<String, String>,
    /// Directory a process function runs in (the manifest's own, when read from a file).
    pub workdir: Option<PathBuf>,
    /// Whether its workers are forked from a template of it (`crate::process::Template`);
    /// manifest `template`, on by default for a Python program.
    pub template: bool,
}

/// Defaults: 128 MiB, 1000 millicores, no network or GPU, 30 s timeout.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Default CPU share, millicores.
pub const DEFAULT_CPU_MILLICORES: u64 = 1000;
/// Default timeout, ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default processes and threads per worker.
pub const DEFAULT_MAX_PROCESSES: u32 = 64;
/// Most processes and threads a manifest may ask for per worker.
pub const MAX_PROCESSES: u32 = 4096;
/// Default workers per function at once.
pub const DEFAULT_MAX_INSTANCES: u32 = 8;
/// Most workers per function a manifest may ask for.
pub const MAX_INSTANCES: u32 = 1024;

/// Why a manifest was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not TOML, an unknown field, or a wrong type (the message names it and its place).
    #[error("manifest: {0}")]
    Syntax(String),
    /// The manifest file could not be read.
    #[error("manifest {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A field holds a value baton cannot use.
    #[error("manifest field `{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// What a function name may be, in words.
pub const NAME_RULE: &str =
    "1–64 characters of a-z, A-Z, 0-9, `-`, `_`, `.`, starting with a letter or digit";

/// Whether `name` is a valid function (or sequence) name: safe in a path, a URL and a
/// metric label; never `.` or `..`.
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn invalid(field: &'static str, message: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field,
        message: message.into(),
    }
}

impl FunctionSpec {
    /// Parses and validates a TOML manifest.
    pub fn from_toml(text: &str) -> Result<FunctionSpec, ManifestError> {
        let wire: ManifestWire = toml::from_str(text)
            .map_err(|e| ManifestError::Syntax(e.to_string().trim().to_owned()))?;
        if !is_valid_name(&wire.name) {
            return Err(invalid("name", format!("{:?}: {NAME_RULE}", wire.name)));
        }
        let kind = match (wire.kind.as_str(), wire.command, wire.module) {
            ("process", Some(command), None) => {
                if command.is_empty() || command[0].is_empty() {
                    return Err(invalid("command", "needs at least the program"));
                }
                FunctionKind::Process { command }
            }
            ("process", None, _) => {
                return Err(invalid("command", "a process function needs `command`"))
            }
            ("process", Some(_), Some(_)) => {
                return Err(invalid(
                    "module",
                    "a process function takes `command`, not `module`",
                ))
            }
            ("wasm", None, Some(module)) => FunctionKind::Wasm { module },
            ("wasm", _, None) => return Err(invalid("module", "a wasm function needs `module`")),
            ("wasm", Some(_), Some(_)) => {
                return Err(invalid(
                    "command",
                    "a wasm function takes `module`, not `command`",
                ))
            }
            (other, _, _) => {
                return Err(invalid(
                    "kind",
                    format!("{other:?}: expected \"process\" or \"wasm\""),
                ))
            }
        };
        let memory_mib = wire.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        if !(1..=1 << 20).contains(&memory_mib) {
            return Err(invalid(
                "memory_mib",
                format!("{memory_mib}: expected 1 to 1048576"),
            ));
        }
        let cpu_millicores = wire.cpu_millicores.unwrap_or(DEFAULT_CPU_MILLICORES);
        if !(1..=1_000_000).contains(&cpu_millicores) {
            return Err(invalid(
                "cpu_millicores",
                format!("{cpu_millicores}: expected 1 to 1000000"),
            ));
        }
        if wire.cores.is_some_and(|c| c > 1024) {
            return Err(invalid("cores", "expected 0 to 1024"));
        }
        let timeout_ms = wire.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=86_400_000).contains(&timeout_ms) {
            return Err(invalid(
                "timeout_ms",
                format!("{timeout_ms}: expected 1 ms to 24 h"),
            ));
        }
        let max_processes = wire.max_processes.unwrap_or(DEFAULT_MAX_PROCESSES);
        if !(1..=MAX_PROCESSES).contains(&max_processes) {
            return Err(invalid(
                "max_processes",
                format!("{max_processes}: expected 1 to {MAX_PROCESSES}"),
            ));
        }
        let max_instances = wire.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES);
        if !(1..=MAX_INSTANCES).contains(&max_instances) {
            return Err(invalid(
                "max_instances",
                format!("{max_instances}: expected 1 to {MAX_INSTANCES}"),
            ));
        }
        if let Some(service) = wire.services.iter().find(|s| s.is_empty()) {
            return Err(invalid(
                "services",
                format!("{service:?}: empty service name"),
            ));
        }
        if let Some(key) = wire.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(invalid("env", format!("{key:?}: not a variable name")));
        }
        // A Python program (python, python3, python3.11…) has its workers forked from a
        // template unless the manifest says otherwise.
        let python = match &kind {
            FunctionKind::Process { command } => Path::new(&command[0])
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python")),
            FunctionKind::Wasm { .. } => false,
        };
        let template = wire.template.unwrap_or(python);
        if template && !matches!(kind, FunctionKind::Process { .. }) {
            return Err(invalid("template", "only process functions have templates"));
        }
        Ok(FunctionSpec {
            name: wire.name,
            kind,
            limits: ResourceVec {
                cpu_millicores,
                cores: wire.cores.unwrap_or(0),
                memory_mib,
                net_mbps: wire.net_mbps.unwrap_or(0),
                gpu_units: wire.gpu_units.unwrap_or(0),
            },
            timeout_ms,
            max_processes,
            max_instances,
            pure: wire.pure,
            services: wire.services,
            env: wire.env,
            workdir: wire.workdir,
            template,
        })
    }

    /// Reads a manifest file: a relative `module` is taken from the manifest's directory,
    /// and a process function runs in that directory.
    pub fn from_file(path: &Path) -> Result<FunctionSpec, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut spec = FunctionSpec::from_toml(&text).map_err(|e| match e {
            ManifestError::Syntax(message) => ManifestError::Read {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        spec.resolve_in(dir);
        Ok(spec)
    }

    /// Parses a manifest whose relative paths are taken from `dir` (an app manifest's
    /// directory, say), as [`FunctionSpec::from_file`] takes them from the file's.
    pub fn from_toml_in(text: &str, dir: &Path) -> Result<FunctionSpec, ManifestError> {
        let mut spec = FunctionSpec::from_toml(text)?;
        spec.resolve_in(dir);
        Ok(spec)
    }

    /// A relative `module` is taken from `dir`, and a process function runs in `dir` (or
    /// its relative `workdir` in `dir`).
    fn resolve_in(&mut self, dir: &Path) {
        let spec = self;
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        if let FunctionKind::Wasm { module } = &mut spec.kind {
            if module.is_relative() {
                *module = dir.join(&*module);
            }
        }
        spec.workdir = Some(match spec.workdir.take() {
            Some(workdir) if workdir.is_relative() => dir.join(workdir),
            Some(workdir) => workdir,
            None => dir,
        });
    }

    /// Reads every `*.toml` manifest in `dir`, sorted by file name.
    pub fn from_dir(dir: &Path) -> Result<Vec<FunctionSpec>, ManifestError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ManifestError::Read {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| FunctionSpec::from_file(p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_process_manifest() {
        let spec = FunctionSpec::from_toml(
            r#"
            name = "price"
            kind = "process"
            command = ["python3", "-u", "price.py"]
            memory_mib = 64
            timeout_ms = 500
            pure = true
            services = ["cache"]
            [env]
            LEVEL = "info"
            "#,
        )
        .unwrap();
        assert_eq!(spec.limits.memory_mib, 64);
        assert_eq!(spec.limits.cpu_millicores, DEFAULT_CPU_MILLICORES);
        assert_eq!(spec.timeout_ms, 500);
        assert!(spec.pure);
        assert_eq!(spec.env["LEVEL"], "info");
        assert!(
            matches!(spec.kind, FunctionKind::Process { ref command } if command[0] == "python3")
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (
                "name = \"a\"\nkind = \"process\"\ncommand = [\"x\"]\ncolour = 1",
                "unknown field `colour`",
            ),
            (
                "name = \"a\"\nkind = \"process\"\ncommand = [\"x\"]\nmemory_mib = \"lots\"",
                "memory_mib",
            ),
            (
                "name = \"a b\"\nkind = \"process\"\ncommand = [\"x\"]",
                "manifest field `name`",
            ),
            (
                "name = \"..\"\nkind = \"process\"\ncommand = [\"x\"]",
                "manifest field `name`",
            ),
            (
                "name = \"a\"\nkind = \"process\"\ncommand = [\"x\"]\nmax_processes = 0",
                "manifest field `max_processes`",
            ),
            (
                "name = \"a\"\nkind = \"lambda\"\ncommand = [\"x\"]",
                "manifest field `kind`",
            ),
            (
                "name = \"a\"\nkind = \"process\"",
                "manifest field `command`",
            ),
            (
                "name = \"a\"\nkind = \"process\"\ncommand = []",
                "manifest field `command`",
            ),
            ("name = \"a\"\nkind = \"wasm\"", "manifest field `module`"),
            (
                "name = \"a\"\nkind = \"process\"\ncommand = [\"x\"]\nmemory_mib = 0",
                "manifest field `memory_mib`",
            ),
            (
                "name = \"a\"\nkind = \"process\"\ncommand = [\"x\"]\ntimeout_ms = 0",
                "manifest field `timeout_ms`",
            ),
            (
                "name = \"a\"\nkind = \"process\"\ncommand = [\"x\"]\n[env]\n\"A=B\" = \"c\"",
                "manifest field `env`",
            ),
            ("kind = \"process\"", "missing field `name`"),
            ("this is not toml", "manifest:"),
        ];
        for (text, expected) in cases {
            let message = FunctionSpec::from_toml(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }
}
