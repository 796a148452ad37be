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
//!
//! On a PostgreSQL store shared by several daemons the spend and the
//! reservations live in the store instead (`blackboard::cluster`,
//! `budget_spend` and `budget_hold`), so a cap holds over every host
//! together: each call's worst case is reserved there in one transaction
//! against every daemon's spend and holds, and its spend and release are
//! written there, in order, by one writer task ([`SharedWrite`]). Each
//! project's stored ledger is added to the shared spend once for the whole
//! cluster. While the store is unreachable, this daemon's own book limits
//! its calls.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::blackboard::cluster::{BudgetAnswer, BudgetWindow, Cluster};
use crate::blackboard::usage::UsageLine;
use crate::blackboard::{rfc3339, Actor, BbResult, Blackboard, Clock, Millis, TaskStatus};
use crate::config::budgets::{
    change_override, overrides_json, parse_overrides, save_overrides, BudgetKey, BudgetOverride,
};
use crate::config::{BudgetLimit, BudgetsConfig};
pub use crate::daemon::budget_book::SoftCrossing;
use crate::daemon::budget_book::{crossing, Amount, BudgetBook, Payer, Refusal, Scope};
use crate::daemon::cluster::ALIVE;
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
    /// Projects whose ledger is known to be in the store's shared spend.
    shared_seeded: Mutex<HashSet<String>>,
    /// The next id of a reservation held in the store ([`SHARED_HOLD`]).
    next_hold: AtomicU64,
    /// The writer of spends and releases to the store, in order.
    writes: OnceLock<mpsc::UnboundedSender<SharedWrite>>,
    /// The version of the cluster's run-time budgets in force here (-1:
    /// not read yet).
    limits_version: AtomicI64,
    /// The writer is retrying a spend the store refused: reservations do
    /// not wait for its queue (the store is unreachable anyway).
    writer_retrying: AtomicBool,
}

/// Where the cluster's run-time budgets are, in errors.
const SHARED_LIMITS: &str = "the store's budgets (table moziplus.budget_limits)";

/// Reservations held in the store carry this bit in their id (the book's
/// own ids never reach it), so a release finds where its hold is.
const SHARED_HOLD: u64 = 1 << 62;

/// How long a spend the store refused is tried again (a restart of the
/// database) before it is given up and logged.
const SPEND_RETRY: Duration = Duration::from_secs(60);

/// A write to the store's shared budgets, done in the order of the calls'
/// ends (a call's spend is booked before its hold is released).
#[derive(Debug)]
pub enum SharedWrite {
    /// What a call of a run used.
    Spend(RunAttribution, Amount),
    /// A call's reservation ended.
    Release(u64),
    /// Answers once every write sent before it is done.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// How long a reservation waits for this daemon's earlier spends and
/// releases to reach the store.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

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
            shared_seeded: Mutex::new(HashSet::new()),
            next_hold: AtomicU64::new(1),
            writes: OnceLock::new(),
            limits_version: AtomicI64::new(-1),
            writer_retrying: AtomicBool::new(false),
        }
    }

    /// Starts the writer of the store's shared budgets (used only when the
    /// daemon is one of a cluster; call inside a tokio runtime).
    pub fn start_shared_writes(self: &Arc<Self>, daemon: Daemon) {
        let (tx, rx) = mpsc::unbounded_channel();
        if self.writes.set(tx).is_ok() {
            tokio::spawn(shared_writes(daemon, self.clone(), rx));
        }
    }

    fn send(&self, write: SharedWrite) {
        match self.writes.get() {
            Some(tx) if tx.send(write).is_ok() => {}
            _ => tracing::warn!("budgets: the store's writer is gone; a call's spend or release is not booked in the shared budgets"),
        }
    }

    /// Adds the stored ledger of every open project not yet in the store's
    /// shared spend (once for the whole cluster: the first daemon to ask
    /// adds it).
    async fn ensure_shared_seeded(&self, daemon: &Daemon, cluster: &Cluster) -> Result<(), String> {
        let known = |id: &str| self.shared_seeded.locked().contains(id);
        let open = daemon.projects().snapshot();
        if open.iter().all(|s| s.bb.is_none() || known(s.id.as_str())) {
            return Ok(());
        }
        let _guard = self.seeding.lock().await;
        for slot in daemon.projects().snapshot() {
            let id = slot.id.to_string();
            let Some(bb) = slot.bb.filter(|_| !known(&id)) else {
                continue;
            };
            if !cluster
                .budget_seeded(&id)
                .await
                .map_err(|e| e.to_string())?
            {
                let ledger = self.book.like();
                seed_project(&ledger, &id, &bb).await?;
                let rows: Vec<(String, Millis, i64, f64)> = ledger
                    .rows()
                    .into_iter()
                    .map(|(scope, a)| {
                        let (name, start) = scope.key();
                        (
                            name,
                            start,
                            i64::try_from(a.tokens).unwrap_or(i64::MAX),
                            a.usd,
                        )
                    })
                    .collect();
                let added = cluster
                    .seed_budget(&id, &rows)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::debug!(project = %id, added, "budgets: the project's ledger is in the shared spend");
            }
            self.shared_seeded.locked().insert(id);
        }
        Ok(())
    }

    /// Reserves `worst` in the store's shared budgets.
    async fn reserve_shared(
        &self,
        daemon: &Daemon,
        cluster: &Cluster,
        a: &RunAttribution,
        worst: Amount,
    ) -> Result<Option<u64>, Refusal> {
        let scopes = self.book.scopes(payer(a), self.book.now());
        if scopes.iter().all(|(_, l)| l.is_none()) {
            return Ok(None);
        }
        if let Err(e) = self.ensure_shared_seeded(daemon, cluster).await {
            tracing::warn!(error = %e, "budgets: cannot add a project's stored spend to the shared budgets; counting from now");
        }
        // This daemon's calls that ended before this one was asked are
        // booked and released first: a run's next call must not find its
        // last call's hold still there (nor miss its spend).
        if !self.writer_retrying.load(Ordering::Acquire) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.send(SharedWrite::Flush(tx));
            if tokio::time::timeout(FLUSH_WAIT, rx).await.is_err() {
                tracing::warn!(
                    "budgets: earlier calls' spends are still on their way to the store"
                );
            }
        }
        if self.limits_version.load(Ordering::Acquire) < 0 {
            if let Err(e) = self.adopt_shared_limits(cluster).await {
                tracing::warn!(error = %e, "budgets: cannot read the cluster's run-time budgets");
            }
        }
        let mut scopes = scopes;
        // A change of the run-time budgets between the limits read here
        // and the reservation: read them again and ask again.
        for _ in 0..3 {
            let version = self.limits_version.load(Ordering::Acquire);
            match self
                .try_reserve_shared(cluster, &scopes, worst, version)
                .await
            {
                Ok(Some(answer)) => return answer,
                Ok(None) => {
                    if let Err(e) = self.adopt_shared_limits(cluster).await {
                        tracing::warn!(error = %e, "budgets: cannot read the cluster's run-time budgets");
                        break;
                    }
                    scopes = self.book.scopes(payer(a), self.book.now());
                    if scopes.iter().all(|(_, l)| l.is_none()) {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "budgets: the store's shared budgets are unreachable; this daemon's own count limits the call");
                    break;
                }
            }
        }
        self.book.reserve(payer(a), worst)
    }

    /// One reservation in the store with the limits of `version`: `None`
    /// when the cluster's run-time budgets are at another version.
    async fn try_reserve_shared(
        &self,
        cluster: &Cluster,
        scopes: &[(Scope, Option<BudgetLimit>)],
        worst: Amount,
        version: i64,
    ) -> BbResult<Option<Result<Option<u64>, Refusal>>> {
        let keys: Vec<(String, Millis)> = scopes.iter().map(|(s, _)| s.key()).collect();
        let windows: Vec<BudgetWindow<'_>> = keys
            .iter()
            .zip(scopes)
            .map(|((name, start), (_, limit))| BudgetWindow {
                scope: name,
                start: *start,
                max_tokens: limit
                    .and_then(|l| l.tokens)
                    .map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                max_usd: limit.and_then(|l| l.usd),
            })
            .collect();
        let id = SHARED_HOLD | self.next_hold.fetch_add(1, Ordering::Relaxed);
        let tokens = i64::try_from(worst.tokens).unwrap_or(i64::MAX);
        let answer = cluster
            .reserve_budget(id as i64, &windows, tokens, worst.usd, ALIVE, version)
            .await?;
        Ok(match answer {
            BudgetAnswer::Held => Some(Ok(Some(id))),
            BudgetAnswer::Stale { .. } => None,
            BudgetAnswer::Over {
                index,
                unit,
                used,
                limit,
            } => Some(Err(Refusal {
                scope: scopes[index].0.clone(),
                unit,
                used,
                limit,
                needed: if unit == "USD" {
                    worst.usd
                } else {
                    worst.tokens as f64
                },
            })),
        })
    }

    /// Takes the cluster's run-time budgets if they changed since last
    /// read (a beat, a stale reservation, a list). A daemon that finds none
    /// in the store publishes its own (`<home>/budgets.json`); once there,
    /// the store's win over every host's file.
    pub async fn adopt_shared_limits(&self, cluster: &Cluster) -> Result<(), String> {
        let mut overrides = self.overrides.lock().await;
        let stored = cluster.budget_limits().await.map_err(|e| e.to_string())?;
        let (version, text) = match stored {
            Some(v) => v,
            None => {
                let own = overrides_json(&overrides).map_err(|e| e.to_string())?;
                cluster
                    .change_budget_limits(|current| current.map_or(own, str::to_string))
                    .await
                    .map_err(|e| e.to_string())?;
                cluster
                    .budget_limits()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{SHARED_LIMITS}: empty after it was written"))?
            }
        };
        if version == self.limits_version.load(Ordering::Acquire) {
            return Ok(());
        }
        let list = parse_overrides(&text, SHARED_LIMITS)?;
        self.book.set_limits(self.base.with_overrides(&list));
        if *overrides != list {
            tracing::info!(
                version,
                "budgets: the cluster's run-time budgets are in force"
            );
        }
        *overrides = list;
        self.limits_version.store(version, Ordering::Release);
        Ok(())
    }

    /// Takes the store's shared spend and holds of the windows in force
    /// into the book (for the list and the unblocking).
    async fn refresh_shared(&self, daemon: &Daemon) {
        let Some(m) = daemon.membership() else { return };
        if let Err(e) = self.ensure_shared_seeded(daemon, &m.cluster).await {
            tracing::warn!(error = %e, "budgets: cannot add a project's stored spend to the shared budgets");
        }
        let (day, month) = self.book.windows(self.book.now());
        match m.cluster.budget_use(day.min(month), ALIVE).await {
            Ok(rows) => self.book.load(
                rows.into_iter()
                    .filter_map(|u| {
                        let amount = |tokens: i64, usd: f64| Amount {
                            tokens: u64::try_from(tokens).unwrap_or(0),
                            usd,
                        };
                        Some((
                            Scope::from_key(&u.scope, u.start)?,
                            amount(u.spent_tokens, u.spent_usd),
                            amount(u.held_tokens, u.held_usd),
                        ))
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "budgets: cannot read the shared budgets; showing this daemon's own count")
            }
        }
    }

    /// Ends a call's reservation, wherever it is held.
    pub fn release(&self, id: u64) {
        if id & SHARED_HOLD != 0 {
            self.send(SharedWrite::Release(id));
        } else {
            self.book.release(id);
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
        let worst = self.worst_case(e);
        let result = match daemon.membership() {
            Some(m) => self.reserve_shared(daemon, &m.cluster, a, worst).await,
            None => {
                self.ensure_seeded(daemon, &a.project).await;
                self.book.reserve(payer(a), worst)
            }
        };
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
        if let Some(m) = daemon.membership() {
            self.change_shared(daemon, &m.cluster, key, limit).await?;
        } else {
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

    /// A change of the cluster's run-time budgets: made in the store (on
    /// the list in force there), then here; the home's `budgets.json` gets
    /// a copy.
    async fn change_shared(
        &self,
        daemon: &Daemon,
        cluster: &Cluster,
        key: &BudgetKey,
        limit: Option<BudgetLimit>,
    ) -> Result<(), String> {
        let mut overrides = self.overrides.lock().await;
        let own = overrides.clone();
        let mut next: Option<Vec<BudgetOverride>> = None;
        let version = cluster
            .change_budget_limits(|current| {
                let list = match current.map(|t| parse_overrides(t, SHARED_LIMITS)) {
                    Some(Ok(list)) => list,
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "budgets: the store's run-time budgets do not parse; this daemon's replace them");
                        own
                    }
                    None => own,
                };
                let list = change_override(&list, key, limit);
                let text = overrides_json(&list).unwrap_or_else(|_| "{\"overrides\": []}".into());
                next = Some(list);
                text
            })
            .await
            .map_err(|e| format!("cannot store the budget in {SHARED_LIMITS}: {e}"))?;
        let next = next.unwrap_or_default();
        self.book.set_limits(self.base.with_overrides(&next));
        self.limits_version.store(version, Ordering::Release);
        let path = daemon.home().budget_overrides_file();
        let copy = next.clone();
        match tokio::task::spawn_blocking(move || save_overrides(&path, &copy)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "budgets: cannot keep the home's copy of the run-time budgets")
            }
            Err(e) => {
                tracing::warn!(error = %e, "budgets: cannot keep the home's copy of the run-time budgets")
            }
        }
        *overrides = next;
        Ok(())
    }

    /// Moves every task blocked for budget whose refused call would now
    /// fit (any call, when that is unknown) back to `pending`, its round
    /// unchanged. Returns them (`<project>/<task>`).
    pub async fn unblock(&self, daemon: &Daemon) -> Vec<String> {
        let mut out = Vec::new();
        let shared = daemon.membership().is_some();
        if shared && self.book.enabled() {
            self.refresh_shared(daemon).await;
        }
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
            if self.book.enabled() && !shared {
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
        if let Some(m) = daemon.membership() {
            if let Err(e) = self.adopt_shared_limits(&m.cluster).await {
                tracing::warn!(error = %e, "budgets: cannot read the cluster's run-time budgets");
            }
        }
        if self.book.enabled() {
            if daemon.membership().is_some() {
                self.refresh_shared(daemon).await;
            } else if let Some(first) = daemon.projects().snapshot().first() {
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

    /// What a response used, into the budgets of its run (this daemon's
    /// book); the soft thresholds it crossed.
    pub fn spend(&self, a: &RunAttribution, usage: &TokenUsage) -> Vec<SoftCrossing> {
        self.book.spend(payer(a), used(usage))
    }

    /// What a response used, in a cluster: into the store's shared spend
    /// (with budgets or without, so budgets set later count it) by the
    /// writer, which reports the soft thresholds; this daemon's book keeps
    /// its own count for when the store is unreachable.
    pub fn spend_shared(&self, a: &RunAttribution, usage: &TokenUsage) {
        let used = used(usage);
        if self.book.enabled() {
            self.book.spend(payer(a), used);
        }
        self.send(SharedWrite::Spend(a.clone(), used));
    }
}

fn used(usage: &TokenUsage) -> Amount {
    Amount {
        tokens: usage.prompt_tokens.saturating_add(usage.completion_tokens),
        usd: usage.cost_usd.unwrap_or(0.0),
    }
}

/// The writer of the store's shared budgets: spends and releases in the
/// order the calls ended. A spend the store refuses is tried again for
/// [`SPEND_RETRY`] (a database restart); a release that fails is left to
/// the beat, which drops this daemon's stale holds.
async fn shared_writes(
    daemon: Daemon,
    budgets: Arc<Budgets>,
    mut rx: mpsc::UnboundedReceiver<SharedWrite>,
) {
    while let Some(write) = rx.recv().await {
        let Some(m) = daemon.membership() else {
            continue;
        };
        match write {
            SharedWrite::Flush(done) => {
                let _ = done.send(());
            }
            SharedWrite::Release(id) => {
                let released = m.cluster.release_budget(id as i64).await;
                budgets
                    .writer_retrying
                    .store(released.is_err(), Ordering::Release);
                if let Err(e) = released {
                    tracing::warn!(error = %e, "budgets: cannot release a call's reservation in the store; a later beat drops it");
                }
            }
            SharedWrite::Spend(a, used) => {
                let deadline = tokio::time::Instant::now() + SPEND_RETRY;
                loop {
                    let done = spend_shared(&daemon, &budgets, &m.cluster, &a, used).await;
                    budgets
                        .writer_retrying
                        .store(done.is_err(), Ordering::Release);
                    match done {
                        Ok(()) => break,
                        Err(e) if tokio::time::Instant::now() < deadline => {
                            tracing::warn!(error = %e, "budgets: cannot book a call's spend in the store; trying again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, project = %a.project, tokens = used.tokens, usd = used.usd, "budgets: a call's spend is not in the shared budgets (the store refused it for a minute)");
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Books one call's spend in the store's windows of its run, and reports
/// each soft threshold it crossed if this daemon is the first to mark it.
async fn spend_shared(
    daemon: &Daemon,
    budgets: &Budgets,
    cluster: &Cluster,
    a: &RunAttribution,
    used: Amount,
) -> Result<(), String> {
    budgets.ensure_shared_seeded(daemon, cluster).await?;
    let scopes = budgets.book.scopes(payer(a), budgets.book.now());
    let keys: Vec<(String, Millis)> = scopes.iter().map(|(s, _)| s.key()).collect();
    let tokens = i64::try_from(used.tokens).unwrap_or(i64::MAX);
    let after = cluster
        .spend_budget(&keys, tokens, used.usd)
        .await
        .map_err(|e| e.to_string())?;
    let soft = budgets.book.config().soft_threshold;
    for ((scope, limit), (tokens, usd)) in scopes.into_iter().zip(after) {
        let spent = Amount {
            tokens: u64::try_from(tokens).unwrap_or(0),
            usd,
        };
        let (name, start) = scope.key();
        let Some(c) = limit.and_then(|l| crossing(scope, l, spent, soft)) else {
            continue;
        };
        match cluster.warn_budget(&name, start).await {
            Ok(true) => crate::daemon::gateway_hooks::soft_threshold(daemon, a, c),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "budgets: cannot mark a soft threshold in the store")
            }
        }
    }
    Ok(())
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
