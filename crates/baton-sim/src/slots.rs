//! Start slots: at most so many instance starts under way at once on the node, as the
//! runtime's pool allows (`WarmPool::max_cold_starts`, its cores). A start takes a free
//! slot and holds it for its start time. Starts that find none wait in one line, first come
//! first, as the pool's waiting starts do: an arrival (a step that found no instance) and a
//! pre-warm (its worker waiting on its own thread) alike. A waiting arrival takes an
//! instance of its function that becomes idle or ready meanwhile, or the next free slot;
//! a waiting pre-warm starts in its turn. No start books a slot ahead: one that did would
//! put every later arrival behind pre-warms decided after it. An arrival whose function
//! has a pre-warm under way waits in the line too, for an instance only, not a slot (as a
//! step waits in the pool while its function is being pre-warmed).

use std::collections::VecDeque;

/// A start waiting for a slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Waiter<P> {
    /// An arrival (its id), waiting since then, µs; for an instance of its function only
    /// (one is being pre-warmed), or for a slot as well.
    Arrival {
        arrival: u32,
        since_us: u64,
        instance_only: bool,
    },
    /// A pre-warm, with what it needs to start.
    Prewarm(P),
}

/// The node's start slots and the starts waiting for one.
#[derive(Debug)]
pub(crate) struct Slots<P> {
    /// When each slot is free again, µs (empty: no bound).
    free_at: Vec<u64>,
    /// Starts waiting, first come first.
    waiting: VecDeque<Waiter<P>>,
    /// How many of them wait for a slot (all but arrivals waiting for an instance only).
    for_slot: usize,
}

impl<P> Slots<P> {
    /// `n` slots (0: starts are not bounded).
    pub(crate) fn new(n: usize) -> Slots<P> {
        Slots {
            free_at: vec![0; n],
            waiting: VecDeque::new(),
            for_slot: 0,
        }
    }

    /// When the first slot is free, µs (0 without a bound).
    pub(crate) fn first_free_us(&self) -> u64 {
        self.free_at.iter().copied().min().unwrap_or(0)
    }

    /// Whether a start may begin at `now_us`: a slot is free and no start waits for one.
    pub(crate) fn free(&self, now_us: u64) -> bool {
        self.for_slot == 0 && self.slot_free(now_us)
    }

    fn slot_free(&self, now_us: u64) -> bool {
        self.first_free_us() <= now_us
    }

    /// Takes a slot free at `now_us` for a start of `start_us`; whether one was free
    /// (without a bound, always).
    pub(crate) fn take(&mut self, now_us: u64, start_us: u64) -> bool {
        let Some(slot) = (0..self.free_at.len()).min_by_key(|&i| (self.free_at[i], i)) else {
            return true;
        };
        if self.free_at[slot] > now_us {
            return false;
        }
        self.free_at[slot] = now_us + start_us;
        true
    }

    /// Adds a waiting start at the end of the line.
    pub(crate) fn wait(&mut self, waiter: Waiter<P>) {
        self.for_slot += usize::from(needs_slot(&waiter));
        self.waiting.push_back(waiter);
    }

    /// Whether anything waits, for a slot or an instance.
    pub(crate) fn anyone_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether a start waits for a slot.
    pub(crate) fn waiting_for_slot(&self) -> bool {
        self.for_slot > 0
    }

    /// Arrivals `is_for` accepts that wait for an instance only wait for a slot as well
    /// from now on, keeping their place (their function's pre-warms have all started).
    pub(crate) fn need_slot(&mut self, is_for: impl Fn(u32) -> bool) {
        for waiter in &mut self.waiting {
            if let Waiter::Arrival {
                arrival,
                instance_only,
                ..
            } = waiter
            {
                if *instance_only && is_for(*arrival) {
                    *instance_only = false;
                    self.for_slot += 1;
                }
            }
        }
    }

    /// The first waiting arrival `is_for` accepts (its function's), taken from the line.
    pub(crate) fn take_waiting(&mut self, is_for: impl Fn(u32) -> bool) -> Option<(u32, u64)> {
        let at = self
            .waiting
            .iter()
            .position(|w| matches!(*w, Waiter::Arrival { arrival, .. } if is_for(arrival)))?;
        let waiter = self.waiting.remove(at)?;
        self.for_slot -= usize::from(needs_slot(&waiter));
        match waiter {
            Waiter::Arrival {
                arrival, since_us, ..
            } => Some((arrival, since_us)),
            Waiter::Prewarm(_) => None,
        }
    }

    /// The first start waiting for a slot, taken from the line, if a slot is free at
    /// `now_us`.
    pub(crate) fn next_waiting(&mut self, now_us: u64) -> Option<Waiter<P>> {
        if self.for_slot == 0 || !self.slot_free(now_us) {
            return None;
        }
        let at = self.waiting.iter().position(needs_slot)?;
        self.for_slot -= 1;
        self.waiting.remove(at)
    }
}

fn needs_slot<P>(waiter: &Waiter<P>) -> bool {
    !matches!(
        waiter,
        Waiter::Arrival {
            instance_only: true,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_takes_a_free_slot_and_none_is_booked_ahead() {
        let mut slots: Slots<()> = Slots::new(2);
        assert!(slots.take(0, 100));
        assert!(slots.take(10, 100));
        assert!(!slots.free(50));
        // Both busy: no start begins until one frees.
        assert!(!slots.take(50, 100));
        assert_eq!(slots.first_free_us(), 100);
        assert!(slots.take(100, 100));
        assert_eq!(slots.first_free_us(), 110);
        let mut unbounded: Slots<()> = Slots::new(0);
        assert!(unbounded.free(0));
        assert!(unbounded.take(7, 100));
    }

    fn arrival(arrival: u32, since_us: u64) -> Waiter<char> {
        Waiter::Arrival {
            arrival,
            since_us,
            instance_only: false,
        }
    }

    #[test]
    fn starts_wait_in_one_line_first_come_first() {
        let mut slots = Slots::new(1);
        assert!(slots.take(0, 100));
        slots.wait(arrival(3, 10));
        slots.wait(Waiter::Prewarm('p'));
        slots.wait(arrival(4, 11));
        slots.wait(arrival(5, 12));
        // A free slot is not free for a newcomer while others wait.
        assert!(!slots.free(200));
        // An arrival leaves for its function's instance, pre-warms never do.
        assert_eq!(slots.take_waiting(|a| a % 2 == 0), Some((4, 11)));
        assert_eq!(slots.next_waiting(50), None, "no slot free yet");
        assert_eq!(slots.next_waiting(100), Some(arrival(3, 10)));
        assert_eq!(slots.next_waiting(100), Some(Waiter::Prewarm('p')));
        assert!(slots.waiting_for_slot());
        assert_eq!(slots.next_waiting(100), Some(arrival(5, 12)));
        assert!(!slots.anyone_waiting());
        assert!(slots.free(100));
    }

    #[test]
    fn an_arrival_waiting_for_a_pre_warm_wants_no_slot_until_told() {
        let mut slots = Slots::new(1);
        slots.wait(Waiter::Arrival {
            arrival: 7,
            since_us: 5,
            instance_only: true,
        });
        slots.wait(arrival(8, 6));
        assert!(slots.anyone_waiting());
        // The slot goes to the one behind it, and newcomers may not pass that one.
        assert!(!slots.free(10));
        assert_eq!(slots.next_waiting(10), Some(arrival(8, 6)));
        assert!(
            slots.free(10),
            "only an arrival waiting for an instance is left"
        );
        assert_eq!(slots.next_waiting(10), None);
        // Its function's pre-warms all started: it keeps its place and wants a slot.
        slots.need_slot(|a| a == 7);
        assert!(!slots.free(10));
        assert_eq!(
            slots.next_waiting(10),
            Some(Waiter::Arrival {
                arrival: 7,
                since_us: 5,
                instance_only: false
            })
        );
        // Handed an instance instead, it leaves whatever it waited for.
        slots.wait(Waiter::Arrival {
            arrival: 9,
            since_us: 20,
            instance_only: true,
        });
        assert_eq!(slots.take_waiting(|a| a == 9), Some((9, 20)));
        assert!(!slots.anyone_waiting());
    }
}
