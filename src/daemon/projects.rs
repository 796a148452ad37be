//! The daemon's set of active projects and their open blackboards.
//!
//! Physical isolation: each project is opened, ticked and reported on
//! its own. A project whose database is corrupt or locked is marked with its
//! error and skipped; the others carry on. Opening them (and recreating a
//! missing `blackboard.db`) is [`super::project_open`]'s.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::blackboard::Blackboard;
use crate::config::{Config, ProjectSettings};
use crate::home::Home;
use crate::locks::Recover;
use crate::registry::{self, ProjectId, ProjectStatus, RegistryError};
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

    /// This project for the cluster leader's duties (`ProjectService::fenced`).
    pub fn fenced(&self, holder: &str, epoch: i64) -> OpenProject {
        OpenProject {
            service: self.service.fenced(holder, epoch),
            ..self.clone()
        }
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

/// What a refresh must do ([`ProjectSet::plan_refresh`]).
pub(super) struct RefreshPlan {
    /// Active projects to open: new, or broken and retried.
    pub to_open: Vec<ProjectId>,
    /// Slots taken out of the set, their blackboards still to close.
    pub to_close: Vec<ProjectSlot>,
}

#[derive(Debug, Default)]
pub struct ProjectSet {
    slots: Mutex<BTreeMap<String, ProjectSlot>>,
    /// (mtime, length) of the registry at the last refresh: an unchanged
    /// registry with no broken project is not re-read every tick.
    registry_stamp: Mutex<Option<(std::time::SystemTime, u64)>>,
}

impl ProjectSet {
    /// What a refresh must do, read from the registry under the set's
    /// lock (the slots of projects no longer active are taken out here).
    /// `None`: the registry is unchanged and nothing is broken.
    pub(super) fn plan_refresh(&self, home: &Home) -> Result<Option<RefreshPlan>, RegistryError> {
        let stamp = std::fs::metadata(home.registry_file())
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let any_broken = self.slots.locked().values().any(|s| s.bb.is_none());
        if stamp.is_some() && !any_broken && *self.registry_stamp.locked() == stamp {
            return Ok(None);
        }
        let entries = registry::load(home)?;
        *self.registry_stamp.locked() = stamp;
        let active: Vec<ProjectId> = entries
            .iter()
            .filter(|e| e.status == ProjectStatus::Active)
            .filter_map(|e| ProjectId::parse(&e.id).ok())
            .collect();
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
        Ok(Some(RefreshPlan {
            to_open,
            to_close: closed,
        }))
    }

    /// Puts a freshly opened slot in (replacing a broken one).
    pub(super) fn insert(&self, slot: ProjectSlot) {
        self.slots.locked().insert(slot.id.to_string(), slot);
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
