//! Jittered exponential backoff.
//!
//! `base × factor^attempt`, capped, with "equal jitter": half the delay is
//! fixed and half random, so a herd of retries spreads out while each one
//! still waits a meaningful time. An upstream `Retry-After` wins when it is
//! longer. The random unit is passed in so the gateway's seedable RNG (and
//! tests) decide it.

use std::time::Duration;

use crate::config::{secs, RetryConfig};

/// Delay before retry number `attempt` (0 = first retry). `unit` is a random
/// number in `[0, 1)`.
pub fn backoff(
    cfg: &RetryConfig,
    attempt: u32,
    unit: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = cfg.base * cfg.factor.powi(attempt.min(30) as i32);
    let ceiling = exp.min(cfg.cap);
    let jittered = ceiling / 2.0 + ceiling / 2.0 * unit.clamp(0.0, 1.0);
    let delay = secs(jittered);
    match retry_after {
        Some(ra) => delay.max(ra),
        None => delay,
    }
}

/// Parse a `Retry-After` header (RFC 9110 §10.2.3): delta-seconds (fractions
/// tolerated) or an HTTP date, which counts from now (a date in the past
/// means "now": zero).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    parse_retry_after_at(value, chrono::Utc::now())
}

/// [`parse_retry_after`] with the current time given.
pub fn parse_retry_after_at(
    value: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = value?.trim();
    if let Ok(v) = value.parse::<f64>() {
        return (v.is_finite() && v >= 0.0).then(|| secs(v));
    }
    // IMF-fixdate ("Wed, 21 Oct 2015 07:28:00 GMT") is RFC 2822 syntax.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_with_bounded_jitter_and_cap() {
        let cfg = RetryConfig::default();
        assert_eq!(backoff(&cfg, 0, 0.0, None), Duration::from_millis(500));
        assert_eq!(backoff(&cfg, 0, 1.0, None), Duration::from_secs(1));
        assert_eq!(backoff(&cfg, 2, 1.0, None), Duration::from_secs(4));
        assert_eq!(backoff(&cfg, 10, 1.0, None), Duration::from_secs(30));
        assert_eq!(
            backoff(&cfg, 0, 0.5, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after(Some(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(Some("0.5")),
            Some(Duration::from_millis(500))
        );
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after_at(Some("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after_at(Some("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after(Some("soon")), None);
        assert_eq!(parse_retry_after(Some("-3")), None);
        assert_eq!(parse_retry_after(None), None);
    }
}
