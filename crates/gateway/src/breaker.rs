//! Per-provider circuit breaker: closed → open → half-open.
//!
//! `failure_threshold` consecutive failures (connect error, timeout, 5xx)
//! open it for `open_for`. The first call after that becomes the single
//! half-open **probe**; every other call keeps failing fast until the probe
//! reports. Success closes the breaker, failure re-opens it for another
//! `open_for`. A probe whose caller vanishes without reporting (client
//! disconnect) counts as a failure so the breaker can never stay stuck in
//! half-open.
//!
//! Time is passed in, like the limiter, so tests drive it exactly.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls fail fast (or go to the fallback provider).
    Open,
    /// One probe is allowed through.
    HalfOpen,
}

impl BreakerState {
    /// Numeric value for the `breaker_state` gauge.
    pub fn as_gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// What the breaker says about a call about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerDecision {
    /// Go ahead.
    Allow,
    /// Go ahead as the one half-open probe; report the outcome.
    Probe,
    /// Fail fast; the breaker may let a probe through after this long.
    Reject { retry_after: Duration },
}

/// Snapshot for status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: BreakerState,
    /// Consecutive failures counted.
    pub consecutive_failures: u32,
    /// Seconds until a probe is allowed (open state only).
    pub open_for_seconds: f64,
    /// Times the breaker opened.
    pub times_opened: u64,
}

/// The breaker state machine.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
    times_opened: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            threshold,
            open_for,
            state: BreakerState::Closed,
            failures: 0,
            opened_at: None,
            probe_in_flight: false,
            times_opened: 0,
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.probe_in_flight = false;
        self.times_opened += 1;
    }

    /// Ask before calling the upstream.
    pub fn check(&mut self, now: Instant) -> BreakerDecision {
        match self.state {
            BreakerState::Closed => BreakerDecision::Allow,
            BreakerState::Open => {
                let until = self.opened_at.unwrap_or(now) + self.open_for;
                if now >= until {
                    self.state = BreakerState::HalfOpen;
                    self.probe_in_flight = true;
                    BreakerDecision::Probe
                } else {
                    BreakerDecision::Reject {
                        retry_after: until - now,
                    }
                }
            }
            BreakerState::HalfOpen => {
                if self.probe_in_flight {
                    BreakerDecision::Reject {
                        retry_after: Duration::from_secs(1),
                    }
                } else {
                    self.probe_in_flight = true;
                    BreakerDecision::Probe
                }
            }
        }
    }

    /// Peek without claiming the probe (used before queueing, so a request
    /// does not wait for a token only to be refused).
    pub fn would_reject(&self, now: Instant) -> Option<Duration> {
        match self.state {
            BreakerState::Open => {
                let until = self.opened_at.unwrap_or(now) + self.open_for;
                (now < until).then(|| until - now)
            }
            BreakerState::HalfOpen if self.probe_in_flight => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The upstream answered without a failure.
    pub fn record_success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
        self.opened_at = None;
        self.probe_in_flight = false;
    }

    /// The upstream failed (connect error, timeout, 5xx).
    pub fn record_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        match self.state {
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Closed if self.failures >= self.threshold => self.open(now),
            _ => {}
        }
    }

    /// Current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Snapshot for status.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let open_for_seconds = match (self.state, self.opened_at) {
            (BreakerState::Open, Some(at)) => (at + self.open_for)
                .saturating_duration_since(now)
                .as_secs_f64(),
            _ => 0.0,
        };
        BreakerSnapshot {
            state: self.state,
            consecutive_failures: self.failures,
            open_for_seconds,
            times_opened: self.times_opened,
        }
    }
}
