//! The Task Dependency Graph learner: decayed transition counts, a chain-end pseudo-node,
//! per-edge delay histograms, context tables, resource profiles and per-route entry sets.
//!
//! One writer owns a [`Tdg`] and feeds it events; [`Tdg::snapshot`] freezes an immutable
//! [`TdgSnapshot`] that predictors read while the writer goes on, published through a
//! [`SnapshotCell`] (an atomic pointer swap, no lock shared between reader and writer).

use crate::arrival::Episodes;
use crate::context::{default_context_kinds, CallContext, ContextKind, Prev};
use crate::decay::Decay;
use crate::drift::{DriftMonitor, Shift};
use crate::ids::{Interner, LabelId, TaskId};
use crate::profile::{ProfileSummary, ResourceProfile};
use crate::request::{CallEvent, Request, Usage};
use crate::resources::ResourceVec;
use crate::snapshot::TdgSnapshot;
use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Hash maps (de)serialized as lists of pairs, so keys need not be strings.
mod dist;
mod entry;

use dist::{Dist, Edge, Weighted};
pub use entry::best_f1_set;
use entry::EntryStats;

mod pairs {
    use rustc_hash::FxHashMap;
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::hash::Hash;

    pub fn serialize<K: Serialize + Ord, V: Serialize, S: Serializer>(
        map: &FxHashMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        // Sorted, so equal maps give equal bytes.
        let mut pairs: Vec<(&K, &V)> = map.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        pairs.serialize(serializer)
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<FxHashMap<K, V>, D::Error>
    where
        K: DeserializeOwned + Eq + Hash,
        V: DeserializeOwned,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// Everything a [`Tdg`] has learned (its settings excepted): saved by the store, restored
/// with [`Tdg::from_state`]; learning then goes on exactly as if it had never stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TdgState {
    decay: Decay,
    tasks: Interner,
    labels: Interner,
    first_order: Vec<Dist<Edge>>,
    #[serde(with = "pairs")]
    contexts: FxHashMap<(u16, u64, u32), Dist<Weighted>>,
    profiles: Vec<ResourceProfile>,
    declared: Vec<Option<ResourceVec>>,
    #[serde(with = "pairs")]
    entry_by_route: FxHashMap<LabelId, EntryStats>,
    entry_any: EntryStats,
    /// Each task's latest episodes (absent from states saved before they were learned).
    #[serde(default)]
    arrivals: Vec<Episodes>,
    /// How well recent transitions were predicted (absent from older states).
    #[serde(default)]
    drift: DriftMonitor,
    now_us: u64,
    n_events: u64,
    version: u64,
    /// Names of the context kinds it was learned with, most specific first.
    context_kinds: Vec<String>,
}

/// Learner settings. Defaults: half-life 1 h, 5 min while the mix drifts
/// ([`crate::drift`]), a context needs 3 events of history, the default context kinds
/// (route+call-order, call-order, route).
#[derive(Debug, Clone)]
pub struct TdgConfig {
    /// Half-life of the exponential decay in µs; `None` disables decay.
    pub half_life_us: Option<u64>,
    /// Half-life while predictions miss (a shift in the mix), µs; `None`: never shortened.
    /// Used only with a `half_life_us`.
    pub drift_half_life_us: Option<u64>,
    /// Effective count a context distribution needs before predictions use it.
    pub min_context_count: f64,
    /// Context kinds, most specific first.
    pub contexts: Vec<Arc<dyn ContextKind>>,
    /// Needs of a task with neither history nor declared limits.
    pub default_needs: ResourceVec,
}

impl Default for TdgConfig {
    fn default() -> Self {
        TdgConfig {
            half_life_us: Some(3_600_000_000),
            drift_half_life_us: Some(300_000_000),
            min_context_count: 3.0,
            contexts: default_context_kinds(),
            default_needs: ResourceVec {
                cpu_millicores: 100,
                cores: 0,
                memory_mib: 128,
                net_mbps: 0,
                gpu_units: 0,
            },
        }
    }
}

/// The learner. Single writer; see the module docs for how readers get at it. Cloning
/// forks the learned state (the simulator starts every policy from the same training).
#[derive(Debug, Clone)]
pub struct Tdg {
    config: TdgConfig,
    decay: Decay,
    tasks: Interner,
    labels: Interner,
    first_order: Vec<Dist<Edge>>,
    contexts: FxHashMap<(u16, u64, u32), Dist<Weighted>>,
    profiles: Vec<ResourceProfile>,
    declared: Vec<Option<ResourceVec>>,
    entry_by_route: FxHashMap<LabelId, EntryStats>,
    entry_any: EntryStats,
    arrivals: Vec<Episodes>,
    drift: DriftMonitor,
    now_us: u64,
    n_events: u64,
    version: u64,
}

impl Tdg {
    /// An empty graph.
    pub fn new(config: TdgConfig) -> Tdg {
        Tdg {
            decay: Decay::new(config.half_life_us, 0),
            config,
            tasks: Interner::default(),
            labels: Interner::default(),
            first_order: Vec::new(),
            contexts: FxHashMap::default(),
            profiles: Vec::new(),
            declared: Vec::new(),
            entry_by_route: FxHashMap::default(),
            entry_any: EntryStats::default(),
            arrivals: Vec::new(),
            drift: DriftMonitor::default(),
            now_us: 0,
            n_events: 0,
            version: 0,
        }
    }

    /// A copy of what has been learned.
    pub fn state(&self) -> TdgState {
        TdgState {
            decay: self.decay,
            tasks: self.tasks.clone(),
            labels: self.labels.clone(),
            first_order: self.first_order.clone(),
            contexts: self.contexts.clone(),
            profiles: self.profiles.clone(),
            declared: self.declared.clone(),
            entry_by_route: self.entry_by_route.clone(),
            entry_any: self.entry_any.clone(),
            arrivals: self.arrivals.clone(),
            drift: self.drift,
            now_us: self.now_us,
            n_events: self.n_events,
            version: self.version,
            context_kinds: self
                .config
                .contexts
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
        }
    }

    /// A learner that goes on from `state` with `config`; `None` when `config` has other
    /// context kinds than the state was learned with (its context tables would be read
    /// wrongly).
    pub fn from_state(config: TdgConfig, state: TdgState) -> Option<Tdg> {
        let kinds: Vec<&str> = config.contexts.iter().map(|c| c.name()).collect();
        if kinds != state.context_kinds {
            return None;
        }
        Some(Tdg {
            config,
            decay: state.decay,
            tasks: state.tasks,
            labels: state.labels,
            first_order: state.first_order,
            contexts: state.contexts,
            profiles: state.profiles,
            declared: state.declared,
            entry_by_route: state.entry_by_route,
            entry_any: state.entry_any,
            arrivals: state.arrivals,
            drift: state.drift,
            now_us: state.now_us,
            n_events: state.n_events,
            version: state.version,
        })
    }

    /// The settings.
    pub fn config(&self) -> &TdgConfig {
        &self.config
    }

    /// The id of task `name`, creating the node if new.
    pub fn intern_task(&mut self, name: &str) -> TaskId {
        let id = TaskId(self.tasks.intern(name));
        if id.index() >= self.first_order.len() {
            self.first_order.resize_with(id.index() + 1, Dist::default);
            self.profiles
                .resize_with(id.index() + 1, ResourceProfile::default);
            self.declared.resize(id.index() + 1, None);
            self.arrivals.resize_with(id.index() + 1, Episodes::default);
        }
        id
    }

    /// The id of label `name` (a route or operation).
    pub fn intern_label(&mut self, name: &str) -> LabelId {
        LabelId(self.labels.intern(name))
    }

    /// Task names.
    pub fn tasks(&self) -> &Interner {
        &self.tasks
    }

    /// Label names.
    pub fn labels(&self) -> &Interner {
        &self.labels
    }

    /// Declares a task's limits, used where it has no history.
    pub fn declare(&mut self, task: TaskId, limits: ResourceVec) {
        if let Some(slot) = self.declared.get_mut(task.index()) {
            *slot = Some(limits);
        }
    }

    /// Events observed so far (transitions and ends).
    pub fn n_events(&self) -> u64 {
        self.n_events
    }

    /// Time of the latest event, µs.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    fn weight_at(&mut self, at_us: u64) -> f64 {
        if self.n_events == 0 && self.decay.landmark_us == 0 {
            self.decay.landmark_us = at_us;
        }
        if self.decay.needs_rebase(at_us) {
            let factor = self.decay.rebase(at_us);
            self.scale_all(factor);
        }
        self.now_us = self.now_us.max(at_us);
        self.decay.weight_at(at_us)
    }

    fn scale_all(&mut self, factor: f64) {
        for dist in &mut self.first_order {
            dist.scale(factor);
        }
        for dist in self.contexts.values_mut() {
            dist.scale(factor);
        }
        for profile in &mut self.profiles {
            profile.scale(factor);
        }
        for stats in self.entry_by_route.values_mut() {
            stats.scale(factor);
        }
        self.entry_any.scale(factor);
    }

    /// Observes one call (`callee = Some`) or the end of a caller's calls (`None`).
    /// Task ids must come from [`Tdg::intern_task`].
    ///
    /// For an end, `context.prev` says whether the caller made calls: `Start` (or `Unknown`)
    /// means none, and the end then counts towards P(stop | caller) everywhere; after
    /// calls, it counts only in call-order contexts (see [`ContextKind::uses_call_order`]),
    /// so that a task that always calls on has a stop probability of zero.
    pub fn observe_call(
        &mut self,
        context: &CallContext,
        callee: Option<TaskId>,
        delay_us: u64,
        at_us: u64,
    ) {
        self.observe_calls(context, callee, delay_us, at_us, 1);
    }

    /// [`Tdg::observe_call`] for `count` calls alike at once (a summary's weight); the
    /// drift monitor sees the transition once.
    pub fn observe_calls(
        &mut self,
        context: &CallContext,
        callee: Option<TaskId>,
        delay_us: u64,
        at_us: u64,
        count: u64,
    ) {
        let weight = self.weight_at(at_us) * count as f64;
        self.n_events += count;
        let caller = context.caller;
        let leaf_or_call = callee.is_some() || !matches!(context.prev, Prev::After(_));
        let mut shift = None;
        if leaf_or_call {
            if let Some(dist) = self.first_order.get_mut(caller.index()) {
                if let Some(p) = dist.observe(callee, weight, delay_us) {
                    shift = self.drift.observe(p, at_us);
                }
            }
        }
        for (kind_index, kind) in self.config.contexts.iter().enumerate() {
            if !leaf_or_call && !kind.uses_call_order() {
                continue;
            }
            if let Some(key) = kind.key(context) {
                self.contexts
                    .entry((kind_index as u16, key, caller.0))
                    .or_default()
                    .observe(callee, weight, 0);
            }
        }
        if let Some(shift) = shift {
            self.shift_half_life(shift);
        }
    }

    /// Changes the half-life as `shift` says (see [`crate::drift`]): every stored weight is
    /// rebased to an effective count now (and, when shortening, scaled down to what the
    /// short half-life would have kept), and later events decay at the new rate.
    fn shift_half_life(&mut self, shift: Shift) {
        let (Some(usual), Some(short)) = (self.config.half_life_us, self.config.drift_half_life_us)
        else {
            return;
        };
        let half_life = match shift {
            Shift::Shorten => short.min(usual),
            Shift::Restore => usual,
        };
        if self.decay.half_life_us == Some(half_life) {
            return;
        }
        let mut factor = self.decay.rebase(self.now_us);
        if shift == Shift::Shorten {
            // The past counts as much as a learner with the short half-life would hold of
            // it: a steady mix piles up `half-life ÷ ln 2` seconds' worth of events, twelve
            // times more under the usual hour than under five minutes, and the new mix
            // would need as many half-lives more to outweigh it.
            factor *= half_life as f64 / usual as f64;
        }
        self.scale_all(factor);
        self.decay.half_life_us = Some(half_life);
    }

    /// The half-life in use, µs (shorter than the configured one while the mix drifts).
    pub fn half_life_us(&self) -> Option<u64> {
        self.decay.half_life_us
    }

    /// Whether the mix is drifting: recent transitions were predicted clearly worse than
    /// usual, and the short half-life is in use.
    pub fn drifting(&self) -> bool {
        self.drift.drifting()
    }

    /// Observes the use of one invocation of `task`.
    pub fn observe_usage(&mut self, task: TaskId, usage: &Usage, at_us: u64) {
        let weight = self.weight_at(at_us);
        if let Some(profile) = self.profiles.get_mut(task.index()) {
            profile.record(usage, weight);
        }
    }

    /// Observes a start of `task` at `at_us` for its arrival rhythm
    /// ([`crate::arrival`]).
    pub fn observe_start(&mut self, task: TaskId, at_us: u64) {
        if self.arrivals.len() <= task.index() && task.index() < self.first_order.len() {
            // A state saved before episodes were learned: grow to the tasks known.
            self.arrivals
                .resize_with(self.first_order.len(), Episodes::default);
        }
        if let Some(episodes) = self.arrivals.get_mut(task.index()) {
            episodes.observe(at_us);
        }
    }

    /// Forgets `name` (a removed function): its own calls, every edge into it, its place in
    /// context distributions and entry sets, its resource profile. The name stays known
    /// (ids are dense and stable) with nothing learned; a function deployed again under it
    /// starts from scratch. Returns whether the name was known.
    pub fn forget(&mut self, name: &str) -> bool {
        let Some(index) = self.tasks.get(name) else {
            return false;
        };
        let task = TaskId(index);
        if let Some(own) = self.first_order.get_mut(task.index()) {
            *own = Dist::default();
        }
        for dist in &mut self.first_order {
            dist.forget(task);
        }
        self.contexts.retain(|&(_, _, caller), _| caller != task.0);
        for dist in self.contexts.values_mut() {
            dist.forget(task);
        }
        if let Some(profile) = self.profiles.get_mut(task.index()) {
            *profile = ResourceProfile::default();
        }
        for stats in self.entry_by_route.values_mut() {
            stats.forget(task);
        }
        self.entry_any.forget(task);
        if let Some(episodes) = self.arrivals.get_mut(task.index()) {
            *episodes = Episodes::default();
        }
        true
    }

    /// Observes a whole request: its calls, its invocations' use and its entry set, each
    /// weighed by the request's multiplicity. Arrival rhythms are learned from requests as
    /// they ran only: a summary's one start stands for many at other instants.
    pub fn observe_request(&mut self, request: &Request) {
        let count = request.multiplicity();
        request.for_each_call(|event: &CallEvent| {
            self.observe_calls(
                &event.context,
                event.callee,
                event.delay_us,
                event.at_us,
                count,
            );
        });
        for (index, invocation) in request.invocations().iter().enumerate() {
            if request.is_reachable(index as u32) {
                let weight = self.weight_at(invocation.start_us) * count as f64;
                if let Some(profile) = self.profiles.get_mut(invocation.task.index()) {
                    profile.record(&invocation.usage, weight);
                }
                if count == 1 {
                    self.observe_start(invocation.task, invocation.start_us);
                }
            }
        }
        if let Some(start) = request.start_us() {
            let weight = self.weight_at(start) * count as f64;
            let downstream = request.downstream_tasks();
            if let Some(route) = request.route() {
                self.entry_by_route
                    .entry(route)
                    .or_default()
                    .observe(&downstream, weight);
            }
            self.entry_any.observe(&downstream, weight);
        }
    }

    /// Freezes the current state into an immutable snapshot with the next version number.
    pub fn snapshot(&mut self) -> TdgSnapshot {
        self.version += 1;
        let now = self.now_us;
        let decay = self.decay;
        TdgSnapshot::new(crate::snapshot::SnapshotParts {
            version: self.version,
            at_us: now,
            tasks: self.tasks.clone(),
            labels: self.labels.clone(),
            first_order: self
                .first_order
                .iter()
                .map(|d| d.freeze(&decay, now))
                .collect(),
            contexts: self
                .contexts
                .iter()
                .map(|(&key, d)| (key, d.freeze(&decay, now)))
                .collect(),
            context_kinds: self.config.contexts.clone(),
            min_context_count: self.config.min_context_count,
            profiles: self
                .profiles
                .iter()
                .map(ResourceProfile::summary)
                .collect::<Vec<ProfileSummary>>(),
            declared: self.declared.clone(),
            default_needs: self.config.default_needs,
            entry_by_route: self
                .entry_by_route
                .iter()
                .map(|(&route, stats)| (route, stats.freeze(&decay, now)))
                .collect(),
            entry_any: self.entry_any.freeze(&decay, now),
            arrivals: self.arrivals.clone(),
            half_life_us: decay.half_life_us,
            drifting: self.drift.drifting(),
        })
    }
}

/// Where the learner publishes snapshots and predictors pick them up, lock-free.
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwap<TdgSnapshot>,
}

impl SnapshotCell {
    /// A cell holding `snapshot`.
    pub fn new(snapshot: TdgSnapshot) -> SnapshotCell {
        SnapshotCell {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The latest snapshot.
    pub fn load(&self) -> Arc<TdgSnapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot; readers holding the old one keep it until they drop it.
    pub fn publish(&self, snapshot: TdgSnapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests;
