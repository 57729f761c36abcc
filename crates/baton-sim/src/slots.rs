//! Start slots: at most so many instance starts under way at once on the node, as the
//! runtime's pool allows (`WarmPool::max_cold_starts`, its cores). A start takes the slot
//! that frees first and holds it for its start time. A pre-warm that finds none starts when
//! one frees (ready that much later); an arrival that finds none waits, in arrival order,
//! and takes an instance of its function that becomes idle or is pre-warmed meanwhile, or
//! the next free slot, as a step waits in the pool.

use std::collections::VecDeque;

/// The node's start slots and the arrivals waiting for one.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    /// When each slot is free again, µs (empty: no bound).
    free_at: Vec<u64>,
    /// Arrivals waiting (arrival id, since µs), first come first.
    waiting: VecDeque<(u32, u64)>,
}

impl Slots {
    /// `n` slots (0: starts are not bounded).
    pub(crate) fn new(n: usize) -> Slots {
        Slots {
            free_at: vec![0; n],
            waiting: VecDeque::new(),
        }
    }

    /// When the first slot is free, µs (0 without a bound).
    pub(crate) fn first_free_us(&self) -> u64 {
        self.free_at.iter().copied().min().unwrap_or(0)
    }

    /// Whether a start may begin at `now_us`.
    pub(crate) fn free(&self, now_us: u64) -> bool {
        self.first_free_us() <= now_us
    }

    /// Takes the slot that frees first for a start of `start_us` beginning no earlier than
    /// `now_us`; returns when the start begins.
    pub(crate) fn take(&mut self, now_us: u64, start_us: u64) -> u64 {
        let Some(slot) = (0..self.free_at.len()).min_by_key(|&i| (self.free_at[i], i)) else {
            return now_us;
        };
        let begin = self.free_at[slot].max(now_us);
        self.free_at[slot] = begin + start_us;
        begin
    }

    /// Adds a waiting arrival.
    pub(crate) fn wait(&mut self, arrival: u32, since_us: u64) {
        self.waiting.push_back((arrival, since_us));
    }

    /// Whether an arrival waits.
    pub(crate) fn anyone_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The first waiting arrival `is_for` accepts (its function's), taken from the line.
    pub(crate) fn take_waiting(&mut self, is_for: impl Fn(u32) -> bool) -> Option<(u32, u64)> {
        let at = self
            .waiting
            .iter()
            .position(|&(arrival, _)| is_for(arrival))?;
        self.waiting.remove(at)
    }

    /// The first waiting arrival, taken from the line.
    pub(crate) fn next_waiting(&mut self) -> Option<(u32, u64)> {
        self.waiting.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_take_the_slot_that_frees_first() {
        let mut slots = Slots::new(2);
        assert_eq!(slots.take(0, 100), 0);
        assert_eq!(slots.take(10, 100), 10);
        assert!(!slots.free(50));
        // Both busy: the next begins when the first frees.
        assert_eq!(slots.take(50, 100), 100);
        assert_eq!(slots.first_free_us(), 110);
        let mut unbounded = Slots::new(0);
        assert!(unbounded.free(0));
        assert_eq!(unbounded.take(7, 100), 7);
    }

    #[test]
    fn waiting_arrivals_leave_in_order_or_for_their_function() {
        let mut slots = Slots::new(1);
        slots.wait(3, 10);
        slots.wait(4, 11);
        slots.wait(5, 12);
        assert_eq!(slots.take_waiting(|a| a % 2 == 0), Some((4, 11)));
        assert_eq!(slots.next_waiting(), Some((3, 10)));
        assert!(slots.anyone_waiting());
        assert_eq!(slots.next_waiting(), Some((5, 12)));
        assert!(!slots.anyone_waiting());
    }
}
