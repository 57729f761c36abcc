//! Claims: what the pre-warms counting on an instance expect of it, each over the interval
//! its step is expected to hold the instance ([`Claims`]), and how long a task's steps hold
//! one ([`RunTimes`], which the executor learns from the starts and ends it sees). The
//! simulator's engine and the runtime's pool keep an instance's claims alike; see the
//! [executor's docs](super) for how claims decide between claiming an instance and
//! starting one.

use crate::ids::TaskId;
use crate::policy::PolicyEvent;
use std::collections::HashMap;

/// At most this many steps in flight are timed by [`RunTimes`]; past it, new ones are not.
pub const MAX_TIMED_RUNS: usize = 1 << 16;

/// How long each task's steps hold an instance, as the executor sees them start and end:
/// a high-water mark that jumps to a longer run at once and sinks an eighth of the way
/// towards each shorter one (a claim that underestimates lets two steps meet on one
/// instance, one that overestimates only starts an instance more).
#[derive(Debug, Default, Clone)]
pub struct RunTimes {
    started: HashMap<u64, (TaskId, u64)>,
    run_us: Vec<u64>,
}

impl RunTimes {
    /// Takes in `event`.
    pub fn observe(&mut self, event: &PolicyEvent) {
        match *event {
            PolicyEvent::Start {
                task,
                invocation,
                at_us,
                ..
            } => {
                if self.started.len() < MAX_TIMED_RUNS {
                    self.started.insert(invocation, (task, at_us));
                }
            }
            PolicyEvent::End {
                task,
                invocation,
                at_us,
            } => {
                let Some((started, from)) = self.started.remove(&invocation) else {
                    return;
                };
                if started != task {
                    return;
                }
                let run = at_us.saturating_sub(from);
                let slot = task.index();
                if self.run_us.len() <= slot {
                    self.run_us.resize(slot + 1, 0);
                }
                let mark = &mut self.run_us[slot];
                *mark = if run >= *mark {
                    run
                } else {
                    *mark - (*mark - run) / 8
                };
            }
            PolicyEvent::Tick { .. } | PolicyEvent::Evicted { .. } => {}
        }
    }

    /// How long a step of `task` holds its instance, µs (0 before one was seen).
    pub fn run_us(&self, task: TaskId) -> u64 {
        self.run_us.get(task.index()).copied().unwrap_or(0)
    }
}

/// The least weight of a claim: a pre-warm given probability 0 still counts a little.
pub const MIN_CLAIM: f64 = 0.01;

/// What a pre-warm of probability `probability` adds to the claims on its instance: the
/// probability, at least [`MIN_CLAIM`], at most 1 (1 when it is not a number).
pub fn claim_weight(probability: f64) -> f64 {
    if probability.is_nan() {
        1.0
    } else {
        probability.clamp(MIN_CLAIM, 1.0)
    }
}

/// Claims that leave no room for another pre-warm (an instance a host keeps from
/// pre-warms, e.g. one still settling).
pub const FULL_CLAIMS: f64 = 1.0;

/// At most this many claims are kept per instance; past it the one that ends first goes
/// (claims of overlapping intervals add up to at most one use, so only pre-warms spread
/// over a long time can come near it).
pub const MAX_CLAIMS: usize = 64;

/// One pre-warm counting on an instance: it expects its step between `from` and `until`,
/// with weight [`claim_weight`] of its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Claim<T> {
    /// Its pre-warm's ready time.
    pub from: T,
    /// The end of its pre-warm's window.
    pub until: T,
    /// Its [`claim_weight`].
    pub weight: f64,
}

/// The pre-warms counting on one instance, each over its interval (see the module docs);
/// `T` is the host's time. Hosts keep one per instance and give the rules the weight over
/// the interval in question ([`Claims::over`]) as [`super::Candidate::claims`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claims<T> {
    list: Vec<Claim<T>>,
}

impl<T> From<Claim<T>> for Claims<T> {
    fn from(claim: Claim<T>) -> Self {
        Claims { list: vec![claim] }
    }
}

impl<T> Default for Claims<T> {
    fn default() -> Self {
        Claims { list: Vec::new() }
    }
}

impl<T: Ord + Copy> Claim<T> {
    /// The claim of a pre-warm of `probability` expecting its step between `from` and
    /// `until` (swapped if given the wrong way round).
    pub fn new(from: T, until: T, probability: f64) -> Claim<T> {
        Claim {
            from: from.min(until),
            until: from.max(until),
            weight: claim_weight(probability),
        }
    }
}

impl<T: Ord + Copy> Claims<T> {
    /// Adds `claim`.
    pub fn push(&mut self, claim: Claim<T>) {
        if self.list.len() >= MAX_CLAIMS {
            if let Some(first) = (0..self.list.len()).min_by_key(|&i| self.list[i].until) {
                self.list.swap_remove(first);
            }
        }
        self.list.push(claim);
    }

    /// Adds the claim of a pre-warm of `probability` expecting its step between `from`
    /// and `until` ([`Claim::new`]).
    pub fn add(&mut self, from: T, until: T, probability: f64) {
        self.push(Claim::new(from, until, probability));
    }

    /// The weight of the claims whose interval meets `from..=until`.
    pub fn over(&self, from: T, until: T) -> f64 {
        self.list
            .iter()
            .filter(|c| c.from <= until && c.until >= from)
            .map(|c| c.weight)
            .sum()
    }

    /// An arrival at `at` takes the instance: the claim it answers (the one whose interval
    /// holds `at` and ends first) is settled, and claims that ended before `at` go. An
    /// arrival no claim here expected settles none: taking another step's claim would
    /// leave that step to find no instance when it comes, and the next arrival to take
    /// another's, and so on (the arrival's own claim, elsewhere, lapses at its end).
    pub fn serve(&mut self, at: T) {
        self.forget_ended(at);
        let answered = (0..self.list.len())
            .filter(|&i| self.list[i].from <= at)
            .min_by_key(|&i| self.list[i].until);
        if let Some(i) = answered {
            self.list.swap_remove(i);
        }
    }

    /// Drops the claims whose interval ended before `now`.
    pub fn forget_ended(&mut self, now: T) {
        self.list.retain(|c| c.until >= now);
    }

    /// The bet a pre-warmed instance no step has used yet stands for at `now` (see
    /// `IdleInstance::bet`): the weight of the claims still standing (ending at `now` or
    /// later) and the end of the latest (`now` when none). The hosts' one rule for it.
    pub fn bet(&self, now: T) -> (f64, T) {
        let weight = self
            .list
            .iter()
            .filter(|c| c.until >= now)
            .map(|c| c.weight)
            .sum();
        (weight, self.latest_until().unwrap_or(now).max(now))
    }

    /// The end of the latest claim's interval: a host keeps the instance until then (and a
    /// grace), whatever its keep-alive says.
    pub fn latest_until(&self) -> Option<T> {
        self.list.iter().map(|c| c.until).max()
    }

    /// Until when an instance that just finished a step is held for the claims still
    /// standing at `now` (the latest one's end plus `grace`); `None`: none stands. Drops
    /// the ended ones. The hosts' one rule for it (µs in the simulator, `Instant` in the
    /// runtime).
    pub fn hold_until<D>(&mut self, now: T, grace: D) -> Option<T>
    where
        T: std::ops::Add<D, Output = T>,
    {
        self.forget_ended(now);
        self.latest_until().map(|until| until + grace)
    }

    /// Whether no claim stands.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many claims stand.
    pub fn len(&self) -> usize {
        self.list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{choose_for_prewarm, Candidate};

    #[test]
    fn claims_count_where_their_intervals_meet_and_an_arrival_settles_the_one_it_answers() {
        let mut claims = Claims::default();
        claims.add(100u64, 200, 1.0);
        claims.add(300, 400, 0.5);
        assert_eq!(claims.over(150, 150), 1.0, "the first step's instant");
        assert_eq!(claims.over(250, 280), 0.0, "between the two: free");
        assert_eq!(claims.over(190, 310), 1.5, "an interval meeting both");
        assert_eq!(claims.over(401, 500), 0.0, "after both");
        // Two sure pre-warms one after another share the instance; a third for the same
        // time as the first needs another.
        let one = Candidate {
            id: 1,
            ready_at: 0u64,
            keep_until: 1_000,
            idle_since: 0,
            claims: claims.over(250, 280),
        };
        assert_eq!(choose_for_prewarm([one], 250, 240, 1.0), Some(1));
        let busy_then = Candidate {
            claims: claims.over(120, 180),
            ..one
        };
        assert_eq!(choose_for_prewarm([busy_then], 120, 100, 1.0), None);
        // An arrival at 150 answers the first claim; the second stays.
        claims.serve(150);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims.over(0, 1_000), 0.5);
        // An arrival before any claim's interval answers none.
        claims.add(600, 700, 1.0);
        claims.serve(10);
        assert_eq!(claims.over(0, 1_000), 1.5, "both claims stand");
        claims.serve(350);
        assert_eq!(claims.over(0, 1_000), 1.0, "the 300–400 claim was answered");
        assert_eq!(claims.latest_until(), Some(700), "kept for the latest");
        assert_eq!(claims.clone().hold_until(650, 5), Some(705));
        assert_eq!(claims.bet(650), (1.0, 700), "what still stands, until when");
        assert_eq!(claims.bet(701), (0.0, 701), "nothing stands");
        // Ended claims go.
        claims.forget_ended(701);
        assert!(claims.is_empty());
        // Backwards intervals are turned round; the list stays bounded.
        claims.add(50, 10, 1.0);
        assert_eq!(claims.over(20, 20), 1.0);
        for i in 0..(MAX_CLAIMS as u64 * 2) {
            claims.add(1_000 + i, 1_000 + i, 0.0);
        }
        assert_eq!(claims.len(), MAX_CLAIMS);
        assert_eq!(claims.over(10, 50), 0.0, "the one ending first went");
    }
}
