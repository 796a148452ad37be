//! `moziplus serve` — run the daemon.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use axum::serve::ListenerExt;
use clap::Args;

use crate::config::{Layer, Source};
use crate::daemon::{demo, Daemon};
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
        for file in demo::ensure_demo_config(home).with_context(|| {
            format!(
                "cannot write the demo's configuration in {}",
                home.root().display()
            )
        })? {
            tracing::info!(file = %file.display(), "bundled demo configuration written");
        }
        let created = demo::ensure_demo(home).await?;
        if !created.is_empty() {
            tracing::info!(tasks = ?created, "demo project seeded");
        }
    }
    let daemon = Daemon::new(home.clone(), overrides)?;
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
    // TCP_NODELAY: SSE events are small writes; with Nagle each one after
    // the first waits for the client's delayed ACK (40 ms on Linux).
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?
        .tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
    crate::http::metrics_handle();
    let gateway = crate::gateway::Gateway::new(
        daemon.config().gateway.clone(),
        crate::daemon::gateway_hooks::DaemonHooks::new(daemon.clone()),
    )
    .map_err(|e| anyhow::anyhow!("gateway: `{}` {}", e.key, e.reason))?;
    daemon.set_gateway(gateway);
    let handles = daemon.start().await?;
    tracing::info!(%addr, home = %home.root().display(), "moziplus serving; dashboard at http://{addr}/");
    println!(
        "moziplus: serving on http://{addr}/ (home {})",
        home.root().display()
    );
    let app = crate::http::router(daemon.clone());
    let mut stop = daemon.shutdown_signal();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.changed().await;
    });
    let server_task = tokio::spawn(async move { server.await });
    wait_for_signal().await;
    tracing::info!("shutting down: stopping the ticker, giving runs their grace period");
    daemon.shutdown(handles).await;
    let _ = server_task.await;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
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
