//! The stored event log and alert acknowledgements (docs/API.md, "Event
//! log and alerts"): `GET /api/events/log` pages every project's events
//! from the blackboards, newest first, with the unacknowledged alert
//! counts; `POST /api/projects/{id}/events/{event}/ack` acknowledges one
//! alert. Unlike the live stream (`GET /api/events`), both read the store,
//! so a restarted daemon or a reloaded page shows the same alerts.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{actor, check_limit, parse_list, project_service, ApiPath, ApiQuery};
use crate::api::error::ApiError;
use crate::blackboard::{EventLevel, EventQuery};
use crate::daemon::Daemon;
use crate::registry::ProjectId;
use crate::wire::{AlertCounts, StoredEvent};

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new()
        .routes(routes!(event_log))
        .routes(routes!(ack_event))
}

/// Events per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 50;
/// The largest page.
pub const MAX_LIMIT: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventLogQuery {
    /// Comma list of `urgent`, `attention`, `daily`, `optional` (default all).
    pub levels: Option<String>,
    /// Comma list of project ids (default every active project).
    pub project: Option<String>,
    /// `1` for the alerts (urgent, attention) nobody has acknowledged yet.
    pub unacked: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Events per page, 1–500 (default 50).
    pub limit: Option<i64>,
}

/// One page of the event log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventLog {
    pub events: Vec<StoredEvent>,
    /// Pass as `cursor` for the next (older) page; `null` when this page
    /// reaches the oldest event that matches.
    pub next_cursor: Option<String>,
    /// Unacknowledged alerts of the projects asked for, over their whole
    /// logs (not only this page).
    pub unacked: AlertCounts,
}

/// Parses a cursor `demo:41,alpha:12`: per project, the id the next page
/// starts below.
fn parse_cursor(raw: &str) -> Result<BTreeMap<String, i64>, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "cursor {raw:?} is not one this route gave: expected project:id pairs such as demo:41,alpha:12 \
             (pass the next_cursor of the previous page, or no cursor for the newest events)"
        ))
    };
    let mut m = BTreeMap::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (p, n) = part.rsplit_once(':').ok_or_else(bad)?;
        let p = ProjectId::parse(p).map_err(|_| bad())?;
        let n: i64 = n.parse().map_err(|_| bad())?;
        if n < 1 {
            return Err(bad());
        }
        m.insert(p.to_string(), n);
    }
    Ok(m)
}

/// Stored events of every project (or those asked for), newest first, a
/// page at a time; `unacked=1` for the alerts that still need someone.
#[utoipa::path(get, path = "/api/events/log", tag = "events", params(EventLogQuery),
    responses((status = 200, body = EventLog), (status = 400)))]
async fn event_log(
    State(d): State<Daemon>,
    ApiQuery(q): ApiQuery<EventLogQuery>,
) -> Result<Json<EventLog>, ApiError> {
    let levels: Vec<EventLevel> = parse_list(q.levels.as_deref().filter(|s| !s.is_empty()))?;
    let limit = check_limit(q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let unacked_only = match q.unacked.as_deref() {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unacked={other:?}: expected 1 (only unacknowledged alerts) or 0"
            )))
        }
    };
    let wanted: Option<Vec<String>> = match q.project.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(
            raw.split(',')
                .map(|p| ProjectId::parse(p.trim()).map(|id| id.to_string()))
                .collect::<Result<_, _>>()?,
        ),
    };
    let mut cursor = match q.cursor.as_deref().map(str::trim) {
        None | Some("") => BTreeMap::new(),
        Some(raw) => parse_cursor(raw)?,
    };
    let mut unacked = AlertCounts::default();
    // Each project's next `limit + 1` events: enough to fill the page and
    // to know whether anything is left after it.
    let mut candidates: Vec<StoredEvent> = Vec::new();
    for slot in d.projects().snapshot() {
        let project = slot.id.to_string();
        if wanted.as_ref().is_some_and(|w| !w.contains(&project)) {
            continue;
        }
        let Some(bb) = slot.bb else { continue };
        unacked += bb.alert_counts().await?.into();
        let query = EventQuery {
            levels: levels.clone(),
            unacked_only,
            before: cursor.get(&project).copied(),
            limit: limit + 1,
        };
        for e in bb.event_log(&query).await? {
            candidates.push(StoredEvent::new(&project, &e));
        }
    }
    // Newest first across projects; ties by project, then id.
    candidates.sort_by(|a, b| {
        (b.event.created_at, &a.project, b.event.id).cmp(&(
            a.event.created_at,
            &b.project,
            a.event.id,
        ))
    });
    let more = candidates.len() as i64 > limit;
    candidates.truncate(limit as usize);
    for e in &candidates {
        cursor.insert(e.project.clone(), e.event.id);
    }
    let next_cursor = more.then(|| {
        cursor
            .iter()
            .map(|(p, n)| format!("{p}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    Ok(Json(EventLog {
        events: candidates,
        next_cursor,
        unacked,
    }))
}

/// Acknowledges an alert (an `urgent` or `attention` event): records who
/// and when. Acknowledging it again returns the first acknowledgement.
#[utoipa::path(post, path = "/api/projects/{id}/events/{event}/ack", tag = "events",
    params(("id" = String, Path, description = "project id"),
           ("event" = i64, Path, description = "event id")),
    security(("bearer" = [])),
    responses((status = 200, body = StoredEvent), (status = 400), (status = 403), (status = 404)))]
async fn ack_event(
    State(d): State<Daemon>,
    ApiPath((id, event)): ApiPath<(String, i64)>,
    headers: HeaderMap,
) -> Result<Json<StoredEvent>, ApiError> {
    let who = actor(&headers)?;
    let svc = project_service(&d, &id).await?;
    let stored = svc.ack_event(event, &who).await?;
    Ok(Json(StoredEvent::new(svc.project().as_str(), &stored)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_checked_and_name_what_to_pass() {
        let m = parse_cursor("demo:41, alpha:12").unwrap();
        assert_eq!(m.get("demo"), Some(&41));
        assert_eq!(m.get("alpha"), Some(&12));
        for bad in ["demo", "demo:x", "demo:0", "../x:3"] {
            let e = parse_cursor(bad).unwrap_err();
            assert!(format!("{e:?}").contains("next_cursor"), "{bad}: {e:?}");
        }
    }
}
