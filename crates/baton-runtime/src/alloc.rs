//! The proactive allocator's clock: every pre-warm of a plan is a job that starts at the
//! instant that makes its instance ready just before the step's expected start (its
//! `ready_at` minus the function's measured cold start and a margin), not all at the
//! plan's start. One thread sleeps until the earliest job and also does the periodic
//! housekeeping (expiring idle workers, stopping idle services, ticking the policy).
//!
//! The timing rule, [`start_instant`], is pure; the thread only waits and calls back.

use crate::process::Placement;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Margin added to a function's measured cold start when choosing when to start it.
pub const LEAD_MARGIN: Duration = Duration::from_millis(2);

/// One pre-warm to carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct PrewarmJob {
    /// The function.
    pub function: String,
    /// When its instance should be ready.
    pub ready_at: Instant,
    /// Kept until, if unused.
    pub until: Instant,
    /// The plan it belongs to.
    pub plan: Option<u64>,
    /// Probability it will be used.
    pub probability: f64,
    /// Where it runs (the reserved cores and GPU units).
    pub placement: Placement,
}

/// When to start a job that must be ready at `ready_at` and takes about `cold_start` to
/// start: `ready_at − (cold_start × 1.25 + LEAD_MARGIN)`, never before `now`.
pub fn start_instant(ready_at: Instant, cold_start: Duration, now: Instant) -> Instant {
    let lead = cold_start.mul_f64(1.25) + LEAD_MARGIN;
    ready_at.checked_sub(lead).unwrap_or(now).max(now)
}

/// A started job, for reports and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The job.
    pub job: PrewarmJob,
    /// When it was scheduled.
    pub scheduled: Instant,
    /// When it was due.
    pub due: Instant,
    /// When it actually started.
    pub started: Instant,
}

/// What the thread calls: run a due job; housekeeping at `now`.
pub type RunJob = Box<dyn Fn(PrewarmJob) + Send + Sync>;
/// Housekeeping callback.
pub type Housekeeping = Box<dyn Fn(Instant) + Send + Sync>;

#[derive(Debug, Default)]
struct Queue {
    /// Jobs by (due, sequence).
    jobs: BTreeMap<(Instant, u64), (PrewarmJob, Instant)>,
    next: u64,
    history: VecDeque<Started>,
}

/// How many started jobs are remembered.
const HISTORY: usize = 1024;

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    stop: AtomicBool,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Queue> {
    shared.queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// The scheduler thread; stopped and joined when dropped.
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts the thread: due jobs go to `run`, and `housekeeping` runs every `tick`.
    pub fn start(
        tick: Duration,
        run: RunJob,
        housekeeping: Housekeeping,
    ) -> std::io::Result<Scheduler> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("baton-allocator".into())
            .spawn(move || {
                let mut next_housekeeping = Instant::now() + tick;
                while !inner.stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let mut due = Vec::new();
                    let wait = {
                        let mut queue = lock(&inner);
                        while let Some(entry) = queue.jobs.first_entry() {
                            if entry.key().0 > now {
                                break;
                            }
                            let ((at, _), (job, scheduled)) = entry.remove_entry();
                            due.push((job, scheduled, at));
                        }
                        let until_job = queue.jobs.keys().next().map(|k| k.0);
                        let until =
                            until_job.map_or(next_housekeeping, |j| j.min(next_housekeeping));
                        for (job, scheduled, at) in &due {
                            if queue.history.len() == HISTORY {
                                queue.history.pop_front();
                            }
                            queue.history.push_back(Started {
                                job: job.clone(),
                                scheduled: *scheduled,
                                due: *at,
                                started: now,
                            });
                        }
                        until.saturating_duration_since(now)
                    };
                    for (job, _, _) in due {
                        run(job);
                    }
                    if Instant::now() >= next_housekeeping {
                        housekeeping(Instant::now());
                        next_housekeeping = Instant::now() + tick;
                        continue;
                    }
                    let queue = lock(&inner);
                    if !wait.is_zero() && !inner.stop.load(Ordering::Relaxed) {
                        let _ = inner.wake.wait_timeout(queue, wait);
                    }
                }
            })?;
        Ok(Scheduler {
            shared,
            thread: Some(thread),
        })
    }

    /// Schedules `job` to start at `at`.
    pub fn schedule(&self, at: Instant, job: PrewarmJob) {
        let mut queue = lock(&self.shared);
        let sequence = queue.next;
        queue.next += 1;
        queue.jobs.insert((at, sequence), (job, Instant::now()));
        drop(queue);
        self.shared.wake.notify_all();
    }

    /// Drops the jobs of `function` for `plan` that have not started; returns how many.
    pub fn cancel(&self, function: &str, plan: Option<u64>) -> usize {
        let mut queue = lock(&self.shared);
        let before = queue.jobs.len();
        queue
            .jobs
            .retain(|_, (job, _)| !(job.function == function && job.plan == plan));
        before - queue.jobs.len()
    }

    /// Drops the earliest job of `function` that has not started; returns whether one was.
    pub fn cancel_one(&self, function: &str) -> bool {
        let mut queue = lock(&self.shared);
        let key = queue
            .jobs
            .iter()
            .find(|(_, (job, _))| job.function == function)
            .map(|(key, _)| *key);
        key.is_some_and(|key| queue.jobs.remove(&key).is_some())
    }

    /// Jobs waiting for their instant.
    pub fn pending(&self) -> usize {
        lock(&self.shared).jobs.len()
    }

    /// The last jobs started, oldest first.
    pub fn history(&self) -> Vec<Started> {
        lock(&self.shared).history.iter().cloned().collect()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // The last owner of what holds this scheduler may be dropped on the scheduler's
            // own thread (a job was running): it ends by itself then, joining would deadlock.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_start_a_cold_start_ahead_and_never_in_the_past() {
        let now = Instant::now();
        let ready = now + Duration::from_millis(500);
        let start = start_instant(ready, Duration::from_millis(100), now);
        assert_eq!(ready - start, Duration::from_millis(127));
        assert_eq!(start_instant(ready, Duration::from_secs(1), now), now);
        assert_eq!(start_instant(now, Duration::ZERO, now), now);
    }

    fn job(function: &str, plan: u64) -> PrewarmJob {
        let now = Instant::now();
        PrewarmJob {
            function: function.into(),
            ready_at: now,
            until: now,
            plan: Some(plan),
            probability: 1.0,
            placement: Placement::default(),
        }
    }

    #[test]
    fn jobs_run_in_time_order_and_cancelled_ones_never() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&ran);
        let scheduler = Scheduler::start(
            Duration::from_millis(5),
            Box::new(move |job: PrewarmJob| sink.lock().unwrap().push(job.function)),
            Box::new(|_| {}),
        )
        .unwrap();
        let now = Instant::now();
        scheduler.schedule(now + Duration::from_millis(60), job("late", 1));
        scheduler.schedule(now + Duration::from_millis(20), job("early", 1));
        scheduler.schedule(now + Duration::from_millis(40), job("cancelled", 2));
        assert_eq!(scheduler.cancel("cancelled", Some(2)), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ran.lock().unwrap().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*ran.lock().unwrap(), ["early", "late"]);
        let history = scheduler.history();
        assert!(history.iter().all(|s| s.started >= s.due));
        assert_eq!(scheduler.pending(), 0);
    }
}
