//! The JSON and OpenAPI shape of the board's records: what the API, the
//! CLI's `--json`, the MCP tools, the event stream and webhooks emit, and
//! what `POST …/tasks` and the inbox accept.
//!
//! The store's model (`crate::blackboard`) carries no serde or utoipa: each
//! record here has the same name and fields as its `blackboard` twin (so the
//! OpenAPI schema names stay `Task`, `Comment`, …) and converts from it with
//! `From`; times are stored as milliseconds and shown as RFC 3339. The
//! vocabulary enums keep their blackboard type; their serde form and schema
//! are written in the store crate (`crates/store/src/vocabulary.rs`, its
//! `wire` feature: Rust lets serde's and utoipa's traits be implemented for
//! a type only in the type's crate). A front door converts at the door:
//! `Json(wire::Task::from(task))`.

pub mod budgets;
mod sandbox;
mod schedules;
pub mod usage;
mod waits;

pub use sandbox::{RunMode, RunSandbox};
pub use schedules::{NewSchedule, Schedule, ScheduleDetail, ScheduleFiring};
pub use waits::{DaemonWaits, ListedTask, Wait, WaitReason};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::blackboard::{
    self as model, CommentType, DecisionStatus, EventLevel, ExperienceStatus, Millis,
    ObservationLevel, Outcome, Priority, TaskStatus, Verdict,
};

mod ts {
    //! serde helpers: times are stored as millis, shown as RFC 3339.
    use crate::blackboard::{rfc3339, Millis};
    use serde::Serializer;
    pub fn ser<S: Serializer>(v: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(*v))
    }
    pub fn ser_opt<S: Serializer>(v: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&rfc3339(*v)),
            None => s.serialize_none(),
        }
    }
}

/// A wire record and its conversions from the blackboard's record of the
/// same name, which has the same fields: one field list for both.
macro_rules! record {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident: $ty:ty,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)+
        }

        impl From<model::$name> for $name {
            fn from(r: model::$name) -> Self {
                Self { $($field: r.$field,)+ }
            }
        }

        impl From<&model::$name> for $name {
            fn from(r: &model::$name) -> Self {
                r.clone().into()
            }
        }

        impl ToWire for model::$name {
            type Wire = $name;
            fn to_wire(&self) -> $name {
                self.into()
            }
        }
    };
}

/// A blackboard record (or a slice of them) in its wire form, converted
/// from a borrow: `out.emit(&tasks.to_wire(), …)`.
pub trait ToWire {
    type Wire: Serialize;
    fn to_wire(&self) -> Self::Wire;
}

impl<M: ToWire> ToWire for [M] {
    type Wire = Vec<M::Wire>;
    fn to_wire(&self) -> Self::Wire {
        self.iter().map(M::to_wire).collect()
    }
}

record! {
    /// A task as stored.
    Task {
        id: String,
        title: String,
        description: String,
        kind: String,
        status: TaskStatus,
        priority: Priority,
        assignee: Option<String>,
        claimed_by: Option<String>,
        creator: String,
        parent_id: Option<String>,
        review_protocol: Option<String>,
        round: i64,
        max_rounds: i64,
        #[serde(serialize_with = "ts::ser_opt")]
        #[schema(value_type = Option<String>, format = DateTime)]
        lease_expires_at: Option<Millis>,
        /// A pending task is not claimed before this time (the backoff
        /// before a failed run's next round).
        #[serde(serialize_with = "ts::ser_opt")]
        #[schema(value_type = Option<String>, format = DateTime)]
        not_before: Option<Millis>,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        created_at: Millis,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        updated_at: Millis,
        #[serde(serialize_with = "ts::ser_opt")]
        #[schema(value_type = Option<String>, format = DateTime)]
        claimed_at: Option<Millis>,
        #[serde(serialize_with = "ts::ser_opt")]
        #[schema(value_type = Option<String>, format = DateTime)]
        finished_at: Option<Millis>,
        tags: Vec<String>,
    }
}

record! {
    Comment {
        id: i64,
        task_id: String,
        author: String,
        comment_type: CommentType,
        body: String,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        created_at: Millis,
    }
}

record! {
    Output {
        id: i64,
        task_id: String,
        agent: String,
        round: i64,
        summary: String,
        artifact_path: Option<String>,
        inline_text: Option<String>,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        created_at: Millis,
    }
}

record! {
    Review {
        id: i64,
        task_id: String,
        reviewer: String,
        protocol: Option<String>,
        round: i64,
        verdict: Verdict,
        confidence: f64,
        body: String,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        created_at: Millis,
    }
}

record! {
    Decision {
        id: i64,
        task_id: Option<String>,
        author: String,
        question: String,
        decision: String,
        rationale: String,
        status: DecisionStatus,
        decided_by: Option<String>,
        #[serde(serialize_with = "ts::ser_opt")]
        #[schema(value_type = Option<String>, format = DateTime)]
        decided_at: Option<Millis>,
        #[serde(serialize_with = "ts::ser_opt")]
        #[schema(value_type = Option<String>, format = DateTime)]
        expires_at: Option<Millis>,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        created_at: Millis,
    }
}

record! {
    Observation {
        id: i64,
        level: ObservationLevel,
        source: String,
        task_id: Option<String>,
        body: String,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        created_at: Millis,
    }
}

record! {
    Experience {
        id: i64,
        task_id: Option<String>,
        agent: String,
        lesson: String,
        tags: Vec<String>,
        times_referenced: i64,
        #[serde(serialize_with = "ts::ser_opt")]
        #[schema(value_type = Option<String>, format = DateTime)]
        last_referenced_at: Option<Millis>,
        status: ExperienceStatus,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        created_at: Millis,
    }
}

record! {
    Session {
        id: String,
        task_id: String,
        agent: String,
        pid: Option<i64>,
        pgid: Option<i64>,
        command: String,
        round: i64,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        started_at: Millis,
        #[serde(serialize_with = "ts::ser_opt")]
        #[schema(value_type = Option<String>, format = DateTime)]
        ended_at: Option<Millis>,
        exit_code: Option<i64>,
        outcome: Option<Outcome>,
        log_path: Option<String>,
        prompt_tokens: i64,
        completion_tokens: i64,
        /// USD the CLI itself reported (0 when it reports none); never
        /// added to `gateway_cost`.
        cost: f64,
        detail: Option<serde_json::Value>,
        /// Prompt tokens the provider served from its cache.
        cached_tokens: i64,
        /// USD as `gateway.prices` prices the calls the gateway saw.
        gateway_cost: f64,
        /// What the run could touch and reach (`null` for runs recorded
        /// before it was kept).
        #[schema(value_type = Option<RunSandbox>)]
        sandbox: Option<serde_json::Value>,
    }
}

record! {
    Event {
        id: i64,
        #[serde(serialize_with = "ts::ser")]
        #[schema(value_type = String, format = DateTime)]
        created_at: Millis,
        level: EventLevel,
        kind: String,
        task_id: Option<String>,
        actor: String,
        payload: serde_json::Value,
    }
}

/// An event from the store with its project and, for an alert, who
/// acknowledged it and when (both `null` while nobody has).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredEvent {
    pub project: String,
    #[serde(flatten)]
    pub event: Event,
    #[serde(serialize_with = "ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub acked_at: Option<Millis>,
    pub acked_by: Option<String>,
}

impl StoredEvent {
    pub fn new(project: &str, e: &model::StoredEvent) -> Self {
        StoredEvent {
            project: project.to_string(),
            event: Event::from(&e.event),
            acked_at: e.acked_at,
            acked_by: e.acked_by.clone(),
        }
    }
}

/// Alerts nobody has acknowledged yet, per level, counted in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct AlertCounts {
    pub urgent: i64,
    pub attention: i64,
}

impl From<model::AlertCounts> for AlertCounts {
    fn from(c: model::AlertCounts) -> Self {
        AlertCounts {
            urgent: c.urgent,
            attention: c.attention,
        }
    }
}

impl std::ops::AddAssign for AlertCounts {
    fn add_assign(&mut self, o: AlertCounts) {
        self.urgent += o.urgent;
        self.attention += o.attention;
    }
}

record! {
    /// A dependency edge as seen from one side, with the other task's status.
    DependencyRef {
        id: String,
        title: String,
        status: TaskStatus,
    }
}

record! {
    /// One line of a task listing.
    TaskLine {
        id: String,
        title: String,
        status: TaskStatus,
        priority: Priority,
        kind: String,
        assignee: Option<String>,
        claimed_by: Option<String>,
        round: i64,
    }
}

/// A task with everything attached to it (`bb read T-0001`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    pub depends_on: Vec<DependencyRef>,
    pub dependents: Vec<DependencyRef>,
    pub comments: Vec<Comment>,
    pub outputs: Vec<Output>,
    pub reviews: Vec<Review>,
    pub sessions: Vec<Session>,
    /// Why the task is not moving (empty: it is not waiting).
    pub waiting_for: Vec<Wait>,
}

impl From<model::TaskDetail> for TaskDetail {
    fn from(d: model::TaskDetail) -> Self {
        Self {
            task: d.task.into(),
            depends_on: list(d.depends_on),
            dependents: list(d.dependents),
            comments: list(d.comments),
            outputs: list(d.outputs),
            reviews: list(d.reviews),
            sessions: list(d.sessions),
            waiting_for: Vec::new(),
        }
    }
}

impl ToWire for model::TaskDetail {
    type Wire = TaskDetail;
    fn to_wire(&self) -> TaskDetail {
        self.clone().into()
    }
}

/// The board at a glance (`bb read`).
#[derive(Debug, Clone, Serialize)]
pub struct BoardSummary {
    pub project: String,
    pub counts: std::collections::BTreeMap<String, i64>,
    pub total: i64,
    /// Ready tasks, most urgent first (at most `limit`).
    pub ready: Vec<TaskLine>,
    /// Tasks being worked on or in review.
    pub active: Vec<TaskLine>,
    pub decisions_proposed: i64,
    pub running_sessions: i64,
    pub last_event_id: i64,
    /// Why each of `ready` that still waits does (by task id; a task
    /// absent here is not waiting).
    pub waiting: std::collections::BTreeMap<String, Vec<Wait>>,
}

impl From<model::BoardSummary> for BoardSummary {
    fn from(s: model::BoardSummary) -> Self {
        Self {
            project: s.project,
            counts: s.counts,
            total: s.total,
            ready: list(s.ready),
            active: list(s.active),
            decisions_proposed: s.decisions_proposed,
            running_sessions: s.running_sessions,
            last_event_id: s.last_event_id,
            waiting: Default::default(),
        }
    }
}

impl ToWire for model::BoardSummary {
    type Wire = BoardSummary;
    fn to_wire(&self) -> BoardSummary {
        self.clone().into()
    }
}

/// Records converted one by one: `Vec<model::Task>` (or `&[model::Task]`)
/// → `Vec<wire::Task>`.
pub fn list<W: From<M>, M>(records: impl IntoIterator<Item = M>) -> Vec<W> {
    records.into_iter().map(W::from).collect()
}

/// What `bb create` (or the inbox, or the API) asks for.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
    /// A protocol of `config/review_protocols/`, or `none` for no review;
    /// absent: the protocol whose `applies_to` holds the task's kind (if the
    /// team can staff it).
    #[serde(default)]
    pub review_protocol: Option<String>,
    #[serde(default)]
    pub max_rounds: Option<i64>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Create it even if it could never start as the team stands (an
    /// unknown assignee or review protocol, a kind no agent takes): e.g.
    /// before the agent is configured. Not stored.
    #[serde(default)]
    pub force: bool,
}

impl From<NewTask> for model::NewTask {
    fn from(t: NewTask) -> Self {
        Self {
            title: t.title,
            description: t.description,
            kind: t.kind,
            priority: t.priority,
            assignee: t.assignee,
            parent_id: t.parent_id,
            review_protocol: t.review_protocol,
            max_rounds: t.max_rounds,
            depends_on: t.depends_on,
            tags: t.tags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> model::Task {
        model::Task {
            id: "T-0001".into(),
            title: "t\"x".into(),
            description: "d".into(),
            kind: "code".into(),
            status: TaskStatus::Working,
            priority: Priority::High,
            assignee: Some("a".into()),
            claimed_by: Some("b".into()),
            creator: "c".into(),
            parent_id: Some("T-0000".into()),
            review_protocol: Some("p".into()),
            round: 2,
            max_rounds: 3,
            lease_expires_at: Some(1_700_000_000_123),
            not_before: None,
            created_at: 1_700_000_000_001,
            updated_at: 1_700_000_000_002,
            claimed_at: Some(5),
            finished_at: Some(-1),
            tags: vec!["x".into(), "y".into()],
        }
    }

    /// The documents below are what the store's model serialized to when it
    /// derived `Serialize` itself: the wire keeps field order, RFC 3339 times
    /// and snake_case values byte for byte.
    #[test]
    fn records_serialize_as_the_model_did() {
        assert_eq!(
            serde_json::to_string(&task().to_wire()).unwrap(),
            r#"{"id":"T-0001","title":"t\"x","description":"d","kind":"code","status":"working","priority":"high","assignee":"a","claimed_by":"b","creator":"c","parent_id":"T-0000","review_protocol":"p","round":2,"max_rounds":3,"lease_expires_at":"2023-11-14T22:13:20.123Z","not_before":null,"created_at":"2023-11-14T22:13:20.001Z","updated_at":"2023-11-14T22:13:20.002Z","claimed_at":"1970-01-01T00:00:00.005Z","finished_at":"1969-12-31T23:59:59.999Z","tags":["x","y"]}"#
        );
        let event = model::Event {
            id: 7,
            created_at: 18,
            level: EventLevel::Attention,
            kind: "task.created".into(),
            task_id: None,
            actor: "a".into(),
            payload: serde_json::json!({"b": 1, "a": null}),
        };
        assert_eq!(
            serde_json::to_string(&Event::from(event)).unwrap(),
            r#"{"id":7,"created_at":"1970-01-01T00:00:00.018Z","level":"attention","kind":"task.created","task_id":null,"actor":"a","payload":{"a":null,"b":1}}"#
        );
    }

    /// `TaskDetail` flattens its task in front of the attached records.
    #[test]
    fn a_detail_is_its_task_then_its_records() {
        let detail = model::TaskDetail {
            task: task(),
            depends_on: vec![model::DependencyRef {
                id: "T-0002".into(),
                title: "x".into(),
                status: TaskStatus::Done,
            }],
            dependents: vec![],
            comments: vec![],
            outputs: vec![],
            reviews: vec![],
            sessions: vec![],
        };
        let json = serde_json::to_string(&detail.to_wire()).unwrap();
        assert!(
            json.starts_with(r#"{"id":"T-0001","title":"t\"x""#),
            "{json}"
        );
        assert!(
            json.ends_with(r#""tags":["x","y"],"depends_on":[{"id":"T-0002","title":"x","status":"done"}],"dependents":[],"comments":[],"outputs":[],"reviews":[],"sessions":[],"waiting_for":[]}"#),
            "{json}"
        );
    }
}
