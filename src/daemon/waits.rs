//! The daemon's own reasons a task waits — a paused ticker, busy or held
//! agents, run slots, quota — judged on every tick of a project
//! (`ticker::start_ready`) and published: in memory for the API, and as
//! `<home>/run/waits/<project>.json` ([`Home::daemon_waits_file`]) for `bb
//! list` and `bb read`, which run without the daemon. The board's own
//! reasons are the service's ([`crate::service::combine`]).
//!
//! The zombie alert names the most urgent tasks that wait, with why
//! ([`stuck`]).
//!
//! The file is rewritten only when what it says changes; it names the
//! daemon's pid, so a reader ignores a file a stopped daemon left behind
//! ([`published`] asks the kernel who holds the home).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::projects::OpenProject;
use crate::blackboard::{TaskFilter, TaskStatus};
use crate::home::Home;
use crate::locks::Recover;
use crate::registry::ProjectId;
use crate::service::{DaemonSide, WaitingFor};
use crate::wire::{DaemonWaits, Wait};

/// The last published reasons per project.
#[derive(Debug, Default)]
pub struct WaitBook {
    projects: Mutex<HashMap<String, DaemonWaits>>,
}

impl WaitBook {
    fn get(&self, project: &str) -> Option<DaemonWaits> {
        self.projects.locked().get(project).cloned()
    }

    /// Publishes what the tick of `project` judged: `tasks`, each with why
    /// it did not start, and `unjudged`, why the ready tasks it did not
    /// look at wait; `paused` is the ticker's state.
    pub fn publish(
        &self,
        home: &Home,
        paused: bool,
        project: &str,
        tasks: BTreeMap<String, Vec<WaitingFor>>,
        unjudged: Vec<WaitingFor>,
    ) {
        let wire = |w: Vec<WaitingFor>| w.iter().map(WaitingFor::to_wire).collect::<Vec<_>>();
        let judged = DaemonWaits {
            pid: std::process::id(),
            judged_at: chrono::Utc::now().timestamp_millis(),
            paused,
            tasks: tasks.into_iter().map(|(id, w)| (id, wire(w))).collect(),
            unjudged: wire(unjudged),
        };
        self.store(home, project, judged);
    }

    /// Republishes every project's reasons with the ticker's state (pause
    /// and resume): a paused ticker judges nothing, so `bb` must learn it
    /// here. `open` are the open projects: one never ticked yet (paused
    /// from the start) gets a file too.
    pub fn republish(&self, home: &Home, paused: bool, open: &[ProjectId]) {
        let all: Vec<(String, DaemonWaits)> = self
            .projects
            .locked()
            .iter()
            .map(|(p, w)| (p.clone(), w.clone()))
            .collect();
        let known: Vec<String> = all.iter().map(|(p, _)| p.clone()).collect();
        for (project, mut w) in all {
            w.paused = paused;
            self.store(home, &project, w);
        }
        for id in open {
            if !known.iter().any(|p| p == id.as_str()) {
                let w = DaemonWaits {
                    pid: std::process::id(),
                    judged_at: chrono::Utc::now().timestamp_millis(),
                    paused,
                    ..DaemonWaits::default()
                };
                self.store(home, id.as_str(), w);
            }
        }
    }

    /// Keeps `judged` and writes its file when it says something new.
    fn store(&self, home: &Home, project: &str, judged: DaemonWaits) {
        let changed = {
            let mut map = self.projects.locked();
            let same = map.get(project).is_some_and(|old| {
                old.paused == judged.paused
                    && old.tasks == judged.tasks
                    && old.unjudged == judged.unjudged
            });
            map.insert(project.to_string(), judged.clone());
            !same
        };
        if !changed {
            return;
        }
        let Ok(id) = ProjectId::parse(project) else {
            return;
        };
        if let Err(e) = write_file(home, &id, &judged) {
            tracing::warn!(project, error = %e, "cannot write the daemon's wait reasons for bb");
        }
    }

    /// What the daemon says of `project`'s tasks, for the API (`paused`:
    /// the ticker's state).
    pub fn side(&self, paused: bool, project: &str) -> DaemonSide {
        if paused {
            DaemonSide::Paused
        } else {
            DaemonSide::Running(self.get(project))
        }
    }
}

fn write_file(home: &Home, id: &ProjectId, judged: &DaemonWaits) -> std::io::Result<()> {
    let path = home.daemon_waits_file(id);
    if let Some(dir) = path.parent() {
        crate::home::create_private_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(judged).map_err(std::io::Error::other)?;
    crate::home::write_private_file(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)
}

/// Why the ready tasks a tick did not look at wait (its query stops at
/// `window` tasks): the run slots when the slots ran out among those it
/// looked at, else their place behind them.
pub fn beyond_the_window(
    judged: &BTreeMap<String, Vec<WaitingFor>>,
    window: usize,
) -> Vec<WaitingFor> {
    let slots = judged
        .values()
        .flatten()
        .find(|w| matches!(w, WaitingFor::RunSlots { .. }));
    match slots {
        Some(w) => vec![w.clone()],
        None => vec![WaitingFor::Queue { ahead: window }],
    }
}

/// Open tasks a zombie alert names, most urgent first.
const STUCK_NAMED: i64 = 5;

/// The most urgent open tasks of `proj` that wait, each with why (as the
/// API says it), for the zombie alert; empty when none can be read.
pub async fn stuck(proj: &OpenProject, side: &DaemonSide) -> BTreeMap<String, Vec<Wait>> {
    let filter = TaskFilter {
        statuses: vec![
            TaskStatus::Pending,
            TaskStatus::Blocked,
            TaskStatus::Working,
        ],
        limit: STUCK_NAMED,
        ..TaskFilter::default()
    };
    let tasks = match proj.service.list_tasks(&filter).await {
        Ok(tasks) => tasks,
        Err(e) => {
            tracing::warn!(project = %proj.id, error = %e, "cannot read the stuck tasks");
            return BTreeMap::new();
        }
    };
    proj.service.waits(&tasks, side).await.unwrap_or_else(|e| {
        tracing::warn!(project = %proj.id, error = %e, "cannot judge the stuck tasks");
        BTreeMap::new()
    })
}

/// `stuck` as the alert's text: `; T-0002 waits for: …; T-0003 …`.
pub fn stuck_text(stuck: &BTreeMap<String, Vec<Wait>>) -> String {
    stuck
        .iter()
        .map(|(id, why)| {
            let why: Vec<&str> = why.iter().map(|w| w.text.as_str()).collect();
            format!("; {id} waits for: {}", why.join(", "))
        })
        .collect()
}

/// What the daemon serving `home` published for `project` (for `bb`,
/// which runs without it): stopped when no daemon holds the home; a file
/// written by a process that is gone is not read (a daemon holds the home
/// for its whole life, so a live writer is the holder). The holder's PID is
/// not asked for: the kernel's lock table is slow to read
/// ([`super::home_lock::is_held`]).
pub fn published(home: &Home, project: &ProjectId) -> DaemonSide {
    if !super::home_lock::is_held(home) {
        return DaemonSide::Stopped;
    }
    let judged = std::fs::read(home.daemon_waits_file(project))
        .ok()
        .and_then(|b| serde_json::from_slice::<DaemonWaits>(&b).ok())
        .filter(|w| super::home_lock::alive(w.pid));
    match judged {
        Some(w) if w.paused => DaemonSide::Paused,
        judged => DaemonSide::Running(judged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `bb` reads of the daemon: stopped without a holder; with one,
    /// the waits file only when its writer is alive (a file left by a
    /// daemon that is gone is stale), paused when it says so.
    #[test]
    fn published_reads_the_waits_of_a_live_writer_only_while_the_home_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let project = ProjectId::parse("shop").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let stale = DaemonWaits {
            pid: gone,
            unjudged: vec![WaitingFor::Paused.to_wire()],
            ..DaemonWaits::default()
        };
        write_file(&home, &project, &stale).unwrap();
        assert_eq!(published(&home, &project), DaemonSide::Stopped);

        let _held = super::super::home_lock::HomeLock::acquire(&home).unwrap();
        assert_eq!(
            published(&home, &project),
            DaemonSide::Running(None),
            "a file whose writer is gone is not read"
        );
        let live = DaemonWaits {
            pid: std::process::id(),
            ..stale.clone()
        };
        write_file(&home, &project, &live).unwrap();
        assert_eq!(
            published(&home, &project),
            DaemonSide::Running(Some(live.clone()))
        );
        let paused = DaemonWaits {
            paused: true,
            ..live
        };
        write_file(&home, &project, &paused).unwrap();
        assert_eq!(published(&home, &project), DaemonSide::Paused);
    }
}
