//! A token bucket for an instance's reserved bandwidth: bytes moved through baton's host
//! calls take tokens; a call that overdraws waits until the bucket has refilled. Pure: the
//! caller passes the time and does the waiting.

use std::time::{Duration, Instant};

/// Smallest burst, bytes: a small message never waits.
pub const MIN_BURST_BYTES: f64 = 64.0 * 1024.0;

/// Tokens (bytes) refilled at the reserved rate, up to a burst of 100 ms of traffic.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `mbps` megabits per second, as of `now`.
    pub fn new(mbps: u64, now: Instant) -> TokenBucket {
        let rate = mbps as f64 * 1e6 / 8.0;
        let burst = (rate / 10.0).max(MIN_BURST_BYTES);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes `bytes` at `now`; returns how long the caller must wait before the data may
    /// move (zero while the bucket covers it). The debt is kept, so the average rate over
    /// any long transfer is the reserved one.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_messages_pass_and_a_long_transfer_runs_at_the_rate() {
        let t0 = Instant::now();
        // 8 Mbit/s = 1,000,000 bytes/s; burst 100,000 bytes.
        let mut bucket = TokenBucket::new(8, t0);
        assert_eq!(bucket.take(1_000, t0), Duration::ZERO);
        // 1 MB in 10 chunks at the same instant: the wait grows to (1,001,000 − burst)/rate.
        let mut wait = Duration::ZERO;
        for _ in 0..10 {
            wait = bucket.take(100_000, t0);
        }
        let expected = (1_001_000.0 - 100_000.0) / 1e6;
        assert!((wait.as_secs_f64() - expected).abs() < 1e-6, "{wait:?}");
        // After waiting that long the debt is paid and the bucket refills to its burst.
        let later = t0 + wait + Duration::from_secs(1);
        assert_eq!(bucket.take(100_000, later), Duration::ZERO);
        assert!(bucket.take(1, later) > Duration::ZERO, "burst is capped");
    }

    #[test]
    fn time_going_backwards_does_not_refill() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(8, t0 + Duration::from_secs(1));
        bucket.take(100_000, t0 + Duration::from_secs(1));
        assert!(bucket.take(10_000, t0) > Duration::ZERO);
    }
}
