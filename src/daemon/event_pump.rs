//! The event pump: tails every open project's `event` table into the
//! [`EventHub`] — after every wake of the hub and at least every [`POLL`]
//! (a poll skips a project whose database and WAL are unchanged, with a
//! full read every [`FULL_READ`]) — and builds the shared gateway snapshot
//! once a second while a `gateway=1` client listens.

use std::collections::HashMap;
use std::time::Duration;

use super::event_hub::{stream_events, EventHub, BATCH, POLL};
use super::Daemon;

/// Runs until shutdown: pumps events, builds gateway snapshots.
pub async fn run(d: Daemon) {
    let hub = d.events();
    let mut shutdown = d.shutdown_signal();
    // Projects open now start at their end; ones that appear later (created
    // while running) from their first event.
    for slot in d.projects().snapshot() {
        if let Some(bb) = &slot.bb {
            let last = bb.last_event_id().await.unwrap_or(0);
            hub.set_head(slot.id.as_str(), last);
        }
    }
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gateway_tick = tokio::time::interval(Duration::from_secs(1));
    gateway_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What each project's files looked like when last read: a poll skips a
    // project whose database and WAL have not changed since (a `stat`
    // instead of a query five times a second: an idle daemon stays idle).
    // Wakes, and every FULL_READ, read everything regardless.
    let mut stamps: HashMap<String, FileStamp> = HashMap::new();
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = hub.woken() => pump(&d, hub, &mut stamps, false).await,
            _ = poll.tick() => {
                let full = last_full.elapsed() >= FULL_READ;
                if full {
                    last_full = tokio::time::Instant::now();
                }
                pump(&d, hub, &mut stamps, !full).await
            }
            _ = gateway_tick.tick() => snapshot_gateway(&d, hub),
        }
    }
}

/// How often a poll reads every project even if its files look unchanged
/// (file times are coarse; this bounds any delay that could cause).
pub const FULL_READ: Duration = Duration::from_secs(5);

/// Length and modification time of a project's WAL and database file.
type FileStamp = (
    u64,
    Option<std::time::SystemTime>,
    Option<std::time::SystemTime>,
);

fn file_stamp(db: &std::path::Path) -> FileStamp {
    let wal = std::fs::metadata(db.with_extension("db-wal")).ok();
    let main = std::fs::metadata(db).ok();
    (
        wal.as_ref().map_or(0, |m| m.len()),
        wal.and_then(|m| m.modified().ok()),
        main.and_then(|m| m.modified().ok()),
    )
}

/// Reads every project's new events and broadcasts them in id order. With
/// `only_changed`, projects whose files are as they were at the last read
/// are skipped. The stamp is taken before the read, so a write during the
/// read changes it and is read next time.
async fn pump(
    d: &Daemon,
    hub: &EventHub,
    stamps: &mut HashMap<String, FileStamp>,
    only_changed: bool,
) {
    for slot in d.projects().snapshot() {
        let Some(bb) = &slot.bb else { continue };
        let project = slot.id.as_str();
        // A file's stamp tells whether anything was written. A PostgreSQL
        // board has no file: its writes wake the hub (LISTEN/NOTIFY), so a
        // plain poll skips it and the full read every FULL_READ is the
        // fallback for a notification lost while the listener reconnected.
        if bb.backend() == crate::blackboard::Backend::Sqlite {
            let stamp = file_stamp(bb.path());
            if only_changed && stamps.get(project) == Some(&stamp) {
                continue;
            }
            stamps.insert(project.to_string(), stamp);
        } else if only_changed {
            continue;
        }
        loop {
            let after = hub.head_of(project);
            let events = match bb.events_after(after, BATCH).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(project, error = %e, "event pump cannot read events");
                    break;
                }
            };
            let n = events.len() as i64;
            for ev in stream_events(bb, project, &events).await {
                hub.set_head(project, ev.id);
                hub.publish(ev);
            }
            if n < BATCH {
                break;
            }
        }
    }
}

fn snapshot_gateway(d: &Daemon, hub: &EventHub) {
    if !hub.wants_gateway() {
        return;
    }
    let Some(gw) = d.gateway() else { return };
    let text = serde_json::to_string(&gw.status()).unwrap_or_else(|_| "null".into());
    hub.set_gateway_snapshot(text);
}
