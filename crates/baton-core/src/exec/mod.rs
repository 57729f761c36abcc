//! The plan executor: the one place where a policy's [`Action`]s become timed decisions,
//! and the rules that pick which instance serves an arrival or a pre-warm. The simulator's
//! engine and the runtime's planner both drive an [`Executor`] and both apply these rules,
//! so what `baton sim` measures is what `baton serve` does.
//!
//! Pure: time comes in with the events (µs on the caller's [`crate::clock::Clock`]), cold
//! starts from a [`ColdStarts`] the host supplies (the simulator's cost table, the
//! runtime's measurements).
//!
//! The decisions:
//! - [`Decision::Prewarm`]: start an instance at `start_at_us` = `ready_at_us −`
//!   [`lead_us`] (never in the past) and keep it until `until_us` if unused. When it is
//!   due, an idle instance of the task that is ready in time and whose claims leave room
//!   for it is claimed instead ([`choose_for_prewarm`]). A claim weighs its pre-warm's
//!   probability of use over the interval the pre-warm expects its step to hold the
//!   instance (`ready_at_us` to `claim_until_us`: the end of its window plus the task's
//!   run time as the executor has seen it, [`RunTimes`]; see [`Claims`]), and an instance
//!   takes claims while
//!   those that overlap add up to at most one expected use: two sure pre-warms of one task
//!   for the same instant get two instances, two even bets share one, and pre-warms whose
//!   steps come one after another share one (a pre-warm starts only the shortfall over the
//!   instances there are at its step's time).
//! - [`Decision::KeepAlive`]: keep the instance of `task` that just finished until
//!   `until_us` (with none, it is released at once); [`Decision::PinKeepAlive`]: the same,
//!   and the deadline stays the instance's through its later runs (an instance with a
//!   pinned deadline is kept until it whatever a later keep-alive says).
//! - [`Decision::HoldTemplate`]: hold the task's template (the cheap warmth tier) until
//!   `until_us`, starting one if none is held; a host with templates does so when the
//!   policy manages them ([`Executor::manages_templates`]), else holds every template
//!   while its function is deployed.
//! - [`Decision::Release`]: release the idle, never-used instances pre-warmed for `plan`
//!   whose keep time (at least [`PREWARM_GRACE_US`] past ready) is over, and drop its
//!   pre-warms not started yet.

pub mod claims;
pub mod room;

use crate::costs::Costs;
use crate::ids::TaskId;
use crate::policy::{Action, IdleInstance, Policy, PolicyEvent};
use serde::{Deserialize, Serialize};

pub use claims::{
    claim_weight, Claim, Claims, RunTimes, FULL_CLAIMS, MAX_CLAIMS, MAX_TIMED_RUNS, MIN_CLAIM,
};

/// What a pre-warm started an instance for: the plan that asked for it, if one did. An
/// instance that carries one (`Option<Prewarm>`) was pre-warmed; one without was started by
/// a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Prewarm {
    /// The plan that asked for it (`None`: a pre-warm no plan named).
    pub plan: Option<u64>,
}

/// A pre-warmed instance is kept at least this long after it is ready, µs: a step a little
/// later than its window (real timings jitter) still finds it.
pub const PREWARM_GRACE_US: u64 = 500_000;

/// How many equally likely values describe a planner's lag behind the requests: the
/// server reports its lags at [`lag_quantile_points`], the simulator draws from them.
pub const LAG_QUANTILES: usize = 20;

/// The quantiles a planner's lags are reported at: the midpoints of [`LAG_QUANTILES`]
/// equal slices (0.025, 0.075, …, 0.975).
pub fn lag_quantile_points() -> [f64; LAG_QUANTILES] {
    std::array::from_fn(|i| (i as f64 + 0.5) / LAG_QUANTILES as f64)
}

/// Margin added to a cold start when choosing when to start a pre-warm, µs.
pub const LEAD_MARGIN_US: u64 = 2_000;

/// How long before its ready time a pre-warm of a task that takes `cold_us` to start is
/// started: the cold start plus a quarter (measured cold starts vary) plus
/// [`LEAD_MARGIN_US`].
pub fn lead_us(cold_us: u64) -> u64 {
    cold_us
        .saturating_add(cold_us / 4)
        .saturating_add(LEAD_MARGIN_US)
}

/// When to start a pre-warm that must be ready at `ready_at_us`: [`lead_us`] earlier,
/// never before `now_us`.
pub fn prewarm_start_us(ready_at_us: u64, cold_us: u64, now_us: u64) -> u64 {
    ready_at_us.saturating_sub(lead_us(cold_us)).max(now_us)
}

/// How a task's last instance went, as a host remembers it per task to tell why the
/// task's next start is cold (see [`cold_cause`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gone {
    /// Evicted to make room for another.
    Evicted,
    /// Its keep-alive ended, or it was released, or it stopped.
    Ended,
}

/// Why an arrival found no instance to take and started one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColdCause {
    /// The task's first instance (on this host, since it was deployed or the replay
    /// began).
    First,
    /// Instances of the task were alive but all busy (or starting for other calls).
    Concurrent,
    /// Its last instance had been evicted.
    Evicted,
    /// Its last instance had ended (keep-alive over, or released).
    Expired,
}

/// Why a start is cold, from the instances of its task busy at that moment and how its
/// last instance went (`None`: it never had one). The simulator's engine and the
/// runtime's pool both classify their cold starts with it.
pub fn cold_cause(busy: usize, last_gone: Option<Gone>) -> ColdCause {
    match (busy, last_gone) {
        (busy, _) if busy > 0 => ColdCause::Concurrent,
        (_, None) => ColdCause::First,
        (_, Some(Gone::Evicted)) => ColdCause::Evicted,
        (_, Some(Gone::Ended)) => ColdCause::Expired,
    }
}

/// Cold starts counted by [`ColdCause`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColdCauses {
    /// [`ColdCause::First`].
    pub first: u64,
    /// [`ColdCause::Concurrent`].
    pub concurrent: u64,
    /// [`ColdCause::Evicted`].
    pub evicted: u64,
    /// [`ColdCause::Expired`].
    pub expired: u64,
}

impl ColdCauses {
    /// Counts one.
    pub fn add(&mut self, cause: ColdCause) {
        match cause {
            ColdCause::First => self.first += 1,
            ColdCause::Concurrent => self.concurrent += 1,
            ColdCause::Evicted => self.evicted += 1,
            ColdCause::Expired => self.expired += 1,
        }
    }

    /// Their sum.
    pub fn total(&self) -> u64 {
        self.first + self.concurrent + self.evicted + self.expired
    }
}

/// What the host is to do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Decision {
    /// Start an instance of `task` at `start_at_us` (or claim an idle one then).
    Prewarm {
        /// The task.
        task: TaskId,
        /// When to start it, µs.
        start_at_us: u64,
        /// When the policy wants it ready, µs.
        ready_at_us: u64,
        /// Kept until, if unused, µs.
        until_us: u64,
        /// Its claim on the instance lasts until, µs: `until_us` plus the task's run time
        /// (its step, coming as late as its window allows, holds the instance until then).
        claim_until_us: u64,
        /// The plan it belongs to.
        plan: Option<u64>,
        /// The reservation that holds its resources (cores, GPU units), by id.
        reservation: Option<u64>,
        /// Probability it will be used.
        probability: f64,
    },
    /// Keep the instance of `task` that just finished until `until_us` (an instance with a
    /// pinned deadline is kept until that instead).
    KeepAlive {
        /// The task.
        task: TaskId,
        /// Until, µs.
        until_us: u64,
    },
    /// Pin the deadline of the instance of `task` that just finished to `until_us`, unless
    /// it has one, and keep it until its deadline (see [`Action::PinKeepAlive`]).
    PinKeepAlive {
        /// The task.
        task: TaskId,
        /// Until, µs.
        until_us: u64,
    },
    /// Hold `task`'s template until `until_us` (see [`Action::HoldTemplate`]).
    HoldTemplate {
        /// The task.
        task: TaskId,
        /// Until, µs.
        until_us: u64,
    },
    /// Release the unused pre-warms of `plan` for `task`.
    Release {
        /// The task.
        task: TaskId,
        /// The plan (`None`: pre-warms made without one).
        plan: Option<u64>,
    },
}

/// How long a task takes to start from nothing, as the host knows it.
pub trait ColdStarts {
    /// The cold start of `task`, µs.
    fn cold_start_us(&self, task: TaskId) -> u64;
    /// Whether the host starts `task` from a template (without one,
    /// [`Action::HoldTemplate`] means nothing there).
    fn has_template(&self, task: TaskId) -> bool {
        let _ = task;
        false
    }
}

impl ColdStarts for Costs {
    fn cold_start_us(&self, task: TaskId) -> u64 {
        Costs::cold_start_us(self, task)
    }
    fn has_template(&self, _task: TaskId) -> bool {
        self.templates.is_some()
    }
}

/// The policy and the translation of its actions. See the module docs.
pub struct Executor {
    policy: Box<dyn Policy>,
    actions: Vec<Action>,
    trail: Option<Vec<(u64, Decision)>>,
    runs: RunTimes,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("policy", &self.policy.name())
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor of `policy`.
    pub fn new(policy: Box<dyn Policy>) -> Executor {
        Executor {
            policy,
            actions: Vec::new(),
            trail: None,
            runs: RunTimes::default(),
        }
    }

    /// The policy's name.
    pub fn policy_name(&self) -> &str {
        self.policy.name()
    }

    /// Keeps every decision from now on, with the time it was made (for conformance
    /// tests and reports); see [`Executor::take_trail`].
    pub fn keep_trail(&mut self) {
        self.trail.get_or_insert_with(Vec::new);
    }

    /// The decisions kept since [`Executor::keep_trail`] (or the last take).
    pub fn take_trail(&mut self) -> Vec<(u64, Decision)> {
        self.trail.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Tells the policy `event` and appends what it asks for to `out`, timed with `cold`.
    pub fn handle(&mut self, event: &PolicyEvent, cold: &dyn ColdStarts, out: &mut Vec<Decision>) {
        let now = event_time(event);
        self.runs.observe(event);
        self.policy.on_event(event, cold, &mut self.actions);
        let first = out.len();
        for action in self.actions.drain(..) {
            out.push(match action {
                Action::PreWarm {
                    task,
                    at_us,
                    until_us,
                    plan,
                    reservation,
                    probability,
                } => Decision::Prewarm {
                    task,
                    start_at_us: prewarm_start_us(at_us, cold.cold_start_us(task), now),
                    ready_at_us: at_us,
                    until_us: until_us.max(at_us),
                    claim_until_us: until_us.max(at_us).saturating_add(self.runs.run_us(task)),
                    plan,
                    reservation,
                    probability,
                },
                Action::KeepAlive { task, until_us } => Decision::KeepAlive { task, until_us },
                Action::PinKeepAlive { task, until_us } => {
                    Decision::PinKeepAlive { task, until_us }
                }
                Action::HoldTemplate { task, until_us } => {
                    Decision::HoldTemplate { task, until_us }
                }
                Action::Release { task, plan } => Decision::Release { task, plan },
            });
        }
        if let Some(trail) = self.trail.as_mut() {
            trail.extend(out[first..].iter().map(|&d| (now, d)));
        }
    }

    /// The policy's eviction priority at `now_us` of `instance` (lowest goes first); the
    /// host fills in what it holds and its task's cold start, as it knows them.
    pub fn evict_priority(&self, instance: &IdleInstance, now_us: u64) -> f64 {
        self.policy.evict_priority(instance, now_us)
    }

    /// The policy's priority of a pre-warm asking for room ([`Policy::bet_priority`]).
    pub fn bet_priority(&self, bet: &IdleInstance, now_us: u64) -> f64 {
        self.policy.bet_priority(bet, now_us)
    }

    /// Whether templates are held as the policy's [`Decision::HoldTemplate`]s say
    /// ([`Policy::manages_templates`]).
    pub fn manages_templates(&self) -> bool {
        self.policy.manages_templates()
    }
}

/// Fills in each kept instance's [`IdleInstance::ahead`]: how many idle instances of its
/// task an arrival would take first under `reuse` (the most recently idle first, or the
/// longest idle). Bets (pre-warms not used yet) stand apart: an arrival they expect takes
/// them, so they are 0 and count for no other.
pub fn line_up(instances: &mut [IdleInstance], reuse: Reuse) {
    let mut order: Vec<usize> = (0..instances.len())
        .filter(|&i| instances[i].bet.is_none())
        .collect();
    order.sort_by_key(|&i| {
        let since = instances[i].idle_since_us;
        let rank = match reuse {
            Reuse::Recent => u64::MAX - since,
            Reuse::Oldest => since,
        };
        (instances[i].task, rank)
    });
    let mut previous: Option<(TaskId, u32)> = None;
    for i in order {
        let task = instances[i].task;
        let ahead = match previous {
            Some((t, n)) if t == task => n + 1,
            _ => 0,
        };
        instances[i].ahead = ahead;
        previous = Some((task, ahead));
    }
    for instance in instances.iter_mut().filter(|i| i.bet.is_some()) {
        instance.ahead = 0;
    }
}

/// When `event` happened, µs.
pub fn event_time(event: &PolicyEvent) -> u64 {
    match *event {
        PolicyEvent::Start { at_us, .. }
        | PolicyEvent::End { at_us, .. }
        | PolicyEvent::Tick { at_us }
        | PolicyEvent::Evicted { at_us, .. } => at_us,
    }
}

/// An instance not running (idle, or still starting), as the rules see it; `T` is the
/// host's time (µs in the simulator, an `Instant` in the runtime).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<T> {
    /// The host's id of the instance (lower: older).
    pub id: u64,
    /// When it is (or was) ready.
    pub ready_at: T,
    /// Kept until.
    pub keep_until: T,
    /// When it last went idle.
    pub idle_since: T,
    /// The pre-warms counting on it over the interval in question (an arrival's instant,
    /// a pre-warm's interval): the sum of their [`claim_weight`]s ([`Claims::over`]; 0:
    /// none).
    pub claims: f64,
}

impl<T> Candidate<T> {
    fn claimed(&self) -> bool {
        self.claims > 0.0
    }
}

/// Which idle instance of a function an arrival takes, among those no pre-warm claims:
/// a node-wide setting (`baton serve --reuse`, `baton sim --reuse`), read by the simulator
/// and the process pool alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reuse {
    /// The one idle the shortest time. What a burst left behind ages out at the end of its
    /// keep-alive while traffic goes on, so the idle memory follows what the function needs
    /// now; with memory short it leaves room to other functions (TrainTicket 15:00-16:00 at
    /// 16 GiB, `ttl` knob 1: 0.0420 of calls cold with `Oldest`, 0.0161 with this rule at
    /// the same idle memory; `chain` knob 1 0.0323 -> 0.0175).
    #[default]
    Recent,
    /// The one idle the longest: each use renews another instance, so a burst's instances
    /// all stay warm as long as traffic comes (fewer cold starts when memory is plentiful,
    /// more idle memory; dslab-faas's own invoker sits between the two:
    /// docs/sim/validation.md).
    Oldest,
}

impl Reuse {
    /// Every rule, as named on the command line.
    pub const ALL: [Reuse; 2] = [Reuse::Recent, Reuse::Oldest];

    /// The rule's name (`recent`, `oldest`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reuse::Recent => "recent",
            Reuse::Oldest => "oldest",
        }
    }
}

impl std::fmt::Display for Reuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reuse rule that does not exist.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unknown reuse rule `{0}`; known: recent, oldest")]
pub struct UnknownReuse(pub String);

impl std::str::FromStr for Reuse {
    type Err = UnknownReuse;
    fn from_str(s: &str) -> Result<Reuse, UnknownReuse> {
        Reuse::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReuse(s.to_owned()))
    }
}

/// Which instance serves an arrival at `now`: a ready one, one a pre-warm claims first (the
/// arrival is most likely the step it was claimed for; left claimed, it would turn every
/// later pre-warm of the task into a new start), then the one idle the shortest (`Recent`)
/// or longest (`Oldest`) time (ties: the one due to expire first, then lowest id); else
/// one still starting, again one a pre-warm claims first, then the one ready first (the
/// arrival waits for it). `None`: start a cold one.
pub fn choose_for_arrival<T: Ord + Copy>(
    candidates: impl IntoIterator<Item = Candidate<T>>,
    now: T,
    reuse: Reuse,
) -> Option<u64> {
    // Most recent first: the later `idle_since` orders first.
    let idle_order = |t: T| match reuse {
        Reuse::Recent => (None, Some(std::cmp::Reverse(t))),
        Reuse::Oldest => (Some(t), None),
    };
    let mut ready: Option<Candidate<T>> = None;
    let mut starting: Option<Candidate<T>> = None;
    for c in candidates {
        if c.ready_at <= now {
            let better = ready.is_none_or(|r| {
                (!c.claimed(), idle_order(c.idle_since), c.keep_until, c.id)
                    < (!r.claimed(), idle_order(r.idle_since), r.keep_until, r.id)
            });
            if better {
                ready = Some(c);
            }
        } else if starting
            .is_none_or(|s| (!c.claimed(), c.ready_at, c.id) < (!s.claimed(), s.ready_at, s.id))
        {
            starting = Some(c);
        }
    }
    ready.or(starting).map(|c| c.id)
}

/// Which idle instance a pre-warm of `probability`, due now, claims instead of starting
/// one: one ready by the later of `ready_at` and `now` whose claims over the pre-warm's
/// interval ([`Claims::over`]), with this one's [`claim_weight`], stay within one expected
/// use; the least claimed, then the oldest (lowest id). `None`: start one.
pub fn choose_for_prewarm<T: Ord + Copy>(
    candidates: impl IntoIterator<Item = Candidate<T>>,
    ready_at: T,
    now: T,
    probability: f64,
) -> Option<u64> {
    let by = ready_at.max(now);
    let weight = claim_weight(probability);
    candidates
        .into_iter()
        .filter(|c| c.ready_at <= by && c.claims + weight <= 1.0 + 1e-9)
        .min_by(|a, b| a.claims.total_cmp(&b.claims).then(a.id.cmp(&b.id)))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests;
