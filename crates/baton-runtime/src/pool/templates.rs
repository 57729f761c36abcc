//! The pool's templates: one per function that allows it (manifest `template`, on by
//! default for Python), started by the function's first cold start and kept while the
//! function is deployed; every later worker of it is forked from it (about 5 ms instead of
//! an interpreter's start and imports). A function whose template does not come up (its
//! program does not speak the template protocol: it never says `T`) is started the plain
//! way until it is deployed again; a template that died is replaced at the next cold
//! start. At most [`MAX_TEMPLATES`] templates live at once; past that, workers start plain.
//!
//! A policy that manages templates (the warmth tiers, `Decision::HoldTemplate`) sets how
//! long each is held; once its hold is over, housekeeping lets it go
//! ([`Templates::retire`]) and the function's next cold start starts one again. A template
//! the policy never said anything about is held while its function is deployed.

use crate::counters::Counters;
use crate::isolation::Isolation;
use crate::manifest::FunctionSpec;
use crate::process::{Placement, Template, Worker, WorkerError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most templates alive at once on a node.
pub const MAX_TEMPLATES: usize = 64;

#[derive(Debug, Default)]
pub(crate) enum Slot {
    #[default]
    Empty,
    Ready(Arc<Template>),
    /// Its template could not start: why (workers start plain until it is redeployed).
    Refused(String),
}

/// Templates by function name.
#[derive(Debug, Default)]
pub(crate) struct Templates {
    slots: Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
    /// Until when the policy holds each function's template (none: while deployed).
    holds: Mutex<HashMap<String, std::time::Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The slot's guard unless `ensure` holds it (starting a template): for the planner,
/// which never waits for a start.
fn try_lock(slot: &Mutex<Slot>) -> Option<MutexGuard<'_, Slot>> {
    match slot.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

impl Templates {
    /// A new worker of `spec` on `placement`: forked from its template when it has one
    /// (started now if need be), else started plain.
    pub(crate) fn start_worker(
        &self,
        spec: &FunctionSpec,
        isolation: &Isolation,
        placement: &Placement,
        counters: &Counters,
    ) -> Result<Worker, WorkerError> {
        let plain = || Worker::spawn_on(spec, isolation, placement);
        if !spec.template {
            return plain();
        }
        let Some((slot, template)) = self.ensure(spec, isolation, counters) else {
            return plain();
        };
        match template.fork(spec, isolation, placement) {
            Ok(worker) => {
                counters.forked_starts.fetch_add(1, Ordering::Relaxed);
                Ok(worker)
            }
            Err(_) if !template.is_alive() => {
                let mut slot = lock(&slot);
                if matches!(&*slot, Slot::Ready(t) if Arc::ptr_eq(t, &template)) {
                    *slot = Slot::Empty;
                }
                drop(slot);
                plain()
            }
            // Limits it could not be put under from outside (cores pinned by a mechanism
            // without cpuset): started plain, where they are set before it runs.
            Err(WorkerError::Limits { .. }) => plain(),
            Err(error) => Err(error),
        }
    }

    /// `spec`'s template and its slot: the one alive, or one started now; none when the
    /// function has none (refused, or the bound reached).
    pub(crate) fn ensure(
        &self,
        spec: &FunctionSpec,
        isolation: &Isolation,
        counters: &Counters,
    ) -> Option<(Arc<Mutex<Slot>>, Arc<Template>)> {
        if !spec.template {
            return None;
        }
        let slot = {
            let mut slots = lock(&self.slots);
            if !slots.contains_key(&spec.name) && slots.len() >= MAX_TEMPLATES {
                return None;
            }
            Arc::clone(slots.entry(spec.name.clone()).or_default())
        };
        // One start per function at a time: concurrent cold starts wait, then fork.
        let mut guard = lock(&slot);
        let template = match &*guard {
            Slot::Refused(_) => None,
            Slot::Ready(template) if template.is_alive() => Some(Arc::clone(template)),
            _ => match Template::start(spec, isolation) {
                Ok(template) => {
                    counters.template_starts.fetch_add(1, Ordering::Relaxed);
                    let template = Arc::new(template);
                    *guard = Slot::Ready(Arc::clone(&template));
                    Some(template)
                }
                Err(error @ WorkerError::Protocol { .. }) => {
                    *guard = Slot::Refused(error.to_string());
                    None
                }
                Err(_) => {
                    *guard = Slot::Empty;
                    None
                }
            },
        };
        drop(guard);
        template.map(|template| (slot, template))
    }

    /// Drops `name`'s template (a function replaced or removed); its forked workers keep it
    /// until they end.
    pub(crate) fn forget(&self, name: &str) {
        lock(&self.holds).remove(name);
        let gone = lock(&self.slots).remove(name);
        drop(gone);
    }

    /// Holds `name`'s template at least until `until`; returns whether one must be
    /// started for it (none alive, none starting, not refused). Never waits for a start
    /// under way (the planner calls it).
    pub(crate) fn hold(&self, name: &str, until: std::time::Instant) -> bool {
        {
            let mut holds = lock(&self.holds);
            let held = holds.entry(name.to_owned()).or_insert(until);
            *held = (*held).max(until);
        }
        let slot = lock(&self.slots).get(name).cloned();
        let Some(slot) = slot else {
            return true;
        };
        // Busy: `ensure` is starting one.
        let Some(guard) = try_lock(&slot) else {
            return false;
        };
        match &*guard {
            Slot::Ready(template) => !template.is_alive(),
            Slot::Refused(_) => false,
            Slot::Empty => true,
        }
    }

    /// Lets go the templates whose hold ended before `now` (their forked workers keep
    /// them until they end); returns how many were alive. Never waits for a start under
    /// way.
    pub(crate) fn retire(&self, now: std::time::Instant) -> usize {
        let mut over = Vec::new();
        lock(&self.holds).retain(|name, &mut until| {
            let ended = until < now;
            if ended {
                over.push(name.clone());
            }
            !ended
        });
        let mut retired = 0;
        for name in over {
            let slot = lock(&self.slots).get(&name).cloned();
            let Some(slot) = slot else { continue };
            // Taken out under the slot's lock, dropped (the process stopped) outside it;
            // a refusal stays (the program does not speak the protocol). One being started
            // is looked at again next time (its hold put back): the planner never waits.
            let gone = {
                let Some(mut slot) = try_lock(&slot) else {
                    lock(&self.holds).entry(name).or_insert(now);
                    continue;
                };
                match &*slot {
                    Slot::Ready(_) => std::mem::take(&mut *slot),
                    _ => Slot::Empty,
                }
            };
            if let Slot::Ready(template) = gone {
                retired += usize::from(template.is_alive());
                drop(template);
            }
        }
        retired
    }

    /// The memory the live templates hold (their proportional set sizes), MiB.
    pub(crate) fn memory_mib(&self) -> u64 {
        let slots: Vec<Arc<Mutex<Slot>>> = lock(&self.slots).values().cloned().collect();
        let kib: u64 = slots
            .iter()
            .filter_map(|slot| match &*lock(slot) {
                Slot::Ready(template) => template.pss_kib(),
                _ => None,
            })
            .sum();
        kib.div_ceil(1024)
    }

    /// Every function's template state, by function.
    pub(crate) fn states(&self) -> Vec<TemplateInfo> {
        let slots: Vec<(String, Arc<Mutex<Slot>>)> = lock(&self.slots)
            .iter()
            .map(|(name, slot)| (name.clone(), Arc::clone(slot)))
            .collect();
        let mut states: Vec<TemplateInfo> = slots
            .into_iter()
            .map(|(function, slot)| {
                let (pid, refused) = match &*lock(&slot) {
                    Slot::Ready(template) if template.is_alive() => (Some(template.pid()), None),
                    Slot::Refused(why) => (None, Some(why.clone())),
                    _ => (None, None),
                };
                TemplateInfo {
                    function,
                    pid,
                    refused,
                }
            })
            .collect();
        states.sort_by(|a, b| a.function.cmp(&b.function));
        states
    }
}

/// A function's template as the pool sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    /// The function.
    pub function: String,
    /// Its template's process, while one is alive.
    pub pid: Option<u32>,
    /// Why it has none and never will until redeployed (its template could not start).
    pub refused: Option<String>,
}
