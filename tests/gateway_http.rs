//! End-to-end gateway behaviour over real loopback HTTP: the gateway's own
//! router served on 127.0.0.1, a fake upstream (standing in for NVIDIA and
//! the other providers) on another port, and reqwest as the agent.

#[path = "support/fake_upstream.rs"]
mod fake_upstream;
#[path = "support/gateway_harness.rs"]
mod harness;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use moziplus::gateway::config::Concurrency;

use fake_upstream::FakeUpstream;
use futures_util::StreamExt;
use harness::{chat, chat_url, config, provider, start, KEY_VALUE, RUN_KEY};
use serde_json::{json, Value};
use support::{bearer, post_json};

#[tokio::test]
async fn unlimited_provider_passes_through_unqueued_with_prefix_stripped() {
    let fake = FakeUpstream::start().await;
    let cfg = config(vec![
        provider("fake", &fake.base_url, false),
        provider("nv", &fake.base_url, true),
    ]);
    let (url, gw, hooks) = start(cfg).await;
    let resp = post_json(
        &format!("{url}/v1/chat/completions"),
        &chat("fake/org/echo-model", "hello"),
        &[("authorization", &bearer(RUN_KEY))],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-moziplus-provider"], "fake");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "echo:hello");
    let seen = fake.state.last();
    assert_eq!(
        seen.body["model"], "org/echo-model",
        "provider prefix stripped"
    );
    assert_eq!(
        seen.authorization.as_deref(),
        Some(format!("Bearer {KEY_VALUE}").as_str()),
        "provider key, not the run key"
    );

    let status = gw.status();
    let fake_status = status.providers.iter().find(|p| p.name == "fake").unwrap();
    assert!(
        fake_status.lane.is_none(),
        "unlimited providers have no queue or bucket"
    );
    let nv = status.providers.iter().find(|p| p.name == "nv").unwrap();
    assert_eq!(
        nv.lane.as_ref().unwrap().counters.granted,
        0,
        "the limited lane was not touched"
    );
    assert_eq!(
        nv.lane.as_ref().unwrap().bucket.tokens,
        1.0,
        "its one token (the default: no burst) untouched"
    );
    // Usage booked for the run and reported to the daemon hook.
    assert_eq!(status.usage.by_session["S-1"].total_tokens, 15);
    assert_eq!(status.usage.by_task["demo/T-0042"].prompt_tokens, 10);
    assert_eq!(hooks.usage.lock().unwrap().len(), 1);
    // Keys are masked everywhere the gateway shows them.
    let text = serde_json::to_string(&status).unwrap();
    assert!(!text.contains(KEY_VALUE), "raw key leaked into status");
    assert_eq!(fake_status.api_key.as_deref(), Some("****"));
}

#[tokio::test]
async fn several_limited_requests_are_in_flight_at_once() {
    let fake = FakeUpstream::start().await;
    let mut cfg = config(vec![provider("nv", &fake.base_url, true)]);
    cfg.queue.concurrency = Concurrency::Fixed(3);
    // A burst of 6 allowed, so the in-flight limit is what holds them back.
    cfg.limiter.capacity = 6.0;
    let (url, _gw, _) = start(cfg).await;
    let calls = (0..6).map(|i| {
        let url = url.clone();
        async move {
            post_json(&chat_url(&url), &chat("nv/slow-300", &format!("c{i}")), &[])
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        fake.state.max_in_flight.load(Ordering::SeqCst),
        3,
        "exactly the concurrency limit, never one serial worker"
    );
}

#[tokio::test]
async fn client_mistakes_get_clear_4xx_errors() {
    let fake = FakeUpstream::start().await;
    let mut cfg = config(vec![provider("fake", &fake.base_url, false)]);
    cfg.max_body_bytes = 4096;
    let (url, _gw, _) = start(cfg).await;
    let client = reqwest::Client::new();
    let endpoint = format!("{url}/v1/chat/completions");
    // Built by hand, not with the shared post_json: most cases send bodies
    // that are not JSON (or not an object, or too large), and all of them go
    // through the one table below.
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client.post(&endpoint).body("{not json"),
            400,
            "not valid JSON",
        ),
        (client.post(&endpoint).body("[1,2]"), 400, "JSON object"),
        (client.post(&endpoint).body(""), 400, "empty"),
        (
            client.post(&endpoint).json(&json!({"messages": []})),
            400,
            "`model` is required",
        ),
        (
            client
                .post(&endpoint)
                .json(&json!({"model": 3, "messages": []})),
            400,
            "must be a string",
        ),
        (
            client.post(&endpoint).json(&json!({"model": "fake/x"})),
            400,
            "`messages`",
        ),
        (
            client.post(&endpoint).json(&chat("openai/gpt-4o", "x")),
            400,
            "known providers: fake",
        ),
        (
            client.post(&endpoint).json(&chat("fake", "x")),
            400,
            "no model",
        ),
        (
            client
                .post(&endpoint)
                .header("x-priority", "asap")
                .json(&chat("fake/x", "x")),
            400,
            "X-Priority",
        ),
        (
            client
                .post(&endpoint)
                .header("x-fallback-model", "nowhere/x")
                .json(&chat("fake/x", "x")),
            400,
            "X-Fallback-Model",
        ),
        (
            client.post(&endpoint).body(vec![b' '; 10_000]),
            413,
            "4096 bytes",
        ),
        (
            client.post(format!("{url}/v1/assistants")).json(&json!({})),
            404,
            "unknown endpoint",
        ),
        (
            client
                .post(format!("{url}/v1/embeddings"))
                .json(&json!({"model": "fake/e", "input": "x", "stream": true})),
            400,
            "cannot be streamed",
        ),
    ];
    for (i, (req, status, needle)) in cases.into_iter().enumerate() {
        let resp = req
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let body: Value = resp.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "case {i}: {message}");
        assert!(body["error"]["type"].is_string(), "case {i}: {body}");
    }
    assert_eq!(fake.state.hits(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn unknown_key_is_anonymous_unless_session_keys_are_required() {
    let fake = FakeUpstream::start().await;
    let mut cfg = config(vec![provider("fake", &fake.base_url, false)]);
    cfg.require_session_key = true;
    let (url, _gw, _) = start(cfg).await;
    let resp = post_json(
        &format!("{url}/v1/chat/completions"),
        &chat("fake/x", "x"),
        &[("authorization", &bearer("stolen"))],
    )
    .await;
    assert_eq!(resp.status(), 401);
    let resp = post_json(
        &format!("{url}/v1/chat/completions"),
        &chat("fake/x", "x"),
        &[("authorization", &bearer(RUN_KEY))],
    )
    .await;
    assert_eq!(resp.status(), 200);

    let (url, gw, _) = start(config(vec![provider("fake", &fake.base_url, false)])).await;
    let resp = post_json(
        &format!("{url}/v1/chat/completions"),
        &chat("fake/x", "x"),
        &[("authorization", &bearer("unknown"))],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(gw.status().usage.anonymous.total_tokens, 15);
}

async fn read_stream(resp: reqwest::Response) -> String {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    text
}

#[tokio::test]
async fn streams_pass_through_and_their_usage_is_booked() {
    let fake = FakeUpstream::start().await;
    let (url, gw, hooks) = start(config(vec![provider("nv", &fake.base_url, true)])).await;
    let mut body = chat("nv/echo", "s1");
    body["stream"] = json!(true);
    let resp = post_json(
        &format!("{url}/v1/chat/completions"),
        &body,
        &[("authorization", &bearer(RUN_KEY))],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = read_stream(resp).await;
    assert_eq!(text.matches("s1#").count(), 5, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("\"usage\""),
        "usage chunk the client did not ask for is removed: {text}"
    );
    assert_eq!(
        fake.state.last().body["stream_options"]["include_usage"],
        true,
        "gateway asked upstream for usage"
    );
    let usage = hooks.usage.lock().unwrap().clone();
    assert_eq!(usage.len(), 1);
    assert_eq!(
        (
            usage[0].1.prompt_tokens,
            usage[0].1.completion_tokens,
            usage[0].1.total_tokens
        ),
        (7, 5, 12)
    );
    assert_eq!(usage[0].1.provider, "nv");

    // A client that asks for usage gets the chunk.
    body["stream_options"] = json!({"include_usage": true});
    let resp = post_json(&format!("{url}/v1/chat/completions"), &body, &[]).await;
    let text = read_stream(resp).await;
    assert!(text.contains("\"usage\""), "{text}");
    assert_eq!(gw.status().usage.anonymous.completion_tokens, 5);
    let lane = gw.lane("nv").unwrap().snapshot();
    assert_eq!(lane.in_flight, 0, "slots are released when streams end");
}

#[tokio::test]
async fn tool_calls_are_cleaned_and_high_risk_ones_need_approval() {
    let fake = FakeUpstream::start().await;
    let mut p = provider("nv", &fake.base_url, false);
    p.validate_tool_calls = true;
    let (url, _gw, hooks) = start(config(vec![p])).await;
    let tools = json!([{"type": "function", "function": {"name": "scale_deployment",
        "parameters": {"type": "object", "required": ["name", "replicas"]}}}]);
    let mut body = chat("nv/tool-scale_deployment", "scale it");
    body["tools"] = tools.clone();
    let resp = post_json(
        &format!("{url}/v1/chat/completions"),
        &body,
        &[("authorization", &bearer(RUN_KEY))],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-moziplus-requires-approval"], "D-1");
    let v: Value = resp.json().await.unwrap();
    // The call is not delivered: the agent reads why instead.
    assert!(
        v["choices"][0]["message"].get("tool_calls").is_none(),
        "{v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("moziplus bb decision wait D-1"));
    assert_eq!(v["requires_approval"][0]["decision_id"], "D-1");
    assert_eq!(
        v["requires_approval"][0]["wait_command"],
        "moziplus bb decision wait D-1"
    );
    let approvals = hooks.approvals.lock().unwrap().clone();
    assert_eq!(approvals[0].tool_name, "scale_deployment");
    assert_eq!(approvals[0].attribution.as_ref().unwrap().session_id, "S-1");
    assert_eq!(approvals[0].expires_in, Duration::from_secs(300));
    assert_eq!(
        serde_json::from_str::<Value>(&approvals[0].arguments_json).unwrap(),
        json!({"name": "api", "replicas": 3}),
        "the decision shows the cleaned arguments (fences stripped)"
    );

    // Broken arguments are retried; the second answer is valid.
    let mut body = chat("nv/toolflaky", "again");
    body["tools"] = tools;
    let resp = post_json(&chat_url(&url), &body, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(fake.state.hits_for("toolflaky"), 2);
}

#[tokio::test]
async fn completions_embeddings_and_models() {
    let fake = FakeUpstream::start().await;
    let mut listed = provider("static", &fake.base_url, false);
    listed.models = vec!["fixed-model".into()];
    let (url, gw, _) = start(config(vec![
        provider("fake", &fake.base_url, false),
        listed,
    ]))
    .await;
    let client = reqwest::Client::new();
    let resp = post_json(
        &format!("{url}/v1/embeddings"),
        &json!({"model": "fake/embed", "input": "hello"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(fake.state.last().body["model"], "embed");
    let resp = post_json(
        &format!("{url}/v1/completions"),
        &json!({"model": "fake/text", "prompt": "p"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let models: Value = client
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["fake/m1", "fake/org/m2", "static/fixed-model"]);
    assert_eq!(gw.status().usage.by_provider["fake"].prompt_tokens, 13);
    let status: Value = client
        .get(format!("{url}/api/gateway/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["providers"][0]["requests"]["ok"], 2);
}

#[tokio::test]
async fn metrics_use_bounded_labels() {
    let handle = moziplus::gateway::install_prometheus_recorder()
        .expect("first recorder in this test binary");
    let fake = FakeUpstream::start().await;
    let (url, _gw, _) = start(config(vec![provider("metered", &fake.base_url, true)])).await;
    assert_eq!(
        post_json(&chat_url(&url), &chat("metered/some-model-v1.2", "m"), &[])
            .await
            .status(),
        200
    );
    // Gauges are published by the lane dispatcher within its idle tick.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let text = handle.render();
    for needle in [
        "moziplus_gateway_requests_total{provider=\"metered\",priority=\"normal\",status=\"2xx\"} 1",
        "moziplus_gateway_rate_base_per_minute{provider=\"metered\"} 40",
        "moziplus_gateway_queue_depth{provider=\"metered\",priority=\"urgent\"} 0",
        "moziplus_gateway_upstream_latency_seconds_bucket{provider=\"metered\"",
        "moziplus_gateway_breaker_state{provider=\"metered\"} 0",
        "moziplus_gateway_tokens_available{provider=\"metered\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(
        !text.contains("some-model"),
        "model ids never become labels"
    );
}

#[tokio::test]
async fn the_gateway_on_its_own_router_bounds_items_and_translates_large_bodies() {
    // Issue 23, finding 1: the item bound lived only in the daemon's guard,
    // so the gateway mounted on its own router (as here) had none.
    let fake = FakeUpstream::start().await;
    let mut cfg = config(vec![provider("fake", &fake.base_url, false)]);
    cfg.max_body_items = 1_000;
    let (url, _gw, _hooks) = start(cfg).await;
    let auth = bearer(RUN_KEY);
    let tiny: Vec<u8> = vec![0; 5_000];
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "fake/m", "messages": [{"role": "user", "content": "hi"}], "stop": tiny}),
        ),
        (
            "/v1/messages",
            json!({"model": "fake/m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "metadata": {"x": tiny}}),
        ),
    ] {
        let resp = post_json(&format!("{url}{path}"), &body, &[("authorization", &auth)]).await;
        assert_eq!(resp.status(), 413, "{path}");
        let err: Value = resp.json().await.unwrap();
        let text = err.to_string();
        // 5,000 tiny items plus the few of the rest of the body.
        let counted: u64 = text
            .split("has ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!((5_000..5_010).contains(&counted), "{path}: {text}");
        assert!(
            text.contains("more than the gateway's max_body_items (1000)"),
            "{path}: {text}"
        );
        if path == "/v1/messages" {
            assert_eq!(err["type"], "error", "Anthropic's shape: {text}");
        } else {
            assert!(
                err["error"]["message"].is_string(),
                "OpenAI's shape: {text}"
            );
        }
    }
    assert_eq!(fake.state.hits(), 0, "nothing refused reached the provider");

    // Issue 23, finding 2: a large Responses body (past the 256 KiB off-thread
    // mark) is translated on the CPU pool and still arrives whole.
    let big = "lorem ipsum ".repeat(40_000);
    let resp = post_json(
        &format!("{url}/v1/responses"),
        &json!({"model": "fake/m", "input": big, "instructions": "be brief"}),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = fake.state.last();
    let messages = seen.body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(
        messages[1]["content"].as_str().map(str::len),
        Some(big.len())
    );
}
