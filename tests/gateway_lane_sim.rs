//! Rate lane behaviour over simulated minutes, on tokio's paused clock.
//!
//! The real `RateLane` (bucket + priority queue + concurrency limit +
//! dispatcher) is driven by many concurrent callers; the upstream is an
//! in-process stand-in for NVIDIA's API (which tests cannot reach) that
//! enforces its own rolling per-minute limit and answers 429 with a
//! `Retry-After` beyond it. No sockets, so `start_paused` auto-advance makes
//! ten simulated minutes take well under a second.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moziplus::gateway::config::{FullPolicy, LimiterConfig};
use moziplus::gateway::{LaneSettings, Priority, RateLane, RetreatState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{sleep, Instant};

const MINUTE: Duration = Duration::from_secs(60);

/// Stand-in for NVIDIA's API: a rolling-window limit of `limit` requests
/// per 60 s; beyond it 429 with `Retry-After` = time until a slot frees.
struct FakeUpstream {
    limit: usize,
    accepted: VecDeque<Instant>,
    log: Vec<(Instant, bool)>,
}

impl FakeUpstream {
    fn new(limit: usize) -> Self {
        FakeUpstream {
            limit,
            accepted: VecDeque::new(),
            log: Vec::new(),
        }
    }

    fn call(&mut self, now: Instant) -> Result<(), Duration> {
        while self.accepted.front().is_some_and(|t| now - *t >= MINUTE) {
            self.accepted.pop_front();
        }
        if self.accepted.len() >= self.limit {
            self.log.push((now, true));
            let oldest = *self.accepted.front().expect("non-empty at limit");
            return Err(oldest + MINUTE - now);
        }
        self.accepted.push_back(now);
        self.log.push((now, false));
        Ok(())
    }
}

fn settings(policy: FullPolicy, max_size: usize) -> LaneSettings {
    LaneSettings {
        limiter: LimiterConfig::default(),
        max_size,
        concurrency: 3,
        policy,
    }
}

fn max_in_rolling_minute(times: &[Instant]) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut j = 0;
    for i in 0..sorted.len() {
        while j < sorted.len() && sorted[j] - sorted[i] < MINUTE {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

#[derive(Default)]
struct Waits {
    by_priority: [Vec<Duration>; 4],
    served: [usize; 4],
}

fn mean(v: &[Duration]) -> f64 {
    v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64
}

#[tokio::test(start_paused = true)]
async fn two_hundred_callers_for_ten_minutes_stay_under_the_rate_and_urgent_goes_first() {
    let lane = RateLane::new("nvidia", settings(FullPolicy::Reject, 500));
    let upstream = Arc::new(Mutex::new(FakeUpstream::new(40)));
    let waits = Arc::new(Mutex::new(Waits::default()));
    let start = Instant::now();
    let end = start + 10 * MINUTE;
    let mut callers = Vec::new();
    for i in 0..200u64 {
        let (lane, upstream, waits) = (lane.clone(), upstream.clone(), waits.clone());
        // 10 urgent callers with long think times (an operator's agent),
        // the rest a mix of high/normal/low that always want more.
        let (priority, think) = match i % 20 {
            0 => (Priority::Urgent, Duration::from_secs(30)),
            1..=3 => (Priority::High, Duration::from_secs(5)),
            4..=12 => (Priority::Normal, Duration::from_secs(1)),
            _ => (Priority::Low, Duration::from_secs(1)),
        };
        let allowance = if priority == Priority::Low {
            Duration::from_secs(2)
        } else {
            MINUTE
        };
        callers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i);
            sleep(Duration::from_millis(rng.gen_range(0..5_000))).await;
            while Instant::now() < end {
                let asked = Instant::now();
                let result = lane.acquire(priority, allowance).await;
                {
                    let mut w = waits.lock().unwrap();
                    w.by_priority[priority.index()].push(asked.elapsed());
                    w.served[priority.index()] += usize::from(result.is_ok());
                }
                if let Ok(mut permit) = result {
                    let outcome = upstream.lock().unwrap().call(Instant::now());
                    sleep(Duration::from_millis(rng.gen_range(200..1_200))).await;
                    permit.record_response(outcome.is_err(), outcome.err());
                }
                sleep(think).await;
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    let log = upstream.lock().unwrap().log.clone();
    let sent: Vec<Instant> = log.iter().map(|(t, _)| *t).filter(|t| *t < end).collect();
    let rejected = log.iter().filter(|(_, was_429)| *was_429).count();
    let peak = max_in_rolling_minute(&sent);
    assert!(
        peak <= 40,
        "{peak} requests in one rolling minute (configured 40)"
    );
    assert!(
        sent.len() >= 380,
        "only {} of 400 allowed requests used in 10 minutes",
        sent.len()
    );
    assert_eq!(rejected, 0, "the upstream never had to answer 429");

    let w = waits.lock().unwrap();
    let stats = |p: Priority| {
        let v = &w.by_priority[p.index()];
        let served = w.served[p.index()];
        let mut sorted = v.clone();
        sorted.sort();
        let median = sorted
            .get(sorted.len() / 2)
            .copied()
            .unwrap_or_default()
            .as_secs_f64();
        (mean(v), median, served as f64 / v.len().max(1) as f64)
    };
    let (urgent_mean, urgent_median, urgent_served) = stats(Priority::Urgent);
    let (normal_mean, _, _) = stats(Priority::Normal);
    let (low_mean, _, low_served) = stats(Priority::Low);
    println!(
        "sent {} (peak {peak} in a rolling minute); urgent wait mean {urgent_mean:.2}s median {urgent_median:.2}s served {urgent_served:.2}; \
         normal mean {normal_mean:.2}s; low mean {low_mean:.2}s served {low_served:.2}",
        sent.len()
    );
    assert!(
        urgent_mean * 10.0 < normal_mean,
        "urgent {urgent_mean:.2}s vs normal {normal_mean:.2}s"
    );
    // Low waits are capped at 2 s by design (then 429 or degrade), so the
    // comparison with low is: urgent is served at once, low mostly is not.
    assert!(
        urgent_median < 1.0,
        "urgent median wait {urgent_median:.2}s"
    );
    assert_eq!(urgent_served, 1.0, "every urgent request was served");
    assert!(
        low_served < 0.5,
        "low requests are the ones turned away ({low_served:.2} served)"
    );
    let snap = lane.snapshot();
    let asked: usize = w.by_priority.iter().map(Vec::len).sum();
    assert_eq!(
        snap.counters.timed_out + snap.counters.granted,
        asked as u64,
        "every request answered"
    );
}

#[tokio::test(start_paused = true)]
async fn retreat_brings_429s_down_within_three_minutes_and_recovers_after_relief() {
    let lane = RateLane::new("nvidia", settings(FullPolicy::Reject, 500));
    // True limit 30/min while the gateway is configured for 40.
    let upstream = Arc::new(Mutex::new(FakeUpstream::new(30)));
    let start = Instant::now();
    let relief_at = start + 6 * MINUTE;
    let end = start + 20 * MINUTE;
    let mut callers = Vec::new();
    for i in 0..60u64 {
        let (lane, upstream) = (lane.clone(), upstream.clone());
        callers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i);
            while Instant::now() < end {
                if let Ok(mut permit) = lane.acquire(Priority::Normal, MINUTE).await {
                    let outcome = upstream.lock().unwrap().call(Instant::now());
                    sleep(Duration::from_millis(rng.gen_range(200..800))).await;
                    permit.record_response(outcome.is_err(), outcome.err());
                }
                sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    // Watch the lane: the state at relief time, then let the upstream relax.
    sleep_until(relief_at).await;
    let at_relief = lane.snapshot().bucket;
    upstream.lock().unwrap().limit = 60;
    for c in callers {
        c.await.unwrap();
    }
    let log = upstream.lock().unwrap().log.clone();
    let minute3: Vec<&(Instant, bool)> = log
        .iter()
        .filter(|(t, _)| *t >= start + 2 * MINUTE && *t < start + 3 * MINUTE)
        .collect();
    let ratio3 = minute3.iter().filter(|(_, b)| *b).count() as f64 / minute3.len().max(1) as f64;
    let total_429 = log.iter().filter(|(_, b)| *b).count();
    let end_state = lane.snapshot().bucket;
    println!(
        "429s total {total_429}; ratio in minute 3 {ratio3:.3} of {}; at relief {:.1}/min {:?}; at end {:.1}/min {:?}",
        minute3.len(),
        at_relief.effective_rate_per_minute,
        at_relief.retreat_state,
        end_state.effective_rate_per_minute,
        end_state.retreat_state
    );
    assert!(!minute3.is_empty(), "traffic continued in minute 3");
    assert!(
        ratio3 < 0.05,
        "429 ratio in the third minute was {ratio3:.3}"
    );
    assert!(total_429 > 0, "the tighter upstream limit was actually hit");
    assert!(
        at_relief.effective_rate_per_minute <= 30.5,
        "rate retreated to the true limit: {at_relief:?}"
    );
    assert_eq!(
        end_state.effective_rate_per_minute, 40.0,
        "rate recovered to the base: {end_state:?}"
    );
    assert_eq!(end_state.retreat_state, RetreatState::Normal);
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(t).await;
}

#[tokio::test(start_paused = true)]
async fn full_queue_policies_answer_every_request() {
    for policy in [
        FullPolicy::Reject,
        FullPolicy::DropLowest,
        FullPolicy::Passthrough,
    ] {
        // One slot, no tokens left after the first grant: everything queues.
        let mut s = settings(policy, 3);
        s.concurrency = 1;
        s.limiter.capacity = 1.0;
        s.limiter.rate_per_minute = 6.0;
        let lane = RateLane::new("nvidia", s);
        let holder = lane
            .acquire(Priority::Normal, MINUTE)
            .await
            .expect("first request gets the token");
        let mut waiters = Vec::new();
        for p in [
            Priority::Low,
            Priority::Low,
            Priority::Normal,
            Priority::Urgent,
            Priority::High,
        ] {
            let lane = lane.clone();
            waiters.push((
                p,
                tokio::spawn(
                    async move { lane.acquire(p, Duration::from_secs(30)).await.map(drop) },
                ),
            ));
            tokio::task::yield_now().await;
        }
        drop(holder);
        let mut outcomes = Vec::new();
        for (p, w) in waiters {
            let answer = tokio::time::timeout(Duration::from_secs(120), w)
                .await
                .expect("answered in time")
                .unwrap();
            outcomes.push((p, answer.map_err(|e| format!("{e:?}"))));
        }
        let kinds: Vec<String> = outcomes
            .iter()
            .map(|(p, r)| {
                format!(
                    "{p}:{}",
                    r.as_ref().map_or_else(
                        |e| e.split(' ').next().unwrap().to_string(),
                        |_| "ok".into()
                    )
                )
            })
            .collect();
        println!("{policy}: {kinds:?}");
        match policy {
            FullPolicy::Reject => {
                assert!(
                    kinds[3].starts_with("urgent:QueueFull")
                        && kinds[4].starts_with("high:QueueFull"),
                    "{kinds:?}"
                )
            }
            FullPolicy::DropLowest => {
                // Urgent and high evict the two newest lows; they are told at once.
                assert!(
                    kinds[0].starts_with("low:Dropped") && kinds[1].starts_with("low:Dropped"),
                    "{kinds:?}"
                );
                assert!(kinds[3] == "urgent:ok", "{kinds:?}");
            }
            FullPolicy::Passthrough => {
                assert!(kinds[3].starts_with("urgent:NoToken"), "{kinds:?}")
            }
        }
        assert_eq!(
            lane.snapshot().queue_len,
            0,
            "{policy}: nothing left queued"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shrinking_the_queue_below_its_depth_is_refused() {
    let mut s = settings(FullPolicy::Reject, 10);
    s.limiter.capacity = 1.0;
    let lane = RateLane::new("nvidia", s);
    let _holder = lane.acquire(Priority::Normal, MINUTE).await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..4 {
        let lane = lane.clone();
        waiters.push(tokio::spawn(async move {
            lane.acquire(Priority::Normal, Duration::from_secs(600))
                .await
                .is_ok()
        }));
    }
    tokio::task::yield_now().await;
    sleep(Duration::from_millis(1)).await;
    assert_eq!(lane.queue_len(), 4);
    let err = lane.set_max_size(3).unwrap_err();
    assert!(err.contains("holds 4 waiting requests"), "{err}");
    assert_eq!(lane.snapshot().queue_max, 10);
    lane.set_max_size(4).expect("equal to depth is fine");
    for w in waiters {
        assert!(w.await.unwrap(), "every waiter is served eventually");
    }
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_leave_the_queue_and_return_nothing() {
    let mut s = settings(FullPolicy::Reject, 10);
    s.limiter.capacity = 1.0;
    let lane = RateLane::new("nvidia", s);
    let holder = lane.acquire(Priority::Normal, MINUTE).await.unwrap();
    let l2 = lane.clone();
    let waiter = tokio::spawn(async move { l2.acquire(Priority::High, MINUTE).await.is_ok() });
    sleep(Duration::from_millis(10)).await;
    assert_eq!(lane.queue_len(), 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(
        lane.queue_len(),
        0,
        "an abandoned request does not stay queued"
    );
    drop(holder);
    // The token of a permit that was never used goes back to the bucket.
    let before = lane.snapshot().bucket.tokens;
    let p = lane.acquire(Priority::Normal, MINUTE).await.unwrap();
    drop(p);
    assert!((lane.snapshot().bucket.tokens - before).abs() < 0.5);
}
