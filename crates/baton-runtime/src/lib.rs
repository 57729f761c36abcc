//! baton's real execution (first part): function manifests, the worker protocol, warm
//! worker processes, and the resource-limit mechanism this machine offers.
//!
//! Still to come (issue 3): the wasm backend, the warm pool, the proactive allocator and the
//! execution director.
#![deny(missing_docs)]

pub mod limits;
pub mod manifest;
pub mod process;
pub mod protocol;
