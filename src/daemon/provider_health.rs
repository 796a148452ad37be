//! Provider health, everywhere the operator looks (issue 26, item 3): an
//! open breaker, a parked key or a deep retreat of a provider the gateway
//! routes to.
//!
//! [`assess`] is the pure rule over one gateway status and
//! [`ProviderHealth`] keeps what it last found; [`super::provider_watch`]
//! applies it every [`INTERVAL`] and, on each change, writes an event to every open
//! project (`provider.degraded` at level `attention`, `provider.recovered`
//! at `daily`; webhooks deliver them like any event) and keeps the current
//! problems for readiness's `degraded` list and the overview
//! ([`super::Daemon::degraded`]).
//!
//! A provider without a key is not a problem: nothing routes to it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::gateway::{BreakerState, GatewayStatus};
use crate::locks::Recover;

/// How often the gateway's status is assessed.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// The rate in force below this share of the configured rate is a deep
/// retreat.
pub const DEEP_RETREAT: f64 = 0.5;

/// One provider's problem: what is wrong and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderProblem {
    pub provider: String,
    /// What is wrong, and what happens meanwhile.
    pub reason: String,
    /// UTC ms, first seen.
    pub since_ms: i64,
}

/// The problems of each provider in `status` (keyed providers only), each
/// a sentence: breaker open or probing, every key parked (or some), the
/// rate retreated below [`DEEP_RETREAT`] of its configured value.
pub fn assess(status: &GatewayStatus) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in &status.providers {
        if p.api_key.is_none() {
            continue;
        }
        let mut why = Vec::new();
        match p.breaker.state {
            BreakerState::Open => why.push(format!(
                "breaker open after {} consecutive failures (probe in {:.0} s; calls go to its fallback or fail fast)",
                p.breaker.consecutive_failures, p.breaker.open_for_seconds
            )),
            BreakerState::HalfOpen => why.push("breaker half-open (probing)".to_string()),
            BreakerState::Closed => {}
        }
        if let Some(lane) = &p.lane {
            let parked: Vec<String> = lane
                .keys
                .iter()
                .filter(|k| k.parked_for_seconds > 0.0)
                .map(|k| {
                    format!(
                        "{} for {:.0} s{}",
                        k.name,
                        k.parked_for_seconds,
                        k.parked_reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            if !parked.is_empty() {
                let all = parked.len() == lane.keys.len();
                why.push(format!(
                    "{} parked: {}",
                    if all { "every key" } else { "key" },
                    parked.join(", ")
                ));
            }
            let b = &lane.bucket;
            if b.base_rate_per_minute > 0.0
                && b.effective_rate_per_minute < DEEP_RETREAT * b.base_rate_per_minute
            {
                why.push(format!(
                    "rate retreated to {:.1}/min of {:.0}/min (the provider answers 429)",
                    b.effective_rate_per_minute, b.base_rate_per_minute
                ));
            }
        }
        if !why.is_empty() {
            out.insert(p.name.clone(), why.join("; "));
        }
    }
    out
}

/// The current provider problems, as the watch last saw them.
#[derive(Debug, Default)]
pub struct ProviderHealth {
    current: Mutex<BTreeMap<String, ProviderProblem>>,
}

/// What changed between two assessments.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// New or changed problems.
    pub degraded: Vec<ProviderProblem>,
    /// Providers whose problem is over.
    pub recovered: Vec<String>,
}

impl ProviderHealth {
    /// Replaces the problems with `now` (from [`assess`]); returns what
    /// changed. A provider whose reason changes is reported again.
    pub fn update(&self, now: BTreeMap<String, String>, now_ms: i64) -> Changes {
        let mut map = self.current.locked();
        let mut changes = Changes::default();
        map.retain(|name, _| {
            let keep = now.contains_key(name);
            if !keep {
                changes.recovered.push(name.clone());
            }
            keep
        });
        for (provider, reason) in now {
            // The seconds in a reason tick down: compare what is wrong, not
            // the figures.
            let changed = map
                .get(&provider)
                .is_none_or(|old| shape(&old.reason) != shape(&reason));
            let since_ms = map.get(&provider).map_or(now_ms, |old| old.since_ms);
            let problem = ProviderProblem {
                provider: provider.clone(),
                reason,
                since_ms,
            };
            if changed {
                changes.degraded.push(problem.clone());
            }
            map.insert(provider, problem);
        }
        changes
    }

    /// The current problems, by provider.
    pub fn problems(&self) -> Vec<ProviderProblem> {
        let map = self.current.locked();
        map.values().cloned().collect()
    }
}

/// A reason without its figures (what kind of problem it is).
fn shape(reason: &str) -> String {
    reason
        .chars()
        .filter(|c| !c.is_ascii_digit() && *c != '.')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_that_only_ticks_down_is_not_a_change() {
        let h = ProviderHealth::default();
        let one = |r: &str| BTreeMap::from([("nvidia".to_string(), r.to_string())]);
        let c = h.update(
            one("breaker open after 5 consecutive failures (probe in 30 s)"),
            1,
        );
        assert_eq!(c.degraded.len(), 1);
        let c = h.update(
            one("breaker open after 5 consecutive failures (probe in 28 s)"),
            2,
        );
        assert_eq!(c, Changes::default());
        let c = h.update(one("every key parked: k1 for 3600 s"), 3);
        assert_eq!(c.degraded.len(), 1, "a different problem is reported");
        assert_eq!(h.problems()[0].since_ms, 1, "since the first sighting");
        let c = h.update(BTreeMap::new(), 4);
        assert_eq!(c.recovered, ["nvidia"]);
        assert!(h.problems().is_empty());
    }
}
