//! `moziplus pause` and `moziplus resume`: ask the daemon running on this
//! home to stop or start its ticker, through its own routes
//! (`POST /api/daemon/stop`, `POST /api/daemon/start`). The address is the
//! home's `server.bind` (configuration layers, so `MOZI_SERVER__BIND` too),
//! or `--bind` when the daemon was started with one; the bearer token is
//! `server.api_token` when set.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::{Config, Layer, Source};
use crate::home::Home;

#[derive(Debug, Args)]
pub struct DaemonCtlArgs {
    /// The daemon's address when it was started with `serve --bind`
    /// (default: the home's server.bind).
    #[arg(long)]
    bind: Option<String>,
}

/// What a pause or a resume asks of the daemon.
#[derive(Debug, Clone, Copy)]
pub enum TickerSwitch {
    Pause,
    Resume,
}

impl TickerSwitch {
    fn route(self) -> &'static str {
        match self {
            TickerSwitch::Pause => "/api/daemon/stop",
            TickerSwitch::Resume => "/api/daemon/start",
        }
    }
    fn done(self) -> &'static str {
        match self {
            TickerSwitch::Pause => {
                "paused: no new run starts; runs in flight go on (`moziplus resume` to go on)"
            }
            TickerSwitch::Resume => "resumed: the ticker runs",
        }
    }
}

/// The address of the daemon serving `home` (`bind`: its `serve --bind`)
/// as a client reaches it, with the home's configuration.
pub(crate) fn daemon_address(
    home: &Home,
    bind: Option<&str>,
) -> anyhow::Result<(SocketAddr, Config)> {
    let mut layers = Vec::new();
    if let Some(b) = bind {
        let path = ["server".to_string(), "bind".to_string()];
        layers.push(Layer::from_override(
            Source::Flag("--bind".into()),
            &path,
            b,
        )?);
    }
    let config = Config::load_global(home, &layers)?;
    let bind = &config.server.bind;
    let mut addr: SocketAddr = bind
        .parse()
        .with_context(|| format!("server.bind {bind:?} is not an address (host:port)"))?;
    if addr.ip().is_unspecified() {
        // A daemon listening everywhere answers on loopback.
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok((addr, config))
}

pub async fn run(home: &Home, switch: TickerSwitch, args: DaemonCtlArgs) -> anyhow::Result<()> {
    let (addr, config) = daemon_address(home, args.bind.as_deref())?;
    let url = format!("http://{addr}{}", switch.route());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut request = client.post(&url);
    if let Some(token) = &config.server.api_token {
        request = request.bearer_auth(token);
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) if e.is_connect() => bail!(
            "no daemon answers at {addr} (home {}): start one with `moziplus serve`, or pass --bind with the address it listens on",
            home.root().display()
        ),
        Err(e) => return Err(e).with_context(|| format!("asking the daemon at {addr}")),
    };
    let status = answer.status();
    if !status.is_success() {
        let body = answer.text().await.unwrap_or_default();
        bail!(
            "the daemon at {addr} refused {}: {status} {body}",
            switch.route()
        );
    }
    println!("{}", switch.done());
    Ok(())
}
