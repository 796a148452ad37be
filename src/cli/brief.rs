//! `moziplus brief render`: print the brief an agent would get.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::blackboard::OpenMode;
use crate::brief::{render_task_brief, BriefEngine, BriefKind, BriefRequest};
use crate::config::agents::AgentsFile;
use crate::config::agents::Permissions;
use crate::config::Config;
use crate::home::Home;
use crate::registry;
use crate::review::Protocols;

/// `moziplus brief …`
#[derive(Debug, Subcommand)]
pub enum BriefCmd {
    /// Render the brief of a task as a run would get it (a preview: the
    /// lessons it shows are not counted as referenced).
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The project.
    #[arg(long, env = "MOZI_PROJECT")]
    project: String,
    /// The task (e.g. T-0042).
    #[arg(long)]
    task: String,
    /// The brief of a review run instead of a work run.
    #[arg(long)]
    review: bool,
    /// The agent the brief is for. Default: the task's holder, else its
    /// assignee, else `agent`.
    #[arg(long)]
    agent: Option<String>,
}

pub async fn run(home: &Home, cmd: BriefCmd) -> anyhow::Result<()> {
    let BriefCmd::Render(args) = cmd;
    let project = registry::active_project(home, &args.project)?;
    let (config, settings) = Config::load_for_project(home, &project, &[])?;
    let mut agents = AgentsFile::load(&home.agents_file())?;
    // The brief is the one the daemon would render: `auto` resolved alike.
    agents.resolve_permissions(config.sandbox.default_permissions, || {
        crate::runtime::sandbox::probe(config.sandbox.bwrap.as_deref()).is_ok()
    });
    let protocols = Protocols::load(&home.review_protocols_dir(), &config.review, &agents)?;
    let engine = BriefEngine::load(home)?;
    let bb = crate::registry::open_blackboard(home, &project, OpenMode::CLI)
        .await
        .with_context(|| format!("project {project}"))?;
    let result = async {
        let task = bb.task(&args.task).await?;
        let agent = match args.agent {
            Some(a) => a,
            None if args.review => "reviewer".to_string(),
            None => task
                .claimed_by
                .clone()
                .or_else(|| task.assignee.clone())
                .unwrap_or_else(|| "agent".into()),
        };
        if args.review && task.review_protocol.is_none() {
            bail!(
                "task {} has no review protocol; it is never reviewed",
                task.id
            );
        }
        let bin = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "moziplus".into());
        let text = render_task_brief(
            home,
            &bb,
            &engine,
            &protocols,
            &task,
            BriefRequest {
                kind: if args.review {
                    BriefKind::Review
                } else {
                    BriefKind::Work
                },
                agent: &agent,
                project_context: settings.context.as_ref(),
                count_references: false,
                bin: &bin,
                workspace: None,
                sandbox: agents
                    .agents
                    .iter()
                    .any(|a| a.id == agent && a.permissions == Permissions::Sandbox)
                    .then_some(config.sandbox.allow_hosts.as_slice()),
            },
        )
        .await?;
        use std::io::Write;
        std::io::stdout().lock().write_all(text.text.as_bytes())?;
        Ok(())
    }
    .await;
    bb.close().await;
    result
}
