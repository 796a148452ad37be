//! The `moziplus` command line: argument definitions and dispatch.
//!
//! Exit codes (documented in the README): 0 ok, 1 error, 2 usage, 3 conflict
//! (the task is held by someone else or not ready; retrying later may work).

mod bb;
mod brief;
mod budget;
mod complete;
mod daemon_ctl;
mod early;
mod logs;
mod mcp;
mod ops;
mod output;
mod project;
mod project_config;
mod remote;
mod schedule;
mod serve;
mod store;
mod usage;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::home::Home;

pub use output::Printer;

pub use output::{EXIT_CONFLICT, EXIT_ERROR, EXIT_OK, EXIT_USAGE};

/// moziplus — multi-agent orchestration daemon and its CLIs.
#[derive(Debug, Parser)]
#[command(name = "moziplus", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The moziplus home (config/, projects/, inbox/ …). Default: $MOZI_HOME, else the current directory.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: ticker, inbox, agent runs, HTTP API on server.bind.
    Serve(serve::ServeArgs),
    /// Manage projects (create, list, show, archive, restore).
    #[command(subcommand)]
    Project(project::ProjectCmd),
    /// The blackboard CLI agents (and people) use.
    Bb(bb::BbArgs),
    /// Serve this run's blackboard verbs as MCP tools on stdin/stdout (the agent CLIs start it).
    Mcp(mcp::McpArgs),
    /// Agent briefs: `brief render --project P --task T` prints what a run gets.
    #[command(subcommand)]
    Brief(brief::BriefCmd),
    /// Take online snapshots of blackboards (all projects, or one).
    Backup(ops::BackupArgs),
    /// Restore a project's blackboard from a snapshot.
    Restore(ops::RestoreArgs),
    /// The store itself: `store copy` moves blackboards between SQLite files and PostgreSQL.
    #[command(subcommand)]
    Store(store::StoreCmd),
    /// Check configuration, permissions, databases and agent commands.
    Doctor(ops::DoctorArgs),
    /// Append JSON lines (from the arguments, or stdin) to the daemon's inbox.
    Inbox(InboxArgs),
    /// Recurring tasks: add, list, show, pause, resume, remove, run-now.
    Schedule(schedule::ScheduleArgs),
    /// Pause the running daemon's ticker: no new run starts, runs in flight go on.
    Pause(daemon_ctl::DaemonCtlArgs),
    /// Resume the running daemon's ticker after `pause`.
    Resume(daemon_ctl::DaemonCtlArgs),
    /// LLM usage and cost per project, agent, model, task and day (the ledger).
    Usage(usage::UsageArgs),
    /// Budgets in force with their use; set or clear one at run time.
    Budget(budget::BudgetArgs),
    /// A task's run log (its latest run, or --session S); --follow while it runs.
    Logs(logs::LogsArgs),
    /// The built-in demo agent (the `demo` runtime runs it for a task).
    #[command(hide = true)]
    DemoAgent {
        /// The brief file (read from `MOZI_BRIEF` when absent; unused by the demo).
        brief: Option<PathBuf>,
    },
    /// Inside a sandboxed run: forward the daemon's address to its socket,
    /// then run the agent's command (`runtime::sandbox`).
    #[command(hide = true)]
    SandboxInit {
        /// The address to listen on inside the sandbox (`server.bind`).
        #[arg(long)]
        listen: String,
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print shell completions (bash, zsh and fish also complete project,
    /// agent and task ids).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The ids a completion offers, one a line (the bash, zsh and fish
    /// completions call it).
    #[command(hide = true)]
    CompleteIds(complete::CompleteIdsArgs),
}

/// The binary's entry point: parses the process's command line and runs it;
/// returns the exit code.
///
/// A `moziplus bb …` command line (see `src/cli/early.rs`) is parsed by clap on a
/// second thread while this thread already opens the project's blackboard;
/// everything else is parsed, then run.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = remote::maybe_bb(&args) {
        return code;
    }
    let env_project = std::env::var("MOZI_PROJECT").ok();
    let Some(hint) = early::bb_hint(&args, env_project.as_deref()) else {
        return run(Cli::parse_from(args));
    };
    // Before any other thread exists: one arena for this thread, one for
    // the parser (reused by the connection worker once the parser is done).
    cap_malloc_arenas(2);
    let thread_hint = hint.clone();
    let parser = std::thread::Builder::new()
        .name("moziplus-args".into())
        .spawn({
            let args = args.clone();
            move || {
                // On a usage error or --help, clap prints and exits the process.
                let cli = Cli::parse_from(args);
                let config = match &cli.command {
                    Command::Bb(args) => bb::config_for(args, &thread_hint),
                    _ => None,
                };
                (cli, config)
            }
        });
    let Ok(parser) = parser else {
        return run(Cli::parse_from(args));
    };
    let rt = match runtime(timers_only(&Home::resolve(hint.home.as_deref()))) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let opened = rt.block_on(early::open(&hint));
    let (cli, config) = match parser.join() {
        Ok(parsed) => parsed,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if !matches!(cli.command, Command::Bb(_)) {
        if let Some(e) = opened {
            rt.block_on(e.bb.close());
        }
        drop(rt);
        return run(cli);
    }
    let opened = opened.map(|e| early::EarlyBlackboard { config, ..e });
    run_on(rt, cli, opened)
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    if let Command::Completions { shell } = &cli.command {
        use clap::CommandFactory;
        use std::io::Write;
        // Into a buffer first: clap_complete panics on a write error, and a
        // reader that stops early (`| head -1`) is not an error.
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "moziplus", &mut script);
        let script = complete::with_ids(*shell, script);
        return match std::io::stdout().lock().write_all(&script) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("moziplus: error: cannot write the completions: {e}");
                EXIT_ERROR
            }
            _ => EXIT_OK,
        };
    }
    if let Command::SandboxInit {
        listen,
        socket,
        command,
    } = &cli.command
    {
        return crate::runtime::sandbox::init(listen, socket, command);
    }
    if let Command::DemoAgent { .. } = &cli.command {
        return match crate::runtime::demo::main() {
            Ok(()) => EXIT_OK,
            Err(e) => report(&e),
        };
    }
    if matches!(cli.command, Command::Serve(_)) {
        // Before the runtime or any thread exists (see `secrets`): an agent
        // of the same user can read the daemon's /proc/<pid>/environ.
        crate::secrets::withdraw_from_environment();
        fix_malloc_thresholds();
    }
    let bb = matches!(cli.command, Command::Bb(_));
    if bb {
        cap_malloc_arenas(1);
    }
    match runtime(bb && timers_only(&Home::resolve(cli.home.as_deref()))) {
        Ok(rt) => run_on(rt, cli, None),
        Err(code) => code,
    }
}

/// Whether a blackboard call in `home` needs only timers: SQLite's I/O
/// happens on sqlx's connection thread; PostgreSQL's is a socket on the
/// runtime.
fn timers_only(home: &Home) -> bool {
    matches!(
        crate::registry::store(home),
        Ok(crate::registry::StoreLocation::Files)
    )
}

/// The runtime a command runs on. The CLI does little concurrent work: a
/// current-thread runtime starts in microseconds, which matters for a command
/// called many times per run. An agent's blackboard call on files
/// (`timers`, see [`timers_only`]) has no epoll, eventfd or signal pipe to
/// set up.
fn runtime(timers: bool) -> Result<tokio::runtime::Runtime, i32> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    if timers {
        builder.enable_time();
    } else {
        builder.enable_all();
    }
    builder.build().map_err(|e| {
        eprintln!("moziplus: error: cannot start the runtime: {e}");
        EXIT_ERROR
    })
}

fn run_on(rt: tokio::runtime::Runtime, cli: Cli, early: Option<early::EarlyBlackboard>) -> i32 {
    let home = Home::resolve(cli.home.as_deref());
    let serving = matches!(cli.command, Command::Serve(_));
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(&home, args).await,
            Command::Project(cmd) => project::run(&home, cmd).await,
            Command::Schedule(args) => schedule::run(&home, args).await,
            Command::Usage(args) => usage::run(&home, args).await,
            Command::Budget(args) => budget::run(&home, args).await,
            Command::Logs(args) => logs::run(&home, args).await,
            Command::CompleteIds(args) => complete::run(&home, args).await,
            Command::Bb(args) => bb::run(&home, args, early).await,
            Command::Mcp(args) => mcp::run(&home, args).await,
            Command::Brief(cmd) => brief::run(&home, cmd).await,
            Command::Backup(args) => ops::backup(&home, args).await,
            Command::Restore(args) => ops::restore(&home, args).await,
            Command::Store(cmd) => store::run(cmd).await,
            Command::Doctor(args) => ops::doctor(&home, args).await,
            Command::Inbox(args) => inbox_push(&home, args),
            Command::Pause(args) => {
                daemon_ctl::run(&home, daemon_ctl::TickerSwitch::Pause, args).await
            }
            Command::Resume(args) => {
                daemon_ctl::run(&home, daemon_ctl::TickerSwitch::Resume, args).await
            }
            Command::Completions { .. }
            | Command::DemoAgent { .. }
            | Command::SandboxInit { .. } => Ok(()),
        }
    });
    if serving {
        // Dropping the runtime would wait for every blocking task: one stuck
        // in a read must not keep a stopped daemon alive.
        rt.shutdown_timeout(std::time::Duration::from_secs(2));
    }
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => report(&e),
    }
}

/// Caps glibc's malloc arenas for a `bb` command at `n`.
///
/// By default the first allocation on a second thread (sqlx's connection
/// worker, where SQLite parses the schema and runs the statements) creates a
/// new 64 MiB arena and grows it page range by page range with `mprotect`:
/// about 40 extra system calls and 50 page faults in a `bb claim` that lasts a
/// few milliseconds. Two threads that take turns gain nothing from separate
/// arenas: a command parsed before anything runs caps them at 1. The early
/// path caps them at 2: there clap and the project config are parsed on a
/// second thread *while* the main thread opens the blackboard, and on one
/// arena the two contended for its lock at every allocation (≈ 20 futex
/// round trips; `bb claim` 1.32× the sqlite3 floor, 1.13–1.16× with its own
/// arena for the parser, which the connection worker reuses after the parser
/// has ended — bench/bb_cli.sh, 2026-11-26). Called before any other thread
/// exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_arenas(n: i32) {
    // SAFETY: mallopt only sets one of malloc's tunables; this runs on the
    // main thread before the runtime or any connection thread is started.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, n);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_arenas(_n: i32) {}

/// Fixes glibc's mmap and trim thresholds for the daemon (issue 23,
/// finding 1: the memory of a large request was kept after it).
///
/// By default glibc raises its mmap threshold to the size of each large
/// block freed, up to 32 MiB, and its trim threshold to twice that: after
/// one 15 MB body, the next ones came from the heap and their pages stayed
/// with the process. Set explicitly, the thresholds stay put: a block of
/// 256 KiB or more (a request body, a parse buffer) is mapped on its own and
/// unmapped when freed, and the heap gives back free memory past 1 MiB at
/// its top. Called before the runtime or any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_malloc_thresholds() {
    // SAFETY: mallopt only sets malloc's tunables; this runs on the main
    // thread before the runtime or any other thread is started.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 256 * 1024);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_malloc_thresholds() {}

/// Prints an error and picks its exit code. A closed standard output (the
/// reader stopped early: `| head -c 1`) is not an error: exit 0, silently.
fn report(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    }) {
        return EXIT_OK;
    }
    let (code, line) = refusal(e);
    eprintln!("{line}");
    code
}

/// An error's exit code and the line that says it (`moziplus: conflict: …`
/// for a conflict, `moziplus: error: …` otherwise).
fn refusal(e: &anyhow::Error) -> (i32, String) {
    let conflict = e.chain().any(|c| {
        c.downcast_ref::<crate::service::ServiceError>()
            .is_some_and(|s| s.is_conflict())
            || c.downcast_ref::<crate::blackboard::BbError>()
                .is_some_and(|b| b.is_conflict())
    });
    let message = chain_message(e);
    if conflict {
        (EXIT_CONFLICT, format!("moziplus: conflict: {message}"))
    } else {
        (EXIT_ERROR, format!("moziplus: error: {message}"))
    }
}

/// `moziplus inbox push`.
#[derive(Debug, Args)]
pub struct InboxArgs {
    #[command(subcommand)]
    verb: InboxVerb,
}

#[derive(Debug, Subcommand)]
enum InboxVerb {
    /// Append each argument (or each stdin line when none) as one inbox line.
    /// Every line must be a JSON object; invalid ones are refused, nothing of
    /// them is written.
    Push {
        /// JSON lines, one an argument (none: read them from stdin).
        lines: Vec<String>,
    },
}

fn inbox_push(home: &Home, args: InboxArgs) -> anyhow::Result<()> {
    use std::io::BufRead;
    let InboxVerb::Push { lines } = args.verb;
    // Resolved like every command (--home, $MOZI_HOME, the current
    // directory), but never written into a folder that is no home: a push
    // from the wrong directory used to create ./inbox there, read by nobody.
    if !home.config_dir().is_dir() && !home.projects_dir().is_dir() {
        anyhow::bail!(
            "{} is not a moziplus home (no config/ or projects/ in it); pass --home DIR or set MOZI_HOME",
            home.root().display()
        );
    }
    let config = crate::config::Config::load_global(home, &[])?;
    let path = home.inbox_file(&config.inbox.path);
    let push = |n: usize, line: &str| -> anyhow::Result<()> {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("line {n}: not JSON ({e}): {line}"))?;
        if !value.is_object() {
            anyhow::bail!("line {n}: must be a JSON object: {line}");
        }
        let len = serde_json::to_vec(&value)?.len() as u64;
        if let Some(why) = crate::inbox::line_over_limit(len, config.inbox.max_line_bytes) {
            anyhow::bail!("line {n}: {why}; the daemon would skip it, so it was not written");
        }
        crate::inbox::append(&path, &value)?;
        Ok(())
    };
    if lines.is_empty() {
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line?;
            if !line.trim().is_empty() {
                push(n + 1, &line)?;
            }
        }
    } else {
        for (n, line) in lines.iter().enumerate() {
            push(n + 1, line)?;
        }
    }
    Ok(())
}

/// Joins an error's chain with ": ", skipping causes whose text the message
/// already contains (wrapped library errors often repeat their source).
pub fn chain_message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if msg.contains(&part) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&part);
    }
    msg
}

/// Options shared by commands that can print JSON.
#[derive(Debug, Clone, Args)]
pub struct JsonFlag {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}
