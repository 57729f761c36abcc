//! Resource profiles: the history of what each task used, as streaming quantiles.
//!
//! Each metric is a decayed [`LogHistogram`], so p50/p95/p99 follow drift while `max` keeps
//! the worst case ever seen. A task with no history for a metric falls back to its declared
//! limit, then to the configured default.

use crate::histogram::LogHistogram;
use crate::request::Usage;
use crate::resources::ResourceVec;
use serde::{Deserialize, Serialize};

/// The metrics a profile keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Wall time, µs.
    WallUs,
    /// CPU time, µs.
    CpuUs,
    /// Peak memory, MiB.
    MemPeakMib,
    /// Network bytes.
    NetBytes,
    /// GPU time, µs.
    GpuUs,
    /// Cold-start time, µs.
    ColdStartUs,
}

impl Metric {
    /// Every metric, in storage order.
    pub const ALL: [Metric; 6] = [
        Metric::WallUs,
        Metric::CpuUs,
        Metric::MemPeakMib,
        Metric::NetBytes,
        Metric::GpuUs,
        Metric::ColdStartUs,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::WallUs => "wall_us",
            Metric::CpuUs => "cpu_us",
            Metric::MemPeakMib => "mem_peak_mib",
            Metric::NetBytes => "net_bytes",
            Metric::GpuUs => "gpu_us",
            Metric::ColdStartUs => "cold_start_us",
        }
    }
}

/// Streaming history of one task's use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceProfile {
    histograms: [LogHistogram; 6],
    /// CPU share while running, in millicores (cpu time / wall time).
    cpu_share: LogHistogram,
    /// Bandwidth while running, Mbit/s (bytes * 8 / wall µs).
    bandwidth: LogHistogram,
}

/// p50/p95/p99/max of one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest seen.
    pub max: u64,
}

impl Quantiles {
    fn of(histogram: &LogHistogram) -> Option<Quantiles> {
        Some(Quantiles {
            p50: histogram.quantile(0.50)?,
            p95: histogram.quantile(0.95)?,
            p99: histogram.quantile(0.99)?,
            max: histogram.max(),
        })
    }

    /// The value at a named quantile.
    pub fn at(&self, quantile: NeedQuantile) -> u64 {
        match quantile {
            NeedQuantile::P50 => self.p50,
            NeedQuantile::P95 => self.p95,
            NeedQuantile::P99 => self.p99,
            NeedQuantile::Max => self.max,
        }
    }
}

/// Which quantile of history a plan reserves for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NeedQuantile {
    /// Median use.
    P50,
    /// 95th percentile (default).
    #[default]
    P95,
    /// 99th percentile.
    P99,
    /// Worst seen.
    Max,
}

/// A frozen summary of a profile, one entry per metric (`None`: no history).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileSummary {
    /// Per metric, in [`Metric::ALL`] order.
    pub metrics: [Option<Quantiles>; 6],
    /// CPU share while running, millicores.
    pub cpu_millicores: Option<Quantiles>,
    /// Bandwidth while running, Mbit/s.
    pub net_mbps: Option<Quantiles>,
}

impl ProfileSummary {
    /// Quantiles of `metric`.
    pub fn metric(&self, metric: Metric) -> Option<Quantiles> {
        self.metrics[metric as usize]
    }

    /// The resources to reserve at `quantile`: history where there is some, else the declared
    /// limit, else `default`, dimension by dimension.
    pub fn needs(
        &self,
        quantile: NeedQuantile,
        declared: Option<&ResourceVec>,
        default: &ResourceVec,
    ) -> ResourceVec {
        let fallback = declared.unwrap_or(default);
        let gpu_used = self
            .metric(Metric::GpuUs)
            .is_some_and(|gpu| gpu.at(quantile) > 0);
        ResourceVec {
            cpu_millicores: self
                .cpu_millicores
                .map_or(fallback.cpu_millicores, |q| q.at(quantile).max(1)),
            cores: fallback.cores,
            memory_mib: self
                .metric(Metric::MemPeakMib)
                .map_or(fallback.memory_mib, |q| q.at(quantile).max(1)),
            net_mbps: self.net_mbps.map_or(fallback.net_mbps, |q| q.at(quantile)),
            gpu_units: if gpu_used {
                fallback.gpu_units.max(1)
            } else {
                fallback.gpu_units
            },
        }
    }
}

impl ResourceProfile {
    /// Records one invocation's use with the (decayed) weight `weight`.
    pub fn record(&mut self, usage: &Usage, weight: f64) {
        let values = [
            Some(usage.wall_us),
            usage.cpu_us,
            usage.mem_peak_mib,
            usage.net_bytes,
            usage.gpu_us,
            usage.cold_start_us,
        ];
        for (histogram, value) in self.histograms.iter_mut().zip(values) {
            if let Some(value) = value {
                histogram.record(value, weight);
            }
        }
        let wall = usage.wall_us.max(1);
        if let Some(cpu) = usage.cpu_us {
            self.cpu_share
                .record(cpu.saturating_mul(1000) / wall, weight);
        }
        if let Some(bytes) = usage.net_bytes {
            self.bandwidth
                .record(bytes.saturating_mul(8) / wall, weight);
        }
    }

    /// Multiplies every weight (decay rebase).
    pub fn scale(&mut self, factor: f64) {
        for histogram in self
            .histograms
            .iter_mut()
            .chain([&mut self.cpu_share, &mut self.bandwidth])
        {
            histogram.scale(factor);
        }
    }

    /// Whether anything was recorded.
    pub fn is_empty(&self) -> bool {
        self.histograms[Metric::WallUs as usize].is_empty()
    }

    /// The frozen summary.
    pub fn summary(&self) -> ProfileSummary {
        ProfileSummary {
            metrics: std::array::from_fn(|i| Quantiles::of(&self.histograms[i])),
            cpu_millicores: Quantiles::of(&self.cpu_share),
            net_mbps: Quantiles::of(&self.bandwidth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_overrides_declared_limits_per_dimension() {
        let mut profile = ResourceProfile::default();
        for i in 1..=100u64 {
            profile.record(
                &Usage {
                    wall_us: 1000,
                    cpu_us: Some(500),
                    mem_peak_mib: Some(i),
                    ..Usage::default()
                },
                1.0,
            );
        }
        let declared = ResourceVec {
            cpu_millicores: 2000,
            memory_mib: 512,
            net_mbps: 7,
            ..ResourceVec::ZERO
        };
        let needs = profile
            .summary()
            .needs(NeedQuantile::P95, Some(&declared), &ResourceVec::ZERO);
        assert!((480..=520).contains(&needs.cpu_millicores), "{needs:?}");
        assert!((88..=100).contains(&needs.memory_mib), "{needs:?}");
        assert_eq!(needs.net_mbps, 7, "no network history: declared");
        let empty = ResourceProfile::default().summary();
        assert_eq!(
            empty.needs(NeedQuantile::P95, Some(&declared), &ResourceVec::ZERO),
            declared
        );
    }
}
