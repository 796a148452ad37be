//! One daemon per home (issue 13, defect 6).
//!
//! Two `moziplus serve` on one home both ran recovery (killing each other's
//! runs as "left running") and both ticked (running tasks twice). The daemon
//! therefore holds an exclusive `flock` on `<home>/daemon.lock` for its whole
//! life, with its PID written inside; a second start is refused with a message
//! naming that PID. The kernel drops the lock when the process dies, however it
//! dies, so a kill -9 never leaves a stale lock behind.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{Flock, FlockArg};

use super::DaemonError;
use crate::home::Home;

/// Held while the daemon runs; dropping it releases the home.
#[derive(Debug)]
pub struct HomeLock {
    _file: Flock<std::fs::File>,
}

impl HomeLock {
    /// Takes the home's lock, or says who holds it.
    pub fn acquire(home: &Home) -> Result<HomeLock, DaemonError> {
        let path = home.daemon_lock_file();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| DaemonError::Refused(format!("cannot open {}: {e}", path.display())))?;
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let who = if pid.is_empty() {
                    "another process".to_string()
                } else {
                    format!("pid {pid}")
                };
                return Err(DaemonError::Refused(format!(
                    "another moziplus daemon ({who}) is already serving home {} (it holds {}); \
                     stop it first, or use another --home",
                    home.root().display(),
                    path.display()
                )));
            }
            Err((_, e)) => {
                return Err(DaemonError::Refused(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        };
        // Ours now: record who holds it.
        let pid = std::process::id();
        locked
            .set_len(0)
            .and_then(|_| locked.rewind())
            .and_then(|_| writeln!(locked, "{pid}"))
            .map_err(|e| DaemonError::Refused(format!("cannot write {}: {e}", path.display())))?;
        Ok(HomeLock { _file: locked })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_home_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let first = HomeLock::acquire(&home).expect("first lock");
        let err = HomeLock::acquire(&home).expect_err("second lock refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "names the holder: {text}"
        );
        drop(first);
        HomeLock::acquire(&home).expect("free again once released");
    }
}
