//! A compact, weighted, log-bucketed histogram for delays and resource use.
//!
//! Values are `u64` (microseconds, MiB, bytes...). Values below 8 get a bucket each; above, a
//! bucket spans 1/8 of a power of two, so any quantile is within 6.25 % of the true value.
//! Storage is sparse: only occupied buckets are kept, sorted, which is a handful for a delay
//! that clusters. Weights are `f64` so that exponentially decayed counts can be stored.

use serde::{Deserialize, Serialize};

const SUB_BUCKET_BITS: u32 = 3;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// The bucket index of `value`.
pub fn bucket_of(value: u64) -> u16 {
    if value < SUB_BUCKETS {
        return value as u16;
    }
    let exponent = 63 - value.leading_zeros();
    let mantissa = (value >> (exponent - SUB_BUCKET_BITS)) & (SUB_BUCKETS - 1);
    (SUB_BUCKETS + u64::from(exponent - SUB_BUCKET_BITS) * SUB_BUCKETS + mantissa) as u16
}

/// The lowest value of bucket `bucket` and the width of the bucket.
pub fn bucket_range(bucket: u16) -> (u64, u64) {
    let bucket = u64::from(bucket);
    if bucket < SUB_BUCKETS {
        return (bucket, 1);
    }
    let exponent = (bucket - SUB_BUCKETS) / SUB_BUCKETS + u64::from(SUB_BUCKET_BITS);
    let mantissa = (bucket - SUB_BUCKETS) % SUB_BUCKETS;
    let width = 1u64 << (exponent - u64::from(SUB_BUCKET_BITS));
    ((1u64 << exponent) + mantissa * width, width)
}

/// The value that stands for bucket `bucket`: its midpoint.
pub fn bucket_value(bucket: u16) -> u64 {
    let (low, width) = bucket_range(bucket);
    low + width / 2
}

/// A sparse weighted histogram over `u64` values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogHistogram {
    buckets: Vec<(u16, f64)>,
    total: f64,
    max: u64,
}

impl LogHistogram {
    /// Adds `value` with `weight`.
    pub fn record(&mut self, value: u64, weight: f64) {
        let bucket = bucket_of(value);
        match self.buckets.binary_search_by_key(&bucket, |&(b, _)| b) {
            Ok(i) => self.buckets[i].1 += weight,
            Err(i) => self.buckets.insert(i, (bucket, weight)),
        }
        self.total += weight;
        self.max = self.max.max(value);
    }

    /// Sum of all weights.
    pub fn total_weight(&self) -> f64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The largest value ever recorded (exact, not decayed).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Number of occupied buckets.
    pub fn n_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The value below which a fraction `q` (0..=1) of the weight lies; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.buckets.is_empty() || self.total <= 0.0 {
            return None;
        }
        let target = q.clamp(0.0, 1.0) * self.total;
        let mut seen = 0.0;
        for &(bucket, weight) in &self.buckets {
            seen += weight;
            if seen >= target {
                return Some(bucket_value(bucket).min(self.max));
            }
        }
        Some(self.max)
    }

    /// The weighted mean; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        if self.buckets.is_empty() || self.total <= 0.0 {
            return None;
        }
        let sum: f64 = self
            .buckets
            .iter()
            .map(|&(bucket, weight)| bucket_value(bucket) as f64 * weight)
            .sum();
        Some(sum / self.total)
    }

    /// The occupied buckets in increasing order: (lowest value, width, weight).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, f64)> + '_ {
        self.buckets.iter().map(|&(bucket, weight)| {
            let (low, width) = bucket_range(bucket);
            (low, width, weight)
        })
    }

    /// Multiplies every weight by `factor` (used when the decay landmark moves).
    pub fn scale(&mut self, factor: f64) {
        for entry in &mut self.buckets {
            entry.1 *= factor;
        }
        self.total *= factor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_values_are_exact() {
        for v in 0..8 {
            assert_eq!(bucket_value(bucket_of(v)), v);
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut histogram = LogHistogram::default();
        for v in 1..=1000 {
            histogram.record(v, 1.0);
        }
        let p50 = histogram.quantile(0.5).unwrap() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.07, "p50 {p50}");
        let p99 = histogram.quantile(0.99).unwrap() as f64;
        assert!((p99 - 990.0).abs() / 990.0 < 0.07, "p99 {p99}");
        assert_eq!(histogram.max(), 1000);
        assert_eq!(
            histogram.n_buckets(),
            7 + 7 * 8,
            "1..8 exact, then 8 per power of two"
        );
    }

    #[test]
    fn weights_shift_the_quantile() {
        let mut histogram = LogHistogram::default();
        histogram.record(10, 1.0);
        histogram.record(1000, 9.0);
        assert!(histogram.quantile(0.5).unwrap() > 900);
        histogram.scale(0.5);
        assert!((histogram.total_weight() - 5.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn bucket_contains_its_value(value in any::<u64>()) {
            let (low, width) = bucket_range(bucket_of(value));
            prop_assert!(low <= value);
            prop_assert!(value - low < width);
            if value >= 8 {
                prop_assert!((width as f64) / (low as f64) <= 0.125 + 1e-12);
            }
        }
    }
}
