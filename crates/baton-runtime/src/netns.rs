//! A jailed worker's private network: a function that reserves bandwidth gets its own
//! network namespace (bubblewrap's `--unshare-net`) with user-mode egress through
//! `slirp4netns` (Debian's `slirp4netns`), shaped to its reservation, and no way back to
//! this host: `--disable-host-loopback` keeps the gateway from reaching the host's
//! loopback, and every address of the host itself is an unreachable route inside the
//! namespace, so neither the baton API, NATS, nor any service of the node answers.
//!
//! The order matters, and bubblewrap gives the hooks for it: the jail is started with
//! `--info-fd` (it writes the sandboxed process's PID once the namespaces exist) and
//! `--block-fd` (it waits there before running the worker's program). Between the two,
//! [`PendingNetwork::establish`] starts `slirp4netns --configure` on that PID, waits for
//! its ready byte, adds the unreachable routes (`ip`) and the egress shaper (`tc`, a token
//! bucket filter on `tap0` at the reserved rate) inside the namespace (`nsenter`), and only
//! then lets the program run: it never sees the network unshaped. The [`Network`] it
//! returns ends slirp4netns when dropped (its `--exit-fd` closes), with the jail.
//!
//! Workers forked from a template share the template's jail, so its namespace and its
//! shaped bandwidth.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The programs a private network needs, found on the server's `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkTools {
    /// `slirp4netns`.
    pub slirp4netns: PathBuf,
    /// `nsenter` (util-linux).
    pub nsenter: PathBuf,
    /// `ip` (iproute2).
    pub ip: PathBuf,
    /// `tc` (iproute2).
    pub tc: PathBuf,
}

/// How to get the tools, said when a function that needs them cannot start.
pub const NETWORK_HINT: &str = "a function that reserves bandwidth runs in a private network, \
    which needs slirp4netns, nsenter, ip and tc (Debian and Ubuntu: `apt-get install \
    slirp4netns util-linux iproute2`)";

/// How long the jail and slirp4netns may take to say they are ready.
const SETUP_WITHIN: Duration = Duration::from_secs(10);

/// The DNS server slirp4netns answers on inside the namespace.
pub const RESOLV_CONF: &str = "nameserver 10.0.2.3\n";

/// A jail started but blocked before its program runs, waiting for its network.
#[derive(Debug)]
pub struct PendingNetwork {
    /// Where bubblewrap writes the sandbox's PIDs (JSON).
    info: OwnedFd,
    /// Written once the network is ready: bubblewrap then runs the program.
    release: OwnedFd,
    /// The reserved egress, Mbit/s.
    mbps: u64,
    tools: NetworkTools,
}

/// A private network in place; slirp4netns ends when this is dropped.
#[derive(Debug)]
pub struct Network {
    slirp: Child,
    /// Closing it tells slirp4netns to exit.
    exit: Option<OwnedFd>,
}

impl Drop for Network {
    fn drop(&mut self) {
        drop(self.exit.take());
        // It exits on its own once the descriptor closes; a stuck one is killed.
        for _ in 0..50 {
            if matches!(self.slirp.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.slirp.kill();
        let _ = self.slirp.wait();
    }
}

/// The descriptors a jail needs for a private network: (info writer, block reader) for
/// the child, and the pending network that holds the parent's ends.
pub(crate) fn pending(
    tools: &NetworkTools,
    mbps: u64,
) -> std::io::Result<((OwnedFd, OwnedFd), PendingNetwork)> {
    let (info, info_child) = pipe_above_ten()?;
    let (block_child, release) = pipe_above_ten()?;
    Ok((
        (info_child, block_child),
        PendingNetwork {
            info,
            release,
            mbps,
            tools: tools.clone(),
        },
    ))
}

/// A pipe (read end, write end), both at descriptors of 10 or more and close-on-exec (the
/// child's end is passed with `sandbox::pass_fd`).
fn pipe_above_ten() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (reader, writer) = rustix::pipe::pipe()?;
    Ok((
        rustix::io::fcntl_dupfd_cloexec(&reader, 10)?,
        rustix::io::fcntl_dupfd_cloexec(&writer, 10)?,
    ))
}

/// Reads from `fd` until `done` says the bytes are complete, the writer closes, or
/// [`SETUP_WITHIN`] passes.
fn read_until(fd: &OwnedFd, done: impl Fn(&[u8]) -> bool) -> std::io::Result<Vec<u8>> {
    let deadline = std::time::Instant::now() + SETUP_WITHIN;
    let mut file = std::fs::File::from(fd.try_clone()?);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let mut poll = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        let timeout = rustix::event::Timespec::try_from(left).ok();
        rustix::event::poll(&mut poll, timeout.as_ref())?;
        if poll[0].revents().is_empty() {
            continue;
        }
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&chunk[..n]);
        if done(&bytes) {
            return Ok(bytes);
        }
    }
}

/// This host's own IPv4 addresses (every interface's, loopback's too).
fn host_addresses(ip: &Path) -> Result<Vec<String>, String> {
    let output = Command::new(ip)
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "ip addr: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            Some(words.next()?.split('/').next()?.to_owned())
        })
        .collect())
}

/// Runs `program args` inside the network namespace of `pid`, with `input` on its stdin.
fn inside(
    tools: &NetworkTools,
    pid: u32,
    program: &Path,
    args: &[&str],
    input: &str,
) -> Result<(), String> {
    let mut child = Command::new(&tools.nsenter)
        .args(["-t", &pid.to_string(), "-n", "--"])
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nsenter: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, input.as_bytes())
            .map_err(|e| format!("{}: {e}", program.display()))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} in the worker's namespace: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The token bucket's burst for `mbps`: 10 ms of traffic, at least 32 KiB (many frames:
/// below a rate's quantum per tick the filter cannot reach it).
fn burst_bytes(mbps: u64) -> u64 {
    (mbps * 1_000_000 / 8 / 100).max(32 << 10)
}

impl PendingNetwork {
    /// Gives the jail that was started with this pending network its network, then lets
    /// its program run. On an error the caller kills the jail (still blocked).
    pub fn establish(self) -> Result<Network, String> {
        let info = read_until(&self.info, |b| b.contains(&b'}'))
            .map_err(|e| format!("the jail did not say its PID: {e}"))?;
        let info: serde_json::Value =
            serde_json::from_slice(&info).map_err(|e| format!("the jail's PID report: {e}"))?;
        let pid = info["child-pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or("the jail's PID report names no child-pid")?;
        let (ready, ready_child) =
            pipe_above_ten().map_err(|e| format!("cannot make a pipe: {e}"))?;
        let (exit_child, exit) =
            pipe_above_ten().map_err(|e| format!("cannot make a pipe: {e}"))?;
        let mut command = Command::new(&self.tools.slirp4netns);
        command
            .args([
                "--configure",
                // Ethernet-sized frames: the shaper's bucket must hold a whole frame, and
                // a 64 KiB one would be dropped at a low rate rather than shaped.
                "--mtu=1500",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
            ])
            .arg(format!("--ready-fd={}", ready_child.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_child.as_raw_fd()))
            .arg(pid.to_string())
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Read only if it fails to start; a working one writes two lines.
            .stderr(Stdio::piped());
        crate::sandbox::pass_fd(&mut command, ready_child, None);
        crate::sandbox::pass_fd(&mut command, exit_child, None);
        let slirp = command
            .spawn()
            .map_err(|e| format!("cannot start slirp4netns: {e}"))?;
        drop(command);
        let network = Network {
            slirp,
            exit: Some(exit),
        };
        let said = read_until(&ready, |b| !b.is_empty());
        if !said.as_ref().is_ok_and(|b| !b.is_empty()) {
            let mut network = network;
            let _ = network.slirp.kill();
            let _ = network.slirp.wait();
            let mut told = String::new();
            if let Some(stderr) = network.slirp.stderr.take() {
                let _ = stderr.take(4096).read_to_string(&mut told);
            }
            let told = told
                .lines()
                .find(|l| !l.starts_with("WARNING"))
                .unwrap_or("")
                .to_owned();
            return Err(match said {
                Err(e) => format!("slirp4netns: {e} ({told})"),
                Ok(_) => format!("slirp4netns ended before its network was ready: {told}"),
            });
        }
        // No way back to this host: each of its addresses unreachable from inside.
        let routes: String = host_addresses(&self.tools.ip)?
            .iter()
            .map(|address| format!("route add unreachable {address}/32\n"))
            .collect();
        inside(&self.tools, pid, &self.tools.ip, &["-batch", "-"], &routes)?;
        let rate = format!("{}mbit", self.mbps.max(1));
        let burst = burst_bytes(self.mbps).to_string();
        inside(
            &self.tools,
            pid,
            &self.tools.tc,
            &[
                "qdisc", "add", "dev", "tap0", "root", "tbf", "rate", &rate, "burst", &burst,
                "latency", "100ms",
            ],
            "",
        )?;
        rustix::io::write(&self.release, b"1")
            .map_err(|e| format!("cannot release the jail: {e}"))?;
        Ok(network)
    }
}

/// The tools `find` finds, and the kernel's TUN device slirp4netns makes its interface
/// with, or why not.
pub fn find_tools(find: impl Fn(&str) -> Option<PathBuf>) -> Result<NetworkTools, String> {
    if !Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun (`modprobe tun`)".into());
    }
    let need = |name: &str| find(name).ok_or_else(|| format!("{name} not found"));
    Ok(NetworkTools {
        slirp4netns: need("slirp4netns")?,
        nsenter: need("nsenter")?,
        ip: need("ip")?,
        tc: need("tc")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_covers_ten_milliseconds_and_never_less_than_32_kib() {
        assert_eq!(burst_bytes(8), 32 << 10);
        assert_eq!(burst_bytes(1000), 1_250_000);
    }
}
