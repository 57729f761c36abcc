//! Escape attempts from a jailed process worker (`tests/guests/escape.py`), each of which
//! must fail, and a worker whose 200 children outlive its timeout: nothing may be left.
//! Which jail and which limits ran is printed; without bubblewrap the escape test checks
//! that no worker starts at all (fail closed). CI installs it: with `CI` set a missing
//! sandbox fails every test that asks for this machine's isolation (`common::isolation`).

use crate::common::{example, isolation, python};
use baton_runtime::isolation::Isolation;
use baton_runtime::limits::Mechanism;
use baton_runtime::manifest::FunctionSpec;
use baton_runtime::process::{Template, Worker, WorkerError};
use baton_runtime::sandbox::Sandbox;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A function directory holding the escape worker and the worker helper, beside a sibling
/// directory with a secret in it; both readable by everyone, as a deployed function's are.
fn function_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = root.path().join("function");
    let secrets = root.path().join("secrets");
    for d in [&dir, &secrets] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests");
    std::fs::copy(guests.join("escape.py"), dir.join("escape.py")).unwrap();
    std::fs::copy(
        example("python/baton_worker.py"),
        dir.join("baton_worker.py"),
    )
    .unwrap();
    let secret = secrets.join("token");
    std::fs::write(&secret, "s3cret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    (root, dir, secret)
}

fn escape_spec(name: &str, dir: &Path, extra: &str) -> FunctionSpec {
    let mut extra = extra.to_owned();
    if !extra.contains("timeout_ms") {
        extra.push_str("\ntimeout_ms = 10000");
    }
    if !extra.contains("memory_mib") {
        extra.push_str("\nmemory_mib = 128");
    }
    FunctionSpec::from_toml(&format!(
        "name = \"{name}\"\nkind = \"process\"\ncommand = [{:?}, \"-u\", \"escape.py\"]\nworkdir = {:?}\n{extra}\n",
        python(),
        dir.display().to_string()
    ))
    .unwrap()
}

/// This host's isolation for a test whose subject is not the jail itself (limits, output,
/// lifetimes): without a working jail, workers run unjailed by explicit choice, as a
/// server started with `--insecure-unjailed-process-functions` runs them, and the path is
/// printed (`every_escape_attempt_fails` checks that nothing starts by default).
fn jailed_or_unjailed() -> Isolation {
    let isolation = isolation();
    if let Sandbox::Missing { .. } = &isolation.sandbox {
        eprintln!("path: NO SANDBOX on this machine: this test's workers run unjailed");
        return Isolation {
            sandbox: Sandbox::Unjailed,
            ..isolation
        };
    }
    isolation
}

fn ask(worker: &mut Worker, payload: &str) -> String {
    let answer = worker.invoke(payload.as_bytes()).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    eprintln!("{payload} -> {answer}");
    answer
}

#[test]
fn every_escape_attempt_fails() {
    let isolation = isolation();
    let (_root, dir, secret) = function_dir();
    if let Sandbox::Missing { .. } = &isolation.sandbox {
        // Fail closed: no worker starts at all, so there is nothing to escape from.
        eprintln!("path: NO SANDBOX on this machine (bubblewrap missing): every start refused");
        let refused = Worker::spawn(&escape_spec("escape", &dir, ""), &isolation);
        assert!(
            matches!(refused, Err(WorkerError::NoSandbox { .. })),
            "{refused:?}"
        );
        return;
    }
    assert!(
        isolation.sandbox.is_jailed(),
        "detection never chooses to run unjailed: {:?}",
        isolation.sandbox
    );
    let mut worker = Worker::spawn(&escape_spec("escape", &dir, ""), &isolation).unwrap();
    eprintln!("path: bubblewrap jail");
    escapes_fail(&mut worker, &dir, &secret, 3);
    // No network without a reservation: the host's loopback listener is out of reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(ask(&mut worker, &format!("connect:{port}")).starts_with("denied"));
    drop(worker);
    // A function that reserves bandwidth gets a private network: this host, on its
    // loopback or on any of its own addresses, is out of reach.
    let Sandbox::Bubblewrap { network: Ok(_), .. } = &isolation.sandbox else {
        eprintln!("path: NO private network tools here: a networked worker is refused");
        let refused = Worker::spawn(&escape_spec("networked", &dir, "net_mbps = 1"), &isolation);
        assert!(
            matches!(refused, Err(WorkerError::NoSandbox { .. })),
            "{refused:?}"
        );
        return;
    };
    let mut networked =
        Worker::spawn(&escape_spec("networked", &dir, "net_mbps = 1"), &isolation).unwrap();
    assert!(ask(&mut networked, &format!("connect:{port}")).starts_with("denied"));
    let everywhere = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let open_port = everywhere.local_addr().unwrap().port();
    for address in host_addresses() {
        let said = ask(&mut networked, &format!("connectto:{address}:{open_port}"));
        assert!(said.starts_with("denied"), "{address}: {said}");
    }
    // Its resolver is the private network's own (slirp4netns's), readable.
    assert_eq!(ask(&mut networked, "read:/etc/resolv.conf"), "ok read");
    eprintln!("path: private network, this host unreachable");
}

/// This host's IPv4 addresses (`ip -o -4 addr show`).
fn host_addresses() -> Vec<String> {
    let output = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let addresses: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| *w != "inet").skip(1);
            Some(words.next()?.split('/').next()?.to_owned())
        })
        .collect();
    assert!(!addresses.is_empty(), "{text}");
    addresses
}

/// A test host: a network namespace of this test's own with a veth pair to this host
/// (10.231.N.1 here, 10.231.N.2 there), removed when dropped.
struct TestHost {
    name: String,
    address: String,
}

impl TestHost {
    fn new() -> Option<TestHost> {
        let n = std::process::id() % 250;
        let name = format!("baton-t{}", std::process::id());
        let (outside, inside) = (format!("bt{n}h"), format!("bt{n}n"));
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let made = ip(&["netns", "add", &name]);
        let host = TestHost {
            name: name.clone(),
            address: format!("10.231.{n}.2"),
        };
        let ok =
            made && ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]) && ip(&["link", "set", &inside, "netns", &name])
                && ip(&["addr", "add", &format!("10.231.{n}.1/30"), "dev", &outside])
                && ip(&["link", "set", &outside, "up"])
                && ip(&[
                    "-n",
                    &name,
                    "addr",
                    "add",
                    &format!("{}/30", host.address),
                    "dev",
                    &inside,
                ])
                && ip(&["-n", &name, "link", "set", &inside, "up"])
                && ip(&["-n", &name, "link", "set", "lo", "up"]);
        ok.then_some(host)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // The namespace takes its end of the pair with it, and the pair goes whole.
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

#[test]
fn a_reserved_bandwidth_is_a_shaped_private_network() {
    let isolation = isolation();
    let Sandbox::Bubblewrap { network: Ok(_), .. } = &isolation.sandbox else {
        eprintln!("path: NO private network here (no jail or no slirp4netns): not measured");
        return;
    };
    let Some(host) = TestHost::new() else {
        eprintln!("path: cannot make a test host namespace here (not root?): not measured");
        return;
    };
    // A sink on the test host counts what arrives from the first byte to the last.
    let sink = "import socket, sys, time\n\
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind((sys.argv[1], 5001)); s.listen(1); s.settimeout(30); print('ready', flush=True)\n\
        c, _ = s.accept(); n = 0; first = last = None\n\
        while True:\n\
        \x20   b = c.recv(65536)\n\
        \x20   if not b: break\n\
        \x20   now = time.monotonic(); first = first or now; last = now; n += len(b)\n\
        print(n, last - first, flush=True)\n";
    let mut receiver = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.name,
            &python(),
            "-c",
            sink,
            &host.address,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(receiver.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let (_root, dir, _) = function_dir();
    let mut worker = Worker::spawn(
        &escape_spec("shaped", &dir, "net_mbps = 8\ntimeout_ms = 30000"),
        &isolation,
    )
    .unwrap();
    let sent = ask(&mut worker, &format!("send:{}:5001:4", host.address));
    let counted = lines.next().unwrap().unwrap();
    let _ = receiver.wait();
    let mut words = counted.split_whitespace();
    let bytes: f64 = words.next().unwrap().parse().unwrap();
    let seconds: f64 = words.next().unwrap().parse().unwrap();
    let mbps = bytes * 8.0 / seconds / 1e6;
    eprintln!(
        "path: private network, 8 Mbit/s reserved: {sent}; received {bytes} bytes in {seconds:.2} s = {mbps:.2} Mbit/s"
    );
    assert!(
        (6.4..=9.6).contains(&mbps),
        "{mbps:.2} Mbit/s for 8 reserved"
    );
}

#[test]
fn a_worker_cannot_fork_past_its_process_limit() {
    let isolation = jailed_or_unjailed();
    let (_root, dir, _) = function_dir();
    let mut worker = Worker::spawn(
        &escape_spec("forky", &dir, "max_processes = 16"),
        &isolation,
    )
    .unwrap();
    eprintln!("limits: {}", worker.limits());
    let answer = ask(&mut worker, "fork:40");
    let forked: u32 = answer.trim_start_matches("forked ").parse().unwrap();
    match &isolation.limits {
        Mechanism::CgroupV1 { pids: Some(_), .. } | Mechanism::CgroupV2 { pids: true, .. } => {
            eprintln!("path: cgroup pids limit ({:?})", isolation.limits);
            assert!(
                forked > 0 && forked < 16,
                "forked {forked} under pids.max 16"
            );
        }
        _ => eprintln!("path: NO per-worker process limit on this machine (forked {forked})"),
    }
}

#[test]
fn a_workers_cpu_quota_throttles_it_and_its_groups_go_with_it() {
    let isolation = jailed_or_unjailed();
    let (_root, dir, _) = function_dir();
    let mut worker = Worker::spawn(
        // A long start allowed: a quarter of a core starts Python slowly under emulation
        // (the cgroup v2 guest of `.ci/guest-v2.sh`).
        &escape_spec("spinner", &dir, "cpu_millicores = 250\ntimeout_ms = 60000"),
        &isolation,
    )
    .unwrap();
    eprintln!("limits: {}", worker.limits());
    let groups = worker.limit_groups().to_vec();
    let cpu_seconds: f64 = ask(&mut worker, "spin:1").parse().unwrap();
    // The kernel's own count of the periods the group was held back in (cpu.stat: v1's
    // cpu group, v2's one group), not a timing: a 1 s busy loop under a 25 % quota is
    // throttled in most of its 100 ms periods.
    let throttled = groups.iter().find_map(|g| {
        let stat = std::fs::read_to_string(g.join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|n| n.trim().parse::<u64>().ok())
    });
    match (&isolation.limits, throttled) {
        (Mechanism::CgroupV1 { cpu: Some(_), .. } | Mechanism::CgroupV2 { cpu: true, .. }, _) => {
            eprintln!(
                "path: cgroup cpu quota ({:?}): {cpu_seconds} CPU s in 1 s, throttled {throttled:?}",
                isolation.limits
            );
            assert!(throttled.is_some_and(|n| n >= 3), "{throttled:?}");
        }
        _ => eprintln!("path: NO CPU quota on this machine ({cpu_seconds} CPU s in 1 s)"),
    }
    drop(worker);
    for group in &groups {
        assert!(!group.exists(), "{} outlived its worker", group.display());
    }
}

/// Processes whose environment names `function` (every process of its worker tree but
/// bwrap itself).
fn processes_of(function: &str) -> usize {
    let marker = format!("BATON_FUNCTION={function}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
        })
        .count()
}

/// Spawns a worker with `isolation` that forks 200 children and outlives its timeout;
/// asserts the children existed, then that nothing of it is left once it is dropped.
fn two_hundred_children_die_with_their_worker(isolation: &Isolation, path: &str) {
    let (_root, dir, _) = function_dir();
    let name = format!("fork200-{path}-{}", std::process::id());
    let spec = escape_spec(
        &name,
        &dir,
        "max_processes = 256\ntimeout_ms = 4000\nmemory_mib = 1024",
    );
    let mut worker = Worker::spawn(&spec, isolation).unwrap();
    let groups = worker.limit_groups().to_vec();
    let counter = {
        let name = name.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2500));
            processes_of(&name)
        })
    };
    let error = worker.invoke(b"forkwait:200:60").unwrap_err();
    assert!(matches!(error, WorkerError::Timeout { .. }), "{error}");
    let during = counter.join().unwrap();
    assert!(during > 200, "{path}: only {during} processes while it ran");
    drop(worker);
    // The kill is synchronous; the kernel tears a PID namespace down right after. Give it
    // a moment, no more.
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_of(&name) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        processes_of(&name),
        0,
        "{path}: processes outlived their worker"
    );
    for group in &groups {
        assert!(!group.exists(), "{path}: {} left behind", group.display());
    }
    eprintln!(
        "path: {path}: {during} processes while running, none after; {} groups removed",
        groups.len()
    );
}

#[test]
fn a_timed_out_worker_leaves_no_process_and_no_group_behind() {
    let isolation = isolation();
    if isolation.sandbox.is_jailed() {
        two_hundred_children_die_with_their_worker(&isolation, "jail");
    } else {
        eprintln!("path: NO SANDBOX on this machine; only the unjailed path is tested");
    }
    let unjailed = Isolation {
        sandbox: Sandbox::Unjailed,
        ..isolation
    };
    two_hundred_children_die_with_their_worker(&unjailed, "unjailed");
}

#[test]
fn a_worker_outlives_the_thread_that_started_it() {
    // Pre-warms start workers on threads that end; the jail must not tie its life to them.
    let isolation = jailed_or_unjailed();
    let (_root, dir, _) = function_dir();
    let spec = escape_spec("orphaned", &dir, "");
    let mut worker = std::thread::spawn(move || Worker::spawn(&spec, &isolation).unwrap())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ask(&mut worker, "uid").split(' ').count(), 2);
}

#[test]
fn a_start_removes_the_groups_a_killed_predecessor_left() {
    let detection = baton_runtime::limits::detect();
    let (Mechanism::CgroupV1 { memory, .. } | Mechanism::CgroupV2 { parent: memory, .. }) =
        &detection.mechanism
    else {
        eprintln!("path: no cgroups on this machine, nothing to reclaim");
        return;
    };
    // A group named like one of a baton process that is gone (no process has PID 2^22+1
    // with that start time), with a process still in it.
    let stale = memory.join(format!("baton-{}-1-0", (1u32 << 22) + 1));
    std::fs::create_dir(&stale).unwrap();
    let mut orphan = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(stale.join("cgroup.procs"), orphan.id().to_string()).unwrap();
    // A group of this (live) process is not touched.
    let reclaimed = baton_runtime::limits::reclaim_stale(&detection.mechanism);
    eprintln!(
        "path: {:?}, reclaimed {reclaimed} stale groups",
        detection.mechanism
    );
    assert!(reclaimed >= 1);
    assert!(!stale.exists(), "the stale group is gone");
    let status = orphan.wait().unwrap();
    assert!(
        !status.success(),
        "the process left in it was killed: {status}"
    );
}

#[test]
fn a_workers_output_is_captured_per_invocation_within_a_cap() {
    let isolation = jailed_or_unjailed();
    let (_root, dir, _) = function_dir();
    let mut worker = Worker::spawn(&escape_spec("chatty", &dir, ""), &isolation).unwrap();
    let _ = worker.take_output();
    assert_eq!(ask(&mut worker, "flood:200000"), "flooded");
    let flooded = worker.take_output();
    assert_eq!(flooded.text.len(), baton_runtime::process::OUTPUT_CAP);
    assert_eq!(
        flooded.dropped_bytes,
        200_000 - baton_runtime::process::OUTPUT_CAP as u64
    );
    assert_eq!(ask(&mut worker, "say:hello"), "said");
    let said = worker.take_output();
    assert_eq!(said.text, "hello\n", "each invocation gets its own output");
    assert_eq!(said.dropped_bytes, 0);
}

/// The escape attempts every jailed worker must fail, spawned or forked; it may see at
/// most `visible` processes (its jail's init, itself, and a forked worker's template and
/// siblings: the same function's).
fn escapes_fail(worker: &mut Worker, dir: &Path, secret: &Path, visible_at_most: usize) {
    let worker = &mut *worker;
    // Its own files are readable, and it runs as nobody.
    assert_eq!(ask(worker, "read:escape.py"), "ok read");
    assert_eq!(ask(worker, "uid"), "65534 65534");
    // Files outside its directory: a sibling's secret, the repository, the host's /etc.
    for path in [
        secret.display().to_string(),
        example("python/upper.py"),
        "/etc/shadow".to_owned(),
        "/etc/hostname".to_owned(),
        "/root/.bashrc".to_owned(),
    ] {
        assert!(
            ask(worker, &format!("read:{path}")).starts_with("denied"),
            "{path} is readable from the jail"
        );
    }
    // Writes: nowhere but /tmp.
    for path in [
        dir.join("planted.py").display().to_string(),
        "/usr/planted".into(),
        "/planted".into(),
    ] {
        assert!(
            ask(worker, &format!("write:{path}")).starts_with("denied"),
            "{path} is writable from the jail"
        );
    }
    assert!(!dir.join("planted.py").exists());
    assert_eq!(ask(worker, "write:/tmp/scratch"), "ok wrote");
    // Other processes: not visible, not signalable.
    let procs = ask(worker, "procs");
    let visible: Vec<u32> = procs
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(visible.len() <= visible_at_most, "sees {visible:?}");
    assert!(!visible.contains(&std::process::id()) || std::process::id() <= 3);
    assert!(ask(worker, &format!("signal:{}", std::process::id())).starts_with("denied"));
    assert_eq!(
        ask(worker, "signal:1"),
        "denied EPERM",
        "the jail's init is not its own"
    );
    // The system-call filter: no new user namespace, no ptrace or memory of any other
    // process it can see; threads and forks still work.
    assert_eq!(ask(worker, "newuser"), "denied EPERM");
    let peeked = ask(worker, "peek");
    assert!(!peeked.contains(":ok"), "{peeked}");
    assert_eq!(ask(worker, "thread"), "ok thread");
    assert_eq!(ask(worker, "fork:2"), "forked 2");
}

#[test]
fn workers_forked_from_a_template_are_jailed_limited_and_unique() {
    let isolation = jailed_or_unjailed();
    let (_root, dir, secret) = function_dir();
    let spec = escape_spec("escape-forked", &dir, "memory_mib = 96");
    let template = std::sync::Arc::new(Template::start(&spec, &isolation).unwrap());
    let mut first = template
        .fork(&spec, &isolation, &Default::default())
        .unwrap();
    let mut second = template
        .fork(&spec, &isolation, &Default::default())
        .unwrap();
    eprintln!(
        "template ready after {:?}; forked workers ready after {:?} and {:?}; limits: {}",
        template.ready_after(),
        first.cold_start(),
        second.cold_start(),
        first.limits()
    );
    assert!(first.is_forked() && second.is_forked());
    let pids = [template.pid(), first.pid(), second.pid()];
    assert!(
        pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2],
        "{pids:?}"
    );
    // Each re-seeded its random state after the fork.
    assert_ne!(ask(&mut first, "random"), ask(&mut second, "random"));
    // Each is under its own limits, not its template's.
    if let Mechanism::CgroupV1 { .. } | Mechanism::CgroupV2 { .. } = &isolation.limits {
        eprintln!(
            "path: cgroup groups per forked worker ({:?})",
            isolation.limits
        );
        let groups = first.limit_groups().to_vec();
        assert!(!groups.is_empty());
        for group in &groups {
            let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
            assert!(
                procs.lines().any(|p| p == first.pid().to_string()),
                "{} is not in {}",
                first.pid(),
                group.display()
            );
        }
        let limit = ["memory.limit_in_bytes", "memory.max"]
            .iter()
            .find_map(|file| std::fs::read_to_string(groups[0].join(file)).ok())
            .unwrap();
        assert_eq!(limit.trim(), (96u64 << 20).to_string());
    } else {
        eprintln!(
            "path: NO cgroups here ({}): forked workers share the template's rlimit",
            first.limits()
        );
    }
    if isolation.sandbox.is_jailed() {
        eprintln!("path: bubblewrap jail, forked workers");
        assert_eq!(ask(&mut first, "uid"), "65534 65534");
        escapes_fail(&mut second, &dir, &secret, 4);
    } else {
        eprintln!("path: NO SANDBOX on this machine: forked escapes not refused");
    }
    // Each has a temporary directory of its own; what a worker wrote there goes with it,
    // and what it wrote straight into /tmp goes once no living worker can have written it.
    let first_tmp = ask(&mut first, "tmpfile:scratch");
    let second_tmp = ask(&mut second, "tmpfile:scratch");
    assert!(first_tmp.starts_with("/tmp/.baton-worker-"), "{first_tmp}");
    assert_ne!(first_tmp, second_tmp);
    if isolation.sandbox.is_jailed() {
        assert_eq!(ask(&mut first, "write:/tmp/stray-first"), "ok wrote");
    }
    // A worker's end is its own; the template still forks.
    let first_pid = first.pid();
    drop(first);
    assert_eq!(ask(&mut second, "uid").split(' ').count(), 2);
    // The template tells "before" from "after" by the kernel's file clock, a tick coarse.
    std::thread::sleep(Duration::from_millis(30));
    let mut third = template
        .fork(&spec, &isolation, &Default::default())
        .unwrap();
    assert_eq!(ask(&mut third, "uid").split(' ').count(), 2);
    assert_eq!(
        ask(&mut third, &format!("read:{first_tmp}")),
        "denied ENOENT"
    );
    assert_eq!(ask(&mut second, &format!("read:{second_tmp}")), "ok read");
    if isolation.sandbox.is_jailed() {
        // The second worker was forked before the stray was written: it may be its.
        assert_eq!(ask(&mut third, "read:/tmp/stray-first"), "ok read");
        drop(second);
        assert_eq!(ask(&mut third, "read:/tmp/stray-first"), "denied ENOENT");
        assert_eq!(
            ask(&mut third, &format!("read:{second_tmp}")),
            "denied ENOENT"
        );
        eprintln!("path: jailed template: dead workers' /tmp entries swept");
    } else {
        drop(second);
        eprintln!("path: unjailed template: the host's /tmp is never swept");
    }
    // Dropped, a forked worker leaves nothing; the template goes with the last of them.
    let (third_pid, template_pid) = (third.pid(), template.pid());
    drop(third);
    drop(template);
    std::thread::sleep(Duration::from_millis(200));
    for pid in [first_pid, third_pid, template_pid] {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z "),
            "process {pid} outlived its worker or template: {state}"
        );
    }
}
