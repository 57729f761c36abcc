//! The resource vector: CPU, dedicated cores, memory, network bandwidth and GPU units.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign};

/// An amount of each resource a task needs or a pool holds.
///
/// `cores` are dedicated (pinned) cores; each also counts as 1000 millicores of CPU when the
/// pool admits it, so shared and pinned CPU never add up to more than the machine has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceVec {
    /// Shared CPU in millicores (1000 = one core's worth of time).
    pub cpu_millicores: u64,
    /// Dedicated cores to pin.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Network bandwidth in Mbit/s.
    pub net_mbps: u64,
    /// GPU units.
    pub gpu_units: u32,
}

impl ResourceVec {
    /// The zero vector.
    pub const ZERO: ResourceVec = ResourceVec {
        cpu_millicores: 0,
        cores: 0,
        memory_mib: 0,
        net_mbps: 0,
        gpu_units: 0,
    };

    /// CPU in millicores including the dedicated cores.
    pub fn total_cpu_millicores(&self) -> u64 {
        self.cpu_millicores + u64::from(self.cores) * 1000
    }

    /// Whether `self` fits within `capacity` in every dimension.
    pub fn fits_in(&self, capacity: &ResourceVec) -> bool {
        self.total_cpu_millicores() <= capacity.total_cpu_millicores()
            && self.cores <= capacity.cores
            && self.memory_mib <= capacity.memory_mib
            && self.net_mbps <= capacity.net_mbps
            && self.gpu_units <= capacity.gpu_units
    }

    /// The element-wise maximum.
    pub fn max(&self, other: &ResourceVec) -> ResourceVec {
        ResourceVec {
            cpu_millicores: self.cpu_millicores.max(other.cpu_millicores),
            cores: self.cores.max(other.cores),
            memory_mib: self.memory_mib.max(other.memory_mib),
            net_mbps: self.net_mbps.max(other.net_mbps),
            gpu_units: self.gpu_units.max(other.gpu_units),
        }
    }

    /// Whether every dimension is zero.
    pub fn is_zero(&self) -> bool {
        *self == ResourceVec::ZERO
    }
}

impl Add for ResourceVec {
    type Output = ResourceVec;
    fn add(self, other: ResourceVec) -> ResourceVec {
        ResourceVec {
            cpu_millicores: self.cpu_millicores.saturating_add(other.cpu_millicores),
            cores: self.cores.saturating_add(other.cores),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
            net_mbps: self.net_mbps.saturating_add(other.net_mbps),
            gpu_units: self.gpu_units.saturating_add(other.gpu_units),
        }
    }
}

impl AddAssign for ResourceVec {
    fn add_assign(&mut self, other: ResourceVec) {
        *self = *self + other;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_cores_count_as_cpu() {
        let capacity = ResourceVec {
            cpu_millicores: 0,
            cores: 2,
            memory_mib: 100,
            net_mbps: 10,
            gpu_units: 0,
        };
        let shared = ResourceVec {
            cpu_millicores: 1500,
            memory_mib: 10,
            ..ResourceVec::ZERO
        };
        let pinned = ResourceVec {
            cores: 1,
            ..ResourceVec::ZERO
        };
        assert!(shared.fits_in(&capacity));
        assert!(!(shared + pinned).fits_in(&capacity));
        assert!((pinned + pinned).fits_in(&capacity));
    }
}
