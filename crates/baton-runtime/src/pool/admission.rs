//! Memory admission: a worker process starts only when its declared memory fits in what
//! the node gives workers, less what every live worker (idle, busy, starting) already
//! declared. A template's spare is admitted when a start takes it: until then it is part of
//! its template (a fork that has run nothing), as the simulator counts it. Each admitted worker holds a [`Charge`] that returns its memory when
//! the worker is dropped (killed, its groups removed), so the sum of live workers'
//! declared memory never exceeds the capacity.
//!
//! A request's start waits for room (at most the pool's [`CAP_WAIT`](super::CAP_WAIT),
//! then 503), and while it waits its need counts against the idle workers: the planner's
//! budget ([`WarmPool::room_mib`](super::WarmPool::room_mib)) sees it and evicts idle
//! ones in the policy's order. A pre-warm never waits: it is admitted at once or not
//! started.

use baton_core::sync::{Unpoisoned, UnpoisonedWait};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Used {
    /// Declared memory of the live workers, MiB.
    admitted_mib: u64,
    /// Declared memory of the starts waiting for room, MiB.
    waiting_mib: u64,
}

/// The node's memory for workers and what is admitted of it.
#[derive(Debug)]
pub(crate) struct Admission {
    /// `None`: nothing is refused (a pool without a budget), but charges are counted.
    capacity_mib: Option<u64>,
    used: Mutex<Used>,
    freed: Condvar,
}

/// One worker's admitted memory, returned when dropped.
#[derive(Debug)]
pub struct Charge {
    admission: Arc<Admission>,
    mib: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mut used = self.admission.lock();
        used.admitted_mib = used.admitted_mib.saturating_sub(self.mib);
        drop(used);
        self.admission.freed.notify_all();
    }
}

/// A start decided and not admitted yet (see [`Admission::expect`]).
#[derive(Debug)]
pub(crate) struct Expected<'a> {
    admission: &'a Admission,
    mib: u64,
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        let mut used = self.admission.lock();
        used.waiting_mib = used.waiting_mib.saturating_sub(self.mib);
    }
}

impl Admission {
    pub(crate) fn new(capacity_mib: Option<u64>) -> Arc<Admission> {
        Arc::new(Admission {
            capacity_mib,
            used: Mutex::new(Used::default()),
            freed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        // Every update is one or two additions: a poisoned state is still consistent.
        self.used.lock_unpoisoned()
    }

    fn fits(&self, used: &Used, mib: u64) -> bool {
        self.capacity_mib
            .is_none_or(|capacity| used.admitted_mib.saturating_add(mib) <= capacity)
    }

    fn charge(self: &Arc<Self>, used: &mut Used, mib: u64) -> Charge {
        used.admitted_mib += mib;
        Charge {
            admission: Arc::clone(self),
            mib,
        }
    }

    /// `mib` admitted now, or `None` when it does not fit.
    pub(crate) fn try_admit(self: &Arc<Self>, mib: u64) -> Option<Charge> {
        let mut used = self.lock();
        self.fits(&used, mib).then(|| self.charge(&mut used, mib))
    }

    /// `expected`'s memory admitted once it fits, waiting at most `patience`; `None`
    /// after that (or at once when it could never fit). It counts as waiting for room from
    /// [`Admission::expect`] until it is charged or refused. `waited` is told whether it
    /// had to wait.
    pub(crate) fn admit(
        self: &Arc<Self>,
        expected: Expected<'_>,
        patience: Duration,
        waited: &mut bool,
    ) -> Option<Charge> {
        let mib = expected.mib;
        // Its count moves here: removed under the same lock as it is charged.
        std::mem::forget(expected);
        let deadline = Instant::now() + patience;
        let mut used = self.lock();
        if self.fits(&used, mib) {
            used.waiting_mib = used.waiting_mib.saturating_sub(mib);
            return Some(self.charge(&mut used, mib));
        }
        if self.capacity_mib.is_some_and(|capacity| mib > capacity) {
            used.waiting_mib = used.waiting_mib.saturating_sub(mib);
            return None;
        }
        *waited = true;
        let admitted = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            used = self
                .freed
                .wait_timeout_unpoisoned(used, left.min(Duration::from_millis(50)))
                .0;
            if self.fits(&used, mib) {
                break Some(mib);
            }
        };
        used.waiting_mib = used.waiting_mib.saturating_sub(mib);
        admitted.map(|mib| self.charge(&mut used, mib))
    }

    /// Counts `mib` as a start waiting for room from now: a step's cold start from the
    /// moment it is decided (before the planner hears of the step) until
    /// [`Admission::admit`] charges or refuses it, or the guard is dropped, so a pre-warm
    /// the planner weighs meanwhile sees it.
    pub(crate) fn expect(&self, mib: u64) -> Expected<'_> {
        self.lock().waiting_mib += mib;
        Expected {
            admission: self,
            mib,
        }
    }

    /// The capacity, MiB, if any.
    pub(crate) fn capacity_mib(&self) -> Option<u64> {
        self.capacity_mib
    }

    /// Declared memory of live workers and of starts waiting for room, MiB.
    pub(crate) fn used_mib(&self) -> (u64, u64) {
        let used = self.lock();
        (used.admitted_mib, used.waiting_mib)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_never_exceed_the_capacity_and_return_when_dropped() {
        let admission = Admission::new(Some(100));
        let a = admission.try_admit(60).unwrap();
        assert!(admission.try_admit(50).is_none());
        let mut waited = false;
        // Could never fit: refused at once, not after the wait.
        assert!(admission
            .admit(admission.expect(101), Duration::from_secs(60), &mut waited)
            .is_none());
        assert!(!waited);
        // Fits once `a` goes: a waiter on another thread is admitted then.
        let waiter = {
            let admission = Arc::clone(&admission);
            std::thread::spawn(move || {
                let mut waited = false;
                let charge =
                    admission.admit(admission.expect(70), Duration::from_secs(30), &mut waited);
                (charge.is_some(), waited)
            })
        };
        while admission.used_mib().1 == 0 {
            std::thread::yield_now();
        }
        assert_eq!(admission.used_mib(), (60, 70));
        drop(a);
        assert_eq!(waiter.join().unwrap(), (true, true));
        // The waiter's charge was dropped with its thread's result.
        assert_eq!(admission.used_mib(), (0, 0));
        // Without a capacity everything is admitted, and still counted.
        let open = Admission::new(None);
        let big = open.try_admit(1 << 40).unwrap();
        assert_eq!(open.used_mib(), (1 << 40, 0));
        drop(big);
        assert_eq!(open.used_mib(), (0, 0));
    }
}
