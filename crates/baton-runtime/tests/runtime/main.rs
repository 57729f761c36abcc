//! The runtime's integration tests, one binary: each module was its own test binary, and
//! each of those linked wasmtime again (disk and link time that CI's machine does not have).
//! `cargo test -p baton-runtime --test runtime sandbox::` runs one module.

mod common;

mod allocator;
mod bounds;
mod chain;
mod conformance;
mod failures;
mod learning;
mod order_app;
mod prepare;
mod process;
mod sandbox;
mod wasm;
mod wasm_chain;
