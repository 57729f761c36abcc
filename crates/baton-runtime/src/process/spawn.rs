//! Starting a worker's process: the program resolved, the jailed command with its
//! environment and limits, the launcher thread every process is started from, and what
//! `/proc` says about a process (its parent, its CPU time, how a zombie ended).

use super::{Placement, WorkerError};
use crate::isolation::Isolation;
use crate::limits::{self, LimitGuard, WorkerLimits};
use crate::manifest::{FunctionKind, FunctionSpec};
use crate::sandbox::{Jail, JailNetwork};
use baton_core::sync::Unpoisoned;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};

/// The program to start for `program`: a bare `python3`/`python` becomes the interpreter's
/// real path (asked once, then cached), another bare name its path on the server's `PATH`;
/// a path is kept (a relative one is taken from the function's directory).
pub fn resolve_program(program: &str) -> String {
    static RESOLVED: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    if program.contains('/') {
        return program.to_owned();
    }
    let cache = RESOLVED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock_unpoisoned();
    cache
        .entry(program.to_owned())
        .or_insert_with(|| {
            let interpreter = matches!(program, "python3" | "python")
                .then(|| {
                    Command::new(program)
                        .args(["-c", "import sys; print(sys.executable)"])
                        .stderr(Stdio::null())
                        .output()
                        .ok()
                })
                .flatten()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty());
            interpreter
                .or_else(|| {
                    let path = std::env::var_os("PATH")?;
                    std::env::split_paths(&path)
                        .map(|dir| dir.join(program))
                        .find(|candidate| candidate.is_file())
                        .map(|found| found.display().to_string())
                })
                .unwrap_or_else(|| program.to_owned())
        })
        .clone()
}

/// The limits a worker of `spec` runs under on `placement`, spawned or forked.
pub(super) fn worker_limits<'a>(spec: &FunctionSpec, placement: &'a Placement) -> WorkerLimits<'a> {
    WorkerLimits {
        memory_mib: spec.limits.memory_mib,
        cpu_millicores: spec.limits.cpu_millicores,
        cores: &placement.cores,
        max_processes: spec.max_processes,
    }
}

/// A worker's start, prepared: the command (jailed, its environment, piped stdio, its
/// limits arranged), the program's name for errors, the limits' guard, and the private
/// network to give it once started.
pub(super) struct Prepared {
    pub(super) command: Command,
    pub(super) program: String,
    pub(super) limits: LimitGuard,
    network: Option<crate::netns::PendingNetwork>,
}

impl Prepared {
    /// Starts the prepared process (from the launcher) and, for a private network, gives
    /// it its network before its program runs; a start whose network fails is killed.
    pub(super) fn start(
        self,
        function: &str,
    ) -> Result<(Child, LimitGuard, Option<crate::netns::Network>), WorkerError> {
        let Prepared {
            command,
            program,
            limits,
            network,
        } = self;
        let mut child = launch(command).map_err(|source| WorkerError::Spawn {
            function: function.to_owned(),
            program,
            source,
        })?;
        let network = match network.map(crate::netns::PendingNetwork::establish) {
            None => None,
            Some(Ok(network)) => Some(network),
            Some(Err(message)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(WorkerError::Network {
                    function: function.to_owned(),
                    message,
                });
            }
        };
        Ok((child, limits, network))
    }
}

pub(super) fn command_for(
    spec: &FunctionSpec,
    isolation: &Isolation,
    placement: &Placement,
) -> Result<Prepared, WorkerError> {
    let FunctionKind::Process { command } = &spec.kind else {
        return Err(WorkerError::NotProcess(spec.name.clone()));
    };
    let mut program = std::path::PathBuf::from(resolve_program(&command[0]));
    if program.is_relative() {
        if let Some(dir) = &spec.workdir {
            program = dir.join(program);
        }
    }
    if program.is_absolute() && !program.is_file() {
        return Err(WorkerError::Spawn {
            function: spec.name.clone(),
            program: program.display().to_string(),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let jail = Jail {
        program: &program,
        args: &command[1..],
        workdir: spec.workdir.as_deref(),
        // Services to talk to on this host's loopback: its network (to be narrowed to the
        // services' ports); bandwidth reserved: a private network shaped to it.
        network: if !spec.services.is_empty() {
            JailNetwork::Host
        } else if spec.limits.net_mbps > 0 {
            JailNetwork::Private {
                mbps: spec.limits.net_mbps,
            }
        } else {
            JailNetwork::None
        },
        tmp_bytes: spec.limits.memory_mib << 20,
    };
    let (mut builder, network) =
        isolation
            .sandbox
            .command(&jail)
            .map_err(|refused| WorkerError::NoSandbox {
                function: spec.name.clone(),
                refused,
            })?;
    builder
        .envs(&spec.env)
        .env("BATON_FUNCTION", &spec.name)
        .env("BATON_GPU_UNITS", placement.gpu_units.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Captured per invocation, bounded: never into the server's own log.
        .stderr(Stdio::piped());
    let limits = limits::apply(
        &isolation.limits,
        &worker_limits(spec, placement),
        &mut builder,
    )
    .map_err(|message| WorkerError::Limits {
        function: spec.name.clone(),
        message,
    })?;
    Ok(Prepared {
        command: builder,
        program: program.display().to_string(),
        limits,
        network,
    })
}

type Launch = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Starts `command` from the launcher, one thread that lives as long as the process: a
/// jailed worker dies with the thread that started it (bwrap's `--die-with-parent` is a
/// parent-death signal, which Linux sends when that *thread* ends), and pre-warm and
/// request threads come and go. So workers die with the server, and only with it.
pub(super) fn launch(command: Command) -> std::io::Result<Child> {
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<Launch>>> = OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<Launch>();
        let started = std::thread::Builder::new()
            .name("baton-launcher".into())
            .spawn(move || {
                for (mut command, reply) in requests {
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(e) = started {
            // Without a launcher thread every launch reports this.
            eprintln!("baton: cannot start the launcher thread: {e}");
        }
        Mutex::new(sender)
    });
    let (reply, answer) = mpsc::channel();
    let sent = launcher.lock_unpoisoned().send((command, reply));
    if sent.is_err() {
        return Err(std::io::Error::other("the launcher thread is gone"));
    }
    answer
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the launcher thread is gone")))
}

/// Under a jailed start (`bwrap` → the jail's init → the function's process): the init
/// and the process, looked for among `candidates` (the process's groups) when given.
pub(super) fn jailed_tree(bwrap: u32, candidates: Option<&[u32]>) -> (Option<u32>, Option<u32>) {
    let init = first_child(bwrap, candidates);
    (init, init.and_then(|init| first_child(init, candidates)))
}

/// Kills a started process's whole tree: jailed, the jail's init (the kernel then kills
/// every process of its PID namespace); unjailed, its process group; then the process
/// itself, reaped.
pub(super) fn kill_tree(
    child: &mut Child,
    jailed: bool,
    jail_init: Option<u32>,
    limits: &LimitGuard,
) {
    use rustix::process::{kill_process, kill_process_group, Pid, Signal};
    if jailed {
        let init = jail_init.or_else(|| first_child(child.id(), limits.processes().as_deref()));
        if let Some(init) = init.and_then(|p| Pid::from_raw(p as i32)) {
            let _ = kill_process(init, Signal::KILL);
        }
    } else if let Some(group) = Pid::from_raw(child.id() as i32) {
        let _ = kill_process_group(group, Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The oldest child of `parent`, looked for among `candidates` (the worker's group) when
/// given, else among every process.
pub(super) fn first_child(parent: u32, candidates: Option<&[u32]>) -> Option<u32> {
    let all: Vec<u32>;
    let pids = match candidates {
        Some(pids) => pids,
        None => {
            all = std::fs::read_dir("/proc")
                .ok()?
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            &all
        }
    };
    pids.iter()
        .copied()
        .filter(|&pid| parent_of(pid) == Some(parent))
        .min()
}

/// The parent of `pid` (`/proc/PID/stat` field 4).
pub(super) fn parent_of(pid: u32) -> Option<u32> {
    limits::stat_field(pid, 4).and_then(|ppid| u32::try_from(ppid).ok())
}

/// How `pid` ended, while it is a zombie (`/proc/PID/stat`: state `Z`, exit code field 52).
pub(super) fn zombie_status(pid: u32) -> Option<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if fields.next()? != "Z" {
        return None;
    }
    let raw: i32 = fields.nth(52 - 4)?.parse().ok()?;
    Some(std::process::ExitStatus::from_raw(raw))
}

/// CPU time of `pid`'s main thread, ns (`/proc/PID/schedstat`).
pub(super) fn read_cpu_ns(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
}
