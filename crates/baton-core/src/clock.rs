//! Time as the core sees it: injected, never read from the wall. The runtime passes a
//! system clock, the simulator a virtual one.

use std::sync::atomic::{AtomicU64, Ordering};

/// A source of the current time in µs since the epoch.
pub trait Clock: Send + Sync {
    /// Now, µs.
    fn now_us(&self) -> u64;
}

/// A clock that moves only when told (simulation and tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    now_us: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_us`.
    pub fn new(now_us: u64) -> ManualClock {
        ManualClock {
            now_us: AtomicU64::new(now_us),
        }
    }

    /// Sets the time; it never goes backwards.
    pub fn set(&self, now_us: u64) {
        self.now_us.fetch_max(now_us, Ordering::Relaxed);
    }

    /// Moves the time forward by `delta_us`.
    pub fn advance(&self, delta_us: u64) {
        self.now_us.fetch_add(delta_us, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.now_us.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_never_goes_back() {
        let clock = ManualClock::new(10);
        clock.set(5);
        assert_eq!(clock.now_us(), 10);
        clock.advance(3);
        assert_eq!(clock.now_us(), 13);
    }
}
