//! The daemon's side of the sandboxed runs' network: `<home>/run/api.sock`
//! (`Home::sandbox_socket_file`), bound read-only into every sandbox. Each
//! connection is carried to the daemon's own listener (`server.bind`), so a
//! sandboxed run reaches the gateway and the API — with the same checks as
//! any loopback client — and nothing else (`runtime::sandbox`).

use std::net::SocketAddr;

use tokio::net::{TcpStream, UnixListener};
use tokio::sync::watch;

/// Binds the socket (replacing a stale one) and serves it until `stop`.
/// The folder is private to the daemon's user.
pub fn serve(
    home: &crate::home::Home,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let dir = home.sandbox_socket_dir();
    crate::home::create_private_dir_all(&dir)?;
    let path = home.sandbox_socket_file();
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display()))
    })?;
    let target = loopback(addr);
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                conn = listener.accept() => {
                    let Ok((mut unix, _)) = conn else { continue };
                    tokio::spawn(async move {
                        let Ok(mut tcp) = TcpStream::connect(target).await else { return };
                        let _ = tcp.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
                    });
                }
            }
        }
    }))
}

/// The address to connect to: an unspecified bind (`0.0.0.0`, `::`) is
/// reached on loopback.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}
