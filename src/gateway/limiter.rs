//! Token bucket with adaptive retreat (SPEC 7.2).
//!
//! Pure state machine: every method takes `now`, nothing sleeps and nothing
//! reads a clock, so the rules can be tested exactly. The lane (`lane.rs`)
//! owns one bucket per limited provider behind a mutex and calls these
//! methods with `tokio::time::Instant::now()`.
//!
//! Two guards decide whether a request may go upstream now:
//! * the **bucket** (capacity, continuous refill at the effective rate)
//!   shapes bursts;
//! * the **rolling-window guard** counts grants of the last 60 s and refuses
//!   once they reach the effective per-minute rate. A full bucket plus one
//!   minute of refill would otherwise allow `capacity + rate` requests in the
//!   first minute, which is exactly what NVIDIA's per-minute limit punishes.
//!
//! While the window is full the bucket does not refill, so under sustained
//! demand grants settle into an even pace (one every `60 / rate` seconds)
//! after the initial burst, instead of a burst at the top of every minute.
//!
//! Adaptive retreat only reacts to ratios computed over at least
//! `min_samples` responses, and deepens or recovers at most once per window,
//! so one 429 is never read as a 100 % rate (a defect of the old system).

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::config::{secs, LimiterConfig};

const MINUTE: Duration = Duration::from_secs(60);

/// Where the adaptive rate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetreatState {
    /// Effective rate equals the base rate.
    Normal,
    /// The upstream returned too many 429s; the rate was cut.
    Retreat,
    /// 429s stopped; the rate climbs back towards the base.
    Recover,
}

impl RetreatState {
    /// Numeric value for the `retreat_state` gauge.
    pub fn as_gauge(self) -> f64 {
        match self {
            RetreatState::Normal => 0.0,
            RetreatState::Retreat => 1.0,
            RetreatState::Recover => 2.0,
        }
    }
}

/// Point-in-time view of a bucket, for status and metrics.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BucketSnapshot {
    /// Tokens in the bucket now.
    pub tokens: f64,
    /// Bucket capacity.
    pub capacity: f64,
    /// Configured base rate, per minute.
    pub base_rate_per_minute: f64,
    /// Rate in force, per minute.
    pub effective_rate_per_minute: f64,
    /// Adaptive state.
    pub retreat_state: RetreatState,
    /// 429 ratio over the retreat window (`None` below `min_samples`).
    pub ratio_429_retreat_window: Option<f64>,
    /// 429 ratio over the recover window (`None` below `min_samples`).
    pub ratio_429_recover_window: Option<f64>,
    /// Responses recorded in the recover window.
    pub samples: usize,
    /// Grants in the last 60 s.
    pub granted_last_minute: usize,
    /// Seconds the bucket stays paused by an upstream `Retry-After`.
    pub paused_for_seconds: f64,
}

/// Adaptive token bucket. See the module docs.
#[derive(Debug)]
pub struct AdaptiveBucket {
    cfg: LimiterConfig,
    base_per_min: f64,
    rate_per_min: f64,
    capacity: f64,
    tokens: f64,
    last_refill: Instant,
    grants: VecDeque<Instant>,
    samples: VecDeque<(Instant, bool)>,
    state: RetreatState,
    last_change: Instant,
    paused_until: Option<Instant>,
}

impl AdaptiveBucket {
    /// A full bucket at the configured base rate.
    pub fn new(cfg: LimiterConfig, now: Instant) -> Self {
        AdaptiveBucket {
            base_per_min: cfg.rate_per_minute,
            rate_per_min: cfg.rate_per_minute,
            capacity: cfg.capacity,
            tokens: cfg.capacity,
            last_refill: now,
            grants: VecDeque::new(),
            samples: VecDeque::new(),
            state: RetreatState::Normal,
            last_change: now,
            paused_until: None,
            cfg,
        }
    }

    /// Add the tokens earned since the last refill. While the rolling window
    /// is full the bucket earns nothing: otherwise a saturated lane would
    /// bank a full bucket during every blocked stretch and release it as a
    /// burst at the top of each minute, making urgent requests wait for the
    /// next burst. With the pause it settles into an even pace.
    fn refill(&mut self, now: Instant) {
        let mut from = self.last_refill;
        if self.cfg.window_guard {
            let cap = self.window_cap();
            let first = self
                .grants
                .partition_point(|t| from.saturating_duration_since(*t) >= MINUTE);
            let in_window = self.grants.len() - first;
            if in_window >= cap {
                if let Some(t) = self.grants.get(first + (in_window - cap)) {
                    from = from.max(*t + MINUTE);
                }
            }
        }
        let earning = now.saturating_duration_since(from).as_secs_f64();
        self.tokens = (self.tokens + earning * self.rate_per_min / 60.0).min(self.capacity);
        self.last_refill = now;
    }

    fn window_cap(&self) -> usize {
        (self.rate_per_min.floor() as usize).max(1)
    }

    fn prune(&mut self, now: Instant) {
        while self
            .grants
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            self.grants.pop_front();
        }
        let keep = secs(self.cfg.retreat_window.max(self.cfg.recover_window));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > keep)
        {
            self.samples.pop_front();
        }
    }

    /// How long until a grant is possible (`Duration::ZERO` = now).
    pub fn time_until_grant(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.prune(now);
        let mut wait = Duration::ZERO;
        if let Some(until) = self.paused_until {
            wait = wait.max(until.saturating_duration_since(now));
        }
        if self.tokens < 1.0 {
            let missing = 1.0 - self.tokens;
            wait = wait.max(secs(missing * 60.0 / self.rate_per_min));
        }
        if self.cfg.window_guard && self.grants.len() >= self.window_cap() {
            let excess = self.grants.len() - self.window_cap();
            if let Some(t) = self.grants.get(excess) {
                wait = wait.max((*t + MINUTE).saturating_duration_since(now));
            }
        }
        wait
    }

    /// Take one token if a grant is possible now.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        if !self.time_until_grant(now).is_zero() {
            return false;
        }
        self.tokens -= 1.0;
        self.grants.push_back(now);
        true
    }

    /// Give back a token taken for a request that was never sent.
    pub fn refund(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + 1.0).min(self.capacity);
        self.grants.pop_back();
    }

    /// Record one upstream response and re-evaluate the adaptive state.
    /// `retry_after` pauses the bucket (capped by `max_retry_after`).
    pub fn record_response(&mut self, now: Instant, was_429: bool, retry_after: Option<Duration>) {
        self.samples.push_back((now, was_429));
        if let Some(ra) = retry_after {
            let until = now + ra.min(secs(self.cfg.max_retry_after));
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
        self.evaluate(now);
    }

    fn ratio(&self, now: Instant, window: Duration) -> Option<f64> {
        let (mut n, mut bad) = (0usize, 0usize);
        for (t, was_429) in self.samples.iter().rev() {
            if now.saturating_duration_since(*t) > window {
                break;
            }
            n += 1;
            bad += usize::from(*was_429);
        }
        (n >= self.cfg.min_samples).then(|| bad as f64 / n as f64)
    }

    fn step_down(&mut self, now: Instant) {
        self.refill(now);
        self.rate_per_min =
            (self.rate_per_min * self.cfg.retreat_factor).max(self.cfg.floor_per_minute);
        self.state = RetreatState::Retreat;
        self.last_change = now;
    }

    /// Apply the retreat/recover rules. Called on every response and
    /// periodically by the lane so recovery also happens without traffic.
    pub fn evaluate(&mut self, now: Instant) {
        self.prune(now);
        if self.paused_until.is_some_and(|p| p <= now) {
            self.paused_until = None;
        }
        let retreat_window = secs(self.cfg.retreat_window);
        let recover_window = secs(self.cfg.recover_window);
        let short = self.ratio(now, retreat_window);
        let since_change = now.saturating_duration_since(self.last_change);
        match self.state {
            RetreatState::Normal => {
                if short.is_some_and(|r| r >= self.cfg.retreat_ratio) {
                    self.step_down(now);
                }
            }
            RetreatState::Retreat => {
                if short.is_some_and(|r| r >= self.cfg.deep_retreat_ratio) {
                    if since_change >= retreat_window {
                        self.step_down(now);
                    }
                } else if since_change >= recover_window
                    // Too few samples means too little traffic to keep
                    // punishing the rate: treat it as a clean window.
                    && self.ratio(now, recover_window).unwrap_or(0.0) < self.cfg.recover_ratio
                {
                    self.state = RetreatState::Recover;
                    self.step_up(now);
                }
            }
            RetreatState::Recover => {
                if short.is_some_and(|r| r >= self.cfg.retreat_ratio) {
                    self.step_down(now);
                } else if since_change >= secs(self.cfg.recover_step_interval) {
                    self.step_up(now);
                }
            }
        }
    }

    fn step_up(&mut self, now: Instant) {
        self.refill(now);
        self.rate_per_min =
            (self.rate_per_min + self.cfg.recover_step_per_minute).min(self.base_per_min);
        self.last_change = now;
        if self.rate_per_min >= self.base_per_min {
            self.state = RetreatState::Normal;
        }
    }

    /// Change the base rate at runtime. In `normal` the effective rate
    /// follows; during a retreat the effective rate is only lowered if it is
    /// above the new base, and recovery climbs to the new base.
    pub fn set_base_rate(&mut self, now: Instant, per_minute: f64) {
        self.refill(now);
        self.base_per_min = per_minute;
        if self.state == RetreatState::Normal || self.rate_per_min > per_minute {
            self.rate_per_min = per_minute;
        }
        self.cfg.floor_per_minute = self.cfg.floor_per_minute.min(per_minute);
    }

    /// Change the capacity at runtime; surplus tokens are dropped.
    pub fn set_capacity(&mut self, now: Instant, capacity: f64) {
        self.refill(now);
        self.capacity = capacity;
        self.tokens = self.tokens.min(capacity);
    }

    /// Effective rate, requests per minute.
    pub fn effective_rate(&self) -> f64 {
        self.rate_per_min
    }

    /// Base rate, requests per minute.
    pub fn base_rate(&self) -> f64 {
        self.base_per_min
    }

    /// Current adaptive state.
    pub fn state(&self) -> RetreatState {
        self.state
    }

    /// Snapshot for status and metrics.
    pub fn snapshot(&mut self, now: Instant) -> BucketSnapshot {
        self.refill(now);
        self.prune(now);
        BucketSnapshot {
            tokens: (self.tokens * 100.0).round() / 100.0,
            capacity: self.capacity,
            base_rate_per_minute: self.base_per_min,
            effective_rate_per_minute: (self.rate_per_min * 100.0).round() / 100.0,
            retreat_state: self.state,
            ratio_429_retreat_window: self.ratio(now, secs(self.cfg.retreat_window)),
            ratio_429_recover_window: self.ratio(now, secs(self.cfg.recover_window)),
            samples: self.samples.len(),
            granted_last_minute: self.grants.len(),
            paused_for_seconds: self
                .paused_until
                .map_or(0.0, |p| p.saturating_duration_since(now).as_secs_f64()),
        }
    }
}
