//! The frozen, read-only view of the graph that predictors use while the learner writes on.
//!
//! Distributions are sorted by probability (ties by task id) so that prediction walks them
//! in order. A snapshot is one graph version; its chain-profile cache therefore caches per
//! (task, version) by construction. A snapshot serialises to JSON (`baton learn --save`).

use crate::arrival::Episodes;
use crate::context::{context_kind_by_name, CallContext, ContextKind};
use crate::ids::{Interner, LabelId, TaskId};
use crate::profile::{NeedQuantile, ProfileSummary};
use crate::resources::ResourceVec;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// One outcome of a frozen distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenTarget {
    /// The callee.
    pub task: TaskId,
    /// P(callee | caller, context).
    pub probability: f64,
    /// Mean delay from the caller's start to the callee's start, µs (first order only).
    pub delay_mean_us: u64,
    /// 10th percentile of that delay, µs.
    pub delay_p10_us: u64,
    /// 90th percentile of that delay, µs.
    pub delay_p90_us: u64,
}

/// A frozen distribution over what follows a caller: targets plus the chain end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrozenDist {
    /// Callees by decreasing probability.
    pub targets: Vec<FrozenTarget>,
    /// P(no further call | caller, context); targets plus this sum to 1.
    pub stop_probability: f64,
    /// Effective (decayed) number of events behind it.
    pub count: f64,
}

/// One task of an entry set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryTask {
    /// The task.
    pub task: TaskId,
    /// P(the task runs at least once in the request).
    pub probability: f64,
    /// 10th percentile of its first start after the entry's start, µs.
    pub offset_p10_us: u64,
    /// Median of that offset, µs.
    pub offset_p50_us: u64,
}

/// The tasks a request of one route touches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrozenEntrySet {
    /// Effective (decayed) number of requests behind it.
    pub requests: f64,
    /// Tasks by decreasing probability.
    pub tasks: Vec<EntryTask>,
    /// The set to announce: best F1 of expected recall and precision over the sets seen.
    pub best_set: Vec<TaskId>,
    /// Expected recall of `best_set` on the history.
    pub best_set_recall: f64,
    /// Expected precision of `best_set` on the history.
    pub best_set_precision: f64,
}

/// Which distribution a prediction step used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContextUsed {
    /// The caller alone.
    FirstOrder,
    /// The context kind at this index of the snapshot's kinds.
    Kind(u16),
}

/// Everything a snapshot is made of; the serialised form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotParts {
    /// Graph version.
    pub version: u64,
    /// Time of the latest event learned, µs.
    pub at_us: u64,
    /// Task names.
    pub tasks: Interner,
    /// Label names.
    pub labels: Interner,
    /// First-order distribution per task.
    pub first_order: Vec<FrozenDist>,
    /// Context distributions keyed by (kind index, key, caller).
    #[serde(with = "context_table")]
    pub contexts: FxHashMap<(u16, u64, u32), FrozenDist>,
    /// Context kinds, in backoff order.
    #[serde(with = "context_kinds")]
    pub context_kinds: Vec<Arc<dyn ContextKind>>,
    /// Effective count a context needs to be used.
    pub min_context_count: f64,
    /// Resource profile per task.
    pub profiles: Vec<ProfileSummary>,
    /// Declared limits per task.
    pub declared: Vec<Option<ResourceVec>>,
    /// Needs of a task with neither history nor declared limits.
    pub default_needs: ResourceVec,
    /// Entry sets per route.
    #[serde(with = "entry_table")]
    pub entry_by_route: FxHashMap<LabelId, FrozenEntrySet>,
    /// Entry set over all requests (fallback for unknown routes).
    pub entry_any: FrozenEntrySet,
    /// Each task's latest episodes, for its arrival rhythm.
    #[serde(default)]
    pub arrivals: Vec<Episodes>,
    /// The learner's half-life when this was taken, µs (shorter while the mix drifts; see
    /// [`crate::drift`]).
    #[serde(default)]
    pub half_life_us: Option<u64>,
    /// Whether the learner saw the mix drifting.
    #[serde(default)]
    pub drifting: bool,
}

mod context_table {
    use super::FrozenDist;
    use rustc_hash::FxHashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Key = (u16, u64, u32);

    pub fn serialize<S: Serializer>(
        table: &FxHashMap<Key, FrozenDist>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&Key, &FrozenDist)> = table.iter().collect();
        entries.sort_by_key(|(key, _)| **key);
        entries.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<FxHashMap<Key, FrozenDist>, D::Error> {
        let entries: Vec<(Key, FrozenDist)> = Vec::deserialize(deserializer)?;
        Ok(entries.into_iter().collect())
    }
}

mod entry_table {
    use super::FrozenEntrySet;
    use crate::ids::LabelId;
    use rustc_hash::FxHashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        table: &FxHashMap<LabelId, FrozenEntrySet>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&LabelId, &FrozenEntrySet)> = table.iter().collect();
        entries.sort_by_key(|(key, _)| **key);
        entries.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<FxHashMap<LabelId, FrozenEntrySet>, D::Error> {
        let entries: Vec<(LabelId, FrozenEntrySet)> = Vec::deserialize(deserializer)?;
        Ok(entries.into_iter().collect())
    }
}

mod context_kinds {
    use super::{context_kind_by_name, ContextKind};
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(
        kinds: &[Arc<dyn ContextKind>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        names.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Arc<dyn ContextKind>>, D::Error> {
        let names: Vec<String> = Vec::deserialize(deserializer)?;
        names
            .iter()
            .map(|name| {
                context_kind_by_name(name)
                    .ok_or_else(|| D::Error::custom(format!("unknown context kind `{name}`")))
            })
            .collect()
    }
}

/// Key of the chain-profile cache: the question asked, bit for bit.
pub(crate) type ChainCacheKey = (TaskId, CallContext, [u64; 6]);

/// An immutable graph version. See the module docs.
#[derive(Debug)]
pub struct TdgSnapshot {
    parts: SnapshotParts,
    empty: FrozenDist,
    pub(crate) chain_cache: RwLock<FxHashMap<ChainCacheKey, Arc<Vec<crate::chain::ChainProfile>>>>,
}

impl TdgSnapshot {
    /// Builds a snapshot from its parts (after learning, or after loading a saved state).
    pub fn new(mut parts: SnapshotParts) -> TdgSnapshot {
        parts.tasks.rebuild_index();
        parts.labels.rebuild_index();
        TdgSnapshot {
            parts,
            empty: FrozenDist {
                targets: Vec::new(),
                stop_probability: 1.0,
                count: 0.0,
            },
            chain_cache: RwLock::new(FxHashMap::default()),
        }
    }

    /// The parts, for serialisation.
    pub fn parts(&self) -> &SnapshotParts {
        &self.parts
    }

    /// Graph version.
    pub fn version(&self) -> u64 {
        self.parts.version
    }

    /// The learner's half-life when this was taken, µs (`None`: no decay).
    pub fn half_life_us(&self) -> Option<u64> {
        self.parts.half_life_us
    }

    /// Whether the learner's half-life was shortened then because the mix drifts.
    pub fn drifting(&self) -> bool {
        self.parts.drifting
    }

    /// Time of the latest event learned, µs.
    pub fn at_us(&self) -> u64 {
        self.parts.at_us
    }

    /// Task names.
    pub fn tasks(&self) -> &Interner {
        &self.parts.tasks
    }

    /// Label names.
    pub fn labels(&self) -> &Interner {
        &self.parts.labels
    }

    /// Looks a task up by name.
    pub fn task_id(&self, name: &str) -> Option<TaskId> {
        self.parts.tasks.get(name).map(TaskId)
    }

    /// Looks a label (route) up by name.
    pub fn label_id(&self, name: &str) -> Option<LabelId> {
        self.parts.labels.get(name).map(LabelId)
    }

    /// A task's name.
    pub fn task_name(&self, task: TaskId) -> &str {
        self.parts.tasks.name(task.0)
    }

    /// Number of tasks.
    pub fn n_tasks(&self) -> usize {
        self.parts.first_order.len()
    }

    /// The name of a context used by a prediction.
    pub fn context_name(&self, used: ContextUsed) -> &'static str {
        match used {
            ContextUsed::FirstOrder => "first-order",
            ContextUsed::Kind(i) => self
                .parts
                .context_kinds
                .get(i as usize)
                .map_or("?", |k| k.name()),
        }
    }

    /// The first-order distribution of `task` (all-stop for an unknown task).
    pub fn first_order(&self, task: TaskId) -> &FrozenDist {
        self.parts
            .first_order
            .get(task.index())
            .unwrap_or(&self.empty)
    }

    /// The most specific distribution with enough history for `context`, backing off to
    /// first order; with `use_context` false, first order directly.
    pub fn step_dist(
        &self,
        context: &CallContext,
        use_context: bool,
    ) -> (&FrozenDist, ContextUsed) {
        if use_context {
            for (index, kind) in self.parts.context_kinds.iter().enumerate() {
                let Some(key) = kind.key(context) else {
                    continue;
                };
                if let Some(dist) = self
                    .parts
                    .contexts
                    .get(&(index as u16, key, context.caller.0))
                {
                    if dist.count >= self.parts.min_context_count {
                        return (dist, ContextUsed::Kind(index as u16));
                    }
                }
            }
        }
        (self.first_order(context.caller), ContextUsed::FirstOrder)
    }

    /// Every (caller, callee, probability) edge of the first-order graph.
    pub fn edges(&self) -> impl Iterator<Item = (TaskId, &FrozenTarget)> {
        self.parts
            .first_order
            .iter()
            .enumerate()
            .flat_map(|(i, dist)| dist.targets.iter().map(move |t| (TaskId(i as u32), t)))
    }

    /// The latest episodes of `task`'s starts ([`crate::arrival`]); empty when unknown.
    pub fn episodes(&self, task: TaskId) -> Option<&Episodes> {
        self.parts.arrivals.get(task.index())
    }

    /// The resource profile of `task`.
    pub fn profile(&self, task: TaskId) -> Option<&ProfileSummary> {
        self.parts.profiles.get(task.index())
    }

    /// The resources `task` needs at `quantile`: history, else declared, else default.
    pub fn needs(&self, task: TaskId, quantile: NeedQuantile) -> ResourceVec {
        let declared = self
            .parts
            .declared
            .get(task.index())
            .and_then(Option::as_ref);
        match self.profile(task) {
            Some(profile) => profile.needs(quantile, declared, &self.parts.default_needs),
            None => *declared.unwrap_or(&self.parts.default_needs),
        }
    }

    /// The entry set for a request on `route`: the route's own when it has enough history,
    /// else the set over all requests. The flag says whether the route's was used.
    pub fn entry_set(&self, route: Option<LabelId>) -> (&FrozenEntrySet, bool) {
        if let Some(set) = route.and_then(|r| self.parts.entry_by_route.get(&r)) {
            if set.requests >= self.parts.min_context_count {
                return (set, true);
            }
        }
        (&self.parts.entry_any, false)
    }

    /// Routes with their entry sets, sorted by label id.
    pub fn routes(&self) -> Vec<(LabelId, &FrozenEntrySet)> {
        let mut routes: Vec<_> = self
            .parts
            .entry_by_route
            .iter()
            .map(|(&r, s)| (r, s))
            .collect();
        routes.sort_by_key(|(r, _)| *r);
        routes
    }
}
