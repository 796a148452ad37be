//! The event hub: the one bounded `tokio::sync::broadcast` through which the
//! pump ([`super::event_pump`]) fans every open project's new `event` rows
//! out to the SSE clients and webhooks.
//!
//! The database is the source, not in-process calls: agents write through
//! `moziplus bb` in other processes. The pump reads after every wake (the same
//! signals that wake the ticker: the wake socket, the inbox, API writes) and
//! at least every [`POLL`]. A receiver that falls more than [`CAPACITY`]
//! events behind is told so (`Lagged`) instead of holding memory; SSE clients
//! then get `event: resync` and reconnect with their cursor, replaying from
//! the blackboards — which is also what makes a daemon restart lose nothing.
//!
//! Events of kind `task.*` carry the task's row as it is when the pump reads
//! them (`"task"`, the same shape as the task API's), fetched with one query
//! per batch, so the dashboard applies a change in place instead of
//! refetching the project's task list. The row is read after the event's
//! transaction committed, so the last event of a task always carries a state
//! at least as new as its own change; a client keeps the row with the newest
//! `updated_at`.
//!
//! The gateway snapshot for `gateway=1` clients is built by the pump, at most
//! once per second and only while such a client is connected, and shared
//! through a `watch` channel here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, watch, Notify};

use crate::blackboard::{Blackboard, Event, EventLevel, Task};
use crate::locks::Recover;
use crate::wire;

/// Events kept for slow receivers before they are told they lagged.
pub const CAPACITY: usize = 4096;
/// Longest time between two reads of the event tables.
pub const POLL: Duration = Duration::from_millis(200);
/// Rows read per project per query.
pub(super) const BATCH: i64 = 1000;

/// One blackboard event, ready to send.
#[derive(Debug)]
pub struct StreamEvent {
    pub project: Arc<str>,
    pub id: i64,
    pub level: EventLevel,
    /// The SSE/webhook JSON: `{"project","id","created_at","level","kind",
    /// "task_id","actor","payload"}`, plus `"task"` (the task's row) on
    /// `task.*` events.
    pub json: String,
}

/// Whether events of this kind carry the task's row: the `task.*` kinds,
/// the only ones whose write changes a task row.
pub fn carries_task(kind: &str) -> bool {
    kind.starts_with("task.")
}

impl StreamEvent {
    /// The event as sent; `task` is the row of its task, for
    /// [`carries_task`] kinds.
    pub fn new(project: &str, e: &Event, task: Option<&Task>) -> StreamEvent {
        let mut v = serde_json::to_value(wire::Event::from(e)).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("project".into(), json!(project));
            if let Some(t) = task {
                m.insert(
                    "task".into(),
                    serde_json::to_value(wire::Task::from(t)).unwrap_or_default(),
                );
            }
        }
        StreamEvent {
            project: Arc::from(project),
            id: e.id,
            level: e.level,
            json: v.to_string(),
        }
    }
}

/// `events` of `project` ready to send, each `task.*` event with its task's
/// current row (one query for the batch). When the rows cannot be read the
/// events go without them (logged): a client then reads that task itself.
pub async fn stream_events(bb: &Blackboard, project: &str, events: &[Event]) -> Vec<StreamEvent> {
    let mut ids: Vec<&str> = events
        .iter()
        .filter(|e| carries_task(&e.kind))
        .filter_map(|e| e.task_id.as_deref())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let tasks: HashMap<String, Task> = match bb.tasks_by_ids(&ids).await {
        Ok(rows) => rows.into_iter().map(|t| (t.id.clone(), t)).collect(),
        Err(e) => {
            tracing::warn!(project, error = %e, "event pump cannot read the events' tasks");
            HashMap::new()
        }
    };
    events
        .iter()
        .map(|e| {
            let task = match &e.task_id {
                Some(id) if carries_task(&e.kind) => tasks.get(id),
                _ => None,
            };
            StreamEvent::new(project, e, task)
        })
        .collect()
}

/// The fan-out point, owned by the [`Daemon`](super::Daemon).
#[derive(Debug)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<StreamEvent>>,
    /// Last event id pumped, per project.
    head: Mutex<BTreeMap<String, i64>>,
    wake: Notify,
    gateway_tx: watch::Sender<Option<Arc<str>>>,
    gateway_clients: AtomicUsize,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            tx: broadcast::channel(CAPACITY).0,
            head: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            gateway_tx: watch::channel(None).0,
            gateway_clients: AtomicUsize::new(0),
        }
    }
}

/// Counts a `gateway=1` client while alive (snapshots are built only then).
pub struct GatewayInterest<'a>(&'a EventHub);

impl Drop for GatewayInterest<'_> {
    fn drop(&mut self) {
        self.0.gateway_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EventHub {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StreamEvent>> {
        self.tx.subscribe()
    }
    /// The last event id pumped per project (the live stream's start).
    pub fn head(&self) -> BTreeMap<String, i64> {
        self.head.locked().clone()
    }
    /// Asks the pump to read now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
    /// The shared gateway snapshot channel; hold the guard while subscribed.
    pub fn gateway_snapshots(&self) -> (watch::Receiver<Option<Arc<str>>>, GatewayInterest<'_>) {
        self.gateway_clients.fetch_add(1, Ordering::Relaxed);
        (self.gateway_tx.subscribe(), GatewayInterest(self))
    }
    /// Receivers currently subscribed (SSE clients and webhooks).
    pub fn receivers(&self) -> usize {
        self.tx.receiver_count()
    }

    // The pump's side (`event_pump`).

    /// The last event id pumped of `project` (0: none yet).
    pub(super) fn head_of(&self, project: &str) -> i64 {
        self.head.locked().get(project).copied().unwrap_or(0)
    }
    /// Records the last event id pumped of `project`.
    pub(super) fn set_head(&self, project: &str, id: i64) {
        self.head.locked().insert(project.to_string(), id);
    }
    /// Resolves when [`EventHub::wake`] was called.
    pub(super) fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
    /// Sends one event to every receiver (none is fine: nobody listens).
    pub(super) fn publish(&self, event: StreamEvent) {
        let _ = self.tx.send(Arc::new(event));
    }
    /// Whether a `gateway=1` client is connected.
    pub(super) fn wants_gateway(&self) -> bool {
        self.gateway_clients.load(Ordering::Relaxed) > 0
    }
    /// Replaces the shared gateway snapshot.
    pub(super) fn set_gateway_snapshot(&self, json: String) {
        self.gateway_tx.send_replace(Some(Arc::from(json)));
    }
}
