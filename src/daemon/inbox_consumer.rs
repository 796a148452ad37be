//! The inbox consumer, and the daemon's end of the wake socket
//! ([`crate::inbox::wake::Listener`]).
//!
//! Lines are read from the persisted offset; each is applied once. `wake` is
//! idempotent by nature; `create_task` records the line's key
//! (`<inode>:<offset>`) in the project's `inbox_applied` table in the same
//! transaction as the task, so a crash between applying a line and saving the
//! offset cannot apply it twice. Malformed lines become observations (in the
//! project they name, else in the daemon's status) and are skipped.
//!
//! Compaction (see [`crate::inbox`] for the writers' side): once the file is
//! fully consumed and larger than `max_size_bytes`, the daemon takes the
//! exclusive lock, checks again that nothing arrived, and renames a fresh empty
//! file over it. The new inode tells a restarted daemon to start at 0.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use serde::{Deserialize, Serialize};

use super::Daemon;
use crate::blackboard::{Actor, ObservationLevel};
use crate::inbox::wake;
use crate::service::{Notifier, ProjectService};

/// The persisted read position.
///
/// Inode numbers are recycled by the file system, so a line's idempotency key
/// is not `inode:offset` but `epoch.generation:offset`: `generation` grows by
/// one each time the file is replaced (compaction, or found replaced at
/// start), and `epoch` is random per fresh state so a deleted state file can
/// never make new lines collide with old keys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
struct Position {
    inode: u64,
    offset: u64,
    #[serde(default)]
    generation: u64,
    #[serde(default = "new_epoch")]
    epoch: u64,
    /// Inside a line longer than `inbox.max_line_bytes`, already reported:
    /// everything up to its newline is skipped (also across a restart).
    #[serde(default)]
    skipping: bool,
}

fn new_epoch() -> u64 {
    rand::random::<u64>()
}

impl Default for Position {
    fn default() -> Self {
        Position {
            inode: 0,
            offset: 0,
            generation: 0,
            epoch: new_epoch(),
            skipping: false,
        }
    }
}

impl Position {
    /// The position at the start of a replaced file.
    fn next_file(self, inode: u64) -> Position {
        Position {
            inode,
            offset: 0,
            generation: self.generation + 1,
            epoch: self.epoch,
            skipping: false,
        }
    }
    fn key(&self, offset: u64) -> String {
        format!("{:016x}.{}:{}", self.epoch, self.generation, offset)
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum InboxLine {
    Wake {
        /// Accepted for the writers' benefit; every wake ticks all projects.
        #[serde(default)]
        #[allow(dead_code)]
        project: Option<String>,
        /// The writer's own line id, for its tracing; ignored.
        #[serde(default)]
        #[allow(dead_code)]
        id: Option<serde_json::Value>,
    },
    CreateTask {
        project: String,
        task: Box<crate::wire::NewTask>,
        #[serde(default)]
        creator: Option<String>,
    },
}

fn inbox_path(d: &Daemon) -> PathBuf {
    d.home().inbox_file(&d.config().inbox.path)
}

fn position_path(inbox: &Path) -> PathBuf {
    inbox.with_extension("offset")
}

fn load_position(inbox: &Path) -> Position {
    std::fs::read_to_string(position_path(inbox))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn save_position(inbox: &Path, pos: Position) -> std::io::Result<()> {
    let path = position_path(inbox);
    let tmp = path.with_extension("offset.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&pos)?)?;
    std::fs::rename(tmp, path)
}

/// Runs until shutdown: watches the inbox and the wake socket.
pub async fn run(d: Daemon) {
    let path = inbox_path(&d);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // The wake socket: CLI writes send their project id here.
    let socket = match wake::Listener::bind(d.home()) {
        Ok(listener) => Some(listener),
        Err((sock_path, e)) => {
            tracing::warn!(path = %sock_path.display(), error = %e, "cannot bind the wake socket; CLI writes wake the daemon only via the inbox");
            None
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = {
        let tx = tx.clone();
        let inbox = path.clone();
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Only changes of the inbox itself. Our own reads (access events)
            // and offset saves in the same folder must not wake the consumer:
            // with a partial line at the end, each pass read the file again,
            // which woke the next pass — a busy loop (issue 13, defect 2).
            let relevant = match res {
                Ok(ev) => !ev.kind.is_access() && ev.paths.contains(&inbox),
                Err(_) => true,
            };
            if relevant {
                let _ = tx.try_send(());
            }
        })
        .and_then(|mut w| {
            w.watch(
                path.parent().unwrap_or(Path::new(".")),
                notify::RecursiveMode::NonRecursive,
            )?;
            Ok(w)
        })
    };
    if let Err(e) = &watcher {
        tracing::warn!(error = %e, "file notifications unavailable; polling the inbox");
    }
    let poll = Duration::from_secs_f64(d.config().inbox.watch_interval);
    let mut shutdown = d.shutdown_signal();
    let mut pos = load_position(&path);
    let mut tail = Tail::default();
    loop {
        pos = consume(&d, &path, pos, &mut tail).await;
        tokio::select! {
            _ = rx.recv() => {}
            _ = tokio::time::sleep(poll) => {}
            r = async { match &socket { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                if r.is_ok() { d.wake(); }
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(watcher);
    drop(socket); // removes the socket file
}

/// What the last pass saw at the end of the file: a partial line (no newline
/// yet) of the file `inode`, which ended at `len`. Until the file grows or is
/// replaced there is nothing new to read, so a pass only `stat`s it.
#[derive(Debug, Default, Clone, Copy)]
struct Tail {
    inode: u64,
    len: u64,
}

/// Applies every complete line after `pos`; compacts when due. Returns the
/// new position.
///
/// A line longer than `inbox.max_line_bytes` becomes one malformed-line
/// observation and is skipped up to its newline, however long it is; a
/// partial last line within the limit waits for its newline without being
/// read again until the file changes.
async fn consume(d: &Daemon, path: &Path, mut pos: Position, tail: &mut Tail) -> Position {
    let Ok(meta) = std::fs::metadata(path) else {
        return pos;
    };
    if meta.ino() != pos.inode {
        // A new file (first start, or compacted before the last save).
        pos = pos.next_file(meta.ino());
    }
    if meta.len() < pos.offset {
        // Truncated by hand: start over on what is there.
        pos.offset = 0;
        pos.skipping = false;
    }
    let unchanged_tail = tail.inode == meta.ino() && tail.len == meta.len();
    if meta.len() > pos.offset && !unchanged_tail {
        let before = pos;
        let woke = read_new_lines(d, path, &mut pos, meta.len()).await;
        if pos.offset < meta.len() && !pos.skipping {
            // A partial line waits for its newline.
            *tail = Tail {
                inode: meta.ino(),
                len: meta.len(),
            };
        } else {
            *tail = Tail::default();
        }
        // Saved once per pass (and only when it moved): lines re-read after a
        // crash are harmless, since `wake` is idempotent and `create_task`
        // carries its idempotency key.
        if pos != before {
            if let Err(e) = save_position(path, pos) {
                d.update_inbox_stats(|s| {
                    s.last_error = Some(format!("cannot save inbox offset: {e}"))
                });
            }
        }
        if woke {
            d.wake();
        }
    }
    d.update_inbox_stats(|s| s.pending_bytes = meta.len().saturating_sub(pos.offset));
    if pos.offset >= d.config().inbox.max_size_bytes && !pos.skipping {
        match compact(path, pos) {
            Ok(Some(new)) => {
                pos = new;
                let _ = save_position(path, pos);
                d.update_inbox_stats(|s| s.compactions += 1);
            }
            Ok(None) => {}
            Err(e) => {
                d.update_inbox_stats(|s| s.last_error = Some(format!("compaction failed: {e}")))
            }
        }
    }
    pos
}

/// Applies the whole lines after `pos` (up to the file's `len`), moving
/// `pos` past them; a line over `inbox.max_line_bytes` is reported once and
/// skipped to its newline. Returns whether any line was applied.
async fn read_new_lines(d: &Daemon, path: &Path, pos: &mut Position, len: u64) -> bool {
    let max_line = d.config().inbox.max_line_bytes;
    let mut woke = false;
    // Each read holds at least one whole line within the limit.
    let chunk = READ_CHUNK.max(max_line + 1);
    loop {
        let data = match read_from(path, pos.offset, chunk) {
            Ok(data) => data,
            Err(e) => {
                d.update_inbox_stats(|s| s.last_error = Some(e.to_string()));
                break;
            }
        };
        let mut at = 0usize;
        if pos.skipping {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    at = i + 1;
                    pos.skipping = false;
                }
                None => at = data.len(),
            }
        }
        while !pos.skipping && at < data.len() {
            let rest = &data[at..];
            let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                if rest.len() as u64 > max_line {
                    // Too long already: report once, skip to its newline.
                    too_long(d, rest, rest.len() as u64, max_line, false).await;
                    pos.skipping = true;
                    at = data.len();
                }
                break;
            };
            let line = &rest[..nl];
            let key = pos.key(pos.offset + at as u64);
            at += nl + 1;
            if line.len() as u64 > max_line {
                too_long(d, line, line.len() as u64, max_line, true).await;
                continue;
            }
            let text = String::from_utf8_lossy(line);
            let text = text.trim();
            if !text.is_empty() {
                apply(d, text, &key).await;
                woke = true;
            }
        }
        pos.offset += at as u64;
        // More to read only if this chunk was full and moved us on.
        if at == 0 || (data.len() as u64) < chunk || pos.offset >= len {
            break;
        }
    }
    woke
}

/// Bytes read per pass at most (more when `max_line_bytes` is larger).
const READ_CHUNK: u64 = 8 << 20;

/// One malformed-line report for a line over the limit (`whole`: its length
/// is known; else it is at least `len` and still growing).
async fn too_long(d: &Daemon, start: &[u8], len: u64, max_line: u64, whole: bool) {
    let shown = String::from_utf8_lossy(&start[..start.len().min(300)]).to_string();
    let why = match crate::inbox::line_over_limit(len, max_line) {
        Some(why) if whole => why,
        _ => {
            format!("a line of more than {max_line} bytes (inbox.max_line_bytes) with no end yet; skipped up to its newline")
        }
    };
    malformed(d, named_project(&shown).as_deref(), &shown, &why).await;
}

/// The project a line that is no JSON (torn, cut short) names in its text,
/// so the right board shows the report.
fn named_project(text: &str) -> Option<String> {
    text.split_once("\"project\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(p, _)| p.to_string())
}

fn read_from(path: &Path, offset: u64, limit: u64) -> std::io::Result<Vec<u8>> {
    // Never a blocking open: the daemon's runtime is one thread, and a FIFO
    // planted as the inbox would freeze it (issue 13, defect 13).
    let mut f = crate::safe_fs::open_regular(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    // Bounded per pass: a huge backlog is consumed over several reads.
    f.take(limit).read_to_end(&mut data)?;
    Ok(data)
}

/// Replaces a fully consumed inbox by an empty file, under the exclusive lock.
fn compact(path: &Path, pos: Position) -> std::io::Result<Option<Position>> {
    let f = crate::safe_fs::open_regular(path)?;
    let locked = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    let meta = locked.metadata()?;
    if meta.ino() != pos.inode || meta.len() != pos.offset {
        // A writer got in before our lock: consume first, compact later.
        return Ok(None);
    }
    let tmp = path.with_extension("jsonl.new");
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
    }
    std::fs::rename(&tmp, path)?;
    let ino = std::fs::metadata(path)?.ino();
    drop(locked);
    Ok(Some(pos.next_file(ino)))
}

async fn apply(d: &Daemon, text: &str, key: &str) {
    let parsed: Result<InboxLine, String> = serde_json::from_str(text).map_err(|e| e.to_string());
    match parsed {
        Ok(InboxLine::Wake { .. }) => {
            d.update_inbox_stats(|s| s.applied += 1);
        }
        Ok(InboxLine::CreateTask {
            project,
            task,
            creator,
        }) => {
            let Some(slot) = d.projects().get(&project) else {
                malformed(
                    d,
                    Some(&project),
                    text,
                    &format!("unknown or unavailable project {project:?}"),
                )
                .await;
                return;
            };
            let Some(bb) = slot.bb else {
                malformed(d, None, text, &format!("project {project} is unavailable")).await;
                return;
            };
            let actor = Actor::operator(creator.unwrap_or_else(|| "inbox".into()));
            // The consumer wakes the daemon once per batch it applied.
            let service =
                ProjectService::new(bb, d.home().clone(), slot.id.clone(), Notifier::none());
            let force = task.force;
            match service
                .create_task_once((*task).into(), &actor, key, force)
                .await
            {
                Ok(_) => d.update_inbox_stats(|s| s.applied += 1),
                Err(e) => malformed(d, Some(&project), text, &e.to_string()).await,
            }
        }
        Err(e) => {
            // Name the project if the line has one, so the right board shows it.
            let project = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| {
                    v.get("project")
                        .and_then(|p| p.as_str())
                        .map(str::to_string)
                })
                .or_else(|| named_project(text));
            malformed(d, project.as_deref(), text, &e).await;
        }
    }
}

async fn malformed(d: &Daemon, project: Option<&str>, line: &str, why: &str) {
    let shown: String = line.chars().take(300).collect();
    let body = format!("inbox line skipped ({why}): {shown}");
    tracing::warn!(%body, "inbox");
    d.update_inbox_stats(|s| {
        s.malformed += 1;
        s.last_error = Some(body.clone());
    });
    if let Some(bb) = project.and_then(|p| d.projects().get(p)).and_then(|s| s.bb) {
        let _ = bb
            .add_observation(ObservationLevel::Warn, &Actor::daemon(), None, &body)
            .await;
    }
}
