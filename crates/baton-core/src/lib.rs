//! baton's predictive core: the Task Dependency Graph, chain prediction, resource profiles,
//! the resource pool, the chain assembler and the pre-warming policies.
//!
//! Pure by design: no I/O, no async runtime, no wall clock (time comes in as µs values or
//! through a [`clock::Clock`]), so the runtime and the simulator run the same code.
//!
//! The flow: requests ([`request::Request`]) feed the learner ([`tdg::Tdg`]), which
//! publishes immutable snapshots ([`snapshot::TdgSnapshot`]) through a
//! [`tdg::SnapshotCell`]; predictors ask a snapshot for chains ([`predict`]) and their
//! profiles ([`chain`]); the [`assembler::Assembler`] fits them to the
//! [`reservation::ResourcePool`]; [`policy`] turns plans into pre-warm actions.
#![deny(missing_docs)]

pub mod arrival;
pub mod assembler;
pub mod chain;
pub mod clock;
pub mod context;
pub mod costs;
pub mod decay;
pub mod drift;
pub mod eval;
pub mod exec;
pub mod histogram;
pub mod ids;
pub mod mining;
pub mod policy;
pub mod predict;
pub mod profile;
pub mod rank;
pub mod request;
pub mod reservation;
pub mod resources;
pub mod snapshot;
pub mod sync;
pub mod tdg;
#[cfg(test)]
mod test_support;

pub use assembler::{Assembler, AssemblerConfig, ChainPlan, PlannedStep, SetPlan};
pub use context::{CallContext, ContextKind, Prev};
pub use costs::Costs;
pub use ids::{LabelId, TaskId};
pub use policy::{Action, ChainPolicy, ChainPolicyConfig, NextPolicy, Policy, PolicyEvent};
pub use predict::{Chain, PredictContext, PredictOptions};
pub use request::{Invocation, Request, Usage};
pub use reservation::{Reservation, ReservationKind, ReservationRequest, ResourcePool, Window};
pub use resources::ResourceVec;
pub use snapshot::TdgSnapshot;
pub use tdg::{SnapshotCell, Tdg, TdgConfig, TdgState};
