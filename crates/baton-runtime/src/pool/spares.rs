//! Forking spares (see `templates.rs`) off the request path: a start that took a spare,
//! or a template just started, only sends the function to one dispatcher thread (a bounded
//! channel, at most one pending spare per template); the dispatcher waits until each is
//! due ([`SPARE_REFILL_DELAY_US`] after a take, at once otherwise) and forks it on a
//! thread of its own, so spares of several functions are forked at once, as the simulator
//! has them. The dispatcher holds the pool weakly and ends with it.

use super::{Placement, WarmPool, MAX_TEMPLATES};
use crate::manifest::FunctionSpec;
use crate::process::Worker;
use baton_core::costs::SPARE_REFILL_DELAY_US;
use baton_core::sync::Unpoisoned;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A spare to fork once due.
struct Refill {
    due: Instant,
    spec: Arc<FunctionSpec>,
}

/// The dispatcher's inbox, started with the first spare.
#[derive(Default)]
pub(super) struct Refills {
    inbox: Mutex<Option<SyncSender<Refill>>>,
}

impl std::fmt::Debug for Refills {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refills")
    }
}

impl WarmPool {
    /// A start of `spec` that takes its template's spare, if one is ready; the next one is
    /// forked [`SPARE_REFILL_DELAY_US`] later, after the burst that took it. The caller
    /// checks there are no cores to pin.
    pub(super) fn start_from_spare(self: &Arc<Self>, spec: &Arc<FunctionSpec>) -> Option<Worker> {
        let spare = self.templates.start_from_spare(spec, &self.counters)?;
        self.refill_spare(spec, Duration::from_micros(SPARE_REFILL_DELAY_US));
        Some(spare)
    }

    /// Has `spec`'s next spare forked `after` from now when its template is alive and it
    /// has none ready or coming. Never waits: it only sends to the dispatcher.
    pub(super) fn refill_spare(self: &Arc<Self>, spec: &Arc<FunctionSpec>, after: Duration) {
        if !spec.template || !self.templates.spare_due(&spec.name) {
            return;
        }
        let refill = Refill {
            due: Instant::now() + after,
            spec: Arc::clone(spec),
        };
        let sent = {
            let mut inbox = self.refills.inbox.lock_unpoisoned();
            if inbox.is_none() {
                *inbox = start_dispatcher(Arc::downgrade(self));
            }
            inbox
                .as_ref()
                .is_some_and(|inbox| inbox.try_send(refill).is_ok())
        };
        if !sent {
            // No dispatcher, or its inbox full: none is coming (the next start tries again).
            self.templates.clear_spare_mark(&spec.name);
        }
    }

    /// Forks `spec`'s due spare from its live template and keeps it (on its own thread).
    fn fork_spare(&self, spec: &FunctionSpec) {
        let Some(template) = self.templates.spare_template(&spec.name) else {
            return;
        };
        // Its declared memory is admitted when a start takes it.
        let made = template.fork(spec, &self.isolation, &Placement::default());
        if made.is_ok() {
            self.counters.spares_forked.fetch_add(1, Ordering::Relaxed);
        }
        self.templates.put_spare(&spec.name, &template, made);
    }
}

fn start_dispatcher(pool: Weak<WarmPool>) -> Option<SyncSender<Refill>> {
    let (sender, inbox) = sync_channel(MAX_TEMPLATES);
    std::thread::Builder::new()
        .name("baton-spares".into())
        .spawn(move || dispatch(&pool, &inbox))
        .ok()?;
    Some(sender)
}

/// Waits for each refill's instant and forks it on a thread of its own; ends when the pool
/// (and with it the inbox's sender) is gone.
fn dispatch(pool: &Weak<WarmPool>, inbox: &Receiver<Refill>) {
    let mut waiting: Vec<Refill> = Vec::new();
    loop {
        let next = waiting.iter().map(|r| r.due).min();
        let received = match next {
            None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(due) => inbox.recv_timeout(due.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(refill) => waiting.push(refill),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let (due, later): (Vec<Refill>, Vec<Refill>) =
            waiting.drain(..).partition(|r| r.due <= now);
        waiting = later;
        for refill in due {
            let Some(pool) = pool.upgrade() else {
                return;
            };
            let name = refill.spec.name.clone();
            let forker = Arc::clone(&pool);
            let spawned = std::thread::Builder::new()
                .name(format!("baton-spare-{name}"))
                .spawn(move || forker.fork_spare(&refill.spec));
            if spawned.is_err() {
                // None is coming (the next start tries again).
                pool.templates.clear_spare_mark(&name);
            }
        }
    }
}
