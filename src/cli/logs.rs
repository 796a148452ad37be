//! `moziplus logs T-n [--session S] [--follow]`: a run's log, read the way
//! the log API reads it (`api::sessions::read_slice`: inside the project,
//! no link, the very file the daemon created).

use std::io::Write;
use std::time::Duration;

use clap::Args;

use crate::blackboard::{Blackboard, OpenMode, Session};
use crate::home::Home;
use crate::registry::ProjectId;

/// `moziplus logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task (T-n) whose run's log to print.
    task: String,
    /// The project (default: $MOZI_PROJECT).
    #[arg(long, short = 'p', env = "MOZI_PROJECT")]
    project: Option<String>,
    /// This run (S-…) instead of the task's latest.
    #[arg(long)]
    session: Option<String>,
    /// Keep printing what the run writes until it ends.
    #[arg(long, short = 'f')]
    follow: bool,
}

/// How often `--follow` looks for more.
const POLL: Duration = Duration::from_millis(300);

pub async fn run(home: &Home, args: LogsArgs) -> anyhow::Result<()> {
    let project = args
        .project
        .ok_or_else(|| anyhow::anyhow!("which project? pass --project ID (or set MOZI_PROJECT)"))?;
    let id = crate::registry::active_project(home, &project)?;
    let bb = crate::registry::open_blackboard(home, &id, OpenMode::CLI).await?;
    let result = print_log(
        home,
        &id,
        &bb,
        &args.task,
        args.session.as_deref(),
        args.follow,
    )
    .await;
    bb.close().await;
    result
}

async fn print_log(
    home: &Home,
    id: &ProjectId,
    bb: &Blackboard,
    task: &str,
    session: Option<&str>,
    follow: bool,
) -> anyhow::Result<()> {
    let session = pick(bb, task, session).await?;
    let Some(path) = session.log_path.clone() else {
        anyhow::bail!("run {} of {task} has no log", session.id);
    };
    let (path, root) = (std::path::PathBuf::from(path), home.project_dir(id));
    let created = crate::api::sessions::created_log_file(&session);
    let mut offset = 0u64;
    loop {
        let (p, r) = (path.clone(), root.clone());
        let (bytes, _) = tokio::task::spawn_blocking(move || {
            crate::api::sessions::read_slice(&p, &r, created, offset, 1 << 20)
        })
        .await??;
        if !bytes.is_empty() {
            offset += bytes.len() as u64;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
            continue;
        }
        if !follow || bb.session(&session.id).await?.ended_at.is_some() {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The run asked for (it must be `task`'s), or the task's latest.
async fn pick(bb: &Blackboard, task: &str, session: Option<&str>) -> anyhow::Result<Session> {
    let runs = bb.sessions_for_task(task).await?;
    match session {
        Some(sid) => runs.into_iter().find(|s| s.id == sid).ok_or_else(|| {
            anyhow::anyhow!("{task} has no run {sid}; `moziplus bb read {task}` lists its runs")
        }),
        None => runs
            .into_iter()
            .max_by_key(|s| s.started_at)
            .ok_or_else(|| anyhow::anyhow!("{task} has not run yet; nothing to show")),
    }
}
