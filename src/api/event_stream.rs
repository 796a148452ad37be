//! `GET /api/events`: the blackboard events of every project as SSE
//! (docs/API.md, "Events").
//!
//! Each client gets its own small task that turns the shared broadcast into
//! frames and hands them to the response body through a bounded channel of
//! [`CLIENT_BUFFER`] frames. A client that stops reading fills it: the task
//! puts `event: resync` in the last slot and ends, so a stuck client costs a
//! fixed amount of memory and never slows anyone else. A client whose task
//! falls behind the broadcast itself (`Lagged`) gets the same.
//!
//! Resuming (`Last-Event-ID` or `?since=`) subscribes first, then replays
//! from the blackboards, then follows the live stream skipping what the
//! replay already sent — every event exactly once, in order per project.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::IntoResponse;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiQuery;
use crate::api::error::ApiError;
use crate::blackboard::EventLevel;
use crate::daemon::event_hub::{stream_events, StreamEvent};
use crate::daemon::Daemon;
use crate::registry::ProjectId;

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Frames buffered per client before it counts as stuck.
pub const CLIENT_BUFFER: usize = 256;
/// Interval of `event: heartbeat`.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Rows read per query while replaying.
const REPLAY_BATCH: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Comma list of `urgent`, `attention`, `daily`, `optional`
    /// (default `urgent,attention,daily`).
    pub levels: Option<String>,
    /// Comma list of project ids (default all).
    pub project: Option<String>,
    /// `1` to also receive `event: gateway` snapshots.
    pub gateway: Option<String>,
    /// Resume cursor (`demo:41,alpha:12`), for clients that cannot send
    /// `Last-Event-ID`.
    pub since: Option<String>,
}

/// Parses `demo:41,alpha:12`.
fn parse_cursor(raw: &str) -> Option<BTreeMap<String, i64>> {
    let mut m = BTreeMap::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (p, n) = part.rsplit_once(':')?;
        ProjectId::parse(p).ok()?;
        let n: i64 = n.parse().ok()?;
        if n < 0 {
            return None;
        }
        m.insert(p.to_string(), n);
    }
    Some(m)
}

fn format_cursor(m: &BTreeMap<String, i64>) -> String {
    m.iter()
        .map(|(p, n)| format!("{p}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One client's position and filters.
struct Client {
    d: Daemon,
    levels: HashSet<EventLevel>,
    projects: Option<BTreeSet<String>>,
    /// Last event id handled per project (sent or filtered out).
    pos: BTreeMap<String, i64>,
    out: mpsc::Sender<SseEvent>,
}

impl Client {
    fn wants_project(&self, p: &str) -> bool {
        self.projects.as_ref().is_none_or(|s| s.contains(p))
    }

    fn frame(&self, ev: &StreamEvent) -> SseEvent {
        SseEvent::default()
            .id(format_cursor(&self.pos))
            .data(ev.json.as_str())
    }

    /// Advances past `ev`; returns the frame when the client wants it.
    fn accept(&mut self, ev: &StreamEvent) -> Option<SseEvent> {
        if !self.wants_project(&ev.project) {
            return None;
        }
        let at = self.pos.get(ev.project.as_ref()).copied().unwrap_or(0);
        if ev.id <= at {
            return None;
        }
        self.pos.insert(ev.project.to_string(), ev.id);
        self.levels.contains(&ev.level).then(|| self.frame(ev))
    }

    /// Sends without waiting; a full buffer means the client is stuck: the
    /// last slot carries `resync` and the stream ends (`Err`).
    fn push(&self, frame: SseEvent) -> Result<(), ()> {
        if self.out.capacity() <= 1 {
            self.resync("the client is not reading fast enough");
            return Err(());
        }
        self.out.try_send(frame).map_err(|_| ())
    }

    fn resync(&self, reason: &str) {
        metrics::counter!("moziplus_sse_resyncs_total").increment(1);
        let data = json!({ "reason": reason, "cursor": format_cursor(&self.pos) });
        let _ = self
            .out
            .try_send(SseEvent::default().event("resync").data(data.to_string()));
    }

    /// Replays every wanted project from its position up to the current end.
    async fn replay(&mut self) -> Result<(), ()> {
        for slot in self.d.projects().snapshot() {
            let Some(bb) = slot.bb else { continue };
            let project = slot.id.to_string();
            if !self.wants_project(&project) {
                continue;
            }
            loop {
                let after = self.pos.get(&project).copied().unwrap_or(0);
                let rows = bb.events_after(after, REPLAY_BATCH).await.map_err(|e| {
                    self.resync(&format!("cannot read {project}: {e}"));
                })?;
                let n = rows.len() as i64;
                for ev in stream_events(&bb, &project, &rows).await {
                    if let Some(frame) = self.accept(&ev) {
                        // Replay may wait for the client: the source is the database.
                        self.out.send(frame).await.map_err(|_| ())?;
                    }
                }
                if n < REPLAY_BATCH {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Blackboard events, heartbeats, gateway snapshots and resync notices.
#[utoipa::path(get, path = "/api/events", tag = "events", params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = String,
               description = "SSE: message (blackboard event, id = cursor), heartbeat, gateway, resync"),
              (status = 400)))]
async fn events(
    State(d): State<Daemon>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<axum::response::Response, ApiError> {
    let levels: HashSet<EventLevel> = match q.levels.as_deref().filter(|s| !s.is_empty()) {
        None => [EventLevel::Urgent, EventLevel::Attention, EventLevel::Daily]
            .into_iter()
            .collect(),
        Some(raw) => super::extract::parse_list::<EventLevel>(Some(raw))?
            .into_iter()
            .collect(),
    };
    let projects: Option<BTreeSet<String>> = match q.project.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(
            raw.split(',')
                .map(|p| ProjectId::parse(p.trim()).map(|id| id.to_string()))
                .collect::<Result<_, _>>()?,
        ),
    };
    let gateway = matches!(q.gateway.as_deref(), Some("1" | "true"));
    let cursor_raw = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.since);

    let (out, rx) = mpsc::channel(CLIENT_BUFFER);
    // Subscribe before anything is read, so nothing falls between replay and live.
    let live = d.events().subscribe();
    let mut client = Client {
        levels,
        projects,
        pos: BTreeMap::new(),
        out,
        d: d.clone(),
    };
    let replay = match cursor_raw.as_deref().map(str::trim) {
        None | Some("") => {
            client.pos = d.events().head();
            false
        }
        Some(raw) => match parse_cursor(raw) {
            Some(pos) => match past_the_end(&d, &pos).await {
                None => {
                    client.pos = pos;
                    true
                }
                Some(reason) => {
                    // Resuming there would wait silently for events that
                    // were never written (a restored or replaced database,
                    // a cursor of another daemon): resync from the end.
                    client.pos = d.events().head();
                    client.resync(&reason);
                    drop(client);
                    return Ok(sse(rx).into_response());
                }
            },
            None => {
                client.pos = d.events().head();
                client.resync(&format!("unusable cursor {raw:?}"));
                drop(client);
                return Ok(sse(rx).into_response());
            }
        },
    };
    if let Some(p) = &client.projects {
        client.pos.retain(|k, _| p.contains(k));
    }
    tokio::spawn(run_client(client, live, replay, gateway));
    Ok(sse(rx).into_response())
}

/// Why `pos` cannot be resumed from: a project's position beyond the last
/// event its blackboard holds. `None` when every position is within its
/// project's events (projects not open here are left to the replay).
async fn past_the_end(d: &Daemon, pos: &BTreeMap<String, i64>) -> Option<String> {
    for (project, &at) in pos {
        let Some(bb) = d.projects().get(project).and_then(|slot| slot.bb) else {
            continue;
        };
        let last = match bb.last_event_id().await {
            Ok(last) => last,
            Err(e) => return Some(format!("cannot read {project}'s events: {e}")),
        };
        if at > last {
            return Some(format!(
                "cursor {project}:{at} is past the end of {project}'s events (the last is {last}): \
                 resume from the cursor of this frame"
            ));
        }
    }
    None
}

fn sse(rx: mpsc::Receiver<SseEvent>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok(ev), rx))
    });
    Sse::new(stream)
}

/// Counts the connected SSE clients in `moziplus_sse_clients`.
struct ClientGauge;

impl ClientGauge {
    fn new() -> ClientGauge {
        metrics::gauge!("moziplus_sse_clients").increment(1.0);
        ClientGauge
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!("moziplus_sse_clients").decrement(1.0);
    }
}

async fn run_client(
    mut c: Client,
    mut live: broadcast::Receiver<Arc<StreamEvent>>,
    replay: bool,
    gateway: bool,
) {
    let d = c.d.clone();
    let mut shutdown = d.shutdown_signal();
    let _connected = ClientGauge::new();
    if replay && c.replay().await.is_err() {
        return;
    }
    let hub = d.events();
    let (mut snapshots, _interest) = if gateway {
        let (rx, guard) = hub.gateway_snapshots();
        (Some(rx), Some(guard))
    } else {
        (None, None)
    };
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            _ = shutdown.changed() => return,
            _ = c.out.closed() => return,
            r = live.recv() => match r {
                Ok(ev) => match c.accept(&ev) {
                    Some(f) => f,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    c.resync(&format!("fell {n} events behind"));
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = heartbeat.tick() => {
                let data = json!({
                    "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "cursor": format_cursor(&c.pos),
                });
                SseEvent::default().event("heartbeat").data(data.to_string())
            }
            Ok(()) = async { match snapshots.as_mut() {
                Some(s) => s.changed().await,
                None => std::future::pending().await,
            } } => {
                let snap = snapshots.as_mut().and_then(|s| s.borrow_and_update().clone());
                match snap {
                    Some(text) => SseEvent::default().event("gateway").data(text.as_ref()),
                    None => continue,
                }
            }
        };
        if c.push(frame).is_err() {
            return;
        }
    }
}
