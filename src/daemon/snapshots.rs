//! Automatic online snapshots of every blackboard.
//!
//! Every minute the loop looks at each open project's newest snapshot in
//! `backups/<id>/`; one older than `backup.interval_minutes` (or none at all)
//! gets a new [`crate::backup::snapshot_project`] — `VACUUM INTO`, consistent
//! while agents write — and the oldest beyond `backup.keep` are pruned. The
//! schedule is read from the files themselves, so a daemon restarted every few
//! minutes still snapshots on time and never twice in an interval. A failure
//! is logged, counted and written to the project as a `warn` observation.
//! On PostgreSQL there are no files to snapshot: the loop does nothing.

use std::time::{Duration, SystemTime};

use crate::backup;
use crate::blackboard::{Actor, ObservationLevel};

use super::Daemon;

/// How often the loop checks whether a snapshot is due.
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// The first check waits this long, so start-up (recovery, the first tick)
/// goes first.
const FIRST_CHECK_AFTER: Duration = Duration::from_secs(2);

/// The snapshot loop; returns at shutdown or at once when snapshots are off.
pub async fn run(d: Daemon) {
    let cfg = d.config().backup.clone();
    if cfg.interval_minutes == 0 {
        return;
    }
    if let Ok(crate::registry::StoreLocation::Postgres(_)) = d.store_location() {
        // Snapshots are of blackboard files; PostgreSQL's backups are its
        // own (`pg_dump`, README "Many hosts").
        tracing::info!("blackboards are in PostgreSQL: no automatic snapshots (use pg_dump)");
        return;
    }
    let interval = Duration::from_secs(u64::from(cfg.interval_minutes) * 60);
    let mut shutdown = d.shutdown_signal();
    let mut wait = FIRST_CHECK_AFTER;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if d.is_shutting_down() {
            return;
        }
        snapshot_due(&d, interval, cfg.keep as usize).await;
        wait = CHECK_EVERY;
    }
}

/// Snapshots every open project whose newest snapshot is older than `interval`.
pub async fn snapshot_due(d: &Daemon, interval: Duration, keep: usize) {
    for slot in d.projects().snapshot() {
        let Some(bb) = slot.bb.as_ref() else {
            continue; // a broken project is reported by readiness already
        };
        let newest = backup::list_snapshots(d.home(), &slot.id)
            .ok()
            .and_then(|files| files.last().cloned())
            .and_then(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
        let due = newest.is_none_or(|t| {
            SystemTime::now()
                .duration_since(t)
                .is_ok_and(|age| age >= interval)
        });
        if !due {
            continue;
        }
        match backup::snapshot_project(d.home(), &slot.id, keep).await {
            Ok(s) => {
                metrics::counter!("moziplus_snapshots_total", "outcome" => "ok").increment(1);
                tracing::info!(project = %slot.id, path = %s.path.display(), bytes = s.bytes, "snapshot taken");
            }
            Err(e) => {
                metrics::counter!("moziplus_snapshots_total", "outcome" => "failed").increment(1);
                tracing::warn!(project = %slot.id, error = %e, "automatic snapshot failed");
                let _ = bb
                    .add_observation(
                        ObservationLevel::Warn,
                        &Actor::daemon(),
                        None,
                        &format!("automatic snapshot failed: {e}"),
                    )
                    .await;
            }
        }
    }
}
