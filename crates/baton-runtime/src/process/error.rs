//! Why a worker could not start or serve, and what that means for its record and for
//! the worker itself.

use thiserror::Error;

/// Why a worker could not start or serve.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The manifest is not a process function.
    #[error("function `{0}` is not a process function")]
    NotProcess(String),
    /// The program could not be started.
    #[error("function `{function}`: cannot start {program:?}: {source}")]
    Spawn {
        /// The function.
        function: String,
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No working jail on this host: nothing is started (fail closed).
    #[error("function `{function}`: {refused}")]
    NoSandbox {
        /// The function.
        function: String,
        /// Why, and how to get one.
        refused: crate::sandbox::NoSandbox,
    },
    /// Its private network could not be set up (the jail was killed before its program
    /// ran).
    #[error("function `{function}`: no private network: {message}")]
    Network {
        /// The function.
        function: String,
        /// What failed.
        message: String,
    },
    /// Limits could not be applied (the worker was killed).
    #[error("function `{function}`: cannot apply limits: {message}")]
    Limits {
        /// The function.
        function: String,
        /// What failed.
        message: String,
    },
    /// No ready frame in time.
    #[error(
        "function `{function}`: worker not ready after {waited_ms} ms (a worker must \
             speak baton's protocol, e.g. through examples/python/baton_worker.py){stderr}"
    )]
    NotReady {
        /// The function.
        function: String,
        /// How long we waited.
        waited_ms: u64,
        /// The end of what it wrote on stderr, as `; stderr: …`, or empty.
        stderr: String,
    },
    /// The worker ended before its ready frame (a plain script, say).
    #[error(
        "function `{function}`: worker exited before it was ready ({status}); a worker must \
             speak baton's protocol, e.g. through examples/python/baton_worker.py"
    )]
    ExitedBeforeReady {
        /// The function.
        function: String,
        /// Its exit status and the end of its stderr.
        status: String,
    },
    /// The invocation overran the timeout; the worker was killed.
    #[error("function `{function}`: timed out after {timeout_ms} ms; worker killed")]
    Timeout {
        /// The function.
        function: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The worker was killed for memory.
    #[error("function `{function}`: out of memory (limit {limit_mib} MiB); worker killed")]
    OutOfMemory {
        /// The function.
        function: String,
        /// The limit.
        limit_mib: u64,
    },
    /// The worker died.
    #[error("function `{function}`: worker died ({status})")]
    Crashed {
        /// The function.
        function: String,
        /// Its exit status.
        status: String,
    },
    /// The function raised or returned an error; the worker lives on.
    #[error("function `{function}` failed: {message}")]
    Function {
        /// The function.
        function: String,
        /// Its message.
        message: String,
    },
    /// Every instance of the function stayed busy (or the node kept starting others) for
    /// the whole wait.
    #[error("function `{function}`: no instance free after {waited_ms} ms (at its instance cap or the node's cold-start bound)")]
    Saturated {
        /// The function.
        function: String,
        /// How long the request waited.
        waited_ms: u64,
    },
    /// No room for the worker's declared memory on the node (a step's start after its
    /// wait, a pre-warm's at once).
    #[error(
        "function `{function}`: no memory for a worker: it declares {needed_mib} MiB and the \
         node's workers hold the rest of its {capacity_mib} MiB (waited {waited_ms} ms)"
    )]
    NoMemory {
        /// The function.
        function: String,
        /// Its declared memory.
        needed_mib: u64,
        /// The node's memory for workers.
        capacity_mib: u64,
        /// How long the start waited.
        waited_ms: u64,
    },
    /// The worker broke the protocol (it was killed).
    #[error("function `{function}`: protocol error: {message}")]
    Protocol {
        /// The function.
        function: String,
        /// What was wrong.
        message: String,
    },
}

impl WorkerError {
    /// The execution-record status of this error.
    pub fn status(&self) -> baton_trace::schema::Status {
        use baton_trace::schema::Status;
        match self {
            WorkerError::Timeout { .. } => Status::Timeout,
            WorkerError::OutOfMemory { .. } => Status::Oom,
            _ => Status::Error,
        }
    }

    /// Whether the worker is gone and must be replaced.
    pub fn worker_lost(&self) -> bool {
        !matches!(
            self,
            WorkerError::Function { .. }
                | WorkerError::Saturated { .. }
                | WorkerError::NoMemory { .. }
                | WorkerError::NoSandbox { .. }
        )
    }
}
