//! What a replay measured: [`RunStats`], filled in by the engine as it runs, and
//! [`added_latency`], a request's added latency on its call tree.

use baton_core::exec::ColdCauses;
use baton_core::request::Request;
use serde::{Deserialize, Serialize};

/// Pre-warmed instances started, and used at least once, by what asked for them: a
/// route's task set (`chain`, when the route becomes known), a plan from the running task
/// (`chain`'s predicted path), or no plan (`chain`'s re-warms from a task's idle-time or
/// rhythm model, and every baseline's pre-warms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PrewarmSources {
    /// Started for a route's task set.
    pub route_started: u64,
    /// Of those, used.
    pub route_used: u64,
    /// Started for a plan from the running task.
    pub path_started: u64,
    /// Of those, used.
    pub path_used: u64,
    /// Started for no plan.
    pub unplanned_started: u64,
    /// Of those, used.
    pub unplanned_used: u64,
}

impl PrewarmSources {
    pub(crate) fn count(&mut self, plan: Option<u64>, used: bool) {
        let (started, used_count) = match plan {
            Some(id) if baton_core::policy::is_route_plan(id) => {
                (&mut self.route_started, &mut self.route_used)
            }
            Some(_) => (&mut self.path_started, &mut self.path_used),
            None => (&mut self.unplanned_started, &mut self.unplanned_used),
        };
        if used {
            *used_count += 1;
        } else {
            *started += 1;
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Invocations replayed.
    pub invocations: u64,
    /// Invocations that ran to their end (must equal `invocations`: none lost, none twice).
    pub served: u64,
    /// Invocations that started a new instance on arrival.
    pub cold_starts: u64,
    /// Invocations served by a pre-warmed instance (ready or still starting).
    pub prewarm_hits: u64,
    /// Of those, how many had to wait for it to finish starting.
    pub late_prewarm_hits: u64,
    /// Pre-warmed instances started.
    pub prewarms_started: u64,
    /// Pre-warms satisfied by extending an idle instance instead of starting one.
    pub prewarms_extended: u64,
    /// Pre-warms dropped for lack of memory.
    pub prewarms_failed: u64,
    /// Pre-warms due at once not started: a step of their function came during the
    /// planner's lag and started its own instance (`SimConfig::planner_lag`).
    #[serde(default)]
    pub prewarms_overtaken: u64,
    /// Pre-warmed instances used at least once before release.
    pub prewarms_used: u64,
    /// The pre-warmed instances started and used, by what asked for them.
    pub prewarm_sources: PrewarmSources,
    /// Idle instances evicted to make room.
    pub evictions: u64,
    /// Cold starts admitted beyond node memory (nothing idle left to evict).
    pub overcommits: u64,
    /// Why the cold starts were cold: the first call of a function in the replay, every
    /// instance of it busy (concurrency), or its last instance gone by eviction or by the
    /// end of its keep-alive (or a policy's release). They add up to `cold_starts`.
    pub cold_causes: ColdCauses,
    /// Memory held by instances not running, MiB·µs.
    pub idle_mib_us: f64,
    /// Of that, what served nothing after it: each instance's idle time from its last use
    /// (or, never used, from its start) to its release, MiB·µs.
    pub wasted_mib_us: f64,
    /// Of the idle memory, what templates held (one per function, the whole replay, or
    /// what a policy that manages them held), MiB·µs.
    pub template_mib_us: f64,
    /// Of the cold starts, those forked from a template.
    pub forked_starts: u64,
    /// Starts (cold starts and pre-warms) that took their template's spare.
    pub spare_starts: u64,
    /// Templates started (by a policy's prepare, or by a cold start that found none held;
    /// 0 when every function holds one throughout).
    pub templates_started: u64,
    /// Invocations per function (by task index).
    pub function_invocations: Vec<u64>,
    /// Cold starts per function (by task index).
    pub function_cold_starts: Vec<u64>,
    /// Added latency per request (critical path), µs, in request order.
    pub request_latency_us: Vec<u64>,
    /// Cold starts on each request's critical path, in request order.
    pub request_critical_cold: Vec<u32>,
    /// Events handed to the policy.
    pub policy_events: u64,
    /// Time spent inside the policy, ns: wall clock of one call in 16, scaled (not
    /// deterministic).
    pub policy_ns: u64,
}

/// A request's added latency from its invocations' delays, and the cold starts on that
/// critical path. A caller waits for its calls: calls that overlap in time run in
/// parallel (the slowest counts), calls one after the other add up; each invocation's own
/// delay comes first.
pub fn added_latency(request: &Request, delay_us: &[u64], cold: &[bool]) -> (u64, u32) {
    // Post-order without recursion: a logged call chain may be arbitrarily deep.
    let invocations = request.invocations();
    let mut below = vec![(0u64, 0u32); invocations.len()];
    let mut stack: Vec<(u32, bool)> = request.roots().iter().map(|&r| (r, false)).collect();
    while let Some((index, children_done)) = stack.pop() {
        if !children_done {
            stack.push((index, true));
            stack.extend(request.children(index).iter().map(|&c| (c, false)));
            continue;
        }
        let mut total = (delay_us[index as usize], u32::from(cold[index as usize]));
        let mut group_end = 0u64;
        let mut group_best = (0u64, 0u32);
        for &child in request.children(index) {
            let c = &invocations[child as usize];
            let end = c.start_us.saturating_add(c.usage.wall_us);
            let branch = below[child as usize];
            if c.start_us >= group_end {
                total = (total.0 + group_best.0, total.1 + group_best.1);
                group_best = branch;
                group_end = end;
            } else {
                if branch.0 > group_best.0 {
                    group_best = branch;
                }
                group_end = group_end.max(end);
            }
        }
        below[index as usize] = (total.0 + group_best.0, total.1 + group_best.1);
    }
    request
        .roots()
        .iter()
        .map(|&root| below[root as usize])
        .max()
        .unwrap_or((0, 0))
}
