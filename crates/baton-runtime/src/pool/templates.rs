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
//!
//! Each live template keeps one **spare**: a worker forked from it ahead of any start, put
//! under its own limits (its own groups: the cgroup move, which waits for an RCU grace
//! period on this kind of kernel, is paid here, off every request's path), ready and
//! waiting for its first call, as Android's zygote keeps a pool of unspecialized
//! processes. A start with no cores to pin to takes the spare (the tier `spare`: no fork,
//! no move) and the pool forks the next one in the background, after the burst that took
//! it (`spares.rs`); a start that finds none (taken, still coming, or pinned cores needing
//! a cpuset group of their own) forks as before. A spare goes with its template (retired, replaced, removed) and its memory is
//! counted with it. One per template, so at most [`MAX_TEMPLATES`] spares on a node.

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

/// A template's spare worker.
#[derive(Debug)]
enum Spare {
    /// Being forked (by a background thread).
    Coming,
    Ready(Box<Worker>),
}

/// Templates by function name.
#[derive(Debug, Default)]
pub(crate) struct Templates {
    slots: Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
    /// Each live template's spare, by function.
    spares: Mutex<HashMap<String, Spare>>,
    /// Until when the policy holds each function's template (none: while deployed).
    holds: Mutex<HashMap<String, std::time::Instant>>,
}

use baton_core::sync::lock;

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

    /// A start of `spec` that takes its template's spare, if one is ready (no cores to pin:
    /// the caller's to check; `WarmPool::start_from_spare` also has the next one forked).
    pub(crate) fn start_from_spare(
        &self,
        spec: &FunctionSpec,
        counters: &Counters,
    ) -> Option<Worker> {
        if !spec.template {
            return None;
        }
        let asked = std::time::Instant::now();
        let spare = self.take_spare(&spec.name)?;
        counters.spare_starts.fetch_add(1, Ordering::Relaxed);
        Some(spare.taken_as_spare(asked.elapsed()))
    }

    /// `name`'s spare, if one is ready and its process still there (one that died is
    /// dropped here).
    fn take_spare(&self, name: &str) -> Option<Worker> {
        let spare = {
            let mut spares = lock(&self.spares);
            match spares.get(name) {
                Some(Spare::Ready(_)) => spares.remove(name),
                _ => None,
            }
        };
        match spare {
            Some(Spare::Ready(worker)) if worker.is_running() => Some(*worker),
            // Dropped (its groups emptied and removed) outside the lock.
            _ => None,
        }
    }

    /// Whether `name` needs a spare forked: it has a template (alive, or its slot busy:
    /// being started, or only looked at) and no spare, ready or coming; marks it coming.
    /// Never waits for a template start under way: [`Templates::spare_template`], on the
    /// thread that forks, does.
    pub(crate) fn spare_due(&self, name: &str) -> bool {
        let Some(slot) = lock(&self.slots).get(name).cloned() else {
            return false;
        };
        if let Some(slot) = try_lock(&slot) {
            if !matches!(&*slot, Slot::Ready(template) if template.is_alive()) {
                return false;
            }
        }
        let mut spares = lock(&self.spares);
        if spares.contains_key(name) {
            return false;
        }
        spares.insert(name.to_owned(), Spare::Coming);
        true
    }

    /// The live template to fork `name`'s due spare from, waiting for a start under way;
    /// none (and the mark cleared) when it has none.
    pub(crate) fn spare_template(&self, name: &str) -> Option<Arc<Template>> {
        let template = self.current(name);
        if template.is_none() {
            self.clear_spare_mark(name);
        }
        template
    }

    /// Clears `name`'s mark of a spare coming (none will).
    pub(crate) fn clear_spare_mark(&self, name: &str) {
        let mut spares = lock(&self.spares);
        if matches!(spares.get(name), Some(Spare::Coming)) {
            spares.remove(name);
        }
    }

    /// `name`'s live template, waiting for a start under way.
    fn current(&self, name: &str) -> Option<Arc<Template>> {
        let slot = lock(&self.slots).get(name).cloned()?;
        let slot = lock(&slot);
        match &*slot {
            Slot::Ready(template) if template.is_alive() => Some(Arc::clone(template)),
            _ => None,
        }
    }

    /// Keeps `made`, forked from `template` as `name`'s spare, if that template is still
    /// the function's and the spare still due; else drops it. A failed fork clears the
    /// mark (the next start tries again).
    pub(crate) fn put_spare(
        &self,
        name: &str,
        template: &Arc<Template>,
        made: Result<Worker, WorkerError>,
    ) {
        let current = self
            .current(name)
            .is_some_and(|t| Arc::ptr_eq(&t, template));
        let unused = {
            let mut spares = lock(&self.spares);
            let due = matches!(spares.get(name), Some(Spare::Coming));
            match made {
                Ok(worker) if due && current => {
                    spares.insert(name.to_owned(), Spare::Ready(Box::new(worker)));
                    None
                }
                Ok(worker) => {
                    if due {
                        spares.remove(name);
                    }
                    Some(worker)
                }
                Err(_) => {
                    if due {
                        spares.remove(name);
                    }
                    None
                }
            }
        };
        drop(unused);
    }

    /// Drops `name`'s template (a function replaced or removed) and its spare; its other
    /// forked workers keep it until they end.
    pub(crate) fn forget(&self, name: &str) {
        lock(&self.holds).remove(name);
        let spare = lock(&self.spares).remove(name);
        let gone = lock(&self.slots).remove(name);
        drop((spare, gone));
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
                // Its spare first: the spare holds it.
                let spare = lock(&self.spares).remove(&name);
                drop((spare, template));
            }
        }
        retired
    }

    /// The memory the live templates and their spares hold (their proportional set
    /// sizes), MiB.
    pub(crate) fn memory_mib(&self) -> u64 {
        let slots: Vec<Arc<Mutex<Slot>>> = lock(&self.slots).values().cloned().collect();
        let templates: u64 = slots
            .iter()
            .filter_map(|slot| match &*lock(slot) {
                Slot::Ready(template) => template.pss_kib(),
                _ => None,
            })
            .sum();
        // Read outside the lock a start takes spares under.
        let spares: Vec<u32> = lock(&self.spares)
            .values()
            .filter_map(|spare| match spare {
                Spare::Ready(worker) => Some(worker.pid()),
                Spare::Coming => None,
            })
            .collect();
        let spares: u64 = spares.into_iter().filter_map(crate::process::pss_kib).sum();
        (templates + spares).div_ceil(1024)
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
                let spare = match lock(&self.spares).get(&function) {
                    Some(Spare::Ready(worker)) if pid.is_some() => Some(worker.pid()),
                    _ => None,
                };
                TemplateInfo {
                    function,
                    pid,
                    spare,
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
    /// Its spare's process (a worker forked ahead, waiting for its first call), while
    /// one is ready.
    pub spare: Option<u32>,
    /// Why it has none and never will until redeployed (its template could not start).
    pub refused: Option<String>,
}
