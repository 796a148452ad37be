//! `moziplus serve` — run the daemon.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::{Layer, Source};
use crate::daemon::{demo_project, Daemon};
use crate::home::Home;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Create (or top up) the demo project worked by the bundled demo agents.
    #[arg(long)]
    demo: bool,
    /// Listen address (server.bind), e.g. 127.0.0.1:8083.
    #[arg(long)]
    bind: Option<String>,
    /// Seconds between ticks (daemon.tick_interval).
    #[arg(long)]
    tick_interval: Option<u64>,
}

fn flag(layers: &mut Vec<Layer>, name: &str, path: &[&str], value: String) -> anyhow::Result<()> {
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    layers.push(Layer::from_override(
        Source::Flag(name.into()),
        &path,
        &value,
    )?);
    Ok(())
}

pub async fn run(home: &Home, args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    // First: a SIGTERM that arrives once the port answers (a supervisor, a
    // test that saw readiness) must stop the daemon cleanly, not kill it with
    // the default action because no handler was installed yet.
    let mut stop_signals = StopSignals::install()?;
    // Before anything opens a file: the connection cap is computed from it.
    let fd_limit = crate::http::serve::raise_fd_limit();
    // Then, before anything touches the home: one daemon per home.
    let home_lock = crate::daemon::home_lock::HomeLock::acquire(home)?;
    let mut overrides = Vec::new();
    if let Some(b) = &args.bind {
        flag(&mut overrides, "--bind", &["server", "bind"], b.clone())?;
    }
    if let Some(t) = args.tick_interval {
        flag(
            &mut overrides,
            "--tick-interval",
            &["daemon", "tick_interval"],
            t.to_string(),
        )?;
    } else if args.demo && std::env::var("MOZI_DAEMON__TICK_INTERVAL").is_err() {
        // The demo should move briskly; writes wake the daemon anyway.
        flag(
            &mut overrides,
            "--demo",
            &["daemon", "tick_interval"],
            "5".into(),
        )?;
    }
    if args.demo {
        for file in demo_project::ensure_demo_config(home).with_context(|| {
            format!(
                "cannot write the demo's configuration in {}",
                home.root().display()
            )
        })? {
            tracing::info!(file = %file.display(), "bundled demo configuration written");
        }
        let created = demo_project::ensure_demo(home).await?;
        if !created.is_empty() {
            tracing::info!(tasks = ?created, "demo project seeded");
        }
    }
    let daemon = Daemon::new(home.clone(), overrides)?;
    // A home that is not the one meant (an empty folder, a typo in --home)
    // is said at once, not discovered when nothing runs.
    if !home.default_config_file().exists() && !args.demo {
        eprintln!(
            "moziplus: warning: {} missing, defaults used (is {} the home you meant? --home or MOZI_HOME)",
            home.default_config_file().display(),
            home.root().display()
        );
    }
    if daemon.agents().agents.is_empty() {
        eprintln!(
            "moziplus: warning: {} defines no agents: no task will run (`moziplus serve --demo` writes a demo team)",
            home.agents_file().display()
        );
    }
    let addr: SocketAddr = daemon.config().server.bind_addr();
    if !addr.ip().is_loopback()
        && daemon
            .config()
            .server
            .api_token
            .as_deref()
            .unwrap_or("")
            .is_empty()
    {
        bail!("refusing to listen on non-loopback {addr} without server.api_token (set MOZI_SERVER__API_TOKEN)");
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {addr}: the port is taken (another moziplus or another program); \
             pass --bind 127.0.0.1:PORT or set server.bind"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
    };
    // The port is ours: the daemon runs, and says who holds the home.
    home_lock.record(home)?;
    crate::http::metrics_handle();
    // One item bound: the guard's `server.max_body_items`, in the gateway too.
    let mut gateway_config = daemon.config().gateway.clone();
    gateway_config.max_body_items = daemon.config().server.max_body_items;
    let gateway = crate::gateway::Gateway::new(
        gateway_config,
        crate::daemon::gateway_hooks::DaemonHooks::new(daemon.clone()),
        crate::secrets::env_var,
    )
    .map_err(|e| anyhow::anyhow!("gateway: `{}` {}", e.key, e.reason))?;
    daemon.set_gateway(gateway);
    daemon.set_board_calls(std::sync::Arc::new(|call| {
        Box::pin(super::bb::for_run(call))
    }));
    let handles = daemon.start().await?;
    tracing::info!(%addr, home = %home.root().display(), "moziplus serving; dashboard at http://{addr}/");
    println!(
        "moziplus: serving on http://{addr}/ (home {})",
        home.root().display()
    );
    let app = crate::http::router(daemon.clone());
    let limits = crate::http::serve::Limits::new(&daemon.config().server, fd_limit);
    tracing::info!(
        fd_limit,
        max_connections = limits.max_connections,
        header_timeout_s = limits.header_timeout.as_secs(),
        "listener limits"
    );
    let mut stop = daemon.shutdown_signal();
    let server = crate::http::serve::serve(listener, app, limits, async move {
        let _ = stop.changed().await;
    });
    let server_task = tokio::spawn(server);
    // Sandboxed runs reach the gateway and the API through this socket;
    // without it they are refused (`daemon::runs`), the rest works.
    match crate::daemon::sandbox_socket::bind(home) {
        Ok(listener) => {
            let mut stop = daemon.shutdown_signal();
            let app = crate::http::sandbox_router(daemon.clone());
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "the socket of sandboxed runs stopped");
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "no socket for sandboxed runs: agents with permissions: sandbox will not start");
        }
    }
    stop_signals.recv().await;
    tracing::info!("shutting down: stopping the ticker, giving runs their grace period");
    shutdown_deadline(std::time::Duration::from_secs(
        daemon.config().daemon.kill_grace + SHUTDOWN_MARGIN_SECS,
    ));
    daemon.shutdown(handles).await;
    let _ = server_task.await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Seconds shutdown may take beyond the runs' `kill_grace`.
const SHUTDOWN_MARGIN_SECS: u64 = 20;

/// Ends the process once `limit` has passed, whatever the runtime is doing:
/// a part stuck in a blocking call (a FIFO, a hung disk) must not keep a
/// stopped daemon alive. A thread of its own, so a blocked runtime cannot
/// hold it up.
fn shutdown_deadline(limit: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(
                seconds = limit.as_secs(),
                "shutdown did not finish in time; exiting now"
            );
            eprintln!(
                "moziplus: shutdown did not finish within {} s; exiting",
                limit.as_secs()
            );
            std::process::exit(super::output::EXIT_ERROR);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the shutdown deadline");
    }
}

/// SIGTERM and SIGINT, caught from the moment `serve` starts; one received
/// before the daemon is up is kept and stops it as soon as it is.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOZI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // JSON when not on a terminal (PM2 and systemd collect it).
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().try_init()
    };
}
