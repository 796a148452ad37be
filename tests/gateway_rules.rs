//! Exact state-machine rules of the breaker and the adaptive bucket, driven
//! on tokio's paused clock (time passed in explicitly).

use std::time::Duration;

use moziplus::gateway::breaker::{BreakerDecision, BreakerState, CircuitBreaker};
use moziplus::gateway::config::{Concurrency, GatewayConfig, LimiterConfig};
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
async fn a_429_cuts_once_per_hold_and_short_history_cuts_by_the_factor() {
    let mut bucket = AdaptiveBucket::new(LimiterConfig::default(), Instant::now());
    for _ in 0..5 {
        bucket.record_response(Instant::now(), false, None);
    }
    assert_eq!(bucket.state(), RetreatState::Normal);
    bucket.record_response(Instant::now(), true, None);
    // Under a minute of history: x0.9.
    assert_eq!(bucket.state(), RetreatState::Retreat);
    assert_eq!(bucket.effective_rate(), 36.0);
    // 429s within the hold were sent at the old rate: no second cut.
    advance(Duration::from_secs(5)).await;
    for _ in 0..10 {
        bucket.record_response(Instant::now(), true, None);
    }
    assert_eq!(bucket.effective_rate(), 36.0);
    advance(Duration::from_secs(6)).await;
    bucket.record_response(Instant::now(), true, None);
    assert!(
        (bucket.effective_rate() - 32.4).abs() < 1e-9,
        "after the hold a 429 cuts again: {}",
        bucket.effective_rate()
    );
}

#[tokio::test(start_paused = true)]
async fn with_a_minute_of_history_the_rate_goes_to_what_the_provider_accepted() {
    let mut bucket = AdaptiveBucket::new(LimiterConfig::default(), Instant::now());
    // The provider served one every 2 s for a minute: 30 in the window...
    let serve_one = |bucket: &mut AdaptiveBucket, was_429: bool| {
        if bucket.try_acquire(Instant::now()) {
            bucket.record_response(Instant::now(), was_429, None);
        }
    };
    for i in 0..30 {
        if i > 0 {
            advance(Duration::from_secs(2)).await;
        }
        serve_one(&mut bucket, false);
    }
    assert_eq!(bucket.snapshot(Instant::now()).accepted_last_minute, 30);
    // ...then refused: its limit is 30/min. The lane goes there in cuts of
    // at most x0.9 (40 -> 36 -> 32.4 -> ~30), one per hold (10 s).
    let mut rates = Vec::new();
    for _ in 0..4 {
        advance(Duration::from_secs(2)).await;
        serve_one(&mut bucket, true);
        rates.push(bucket.effective_rate());
        // The provider keeps serving 30 a minute meanwhile.
        for _ in 0..4 {
            advance(Duration::from_secs(2)).await;
            serve_one(&mut bucket, false);
        }
    }
    assert_eq!(rates[0], 36.0, "{rates:?}");
    assert!((rates[1] - 32.4).abs() < 1e-9, "{rates:?}");
    for r in &rates[2..] {
        assert!(
            (29.0..=30.5).contains(r),
            "settles at what the provider served: {rates:?}"
        );
    }
    let ceiling = bucket.snapshot(Instant::now()).ceiling_per_minute.unwrap();
    assert!(
        (29.0..=30.5).contains(&ceiling),
        "the provider's limit: {ceiling}"
    );
}

#[tokio::test(start_paused = true)]
async fn retreat_floor_recovery_steps_and_retry_after_pause() {
    let cfg = LimiterConfig {
        floor_per_minute: 20.0,
        ..LimiterConfig::default()
    };
    let mut bucket = AdaptiveBucket::new(cfg, Instant::now());
    for _ in 0..10 {
        bucket.record_response(Instant::now(), true, None);
        advance(Duration::from_secs(11)).await;
    }
    assert_eq!(bucket.effective_rate(), 20.0, "never below the floor");
    // Near the ceiling (where the last 429 came, here the floor) recovery
    // probes slowly: +0.5 per 60 s.
    let ceiling = bucket.snapshot(Instant::now()).ceiling_per_minute.unwrap();
    assert!(ceiling < 25.0, "ceiling {ceiling}");
    // (The last 429 came 11 s ago.)
    advance(Duration::from_secs(40)).await;
    bucket.evaluate(Instant::now());
    assert_eq!(bucket.effective_rate(), 20.0, "no probe before 60 s");
    advance(Duration::from_secs(10)).await;
    bucket.evaluate(Instant::now());
    assert_eq!(
        (bucket.state(), bucket.effective_rate()),
        (RetreatState::Recover, 20.5)
    );
    // Once the ceiling is forgotten (180 s without a 429) the climb is fast:
    // x1.25 per step, back to the base within a few steps.
    let mut steps_after_forgetting = 0;
    for _ in 0..40 {
        advance(Duration::from_secs(20)).await;
        bucket.evaluate(Instant::now());
        if bucket.snapshot(Instant::now()).ceiling_per_minute.is_none() {
            steps_after_forgetting += 1;
        }
        if bucket.state() == RetreatState::Normal {
            break;
        }
    }
    assert_eq!(
        (bucket.state(), bucket.effective_rate()),
        (RetreatState::Normal, 40.0)
    );
    assert!(
        steps_after_forgetting <= 4,
        "{steps_after_forgetting} steps from the forgotten ceiling to the base"
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
    bucket.record_response(Instant::now(), true, None);
    assert_eq!(bucket.effective_rate(), 18.0);
    bucket.set_base_rate(Instant::now(), 30.0);
    assert_eq!(
        (bucket.base_rate(), bucket.effective_rate()),
        (30.0, 18.0),
        "retreat keeps its cut"
    );
    for _ in 0..40 {
        advance(Duration::from_secs(20)).await;
        bucket.evaluate(Instant::now());
    }
    assert_eq!(
        bucket.effective_rate(),
        30.0,
        "recovery climbs to the new base"
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_minute_is_paced_not_burst() {
    // Default capacity 1: the first grant at once, then one per 1.5 s.
    let mut bucket = AdaptiveBucket::new(LimiterConfig::default(), Instant::now());
    assert!(bucket.try_acquire(Instant::now()));
    assert!(!bucket.try_acquire(Instant::now()), "no burst");
    let wait = bucket.time_until_grant(Instant::now());
    assert!(
        wait >= Duration::from_millis(1499) && wait <= Duration::from_millis(1501),
        "{wait:?}"
    );
}

#[test]
fn config_defaults_yaml_and_validation() {
    let cfg: GatewayConfig = serde_yaml_ng::from_str("{}").unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.limiter.rate_per_minute, 40.0);
    assert_eq!(cfg.queue.max_size, 500);
    assert_eq!(cfg.queue.concurrency, Concurrency::Auto);
    assert_eq!(cfg.limiter.capacity, 1.0, "no burst by default");
    let fixed: GatewayConfig = serde_yaml_ng::from_str("queue:\n  concurrency: 7\n").unwrap();
    assert_eq!(fixed.queue.concurrency, Concurrency::Fixed(7));
    let auto: GatewayConfig = serde_yaml_ng::from_str("queue:\n  concurrency: auto\n").unwrap();
    assert_eq!(auto.queue.concurrency, Concurrency::Auto);
    let word =
        serde_yaml_ng::from_str::<GatewayConfig>("queue:\n  concurrency: lots\n").unwrap_err();
    assert!(
        word.to_string().contains("neither `auto` nor a number"),
        "{word}"
    );
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

/// The retreat's 429 share (issue 26, item 3): the minute before the first
/// cut and every answer since, kept while the rate is below its base (long
/// after the last minute's share has emptied), frozen when the rate is back,
/// and replaced by the next retreat's.
#[tokio::test(start_paused = true)]
async fn a_retreats_429_share_lasts_until_the_rate_is_back_and_the_next_one_starts_afresh() {
    let mut bucket = AdaptiveBucket::new(LimiterConfig::default(), Instant::now());
    assert!(bucket.snapshot(Instant::now()).retreat_429.is_none());
    for _ in 0..3 {
        bucket.record_response(Instant::now(), false, None);
        advance(Duration::from_secs(1)).await;
    }
    assert!(
        bucket.snapshot(Instant::now()).retreat_429.is_none(),
        "answers without a 429 are no retreat"
    );
    bucket.record_response(Instant::now(), true, None);
    advance(Duration::from_secs(1)).await;
    bucket.record_response(Instant::now(), true, None);
    bucket.record_response(Instant::now(), false, None);
    let t = bucket.snapshot(Instant::now()).retreat_429.unwrap();
    assert_eq!(
        (t.answers, t.answers_429, t.ended_seconds_ago),
        (6, 2, None)
    );
    assert!((t.ratio_429 - 2.0 / 6.0).abs() < 1e-9, "{t:?}");

    // Two minutes on, the rate still below its base: the last minute is
    // empty, the retreat's share is not.
    advance(Duration::from_secs(120)).await;
    bucket.evaluate(Instant::now());
    let s = bucket.snapshot(Instant::now());
    assert!(
        s.effective_rate_per_minute < s.base_rate_per_minute,
        "{s:?}"
    );
    assert_eq!(s.ratio_429_last_minute, None);
    let t = s.retreat_429.unwrap();
    assert_eq!(
        (t.answers, t.answers_429, t.ended_seconds_ago),
        (6, 2, None)
    );
    assert!(t.began_seconds_ago >= 120.0, "{t:?}");

    // Back at the base: the tally stops counting and says since when.
    for _ in 0..40 {
        advance(Duration::from_secs(60)).await;
        bucket.evaluate(Instant::now());
        if bucket.state() == RetreatState::Normal {
            break;
        }
    }
    assert_eq!(bucket.state(), RetreatState::Normal);
    advance(Duration::from_secs(5)).await;
    bucket.record_response(Instant::now(), false, None);
    let t = bucket.snapshot(Instant::now()).retreat_429.unwrap();
    assert_eq!(
        (t.answers, t.answers_429),
        (6, 2),
        "frozen once over: {t:?}"
    );
    assert_eq!(t.ended_seconds_ago, Some(5.0));

    // The next retreat counts afresh: its last minute (one answer, then the
    // 429 that cuts).
    bucket.record_response(Instant::now(), true, None);
    let t = bucket.snapshot(Instant::now()).retreat_429.unwrap();
    assert_eq!(
        (t.answers, t.answers_429, t.ended_seconds_ago),
        (2, 1, None)
    );
    assert_eq!(t.began_seconds_ago, 0.0);
}
