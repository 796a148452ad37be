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
use super::output::{Capture, Printer};
use super::project_config::ProjectConfig;
use crate::blackboard::{ids, Actor};
use crate::config::{Config, ProjectSettings};
use crate::daemon::board_calls::{BoardCall, RunBbAnswer};
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
        identity: RunIdentity::from_env(),
        config: Some(config),
        actor: None,
        out: Printer::new(args.json),
        stdin: None,
    };
    let result = dispatch(&mut cx, args.verb).await;
    cx.service.into_blackboard().close().await;
    result
}

async fn dispatch(cx: &mut Cx, verb: Verb) -> anyhow::Result<()> {
    match verb {
        Verb::Read(v) => read::run(cx, v).await,
        Verb::Task(v) => task::run(cx, v).await,
        Verb::Record(v) => record::run(cx, v).await,
        Verb::Decision(v) => decision::run(cx, v).await,
        Verb::Experience(v) => record::experience(cx, v).await,
    }
}

/// A run's `bb` command line, run inside the daemon on the project's open
/// blackboard (`daemon::board_calls`): parsed as `moziplus bb` parses it,
/// with the run's task where a local `bb` reads `$MOZI_TASK` and the run's
/// identity where it reads the environment, and answered with what the
/// command would have printed and its exit code.
pub async fn for_run(call: BoardCall) -> RunBbAnswer {
    let capture = Capture::default();
    let answer = |code: i32, kind: Option<&str>| {
        let (stdout, stderr) = capture.taken();
        RunBbAnswer {
            code,
            stdout,
            stderr,
            kind: kind.map(str::to_string),
        }
    };
    let args = match parse_for_run(&call.args, &call.task) {
        Ok(args) => args,
        Err(e) => {
            // Usage errors and --help, rendered as clap renders them.
            let text = e.render().to_string();
            let (stdout, stderr) = if e.use_stderr() {
                (String::new(), text)
            } else {
                (text, String::new())
            };
            return RunBbAnswer {
                code: e.exit_code(),
                stdout,
                stderr,
                kind: None,
            };
        }
    };
    if let Some(p) = args
        .project
        .as_deref()
        .filter(|p| *p != call.service.project().as_str())
    {
        return RunBbAnswer {
            code: super::output::EXIT_USAGE,
            stdout: String::new(),
            stderr: format!(
                "moziplus: error: --project {p:?} refused: a run's board is its own project's ({})\n",
                call.service.project()
            ),
            kind: None,
        };
    }
    let config = match call.config {
        Some(loaded) => ProjectConfig::Loaded(Box::new(Ok(loaded))),
        // Not open in the daemon: read on a blocking thread, never on the
        // runtime.
        None if args.verb.needs_config() => {
            let (home, project) = (call.service.home().clone(), call.service.project().clone());
            match tokio::task::spawn_blocking(move || ProjectConfig::load_now(&home, &project))
                .await
            {
                Ok(loaded) => loaded,
                Err(_) => ProjectConfig::OnDemand,
            }
        }
        None => ProjectConfig::OnDemand,
    };
    let mut cx = Cx {
        service: call.service,
        agent_flag: args.agent,
        identity: call.identity,
        config: Some(config),
        actor: None,
        out: Printer::captured(args.json, capture.clone()),
        stdin: Some(call.stdin),
    };
    match dispatch(&mut cx, args.verb).await {
        Ok(()) => answer(super::output::EXIT_OK, None),
        Err(e) => {
            let (code, line) = super::refusal(&e);
            cx.out.note(&line);
            answer(code, Some(super::mcp::ErrorKind::of_error(&e).as_str()))
        }
    }
}

/// Parses a run's `bb` arguments: `$MOZI_TASK` and `$MOZI_PROJECT` are
/// the daemon's environment here, not the run's, so the arguments that
/// default to them lose that default, and a task id defaults to `task`
/// (no longer required: clap does not count a default as given).
fn parse_for_run(args: &[String], task: &str) -> Result<BbArgs, clap::Error> {
    use clap::{ArgMatches, Command, FromArgMatches};
    fn for_run(cmd: Command, task: &str) -> Command {
        cmd.mut_args(|a| match a.get_env().and_then(|e| e.to_str()) {
            Some("MOZI_TASK") => a.env(None).required(false).default_value(task.to_string()),
            Some(_) => a.env(None),
            None => a,
        })
        .mut_subcommands(|c| for_run(c, task))
    }
    let cmd = for_run(
        BbArgs::augment_args(Command::new("moziplus bb").no_binary_name(true)),
        task,
    );
    let matches: ArgMatches = cmd.try_get_matches_from(args)?;
    BbArgs::from_arg_matches(&matches)
}

/// What a verb works with besides its arguments.
struct Cx {
    service: ProjectService,
    agent_flag: Option<String>,
    /// Taken by the one verb that reads it.
    config: Option<ProjectConfig>,
    /// Who the environment says is calling (a run's record, in the daemon).
    identity: RunIdentity,
    /// Resolved on first use (reads need no identity).
    actor: Option<Actor>,
    out: Printer,
    /// What `--file -` reads: `None` is this process's standard input; a
    /// run's `bb` in the daemon gets what its client sent.
    stdin: Option<Vec<u8>>,
}

impl Cx {
    /// Who is writing, resolved (and checked) once.
    async fn actor(&mut self) -> anyhow::Result<Actor> {
        if let Some(a) = &self.actor {
            return Ok(a.clone());
        }
        let actor = self
            .service
            .authenticate(&self.identity, self.agent_flag.as_deref())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<BbArgs, clap::Error> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_for_run(&args, "T-0007")
    }

    fn task_of(args: &BbArgs) -> Option<&str> {
        match &args.verb {
            Verb::Task(task::TaskVerb::Heartbeat { t, .. }) => Some(&t.task),
            _ => None,
        }
    }

    #[test]
    fn a_runs_command_line_acts_on_its_own_task_unless_it_names_one() {
        let args = parse(&["heartbeat", "--json"]).expect("parses");
        assert_eq!(task_of(&args), Some("T-0007"));
        assert!(args.json);
        let args = parse(&["heartbeat", "T-0042"]).expect("parses");
        assert_eq!(task_of(&args), Some("T-0042"));
        // The daemon's own environment is never the run's.
        assert_eq!(args.project, None);
    }

    #[test]
    fn a_runs_bad_command_line_is_a_usage_error() {
        let e = parse(&["heartbeat", "--no-such-flag"]).expect_err("refused");
        assert_eq!(e.exit_code(), crate::cli::output::EXIT_USAGE);
        assert!(e.render().to_string().contains("--no-such-flag"));
        let help = parse(&["done", "--help"]).expect_err("help is not a command");
        assert_eq!(help.exit_code(), 0);
        assert!(!help.use_stderr());
    }
}
