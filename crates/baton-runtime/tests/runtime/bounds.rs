//! Bounded instances: requests beyond a function's `max_instances` wait for a worker to
//! come back instead of starting more, and every one of them is served.

use crate::common::process_spec;
use baton_runtime::isolation;
use baton_runtime::pool::WarmPool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_burst_beyond_the_instance_cap_waits_and_is_served_by_the_capped_workers() {
    let detection = isolation::detect();
    eprint!("{detection}");
    let pool = WarmPool::new(
        vec![process_spec(
            "capped",
            "upper.py",
            "max_instances = 2\ntimeout_ms = 10000",
        )],
        detection.isolation(),
    );
    let (in_use, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (pool, in_use, peak) = (Arc::clone(&pool), Arc::clone(&in_use), Arc::clone(&peak));
            std::thread::spawn(move || {
                let mut lease = pool.take("capped").expect("a worker, after waiting");
                let now = in_use.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let answer = lease.worker.invoke(b"sleep:0.2").unwrap();
                in_use.fetch_sub(1, Ordering::SeqCst);
                pool.give_back(
                    "capped",
                    lease.worker,
                    lease.claims,
                    Instant::now() + Duration::from_secs(30),
                );
                answer
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.join().unwrap(), b"slept");
    }
    let cold = pool.counters.cold_starts.load(Ordering::Relaxed);
    let waits = pool.counters.capped_waits.load(Ordering::Relaxed);
    eprintln!(
        "8 requests, cap 2: peak {} in use, {cold} cold starts, {waits} capped waits",
        peak.load(Ordering::SeqCst)
    );
    assert!(peak.load(Ordering::SeqCst) <= 2);
    assert!(cold <= 2, "{cold} cold starts under a cap of 2");
    assert!(waits >= 6, "{waits} requests waited");
    assert!(pool.idle_count("capped") <= 2);
}
