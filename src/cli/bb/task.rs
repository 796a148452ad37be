//! Task verbs: create, claim, heartbeat, release, done, fail, cancel, block,
//! reopen, depend.

use clap::Subcommand;
use serde_json::json;

use super::{Cx, TaskArg};
use crate::blackboard::{rfc3339, NewTask, Priority, Task, TaskStatus};
use crate::wire::ToWire;

#[derive(Debug, Subcommand)]
pub(super) enum TaskVerb {
    /// Create a task; prints its id.
    Create {
        /// One line saying what is to be done.
        #[arg(long)]
        title: String,
        /// The details, as long as needed.
        #[arg(long, default_value = "")]
        description: String,
        /// plan, analysis, code, data, review, distill, … (default code)
        #[arg(long)]
        kind: Option<String>,
        /// Default normal.
        #[arg(long, value_parser = vocab!(Priority))]
        priority: Option<Priority>,
        /// Only this agent may claim it.
        #[arg(long)]
        assignee: Option<String>,
        /// Comma-separated task ids this task waits for.
        #[arg(long, value_delimiter = ',')]
        depends_on: Vec<String>,
        /// Comma-separated tags.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// The task this one is part of (T-n).
        #[arg(long)]
        parent: Option<String>,
        /// Review protocol (plan, output, analysis, final, or none); without one, the protocol whose applies_to holds the task's kind, if the team can staff it; with none, `done` finishes the task.
        #[arg(long)]
        protocol: Option<String>,
        /// Rounds of work and review it may take before it fails, 1-1000
        /// (default 3).
        #[arg(long)]
        max_rounds: Option<i64>,
        /// Create it even if it could never start as the team stands (an
        /// unknown assignee or protocol, a kind no agent takes), e.g. before
        /// the agent is configured.
        #[arg(long)]
        force: bool,
    },
    /// Atomically claim a ready task (exit 3 if someone else has it).
    Claim {
        #[command(flatten)]
        t: TaskArg,
        /// Lease in seconds (default: daemon.task_timeout).
        #[arg(long)]
        lease: Option<u64>,
    },
    /// Renew the lease of a task you hold.
    Heartbeat {
        #[command(flatten)]
        t: TaskArg,
        /// New lease in seconds (default: daemon.task_timeout).
        #[arg(long)]
        lease: Option<u64>,
    },
    /// Give a claimed task back (pending, same round).
    Release {
        #[command(flatten)]
        t: TaskArg,
        /// Why, kept in the task's history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Finish your work: to review (if the task has a protocol) or done.
    #[command(alias = "submit")]
    Done {
        #[command(flatten)]
        t: TaskArg,
    },
    /// Mark a task failed.
    Fail {
        #[command(flatten)]
        t: TaskArg,
        /// Why, kept in the task's history (and shown as what it waits for).
        #[arg(long)]
        reason: String,
    },
    /// Cancel a task (operators only).
    Cancel {
        #[command(flatten)]
        t: TaskArg,
        /// Why, kept in the task's history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Block a task (operators only).
    Block {
        #[command(flatten)]
        t: TaskArg,
        /// Why, kept in the task's history (and shown as what it waits for).
        #[arg(long)]
        reason: String,
    },
    /// Unblock, or reopen a failed/cancelled task (operators only).
    Reopen {
        #[command(flatten)]
        t: TaskArg,
        /// Why, kept in the task's history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Make a task depend on another (cycles are refused).
    Depend {
        #[command(flatten)]
        t: TaskArg,
        /// The task it must wait for.
        #[arg(long)]
        on: String,
    },
}

impl TaskVerb {
    /// A claim reads the allowed agents and the default lease; a heartbeat
    /// without `--lease` the default lease.
    pub(super) fn needs_config(&self) -> bool {
        matches!(
            self,
            TaskVerb::Claim { .. } | TaskVerb::Heartbeat { lease: None, .. }
        )
    }
}

fn lease_text(task: &Task) -> String {
    task.lease_expires_at.map(rfc3339).unwrap_or_default()
}

fn non_empty(v: Vec<String>) -> Vec<String> {
    v.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The verb table of the task verbs: one short arm per verb, each a call
/// into the project service (over 100 lines only because of the arms).
pub(super) async fn run(cx: &mut Cx, verb: TaskVerb) -> anyhow::Result<()> {
    let actor = cx.actor().await?;
    let (svc, out) = (&cx.service, cx.out.clone());
    match verb {
        TaskVerb::Create {
            title,
            description,
            kind,
            priority,
            assignee,
            depends_on,
            tags,
            parent,
            protocol,
            max_rounds,
            force,
        } => {
            let new = NewTask {
                title,
                description,
                kind,
                priority,
                assignee,
                parent_id: parent,
                review_protocol: protocol,
                max_rounds,
                depends_on: non_empty(depends_on),
                tags: non_empty(tags),
            };
            let t = svc.create_task(new, &actor, force).await?;
            out.emit(&t.to_wire(), || t.id.clone())
        }
        TaskVerb::Claim { t, lease } => {
            let id = t.id()?;
            // One config load serves both the allowed-agents check and the lease.
            let (config, settings) = cx.config()?;
            let lease = lease.unwrap_or(config.daemon.task_timeout);
            let svc = &cx.service;
            let task = svc
                .claim(id, &actor, lease, settings.agents.as_deref())
                .await?;
            out.emit(&task.to_wire(), || {
                format!(
                    "claimed {} for {} (lease until {})",
                    task.id,
                    actor.name,
                    lease_text(&task)
                )
            })
        }
        TaskVerb::Heartbeat { t, lease } => {
            let id = t.id()?;
            let lease = match lease {
                Some(s) => s,
                None => cx.config()?.0.daemon.task_timeout,
            };
            let task = cx.service.heartbeat(id, &actor, lease).await?;
            out.emit(&task.to_wire(), || {
                format!("lease of {} renewed until {}", task.id, lease_text(&task))
            })
        }
        TaskVerb::Release { t, reason } => {
            let task = svc.release(t.id()?, &actor, &reason).await?;
            out.emit(&task.to_wire(), || format!("released {}", task.id))
        }
        TaskVerb::Done { t } => {
            let task = svc.submit(t.id()?, &actor).await?;
            out.emit(&task.to_wire(), || {
                format!("{} is now {}", task.id, task.status)
            })
        }
        TaskVerb::Fail { t, reason } => {
            let task = svc.fail(t.id()?, &actor, &reason).await?;
            out.emit(&task.to_wire(), || format!("{} is now failed", task.id))
        }
        TaskVerb::Cancel { t, reason } => {
            let task = svc
                .set_status(t.id()?, TaskStatus::Cancelled, &actor, &reason)
                .await?;
            out.emit(&task.to_wire(), || format!("{} is now cancelled", task.id))
        }
        TaskVerb::Block { t, reason } => {
            let task = svc
                .set_status(t.id()?, TaskStatus::Blocked, &actor, &reason)
                .await?;
            out.emit(&task.to_wire(), || format!("{} is now blocked", task.id))
        }
        TaskVerb::Reopen { t, reason } => {
            let task = svc
                .set_status(t.id()?, TaskStatus::Pending, &actor, &reason)
                .await?;
            out.emit(&task.to_wire(), || {
                format!("{} is now pending (round {})", task.id, task.round)
            })
        }
        TaskVerb::Depend { t, on } => {
            let id = t.id()?;
            svc.add_dependency(id, &on, &actor).await?;
            out.emit(&json!({ "task": id, "depends_on": on }), || {
                format!("{id} now depends on {on}")
            })
        }
    }
}
