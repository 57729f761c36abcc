//! Real worker processes: the Python example worker under this machine's limits.
//! Which limit mechanism ran is printed (`cargo test -- --nocapture` shows it).

use crate::common::{isolation, python};
use baton_runtime::isolation::Isolation;
use baton_runtime::limits::Mechanism;
use baton_runtime::manifest::FunctionSpec;
use baton_runtime::pool::Keep;
use baton_runtime::process::{Worker, WorkerError};
use baton_trace::schema::Status;
use std::path::Path;

fn spec(name: &str, memory_mib: u64, timeout_ms: u64, script: &str) -> FunctionSpec {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python");
    FunctionSpec::from_toml(&format!(
        "name = \"{name}\"\nkind = \"process\"\ncommand = [{:?}, \"-u\", {script:?}]\nworkdir = {:?}\nmemory_mib = {memory_mib}\ntimeout_ms = {timeout_ms}\n",
        python(),
        dir.display().to_string()
    ))
    .unwrap()
}

#[test]
fn a_warm_worker_serves_and_survives_function_errors() {
    let isolation = isolation();
    let mut worker = Worker::spawn(&spec("upper", 256, 10_000, "upper.py"), &isolation).unwrap();
    assert!(worker.cold_start().as_micros() > 0);
    eprintln!(
        "cold start {:?}, limits: {}",
        worker.cold_start(),
        worker.limits()
    );
    assert_eq!(worker.invoke(b"abc").unwrap(), b"ABC");
    let error = worker.invoke(b"fail").unwrap_err();
    assert!(
        error.to_string().contains("ValueError: asked to fail"),
        "{error}"
    );
    assert!(!error.worker_lost());
    assert_eq!(worker.invoke(b"again").unwrap(), b"AGAIN");
    let big = vec![b'x'; 1 << 20];
    assert_eq!(worker.invoke(&big).unwrap().len(), 1 << 20);
}

#[test]
fn a_timeout_kills_the_worker() {
    let mut worker = Worker::spawn(&spec("sleepy", 256, 500, "upper.py"), &isolation()).unwrap();
    let error = worker.invoke(b"sleep:10").unwrap_err();
    assert!(
        matches!(
            error,
            WorkerError::Timeout {
                timeout_ms: 500,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.status(), Status::Timeout);
    assert!(!worker.is_alive());
}

#[test]
fn a_crashed_worker_is_reported_and_replaced() {
    // A generous ready wait: the cgroup v2 guest (QEMU without KVM) starts Python slowly.
    let spec = spec("crashy", 256, 30_000, "upper.py");
    let isolation = isolation();
    let mut worker = Worker::spawn(&spec, &isolation).unwrap();
    let error = worker.invoke(b"crash").unwrap_err();
    assert!(matches!(error, WorkerError::Crashed { .. }), "{error}");
    assert!(error.to_string().contains("exit status: 3"), "{error}");
    assert!(error.worker_lost());
    let mut replacement = Worker::spawn(&spec, &isolation).unwrap();
    assert_eq!(replacement.invoke(b"ok").unwrap(), b"OK");
}

#[test]
fn memory_beyond_the_limit_fails_and_the_host_survives() {
    let isolation = isolation();
    let mut worker = Worker::spawn(&spec("hog", 64, 20_000, "upper.py"), &isolation).unwrap();
    let error = worker.invoke(b"alloc:800").unwrap_err();
    match &isolation.limits {
        Mechanism::CgroupV1 { .. } | Mechanism::CgroupV2 { .. } => {
            eprintln!(
                "path: cgroup memory limit ({:?}) -> {error}",
                isolation.limits
            );
            assert!(
                matches!(error, WorkerError::OutOfMemory { limit_mib: 64, .. }),
                "{error}"
            );
            assert_eq!(error.status(), Status::Oom);
        }
        Mechanism::Rlimit => {
            eprintln!("path: rlimit fallback -> {error}");
            assert!(error.to_string().contains("MemoryError"), "{error}");
        }
        Mechanism::None => eprintln!("path: no limits on this machine -> {error:?}"),
    }
    // A small allocation in a fresh worker still works.
    let mut worker = Worker::spawn(&spec("hog", 64, 20_000, "upper.py"), &isolation).unwrap();
    assert_eq!(worker.invoke(b"alloc:8").unwrap(), b"allocated 8 MiB");
}

#[test]
fn start_failures_are_named() {
    let never_ready = FunctionSpec::from_toml(&format!(
        "name = \"mute\"\nkind = \"process\"\ncommand = [{:?}, \"-c\", \"import sys, time; print('a plain script', file=sys.stderr, flush=True); time.sleep(30)\"]\ntimeout_ms = 300\n",
        python()
    ))
    .unwrap();
    let error = Worker::spawn(&never_ready, &isolation()).unwrap_err();
    assert!(
        matches!(error, WorkerError::NotReady { waited_ms: 300, .. }),
        "{error}"
    );
    // The hint, and what the worker said, are in the error.
    assert!(error.to_string().contains("baton_worker.py"), "{error}");
    assert!(
        error.to_string().ends_with("stderr: a plain script"),
        "{error}"
    );
    // A plain script (here an OpenWhisk-style `main`) ends without a ready frame: named,
    // with the helper to use.
    let plain = FunctionSpec::from_toml(&format!(
        "name = \"plain\"\nkind = \"process\"\ncommand = [{:?}, \"-c\", \"def main(args):\\n    return args\\nimport sys\\nprint('loaded', file=sys.stderr)\"]\ntimeout_ms = 5000\n",
        python()
    ))
    .unwrap();
    let error = Worker::spawn(&plain, &isolation()).unwrap_err();
    assert!(
        matches!(error, WorkerError::ExitedBeforeReady { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("exit status: 0"), "{message}");
    assert!(message.contains("baton_worker.py"), "{message}");
    assert!(message.contains("stderr: loaded"), "{message}");
    // One that prints on stdout breaks the protocol: named too.
    let chatty = FunctionSpec::from_toml(&format!(
        "name = \"chatty\"\nkind = \"process\"\ncommand = [{:?}, \"-c\", \"print('hello')\"]\ntimeout_ms = 5000\n",
        python()
    ))
    .unwrap();
    let message = Worker::spawn(&chatty, &isolation())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("before its ready frame") && message.contains("baton_worker.py"),
        "{message}"
    );
    let missing = FunctionSpec::from_toml(
        "name = \"ghost\"\nkind = \"process\"\ncommand = [\"/nonexistent/program\"]\n",
    )
    .unwrap();
    let error = Worker::spawn(&missing, &isolation()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot start \"/nonexistent/program\""),
        "{error}"
    );
}

#[test]
fn the_rlimit_fallback_limits_memory_too() {
    // Forced, so the fallback is exercised even where cgroups are writable.
    let forced = Isolation {
        limits: Mechanism::Rlimit,
        sandbox: isolation().sandbox,
    };
    let mut worker = Worker::spawn(&spec("hog", 64, 20_000, "upper.py"), &forced).unwrap();
    assert!(worker.limits().starts_with("rlimit"), "{}", worker.limits());
    let error = worker.invoke(b"alloc:2000").unwrap_err();
    eprintln!("path: rlimit forced -> {error}");
    assert!(error.to_string().contains("MemoryError"), "{error}");
    assert_eq!(worker.invoke(b"still alive").unwrap(), b"STILL ALIVE");
}

#[test]
fn a_program_that_cannot_be_a_template_starts_plain() {
    // Speaks the worker protocol itself, without the helper: it never says T as a
    // template, so its template is refused once and its workers start the plain way.
    let echo = "import sys\nout, inp = sys.stdout.buffer, sys.stdin.buffer\nout.write(b'R\\x00\\x00\\x00\\x00'); out.flush()\nwhile True:\n    head = inp.read(5)\n    if len(head) < 5: break\n    n = int.from_bytes(head[1:], 'big'); body = inp.read(n)\n    out.write(b'O' + n.to_bytes(4, 'big') + body); out.flush()\n";
    let spec = FunctionSpec::from_toml(&format!(
        "name = \"own-protocol\"\nkind = \"process\"\ncommand = [{:?}, \"-c\", {echo:?}]\ntimeout_ms = 10000\n",
        python()
    ))
    .unwrap();
    assert!(spec.template, "a Python program has a template by default");
    let pool = baton_runtime::pool::WarmPool::new(vec![spec], isolation());
    let lease = pool.take("own-protocol").unwrap();
    let mut worker = lease.worker;
    assert!(!worker.is_forked());
    assert_eq!(worker.invoke(b"echo").unwrap(), b"echo");
    let templates = pool.templates();
    assert_eq!(templates.len(), 1);
    let refused = templates[0].refused.as_deref().unwrap_or_default();
    assert!(
        refused.contains("exited before it was ready"),
        "{templates:?}"
    );
    assert_eq!(
        pool.counters
            .template_starts
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_template_cannot_name_another_process_as_its_worker() {
    // A hostile template: it says T, and for each fork request names another process (a
    // `sleep` of this test) instead of forking. Unjailed, a pid is the host's: baton must
    // still take only a child of the template, and leave the other process alone.
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let hostile = "import os, socket, struct\ns = socket.socket(fileno=3)\ns.sendall(b'T')\nwhile True:\n    m, fds, _, _ = socket.recv_fds(s, 1, 3)\n    if not m: break\n    for fd in fds: os.close(fd)\n    s.sendall(struct.pack('>I', int(os.environ['VICTIM'])))\n";
    let spec = FunctionSpec::from_toml(&format!(
        "name = \"hostile\"\nkind = \"process\"\ncommand = [{:?}, \"-c\", {hostile:?}]\ntimeout_ms = 5000\n[env]\nVICTIM = \"{}\"\n",
        python(),
        victim.id()
    ))
    .unwrap();
    let bare = Isolation {
        sandbox: baton_runtime::sandbox::Sandbox::Unjailed,
        ..isolation()
    };
    let template =
        std::sync::Arc::new(baton_runtime::process::Template::start(&spec, &bare).unwrap());
    let error = template
        .fork(&spec, &bare, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("not among its children"), "{error}");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the named process lives on"
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", victim.id())).unwrap();
    assert!(!cgroup.contains("/baton-"), "and was not moved: {cgroup}");
    victim.kill().unwrap();
    let _ = victim.wait();
}

#[test]
fn the_cost_of_a_move_into_groups_is_measured_and_leaves_nothing() {
    // Never `favor_dynmods` here: it changes the whole host until reboot.
    let mechanism = isolation().limits;
    let cost = baton_runtime::limits::move_cost(&mechanism, 3).unwrap();
    match (&mechanism, cost) {
        (
            Mechanism::CgroupV1 { memory, .. } | Mechanism::CgroupV2 { parent: memory, .. },
            Some(cost),
        ) => {
            eprintln!("path: cgroups ({mechanism:?}), a move took {cost:?}");
            assert!(cost > std::time::Duration::ZERO);
            assert!(cost < std::time::Duration::from_secs(2), "{cost:?}");
            let own = format!("baton-{}-", std::process::id());
            let left: Vec<_> = std::fs::read_dir(memory)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&own) && n.contains("move"))
                .collect();
            assert!(left.is_empty(), "groups left behind: {left:?}");
        }
        (Mechanism::CgroupV1 { .. } | Mechanism::CgroupV2 { .. }, None) => {
            panic!("cgroups but nothing measured")
        }
        (_, cost) => {
            eprintln!("path: no cgroups, nothing to move");
            assert_eq!(cost, None);
        }
    }
}

#[test]
fn the_pool_says_why_each_cold_start_was_cold() {
    use baton_runtime::pool::WarmPool;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let pool = WarmPool::new(vec![spec("why", 256, 10_000, "upper.py")], isolation());
    let causes = |pool: &WarmPool| {
        let c = &pool.counters;
        [
            &c.cold_first,
            &c.cold_concurrent,
            &c.cold_evicted,
            &c.cold_expired,
        ]
        .map(|counter| counter.load(Ordering::Relaxed))
    };
    let later = Instant::now() + Duration::from_secs(600);
    // The function's first worker, then a second while the first is busy.
    let first = pool.take("why").unwrap();
    assert_eq!(causes(&pool), [1, 0, 0, 0]);
    let second = pool.take("why").unwrap();
    assert_eq!(causes(&pool), [1, 1, 0, 0]);
    // Out of their leases (which count them busy until the block ends).
    let (one, two) = {
        let (first, second) = (first, second);
        (first.worker, second.worker)
    };
    let one = pool
        .give_back("why", one, Default::default(), later)
        .unwrap();
    let two = pool
        .give_back("why", two, Default::default(), later)
        .unwrap();
    // One released at the end of its keep-alive, then the other evicted: the next start
    // is cold for the eviction.
    pool.settle("why", two, Instant::now(), Keep::Until);
    assert!(pool.evict("why", one));
    let three = {
        let third = pool.take("why").unwrap();
        third.worker
    };
    assert_eq!(causes(&pool), [1, 1, 1, 0]);
    let three = pool
        .give_back("why", three, Default::default(), later)
        .unwrap();
    // Released at the end of its keep-alive: the next start is cold for that.
    pool.settle("why", three, Instant::now(), Keep::Until);
    let _fourth = pool.take("why").unwrap();
    assert_eq!(causes(&pool), [1, 1, 1, 1]);
    assert_eq!(pool.counters.cold_starts.load(Ordering::Relaxed), 4);
}

#[test]
fn a_workers_claims_in_time_share_it_travel_with_its_lease_and_keep_it() {
    use baton_core::exec::Claim;
    use baton_runtime::pool::{WarmPool, Warmth};
    use std::time::{Duration, Instant};
    let pool = WarmPool::new(vec![spec("claims", 256, 10_000, "upper.py")], isolation());
    let s = Duration::from_secs;
    let first = pool.take("claims").unwrap();
    let pid = pool
        .give_back(
            "claims",
            first.worker,
            first.claims,
            Instant::now() + s(600),
        )
        .unwrap();
    // Given back, it is settling until the planner sets its keep-alive: budget
    // enforcement leaves it alone until then.
    let settling = |pool: &WarmPool| {
        let idle = pool.idle();
        assert_eq!(idle.len(), 1, "{idle:?}");
        assert_eq!(idle[0].pid, pid);
        idle[0].settling
    };
    assert!(settling(&pool));
    pool.settle("claims", pid, Instant::now() + s(600), Keep::Until);
    assert!(!settling(&pool));
    let now = Instant::now();
    // Two sure pre-warms for steps one after another share the idle worker; a third for
    // the first one's time needs a worker of its own.
    assert!(pool.claim_idle(
        "claims",
        Claim::new(now + s(20), now + s(30), 1.0),
        now + s(30)
    ));
    assert!(pool.claim_idle(
        "claims",
        Claim::new(now + s(40), now + s(50), 1.0),
        now + s(50)
    ));
    assert!(!pool.claim_idle(
        "claims",
        Claim::new(now + s(25), now + s(26), 1.0),
        now + s(26)
    ));
    // A step now answers neither: both claims go with its lease and come back with the
    // worker, which stays past a keep-alive of zero, until the last claim ends.
    let second = pool.take("claims").unwrap();
    assert_eq!(second.worker.pid(), pid);
    assert_eq!(second.warmth, Warmth::Warm);
    assert_eq!(second.claims.len(), 2);
    let pid = pool
        .give_back("claims", second.worker, second.claims, Instant::now())
        .unwrap();
    pool.settle("claims", pid, Instant::now(), Keep::Until);
    let kept = pool.idle();
    let kept = kept
        .iter()
        .find(|i| i.pid == pid)
        .expect("kept for its claims");
    assert!(kept.until >= now + s(50), "until the last claim ends");
    // Without claims, the same keep-alive of zero lets it go.
    let third = pool.take("claims").unwrap();
    let pid = pool
        .give_back("claims", third.worker, Default::default(), Instant::now())
        .unwrap();
    pool.settle("claims", pid, Instant::now(), Keep::Until);
    assert!(pool.idle().iter().all(|i| i.pid != pid), "released");
}

#[test]
fn a_pinned_keep_alive_outlasts_later_shorter_ones_until_a_run_ends_without_one() {
    use baton_runtime::pool::WarmPool;
    use std::time::{Duration, Instant};
    let pool = WarmPool::new(vec![spec("pinned", 256, 10_000, "upper.py")], isolation());
    let s = Duration::from_secs;
    let cycle = |keep: Keep, until: Instant| {
        let lease = pool.take("pinned").unwrap();
        let pid = pool
            .give_back("pinned", lease.worker, lease.claims, Instant::now())
            .unwrap();
        pool.settle("pinned", pid, until, keep);
        pool.idle().iter().find(|i| i.pid == pid).map(|i| i.until)
    };
    // The first run pins its keep-alive (the histogram's uncertain window).
    let pinned = Instant::now() + s(600);
    assert_eq!(cycle(Keep::Pin, pinned), Some(pinned));
    // Later runs ask for a minute, or pin again: the first deadline stands.
    assert_eq!(cycle(Keep::Until, Instant::now() + s(60)), Some(pinned));
    assert_eq!(cycle(Keep::Pin, Instant::now() + s(7_200)), Some(pinned));
    // A run whose policy keeps nothing (it pre-warms instead) lets it go.
    assert_eq!(cycle(Keep::Release, Instant::now()), None, "released");
    // A new worker has no pin: a minute is a minute.
    let minute = Instant::now() + s(60);
    assert_eq!(cycle(Keep::Until, minute), Some(minute));
}
