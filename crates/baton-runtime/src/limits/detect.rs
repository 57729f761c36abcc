//! Which limit mechanism this machine offers: cgroup v1 child groups under the process's own
//! groups where they are writable, else rlimits and affinity; detected at start, never
//! assumed ([`detect`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mechanism in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// cgroup v1: child groups under these parents (cpu, cpuset and pids may be missing).
    CgroupV1 {
        /// Parent memory group directory.
        memory: PathBuf,
        /// Parent cpu group directory, when writable.
        cpu: Option<PathBuf>,
        /// Parent cpuset group directory, when writable.
        cpuset: Option<PathBuf>,
        /// Parent pids group directory, when writable.
        pids: Option<PathBuf>,
    },
    /// An address-space rlimit (no CPU quota, no process limit).
    Rlimit,
    /// Nothing available: limits are not enforced.
    None,
}

/// What detection found, for the report.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The mechanism chosen.
    pub mechanism: Mechanism,
    /// What was tried and why it was or was not chosen.
    pub notes: Vec<String>,
}

impl std::fmt::Display for Detection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mechanism {
            Mechanism::CgroupV1 {
                memory,
                cpu,
                cpuset,
                pids,
            } => {
                let under = |p: &Option<PathBuf>| {
                    p.as_ref().map_or("not available".to_owned(), |c| {
                        format!("under {}", c.display())
                    })
                };
                writeln!(
                    f,
                    "limits: cgroup v1 (memory under {}, cpu {}, cpuset {}, pids {})",
                    memory.display(),
                    under(cpu),
                    under(cpuset),
                    under(pids)
                )?
            }
            Mechanism::Rlimit => writeln!(
                f,
                "limits: rlimit (address space); no CPU quota, NO process limit"
            )?,
            Mechanism::None => writeln!(f, "limits: none available, limits are NOT enforced")?,
        }
        for note in &self.notes {
            writeln!(f, "  {note}")?;
        }
        Ok(())
    }
}

fn own_group(controller: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })
}

/// Numbers the groups this process makes (probes included), so that names never repeat.
pub(super) static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);

/// Field `field` (numbered from 1, as in proc(5)) of `/proc/PID/stat`, for fields after
/// the command name (which may hold spaces and parentheses).
pub(crate) fn stat_field(pid: u32, field: usize) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name
        .split_whitespace()
        .nth(field.checked_sub(3)?)?
        .parse()
        .ok()
}

/// A process's start time (clock ticks since boot, field 22): with the PID it names a
/// process uniquely, even across PID reuse.
pub(super) fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)
}

/// The prefix of every group this process creates: `baton-<pid>-<start time>-`.
pub(super) fn own_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let pid = std::process::id();
        format!("baton-{pid}-{}-", start_time(pid).unwrap_or(0))
    })
}

fn probe_writable(parent: &Path) -> Result<(), String> {
    let probe = parent.join(format!(
        "{}probe{}",
        own_prefix(),
        NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&probe).map_err(|e| format!("cannot create {}: {e}", probe.display()))?;
    fs::remove_dir(&probe).map_err(|e| format!("cannot remove {}: {e}", probe.display()))
}

/// A controller's own group directory, when mounted and writable; `why` gets the reason
/// when not.
fn writable_group(
    controller: &str,
    marker: &str,
    notes: &mut Vec<String>,
    fallback: &str,
) -> Option<PathBuf> {
    let group = own_group(controller)
        .map(|p| {
            Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(p.trim_start_matches('/'))
        })
        .filter(|p| p.join(marker).exists());
    match group {
        Some(group) => match probe_writable(&group) {
            Ok(()) => Some(group),
            Err(e) => {
                notes.push(format!("cgroup v1 {controller}: {e}; {fallback}"));
                None
            }
        },
        None => {
            notes.push(format!("cgroup v1 {controller} not mounted; {fallback}"));
            None
        }
    }
}

/// Detects the mechanism.
pub fn detect() -> Detection {
    let mut notes = Vec::new();
    let v1_memory = own_group("memory")
        .map(|p| Path::new("/sys/fs/cgroup/memory").join(p.trim_start_matches('/')));
    if let Some(memory) = v1_memory.filter(|p| p.join("memory.limit_in_bytes").exists()) {
        match probe_writable(&memory) {
            Ok(()) => {
                let cpu = writable_group("cpu", "cpu.cfs_quota_us", &mut notes, "no CPU quota");
                let cpuset = writable_group(
                    "cpuset",
                    "cpuset.cpus",
                    &mut notes,
                    "pinning with sched_setaffinity",
                );
                let pids = writable_group(
                    "pids",
                    // The hierarchy's root has no pids.max; every group has cgroup.procs.
                    "cgroup.procs",
                    &mut notes,
                    "NO per-worker process limit (RLIMIT_NPROC counts per user, not per worker)",
                );
                notes.push(format!(
                    "cgroup v1 memory group {} is writable",
                    memory.display()
                ));
                return Detection {
                    mechanism: Mechanism::CgroupV1 {
                        memory,
                        cpu,
                        cpuset,
                        pids,
                    },
                    notes,
                };
            }
            Err(e) => notes.push(format!("cgroup v1 memory: {e}")),
        }
    } else {
        notes.push("no cgroup v1 memory controller for this process".into());
    }
    let v2 = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let v2_root = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let controllers = fs::read_to_string(v2)
        .or_else(|_| fs::read_to_string(v2_root))
        .unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        notes.push("cgroup v2 has a memory controller, but baton drives v1 only so far".into());
    } else {
        notes.push("cgroup v2: no controllers enabled".into());
    }
    notes.push("rlimit: address space per worker".into());
    Detection {
        mechanism: Mechanism::Rlimit,
        notes,
    }
}
