//! Locks that outlive a panic: a thread that panicked while holding a lock poisons it,
//! and every later `lock().unwrap()` would panic too, taking the server down with one bad
//! request. baton's critical sections leave their data consistent at every await-free
//! step (maps updated by one insert or remove, counters by one store), so the data behind
//! a poisoned lock is still the last consistent state and is used as is. The one way to
//! take a lock here: [`lock`], or the [`Unpoisoned`] methods on `Mutex` and `RwLock`;
//! and the one way to wait on a `Condvar`: [`UnpoisonedWait`].

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// `mutex`'s guard, poisoned or not.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Taking a `Mutex` whether a panicking holder poisoned it or not.
pub trait Unpoisoned<T: ?Sized> {
    /// The guard.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
    /// The data, the mutex consumed.
    fn into_inner_unpoisoned(self) -> T
    where
        Self: Sized,
        T: Sized;
}

impl<T: ?Sized> Unpoisoned<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        lock(self)
    }

    fn into_inner_unpoisoned(self) -> T
    where
        T: Sized,
    {
        self.into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reading and writing an `RwLock` whether a panicking holder poisoned it or not.
pub trait UnpoisonedRw<T: ?Sized> {
    /// A read guard.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// A write guard.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> UnpoisonedRw<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Waiting on a `Condvar` whether a panicking holder poisoned its mutex or not.
pub trait UnpoisonedWait {
    /// Waits for a notification; the guard again.
    fn wait_unpoisoned<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
    /// Waits for a notification at most `timeout`; the guard again and whether the time
    /// ran out.
    fn wait_timeout_unpoisoned<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, bool);
}

impl UnpoisonedWait for Condvar {
    fn wait_unpoisoned<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait_timeout_unpoisoned<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        let (guard, result) = self
            .wait_timeout(guard, timeout)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard, result.timed_out())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_lock_poisoned_by_a_panicking_holder_still_gives_its_data() {
        let mutex = Arc::new(Mutex::new(1));
        let rw = Arc::new(RwLock::new(2));
        let (m, r) = (Arc::clone(&mutex), Arc::clone(&rw));
        let panicked = std::thread::spawn(move || {
            let _m = m.lock().unwrap();
            let _r = r.write().unwrap();
            panic!("a holder panics");
        })
        .join();
        assert!(panicked.is_err());
        assert!(mutex.is_poisoned() && rw.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*mutex.lock_unpoisoned(), 2);
        *rw.write_unpoisoned() += 1;
        assert_eq!(*rw.read_unpoisoned(), 3);
        // A poisoned mutex's condvar still waits, and its data can be taken out.
        let ready = Condvar::new();
        let (guard, timed_out) =
            ready.wait_timeout_unpoisoned(mutex.lock_unpoisoned(), Duration::from_millis(1));
        assert!(timed_out);
        drop(guard);
        let mutex = Arc::try_unwrap(mutex).unwrap();
        assert_eq!(mutex.into_inner_unpoisoned(), 2);
    }
}
