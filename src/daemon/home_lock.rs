//! One daemon per home (issue 13, defect 6; issue 23, finding 4).
//!
//! Two `moziplus serve` on one home both ran recovery (killing each other's
//! runs as "left running") and both ticked (running tasks twice). The daemon
//! therefore holds an exclusive `flock` for its whole life; a second start is
//! refused with a message naming the holder. The kernel drops the lock when
//! the process dies, however it dies, so a kill -9 never leaves a stale lock
//! behind.
//!
//! The lock is taken on the **home directory itself**, not on
//! `<home>/daemon.lock`. A lock on that file held only as long as the file
//! did: a crash leaves it behind with a PID inside, which invites `rm`, and
//! after `rm` a second `serve` created a new file (a new inode), locked it
//! and ran beside the first. The home directory cannot be deleted while it
//! holds the projects, and replacing it means moving the whole home. The file
//! stays, as information: the holder writes its PID there for people and
//! tools, but nothing trusts it — [`holder`] asks the kernel (`/proc/locks`)
//! who holds the directory's lock, and `doctor` prints that.
//!
//! Commands that only need to know *whether* a daemon serves the home (`bb
//! read`, `bb list`, `budget`) ask [`is_held`] instead: a non-blocking shared
//! lock, given back at once. Reading `/proc/locks` makes the kernel take its
//! file-lock semaphore for writing, which waits for an RCU grace period:
//! 5–20 ms whenever nobody read the table in the last few milliseconds (and
//! every lock call on the machine waits meanwhile). That read made `bb read`
//! between two claims cost 22 ms instead of 7.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::error::DaemonError;
use crate::home::Home;

/// Held while the daemon runs; dropping it releases the home.
#[derive(Debug)]
pub struct HomeLock {
    _dir: Flock<std::fs::File>,
}

/// Who holds a home's lock, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No process holds it: no daemon serves this home.
    Free,
    /// Held by this process (from `/proc/locks`; `None` when the kernel's
    /// table was unreadable and only the lock attempt said it is held).
    Process(Option<u32>),
}

impl HomeLock {
    /// Takes the home's lock, or says who holds it.
    pub fn acquire(home: &Home) -> Result<HomeLock, DaemonError> {
        let root = home.root();
        let mut dir = open_dir(home)?;
        // An [`is_held`] probe holds a shared lock for an instant: a refused
        // lock is asked again for a moment before the start is refused.
        let deadline = Instant::now() + PROBE_GRACE;
        let errno = loop {
            match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
                Ok(l) => return Ok(HomeLock { _dir: l }),
                Err((back, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    dir = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((_, e)) => break e,
            }
        };
        if errno == nix::errno::Errno::EWOULDBLOCK {
            let who = match holder(home) {
                Holder::Process(Some(pid)) => format!("pid {pid}"),
                _ => "another process".to_string(),
            };
            return Err(DaemonError::Refused(format!(
                "another moziplus daemon ({who}) is already serving home {} (it holds an \
                 exclusive lock on the home directory); stop it first, or use another --home",
                root.display(),
            )));
        }
        Err(DaemonError::Refused(format!(
            "cannot lock the home directory {}: {errno}",
            root.display()
        )))
    }

    /// Records who holds the lock in `<home>/daemon.lock`, for people
    /// (nothing trusts the file). Called once the daemon will run (its port
    /// is bound), so a start refused before that leaves nothing behind.
    pub fn record(&self, home: &Home) -> Result<(), DaemonError> {
        let path = home.daemon_lock_file();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{}", std::process::id()))
            .map_err(|e| DaemonError::Refused(format!("cannot write {}: {e}", path.display())))
    }
}

fn open_dir(home: &Home) -> Result<std::fs::File, DaemonError> {
    let root = home.root();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
        .open(root)
        .map_err(|e| {
            DaemonError::Refused(format!(
                "cannot open the home directory {}: {e}",
                root.display()
            ))
        })
}

/// How long [`HomeLock::acquire`] asks again while the lock is refused: an
/// [`is_held`] probe's shared lock lasts microseconds.
const PROBE_GRACE: Duration = Duration::from_millis(100);

/// Whether a process holds `home`'s lock (a daemon serves it), without the
/// kernel's lock table (see the module docs): a non-blocking shared lock on
/// the home directory, given back at once when granted. The daemon's
/// exclusive lock refuses it. Where the kernel cannot lock at all, [`holder`]
/// answers.
pub fn is_held(home: &Home) -> bool {
    let Ok(dir) = open_dir(home) else {
        return false;
    };
    match Flock::lock(dir, FlockArg::LockSharedNonblock) {
        Ok(_probe) => false,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => true,
        Err(_) => holder(home) != Holder::Free,
    }
}

/// Whether process `pid` exists (a signal 0 may be sent to it, or is
/// refused for permission only).
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Who holds `home`'s lock: the kernel's lock table (`/proc/locks`), or,
/// where that cannot be read, a non-blocking probe (taken and dropped at once
/// when free).
pub fn holder(home: &Home) -> Holder {
    let Ok(dir) = open_dir(home) else {
        return Holder::Free;
    };
    let Ok(meta) = dir.metadata() else {
        return Holder::Free;
    };
    if let Ok(locks) = std::fs::read_to_string("/proc/locks") {
        return match flock_holder(&locks, meta.dev(), meta.ino()) {
            Some(pid) => Holder::Process(Some(pid)),
            None => Holder::Free,
        };
    }
    match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(_probe) => Holder::Free,
        Err(_) => Holder::Process(None),
    }
}

/// The PID holding a `FLOCK` on the file `dev`/`ino` in the text of
/// `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 4242 08:01:131 0 EOF`: device
/// major and minor in hex, then the inode in decimal). Lines starting with
/// `->` are waiters, not holders.
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid: u32 = fields.get(4)?.parse().ok()?;
        let mut id = fields.get(5)?.split(':');
        let maj = u64::from_str_radix(id.next()?, 16).ok()?;
        let min = u64::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && inode == ino).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_home_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        assert_eq!(holder(&home), Holder::Free);
        let first = HomeLock::acquire(&home).expect("first lock");
        let err = HomeLock::acquire(&home).expect_err("second lock refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "names the holder: {text}"
        );
        assert_eq!(holder(&home), Holder::Process(Some(std::process::id())));
        drop(first);
        // A child forked by another test of this binary in the instant the
        // lock was open shares its open file until that child execs, so
        // the release may show a moment late.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while holder(&home) != Holder::Free && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(holder(&home), Holder::Free);
        HomeLock::acquire(&home).expect("free again once released");
    }

    #[test]
    fn the_probe_sees_the_daemons_lock_and_leaves_a_free_home_free() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        assert!(!is_held(&home));
        let first = HomeLock::acquire(&home).expect("free after a probe");
        assert!(is_held(&home));
        assert!(is_held(&home), "the probe takes nothing from the holder");
        drop(first);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_held(&home) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!is_held(&home));
        HomeLock::acquire(&home).expect("free again once released");
    }

    #[test]
    fn a_start_during_a_probe_waits_for_it_instead_of_being_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        // A probe's shared lock, held 20 ms here instead of microseconds.
        let probe = Flock::lock(open_dir(&home).unwrap(), FlockArg::LockSharedNonblock)
            .expect("a shared lock on a free home");
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(probe);
        });
        HomeLock::acquire(&home).expect("the start waits out the probe");
        release.join().unwrap();
    }

    #[test]
    fn alive_knows_this_process_and_not_a_reaped_child() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn deleting_the_lock_file_does_not_free_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let first = HomeLock::acquire(&home).expect("first lock");
        first.record(&home).expect("the PID recorded");
        let pid = std::fs::read_to_string(home.daemon_lock_file()).unwrap();
        assert_eq!(
            pid.trim(),
            std::process::id().to_string(),
            "the PID is recorded"
        );
        std::fs::remove_file(home.daemon_lock_file()).unwrap();
        let err = HomeLock::acquire(&home).expect_err("still held after rm daemon.lock");
        assert!(err.to_string().contains("already serving"), "{err}");
    }

    #[test]
    fn lock_table_lines_are_matched_by_device_and_inode() {
        let dev = nix::sys::stat::makedev(0x103, 0x2a);
        let table = "1: POSIX  ADVISORY  WRITE 7 103:2a:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 11 103:2a:98 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 12 103:2a:99 0 EOF\n\
                     3: -> FLOCK  ADVISORY  WRITE 13 103:2a:99 0 EOF\n";
        assert_eq!(flock_holder(table, dev, 99), Some(12));
        assert_eq!(flock_holder(table, dev, 98), Some(11));
        assert_eq!(flock_holder(table, dev, 97), None);
    }
}
