//! `bb decide` and `bb decision list|show|approve|reject|wait`.

use std::time::Duration;

use clap::Subcommand;

use super::Cx;
use crate::blackboard::ids::{format_decision_id, parse_decision_id};
use crate::blackboard::{DecisionStatus, NewDecision};
use crate::service::ServiceError;
use crate::wire::ToWire;

#[derive(Debug, Subcommand)]
pub(super) enum DecisionVerbs {
    /// Record a decision, or propose one for a person to approve (--propose).
    Decide {
        /// What is to be decided.
        #[arg(long)]
        question: String,
        /// The answer (empty for a proposal a person answers).
        #[arg(long, default_value = "")]
        decision: String,
        /// Why this answer.
        #[arg(long, default_value = "")]
        rationale: String,
        /// The task it is about (T-n); a proposal holds the task's run.
        #[arg(long)]
        task: Option<String>,
        /// Propose instead of record: status `proposed` until approved/rejected.
        #[arg(long)]
        propose: bool,
        /// Seconds until an unanswered proposal expires as rejected.
        #[arg(long)]
        expires: Option<u64>,
    },
    /// List, show, approve, reject or wait for decisions.
    #[command(subcommand)]
    Decision(DecisionVerb),
}

/// A decision id on the command line: `D7`, or any older form (`7`,
/// `D-7`, `#7`).
fn decision_id(s: &str) -> Result<i64, String> {
    parse_decision_id(s)
        .ok_or_else(|| format!("{s:?} is not a decision id (D7; 7, D-7 and #7 are accepted too)"))
}

#[derive(Debug, Subcommand)]
pub(super) enum DecisionVerb {
    /// List decisions, newest first: `D7  proposed  author: question`.
    List {
        /// Only decisions in this state.
        #[arg(long, value_parser = vocab!(DecisionStatus))]
        status: Option<DecisionStatus>,
        /// Most decisions printed.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one decision.
    Show {
        /// The decision: D7 (also 7, D-7, #7).
        #[arg(value_parser = decision_id)]
        id: i64,
    },
    /// Approve a proposed decision (operators only).
    Approve {
        /// The decision: D7 (also 7, D-7, #7).
        #[arg(value_parser = decision_id)]
        id: i64,
        /// Why, kept with the decision.
        #[arg(long, default_value = "")]
        rationale: String,
    },
    /// Reject a proposed decision (operators only).
    Reject {
        /// The decision: D7 (also 7, D-7, #7).
        #[arg(value_parser = decision_id)]
        id: i64,
        /// Why, kept with the decision.
        #[arg(long, default_value = "")]
        rationale: String,
    },
    /// Wait until a decision is approved (exit 0) or rejected (exit 3).
    Wait {
        /// The decision: D7 (also 7, D-7, #7).
        #[arg(value_parser = decision_id)]
        id: i64,
        /// Give up after this many seconds (exit 1).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

pub(super) async fn run(cx: &mut Cx, verb: DecisionVerbs) -> anyhow::Result<()> {
    let verb = match verb {
        DecisionVerbs::Decide {
            question,
            decision,
            rationale,
            task,
            propose,
            expires,
        } => {
            let actor = cx.actor().await?;
            let new = NewDecision {
                task_id: task,
                question,
                decision,
                rationale,
                settled: !propose,
                expires_at: expires.map(|s| cx.service.expiry_in(s)).transpose()?,
            };
            let d = cx.service.decide(new, &actor).await?;
            return cx.out.emit(&d.to_wire(), || {
                format!("decision {} {}", format_decision_id(d.id), d.status)
            });
        }
        DecisionVerbs::Decision(v) => v,
    };
    let (svc, out) = (&cx.service, cx.out.clone());
    match verb {
        DecisionVerb::Approve { id, rationale } => settle(cx, id, true, &rationale).await,
        DecisionVerb::Reject { id, rationale } => settle(cx, id, false, &rationale).await,
        DecisionVerb::List { status, limit } => {
            let ds = svc.decisions(status, limit).await?;
            out.emit(&ds.to_wire(), || {
                ds.iter()
                    .map(|d| {
                        format!(
                            "{:<6} {:<9} {}: {}\n",
                            format_decision_id(d.id),
                            d.status,
                            d.author,
                            d.question
                        )
                    })
                    .collect::<String>()
            })
        }
        DecisionVerb::Show { id } => {
            let d = svc.decision(id).await?;
            out.emit(&d.to_wire(), || {
                format!(
                    "{} [{}] {}\n  asked by {}; decided by {}\n  decision: {}\n  rationale: {}\n",
                    format_decision_id(d.id),
                    d.status,
                    d.question,
                    d.author,
                    d.decided_by.as_deref().unwrap_or("-"),
                    d.decision,
                    d.rationale
                )
            })
        }
        DecisionVerb::Wait { id, timeout } => {
            let d = svc.wait_decision(id, Duration::from_secs(timeout)).await?;
            let by = d.decided_by.as_deref().unwrap_or("?");
            out.emit(&d.to_wire(), || {
                format!("decision {} {} by {by}", format_decision_id(id), d.status)
            })?;
            if d.status == DecisionStatus::Rejected {
                return Err(ServiceError::Conflict(format!(
                    "decision {} was rejected",
                    format_decision_id(id)
                ))
                .into());
            }
            Ok(())
        }
    }
}

/// Approves or rejects a proposal (operators only).
async fn settle(cx: &mut Cx, id: i64, approve: bool, rationale: &str) -> anyhow::Result<()> {
    let actor = cx.actor().await?;
    let d = cx
        .service
        .settle_decision(id, approve, &actor, rationale)
        .await?;
    cx.out.emit(&d.to_wire(), || {
        format!("decision {} {}", format_decision_id(d.id), d.status)
    })
}
