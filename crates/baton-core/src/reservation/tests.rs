//! The reservation pool's tests: windows share capacity, committed reservations preempt
//! the least likely, named cores are not shared, and (property) the pool never exceeds its
//! capacity and releases everything.

use super::*;
use proptest::prelude::*;

fn memory(mib: u64) -> ResourceVec {
    ResourceVec {
        memory_mib: mib,
        ..ResourceVec::ZERO
    }
}

fn request(mib: u64, start: u64, end: u64, kind: ReservationKind, p: f64) -> ReservationRequest {
    ReservationRequest {
        needs: memory(mib),
        window: Window {
            start_us: start,
            end_us: end,
        },
        kind,
        probability: p,
        plan: None,
    }
}

#[test]
fn windows_that_do_not_overlap_share_capacity() {
    let pool = ResourcePool::new(memory(100));
    let _a = pool
        .try_reserve(request(80, 0, 10, ReservationKind::Speculative, 0.5))
        .unwrap();
    let _b = pool
        .try_reserve(request(80, 10, 20, ReservationKind::Speculative, 0.5))
        .unwrap();
    let error = pool
        .try_reserve(request(30, 5, 15, ReservationKind::Speculative, 0.5))
        .unwrap_err();
    assert!(matches!(error, PoolError::Insufficient { .. }), "{error}");
}

#[test]
fn committed_preempts_lowest_probability_first() {
    let pool = ResourcePool::new(memory(100));
    let low = pool
        .try_reserve(request(40, 0, 100, ReservationKind::Speculative, 0.1))
        .unwrap();
    let high = pool
        .try_reserve(request(40, 0, 100, ReservationKind::Speculative, 0.9))
        .unwrap();
    let (running, preempted) = pool
        .reserve_committed(request(50, 0, 50, ReservationKind::Committed, 1.0))
        .unwrap();
    assert_eq!(preempted.len(), 1);
    assert_eq!(preempted[0].id, low.id());
    assert!(low.is_preempted());
    assert!(!high.is_preempted());
    assert_eq!(pool.usage_at(10).memory_mib, 90);
    drop(running);
    drop(low);
    drop(high);
    assert!(pool.is_empty());
}

#[test]
fn committed_that_cannot_fit_preempts_nothing() {
    let pool = ResourcePool::new(memory(100));
    let _speculative = pool
        .try_reserve(request(40, 0, 100, ReservationKind::Speculative, 0.1))
        .unwrap();
    let _committed = pool
        .reserve_committed(request(50, 0, 100, ReservationKind::Committed, 1.0))
        .unwrap();
    assert!(pool
        .reserve_committed(request(70, 0, 100, ReservationKind::Committed, 1.0))
        .is_err());
    assert_eq!(pool.len(), 2);
    assert_eq!(pool.n_preemptions(), 0);
}

#[test]
fn named_cores_are_not_shared() {
    let pool = ResourcePool::new(ResourceVec {
        cores: 2,
        ..memory(100)
    });
    let one_core = ReservationRequest {
        needs: ResourceVec {
            cores: 1,
            ..ResourceVec::ZERO
        },
        ..request(0, 0, 10, ReservationKind::Speculative, 0.5)
    };
    let a = pool.try_reserve(one_core).unwrap();
    let b = pool.try_reserve(one_core).unwrap();
    assert_ne!(a.cores(), b.cores());
    assert!(pool.try_reserve(one_core).is_err());
    let shared_cpu = ReservationRequest {
        needs: ResourceVec {
            cpu_millicores: 1,
            ..ResourceVec::ZERO
        },
        ..one_core
    };
    assert!(pool.try_reserve(shared_cpu).is_err(), "both cores pinned");
}

#[test]
fn reserve_all_is_all_or_nothing() {
    let pool = ResourcePool::new(memory(100));
    let both = [
        request(60, 0, 10, ReservationKind::Speculative, 0.5),
        request(60, 5, 10, ReservationKind::Speculative, 0.5),
    ];
    assert!(!pool.fits_all(&both));
    assert!(pool.try_reserve_all(&both).is_err());
    assert!(pool.is_empty());
    let staggered = [
        request(60, 0, 5, ReservationKind::Speculative, 0.5),
        request(60, 5, 10, ReservationKind::Speculative, 0.5),
    ];
    assert!(pool.fits_all(&staggered));
    assert_eq!(pool.try_reserve_all(&staggered).unwrap().len(), 2);
    assert!(
        pool.is_empty(),
        "guards dropped at the end of the statement"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Reserve(u64, u32, u64, u64, bool, u8),
    Drop(usize),
    Commit(usize),
    Expire(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            1u64..60,
            0u32..3,
            0u64..50,
            1u64..40,
            any::<bool>(),
            0u8..10
        )
            .prop_map(|(m, c, s, d, k, p)| Op::Reserve(m, c, s, s + d, k, p)),
        (0usize..16).prop_map(Op::Drop),
        (0usize..16).prop_map(Op::Commit),
        (0u64..100).prop_map(Op::Expire),
    ]
}

fn check_invariants(pool: &ResourcePool) {
    let capacity = pool.capacity();
    let live = pool.reservations();
    for r in &live {
        let t = r.request.window.start_us;
        assert!(pool.usage_at(t).fits_in(&capacity), "over capacity at {t}");
        for other in &live {
            if other.id != r.id && other.request.window.overlaps(&r.request.window) {
                assert!(
                    other.cores.iter().all(|c| !r.cores.contains(c)),
                    "core shared"
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn never_over_capacity_and_everything_released(ops in proptest::collection::vec(op(), 1..60)) {
        let pool = ResourcePool::new(ResourceVec {
            cpu_millicores: 500,
            cores: 3,
            memory_mib: 100,
            net_mbps: 0,
            gpu_units: 0,
        });
        let mut held: Vec<Reservation> = Vec::new();
        for op in ops {
            match op {
                Op::Reserve(mib, cores, start, end, committed, p) => {
                    let request = ReservationRequest {
                        needs: ResourceVec { cores, ..memory(mib) },
                        window: Window { start_us: start, end_us: end },
                        kind: ReservationKind::Speculative,
                        probability: f64::from(p) / 10.0,
                        plan: None,
                    };
                    if committed {
                        if let Ok((reservation, preempted)) = pool.reserve_committed(request) {
                            for p in &preempted {
                                let guard = held.iter().find(|r| r.id() == p.id).expect("preempted a held guard");
                                prop_assert!(guard.is_preempted());
                                prop_assert_eq!(guard.request().kind, ReservationKind::Speculative);
                            }
                            held.push(reservation);
                        }
                    } else if let Ok(reservation) = pool.try_reserve(request) {
                        held.push(reservation);
                    }
                }
                Op::Drop(i) => {
                    if !held.is_empty() {
                        let i = i % held.len();
                        held.swap_remove(i);
                    }
                }
                Op::Commit(i) => {
                    if !held.is_empty() {
                        let i = i % held.len();
                        let preempted = held[i].is_preempted();
                        prop_assert_eq!(held[i].commit(), !preempted);
                    }
                }
                Op::Expire(t) => {
                    pool.expire(t);
                }
            }
            check_invariants(&pool);
            let live = pool.reservations().len();
            let holding = held.iter().filter(|r| !r.is_preempted()).count();
            prop_assert_eq!(live, holding);
        }
        held.clear();
        prop_assert!(pool.is_empty());
    }
}
