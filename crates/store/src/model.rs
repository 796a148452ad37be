//! The blackboard's vocabulary: statuses, priorities, verdicts, levels, and the
//! record types read back from the database. Their JSON and OpenAPI shape is
//! `moziplus::wire`'s: nothing here is serialized for the wire.

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// For sqlx's `#[sqlx(try_from = "String")]`: a stored value that is
        /// not one of the variants is an error, never a default.
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {:?}; expected one of: {}",
                        stringify!($name).to_lowercase(),
                        s,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// Where a task is in its lifecycle.
    TaskStatus {
        Pending = "pending",
        Working = "working",
        Review = "review",
        Done = "done",
        Blocked = "blocked",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

impl TaskStatus {
    /// The lifecycle's legal transitions — the single place they are defined.
    pub fn can_become(self, to: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, to),
            (Pending, Working | Blocked | Cancelled)
                | (
                    Working,
                    Review | Done | Pending | Failed | Blocked | Cancelled
                )
                | (Review, Done | Pending | Failed | Cancelled)
                | (Blocked, Pending | Cancelled)
                | (Failed, Pending)
                | (Cancelled, Pending)
        )
    }

    /// No further work happens on the task.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

string_enum!(
    /// Task and request priority; lower number is more urgent.
    Priority {
        Urgent = "urgent",
        High = "high",
        Normal = "normal",
        Low = "low",
    }
);

impl Priority {
    /// 1 (urgent) … 4 (low), as stored.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Urgent => 1,
            Priority::High => 2,
            Priority::Normal => 3,
            Priority::Low => 4,
        }
    }
}

/// A stored rank outside 1..=4 is an error, never a default.
impl TryFrom<i64> for Priority {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match n {
            1 => Ok(Priority::Urgent),
            2 => Ok(Priority::High),
            3 => Ok(Priority::Normal),
            4 => Ok(Priority::Low),
            _ => Err(format!(
                "unknown priority rank {n}; expected 1 (urgent) to 4 (low)"
            )),
        }
    }
}

string_enum!(
    /// A reviewer's verdict.
    Verdict {
        Approve = "approve",
        Revise = "revise",
        Reject = "reject",
    }
);

string_enum!(
    /// Kinds of comment.
    CommentType {
        Comment = "comment",
        Question = "question",
        Answer = "answer",
        Rebuttal = "rebuttal",
        Note = "note",
        System = "system",
    }
);

string_enum!(
    /// Decision status.
    DecisionStatus {
        Proposed = "proposed",
        Approved = "approved",
        Rejected = "rejected",
    }
);

string_enum!(
    /// Observation level.
    ObservationLevel {
        Info = "info",
        Warn = "warn",
        Alert = "alert",
    }
);

string_enum!(
    /// Experience status.
    ExperienceStatus {
        Active = "active",
        Distilled = "distilled",
        Deprecated = "deprecated",
    }
);

string_enum!(
    /// How an agent run ended.
    Outcome {
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Killed = "killed",
        Lost = "lost",
    }
);

string_enum!(
    /// Event levels: who must look, and how soon.
    EventLevel {
        Urgent = "urgent",
        Attention = "attention",
        Daily = "daily",
        Optional = "optional",
    }
);

string_enum!(
    /// What a schedule does while the last task it created is still open.
    OverlapPolicy {
        Skip = "skip",
        Queue = "queue",
        Allow = "allow",
    }
);

string_enum!(
    /// What a schedule does about slots that passed while no daemon ran.
    MissedPolicy {
        Skip = "skip",
        Once = "once",
    }
);

string_enum!(
    /// Why a slot was recorded: fired (on time, as the one catch-up after
    /// downtime, or by hand) or skipped (last instance open, missed, paused).
    FiringReason {
        OnTime = "on_time",
        CatchUp = "catch_up",
        Manual = "manual",
        Overlap = "overlap",
        Missed = "missed",
        Paused = "paused",
    }
);

impl FiringReason {
    /// The slot created a task.
    pub fn is_fired(self) -> bool {
        matches!(
            self,
            FiringReason::OnTime | FiringReason::CatchUp | FiringReason::Manual
        )
    }
}

string_enum!(
    /// Where a schedule was defined: `project.yaml` (synced at load; the
    /// file wins) or by an operator (CLI, API).
    ScheduleSource {
        Operator = "operator",
        Config = "config",
    }
);

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Formats stored milliseconds as RFC 3339 (UTC) for output.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub description: String,
    pub kind: String,
    pub status: TaskStatus,
    pub priority: Priority,
    pub assignee: Option<String>,
    pub claimed_by: Option<String>,
    pub creator: String,
    pub parent_id: Option<String>,
    pub review_protocol: Option<String>,
    pub round: i64,
    pub max_rounds: i64,
    /// The claim's lease (UTC ms): a `working` task whose lease has run out
    /// goes back (`ProjectService::give_back`, `Setback::LeaseExpired`).
    pub lease_expires_at: Option<Millis>,
    /// A `pending` task is not claimed before this (UTC ms): the backoff
    /// before a failed run's next round. Set only by a give-back or a hold.
    pub not_before: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub claimed_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub tags: Vec<String>,
}

impl Task {
    /// The task is in its last round: a setback that costs a round fails it
    /// instead (the one round-limit rule; a give-back and a rejected review
    /// both ask it).
    pub fn at_round_limit(&self) -> bool {
        self.round >= self.max_rounds
    }

    /// The claim that holds this task now, if any: who and since when.
    pub fn claim(&self) -> Option<Claim> {
        Some(Claim {
            holder: self.claimed_by.clone()?,
            claimed_at: self.claimed_at?,
        })
    }
}

/// One claim of a task: its holder and when it was made. Each claim of a
/// task gets a later `claimed_at` than the one before, so a give-back that
/// names a claim never touches a newer claim of the same agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub holder: String,
    pub claimed_at: Millis,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Comment {
    pub id: i64,
    pub task_id: String,
    pub author: String,
    #[sqlx(try_from = "String")]
    pub comment_type: CommentType,
    pub body: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Output {
    pub id: i64,
    pub task_id: String,
    pub agent: String,
    pub round: i64,
    pub summary: String,
    pub artifact_path: Option<String>,
    pub inline_text: Option<String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Review {
    pub id: i64,
    pub task_id: String,
    pub reviewer: String,
    pub protocol: Option<String>,
    pub round: i64,
    #[sqlx(try_from = "String")]
    pub verdict: Verdict,
    pub confidence: f64,
    pub body: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Decision {
    pub id: i64,
    pub task_id: Option<String>,
    pub author: String,
    pub question: String,
    pub decision: String,
    pub rationale: String,
    #[sqlx(try_from = "String")]
    pub status: DecisionStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<Millis>,
    pub expires_at: Option<Millis>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Observation {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub level: ObservationLevel,
    pub source: String,
    pub task_id: Option<String>,
    pub body: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Experience {
    pub id: i64,
    pub task_id: Option<String>,
    pub agent: String,
    pub lesson: String,
    pub tags: Vec<String>,
    pub times_referenced: i64,
    pub last_referenced_at: Option<Millis>,
    pub status: ExperienceStatus,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub task_id: String,
    pub agent: String,
    pub pid: Option<i64>,
    pub pgid: Option<i64>,
    pub command: String,
    pub round: i64,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    pub exit_code: Option<i64>,
    pub outcome: Option<Outcome>,
    pub log_path: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// USD the CLI itself reported (0 when it reports none).
    pub cost: f64,
    pub detail: Option<serde_json::Value>,
    /// Prompt tokens the provider served from its cache.
    pub cached_tokens: i64,
    /// USD as `gateway.prices` prices the calls the gateway saw.
    pub gateway_cost: f64,
    /// What the run could touch and reach (JSON, see [`NewSession`]).
    ///
    /// [`NewSession`]: super::sessions::NewSession
    pub sandbox: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub created_at: Millis,
    pub level: EventLevel,
    pub kind: String,
    pub task_id: Option<String>,
    pub actor: String,
    pub payload: serde_json::Value,
}

/// A task with everything attached to it (`bb read T-0001`).
#[derive(Debug, Clone)]
pub struct TaskDetail {
    pub task: Task,
    pub depends_on: Vec<DependencyRef>,
    pub dependents: Vec<DependencyRef>,
    pub comments: Vec<Comment>,
    pub outputs: Vec<Output>,
    pub reviews: Vec<Review>,
    pub sessions: Vec<Session>,
}

/// A dependency edge as seen from one side, with the other task's status.
#[derive(Debug, Clone, PartialEq)]
pub struct DependencyRef {
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
}

/// The board at a glance (`bb read`).
#[derive(Debug, Clone)]
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
}

/// One line of a task listing.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskLine {
    pub id: String,
    pub title: String,
    #[sqlx(try_from = "String")]
    pub status: TaskStatus,
    #[sqlx(try_from = "i64")]
    pub priority: Priority,
    pub kind: String,
    pub assignee: Option<String>,
    pub claimed_by: Option<String>,
    pub round: i64,
}
