//! What moving a process into its groups costs here, and the kernel mode that makes it cheap.
//!
//! A worker forked from a template is moved into its own groups after the fork (a spawned
//! worker joins them between fork and exec). A move takes the kernel's global threadgroup
//! lock for writing, and by default that first waits for an RCU grace period: 5–13 ms
//! measured on these machines, most of a forked start (3.5 ms without it). The cgroup mount
//! option `favordynmods` (Linux 6.0+) keeps that lock in the mode where a move costs tens of
//! microseconds, at some cost to every fork and exit on the host. It is host-wide and, on the
//! kernels measured here, outlives the hierarchy that set it (until reboot), so baton never
//! sets it on its own: `baton doctor --favor-dynmods` does, when an operator asks, by
//! mounting a named hierarchy (`name=baton-dynmods`) with that option at [`DYNMODS_AT`],
//! where `mount` shows who did it. The other way out is reversible: with
//! `/sys/kernel/rcu_expedited` at 1 ([`RCU_EXPEDITED`]) the kernel expedites every grace
//! period, so the wait a move begins with takes about 0.1 ms instead of 5–13 (at the price
//! of an interrupt to every CPU per grace period, host-wide); `baton doctor --expedite-rcu
//! on|off` sets and clears it. [`move_cost`] measures whichever mode is in force, and
//! [`MoveMode`] names it for reports.

use super::{create_group, own_prefix, LimitGuard, Mechanism, NEXT_GROUP};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Where `favor_dynmods` mounts its hierarchy.
pub const DYNMODS_AT: &str = "/run/baton/dynmods";

/// The kernel's switch for expedited RCU grace periods.
pub const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";

/// Which kernel mode, if any, makes moving a process into a group cheap here now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MoveMode {
    /// A cgroup hierarchy is mounted with `favordynmods`.
    pub favordynmods: bool,
    /// `/sys/kernel/rcu_expedited` is 1.
    pub rcu_expedited: bool,
}

impl MoveMode {
    /// The mode in force now.
    pub fn now() -> MoveMode {
        MoveMode {
            favordynmods: dynmods_mounted(),
            rcu_expedited: rcu_expedited(),
        }
    }
}

impl std::fmt::Display for MoveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.favordynmods, self.rcu_expedited) {
            (true, true) => f.write_str(
                "a cgroup hierarchy is mounted with favordynmods and RCU grace periods are expedited",
            ),
            (true, false) => f.write_str("a cgroup hierarchy is mounted with favordynmods"),
            (false, true) => f.write_str("RCU grace periods are expedited (rcu_expedited = 1)"),
            (false, false) => f.write_str(
                "the kernel's default mode: a move waits for an RCU grace period \
                 (`baton doctor --expedite-rcu on` or `--favor-dynmods` make it cheap)",
            ),
        }
    }
}

/// Whether the kernel expedites RCU grace periods now.
pub fn rcu_expedited() -> bool {
    fs::read_to_string(RCU_EXPEDITED).is_ok_and(|v| v.trim() == "1")
}

/// Sets (`on`) or clears the kernel's expedited RCU grace periods ([`RCU_EXPEDITED`],
/// root): host-wide, until set again or reboot. Says what it did.
pub fn expedite_rcu(on: bool) -> Result<String, String> {
    let value = if on { "1" } else { "0" };
    fs::write(RCU_EXPEDITED, value).map_err(|e| {
        format!(
            "cannot write {value} to {RCU_EXPEDITED}: {e} (it needs root and a kernel that has it)"
        )
    })?;
    Ok(if on {
        format!("{RCU_EXPEDITED} set to 1: grace periods expedited host-wide (`baton doctor --expedite-rcu off` undoes it)")
    } else {
        format!("{RCU_EXPEDITED} set to 0: the kernel's normal grace periods")
    })
}

/// The median time to move a process into a group after the kernel has been left alone for
/// a while (as between two cold starts), measured by moving a child `sleep` between two
/// fresh memory groups `rounds` times. `None` without cgroups (nothing is moved then).
pub fn move_cost(mechanism: &Mechanism, rounds: usize) -> Result<Option<Duration>, String> {
    let memory = match mechanism {
        Mechanism::CgroupV1 { memory, .. } => memory,
        Mechanism::CgroupV2 { parent, .. } => parent,
        Mechanism::Rlimit | Mechanism::None => return Ok(None),
    };
    let mut guard = LimitGuard::default();
    let name = |n| {
        format!(
            "{}move{}-{n}",
            own_prefix(),
            NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
        )
    };
    let groups = [
        create_group(memory, &name(0), &mut guard)?,
        create_group(memory, &name(1), &mut guard)?,
    ];
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start sleep to measure a move: {e}"))?;
    let pid = sleeper.id().to_string();
    let mut samples = Vec::with_capacity(rounds);
    let mut failed = None;
    for round in 0..rounds.max(1) {
        // The kernel returns the lock to its fast mode a grace period or two after a move.
        std::thread::sleep(Duration::from_millis(60));
        let procs = groups[round % 2].join("cgroup.procs");
        let started = Instant::now();
        if let Err(e) = fs::write(&procs, &pid) {
            failed = Some(format!(
                "cannot move a process into {}: {e}",
                procs.display()
            ));
            break;
        }
        samples.push(started.elapsed());
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop(guard);
    if let Some(failed) = failed {
        return Err(failed);
    }
    samples.sort();
    Ok(Some(samples[samples.len() / 2]))
}

/// Whether a hierarchy mounted with `favordynmods` is there now (this process's view of
/// the mounts).
pub fn dynmods_mounted() -> bool {
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mounts| {
        mounts
            .lines()
            .any(|l| l.contains(" cgroup ") && l.contains("favordynmods"))
    })
}

/// Puts the kernel's cgroup lock in the mode that makes moves cheap, by mounting a named
/// hierarchy with `favordynmods` at [`DYNMODS_AT`] (kept mounted). Says what it did.
pub fn favor_dynmods() -> Result<String, String> {
    if dynmods_mounted() {
        return Ok("a cgroup hierarchy is already mounted with favordynmods".into());
    }
    let at = Path::new(DYNMODS_AT);
    fs::create_dir_all(at).map_err(|e| format!("cannot create {DYNMODS_AT}: {e}"))?;
    let output = Command::new("mount")
        .args(["-t", "cgroup", "-o", "none,name=baton-dynmods,favordynmods"])
        .arg("cgroup")
        .arg(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !output.status.success() {
        let _ = fs::remove_dir(at);
        return Err(format!(
            "mount -t cgroup -o none,name=baton-dynmods,favordynmods cgroup {DYNMODS_AT} failed ({}): {} (favordynmods needs Linux 6.0 or later and root)",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(format!(
        "mounted a cgroup hierarchy with favordynmods at {DYNMODS_AT} (host-wide, until reboot)"
    ))
}
