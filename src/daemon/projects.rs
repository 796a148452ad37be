//! The daemon's set of active projects and their open blackboards.
//!
//! Physical isolation: each project is opened, ticked and reported on
//! its own. A project whose database is corrupt or locked is marked with its
//! error and skipped; the others carry on. A missing `blackboard.db` of a
//! registered project is recreated empty (and that is recorded).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::{Daemon, DaemonError};
use crate::blackboard::{Actor, Blackboard, ObservationLevel, OpenMode};
use crate::config::{Config, ProjectSettings};
use crate::locks::Recover;
use crate::registry::{self, ProjectId, ProjectStatus};
use crate::service::{Notifier, ProjectService};

/// One active project as the daemon sees it.
#[derive(Debug, Clone)]
pub struct ProjectSlot {
    pub id: ProjectId,
    pub bb: Option<Blackboard>,
    /// Why the project is unusable right now (open error, bad config).
    pub error: Option<String>,
    pub config: Config,
    pub settings: ProjectSettings,
    /// Consecutive ticks with outstanding work and no new event.
    pub zombie_ticks: u32,
    pub last_event_id: i64,
    /// Consecutive ticks that failed or ran out of time, and the last reason:
    /// at [`FAILED_TICKS_UNREADY`] the project is reported on readiness, so a
    /// project whose writes keep failing never looks ready.
    pub failed_ticks: u32,
    pub tick_error: Option<String>,
}

impl ProjectSlot {
    /// The project's blackboard behind its rules, for the daemon's writes
    /// (`None` while the project is unusable). Its writes wake nobody: the
    /// daemon is the one that ticks.
    pub fn service(&self, home: &crate::home::Home) -> Option<ProjectService> {
        let bb = self.bb.clone()?;
        Some(ProjectService::new(
            bb,
            home.clone(),
            self.id.clone(),
            Notifier::none(),
        ))
    }
}

impl ProjectSlot {
    /// The project as a tick works on it, or `None` while it is unusable
    /// (its blackboard did not open).
    pub fn open(&self, home: &crate::home::Home) -> Option<OpenProject> {
        Some(OpenProject {
            id: self.id.clone(),
            service: self.service(home)?,
            config: self.config.clone(),
            settings: self.settings.clone(),
        })
    }
}

/// A project whose blackboard is open: what the tick works on
/// ([`ProjectSlot::open`]). Nothing in it can be missing, so the tick's code
/// asks no "is it open?" again.
#[derive(Debug, Clone)]
pub struct OpenProject {
    pub id: ProjectId,
    /// The blackboard behind the project's rules; its writes wake nobody
    /// (the daemon is the one that ticks).
    pub service: ProjectService,
    pub config: Config,
    pub settings: ProjectSettings,
}

impl OpenProject {
    pub fn bb(&self) -> &Blackboard {
        self.service.blackboard()
    }
}

/// Consecutive failed ticks after which a project counts as a problem.
pub const FAILED_TICKS_UNREADY: u32 = 3;

/// What the status endpoint shows of a broken project.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProjectProblem {
    pub project: String,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct ProjectSet {
    slots: Mutex<BTreeMap<String, ProjectSlot>>,
    /// (mtime, length) of the registry at the last refresh: an unchanged
    /// registry with no broken project is not re-read every tick.
    registry_stamp: Mutex<Option<(std::time::SystemTime, u64)>>,
}

impl ProjectSet {
    /// Re-reads the registry: opens new projects, drops archived ones,
    /// retries broken ones.
    pub async fn refresh(&self, d: &Daemon) -> Result<(), DaemonError> {
        let stamp = std::fs::metadata(d.home().registry_file())
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let any_broken = self.slots.locked().values().any(|s| s.bb.is_none());
        if stamp.is_some() && !any_broken && *self.registry_stamp.locked() == stamp {
            return Ok(());
        }
        let entries = registry::load(d.home())?;
        *self.registry_stamp.locked() = stamp;
        let active: Vec<ProjectId> = entries
            .iter()
            .filter(|e| e.status == ProjectStatus::Active)
            .filter_map(|e| ProjectId::parse(&e.id).ok())
            .collect();
        let (to_open, to_close): (Vec<ProjectId>, Vec<ProjectSlot>) = {
            let mut slots = self.slots.locked();
            let to_close: Vec<String> = slots
                .keys()
                .filter(|k| !active.iter().any(|a| a.as_str() == k.as_str()))
                .cloned()
                .collect();
            let closed = to_close.iter().filter_map(|k| slots.remove(k)).collect();
            let to_open = active
                .iter()
                .filter(|id| slots.get(id.as_str()).is_none_or(|s| s.bb.is_none()))
                .cloned()
                .collect();
            (to_open, closed)
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
            self.slots.locked().insert(id.to_string(), slot);
        }
        Ok(())
    }

    /// A copy of every slot (blackboards are cheap handles).
    pub fn snapshot(&self) -> Vec<ProjectSlot> {
        self.slots.locked().values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<ProjectSlot> {
        self.slots.locked().get(id).cloned()
    }

    /// Changes one slot in place.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut ProjectSlot)) {
        if let Some(s) = self.slots.locked().get_mut(id) {
            f(s);
        }
    }

    /// Marks a project broken: its handle is dropped and retried next refresh.
    pub fn fail(&self, id: &str, error: String) {
        self.update(id, |s| {
            s.bb = None;
            s.error = Some(error);
        });
    }

    pub fn problems(&self) -> Vec<ProjectProblem> {
        self.slots
            .locked()
            .values()
            .filter_map(|s| {
                let error = s.error.clone().or_else(|| {
                    s.bb.as_ref()
                        .and_then(|bb| bb.file_problem())
                        .map(|e| e.to_string())
                        .or_else(|| {
                            (s.failed_ticks >= FAILED_TICKS_UNREADY).then(|| {
                                format!(
                                    "the last {} ticks failed: {}",
                                    s.failed_ticks,
                                    s.tick_error.as_deref().unwrap_or("?")
                                )
                            })
                        })
                })?;
                Some(ProjectProblem {
                    project: s.id.to_string(),
                    error,
                })
            })
            .collect()
    }

    pub async fn close_all(&self) {
        let slots: Vec<ProjectSlot> = std::mem::take(&mut *self.slots.locked())
            .into_values()
            .collect();
        for s in slots {
            if let Some(bb) = s.bb {
                bb.close().await;
            }
        }
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
    let missing = !path.exists();
    match Blackboard::open(&path, id.as_str(), OpenMode::Create { max_connections: 4 }).await {
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
