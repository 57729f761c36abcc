//! Percentiles of sorted samples by nearest rank: the one rule the simulator's tables, the
//! benches, the demo and the arrival rhythms use.

/// The `q` quantile (0 to 1) of `sorted` (ascending) by nearest rank: the sample at index
/// `round((n − 1) × q)`. `None` when there are no samples; `q` outside [0, 1] is clamped.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
    sorted.get((last as f64 * q).round() as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_a_sample_and_never_panics() {
        let v = [10, 20, 30, 40];
        assert_eq!(
            nearest_rank(&v, 0.5),
            Some(30),
            "upper middle of an even count"
        );
        assert_eq!(nearest_rank(&v, 0.0), Some(10));
        assert_eq!(nearest_rank(&v, 0.99), Some(40));
        assert_eq!(nearest_rank(&[1.5, 2.5, 9.0], 0.5), Some(2.5));
        assert_eq!(nearest_rank::<u64>(&[], 0.5), None);
        assert_eq!(nearest_rank(&v, 7.0), Some(40));
        assert_eq!(nearest_rank(&v, -1.0), Some(10));
        assert_eq!(nearest_rank(&v, f64::NAN), Some(30));
    }
}
