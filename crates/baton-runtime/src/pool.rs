//! The warm pool: idle workers per function, kept until a deadline, with counts of hits,
//! cold starts, pre-warms used and wasted.
//!
//! A pre-warm starts a worker in the background; while it is starting, a request for the
//! same function waits for it instead of starting a duplicate (the wait is shorter than a
//! cold start, since the pre-warm began earlier). Workers are only ever handed to one
//! caller at a time.

use crate::limits::Mechanism;
use crate::manifest::FunctionSpec;
use crate::process::{Worker, WorkerError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Counters of the pool's work.
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Requests served by an idle worker.
    pub hits: AtomicU64,
    /// Requests that started a worker themselves.
    pub cold_starts: AtomicU64,
    /// Pre-warms started.
    pub prewarms: AtomicU64,
    /// Pre-warmed workers used.
    pub prewarms_used: AtomicU64,
    /// Pre-warmed workers released unused.
    pub prewarms_wasted: AtomicU64,
    /// Pre-warms that failed to start.
    pub prewarms_failed: AtomicU64,
}

#[derive(Debug)]
struct Idle {
    worker: Worker,
    until: Instant,
    prewarmed: bool,
}

#[derive(Debug, Default)]
struct State {
    idle: HashMap<String, Vec<Idle>>,
    starting: HashMap<String, usize>,
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
}

/// Idle workers per function. Cheap to share: clone the `Arc`.
#[derive(Debug)]
pub struct WarmPool {
    functions: HashMap<String, FunctionSpec>,
    mechanism: Mechanism,
    state: Mutex<State>,
    started: Condvar,
    /// The counts.
    pub counters: PoolCounters,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every mutation is a single map update, so a poisoned state is still consistent.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl WarmPool {
    /// A pool for `functions` whose workers run under `mechanism`.
    pub fn new(functions: Vec<FunctionSpec>, mechanism: Mechanism) -> Arc<WarmPool> {
        Arc::new(WarmPool {
            functions: functions.into_iter().map(|f| (f.name.clone(), f)).collect(),
            mechanism,
            state: Mutex::new(State::default()),
            started: Condvar::new(),
            counters: PoolCounters::default(),
        })
    }

    /// The spec of `name`.
    pub fn spec(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.get(name)
    }

    /// Idle workers of `name`.
    pub fn idle_count(&self, name: &str) -> usize {
        lock(&self.state).idle.get(name).map_or(0, Vec::len)
    }

    /// A worker for `name`: an idle one (pre-warmed first), else one still being pre-warmed
    /// (waited for), else a cold start.
    pub fn take(&self, name: &str) -> Result<Lease, WorkerError> {
        let spec = self
            .functions
            .get(name)
            .ok_or_else(|| WorkerError::Function {
                function: name.to_owned(),
                message: "unknown function".into(),
            })?;
        let asked = Instant::now();
        let mut state = lock(&self.state);
        loop {
            if let Some(list) = state.idle.get_mut(name) {
                // Pre-warmed ones were made for this; otherwise the most recently used.
                let position = list
                    .iter()
                    .rposition(|i| i.prewarmed)
                    .or_else(|| list.len().checked_sub(1));
                if let Some(position) = position {
                    let idle = list.remove(position);
                    let warmth = if idle.prewarmed {
                        self.counters.prewarms_used.fetch_add(1, Ordering::Relaxed);
                        Warmth::Prewarmed
                    } else {
                        Warmth::Warm
                    };
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Lease {
                        worker: idle.worker,
                        warmth,
                        wait_us: asked.elapsed().as_micros() as u64,
                    });
                }
            }
            if state.starting.get(name).copied().unwrap_or(0) == 0 {
                break;
            }
            state = self
                .started
                .wait_timeout(state, Duration::from_millis(spec.timeout_ms))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        drop(state);
        self.counters.cold_starts.fetch_add(1, Ordering::Relaxed);
        let worker = Worker::spawn(spec, &self.mechanism)?;
        Ok(Lease {
            worker,
            warmth: Warmth::Cold,
            wait_us: asked.elapsed().as_micros() as u64,
        })
    }

    /// Returns a worker to the pool until `keep_until`; a dead one is dropped.
    pub fn give_back(&self, name: &str, worker: Worker, keep_until: Instant) {
        if !worker.is_alive() || keep_until <= Instant::now() {
            return;
        }
        lock(&self.state)
            .idle
            .entry(name.to_owned())
            .or_default()
            .push(Idle {
                worker,
                until: keep_until,
                prewarmed: false,
            });
    }

    /// Starts a worker for `name` in the background, kept until `until` if unused.
    pub fn prewarm(self: &Arc<Self>, name: &str, until: Instant) {
        let Some(spec) = self.functions.get(name).cloned() else {
            return;
        };
        *lock(&self.state)
            .starting
            .entry(name.to_owned())
            .or_default() += 1;
        self.counters.prewarms.fetch_add(1, Ordering::Relaxed);
        let pool = Arc::clone(self);
        let owned = name.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("baton-prewarm-{name}"))
            .spawn(move || {
                let name = owned;
                let worker = Worker::spawn(&spec, &pool.mechanism);
                let mut state = lock(&pool.state);
                if let Some(count) = state.starting.get_mut(&name) {
                    *count = count.saturating_sub(1);
                }
                match worker {
                    Ok(worker) => state.idle.entry(name).or_default().push(Idle {
                        worker,
                        until,
                        prewarmed: true,
                    }),
                    Err(_) => {
                        pool.counters
                            .prewarms_failed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(state);
                pool.started.notify_all();
            });
        if spawned.is_err() {
            if let Some(count) = lock(&self.state).starting.get_mut(name) {
                *count = count.saturating_sub(1);
            }
            self.counters
                .prewarms_failed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Releases idle workers whose deadline has passed; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut expired = Vec::new();
        {
            let mut state = lock(&self.state);
            for list in state.idle.values_mut() {
                let mut index = 0;
                while index < list.len() {
                    if list[index].until <= now {
                        expired.push(list.swap_remove(index));
                    } else {
                        index += 1;
                    }
                }
            }
        }
        for idle in &expired {
            if idle.prewarmed {
                self.counters
                    .prewarms_wasted
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        expired.len()
    }
}
