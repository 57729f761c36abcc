//! Warm worker processes: spawned ahead of time (a pre-warm), ready once they say so, then
//! invoked over the framed protocol. A worker that overruns its timeout is killed; one that
//! dies (crash, out of memory) is reported with the reason, and the caller replaces it.
//!
//! Every worker runs in the machine's jail ([`crate::sandbox`]) under its limits
//! ([`crate::limits`]), both in place before its program runs; a kill ends its whole process
//! tree. A bare `python3`/`python` program is resolved once to the real interpreter
//! (`sys.executable`), so a version-manager shim (a shell script) never sits in the cold
//! start; another bare name is resolved on the server's `PATH` (`spawn.rs`). A worker
//! started for a planned step runs on the step's reserved cores. A worker is either
//! spawned (its own jail) or forked from its function's [`Template`] (`template.rs`).

use crate::isolation::Isolation;
use crate::limits::LimitGuard;
use crate::manifest::FunctionSpec;
use crate::protocol::{read_frame, write_frame, FrameKind};
use baton_core::sync::Unpoisoned;
use std::io::BufReader;
use std::process::Child;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
mod error;
mod output;
mod spawn;
mod template;

pub use error::WorkerError;
use output::{capture_stderr, Captured, InFlight};
pub use output::{CapturedOutput, OUTPUT_CAP};
pub use spawn::resolve_program;
use spawn::{command_for, jailed_tree, kill_tree, read_cpu_ns, zombie_status};
pub use template::Template;

type Frame = Result<(FrameKind, Vec<u8>), String>;

/// Whether process `pid` is there and neither a zombie nor dead (`/proc/PID/stat`).
pub(crate) fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next());
        !matches!(state, None | Some("Z" | "X"))
    })
}

/// Process `pid`'s proportional set size, KiB (`/proc/PID/smaps_rollup`), if readable.
pub(crate) fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// A started worker process, handed to [`Worker::attach`].
pub(crate) struct Attach<'a> {
    pub(crate) spec: &'a FunctionSpec,
    pub(crate) child: Option<Child>,
    /// The template it was forked from, kept while it lives, and its pid there.
    pub(crate) template: Option<(Arc<Template>, u32)>,
    /// The function's own process as the host sees it.
    pub(crate) main_pid: u32,
    pub(crate) jailed: bool,
    /// Its stdin, stdout and stderr (the other ends).
    pub(crate) pipes: [std::os::fd::OwnedFd; 3],
    pub(crate) limits: LimitGuard,
    /// When its cold start began.
    pub(crate) started: Instant,
}

/// One warm worker process.
#[derive(Debug)]
pub struct Worker {
    function: String,
    timeout: Duration,
    memory_mib: u64,
    /// The process baton started, or none for a worker forked from a template (its
    /// template reaps it).
    child: Option<Child>,
    /// The template it was forked from (kept while it lives) and its pid in the template's
    /// PID namespace.
    template: Option<(Arc<Template>, u32)>,
    /// The function's own process (outside PID) and, when jailed, the jail's init, whose
    /// death ends every process of the jail.
    main_pid: u32,
    jail_init: Option<u32>,
    jailed: bool,
    stdin: std::fs::File,
    frames: Receiver<Frame>,
    /// Its stderr as captured, and the pipe's read end to see what is still in flight.
    output: Arc<Mutex<Captured>>,
    output_in_flight: InFlight,
    stderr_pipe: Option<std::os::fd::OwnedFd>,
    limits: LimitGuard,
    ready_after: Duration,
    /// Forked ahead as its template's spare, then taken by a start.
    spare: bool,
    alive: bool,
    /// CPU time and peak memory as last read, and invocations since the peak was read.
    last_usage: ProcessUsage,
    /// Its declared memory as admitted on the node (the pool's), returned when it is
    /// dropped: after its processes are killed and its groups removed.
    charge: Option<crate::pool::Charge>,
    since_peak_read: u32,
    /// Its private network (a plain start that reserved bandwidth; a forked worker's is
    /// its template's), ended after the worker.
    network: Option<crate::netns::Network>,
    /// Its keep-alive deadline through every run, once the policy pinned one.
    pinned_until: Option<Instant>,
}

/// Where a worker runs: the cores its reservation named (none: anywhere) and the GPU units
/// it holds (told to it as `BATON_GPU_UNITS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Cores to pin to.
    pub cores: Vec<u32>,
    /// GPU units reserved for it.
    pub gpu_units: u32,
}

/// What a worker process has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessUsage {
    /// CPU time of its main thread, ns (`/proc/PID/schedstat`).
    pub cpu_ns: Option<u64>,
    /// Peak memory, bytes (`VmHWM`, else its memory group's peak).
    pub peak_bytes: Option<u64>,
}

impl Worker {
    /// Starts a worker for `spec` with `isolation` and waits (up to the function's
    /// timeout) for its ready frame. The wait is the cold start.
    pub fn spawn(spec: &FunctionSpec, isolation: &Isolation) -> Result<Worker, WorkerError> {
        Worker::spawn_on(spec, isolation, &Placement::default())
    }

    /// [`Worker::spawn`] on `placement`'s cores.
    pub fn spawn_on(
        spec: &FunctionSpec,
        isolation: &Isolation,
        placement: &Placement,
    ) -> Result<Worker, WorkerError> {
        let started = Instant::now();
        let (mut child, limits, network) =
            command_for(spec, isolation, placement)?.start(&spec.name)?;
        let jailed = isolation.sandbox.is_jailed();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(WorkerError::Protocol {
                function: spec.name.clone(),
                message: "no pipes to the worker".into(),
            });
        };
        let mut worker = Worker::attach(Attach {
            spec,
            main_pid: child.id(),
            child: Some(child),
            template: None,
            jailed,
            pipes: [stdin.into(), stdout.into(), stderr.into()],
            limits,
            started,
        })?;
        worker.network = network;
        Ok(worker)
    }

    /// Reads the worker's stdout (frames) and stderr (captured) on threads of their own and
    /// waits (up to the function's timeout) for its ready frame.
    pub(crate) fn attach(attach: Attach<'_>) -> Result<Worker, WorkerError> {
        let Attach {
            spec,
            child,
            template,
            main_pid,
            jailed,
            pipes: [stdin, stdout, stderr],
            limits,
            started,
        } = attach;
        let output = Arc::new(Mutex::new(Captured::default()));
        let output_in_flight = InFlight::default();
        let stderr_pipe = stderr.try_clone().ok();
        let (sender, frames) = mpsc::channel();
        let mut worker = Worker {
            function: spec.name.clone(),
            timeout: Duration::from_millis(spec.timeout_ms),
            memory_mib: spec.limits.memory_mib,
            main_pid,
            jail_init: None,
            jailed,
            child,
            template,
            stdin: stdin.into(),
            frames,
            output: Arc::clone(&output),
            output_in_flight: Arc::clone(&output_in_flight),
            stderr_pipe,
            limits,
            ready_after: Duration::ZERO,
            spare: false,
            alive: true,
            last_usage: ProcessUsage::default(),
            since_peak_read: u32::MAX,
            charge: None,
            network: None,
            pinned_until: None,
        };
        let stderr = std::fs::File::from(stderr);
        std::thread::Builder::new()
            .name(format!("baton-stderr-{}", spec.name))
            .spawn(move || capture_stderr(stderr, output, output_in_flight))
            .map_err(|source| WorkerError::Spawn {
                function: spec.name.clone(),
                program: "stderr reader thread".into(),
                source,
            })?;
        let stdout = std::fs::File::from(stdout);
        std::thread::Builder::new()
            .name(format!("baton-worker-{}", spec.name))
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                loop {
                    let frame = match read_frame(&mut reader) {
                        Ok(Some(frame)) => Ok(frame),
                        Ok(None) => break,
                        Err(error) => Err(error.to_string()),
                    };
                    let stop = frame.is_err();
                    if sender.send(frame).is_err() || stop {
                        break;
                    }
                }
            })
            .map_err(|source| WorkerError::Spawn {
                function: spec.name.clone(),
                program: "reader thread".into(),
                source,
            })?;
        match worker.frames.recv_timeout(worker.timeout) {
            Ok(Ok((FrameKind::Ready, _))) => {
                worker.ready_after = started.elapsed();
                if let (true, Some(child)) = (jailed, &worker.child) {
                    let candidates = worker.limits.processes();
                    let (init, main) = jailed_tree(child.id(), candidates.as_deref());
                    worker.jail_init = init;
                    worker.main_pid = main.unwrap_or(worker.main_pid);
                }
                worker.last_usage.cpu_ns = read_cpu_ns(worker.main_pid);
                Ok(worker)
            }
            Ok(Ok((kind, _))) => Err(worker.fail_protocol(format!("expected ready, got {kind:?}"))),
            Ok(Err(message)) => Err(worker.fail_protocol(format!(
                "{message} before its ready frame (text on stdout? a worker must speak \
                 baton's protocol, e.g. through examples/python/baton_worker.py)"
            ))),
            Err(RecvTimeoutError::Timeout) => {
                worker.kill();
                Err(WorkerError::NotReady {
                    function: worker.function.clone(),
                    waited_ms: worker.timeout.as_millis() as u64,
                    stderr: worker.stderr_tail(),
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(match worker.lost() {
                WorkerError::Crashed { function, status } => {
                    WorkerError::ExitedBeforeReady { function, status }
                }
                other => other,
            }),
        }
    }

    /// Whether it was forked from a template.
    pub fn is_forked(&self) -> bool {
        self.template.is_some()
    }

    /// Whether it was its template's spare (forked ahead, taken by a start).
    pub fn is_spare(&self) -> bool {
        self.spare
    }

    /// Pins its keep-alive deadline to `until` unless one is pinned already (the policy's
    /// `Decision::PinKeepAlive`): it is kept until then through its later runs. Returns
    /// the deadline pinned.
    pub fn pin_keep_alive(&mut self, until: Instant) -> Instant {
        *self.pinned_until.get_or_insert(until)
    }

    /// Its pinned keep-alive deadline, if any.
    pub fn pinned_until(&self) -> Option<Instant> {
        self.pinned_until
    }

    /// This spare, taken by a start that took `took` (its cold start from now on).
    pub(crate) fn taken_as_spare(mut self, took: Duration) -> Worker {
        self.spare = true;
        self.ready_after = took;
        self
    }

    /// Whether its process is still there (not ended, not a zombie), read from `/proc`
    /// without a call: for a worker that has run none yet (a spare).
    pub(crate) fn is_running(&self) -> bool {
        running(self.main_pid)
    }

    /// How long the worker took to become ready (its cold start; for a spare, how long
    /// the start that took it waited).
    pub fn cold_start(&self) -> Duration {
        self.ready_after
    }

    /// The function's own process id (outside the jail's PID namespace).
    pub fn pid(&self) -> u32 {
        self.main_pid
    }

    /// How limits were applied.
    pub fn limits(&self) -> &str {
        &self.limits.how
    }

    /// The worker's cgroups (empty without cgroups); gone once the worker is dropped.
    pub fn limit_groups(&self) -> &[std::path::PathBuf] {
        self.limits.groups()
    }

    /// Whether the worker can still serve.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// The function it serves.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Its memory limit, MiB.
    pub fn memory_mib(&self) -> u64 {
        self.memory_mib
    }

    /// Holds `charge` (its admitted memory) until it is dropped.
    pub(crate) fn hold(&mut self, charge: crate::pool::Charge) {
        self.charge = Some(charge);
    }

    fn read_peak(&self, pid: u32) -> Option<u64> {
        // The process's own peak resident set; its memory group's peak misses what it
        // allocated before it was moved into the group.
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib << 10)
            })
            .or_else(|| self.limits.memory_peak())
    }

    /// The CPU time of the last invocation (ms) and the peak memory (bytes), read once after
    /// it: CPU against the reading after the previous invocation (an idle worker burns
    /// none), the peak every 8th invocation (it only grows, and reading it costs more than
    /// a hop).
    pub fn usage_of_last_invocation(&mut self) -> (Option<f64>, Option<u64>) {
        let pid = self.main_pid;
        let cpu_ns = read_cpu_ns(pid);
        let cpu_ms = match (cpu_ns, self.last_usage.cpu_ns) {
            (Some(now), Some(before)) => Some(now.saturating_sub(before) as f64 / 1e6),
            _ => None,
        };
        self.since_peak_read = self.since_peak_read.saturating_add(1);
        if self.since_peak_read >= 8 {
            self.last_usage.peak_bytes = self.read_peak(pid);
            self.since_peak_read = 0;
        }
        self.last_usage.cpu_ns = cpu_ns;
        (cpu_ms, self.last_usage.peak_bytes)
    }

    /// Kills the worker's whole tree: the jail's init (the kernel then kills every process
    /// of its PID namespace) or, unjailed, the worker's process group; then bwrap itself.
    /// Whatever is left in its groups is killed when the limit guard drops.
    fn kill(&mut self) {
        use rustix::process::{kill_process, kill_process_group, Pid, Signal};
        self.alive = false;
        let Some(child) = self.child.as_mut() else {
            // Forked from a template: it leads its own session and process group; its
            // template reaps it (its groups can then be removed).
            if let Some(own) = Pid::from_raw(self.main_pid as i32) {
                let _ = kill_process_group(own, Signal::KILL);
                let _ = kill_process(own, Signal::KILL);
            }
            if let Some((template, inner)) = &self.template {
                template.reap(*inner);
            }
            return;
        };
        kill_tree(child, self.jailed, self.jail_init, &self.limits);
    }

    fn fail_protocol(&mut self, message: String) -> WorkerError {
        self.kill();
        WorkerError::Protocol {
            function: self.function.clone(),
            message,
        }
    }

    /// The worker is gone: reap it and say why.
    fn lost(&mut self) -> WorkerError {
        let status = match self.child.as_mut() {
            Some(child) => child.wait().map_or("unknown".to_owned(), |s| s.to_string()),
            // Forked: read from the zombie's `stat` (it closed its pipes just before it
            // became one), then reaped by its template.
            None => {
                let deadline = Instant::now() + Duration::from_millis(100);
                let mut status = zombie_status(self.main_pid);
                while status.is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                    status = zombie_status(self.main_pid);
                }
                if let Some((template, inner)) = &self.template {
                    template.reap(*inner);
                }
                status.map_or("exited (forked from its template)".to_owned(), |s| {
                    s.to_string()
                })
            }
        } + &self.stderr_tail();
        self.alive = false;
        if self.limits.oom_killed() {
            WorkerError::OutOfMemory {
                function: self.function.clone(),
                limit_mib: self.memory_mib,
            }
        } else {
            WorkerError::Crashed {
                function: self.function.clone(),
                status,
            }
        }
    }

    /// The last lines of what the worker wrote on stderr (at most 500 bytes), as
    /// `; stderr: …`, for the error that ends it; empty when it wrote nothing.
    fn stderr_tail(&mut self) -> String {
        output::stderr_tail(&self.take_output().text)
    }

    /// What the worker wrote on stderr since the last take (its cold start's output goes
    /// with its first invocation). Waits briefly for what is still in the pipe, so that a
    /// line written just before the result is not left for the next invocation.
    pub fn take_output(&mut self) -> CapturedOutput {
        if let Some(pipe) = &self.stderr_pipe {
            // Only waits while bytes are still in the pipe or being kept (a loaded machine
            // may not run the reader at once); at most 100 ms.
            let deadline = Instant::now() + Duration::from_millis(100);
            let pending = || {
                rustix::io::ioctl_fionread(pipe).is_ok_and(|n| n > 0)
                    || self
                        .output_in_flight
                        .load(std::sync::atomic::Ordering::SeqCst)
            };
            // What the worker wrote before its result is in the pipe by now; the reader
            // marks itself in flight before it takes bytes out, so the pipe's count is read
            // first, then the flag.
            while Instant::now() < deadline && pending() {
                std::thread::yield_now();
            }
        }
        let mut captured = self.output.lock_unpoisoned();
        let bytes = std::mem::take(&mut captured.bytes);
        CapturedOutput {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            dropped_bytes: std::mem::take(&mut captured.dropped),
        }
    }

    /// Runs one invocation with `payload`.
    pub fn invoke(&mut self, payload: &[u8]) -> Result<Vec<u8>, WorkerError> {
        if !self.alive {
            return Err(WorkerError::Crashed {
                function: self.function.clone(),
                status: "already dead".into(),
            });
        }
        if let Err(error) = write_frame(&mut self.stdin, FrameKind::Invoke, payload) {
            if let crate::protocol::ProtocolError::TooLarge(n) = error {
                return Err(WorkerError::Function {
                    function: self.function.clone(),
                    message: format!("payload of {n} bytes is over the frame limit"),
                });
            }
            return Err(self.lost());
        }
        match self.frames.recv_timeout(self.timeout) {
            Ok(Ok((FrameKind::Ok, result))) => Ok(result),
            Ok(Ok((FrameKind::Error, message))) => Err(WorkerError::Function {
                function: self.function.clone(),
                message: String::from_utf8_lossy(&message).into_owned(),
            }),
            Ok(Ok((kind, _))) => {
                Err(self.fail_protocol(format!("expected a result, got {kind:?}")))
            }
            Ok(Err(message)) => Err(self.fail_protocol(message)),
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Err(WorkerError::Timeout {
                    function: self.function.clone(),
                    timeout_ms: self.timeout.as_millis() as u64,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.lost()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.alive {
            self.kill();
        }
    }
}
