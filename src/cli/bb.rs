//! `moziplus bb …` — the blackboard CLI agents call many times per run.
//!
//! Identity: when `MOZI_SESSION` is set (the daemon sets it for every run) the
//! caller must also present `MOZI_SESSION_TOKEN`; the session must be running
//! and belong to `MOZI_AGENT`, and `--agent` cannot name anyone else. Without a
//! session the caller is an operator named by `--agent`, `MOZI_AGENT` or
//! `human`. (The token stops agents from writing as each other by mistake or by
//! prompt; it is not a boundary against code running as the same OS user.)

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{line_table, task_table, Printer};
use crate::blackboard::{
    ids, Actor, BbError, Blackboard, CommentType, DecisionStatus, ExperienceStatus, NewDecision,
    NewExperience, NewTask, ObservationLevel, OpenMode, Priority, TaskFilter, TaskStatus, Verdict,
};
use crate::config::{Config, ConfigError, ProjectSettings};
use crate::home::Home;
use crate::registry::{self, ProjectId};

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

#[derive(Debug, Subcommand)]
enum Verb {
    /// Board summary, or one task with comments, outputs, reviews and sessions.
    Read {
        /// A task id; without it, the board summary.
        task: Option<String>,
        /// How many ready/active tasks (or comments) to show.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// List tasks (most urgent first).
    List {
        #[arg(long)]
        status: Option<TaskStatus>,
        /// Designated or current agent.
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// Create a task; prints its id.
    Create {
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        /// plan, analysis, code, data, review, distill, … (default code)
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        priority: Option<Priority>,
        /// Only this agent may claim it.
        #[arg(long)]
        assignee: Option<String>,
        /// Comma-separated task ids this task waits for.
        #[arg(long, value_delimiter = ',')]
        depends_on: Vec<String>,
        /// Comma-separated tags.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        #[arg(long)]
        parent: Option<String>,
        /// Review protocol (plan, output, analysis, final); without one, `done` finishes the task.
        #[arg(long)]
        protocol: Option<String>,
        #[arg(long)]
        max_rounds: Option<i64>,
    },
    /// Atomically claim a ready task (exit 3 if someone else has it).
    Claim {
        #[command(flatten)]
        t: TaskArg,
        /// Lease in seconds (default: daemon.task_timeout).
        #[arg(long)]
        lease: Option<u64>,
    },
    /// Renew the lease of a task you hold.
    Heartbeat {
        #[command(flatten)]
        t: TaskArg,
        #[arg(long)]
        lease: Option<u64>,
    },
    /// Give a claimed task back (pending, same round).
    Release {
        #[command(flatten)]
        t: TaskArg,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Post an output of the current round (text, or a file stored under artifacts/<task>/outputs/).
    Output {
        #[command(flatten)]
        t: TaskArg,
        #[arg(long)]
        summary: String,
        /// A file to store as the artifact ('-' reads stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The artifact's path inside outputs/ (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Short inline text instead of a file.
        #[arg(long)]
        text: Option<String>,
    },
    /// Comment on a task.
    Comment {
        #[command(flatten)]
        t: TaskArg,
        #[arg(long)]
        body: String,
        #[arg(long = "type", default_value = "comment")]
        comment_type: CommentType,
    },
    /// Review a task in review (approve, revise or reject).
    Review {
        #[command(flatten)]
        t: TaskArg,
        #[arg(long)]
        verdict: Verdict,
        /// 0..1
        #[arg(long)]
        confidence: f64,
        #[arg(long, default_value = "")]
        body: String,
    },
    /// Record a decision, or propose one for a person to approve (--propose).
    Decide {
        #[arg(long)]
        question: String,
        #[arg(long, default_value = "")]
        decision: String,
        #[arg(long, default_value = "")]
        rationale: String,
        #[arg(long)]
        task: Option<String>,
        /// Propose instead of record: status `proposed` until approved/rejected.
        #[arg(long)]
        propose: bool,
        /// Seconds until an unanswered proposal expires as rejected.
        #[arg(long)]
        expires: Option<u64>,
    },
    /// List, show, approve, reject or wait for decisions.
    #[command(subcommand)]
    Decision(DecisionVerb),
    /// Record an observation (info, warn, alert).
    Observe {
        #[arg(long, default_value = "info")]
        level: ObservationLevel,
        #[arg(long)]
        body: String,
        #[arg(long)]
        task: Option<String>,
    },
    /// Record or list lessons learned.
    #[command(subcommand)]
    Experience(ExperienceVerb),
    /// Finish your work: to review (if the task has a protocol) or done.
    #[command(alias = "submit")]
    Done {
        #[command(flatten)]
        t: TaskArg,
    },
    /// Mark a task failed.
    Fail {
        #[command(flatten)]
        t: TaskArg,
        #[arg(long)]
        reason: String,
    },
    /// Cancel a task (operators only).
    Cancel {
        #[command(flatten)]
        t: TaskArg,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Block a task (operators only).
    Block {
        #[command(flatten)]
        t: TaskArg,
        #[arg(long)]
        reason: String,
    },
    /// Unblock, or reopen a failed/cancelled task (operators only).
    Reopen {
        #[command(flatten)]
        t: TaskArg,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Make a task depend on another (cycles are refused).
    Depend {
        #[command(flatten)]
        t: TaskArg,
        /// The task it must wait for.
        #[arg(long)]
        on: String,
    },
    /// Events after an id (the audit log).
    Events {
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
enum DecisionVerb {
    List {
        #[arg(long)]
        status: Option<DecisionStatus>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    Show {
        id: i64,
    },
    Approve {
        id: i64,
        #[arg(long, default_value = "")]
        rationale: String,
    },
    Reject {
        id: i64,
        #[arg(long, default_value = "")]
        rationale: String,
    },
    /// Wait until a decision is approved (exit 0) or rejected (exit 3).
    Wait {
        id: i64,
        /// Give up after this many seconds (exit 1).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ExperienceVerb {
    Add {
        #[arg(long, value_delimiter = ',', required = true)]
        tags: Vec<String>,
        #[arg(long)]
        lesson: String,
        #[arg(long, env = "MOZI_TASK")]
        task: Option<String>,
    },
    List {
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        status: Option<ExperienceStatus>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// Works out who is calling (see the module docs).
async fn resolve_actor(bb: &Blackboard, flag: Option<&str>) -> anyhow::Result<Actor> {
    let env_agent = std::env::var("MOZI_AGENT").ok().filter(|s| !s.is_empty());
    if let Some(session) = std::env::var("MOZI_SESSION").ok().filter(|s| !s.is_empty()) {
        let token = std::env::var("MOZI_SESSION_TOKEN").unwrap_or_default();
        if token.is_empty() {
            return Err(BbError::Forbidden(format!(
                "MOZI_SESSION={session} is set but MOZI_SESSION_TOKEN is missing"
            ))
            .into());
        }
        let agent = env_agent.ok_or_else(|| {
            BbError::Forbidden("MOZI_SESSION is set but MOZI_AGENT is missing".into())
        })?;
        if let Some(f) = flag {
            if f != agent {
                return Err(BbError::Forbidden(format!(
                    "--agent {f} refused: this run is agent {agent}, and an agent may only write as itself"
                ))
                .into());
            }
        }
        bb.verify_session(&session, &agent, &token).await?;
        return Ok(Actor::session(agent));
    }
    let name = flag
        .map(str::to_string)
        .or(env_agent)
        .unwrap_or_else(|| "human".into());
    if !ids::is_valid_agent_id(&name) {
        bail!("invalid agent id {name:?}");
    }
    Ok(Actor::operator(name))
}

/// Resolves a path inside `base` for an artifact name, refusing anything that
/// could escape it (absolute paths, `..`, symlinked parents pointing outside).
pub fn artifact_path(base: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty() || name.len() > 255 {
        bail!("artifact name must be 1-255 bytes");
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) => {}
            _ => bail!(
                "artifact name {name:?} must be a relative path inside outputs/ (no '/', '..' or '.' at its start)"
            ),
        }
    }
    let full = base.join(rel);
    // Create missing folders one level at a time, checking that each level
    // resolves inside `base` before anything is created below it: folders
    // must never be created through a symlink that points outside.
    let canon_base = base.canonicalize()?;
    let mut dir = base.to_path_buf();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        dir.push(c);
        if std::fs::symlink_metadata(&dir).is_err() {
            std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if !dir.canonicalize()?.starts_with(&canon_base) {
            bail!("artifact name {name:?} resolves outside {}", base.display());
        }
    }
    if full.is_symlink() {
        bail!("artifact {name:?} is a symlink; refusing to write through it");
    }
    Ok(full)
}

fn task_id(t: &TaskArg) -> anyhow::Result<&str> {
    if !ids::is_valid_task_id(&t.task) {
        bail!(
            "malformed task id {:?}: expected T- followed by at least four digits, e.g. T-0042",
            t.task
        );
    }
    Ok(&t.task)
}

/// Opens a project's blackboard for one `moziplus bb` command.
pub(super) async fn open(home: &Home, project: &ProjectId) -> anyhow::Result<Blackboard> {
    let path = home.blackboard_file(project);
    Blackboard::open(&path, project.as_str(), OpenMode::Agent)
        .await
        .with_context(|| format!("project {project}"))
}

/// Runs `moziplus bb …`. `early` is the blackboard [`super::early`] opened
/// while the arguments were parsed; it is used only if it is the home and
/// project the parsed arguments name.
pub async fn run(
    home: &Home,
    args: BbArgs,
    early: Option<super::early::EarlyBlackboard>,
) -> anyhow::Result<()> {
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
    let (bb, config) = match early {
        Some(e) => {
            let config = e
                .config
                .unwrap_or_else(|| ProjectConfig::start(home, &project, &args.verb));
            (e.bb, config)
        }
        None => {
            let config = ProjectConfig::start(home, &project, &args.verb);
            (open(home, &project).await?, config)
        }
    };
    let out = Printer { json: args.json };
    let ctx = Ctx {
        home,
        project: &project,
        config,
    };
    let result = dispatch(ctx, &bb, args.agent.as_deref(), args.verb, out).await;
    bb.close().await;
    result
}

/// What a verb knows besides its arguments.
struct Ctx<'a> {
    home: &'a Home,
    project: &'a ProjectId,
    config: ProjectConfig,
}

/// The project's configuration, for the verbs that need it: a claim checks
/// the project's allowed agents and takes its lease from
/// `daemon.task_timeout`, as does a heartbeat without `--lease`.
///
/// Reading and merging the YAML layers does not need the database, so for
/// those verbs it runs on a thread of its own while the main thread opens the
/// blackboard (and sqlx's connection thread parses the schema): on two cores
/// the two overlap instead of adding up in every claim.
pub(super) enum ProjectConfig {
    /// Being loaded on its own thread.
    Loading(std::thread::JoinHandle<Result<(Config, ProjectSettings), ConfigError>>),
    /// Already loaded (by [`super::early`], on the thread that parsed the
    /// arguments).
    Loaded(Box<Result<(Config, ProjectSettings), ConfigError>>),
    /// Loaded on the calling thread when asked for.
    OnDemand,
}

impl ProjectConfig {
    fn needed_by(verb: &Verb) -> bool {
        matches!(
            verb,
            Verb::Claim { .. } | Verb::Heartbeat { lease: None, .. }
        )
    }

    /// Loads the configuration on this thread if `args`' verb needs it.
    pub(super) fn load_now(home: &Home, project: &ProjectId, args: &BbArgs) -> Option<Self> {
        Self::needed_by(&args.verb)
            .then(|| ProjectConfig::Loaded(Box::new(Config::load_for_project(home, project, &[]))))
    }

    fn start(home: &Home, project: &ProjectId, verb: &Verb) -> ProjectConfig {
        if !Self::needed_by(verb) {
            return ProjectConfig::OnDemand;
        }
        let (home, project) = (home.clone(), project.clone());
        std::thread::Builder::new()
            .name("moziplus-config".into())
            .spawn(move || Config::load_for_project(&home, &project, &[]))
            .map_or(ProjectConfig::OnDemand, ProjectConfig::Loading)
    }

    fn get(self, home: &Home, project: &ProjectId) -> anyhow::Result<(Config, ProjectSettings)> {
        match self {
            ProjectConfig::Loading(thread) => Ok(thread.join().map_err(|_| {
                anyhow!("loading the configuration of project {project} panicked")
            })??),
            ProjectConfig::Loaded(result) => Ok((*result)?),
            ProjectConfig::OnDemand => Ok(Config::load_for_project(home, project, &[])?),
        }
    }
}

/// Lease length: `--lease`, else the project's `daemon.task_timeout`.
fn lease_ms(
    config: ProjectConfig,
    home: &Home,
    project: &ProjectId,
    flag: Option<u64>,
) -> anyhow::Result<i64> {
    let secs = match flag {
        Some(0) => bail!("--lease must be at least 1 second"),
        Some(s) => s,
        None => config.get(home, project)?.0.daemon.task_timeout,
    };
    Ok((secs as i64).saturating_mul(1000))
}

async fn dispatch(
    ctx: Ctx<'_>,
    bb: &Blackboard,
    agent_flag: Option<&str>,
    verb: Verb,
    out: Printer,
) -> anyhow::Result<()> {
    // Reads need no identity; everything else resolves (and checks) it first.
    match verb {
        Verb::Read { task: None, limit } => {
            let s = bb.board_summary(limit).await?;
            return out.emit(&s, || {
                let counts = s
                    .counts
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "project {} — {} tasks ({})\nready:\n{}active:\n{}decisions awaiting approval: {}  running sessions: {}\n",
                    s.project,
                    s.total,
                    if counts.is_empty() { "empty".into() } else { counts },
                    line_table(&s.ready),
                    line_table(&s.active),
                    s.decisions_proposed,
                    s.running_sessions
                )
            });
        }
        Verb::Read {
            task: Some(id),
            limit,
        } => {
            let d = bb.task_detail(&id, limit).await?;
            return out.emit(&d, || {
                let t = &d.task;
                let mut s = format!(
                    "{} [{}] {}\n  kind {}  priority {}  round {}/{}  assignee {}  claimed by {}\n",
                    t.id,
                    t.status,
                    t.title,
                    t.kind,
                    t.priority,
                    t.round,
                    t.max_rounds,
                    t.assignee.as_deref().unwrap_or("-"),
                    t.claimed_by.as_deref().unwrap_or("-")
                );
                if !t.description.is_empty() {
                    s.push_str(&format!("\n{}\n", t.description));
                }
                if !d.depends_on.is_empty() {
                    s.push_str("\ndepends on:\n");
                    for r in &d.depends_on {
                        s.push_str(&format!("  {} [{}] {}\n", r.id, r.status, r.title));
                    }
                }
                for o in &d.outputs {
                    s.push_str(&format!(
                        "\noutput (round {}, {}): {}{}\n",
                        o.round,
                        o.agent,
                        o.summary,
                        o.artifact_path
                            .as_deref()
                            .map(|p| format!(" [outputs/{p}]"))
                            .unwrap_or_default()
                    ));
                }
                for r in &d.reviews {
                    s.push_str(&format!(
                        "\nreview (round {}, {}): {} @ {:.2} {}\n",
                        r.round, r.reviewer, r.verdict, r.confidence, r.body
                    ));
                }
                for c in &d.comments {
                    s.push_str(&format!(
                        "\n[{}] {}: {}\n",
                        c.comment_type, c.author, c.body
                    ));
                }
                s
            });
        }
        Verb::List {
            status,
            assignee,
            tag,
            kind,
            limit,
            offset,
        } => {
            let tasks = bb
                .list_tasks(&TaskFilter {
                    status,
                    assignee,
                    tag,
                    kind,
                    limit,
                    offset,
                })
                .await?;
            return out.emit(&tasks, || task_table(&tasks));
        }
        Verb::Decision(DecisionVerb::List { status, limit }) => {
            let ds = bb.decisions(status, limit).await?;
            return out.emit(&ds, || {
                ds.iter()
                    .map(|d| {
                        format!(
                            "D{:<5} {:<9} {}: {}\n",
                            d.id, d.status, d.author, d.question
                        )
                    })
                    .collect::<String>()
            });
        }
        Verb::Decision(DecisionVerb::Show { id }) => {
            let d = bb.decision(id).await?;
            return out.emit(&d, || {
                format!(
                    "D{} [{}] {}\n  asked by {}; decided by {}\n  decision: {}\n  rationale: {}\n",
                    d.id,
                    d.status,
                    d.question,
                    d.author,
                    d.decided_by.as_deref().unwrap_or("-"),
                    d.decision,
                    d.rationale
                )
            });
        }
        Verb::Decision(DecisionVerb::Wait { id, timeout }) => {
            return wait_decision(bb, id, timeout, out).await;
        }
        Verb::Experience(ExperienceVerb::List { tag, status, limit }) => {
            let es = bb.experiences(status, tag.as_deref(), limit).await?;
            return out.emit(&es, || {
                es.iter()
                    .map(|e| {
                        format!(
                            "E{:<5} {:<10} [{}] {}\n",
                            e.id,
                            e.status,
                            e.tags.join(","),
                            e.lesson
                        )
                    })
                    .collect::<String>()
            });
        }
        Verb::Events { after, limit } => {
            let ev = bb.events_after(after, limit).await?;
            return out.emit(&ev, || {
                ev.iter()
                    .map(|e| {
                        format!(
                            "{:<6} {} {:<9} {:<22} {:<8} {} {}\n",
                            e.id,
                            crate::blackboard::rfc3339(e.created_at),
                            e.level,
                            e.kind,
                            e.task_id.as_deref().unwrap_or("-"),
                            e.actor,
                            e.payload
                        )
                    })
                    .collect::<String>()
            });
        }
        _ => {}
    }

    let actor = resolve_actor(bb, agent_flag).await?;
    let (home, project) = (ctx.home, ctx.project);
    let result = write(ctx, bb, &actor, verb, out).await;
    if result.is_ok() {
        crate::inbox::wake(home, project.as_str());
    }
    result
}

async fn write(
    ctx: Ctx<'_>,
    bb: &Blackboard,
    actor: &Actor,
    verb: Verb,
    out: Printer,
) -> anyhow::Result<()> {
    let Ctx {
        home,
        project,
        config,
    } = ctx;
    match verb {
        Verb::Create {
            title,
            description,
            kind,
            priority,
            assignee,
            depends_on,
            tags,
            parent,
            protocol,
            max_rounds,
        } => {
            let t = bb
                .create_task(
                    NewTask {
                        title,
                        description,
                        kind,
                        priority,
                        assignee,
                        parent_id: parent,
                        review_protocol: protocol,
                        max_rounds,
                        depends_on: depends_on.into_iter().filter(|s| !s.is_empty()).collect(),
                        tags: tags.into_iter().filter(|s| !s.is_empty()).collect(),
                    },
                    actor,
                )
                .await?;
            out.emit(&t, || t.id.clone())
        }
        Verb::Claim { t, lease } => {
            let id = task_id(&t)?;
            // One config load serves both the allowed-agents check and the lease.
            let (config, settings) = config.get(home, project)?;
            if let Some(allowed) = &settings.agents {
                if !allowed.contains(&actor.name) {
                    return Err(BbError::Forbidden(format!(
                        "agent {} is not allowed on project {project} (allowed: {})",
                        actor.name,
                        allowed.join(", ")
                    ))
                    .into());
                }
            }
            let lease_secs = match lease {
                Some(0) => bail!("--lease must be at least 1 second"),
                Some(s) => s,
                None => config.daemon.task_timeout,
            };
            let task = bb
                .claim_task(id, actor, (lease_secs as i64).saturating_mul(1000))
                .await?;
            out.emit(&task, || {
                format!(
                    "claimed {} for {} (lease until {})",
                    task.id,
                    actor.name,
                    task.lease_expires_at
                        .map(crate::blackboard::rfc3339)
                        .unwrap_or_default()
                )
            })
        }
        Verb::Heartbeat { t, lease } => {
            let id = task_id(&t)?;
            let task = bb
                .heartbeat(id, actor, lease_ms(config, home, project, lease)?)
                .await?;
            out.emit(&task, || {
                format!(
                    "lease of {} renewed until {}",
                    task.id,
                    task.lease_expires_at
                        .map(crate::blackboard::rfc3339)
                        .unwrap_or_default()
                )
            })
        }
        Verb::Release { t, reason } => {
            let task = bb.release_task(task_id(&t)?, actor, &reason).await?;
            out.emit(&task, || format!("released {}", task.id))
        }
        Verb::Output {
            t,
            summary,
            file,
            name,
            text,
        } => {
            let id = task_id(&t)?.to_string();
            if file.is_some() && text.is_some() {
                bail!("pass either --file or --text, not both");
            }
            // Check the right to post before touching the file system.
            let task = bb.task(&id).await?;
            if task.status != TaskStatus::Working {
                return Err(BbError::Conflict(format!(
                    "cannot post an output to task {id}: it is {}, not working",
                    task.status
                ))
                .into());
            }
            if task.claimed_by.as_deref() != Some(actor.name.as_str()) {
                return Err(BbError::Forbidden(format!(
                    "only the assignee of task {id} ({}) may post its output, not {}",
                    task.claimed_by.as_deref().unwrap_or("nobody"),
                    actor.name
                ))
                .into());
            }
            let artifact = match &file {
                None => {
                    if name.is_some() {
                        bail!("--name needs --file");
                    }
                    None
                }
                Some(src) => {
                    let name = match (&name, src.to_str()) {
                        (Some(n), _) => n.clone(),
                        (None, Some("-")) => bail!("--file - (stdin) needs --name"),
                        (None, _) => src
                            .file_name()
                            .map(|n| n.to_string_lossy().to_string())
                            .ok_or_else(|| anyhow!("cannot take a name from {}", src.display()))?,
                    };
                    let base = home.task_outputs_dir(project, &id);
                    crate::home::create_private_dir_all(&base)?;
                    let dest = artifact_path(&base, &name)?;
                    let bytes = if src.as_os_str() == "-" {
                        let mut b = Vec::new();
                        std::io::stdin().read_to_end(&mut b)?;
                        b
                    } else {
                        std::fs::read(src).with_context(|| format!("reading {}", src.display()))?
                    };
                    let tmp = dest.with_extension("partial~");
                    // Never write through whatever already sits at the
                    // temporary path: a planted symlink would send the bytes
                    // outside outputs/. Remove it and create the file afresh.
                    let _ = std::fs::remove_file(&tmp);
                    {
                        use std::os::unix::fs::OpenOptionsExt;
                        std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&tmp)?
                            .write_all(&bytes)?;
                    }
                    std::fs::rename(&tmp, &dest)?;
                    Some(name)
                }
            };
            let o = bb
                .add_output(&id, actor, &summary, artifact.as_deref(), text.as_deref())
                .await?;
            out.emit(&o, || {
                format!(
                    "output {} recorded on {}{}",
                    o.id,
                    id,
                    artifact
                        .map(|a| format!(" (outputs/{a})"))
                        .unwrap_or_default()
                )
            })
        }
        Verb::Comment {
            t,
            body,
            comment_type,
        } => {
            if comment_type == CommentType::System
                && actor.kind == crate::blackboard::ActorKind::Session
            {
                bail!("system comments are written by the daemon only");
            }
            let c = bb
                .add_comment(task_id(&t)?, actor, comment_type, &body)
                .await?;
            out.emit(&c, || format!("comment {} added to {}", c.id, c.task_id))
        }
        Verb::Review {
            t,
            verdict,
            confidence,
            body,
        } => {
            let id = task_id(&t)?;
            let r = bb.add_review(id, actor, verdict, confidence, &body).await?;
            out.emit(&r, || {
                format!(
                    "review {} ({}) recorded on {} round {}",
                    r.id, r.verdict, id, r.round
                )
            })
        }
        Verb::Decide {
            question,
            decision,
            rationale,
            task,
            propose,
            expires,
        } => {
            let now = bb.now();
            let d = bb
                .add_decision(
                    NewDecision {
                        task_id: task,
                        question,
                        decision,
                        rationale,
                        settled: !propose,
                        expires_at: expires.map(|s| now + (s as i64) * 1000),
                    },
                    actor,
                )
                .await?;
            out.emit(&d, || format!("decision D{} {}", d.id, d.status))
        }
        Verb::Decision(DecisionVerb::Approve { id, rationale }) => {
            let d = bb.decide(id, true, actor, &rationale).await?;
            out.emit(&d, || format!("decision D{} approved", d.id))
        }
        Verb::Decision(DecisionVerb::Reject { id, rationale }) => {
            let d = bb.decide(id, false, actor, &rationale).await?;
            out.emit(&d, || format!("decision D{} rejected", d.id))
        }
        Verb::Observe { level, body, task } => {
            let id = bb
                .add_observation(level, actor, task.as_deref(), &body)
                .await?;
            out.emit(&json!({ "id": id }), || {
                format!("observation {id} recorded")
            })
        }
        Verb::Experience(ExperienceVerb::Add { tags, lesson, task }) => {
            let e = bb
                .add_experience(
                    NewExperience {
                        task_id: task,
                        tags: tags.into_iter().filter(|s| !s.is_empty()).collect(),
                        lesson,
                    },
                    actor,
                )
                .await?;
            out.emit(&e, || format!("experience E{} recorded", e.id))
        }
        Verb::Done { t } => {
            let task = bb.submit_task(task_id(&t)?, actor).await?;
            out.emit(&task, || format!("{} is now {}", task.id, task.status))
        }
        Verb::Fail { t, reason } => {
            let task = bb.fail_task(task_id(&t)?, actor, &reason).await?;
            out.emit(&task, || format!("{} is now failed", task.id))
        }
        Verb::Cancel { t, reason } => {
            let task = bb
                .set_status(task_id(&t)?, TaskStatus::Cancelled, actor, &reason)
                .await?;
            out.emit(&task, || format!("{} is now cancelled", task.id))
        }
        Verb::Block { t, reason } => {
            let task = bb
                .set_status(task_id(&t)?, TaskStatus::Blocked, actor, &reason)
                .await?;
            out.emit(&task, || format!("{} is now blocked", task.id))
        }
        Verb::Reopen { t, reason } => {
            let task = bb
                .set_status(task_id(&t)?, TaskStatus::Pending, actor, &reason)
                .await?;
            out.emit(&task, || {
                format!("{} is now pending (round {})", task.id, task.round)
            })
        }
        Verb::Depend { t, on } => {
            let id = task_id(&t)?;
            bb.add_dependency(id, &on, actor).await?;
            out.emit(&json!({ "task": id, "depends_on": on }), || {
                format!("{id} now depends on {on}")
            })
        }
        Verb::Read { .. }
        | Verb::List { .. }
        | Verb::Events { .. }
        | Verb::Decision(
            DecisionVerb::List { .. } | DecisionVerb::Show { .. } | DecisionVerb::Wait { .. },
        )
        | Verb::Experience(ExperienceVerb::List { .. }) => {
            unreachable!("reads are handled before identity")
        }
    }
}

/// Polls a decision until it is settled or the timeout passes.
async fn wait_decision(bb: &Blackboard, id: i64, timeout: u64, out: Printer) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
    loop {
        // Proposals past their expiry are rejected by the daemon; do it here
        // too so a waiting agent never outlives the expiry.
        let d = bb.decision(id).await?;
        if d.status == DecisionStatus::Proposed && d.expires_at.is_some_and(|e| e <= bb.now()) {
            bb.expire_decisions().await?;
            continue;
        }
        match d.status {
            DecisionStatus::Approved => {
                return out.emit(&d, || {
                    format!(
                        "decision D{id} approved by {}",
                        d.decided_by.as_deref().unwrap_or("?")
                    )
                })
            }
            DecisionStatus::Rejected => {
                out.emit(&d, || {
                    format!(
                        "decision D{id} rejected by {}",
                        d.decided_by.as_deref().unwrap_or("?")
                    )
                })?;
                return Err(BbError::Conflict(format!("decision D{id} was rejected")).into());
            }
            DecisionStatus::Proposed => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("decision D{id} is still proposed after {timeout} s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
