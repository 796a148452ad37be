//! `moziplus schedule …` — recurring tasks: add, list, show, pause, resume,
//! remove, run-now. Each verb opens the project's service; a running
//! daemon is woken by the write and picks the change up at once.

use clap::{Args, Subcommand};

use super::output::Printer;
use crate::blackboard::{rfc3339, OpenMode};
use crate::home::Home;
use crate::registry::ProjectId;
use crate::service::schedules::{def_from_wire, ScheduleView};
use crate::service::{ProjectService, RunIdentity};
use crate::wire;

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The project (default: $MOZI_PROJECT).
    #[arg(long, env = "MOZI_PROJECT", global = true)]
    project: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: ScheduleVerb,
}

#[derive(Debug, Subcommand)]
enum ScheduleVerb {
    /// Add a schedule: a cron expression (--cron) or an interval (--every) and the task it creates.
    Add(Box<AddArgs>),
    /// List schedules with their next firing and last instance.
    List,
    /// One schedule with its history of firings.
    Show {
        /// The schedule's id.
        id: String,
        /// How many recorded slots to show.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Pause a schedule: its slots are recorded as skipped (paused).
    Pause {
        /// The schedule's id.
        id: String,
    },
    /// Resume a paused schedule (slots that passed while paused do not fire).
    Resume {
        /// The schedule's id.
        id: String,
    },
    /// Remove a schedule and its history (its tasks stay).
    Remove {
        /// The schedule's id.
        id: String,
    },
    /// Fire a schedule now, whatever its overlap policy.
    RunNow {
        /// The schedule's id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct AddArgs {
    /// 1-64 lowercase letters, digits, - or _.
    #[arg(long)]
    id: String,
    /// 5 fields (minute hour day month weekday), or 6 with seconds first.
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    cron: Option<String>,
    /// An interval: 30s, 10m, 1h, 1d.
    #[arg(long)]
    every: Option<String>,
    /// IANA time zone the cron expression is read in (default UTC).
    #[arg(long)]
    timezone: Option<String>,
    /// The task title; may use {{ date }}, {{ time }}, {{ datetime }}, {{ schedule }}.
    #[arg(long)]
    title: String,
    /// The task description of each task.
    #[arg(long, default_value = "")]
    description: String,
    /// The kind of each task (default code).
    #[arg(long)]
    kind: Option<String>,
    /// Only this agent may claim each task.
    #[arg(long)]
    assignee: Option<String>,
    /// urgent, high, normal or low.
    #[arg(long)]
    priority: Option<String>,
    /// Tags of each task (repeat or comma-separate).
    #[arg(long = "tag", value_delimiter = ',')]
    tags: Vec<String>,
    /// The review protocol of each task (default: by its kind, as `bb
    /// create`; none for no review).
    #[arg(long)]
    review_protocol: Option<String>,
    /// Each task depends on the open tasks with this tag (repeat or comma-separate).
    #[arg(long = "depends-on-tag", value_delimiter = ',')]
    depends_on_tags: Vec<String>,
    /// While the last instance is open: skip (default), queue or allow.
    #[arg(long)]
    overlap: Option<String>,
    /// Slots missed while no daemon ran: skip (default) or once.
    #[arg(long)]
    missed: Option<String>,
    /// Fire each slot up to this much later (e.g. 5m).
    #[arg(long)]
    jitter: Option<String>,
    /// Create it paused.
    #[arg(long)]
    paused: bool,
    /// Create it even if its tasks could never start as the team stands.
    #[arg(long)]
    force: bool,
}

fn parse<T: std::str::FromStr<Err = String>>(
    flag: &str,
    v: Option<String>,
) -> anyhow::Result<Option<T>> {
    v.map(|s| s.parse::<T>().map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
        .transpose()
}

impl AddArgs {
    fn into_wire(self) -> anyhow::Result<wire::NewSchedule> {
        Ok(wire::NewSchedule {
            id: self.id,
            cron: self.cron,
            every: self.every,
            timezone: self.timezone,
            title: self.title,
            description: self.description,
            kind: self.kind,
            assignee: self.assignee,
            priority: parse("priority", self.priority)?,
            tags: self.tags.into_iter().filter(|t| !t.is_empty()).collect(),
            review_protocol: self.review_protocol,
            depends_on_tags: self
                .depends_on_tags
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect(),
            overlap: parse("overlap", self.overlap)?,
            missed: parse("missed", self.missed)?,
            jitter: self.jitter,
            enabled: Some(!self.paused),
            force: self.force,
        })
    }
}

fn wire_view(v: &ScheduleView) -> wire::Schedule {
    wire::Schedule::new(&v.schedule, v.next_at, v.last_instance.as_ref())
}

fn when(ms: Option<i64>) -> String {
    ms.map(rfc3339).unwrap_or_else(|| "-".into())
}

fn line(s: &wire::Schedule) -> String {
    let rule = match (&s.cron, s.every_ms) {
        (Some(c), _) => format!("cron {c:?} {}", s.timezone),
        (None, Some(ms)) => format!("every {}s", ms as f64 / 1000.0),
        _ => "-".into(),
    };
    let last = match (&s.last_task_id, s.last_task_status) {
        (Some(t), Some(st)) => format!("{t} {st}"),
        (Some(t), None) => t.clone(),
        _ => "-".into(),
    };
    format!(
        "{:<20} {:<7} next {:<24} last {:<18} {} — {}\n",
        s.id,
        if s.enabled { "active" } else { "paused" },
        when(s.next_at),
        last,
        rule,
        s.title
    )
}

pub async fn run(home: &Home, args: ScheduleArgs) -> anyhow::Result<()> {
    let project = args
        .project
        .ok_or_else(|| anyhow::anyhow!("which project? pass --project ID (or set MOZI_PROJECT)"))?;
    let project = ProjectId::parse(&project)?;
    let service = ProjectService::open(home, &project, OpenMode::CLI).await?;
    let result = verb(&service, args.verb, Printer::new(args.json)).await;
    service.close().await;
    result
}

async fn verb(service: &ProjectService, verb: ScheduleVerb, out: Printer) -> anyhow::Result<()> {
    let actor = service.authenticate(&RunIdentity::from_env(), None).await?;
    match verb {
        ScheduleVerb::Add(add) => {
            let (def, force) = def_from_wire((*add).into_wire()?).map_err(anyhow::Error::msg)?;
            service.put_schedule(&def, &actor, false, force).await?;
            let view = wire_view(&service.schedule_view(&def.id).await?);
            out.emit(&view, || {
                format!("added schedule {}\n{}", view.id, line(&view))
            })
        }
        ScheduleVerb::List => {
            let views: Vec<wire::Schedule> = service
                .schedule_views()
                .await?
                .iter()
                .map(wire_view)
                .collect();
            out.emit(&views, || {
                if views.is_empty() {
                    return "(no schedules; add one with `moziplus schedule add`)".into();
                }
                views.iter().map(line).collect()
            })
        }
        ScheduleVerb::Show { id, limit } => {
            let view = wire_view(&service.schedule_view(&id).await?);
            let firings: Vec<wire::ScheduleFiring> = service
                .schedule_firings(&id, limit)
                .await?
                .iter()
                .map(wire::ScheduleFiring::from)
                .collect();
            let detail = wire::ScheduleDetail {
                schedule: view,
                firings,
            };
            out.emit(&detail, || {
                let mut s = line(&detail.schedule);
                for f in &detail.firings {
                    s.push_str(&format!(
                        "  {} {:<8} {:<9} {}{}\n",
                        rfc3339(f.scheduled_at),
                        f.reason,
                        f.task_id.as_deref().unwrap_or("-"),
                        f.task_status.map(|t| t.as_str()).unwrap_or(""),
                        if f.slots > 1 {
                            format!(" ({} slots)", f.slots)
                        } else {
                            String::new()
                        }
                    ));
                }
                if detail.firings.is_empty() {
                    s.push_str("  (no firings yet)\n");
                }
                s
            })
        }
        ScheduleVerb::Pause { id } => toggle(service, &id, false, &actor, out).await,
        ScheduleVerb::Resume { id } => toggle(service, &id, true, &actor, out).await,
        ScheduleVerb::Remove { id } => {
            service.remove_schedule(&id, &actor).await?;
            out.emit(&serde_json::json!({ "removed": id }), || {
                format!("removed schedule {id}")
            })
        }
        ScheduleVerb::RunNow { id } => {
            let task = service.run_schedule_now(&id, &actor).await?;
            let task = wire::Task::from(task);
            out.emit(&task, || {
                format!("schedule {id} fired: {} {}", task.id, task.title)
            })
        }
    }
}

async fn toggle(
    service: &ProjectService,
    id: &str,
    enabled: bool,
    actor: &crate::blackboard::Actor,
    out: Printer,
) -> anyhow::Result<()> {
    service.set_schedule_enabled(id, enabled, actor).await?;
    let view = wire_view(&service.schedule_view(id).await?);
    out.emit(&view, || {
        format!(
            "{} schedule {id}\n{}",
            if enabled { "resumed" } else { "paused" },
            line(&view)
        )
    })
}
