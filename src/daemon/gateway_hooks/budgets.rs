//! The daemon's side of per-call budgets: the [`BudgetBook`] behind the
//! gateway's `reserve`/`release`, fed by the usage the gateway reports and,
//! once per project, by the project's stored ledger (the spend of the
//! windows in force and every task's total), so budgets hold across
//! restarts.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::blackboard::usage::UsageLine;
use crate::blackboard::{Blackboard, Clock};
use crate::config::BudgetsConfig;
pub use crate::daemon::budget::SoftCrossing;
use crate::daemon::budget::{Amount, BudgetBook, Payer, Refusal, Scope};
use crate::daemon::Daemon;
use crate::gateway::{CallEstimate, RunAttribution, TokenUsage};
use crate::locks::Recover;

/// The book plus which projects' history it holds.
pub struct Budgets {
    pub book: BudgetBook,
    /// Projects whose stored spend is in the book.
    seeded: Mutex<HashSet<String>>,
    /// Every project open at the first reservation was seeded (home budget).
    all_seeded: AtomicBool,
    /// Serializes seeding (the slow path).
    seeding: tokio::sync::Mutex<()>,
}

fn payer(a: &RunAttribution) -> Payer<'_> {
    Payer {
        project: &a.project,
        task: a.task.as_deref(),
        agent: &a.agent,
    }
}

impl Budgets {
    pub fn new(config: BudgetsConfig, clock: Arc<dyn Clock>) -> Budgets {
        Budgets {
            book: BudgetBook::new(config, clock),
            seeded: Mutex::new(HashSet::new()),
            all_seeded: AtomicBool::new(false),
            seeding: tokio::sync::Mutex::new(()),
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
        self.book.reserve(payer(a), self.worst_case(e))
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

/// One project's stored spend into the book: every task's total and the
/// `llm_usage` lines of the windows that may still be in force.
async fn seed_project(book: &BudgetBook, project: &str, bb: &Blackboard) -> Result<(), String> {
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
