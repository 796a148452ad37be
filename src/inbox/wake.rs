//! The wake socket, both ends: `inbox/wake.sock` ([`Home::wake_socket_file`]).
//!
//! A writer that changed a project from outside the daemon (`moziplus bb`,
//! `inbox push`) [`send`]s the project's id as one datagram: instant, free
//! when no daemon listens, and it leaves no trace on disk. The daemon binds
//! the socket once ([`Listener::bind`], in its inbox consumer) and wakes its
//! ticker on every datagram; what the datagram says is not read, since every
//! wake ticks all projects.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use crate::home::Home;

/// Tells a running daemon that `project` changed. Never fails the caller:
/// without a daemon there is nobody to wake.
pub fn send(home: &Home, project: &str) {
    let path = home.wake_socket_file();
    if let Ok(sock) = UnixDatagram::unbound() {
        let _ = sock.set_nonblocking(true);
        let _ = sock.send_to(project.as_bytes(), &path);
    }
}

/// The daemon's end: the bound socket, removed again when dropped.
#[derive(Debug)]
pub struct Listener {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl Listener {
    /// Binds the home's wake socket, replacing a stale one a stopped daemon
    /// left. `Err` names the path: writers then wake the daemon only through
    /// the inbox file.
    pub fn bind(home: &Home) -> Result<Listener, (PathBuf, std::io::Error)> {
        let path = home.wake_socket_file();
        let _ = std::fs::remove_file(&path);
        match tokio::net::UnixDatagram::bind(&path) {
            Ok(socket) => Ok(Listener { socket, path }),
            Err(e) => Err((path, e)),
        }
    }

    /// Waits for the next wake datagram.
    pub async fn recv(&self) -> std::io::Result<()> {
        let mut buf = [0u8; 256];
        self.socket.recv(&mut buf).await.map(|_| ())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sent_wake_reaches_the_listener_and_the_socket_goes_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path().to_path_buf());
        std::fs::create_dir_all(home.wake_socket_file().parent().expect("parent"))
            .expect("inbox dir");
        // Without a listener, sending is a no-op that does not fail.
        send(&home, "p1");
        let listener = Listener::bind(&home).expect("bind");
        send(&home, "p1");
        tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
            .await
            .expect("the wake arrives")
            .expect("recv");
        let path = home.wake_socket_file();
        assert!(path.exists());
        drop(listener);
        assert!(!path.exists(), "the socket is removed with its listener");
    }
}
