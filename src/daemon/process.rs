//! Agent processes as the operating system sees them: signalling a run's
//! process group, and finding (and killing) every process that carries a
//! run's `MOZI_SESSION` marker, in whatever group or session it went to.
//! Below both `runs` (supervision) and `recovery` (a restart), which use it.

use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Sends `sig` to a whole process group; a group that is gone is fine.
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    if pgid <= 1 {
        return false;
    }
    killpg(Pid::from_raw(pgid), sig).is_ok()
}

/// Pids of live processes whose environment names `session`
/// (`MOZI_SESSION=<session>`), in any process group or session.
pub fn session_processes(session: &str) -> Vec<i32> {
    let needle = format!("MOZI_SESSION={session}");
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| *pid != me)
        .filter(|pid| {
            // Field 3 of /proc/<pid>/stat is the state; a zombie is gone
            // already (its parent only has to reap it).
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILLs every process carrying the session's marker, again until none is
/// left (a process may fork while it is being killed); bounded.
pub fn kill_session_processes(session: &str) -> usize {
    let mut killed = 0;
    for _ in 0..20 {
        let left = session_processes(session);
        if left.is_empty() {
            break;
        }
        for pid in left {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    killed
}
