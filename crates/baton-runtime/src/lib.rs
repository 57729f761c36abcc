//! baton's real execution (first part): function manifests, the worker protocol, warm
//! worker processes under the resource-limit mechanism this machine offers, the warm pool,
//! and the execution director that hands each output to the next step's worker.
//!
//! Still to come (issue 3): the wasm backend, the time-phased allocator (reservations
//! per step window, cores, bandwidth, auxiliary services) and the benches.
#![deny(missing_docs)]

pub mod alloc;
pub mod bench;
pub mod bucket;
pub mod director;
pub mod limits;
pub mod manifest;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod services;
pub mod wasm;
