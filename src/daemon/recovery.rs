//! Crash recovery (SPEC §5): what a start finds of the previous process.
//!
//! Sessions still marked running belonged to a daemon that died without ending
//! them. Their process groups are looked up in `/proc`; a process is only
//! touched if its environment carries that session's `MOZI_SESSION` (so a
//! recycled pid is never killed by mistake). Live ones are killed — their
//! supervisor is gone, nobody could judge their result — and marked `killed`;
//! dead ones are marked `lost`. Either way the task goes back to `pending`.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::runs::signal_group;
use super::Daemon;
use crate::blackboard::{Actor, ObservationLevel, Outcome, TaskStatus};

/// Pids whose process group is `pgid` and whose environment names `session`.
pub fn session_processes(pgid: i64, session: &str) -> Vec<i32> {
    let needle = format!("MOZI_SESSION={session}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            // Field 5 of /proc/<pid>/stat is the process group.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.to_string()))
                .and_then(|rest| {
                    rest.split_whitespace()
                        .nth(2)
                        .and_then(|g| g.parse::<i64>().ok())
                })
                == Some(pgid)
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Ends every session the previous daemon left running.
pub async fn recover(d: &Daemon) {
    for slot in d.projects().snapshot() {
        let Some(bb) = slot.bb.clone() else { continue };
        let sessions = match bb.running_sessions().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(project = %slot.id, error = %e, "recovery: cannot list sessions");
                continue;
            }
        };
        for s in sessions {
            let live = s
                .pgid
                .map(|g| session_processes(g, &s.id))
                .unwrap_or_default();
            let outcome = if live.is_empty() {
                Outcome::Lost
            } else {
                let pgid = s.pgid.unwrap_or(0) as i32;
                signal_group(pgid, Signal::SIGTERM);
                let deadline =
                    tokio::time::Instant::now() + Duration::from_secs(d.config().daemon.kill_grace);
                while !session_processes(pgid as i64, &s.id).is_empty()
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                signal_group(pgid, Signal::SIGKILL);
                Outcome::Killed
            };
            let why = format!(
                "session {} of {} was left running by a previous daemon ({}); {}",
                s.id,
                s.agent,
                if live.is_empty() {
                    "its processes are gone"
                } else {
                    "its processes were killed"
                },
                outcome
            );
            tracing::warn!(project = %slot.id, session = %s.id, %outcome, "recovery");
            let _ = bb
                .end_session(
                    &s.id,
                    outcome,
                    None,
                    Some(serde_json::json!({ "recovered": true })),
                )
                .await;
            let _ = bb
                .add_observation(
                    ObservationLevel::Warn,
                    &Actor::daemon(),
                    Some(&s.task_id),
                    &why,
                )
                .await;
            if let Ok(t) = bb.task(&s.task_id).await {
                if t.status == TaskStatus::Working
                    && t.claimed_by.as_deref() == Some(s.agent.as_str())
                {
                    let _ = bb.requeue_task(&t.id, &why, "task.run_lost").await;
                }
            }
        }
    }
}
