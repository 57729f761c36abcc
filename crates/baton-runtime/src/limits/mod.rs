//! Resource limits for worker processes: which mechanism this machine offers, detected at
//! start and reported (`baton doctor`), never assumed.
//!
//! Preferred: cgroup v1 (memory limit, CPU quota, cpuset pinning to the reserved cores, a
//! pids limit) in child groups created under the process's own memory, cpu, cpuset and pids
//! groups, which is writable as root on this kind of machine; else the same from cgroup v2
//! in one child group under the process's own delegated group (`memory.max` with
//! `memory.swap.max` 0, `cpu.max`, `cpuset.cpus`, `pids.max`; out-of-memory kills read from
//! `memory.events`); otherwise an address-space rlimit and `sched_setaffinity` for
//! pinning. Either way the limits are in
//! place before the worker's program runs: the spawned child joins its groups and sets its
//! rlimits between fork and exec, so nothing it forks escapes them. Each worker gets its own
//! groups; they are emptied (every process in them killed) and removed when it ends, and a
//! start removes what a killed predecessor left ([`reclaim_stale`]).

mod detect;
mod migration;

pub(crate) use detect::stat_field;
pub use detect::{detect, Detection, Mechanism};
use detect::{own_prefix, start_time, NEXT_GROUP};
pub use migration::{expedite_rcu, favor_dynmods, move_cost, MoveMode, DYNMODS_AT, RCU_EXPEDITED};

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What one worker is limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits<'a> {
    /// Memory, MiB.
    pub memory_mib: u64,
    /// CPU quota, millicores.
    pub cpu_millicores: u64,
    /// Cores to pin to (none: anywhere).
    pub cores: &'a [u32],
    /// Processes (and threads) at once in the worker's tree.
    pub max_processes: u32,
}

/// Limits applied to one worker; its groups are emptied and removed when this is dropped.
#[derive(Debug, Default)]
pub struct LimitGuard {
    groups: Vec<PathBuf>,
    /// How the limits were applied, for records and errors.
    pub how: String,
}

/// The processes in `group` (its `cgroup.procs`).
fn group_procs(group: &Path) -> Vec<u32> {
    fs::read_to_string(group.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every process in `groups` until they are empty (or `patience` runs out), then
/// removes them. Returns whether every group is gone.
fn empty_and_remove(groups: &[PathBuf], patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        let mut busy = false;
        for group in groups {
            for pid in group_procs(group) {
                busy = true;
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        if !busy {
            // Empty: a directory that is already gone is fine.
            return groups
                .iter()
                .all(|g| fs::remove_dir(g).is_ok() || !g.exists());
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl LimitGuard {
    /// The worker's memory group, if it has one (v1: its memory controller's; v2: its
    /// one group).
    pub fn memory_group(&self) -> Option<&Path> {
        self.groups
            .iter()
            .find(|g| g.join("memory.limit_in_bytes").exists() || g.join("memory.max").exists())
            .map(PathBuf::as_path)
    }

    /// The most memory the worker's group has held, bytes (v1 `memory.max_usage_in_bytes`,
    /// v2 `memory.peak` where the kernel has it).
    pub fn memory_peak(&self) -> Option<u64> {
        let group = self.memory_group()?;
        ["memory.max_usage_in_bytes", "memory.peak"]
            .iter()
            .find_map(|file| fs::read_to_string(group.join(file)).ok())
            .and_then(|text| text.trim().parse().ok())
    }

    /// The worker's groups (one per controller), removed when this drops.
    pub fn groups(&self) -> &[PathBuf] {
        &self.groups
    }

    /// The processes of the worker's tree, when it has a group to list them.
    pub fn processes(&self) -> Option<Vec<u32>> {
        self.groups.first().map(|g| group_procs(g))
    }

    /// Whether the kernel killed something in this worker's memory group for memory (v1
    /// `memory.oom_control` or a failed charge, v2 `memory.events`).
    pub fn oom_killed(&self) -> bool {
        let counted = |file: &str, keys: &[&str]| {
            self.memory_group()
                .and_then(|g| fs::read_to_string(g.join(file)).ok())
                .is_some_and(|text| {
                    text.lines().any(|l| {
                        keys.iter().any(|key| {
                            l.strip_prefix(key)
                                .and_then(|n| n.trim().parse::<u64>().ok())
                                .is_some_and(|n| n > 0)
                        })
                    })
                })
        };
        counted("memory.oom_control", &["oom_kill "])
            || counted("memory.events", &["oom_kill ", "oom "])
            || self
                .memory_group()
                .and_then(|g| fs::read_to_string(g.join("memory.failcnt")).ok())
                .and_then(|t| t.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
    }
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        // Whatever the worker left (children that outlived it) is killed with it.
        empty_and_remove(&self.groups, Duration::from_secs(2));
    }
}

/// Removes the groups left by baton processes that are gone (killed with SIGKILL, say),
/// killing whatever still runs in them. Groups of live baton processes are left alone.
/// Returns how many were removed.
pub fn reclaim_stale(mechanism: &Mechanism) -> usize {
    let parents = match mechanism {
        Mechanism::CgroupV1 {
            memory,
            cpu,
            cpuset,
            pids,
        } => [Some(memory), cpu.as_ref(), cpuset.as_ref(), pids.as_ref()],
        Mechanism::CgroupV2 { parent, .. } => [Some(parent), None, None, None],
        Mechanism::Rlimit | Mechanism::None => return 0,
    };
    let mut removed = 0;
    for parent in parents.into_iter().flatten() {
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(owner) = name.strip_prefix("baton-") else {
                continue;
            };
            let mut parts = owner.splitn(3, '-');
            let (Some(pid), Some(started)) = (
                parts.next().and_then(|p| p.parse::<u32>().ok()),
                parts.next().and_then(|s| s.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let own = name.starts_with(own_prefix());
            let owner_alive = !own && start_time(pid) == Some(started);
            if !own && !owner_alive && empty_and_remove(&[entry.path()], Duration::from_secs(2)) {
                removed += 1;
            }
        }
    }
    removed
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

/// What the child does between fork and exec: join its groups, set its rlimits, pin itself.
#[derive(Debug, Default)]
struct PreExec {
    /// `cgroup.procs` of each group, opened by the parent.
    procs: Vec<OwnedFd>,
    address_space: Option<u64>,
    affinity: Option<rustix::thread::CpuSet>,
}

impl PreExec {
    /// Runs in the forked child: only system calls on what the parent prepared, nothing that
    /// allocates or locks (async-signal-safe).
    fn run(&self) -> std::io::Result<()> {
        use rustix::process::{setrlimit, Resource, Rlimit};
        for procs in &self.procs {
            // "0" moves the writing process itself; its later children follow it.
            rustix::io::write(procs, b"0")?;
        }
        if let Some(bytes) = self.address_space {
            let limit = Rlimit {
                current: Some(bytes),
                maximum: Some(bytes),
            };
            setrlimit(Resource::As, limit)?;
        }
        if let Some(cores) = &self.affinity {
            rustix::thread::sched_setaffinity(None, cores)?;
        }
        Ok(())
    }

    /// What [`PreExec::run`] does, done from outside to the running process `pid`: its
    /// groups and cores. Its address-space limit is not set from outside (the kernel
    /// refuses it for a jailed process): a forked worker inherits its template's, which is
    /// its function's.
    fn move_process(&self, pid: u32) -> std::io::Result<()> {
        let text = pid.to_string();
        for procs in &self.procs {
            rustix::io::write(procs, text.as_bytes())?;
        }
        if let Some(cores) = &self.affinity {
            let target = rustix::process::Pid::from_raw(pid as i32)
                .ok_or(std::io::ErrorKind::InvalidInput)?;
            rustix::thread::sched_setaffinity(Some(target), cores)?;
        }
        Ok(())
    }

    fn install(self, command: &mut Command) {
        use std::os::unix::process::CommandExt;
        #[allow(unsafe_code)]
        // SAFETY: `pre_exec` runs the closure in the forked child before exec; `run` only
        // makes system calls (write, setrlimit, sched_setaffinity) on memory prepared by
        // the parent, allocates nothing and takes no lock, so it is async-signal-safe.
        unsafe {
            command.pre_exec(move || self.run());
        }
    }
}

fn cpu_set(cores: &[u32]) -> rustix::thread::CpuSet {
    let mut set = rustix::thread::CpuSet::new();
    for &core in cores {
        if (core as usize) < rustix::thread::CpuSet::MAX_CPU {
            set.set(core as usize);
        }
    }
    set
}

fn create_group(parent: &Path, name: &str, guard: &mut LimitGuard) -> Result<PathBuf, String> {
    let group = parent.join(name);
    fs::create_dir(&group).map_err(|e| format!("cannot create {}: {e}", group.display()))?;
    guard.groups.push(group.clone());
    Ok(group)
}

fn open_procs(group: &Path) -> Result<OwnedFd, String> {
    fs::OpenOptions::new()
        .write(true)
        .open(group.join("cgroup.procs"))
        .map(OwnedFd::from)
        .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", group.display()))
}

/// Prepares `limits` with `mechanism` and arranges for the process `command` starts to be
/// under them before its program runs. The returned guard owns the worker's groups.
pub fn apply(
    mechanism: &Mechanism,
    limits: &WorkerLimits<'_>,
    command: &mut Command,
) -> Result<LimitGuard, String> {
    let (guard, pre_exec) = prepare(mechanism, limits)?;
    pre_exec.install(command);
    Ok(guard)
}

/// Puts the running process `pid` (a worker forked from a template, which has run none of
/// the function's calls yet) under `limits`: into its own groups and onto its cores (its
/// address-space limit, under [`Mechanism::Rlimit`], is inherited from its template). The
/// returned guard owns the groups.
pub fn apply_to(
    mechanism: &Mechanism,
    limits: &WorkerLimits<'_>,
    pid: u32,
) -> Result<LimitGuard, String> {
    let (guard, pre_exec) = prepare(mechanism, limits)?;
    pre_exec
        .move_process(pid)
        .map_err(|e| format!("cannot put process {pid} under its limits: {e}"))?;
    Ok(guard)
}

/// A new worker group's name: this process's prefix and a number never used before.
fn worker_group_name() -> String {
    format!(
        "{}{}",
        own_prefix(),
        NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
    )
}

/// Pins the worker to `cores` with `sched_setaffinity` (no cpuset to do it).
fn pin_by_affinity(pre_exec: &mut PreExec, guard: &mut LimitGuard, cores: &[u32]) {
    pre_exec.affinity = Some(cpu_set(cores));
    guard
        .how
        .push_str(&format!(", affinity {}", core_list(cores)));
}

fn prepare(
    mechanism: &Mechanism,
    limits: &WorkerLimits<'_>,
) -> Result<(LimitGuard, PreExec), String> {
    let mut guard = LimitGuard::default();
    let mut pre_exec = PreExec::default();
    let WorkerLimits {
        memory_mib,
        cpu_millicores,
        cores,
        max_processes,
    } = *limits;
    match mechanism {
        Mechanism::CgroupV1 {
            memory,
            cpu,
            cpuset,
            pids,
        } => {
            let name = worker_group_name();
            let group = create_group(memory, &name, &mut guard)?;
            write(
                &group.join("memory.limit_in_bytes"),
                &(memory_mib << 20).to_string(),
            )?;
            // Without swap accounting the limit could be escaped into swap; set it when present.
            let memsw = group.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &(memory_mib << 20).to_string())?;
            }
            pre_exec.procs.push(open_procs(&group)?);
            guard.how = format!("cgroup v1 memory {memory_mib} MiB");
            if let Some(cpu) = cpu {
                let group = create_group(cpu, &name, &mut guard)?;
                write(&group.join("cpu.cfs_period_us"), "100000")?;
                write(
                    &group.join("cpu.cfs_quota_us"),
                    &(cpu_millicores * 100).max(1000).to_string(),
                )?;
                pre_exec.procs.push(open_procs(&group)?);
                guard
                    .how
                    .push_str(&format!(", cpu {cpu_millicores} millicores"));
            }
            if let Some(pids) = pids {
                let group = create_group(pids, &name, &mut guard)?;
                write(&group.join("pids.max"), &max_processes.to_string())?;
                pre_exec.procs.push(open_procs(&group)?);
                guard.how.push_str(&format!(", pids {max_processes}"));
            } else {
                guard.how.push_str(", no process limit");
            }
            if !cores.is_empty() {
                match cpuset {
                    Some(parent) => {
                        let group = create_group(parent, &name, &mut guard)?;
                        write(&group.join("cpuset.cpus"), &core_list(cores))?;
                        let mems = fs::read_to_string(parent.join("cpuset.mems"))
                            .map_err(|e| format!("cannot read cpuset.mems: {e}"))?;
                        write(&group.join("cpuset.mems"), mems.trim())?;
                        pre_exec.procs.push(open_procs(&group)?);
                        guard
                            .how
                            .push_str(&format!(", cpuset {}", core_list(cores)));
                    }
                    None => pin_by_affinity(&mut pre_exec, &mut guard, cores),
                }
            }
        }
        Mechanism::CgroupV2 {
            parent,
            cpu,
            cpuset,
            pids,
        } => {
            let name = worker_group_name();
            let group = create_group(parent, &name, &mut guard)?;
            write(&group.join("memory.max"), &(memory_mib << 20).to_string())?;
            // No escape into swap (the file is absent without swap accounting).
            let swap = group.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
            guard.how = format!("cgroup v2 memory {memory_mib} MiB");
            if *cpu {
                let quota = (cpu_millicores * 100).max(1000);
                write(&group.join("cpu.max"), &format!("{quota} 100000"))?;
                guard
                    .how
                    .push_str(&format!(", cpu {cpu_millicores} millicores"));
            }
            if *pids {
                write(&group.join("pids.max"), &max_processes.to_string())?;
                guard.how.push_str(&format!(", pids {max_processes}"));
            } else {
                guard.how.push_str(", no process limit");
            }
            if !cores.is_empty() {
                if *cpuset {
                    write(&group.join("cpuset.cpus"), &core_list(cores))?;
                    guard
                        .how
                        .push_str(&format!(", cpuset {}", core_list(cores)));
                } else {
                    pin_by_affinity(&mut pre_exec, &mut guard, cores);
                }
            }
            pre_exec.procs.push(open_procs(&group)?);
        }
        Mechanism::Rlimit => {
            // Address space, not resident memory: interpreters map more than they touch, so
            // leave room above the declared memory.
            pre_exec.address_space = Some((memory_mib + 512) << 20);
            guard.how = format!(
                "rlimit address space {} MiB, no process limit",
                memory_mib + 512
            );
            if !cores.is_empty() {
                pin_by_affinity(&mut pre_exec, &mut guard, cores);
            }
        }
        Mechanism::None => {
            guard.how = "no limits (none available)".into();
            if !cores.is_empty() {
                pin_by_affinity(&mut pre_exec, &mut guard, cores);
            }
        }
    }
    Ok((guard, pre_exec))
}
