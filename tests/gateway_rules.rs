//! Exact state-machine rules of the breaker and the adaptive bucket, driven
//! on tokio's paused clock (time passed in explicitly).

use std::time::Duration;

use moziplus::gateway::breaker::{BreakerDecision, BreakerState, CircuitBreaker};
use moziplus::gateway::config::{GatewayConfig, LimiterConfig};
use moziplus::gateway::limiter::AdaptiveBucket;
use moziplus::gateway::RetreatState;
use tokio::time::{advance, Instant};

const OPEN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_five_failures_allows_exactly_one_probe_and_closes_on_success() {
    let mut b = CircuitBreaker::new(5, OPEN);
    for i in 0..4 {
        assert_eq!(b.check(Instant::now()), BreakerDecision::Allow, "call {i}");
        b.record_failure(Instant::now());
    }
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "four failures keep it closed"
    );
    b.record_failure(Instant::now());
    assert_eq!(b.state(), BreakerState::Open);

    // Open: every call fails fast for the whole 60 s.
    for _ in 0..59 {
        match b.check(Instant::now()) {
            BreakerDecision::Reject { retry_after } => {
                assert!(retry_after <= OPEN && !retry_after.is_zero())
            }
            other => panic!("expected fast failure, got {other:?}"),
        }
        advance(Duration::from_secs(1)).await;
    }
    advance(Duration::from_secs(1)).await;

    // Half-open: exactly one probe among many concurrent callers.
    let decisions: Vec<BreakerDecision> = (0..10).map(|_| b.check(Instant::now())).collect();
    assert_eq!(
        decisions
            .iter()
            .filter(|d| **d == BreakerDecision::Probe)
            .count(),
        1,
        "{decisions:?}"
    );
    assert_eq!(decisions[0], BreakerDecision::Probe);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b.record_success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.check(Instant::now()), BreakerDecision::Allow);
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_for_another_full_period() {
    let mut b = CircuitBreaker::new(5, OPEN);
    for _ in 0..5 {
        b.record_failure(Instant::now());
    }
    advance(OPEN).await;
    assert_eq!(b.check(Instant::now()), BreakerDecision::Probe);
    b.record_failure(Instant::now());
    assert_eq!(b.state(), BreakerState::Open);
    advance(Duration::from_secs(59)).await;
    assert!(matches!(
        b.check(Instant::now()),
        BreakerDecision::Reject { .. }
    ));
    advance(Duration::from_secs(1)).await;
    assert_eq!(b.check(Instant::now()), BreakerDecision::Probe);
    assert_eq!(b.snapshot(Instant::now()).times_opened, 2);
}

#[tokio::test(start_paused = true)]
async fn one_429_is_not_a_100_percent_rate() {
    let mut bucket = AdaptiveBucket::new(LimiterConfig::default(), Instant::now());
    bucket.record_response(Instant::now(), true, None);
    assert_eq!(
        bucket.state(),
        RetreatState::Normal,
        "below min_samples nothing reacts"
    );
    for _ in 0..8 {
        bucket.record_response(Instant::now(), false, None);
    }
    assert_eq!(
        bucket.state(),
        RetreatState::Normal,
        "9 samples are still too few"
    );
    bucket.record_response(Instant::now(), false, None);
    // 1 of 10 = 10 % >= 5 %: retreat once, x0.75.
    assert_eq!(bucket.state(), RetreatState::Retreat);
    assert_eq!(bucket.effective_rate(), 30.0);
    // More 429s within the same window do not cut again (once per window).
    for _ in 0..10 {
        bucket.record_response(Instant::now(), true, None);
    }
    assert_eq!(bucket.effective_rate(), 30.0);
    advance(Duration::from_secs(60)).await;
    for _ in 0..10 {
        bucket.record_response(Instant::now(), true, None);
    }
    assert_eq!(
        bucket.effective_rate(),
        22.5,
        "a new window with >= 10 % cuts once more"
    );
}

#[tokio::test(start_paused = true)]
async fn retreat_floor_recovery_steps_and_retry_after_pause() {
    let cfg = LimiterConfig {
        floor_per_minute: 20.0,
        ..LimiterConfig::default()
    };
    let mut bucket = AdaptiveBucket::new(cfg, Instant::now());
    for _ in 0..5 {
        for _ in 0..10 {
            bucket.record_response(Instant::now(), true, None);
        }
        advance(Duration::from_secs(60)).await;
    }
    assert_eq!(bucket.effective_rate(), 20.0, "never below the floor");
    // Quiet upstream: after 120 s without 429s, recover by +2 per step.
    advance(Duration::from_secs(120)).await;
    bucket.evaluate(Instant::now());
    assert_eq!(
        (bucket.state(), bucket.effective_rate()),
        (RetreatState::Recover, 22.0)
    );
    for _ in 0..20 {
        advance(Duration::from_secs(60)).await;
        bucket.evaluate(Instant::now());
    }
    assert_eq!(
        (bucket.state(), bucket.effective_rate()),
        (RetreatState::Normal, 40.0)
    );

    // Retry-After pauses grants even with a full bucket.
    assert!(bucket.time_until_grant(Instant::now()).is_zero());
    bucket.record_response(Instant::now(), true, Some(Duration::from_secs(7)));
    assert_eq!(
        bucket.time_until_grant(Instant::now()),
        Duration::from_secs(7)
    );
}

#[tokio::test(start_paused = true)]
async fn runtime_base_rate_change_moves_the_base_not_just_the_current_rate() {
    let mut bucket = AdaptiveBucket::new(LimiterConfig::default(), Instant::now());
    bucket.set_base_rate(Instant::now(), 20.0);
    assert_eq!((bucket.base_rate(), bucket.effective_rate()), (20.0, 20.0));
    for _ in 0..10 {
        bucket.record_response(Instant::now(), true, None);
    }
    assert_eq!(bucket.effective_rate(), 15.0);
    bucket.set_base_rate(Instant::now(), 30.0);
    assert_eq!(
        (bucket.base_rate(), bucket.effective_rate()),
        (30.0, 15.0),
        "retreat keeps its cut"
    );
    advance(Duration::from_secs(121)).await;
    for _ in 0..20 {
        bucket.evaluate(Instant::now());
        advance(Duration::from_secs(60)).await;
    }
    assert_eq!(
        bucket.effective_rate(),
        30.0,
        "recovery climbs to the new base"
    );
}

#[test]
fn config_defaults_yaml_and_validation() {
    let cfg: GatewayConfig = serde_yaml_ng::from_str("{}").unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.limiter.rate_per_minute, 40.0);
    assert_eq!(cfg.queue.max_size, 500);
    assert_eq!(cfg.queue.concurrency, 3);
    assert_eq!(cfg.providers[0].name, "nvidia");
    assert!(cfg.providers[0].limited);

    let yaml = "queue:\n  concurrency: 0\n";
    let bad: GatewayConfig = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(bad.validate().unwrap_err().key, "gateway.queue.concurrency");

    let unknown = serde_yaml_ng::from_str::<GatewayConfig>("queue:\n  max_sise: 3\n").unwrap_err();
    assert!(unknown.to_string().contains("max_sise"), "{unknown}");

    let yaml = r#"
providers:
  - name: local
    base_url: http://127.0.0.1:8000/v1
    fallback: { provider: nowhere }
"#;
    let bad: GatewayConfig = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(
        bad.validate().unwrap_err().key,
        "gateway.providers[0].fallback.provider"
    );

    let masked = format!(
        "{:?}",
        moziplus::gateway::Secret::new("nvapi-0123456789abcdef")
    );
    assert_eq!(masked, "****", "not one character of the key");
}
