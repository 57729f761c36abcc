//! The discrete-event engine: a node with finite memory, instances that start, run, idle
//! and expire, and a policy that is told what happens and answers with actions.
//!
//! The engine holds no policy logic and no rule of its own: the policy is driven through
//! the plan executor of `baton_core::exec`, as the runtime drives it, and the executor's
//! rules pick instances. It replays arrivals at their recorded start times (or, with
//! [`SimConfig::causal`], each call when its caller's run reaches it: `crate::schedule`).
//! An arrival takes the ready instance the executor's `choose_for_arrival` names; without
//! one, while an instance of its function is being pre-warmed it waits for the first that
//! is ready or ends (a late pre-warm, as a step waits in the pool), else starts a cold
//! one, evicting idle instances lowest [`Executor::evict_priority`] first when memory is
//! short (`arrivals`). A finished instance is released at once unless the policy keeps it
//! alive. A pre-warm starts at the executor's `start_at_us` (one lead before its ready
//! time) and claims an idle instance whose claims over its interval leave room for its
//! probability (`choose_for_prewarm`) or starts one, if memory allows or idle instances
//! the policy values below the pre-warm's bet ([`Executor::bet_priority`]) can make way;
//! never for a less likely need (`prewarms`). Unless causal, recorded timestamps are not
//! shifted by the delays the simulation adds: each request's added latency is computed on
//! its call tree instead (see [`added_latency`]). With [`SimConfig::start_slots`] a cold
//! start or pre-warm needs a free start slot (`crate::slots`); one that finds none waits
//! for one in the node's line, as the pool's waiting starts do. A pre-warm waiting there
//! holds no memory (the pool admits a worker when it starts it) and is weighed for room
//! again when its turn comes.

mod arrivals;
mod prewarms;

use baton_core::exec::room::{self, Evictable};
use baton_core::exec::ColdStarts;
use baton_core::exec::{line_up, Claims, Decision, Executor, Gone, Prewarm};
use baton_core::policy::IdleInstance;
use baton_core::request::Request;
use baton_core::{Costs, PolicyEvent, SnapshotCell, TaskId, Tdg};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

pub use crate::config::{PlannerLag, SimConfig, LAG_QUANTILES};
use crate::schedule::Schedule;
use crate::slots::Slots;
pub use crate::stats::{added_latency, PrewarmSources, RunStats};
use crate::templates::{Host, Templates};
use prewarms::QueuedPrewarm;

/// Ends sort after every other event of their instant (whose sequence numbers count up
/// from 0), latest arrival first.
const END_ORDER: u64 = u64::MAX / 2;

/// One policy call in this many is timed (see `Engine::tell`).
const POLICY_TIMING_SAMPLE: u64 = 16;

/// One invocation to replay, in start order; its index is its invocation id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// The function.
    pub task: TaskId,
    /// Recorded start, µs.
    pub start_us: u64,
    /// Recorded run time, µs.
    pub duration_us: u64,
    /// Its request (index into the request list).
    pub request: u32,
    /// Its index inside the request.
    pub index: u32,
}

/// Every reachable invocation of `requests`, sorted by start (ties: request, index).
pub fn arrivals(requests: &[Request]) -> Vec<Arrival> {
    let mut out = Vec::new();
    for (r, request) in requests.iter().enumerate() {
        for (i, invocation) in request.invocations().iter().enumerate() {
            if request.is_reachable(i as u32) {
                out.push(Arrival {
                    task: invocation.task,
                    start_us: invocation.start_us,
                    duration_us: invocation.usage.wall_us,
                    request: r as u32,
                    index: i as u32,
                });
            }
        }
    }
    out.sort_by_key(|a| (a.start_us, a.request, a.index));
    out
}

#[derive(Debug, Clone)]
struct Instance {
    task: TaskId,
    memory_mib: u64,
    ready_at_us: u64,
    busy: bool,
    idle_from_us: Option<u64>,
    keep_until_us: u64,
    /// When the pending expiry check of this instance fires, if one is queued. At most one
    /// is queued per instance, so the event queue stays as small as the live instances.
    expiry_at_us: Option<u64>,
    alive: bool,
    last_idle_since_us: u64,
    prewarm: Option<Prewarm>,
    used: bool,
    /// The pre-warms counting on this idle instance, each over its interval.
    claims: Claims<u64>,
    /// Its keep-alive deadline through every run, once pinned (`Decision::PinKeepAlive`).
    pinned_until_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    End {
        instance: u32,
        arrival: u32,
    },
    Expire {
        instance: u32,
    },
    PrewarmStart {
        task: TaskId,
        ready_at_us: u64,
        until_us: u64,
        /// Its claim's interval (see `start_prewarm`).
        claim_us: (u64, u64),
        plan: Option<u64>,
        /// The probability it will be used, in millionths (events are ordered: no float).
        probability_ppm: u32,
        /// The (task, plan)'s release count when it was scheduled: a release since
        /// drops it, as the runtime drops its jobs not started yet.
        epoch: u64,
        /// Due at once when decided at this instant, µs, and carried out after the
        /// planner's lag: a step of its task since then overtook it.
        at_once_since: Option<u64>,
    },
    Tick,
    /// A start slot frees: the first waiting arrival may take it.
    SlotFree,
    /// A pre-warmed instance is ready.
    Ready {
        instance: u32,
    },
    Learn {
        request: u32,
    },
}

struct Engine<'a> {
    config: SimConfig,
    costs: &'a Costs,
    policy: &'a mut Executor,
    learner: Option<(&'a mut Tdg, &'a SnapshotCell)>,
    requests: &'a [Request],
    arrivals: &'a [Arrival],
    instances: Vec<Instance>,
    /// Live instances that are not busy (idle or starting), per task: what an arrival or a
    /// pre-warm can use. Busy ones are left out, so a deep chain whose callers all wait for
    /// their callees costs nothing per arrival (the engine stays linear in chain depth).
    by_task: Vec<Vec<u32>>,
    /// Busy instances per task (those `by_task` leaves out).
    busy_by_task: Vec<u32>,
    /// How each task's last instance went (`None`: it never had one).
    gone: Vec<Option<Gone>>,
    free_mib: i64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    now: u64,
    stats: RunStats,
    delay_us: Vec<u64>,
    cold: Vec<bool>,
    /// Arrivals the policy was told of (an arrival waiting for a pre-warm is told when it
    /// comes).
    told: Vec<bool>,
    remaining: Vec<u32>,
    /// Global arrival ids of each request.
    of_request: Vec<Vec<u32>>,
    actions: Vec<Decision>,
    last_finished: Vec<Option<u32>>,
    learned_since_publish: bool,
    last_publish_us: u64,
    /// Releases per (task, plan): scheduled pre-warms of an older count are dropped.
    releases: std::collections::HashMap<(TaskId, Option<u64>), u64>,
    /// With templates: who holds them, and what a start costs with them.
    templates: Option<Templates>,
    /// When arrivals come.
    schedule: Schedule,
    /// The node's start slots and the starts waiting for one.
    slots: Slots<QueuedPrewarm>,
    /// Pre-warms waiting for a slot, per task.
    queued_by_task: Vec<u32>,
    /// By task: when a step of it last arrived, µs (see `SimConfig::planner_lag`).
    last_asked_us: Vec<Option<u64>>,
    /// Planner lags drawn so far.
    lag_draws: u64,
}

/// Runs `policy` over `requests` (sorted by start) on a node of `config`. With a learner,
/// each request is learned when it ends and a snapshot is published every
/// `config.publish_every_us`, as baton does live. `progress(done, total)` is called now
/// and then with arrivals replayed.
pub fn run(
    requests: &[Request],
    arrivals: &[Arrival],
    costs: &Costs,
    config: &SimConfig,
    policy: &mut Executor,
    learner: Option<(&mut Tdg, &SnapshotCell)>,
    mut progress: impl FnMut(usize, usize),
) -> RunStats {
    let mut remaining = vec![0u32; requests.len()];
    let mut of_request = vec![Vec::new(); requests.len()];
    for (global, arrival) in arrivals.iter().enumerate() {
        remaining[arrival.request as usize] += 1;
        of_request[arrival.request as usize].push(global as u32);
    }
    let start_us = arrivals.first().map_or(0, |a| a.start_us);
    let templates = Templates::new(
        costs,
        policy.manages_templates(),
        arrivals.iter().map(|a| a.task),
        start_us,
    );
    let mut engine = Engine {
        config: *config,
        costs,
        policy,
        learner,
        requests,
        arrivals,
        instances: Vec::new(),
        by_task: Vec::new(),
        busy_by_task: Vec::new(),
        gone: Vec::new(),
        free_mib: i64::try_from(config.memory_mib).unwrap_or(i64::MAX),
        queue: BinaryHeap::new(),
        seq: 0,
        now: arrivals.first().map_or(0, |a| a.start_us),
        stats: RunStats {
            invocations: arrivals.len() as u64,
            request_latency_us: vec![0; requests.len()],
            request_critical_cold: vec![0; requests.len()],
            ..RunStats::default()
        },
        delay_us: vec![0; arrivals.len()],
        cold: vec![false; arrivals.len()],
        told: vec![false; arrivals.len()],
        remaining,
        of_request,
        actions: Vec::new(),
        last_finished: Vec::new(),
        learned_since_publish: false,
        last_publish_us: 0,
        releases: std::collections::HashMap::new(),
        templates,
        schedule: Schedule::new(requests, arrivals, config.causal),
        slots: Slots::new(config.start_slots),
        queued_by_task: Vec::new(),
        last_asked_us: Vec::new(),
        lag_draws: 0,
    };
    engine.last_publish_us = engine.now;
    let start = engine.now;
    // The first tick comes at the first arrival's instant, before it (events first).
    engine.schedule(start, Event::Tick);
    let step = (arrivals.len() / 100).max(1);
    let mut came = 0usize;
    loop {
        let next_arrival = engine.schedule.peek(requests, arrivals);
        let next_event = engine.queue.peek().map(|Reverse((t, _, _))| *t);
        // At equal times events go first (an instance that ends at t serves an arrival at
        // t), except expiries: an instance kept "until t" still serves an arrival at t.
        let expiry_first = matches!(
            engine.queue.peek(),
            Some(Reverse((_, _, Event::Expire { .. })))
        );
        match (next_arrival, next_event) {
            (None, None) => break,
            (Some((_, a)), Some(e)) if e < a || (e == a && !expiry_first) => engine.pop_event(),
            (None, Some(_)) => {
                // The replay ends when its last invocation does: what is kept alive past
                // it is not charged (every policy is measured over the same span; a
                // keep-alive of a day would otherwise be charged a day).
                if engine.stats.served as usize == arrivals.len() {
                    break;
                }
                engine.pop_event();
            }
            (Some((global, at_us)), _) => {
                engine.schedule.take(global);
                engine.arrive(global, at_us);
                came += 1;
                if came % step == 0 {
                    progress(came, arrivals.len());
                }
            }
        }
    }
    // Whatever is still alive is released at the end: its idle time counts up to then.
    let now = engine.now;
    let alive: Vec<u32> = (0..engine.instances.len() as u32)
        .filter(|&id| engine.instances[id as usize].alive)
        .collect();
    for id in alive {
        engine.release(id, now);
    }
    // Templates: what the policy held, or one per function of the replay from the start
    // (made at deploy).
    if let Some(templates) = &engine.templates {
        let functions = engine
            .stats
            .function_invocations
            .iter()
            .filter(|&&n| n > 0)
            .count();
        let held = templates.held_mib_us(start, now, functions);
        engine.stats.template_mib_us = held;
        engine.stats.idle_mib_us += held;
        engine.stats.forked_starts = templates.forked;
        engine.stats.spare_starts = templates.spares_taken;
        engine.stats.templates_started = templates.started;
    }
    progress(arrivals.len(), arrivals.len());
    engine.stats
}

impl Engine<'_> {
    fn schedule(&mut self, at_us: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at_us, self.seq, event)));
    }

    fn tell(&mut self, event: PolicyEvent) {
        // Reading the clock costs as much as a cheap policy: time one event in 16 and
        // scale, which keeps the estimate and the replay fast.
        let host = Host {
            costs: self.costs,
            templates: self.templates.as_ref(),
            now_us: self.now,
        };
        if self.stats.policy_events % POLICY_TIMING_SAMPLE == 0 {
            let started = Instant::now();
            self.policy.handle(&event, &host, &mut self.actions);
            self.stats.policy_ns += started.elapsed().as_nanos() as u64 * POLICY_TIMING_SAMPLE;
        } else {
            self.policy.handle(&event, &host, &mut self.actions);
        }
        self.stats.policy_events += 1;
        let actions = std::mem::take(&mut self.actions);
        for action in &actions {
            self.apply(action);
        }
        self.actions = actions;
        self.actions.clear();
    }

    /// What starting `task` now takes, with the templates as they are held.
    fn cold_estimate_us(&self, task: TaskId) -> u64 {
        Host {
            costs: self.costs,
            templates: self.templates.as_ref(),
            now_us: self.now,
        }
        .cold_start_us(task)
    }

    fn task_instances(&mut self, task: TaskId) -> &mut Vec<u32> {
        if self.by_task.len() <= task.index() {
            self.by_task.resize(task.index() + 1, Vec::new());
            self.busy_by_task.resize(task.index() + 1, 0);
            self.queued_by_task.resize(task.index() + 1, 0);
            self.last_asked_us.resize(task.index() + 1, None);
            self.gone.resize(task.index() + 1, None);
        }
        &mut self.by_task[task.index()]
    }

    /// The planner's lag for the next pre-warm due at once, µs.
    fn draw_lag(&mut self) -> u64 {
        self.lag_draws += 1;
        self.config.planner_lag.draw(self.lag_draws)
    }

    /// Whether a step of `task` arrived after `since` (µs): after the event that decided
    /// the pre-warm, not the arrival that was that event.
    fn asked_after(&self, task: TaskId, since: u64) -> bool {
        self.last_asked_us
            .get(task.index())
            .copied()
            .flatten()
            .is_some_and(|at| at > since)
    }

    fn pop_event(&mut self) {
        let Some(Reverse((at, _, event))) = self.queue.pop() else {
            return;
        };
        self.now = self.now.max(at);
        let now = self.now;
        match event {
            Event::End { instance, arrival } => self.end(instance, arrival),
            Event::Expire { instance } => {
                let i = &mut self.instances[instance as usize];
                if i.expiry_at_us != Some(at) {
                    return; // superseded by an earlier check
                }
                i.expiry_at_us = None;
                if i.alive && !i.busy {
                    if i.keep_until_us <= now {
                        self.release(instance, now);
                    } else {
                        self.ensure_expiry(instance);
                    }
                }
            }
            Event::PrewarmStart {
                task,
                ready_at_us,
                until_us,
                claim_us,
                plan,
                probability_ppm,
                epoch,
                at_once_since,
            } => {
                if self.releases.get(&(task, plan)).copied().unwrap_or(0) == epoch {
                    let probability = f64::from(probability_ppm) / 1e6;
                    let window = (ready_at_us, until_us, claim_us);
                    self.start_prewarm(task, window, (plan, probability), at_once_since);
                }
            }
            Event::Tick => {
                self.publish_if_due();
                self.tell(PolicyEvent::Tick { at_us: now });
                let tick = self.config.tick_us.max(1);
                self.schedule(now + tick, Event::Tick);
            }
            Event::SlotFree => self.serve_waiting(),
            Event::Ready { instance } => self.ready(instance),
            Event::Learn { request } => {
                if let Some((tdg, _)) = self.learner.as_mut() {
                    tdg.observe_request(&self.requests[request as usize]);
                    self.learned_since_publish = true;
                }
            }
        }
    }

    fn publish_if_due(&mut self) {
        if !self.learned_since_publish
            || self.now < self.last_publish_us + self.config.publish_every_us
        {
            return;
        }
        if let Some((tdg, cell)) = self.learner.as_mut() {
            cell.publish(tdg.snapshot());
        }
        self.learned_since_publish = false;
        self.last_publish_us = self.now;
    }

    /// Makes sure an expiry check is queued no later than the instance's keep-until.
    fn ensure_expiry(&mut self, id: u32) {
        let instance = &mut self.instances[id as usize];
        let until = instance.keep_until_us;
        if instance.expiry_at_us.is_none_or(|at| at > until) {
            instance.expiry_at_us = Some(until);
            self.schedule(until, Event::Expire { instance: id });
        }
    }

    fn mark_busy(&mut self, id: u32, at_us: u64) {
        let task = self.instances[id as usize].task;
        let free = self.task_instances(task);
        if let Some(at) = free.iter().position(|&i| i == id) {
            free.swap_remove(at);
        }
        self.busy_by_task[task.index()] += 1;
        let instance = &mut self.instances[id as usize];
        if let Some(from) = instance.idle_from_us.take() {
            self.stats.idle_mib_us +=
                at_us.saturating_sub(from) as f64 * instance.memory_mib as f64;
        }
        instance.busy = true;
        instance.claims.serve(at_us);
        if let (Some(Prewarm { plan }), false) = (instance.prewarm, instance.used) {
            self.stats.prewarms_used += 1;
            self.stats.prewarm_sources.count(plan, true);
        }
        instance.used = true;
    }

    fn release(&mut self, id: u32, at_us: u64) {
        let instance = &mut self.instances[id as usize];
        if !instance.alive {
            return;
        }
        if let Some(from) = instance.idle_from_us.take() {
            let held = at_us.saturating_sub(from) as f64 * instance.memory_mib as f64;
            self.stats.idle_mib_us += held;
            self.stats.wasted_mib_us += held;
        }
        instance.alive = false;
        self.free_mib += instance.memory_mib as i64;
        let task = instance.task;
        self.task_instances(task).retain(|&i| i != id);
        // An eviction says so after this (see `make_room`).
        self.gone[task.index()] = Some(Gone::Ended);
    }

    /// Evicts idle instances, lowest [`Executor::evict_priority`] first, until `needed_mib`
    /// is free; whether it is.
    fn make_room(&mut self, needed_mib: u64) -> bool {
        self.evict_below(needed_mib, None)
    }

    /// Evicts for `needed_mib` by the executor's rule ([`room::make_room`]): any idle
    /// instance, lowest priority first (`None`), or for a pre-warm of priority `worth`
    /// only unclaimed ones below it, and then only when they free enough. Whether
    /// `needed_mib` is free.
    fn evict_below(&mut self, needed_mib: u64, worth: Option<f64>) -> bool {
        if self.free_mib >= needed_mib as i64 {
            return true;
        }
        // Idle and ready instances are those in the per-task lists, not busy, ready.
        let (ids, mut instances): (Vec<u32>, Vec<IdleInstance>) = self
            .by_task
            .iter()
            .flatten()
            .map(|&id| (id, &self.instances[id as usize]))
            .filter(|(_, i)| !i.busy && i.ready_at_us <= self.now)
            .map(|(id, i)| {
                // An unused pre-warm is weighed as the bet it stands for (as the runtime's
                // budget enforcement weighs one).
                let bet = (i.prewarm.is_some() && !i.used).then(|| i.claims.bet(self.now));
                let instance = IdleInstance {
                    task: i.task,
                    idle_since_us: i.last_idle_since_us,
                    memory_mib: i.memory_mib,
                    cold_start_us: self.cold_estimate_us(i.task),
                    bet,
                    ahead: 0,
                };
                (id, instance)
            })
            .unzip();
        line_up(&mut instances, self.config.reuse);
        let candidates: Vec<Evictable> = ids
            .iter()
            .zip(&instances)
            .map(|(&id, instance)| {
                let i = &self.instances[id as usize];
                Evictable {
                    id: u64::from(id),
                    priority: self.policy.evict_priority(instance, self.now),
                    memory_mib: i.memory_mib,
                    claimed: !i.claims.is_empty(),
                }
            })
            .collect();
        let (going, _) = room::make_room(&candidates, self.free_mib, needed_mib, worth);
        for id in going {
            let id = id as u32;
            let task = self.instances[id as usize].task;
            let now = self.now;
            self.release(id, now);
            self.gone[task.index()] = Some(Gone::Evicted);
            self.stats.evictions += 1;
            self.tell(PolicyEvent::Evicted { task, at_us: now });
        }
        self.free_mib >= needed_mib as i64
    }

    fn new_instance(&mut self, task: TaskId, ready_at_us: u64, prewarm: Option<Prewarm>) -> u32 {
        let memory_mib = self.costs.memory_mib(task);
        self.free_mib -= memory_mib as i64;
        let id = self.instances.len() as u32;
        self.instances.push(Instance {
            task,
            memory_mib,
            ready_at_us,
            busy: false,
            idle_from_us: Some(self.now),
            keep_until_us: ready_at_us,
            expiry_at_us: None,
            alive: true,
            last_idle_since_us: self.now,
            prewarm,
            used: false,
            claims: Claims::default(),
            pinned_until_us: None,
        });
        self.task_instances(task).push(id);
        id
    }
}
