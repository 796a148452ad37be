//! The daemon's side of per-call budgets: the [`BudgetBook`] behind the
//! gateway's `reserve`/`release`, fed by the usage the gateway reports and,
//! once per project, by the project's stored ledger (the spend of the
//! windows in force and every task's total), so budgets hold across
//! restarts.
//!
//! Budgets changed at run time ([`Budgets::change`]: `moziplus budget
//! set|clear`, `PUT`/`DELETE /api/budgets`) are stored in
//! `<home>/budgets.json` before they take effect and win over `budgets:` of
//! the configuration; a change then unblocks the tasks blocked for budget
//! that have room again for the call that was refused.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::blackboard::usage::UsageLine;
use crate::blackboard::{rfc3339, Actor, Blackboard, Clock, TaskStatus};
use crate::config::budgets::{change_override, save_overrides, BudgetKey, BudgetOverride};
use crate::config::{BudgetLimit, BudgetsConfig};
pub use crate::daemon::budget_book::SoftCrossing;
use crate::daemon::budget_book::{Amount, BudgetBook, Payer, Refusal, Scope};
use crate::daemon::Daemon;
use crate::gateway::{CallEstimate, RunAttribution, TokenUsage};
use crate::locks::Recover;
use crate::wire::budgets::{BudgetLine, BudgetList};

/// The book plus which projects' history it holds.
pub struct Budgets {
    pub book: BudgetBook,
    /// Projects whose stored spend is in the book.
    seeded: Mutex<HashSet<String>>,
    /// Every project open at the first reservation was seeded (home budget).
    all_seeded: AtomicBool,
    /// Serializes seeding (the slow path).
    seeding: tokio::sync::Mutex<()>,
    /// `budgets:` of the configuration, before run-time changes.
    base: BudgetsConfig,
    /// The run-time changes (`<home>/budgets.json`); the lock serializes
    /// changes and their writes.
    overrides: tokio::sync::Mutex<Vec<BudgetOverride>>,
    /// The worst case of each task's last refused call: a change unblocks
    /// the task when that call would fit.
    refused: Mutex<HashMap<(String, String), Amount>>,
}

fn payer(a: &RunAttribution) -> Payer<'_> {
    Payer {
        project: &a.project,
        task: a.task.as_deref(),
        agent: &a.agent,
    }
}

impl Budgets {
    /// The budgets of `config` with the run-time `overrides` applied.
    pub fn new(
        config: BudgetsConfig,
        overrides: Vec<BudgetOverride>,
        clock: Arc<dyn Clock>,
    ) -> Budgets {
        Budgets {
            book: BudgetBook::new(config.with_overrides(&overrides), clock),
            seeded: Mutex::new(HashSet::new()),
            all_seeded: AtomicBool::new(false),
            seeding: tokio::sync::Mutex::new(()),
            base: config,
            overrides: tokio::sync::Mutex::new(overrides),
            refused: Mutex::new(HashMap::new()),
        }
    }

    fn is_seeded(&self, project: &str) -> bool {
        self.all_seeded.load(Ordering::Acquire) && self.seeded.locked().contains(project)
    }

    /// Reads the stored spend of every open project not yet in the book
    /// (once each).
    async fn ensure_seeded(&self, daemon: &Daemon, project: &str) {
        if self.is_seeded(project) {
            return;
        }
        let _guard = self.seeding.lock().await;
        if self.is_seeded(project) {
            return;
        }
        for slot in daemon.projects().snapshot() {
            let id = slot.id.to_string();
            let known = self.seeded.locked().contains(&id);
            let Some(bb) = slot.bb.filter(|_| !known) else {
                continue;
            };
            match seed_project(&self.book, &id, &bb).await {
                Ok(()) => {
                    self.seeded.locked().insert(id);
                }
                Err(e) => {
                    tracing::warn!(project = %id, error = %e, "cannot read the project's stored LLM spend for its budgets; counting from now")
                }
            }
        }
        // A project that could not be read is still counted from now on.
        self.seeded.locked().insert(project.to_string());
        self.all_seeded.store(true, Ordering::Release);
    }

    /// The worst case of a call, in tokens and USD.
    pub fn worst_case(&self, e: &CallEstimate) -> Amount {
        let out = e
            .max_output_tokens
            .unwrap_or_else(|| self.book.default_max_output_tokens());
        let usd = e.price.map_or(0.0, |(input, output)| {
            (e.prompt_tokens as f64 * input + out as f64 * output) / 1_000_000.0
        });
        Amount {
            tokens: e.prompt_tokens.saturating_add(out),
            usd,
        }
    }

    /// Reserves a call's worst case (seeding the book first if needed).
    pub async fn reserve(
        &self,
        daemon: &Daemon,
        a: &RunAttribution,
        e: &CallEstimate,
    ) -> Result<Option<u64>, Refusal> {
        self.ensure_seeded(daemon, &a.project).await;
        let worst = self.worst_case(e);
        let result = self.book.reserve(payer(a), worst);
        if let (Err(_), Some(task)) = (&result, &a.task) {
            self.refused
                .locked()
                .insert((a.project.clone(), task.clone()), worst);
        }
        result
    }

    /// Sets (`Some`) or removes (`None`: the configuration's entry applies
    /// again) the run-time limit of `key`: stored first, then in force;
    /// then the tasks blocked for budget with room again are unblocked.
    /// Returns them (`<project>/<task>`).
    pub async fn change(
        &self,
        daemon: &Daemon,
        key: &BudgetKey,
        limit: Option<BudgetLimit>,
    ) -> Result<Vec<String>, String> {
        {
            let mut overrides = self.overrides.lock().await;
            let next = change_override(&overrides, key, limit);
            let path = daemon.home().budget_overrides_file();
            let stored = next.clone();
            let written = tokio::task::spawn_blocking(move || save_overrides(&path, &stored))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = written {
                return Err(format!(
                    "cannot store the budget in {}: {e}",
                    daemon.home().budget_overrides_file().display()
                ));
            }
            let config = self.base.with_overrides(&next);
            if !self.book.enabled() && config.has_limits() {
                // The book booked nothing while no budget was set: it is
                // refilled from the ledgers.
                let _guard = self.seeding.lock().await;
                self.seeded.locked().clear();
                self.all_seeded.store(false, Ordering::Release);
                self.book.forget_spend();
            }
            self.book.set_limits(config);
            *overrides = next;
        }
        tracing::info!(budget = %key, tokens = ?limit.and_then(|l| l.tokens), usd = ?limit.and_then(|l| l.usd), "budget changed");
        Ok(self.unblock(daemon).await)
    }

    /// Moves every task blocked for budget whose refused call would now
    /// fit (any call, when that is unknown) back to `pending`, its round
    /// unchanged. Returns them (`<project>/<task>`).
    pub async fn unblock(&self, daemon: &Daemon) -> Vec<String> {
        let mut out = Vec::new();
        for slot in daemon.projects().snapshot() {
            let Some(bb) = slot.bb else { continue };
            let project = slot.id.to_string();
            let blocked = match bb.budget_blocked_tasks().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(project = %project, error = %e, "cannot list the tasks blocked for budget");
                    continue;
                }
            };
            if blocked.is_empty() {
                continue;
            }
            if self.book.enabled() {
                self.ensure_seeded(daemon, &project).await;
            }
            for (task, agent) in blocked {
                let key = (project.clone(), task.clone());
                let worst = self.refused.locked().get(&key).copied().unwrap_or_default();
                let payer = Payer {
                    project: &project,
                    task: Some(&task),
                    agent: agent.as_deref().unwrap_or("*"),
                };
                if let Err(still) = self.book.room_for(payer, worst) {
                    tracing::info!(project = %project, task = %task, budget = %still.scope.name(), "still blocked for budget");
                    continue;
                }
                let reason = "the budget has room again";
                match bb
                    .set_status(&task, TaskStatus::Pending, &Actor::daemon(), reason)
                    .await
                {
                    Ok(_) => {
                        self.refused.locked().remove(&key);
                        out.push(format!("{project}/{task}"));
                    }
                    Err(e) => {
                        tracing::warn!(project = %project, task = %task, error = %e, "cannot unblock a task blocked for budget")
                    }
                }
            }
        }
        if !out.is_empty() {
            daemon.wake();
        }
        out
    }

    /// Every budget in force with its use (the book is filled from the
    /// ledgers of the open projects first).
    pub async fn list(&self, daemon: &Daemon) -> BudgetList {
        if self.book.enabled() {
            if let Some(first) = daemon.projects().snapshot().first() {
                self.ensure_seeded(daemon, first.id.as_str()).await;
            }
        }
        let overrides = self.overrides.lock().await.clone();
        let projects: Vec<String> = daemon
            .projects()
            .snapshot()
            .iter()
            .map(|s| s.id.to_string())
            .collect();
        let agents: Vec<String> = daemon
            .agents()
            .agents
            .iter()
            .map(|a| a.id.clone())
            .collect();
        budget_list(&self.book, &overrides, &projects, &agents)
    }

    /// The line of one budget, after a change.
    pub async fn line(&self, key: &BudgetKey) -> BudgetLine {
        let overrides = self.overrides.lock().await.clone();
        line(&self.book, &overrides, key)
    }

    /// What a response used, into the budgets of its run; the soft
    /// thresholds it crossed.
    pub fn spend(&self, a: &RunAttribution, usage: &TokenUsage) -> Vec<SoftCrossing> {
        let used = Amount {
            tokens: usage.prompt_tokens.saturating_add(usage.completion_tokens),
            usd: usage.cost_usd.unwrap_or(0.0),
        };
        self.book.spend(payer(a), used)
    }
}

/// The list of every budget in force: each entry (configuration or
/// override) on its own line, and each `*` entry applied, on a line of its
/// own, to every open project, every agent and every task with spend that
/// has no entry of its own.
pub fn budget_list(
    book: &BudgetBook,
    overrides: &[BudgetOverride],
    projects: &[String],
    agents: &[String],
) -> BudgetList {
    let config = book.config();
    let entries = config.entries();
    let mut lines: Vec<BudgetLine> = Vec::new();
    for (key, _) in &entries {
        lines.push(line(book, overrides, key));
    }
    let own = |k: &BudgetKey| entries.iter().any(|(e, _)| e == k);
    let mut applied = |star: BudgetKey, each: Vec<BudgetKey>| {
        if !own(&star) {
            return;
        }
        for k in each.into_iter().filter(|k| !own(k)) {
            lines.push(line(book, overrides, &k));
        }
    };
    applied(
        BudgetKey::Task("*".into()),
        book.tasks_with_spend()
            .into_iter()
            .map(|(p, t)| BudgetKey::Task(format!("{p}/{t}")))
            .collect(),
    );
    applied(
        BudgetKey::AgentDay("*".into()),
        agents
            .iter()
            .map(|a| BudgetKey::AgentDay(a.clone()))
            .collect(),
    );
    applied(
        BudgetKey::ProjectDay("*".into()),
        projects
            .iter()
            .map(|p| BudgetKey::ProjectDay(p.clone()))
            .collect(),
    );
    applied(
        BudgetKey::ProjectMonth("*".into()),
        projects
            .iter()
            .map(|p| BudgetKey::ProjectMonth(p.clone()))
            .collect(),
    );
    BudgetList {
        reset_hour: config.reset_hour,
        time_zone: config.time_zone.clone(),
        soft_threshold: config.soft_threshold,
        budgets: lines,
    }
}

/// The book's scope of a concrete key now (`None` for a `*` entry).
fn scope_of(book: &BudgetBook, key: &BudgetKey) -> Option<Scope> {
    if key.is_star() {
        return None;
    }
    let (day, month) = book.windows(book.now());
    Some(match key {
        BudgetKey::Task(t) => {
            let (p, t) = t.split_once('/')?;
            Scope::Task(p.to_string(), t.to_string())
        }
        BudgetKey::AgentDay(a) => Scope::AgentDay(a.clone(), day),
        BudgetKey::ProjectDay(p) => Scope::ProjectDay(p.clone(), day),
        BudgetKey::ProjectMonth(p) => Scope::ProjectMonth(p.clone(), month),
        BudgetKey::HomeDay => Scope::HomeDay(day),
    })
}

/// One budget's line: its own entry, else the `*` entry it falls back to.
fn line(book: &BudgetBook, overrides: &[BudgetOverride], key: &BudgetKey) -> BudgetLine {
    let config = book.config();
    let star = key.star();
    let (limit, source) = match config.entry(key) {
        Some(l) if overrides.iter().any(|o| &o.key == key) => (l, "override".to_string()),
        Some(l) => (l, "config".to_string()),
        None => match config.entry(&star).filter(|_| !key.is_star()) {
            Some(l) => (l, star.to_string()),
            None => (BudgetLimit::default(), "none".to_string()),
        },
    };
    let scope = scope_of(book, key);
    let used = scope
        .as_ref()
        .filter(|_| book.enabled())
        .map(|s| book.spent(s));
    BudgetLine {
        budget: key.to_string(),
        name: scope.as_ref().map_or_else(
            || format!("{key}: each one without its own entry"),
            Scope::name,
        ),
        source,
        limit_tokens: limit.tokens,
        limit_usd: limit.usd,
        used_tokens: used.map(|(s, _)| s.tokens),
        used_usd: used.map(|(s, _)| s.usd),
        held_tokens: used.map(|(_, h)| h.tokens),
        held_usd: used.map(|(_, h)| h.usd),
        window_start: scope.as_ref().and_then(Scope::window_start).map(rfc3339),
    }
}

/// One project's stored spend into the book: every task's total and the
/// `llm_usage` lines of the windows that may still be in force.
pub async fn seed_project(book: &BudgetBook, project: &str, bb: &Blackboard) -> Result<(), String> {
    for (task, tokens, usd) in bb.task_spend().await.map_err(|e| e.to_string())? {
        book.seed(
            Scope::Task(project.to_string(), task),
            Amount {
                tokens: u64::try_from(tokens).unwrap_or(0),
                usd,
            },
        );
    }
    let (day, month) = book.windows(book.now());
    let lines = bb
        .usage_lines(day.min(month), i64::MAX)
        .await
        .map_err(|e| e.to_string())?;
    for UsageLine { booking, agent, .. } in lines {
        let at = booking.bucket_start;
        let amount = Amount {
            tokens: u64::try_from(booking.prompt_tokens + booking.completion_tokens).unwrap_or(0),
            usd: booking.cost,
        };
        let (day, month) = book.windows(at);
        book.seed(Scope::AgentDay(agent, day), amount);
        book.seed(Scope::ProjectDay(project.to_string(), day), amount);
        book.seed(Scope::ProjectMonth(project.to_string(), month), amount);
        book.seed(Scope::HomeDay(day), amount);
    }
    Ok(())
}
