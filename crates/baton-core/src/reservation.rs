//! The resource pool: capacity, time-windowed reservations as guards, and preemption.
//!
//! A [`Reservation`] holds resources for a window `[start, end)` and gives them back when it
//! is dropped. Speculative reservations (pre-warms) may be preempted by committed demand
//! (running work), lowest chain probability first; the committed request is told what it
//! preempted, and the preempted guard sees it with [`Reservation::is_preempted`]. Admission
//! checks every instant of the window, so the sum of overlapping reservations never exceeds
//! capacity, and named cores are never given to two overlapping reservations.

use crate::resources::ResourceVec;
use crate::sync::Unpoisoned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use thiserror::Error;

/// Pre-warm or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReservationKind {
    /// Held for a predicted step; may be preempted.
    Speculative,
    /// Held for running work; never preempted.
    Committed,
}

/// A time window `[start_us, end_us)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Start, µs.
    pub start_us: u64,
    /// End (exclusive), µs; `u64::MAX` for open-ended.
    pub end_us: u64,
}

impl Window {
    /// From `start_us` on, without end.
    pub fn open(start_us: u64) -> Window {
        Window {
            start_us,
            end_us: u64::MAX,
        }
    }

    fn overlaps(&self, other: &Window) -> bool {
        self.start_us < other.end_us && other.start_us < self.end_us
    }

    fn contains(&self, t: u64) -> bool {
        self.start_us <= t && t < self.end_us
    }
}

/// What to reserve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReservationRequest {
    /// How much.
    pub needs: ResourceVec,
    /// When.
    pub window: Window,
    /// Speculative or committed.
    pub kind: ReservationKind,
    /// Probability of the chain it serves (orders preemption; 1 for committed).
    pub probability: f64,
    /// The plan it belongs to, if any.
    pub plan: Option<u64>,
}

/// A reservation removed to make room for committed demand.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preempted {
    /// Id of the preempted reservation.
    pub id: u64,
    /// Its plan.
    pub plan: Option<u64>,
    /// Its chain probability.
    pub probability: f64,
    /// What it held.
    pub needs: ResourceVec,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PoolError {
    /// The window is empty or reversed.
    #[error("empty reservation window [{start_us}, {end_us})")]
    EmptyWindow {
        /// Start, µs.
        start_us: u64,
        /// End, µs.
        end_us: u64,
    },
    /// Not enough free resources at some instant of the window.
    #[error("insufficient resources at t={at_us} µs: need {needs:?}, free {free:?}")]
    Insufficient {
        /// The first instant that does not fit.
        at_us: u64,
        /// What was asked.
        needs: ResourceVec,
        /// What was free then.
        free: ResourceVec,
    },
    /// Not enough named cores free over the window.
    #[error("need {needed} dedicated cores, {free} free over the window")]
    NoCores {
        /// Cores asked.
        needed: u32,
        /// Cores free.
        free: u32,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    request: ReservationRequest,
    cores: Vec<u32>,
}

#[derive(Debug, Default)]
struct PoolState {
    capacity: ResourceVec,
    entries: BTreeMap<u64, Entry>,
    preempted: BTreeSet<u64>,
    next_id: u64,
    n_preemptions: u64,
}

fn saturating_sub(a: &ResourceVec, b: &ResourceVec) -> ResourceVec {
    ResourceVec {
        cpu_millicores: a
            .total_cpu_millicores()
            .saturating_sub(b.total_cpu_millicores()),
        cores: a.cores.saturating_sub(b.cores),
        memory_mib: a.memory_mib.saturating_sub(b.memory_mib),
        net_mbps: a.net_mbps.saturating_sub(b.net_mbps),
        gpu_units: a.gpu_units.saturating_sub(b.gpu_units),
    }
}

impl PoolState {
    fn usage_at(&self, t: u64) -> ResourceVec {
        self.entries
            .values()
            .filter(|e| e.request.window.contains(t))
            .fold(ResourceVec::ZERO, |sum, e| sum + e.request.needs)
    }

    /// Checks `request` against the current entries; returns the cores it would get.
    fn admit(&self, request: &ReservationRequest) -> Result<Vec<u32>, PoolError> {
        let window = request.window;
        if window.start_us >= window.end_us {
            return Err(PoolError::EmptyWindow {
                start_us: window.start_us,
                end_us: window.end_us,
            });
        }
        let overlapping: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| e.request.window.overlaps(&window))
            .collect();
        let instants = std::iter::once(window.start_us).chain(
            overlapping
                .iter()
                .map(|e| e.request.window.start_us)
                .filter(|&t| window.contains(t)),
        );
        for t in instants {
            let used = overlapping
                .iter()
                .filter(|e| e.request.window.contains(t))
                .fold(ResourceVec::ZERO, |sum, e| sum + e.request.needs);
            if !(used + request.needs).fits_in(&self.capacity) {
                return Err(PoolError::Insufficient {
                    at_us: t,
                    needs: request.needs,
                    free: saturating_sub(&self.capacity, &used),
                });
            }
        }
        let taken: BTreeSet<u32> = overlapping
            .iter()
            .flat_map(|e| e.cores.iter().copied())
            .collect();
        let free: Vec<u32> = (0..self.capacity.cores)
            .filter(|c| !taken.contains(c))
            .collect();
        if (free.len() as u32) < request.needs.cores {
            return Err(PoolError::NoCores {
                needed: request.needs.cores,
                free: free.len() as u32,
            });
        }
        Ok(free[..request.needs.cores as usize].to_vec())
    }

    fn insert(&mut self, request: ReservationRequest, cores: Vec<u32>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, Entry { request, cores });
        id
    }
}

/// Shared handle to the pool; clones refer to the same pool.
#[derive(Debug, Clone)]
pub struct ResourcePool {
    state: Arc<Mutex<PoolState>>,
}

/// Resources held until dropped. See the module docs.
#[derive(Debug)]
pub struct Reservation {
    state: Arc<Mutex<PoolState>>,
    id: u64,
    request: ReservationRequest,
    cores: Vec<u32>,
}

/// A view of one live reservation, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservationInfo {
    /// Its id.
    pub id: u64,
    /// What it holds and when.
    pub request: ReservationRequest,
    /// Its named cores.
    pub cores: Vec<u32>,
}

fn lock(state: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    // A panic while holding the lock cannot leave the state half-updated: every mutation is
    // a single map insert or remove, so the poisoned state is still consistent.
    state.lock_unpoisoned()
}

impl ResourcePool {
    /// A pool with `capacity`; named cores are numbered `0..capacity.cores`.
    pub fn new(capacity: ResourceVec) -> ResourcePool {
        ResourcePool {
            state: Arc::new(Mutex::new(PoolState {
                capacity,
                ..PoolState::default()
            })),
        }
    }

    /// The capacity.
    pub fn capacity(&self) -> ResourceVec {
        lock(&self.state).capacity
    }

    /// Resources reserved at instant `t_us`.
    pub fn usage_at(&self, t_us: u64) -> ResourceVec {
        lock(&self.state).usage_at(t_us)
    }

    /// Whether all `requests` would fit together now, without reserving anything.
    pub fn fits_all(&self, requests: &[ReservationRequest]) -> bool {
        let mut state = lock(&self.state);
        let mut added = Vec::new();
        let mut ok = true;
        for request in requests {
            match state.admit(request) {
                Ok(cores) => added.push(state.insert(*request, cores)),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        for id in added {
            state.entries.remove(&id);
        }
        ok
    }

    /// Reserves `request` if it fits, without preempting anything.
    pub fn try_reserve(&self, request: ReservationRequest) -> Result<Reservation, PoolError> {
        let mut state = lock(&self.state);
        let cores = state.admit(&request)?;
        let id = state.insert(request, cores.clone());
        Ok(self.guard(id, request, cores))
    }

    /// Reserves all `requests` or none.
    pub fn try_reserve_all(
        &self,
        requests: &[ReservationRequest],
    ) -> Result<Vec<Reservation>, PoolError> {
        let mut state = lock(&self.state);
        let mut added: Vec<(u64, ReservationRequest, Vec<u32>)> = Vec::new();
        for request in requests {
            match state.admit(request) {
                Ok(cores) => {
                    let id = state.insert(*request, cores.clone());
                    added.push((id, *request, cores));
                }
                Err(error) => {
                    for (id, _, _) in added {
                        state.entries.remove(&id);
                    }
                    return Err(error);
                }
            }
        }
        drop(state);
        Ok(added
            .into_iter()
            .map(|(id, request, cores)| self.guard(id, request, cores))
            .collect())
    }

    /// Reserves committed demand, preempting speculative reservations that overlap its
    /// window, lowest probability first (newest first on ties), only as many as needed.
    /// Nothing is preempted when even that would not make room.
    pub fn reserve_committed(
        &self,
        mut request: ReservationRequest,
    ) -> Result<(Reservation, Vec<Preempted>), PoolError> {
        request.kind = ReservationKind::Committed;
        let mut state = lock(&self.state);
        let first_error = match state.admit(&request) {
            Ok(cores) => {
                let id = state.insert(request, cores.clone());
                return Ok((self.guard(id, request, cores), Vec::new()));
            }
            Err(error) => error,
        };
        let mut candidates: Vec<(u64, Entry)> = state
            .entries
            .iter()
            .filter(|(_, e)| {
                e.request.kind == ReservationKind::Speculative
                    && e.request.window.overlaps(&request.window)
            })
            .map(|(&id, e)| (id, e.clone()))
            .collect();
        candidates.sort_by(|a, b| {
            a.1.request
                .probability
                .total_cmp(&b.1.request.probability)
                .then(b.0.cmp(&a.0))
        });
        let mut removed: Vec<(u64, Entry)> = Vec::new();
        for (id, entry) in candidates {
            state.entries.remove(&id);
            removed.push((id, entry));
            if let Ok(cores) = state.admit(&request) {
                let preempted = removed
                    .iter()
                    .map(|(id, e)| Preempted {
                        id: *id,
                        plan: e.request.plan,
                        probability: e.request.probability,
                        needs: e.request.needs,
                    })
                    .collect();
                for (id, _) in &removed {
                    state.preempted.insert(*id);
                }
                state.n_preemptions += removed.len() as u64;
                let id = state.insert(request, cores.clone());
                return Ok((self.guard(id, request, cores), preempted));
            }
        }
        for (id, entry) in removed {
            state.entries.insert(id, entry);
        }
        Err(first_error)
    }

    /// Releases every reservation whose window ended at or before `now_us`; returns how many.
    /// Their guards then behave as preempted.
    pub fn expire(&self, now_us: u64) -> usize {
        let mut state = lock(&self.state);
        let ended: Vec<u64> = state
            .entries
            .iter()
            .filter(|(_, e)| e.request.window.end_us <= now_us)
            .map(|(&id, _)| id)
            .collect();
        for id in &ended {
            state.entries.remove(id);
            state.preempted.insert(*id);
        }
        ended.len()
    }

    /// The live reservations, by id.
    pub fn reservations(&self) -> Vec<ReservationInfo> {
        lock(&self.state)
            .entries
            .iter()
            .map(|(&id, e)| ReservationInfo {
                id,
                request: e.request,
                cores: e.cores.clone(),
            })
            .collect()
    }

    /// The live reservation `id`, if any.
    pub fn get(&self, id: u64) -> Option<ReservationInfo> {
        lock(&self.state).entries.get(&id).map(|e| ReservationInfo {
            id,
            request: e.request,
            cores: e.cores.clone(),
        })
    }

    /// Number of live reservations.
    pub fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }

    /// Whether nothing is reserved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reservations preempted so far.
    pub fn n_preemptions(&self) -> u64 {
        lock(&self.state).n_preemptions
    }

    fn guard(&self, id: u64, request: ReservationRequest, cores: Vec<u32>) -> Reservation {
        Reservation {
            state: Arc::clone(&self.state),
            id,
            request,
            cores,
        }
    }
}

impl Reservation {
    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What it holds and when.
    pub fn request(&self) -> &ReservationRequest {
        &self.request
    }

    /// The named cores it pins.
    pub fn cores(&self) -> &[u32] {
        &self.cores
    }

    /// Whether it was preempted or expired (it then holds nothing).
    pub fn is_preempted(&self) -> bool {
        lock(&self.state).preempted.contains(&self.id)
    }

    /// Turns a speculative reservation into a committed one (its pre-warm is being used).
    /// Fails with `false` when it was already preempted.
    pub fn commit(&mut self) -> bool {
        let mut state = lock(&self.state);
        match state.entries.get_mut(&self.id) {
            Some(entry) => {
                entry.request.kind = ReservationKind::Committed;
                self.request.kind = ReservationKind::Committed;
                true
            }
            None => false,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.entries.remove(&self.id);
        state.preempted.remove(&self.id);
    }
}

#[cfg(test)]
mod tests;
