//! `bb read`, `bb list`, `bb events`: reads, which need no identity.

use std::collections::BTreeMap;

use clap::Subcommand;

use super::Cx;
use crate::blackboard::{
    rfc3339, AlertCounts, BoardSummary, EventQuery, StoredEvent, TaskDetail, TaskFilter, TaskLine,
    TaskStatus, ALERT_LEVELS,
};
use crate::cli::output::{line_table, task_table};
use crate::wire::ToWire;
use crate::wire::Wait;

#[derive(Debug, Subcommand)]
pub(super) enum ReadVerb {
    /// Board summary, or one task with comments, outputs, reviews and sessions.
    Read {
        /// A task id; without it, the board summary.
        task: Option<String>,
        /// How many ready/active tasks (or comments) to show.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// List tasks (most urgent first).
    List {
        /// Only these statuses, comma-separated.
        #[arg(long, value_delimiter = ',', value_parser = vocab!(TaskStatus))]
        status: Vec<TaskStatus>,
        /// Designated or current agent.
        #[arg(long)]
        assignee: Option<String>,
        /// Only tasks with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only tasks of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Most tasks printed.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Tasks skipped first (the next page: the last offset + limit).
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// The event log (oldest first after an id), or with --unacked the
    /// alerts nobody acknowledged (newest first); `bb events ack ID`
    /// acknowledges one. Says when more events exist than it printed.
    #[command(args_conflicts_with_subcommands = true)]
    Events {
        #[command(subcommand)]
        action: Option<EventsAction>,
        /// Events with an id greater than this (the log, oldest first).
        #[arg(long, default_value_t = 0, conflicts_with_all = ["unacked", "before"])]
        after: i64,
        /// Only the alerts (levels urgent and attention) nobody has
        /// acknowledged, newest first.
        #[arg(long)]
        unacked: bool,
        /// With --unacked: alerts with an id below this (the next page).
        #[arg(long, requires = "unacked")]
        before: Option<i64>,
        /// Most events printed.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum EventsAction {
    /// Acknowledge an alert (an urgent or attention event) by its id: who
    /// and when are stored; the unacknowledged counts drop by one.
    Ack {
        /// The event id, as `bb events` prints it.
        id: i64,
    },
}

pub(super) async fn run(cx: &mut Cx, verb: ReadVerb) -> anyhow::Result<()> {
    let (svc, out) = (&cx.service, cx.out.clone());
    match verb {
        ReadVerb::Read { task: None, limit } => {
            let s = svc.summary(limit).await?;
            let daemon = crate::daemon::waits::published(svc.home(), svc.project());
            let waiting = svc.ready_waits(&s.ready, &daemon).await?;
            let mut wire = s.to_wire();
            wire.waiting = waiting;
            out.emit(&wire, || summary_text(&s, &wire.waiting))
        }
        ReadVerb::Read {
            task: Some(id),
            limit,
        } => {
            let d = svc.task_detail(&id, limit).await?;
            let daemon = crate::daemon::waits::published(svc.home(), svc.project());
            let waiting = svc.task_waits(&d.task, &daemon).await?;
            let mut wire = d.to_wire();
            wire.waiting_for = waiting.clone();
            out.emit(&wire, || detail_text(&d, &waiting))
        }
        ReadVerb::List {
            status,
            assignee,
            tag,
            kind,
            limit,
            offset,
        } => {
            let filter = TaskFilter {
                statuses: status,
                assignee,
                tag,
                kind,
                limit,
                offset,
            };
            let tasks = svc.list_tasks(&filter).await?;
            let daemon = crate::daemon::waits::published(svc.home(), svc.project());
            let listed = svc.listed(tasks, &daemon).await?;
            out.emit(&listed, || task_table(&listed))
        }
        ReadVerb::Events {
            action: Some(EventsAction::Ack { id }),
            ..
        } => {
            let actor = cx.actor().await?;
            let e = cx.service.ack_event(id, &actor).await?;
            let wire = crate::wire::StoredEvent::new(cx.service.project().as_str(), &e);
            out.emit(&wire, || {
                format!(
                    "event {} ({} {}) acknowledged by {} at {}\n",
                    e.event.id,
                    e.event.level,
                    e.event.kind,
                    e.acked_by.as_deref().unwrap_or("-"),
                    e.acked_at.map(rfc3339).unwrap_or_default()
                )
            })
        }
        ReadVerb::Events {
            action: None,
            after,
            unacked,
            before,
            limit,
        } => {
            let project = svc.project().as_str();
            // One more than asked: whether the listing stops short.
            let (events, more_hint) = if unacked {
                let q = EventQuery {
                    levels: Vec::new(),
                    unacked_only: true,
                    before,
                    limit: limit + 1,
                };
                let mut ev = svc.event_log(&q).await?;
                let more = ev.len() as i64 > limit;
                ev.truncate(limit as usize);
                let hint = more.then(|| {
                    let last = ev.last().map(|e| e.event.id).unwrap_or(0);
                    format!(
                        "more unacknowledged alerts than the {limit} shown; the next page: bb events --unacked --before {last}"
                    )
                });
                (ev, hint)
            } else {
                let mut ev = svc.stored_events_after(after, limit + 1).await?;
                let more = ev.len() as i64 > limit;
                ev.truncate(limit as usize);
                let hint = more.then(|| {
                    let last = ev.last().map(|e| e.event.id).unwrap_or(after);
                    format!("stopped at {limit} events; more follow: bb events --after {last}")
                });
                (ev, hint)
            };
            let counts = svc.alert_counts().await?;
            let wire: Vec<crate::wire::StoredEvent> = events
                .iter()
                .map(|e| crate::wire::StoredEvent::new(project, e))
                .collect();
            out.emit(&wire, || events_text(&events, counts))?;
            if let Some(hint) = more_hint {
                out.note(&hint);
            }
            Ok(())
        }
    }
}

fn events_text(events: &[StoredEvent], counts: AlertCounts) -> String {
    let mut s: String = events
        .iter()
        .map(|se| {
            let e = &se.event;
            let ack = match (&se.acked_by, se.acked_at) {
                (Some(by), Some(at)) => format!(" [acknowledged by {by} at {}]", rfc3339(at)),
                _ if ALERT_LEVELS.contains(&e.level) => " [unacknowledged]".to_string(),
                _ => String::new(),
            };
            format!(
                "{:<6} {} {:<9} {:<22} {:<8} {} {}{}\n",
                e.id,
                rfc3339(e.created_at),
                e.level,
                e.kind,
                e.task_id.as_deref().unwrap_or("-"),
                e.actor,
                e.payload,
                ack
            )
        })
        .collect();
    s.push_str(&format!(
        "unacknowledged alerts: urgent {}, attention {}\n",
        counts.urgent, counts.attention
    ));
    s
}

/// The summary: the ready tasks nothing holds, then those that still wait
/// (each with why), then the active ones.
fn summary_text(s: &BoardSummary, waiting: &BTreeMap<String, Vec<Wait>>) -> String {
    let counts = s
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (held, free): (Vec<TaskLine>, Vec<TaskLine>) = s
        .ready
        .iter()
        .cloned()
        .partition(|t| waiting.contains_key(&t.id));
    let mut held_text = String::new();
    for t in &held {
        held_text.push_str(&line_table(std::slice::from_ref(t)));
        let why: Vec<&str> = waiting[&t.id].iter().map(|w| w.text.as_str()).collect();
        held_text.push_str(&format!("      waiting for: {}\n", why.join("; ")));
    }
    if !held.is_empty() {
        held_text = format!("waiting (dependencies done, but held):\n{held_text}");
    }
    format!(
        "project {} — {} tasks ({})\nready:\n{}{}active:\n{}decisions awaiting approval: {}  running sessions: {}\n",
        s.project,
        s.total,
        if counts.is_empty() { "empty".into() } else { counts },
        line_table(&free),
        held_text,
        line_table(&s.active),
        s.decisions_proposed,
        s.running_sessions
    )
}

fn detail_text(d: &TaskDetail, waiting: &[Wait]) -> String {
    let t = &d.task;
    let mut s = format!(
        "{} [{}] {}\n  kind {}  priority {}  round {}/{}  assignee {}  claimed by {}\n",
        t.id,
        t.status,
        t.title,
        t.kind,
        t.priority,
        t.round,
        t.max_rounds,
        t.assignee.as_deref().unwrap_or("-"),
        t.claimed_by.as_deref().unwrap_or("-")
    );
    if !waiting.is_empty() {
        let why: Vec<&str> = waiting.iter().map(|w| w.text.as_str()).collect();
        s.push_str(&format!("  waiting for: {}\n", why.join("; ")));
    }
    if !t.description.is_empty() {
        s.push_str(&format!("\n{}\n", t.description));
    }
    if !d.depends_on.is_empty() {
        s.push_str("\ndepends on:\n");
        for r in &d.depends_on {
            s.push_str(&format!("  {} [{}] {}\n", r.id, r.status, r.title));
        }
    }
    for o in &d.outputs {
        s.push_str(&format!(
            "\noutput (round {}, {}): {}{}\n",
            o.round,
            o.agent,
            o.summary,
            o.artifact_path
                .as_deref()
                .map(|p| format!(" [outputs/{p}]"))
                .unwrap_or_default()
        ));
    }
    for r in &d.reviews {
        s.push_str(&format!(
            "\nreview (round {}, {}): {} @ {:.2} {}\n",
            r.round, r.reviewer, r.verdict, r.confidence, r.body
        ));
    }
    if !d.sessions.is_empty() {
        // Runs: what each cost and how it ended; `moziplus logs` shows one.
        s.push_str("\nruns:\n");
        for r in &d.sessions {
            s.push_str(&format!(
                "  {}  {}  round {}  {}  {}  {} tokens{}  {}\n",
                r.id,
                r.agent,
                r.round,
                crate::blackboard::rfc3339(r.started_at),
                r.outcome
                    .map(|o| o.as_str().to_string())
                    .unwrap_or_else(|| "running".to_string()),
                r.prompt_tokens + r.completion_tokens,
                match (r.gateway_cost, r.cost) {
                    (g, c) if c > 0.0 && (g - c).abs() > 1e-9 => {
                        format!("  ${g:.4} (the CLI says ${c:.4})")
                    }
                    (g, _) if g > 0.0 => format!("  ${g:.4}"),
                    _ => String::new(),
                },
                r.log_path.as_deref().unwrap_or("-")
            ));
        }
    }
    for c in &d.comments {
        s.push_str(&format!(
            "\n[{}] {}: {}\n",
            c.comment_type, c.author, c.body
        ));
    }
    s
}
