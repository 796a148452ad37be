//! A rate lane: the admission control of one limited provider.
//!
//! It joins one [`AdaptiveBucket`] per API key of the provider (a *key
//! pool*), the [`PriorityQueue`] and an in-flight limit. A request asks for
//! a [`LanePermit`] with [`RateLane::acquire`]; the permit stands for one
//! token of one key *and* one in-flight slot. Permits are handed out by a
//! small dispatcher task that only decides who goes next and on which key
//! (the one that can serve soonest) — the upstream calls themselves run
//! concurrently in the callers' tasks.
//!
//! The in-flight limit is `auto` by default: Little's law says a lane that
//! grants `rate` requests a minute whose answers take `W` seconds needs
//! `rate / 60 × W` of them in flight. The lane keeps a moving average of
//! its answer times (from grant to the permit's drop, so a stream counts
//! until its last byte) and sets the limit to that product with 20 %
//! headroom plus one, within `concurrency_min..=concurrency_max`. A fixed
//! number is still accepted.
//!
//! A key that answers with a daily-quota 429 (or a `Retry-After` of at least
//! `park_after`) is *parked* until its window reopens; the other keys carry
//! on and the lane's capacity is the sum of the unparked keys' rates.
//!
//! Invariants:
//! * every queued entry is answered exactly once: granted, dropped (503),
//!   or removed by its own waiter on timeout or cancellation;
//! * a permit that is dropped without [`LanePermit::mark_sent`] gives its
//!   token back to its key, so requests refused later (breaker open, client
//!   gone) do not burn the upstream budget;
//! * dropping a permit frees its slot and wakes the dispatcher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::config::{secs, Concurrency, FullPolicy, GatewayConfig, LimiterConfig};
use crate::limiter::{AdaptiveBucket, BucketSnapshot, RetreatState, RetreatTally};
use crate::metrics;
use crate::queue::{Entry, Priority, PriorityQueue, Wake};
use moziplus_locks::Recover;

/// How often the dispatcher re-evaluates the adaptive state and publishes
/// gauges when nothing else wakes it.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Weight of the newest answer time in the moving average.
const ANSWER_EWMA_WEIGHT: f64 = 0.2;

/// Headroom of the `auto` in-flight limit over rate × answer time.
const AUTO_HEADROOM: f64 = 1.2;

/// Static settings of a lane.
#[derive(Debug, Clone)]
pub struct LaneSettings {
    /// Bucket and adaptive retreat, per key.
    pub limiter: LimiterConfig,
    /// Waiting requests allowed.
    pub max_size: usize,
    /// In-flight upstream requests allowed: `auto` or a number.
    pub concurrency: Concurrency,
    /// Bounds of `auto`.
    pub concurrency_min: usize,
    /// Bounds of `auto`.
    pub concurrency_max: usize,
    /// Answer time `auto` assumes before the lane has seen one.
    pub answer_time_prior: Duration,
    /// Queue-full policy.
    pub policy: FullPolicy,
    /// Names of the pool's keys (their environment variables), at least
    /// one; an empty list is a pool of one unnamed key.
    pub keys: Vec<String>,
    /// Each key's fingerprint (in the order of `keys`; [`key_fingerprint`]
    /// of its value): the name of its own rate row when several daemons
    /// share the lane, the same on every host whatever the variable is
    /// called there. Missing ones fall back to the key's name.
    pub key_ids: Vec<String>,
}

/// A key's fingerprint: the first 16 hex digits of its value's SHA-256
/// (the value itself never leaves the process).
pub fn key_fingerprint(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl LaneSettings {
    /// The settings of a lane under `config`, for a pool of `keys`.
    pub fn from_config(config: &GatewayConfig, keys: Vec<String>) -> LaneSettings {
        LaneSettings {
            limiter: config.limiter.clone(),
            max_size: config.queue.max_size,
            concurrency: config.queue.concurrency,
            concurrency_min: config.queue.concurrency_min,
            concurrency_max: config.queue.concurrency_max,
            answer_time_prior: secs(config.queue.answer_time_prior),
            policy: config.queue.full_policy,
            keys,
            key_ids: Vec::new(),
        }
    }
}

impl Default for LaneSettings {
    fn default() -> Self {
        LaneSettings::from_config(&GatewayConfig::default(), Vec::new())
    }
}

/// Why a request did not get a permit. Each carries the `Retry-After` the
/// client should see.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Waited its whole allowance without a token (429, gateway limit).
    TimedOut { retry_after: Duration },
    /// Queue full under `reject` or `drop_lowest` (503).
    QueueFull { retry_after: Duration },
    /// Evicted by `drop_lowest` for a more urgent request (503).
    Dropped { retry_after: Duration },
    /// Queue full under `passthrough` and no token right now (429).
    NoToken { retry_after: Duration },
}

/// Counters kept by a lane.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LaneCounters {
    /// Permits handed out.
    pub granted: u64,
    /// Waiters that ran out of time.
    pub timed_out: u64,
    /// Newcomers refused because the queue was full.
    pub rejected_full: u64,
    /// Queued requests evicted by `drop_lowest`.
    pub dropped: u64,
    /// Requests that skipped the full queue under `passthrough`.
    pub passthrough: u64,
}

/// Queue depth per priority.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    /// Waiting urgent requests.
    pub urgent: usize,
    /// Waiting high requests.
    pub high: usize,
    /// Waiting normal requests.
    pub normal: usize,
    /// Waiting low requests.
    pub low: usize,
}

/// One key of a lane's pool.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeySnapshot {
    /// The environment variable the key comes from (never the key).
    pub name: String,
    /// This key's bucket and retreat.
    pub bucket: BucketSnapshot,
    /// Permits granted on this key.
    pub granted: u64,
    /// Seconds until a parked key serves again (0 = not parked).
    pub parked_for_seconds: f64,
    /// Why the key is parked.
    pub parked_reason: Option<String>,
}

/// Point-in-time view of a lane.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LaneSnapshot {
    /// The pool's buckets together (rates and tokens summed over the keys
    /// that are not parked).
    pub bucket: BucketSnapshot,
    /// Requests per minute the lane can feed now (sum of the unparked
    /// keys' effective rates).
    pub capacity_per_minute: f64,
    /// Each key of the pool.
    pub keys: Vec<KeySnapshot>,
    /// Waiting requests per priority.
    pub queue_depth: QueueDepth,
    /// Waiting requests in total.
    pub queue_len: usize,
    /// Queue limit.
    pub queue_max: usize,
    /// Full policy.
    pub full_policy: FullPolicy,
    /// Requests in flight upstream.
    pub in_flight: usize,
    /// In-flight limit in force.
    pub concurrency: usize,
    /// How the limit is set: `auto` or the fixed number.
    pub concurrency_mode: Concurrency,
    /// Why the limit is what it is, in words.
    pub concurrency_reason: String,
    /// Moving average of answer times, seconds (`None` before the first).
    pub answer_time_seconds: Option<f64>,
    /// Counters.
    pub counters: LaneCounters,
}

struct KeyState {
    name: String,
    bucket: AdaptiveBucket,
    granted: u64,
    parked_until: Option<Instant>,
    parked_reason: Option<String>,
}

impl KeyState {
    fn parked(&self, now: Instant) -> bool {
        self.parked_until.is_some_and(|t| t > now)
    }
}

struct LaneState {
    keys: Vec<KeyState>,
    queue: PriorityQueue<LanePermit>,
    in_flight: usize,
    concurrency: Concurrency,
    concurrency_min: usize,
    concurrency_max: usize,
    answer_prior: f64,
    answer_ewma: Option<f64>,
    max_size: usize,
    policy: FullPolicy,
    counters: LaneCounters,
}

impl LaneState {
    /// Requests per minute of the keys that are not parked.
    fn capacity_per_minute(&self, now: Instant) -> f64 {
        self.keys
            .iter()
            .filter(|k| !k.parked(now))
            .map(|k| k.bucket.effective_rate())
            .sum()
    }

    /// The in-flight limit in force (on every grant: no formatting here).
    fn limit(&self, now: Instant) -> usize {
        match self.concurrency {
            Concurrency::Fixed(n) => n,
            Concurrency::Auto => self.auto_limit(now).0,
        }
    }

    /// `auto`'s limit, the unclamped figure and what it rests on.
    fn auto_limit(&self, now: Instant) -> (usize, usize, f64, f64, bool) {
        let rate = self.capacity_per_minute(now);
        let observed = self.answer_ewma.is_some();
        let answer = self.answer_ewma.unwrap_or(self.answer_prior);
        let needed = rate / 60.0 * answer;
        // (The epsilon keeps 24.000000000000004 from becoming 25.)
        let raw = (needed * AUTO_HEADROOM - 1e-9).ceil().max(0.0) as usize + 1;
        let limit = raw.clamp(self.concurrency_min, self.concurrency_max);
        (limit, raw, rate, answer, observed)
    }

    /// Why the limit is what it is, in words (for the status).
    fn limit_reason(&self, now: Instant) -> String {
        match self.concurrency {
            Concurrency::Fixed(n) => format!("fixed: queue.concurrency is {n}"),
            Concurrency::Auto => {
                let (limit, raw, rate, answer, observed) = self.auto_limit(now);
                let source = if observed {
                    "observed"
                } else {
                    "assumed until the first answer"
                };
                let needed = rate / 60.0 * answer;
                let bound = if limit != raw {
                    format!(
                        ", held to the bounds {}..={}",
                        self.concurrency_min, self.concurrency_max
                    )
                } else {
                    String::new()
                };
                format!(
                    "auto: {rate:.1}/min x {answer:.1} s answers ({source}) = {needed:.1} in flight, +20% and one spare -> {limit}{bound}"
                )
            }
        }
    }

    /// The key that can serve soonest and how long until it can.
    fn next_key(&mut self, now: Instant) -> (Option<usize>, Duration) {
        let mut best: Option<(usize, Duration)> = None;
        let mut reopen: Option<Duration> = None;
        for (i, k) in self.keys.iter_mut().enumerate() {
            if k.parked(now) {
                let left = k.parked_until.map_or(Duration::ZERO, |t| t - now);
                reopen = Some(reopen.map_or(left, |r| r.min(left)));
                continue;
            }
            let wait = k.bucket.time_until_grant(now);
            if best.is_none_or(|(_, w)| wait < w) {
                best = Some((i, wait));
            }
        }
        match best {
            Some((i, wait)) => (Some(i), wait),
            None => (None, reopen.unwrap_or(IDLE_TICK)),
        }
    }

    /// Take a token now on the soonest key, if one has a token.
    fn take_token(&mut self, now: Instant) -> Option<usize> {
        let (key, wait) = self.next_key(now);
        let key = key.filter(|_| wait.is_zero())?;
        let k = &mut self.keys[key];
        if k.bucket.try_acquire(now) {
            k.granted += 1;
            Some(key)
        } else {
            None
        }
    }

    fn record_answer_time(&mut self, seconds: f64) {
        self.answer_ewma = Some(match self.answer_ewma {
            Some(w) => w + ANSWER_EWMA_WEIGHT * (seconds - w),
            None => seconds,
        });
    }

    /// The pool's buckets as one (for the gauges and the dashboard).
    fn pool_bucket(&mut self, now: Instant) -> BucketSnapshot {
        let snaps: Vec<(bool, BucketSnapshot)> = self
            .keys
            .iter_mut()
            .map(|k| (k.parked(now), k.bucket.snapshot(now)))
            .collect();
        if snaps.len() == 1 {
            return snaps.into_iter().next().expect("one key").1;
        }
        let open: Vec<&BucketSnapshot> = snaps.iter().filter(|(p, _)| !p).map(|(_, s)| s).collect();
        let sum = |f: fn(&BucketSnapshot) -> f64| open.iter().map(|s| f(s)).sum::<f64>();
        let samples: usize = snaps.iter().map(|(_, s)| s.samples).sum();
        let accepted: usize = snaps.iter().map(|(_, s)| s.accepted_last_minute).sum();
        let state = if open
            .iter()
            .any(|s| s.retreat_state == RetreatState::Retreat)
        {
            RetreatState::Retreat
        } else if open
            .iter()
            .any(|s| s.retreat_state == RetreatState::Recover)
        {
            RetreatState::Recover
        } else {
            RetreatState::Normal
        };
        BucketSnapshot {
            tokens: (sum(|s| s.tokens) * 100.0).round() / 100.0,
            capacity: sum(|s| s.capacity),
            base_rate_per_minute: sum(|s| s.base_rate_per_minute),
            effective_rate_per_minute: (sum(|s| s.effective_rate_per_minute) * 100.0).round()
                / 100.0,
            retreat_state: state,
            ratio_429_last_minute: (samples > 0)
                .then(|| (samples - accepted) as f64 / samples as f64),
            retreat_429: pool_retreat(snaps.iter().filter_map(|(_, s)| s.retreat_429.as_ref())),
            accepted_last_minute: accepted,
            ceiling_per_minute: None,
            samples,
            granted_last_minute: snaps.iter().map(|(_, s)| s.granted_last_minute).sum(),
            paused_for_seconds: open
                .iter()
                .map(|s| s.paused_for_seconds)
                .reduce(f64::min)
                .unwrap_or(0.0),
        }
    }
}

/// The keys' latest retreats as one: every key's answers and 429s, from the
/// earliest beginning; still on while any key's is.
fn pool_retreat<'a>(tallies: impl Iterator<Item = &'a RetreatTally>) -> Option<RetreatTally> {
    tallies.cloned().reduce(|a, b| {
        let (answers, answers_429) = (a.answers + b.answers, a.answers_429 + b.answers_429);
        RetreatTally {
            began_seconds_ago: a.began_seconds_ago.max(b.began_seconds_ago),
            ended_seconds_ago: a
                .ended_seconds_ago
                .zip(b.ended_seconds_ago)
                .map(|(x, y)| x.min(y)),
            answers,
            answers_429,
            ratio_429: answers_429 as f64 / answers.max(1) as f64,
        }
    })
}

struct LaneInner {
    provider: String,
    /// The whole pool's rate and burst (every key's), for the share a
    /// cluster's daemons hold together ([`RateLane::shared_terms`]).
    shared: (f64, u32),
    /// Each key's rate and burst, and its row's name among a cluster's
    /// shared rates (`<provider>#<fingerprint>`), by key index.
    key_rows: (f64, u32, Vec<String>),
    state: Mutex<LaneState>,
    notify: Arc<Notify>,
    next_id: AtomicU64,
    park_after: Duration,
    park_default: Duration,
}

impl LaneInner {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        // A panic while holding the lock cannot leave the queue half-edited
        // in a way that matters more than losing the whole gateway would.
        self.state.locked()
    }
}

impl Drop for LaneInner {
    fn drop(&mut self) {
        self.notify.notify_one();
    }
}

/// Admission control of one limited provider. Cheap to clone.
#[derive(Clone)]
pub struct RateLane {
    inner: Arc<LaneInner>,
}

/// One token of one key plus one in-flight slot. Drop it when the upstream
/// exchange is over (for streams: when the stream ends).
pub struct LanePermit {
    lane: Arc<LaneInner>,
    key: usize,
    holds_slot: bool,
    sent: bool,
    answered: bool,
    granted_at: Instant,
    /// Time spent in the queue.
    pub queue_wait: Duration,
    /// The call's place among a cluster's calls in flight
    /// (`GatewayHooks::shared_flight`), given back when dropped.
    cluster_place: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for LanePermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanePermit")
            .field("key", &self.key)
            .field("queue_wait", &self.queue_wait)
            .finish()
    }
}

impl LanePermit {
    fn new(lane: Arc<LaneInner>, key: usize, holds_slot: bool) -> LanePermit {
        LanePermit {
            lane,
            key,
            holds_slot,
            sent: false,
            answered: false,
            granted_at: Instant::now(),
            queue_wait: Duration::ZERO,
            cluster_place: None,
        }
    }

    /// Index of the pool key this request must be sent with.
    pub fn key(&self) -> usize {
        self.key
    }

    /// The request is going upstream: its token is spent for good.
    pub fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// Feed an upstream response into the key's adaptive rate (marks the
    /// token spent). `retry_after` pauses the key's bucket; one of at least
    /// `park_after` parks the key.
    pub fn record_response(&mut self, was_429: bool, retry_after: Option<Duration>) {
        self.sent = true;
        self.answered |= !was_429;
        let now = Instant::now();
        {
            let mut st = self.lane.lock();
            st.keys[self.key]
                .bucket
                .record_response(now, was_429, retry_after);
            if let Some(ra) = retry_after.filter(|ra| was_429 && *ra >= self.lane.park_after) {
                park(
                    &mut st,
                    self.key,
                    now + ra,
                    format!("the provider asked for a pause of {} s", ra.as_secs()),
                );
            }
        }
        self.lane.notify.notify_one();
    }

    /// The provider said this key's daily quota is spent: park it until
    /// `retry_after` (or `park_default`) has passed.
    pub fn park_daily_quota(&mut self, retry_after: Option<Duration>, detail: &str) {
        let now = Instant::now();
        let until = now + retry_after.unwrap_or(self.lane.park_default);
        {
            let mut st = self.lane.lock();
            park(
                &mut st,
                self.key,
                until,
                format!("daily quota spent: {detail}"),
            );
        }
        self.lane.notify.notify_one();
    }
}

fn park(st: &mut LaneState, key: usize, until: Instant, reason: String) {
    let k = &mut st.keys[key];
    if k.parked_until.is_none_or(|t| t < until) {
        tracing::warn!(key = %k.name, seconds = until.saturating_duration_since(Instant::now()).as_secs(), %reason, "gateway key parked");
        k.parked_until = Some(until);
        k.parked_reason = Some(reason);
    }
}

impl Drop for LanePermit {
    fn drop(&mut self) {
        {
            let now = Instant::now();
            let mut st = self.lane.lock();
            if !self.sent {
                st.keys[self.key].bucket.refund(now);
            }
            if self.holds_slot {
                st.in_flight -= 1;
                if self.answered {
                    let answer = now.saturating_duration_since(self.granted_at);
                    st.record_answer_time(answer.as_secs_f64());
                }
            }
        }
        self.lane.notify.notify_one();
    }
}

/// Removes a waiter's entry if the waiting future is dropped (client gone).
struct QueueTicket<'a> {
    lane: &'a LaneInner,
    id: u64,
    priority: Priority,
    armed: bool,
}

impl Drop for QueueTicket<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.lane.lock().queue.remove(self.id, self.priority);
        }
    }
}

impl RateLane {
    /// Create the lane and spawn its dispatcher (needs a tokio runtime).
    pub fn new(provider: &str, settings: LaneSettings) -> RateLane {
        let notify = Arc::new(Notify::new());
        let now = Instant::now();
        let names = if settings.keys.is_empty() {
            vec![String::new()]
        } else {
            settings.keys.clone()
        };
        let pool = names.len() as f64;
        let key_rows = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let id = settings
                    .key_ids
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| name.clone());
                format!("{provider}#{id}")
            })
            .collect();
        let keys = names
            .into_iter()
            .map(|name| KeyState {
                name,
                bucket: AdaptiveBucket::new(settings.limiter.clone(), now),
                granted: 0,
                parked_until: None,
                parked_reason: None,
            })
            .collect();
        let inner = Arc::new(LaneInner {
            provider: provider.to_string(),
            shared: (
                settings.limiter.rate_per_minute * pool,
                (settings.limiter.capacity * pool).round().max(1.0) as u32,
            ),
            key_rows: (
                settings.limiter.rate_per_minute,
                settings.limiter.capacity.round().max(1.0) as u32,
                key_rows,
            ),
            state: Mutex::new(LaneState {
                keys,
                queue: PriorityQueue::new(),
                in_flight: 0,
                concurrency: settings.concurrency,
                concurrency_min: settings.concurrency_min.max(1),
                concurrency_max: settings
                    .concurrency_max
                    .max(settings.concurrency_min.max(1)),
                answer_prior: settings.answer_time_prior.as_secs_f64(),
                answer_ewma: None,
                max_size: settings.max_size,
                policy: settings.policy,
                counters: LaneCounters::default(),
            }),
            notify: notify.clone(),
            next_id: AtomicU64::new(1),
            park_after: secs(settings.limiter.park_after),
            park_default: secs(settings.limiter.park_default),
        });
        tokio::spawn(dispatch(Arc::downgrade(&inner), notify));
        RateLane { inner }
    }

    /// The whole pool's base rate per minute and burst.
    pub fn shared_terms(&self) -> (f64, u32) {
        self.inner.shared
    }

    /// [`RateLane::acquire`], then a place among the cluster's calls in
    /// flight (`GatewayHooks::shared_flight`) and the cluster's share of
    /// the provider's rate (`GatewayHooks::shared_grant`; both always
    /// granted for a daemon alone), within the same `wait`. The permit is held while the
    /// cluster's token is awaited; if the wait runs out it is dropped
    /// unsent, which gives its local token back.
    pub async fn acquire_shared(
        &self,
        hooks: &dyn crate::hooks::GatewayHooks,
        priority: Priority,
        wait: Duration,
    ) -> Result<LanePermit, Admission> {
        let deadline = Instant::now() + wait;
        let mut permit = self.acquire(priority, wait).await?;
        // The cluster's calls in flight first (at most this lane's limit
        // over every daemon), then the cluster's rate.
        let limit = self.inner.lock().limit(Instant::now()) as u32;
        loop {
            match hooks.shared_flight(&self.inner.provider, limit).await {
                crate::hooks::SharedFlight::Go(place) => {
                    permit.cluster_place = place;
                    break;
                }
                crate::hooks::SharedFlight::Wait(w) => {
                    if Instant::now() + w > deadline {
                        drop(permit);
                        return Err(Admission::TimedOut { retry_after: w });
                    }
                    tokio::time::sleep(w).await;
                }
            }
        }
        // Then the rate of the whole pool, and the rate of the key this
        // permit sends with: a key has its own limit at the provider, and
        // another daemon may be sending with it too.
        let (rate, burst) = self.inner.shared;
        let (key_rate, key_burst, rows) = &self.inner.key_rows;
        let key_row = rows.get(permit.key).cloned();
        let pool_row = self.inner.provider.clone();
        for (row, rate, burst) in [
            (Some(pool_row), rate, burst),
            (key_row, *key_rate, *key_burst),
        ] {
            let Some(row) = row else { continue };
            loop {
                let w = hooks.shared_grant(&row, rate, burst).await;
                if w.is_zero() {
                    break;
                }
                if Instant::now() + w > deadline {
                    drop(permit);
                    return Err(Admission::TimedOut { retry_after: w });
                }
                tokio::time::sleep(w).await;
            }
        }
        Ok(permit)
    }

    /// Wait up to `wait` for a token and a slot, served strictly by priority
    /// and FIFO within a priority.
    pub async fn acquire(
        &self,
        priority: Priority,
        wait: Duration,
    ) -> Result<LanePermit, Admission> {
        let start = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.inner.lock();
            if st.queue.is_empty() && st.in_flight < st.limit(start) {
                if let Some(key) = st.take_token(start) {
                    st.in_flight += 1;
                    st.counters.granted += 1;
                    return Ok(LanePermit::new(self.inner.clone(), key, true));
                }
            }
            if st.queue.len() >= st.max_size {
                match st.policy {
                    FullPolicy::Reject => {
                        st.counters.rejected_full += 1;
                        return Err(Admission::QueueFull {
                            retry_after: drain_estimate(&mut st, start),
                        });
                    }
                    FullPolicy::DropLowest => match st.queue.evict_lower_than(priority) {
                        Some(victim) => {
                            st.counters.dropped += 1;
                            // The victim's waiter answers 503 at once.
                            let _ = victim.tx.send(Wake::Dropped);
                        }
                        None => {
                            st.counters.rejected_full += 1;
                            return Err(Admission::QueueFull {
                                retry_after: drain_estimate(&mut st, start),
                            });
                        }
                    },
                    FullPolicy::Passthrough => {
                        if let Some(key) = st.take_token(start) {
                            st.counters.passthrough += 1;
                            st.counters.granted += 1;
                            return Ok(LanePermit::new(self.inner.clone(), key, false));
                        }
                        st.counters.rejected_full += 1;
                        return Err(Admission::NoToken {
                            retry_after: st.next_key(start).1,
                        });
                    }
                }
            }
            st.queue.push(Entry {
                id,
                priority,
                enqueued_at: start,
                tx,
            });
        }
        self.inner.notify.notify_one();
        let mut ticket = QueueTicket {
            lane: &self.inner,
            id,
            priority,
            armed: true,
        };
        let outcome = match tokio::time::timeout_at(start + wait, &mut rx).await {
            Ok(received) => received,
            Err(_elapsed) => {
                let still_queued = self.inner.lock().queue.remove(id, priority);
                if still_queued {
                    ticket.armed = false;
                    let mut st = self.inner.lock();
                    st.counters.timed_out += 1;
                    let retry_after = drain_estimate(&mut st, Instant::now());
                    return Err(Admission::TimedOut { retry_after });
                }
                // The dispatcher popped us just now; its answer is on the way.
                ticket.armed = false;
                rx.await
            }
        };
        ticket.armed = false;
        match outcome {
            Ok(Wake::Granted(mut permit)) => {
                permit.queue_wait = start.elapsed();
                Ok(permit)
            }
            Ok(Wake::Dropped) | Err(_) => {
                let retry_after = drain_estimate(&mut self.inner.lock(), Instant::now());
                Err(Admission::Dropped { retry_after })
            }
        }
    }

    /// Snapshot for status and metrics.
    pub fn snapshot(&self) -> LaneSnapshot {
        let mut st = self.inner.lock();
        let now = Instant::now();
        let d = st.queue.depth_by_priority();
        let (limit, reason) = (st.limit(now), st.limit_reason(now));
        let keys = st
            .keys
            .iter_mut()
            .map(|k| KeySnapshot {
                name: k.name.clone(),
                bucket: k.bucket.snapshot(now),
                granted: k.granted,
                parked_for_seconds: k
                    .parked_until
                    .map_or(0.0, |t| t.saturating_duration_since(now).as_secs_f64()),
                parked_reason: k.parked(now).then(|| k.parked_reason.clone()).flatten(),
            })
            .collect();
        LaneSnapshot {
            bucket: st.pool_bucket(now),
            capacity_per_minute: (st.capacity_per_minute(now) * 100.0).round() / 100.0,
            keys,
            queue_depth: QueueDepth {
                urgent: d[0],
                high: d[1],
                normal: d[2],
                low: d[3],
            },
            queue_len: st.queue.len(),
            queue_max: st.max_size,
            full_policy: st.policy,
            in_flight: st.in_flight,
            concurrency: limit,
            concurrency_mode: st.concurrency,
            concurrency_reason: reason,
            answer_time_seconds: st.answer_ewma.map(|w| (w * 100.0).round() / 100.0),
            counters: st.counters.clone(),
        }
    }

    /// The moving average of the lane's answer times (`None` before the
    /// first answer).
    pub fn answer_time(&self) -> Option<Duration> {
        let st = self.inner.lock();
        st.answer_ewma
            .map(|w| Duration::from_secs_f64(w.max(0.001)))
    }

    /// Requests per minute the lane can feed now (its unparked keys' rates).
    pub fn capacity_per_minute(&self) -> f64 {
        self.inner.lock().capacity_per_minute(Instant::now())
    }

    /// Change the base rate of every key (and the effective rate in
    /// `normal`).
    pub fn set_rate(&self, per_minute: f64) {
        let now = Instant::now();
        for k in &mut self.inner.lock().keys {
            k.bucket.set_base_rate(now, per_minute);
        }
        self.inner.notify.notify_one();
    }

    /// Change the bucket capacity of every key.
    pub fn set_capacity(&self, capacity: f64) {
        let now = Instant::now();
        for k in &mut self.inner.lock().keys {
            k.bucket.set_capacity(now, capacity);
        }
        self.inner.notify.notify_one();
    }

    /// Change the in-flight limit.
    pub fn set_concurrency(&self, concurrency: Concurrency) {
        self.inner.lock().concurrency = concurrency;
        self.inner.notify.notify_one();
    }

    /// Change the full policy.
    pub fn set_policy(&self, policy: FullPolicy) {
        self.inner.lock().policy = policy;
    }

    /// Change the queue limit; shrinking below the current depth is refused
    /// with the depth in the message.
    pub fn set_max_size(&self, max_size: usize) -> Result<(), String> {
        let mut st = self.inner.lock();
        let depth = st.queue.len();
        if max_size < depth {
            return Err(format!(
                "queue of provider {:?} holds {depth} waiting requests; cannot shrink its limit to {max_size}. \
                 Retry when it has drained or choose at least {depth}.",
                self.inner.provider
            ));
        }
        st.max_size = max_size;
        Ok(())
    }

    /// Current queue depth (all priorities).
    pub fn queue_len(&self) -> usize {
        self.inner.lock().queue.len()
    }
}

/// Seconds until the queue ahead would drain at the lane's capacity, at
/// least the wait for the next token; used for `Retry-After`.
fn drain_estimate(st: &mut LaneState, now: Instant) -> Duration {
    let next = st.next_key(now).1;
    let per_request = 60.0 / st.capacity_per_minute(now).max(0.001);
    next + Duration::from_secs_f64((per_request * st.queue.len() as f64).min(86_400.0))
}

/// The dispatcher: hands permits to the head of the queue whenever a token
/// and a slot are free. Holds only a weak reference so the lane is freed
/// when the gateway is dropped.
async fn dispatch(lane: Weak<LaneInner>, notify: Arc<Notify>) {
    loop {
        let Some(inner) = lane.upgrade() else { return };
        let mut grants = Vec::new();
        let sleep_for = {
            let mut st = inner.lock();
            let now = Instant::now();
            for k in &mut st.keys {
                k.bucket.evaluate(now);
            }
            let limit = st.limit(now);
            let sleep_for = loop {
                if st.queue.is_empty() || st.in_flight >= limit {
                    break IDLE_TICK;
                }
                let (key, wait) = st.next_key(now);
                if !wait.is_zero() || key.is_none() {
                    break wait.min(IDLE_TICK);
                }
                let Some(entry) = st.queue.pop() else {
                    break IDLE_TICK;
                };
                if entry.tx.is_closed() {
                    continue;
                }
                let Some(key) = st.take_token(now) else {
                    // `next_key` said a token is free; should the bucket
                    // disagree, the entry keeps its place at the head.
                    st.queue.push_front(entry);
                    break IDLE_TICK;
                };
                st.in_flight += 1;
                st.counters.granted += 1;
                metrics::queue_wait(&inner.provider, entry.priority, now - entry.enqueued_at);
                grants.push((entry, key));
            };
            let depth = st.queue.depth_by_priority();
            let in_flight = st.in_flight;
            let pool = st.pool_bucket(now);
            metrics::publish_lane(&inner.provider, &pool, &depth, in_flight, limit);
            sleep_for
        };
        for (entry, key) in grants {
            // If the waiter vanished the permit comes back and its Drop
            // returns the token and the slot.
            let _ = entry
                .tx
                .send(Wake::Granted(LanePermit::new(inner.clone(), key, true)));
        }
        drop(inner);
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
}
