//! A rate lane: the admission control of one limited provider.
//!
//! It joins the [`AdaptiveBucket`], the [`PriorityQueue`] and a concurrency
//! limit. A request asks for a [`LanePermit`] with [`RateLane::acquire`]; the
//! permit stands for one token *and* one in-flight slot. Permits are handed
//! out by a small dispatcher task that only decides who goes next — the
//! upstream calls themselves run concurrently in the callers' tasks, up to
//! `concurrency` at once (the old system pushed every call through one serial
//! worker).
//!
//! Invariants:
//! * every queued entry is answered exactly once: granted, dropped (503),
//!   or removed by its own waiter on timeout or cancellation;
//! * a permit that is dropped without [`LanePermit::mark_sent`] gives its
//!   token back, so requests refused later (breaker open, client gone) do not
//!   burn the upstream budget;
//! * dropping a permit frees its slot and wakes the dispatcher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::config::{FullPolicy, LimiterConfig};
use super::limiter::{AdaptiveBucket, BucketSnapshot};
use super::metrics;
use super::queue::{Entry, Priority, PriorityQueue, Wake};

/// How often the dispatcher re-evaluates the adaptive state and publishes
/// gauges when nothing else wakes it.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Static settings of a lane.
#[derive(Debug, Clone)]
pub struct LaneSettings {
    /// Bucket and adaptive retreat.
    pub limiter: LimiterConfig,
    /// Waiting requests allowed.
    pub max_size: usize,
    /// In-flight upstream requests allowed.
    pub concurrency: usize,
    /// Queue-full policy.
    pub policy: FullPolicy,
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

/// Point-in-time view of a lane.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LaneSnapshot {
    /// Token bucket state.
    pub bucket: BucketSnapshot,
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
    /// Concurrency limit.
    pub concurrency: usize,
    /// Counters.
    pub counters: LaneCounters,
}

struct LaneState {
    bucket: AdaptiveBucket,
    queue: PriorityQueue<LanePermit>,
    in_flight: usize,
    concurrency: usize,
    max_size: usize,
    policy: FullPolicy,
    counters: LaneCounters,
}

struct LaneInner {
    provider: String,
    state: Mutex<LaneState>,
    notify: Arc<Notify>,
    next_id: AtomicU64,
}

impl LaneInner {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        // A panic while holding the lock cannot leave the queue half-edited
        // in a way that matters more than losing the whole gateway would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

/// One token plus one in-flight slot. Drop it when the upstream exchange is
/// over (for streams: when the stream ends).
pub struct LanePermit {
    lane: Arc<LaneInner>,
    holds_slot: bool,
    sent: bool,
    /// Time spent in the queue.
    pub queue_wait: Duration,
}

impl std::fmt::Debug for LanePermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanePermit")
            .field("queue_wait", &self.queue_wait)
            .finish()
    }
}

impl LanePermit {
    /// The request is going upstream: its token is spent for good.
    pub fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// Feed an upstream response into the adaptive rate (marks the token
    /// spent). `retry_after` pauses the bucket.
    pub fn record_response(&mut self, was_429: bool, retry_after: Option<Duration>) {
        self.sent = true;
        self.lane
            .lock()
            .bucket
            .record_response(Instant::now(), was_429, retry_after);
        self.lane.notify.notify_one();
    }
}

impl Drop for LanePermit {
    fn drop(&mut self) {
        {
            let mut st = self.lane.lock();
            if !self.sent {
                st.bucket.refund(Instant::now());
            }
            if self.holds_slot {
                st.in_flight -= 1;
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
        let inner = Arc::new(LaneInner {
            provider: provider.to_string(),
            state: Mutex::new(LaneState {
                bucket: AdaptiveBucket::new(settings.limiter, Instant::now()),
                queue: PriorityQueue::new(),
                in_flight: 0,
                concurrency: settings.concurrency,
                max_size: settings.max_size,
                policy: settings.policy,
                counters: LaneCounters::default(),
            }),
            notify: notify.clone(),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(dispatch(Arc::downgrade(&inner), notify));
        RateLane { inner }
    }

    fn permit(&self, holds_slot: bool, queue_wait: Duration) -> LanePermit {
        LanePermit {
            lane: self.inner.clone(),
            holds_slot,
            sent: false,
            queue_wait,
        }
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
            if st.queue.is_empty() && st.in_flight < st.concurrency && st.bucket.try_acquire(start)
            {
                st.in_flight += 1;
                st.counters.granted += 1;
                return Ok(self.permit(true, Duration::ZERO));
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
                        if st.bucket.try_acquire(start) {
                            st.counters.passthrough += 1;
                            st.counters.granted += 1;
                            return Ok(self.permit(false, Duration::ZERO));
                        }
                        st.counters.rejected_full += 1;
                        return Err(Admission::NoToken {
                            retry_after: st.bucket.time_until_grant(start),
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
        LaneSnapshot {
            bucket: st.bucket.snapshot(now),
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
            concurrency: st.concurrency,
            counters: st.counters.clone(),
        }
    }

    /// Change the base rate (and the effective rate in `normal`).
    pub fn set_rate(&self, per_minute: f64) {
        self.inner
            .lock()
            .bucket
            .set_base_rate(Instant::now(), per_minute);
        self.inner.notify.notify_one();
    }

    /// Change the bucket capacity.
    pub fn set_capacity(&self, capacity: f64) {
        self.inner
            .lock()
            .bucket
            .set_capacity(Instant::now(), capacity);
        self.inner.notify.notify_one();
    }

    /// Change the concurrency limit.
    pub fn set_concurrency(&self, concurrency: usize) {
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

/// Seconds until the queue ahead would drain at the effective rate, at least
/// the wait for the next token; used for `Retry-After`.
fn drain_estimate(st: &mut LaneState, now: Instant) -> Duration {
    let next = st.bucket.time_until_grant(now);
    let per_request = 60.0 / st.bucket.effective_rate().max(0.001);
    next + Duration::from_secs_f64(per_request * st.queue.len() as f64)
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
            st.bucket.evaluate(now);
            let sleep_for = loop {
                if st.queue.is_empty() || st.in_flight >= st.concurrency {
                    break IDLE_TICK;
                }
                let wait = st.bucket.time_until_grant(now);
                if !wait.is_zero() {
                    break wait.min(IDLE_TICK);
                }
                let Some(entry) = st.queue.pop() else {
                    break IDLE_TICK;
                };
                if entry.tx.is_closed() {
                    continue;
                }
                st.bucket.try_acquire(now);
                st.in_flight += 1;
                st.counters.granted += 1;
                metrics::queue_wait(&inner.provider, entry.priority, now - entry.enqueued_at);
                grants.push(entry);
            };
            let depth = st.queue.depth_by_priority();
            let in_flight = st.in_flight;
            metrics::publish_lane(&inner.provider, &mut st.bucket, &depth, in_flight, now);
            sleep_for
        };
        for entry in grants {
            let permit = LanePermit {
                lane: inner.clone(),
                holds_slot: true,
                sent: false,
                queue_wait: Duration::ZERO,
            };
            // If the waiter vanished the permit comes back and its Drop
            // returns the token and the slot.
            let _ = entry.tx.send(Wake::Granted(permit));
        }
        drop(inner);
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
}
