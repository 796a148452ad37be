//! Watching the gateway's providers: every [`INTERVAL`] the gateway's
//! status is judged by [`assess`], kept in the context's [`ProviderHealth`]
//! (readiness, the overview), and each change is written as an event to
//! every open project (`provider.degraded` at level `attention`,
//! `provider.recovered` at `daily`; webhooks deliver them like any event).
//!
//! [`ProviderHealth`]: super::provider_health::ProviderHealth

use serde_json::json;

use super::provider_health::{assess, INTERVAL};
use super::Daemon;
use crate::blackboard::{Actor, EventLevel};

/// Runs until shutdown: assesses the gateway every [`INTERVAL`] and writes
/// each change as an event to every open project.
pub async fn run(d: Daemon) {
    let mut shutdown = d.shutdown_signal();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let Some(gw) = d.gateway() else { continue };
        let now = assess(&gw.status());
        let changes = d
            .provider_health()
            .update(now, chrono::Utc::now().timestamp_millis());
        for p in &changes.degraded {
            tracing::warn!(provider = %p.provider, reason = %p.reason, "provider degraded");
            record(
                &d,
                EventLevel::Attention,
                "provider.degraded",
                json!({"provider": p.provider, "reason": p.reason}),
            )
            .await;
        }
        for name in &changes.recovered {
            tracing::info!(provider = %name, "provider recovered");
            record(
                &d,
                EventLevel::Daily,
                "provider.recovered",
                json!({"provider": name}),
            )
            .await;
        }
    }
}

/// One event in every open project's log (the event pump and webhooks take
/// it from there).
async fn record(d: &Daemon, level: EventLevel, kind: &str, data: serde_json::Value) {
    for slot in d.projects().snapshot() {
        let Some(bb) = slot.bb.as_ref() else { continue };
        if let Err(e) = bb
            .record_event(level, kind, None, &Actor::daemon(), data.clone())
            .await
        {
            tracing::warn!(project = %slot.id, error = %e, "cannot record {kind}");
        }
    }
    d.events().wake();
}
