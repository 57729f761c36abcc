//! baton's real execution: function manifests, the worker protocol, warm worker processes
//! under the resource-limit mechanism this machine offers, the wasm backend, the warm pool,
//! the planner (the proactive allocator), auxiliary services, and the execution director that
//! hands each output to the next step's instance. See ARCHITECTURE.md.
#![deny(missing_docs)]

pub mod backend;
pub mod bench;
pub mod bucket;
pub mod code;
pub mod counters;
pub mod director;
pub mod isolation;
pub mod limits;
pub mod manifest;
pub mod netns;
pub mod node;
pub mod planner;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod sandbox;
pub mod seccomp;
pub mod services;
mod step;
pub mod trace_context;
pub mod wasm;
