//! Schedules on the wire: what `POST …/schedules`, `moziplus schedule add`
//! and `project.yaml` `schedules:` accept ([`NewSchedule`]), and what the
//! API and `--json` show ([`Schedule`], [`ScheduleFiring`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ts;
use crate::blackboard::{
    self as model, FiringReason, Millis, MissedPolicy, OverlapPolicy, Priority, ScheduleSource,
    TaskStatus,
};

/// A schedule to create: `cron` (5 fields, or 6 with seconds first, read in
/// `timezone`) or `every` (a duration such as `30s`, `10m`, `1h`), and the
/// template of the task each firing creates.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// 1-64 lowercase letters, digits, - or _.
    pub id: String,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub every: Option<String>,
    /// IANA name; default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// A template: `{{ date }}`, `{{ time }}`, `{{ datetime }}` (the slot in
    /// the schedule's time zone) and `{{ schedule }}` (its id).
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub review_protocol: Option<String>,
    /// Each instance depends on every open task with one of these tags.
    #[serde(default)]
    pub depends_on_tags: Vec<String>,
    /// Default `skip`.
    #[serde(default)]
    pub overlap: Option<OverlapPolicy>,
    /// Default `skip`.
    #[serde(default)]
    pub missed: Option<MissedPolicy>,
    /// A duration; each slot fires up to this much later.
    #[serde(default)]
    pub jitter: Option<String>,
    /// Default true; false creates it paused.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Create it even if its tasks could never start as the team stands.
    /// Not stored.
    #[serde(default)]
    pub force: bool,
}

/// A schedule with its next firing and its last instance.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Schedule {
    pub id: String,
    pub cron: Option<String>,
    pub every_ms: Option<i64>,
    pub timezone: String,
    pub title: String,
    pub description: String,
    pub kind: Option<String>,
    pub assignee: Option<String>,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub review_protocol: Option<String>,
    pub depends_on_tags: Vec<String>,
    pub overlap: OverlapPolicy,
    pub missed: MissedPolicy,
    pub jitter_ms: i64,
    pub enabled: bool,
    pub source: ScheduleSource,
    #[serde(serialize_with = "ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    #[serde(serialize_with = "ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Millis,
    /// When the next slot is due; null when paused.
    #[serde(serialize_with = "ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_at: Option<Millis>,
    /// The last task a firing created, and its state.
    pub last_task_id: Option<String>,
    pub last_task_status: Option<TaskStatus>,
}

impl Schedule {
    pub fn new(
        s: &model::Schedule,
        next_at: Option<Millis>,
        last_instance: Option<&model::Firing>,
    ) -> Schedule {
        let (cron, every_ms) = match &s.def.recurrence {
            model::Recurrence::Cron(c) => (Some(c.clone()), None),
            model::Recurrence::Interval(ms) => (None, Some(*ms)),
        };
        let d = &s.def;
        Schedule {
            id: d.id.clone(),
            cron,
            every_ms,
            timezone: d.timezone.clone(),
            title: d.title.clone(),
            description: d.description.clone(),
            kind: d.kind.clone(),
            assignee: d.assignee.clone(),
            priority: d.priority,
            tags: d.tags.clone(),
            review_protocol: d.review_protocol.clone(),
            depends_on_tags: d.depends_on_tags.clone(),
            overlap: d.overlap,
            missed: d.missed,
            jitter_ms: d.jitter_ms,
            enabled: d.enabled,
            source: s.source,
            created_at: s.created_at,
            updated_at: s.updated_at,
            next_at,
            last_task_id: last_instance.and_then(|f| f.task_id.clone()),
            last_task_status: last_instance.and_then(|f| f.task_status),
        }
    }
}

/// One recorded slot of a schedule: fired (with its task and the task's
/// state now) or skipped, and why.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ScheduleFiring {
    pub schedule_id: String,
    /// The slot (the firing's key with the schedule id).
    #[serde(serialize_with = "ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub scheduled_at: Millis,
    #[serde(serialize_with = "ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: Millis,
    pub reason: FiringReason,
    pub fired: bool,
    /// Slots this row stands for (a run of skipped slots is one row).
    pub slots: i64,
    pub task_id: Option<String>,
    pub task_status: Option<TaskStatus>,
}

impl From<&model::Firing> for ScheduleFiring {
    fn from(f: &model::Firing) -> Self {
        ScheduleFiring {
            schedule_id: f.schedule_id.clone(),
            scheduled_at: f.scheduled_at,
            recorded_at: f.recorded_at,
            reason: f.reason,
            fired: f.reason.is_fired(),
            slots: f.slots,
            task_id: f.task_id.clone(),
            task_status: f.task_status,
        }
    }
}

/// A schedule and its history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ScheduleDetail {
    pub schedule: Schedule,
    pub firings: Vec<ScheduleFiring>,
}
