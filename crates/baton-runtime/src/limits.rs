//! Resource limits for worker processes: which mechanism this machine offers, detected at
//! start and reported (`baton doctor`), never assumed.
//!
//! Preferred: cgroup v1 (memory limit, CPU quota, cpuset pinning to the reserved cores) in
//! child groups created under the process's own memory, cpu and cpuset groups, which is
//! writable as root on this kind of machine; then cgroup v2 when its controllers are
//! enabled; otherwise `prlimit` on the address space (util-linux), applied right after
//! spawn, with `taskset` for pinning. Each worker gets its own groups, removed when it ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The mechanism in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// cgroup v1: child groups under these parents (cpu may be missing).
    CgroupV1 {
        /// Parent memory group directory.
        memory: PathBuf,
        /// Parent cpu group directory, when writable.
        cpu: Option<PathBuf>,
        /// Parent cpuset group directory, when writable.
        cpuset: Option<PathBuf>,
    },
    /// Address-space rlimit through `prlimit`.
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
            } => {
                let under = |p: &Option<PathBuf>| {
                    p.as_ref().map_or("not available".to_owned(), |c| {
                        format!("under {}", c.display())
                    })
                };
                writeln!(
                    f,
                    "limits: cgroup v1 (memory under {}, cpu {}, cpuset {})",
                    memory.display(),
                    under(cpu),
                    under(cpuset)
                )?
            }
            Mechanism::Rlimit => writeln!(f, "limits: rlimit (prlimit --as), no CPU quota")?,
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

static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);

fn probe_writable(parent: &Path) -> Result<(), String> {
    let probe = parent.join(format!(
        "baton-probe-{}-{}",
        std::process::id(),
        NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&probe).map_err(|e| format!("cannot create {}: {e}", probe.display()))?;
    fs::remove_dir(&probe).map_err(|e| format!("cannot remove {}: {e}", probe.display()))
}

/// Detects the mechanism.
pub fn detect() -> Detection {
    let mut notes = Vec::new();
    let v1_memory = own_group("memory")
        .map(|p| Path::new("/sys/fs/cgroup/memory").join(p.trim_start_matches('/')));
    if let Some(memory) = v1_memory.filter(|p| p.join("memory.limit_in_bytes").exists()) {
        match probe_writable(&memory) {
            Ok(()) => {
                let cpu = own_group("cpu")
                    .map(|p| Path::new("/sys/fs/cgroup/cpu").join(p.trim_start_matches('/')))
                    .filter(|p| p.join("cpu.cfs_quota_us").exists());
                let cpu = match cpu {
                    Some(cpu) => match probe_writable(&cpu) {
                        Ok(()) => Some(cpu),
                        Err(e) => {
                            notes.push(format!("cgroup v1 cpu: {e}; no CPU quota"));
                            None
                        }
                    },
                    None => {
                        notes.push("cgroup v1 cpu controller not mounted; no CPU quota".into());
                        None
                    }
                };
                let cpuset = own_group("cpuset")
                    .map(|p| Path::new("/sys/fs/cgroup/cpuset").join(p.trim_start_matches('/')))
                    .filter(|p| p.join("cpuset.cpus").exists());
                let cpuset = match cpuset.map(|c| (probe_writable(&c), c)) {
                    Some((Ok(()), c)) => Some(c),
                    Some((Err(e), _)) => {
                        notes.push(format!("cgroup v1 cpuset: {e}; pinning with taskset"));
                        None
                    }
                    None => {
                        notes.push("cgroup v1 cpuset not mounted; pinning with taskset".into());
                        None
                    }
                };
                notes.push(format!(
                    "cgroup v1 memory group {} is writable",
                    memory.display()
                ));
                return Detection {
                    mechanism: Mechanism::CgroupV1 {
                        memory,
                        cpu,
                        cpuset,
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
    let prlimit = Command::new("prlimit").arg("--version").output();
    if prlimit.is_ok_and(|o| o.status.success()) {
        notes.push("prlimit found: address-space limit per worker".into());
        Detection {
            mechanism: Mechanism::Rlimit,
            notes,
        }
    } else {
        notes.push("prlimit not found".into());
        Detection {
            mechanism: Mechanism::None,
            notes,
        }
    }
}

/// Limits applied to one worker; its groups are removed when this is dropped (after the
/// worker was killed).
#[derive(Debug, Default)]
pub struct LimitGuard {
    groups: Vec<PathBuf>,
    /// How the limits were applied, for records and errors.
    pub how: String,
}

impl LimitGuard {
    /// The worker's memory group, if it has one.
    pub fn memory_group(&self) -> Option<&Path> {
        self.groups
            .iter()
            .find(|g| g.join("memory.limit_in_bytes").exists())
            .map(PathBuf::as_path)
    }

    /// Whether the kernel killed something in this worker's memory group for memory.
    pub fn oom_killed(&self) -> bool {
        self.memory_group()
            .and_then(|g| fs::read_to_string(g.join("memory.oom_control")).ok())
            .is_some_and(|text| {
                text.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
            || self
                .memory_group()
                .and_then(|g| fs::read_to_string(g.join("memory.failcnt")).ok())
                .and_then(|t| t.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
    }
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        for group in &self.groups {
            // The worker is dead by now; its group is empty and can go.
            let _ = fs::remove_dir(group);
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("cannot write {value} to {}: {e}", path.display()))
}

/// `[0, 2, 3]` → `"0,2,3"`, the kernel's list format.
fn core_list(cores: &[u32]) -> String {
    cores
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Pins `pid` to `cores` with `taskset` (all its threads).
fn taskset(pid: u32, cores: &[u32]) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &core_list(cores), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -p -c {} {pid} failed: {status}",
            core_list(cores)
        ))
    }
}

/// Applies `memory_mib` and `cpu_millicores` to process `pid` with `mechanism`, and pins it
/// to `cores` when any are given (the cores its reservation named).
pub fn apply(
    mechanism: &Mechanism,
    pid: u32,
    memory_mib: u64,
    cpu_millicores: u64,
    cores: &[u32],
) -> Result<LimitGuard, String> {
    let mut guard = LimitGuard::default();
    match mechanism {
        Mechanism::CgroupV1 {
            memory,
            cpu,
            cpuset,
        } => {
            let name = format!(
                "baton-{}-{}",
                std::process::id(),
                NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
            );
            let group = memory.join(&name);
            fs::create_dir(&group)
                .map_err(|e| format!("cannot create {}: {e}", group.display()))?;
            guard.groups.push(group.clone());
            write(
                &group.join("memory.limit_in_bytes"),
                &(memory_mib << 20).to_string(),
            )?;
            // Without swap accounting the limit could be escaped into swap; set it when present.
            let memsw = group.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &(memory_mib << 20).to_string())?;
            }
            write(&group.join("cgroup.procs"), &pid.to_string())?;
            guard.how = format!("cgroup v1 memory {memory_mib} MiB");
            if let Some(cpu) = cpu {
                let group = cpu.join(&name);
                fs::create_dir(&group)
                    .map_err(|e| format!("cannot create {}: {e}", group.display()))?;
                guard.groups.push(group.clone());
                write(&group.join("cpu.cfs_period_us"), "100000")?;
                write(
                    &group.join("cpu.cfs_quota_us"),
                    &(cpu_millicores * 100).max(1000).to_string(),
                )?;
                write(&group.join("cgroup.procs"), &pid.to_string())?;
                guard
                    .how
                    .push_str(&format!(", cpu {cpu_millicores} millicores"));
            }
            if !cores.is_empty() {
                match cpuset {
                    Some(parent) => {
                        let group = parent.join(&name);
                        fs::create_dir(&group)
                            .map_err(|e| format!("cannot create {}: {e}", group.display()))?;
                        guard.groups.push(group.clone());
                        write(&group.join("cpuset.cpus"), &core_list(cores))?;
                        let mems = fs::read_to_string(parent.join("cpuset.mems"))
                            .map_err(|e| format!("cannot read cpuset.mems: {e}"))?;
                        write(&group.join("cpuset.mems"), mems.trim())?;
                        write(&group.join("cgroup.procs"), &pid.to_string())?;
                        guard
                            .how
                            .push_str(&format!(", cpuset {}", core_list(cores)));
                    }
                    None => {
                        taskset(pid, cores)?;
                        guard
                            .how
                            .push_str(&format!(", taskset {}", core_list(cores)));
                    }
                }
            }
        }
        Mechanism::Rlimit => {
            // Address space, not resident memory: interpreters map more than they touch, so
            // leave room above the declared memory.
            let bytes = (memory_mib + 512) << 20;
            let status = Command::new("prlimit")
                .args(["--pid", &pid.to_string(), &format!("--as={bytes}")])
                .status()
                .map_err(|e| format!("prlimit: {e}"))?;
            if !status.success() {
                return Err(format!("prlimit --pid {pid} failed: {status}"));
            }
            guard.how = format!("rlimit address space {} MiB", memory_mib + 512);
            if !cores.is_empty() {
                taskset(pid, cores)?;
                guard
                    .how
                    .push_str(&format!(", taskset {}", core_list(cores)));
            }
        }
        Mechanism::None => {
            guard.how = "no limits (none available)".into();
            if !cores.is_empty() && taskset(pid, cores).is_ok() {
                guard
                    .how
                    .push_str(&format!(", taskset {}", core_list(cores)));
            }
        }
    }
    Ok(guard)
}
