//! Opening projects: [`ProjectSet::refresh`] re-reads the registry, opens
//! new projects (their `project.yaml` and blackboard; a missing
//! `blackboard.db` is recreated empty, and that is recorded), syncs their
//! `schedules:`, drops archived ones and retries broken ones. Above the set
//! ([`super::projects`]), which only holds the slots.

use super::projects::{ProjectSet, ProjectSlot, RefreshPlan};
use super::{Daemon, DaemonError};
use crate::blackboard::{Actor, ObservationLevel, OpenMode};
use crate::config::{Config, ProjectSettings};
use crate::registry::ProjectId;

impl ProjectSet {
    /// Re-reads the registry: opens new projects, drops archived ones,
    /// retries broken ones.
    pub async fn refresh(&self, d: &Daemon) -> Result<(), DaemonError> {
        let Some(RefreshPlan { to_open, to_close }) = self.plan_refresh(d.home())? else {
            return Ok(());
        };
        for slot in to_close {
            if let Some(bb) = slot.bb {
                bb.close().await;
            }
        }
        for id in to_open {
            let slot = open_slot(d, &id).await;
            if let Some(e) = &slot.error {
                tracing::warn!(project = %id, error = %e, "project unavailable");
            } else {
                super::schedules::sync_from_config(d, &slot).await;
            }
            self.insert(slot);
        }
        Ok(())
    }
}

async fn open_slot(d: &Daemon, id: &ProjectId) -> ProjectSlot {
    let (config, settings, config_error) =
        match Config::load_for_project(d.home(), id, d.overrides()) {
            Ok((c, s)) => (c, s, None),
            Err(e) => (
                d.config().clone(),
                ProjectSettings::default(),
                Some(e.to_string()),
            ),
        };
    let mut slot = ProjectSlot {
        id: id.clone(),
        bb: None,
        error: config_error,
        config,
        settings,
        zombie_ticks: 0,
        last_event_id: 0,
        failed_ticks: 0,
        tick_error: None,
    };
    if slot.error.is_some() {
        return slot;
    }
    let path = d.home().blackboard_file(id);
    let location = match d.store_location() {
        Ok(l) => l,
        Err(e) => {
            slot.error = Some(e.to_string());
            return slot;
        }
    };
    let missing = location == crate::registry::StoreLocation::Files && !path.exists();
    match crate::registry::open_blackboard_at(
        &location,
        d.home(),
        id,
        OpenMode::Create { max_connections: 4 },
        std::sync::Arc::new(crate::blackboard::SystemClock),
    )
    .await
    {
        Ok(bb) => {
            if missing {
                let _ = bb
                    .add_observation(
                        ObservationLevel::Alert,
                        &Actor::daemon(),
                        None,
                        &format!(
                            "{} was missing; the daemon created an empty, migrated blackboard",
                            path.display()
                        ),
                    )
                    .await;
            }
            slot.last_event_id = bb.last_event_id().await.unwrap_or(0);
            slot.bb = Some(bb);
        }
        Err(e) => slot.error = Some(format!("blackboard unavailable: {e}")),
    }
    slot
}
