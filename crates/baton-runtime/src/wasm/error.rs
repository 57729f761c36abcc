//! Why a wasm function could not be loaded or run, and its record status.

use std::path::PathBuf;
use thiserror::Error;

/// Why a wasm function could not be loaded or run.
#[derive(Debug, Error)]
pub enum WasmError {
    /// The engine could not be configured.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The spec is not a wasm function.
    #[error("function `{0}` is not a wasm function")]
    NotWasm(String),
    /// The module file could not be read.
    #[error("function `{function}`: cannot read module {path}: {source}")]
    Read {
        /// The function.
        function: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The module does not compile or link (a broken module).
    #[error("function `{function}`: invalid module: {message}")]
    Invalid {
        /// The function.
        function: String,
        /// What wasmtime said.
        message: String,
    },
    /// The guest ran past its timeout and was interrupted.
    #[error("function `{function}`: timed out after {timeout_ms} ms")]
    Timeout {
        /// The function.
        function: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The guest wanted more memory than its limit.
    #[error("function `{function}`: out of memory (limit {limit_mib} MiB)")]
    OutOfMemory {
        /// The function.
        function: String,
        /// The limit.
        limit_mib: u64,
    },
    /// The guest trapped or exited with a failure.
    #[error("function `{function}` failed: {message}")]
    Failed {
        /// The function.
        function: String,
        /// What happened.
        message: String,
    },
}

impl WasmError {
    /// The execution-record status of this error.
    pub fn status(&self) -> baton_trace::schema::Status {
        use baton_trace::schema::Status;
        match self {
            WasmError::Timeout { .. } => Status::Timeout,
            WasmError::OutOfMemory { .. } => Status::Oom,
            _ => Status::Error,
        }
    }
}
