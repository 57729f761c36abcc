//! The jail every worker process runs in: bubblewrap (Debian's `bubblewrap`) builds the
//! namespaces and the file system, `setpriv` (util-linux) drops to an unprivileged uid.
//!
//! A jailed worker gets its own PID, mount, IPC, UTS and network namespaces (the network
//! empty, or, when its manifest reserves bandwidth, a private one with shaped egress and
//! no way back to this host: [`crate::netns`]); a root file system made of the
//! host's `/usr` and a few files of `/etc`, read-only; its own directory read-only at the
//! same path; a private `/tmp` (tmpfs, charged to its memory group); a fresh `/proc` and a
//! minimal `/dev`; no environment but what baton sets; user and group 65534 with no
//! capabilities and `no_new_privs`; a system-call filter ([`crate::seccomp`]: no ptrace,
//! no new namespaces, no mounts, no kernel surfaces), handed to bubblewrap on a pipe. Nothing of the server's data directory is visible but the
//! function's own directory.
//!
//! Fail closed: when bubblewrap is missing or cannot build namespaces here, detection
//! gives [`Sandbox::Missing`], under which every worker start is refused with the reason
//! and how to install it ([`INSTALL_HINT`]). Running unjailed ([`Sandbox::Unjailed`]) is
//! only ever an explicit choice: the server's `--insecure-unjailed-process-functions`, or
//! a library user (tests of the bare fallback) naming it.
//!
//! The process tree is `bwrap` (outside) → bwrap's init (PID 1 inside, a reaper) → the
//! command (PID 2 inside). Killing the inner PID 1 makes the kernel kill every process of
//! the namespace, so a timeout or a drop ends the whole tree, however much it forked.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The unprivileged user and group jailed workers run as (`nobody`/`nogroup`).
pub const SANDBOX_UID: u32 = 65534;

/// What `PATH` a jailed worker sees.
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Files and directories of `/etc` a program may need (dynamic loader, time zone,
/// certificates); each is bound read-only when it exists. Nothing else of `/etc` is visible.
const ETC_ENTRIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "alternatives",
    "ssl",
    "ca-certificates",
    "mime.types",
];

/// More of `/etc` for a worker with network.
const ETC_NETWORK_ENTRIES: &[&str] = &["resolv.conf", "hosts", "nsswitch.conf", "gai.conf"];

/// The top-level entries that make up a Debian root: `/usr`, and `/bin`, `/lib`… which are
/// either links into it (merged `/usr`) or directories of their own.
const ROOT_ENTRIES: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// How to get a working jail, said wherever a start is refused for want of one.
pub const INSTALL_HINT: &str = "install bubblewrap and util-linux (Debian and Ubuntu: \
    `apt-get install bubblewrap util-linux`; Fedora: `dnf install bubblewrap`), then check \
    with `baton doctor`; or start the server with --insecure-unjailed-process-functions to \
    run process functions as the server's own user";

/// The jail in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// bubblewrap plus setpriv.
    Bubblewrap {
        /// The `bwrap` binary.
        bwrap: PathBuf,
        /// The `setpriv` binary.
        setpriv: PathBuf,
        /// What a private network needs, or why it cannot be had here (a function that
        /// reserves bandwidth is then refused).
        network: Result<crate::netns::NetworkTools, String>,
    },
    /// No jail, chosen explicitly: workers run as the server's own user (printed loudly).
    Unjailed,
    /// No working jail on this host: every worker start is refused (fail closed).
    Missing {
        /// Why (what detection found).
        why: String,
    },
}

/// Why a worker could not be jailed. Its message names no host detail (what detection
/// found is in `why`, for the operator's log and `baton doctor`), since it reaches clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoSandbox {
    /// No working jail at all.
    #[error(
        "no working sandbox on this node (see `baton doctor`): process functions are \
         refused; {INSTALL_HINT}"
    )]
    Missing {
        /// What detection found.
        why: String,
    },
    /// A jail, but no private network for a function that reserves bandwidth.
    #[error(
        "no private network on this node (see `baton doctor`): {}",
        crate::netns::NETWORK_HINT
    )]
    NoNetwork {
        /// What detection found.
        why: String,
    },
}

/// What detection found, for the report.
#[derive(Debug, Clone)]
pub struct SandboxDetection {
    /// The jail chosen.
    pub sandbox: Sandbox,
    /// What was tried and why it was or was not chosen.
    pub notes: Vec<String>,
}

impl std::fmt::Display for SandboxDetection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sandbox {
            Sandbox::Bubblewrap { bwrap, network, .. } => {
                writeln!(
                    f,
                    "sandbox: bubblewrap ({}): uid {SANDBOX_UID}, own PID/mount/IPC/UTS/network \
                     namespaces, read-only root, private /tmp, seccomp filter",
                    bwrap.display()
                )?;
                match network {
                    Ok(tools) => writeln!(
                        f,
                        "  reserved bandwidth: a private network through {}, egress shaped, \
                         this host unreachable",
                        tools.slirp4netns.display()
                    )?,
                    Err(why) => writeln!(
                        f,
                        "  NO private network ({why}): functions that reserve bandwidth are \
                         refused; {}",
                        crate::netns::NETWORK_HINT
                    )?,
                }
            }
            Sandbox::Unjailed => writeln!(
                f,
                "sandbox: NONE, by request. WARNING: worker processes run unjailed as this \
                 server's user"
            )?,
            Sandbox::Missing { .. } => writeln!(
                f,
                "sandbox: MISSING: process functions are refused; {INSTALL_HINT}"
            )?,
        }
        for note in &self.notes {
            writeln!(f, "  {note}")?;
        }
        Ok(())
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(SANDBOX_PATH));
    std::env::split_paths(&path)
        .chain([
            "/usr/bin".into(),
            "/bin".into(),
            "/usr/sbin".into(),
            "/sbin".into(),
        ])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

impl SandboxDetection {
    /// The detection with a missing jail replaced by [`Sandbox::Unjailed`] when `unjailed`
    /// (the operator's explicit, loudly named choice); unchanged otherwise.
    pub fn unjailed_if_missing(mut self, unjailed: bool) -> SandboxDetection {
        if unjailed && matches!(self.sandbox, Sandbox::Missing { .. }) {
            self.sandbox = Sandbox::Unjailed;
        }
        self
    }
}

/// A detection that found no working jail: [`Sandbox::Missing`] with the notes as its
/// reason.
fn missing(notes: Vec<String>) -> SandboxDetection {
    SandboxDetection {
        sandbox: Sandbox::Missing {
            why: notes.join("; "),
        },
        notes,
    }
}

/// Detects the jail: both programs present, and a probe (`true` inside a full jail) passes.
pub fn detect() -> SandboxDetection {
    let mut notes = Vec::new();
    let (Some(bwrap), Some(setpriv)) = (find_on_path("bwrap"), find_on_path("setpriv")) else {
        notes.push("bwrap or setpriv not found".into());
        return missing(notes);
    };
    let network = crate::netns::find_tools(find_on_path);
    let sandbox = Sandbox::Bubblewrap {
        bwrap,
        setpriv,
        network,
    };
    let Some(probe_program) = find_on_path("true") else {
        notes.push("no `true` program to probe the jail with".into());
        return missing(notes);
    };
    let jail = Jail {
        program: &probe_program,
        args: &[],
        workdir: None,
        network: JailNetwork::None,
        tmp_bytes: 1 << 20,
    };
    let Ok((mut probe, _)) = sandbox.command(&jail) else {
        notes.push("the jail refused its own probe".into());
        return missing(notes);
    };
    let probe = probe
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(output) if output.status.success() => {
            notes.push("probe: a jailed `true` ran".into());
            SandboxDetection { sandbox, notes }
        }
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            notes.push(format!(
                "probe failed ({}): {}",
                output.status,
                stderr.lines().next().unwrap_or("").trim()
            ));
            missing(notes)
        }
        Err(e) => {
            notes.push(format!("probe could not start bwrap: {e}"));
            missing(notes)
        }
    }
}

/// The network a jail gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailNetwork {
    /// None: a namespace with only loopback.
    None,
    /// A private namespace with egress through slirp4netns, shaped to this many Mbit/s,
    /// this host unreachable ([`crate::netns`]).
    Private {
        /// The reserved egress.
        mbps: u64,
    },
    /// The host's own network (a function that names auxiliary services on this host's
    /// loopback; to be replaced by forwarding each service's port alone).
    Host,
}

/// One program to jail.
#[derive(Debug, Clone, Copy)]
pub struct Jail<'a> {
    /// The program, an absolute path (already resolved on the server's `PATH`).
    pub program: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// The function's directory: bound read-only at the same path, and the working directory.
    pub workdir: Option<&'a Path>,
    /// Its network.
    pub network: JailNetwork,
    /// Size of its private `/tmp`.
    pub tmp_bytes: u64,
}

/// The directory to bind so that `program` runs inside the jail: nothing when it lies under
/// the system directories every jail has; otherwise its installation prefix (the parent of
/// its `bin` directory, as for a pyenv or /opt interpreter). A program outside any `bin`
/// directory gets nothing: it must then live in the function's own directory.
fn program_prefix(program: &Path) -> Option<&Path> {
    let system = ROOT_ENTRIES
        .iter()
        .any(|entry| program.starts_with(Path::new("/").join(entry)));
    if system {
        return None;
    }
    let bin = program.parent()?;
    if bin.file_name().is_some_and(|name| name == "bin") {
        bin.parent().filter(|prefix| prefix != &Path::new("/"))
    } else {
        None
    }
}

/// Makes every parent of `path` inside the jail, open (0755) as on the host: directories
/// bwrap makes on its own for a bind's parents are closed to others. `made` lists what
/// exists already.
fn make_parents(command: &mut Command, made: &mut Vec<PathBuf>, path: &Path) {
    let mut ancestors: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .filter(|a| a.parent().is_some())
        .collect();
    ancestors.reverse();
    for dir in ancestors {
        if !made.iter().any(|m| m == dir) {
            command.args(["--perms", "0755", "--dir"]).arg(dir);
            made.push(dir.to_owned());
        }
    }
}

/// The read end of a pipe holding `program` (the writer closed), at a descriptor of 10 or
/// more, so that no descriptor a child is given a fixed number (its template socket's 3)
/// replaces it. A pipe's buffer (64 KiB) holds the few hundred bytes of the filter (or of
/// a file's content for `--ro-bind-data`).
fn filter_pipe(program: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    let (reader, writer) = rustix::pipe::pipe()?;
    let written = rustix::io::write(&writer, program)?;
    if written != program.len() {
        return Err(std::io::Error::other("the filter did not fit in a pipe"));
    }
    drop(writer);
    Ok(rustix::io::fcntl_dupfd_cloexec(&reader, 10)?)
}

/// Has the child `command` starts keep `fd` across exec: as `target` (moved there), or
/// at its own number. The parent's copy closes with the command.
pub(crate) fn pass_fd(command: &mut Command, fd: std::os::fd::OwnedFd, target: Option<i32>) {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::CommandExt;
    #[allow(unsafe_code)]
    // SAFETY: `pre_exec` runs the closure in the forked child before exec; it makes one or
    // two system calls (dup2, fcntl) on a descriptor the parent owns, allocates nothing and
    // takes no lock, so it is async-signal-safe. The `OwnedFd` made for the target number
    // is forgotten, so nothing closes it.
    unsafe {
        command.pre_exec(move || match target {
            Some(target) if fd.as_raw_fd() != target => {
                let mut at = std::os::fd::OwnedFd::from_raw_fd(target);
                let result = rustix::io::dup2(&fd, &mut at);
                std::mem::forget(at);
                result.map_err(Into::into)
            }
            _ => {
                rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())?;
                Ok(())
            }
        });
    }
}

impl Sandbox {
    /// The command that runs `jail` inside the sandbox (or bare, when unjailed by
    /// choice), and, for a private network, what the caller completes once it started
    /// (the program waits for it: [`crate::netns::PendingNetwork::establish`]); refused
    /// when the jail is missing. Its environment is empty but for `PATH`, `HOME=/tmp` and
    /// `LANG`; the caller adds the function's own variables.
    pub fn command(
        &self,
        jail: &Jail<'_>,
    ) -> Result<(Command, Option<crate::netns::PendingNetwork>), NoSandbox> {
        let mut pending = None;
        let mut command = match self {
            Sandbox::Missing { why } => return Err(NoSandbox::Missing { why: why.clone() }),
            Sandbox::Unjailed => {
                let mut command = Command::new(jail.program);
                command.args(jail.args);
                if let Some(dir) = jail.workdir {
                    command.current_dir(dir);
                }
                // Its own process group, so that a kill reaches what it forked.
                std::os::unix::process::CommandExt::process_group(&mut command, 0);
                command
            }
            Sandbox::Bubblewrap {
                bwrap,
                setpriv,
                network,
            } => {
                let mut command = Command::new(bwrap);
                let filter = crate::seccomp::program().ok_or_else(|| NoSandbox::Missing {
                    why: "no system-call filter for this architecture".into(),
                })?;
                let fd = filter_pipe(&filter).map_err(|e| NoSandbox::Missing {
                    why: format!("cannot hand the system-call filter to bubblewrap: {e}"),
                })?;
                use std::os::fd::AsRawFd;
                command.arg("--seccomp").arg(fd.as_raw_fd().to_string());
                pass_fd(&mut command, fd, None);
                command.args([
                    "--die-with-parent",
                    "--new-session",
                    "--unshare-pid",
                    "--unshare-ipc",
                    "--unshare-uts",
                    "--unshare-cgroup-try",
                    "--hostname",
                    "baton",
                ]);
                if jail.network != JailNetwork::Host {
                    command.arg("--unshare-net");
                }
                if let JailNetwork::Private { mbps } = jail.network {
                    let tools = network
                        .as_ref()
                        .map_err(|why| NoSandbox::NoNetwork { why: why.clone() })?;
                    let failed = |e: std::io::Error| NoSandbox::NoNetwork {
                        why: format!("cannot make its pipes: {e}"),
                    };
                    let ((info, block), waiting) =
                        crate::netns::pending(tools, mbps).map_err(failed)?;
                    command
                        .arg("--info-fd")
                        .arg(info.as_raw_fd().to_string())
                        .arg("--block-fd")
                        .arg(block.as_raw_fd().to_string());
                    pass_fd(&mut command, info, None);
                    pass_fd(&mut command, block, None);
                    // slirp4netns's DNS, not the host's resolver (often on its loopback).
                    let resolv =
                        filter_pipe(crate::netns::RESOLV_CONF.as_bytes()).map_err(failed)?;
                    command
                        .args(["--perms", "0644", "--ro-bind-data"])
                        .arg(resolv.as_raw_fd().to_string())
                        .arg("/etc/resolv.conf");
                    pass_fd(&mut command, resolv, None);
                    pending = Some(waiting);
                }
                let root = Path::new("/");
                for entry in ROOT_ENTRIES {
                    let path = root.join(entry);
                    match std::fs::read_link(&path) {
                        Ok(target) => {
                            command.arg("--symlink").arg(target).arg(&path);
                        }
                        Err(_) if path.is_dir() => {
                            command.arg("--ro-bind").arg(&path).arg(&path);
                        }
                        Err(_) => {}
                    }
                }
                // Directories bwrap makes on its own for a bind's parents are closed to
                // others; make every parent first, open (0755), as on the host.
                // "/" exists; /tmp becomes a tmpfs of its own below.
                let mut made: Vec<PathBuf> = Vec::new();
                let etc = Path::new("/etc");
                make_parents(&mut command, &mut made, &etc.join("x"));
                let network_entries = match jail.network {
                    JailNetwork::None => &[],
                    // resolv.conf comes with the private network's own DNS.
                    JailNetwork::Private { .. } => &ETC_NETWORK_ENTRIES[1..],
                    JailNetwork::Host => ETC_NETWORK_ENTRIES,
                };
                for entry in ETC_ENTRIES.iter().chain(network_entries) {
                    let path = etc.join(entry);
                    if path.exists() {
                        command.arg("--ro-bind").arg(&path).arg(&path);
                    }
                }
                if let Some(prefix) = program_prefix(jail.program) {
                    make_parents(&mut command, &mut made, prefix);
                    command.arg("--ro-bind").arg(prefix).arg(prefix);
                }
                command
                    .args([
                        "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size",
                    ])
                    .arg(jail.tmp_bytes.max(1 << 20).to_string())
                    .args(["--tmpfs", "/tmp"]);
                made.push(PathBuf::from("/tmp"));
                match jail.workdir {
                    Some(dir) => {
                        make_parents(&mut command, &mut made, dir);
                        command
                            .arg("--ro-bind")
                            .arg(dir)
                            .arg(dir)
                            .arg("--chdir")
                            .arg(dir);
                    }
                    None => {
                        command.args(["--chdir", "/tmp"]);
                    }
                }
                let id = SANDBOX_UID.to_string();
                command
                    .arg("--")
                    .arg(setpriv)
                    .arg(format!("--reuid={id}"))
                    .arg(format!("--regid={id}"))
                    .args([
                        "--clear-groups",
                        "--inh-caps=-all",
                        "--bounding-set=-all",
                        "--no-new-privs",
                        "--",
                    ])
                    .arg(jail.program)
                    .args(jail.args);
                command
            }
        };
        command
            .env_clear()
            .env("PATH", SANDBOX_PATH)
            .env("HOME", "/tmp")
            .env("LANG", "C.UTF-8");
        Ok((command, pending))
    }

    /// Whether workers run jailed.
    pub fn is_jailed(&self) -> bool {
        matches!(self, Sandbox::Bubblewrap { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_outside_the_system_binds_its_prefix_only() {
        assert_eq!(program_prefix(Path::new("/usr/bin/python3")), None);
        assert_eq!(
            program_prefix(Path::new("/root/.pyenv/versions/3.11.7/bin/python3")),
            Some(Path::new("/root/.pyenv/versions/3.11.7"))
        );
        // Never the whole root, nor a directory that is not an installation.
        assert_eq!(program_prefix(Path::new("/bin2/x")), None);
        assert_eq!(program_prefix(Path::new("/etc/passwd")), None);
        assert_eq!(
            program_prefix(Path::new("/opt/bin/x")),
            Some(Path::new("/opt"))
        );
    }
}
