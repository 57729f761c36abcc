//! The machine's own penalty after an idle gap, measured beside the director's sparse rows
//! of `baton bench hop` so the two can be compared in one run.
//!
//! Two probes, each timed back to back and after the same gap as the director's calls:
//! - compute: a dependent arithmetic loop as long as the director's call back to back,
//!   touching no memory (what a CPU frequency or idle-state penalty would slow);
//! - memory: a pointer chase over [`LINES`] cache lines, each on its own 4 KiB page of a
//!   16 MiB buffer, in a random order (dependent loads, as a call's misses mostly are).
//!
//! The memory probe is also timed after the gap spent spinning instead of sleeping: if the
//! lines are lost then too, it is not this thread's idle state that loses them but whatever
//! else runs on the core meanwhile (on a virtual machine, the host and its other guests).
//!
//! Their difference per line is what one cache line and page translation the process
//! touched before the gap costs again after it; the director's extra time after the gap,
//! divided by it, is how many such lines its call touches (an estimate: code pages, heap,
//! the instance's memory and the kernel's own data all count).

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Cache lines the memory probe walks.
pub const LINES: usize = 1024;

/// The buffer they are spread over, bytes (a page each: 4,096 pages).
const BUFFER_BYTES: usize = 16 << 20;

/// Bytes per page and per cache line.
const PAGE: usize = 4096;
const LINE: usize = 64;

/// The two probes after one gap.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MachinePenalty {
    /// Compute after the gap over compute back to back, p50s.
    pub compute_ratio: f64,
    /// The memory probe after the gap over back to back, p50s.
    pub memory_ratio: f64,
    /// What one line of the memory probe costs more after the gap, ns (p50s' difference
    /// over [`LINES`]).
    pub cold_line_ns: f64,
    /// The memory probe after the gap spent spinning on this thread (never idle) over back
    /// to back, p50s.
    pub memory_ratio_spinning: f64,
}

/// The probes, built once: the chase's buffer and the compute loop's length.
pub struct Probes {
    chase: Vec<u64>,
    start: usize,
    compute_iterations: u64,
    tight_compute_ns: u64,
    tight_chase_ns: u64,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("compute_iterations", &self.compute_iterations)
            .finish_non_exhaustive()
    }
}

/// A small deterministic generator for the chase's order (xorshift64*).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// `iterations` of a dependent arithmetic loop that touches no memory, ns.
fn compute(iterations: u64) -> u64 {
    let started = Instant::now();
    let mut x = black_box(0x1234_5678u64);
    for _ in 0..iterations {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
    }
    black_box(x);
    started.elapsed().as_nanos() as u64
}

/// The median of `samples`, ns, by the rule the bench's other figures use.
fn median(mut samples: Vec<u64>) -> u64 {
    samples.sort_unstable();
    baton_core::rank::nearest_rank(&samples, 0.5).unwrap_or(0)
}

impl Probes {
    /// Builds the chase and sizes the compute loop to last about `compute_ns` back to
    /// back, then times both back to back (`tight` samples each).
    pub fn new(compute_ns: u64, tight: usize) -> Probes {
        let words = BUFFER_BYTES / 8;
        let mut chase = vec![0u64; words];
        // One line on each of LINES distinct pages, at a random line within its page.
        let pages = BUFFER_BYTES / PAGE;
        let mut order: Vec<usize> = (0..pages).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..order.len()).rev() {
            let j = (next_random(&mut state) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let slots: Vec<usize> = order[..LINES]
            .iter()
            .map(|&page| {
                let line = (next_random(&mut state) % (PAGE / LINE) as u64) as usize;
                (page * PAGE + line * LINE) / 8
            })
            .collect();
        for (k, &slot) in slots.iter().enumerate() {
            chase[slot] = slots[(k + 1) % LINES] as u64;
        }
        // Size the compute loop: double until it takes a measurable time, then scale.
        let mut iterations = 1024u64;
        let compute_iterations = loop {
            let took = compute(iterations);
            if took >= 20_000 || iterations >= 1 << 34 {
                let scaled = iterations as u128 * compute_ns.max(1) as u128 / took.max(1) as u128;
                break (scaled as u64).max(1);
            }
            iterations *= 2;
        };
        let mut probes = Probes {
            chase,
            start: slots[0],
            compute_iterations,
            tight_compute_ns: 0,
            tight_chase_ns: 0,
        };
        let tight = tight.max(3);
        probes.tight_compute_ns = median((0..tight).map(|_| compute(compute_iterations)).collect());
        probes.tight_chase_ns = median((0..tight).map(|_| probes.walk()).collect());
        probes
    }

    /// One walk of the chase, ns.
    fn walk(&self) -> u64 {
        let started = Instant::now();
        let mut at = self.start;
        for _ in 0..LINES {
            at = black_box(self.chase[at]) as usize;
        }
        black_box(at);
        started.elapsed().as_nanos() as u64
    }

    /// Both probes after `gap` each, `samples` times.
    pub fn after(&self, gap: Duration, samples: usize) -> MachinePenalty {
        let (mut computed, mut chase, mut spun) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..samples.max(1) {
            std::thread::sleep(gap);
            computed.push(compute(self.compute_iterations));
            std::thread::sleep(gap);
            chase.push(self.walk());
            let until = Instant::now() + gap;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            spun.push(self.walk());
        }
        let (computed, chase, spun) = (median(computed), median(chase), median(spun));
        let tight_chase = self.tight_chase_ns.max(1) as f64;
        MachinePenalty {
            compute_ratio: computed as f64 / self.tight_compute_ns.max(1) as f64,
            memory_ratio: chase as f64 / tight_chase,
            cold_line_ns: chase.saturating_sub(self.tight_chase_ns) as f64 / LINES as f64,
            memory_ratio_spinning: spun as f64 / tight_chase,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chase_visits_every_line_once_before_it_comes_back() {
        let probes = Probes::new(1_000, 3);
        let mut seen = std::collections::HashSet::new();
        let mut at = probes.start;
        for _ in 0..LINES {
            assert!(seen.insert(at), "slot {at} visited twice");
            assert_eq!(at % (LINE / 8), 0, "slot {at} is not at a line's start");
            at = probes.chase[at] as usize;
        }
        assert_eq!(at, probes.start);
        let pages: std::collections::HashSet<usize> =
            seen.iter().map(|&slot| slot * 8 / PAGE).collect();
        assert_eq!(pages.len(), LINES, "one line per page");
    }
}
