//! baton's policy, [`ChainPolicy`]: on a task's start it asks the [`Assembler`] for the
//! most probable fitting chain, reserves each step speculatively for its window, and asks
//! for each step to be pre-warmed just before its expected start; when a request's route
//! becomes known, it plans the route's task set. At a task's end it keeps the instance as
//! the task's idle-time model says ([`super::idle`]), and re-warms it for the next start the
//! model or the task's arrival rhythm ([`crate::arrival`]) expects. When memory runs short
//! it weighs idle instances, and pre-warms asking for room, by the cold-start time they
//! save per MiB and µs held until their expected use. Where the host has templates it manages them as a cheaper
//! warmth tier: a task's template outlives its worker by ten keep-alives, then goes
//! ([`Policy::manages_templates`]).

mod rhythms;

use super::starts::{StartGap, StartGaps, START_LEVELS};
use super::{idle, Action, IdleInstance, Policy, PolicyEvent, ROUTE_PLAN_IDS};
use crate::arrival::{Episodes, EPISODE_GAP_US, MIN_CONFIRMATIONS};
use crate::assembler::{Assembler, ChainPlan, PlannedStep};
use crate::exec::ColdStarts;
use crate::ids::TaskId;
use crate::predict::PredictContext;
use crate::reservation::{Reservation, ResourcePool};
use crate::tdg::SnapshotCell;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A plan being carried out: its steps' reservations, consumed as the steps start.
#[derive(Debug)]
struct LivePlan {
    plan: ChainPlan,
    reservations: Vec<Option<Reservation>>,
    /// Steps whose task has started since.
    consumed: Vec<bool>,
}

/// Settings of the chain policy. Defaults: keep a finished instance 60 s, or 10 min for a
/// task that starts requests (nothing predicts those: only their own arrival pattern);
/// when a request's route becomes known, pre-warm the route's tasks of probability ≥ 0.5.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChainPolicyConfig {
    /// How long a finished instance is kept warm, µs.
    pub keep_alive_us: u64,
    /// How long a finished instance of an entry task (one seen starting a request: no
    /// caller) is kept warm, µs.
    pub entry_keep_alive_us: u64,
    /// Entry-set threshold: when a request's route becomes known, every task of the route's
    /// set with at least this probability is planned (`None`: paths only).
    pub set_threshold: Option<f64>,
}

impl Default for ChainPolicyConfig {
    fn default() -> Self {
        ChainPolicyConfig {
            keep_alive_us: 60_000_000,
            entry_keep_alive_us: 600_000_000,
            set_threshold: Some(0.5),
        }
    }
}

/// baton's policy. See the module docs.
#[derive(Debug)]
pub struct ChainPolicy {
    graph: Arc<SnapshotCell>,
    pool: ResourcePool,
    assembler: Assembler,
    config: ChainPolicyConfig,
    live: BTreeMap<u64, LivePlan>,
    next_set_plan: u64,
    entry_tasks: std::collections::BTreeSet<TaskId>,
    idle: idle::IdleModel,
    /// Each task's re-warm window asked for at its last end (absolute µs), until it starts.
    /// With how many instances.
    rewarms: BTreeMap<TaskId, (u64, u64, u32)>,
    /// Each task's episodes: what the graph had learned when the task was first met, then
    /// every start seen live (`None`: not met yet).
    episodes: Vec<Option<Episodes>>,
    /// The graph version whose tasks were last looked at for rhythms.
    rhythms_seen: Option<u64>,
    /// How many instances of each task run at once, per episode.
    concurrency: Vec<Concurrency>,
    /// Each task's starts by how many instances they needed at once.
    start_gaps: StartGaps,
}

/// An instance that ends while others of its task still run is kept this many times the
/// mean time between starts that needed as many instances (the chance that the next such
/// start comes within it, were they random: 1 − e^−1.5, 78 %).
pub const SURPLUS_KEEP_FACTOR: f64 = 1.5;

/// An instance first in line is expected to be used at its task's mean time between
/// starts, or at a quarter of the time it has been idle when that is longer: a task that
/// has been silent for four of its gaps has probably stopped.
pub const SILENCE_FACTOR: f64 = 4.0;

/// A pre-warm asking for room counts as held at least this long, µs (its claim may be
/// about to end; the instance still takes a start and a grace).
pub const BET_MIN_HOLD_US: u64 = 1_000;

/// Most instances a rhythm's re-warm asks for at once.
pub const MAX_REWARM_INSTANCES: u32 = 16;

/// Where the host has templates, a finished task's template is held this many times the
/// task's keep-alive, and at least [`TEMPLATE_KEEP_MIN_US`]: a template holds a fraction
/// of a worker's memory (11 MiB against 100-1000 here) for most of the start it saves, so
/// it stays worth its room that much longer. Past that the function's next start is from
/// nothing (the Azure sample with templates at 16 GiB, knob 0.1: templates hold 76.5k
/// GB·s instead of 110.5k when every function keeps one, at the same cold-start ratio).
pub const TEMPLATE_KEEP_FACTOR: u64 = 10;

/// The least a finished task's template is held, µs (10 min). Shorter holds at low knobs
/// saved little and cost much: TrainTicket 15:00-16:00 with templates at knob 0.01, held
/// 10 keep-alives only (and none made at deploy), 578 GB·s of templates instead of 1,073
/// for a p50 added latency of 42 ms instead of 23.
pub const TEMPLATE_KEEP_MIN_US: u64 = 600_000_000;

/// The most instances of a task that ran at once in its current and its previous episode
/// (how many run now is the idle model's count): a burst that needed five instances last
/// time gets five re-warmed.
#[derive(Debug, Clone, Copy, Default)]
struct Concurrency {
    peak: u32,
    last_peak: u32,
}

impl ChainPolicy {
    /// A chain policy on the published graph and `pool`.
    pub fn new(
        graph: Arc<SnapshotCell>,
        pool: ResourcePool,
        assembler: Assembler,
        config: ChainPolicyConfig,
    ) -> ChainPolicy {
        ChainPolicy {
            graph,
            pool,
            assembler,
            config,
            live: BTreeMap::new(),
            // Set plans get ids from the top of the range, apart from the assembler's.
            next_set_plan: ROUTE_PLAN_IDS,
            entry_tasks: std::collections::BTreeSet::new(),
            idle: idle::IdleModel::default(),
            rewarms: BTreeMap::new(),
            episodes: Vec::new(),
            rhythms_seen: None,
            concurrency: Vec::new(),
            start_gaps: StartGaps::default(),
        }
    }

    /// How long an instance of `task` that ends while others still run is worth keeping,
    /// µs: it will be used when a start again needs that many instances at once, so it is
    /// kept [`SURPLUS_KEEP_FACTOR`] times the mean time between such starts, up to the
    /// entry keep-alive (0 when none runs, or no such start was seen twice). The idle-time
    /// model speaks for one instance; this is the rest of a burst's (TrainTicket
    /// 15:00-24:00 with room for everything, knob 3: 105 of 123 cold starts found every
    /// instance busy when a burst's surplus had the fixed keep-alive; 93 of 108 with this).
    fn surplus_keep_us(&self, task: TaskId) -> u64 {
        let running = self.idle.running(task) as usize;
        if running == 0 {
            return 0;
        }
        match self
            .start_gaps
            .at(task, running.min(START_LEVELS - 1))
            .mean_us
        {
            Some(gap) => ((gap * SURPLUS_KEEP_FACTOR) as u64).min(self.config.entry_keep_alive_us),
            None => 0,
        }
    }

    /// When kept `instance` is expected to be used next, µs from `now_us` (see
    /// [`Policy::evict_priority`]).
    fn until_next_use_us(&self, instance: &IdleInstance, now_us: u64) -> f64 {
        let idle_us = now_us.saturating_sub(instance.idle_since_us) as f64;
        let level =
            (self.idle.running(instance.task) as usize).saturating_add(instance.ahead as usize);
        let gap = |level: usize| self.start_gaps.at(instance.task, level);
        if let (0, Some(mean)) = (level, gap(0).mean_us) {
            return mean.max(idle_us / SILENCE_FACTOR);
        }
        match gap(level) {
            StartGap {
                mean_us: Some(mean),
                ..
            } => mean.max(idle_us),
            // A level seen once or never: no sooner than every start's mean gap that many
            // times, nor than its last such start is ago.
            StartGap { last_us, .. } => {
                let since_last = last_us.map_or(0.0, |last| now_us.saturating_sub(last) as f64);
                let spread = gap(0).mean_us.unwrap_or(0.0) * (level as f64 + 1.0);
                idle_us.max(since_last).max(spread)
            }
        }
    }

    fn concurrency(&mut self, task: TaskId) -> &mut Concurrency {
        if self.concurrency.len() <= task.index() {
            self.concurrency
                .resize(task.index() + 1, Concurrency::default());
        }
        &mut self.concurrency[task.index()]
    }

    /// How long a finished instance of `task` is kept when its idle-time model has no
    /// better choice, µs.
    fn keep_alive_us(&self, task: TaskId) -> u64 {
        if self.entry_tasks.contains(&task) {
            self.config.entry_keep_alive_us
        } else {
            self.config.keep_alive_us
        }
    }

    /// Plans whose reservations are still held.
    pub fn n_live_plans(&self) -> usize {
        self.live.len()
    }

    /// Plans the route's task set when the route has just become known.
    fn plan_set(
        &mut self,
        task: TaskId,
        context: &PredictContext,
        entry_start_us: u64,
        threshold: f64,
        host: &dyn ColdStarts,
        out: &mut Vec<Action>,
    ) {
        let snapshot = self.graph.load();
        let set = self.assembler.assemble_set(
            context.route,
            threshold,
            &snapshot,
            &self.pool,
            entry_start_us,
            host,
        );
        let steps: Vec<PlannedStep> = set
            .steps
            .into_iter()
            .filter(|s| s.task != task && !self.covered(s))
            .collect();
        if steps.is_empty() {
            return;
        }
        let id = self.next_set_plan;
        self.next_set_plan += 1;
        let requests: Vec<_> = steps
            .iter()
            .map(|s| s.reservation_request(s.reach_probability, id))
            .collect();
        let Ok(reservations) = self.pool.try_reserve_all(&requests) else {
            return;
        };
        for (step, reservation) in steps.iter().zip(&reservations) {
            out.push(Action::PreWarm {
                task: step.task,
                at_us: step.ready_at_us,
                until_us: step.window.end_us,
                plan: Some(id),
                reservation: Some(reservation.id()),
                probability: step.reach_probability,
            });
        }
        let plan = ChainPlan {
            id,
            chain: crate::predict::Chain {
                tasks: vec![task],
                probability: 1.0,
                ended: false,
                contexts: Vec::new(),
                step_probabilities: Vec::new(),
            },
            probability: 1.0,
            truncated: false,
            rank: 0,
            steps,
            graph_version: snapshot.version(),
        };
        self.live.insert(
            id,
            LivePlan {
                consumed: vec![false; plan.steps.len()],
                reservations: reservations.into_iter().map(Some).collect(),
                plan,
            },
        );
    }

    /// Whether a live plan already has an unused step of the same task whose window
    /// covers `step`'s expected start (a new plan would pre-warm it twice).
    fn covered(&self, step: &PlannedStep) -> bool {
        let rewarmed = self
            .rewarms
            .get(&step.task)
            .is_some_and(|&(ready, until, _)| {
                ready <= step.expected_start_us && step.expected_start_us < until
            });
        rewarmed
            || self.live.values().any(|live| {
                live.plan
                    .steps
                    .iter()
                    .zip(&live.consumed)
                    .any(|(other, &consumed)| {
                        !consumed
                            && other.task == step.task
                            && other.window.start_us <= step.expected_start_us
                            && step.expected_start_us < other.window.end_us
                    })
            })
    }

    /// A step of `task` arrived at `at_us` and runs after a cold start of `wait_us`.
    fn on_start(
        &mut self,
        task: TaskId,
        (at_us, wait_us): (u64, u64),
        context: &PredictContext,
        reveals_route: Option<u64>,
        host: &dyn ColdStarts,
        out: &mut Vec<Action>,
    ) {
        if context.grand_caller.is_none() {
            self.entry_tasks.insert(task);
        }
        self.idle.on_start(task, at_us);
        self.start_gaps.note(task, at_us, self.idle.running(task));
        let episodes = self.episodes(task);
        let before = episodes.last_start_us();
        episodes.observe(at_us);
        let new_episode = before.is_none_or(|last| at_us >= last.saturating_add(EPISODE_GAP_US));
        let running = self.idle.running(task);
        let c = self.concurrency(task);
        if new_episode {
            c.last_peak = c.peak;
            c.peak = running;
        } else {
            c.peak = c.peak.max(running);
        }
        if let Some((ready, _, _)) = self.rewarms.remove(&task) {
            if at_us < ready {
                // Started before its re-warm: the re-warm is not needed now.
                out.push(Action::Release { task, plan: None });
            }
        }
        // A step of a live plan starting: its reservation now backs running work. Of the
        // live plans' unconsumed steps of this task, the one expected nearest to now is the
        // one starting, not the oldest plan's (whose request may have taken another branch):
        // left unconsumed, the right one would cover, and so suppress, the next request's.
        let nearest = self
            .live
            .iter()
            .flat_map(|(&id, live)| {
                live.plan
                    .steps
                    .iter()
                    .enumerate()
                    .filter(move |&(i, step)| step.task == task && !live.consumed[i])
                    .map(move |(i, step)| (step.expected_start_us.abs_diff(at_us), id, i))
            })
            .min();
        if let Some((_, id, index)) = nearest {
            if let Some(live) = self.live.get_mut(&id) {
                live.consumed[index] = true;
                if let Some(reservation) = live.reservations[index].as_mut() {
                    reservation.commit();
                }
            }
        }
        if let (Some(entry_start_us), Some(threshold)) = (reveals_route, self.config.set_threshold)
        {
            self.plan_set(task, context, entry_start_us, threshold, host, out);
        }
        let snapshot = self.graph.load();
        // The learned delays are from a step's run (waits removed): a cold step's calls come
        // after its cold start. A plan timed late leaves its steps cold, one timed early
        // only holds their pre-warms a little longer (at least `PREWARM_GRACE_US` past
        // ready), so the wait is counted less half that grace: an estimate too long by up
        // to half of it costs nothing, and a wait shorter than it plans from the arrival.
        let runs_at_us =
            at_us.saturating_add(wait_us.saturating_sub(crate::exec::PREWARM_GRACE_US / 2));
        let Some(mut plan) = self
            .assembler
            .assemble(task, context, &snapshot, &self.pool, runs_at_us)
        else {
            return;
        };
        let steps = std::mem::take(&mut plan.steps);
        plan.steps = steps.into_iter().filter(|s| !self.covered(s)).collect();
        if plan.steps.is_empty() {
            return;
        }
        let Ok(reservations) = self.pool.try_reserve_all(&plan.reservation_requests()) else {
            // Someone took the room between the fit check and now: skip this plan.
            return;
        };
        for (step, reservation) in plan.steps.iter().zip(&reservations) {
            out.push(Action::PreWarm {
                task: step.task,
                at_us: step.ready_at_us,
                until_us: step.window.end_us,
                plan: Some(plan.id),
                reservation: Some(reservation.id()),
                probability: step.reach_probability,
            });
        }
        self.live.insert(
            plan.id,
            LivePlan {
                consumed: vec![false; plan.steps.len()],
                reservations: reservations.into_iter().map(Some).collect(),
                plan,
            },
        );
    }

    fn on_tick(&mut self, at_us: u64, out: &mut Vec<Action>) {
        let ended: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, live)| live.plan.steps.iter().all(|s| s.window.end_us <= at_us))
            .map(|(&id, _)| id)
            .collect();
        for id in ended {
            if let Some(live) = self.live.remove(&id) {
                for (step, reservation) in live.plan.steps.iter().zip(live.reservations) {
                    if reservation.is_some_and(|r| !r.is_preempted()) {
                        out.push(Action::Release {
                            task: step.task,
                            plan: Some(id),
                        });
                    }
                }
            }
        }
    }
}

impl Policy for ChainPolicy {
    fn name(&self) -> &str {
        "chain"
    }

    /// The cold-start time an idle instance is expected to save per MiB and per µs it is
    /// held until its next use (Belady's rule, with the next use estimated): its task's
    /// cold start over its memory and over the time until it is expected to be used. An
    /// instance an arrival takes first ([`IdleInstance::ahead`] 0, none of its task
    /// running) is used at the task's next start: the mean time between its starts,
    /// though once the task has been silent four times that long, a quarter of its
    /// silence (a task that stopped being called loses its place). One further in line,
    /// or behind running instances, is used only when that many run at once: the mean
    /// time between starts that needed as many instances, or how long it has been idle if
    /// longer (a burst's surplus ages out). Unknown gaps: how long it has been idle. Under
    /// pressure a big instance goes before a small one, a cheap start before a dear one, a
    /// rarely called task before a busy one, however recently used (least recently used
    /// kept the rare task just called and evicted the busy one: TrainTicket 15:00-16:00 at
    /// 4 GiB, knob 1, 0.6229 of calls cold with the recency rule, 0.5257 with this; at
    /// 16 GiB 0.0142 against 0.0115; the Azure sample at 16 GiB, knob 1, 0.0150 against
    /// 0.0112).
    ///
    /// A bet (a pre-warm asking for room, [`Policy::bet_priority`], or a pre-warmed instance
    /// not used yet) is weighed the same way, its probability of use as a weight and the
    /// time until its claim ends as the time to its use: a pre-warm displaces an idle
    /// instance only when it expects to save more cold-start time per MiB and µs held.
    fn bet_priority(&self, bet: &IdleInstance, now_us: u64) -> f64 {
        self.evict_priority(bet, now_us)
    }

    fn evict_priority(&self, instance: &IdleInstance, now_us: u64) -> f64 {
        let (weight, until_use_us) = match instance.bet {
            Some((probability, until_us)) => (
                probability,
                until_us.saturating_sub(now_us).max(BET_MIN_HOLD_US) as f64,
            ),
            None => (1.0, self.until_next_use_us(instance, now_us)),
        };
        instance.cold_start_us.max(1) as f64 * weight
            / (instance.memory_mib.max(1) as f64 * until_use_us.max(1.0))
    }

    /// The warmth tiers: a finished task's worker is kept as its idle model says, its
    /// template [`TEMPLATE_KEEP_FACTOR`] times its keep-alive (at least
    /// [`TEMPLATE_KEEP_MIN_US`]); a function not used for that long holds neither.
    fn manages_templates(&self) -> bool {
        true
    }

    fn on_event(&mut self, event: &PolicyEvent, host: &dyn ColdStarts, out: &mut Vec<Action>) {
        match *event {
            PolicyEvent::Start {
                task,
                at_us,
                ref context,
                reveals_route,
                wait_us,
                ..
            } => self.on_start(task, (at_us, wait_us), context, reveals_route, host, out),
            PolicyEvent::End { task, at_us, .. } => {
                let keep = self.keep_alive_us(task);
                let lead = || crate::exec::lead_us(host.cold_start_us(task));
                let mut warmth = self.idle.after_end(task, at_us, keep, lead);
                warmth.keep_us = warmth.keep_us.max(self.surplus_keep_us(task));
                // The idle model's re-warm, chosen against keep-alive on many gaps, else
                // the rhythm's window: a timer seen a few times, or a pattern.
                let window = match warmth.rewarm {
                    Some(r) => Some((
                        at_us.saturating_add(r.ready_us),
                        at_us.saturating_add(r.until_us),
                        r.probability,
                    )),
                    None => self.episodes(task).rhythm().and_then(|rhythm| {
                        let (from, until) = rhythm.window();
                        // A sure rhythm whose next start comes after the keep-alive: the
                        // kept instance would not serve it, a re-warm will. It stays only
                        // while this episode may go on.
                        let kept_until = at_us.saturating_add(warmth.keep_us);
                        if rhythm.confirmations > MIN_CONFIRMATIONS && from > kept_until {
                            warmth.keep_us = warmth.keep_us.min(EPISODE_GAP_US);
                        }
                        (until > at_us.saturating_add(warmth.keep_us)).then_some((
                            from,
                            until,
                            rhythm.probability(),
                        ))
                    }),
                };
                if warmth.keep_us > 0 {
                    out.push(Action::KeepAlive {
                        task,
                        until_us: at_us.saturating_add(warmth.keep_us),
                    });
                }
                if host.has_template(task) {
                    out.push(Action::HoldTemplate {
                        task,
                        until_us: at_us.saturating_add(
                            self.keep_alive_us(task)
                                .saturating_mul(TEMPLATE_KEEP_FACTOR)
                                .max(TEMPLATE_KEEP_MIN_US),
                        ),
                    });
                }
                if let Some(window) = window {
                    self.rewarm(task, at_us, window, out);
                }
                self.on_tick(at_us, out);
            }
            PolicyEvent::Tick { at_us } => {
                self.rhythms_of_unmet(at_us, out);
                self.on_tick(at_us, out);
            }
            PolicyEvent::Evicted { .. } => {}
        }
    }
}
