//! `moziplus store copy`: a home's blackboards from SQLite files to
//! PostgreSQL and back.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::blackboard::{Blackboard, OpenMode, RowCounts, SystemClock};
use crate::home::Home;
use crate::registry::{self, ProjectId};

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy every project's blackboard from one store to another, verifying row counts.
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The store to read: a `postgres://` URL, or a home folder (its
    /// `projects/<id>/blackboard.db` files).
    #[arg(long, value_name = "URL|HOME")]
    from: String,
    /// The store to write: a `postgres://` URL, or a home folder.
    #[arg(long, value_name = "URL|HOME")]
    to: String,
    /// Only this project (repeatable; default: every project of `--from`).
    #[arg(long = "project", value_name = "ID")]
    projects: Vec<String>,
    /// Replace what a target project already holds (refused by default).
    #[arg(long)]
    force: bool,
}

/// One side of a copy.
enum Side {
    Files(Home),
    Postgres(String),
}

impl Side {
    fn parse(raw: &str) -> Side {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Side::Postgres(raw.to_string())
        } else {
            Side::Files(Home::new(PathBuf::from(raw)))
        }
    }

    fn describe(&self) -> String {
        match self {
            Side::Files(home) => home.root().display().to_string(),
            Side::Postgres(url) => crate::blackboard::postgres::redacted(url),
        }
    }

    /// The projects this side holds: the files under `projects/`, or the
    /// project schemas of the database.
    async fn projects(&self) -> anyhow::Result<Vec<ProjectId>> {
        let ids = match self {
            Side::Files(home) => registry::load(home)
                .with_context(|| format!("reading the projects of {}", self.describe()))?
                .into_iter()
                .map(|e| e.id)
                .filter(|id| ProjectId::parse(id).is_ok_and(|p| home.blackboard_file(&p).is_file()))
                .collect::<Vec<_>>(),
            Side::Postgres(url) => crate::blackboard::postgres::projects(url).await?,
        };
        Ok(ids
            .iter()
            .filter_map(|id| ProjectId::parse(id).ok())
            .collect())
    }

    async fn open(&self, id: &ProjectId, create: bool) -> anyhow::Result<Blackboard> {
        let clock = Arc::new(SystemClock);
        let bb = match self {
            Side::Files(home) => {
                let mode = if create {
                    OpenMode::Create { max_connections: 1 }
                } else {
                    OpenMode::CLI
                };
                Blackboard::open(&home.blackboard_file(id), id.as_str(), mode).await?
            }
            Side::Postgres(url) => Blackboard::open_postgres(url, id.as_str(), 1, clock).await?,
        };
        Ok(bb)
    }
}

pub async fn run(cmd: StoreCmd) -> anyhow::Result<()> {
    match cmd {
        StoreCmd::Copy(args) => copy(args).await,
    }
}

async fn copy(args: CopyArgs) -> anyhow::Result<()> {
    let from = Side::parse(&args.from);
    let to = Side::parse(&args.to);
    if args.from == args.to {
        bail!(
            "--from and --to are the same store ({}); nothing to copy",
            from.describe()
        );
    }
    let mut projects = from.projects().await?;
    if !args.projects.is_empty() {
        let wanted: Vec<ProjectId> = args
            .projects
            .iter()
            .map(|p| ProjectId::parse(p))
            .collect::<Result<_, _>>()?;
        if let Some(missing) = wanted.iter().find(|w| !projects.contains(w)) {
            bail!("project {missing} is not in {}", from.describe());
        }
        projects = wanted;
    }
    if projects.is_empty() {
        bail!(
            "{} holds no project blackboard; nothing to copy",
            from.describe()
        );
    }
    // Refuse before writing anything: every non-empty target is named.
    if !args.force {
        let mut occupied = Vec::new();
        for id in &projects {
            if let Ok(bb) = to.open(id, false).await {
                let rows: i64 = bb.row_counts().await?.iter().map(|(_, n)| n).sum();
                if rows > 0 {
                    occupied.push(format!("{id} ({rows} rows)"));
                }
                bb.close().await;
            }
        }
        if !occupied.is_empty() {
            bail!(
                "{} already holds {}; nothing was copied. --force replaces them",
                to.describe(),
                occupied.join(", ")
            );
        }
    }
    for id in &projects {
        let source = from.open(id, false).await?;
        let target = to.open(id, true).await?;
        let counts = source
            .copy_into(&target, args.force)
            .await
            .with_context(|| format!("copying project {id}"))?;
        source.close().await;
        target.close().await;
        println!("{id}: {}", summary(&counts));
    }
    println!(
        "copied {} project(s) from {} to {}; row counts verified",
        projects.len(),
        from.describe(),
        to.describe()
    );
    Ok(())
}

fn summary(counts: &RowCounts) -> String {
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let tables: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    format!("{total} rows ({})", tables.join(", "))
}
