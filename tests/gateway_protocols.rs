//! OpenAI Responses and Anthropic Messages through the gateway, driven by
//! the official `openai` and `anthropic` Python SDKs (installed by
//! scripts/test.sh into .tools/sdk-venv, found through MOZI_TEST_PYTHON).
//!
//! The upstream is a fake (tests/support/fake_upstream.rs) standing in for
//! NVIDIA's free tier and the other chat-only providers we cannot reach: it
//! speaks ONLY chat completions and answers 404 to everything else, so
//! every Responses/Messages call here must be translated by the gateway.
//! The gateway is served on loopback exactly as `moziplus serve` mounts it;
//! the last test runs a real `moziplus serve` whose agent run drives both
//! SDKs with its own run key.

#[path = "support/fake_upstream.rs"]
mod fake_upstream;
#[path = "support/gateway_harness.rs"]
mod harness;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use fake_upstream::FakeUpstream;
use futures_util::StreamExt;
use harness::{config, provider, start, RUN_KEY};
use moziplus::gateway::config::Concurrency;
use moziplus::gateway::{GatewayConfig, ModelMap};
use serde_json::{json, Value};
use support::post_json;

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/drive.py");

/// The venv's python with both SDKs (`support::test_tool`).
fn python() -> Option<String> {
    support::test_tool("MOZI_TEST_PYTHON").map(|p| p.display().to_string())
}

/// Run SDK scenarios (comma-separated) against `url`; returns their results.
async fn drive(py: &str, scenarios: &str, url: &str, model: &str, cases: Option<Value>) -> Value {
    let mut cmd = tokio::process::Command::new(py);
    cmd.arg(DRIVER)
        .arg(scenarios)
        .env("MOZI_GW_URL", url)
        .env("MOZI_GW_KEY", RUN_KEY)
        .env("MOZI_GW_MODEL", model);
    if let Some(c) = cases {
        cmd.env("MOZI_GW_CASES", c.to_string());
    }
    let out = cmd.output().await.expect("run the SDK driver");
    assert!(
        out.status.success(),
        "drive.py {scenarios} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("driver output is not JSON ({e}): {stdout}"))
}

/// Client model names go to the fake's `echo` model; tool calls are validated.
fn sdk_config(fake: &FakeUpstream) -> GatewayConfig {
    let mut p = provider("fake", &fake.base_url, false);
    p.validate_tool_calls = true;
    let mut cfg = config(vec![p]);
    cfg.model_map = ModelMap(vec![
        ("claude-*".into(), "fake/echo".into()),
        ("gpt-*".into(), "fake/echo".into()),
    ]);
    cfg
}

fn seen_bodies(fake: &FakeUpstream) -> Vec<Value> {
    fake.state
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_responses_plain_streamed_and_function_tool_round_trip() {
    let Some(py) = python() else { return };
    let fake = FakeUpstream::start().await;
    let (url, gw, hooks) = start(sdk_config(&fake)).await;
    let r = drive(
        &py,
        "openai_basic,openai_stream,openai_tools",
        &url,
        "gpt-5-codex",
        None,
    )
    .await;
    // Nothing reached the fake but chat completions.
    assert!(
        fake.state.not_found.lock().unwrap().is_empty(),
        "{:?}",
        fake.state.not_found.lock().unwrap()
    );
    let bodies = seen_bodies(&fake);

    // Plain: instructions became the system message; the client's model was mapped.
    let basic = &r["openai_basic"];
    assert_eq!(basic["text"], "echo:Be brief.");
    assert_eq!(basic["status"], "completed");
    assert_eq!(basic["usage"]["input_tokens"], 10);
    assert_eq!(basic["usage"]["output_tokens"], 5);
    assert_eq!(basic["usage"]["total_tokens"], 15);
    assert_eq!(
        bodies[0]["model"], "echo",
        "gpt-5-codex mapped by gateway.model_map"
    );
    assert_eq!(
        bodies[0]["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        bodies[0]["messages"][1],
        json!({"role": "user", "content": "hello-resp"})
    );

    // Streamed: the full event sequence, numbered, with usage at the end.
    let stream = &r["openai_stream"];
    let types: Vec<&str> = stream["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        types[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        types[types.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "response.output_text.delta")
            .count(),
        5
    );
    let seqs: Vec<u64> = stream["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let expected: String = (0..5).map(|i| format!("hello-stream#{i} ")).collect();
    assert_eq!(stream["text"], expected.as_str());
    assert_eq!(stream["final_text"], expected.as_str());
    assert_eq!(stream["usage"]["input_tokens"], 7);
    assert_eq!(stream["usage"]["output_tokens"], 5);
    assert_eq!(bodies[1]["stream"], true);
    assert_eq!(bodies[1]["stream_options"]["include_usage"], true);

    // Tools: the call parsed (fences stripped), its output went back as role tool,
    // web_search was dropped, not refused.
    let tools = &r["openai_tools"];
    assert_eq!(tools["call"]["name"], "exec_command");
    assert_eq!(tools["call"]["call_id"], "call_1");
    let args: Value = serde_json::from_str(tools["call"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"name": "api", "replicas": 3}));
    assert_eq!(
        bodies[2]["tools"].as_array().unwrap().len(),
        1,
        "web_search dropped"
    );
    assert_eq!(bodies[2]["tools"][0]["function"]["name"], "exec_command");
    let round_trip = &bodies[3]["messages"];
    assert_eq!(round_trip[1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        round_trip[2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "scaled to 3"})
    );
    assert_eq!(tools["text2"], "echo:scale it");
    let streamed = tools["streamed_items"].as_array().unwrap();
    let call = streamed
        .iter()
        .find(|i| i["type"] == "function_call")
        .expect("a streamed function_call item");
    assert_eq!(call["name"], "exec_command");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["replicas"], 3);

    // Usage of every call went to the run whose key was the Bearer token.
    let usage = hooks.usage.lock().unwrap();
    assert_eq!(usage.len(), 5, "one booking per call");
    assert!(usage.iter().all(|(a, _)| a.session_id == "S-1"));
    assert_eq!(
        gw.status().usage.by_session["S-1"].prompt_tokens,
        10 + 7 + 10 + 10 + 7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_messages_create_stream_tools_count_tokens_and_models() {
    let Some(py) = python() else { return };
    let fake = FakeUpstream::start().await;
    let (url, gw, hooks) = start(sdk_config(&fake)).await;
    let r = drive(
        &py,
        "anthropic_basic,anthropic_bearer,anthropic_stream,anthropic_count,models",
        &url,
        "claude-sonnet-4-5",
        None,
    )
    .await;
    let t = drive(&py, "anthropic_tools", &url, "fake/echo", None).await;
    assert!(fake.state.not_found.lock().unwrap().is_empty());
    let bodies = seen_bodies(&fake);

    let basic = &r["anthropic_basic"];
    assert_eq!(basic["text"], "echo:Be brief.");
    assert_eq!(basic["stop_reason"], "end_turn");
    assert_eq!(
        basic["model"], "claude-sonnet-4-5",
        "the client's model is echoed"
    );
    assert_eq!(basic["usage"]["input_tokens"], 10);
    assert_eq!(basic["usage"]["output_tokens"], 5);
    assert_eq!(bodies[0]["model"], "echo");
    assert_eq!(bodies[0]["max_tokens"], 100);
    assert_eq!(
        bodies[0]["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(r["anthropic_bearer"]["text"], "echo:hello-bearer");

    let stream = &r["anthropic_stream"];
    let expected: String = (0..5).map(|i| format!("hello-astream#{i} ")).collect();
    assert_eq!(stream["text"], expected.as_str());
    assert_eq!(stream["stop_reason"], "end_turn");
    assert_eq!(stream["usage"]["input_tokens"], 7);
    assert_eq!(stream["usage"]["output_tokens"], 5);

    let count = r["anthropic_count"]["input_tokens"].as_u64().unwrap();
    assert!((12..60).contains(&count), "a plausible estimate: {count}");
    let openai_ids = r["models"]["openai"].as_array().unwrap();
    assert!(openai_ids.contains(&json!("fake/m1")), "{openai_ids:?}");
    assert_eq!(r["models"]["anthropic"], r["models"]["openai"]);

    let tools = &t["anthropic_tools"];
    assert_eq!(tools["stop_reason"], "tool_use");
    assert_eq!(tools["tool_use"]["name"], "exec_command");
    assert_eq!(
        tools["tool_use"]["input"],
        json!({"name": "api", "replicas": 3})
    );
    let first_tools = bodies[3]["tools"].as_array().unwrap();
    assert_eq!(
        first_tools.len(),
        1,
        "the server tool web_search was dropped"
    );
    assert_eq!(
        first_tools[0]["function"]["parameters"]["required"],
        json!(["name", "replicas"])
    );
    let round_trip = &bodies[4]["messages"];
    assert_eq!(round_trip[1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        round_trip[2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "scaled to 3"})
    );
    assert_eq!(tools["text2"], "echo:scale it");
    assert_eq!(tools["stop_reason2"], "end_turn");
    assert_eq!(tools["streamed_stop"], "tool_use");
    let streamed = tools["streamed"].as_array().unwrap();
    assert_eq!(streamed[0]["type"], "tool_use");
    assert_eq!(streamed[0]["input"]["replicas"], 3);

    // Booked to the run whose key came as x-api-key (and once as Bearer).
    let usage = hooks.usage.lock().unwrap();
    assert_eq!(usage.len(), 6, "create, bearer, stream, tools x3");
    assert!(usage.iter().all(|(a, _)| a.session_id == "S-1"));
    assert_eq!(gw.status().usage.by_session["S-1"].completion_tokens, 6 * 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_arrive_in_each_apis_shape_and_each_sdk_raises_its_typed_exception() {
    let Some(py) = python() else { return };
    let fake = FakeUpstream::start().await;
    let closed = format!("http://127.0.0.1:{}/v1", support::free_port());
    let mut cfg = config(vec![
        provider("fake", &fake.base_url, false),
        provider("lim", &fake.base_url, true),
        provider("down", &closed, false),
        provider("five-openai", &fake.base_url, false),
        provider("five-anthropic", &fake.base_url, false),
        // A broken stream is a failed attempt for the breaker (threshold 1
        // here): each SDK's gets a provider of its own.
        provider("reset-openai", &fake.base_url, false),
        provider("reset-anthropic", &fake.base_url, false),
    ]);
    cfg.require_session_key = true;
    cfg.limiter.rate_per_minute = 1.0;
    cfg.limiter.floor_per_minute = 1.0;
    cfg.limiter.capacity = 1.0;
    cfg.queue.request_timeout = 1.0;
    cfg.breaker.failure_threshold = 1;
    cfg.retry.max_retries = 0;
    let (url, _gw, _) = start(cfg).await;
    let case = |sdk: &str, extra: Value| {
        let mut c = json!({"sdk": sdk, "model": "fake/echo"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let mut cases = Vec::new();
    for sdk in ["openai", "anthropic"] {
        cases.push(case(sdk, json!({"bad": true})));
        cases.push(case(sdk, json!({"key": "not-a-run-key"})));
        cases.push(case(
            sdk,
            json!({"path": if sdk == "openai" { "/nope" } else { "/v1/nope" }}),
        ));
        cases.push(case(sdk, json!({"model": "lim/echo"})));
        cases.push(case(sdk, json!({"model": "lim/echo"})));
        cases.push(case(sdk, json!({"model": "down/echo"})));
        cases.push(case(sdk, json!({"model": "down/echo"})));
        cases.push(case(
            sdk,
            json!({"model": format!("five-{sdk}/status-500")}),
        ));
        cases.push(case(
            sdk,
            json!({"model": format!("reset-{sdk}/reset"), "stream": true}),
        ));
    }
    let r = drive(&py, "errors", &url, "fake/echo", Some(json!(cases))).await;
    let results = r["errors"]["results"].as_array().unwrap();
    let (oa, an) = results.split_at(9);

    let expect = |r: &Value, class: &str, status: u64| {
        assert_eq!(r["class"], class, "{r}");
        assert_eq!(r["status"], status, "{r}");
    };
    // OpenAI shape: {"error": {"message", "type", "code"}}.
    expect(&oa[0], "BadRequestError", 400);
    assert_eq!(oa[0]["body"]["code"], "bad_request");
    expect(&oa[1], "AuthenticationError", 401);
    assert!(oa[1]["body"]["message"]
        .as_str()
        .unwrap()
        .contains("x-api-key"));
    expect(&oa[2], "NotFoundError", 404);
    assert_eq!(oa[2]["body"]["type"], "not_found_error");
    assert_eq!(oa[3]["class"], Value::Null, "the one token is used");
    expect(&oa[4], "RateLimitError", 429);
    assert_eq!(oa[4]["body"]["code"], "gateway_rate_limited");
    assert!(
        oa[4]["retry_after"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    expect(&oa[5], "InternalServerError", 502);
    expect(&oa[6], "InternalServerError", 503);
    assert_eq!(oa[6]["body"]["code"], "circuit_open");
    expect(&oa[7], "InternalServerError", 502);
    assert_eq!(oa[7]["body"]["code"], "upstream_failed");
    // A stream broken mid-way ends with response.failed, on which the SDK
    // raises.
    assert_eq!(oa[8]["class"], "APIError", "{}", oa[8]);
    assert!(oa[8]["message"].as_str().unwrap().contains("broke"));

    // Anthropic shape: {"type": "error", "error": {"type", "message"}}.
    let anthropic_type = |r: &Value| {
        r["body"]["error"]["type"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    expect(&an[0], "BadRequestError", 400);
    assert_eq!(an[0]["body"]["type"], "error");
    assert_eq!(anthropic_type(&an[0]), "invalid_request_error");
    expect(&an[1], "AuthenticationError", 401);
    assert_eq!(anthropic_type(&an[1]), "authentication_error");
    expect(&an[2], "NotFoundError", 404);
    assert_eq!(anthropic_type(&an[2]), "not_found_error");
    expect(&an[3], "RateLimitError", 429);
    expect(&an[4], "RateLimitError", 429);
    assert_eq!(anthropic_type(&an[4]), "rate_limit_error");
    assert!(an[4]["retry_after"].as_str().is_some());
    expect(&an[5], "ServiceUnavailableError", 503);
    assert_eq!(anthropic_type(&an[5]), "overloaded_error");
    expect(&an[6], "ServiceUnavailableError", 503);
    expect(&an[7], "InternalServerError", 502);
    assert_eq!(anthropic_type(&an[7]), "api_error");
    // The SDK raises on the stream's error event.
    assert_eq!(an[8]["class"], "APIStatusError", "{}", an[8]);
    assert_eq!(anthropic_type(&an[8]), "api_error");
}

/// The fake's `truncated` model is a provider that answers 200 and stops
/// half-way: one chunk "Hel", then the body ends without a finish reason or
/// `[DONE]` (as JSON: a choice with `finish_reason: null`). No surface may
/// report that as a finished answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_answer_is_an_error_on_every_surface_and_a_failed_attempt() {
    let Some(py) = python() else { return };
    let fake = FakeUpstream::start().await;
    let mut cfg = sdk_config(&fake);
    cfg.retry.max_retries = 0;
    cfg.breaker.failure_threshold = 100;
    let (url, gw, hooks) = start(cfg).await;
    let r = drive(&py, "truncation", &url, "fake/truncated", None).await;
    let r = &r["truncation"];

    // Not streamed: a 502 in each API's own shape.
    assert_eq!(r["chat"]["class"], "InternalServerError", "{}", r["chat"]);
    assert_eq!(r["chat"]["status"], 502);
    assert_eq!(r["chat"]["body"]["code"], "upstream_failed");
    assert_eq!(
        r["responses"]["class"], "InternalServerError",
        "{}",
        r["responses"]
    );
    assert_eq!(r["responses"]["status"], 502);
    assert_eq!(
        r["messages"]["class"], "InternalServerError",
        "{}",
        r["messages"]
    );
    assert_eq!(r["messages"]["body"]["type"], "error");
    assert_eq!(r["messages"]["body"]["error"]["type"], "api_error");
    // Streamed: each SDK raises its own error on the stream's error event.
    for name in ["chat_stream", "responses_stream"] {
        assert_eq!(r[name]["class"], "APIError", "{name}: {}", r[name]);
        assert!(
            r[name]["message"].as_str().unwrap().contains("truncated"),
            "{name}: {}",
            r[name]
        );
    }
    assert_eq!(
        r["messages_stream"]["class"], "APIStatusError",
        "{}",
        r["messages_stream"]
    );
    assert_eq!(r["messages_stream"]["body"]["error"]["type"], "api_error");

    // Six failed attempts, each booked for the run and counted by the breaker.
    let failures = hooks.failures.lock().unwrap();
    assert_eq!(failures.len(), 6, "{failures:?}");
    assert!(failures
        .iter()
        .all(|(a, f)| a.session_id == "S-1" && f.provider == "fake" && f.model == "truncated"));
    let status = serde_json::to_value(gw.status()).unwrap();
    assert_eq!(
        status["providers"][0]["breaker"]["consecutive_failures"], 6,
        "{}",
        status["providers"][0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_high_risk_tool_call_is_held_back_and_proposed_once_per_call() {
    let Some(py) = python() else { return };
    let fake = FakeUpstream::start().await;
    let (url, _gw, hooks) = start(sdk_config(&fake)).await;
    let r = drive(&py, "high_risk", &url, "fake/tool-scale_deployment", None).await;
    let approvals = hooks.approvals.lock().unwrap();
    assert_eq!(
        approvals.len(),
        1,
        "one decision: the Messages turn makes the same call (run, tool, arguments) while it is open"
    );
    assert!(approvals.iter().all(|a| a.tool_name == "scale_deployment"));
    assert_eq!(approvals[0].attribution.as_ref().unwrap().session_id, "S-1");

    let events = r["high_risk"]["responses"].as_array().unwrap();
    let text = serde_json::to_string(events).unwrap();
    assert!(
        !text.contains("\"type\":\"function_call\""),
        "the call was not delivered: {text}"
    );
    let done = events.last().unwrap();
    assert_eq!(done["type"], "response.completed");
    assert_eq!(
        done["response"]["requires_approval"][0]["decision_id"],
        "D-1"
    );
    let message = done["response"]["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("moziplus bb decision wait D-1"),
        "{message}"
    );

    let m = &r["high_risk"]["messages"];
    assert!(
        m["content"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] == "text"),
        "{m}"
    );
    assert!(m["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("moziplus bb decision wait D-1"));
    assert_eq!(m["stop_reason"], "end_turn");
}

/// Bodies for the three surfaces, marked so the fake echoes the marker.
fn surface_body(surface: usize, model: &str, marker: &str) -> (&'static str, Value) {
    match surface % 3 {
        0 => (
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": marker}]}),
        ),
        1 => ("/v1/responses", json!({"model": model, "input": marker})),
        _ => (
            "/v1/messages?beta=true",
            json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": marker}]}),
        ),
    }
}

#[tokio::test(start_paused = true)]
async fn a_limited_provider_keeps_its_rate_under_100_callers_on_three_surfaces() {
    let fake = FakeUpstream::start().await;
    let mut cfg = config(vec![provider("nv", &fake.base_url, true)]);
    cfg.limiter.rate_per_minute = 40.0;
    cfg.limiter.capacity = 40.0;
    cfg.queue.request_timeout = 3600.0;
    let (url, gw, _) = start(cfg).await;
    let calls = (0..100).map(|i| {
        let (path, body) = surface_body(i, "nv/echo", &format!("c{i}"));
        let url = format!("{url}{path}");
        async move { post_json(&url, &body, &[]).await.status().as_u16() }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let seen = fake.state.seen.lock().unwrap();
    assert_eq!(seen.len(), 100);
    assert!(
        seen.iter().all(|s| s.path == "chat"),
        "every surface reached the upstream as chat"
    );
    let times: Vec<_> = seen.iter().map(|s| s.at).collect();
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|u| **u - *t < Duration::from_secs(60))
            .count();
        assert!(
            in_window <= 40,
            "{in_window} requests within 60 s from request {i}"
        );
    }
    let span = *times.last().unwrap() - times[0];
    assert!(
        span >= Duration::from_secs(85),
        "60 calls beyond the burst at 1.5 s each: {span:?}"
    );
    assert_eq!(gw.lane("nv").unwrap().snapshot().counters.granted, 100);
}

#[tokio::test]
async fn priority_order_holds_across_the_three_surfaces() {
    let fake = FakeUpstream::start().await;
    let mut cfg = config(vec![provider("nv", &fake.base_url, true)]);
    cfg.queue.concurrency = Concurrency::Fixed(1);
    cfg.limiter.capacity = 100.0;
    cfg.limiter.rate_per_minute = 1000.0;
    let (url, gw, _) = start(cfg).await;
    let (path, body) = surface_body(0, "nv/slow-600", "blocker");
    let blocker_url = format!("{url}{path}");
    let blocker = tokio::spawn(async move { post_json(&blocker_url, &body, &[]).await });
    let lane = gw.lane("nv").unwrap();
    while lane.snapshot().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let order = [
        ("low", 1),
        ("normal", 2),
        ("high", 0),
        ("urgent", 1),
        ("low", 2),
        ("high", 1),
    ];
    let mut waiting = Vec::new();
    for (n, (priority, surface)) in order.iter().enumerate() {
        let (path, body) = surface_body(*surface, "nv/echo", &format!("{priority}-{n}"));
        let (url, priority) = (format!("{url}{path}"), *priority);
        waiting.push(tokio::spawn(async move {
            post_json(&url, &body, &[("x-priority", priority)]).await
        }));
        while lane.queue_len() < n + 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for w in waiting {
        assert_eq!(w.await.unwrap().status(), 200);
    }
    assert_eq!(blocker.await.unwrap().status(), 200);
    let markers: Vec<String> = seen_bodies(&fake)
        .iter()
        .skip(1)
        .map(|b| b["messages"][0]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        markers,
        ["urgent-3", "high-2", "high-5", "normal-1", "low-0", "low-4"]
    );
}

#[tokio::test]
async fn a_client_leaving_mid_stream_closes_the_upstream_and_frees_the_slot() {
    for (i, (path, stream_key)) in [("/v1/messages", "stream"), ("/v1/responses", "stream")]
        .iter()
        .enumerate()
    {
        let fake = FakeUpstream::start().await;
        let (url, gw, _) = start(config(vec![provider("nv", &fake.base_url, true)])).await;
        let (_, mut body) = surface_body(
            if *path == "/v1/responses" { 1 } else { 2 },
            "nv/slowstream",
            "dc",
        );
        body[*stream_key] = json!(true);
        let resp = post_json(&format!("{url}{path}"), &body, &[]).await;
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let mut got = String::new();
        while !got.contains("dc#1") {
            got.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
        }
        assert_eq!(
            gw.lane("nv").unwrap().snapshot().in_flight,
            1,
            "case {i}: slot held while streaming"
        );
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
            "case {i}: upstream connection closed"
        );
        assert_eq!(fake.state.streams_completed.load(Ordering::SeqCst), 0);
        assert_eq!(
            gw.lane("nv").unwrap().snapshot().in_flight,
            0,
            "case {i}: slot released"
        );
    }
}

#[tokio::test]
async fn client_shapes_of_codex_and_claude_code_are_accepted() {
    // Request shapes as the CLIs send them (codex-rs ResponsesApiRequest;
    // Claude Code's /v1/messages?beta=true), abridged.
    let fake = FakeUpstream::start().await;
    let (url, _gw, _) = start(sdk_config(&fake)).await;
    let codex = json!({
        "model": "gpt-5-codex", "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<environment>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]}],
        "tools": [{"type": "function", "name": "exec_command", "description": "run", "strict": false,
                   "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
                  {"type": "namespace", "name": "mcp__x", "tools": []}, {"type": "web_search"}],
        "tool_choice": "auto", "parallel_tool_calls": false, "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false, "stream": true, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "abc",
        "text": {"verbosity": "medium"}, "client_metadata": {"x-codex-turn": "1"}
    });
    let resp = post_json(&format!("{url}/v1/responses"), &codex, &[]).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: response.completed"), "{text}");
    let sent = &seen_bodies(&fake)[0];
    assert_eq!(
        sent["messages"][0]["content"],
        "You are Codex.\n\n<permissions>\n\n<environment>"
    );
    assert_eq!(sent["messages"].as_array().unwrap().len(), 2);
    assert_eq!(sent["tools"].as_array().unwrap().len(), 1);

    let claude = json!({
        "model": "claude-sonnet-4-5-20250929", "max_tokens": 32000, "stream": true,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "system", "content": "more system"},
                     {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {}}}],
        "thinking": {"type": "adaptive"}, "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        "output_config": {"effort": "high"}, "metadata": {"user_id": "u"}
    });
    let resp = post_json(
        &format!("{url}/v1/messages?beta=true"),
        &claude,
        &[
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "claude-code-20250219"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(text.contains("event: message_stop"));
    let sent = &seen_bodies(&fake)[1];
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are Claude Code.\n\nmore system"})
    );
    for dropped in [
        "thinking",
        "context_management",
        "output_config",
        "metadata",
        "system",
    ] {
        assert!(
            sent.get(dropped).is_none(),
            "{dropped} reached the chat provider"
        );
    }
    assert!(fake.state.not_found.lock().unwrap().is_empty());

    // No provider, no map entry, no default: 400 listing the choices, in Anthropic's shape.
    let resp = post_json(&format!("{url}/v1/messages"), &json!({"model": "mystery-model", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}), &[]).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("fake") && msg.contains("model_map"), "{msg}");
    // previous_response_id: a clear 400.
    let resp = post_json(
        &format!("{url}/v1/responses"),
        &json!({"model": "fake/echo", "input": "x", "previous_response_id": "resp_1"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stateless"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_run_under_moziplus_serve_books_both_sdks_usage_to_its_session() {
    let Some(py) = python() else { return };
    let fake = FakeUpstream::start().await;
    let home = support::TestHome::with_config(
        &format!(
            "daemon:\n  tick_interval: 1\ngateway:\n  require_session_key: true\n  providers:\n    - name: fake\n      base_url: {}\n",
            fake.base_url
        ),
        &format!(
            "agents:\n  - id: sdk\n    runtime: command\n    model: fake/echo-agent\n    command: [\"{py}\", \"{DRIVER}\", \"agent\"]\n"
        ),
    );
    home.create_project("p");
    let task = home.create_task("p", "call the gateway with both SDKs", &[]);
    let h = home;
    let results = tokio::task::spawn_blocking(move || {
        let daemon = support::Daemon::start(&h);
        let file = h.path().join("sdk-results.json");
        support::wait_for(Duration::from_secs(90), "the agent's SDK results", || file.exists());
        let db = h.db("p");
        support::wait_for(Duration::from_secs(30), "the run to end", || {
            support::query_i64(&db, "SELECT COUNT(*) FROM session WHERE ended_at IS NOT NULL") >= 1
        });
        daemon.stop();
        let r: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let session = r["session"].as_str().unwrap().to_string();
        let tokens = support::query_strings(
            &db,
            &format!("SELECT prompt_tokens || '/' || completion_tokens FROM session WHERE id = '{session}'"),
        );
        (r, tokens)
    })
    .await
    .unwrap();
    let (r, tokens) = results;
    // The run's agent model (agents.yaml) took the place of gpt-5-codex and claude-….
    let bodies = seen_bodies(&fake);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(
        bodies.iter().all(|b| b["model"] == "echo-agent"),
        "{bodies:?}"
    );
    assert_eq!(r["openai"]["text"], "echo:Be brief.");
    assert_eq!(r["anthropic"]["text"], "echo:Be brief.");
    assert_eq!(r["anthropic"]["model"], "claude-sonnet-4-5");
    // Bearer (OpenAI SDK) and x-api-key (Anthropic SDK) both named the run:
    // its session carries both calls' tokens (10 + 5 each at the fake).
    assert_eq!(tokens, ["20/10"], "usage of task {task}'s run");
}

/// Under `moziplus serve`, a run whose provider stops half-way (the fake's
/// `truncated`): the SDK raises, and the run's transcript (its
/// `session.activity` events) records each failed call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_moziplus_serve_a_truncated_answer_is_in_the_runs_transcript() {
    let Some(py) = python() else { return };
    let fake = FakeUpstream::start().await;
    let home = support::TestHome::with_config(
        &format!(
            "daemon:\n  tick_interval: 1\ngateway:\n  require_session_key: true\n  retry:\n    max_retries: 0\n  providers:\n    - name: fake\n      base_url: {}\n",
            fake.base_url
        ),
        &format!(
            "agents:\n  - id: sdk\n    runtime: command\n    command: [\"{py}\", \"{DRIVER}\", \"agent_truncated\"]\n"
        ),
    );
    home.create_project("p");
    home.create_task("p", "call a provider that stops half-way", &[]);
    let (r, events) = tokio::task::spawn_blocking(move || {
        let daemon = support::Daemon::start(&home);
        let file = home.path().join("truncated-results.json");
        support::wait_for(Duration::from_secs(90), "the run's results", || {
            file.exists()
        });
        let r: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let db = home.db("p");
        let query = "SELECT payload FROM event WHERE kind = 'session.activity' \
            AND payload LIKE '%\"kind\":\"error\"%' ORDER BY id";
        support::wait_for(Duration::from_secs(10), "the transcript entries", || {
            support::query_strings(&db, query).len() >= 2
        });
        let events = support::query_strings(&db, query);
        daemon.stop();
        (r, events)
    })
    .await
    .unwrap();
    assert_eq!(r["json"]["class"], "InternalServerError", "{r}");
    assert_eq!(r["stream"]["class"], "APIError", "{r}");
    let session = r["session"].as_str().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        let e: Value = serde_json::from_str(e).unwrap();
        assert_eq!(e["session"], session, "{e}");
        assert_eq!(e["kind"], "error", "{e}");
        assert!(
            e["text"].as_str().unwrap().contains("fake truncated"),
            "{e}"
        );
    }
}

/// The rule end to end under `moziplus serve`: the run's high-risk call
/// becomes a decision on the project's board, the run waits for it, a human
/// approves it (`bb decision approve`), and the same call goes through once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_moziplus_serve_a_held_call_goes_through_once_after_a_human_approves() {
    let Some(py) = python() else { return };
    let fake = FakeUpstream::start().await;
    let home = support::TestHome::with_config(
        &format!(
            "daemon:\n  tick_interval: 1\ngateway:\n  require_session_key: true\n  providers:\n    - name: fake\n      base_url: {}\n",
            fake.base_url
        ),
        &format!(
            "agents:\n  - id: sdk\n    runtime: command\n    command: [\"{py}\", \"{DRIVER}\", \"agent_approval\"]\n"
        ),
    );
    home.create_project("p");
    home.create_task("p", "scale the deployment", &[]);
    let r = tokio::task::spawn_blocking(move || {
        let daemon = support::Daemon::start(&home);
        let id_file = home.path().join("decision-id");
        support::wait_for(Duration::from_secs(90), "the proposed decision", || {
            id_file.exists()
        });
        let id = std::fs::read_to_string(&id_file).unwrap();
        let open = home
            .bb("p", &["decision", "show", id.trim(), "--json"])
            .ok();
        assert!(open.contains("proposed"), "{open}");
        assert!(open.contains("scale_deployment"), "{open}");
        home.bb("p", &["decision", "approve", id.trim()]).ok();
        let file = home.path().join("approval-results.json");
        support::wait_for(Duration::from_secs(60), "the run's results", || {
            file.exists()
        });
        daemon.stop();
        serde_json::from_str::<Value>(&std::fs::read_to_string(file).unwrap()).unwrap()
    })
    .await
    .unwrap();
    // Held: no call, the text and requires_approval name the decision.
    assert_eq!(r["first"]["calls"], json!([]), "{r}");
    assert_eq!(r["first"]["finish"], "stop");
    let id = r["first"]["approvals"][0]["decision_id"].as_str().unwrap();
    // The daemon names the decision as the CLI and the dashboard do.
    assert!(
        id.strip_prefix('D')
            .is_some_and(|n| n.parse::<i64>().is_ok()),
        "decision id {id:?} is not in the D7 form"
    );
    assert!(r["first"]["content"]
        .as_str()
        .unwrap()
        .contains(&format!("moziplus bb decision wait {id}")));
    assert_eq!(r["waited"], 0, "the decision was approved");
    // Approved: the same call goes through, once.
    assert_eq!(r["second"]["calls"], json!(["scale_deployment"]), "{r}");
    assert_eq!(r["second"]["approvals"], Value::Null);
    assert_eq!(r["third"]["calls"], json!([]), "{r}");
    let next = r["third"]["approvals"][0]["decision_id"].as_str().unwrap();
    assert_ne!(next, id, "the next time needs a new decision");
}

#[tokio::test]
async fn providers_marked_native_get_the_clients_body_passed_through() {
    // The fake answers 404 to /responses and /messages (it speaks only chat):
    // a native provider's own answer, passed on as is.
    let fake = FakeUpstream::start().await;
    let mut p = provider("nat", &fake.base_url, false);
    p.native = vec![
        moziplus::gateway::NativeApi::Responses,
        moziplus::gateway::NativeApi::Messages,
    ];
    let (url, _gw, _) = start(config(vec![p])).await;
    let resp = post_json(
        &format!("{url}/v1/responses"),
        &json!({"model": "nat/gpt-x", "input": "hi", "store": false}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 404, "the upstream's own status");
    let resp = post_json(
        &format!("{url}/v1/messages?beta=true"),
        &json!({"model": "nat/claude-x", "max_tokens": 5, "thinking": {"type": "adaptive"},
            "messages": [{"role": "user", "content": "hi"}]}),
        &[
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "fine-grained-tool-streaming-2025-05-14"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 404);
    let seen = fake.state.not_found_seen.lock().unwrap();
    assert_eq!(seen[0].0, "/v1/responses");
    assert_eq!(
        seen[0].2,
        json!({"model": "gpt-x", "input": "hi", "store": false}),
        "untranslated, prefix stripped"
    );
    assert_eq!(seen[1].0, "/v1/messages");
    assert_eq!(seen[1].2["thinking"], json!({"type": "adaptive"}));
    assert_eq!(seen[1].2["model"], "claude-x");
    assert_eq!(seen[1].1["anthropic-version"], "2023-06-01");
    assert_eq!(
        seen[1].1["anthropic-beta"],
        "fine-grained-tool-streaming-2025-05-14"
    );
    assert_eq!(seen[1].1["x-api-key"], harness::KEY_VALUE);
    assert!(
        fake.state.seen.lock().unwrap().is_empty(),
        "nothing was translated to chat"
    );
}

#[tokio::test]
async fn a_silent_upstream_gets_anthropic_pings_and_the_stream_still_completes() {
    // The fake pauses 0.5 s between chunks; with a 0.1 s ping interval (10 s by
    // default) the client of a Messages stream sees pings in the silences.
    let fake = FakeUpstream::start().await;
    let mut p = provider("fake", &fake.base_url, false);
    p.timeouts.ping = 0.1;
    let (url, _gw, _) = start(config(vec![p])).await;
    let (path, mut body) = surface_body(2, "fake/gap-500", "quiet");
    body["stream"] = json!(true);
    let text = post_json(&format!("{url}{path}"), &body, &[])
        .await
        .text()
        .await
        .unwrap();
    let pings = text.matches("event: ping").count();
    assert!(
        pings >= 6,
        "four 0.5 s silences, a ping every 0.1 s: {pings} in {text}"
    );
    assert!(text.contains("quiet#2"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{text}"
    );
    // Responses has no ping event: nothing is invented there.
    let (path, mut body) = surface_body(1, "fake/gap-500", "quiet");
    body["stream"] = json!(true);
    let text = post_json(&format!("{url}{path}"), &body, &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("event: ping"), "{text}");
    assert!(text.contains("event: response.completed"), "{text}");
}
