//! The discrete-event engine: a node with finite memory, instances that start, run, idle
//! and expire, and a policy that is told what happens and answers with actions.
//!
//! The engine holds no policy logic and no rule of its own: the policy is driven through
//! the plan executor of `baton_core::exec`, as the runtime drives it, and the executor's
//! rules pick instances. It replays arrivals at their recorded start times (or, with
//! [`SimConfig::causal`], each call when its caller's run reaches it: `crate::schedule`); an
//! arrival takes
//! the instance [`choose_for_arrival`] names (a ready one, else one still starting: a late
//! pre-warm), else starts a cold one, evicting idle instances lowest
//! [`Executor::evict_priority`] first when memory is short. A finished instance is released
//! at once unless the policy keeps it alive. A pre-warm starts at the executor's
//! `start_at_us` (one lead before its ready time) and claims an idle instance whose claims
//! over its interval leave room for its probability ([`choose_for_prewarm`]) or starts one,
//! if memory allows or idle instances the policy values below the pre-warm's bet
//! ([`Executor::bet_priority`]) can make way; never for a less likely need.
//! Unless causal, recorded timestamps are not shifted by the delays the simulation adds:
//! each request's added latency is computed on its call tree instead (see
//! [`added_latency`]). With [`SimConfig::start_slots`] a cold start or pre-warm needs a free
//! start slot (`crate::slots`); an arrival that finds none waits for one.

use baton_core::context::Prev;
use baton_core::exec::room::{self, Evictable};
use baton_core::exec::ColdStarts;
use baton_core::exec::{
    choose_for_arrival, choose_for_prewarm, claim_weight, cold_cause, line_up, Candidate, Claims,
    Decision, Executor, Gone, Reuse, PREWARM_GRACE_US,
};
use baton_core::policy::IdleInstance;
use baton_core::request::Request;
use baton_core::{Costs, PolicyEvent, PredictContext, SnapshotCell, TaskId, Tdg};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::schedule::Schedule;
use crate::slots::Slots;
pub use crate::stats::{added_latency, PrewarmSources, RunStats};
use crate::templates::{Host, Templates};

/// Ends sort after every other event of their instant (whose sequence numbers count up
/// from 0), latest arrival first.
const END_ORDER: u64 = u64::MAX / 2;

/// One policy call in this many is timed (see `Engine::tell`).
const POLICY_TIMING_SAMPLE: u64 = 16;

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
        }
    }
}

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
    prewarm: Option<Option<u64>>,
    used: bool,
    /// The pre-warms counting on this idle instance, each over its interval.
    claims: Claims<u64>,
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
    },
    Tick,
    /// A start slot frees: the first waiting arrival may take it.
    SlotFree,
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
    /// The node's start slots and the arrivals waiting for one.
    slots: Slots,
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
            self.gone.resize(task.index() + 1, None);
        }
        &mut self.by_task[task.index()]
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
            } => {
                if self.releases.get(&(task, plan)).copied().unwrap_or(0) == epoch {
                    let probability = f64::from(probability_ppm) / 1e6;
                    let window = (ready_at_us, until_us, claim_us);
                    self.start_prewarm(task, window, plan, probability);
                }
            }
            Event::Tick => {
                self.publish_if_due();
                self.tell(PolicyEvent::Tick { at_us: now });
                let tick = self.config.tick_us.max(1);
                self.schedule(now + tick, Event::Tick);
            }
            Event::SlotFree => self.serve_waiting(),
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
        if let (Some(plan), false) = (instance.prewarm, instance.used) {
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

    fn new_instance(
        &mut self,
        task: TaskId,
        ready_at_us: u64,
        prewarm: Option<Option<u64>>,
    ) -> u32 {
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
        });
        self.task_instances(task).push(id);
        id
    }

    /// Arrival `index` comes at `at_us`: it takes the instance the executor's rule picks,
    /// else starts one if a start slot is free, else waits for a slot (or an instance).
    fn arrive(&mut self, index: u32, at_us: u64) {
        let task = self.arrivals[index as usize].task;
        self.now = self.now.max(at_us);
        let now = self.now;
        let slot = task.index();
        if self.stats.function_invocations.len() <= slot {
            self.stats.function_invocations.resize(slot + 1, 0);
            self.stats.function_cold_starts.resize(slot + 1, 0);
        }
        self.stats.function_invocations[slot] += 1;
        self.task_instances(task);
        let candidates = self.candidates(task, now, now);
        let chosen = choose_for_arrival(candidates, now, self.config.reuse).map(|id| id as u32);
        if chosen.is_none() && !self.slots.free(now) {
            self.slots.wait(index, now);
            let at = self.slots.first_free_us();
            self.schedule(at, Event::SlotFree);
            return;
        }
        self.serve(index, now, chosen);
    }

    /// Waiting arrivals take the slots free now, first come first (one whose function has
    /// an instance to take by now takes it instead).
    fn serve_waiting(&mut self) {
        let now = self.now;
        while self.slots.anyone_waiting() && self.slots.free(now) {
            let Some((index, since)) = self.slots.next_waiting() else {
                break;
            };
            let task = self.arrivals[index as usize].task;
            let candidates = self.candidates(task, now, now);
            let chosen = choose_for_arrival(candidates, now, self.config.reuse).map(|id| id as u32);
            self.serve(index, since, chosen);
        }
        if self.slots.anyone_waiting() {
            let at = self.slots.first_free_us();
            self.schedule(at, Event::SlotFree);
        }
    }

    /// Instance `id` of `task` became free for an arrival (idle, or a pre-warm started): the
    /// first arrival of `task` waiting for a slot takes it.
    fn hand_to_waiting(&mut self, task: TaskId, id: u32) {
        if !self.slots.anyone_waiting() {
            return;
        }
        let arrivals = self.arrivals;
        if let Some((index, since)) = self
            .slots
            .take_waiting(|a| arrivals[a as usize].task == task)
        {
            self.serve(index, since, Some(id));
        }
    }

    /// Serves arrival `index`, which came at `since_us`, now: on instance `chosen`, or on a
    /// new one (a cold start, in a start slot).
    fn serve(&mut self, index: u32, since_us: u64, chosen: Option<u32>) {
        let arrival = self.arrivals[index as usize];
        let now = self.now;
        let task = arrival.task;
        let slot = task.index();
        let (instance, delay) = match chosen {
            Some(id) => {
                let instance = &self.instances[id as usize];
                let delay = instance.ready_at_us.saturating_sub(now);
                if instance.prewarm.is_some() && !instance.used {
                    self.stats.prewarm_hits += 1;
                    if delay > 0 {
                        self.stats.late_prewarm_hits += 1;
                    }
                }
                (id, delay)
            }
            None => {
                let cold = match self.templates.as_mut() {
                    Some(templates) => templates.cold_start(self.costs, task, now),
                    None => self.costs.cold_start_us(task),
                };
                if !self.make_room(self.costs.memory_mib(task)) {
                    self.stats.overcommits += 1;
                }
                self.stats.cold_starts += 1;
                self.stats.function_cold_starts[slot] += 1;
                let busy = self.busy_by_task[slot] as usize;
                self.stats
                    .cold_causes
                    .add(cold_cause(busy, self.gone[slot]));
                self.cold[index as usize] = true;
                self.slots.take(now, cold);
                (self.new_instance(task, now + cold, None), cold)
            }
        };
        self.mark_busy(instance, now);
        // What it waited for a slot or an instance counts in its wait.
        let waited = now - since_us;
        self.delay_us[index as usize] = waited + delay;
        let end = now + delay + arrival.duration_us;
        // Ends go after every other event of their instant, the latest-started first: a
        // call ends before its caller when both end at one microsecond, as it does live.
        self.queue.push(Reverse((
            end,
            END_ORDER - u64::from(index),
            Event::End {
                instance,
                arrival: index,
            },
        )));
        let request = &self.requests[arrival.request as usize];
        let invocation = &request.invocations()[arrival.index as usize];
        let grand_caller = invocation
            .parent
            .map(|p| request.invocations()[p as usize].task);
        let reveals_route = request.entry().and_then(|entry| {
            let first = *request.children(entry).first()?;
            (first == arrival.index).then(|| request.invocations()[entry as usize].start_us)
        });
        self.tell(PolicyEvent::Start {
            task,
            invocation: u64::from(index),
            at_us: now,
            context: PredictContext {
                route: request
                    .route()
                    .filter(|_| reveals_route.is_some() || Some(arrival.index) != request.entry()),
                prev: Prev::Start,
                grand_caller,
                operation: Some(invocation.label),
            },
            reveals_route,
            // Its calls come later by its wait: causally, the wait added here; as
            // recorded, only where the recorded starts include it.
            wait_us: if self.config.causal {
                delay
            } else {
                invocation.waited_us
            },
        });
        let (requests, arrivals) = (self.requests, self.arrivals);
        self.schedule
            .came(requests, arrivals, index, since_us, waited + delay);
    }

    fn end(&mut self, id: u32, arrival: u32) {
        let now = self.now;
        self.stats.served += 1;
        let task = self.instances[id as usize].task;
        self.busy_by_task[task.index()] -= 1;
        {
            let instance = &mut self.instances[id as usize];
            instance.busy = false;
            instance.idle_from_us = Some(now);
            instance.last_idle_since_us = now;
            // Pre-warms still counting on it keep it, whatever the policy says next.
            instance.keep_until_us = instance
                .claims
                .hold_until(now, PREWARM_GRACE_US)
                .unwrap_or(now);
        }
        if self.instances[id as usize].alive {
            self.task_instances(task).push(id);
        }
        if self.last_finished.len() <= task.index() {
            self.last_finished.resize(task.index() + 1, None);
        }
        self.last_finished[task.index()] = Some(id);
        self.tell(PolicyEvent::End {
            task,
            invocation: u64::from(arrival),
            at_us: now,
        });
        let instance = &self.instances[id as usize];
        if instance.alive && !instance.busy {
            self.hand_to_waiting(task, id);
        }
        let instance = &self.instances[id as usize];
        if instance.alive && !instance.busy {
            if instance.keep_until_us <= now {
                self.release(id, now);
            } else {
                self.ensure_expiry(id);
            }
        }
        let request = self.arrivals[arrival as usize].request as usize;
        self.remaining[request] -= 1;
        if self.remaining[request] == 0 {
            self.finish_request(request);
            if self.learner.is_some() {
                self.schedule(
                    now,
                    Event::Learn {
                        request: request as u32,
                    },
                );
            }
        }
    }

    fn finish_request(&mut self, request: usize) {
        let r = &self.requests[request];
        // Per invocation of the request: its delay and whether it was cold.
        let mut delay = vec![0u64; r.invocations().len()];
        let mut cold = vec![false; r.invocations().len()];
        for &global in &self.of_request[request] {
            let index = self.arrivals[global as usize].index as usize;
            delay[index] = self.delay_us[global as usize];
            cold[index] = self.cold[global as usize];
        }
        let (latency, n_cold) = added_latency(r, &delay, &cold);
        self.stats.request_latency_us[request] = latency;
        self.stats.request_critical_cold[request] = n_cold;
    }

    /// Starts or claims an instance of `task` ready at, kept until (if unused) and claimed
    /// over the times of `window` (µs). The claim spans the policy's window and the task's
    /// run time from the ready time the policy asked for, even when the instance can only
    /// be ready later: an arrival in that interval answers it.
    fn start_prewarm(
        &mut self,
        task: TaskId,
        (ready_at_us, until_us, (claim_from, claim_until)): (u64, u64, (u64, u64)),
        plan: Option<u64>,
        probability: f64,
    ) {
        let now = self.now;
        let until_us = until_us.max(ready_at_us + PREWARM_GRACE_US);
        // An idle instance whose claims leave room for this one serves: extend and claim
        // it. Claims keep concurrent needs apart: two sure pre-warms of one task for the
        // same time get two instances, two even bets share one, pre-warms one after another
        // share one.
        let candidates = self.candidates(task, claim_from, claim_until);
        let existing =
            choose_for_prewarm(candidates, ready_at_us, now, probability).map(|id| id as u32);
        if let Some(id) = existing {
            let instance = &mut self.instances[id as usize];
            instance.claims.add(claim_from, claim_until, probability);
            if instance.keep_until_us < until_us {
                instance.keep_until_us = until_us;
                self.ensure_expiry(id);
            }
            self.stats.prewarms_extended += 1;
            return;
        }
        // No room: idle instances the policy values below this bet make way for it (the
        // bet is weighed only then).
        let memory_mib = self.costs.memory_mib(task);
        if self.free_mib < memory_mib as i64 {
            let bet = IdleInstance {
                task,
                idle_since_us: now,
                memory_mib,
                cold_start_us: self.cold_estimate_us(task),
                bet: Some((claim_weight(probability), claim_until)),
                ahead: 0,
            };
            let worth = self.policy.bet_priority(&bet, now);
            if !self.evict_below(memory_mib, Some(worth)) {
                self.stats.prewarms_failed += 1;
                return;
            }
        }
        if let Some(templates) = self.templates.as_mut() {
            templates.prewarm_start(self.costs, task, now);
        }
        // It starts in the first free slot: ready that much later.
        let begin = self.slots.take(
            now,
            ready_at_us
                .saturating_sub(now)
                .max(self.cold_estimate_us(task)),
        );
        let ready_at_us = ready_at_us + (begin - now);
        let id = self.new_instance(task, ready_at_us, Some(plan));
        self.instances[id as usize].keep_until_us = until_us;
        // Ready later than asked, its step waits for it and holds it as much longer.
        let late = ready_at_us.saturating_sub(claim_from);
        self.instances[id as usize]
            .claims
            .add(claim_from, claim_until + late, probability);
        self.stats.prewarms_started += 1;
        self.stats.prewarm_sources.count(plan, false);
        self.ensure_expiry(id);
        self.hand_to_waiting(task, id);
    }

    /// Every live instance of `task` that is not busy, as the executor's rules see it, with
    /// the weight of its claims over `from..=until` (an arrival's instant, a pre-warm's
    /// interval).
    fn candidates(&mut self, task: TaskId, from: u64, until: u64) -> Vec<Candidate<u64>> {
        self.task_instances(task);
        let instances = &self.instances;
        self.by_task[task.index()]
            .iter()
            .map(|&id| {
                let i = &instances[id as usize];
                Candidate {
                    id: u64::from(id),
                    ready_at: i.ready_at_us,
                    keep_until: i.keep_until_us,
                    idle_since: i.last_idle_since_us,
                    claims: i.claims.over(from, until),
                }
            })
            .collect()
    }

    fn apply(&mut self, decision: &Decision) {
        let now = self.now;
        match *decision {
            Decision::Prewarm {
                task,
                start_at_us,
                ready_at_us,
                until_us,
                claim_until_us,
                plan,
                probability,
                ..
            } => {
                let cold = self.cold_estimate_us(task);
                let ready_at = (start_at_us + cold).max(ready_at_us);
                if start_at_us > now {
                    let epoch = self.releases.get(&(task, plan)).copied().unwrap_or(0);
                    self.schedule(
                        start_at_us,
                        Event::PrewarmStart {
                            task,
                            ready_at_us: ready_at,
                            until_us,
                            claim_us: (ready_at_us, claim_until_us),
                            plan,
                            probability_ppm: (claim_weight(probability) * 1e6) as u32,
                            epoch,
                        },
                    );
                } else {
                    let window = (ready_at, until_us, (ready_at_us, claim_until_us));
                    self.start_prewarm(task, window, plan, probability);
                }
            }
            Decision::KeepAlive { task, until_us } => {
                let Some(Some(id)) = self.last_finished.get(task.index()).copied() else {
                    return;
                };
                let instance = &mut self.instances[id as usize];
                if instance.alive && !instance.busy && until_us > instance.keep_until_us {
                    instance.keep_until_us = until_us;
                    self.ensure_expiry(id);
                }
            }
            Decision::HoldTemplate { task, until_us } => {
                if let Some(templates) = self.templates.as_mut() {
                    templates.hold(self.costs, task, now, until_us);
                }
            }
            Decision::Release { task, plan } => {
                *self.releases.entry((task, plan)).or_default() += 1;
                self.task_instances(task);
                let instances = &self.instances;
                let mut unused: Vec<u32> = self.by_task[task.index()]
                    .iter()
                    .copied()
                    .filter(|&id| {
                        let instance = &instances[id as usize];
                        !instance.busy
                            && !instance.used
                            && instance.prewarm == Some(plan)
                            && instance.keep_until_us <= now
                    })
                    .collect();
                // Oldest first, whatever the list's order: the run stays the same.
                unused.sort_unstable();
                for id in unused {
                    self.release(id, now);
                }
            }
        }
    }
}
