//! The socket of sandboxed runs: `<home>/run/api.sock`
//! (`Home::sandbox_socket_file`), bound read-only into every sandbox, where
//! `moziplus sandbox-init` forwards the run's connections. `cli::serve`
//! serves `http::sandbox_router` on it: the gateway and `POST
//! /api/runs/bb`, nothing else (`runtime::sandbox`).

use tokio::net::UnixListener;

/// Binds the socket in its private folder, replacing a stale one.
pub fn bind(home: &crate::home::Home) -> std::io::Result<UnixListener> {
    let dir = home.sandbox_socket_dir();
    crate::home::create_private_dir_all(&dir)?;
    let path = home.sandbox_socket_file();
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))
}
