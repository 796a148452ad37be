//! One writer for the token usage the gateway reports.
//!
//! The gateway reports usage on its request path ([`GatewayHooks::record_usage`]
//! is synchronous and must not block), once per response. Each report goes
//! into a bounded channel; one task takes whatever has queued up (up to
//! [`MAX_BATCH`] reports), adds the reports of a session together per
//! provider, model and quarter hour ([`usage_bucket`]), and books each
//! project's share in one write transaction (the session rows and the
//! `llm_usage` history). Under load the batches
//! grow by themselves; when idle, a report is booked at once.
//!
//! Back-pressure never blocks the request and never loses a report
//! silently:
//! - channel full → the report is added to a small spill map keyed by
//!   (project, session, provider, model, bucket) (bounded by the live runs
//!   and their models, not by traffic), which the writer books with its next batch
//!   (`moziplus_gateway_usage_reports_total{outcome="spilled"}`);
//! - writer closed (daemon shutting down, after the flush) → the report is
//!   logged at warn with its tokens and counted (`outcome="dropped"`);
//! - a batch the blackboard refuses → logged with its tokens and counted
//!   (`outcome="failed"`, one per session row).
//!
//! [`UsageWriter::close`] stops taking reports and books everything queued
//! or spilled before it returns: the daemon calls it on shutdown while the
//! blackboards are still open.
//!
//! [`GatewayHooks::record_usage`]: crate::gateway::GatewayHooks::record_usage

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::blackboard::usage::{usage_bucket, UsageBooking};
use crate::locks::Recover;

/// Reports the channel holds before they spill.
pub const CHANNEL_CAPACITY: usize = 4096;
/// Most reports booked in one batch.
pub const MAX_BATCH: usize = 1024;
/// `moziplus_gateway_usage_reports_total{outcome}`: `queued`, `spilled`,
/// `dropped`, `failed`.
pub const REPORTS: &str = "moziplus_gateway_usage_reports_total";

/// One usage report of one response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Booking {
    pub project: String,
    pub session: String,
    pub provider: String,
    pub model: String,
    /// When the response was booked (ms since the epoch).
    pub at_ms: i64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// USD, `None` when no price matched.
    pub cost_usd: Option<f64>,
}

/// One project's share of a batch: one line per (session, provider, model,
/// bucket), in that order.
pub type SessionRows = Vec<UsageBooking>;

/// Where batches go: books one project's rows in one transaction.
pub trait UsageSink: Send + Sync + 'static {
    fn book<'a>(
        &'a self,
        project: &'a str,
        rows: &'a [UsageBooking],
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The spill map's and the batch's key: one line of `llm_usage`.
type LineKey = (String, String, String, String, i64);

/// Adds one report to a line.
fn add(line: &mut UsageBooking, b: &Booking) {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    line.responses = line.responses.saturating_add(1);
    line.prompt_tokens = line.prompt_tokens.saturating_add(n(b.prompt_tokens));
    line.completion_tokens = line
        .completion_tokens
        .saturating_add(n(b.completion_tokens));
    line.cached_tokens = line.cached_tokens.saturating_add(n(b.cached_tokens));
    match b.cost_usd {
        Some(c) => line.cost += c,
        None => line.unpriced = line.unpriced.saturating_add(1),
    }
}

fn key_of(b: &Booking) -> LineKey {
    (
        b.project.clone(),
        b.session.clone(),
        b.provider.clone(),
        b.model.clone(),
        usage_bucket(b.at_ms),
    )
}

fn line_of(key: &LineKey) -> UsageBooking {
    UsageBooking {
        session_id: key.1.clone(),
        provider: key.2.clone(),
        model: key.3.clone(),
        bucket_start: key.4,
        ..Default::default()
    }
}

/// Counts of what happened to reports (also exported as metrics).
#[derive(Debug, Default)]
pub struct UsageStats {
    pub queued: AtomicU64,
    pub spilled: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
}

impl UsageStats {
    fn count(&self, outcome: &'static str, n: u64) {
        let counter = match outcome {
            "queued" => &self.queued,
            "spilled" => &self.spilled,
            "dropped" => &self.dropped,
            _ => &self.failed,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(REPORTS, "outcome" => outcome).increment(n);
    }
}

/// Reports that found the channel full, added up per line.
#[derive(Default)]
struct Spill {
    /// Set by the writer's last take: later reports are dropped, not kept.
    closed: bool,
    pending: HashMap<LineKey, UsageBooking>,
}

/// The spill map plus the writer's wake-up.
#[derive(Default)]
struct Overflow {
    spill: Mutex<Spill>,
    wake: Notify,
}

impl Overflow {
    /// The spill map, also after a panic elsewhere poisoned its lock: it
    /// holds plain sums, which a panic cannot leave half-updated in a way
    /// worse than losing one addition.
    fn spill(&self) -> MutexGuard<'_, Spill> {
        self.spill.locked()
    }

    /// Everything spilled so far, as (project, line); `close` also
    /// refuses later spills.
    fn take(&self, close: bool) -> Vec<(String, UsageBooking)> {
        let mut spill = self.spill();
        spill.closed |= close;
        spill
            .pending
            .drain()
            .map(|((project, ..), line)| (project, line))
            .collect()
    }
}

/// The batching writer: cheap to call from the request path.
pub struct UsageWriter {
    tx: mpsc::Sender<Booking>,
    overflow: Arc<Overflow>,
    stats: Arc<UsageStats>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl UsageWriter {
    /// Starts the writer task (call inside a tokio runtime).
    pub fn start(sink: Arc<dyn UsageSink>, capacity: usize, max_batch: usize) -> UsageWriter {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let overflow = Arc::new(Overflow::default());
        let stats = Arc::new(UsageStats::default());
        let task = tokio::spawn(write(
            rx,
            overflow.clone(),
            sink,
            stats.clone(),
            stop_rx,
            max_batch.max(1),
        ));
        UsageWriter {
            tx,
            overflow,
            stats,
            stop: Mutex::new(Some(stop_tx)),
            task: tokio::sync::Mutex::new(Some(task)),
        }
    }

    /// Queues one report; never waits (see the module docs for a full
    /// channel and a closed writer).
    pub fn book(&self, booking: Booking) {
        let booking = match self.tx.try_send(booking) {
            Ok(()) => return self.stats.count("queued", 1),
            Err(TrySendError::Full(b)) => b,
            Err(TrySendError::Closed(b)) => return self.drop_report(&b),
        };
        let mut spill = self.overflow.spill();
        if spill.closed {
            drop(spill);
            return self.drop_report(&booking);
        }
        let key = key_of(&booking);
        let line = spill.pending.entry(key).or_insert_with_key(line_of);
        add(line, &booking);
        drop(spill);
        self.stats.count("spilled", 1);
        self.overflow.wake.notify_one();
    }

    fn drop_report(&self, b: &Booking) {
        self.stats.count("dropped", 1);
        tracing::warn!(
            project = %b.project,
            session = %b.session,
            prompt_tokens = b.prompt_tokens,
            completion_tokens = b.completion_tokens,
            "token usage reported after the usage writer closed; not booked"
        );
    }

    /// What happened to reports so far.
    pub fn stats(&self) -> &UsageStats {
        &self.stats
    }

    /// Stops taking reports and books everything queued or spilled; returns
    /// when the last batch is committed. Idempotent.
    pub async fn close(&self) {
        let stop = self.stop.locked().take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.lock().await.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the usage writer ended abnormally");
            }
        }
    }
}

/// The writer task: batches until stopped (or every sender is gone), then
/// drains the channel and the spill map.
async fn write(
    mut rx: mpsc::Receiver<Booking>,
    overflow: Arc<Overflow>,
    sink: Arc<dyn UsageSink>,
    stats: Arc<UsageStats>,
    mut stop: oneshot::Receiver<()>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut stopping = false;
    loop {
        // Biased: queued reports first, so a batch is everything that was
        // waiting (and tests see the same batches every run).
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, max_batch) => {
                if n == 0 {
                    break; // closed and drained
                }
            }
            _ = overflow.wake.notified(), if !stopping => {}
            _ = &mut stop, if !stopping => {
                // Later `try_send`s fail as closed; what is queued still
                // comes out of `recv_many`, which then returns 0.
                stopping = true;
                rx.close();
            }
        }
        let spilled = overflow.take(false);
        flush(&*sink, &stats, by_project(batch.drain(..), spilled)).await;
    }
    flush(&*sink, &stats, by_project(Vec::new(), overflow.take(true))).await;
}

/// Books a batch: one transaction per project.
async fn flush(sink: &dyn UsageSink, stats: &UsageStats, batch: BTreeMap<String, SessionRows>) {
    for (project, rows) in batch {
        if let Err(e) = sink.book(&project, &rows).await {
            stats.count("failed", rows.len() as u64);
            let (prompt, completion) = rows.iter().fold((0, 0), |(p, c), r| {
                (p + r.prompt_tokens, c + r.completion_tokens)
            });
            tracing::warn!(
                project = %project,
                sessions = rows.len(),
                prompt_tokens = prompt,
                completion_tokens = completion,
                error = %e,
                "cannot book token usage"
            );
        }
    }
}

/// A batch grouped by project, each line's reports added up (with lines
/// already summed, from the spill map); projects and lines in order.
pub fn by_project(
    batch: impl IntoIterator<Item = Booking>,
    summed: impl IntoIterator<Item = (String, UsageBooking)>,
) -> BTreeMap<String, SessionRows> {
    let mut lines: BTreeMap<LineKey, UsageBooking> = BTreeMap::new();
    for b in batch {
        let key = key_of(&b);
        let line = lines.entry(key).or_insert_with_key(line_of);
        add(line, &b);
    }
    for (project, s) in summed {
        let key = (
            project,
            s.session_id.clone(),
            s.provider.clone(),
            s.model.clone(),
            s.bucket_start,
        );
        match lines.get_mut(&key) {
            Some(line) => {
                line.responses += s.responses;
                line.unpriced += s.unpriced;
                line.prompt_tokens += s.prompt_tokens;
                line.completion_tokens += s.completion_tokens;
                line.cached_tokens += s.cached_tokens;
                line.cost += s.cost;
            }
            None => {
                lines.insert(key, s);
            }
        }
    }
    let mut out: BTreeMap<String, SessionRows> = BTreeMap::new();
    for ((project, ..), line) in lines {
        out.entry(project).or_default().push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every `book` call: (project, rows).
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(String, SessionRows)>>,
        refuse: Option<&'static str>,
    }

    impl UsageSink for Recorder {
        fn book<'a>(
            &'a self,
            project: &'a str,
            rows: &'a [UsageBooking],
        ) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                if self.refuse == Some(project) {
                    return Err(format!("project {project} is unavailable"));
                }
                self.calls
                    .locked()
                    .push((project.to_string(), rows.to_vec()));
                Ok(())
            })
        }
    }

    fn report(project: &str, session: &str, p: u64, c: u64) -> Booking {
        Booking {
            project: project.into(),
            session: session.into(),
            provider: "nvidia".into(),
            model: "m".into(),
            at_ms: 1_000,
            prompt_tokens: p,
            completion_tokens: c,
            cached_tokens: 0,
            cost_usd: Some(0.0),
        }
    }

    /// A line of `session` with `responses` reports summing to (p, c).
    fn line(session: &str, responses: i64, p: i64, c: i64) -> UsageBooking {
        UsageBooking {
            session_id: session.into(),
            provider: "nvidia".into(),
            model: "m".into(),
            bucket_start: 0,
            responses,
            prompt_tokens: p,
            completion_tokens: c,
            ..Default::default()
        }
    }

    /// (session, prompt, completion) of each line.
    fn sums(rows: &[UsageBooking]) -> Vec<(String, i64, i64)> {
        rows.iter()
            .map(|r| (r.session_id.clone(), r.prompt_tokens, r.completion_tokens))
            .collect()
    }

    #[test]
    fn a_batch_is_grouped_by_project_and_summed_per_session() {
        let grouped = by_project(
            [
                report("b", "s2", 1, 2),
                report("a", "s1", 10, 20),
                report("b", "s2", 3, 4),
                report("a", "s3", 5, 6),
                report("a", "s1", 1, 1),
            ],
            Vec::new(),
        );
        let expected: BTreeMap<String, SessionRows> = [
            (
                "a".to_string(),
                vec![line("s1", 2, 11, 21), line("s3", 1, 5, 6)],
            ),
            ("b".to_string(), vec![line("s2", 2, 4, 6)]),
        ]
        .into_iter()
        .collect();
        assert_eq!(grouped, expected);
    }

    #[test]
    fn lines_split_by_model_and_quarter_hour_and_sum_cost_and_unpriced() {
        let mut priced = report("a", "s", 100, 10);
        priced.cached_tokens = 40;
        priced.cost_usd = Some(0.5);
        let mut later = priced.clone();
        later.at_ms = USAGE_BUCKET + 1;
        let mut other_model = priced.clone();
        other_model.model = "n".into();
        other_model.cost_usd = None;
        let grouped = by_project(
            [priced.clone(), priced, later, other_model],
            [("a".to_string(), line("s", 3, 1, 1))],
        );
        let rows = &grouped["a"];
        assert_eq!(rows.len(), 3, "{rows:?}");
        let first = &rows[0];
        assert_eq!((first.model.as_str(), first.bucket_start), ("m", 0));
        // Two reports plus the spilled line of three.
        assert_eq!(first.responses, 5);
        assert_eq!(first.prompt_tokens, 201);
        assert_eq!(first.cached_tokens, 80);
        assert!((first.cost - 1.0).abs() < 1e-12);
        assert_eq!(
            (rows[1].model.as_str(), rows[1].bucket_start),
            ("m", USAGE_BUCKET)
        );
        assert_eq!(
            (rows[2].model.as_str(), rows[2].unpriced, rows[2].cost),
            ("n", 1, 0.0)
        );
    }

    const USAGE_BUCKET: i64 = crate::blackboard::usage::USAGE_BUCKET_MS;

    // Single-threaded runtime: the writer task runs only when the test
    // awaits, so everything booked before `close` is one batch.
    #[tokio::test]
    async fn queued_reports_are_one_transaction_per_project_and_close_flushes_them() {
        let sink = Arc::new(Recorder::default());
        let writer = UsageWriter::start(sink.clone(), 64, 64);
        for i in 0..30u64 {
            let project = if i % 3 == 0 { "a" } else { "b" };
            writer.book(report(project, &format!("s{}", i % 2), 1, i));
        }
        writer.close().await;
        let calls = sink.calls.locked().clone();
        // 30 reports, 2 projects: two transactions, each session once.
        assert_eq!(calls.len(), 2, "{calls:?}");
        let total: i64 = calls
            .iter()
            .flat_map(|(_, r)| r)
            .map(|r| r.completion_tokens)
            .sum();
        assert_eq!(total, (0..30).sum::<i64>());
        assert_eq!(calls[0].0, "a");
        assert_eq!(calls[0].1.iter().map(|r| r.prompt_tokens).sum::<i64>(), 10);
        assert_eq!(calls[1].1.iter().map(|r| r.prompt_tokens).sum::<i64>(), 20);
        assert_eq!(writer.stats().queued.load(Ordering::Relaxed), 30);
    }

    #[tokio::test]
    async fn a_full_channel_spills_without_loss_and_a_closed_writer_counts_drops() {
        let sink = Arc::new(Recorder::default());
        let writer = UsageWriter::start(sink.clone(), 2, 8);
        for _ in 0..5 {
            writer.book(report("a", "s", 1, 1));
        }
        let stats = writer.stats();
        assert_eq!(stats.queued.load(Ordering::Relaxed), 2);
        assert_eq!(stats.spilled.load(Ordering::Relaxed), 3);
        writer.close().await;
        let booked: i64 = sink
            .calls
            .locked()
            .iter()
            .flat_map(|(_, r)| r)
            .map(|r| r.prompt_tokens)
            .sum();
        assert_eq!(booked, 5, "queued and spilled reports are all booked");
        writer.book(report("a", "s", 7, 7));
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 1);
        tokio::task::yield_now().await;
        let calls = sink.calls.locked().clone();
        assert_eq!(
            calls.len(),
            1,
            "one batch, nothing booked after close: {calls:?}"
        );
        assert_eq!(sums(&calls[0].1), vec![("s".to_string(), 5, 5)]);
    }

    #[tokio::test]
    async fn a_refused_batch_is_counted_per_session_and_others_still_book() {
        let sink = Arc::new(Recorder {
            refuse: Some("gone"),
            ..Default::default()
        });
        let writer = UsageWriter::start(sink.clone(), 16, 16);
        writer.book(report("gone", "s1", 1, 1));
        writer.book(report("gone", "s2", 1, 1));
        writer.book(report("ok", "s3", 1, 1));
        writer.close().await;
        assert_eq!(writer.stats().failed.load(Ordering::Relaxed), 2);
        let calls = sink.calls.locked().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "ok");
        assert_eq!(sums(&calls[0].1), vec![("s3".to_string(), 1, 1)]);
    }
}
