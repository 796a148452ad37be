//! `moziplus bb …` — the blackboard CLI agents call many times per run.
//!
//! One file per group of verbs, each with its clap arguments and its runner:
//! [`read`] (read, list, events), [`task`] (create, claim, heartbeat,
//! release, done, fail, cancel, block, reopen, depend), [`record`] (output,
//! comment, review, observe, experience) and [`decision`] (decide and the
//! `decision` subcommands). Every rule lives in [`crate::service`]; this
//! module parses, calls the service, and prints.
//!
//! Identity: see [`crate::service::identity`]. Reads need none; a write
//! resolves it once, when it first needs it.

/// A clap parser for one of the blackboard's vocabularies (`T::ALL`):
/// `--help` lists the values, a shell completes them, and a wrong one is
/// named with the choices.
macro_rules! vocab {
    ($t:ty) => {
        clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(<$t>::ALL.iter().map(|v| v.as_str())),
            |s| s.parse::<$t>(),
        )
    };
}

mod decision;
mod read;
mod record;
mod task;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::early::{self, BbHint, EarlyBlackboard};
use super::output::Printer;
use super::project_config::ProjectConfig;
use crate::blackboard::{ids, Actor};
use crate::config::{Config, ProjectSettings};
use crate::home::Home;
use crate::registry::{self, ProjectId};
use crate::service::{Notifier, ProjectService, RunIdentity, ServiceError};

#[derive(Debug, Args)]
pub struct BbArgs {
    /// Project id. Default: $MOZI_PROJECT.
    #[arg(long, short = 'p', global = true, env = "MOZI_PROJECT")]
    project: Option<String>,
    /// Act as this agent (must match the session's agent under a daemon run). Default: $MOZI_AGENT, else "human".
    #[arg(long, global = true)]
    agent: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

/// A task id argument that defaults to `$MOZI_TASK`.
#[derive(Debug, Args)]
struct TaskArg {
    /// Task id (e.g. T-0042). Default: $MOZI_TASK.
    #[arg(env = "MOZI_TASK")]
    task: String,
}

impl TaskArg {
    /// The id, refused before any database work when malformed.
    fn id(&self) -> anyhow::Result<&str> {
        if !ids::is_valid_task_id(&self.task) {
            return Err(ServiceError::Invalid(format!(
                "malformed task id {:?}: expected T- followed by at least four digits, e.g. T-0042",
                self.task
            ))
            .into());
        }
        Ok(&self.task)
    }
}

#[derive(Debug, Subcommand)]
enum Verb {
    #[command(flatten)]
    Read(read::ReadVerb),
    #[command(flatten)]
    Task(task::TaskVerb),
    #[command(flatten)]
    Record(record::RecordVerb),
    #[command(flatten)]
    Decision(decision::DecisionVerbs),
    /// Record or list lessons learned.
    #[command(subcommand)]
    Experience(record::ExperienceVerb),
}

impl Verb {
    /// The verbs that read the project's configuration (see
    /// [`ProjectConfig`]).
    fn needs_config(&self) -> bool {
        matches!(self, Verb::Task(t) if t.needs_config())
    }
}

/// On the parsing thread, right after clap: loads the hinted project's
/// configuration when the parsed verb needs it, while the main thread is
/// still opening the database.
pub fn config_for(args: &BbArgs, hint: &BbHint) -> Option<ProjectConfig> {
    let project = ProjectId::parse(&hint.project).ok()?;
    let home = Home::resolve(hint.home.as_deref());
    args.verb
        .needs_config()
        .then(|| ProjectConfig::load_now(&home, &project))
}

/// Runs `moziplus bb …`. `early` is the blackboard [`super::early`] opened
/// while the arguments were parsed; it is used only if it is the home and
/// project the parsed arguments name.
pub async fn run(home: &Home, args: BbArgs, early: Option<EarlyBlackboard>) -> anyhow::Result<()> {
    let project = args
        .project
        .as_deref()
        .ok_or_else(|| anyhow!("no project: pass --project ID or set MOZI_PROJECT"))
        .and_then(|raw| Ok(registry::active_project(home, raw)?));
    // The early blackboard is kept only if it is the one the arguments name.
    let early = match early {
        Some(e) if matches!(&project, Ok(p) if e.home == *home && e.project == *p) => Some(e),
        Some(e) => {
            e.bb.close().await;
            None
        }
        None => None,
    };
    let project = project?;
    let needs_config = args.verb.needs_config();
    let (bb, config) = match early {
        Some(e) => {
            let config = e
                .config
                .unwrap_or_else(|| ProjectConfig::start(home, &project, needs_config));
            (e.bb, config)
        }
        None => {
            let config = ProjectConfig::start(home, &project, needs_config);
            (early::open_blackboard(home, &project).await?, config)
        }
    };
    let service = ProjectService::new(
        bb,
        home.clone(),
        project.clone(),
        Notifier::wake_socket(home, &project),
    );
    let mut cx = Cx {
        service,
        agent_flag: args.agent,
        config: Some(config),
        actor: None,
        out: Printer { json: args.json },
    };
    let result = match args.verb {
        Verb::Read(v) => read::run(&mut cx, v).await,
        Verb::Task(v) => task::run(&mut cx, v).await,
        Verb::Record(v) => record::run(&mut cx, v).await,
        Verb::Decision(v) => decision::run(&mut cx, v).await,
        Verb::Experience(v) => record::experience(&mut cx, v).await,
    };
    cx.service.into_blackboard().close().await;
    result
}

/// What a verb works with besides its arguments.
struct Cx {
    service: ProjectService,
    agent_flag: Option<String>,
    /// Taken by the one verb that reads it.
    config: Option<ProjectConfig>,
    /// Resolved on first use (reads need no identity).
    actor: Option<Actor>,
    out: Printer,
}

impl Cx {
    /// Who is writing, resolved (and checked) once.
    async fn actor(&mut self) -> anyhow::Result<Actor> {
        if let Some(a) = &self.actor {
            return Ok(a.clone());
        }
        let actor = self
            .service
            .authenticate(&RunIdentity::from_env(), self.agent_flag.as_deref())
            .await?;
        self.actor = Some(actor.clone());
        Ok(actor)
    }

    /// The project's configuration (see [`ProjectConfig`]).
    fn config(&mut self) -> anyhow::Result<(Config, ProjectSettings)> {
        let config = self.config.take().unwrap_or(ProjectConfig::OnDemand);
        config.get(self.service.home(), self.service.project())
    }
}
