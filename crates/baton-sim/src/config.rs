//! The simulated node's settings ([`SimConfig`]): its memory, the policy's tick, how
//! arrivals come, its start slots and how far behind the requests its planner runs
//! ([`PlannerLag`]).

use baton_core::exec::Reuse;
use serde::{Deserialize, Serialize};

/// The node and the engine's clockwork.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Node memory for instances, MiB.
    pub memory_mib: u64,
    /// Policy tick period, µs.
    pub tick_us: u64,
    /// With an online learner: how often the learner publishes a new snapshot, µs.
    pub publish_every_us: u64,
    /// Which idle instance an arrival takes (`baton serve --reuse` likewise).
    pub reuse: Reuse,
    /// A call arrives when its caller's run reaches it, later by the wait the simulation
    /// put before its caller, as live (see `crate::schedule`); without it every invocation
    /// arrives at its recorded start.
    pub causal: bool,
    /// Instance starts under way at once on the node, at most (0: no bound); a live node
    /// allows its cores (see `crate::slots`).
    pub start_slots: usize,
    /// How long after an arrival or an end the node's planner carries out the pre-warms
    /// the policy decided there that are due at once (zero: at that instant). The live
    /// planner runs behind the requests (`baton load` gives the server's lags): such a
    /// pre-warm starts that much later, and not at all when a step of its function came
    /// meanwhile, which started its own instance (`RunStats::prewarms_overtaken`, the
    /// runtime's rule).
    pub planner_lag: PlannerLag,
}

pub use baton_core::exec::LAG_QUANTILES;

/// A planner's lag behind the requests as [`LAG_QUANTILES`] equally likely values, µs (the
/// lags measured at `baton_core::exec::lag_quantile_points`); each pre-warm due at once
/// draws one, deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlannerLag(pub [u64; LAG_QUANTILES]);

impl PlannerLag {
    /// The same lag every time, µs.
    pub fn fixed(us: u64) -> PlannerLag {
        PlannerLag([us; LAG_QUANTILES])
    }

    /// The `n`th draw, µs (a fixed scramble of `n`: the same run draws the same lags).
    pub(crate) fn draw(&self, n: u64) -> u64 {
        let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        self.0[(x % LAG_QUANTILES as u64) as usize]
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            memory_mib: 8 * 1024,
            tick_us: 1_000_000,
            publish_every_us: 60_000_000,
            reuse: Reuse::default(),
            causal: false,
            start_slots: 0,
            planner_lag: PlannerLag::default(),
        }
    }
}
