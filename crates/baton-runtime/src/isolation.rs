//! How worker processes are isolated on this machine: the resource limits ([`crate::limits`])
//! and the jail ([`crate::sandbox`]), detected together once and reported together
//! (`baton doctor`, the server's start).

use crate::limits::{self, Detection, Mechanism};
use crate::sandbox::{self, Sandbox, SandboxDetection};

/// The isolation every worker gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// Resource limits.
    pub limits: Mechanism,
    /// The jail.
    pub sandbox: Sandbox,
}

impl Isolation {
    /// No limits and no jail, chosen explicitly: for pools that only run wasm, and for
    /// tests of the bare fallback.
    pub fn none() -> Isolation {
        Isolation {
            limits: Mechanism::None,
            sandbox: Sandbox::Unjailed,
        }
    }
}

/// What detection found for both halves.
#[derive(Debug, Clone)]
pub struct IsolationDetection {
    /// Resource limits.
    pub limits: Detection,
    /// The jail.
    pub sandbox: SandboxDetection,
}

impl IsolationDetection {
    /// The isolation to use.
    pub fn isolation(&self) -> Isolation {
        Isolation {
            limits: self.limits.mechanism.clone(),
            sandbox: self.sandbox.sandbox.clone(),
        }
    }
}

impl std::fmt::Display for IsolationDetection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.sandbox, self.limits)
    }
}

/// Detects limits and jail.
pub fn detect() -> IsolationDetection {
    IsolationDetection {
        limits: limits::detect(),
        sandbox: sandbox::detect(),
    }
}
