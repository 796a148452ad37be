//! Operations commands: `backup`, `restore`, `doctor`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use super::output::Printer;
use crate::backup;
use crate::blackboard::{Blackboard, OpenMode, LATEST_SCHEMA_VERSION};
use crate::config::{agents::AgentsFile, Config};
use crate::home::Home;
use crate::registry::{self, ProjectId, ProjectStatus};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Only this project (default: every active project).
    #[arg(long)]
    project: Option<String>,
    /// Snapshots to keep per project.
    #[arg(long, default_value_t = 24)]
    keep: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The project whose blackboard is restored (the one it replaces is
    /// kept in backups/.replaced/).
    #[arg(long)]
    project: String,
    /// A snapshot file.
    #[arg(long, conflicts_with = "latest")]
    from: Option<PathBuf>,
    /// The newest snapshot in backups/<project>/.
    #[arg(long)]
    latest: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Backups and restores are of blackboard files; on PostgreSQL they are
/// the database's own, and the command says so instead of pretending.
fn refuse_on_postgres(home: &Home, verb: &str) -> anyhow::Result<()> {
    if let crate::registry::StoreLocation::Postgres(url) = crate::registry::store(home)? {
        anyhow::bail!(
            "`moziplus {verb}` works on blackboard files, and this home's blackboards are in \
             PostgreSQL ({}): use the database's own tools, e.g. `pg_dump --format=custom \
             --file moziplus.dump '<url>'` and `pg_restore --clean --dbname '<url>' \
             moziplus.dump` (each project is the schema p_<id>), or `moziplus store copy \
             --from <url> --to <folder>` for SQLite files",
            crate::blackboard::postgres::redacted(&url)
        );
    }
    Ok(())
}

pub async fn backup(home: &Home, args: BackupArgs) -> anyhow::Result<()> {
    refuse_on_postgres(home, "backup")?;
    let ids: Vec<ProjectId> = match &args.project {
        Some(p) => vec![registry::active_project(home, p)?],
        None => registry::load(home)?
            .into_iter()
            .filter(|e| e.status == ProjectStatus::Active)
            .map(|e| ProjectId::parse(&e.id))
            .collect::<Result<_, _>>()?,
    };
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for id in ids {
        match backup::snapshot_project(home, &id, args.keep).await {
            Ok(s) => done.push(s),
            // One broken project must not stop the others' backups.
            Err(e) => failed.push(format!("{id}: {e}")),
        }
    }
    Printer::new(args.json).emit(&done, || {
        done.iter()
            .map(|s| format!("{}: {} ({} bytes)\n", s.project, s.path.display(), s.bytes))
            .collect()
    })?;
    if !failed.is_empty() {
        bail!("backup failed for {}", failed.join("; "));
    }
    Ok(())
}

pub async fn restore(home: &Home, args: RestoreArgs) -> anyhow::Result<()> {
    refuse_on_postgres(home, "restore")?;
    let id = registry::active_project(home, &args.project)?;
    let snapshot = match (args.from, args.latest) {
        (Some(f), _) => f,
        (None, true) => backup::list_snapshots(home, &id)?.pop().ok_or_else(|| {
            anyhow::anyhow!(
                "no snapshots in {}",
                home.project_backups_dir(&id).display()
            )
        })?,
        (None, false) => bail!("pass --from FILE or --latest"),
    };
    // What is replaced is kept first: a wrong `--latest` can be undone.
    let kept = backup::keep_replaced(home, &id).await.with_context(|| {
        format!("cannot keep a copy of project {id} before restoring; nothing was changed")
    })?;
    let rows = backup::restore_project(home, &id, &snapshot).await?;
    use std::io::Write;
    let kept = kept
        .map(|k| {
            format!(
                "; what it replaced is kept in {} (restore --from it to undo)",
                k.display()
            )
        })
        .unwrap_or_default();
    writeln!(
        std::io::stdout().lock(),
        "restored {id} from {} ({rows} rows){kept}",
        snapshot.display()
    )?;
    crate::inbox::wake::send(home, id.as_str());
    Ok(())
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    /// `false` for advisory findings that do not fail the doctor.
    required: bool,
    detail: String,
}

/// The doctor's findings, in the order they were made.
#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, name: &str, ok: bool, required: bool, detail: String) {
        self.0.push(Check {
            name: name.into(),
            ok,
            required,
            detail,
        })
    }
}

pub async fn doctor(home: &Home, args: DoctorArgs) -> anyhow::Result<()> {
    let mut checks = Checks::default();
    check_home_and_team(home, &mut checks);
    check_home_lock(home, &mut checks);
    let daemon = check_serve_start(home, &mut checks);
    check_store(home, &mut checks).await;
    match registry::load(home) {
        Ok(entries) if entries.is_empty() => checks.push(
            "registry",
            false,
            false,
            format!(
                "no projects in {}: create one with `moziplus project create --id ID --name NAME`",
                home.root().display()
            ),
        ),
        Ok(entries) => {
            checks.push(
                "registry",
                true,
                true,
                format!("{} projects", entries.len()),
            );
            for e in entries.iter().filter(|e| e.status == ProjectStatus::Active) {
                if let Ok(id) = ProjectId::parse(&e.id) {
                    check_project(home, &id, daemon.as_ref(), &mut checks).await;
                }
            }
        }
        Err(e) => checks.push("registry", false, true, e.to_string()),
    }
    print_checks(&checks.0, args.json)
}

/// Where the blackboards live; on PostgreSQL: reachable, its cluster's
/// daemons (alive ones, the leader) as the store records them.
async fn check_store(home: &Home, checks: &mut Checks) {
    let url = match registry::store(home) {
        Ok(registry::StoreLocation::Files) => {
            checks.push("store", true, true, "SQLite files under projects/".into());
            return;
        }
        Ok(registry::StoreLocation::Postgres(url)) => url,
        Err(e) => {
            checks.push("store", false, true, e.to_string());
            return;
        }
    };
    let shown = crate::blackboard::postgres::redacted(&url);
    let cluster = match crate::blackboard::cluster::Cluster::join(&url, "doctor").await {
        Ok(c) => c,
        Err(e) => {
            checks.push("store", false, true, format!("PostgreSQL at {shown}: {e}"));
            return;
        }
    };
    let projects = crate::blackboard::postgres::projects(&url)
        .await
        .unwrap_or_default();
    checks.push(
        "store",
        true,
        true,
        format!(
            "PostgreSQL at {shown}, reachable; {} project schema(s), migrated on open to version {}",
            projects.len(),
            crate::blackboard::LATEST_SCHEMA_VERSION
        ),
    );
    match cluster.daemons(crate::daemon::cluster::ALIVE).await {
        Ok(daemons) => {
            let alive: Vec<String> = daemons
                .iter()
                .filter(|d| d.alive)
                .map(|d| {
                    format!(
                        "{}{} ({} runs, agents: {})",
                        d.id,
                        if d.leader { " [leader]" } else { "" },
                        d.runs,
                        if d.agents.is_empty() {
                            "none".to_string()
                        } else {
                            d.agents.join(",")
                        }
                    )
                })
                .collect();
            let leader = daemons.iter().any(|d| d.leader);
            checks.push(
                "cluster",
                leader || alive.is_empty(),
                false,
                if alive.is_empty() {
                    "no daemon is running on this store".to_string()
                } else if !leader {
                    format!(
                        "{} daemon(s) alive but none holds the leader's lease yet: {}",
                        alive.len(),
                        alive.join("; ")
                    )
                } else {
                    format!("{} daemon(s) alive: {}", alive.len(), alive.join("; "))
                },
            );
        }
        Err(e) => checks.push("cluster", false, false, e.to_string()),
    }
}

/// The home, its configuration, agents.yaml and each runtime's binary.
fn check_home_and_team(home: &Home, checks: &mut Checks) {
    checks.push(
        "home",
        home.root().is_dir(),
        true,
        home.root().display().to_string(),
    );
    let config = Config::load_global(home, &[]);
    match &config {
        Ok(c) if !home.default_config_file().exists() => checks.push(
            "config",
            true,
            true,
            format!(
                "{} missing, defaults used (bind {})",
                home.default_config_file().display(),
                c.server.bind
            ),
        ),
        Ok(c) => checks.push(
            "config",
            true,
            true,
            format!(
                "{} ok (bind {})",
                home.default_config_file().display(),
                c.server.bind
            ),
        ),
        Err(e) => checks.push("config", false, true, e.to_string()),
    }
    let bwrap = config.as_ref().ok().and_then(|c| c.sandbox.bwrap.clone());
    let default_permissions = config
        .as_ref()
        .map(|c| c.sandbox.default_permissions)
        .unwrap_or_default();
    match AgentsFile::load(&home.agents_file()) {
        Ok(agents) if agents.agents.is_empty() => checks.push(
            "agents.yaml",
            false,
            false,
            format!(
                "{}: no agents, so no task will ever run; write config/agents.yaml (README, \"Agents\"), or try `moziplus serve --demo`",
                if home.agents_file().exists() {
                    format!("{} defines none", home.agents_file().display())
                } else {
                    format!("{} missing", home.agents_file().display())
                }
            ),
        ),
        Ok(agents) => {
            checks.push(
                "agents.yaml",
                true,
                true,
                format!("{} agents", agents.agents.len()),
            );
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("moziplus"));
            for f in crate::runtime::check::check_team(&agents, home.root(), &exe) {
                checks.push(&f.name, f.ok, f.required, f.detail);
            }
            check_sandbox(
                &agents,
                home.sandbox_socket_file(),
                bwrap.as_deref(),
                default_permissions,
                checks,
            );
        }
        Err(e) => checks.push("agents.yaml", false, true, e.to_string()),
    }
}

/// Whether bubblewrap makes a sandbox here (user, PID and network
/// namespaces), and the mode each agent's runs get (`auto` resolved as the
/// daemon resolves it); `full` is flagged.
fn check_sandbox(
    agents: &AgentsFile,
    socket: std::path::PathBuf,
    bwrap: Option<&std::path::Path>,
    default: crate::config::agents::Permissions,
    checks: &mut Checks,
) {
    use crate::config::agents::Permissions;
    let probe = crate::runtime::sandbox::probe(bwrap)
        .and_then(|p| crate::runtime::sandbox::socket_path_fits(&socket).map(|()| p));
    let mut team = agents.clone();
    let auto: std::collections::HashSet<String> = team
        .resolve_permissions(default, || probe.is_ok())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let wanted = agents
        .agents
        .iter()
        .any(|a| a.permissions == Permissions::Sandbox)
        || default == Permissions::Sandbox;
    checks.push(
        "sandbox",
        probe.is_ok(),
        wanted,
        match &probe {
            Ok(p) => format!(
                "{} makes a sandbox (user, PID and network namespaces)",
                p.display()
            ),
            Err(e) => e.clone(),
        },
    );
    for a in &team.agents {
        let how = if auto.contains(&a.id) {
            "auto → "
        } else {
            ""
        };
        let (ok, detail) = match a.permissions {
            Permissions::Sandbox if probe.is_ok() => (true, format!("{how}sandbox")),
            Permissions::Sandbox => (
                false,
                format!("{how}sandbox, which this machine cannot make: its runs are refused"),
            ),
            Permissions::Workspace if !how.is_empty() => (
                false,
                "auto → workspace, since this machine cannot make a sandbox (the CLI's own limits only; install bubblewrap for the sandbox)".to_string(),
            ),
            Permissions::Workspace | Permissions::Auto => (
                true,
                "workspace (the CLI's own limits; no moziplus sandbox)".to_string(),
            ),
            Permissions::Full => (
                false,
                format!("{how}full — UNSAFE: the agent gets the whole machine (every project's blackboard, the home, the network)"),
            ),
        };
        checks.push(
            &format!("permissions {}", a.id),
            ok,
            a.permissions == Permissions::Sandbox,
            detail,
        );
    }
}

/// Who serves this home: the holder of its lock, as the kernel reports it
/// (not the PID written in `daemon.lock`, which anyone may delete or edit).
fn check_home_lock(home: &Home, checks: &mut Checks) {
    use crate::daemon::home_lock::{holder, Holder};
    let detail = match holder(home) {
        Holder::Free => "free: no daemon is serving this home".to_string(),
        Holder::Process(Some(pid)) => {
            let command = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    c.split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            if command.is_empty() {
                format!("held by pid {pid}")
            } else {
                format!("held by pid {pid} ({command})")
            }
        }
        Holder::Process(None) => "held by another process (the lock table is unreadable)".into(),
    };
    checks.push("daemon lock", true, false, detail);
}

/// Exactly the checks `serve` runs at start (agents, pass_env, review
/// protocols, briefs, skills), so doctor and serve never disagree.
/// Returns the daemon context they built (its team and protocols), if any.
fn check_serve_start(home: &Home, checks: &mut Checks) -> Option<crate::daemon::Daemon> {
    match crate::daemon::Daemon::new(home.clone(), Vec::new()) {
        Ok(d) => {
            checks.push(
                "serve start checks",
                true,
                true,
                "agents, review protocols, briefs and skills load".into(),
            );
            for p in d.protocols().iter() {
                let name = format!("review protocol {}", p.name);
                match &p.unusable {
                    Some(why) => checks.push(
                        &name,
                        false,
                        false,
                        format!("unusable, its tasks wait in review: {why}"),
                    ),
                    None => checks.push(
                        &name,
                        true,
                        false,
                        format!("{} seat(s), {}", p.reviewers.len(), p.file.display()),
                    ),
                }
            }
            Some(d)
        }
        Err(e) => {
            checks.push("serve start checks", false, true, e.to_string());
            None
        }
    }
}

/// Tasks in `review` with a seat no agent but the author fits (issue 23,
/// finding 8): the same test as the tick's (`choose::open_seats`,
/// `choose::senior_exists`), one warning line per task.
async fn check_review_staffing(
    d: &crate::daemon::Daemon,
    bb: &Blackboard,
    id: &ProjectId,
    allowed: Option<&[String]>,
    checks: &mut Checks,
) {
    use crate::daemon::ticker::choose;
    let filter = crate::blackboard::TaskFilter {
        statuses: vec![crate::blackboard::TaskStatus::Review],
        limit: 1000,
        ..Default::default()
    };
    let agents = &d.agents().agents;
    for task in bb.list_tasks(&filter).await.unwrap_or_default() {
        let Some(protocol) = task
            .review_protocol
            .as_deref()
            .and_then(|n| d.protocols().get(n))
        else {
            continue;
        };
        if protocol.unusable.is_some() {
            continue; // reported with the protocol above
        }
        let taken: Vec<String> = bb
            .reviews(&task.id)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.round == task.round)
            .map(|r| r.reviewer)
            .collect();
        let author = task.claimed_by.as_deref();
        let unstaffed = choose::open_seats(&protocol.reviewers, &taken, agents)
            .into_iter()
            .find(|seat| !choose::senior_exists(agents, seat, author, &taken, allowed));
        if let Some(seat) = unstaffed {
            checks.push(
                &format!("project {id} review {}", task.id),
                false,
                false,
                format!(
                    "waiting for a reviewer other than {}: no other agent fits seat {seat} of \
                     review protocol {:?}",
                    author.unwrap_or("its author"),
                    protocol.name
                ),
            );
        }
    }
}

/// One active project: its configuration and workspace, its database's
/// permissions and integrity.
async fn check_project(
    home: &Home,
    id: &ProjectId,
    daemon: Option<&crate::daemon::Daemon>,
    checks: &mut Checks,
) {
    let mut allowed = None;
    match Config::load_for_project(home, id, &[]) {
        Err(err) => checks.push(
            &format!("project {id} config"),
            false,
            true,
            err.to_string(),
        ),
        Ok((_, settings)) => {
            allowed = settings.agents.clone();
            let root = crate::workspace::root(home, id, settings.workspace.as_deref());
            let c = crate::workspace::check(&root);
            checks.push(&format!("project {id} workspace"), c.ok, true, c.detail);
        }
    }
    let path = home.blackboard_file(id);
    let on_files = matches!(
        crate::registry::store(home),
        Ok(crate::registry::StoreLocation::Files)
    );
    let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
    if on_files {
        checks.push(
            &format!("project {id} permissions"),
            matches!(mode, Ok(m) if m & 0o077 == 0),
            true,
            match mode {
                Ok(m) => format!("{} mode {:o}", path.display(), m),
                Err(err) => format!("{}: {err}", path.display()),
            },
        );
    }
    let (ok, detail) = match crate::registry::open_blackboard(home, id, OpenMode::CLI).await {
        Ok(bb) => {
            if let Some(d) = daemon {
                check_review_staffing(d, &bb, id, allowed.as_deref(), checks).await;
            }
            let r = bb.quick_check().await;
            let found = match r {
                Ok(()) => (
                    true,
                    format!(
                        "schema v{LATEST_SCHEMA_VERSION}, {} bytes, integrity ok",
                        bb.size_bytes()
                    ),
                ),
                Err(err) => (false, err.to_string()),
            };
            bb.close().await;
            found
        }
        Err(err) => (false, err.to_string()),
    };
    checks.push(&format!("project {id} blackboard"), ok, true, detail);
    check_never_starting(home, id, checks).await;
}

/// A warning per pending task that can never start as the team stands.
async fn check_never_starting(home: &Home, id: &ProjectId, checks: &mut Checks) {
    let Ok(svc) = crate::service::ProjectService::open(home, id, OpenMode::CLI).await else {
        return;
    };
    if let Ok(stuck) = svc.pending_never_starting().await {
        for (task, why) in stuck {
            let why: Vec<String> = why.iter().map(ToString::to_string).collect();
            let name = format!("project {id} task {}", task.id);
            checks.push(
                &name,
                false,
                false,
                format!("can never start: {}", why.join("; ")),
            );
        }
    }
    svc.close().await;
}

/// Prints the findings (text or `--json`); fails when a required one failed.
fn print_checks(checks: &[Check], json: bool) -> anyhow::Result<()> {
    let failed = checks.iter().filter(|c| c.required && !c.ok).count();
    Printer::new(json).emit(&checks, || {
        let mut s: String = checks
            .iter()
            .map(|c| {
                let mark = match (c.ok, c.required) {
                    (true, _) => "ok  ",
                    (false, true) => "FAIL",
                    (false, false) => "warn",
                };
                format!("{mark} {:<32} {}\n", c.name, c.detail)
            })
            .collect();
        s.push_str(&if failed == 0 {
            "all required checks passed\n".to_string()
        } else {
            format!("{failed} required check(s) failed\n")
        });
        s
    })?;
    if failed > 0 {
        bail!("doctor found {failed} problem(s)");
    }
    Ok(())
}
