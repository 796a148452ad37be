//! Failure handling over real loopback HTTP with small numbers: upstream
//! 429s and 5xx, the breaker with its fallback, the full queue, low-priority
//! degrade, stalled streams, client disconnects and the admin API. The fake
//! upstream stands in for NVIDIA's API, which the tests cannot reach.

#[path = "support/fake_upstream.rs"]
mod fake_upstream;
#[path = "support/gateway_harness.rs"]
mod harness;
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fake_upstream::FakeUpstream;
use futures_util::StreamExt;
use harness::{chat, chat_url, config, provider, start};
use moziplus::gateway::config::{Concurrency, FallbackConfig};
use moziplus::gateway::{BreakerState, FullPolicy, GatewayConfig};
use serde_json::{json, Value};
use support::{bearer, post_json};

async fn error_of(resp: reqwest::Response) -> (u16, Option<String>, Option<String>, Value) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let source = resp
        .headers()
        .get("x-moziplus-limit-source")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, source, resp.json().await.unwrap())
}

#[tokio::test]
async fn upstream_429_and_503_are_retried_honouring_retry_after() {
    let fake = FakeUpstream::start().await;
    let (url, gw, _) = start(config(vec![provider("nv", &fake.base_url, true)])).await;
    let t = Instant::now();
    assert_eq!(
        post_json(&chat_url(&url), &chat("nv/flaky429", "a"), &[])
            .await
            .status(),
        200
    );
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "waited the upstream's Retry-After: {:?}",
        t.elapsed()
    );
    assert_eq!(fake.state.hits_for("flaky429"), 2);
    assert_eq!(
        post_json(&chat_url(&url), &chat("nv/flaky503", "b"), &[])
            .await
            .status(),
        200
    );
    assert_eq!(fake.state.hits_for("flaky503"), 2);
    let lane = gw.lane("nv").unwrap().snapshot();
    assert_eq!(lane.counters.granted, 4, "every attempt took its own token");
    assert!(lane.bucket.samples >= 3);
}

#[tokio::test]
async fn persistent_upstream_429_is_reported_as_upstream_limit() {
    let fake = FakeUpstream::start().await;
    let mut cfg = config(vec![provider("nv", &fake.base_url, true)]);
    cfg.retry.max_retries = 1;
    let (url, gw, _) = start(cfg).await;
    let (status, retry_after, source, body) =
        error_of(post_json(&chat_url(&url), &chat("nv/status-429", "x"), &[]).await).await;
    assert_eq!(
        (status, retry_after.as_deref(), source.as_deref()),
        (429, Some("1"), Some("upstream"))
    );
    assert_eq!(body["error"]["limit_source"], "upstream");
    assert_eq!(body["error"]["code"], "upstream_rate_limited");
    assert_eq!(
        fake.state.hits_for("status-429"),
        2,
        "first attempt + one retry"
    );
    // A 400 from the upstream is the client's mistake: passed on, not retried.
    assert_eq!(
        post_json(&chat_url(&url), &chat("nv/status-400", "x"), &[])
            .await
            .status(),
        400
    );
    assert_eq!(fake.state.hits_for("status-400"), 1);
    // The status counts what happened (issue 26: errors read 0 while the
    // gateway retried): two requests, one retry, two errors, none ok.
    let counted = gw
        .status()
        .providers
        .into_iter()
        .find(|p| p.name == "nv")
        .expect("provider nv in the status")
        .requests;
    assert_eq!(
        (counted.total, counted.ok, counted.errors, counted.retries),
        (2, 0, 2, 1),
        "{counted:?}"
    );
}

fn breaker_config(primary: &str, backup: &str) -> GatewayConfig {
    let mut flaky = provider("flaky", primary, false);
    flaky.fallback = Some(FallbackConfig {
        provider: "backup".into(),
        model: None,
    });
    let mut cfg = config(vec![
        flaky,
        provider("backup", backup, false),
        provider("down", "http://127.0.0.1:9/v1", false),
    ]);
    cfg.breaker.open_seconds = 1.0;
    cfg.retry.max_retries = 0;
    cfg
}

#[tokio::test]
async fn breaker_opens_after_five_failures_serves_the_fallback_and_closes_after_one_probe() {
    let primary = FakeUpstream::start().await;
    let backup = FakeUpstream::start().await;
    *primary.state.force_status.lock().unwrap() = Some(500);
    let (url, gw, _) = start(breaker_config(&primary.base_url, &backup.base_url)).await;
    for i in 0..7 {
        let resp = post_json(
            &chat_url(&url),
            &chat("flaky/slow-0", &format!("b{i}")),
            &[],
        )
        .await;
        assert_eq!(resp.status(), 200, "call {i} answered by the fallback");
        assert_eq!(resp.headers()["x-moziplus-provider"], "backup");
    }
    assert_eq!(
        primary.state.hits(),
        5,
        "after 5 failures the primary is not called any more"
    );
    let flaky = |gw: &moziplus::gateway::Gateway| {
        gw.status()
            .providers
            .into_iter()
            .find(|p| p.name == "flaky")
            .unwrap()
    };
    assert_eq!(flaky(&gw).breaker.state, BreakerState::Open);

    // Recovered upstream; after the open period exactly one probe goes through.
    *primary.state.force_status.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let calls = (0..5).map(|i| {
        let url = url.clone();
        async move {
            post_json(
                &chat_url(&url),
                &chat("flaky/slow-300", &format!("p{i}")),
                &[],
            )
            .await
            .status()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        primary.state.hits_for("slow-300"),
        1,
        "exactly one half-open probe"
    );
    assert_eq!(flaky(&gw).breaker.state, BreakerState::Closed);
    assert_eq!(
        post_json(&chat_url(&url), &chat("flaky/slow-0", "after"), &[])
            .await
            .headers()["x-moziplus-provider"],
        "flaky"
    );
}

#[tokio::test]
async fn without_fallback_an_open_breaker_fails_fast_with_503() {
    let backup = FakeUpstream::start().await;
    let (url, _gw, _) = start(breaker_config(&backup.base_url, &backup.base_url)).await;
    for _ in 0..5 {
        let (status, ..) =
            error_of(post_json(&chat_url(&url), &chat("down/x", "d"), &[]).await).await;
        assert_eq!(status, 502, "connection refused is an upstream failure");
    }
    let t = Instant::now();
    let (status, retry_after, source, body) =
        error_of(post_json(&chat_url(&url), &chat("down/x", "d"), &[]).await).await;
    assert!(t.elapsed() < Duration::from_millis(200), "fails fast");
    assert_eq!((status, source.as_deref()), (503, Some("gateway")));
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "circuit_open");
}

fn tight_lane(fake: &FakeUpstream, policy: FullPolicy) -> GatewayConfig {
    let mut cfg = config(vec![
        provider("nv", &fake.base_url, true),
        provider("fake", &fake.base_url, false),
    ]);
    cfg.limiter.rate_per_minute = 60.0;
    cfg.limiter.capacity = 1.0;
    cfg.queue.concurrency = Concurrency::Fixed(1);
    cfg.queue.max_size = 2;
    cfg.queue.full_policy = policy;
    cfg
}

async fn wait_for_depth(gw: &moziplus::gateway::Gateway, depth: usize) {
    for _ in 0..200 {
        if gw.lane("nv").unwrap().queue_len() == depth {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("queue never reached depth {depth}");
}

#[tokio::test]
async fn full_queue_reject_answers_everyone() {
    let fake = FakeUpstream::start().await;
    let (url, gw, _) = start(tight_lane(&fake, FullPolicy::Reject)).await;
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                error_of(
                    post_json(&chat_url(&url), &chat("nv/slow-200", &format!("q{i}")), &[]).await,
                )
                .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in calls {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(20), c)
                .await
                .expect("answered")
                .unwrap(),
        );
    }
    let ok = outcomes.iter().filter(|o| o.0 == 200).count();
    let full: Vec<_> = outcomes.iter().filter(|o| o.0 == 503).collect();
    assert_eq!(ok + full.len(), 6, "{outcomes:?}");
    assert_eq!(
        ok, 3,
        "one in flight plus two queued are served: {outcomes:?}"
    );
    for (_, retry_after, source, body) in full {
        assert!(retry_after.is_some());
        assert_eq!(source.as_deref(), Some("gateway"));
        assert_eq!(body["error"]["code"], "queue_full");
    }
    assert_eq!(gw.lane("nv").unwrap().queue_len(), 0);
}

#[tokio::test]
async fn full_queue_drop_lowest_answers_the_dropped_request_at_once() {
    let fake = FakeUpstream::start().await;
    let (url, gw, _) = start(tight_lane(&fake, FullPolicy::DropLowest)).await;
    let first = tokio::spawn({
        let url = url.clone();
        async move {
            post_json(&chat_url(&url), &chat("nv/slow-300", "first"), &[])
                .await
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let spawn = |marker: &'static str, priority: &'static str| {
        let url = url.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let resp = post_json(
                &chat_url(&url),
                &chat("nv/slow-10", marker),
                &[("x-priority", priority)],
            )
            .await;
            (error_of(resp).await, t.elapsed())
        })
    };
    let low_a = spawn("low-a", "low");
    let normal = spawn("normal", "normal");
    wait_for_depth(&gw, 2).await;
    let urgent = spawn("urgent", "urgent");
    let ((status, _, source, body), waited) = low_a.await.unwrap();
    assert_eq!(
        (status, source.as_deref()),
        (503, Some("gateway")),
        "{body}"
    );
    assert_eq!(body["error"]["code"], "dropped");
    assert!(
        waited < Duration::from_secs(1),
        "answered at once, not after its timeout"
    );
    assert_eq!(urgent.await.unwrap().0 .0, 200);
    assert_eq!(normal.await.unwrap().0 .0, 200);
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn low_priority_degrades_to_the_fallback_model_or_gets_429() {
    let fake = FakeUpstream::start().await;
    let mut cfg = tight_lane(&fake, FullPolicy::Reject);
    cfg.limiter.rate_per_minute = 1.0;
    cfg.limiter.floor_per_minute = 1.0;
    cfg.queue.low_priority_timeout = 0.2;
    cfg.providers[0].degrade_chain = vec!["nv/big".into(), "nv/medium".into(), "fake/local".into()];
    let (url, _gw, _) = start(cfg).await;
    assert_eq!(
        post_json(
            &chat_url(&url),
            &chat("nv/echo", "takes the only token"),
            &[]
        )
        .await
        .status(),
        200
    );

    let resp = post_json(
        &chat_url(&url),
        &chat("nv/echo", "low"),
        &[("x-priority", "low"), ("x-fallback-model", "fake/small")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-moziplus-provider"], "fake");
    assert_eq!(resp.headers()["x-moziplus-upstream-model"], "small");

    // Degrade chain: big -> medium (still limited, no token) -> fake/local.
    let resp = post_json(
        &chat_url(&url),
        &chat("nv/big", "low2"),
        &[("x-priority", "4")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-moziplus-upstream-model"], "local");

    let (status, retry_after, source, body) = error_of(
        post_json(
            &chat_url(&url),
            &chat("nv/echo", "low3"),
            &[("x-priority", "low")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, source.as_deref()),
        (429, Some("gateway")),
        "{body}"
    );
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(body["error"]["code"], "gateway_rate_limited");
}

#[tokio::test]
async fn a_stalled_stream_is_cut_and_frees_its_slot() {
    let fake = FakeUpstream::start().await;
    let mut cfg = tight_lane(&fake, FullPolicy::Reject);
    cfg.limiter.capacity = 5.0;
    cfg.providers[0].timeouts.idle = 0.3;
    let (url, gw, _) = start(cfg).await;
    let mut body = chat("nv/stall", "st");
    body["stream"] = json!(true);
    let t = Instant::now();
    let resp = post_json(&chat_url(&url), &body, &[]).await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("st#0"), "{text}");
    assert!(
        text.contains("stalled"),
        "the client is told why the stream ended: {text}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(gw.lane("nv").unwrap().snapshot().in_flight, 0);
    // The slot is free again: the next limited call goes straight through.
    assert_eq!(
        post_json(&chat_url(&url), &chat("nv/echo", "next"), &[])
            .await
            .status(),
        200
    );

    let mut body = chat("nv/reset", "rs");
    body["stream"] = json!(true);
    let text = String::from_utf8(
        post_json(&chat_url(&url), &body, &[])
            .await
            .bytes()
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("rs#0") && text.contains("stream_interrupted"),
        "{text}"
    );
    assert_eq!(
        fake.state.hits_for("reset"),
        1,
        "a stream that sent bytes is never retried"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let fake = FakeUpstream::start().await;
    let (url, gw, _) = start(config(vec![provider("nv", &fake.base_url, true)])).await;
    let mut body = chat("nv/slowstream", "dc");
    body["stream"] = json!(true);
    let resp = post_json(&chat_url(&url), &body, &[]).await;
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("dc#0"));
    drop(stream);
    for _ in 0..100 {
        if fake.state.streams_cancelled.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.state.streams_cancelled.load(Ordering::SeqCst),
        1,
        "upstream saw the cancel"
    );
    assert_eq!(fake.state.streams_completed.load(Ordering::SeqCst), 0);
    assert_eq!(
        gw.lane("nv").unwrap().snapshot().in_flight,
        0,
        "slot released"
    );
}

#[tokio::test]
async fn admin_config_needs_the_token_and_refuses_to_shrink_below_depth() {
    let fake = FakeUpstream::start().await;
    let mut cfg = tight_lane(&fake, FullPolicy::Reject);
    cfg.queue.max_size = 10;
    cfg.admin_token = Some(moziplus::gateway::Secret::new("admin-secret-token-42"));
    let (url, gw, _) = start(cfg).await;
    let client = reqwest::Client::new();
    let endpoint = format!("{url}/api/gateway/config");
    assert_eq!(client.get(&endpoint).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .get(&endpoint)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let settings: Value = client
        .get(&endpoint)
        .bearer_auth("admin-secret-token-42")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["queue_max_size"], 10);

    let change = |body: Value| {
        let endpoint = endpoint.clone();
        async move {
            let auth = bearer("admin-secret-token-42");
            post_json(&endpoint, &body, &[("authorization", &auth)]).await
        }
    };
    let resp = change(json!({"rate_per_minute": 30, "full_policy": "drop_lowest"})).await;
    assert_eq!(resp.status(), 200);
    let lane = gw.lane("nv").unwrap().snapshot();
    assert_eq!(
        (lane.bucket.base_rate_per_minute, lane.full_policy),
        (30.0, FullPolicy::DropLowest)
    );
    assert_eq!(
        change(json!({"rate": 3})).await.status(),
        400,
        "unknown field"
    );
    assert_eq!(change(json!({"capacity": -1})).await.status(), 400);

    // Fill the queue: one in flight, three waiting.
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                post_json(&chat_url(&url), &chat("nv/slow-300", &format!("a{i}")), &[])
                    .await
                    .status()
            })
        })
        .collect();
    wait_for_depth(&gw, 3).await;
    let resp = change(json!({"queue_max_size": 2})).await;
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("holds 3 waiting requests"),
        "{body}"
    );
    assert_eq!(
        gw.status().settings.queue_max_size,
        10,
        "refused change changes nothing"
    );
    assert_eq!(
        change(json!({"queue_max_size": 3, "rate_per_minute": 600}))
            .await
            .status(),
        200
    );
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn upstream_with_its_own_limit_sees_the_gateway_back_off() {
    // Real clock, small numbers: the fake allows 5 per minute, the gateway
    // is configured for 8. The sixth call gets the upstream's 429 with a long
    // Retry-After, which pauses the bucket instead of hammering on.
    let fake = FakeUpstream::start().await;
    *fake.state.limit_per_minute.lock().unwrap() = Some(5);
    let mut cfg = config(vec![provider("nv", &fake.base_url, true)]);
    cfg.limiter.rate_per_minute = 8.0;
    cfg.limiter.capacity = 8.0;
    cfg.limiter.floor_per_minute = 1.0;
    cfg.queue.request_timeout = 2.0;
    let (url, gw, _) = start(cfg).await;
    let mut statuses = Vec::new();
    for i in 0..7 {
        statuses.push(
            error_of(post_json(&chat_url(&url), &chat("nv/echo", &format!("l{i}")), &[]).await)
                .await,
        );
    }
    let codes: Vec<u16> = statuses.iter().map(|s| s.0).collect();
    assert_eq!(&codes[..5], &[200; 5]);
    assert_eq!(codes[5], 429, "{statuses:?}");
    assert_eq!(statuses[5].2.as_deref(), Some("upstream"));
    assert_eq!(codes[6], 429);
    assert_eq!(
        statuses[6].2.as_deref(),
        Some("gateway"),
        "paused bucket: the gateway answers itself"
    );
    assert_eq!(
        fake.state.hits(),
        6,
        "no further upstream calls during the pause"
    );
    assert!(gw.lane("nv").unwrap().snapshot().bucket.paused_for_seconds > 50.0);
}

#[tokio::test]
async fn client_disconnect_cancels_a_pending_non_streaming_call() {
    let fake = FakeUpstream::start().await;
    let (url, gw, _) = start(config(vec![provider("nv", &fake.base_url, true)])).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    // Not the shared post_json: this client must give up after 200 ms, and
    // post_json waits for an answer (and panics without one).
    let result = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat("nv/slow-3000", "gone"))
        .send()
        .await;
    assert!(result.is_err(), "the client gave up");
    let t = Instant::now();
    while fake.state.in_flight.load(Ordering::SeqCst) > 0 && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.state.in_flight.load(Ordering::SeqCst),
        0,
        "upstream request cancelled well before its 3 s"
    );
    assert_eq!(
        gw.lane("nv").unwrap().snapshot().in_flight,
        0,
        "slot released"
    );
}

/// A provider that keeps its connections alive after the first answer, then
/// drops each connection on the next request without answering (what a
/// server that closed an idle pooled connection looks like to the gateway).
/// Counts the connections it accepted.
async fn drops_pooled_connections() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                // First request on this connection: a keep-alive answer.
                if sock.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let body = r#"{"object":"list","data":[{"id":"kept","object":"model"}]}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(format!("{head}{body}").as_bytes()).await;
                // The next request on it: read, then close without a word.
                let _ = sock.read(&mut buf).await;
            });
        }
    });
    (format!("http://{addr}/v1"), accepted)
}

#[tokio::test]
async fn a_models_listing_keeps_every_provider_when_one_drops_its_pooled_connection() {
    let fake = FakeUpstream::start().await;
    let (dropping_url, accepted) = drops_pooled_connections().await;
    let closed = format!("http://127.0.0.1:{}/v1", support::free_port());
    let (url, _gw, _) = start(config(vec![
        provider("fake", &fake.base_url, false),
        provider("dropper", &dropping_url, false),
        provider("down", &closed, false),
    ]))
    .await;
    let client = reqwest::Client::new();
    let list = || async {
        let v: Value = client
            .get(format!("{url}/v1/models"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v
    };
    let first = list().await;
    // The second listing goes out on the dropper's pooled connection, which
    // it closes: the gateway asks again on a fresh one.
    let second = list().await;
    for listing in [&first, &second] {
        let ids: Vec<&str> = listing["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"fake/m1"), "{listing}");
        assert!(ids.contains(&"dropper/kept"), "{listing}");
        // A provider that cannot answer is listed with its error, not dropped.
        let down = listing["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["owned_by"] == "down")
            .unwrap_or_else(|| panic!("the failing provider is listed: {listing}"));
        assert_eq!(down["id"], "down/*");
        assert!(
            down["error"]
                .as_str()
                .unwrap()
                .contains("model list unavailable"),
            "{down}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the second listing needed a fresh connection"
    );
    // Anthropic's shape lists it too.
    let anthropic: Value = client
        .get(format!("{url}/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        anthropic["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "down/*" && m["error"].is_string()),
        "{anthropic}"
    );
}

/// `GET /api/gateway/status` of a gateway served at `url`, as JSON.
async fn status_json(url: &str) -> Value {
    reqwest::get(format!("{url}/api/gateway/status"))
        .await
        .expect("status answers")
        .json()
        .await
        .expect("status is JSON")
}

/// Issue 26, item 3: the limiter's retreat showed "429 ratio —". The 429
/// share covered only the last 60 s of answers, and a retreat outlasts a
/// minute (the rate climbs back in steps of 20–60 s, and a `Retry-After`
/// pause sends nothing at all), so while the rate was still below its start
/// the 429s that cut it had dropped out and the share read "no answers".
/// The fake upstream stands in for NVIDIA answering 429 (with
/// `Retry-After: 1`); the gateway is real, over loopback. The minute is
/// passed on tokio's paused clock, with no call in flight.
#[tokio::test]
async fn a_retreats_429_share_stays_shown_while_the_rate_is_below_its_start() {
    let fake = FakeUpstream::start().await;
    let mut cfg = config(vec![provider("nv", &fake.base_url, true)]);
    cfg.limiter.rate_per_minute = 40.0;
    cfg.limiter.capacity = 10.0;
    cfg.retry.max_retries = 1;
    let (url, _gw, _) = start(cfg).await;
    for i in 0..3 {
        let resp = post_json(&chat_url(&url), &chat("nv/echo", &format!("ok{i}")), &[]).await;
        assert_eq!(resp.status(), 200);
    }
    // NVIDIA answers 429 twice: the first attempt and its retry.
    let (status, _, source, _) =
        error_of(post_json(&chat_url(&url), &chat("nv/status-429", "busy"), &[]).await).await;
    assert_eq!((status, source.as_deref()), (429, Some("upstream")));
    assert_eq!(fake.state.hits_for("status-429"), 2);

    let nv = |s: &Value| -> Value {
        s["providers"]
            .as_array()
            .expect("providers")
            .iter()
            .find(|p| p["name"] == "nv")
            .expect("provider nv in the status")
            .clone()
    };
    let during = nv(&status_json(&url).await);
    let bucket = &during["lane"]["bucket"];
    let rate = bucket["effective_rate_per_minute"].as_f64().unwrap();
    assert!(rate < 40.0, "the 429 cut the rate: {bucket}");
    assert_eq!(bucket["retreat_state"], "retreat", "{bucket}");
    // Five answers, two of them 429: in the last minute and in the retreat
    // (the minute before its first cut, then every answer since).
    assert_eq!(
        bucket["ratio_429_last_minute"].as_f64(),
        Some(0.4),
        "{bucket}"
    );
    let tally = &bucket["retreat_429"];
    assert_eq!(
        (
            tally["answers"].as_u64(),
            tally["answers_429"].as_u64(),
            tally["ratio_429"].as_f64()
        ),
        (Some(5), Some(2), Some(0.4)),
        "{bucket}"
    );
    assert!(tally["ended_seconds_ago"].is_null(), "{tally}");
    // The counters tell the same: four requests, three ok, one error after
    // one retry.
    let counted = &during["requests"];
    assert_eq!(
        (
            counted["total"].as_u64(),
            counted["ok"].as_u64(),
            counted["errors"].as_u64(),
            counted["retries"].as_u64()
        ),
        (Some(4), Some(3), Some(1), Some(1)),
        "{counted}"
    );

    // A minute and a second later, nothing sent meanwhile: the rate is still
    // below its start, the last minute holds no answer, and the retreat's
    // share still says why.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    tokio::time::resume();
    let after = nv(&status_json(&url).await);
    let bucket = &after["lane"]["bucket"];
    let rate = bucket["effective_rate_per_minute"].as_f64().unwrap();
    assert!(rate < 40.0, "still retreated a minute later: {bucket}");
    assert_ne!(bucket["retreat_state"], "normal", "{bucket}");
    assert!(
        bucket["ratio_429_last_minute"].is_null(),
        "no answer in the last minute: {bucket}"
    );
    let tally = &bucket["retreat_429"];
    assert_eq!(
        (
            tally["answers"].as_u64(),
            tally["answers_429"].as_u64(),
            tally["ratio_429"].as_f64()
        ),
        (Some(5), Some(2), Some(0.4)),
        "the retreat's 429s are still shown: {bucket}"
    );
    assert!(
        tally["began_seconds_ago"].as_f64().unwrap() >= 61.0,
        "{tally}"
    );
    assert!(tally["ended_seconds_ago"].is_null(), "{tally}");
    assert_eq!(
        after["requests"], during["requests"],
        "nothing counted meanwhile"
    );
}
