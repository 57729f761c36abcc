//! Which limit mechanism this machine offers: cgroup v1 child groups under the process's own
//! groups where they are writable; else cgroup v2 child groups under the process's own
//! delegated group (the unified hierarchy of every current distribution); else rlimits and
//! affinity. Detected at start, never assumed ([`detect`]).
//!
//! cgroup v2 forbids processes in a group whose controllers are enabled for its children
//! ("no internal processes"). When this process's own group holds it (and nothing else)
//! and the controllers cannot be enabled for that reason, this process moves itself into a
//! leaf of its own, `<prefix>server`, as container runtimes do, and enables them in the
//! group it left; a later detection in the same process sees the leaf and uses its parent.
//! Under systemd that group is the service's own with `Delegate=yes`
//! (`docs/systemd/baton.service`).

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
    /// cgroup v2: child groups under this process's delegated group (memory always; cpu,
    /// cpuset and pids when delegated too).
    CgroupV2 {
        /// The group worker groups are made in (`cgroup.subtree_control` enables the
        /// controllers below it).
        parent: PathBuf,
        /// `cpu.max` quotas.
        cpu: bool,
        /// `cpuset.cpus` pinning (else `sched_setaffinity`).
        cpuset: bool,
        /// `pids.max`.
        pids: bool,
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
            Mechanism::CgroupV2 {
                parent,
                cpu,
                cpuset,
                pids,
            } => {
                let has = |on: &bool, what: &str| {
                    if *on {
                        what.to_owned()
                    } else {
                        format!("NO {what}")
                    }
                };
                writeln!(
                    f,
                    "limits: cgroup v2 under {} (memory, {}, {}, {})",
                    parent.display(),
                    has(cpu, "cpu"),
                    has(cpuset, "cpuset"),
                    has(pids, "pids")
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
    if let Some(mechanism) = detect_v2(&mut notes) {
        return Detection { mechanism, notes };
    }
    notes.push("rlimit: address space per worker".into());
    Detection {
        mechanism: Mechanism::Rlimit,
        notes,
    }
}

/// The unified hierarchy's mount point.
const V2_ROOT: &str = "/sys/fs/cgroup";

/// The controllers baton uses, in the order `cgroup.subtree_control` is given them.
const V2_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuset", "pids"];

/// This process's group in the unified hierarchy (the `0::` line), when it is mounted at
/// [`V2_ROOT`] (a hybrid host mounts it elsewhere, with no controllers).
fn own_v2_group() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    Some(Path::new(V2_ROOT).join(path.trim().trim_start_matches('/')))
}

/// The leaf this process moves itself into when its group must have no processes.
fn server_leaf_name() -> String {
    format!("{}server", own_prefix())
}

fn words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Enables `wanted` for `group`'s children; on EBUSY (processes in `group`), moves this
/// process into its own leaf first, when it is the only one there.
fn enable_v2(group: &Path, wanted: &[&str]) -> Result<(), String> {
    let control = group.join("cgroup.subtree_control");
    let missing: Vec<&str> = {
        let enabled = words(&control);
        wanted
            .iter()
            .copied()
            .filter(|c| !enabled.iter().any(|e| e == c))
            .collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    let line: String = missing.iter().map(|c| format!("+{c} ")).collect();
    match fs::write(&control, line.trim_end()) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() != Some(16) => {
            return Err(format!(
                "cannot enable {} in {}: {e}",
                missing.join(" "),
                control.display()
            ))
        }
        Err(_) => {}
    }
    // EBUSY: the group has processes of its own. Only ours may be moved.
    let ours = std::process::id().to_string();
    let others: Vec<String> = words(&group.join("cgroup.procs"))
        .into_iter()
        .filter(|p| *p != ours)
        .collect();
    if !others.is_empty() {
        return Err(format!(
            "{} holds other processes ({}), so its controllers cannot be given to child \
             groups: run baton in a group of its own (systemd: Delegate=yes, \
             docs/systemd/baton.service)",
            group.display(),
            others.len()
        ));
    }
    let leaf = group.join(server_leaf_name());
    if !leaf.is_dir() {
        fs::create_dir(&leaf).map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
    }
    fs::write(leaf.join("cgroup.procs"), &ours)
        .map_err(|e| format!("cannot move this process into {}: {e}", leaf.display()))?;
    fs::write(&control, line.trim_end()).map_err(|e| {
        format!(
            "cannot enable {} in {}: {e}",
            missing.join(" "),
            control.display()
        )
    })
}

/// cgroup v2 under this process's delegated group, when its memory controller is there and
/// the group is writable.
fn detect_v2(notes: &mut Vec<String>) -> Option<Mechanism> {
    if !Path::new(V2_ROOT).join("cgroup.controllers").exists() {
        notes.push(format!("cgroup v2: not mounted at {V2_ROOT}"));
        return None;
    }
    let Some(mut group) = own_v2_group() else {
        notes.push("cgroup v2: this process has no group in the unified hierarchy".into());
        return None;
    };
    // Our own leaf from an earlier detection: the delegated group is its parent.
    if group.file_name().is_some_and(|n| *n == *server_leaf_name()) {
        group = group.parent()?.to_owned();
    }
    let available = words(&group.join("cgroup.controllers"));
    if !available.iter().any(|c| c == "memory") {
        notes.push(format!(
            "cgroup v2: no memory controller delegated to {} (controllers: {}); under \
             systemd give the service Delegate=yes (docs/systemd/baton.service)",
            group.display(),
            if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(" ")
            }
        ));
        return None;
    }
    let wanted: Vec<&str> = V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| available.iter().any(|a| a == c))
        .collect();
    if let Err(e) = enable_v2(&group, &wanted) {
        notes.push(format!("cgroup v2: {e}"));
        return None;
    }
    if let Err(e) = probe_writable(&group) {
        notes.push(format!("cgroup v2: {e}"));
        return None;
    }
    let enabled = words(&group.join("cgroup.subtree_control"));
    let has = |c: &str| enabled.iter().any(|e| e == c);
    for (controller, fallback) in [
        ("cpu", "no CPU quota"),
        ("cpuset", "pinning with sched_setaffinity"),
        ("pids", "NO per-worker process limit"),
    ] {
        if !has(controller) {
            notes.push(format!(
                "cgroup v2: {controller} not delegated to {}; {fallback}",
                group.display()
            ));
        }
    }
    notes.push(format!(
        "cgroup v2: worker groups under {} ({})",
        group.display(),
        enabled.join(" ")
    ));
    Some(Mechanism::CgroupV2 {
        cpu: has("cpu"),
        cpuset: has("cpuset"),
        pids: has("pids"),
        parent: group,
    })
}
