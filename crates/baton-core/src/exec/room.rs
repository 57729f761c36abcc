//! Making room: which idle instances go when memory is short. One rule for the
//! simulator's node memory and the runtime's idle budget, so both evict the same instances
//! for the same need, and refuse the same pre-warms.
//!
//! The host lists what could go ([`Evictable`]: its id, the policy's
//! [`Executor::evict_priority`](super::Executor::evict_priority) of it, its memory, whether
//! a pre-warm counts on it) and says how much is free; [`make_room`] answers which go, in
//! order. For a start that must happen (an arrival's cold start, the budget after a step),
//! the lowest priorities go until enough is free. For a pre-warm (its bet priced by
//! [`Executor::bet_priority`](super::Executor::bet_priority)), only unclaimed instances
//! the policy values below the bet go, and none at all unless they free enough: a bet
//! displaces nothing it cannot fit in, and the pre-warm is refused instead.

/// An idle instance that could make room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evictable {
    /// The host's id of it (ties in priority: lower id first).
    pub id: u64,
    /// The policy's eviction priority of it (lowest goes first).
    pub priority: f64,
    /// The memory it holds, MiB.
    pub memory_mib: u64,
    /// Whether a pre-warm counts on it (a pre-warm never displaces it).
    pub claimed: bool,
}

/// Which of `candidates` go so that `needed_mib` fits when `free_mib` is free (negative:
/// already over), in eviction order, and whether it then fits. `bet`: the priority of the
/// pre-warm asking (`None`: room for something that must start). See the module docs.
pub fn make_room(
    candidates: &[Evictable],
    free_mib: i64,
    needed_mib: u64,
    bet: Option<f64>,
) -> (Vec<u64>, bool) {
    let needed = i64::try_from(needed_mib).unwrap_or(i64::MAX);
    if free_mib >= needed {
        return (Vec::new(), true);
    }
    let mut eligible: Vec<&Evictable> = candidates
        .iter()
        .filter(|c| bet.is_none_or(|worth| !c.claimed && c.priority < worth))
        .collect();
    if bet.is_some() {
        let freeable: i64 = eligible.iter().map(|c| c.memory_mib as i64).sum();
        if free_mib.saturating_add(freeable) < needed {
            return (Vec::new(), false);
        }
    }
    eligible.sort_by(|a, b| a.priority.total_cmp(&b.priority).then(a.id.cmp(&b.id)));
    let mut free = free_mib;
    let mut going = Vec::new();
    for c in eligible {
        if free >= needed {
            break;
        }
        free = free.saturating_add(c.memory_mib as i64);
        going.push(c.id);
    }
    (going, free >= needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evictable(id: u64, priority: f64, memory_mib: u64, claimed: bool) -> Evictable {
        Evictable {
            id,
            priority,
            memory_mib,
            claimed,
        }
    }

    #[test]
    fn a_start_that_must_happen_evicts_lowest_first_until_it_fits() {
        let idle = [
            evictable(1, 3.0, 100, false),
            evictable(2, 1.0, 100, true),
            evictable(3, 2.0, 100, false),
        ];
        assert_eq!(make_room(&idle, 150, 100, None), (vec![], true));
        assert_eq!(make_room(&idle, 50, 100, None), (vec![2], true));
        assert_eq!(make_room(&idle, -60, 100, None), (vec![2, 3], true));
        // Not enough even with all gone: all go, and it does not fit.
        assert_eq!(make_room(&idle, -500, 100, None), (vec![2, 3, 1], false));
        // Ties: lower id first.
        let tied = [evictable(9, 1.0, 10, false), evictable(4, 1.0, 10, false)];
        assert_eq!(make_room(&tied, 0, 10, None), (vec![4], true));
    }

    #[test]
    fn a_prewarm_displaces_only_unclaimed_instances_worth_less_and_only_if_it_then_fits() {
        let idle = [
            evictable(1, 3.0, 100, false),
            evictable(2, 1.0, 100, true),
            evictable(3, 2.0, 100, false),
        ];
        // Worth 2.5: only 3 (2 is claimed, 1 is worth more).
        assert_eq!(make_room(&idle, 0, 100, Some(2.5)), (vec![3], true));
        // 3 alone does not free 150: nothing goes, refused.
        assert_eq!(make_room(&idle, 0, 150, Some(2.5)), (vec![], false));
        // Worth 5: 3 then 1, never the claimed one.
        assert_eq!(make_room(&idle, 0, 150, Some(5.0)), (vec![3, 1], true));
        // A baseline's pre-warm (worth −∞) displaces nothing.
        assert_eq!(
            make_room(&idle, 0, 1, Some(f64::NEG_INFINITY)),
            (vec![], false)
        );
        assert_eq!(
            make_room(&idle, 1, 1, Some(f64::NEG_INFINITY)),
            (vec![], true)
        );
    }
}
