//! The daemon's inbox: `inbox/daemon.jsonl`, one JSON object per line.
//!
//! Writers append whole lines while holding a *shared* `flock` on the file; the
//! daemon compacts it while holding an *exclusive* one, by renaming a fresh empty
//! file over it. A writer that was waiting for its lock during a compaction would
//! hold the old, unlinked file: after locking it therefore compares the inode of
//! its descriptor with the inode at the path and reopens when they differ. So no
//! line appended concurrently with a compaction is ever lost.
//!
//! CLI writes also *wake* a running daemon through a datagram on
//! `inbox/wake.sock`: both ends of that socket are [`wake`].

pub mod wake;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Why the daemon skips a line of `len` bytes (without its newline), when
/// it does: the one limit and message of the daemon's reader and of `inbox
/// push`, which refuses such a line instead of writing it (issue 23,
/// finding 11: it returned 0 for a 9 MiB line the daemon then skipped).
pub fn line_over_limit(len: u64, max_line_bytes: u64) -> Option<String> {
    (len > max_line_bytes)
        .then(|| format!("a line of {len} bytes is over inbox.max_line_bytes ({max_line_bytes})"))
}

/// Appends one JSON value as a line, safely against concurrent compaction.
pub fn append(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    append_raw(path, &line)
}

/// Appends raw bytes (must be whole lines) under a shared lock.
///
/// Every append starts on a line boundary: if the file ends inside a line (a
/// writer died mid-write), a newline is written first, in the same `write`,
/// so the fragment becomes a line of its own (skipped as malformed by the
/// daemon) instead of swallowing this one.
pub fn append_raw(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let mut locked =
            Flock::lock(file, FlockArg::LockShared).map_err(|(_, e)| std::io::Error::from(e))?;
        // Did a compaction replace the file while we waited for the lock?
        let meta = locked.metadata()?;
        match std::fs::metadata(path) {
            Ok(m) if m.ino() == meta.ino() => {
                let mut last = [b'\n'];
                if meta.len() > 0 {
                    locked.read_exact_at(&mut last, meta.len() - 1)?;
                }
                if last[0] == b'\n' {
                    locked.write_all(bytes)?;
                } else {
                    let mut joined = Vec::with_capacity(bytes.len() + 1);
                    joined.push(b'\n');
                    joined.extend_from_slice(bytes);
                    locked.write_all(&joined)?;
                }
                return Ok(());
            }
            _ => continue,
        }
    }
}
