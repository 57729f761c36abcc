//! Templates ("zygotes"): a function's process that has imported its module and everything
//! the module imports, and forks a worker per cold start instead of starting an interpreter.
//!
//! A template is started exactly as a worker of its function is (the same jail, uid,
//! namespaces, environment, and limits of its own), with `BATON_TEMPLATE=1` and one end of
//! a Unix socket as fd 3. The worker helper (`examples/python/baton_worker.py`), called
//! once the module is loaded, then says `T` on the socket instead of serving. To make a
//! worker, baton sends `F` with three new pipes (the worker's stdin, stdout and stderr);
//! the template forks, the child takes them as fds 0–2, starts its own session, re-seeds
//! its random state and speaks the worker protocol; the template answers with the child's
//! pid, and reaps it when baton says so (`W` and the pid, answered `w`: after a kill, or
//! once baton has read how it ended). baton then puts the child under its own limits (its own
//! groups, as any worker's) before it is handed a call.
//!
//! A template runs at nice 10: its forks (mostly spares, made while steps run) give way to
//! the steps; each child is set back to the default priority as soon as its pid is known.
//!
//! A template is per function and lives inside that function's jail, so nothing of one
//! function is visible to another; its forked workers share its jail (namespaces, its
//! private `/tmp`) and, copy-on-write, its memory. Each forked worker's `TMPDIR` and
//! `HOME` are a directory of its own, which the template removes when it reaps the worker,
//! and in a jail (`BATON_TMP_SWEEP=1`) it also removes what dead workers wrote straight
//! into `/tmp`: a worker's files are charged to its memory group and freed with it. Each forked worker holds its template:
//! jailed, the template's end would end its jail, and every process in it.

use super::error::WorkerError;
use super::output::{capture_stderr, stderr_tail, Captured, InFlight};
use super::spawn::{jailed_tree, kill_tree, worker_limits};
use super::{Attach, Placement, Worker};
use crate::isolation::Isolation;
use crate::limits::{self, LimitGuard};
use crate::manifest::FunctionSpec;
use baton_core::sync::Unpoisoned;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running template of one function.
#[derive(Debug)]
pub struct Template {
    function: String,
    child: Child,
    /// The template's own process (outside the jail's PID namespace).
    main_pid: u32,
    jail_init: Option<u32>,
    jailed: bool,
    /// Our end of the socket; one fork at a time.
    control: Mutex<UnixStream>,
    /// Reaps whose answer (`w`) did not come in time: the template answers in order, so
    /// that many `w` precede its next answer. Changed only under `control`'s lock.
    owed: std::sync::atomic::AtomicUsize,
    stderr: Arc<Mutex<Captured>>,
    limits: LimitGuard,
    ready_after: Duration,
    /// The jail's private network (shared by every worker forked in it), ended after the
    /// template.
    _network: Option<crate::netns::Network>,
}

impl Template {
    /// Starts a template of `spec` and waits (up to the function's timeout) until it has
    /// loaded the module and says it is ready to fork.
    pub fn start(spec: &FunctionSpec, isolation: &Isolation) -> Result<Template, WorkerError> {
        let started = Instant::now();
        let mut prepared = super::command_for(spec, isolation, &Placement::default())?;
        let command = &mut prepared.command;
        let (ours, theirs) = UnixStream::pair().map_err(|source| WorkerError::Spawn {
            function: spec.name.clone(),
            program: "template socket".into(),
            source,
        })?;
        let theirs = OwnedFd::from(theirs);
        if isolation.sandbox.is_jailed() {
            // /tmp is the jail's own: the template may sweep what dead children left there.
            command.env("BATON_TMP_SWEEP", "1");
        }
        command
            .env("BATON_TEMPLATE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        crate::sandbox::pass_fd(command, theirs, Some(3));
        let (mut child, limits, network) = prepared.start(&spec.name)?;
        let stderr = Arc::new(Mutex::new(Captured::default()));
        if let Some(pipe) = child.stderr.take() {
            let (kept, in_flight) = (Arc::clone(&stderr), InFlight::default());
            let pipe = std::fs::File::from(OwnedFd::from(pipe));
            let _ = std::thread::Builder::new()
                .name(format!("baton-template-{}", spec.name))
                .spawn(move || capture_stderr(pipe, kept, in_flight));
        }
        let jailed = isolation.sandbox.is_jailed();
        let mut template = Template {
            function: spec.name.clone(),
            main_pid: child.id(),
            child,
            jail_init: None,
            jailed,
            control: Mutex::new(ours),
            owed: Default::default(),
            stderr,
            limits,
            ready_after: Duration::ZERO,
            _network: network,
        };
        let timeout = Duration::from_millis(spec.timeout_ms.max(1));
        let mut ready = [0u8; 1];
        let said = {
            let mut control = template.control.lock_unpoisoned();
            let _ = control.set_read_timeout(Some(timeout));
            control.read_exact(&mut ready)
        };
        match said {
            Ok(()) if ready == *b"T" => {}
            Ok(()) => return Err(template.failed("it said something other than T")),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(template
                    .failed("it exited before it was ready (does it call baton_worker.serve?)"))
            }
            Err(_) => {
                return Err(WorkerError::NotReady {
                    function: spec.name.clone(),
                    waited_ms: timeout.as_millis() as u64,
                    stderr: template.stderr_tail(),
                })
            }
        }
        template.ready_after = started.elapsed();
        if jailed {
            let candidates = template.limits.processes();
            let (init, main) = jailed_tree(template.child.id(), candidates.as_deref());
            template.jail_init = init;
            template.main_pid = main.unwrap_or(template.main_pid);
        }
        // Its forks (spares, mostly) yield the CPU to the steps running meanwhile; each
        // child is put back to the default priority as soon as it is known.
        set_nice(template.main_pid, TEMPLATE_NICE);
        Ok(template)
    }

    /// The template's proportional memory (its shared pages split with its forked workers),
    /// KiB (`/proc/PID/smaps_rollup`), if readable.
    pub fn pss_kib(&self) -> Option<u64> {
        super::pss_kib(self.main_pid)
    }

    /// How long the template took to become ready.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The template's own process id (outside the jail's PID namespace).
    pub fn pid(&self) -> u32 {
        self.main_pid
    }

    /// The function it makes workers of.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Whether it is still there to fork.
    pub fn is_alive(&self) -> bool {
        super::running(self.main_pid)
    }

    /// A new worker of `spec`, forked from this template and put under its own limits on
    /// `placement`'s cores; ready (its ready frame received) when returned.
    pub fn fork(
        self: &Arc<Self>,
        spec: &FunctionSpec,
        isolation: &Isolation,
        placement: &Placement,
    ) -> Result<Worker, WorkerError> {
        let started = Instant::now();
        let io = |what: &str| {
            let function = spec.name.clone();
            let what = what.to_owned();
            move |source: std::io::Error| WorkerError::Spawn {
                function,
                program: format!("template: {what}"),
                source,
            }
        };
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| io("pipe")(e.into()))
        };
        let (child_in, our_in) = pipe()?;
        let (our_out, child_out) = pipe()?;
        let (our_err, child_err) = pipe()?;
        let inner_pid = {
            let control = self.control.lock_unpoisoned();
            let fds = [child_in.as_fd(), child_out.as_fd(), child_err.as_fd()];
            let mut space =
                [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut ancillary = rustix::net::SendAncillaryBuffer::new(&mut space);
            ancillary.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
            rustix::net::sendmsg(
                &*control,
                &[IoSlice::new(b"F")],
                &mut ancillary,
                rustix::net::SendFlags::empty(),
            )
            .map_err(|e| io("send")(e.into()))?;
            let mut pid = [0u8; 4];
            let _ = control.set_read_timeout(Some(Duration::from_millis(spec.timeout_ms.max(1))));
            self.take_owed(&control).map_err(|e| self.gone(e))?;
            (&*control).read_exact(&mut pid).map_err(|e| self.gone(e))?;
            u32::from_be_bytes(pid)
        };
        drop((child_in, child_out, child_err));
        if inner_pid == 0 {
            return Err(self.failed("it refused to fork"));
        }
        // The pid comes from the function's own code: only a child of the template is
        // taken (jailed or not), so no other process is ever limited, moved or killed.
        let main_pid = self
            .host_pid_of(inner_pid)
            .ok_or_else(|| self.failed("its forked worker is not among its children"))?;
        set_nice(main_pid, 0);
        let limits = limits::apply_to(&isolation.limits, &worker_limits(spec, placement), main_pid);
        let limits = match limits {
            Ok(limits) => limits,
            Err(message) => {
                kill_forked(main_pid);
                self.reap(inner_pid);
                return Err(WorkerError::Limits {
                    function: spec.name.clone(),
                    message,
                });
            }
        };
        Worker::attach(Attach {
            spec,
            template: Some((Arc::clone(self), inner_pid)),
            child: None,
            main_pid,
            jailed: self.jailed,
            pipes: [our_in, our_out, our_err],
            limits,
            started,
        })
    }

    /// Has the template reap its ended (or killed) child `inner` now, so that its groups
    /// empty at once; waits for the answer (at most a second).
    pub(crate) fn reap(&self, inner: u32) {
        let control = self.control.lock_unpoisoned();
        let mut message = b"W".to_vec();
        message.extend_from_slice(&inner.to_be_bytes());
        let _ = control.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 1];
        let answered = (&*control)
            .write_all(&message)
            .and_then(|()| self.take_owed(&control))
            .and_then(|()| (&*control).read_exact(&mut answer));
        if answered.is_err() {
            // Late (a large /tmp to clear) or gone: the next answer read skips it.
            self.owed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Reads the `w` answers owed by earlier reaps that timed out (`control` locked).
    fn take_owed(&self, control: &UnixStream) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        while self.owed.load(Ordering::Relaxed) > 0 {
            let mut answer = [0u8; 1];
            let mut stream = control;
            stream.read_exact(&mut answer)?;
            self.owed.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The host pid of the template's child whose pid in the template's PID namespace is
    /// `inner` (the same number unjailed).
    fn host_pid_of(&self, inner: u32) -> Option<u32> {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.main_pid)).ok()?;
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|status| {
                        let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
                        line.split_whitespace().last()?.parse::<u32>().ok()
                    })
                    == Some(inner)
            })
    }

    fn gone(&self, error: std::io::Error) -> WorkerError {
        WorkerError::Crashed {
            function: self.function.clone(),
            status: format!("its template did not answer ({error})") + &self.stderr_tail(),
        }
    }

    fn failed(&self, why: &str) -> WorkerError {
        WorkerError::Protocol {
            function: self.function.clone(),
            message: format!("template: {why}{}", self.stderr_tail()),
        }
    }

    /// The last 500 bytes the template wrote on stderr, as `; stderr: …`, or nothing.
    fn stderr_tail(&self) -> String {
        // Give the reader a moment for what the template wrote as it ended.
        std::thread::sleep(Duration::from_millis(20));
        let kept = self.stderr.lock_unpoisoned();
        stderr_tail(&String::from_utf8_lossy(&kept.bytes))
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        // Its forked workers each hold it (an `Arc`): none is left when it goes. Jailed, the
        // jail's init goes, and with it every process of the jail.
        kill_tree(&mut self.child, self.jailed, self.jail_init, &self.limits);
    }
}

/// How nice a template runs: its forks give way to the steps running meanwhile.
const TEMPLATE_NICE: i32 = 10;

/// Sets `pid`'s nice value (as root; unprivileged, only ever upwards: then a forked worker
/// keeps its template's, which only makes it yield more).
fn set_nice(pid: u32, nice: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::setpriority_process(Some(pid), nice);
    }
}

/// Kills a forked worker that never became a [`Worker`].
fn kill_forked(pid: u32) {
    use rustix::process::{kill_process, Pid, Signal};
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, Signal::KILL);
    }
}
