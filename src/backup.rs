//! Online snapshots of blackboards and their restore.
//!
//! A snapshot is `VACUUM INTO` a temporary file in `backups/<id>/`, renamed to
//! `<UTC timestamp>.db` once complete: it is a read transaction on the live
//! database, so writers keep working and the copy is consistent as of its start.
//!
//! A restore never swaps files under a running daemon. It opens the snapshot
//! (migrating a copy if it is older), then inside one `BEGIN IMMEDIATE`
//! transaction on the live database replaces every table's rows with the
//! snapshot's. Other connections simply see the new state after the commit.

use std::path::{Path, PathBuf};

use crate::blackboard::{BbError, Blackboard, OpenMode};
use crate::home::Home;
use crate::registry::ProjectId;

/// One snapshot file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub project: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Takes a snapshot of one project's blackboard and prunes old ones, keeping
/// the newest `keep`.
pub async fn snapshot_project(
    home: &Home,
    id: &ProjectId,
    keep: usize,
) -> Result<Snapshot, BbError> {
    let bb = Blackboard::open(&home.blackboard_file(id), id.as_str(), OpenMode::CLI).await?;
    let dir = home.project_backups_dir(id);
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let tmp = dir.join(format!(".{stamp}.db.partial"));
    let dest = dir.join(format!("{stamp}.db"));
    let _ = std::fs::remove_file(&tmp);
    let result = bb.snapshot_to(&tmp).await;
    bb.close().await;
    result?;
    std::fs::rename(&tmp, &dest)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))?;
    }
    prune(&dir, keep)?;
    let bytes = std::fs::metadata(&dest)?.len();
    Ok(Snapshot {
        project: id.to_string(),
        path: dest,
        bytes,
    })
}

/// Before a restore replaces a project's board: a copy of it as it stands,
/// under `backups/.replaced/<id>/` (not a snapshot: `restore --latest` never
/// picks it, retention never prunes it). A board that does not open (the
/// corrupt file a restore is often for) is copied as its files are.
/// Returns the copy's path; `None` when there is no board to keep.
pub async fn keep_replaced(home: &Home, id: &ProjectId) -> Result<Option<PathBuf>, BbError> {
    let live = home.blackboard_file(id);
    if !live.exists() {
        return Ok(None);
    }
    let dir = home.backups_dir().join(".replaced").join(id.as_str());
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let tmp = dir.join(format!(".{stamp}.db.partial"));
    let dest = dir.join(format!("{stamp}.db"));
    let _ = std::fs::remove_file(&tmp);
    let copied = match Blackboard::open(&live, id.as_str(), OpenMode::CLI).await {
        Ok(bb) => {
            let result = bb.snapshot_to(&tmp).await;
            bb.close().await;
            result.map(|_| ())
        }
        Err(_) => Err(BbError::Invalid("does not open".into())),
    };
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
        std::fs::copy(&live, &tmp)?;
        let wal = live.with_extension("db-wal");
        if wal.exists() {
            std::fs::copy(&wal, dir.join(format!("{stamp}.db-wal")))?;
        }
    }
    std::fs::rename(&tmp, &dest)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(Some(dest))
}

/// Snapshot files of a project, oldest first.
pub fn list_snapshots(home: &Home, id: &ProjectId) -> std::io::Result<Vec<PathBuf>> {
    let dir = home.project_backups_dir(id);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "db")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    // Timestamps sort lexically.
    files.sort();
    Ok(files)
}

fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(keep.max(1));
    for f in files.into_iter().take(excess) {
        std::fs::remove_file(f)?;
    }
    Ok(())
}

/// Replaces a project's blackboard content with a snapshot's, online.
pub async fn restore_project(home: &Home, id: &ProjectId, snapshot: &Path) -> Result<u64, BbError> {
    if !snapshot.is_file() {
        return Err(BbError::Missing {
            path: snapshot.to_path_buf(),
            detail: "snapshot file not found".into(),
        });
    }
    // Work on a private copy: opening migrates older snapshots, and the
    // original must stay untouched.
    let work = home
        .project_backups_dir(id)
        .join(format!(".restore-{}.db", std::process::id()));
    std::fs::create_dir_all(home.project_backups_dir(id))?;
    std::fs::copy(snapshot, &work)?;
    let snap = Blackboard::open(&work, id.as_str(), OpenMode::CLI).await;
    let snap = match snap {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&work);
            return Err(e);
        }
    };
    let check = snap.quick_check().await;
    snap.close().await;
    if let Err(e) = check {
        let _ = std::fs::remove_file(&work);
        return Err(e);
    }
    let live_path = home.blackboard_file(id);
    let live = match Blackboard::open(
        &live_path,
        id.as_str(),
        OpenMode::Create { max_connections: 1 },
    )
    .await
    {
        Ok(live) => live,
        // The live file is unreadable: nobody can be using it, so the
        // snapshot copy takes its place; the broken file is kept aside.
        Err(BbError::Corrupt { .. }) => {
            let aside = live_path.with_extension(format!(
                "db.corrupt-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            ));
            std::fs::rename(&live_path, &aside)?;
            for ext in ["db-wal", "db-shm"] {
                let _ = std::fs::remove_file(live_path.with_extension(ext));
            }
            std::fs::rename(&work, &live_path)?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&live_path, std::fs::Permissions::from_mode(0o600))?;
            }
            let restored = Blackboard::open(&live_path, id.as_str(), OpenMode::CLI).await?;
            let rows = restored.total_rows().await;
            restored.close().await;
            return rows;
        }
        Err(e) => {
            let _ = std::fs::remove_file(&work);
            return Err(e);
        }
    };
    let result = live.replace_contents_from(&work).await;
    live.close().await;
    let _ = std::fs::remove_file(&work);
    result
}
