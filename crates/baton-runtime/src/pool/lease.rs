//! What the pool hands out and counts: a [`Lease`] on a worker (with how it was obtained,
//! its [`Warmth`]), the busy slot that counts it against its function's cap, and the pool's
//! counters.

use super::{lock, WarmPool};
use crate::process::Worker;
use baton_core::exec::Claims;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One idle worker, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleInfo {
    /// Its function.
    pub function: String,
    /// Its process.
    pub pid: u32,
    /// Its memory limit, MiB.
    pub memory_mib: u64,
    /// The plan that pre-warmed it, when unused yet.
    pub plan: Option<u64>,
    /// Whether a pre-warm started it and nobody used it yet.
    pub prewarmed: bool,
    /// Kept until.
    pub until: Instant,
    /// Idle since.
    pub since: Instant,
    /// For a pre-warmed worker nobody used yet, the bet it stands for: the weight of the
    /// claims on it from now on and when the latest ends (eviction weighs it as a bet, as
    /// the simulator does).
    pub bet: Option<(f64, Instant)>,
    /// Given back by a request whose end the planner has not heard yet: to the executor
    /// it is still finishing, so budget enforcement leaves it to the planner's settling
    /// (where it is weighed with its use counted).
    pub settling: bool,
    /// Whether a pre-warm counts on it (no other pre-warm displaces it).
    pub claimed: bool,
}

/// How a worker was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmth {
    /// Started for this request.
    Cold,
    /// An idle worker kept alive after an earlier request.
    Warm,
    /// A worker pre-warmed for this request (predicted).
    Prewarmed,
}

/// A worker lent out; give it back with [`WarmPool::give_back`].
#[derive(Debug)]
pub struct Lease {
    /// The worker.
    pub worker: Worker,
    /// How it was obtained.
    pub warmth: Warmth,
    /// Time spent waiting for it (cold start, or the rest of a pre-warm), µs.
    pub wait_us: u64,
    /// The plan that pre-warmed it.
    pub plan: Option<u64>,
    /// Whether the request waited for a pre-warm still starting (it came late).
    pub waited_for_prewarm: bool,
    /// The claims of later pre-warms on this worker, given back with it.
    pub claims: Claims<Instant>,
    /// Counts the worker as busy until the lease is gone.
    pub(super) _busy: BusySlot,
}

impl Lease {
    /// The function it runs.
    pub fn function(&self) -> &str {
        &self._busy.function
    }
}

/// One busy worker of a function, counted against its instance cap until dropped.
#[derive(Debug)]
pub(super) struct BusySlot {
    pub(super) pool: Arc<WarmPool>,
    pub(super) function: String,
}

impl Drop for BusySlot {
    fn drop(&mut self) {
        let mut state = lock(&self.pool.state);
        if let Some(busy) = state.busy.get_mut(&self.function) {
            *busy = busy.saturating_sub(1);
        }
        drop(state);
        self.pool.started.notify_all();
    }
}

/// How long a request waits for a capped instance before giving up.
pub const CAP_WAIT: Duration = Duration::from_secs(60);
