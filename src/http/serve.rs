//! The listener loop: idle and half-sent connections cannot take the daemon
//! down (issue 13, defect 9).
//!
//! axum's `serve` has neither a header-read timeout nor a connection limit,
//! so 1,100 idle sockets under a 1,024-descriptor limit made `accept` fail
//! and left nothing for the daemon's own files. Here:
//!
//! * every connection must send a request's headers within
//!   `server.header_timeout` seconds (also the idle time of a kept-alive
//!   connection), or it is closed;
//! * at most [`connection_cap`] connections are open: above it the loop
//!   stops accepting (new clients wait in the kernel's backlog) until one
//!   closes;
//! * [`raise_fd_limit`] lifts the soft descriptor limit to the hard one at
//!   start, and the cap stays a reserve below it, so databases, logs, briefs
//!   and agent pipes always find a descriptor;
//! * an `accept` error (EMFILE, ECONNABORTED) backs off briefly instead of
//!   spinning.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Descriptors always left for the daemon's own files, at least.
pub const MIN_FD_RESERVE: u64 = 256;

/// How the listener limits its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers.
    pub header_timeout: Duration,
}

impl Limits {
    /// The limits of a configuration under the descriptor limit `fd_limit`.
    pub fn new(server: &crate::config::ServerConfig, fd_limit: u64) -> Limits {
        Limits {
            max_connections: connection_cap(server.max_connections, fd_limit),
            header_timeout: Duration::from_secs(server.header_timeout),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit
/// in force afterwards (unchanged when raising is refused).
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The connection cap: `configured`, but never closer than a quarter of the
/// descriptor limit (at least [`MIN_FD_RESERVE`]) to `fd_limit`.
pub fn connection_cap(configured: u32, fd_limit: u64) -> usize {
    let reserve = (fd_limit / 4).max(MIN_FD_RESERVE);
    let room = fd_limit.saturating_sub(reserve).max(8);
    (configured as u64).min(room) as usize
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// requests finish (each connection closes after its current response).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the connection semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or an aborted handshake: wait a
                    // moment rather than spin on the same error.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
