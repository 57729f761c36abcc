//! Templates in the simulator: the cheap warmth tier, as `baton serve` keeps one per
//! Python function (a process that has imported the function and forks a worker per cold
//! start). With `Costs::templates` set, a cold start of a task whose template is held is a
//! fork ([`Costs::template_start_us`]); one whose template is not held starts from nothing
//! ([`Costs::own_cold_start_us`]) and leaves a template behind, as the runtime's does.
//!
//! Who holds them: every function of the replay has one from the start, made at deploy as
//! `baton serve` makes them. A policy that manages templates
//! ([`Executor::manages_templates`]) then holds each one as its `HoldTemplate` decisions
//! say (one nobody said anything about yet is held until the policy first does; one
//! started by a hold is ready a start from nothing later); for any other policy every
//! function holds one for the whole replay, as a server holds them while the functions are
//! deployed. Templates do
//! not take node memory (they are small beside the instances); the memory they hold over
//! time is counted as idle memory, and apart.
//!
//! Spares ([`SpareCosts`], as `baton serve`'s templates keep one each): a held template
//! has a worker forked ahead, ready a fork after the template is; a cold start or a
//! pre-warm that finds it ready takes it ([`SpareCosts::start_us`]) and the template forks
//! the next one after [`SPARE_REFILL_DELAY_US`], ready a fork later; one that finds none
//! ready forks as without spares. The policy plans with the fork, never counting on the
//! spare, as the runtime's estimate leaves spare takes out. A spare's memory is held with
//! its template's.
//!
//! [`SpareCosts`]: baton_core::costs::SpareCosts
//! [`SPARE_REFILL_DELAY_US`]: baton_core::costs::SPARE_REFILL_DELAY_US
//! [`SpareCosts::start_us`]: baton_core::costs::SpareCosts::start_us
//!
//! [`Executor::manages_templates`]: baton_core::exec::Executor::manages_templates

use baton_core::costs::SpareCosts;
use baton_core::exec::ColdStarts;
use baton_core::{Costs, TaskId};

/// A held template: over `from_us..=until_us`, ready at `ready_at_us`. One a cold start
/// left is held until the policy first says how long (`until_us` is then `u64::MAX`), as
/// the runtime holds a template nobody set a hold on.
#[derive(Debug, Clone, Copy)]
struct Held {
    from_us: u64,
    until_us: u64,
    ready_at_us: u64,
}

/// The hold of a template a cold start left, until the policy says.
const UNTIL_TOLD: u64 = u64::MAX;

/// The templates of a replay with templates.
#[derive(Debug)]
pub(crate) struct Templates {
    memory_mib: u64,
    managed: bool,
    held: Vec<Option<Held>>,
    spare: Option<SpareCosts>,
    /// When each task's spare is ready (by task index; 0: since deploy). Meaningful while
    /// its template is held.
    spare_ready_at: Vec<u64>,
    /// Memory held by templates no longer held, MiB·µs (the ones held now are added at
    /// the end).
    lapsed_mib_us: f64,
    /// Templates started after deploy: by a hold, or by a cold start that found none.
    pub(crate) started: u64,
    /// Cold starts forked from a template.
    pub(crate) forked: u64,
    /// Starts (cold starts and pre-warms) that took their template's spare.
    pub(crate) spares_taken: u64,
}

impl Templates {
    /// The templates of a replay of `tasks` from `start_us` with `costs` (none without
    /// templates), each made at deploy; `managed`: then held as the policy's holds say.
    pub(crate) fn new(
        costs: &Costs,
        managed: bool,
        tasks: impl IntoIterator<Item = TaskId>,
        start_us: u64,
    ) -> Option<Templates> {
        let templates = costs.templates?;
        let mut held = Vec::new();
        if managed {
            for task in tasks {
                if held.len() <= task.index() {
                    held.resize(task.index() + 1, None);
                }
                held[task.index()] = Some(Held {
                    from_us: start_us,
                    until_us: UNTIL_TOLD,
                    ready_at_us: start_us,
                });
            }
        }
        Some(Templates {
            memory_mib: templates.memory_mib + templates.spare.map_or(0, |s| s.memory_mib),
            managed,
            held,
            spare: templates.spare,
            spare_ready_at: Vec::new(),
            lapsed_mib_us: 0.0,
            started: 0,
            forked: 0,
            spares_taken: 0,
        })
    }

    fn held(&self, task: TaskId, now_us: u64) -> Option<Held> {
        self.held
            .get(task.index())
            .copied()
            .flatten()
            .filter(|h| now_us <= h.until_us)
    }

    /// What starting `task` at `now_us` takes with the templates as they are, µs.
    fn start_us(&self, costs: &Costs, task: TaskId, now_us: u64) -> u64 {
        let fork = costs.template_start_us(task).unwrap_or(0);
        if !self.managed {
            return fork;
        }
        match self.held(task, now_us) {
            Some(h) => h.ready_at_us.saturating_sub(now_us) + fork,
            None => costs.own_cold_start_us(task),
        }
    }

    /// Takes `task`'s spare at `now_us` if its template is held and the spare ready: what
    /// the start takes then, µs; the template forks the next one.
    fn take_spare(&mut self, costs: &Costs, task: TaskId, now_us: u64) -> Option<u64> {
        let spare = self.spare?;
        if self.managed && self.held(task, now_us).is_none() {
            return None;
        }
        let ready_at = self.spare_ready_at(task);
        if *ready_at > now_us {
            return None;
        }
        *ready_at = now_us
            .saturating_add(baton_core::costs::SPARE_REFILL_DELAY_US)
            .saturating_add(costs.template_start_us(task).unwrap_or(0));
        self.spares_taken += 1;
        Some(spare.start_us)
    }

    /// When `task`'s spare is ready (0, since deploy, until said otherwise).
    fn spare_ready_at(&mut self, task: TaskId) -> &mut u64 {
        if self.spare_ready_at.len() <= task.index() {
            self.spare_ready_at.resize(task.index() + 1, 0);
        }
        &mut self.spare_ready_at[task.index()]
    }

    /// A pre-warm of `task` starting at `now_us` takes its template's spare when it is
    /// ready, as the runtime's does (it is then ready at once; the executor's instant
    /// stands, counted on the fork).
    pub(crate) fn prewarm_start(&mut self, costs: &Costs, task: TaskId, now_us: u64) {
        let _ = self.take_spare(costs, task, now_us);
    }

    /// A cold start of `task` at `now_us`: what it takes, µs. Its template's spare when one
    /// is ready; forked from the template when one is held (after waiting for it, if it
    /// is still starting); else from nothing, leaving a template held until the policy's
    /// next hold on it says how long.
    pub(crate) fn cold_start(&mut self, costs: &Costs, task: TaskId, now_us: u64) -> u64 {
        if let Some(took) = self.take_spare(costs, task, now_us) {
            return took;
        }
        let took = self.start_us(costs, task, now_us);
        if !self.managed || self.held(task, now_us).is_some() {
            self.forked += 1;
        } else {
            let ready = now_us.saturating_add(took);
            self.start(costs, task, now_us, (ready, UNTIL_TOLD));
        }
        took
    }

    /// The policy's hold: `task`'s template held until `until_us`, started now if none is
    /// held.
    pub(crate) fn hold(&mut self, costs: &Costs, task: TaskId, now_us: u64, until_us: u64) {
        if !self.managed {
            return;
        }
        if let Some(held) = self.held(task, now_us) {
            let until_us = if held.until_us == UNTIL_TOLD {
                until_us.max(now_us)
            } else {
                held.until_us.max(until_us)
            };
            self.held[task.index()] = Some(Held { until_us, ..held });
            return;
        }
        let ready = now_us.saturating_add(costs.own_cold_start_us(task));
        self.start(costs, task, now_us, (ready, until_us.max(ready)));
    }

    /// Starts a template of `task` (none is held): the lapsed one's memory is counted;
    /// its spare is ready a fork after it.
    fn start(
        &mut self,
        costs: &Costs,
        task: TaskId,
        now_us: u64,
        (ready_at_us, until_us): (u64, u64),
    ) {
        if self.held.len() <= task.index() {
            self.held.resize(task.index() + 1, None);
        }
        if self.spare.is_some() {
            *self.spare_ready_at(task) =
                ready_at_us.saturating_add(costs.template_start_us(task).unwrap_or(0));
        }
        if let Some(old) = self.held[task.index()].take() {
            self.lapsed_mib_us +=
                self.memory_mib as f64 * old.until_us.saturating_sub(old.from_us) as f64;
        }
        self.held[task.index()] = Some(Held {
            from_us: now_us,
            until_us,
            ready_at_us,
        });
        self.started += 1;
    }

    /// The memory templates held over the replay `start_us..end_us`, MiB·µs, `functions`
    /// of them replayed: every function's whole replay, or, managed, what the policy held
    /// (up to the end).
    pub(crate) fn held_mib_us(&self, start_us: u64, end_us: u64, functions: usize) -> f64 {
        if !self.managed {
            return functions as f64
                * self.memory_mib as f64
                * end_us.saturating_sub(start_us) as f64;
        }
        let now: f64 = self
            .held
            .iter()
            .flatten()
            .map(|h| h.until_us.min(end_us).saturating_sub(h.from_us) as f64)
            .sum();
        self.lapsed_mib_us + self.memory_mib as f64 * now
    }
}

/// The cold starts the policy sees in a replay: the cost table's, with templates as they
/// are held at `now_us`.
pub(crate) struct Host<'a> {
    pub(crate) costs: &'a Costs,
    pub(crate) templates: Option<&'a Templates>,
    pub(crate) now_us: u64,
}

impl ColdStarts for Host<'_> {
    fn cold_start_us(&self, task: TaskId) -> u64 {
        match self.templates {
            Some(templates) => templates.start_us(self.costs, task, self.now_us),
            None => self.costs.cold_start_us(task),
        }
    }

    fn has_template(&self, _task: TaskId) -> bool {
        self.costs.templates.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::costs::{SpareCosts, TemplateCosts};

    fn costs() -> Costs {
        let mut costs = Costs::new(100_000, 256);
        costs.templates = Some(TemplateCosts {
            start_us: 5_000,
            memory_mib: 10,
            spare: None,
        });
        costs
    }

    #[test]
    fn a_managed_template_is_held_as_told_and_forks_while_held() {
        let costs = costs();
        let t = TaskId(0);
        let mut templates = Templates::new(&costs, true, [], 0).unwrap();
        // None held: from nothing, and the start leaves one until the policy says.
        assert_eq!(templates.cold_start(&costs, t, 0), 100_000);
        assert_eq!(templates.forked, 0);
        assert_eq!(templates.started, 1);
        // Held past its end: a fork, while held.
        templates.hold(&costs, t, 100_000, 1_000_000);
        assert_eq!(templates.cold_start(&costs, t, 500_000), 5_000);
        assert_eq!(templates.forked, 1);
        // Lapsed: from nothing again, and held until the policy says (at its end).
        assert_eq!(templates.cold_start(&costs, t, 2_000_000), 100_000);
        assert_eq!(templates.cold_start(&costs, t, 2_050_000), 5_000 + 50_000);
        templates.hold(&costs, t, 2_200_000, 2_500_000);
        // A hold of a lapsed template starts one, ready a start later: a start before
        // then waits for it.
        templates.hold(&costs, t, 3_000_000, 4_000_000);
        let host = Host {
            costs: &costs,
            templates: Some(&templates),
            now_us: 3_050_000,
        };
        assert_eq!(host.cold_start_us(t), 50_000 + 5_000);
        assert_eq!(templates.started, 3);
        // Held: 0..1_000_000, 2_000_000..2_500_000, 3_000_000..end (3_500_000), 10 MiB.
        let held = templates.held_mib_us(0, 3_500_000, 1);
        assert_eq!(held, 10.0 * (1_000_000.0 + 500_000.0 + 500_000.0));
    }

    #[test]
    fn unmanaged_templates_are_held_by_every_function_throughout() {
        let costs = costs();
        let mut templates = Templates::new(&costs, false, [TaskId(3)], 0).unwrap();
        assert_eq!(templates.cold_start(&costs, TaskId(3), 0), 5_000);
        templates.hold(&costs, TaskId(3), 0, 10);
        assert_eq!(templates.started, 0);
        assert_eq!(templates.held_mib_us(0, 1_000, 4), 4.0 * 10.0 * 1_000.0);
        assert!(Templates::new(&Costs::new(1, 1), true, [], 0).is_none());
    }

    #[test]
    fn managed_templates_made_at_deploy_are_held_until_the_policy_says() {
        let costs = costs();
        let (t, u) = (TaskId(0), TaskId(2));
        let mut templates = Templates::new(&costs, true, [t, u], 1_000).unwrap();
        // Made at deploy: the first start is a fork, and nothing was started since.
        assert_eq!(templates.cold_start(&costs, t, 50_000), 5_000);
        assert_eq!(templates.started, 0);
        // Told: t is held 1 s after its end; u, never told, until the end.
        templates.hold(&costs, t, 60_000, 1_060_000);
        assert_eq!(templates.cold_start(&costs, t, 2_000_000), 100_000);
        assert_eq!(templates.cold_start(&costs, u, 2_000_000), 5_000);
        let held = templates.held_mib_us(1_000, 3_000_000, 2);
        // t: 1_000..1_060_000, then 2_000_000..end; u: 1_000..end.
        let held_us = (1_060_000.0 - 1_000.0) + 1_000_000.0 + (3_000_000.0 - 1_000.0);
        assert_eq!(held, 10.0 * held_us);
    }

    #[test]
    fn a_spare_serves_a_start_and_the_next_is_ready_a_fork_later() {
        let mut costs = costs();
        costs.templates = costs.templates.map(|t| TemplateCosts {
            spare: Some(SpareCosts {
                start_us: 500,
                memory_mib: 1,
            }),
            ..t
        });
        let t = TaskId(0);
        // Every function's template and spare from deploy: the first start takes the
        // spare; the next is forked 100 ms later and ready a fork after that, so a start
        // before then forks.
        let mut templates = Templates::new(&costs, false, [t], 0).unwrap();
        assert_eq!(templates.cold_start(&costs, t, 0), 500);
        assert_eq!(templates.cold_start(&costs, t, 104_999), 5_000);
        assert_eq!(templates.cold_start(&costs, t, 105_000), 500);
        assert_eq!((templates.spares_taken, templates.forked), (2, 1));
        // A pre-warm takes it as a cold start does.
        templates.prewarm_start(&costs, t, 300_000);
        assert_eq!(templates.cold_start(&costs, t, 301_000), 5_000);
        assert_eq!(templates.spares_taken, 3);
        // The policy plans with the fork: it never counts on the spare.
        let host = Host {
            costs: &costs,
            templates: Some(&templates),
            now_us: 310_000,
        };
        assert_eq!(host.cold_start_us(t), 5_000);
        // Its memory is held with its template's: 10 + 1 MiB.
        assert_eq!(templates.held_mib_us(0, 1_000, 1), 11.0 * 1_000.0);

        // Managed: a template started from nothing has its spare a fork after it is ready.
        let mut templates = Templates::new(&costs, true, [], 0).unwrap();
        assert_eq!(templates.cold_start(&costs, t, 0), 100_000);
        assert_eq!(templates.cold_start(&costs, t, 104_999), 5_000);
        assert_eq!(templates.cold_start(&costs, t, 105_000), 500);
        // Let go: no spare either, a start from nothing again.
        templates.hold(&costs, t, 200_000, 300_000);
        assert_eq!(templates.cold_start(&costs, t, 400_000), 100_000);
        assert_eq!(templates.spares_taken, 1);
    }
}
