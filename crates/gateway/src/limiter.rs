//! Token bucket with adaptive retreat, one per key of a limited provider.
//!
//! Pure state machine: every method takes `now`, nothing sleeps and nothing
//! reads a clock, so the rules can be tested exactly. The lane (`lane.rs`)
//! owns the buckets of a provider's keys behind a mutex and calls these
//! methods with `tokio::time::Instant::now()`.
//!
//! # Pace
//! Two guards decide whether a request may go upstream now:
//! * the **bucket** (capacity, continuous refill at the effective rate)
//!   shapes bursts. It starts with `capacity` tokens, and the default
//!   capacity is 1: from the first second, and again after idle time, the
//!   lane spends at the steady pace (one grant every `60 / rate` s) instead
//!   of bursting a whole minute's quota and then stalling for most of the
//!   next minute;
//! * the **rolling-window guard** counts grants of the last 60 s and refuses
//!   once they reach the effective per-minute rate, so a configured burst
//!   plus refill never exceeds the per-minute promise.
//!
//! # Retreat
//! A 429 says the provider serves less than the lane sends. The lane then
//! moves to the rate the provider *accepted* over the last minute (times
//! `retreat_margin`), or by `retreat_factor` while it has less than 30 s of
//! history; further 429s within `retreat_hold` were sent at the old rate
//! and do not cut again. The rate at which the 429 came is remembered as the
//! ceiling. Without 429s the rate climbs: by `recover_factor` each
//! `recover_step_interval` while well below the ceiling (or once the
//! ceiling is forgotten after `ceiling_memory`), by
//! `recover_step_per_minute` each `probe_interval` near it.
//! So a lane settles within a few percent of a provider's real limit and
//! returns to its base quickly when the 429s stop.
//!
//! # The 429 share
//! Two figures, because a retreat outlasts a minute: the share of the last
//! 60 s of answers (`ratio_429_last_minute`, `None` when none came — during
//! a `Retry-After` pause or a quiet spell), and the retreat's own tally
//! ([`RetreatTally`]): the answers of the minute before the first cut (what
//! the cut was judged on) and every answer since, until the rate is back at
//! its base. It stays shown after that until the next retreat begins, so the
//! 429s that cut the rate never drop out of sight while it is below its
//! base.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{secs, LimiterConfig};

const MINUTE: Duration = Duration::from_secs(60);

/// Where the adaptive rate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetreatState {
    /// Effective rate equals the base rate.
    Normal,
    /// The upstream answered 429; the rate was cut.
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

/// The 429s of the latest retreat: the answers of the minute before its
/// first cut and every answer since, until the rate was back at its base.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RetreatTally {
    /// Seconds since the first cut of this retreat.
    pub began_seconds_ago: f64,
    /// Seconds since the rate was back at its base (`None`: the retreat is
    /// still on, the rate below its base).
    pub ended_seconds_ago: Option<f64>,
    /// Answers counted (the minute before the first cut, then every one
    /// until the end).
    pub answers: u64,
    /// Those that were 429.
    pub answers_429: u64,
    /// `answers_429 / answers`.
    pub ratio_429: f64,
}

/// The running tally behind a [`RetreatTally`].
#[derive(Debug, Clone, Copy)]
struct Tally {
    began: Instant,
    ended: Option<Instant>,
    answers: u64,
    refused: u64,
}

impl Tally {
    fn view(&self, now: Instant) -> RetreatTally {
        RetreatTally {
            began_seconds_ago: now.saturating_duration_since(self.began).as_secs_f64(),
            ended_seconds_ago: self
                .ended
                .map(|e| now.saturating_duration_since(e).as_secs_f64()),
            answers: self.answers,
            answers_429: self.refused,
            ratio_429: self.refused as f64 / self.answers.max(1) as f64,
        }
    }
}

/// Point-in-time view of a bucket, for status and metrics.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BucketSnapshot {
    /// Requests that may be granted right now (the bucket's tokens; these
    /// are requests, not LLM tokens).
    pub tokens: f64,
    /// Bucket capacity (largest burst).
    pub capacity: f64,
    /// Configured base rate, per minute.
    pub base_rate_per_minute: f64,
    /// Rate in force, per minute.
    pub effective_rate_per_minute: f64,
    /// Adaptive state.
    pub retreat_state: RetreatState,
    /// Share of the responses of the last 60 s that were 429 (`None`
    /// without responses: none in the last minute, e.g. during a
    /// `Retry-After` pause; see `retreat_429` for the retreat's share).
    pub ratio_429_last_minute: Option<f64>,
    /// The latest retreat's 429s: the minute before its first cut and every
    /// answer since, until the rate was back at its base (`None` before the
    /// first retreat).
    pub retreat_429: Option<RetreatTally>,
    /// Responses of the last 60 s that were not 429: what the provider
    /// served.
    pub accepted_last_minute: usize,
    /// Rate at which the last 429 came, per minute (`None` once forgotten).
    pub ceiling_per_minute: Option<f64>,
    /// Responses recorded in the last 60 s.
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
    /// Responses of the last 60 s: (when, was 429).
    samples: VecDeque<(Instant, bool)>,
    /// When the first grant was made (how much history there is).
    first_grant: Option<Instant>,
    state: RetreatState,
    last_change: Instant,
    last_429: Option<Instant>,
    last_cut: Option<Instant>,
    ceiling: Option<f64>,
    paused_until: Option<Instant>,
    /// The latest retreat's answers (see the module docs, "The 429 share").
    retreat: Option<Tally>,
}

impl AdaptiveBucket {
    /// A bucket holding `capacity` tokens at the configured base rate.
    pub fn new(cfg: LimiterConfig, now: Instant) -> Self {
        AdaptiveBucket {
            base_per_min: cfg.rate_per_minute,
            rate_per_min: cfg.rate_per_minute,
            capacity: cfg.capacity,
            tokens: cfg.capacity,
            last_refill: now,
            grants: VecDeque::new(),
            samples: VecDeque::new(),
            first_grant: None,
            state: RetreatState::Normal,
            last_change: now,
            last_429: None,
            last_cut: None,
            ceiling: None,
            paused_until: None,
            retreat: None,
            cfg,
        }
    }

    /// Add the tokens earned since the last refill.
    fn refill(&mut self, now: Instant) {
        let earning = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.tokens = (self.tokens + earning * self.rate_per_min / 60.0).min(self.capacity);
        self.last_refill = self.last_refill.max(now);
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
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= MINUTE)
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
            // Rounded up to the microsecond so a wake at `now + wait` finds
            // the whole token (a float sum can fall a hair short of 1).
            let micros = (missing * 60.0 / self.rate_per_min * 1e6).ceil();
            wait = wait.max(Duration::from_micros(micros as u64));
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
        self.first_grant.get_or_insert(now);
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
        self.prune(now);
        self.samples.push_back((now, was_429));
        if let Some(ra) = retry_after {
            let until = now + ra.min(secs(self.cfg.max_retry_after));
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
        if let Some(t) = self.retreat.as_mut().filter(|t| t.ended.is_none()) {
            t.answers += 1;
            t.refused += u64::from(was_429);
        }
        if was_429 {
            self.last_429 = Some(now);
            // Answers to requests sent before the last cut say nothing new.
            let held = self
                .last_cut
                .is_some_and(|t| now.saturating_duration_since(t) < secs(self.cfg.retreat_hold));
            if !held {
                self.cut(now);
            }
        }
        self.evaluate(now);
    }

    /// Responses of the last minute that were not 429.
    fn accepted_last_minute(&self) -> usize {
        self.samples.iter().filter(|(_, bad)| !bad).count()
    }

    fn ratio_last_minute(&self) -> Option<f64> {
        (!self.samples.is_empty()).then(|| {
            let bad = self.samples.iter().filter(|(_, bad)| *bad).count();
            bad as f64 / self.samples.len() as f64
        })
    }

    /// A 429 outside the hold: go to what the provider serves.
    fn cut(&mut self, now: Instant) {
        self.refill(now);
        let before = self.rate_per_min;
        let history = self
            .first_grant
            .map_or(Duration::ZERO, |f| now.saturating_duration_since(f));
        let step = before * self.cfg.retreat_factor;
        // What the provider served per minute while the lane sent more: its
        // real limit. Counted by grant time (what the provider's window
        // counts): the grants of the last minute less the 429s among them.
        // With under 30 s of history there is no such figure.
        let served = (history >= MINUTE / 2).then(|| {
            let span = history.min(MINUTE).as_secs_f64();
            let refused = self.samples.iter().filter(|(_, bad)| *bad).count();
            self.grants.len().saturating_sub(refused) as f64 * 60.0 / span
        });
        // One cut goes at most `retreat_factor` deep: a minute with a pause
        // in it under-counts what the provider serves.
        let target = served.map_or(step, |s| (s * self.cfg.retreat_margin).max(step));
        self.rate_per_min = target.max(self.cfg.floor_per_minute).min(before);
        // The ceiling is where the provider's limit seems to be; recovery
        // probes slowly near it.
        self.ceiling = Some(served.unwrap_or(before).max(self.rate_per_min));
        self.state = RetreatState::Retreat;
        self.last_change = now;
        self.last_cut = Some(now);
        if self.retreat.is_none_or(|t| t.ended.is_some()) {
            // A new retreat: judged on the last minute's answers (this 429
            // among them), which its tally starts with.
            let refused = self.samples.iter().filter(|(_, bad)| *bad).count();
            self.retreat = Some(Tally {
                began: now,
                ended: None,
                answers: self.samples.len() as u64,
                refused: refused as u64,
            });
        }
    }

    /// Apply the recovery rules. Called on every response and periodically
    /// by the lane so recovery also happens without traffic.
    pub fn evaluate(&mut self, now: Instant) {
        self.prune(now);
        if self.paused_until.is_some_and(|p| p <= now) {
            self.paused_until = None;
        }
        if self
            .last_429
            .is_some_and(|t| now.saturating_duration_since(t) >= secs(self.cfg.ceiling_memory))
        {
            self.ceiling = None;
        }
        if self.state == RetreatState::Normal {
            return;
        }
        let quiet_since = self
            .last_429
            .map_or(self.last_change, |t| t.max(self.last_change));
        let near_ceiling = self
            .ceiling
            .is_some_and(|c| self.rate_per_min * self.cfg.recover_factor > c);
        // Near the provider's limit each probe risks a 429 (and its pause),
        // so the probes there are rarer.
        let interval = if near_ceiling {
            self.cfg.probe_interval
        } else {
            self.cfg.recover_step_interval
        };
        if now.saturating_duration_since(quiet_since) < secs(interval) {
            return;
        }
        self.refill(now);
        let next = if near_ceiling {
            self.rate_per_min + self.cfg.recover_step_per_minute
        } else {
            let up = self.rate_per_min * self.cfg.recover_factor;
            // Stop short of the ceiling; the slow steps probe the rest.
            match self.ceiling {
                Some(c) => up.min(c * self.cfg.retreat_margin).max(self.rate_per_min),
                None => up,
            }
        };
        self.rate_per_min = next.min(self.base_per_min);
        self.last_change = now;
        self.state = if self.rate_per_min >= self.base_per_min {
            RetreatState::Normal
        } else {
            RetreatState::Recover
        };
        if self.state == RetreatState::Normal {
            self.end_retreat(now);
        }
    }

    /// The rate is back at its base: the retreat's tally stops counting.
    fn end_retreat(&mut self, now: Instant) {
        if let Some(t) = self.retreat.as_mut().filter(|t| t.ended.is_none()) {
            t.ended = Some(now);
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
            ratio_429_last_minute: self.ratio_last_minute(),
            retreat_429: self.retreat.map(|t| t.view(now)),
            accepted_last_minute: self.accepted_last_minute(),
            ceiling_per_minute: self.ceiling.map(|c| (c * 100.0).round() / 100.0),
            samples: self.samples.len(),
            granted_last_minute: self.grants.len(),
            paused_for_seconds: self
                .paused_until
                .map_or(0.0, |p| p.saturating_duration_since(now).as_secs_f64()),
        }
    }
}
