//! The daemon's controls: [`Daemon::start`] recovers what a crash left and
//! spawns the background parts (inbox consumer, ticker, snapshots, event
//! pump, webhooks, provider health, gateway history); [`Daemon::shutdown`]
//! stops them, gives runs `kill_grace` and closes the databases last;
//! pausing and resuming the ticker. Here, above the parts it drives, so
//! that `mod.rs` (the [`Daemon`] context) holds state and imports none of
//! them.

use tokio::sync::mpsc;

use super::{
    cluster, event_pump, gateway_history, inbox_consumer, provider_watch, recovery, runs,
    snapshots, ticker, webhooks, Daemon, DaemonError, TickRequest,
};
use crate::locks::Recover;
use std::sync::atomic::Ordering;

impl Daemon {
    pub fn pause_ticker(&self) {
        self.inner.ticker_paused.store(true, Ordering::SeqCst);
        self.republish_waits();
    }
    pub fn resume_ticker(&self) {
        self.inner.ticker_paused.store(false, Ordering::SeqCst);
        self.republish_waits();
        self.wake();
    }
    /// Republishes every project's wait reasons with the ticker's state.
    fn republish_waits(&self) {
        let open: Vec<_> = self
            .projects()
            .snapshot()
            .into_iter()
            .map(|s| s.id)
            .collect();
        self.waits()
            .republish(self.home(), self.ticker_paused(), &open);
    }

    /// Starts the background parts (recovery, inbox, ticker, snapshots). Returns their
    /// join handles; [`Daemon::shutdown`] stops them.
    pub async fn start(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, DaemonError> {
        self.projects().refresh(self).await?;
        match cluster::join(self).await {
            Ok(Some(m)) => {
                tracing::info!(daemon = m.cluster.id(), "joined the store's cluster");
                let _ = self.inner.membership.set(m);
            }
            Ok(None) => {}
            Err(e) => return Err(DaemonError::Store(e)),
        }
        recovery::recover(self).await;
        Ok(vec![
            tokio::spawn(inbox_consumer::run(self.clone())),
            tokio::spawn(ticker::run(self.clone(), self.take_tick_requests()?)),
            tokio::spawn(snapshots::run(self.clone())),
            tokio::spawn(cluster::run(self.clone())),
            tokio::spawn(cluster::listen(self.clone())),
            tokio::spawn(event_pump::run(self.clone())),
            tokio::spawn(webhooks::run(self.clone())),
            tokio::spawn(provider_watch::run(self.clone())),
            tokio::spawn(gateway_history::run(self.clone())),
        ])
    }

    /// The receiving end of [`Daemon::tick_now`]'s requests, for the one
    /// ticker loop.
    fn take_tick_requests(&self) -> Result<mpsc::UnboundedReceiver<TickRequest>, DaemonError> {
        self.inner
            .tick_receiver
            .locked()
            .take()
            .ok_or_else(|| DaemonError::Refused("the daemon was already started".into()))
    }

    /// Graceful shutdown: stop ticking, give runs `kill_grace`, kill the rest,
    /// close the databases.
    pub async fn shutdown(&self, handles: Vec<tokio::task::JoinHandle<()>>) {
        let _ = self.inner.shutdown_tx.send(true);
        self.wake();
        for h in handles {
            let _ = h.await;
        }
        runs::stop_all(self).await;
        if let Some(gateway) = self.gateway() {
            gateway.shutdown().await; // books queued token usage while the blackboards are open
        }
        self.projects().close_all().await;
    }
}
