//! Infrastructure failures of runs, and the backoff they impose.
//!
//! A run that cannot start for a reason that is not the agent's — its CLI is
//! not installed, the home or the database is read-only, the process is out
//! of file descriptors — costs the task no round. Instead the agent is held
//! on that project for a backoff (`daemon.retry_backoff`, by default 10 s,
//! 60 s, 5 min, then 5 min again) and the project is *degraded*: readiness
//! and the dashboard name the problem until a run of that agent starts again.
//!
//! The same schedule spaces the rounds of a task whose runs fail (an agent
//! failure costs a round, but rounds are not burnt faster than the backoff).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::locks::Recover;
use serde::Serialize;

/// One infrastructure problem, as readiness and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    pub project: String,
    pub agent: String,
    pub runtime: String,
    pub reason: String,
    /// Consecutive failures.
    pub failures: u32,
    /// UTC milliseconds.
    pub since_ms: i64,
    /// No run of this agent starts on this project before this time (UTC ms).
    pub retry_at_ms: i64,
}

/// Something the operator should fix that holds no other work back: a
/// broken skill the briefs skip, a review seat only the task's author fits.
/// Readiness lists them (`warnings`) without turning unready.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Warning {
    pub project: String,
    /// `skill` (a skill folder that does not load) or `review` (a task in
    /// review whose seat no agent but its author fits).
    pub kind: String,
    /// The skill folder, or the task id.
    pub subject: String,
    /// What is wrong and what to do.
    pub reason: String,
    /// First seen (UTC ms).
    pub since_ms: i64,
}

/// The daemon's record of infrastructure problems (per project and agent).
#[derive(Debug, Default)]
pub struct RuntimeHealth {
    problems: Mutex<BTreeMap<(String, String), Problem>>,
    /// Current warnings by (project, kind): each report replaces the last.
    warnings: Mutex<BTreeMap<(String, String), Vec<Warning>>>,
    /// Things reported once (e.g. "task held: its review protocol is unusable").
    noted: Mutex<BTreeSet<String>>,
}

/// The wait after the `failures`-th consecutive failure.
pub fn backoff(schedule: &[u64], failures: u32) -> Duration {
    let i = (failures.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    Duration::from_secs(schedule.get(i).copied().unwrap_or(0))
}

impl RuntimeHealth {
    /// Records an infrastructure failure; returns the backoff imposed.
    pub fn failed(
        &self,
        project: &str,
        agent: &str,
        runtime: &str,
        reason: &str,
        now_ms: i64,
        schedule: &[u64],
    ) -> Duration {
        let mut map = self.problems.locked();
        let p = map
            .entry((project.to_string(), agent.to_string()))
            .or_insert_with(|| Problem {
                project: project.to_string(),
                agent: agent.to_string(),
                runtime: runtime.to_string(),
                reason: String::new(),
                failures: 0,
                since_ms: now_ms,
                retry_at_ms: now_ms,
            });
        p.failures += 1;
        p.reason = reason.to_string();
        p.runtime = runtime.to_string();
        let wait = backoff(schedule, p.failures);
        p.retry_at_ms = now_ms + wait.as_millis() as i64;
        wait
    }

    /// A run of `agent` on `project` started: the problem is over.
    pub fn started(&self, project: &str, agent: &str) {
        let mut map = self.problems.locked();
        if !map.is_empty() {
            map.remove(&(project.to_string(), agent.to_string()));
        }
    }

    /// Whether `agent` must not start on `project` now (in its backoff).
    pub fn held(&self, project: &str, agent: &str, now_ms: i64) -> bool {
        let map = self.problems.locked();
        !map.is_empty()
            && map
                .get(&(project.to_string(), agent.to_string()))
                .is_some_and(|p| p.retry_at_ms > now_ms)
    }

    /// The problem holding `agent` on `project` at `now_ms`, if it is held.
    pub fn holding(&self, project: &str, agent: &str, now_ms: i64) -> Option<Problem> {
        let map = self.problems.locked();
        map.get(&(project.to_string(), agent.to_string()))
            .filter(|p| p.retry_at_ms > now_ms)
            .cloned()
    }

    /// Every current problem, by project then agent. A problem whose retry
    /// time passed more than `linger_ms` ago without a new attempt (the
    /// agent had no more work to try with) is forgotten, so readiness does
    /// not stay degraded for an agent nobody needs.
    pub fn problems(&self, now_ms: i64, linger_ms: i64) -> Vec<Problem> {
        let mut map = self.problems.locked();
        map.retain(|_, p| p.retry_at_ms.saturating_add(linger_ms) > now_ms);
        map.values().cloned().collect()
    }

    /// Replaces `project`'s warnings of `kind` with `now` (empty clears
    /// them); a warning already known keeps its `since_ms`.
    pub fn set_warnings(&self, project: &str, kind: &str, mut now: Vec<Warning>) {
        let mut map = self.warnings.locked();
        let key = (project.to_string(), kind.to_string());
        if now.is_empty() {
            map.remove(&key);
            return;
        }
        if let Some(old) = map.get(&key) {
            for w in &mut now {
                if let Some(o) = old.iter().find(|o| o.subject == w.subject) {
                    w.since_ms = o.since_ms;
                }
            }
        }
        map.insert(key, now);
    }

    /// Every current warning, by project then kind.
    pub fn warnings(&self) -> Vec<Warning> {
        let map = self.warnings.locked();
        map.values().flatten().cloned().collect()
    }

    /// True the first time `key` is noted.
    pub fn note_once(&self, key: String) -> bool {
        self.noted.locked().insert(key)
    }
}

/// Whether an I/O error is the machine's, not the agent's: a missing or
/// unusable program, a read-only or full file system, no descriptors left.
pub fn is_infrastructure(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::NotFound | K::PermissionDenied | K::ReadOnlyFilesystem | K::StorageFull | K::OutOfMemory
    ) {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE)
            | Some(nix::libc::ENFILE)
            | Some(nix::libc::EROFS)
            | Some(nix::libc::ENOSPC)
            | Some(nix::libc::EACCES)
            | Some(nix::libc::ENOENT)
            | Some(nix::libc::ENOEXEC)
            | Some(nix::libc::EAGAIN)
            | Some(nix::libc::ENOMEM)
    )
}

/// Whether an error's text says the same (for errors that carry no
/// `io::Error`, such as SQLite's "attempt to write a readonly database").
pub fn message_is_infrastructure(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "readonly database",
        "read-only",
        "too many open files",
        "os error 24",
        "os error 23",
        "os error 30",
        "os error 28",
        "disk i/o error",
        "unable to open database",
        "database or disk is full",
        "no space left",
    ]
    .iter()
    .any(|m| t.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_replace_per_project_and_kind_and_keep_their_first_time() {
        let h = RuntimeHealth::default();
        let w = |subject: &str, at: i64| Warning {
            project: "p".into(),
            kind: "skill".into(),
            subject: subject.into(),
            reason: "broken".into(),
            since_ms: at,
        };
        h.set_warnings("p", "skill", vec![w("a", 1), w("b", 1)]);
        h.set_warnings(
            "q",
            "review",
            vec![Warning {
                project: "q".into(),
                kind: "review".into(),
                ..w("T-1", 5)
            }],
        );
        h.set_warnings("p", "skill", vec![w("b", 9)]);
        let now = h.warnings();
        assert_eq!(now.len(), 2, "{now:?}");
        assert_eq!((now[0].subject.as_str(), now[0].since_ms), ("b", 1));
        h.set_warnings("p", "skill", Vec::new());
        assert_eq!(h.warnings().len(), 1);
        assert_eq!(h.warnings()[0].project, "q");
    }

    #[test]
    fn backoff_follows_the_schedule_and_stays_at_its_end() {
        let s = [10, 60, 300];
        assert_eq!(backoff(&s, 1), Duration::from_secs(10));
        assert_eq!(backoff(&s, 2), Duration::from_secs(60));
        assert_eq!(backoff(&s, 3), Duration::from_secs(300));
        assert_eq!(backoff(&s, 9), Duration::from_secs(300));
        assert_eq!(backoff(&[], 1), Duration::ZERO);
    }

    #[test]
    fn a_failure_holds_the_agent_until_its_backoff_ends_or_a_run_starts() {
        let h = RuntimeHealth::default();
        let wait = h.failed(
            "p1",
            "coder",
            "codex",
            "`codex` not found",
            1_000,
            &[10, 60],
        );
        assert_eq!(wait, Duration::from_secs(10));
        assert!(h.held("p1", "coder", 5_000));
        assert!(!h.held("p1", "coder", 11_000));
        assert!(!h.held("p2", "coder", 5_000));
        assert_eq!(h.problems(5_000, 60_000).len(), 1);
        let wait = h.failed(
            "p1",
            "coder",
            "codex",
            "`codex` not found",
            11_000,
            &[10, 60],
        );
        assert_eq!(wait, Duration::from_secs(60));
        assert_eq!(h.problems(11_000, 60_000)[0].failures, 2);
        // Not retried long after its retry time: forgotten.
        assert!(h.problems(71_000 + 60_000, 60_000).is_empty());
        h.failed(
            "p1",
            "coder",
            "codex",
            "`codex` not found",
            200_000,
            &[10, 60],
        );
        h.started("p1", "coder");
        assert!(h.problems(200_001, 60_000).is_empty());
        assert!(!h.held("p1", "coder", 11_001));
    }

    #[test]
    fn infrastructure_errors_are_told_from_the_rest() {
        assert!(is_infrastructure(&std::io::Error::from_raw_os_error(
            nix::libc::EMFILE
        )));
        assert!(is_infrastructure(&std::io::Error::from(
            std::io::ErrorKind::NotFound
        )));
        assert!(!is_infrastructure(&std::io::Error::from(
            std::io::ErrorKind::InvalidData
        )));
        assert!(message_is_infrastructure(
            "error returned from database: (code: 8) attempt to write a readonly database"
        ));
        assert!(!message_is_infrastructure("task T-1 is done, not working"));
    }
}
