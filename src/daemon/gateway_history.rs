//! Sampling the gateway for its stored history (`blackboard::GatewayHistory`):
//! every [`SAMPLE_EVERY`] one [`GatewaySample`] per lane (requests, errors
//! and retries since the last sample, the 429 ratio, in flight and its
//! limit, the bucket, the rates, the answer time, the queue by priority),
//! and samples older than [`KEEP`] pruned. `GET /api/gateway/history` reads
//! them, so the dashboard's charts survive a reload and a restart.
//!
//! The cadence is tokio's clock (a paused clock in the tests) and the
//! samples' times come from an injected clock, so both the 10 s rhythm and
//! the 24 h pruning are tested without waiting.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Daemon;
use crate::blackboard::{GatewayHistory, GatewaySample, Millis};
use crate::gateway::GatewayStatus;

/// One sample per lane this often.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples are kept this long.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);

/// One lane as the gateway reports it, counters as running totals.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneReading {
    pub provider: String,
    pub requests_total: u64,
    pub errors_total: u64,
    pub retries_total: u64,
    pub ratio_429: Option<f64>,
    pub in_flight: i64,
    pub concurrency: i64,
    pub tokens: f64,
    pub effective_rate: f64,
    pub base_rate: f64,
    pub answer_time: Option<f64>,
    pub queue: [i64; 4],
}

/// The limited providers (those with a lane) of a gateway status.
pub fn readings(status: &GatewayStatus) -> Vec<LaneReading> {
    status
        .providers
        .iter()
        .filter_map(|p| {
            let lane = p.lane.as_ref()?;
            let q = &lane.queue_depth;
            Some(LaneReading {
                provider: p.name.clone(),
                requests_total: p.requests.total,
                errors_total: p.requests.errors,
                retries_total: p.requests.retries,
                ratio_429: lane.bucket.ratio_429_last_minute,
                in_flight: lane.in_flight as i64,
                concurrency: lane.concurrency as i64,
                tokens: lane.bucket.tokens,
                effective_rate: lane.bucket.effective_rate_per_minute,
                base_rate: lane.bucket.base_rate_per_minute,
                answer_time: lane.answer_time_seconds,
                queue: [q.urgent, q.high, q.normal, q.low].map(|n| n as i64),
            })
        })
        .collect()
}

/// Turns running totals into counts per interval. The gateway's counters
/// start at zero with the daemon, so so do the previous totals here; a
/// total that went down (a reset) counts from zero.
#[derive(Debug, Default)]
pub struct Sampler {
    prev: HashMap<String, (u64, u64, u64)>,
}

impl Sampler {
    pub fn sample(&mut self, at: Millis, lanes: &[LaneReading]) -> Vec<GatewaySample> {
        lanes
            .iter()
            .map(|l| {
                let (r0, e0, t0) = self.prev.get(&l.provider).copied().unwrap_or_default();
                let since = |now: u64, before: u64| -> i64 {
                    let d = if now >= before { now - before } else { now };
                    i64::try_from(d).unwrap_or(i64::MAX)
                };
                self.prev.insert(
                    l.provider.clone(),
                    (l.requests_total, l.errors_total, l.retries_total),
                );
                GatewaySample {
                    provider: l.provider.clone(),
                    at,
                    requests: since(l.requests_total, r0),
                    errors: since(l.errors_total, e0),
                    retries: since(l.retries_total, t0),
                    ratio_429: l.ratio_429,
                    in_flight: l.in_flight,
                    concurrency: l.concurrency,
                    tokens: l.tokens,
                    effective_rate: l.effective_rate,
                    base_rate: l.base_rate,
                    answer_time: l.answer_time,
                    queue: l.queue,
                }
            })
            .collect()
    }
}

/// One round of samples and the time before which samples are pruned.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    pub samples: Vec<GatewaySample>,
    pub keep_from: Millis,
}

/// Rounds waiting for the writer before a round is dropped (logged).
const ROUND_BUFFER: usize = 64;

/// Samples `read` every [`SAMPLE_EVERY`] (tokio's clock) stamped with
/// `clock`, and hands each round to `out` with the prune time ([`KEEP`]
/// before it), until `shutdown`. No I/O here: the writer
/// ([`write_rounds`]) stores them, so a slow disk never shifts the rhythm.
pub async fn sample_loop(
    read: impl Fn() -> Vec<LaneReading>,
    clock: impl Fn() -> Millis,
    out: mpsc::Sender<Round>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let now = clock();
        let round = Round {
            samples: sampler.sample(now, &read()),
            keep_from: now - KEEP.as_millis() as Millis,
        };
        match out.try_send(round) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    "gateway history: the writer is behind; a round of samples is dropped"
                )
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Stores each round and prunes what is older than its `keep_from`. A
/// failed write is logged and the next round tries again.
pub async fn write_rounds(history: GatewayHistory, mut rounds: mpsc::Receiver<Round>) {
    while let Some(round) = rounds.recv().await {
        if !round.samples.is_empty() {
            if let Err(e) = history.record(&round.samples).await {
                tracing::warn!(error = %e, "gateway history: cannot store the samples");
            }
        }
        if let Err(e) = history.prune(round.keep_from).await {
            tracing::warn!(error = %e, "gateway history: cannot prune");
        }
    }
}

/// The daemon's sampler: samples the gateway into `gateway/history.db`
/// while the daemon runs (nothing when the gateway is off).
pub async fn run(d: Daemon) {
    if d.gateway().is_none() {
        return;
    }
    let Some(history) = d.gateway_history().await else {
        return;
    };
    let (tx, rx) = mpsc::channel(ROUND_BUFFER);
    let writer = tokio::spawn(write_rounds(history, rx));
    let reader = d.clone();
    sample_loop(
        move || {
            reader
                .gateway()
                .map(|g| readings(&g.status()))
                .unwrap_or_default()
        },
        || chrono::Utc::now().timestamp_millis(),
        tx,
        d.shutdown_signal(),
    )
    .await;
    // The sender is gone: the writer stores what is queued and ends.
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    use std::sync::Arc;

    fn lane(provider: &str, requests: u64) -> LaneReading {
        LaneReading {
            provider: provider.into(),
            requests_total: requests,
            errors_total: requests / 10,
            retries_total: 0,
            ratio_429: Some(0.25),
            in_flight: 2,
            concurrency: 4,
            tokens: 3.5,
            effective_rate: 9.5,
            base_rate: 40.0,
            answer_time: Some(1.5),
            queue: [1, 0, 2, 0],
        }
    }

    #[test]
    fn counters_become_counts_per_interval_and_a_reset_counts_from_zero() {
        let mut s = Sampler::default();
        let first = s.sample(0, &[lane("nvidia", 30)]);
        assert_eq!((first[0].requests, first[0].errors), (30, 3));
        let second = s.sample(10_000, &[lane("nvidia", 50)]);
        assert_eq!((second[0].requests, second[0].errors), (20, 2));
        let reset = s.sample(20_000, &[lane("nvidia", 7)]);
        assert_eq!(reset[0].requests, 7, "a restarted counter counts from zero");
        assert_eq!(reset[0].queue, [1, 0, 2, 0]);
    }

    /// On a paused tokio clock: one round every 10 s, stamped by the
    /// injected clock, each with the prune time a day before it.
    #[tokio::test(start_paused = true)]
    async fn samples_every_ten_seconds_and_prunes_a_day_back() {
        let start = tokio::time::Instant::now();
        let jump = Arc::new(AtomicI64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (stop, shutdown) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel(ROUND_BUFFER);
        let (j, r) = (jump.clone(), requests.clone());
        let looped = tokio::spawn(sample_loop(
            move || {
                let n = r.fetch_add(5, Ordering::SeqCst) + 5;
                vec![lane("nvidia", n), lane("openai", 0)]
            },
            move || 1_000_000 + start.elapsed().as_millis() as i64 + j.load(Ordering::SeqCst),
            tx,
            shutdown,
        ));
        // The first round is at once, then every 10 s: 0, 10, …, 60 s.
        tokio::time::sleep(Duration::from_secs(65)).await;
        let mut rounds = Vec::new();
        while let Ok(round) = rx.try_recv() {
            rounds.push(round);
        }
        let at: Vec<i64> = rounds.iter().map(|r| r.samples[0].at - 1_000_000).collect();
        assert_eq!(at, [0, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000]);
        let day = KEEP.as_millis() as i64;
        assert_eq!(day, 86_400_000);
        for r in &rounds {
            assert_eq!(r.samples.len(), 2, "one sample per lane: {r:?}");
            assert_eq!(r.keep_from, r.samples[0].at - day);
            assert_eq!(r.samples[0].requests, 5);
        }
        // The injected clock jumps a day: the next round prunes everything
        // before the jump.
        jump.store(day, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let next = rx.try_recv().expect("the round after the jump");
        assert_eq!(next.samples[0].at, 1_000_000 + 70_000 + day);
        assert_eq!(next.keep_from, 1_070_000);
        stop.send(true).unwrap();
        looped.await.unwrap();
    }

    /// The writer stores rounds and prunes by their `keep_from` (real
    /// SQLite file).
    #[tokio::test]
    async fn the_writer_stores_and_prunes_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway/history.db");
        let history = GatewayHistory::open(&path).await.unwrap();
        let mut s = Sampler::default();
        let (tx, rx) = mpsc::channel(ROUND_BUFFER);
        for (i, at) in [0, 10_000, 86_405_000].into_iter().enumerate() {
            let samples = s.sample(
                at,
                &[lane("nvidia", 10 * (i as u64 + 1)), lane("openai", 0)],
            );
            tx.send(Round {
                samples,
                keep_from: at - 86_400_000,
            })
            .await
            .unwrap();
        }
        drop(tx);
        write_rounds(history.clone(), rx).await;
        let left = history.samples(0, None, 100).await.unwrap();
        let at: Vec<i64> = left.iter().map(|s| s.at).collect();
        assert_eq!(
            at,
            [10_000, 10_000, 86_405_000, 86_405_000],
            "the 0 ms round is a day old"
        );
        let one = history.samples(10_000, Some("nvidia"), 1).await.unwrap();
        assert_eq!((one.len(), one[0].requests), (1, 10));
        assert_eq!(one[0].queue, [1, 0, 2, 0]);
        history.close().await;
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "private to the user");
    }
}
