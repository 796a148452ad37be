//! Webhooks: every event whose level a webhook asks for is POSTed
//! to it as the SSE JSON of docs/API.md.
//!
//! One delivery task per webhook, fed through a bounded queue ([`QUEUE`]
//! events; when it is full the newest events are dropped and counted, so a
//! dead receiver never grows memory). Each event is tried `max_attempts`
//! times with exponential backoff (0.5 s, 1 s, 2 s … capped at 30 s); a 2xx is
//! success. Giving up becomes a `warn` observation in the event's project —
//! never a crash. Failures to deliver the daemon's own webhook observations
//! are only logged, so a dead URL cannot feed itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::event_hub::StreamEvent;
use super::Daemon;
use crate::blackboard::{Actor, ActorKind, ObservationLevel};
use crate::config::WebhookConfig;

/// Events waiting per webhook.
pub const QUEUE: usize = 1024;
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Who webhook observations are written by.
pub const ACTOR: &str = "daemon:webhooks";

/// Runs until shutdown: one delivery task per configured webhook.
pub async fn run(d: Daemon) {
    let hooks = d.config().notifications.webhooks.clone();
    if hooks.is_empty() {
        return;
    }
    let mut rx = d.events().subscribe();
    let mut queues = Vec::new();
    let mut tasks = Vec::new();
    for (i, hook) in hooks.into_iter().enumerate() {
        let (tx, qrx) = mpsc::channel(QUEUE);
        tasks.push(tokio::spawn(deliver(d.clone(), i, hook.clone(), qrx)));
        queues.push((hook, tx, 0u64));
    }
    let mut shutdown = d.shutdown_signal();
    loop {
        let ev = tokio::select! {
            _ = shutdown.changed() => break,
            r = rx.recv() => r,
        };
        match ev {
            Ok(ev) => {
                for (hook, tx, dropped) in &mut queues {
                    if !hook.levels.contains(&ev.level) {
                        continue;
                    }
                    if tx.try_send(ev.clone()).is_err() {
                        *dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(url = %hook.url, dropped = *dropped, "webhook queue full; events dropped");
                        }
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "webhooks fell behind the event stream");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    drop(queues);
    for t in tasks {
        t.abort();
    }
}

fn backoff(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

async fn deliver(
    d: Daemon,
    index: usize,
    hook: WebhookConfig,
    mut rx: mpsc::Receiver<Arc<StreamEvent>>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(hook.timeout_ms))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %hook.url, error = %e, "webhook client cannot be built");
            return;
        }
    };
    while let Some(ev) = rx.recv().await {
        let mut last_error = String::new();
        let mut delivered = false;
        for attempt in 0..hook.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt - 1)).await;
            }
            let mut req = client
                .post(&hook.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Mozi-Event-Id", ev.id)
                .header("X-Mozi-Project", ev.project.as_ref())
                .body(ev.json.clone());
            for (k, v) in &hook.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(r) => last_error = format!("HTTP {}", r.status()),
                Err(e) => last_error = e.to_string(),
            }
            metrics::counter!("moziplus_webhook_failures_total").increment(1);
        }
        if delivered {
            metrics::counter!("moziplus_webhook_deliveries_total").increment(1);
            continue;
        }
        tracing::warn!(url = %hook.url, event = ev.id, project = %ev.project, error = %last_error, "webhook delivery failed");
        if ev.json.contains(&format!("\"actor\":\"{ACTOR}\"")) {
            continue;
        }
        let Some(bb) = d.projects().get(&ev.project).and_then(|s| s.bb) else {
            continue;
        };
        let body = format!(
            "webhook {index} ({}) failed to take event {} after {} attempt(s): {last_error}",
            hook.url, ev.id, hook.max_attempts
        );
        let actor = Actor {
            name: ACTOR.into(),
            kind: ActorKind::Daemon,
        };
        if let Err(e) = bb
            .add_observation(ObservationLevel::Warn, &actor, None, &body)
            .await
        {
            tracing::warn!(error = %e, "cannot record the webhook failure");
        }
    }
}
