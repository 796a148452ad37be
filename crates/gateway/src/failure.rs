//! Attempts that reached a provider and got no complete answer: a stream
//! that broke, stalled or ended before the provider said it was finished,
//! or a JSON answer without `choices` / `finish_reason`. Such an attempt is
//! a failure for the provider's breaker, and the run hears of it
//! ([`GatewayHooks::record_failure`]).
//!
//! [`GatewayHooks::record_failure`]: crate::hooks::GatewayHooks::record_failure

use std::sync::Arc;

use tokio::time::Instant;

use crate::hooks::{FailedAttempt, RunAttribution};
use crate::metrics;
use crate::state::GatewayInner;

/// The breaker outcome of a streamed answer, settled when the stream ends:
/// a success only once the provider said the answer is complete, a failure
/// when the stream broke, stalled or was cut off. A stream dropped before
/// that (the client left) settles a half-open probe as a failure and
/// counts as nothing otherwise.
pub(crate) struct StreamOutcome {
    gw: Arc<GatewayInner>,
    provider: usize,
    probe: bool,
    settled: bool,
}

impl StreamOutcome {
    /// A streamed attempt on `provider` (an index of `gw.providers`);
    /// `probe`: it is the breaker's half-open probe.
    pub fn new(gw: Arc<GatewayInner>, provider: usize, probe: bool) -> Self {
        StreamOutcome {
            gw,
            provider,
            probe,
            settled: false,
        }
    }

    /// The provider finished its answer.
    pub fn success(&mut self) {
        if !std::mem::replace(&mut self.settled, true) {
            let p = &self.gw.providers[self.provider];
            p.breaker().record_success();
            metrics::breaker_state(&p.cfg.name, p.breaker().state());
        }
    }

    /// The answer is incomplete: a failed attempt for the breaker, the
    /// provider's error counter and the run.
    pub fn failure(&mut self, call: Option<&RunAttribution>, model: &str, reason: &str) {
        if !std::mem::replace(&mut self.settled, true) {
            failed_attempt(&self.gw, self.provider, call, model, reason);
        }
    }
}

impl Drop for StreamOutcome {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            let p = &self.gw.providers[self.provider];
            p.breaker().record_failure(Instant::now());
            metrics::breaker_state(&p.cfg.name, p.breaker().state());
        }
    }
}

/// Book an attempt that got an answer, but not a complete one: a breaker
/// failure, a log line naming the run, and the daemon's record of the run.
pub(crate) fn failed_attempt(
    gw: &GatewayInner,
    provider: usize,
    attribution: Option<&RunAttribution>,
    model: &str,
    reason: &str,
) {
    let p = &gw.providers[provider];
    p.breaker().record_failure(Instant::now());
    metrics::breaker_state(&p.cfg.name, p.breaker().state());
    let session = attribution.map_or("", |a| a.session_id.as_str());
    tracing::warn!(provider = %p.cfg.name, model = %model, session = %session, reason = %reason, "upstream answer incomplete; booked as a failed attempt");
    if let Some(a) = attribution {
        let failure = FailedAttempt {
            provider: p.cfg.name.clone(),
            model: model.to_string(),
            reason: reason.to_string(),
        };
        gw.hooks.record_failure(a, &failure);
    }
}
