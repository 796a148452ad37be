//! `moziplus project …` — the admin CLI for projects.

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::output::Printer;
use crate::blackboard::OpenMode;
use crate::home::Home;
use crate::registry::{self, NewProject, ProjectId, ProjectStatus};

#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Create a project: folder tree, blackboard and registry entry.
    Create {
        /// ^[a-z0-9][a-z0-9_-]{0,63}$
        #[arg(long)]
        id: String,
        /// A human name, shown beside the id.
        #[arg(long)]
        name: String,
        /// What the project is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Agent ids allowed to work on it (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        agents: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List projects.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one project with its task counts.
    Show {
        /// The project's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Archive a project (refused while any task is working).
    Archive {
        /// The project's id.
        id: String,
    },
    /// Restore an archived project.
    Restore {
        /// The project's id.
        id: String,
    },
}

/// Over 100 lines because it is the verb table: one short arm per
/// `moziplus project` verb, each calling the registry; splitting it would
/// only scatter the table.
pub async fn run(home: &Home, cmd: ProjectCmd) -> anyhow::Result<()> {
    match cmd {
        ProjectCmd::Create {
            id,
            name,
            description,
            agents,
            json,
        } => {
            let id = ProjectId::parse(&id)?;
            let entry = registry::create_project(
                home,
                NewProject {
                    id: id.clone(),
                    name,
                    description,
                    agents: agents.into_iter().filter(|a| !a.is_empty()).collect(),
                },
            )
            .await?;
            Printer::new(json).emit(&entry, || {
                format!(
                    "created project {} at {}",
                    entry.id,
                    home.project_dir(&id).display()
                )
            })
        }
        ProjectCmd::List { json } => {
            let entries = registry::load(home)?;
            Printer::new(json).emit(&entries, || {
                if entries.is_empty() {
                    return "(no projects; create one with `moziplus project create --id ID --name NAME`)".into();
                }
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{:<24} {:<9} {}\n",
                            e.id,
                            e.status.as_str(),
                            e.name
                        )
                    })
                    .collect()
            })
        }
        ProjectCmd::Show { id, json } => {
            let id = ProjectId::parse(&id)?;
            let entry = registry::find(home, &id)?;
            let (counts, size) = if entry.status == ProjectStatus::Active {
                let bb = crate::registry::open_blackboard(home, &id, OpenMode::CLI)
                    .await
                    .with_context(|| format!("project {id}"))?;
                let counts = bb.status_counts().await?;
                let size = bb.size_bytes();
                bb.close().await;
                (Some(counts), size)
            } else {
                (None, 0)
            };
            let value = json!({ "project": entry, "tasks_summary": counts, "db_size_bytes": size,
                                "path": if entry.status == ProjectStatus::Active { home.project_dir(&id) } else { home.archived_project_dir(&id) } });
            Printer::new(json).emit(&value, || {
                let mut s = format!(
                    "{} — {}\n  status: {}\n  created: {}\n  agents: {}\n",
                    entry.id,
                    entry.name,
                    entry.status,
                    entry.created_at,
                    if entry.agents.is_empty() {
                        "all".into()
                    } else {
                        entry.agents.join(", ")
                    }
                );
                if !entry.description.is_empty() {
                    s.push_str(&format!("  {}\n", entry.description));
                }
                if let Some(c) = &counts {
                    s.push_str(&format!(
                        "  tasks: {}\n  blackboard: {} bytes\n",
                        c.iter()
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        size
                    ));
                }
                s
            })
        }
        ProjectCmd::Archive { id } => {
            let id = ProjectId::parse(&id)?;
            registry::archive_project(home, &id).await?;
            println!(
                "archived {id} to {}",
                home.archived_project_dir(&id).display()
            );
            Ok(())
        }
        ProjectCmd::Restore { id } => {
            let id = ProjectId::parse(&id)?;
            registry::restore_project(home, &id).await?;
            println!("restored {id}");
            Ok(())
        }
    }
}
