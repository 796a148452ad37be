//! The high-risk rule on every path (issue 22): within a run, a high-risk
//! tool call never reaches the agent before a human approved its decision,
//! and after approval the same call goes through once.
//!
//! The provider is a scripted fake on loopback (NVIDIA and the other
//! providers cannot be reached from tests): each test sets the exact answer
//! (a JSON body or the SSE chunks of a stream) it gives next, including the
//! adversarial shapes a model or provider can produce: a call whose name
//! comes late or in pieces, a call in a second choice or in a choice listed
//! out of order, the legacy `function_call`, an MCP-prefixed name. The
//! gateway is served on loopback as `moziplus serve` mounts it and called
//! over real HTTP; what "the agent receives" is what a client SDK would
//! assemble from those bytes (tool-call deltas joined per choice and index).

#[path = "support/gateway_harness.rs"]
mod harness;
mod support;

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use harness::{config, start, RecordingHooks, RUN_KEY};
use moziplus::gateway::config::NativeApi;
use moziplus::gateway::ApprovalStatus;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::bearer;

const RISKY: &str = "delete_resource";

/// What the scripted provider answers next.
#[derive(Clone)]
enum Answer {
    Json(Value),
    /// SSE `data:` chunks, then `data: [DONE]`.
    Stream(Vec<Value>),
}

#[derive(Clone)]
struct Provider {
    answer: Arc<Mutex<Answer>>,
    base_url: String,
}

impl Provider {
    async fn start() -> Provider {
        let answer = Arc::new(Mutex::new(Answer::Json(Value::Null)));
        let app = Router::new()
            .route("/v1/chat/completions", post(answer_with))
            .route("/v1/responses", post(answer_with))
            .with_state(answer.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Provider {
            answer,
            base_url: format!("http://{addr}/v1"),
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

async fn answer_with(State(answer): State<Arc<Mutex<Answer>>>) -> Response {
    match answer.lock().unwrap().clone() {
        Answer::Json(v) => Json(v).into_response(),
        Answer::Stream(chunks) => {
            let mut text = String::new();
            for c in chunks {
                text.push_str(&format!("data: {c}\n\n"));
            }
            text.push_str("data: [DONE]\n\n");
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from(Bytes::from(text)))
                .unwrap()
        }
    }
}

/// The six translated/chat paths, plus the native Responses answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    ChatJson,
    ChatStream,
    ResponsesJson,
    ResponsesStream,
    MessagesJson,
    MessagesStream,
    NativeResponsesJson,
}

impl Path {
    fn stream(self) -> bool {
        matches!(
            self,
            Path::ChatStream | Path::ResponsesStream | Path::MessagesStream
        )
    }
}

struct Setup {
    url: String,
    provider: Provider,
    hooks: Arc<RecordingHooks>,
    _gw: moziplus::gateway::Gateway,
}

async fn setup() -> Setup {
    let provider = Provider::start().await;
    let mut native = harness::provider("native", &provider.base_url, false);
    native.native = vec![NativeApi::Responses];
    let (url, gw, hooks) = start(config(vec![
        harness::provider("fake", &provider.base_url, false),
        native,
    ]))
    .await;
    Setup {
        url,
        provider,
        hooks,
        _gw: gw,
    }
}

fn tool_def(name: &str) -> Value {
    json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}})
}

/// Send one call on `path` (as the run `RUN_KEY`); the response body text.
async fn call(s: &Setup, path: Path, extra: Value) -> String {
    let (endpoint, mut body, model) = match path {
        Path::ChatJson | Path::ChatStream => (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "clean up"}], "tools": [tool_def(RISKY)]}),
            "fake/m",
        ),
        Path::ResponsesJson | Path::ResponsesStream => (
            "/v1/responses",
            json!({"input": "clean up", "tools": [{"type": "function", "name": RISKY, "parameters": {"type": "object"}}]}),
            "fake/m",
        ),
        Path::NativeResponsesJson => (
            "/v1/responses",
            json!({"input": "clean up", "tools": [{"type": "function", "name": RISKY, "parameters": {"type": "object"}}]}),
            "native/m",
        ),
        Path::MessagesJson | Path::MessagesStream => (
            "/v1/messages",
            json!({"max_tokens": 50, "messages": [{"role": "user", "content": "clean up"}],
                "tools": [{"name": RISKY, "input_schema": {"type": "object"}}]}),
            "fake/m",
        ),
    };
    body["model"] = json!(model);
    body["stream"] = json!(path.stream());
    for (k, v) in extra.as_object().into_iter().flatten() {
        match v {
            Value::Null => drop(body.as_object_mut().unwrap().remove(k)),
            v => body[k] = v.clone(),
        }
    }
    let resp = reqwest::Client::new()
        .post(format!("{}{endpoint}", s.url))
        .header("authorization", bearer(RUN_KEY))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path:?}");
    resp.text().await.unwrap()
}

/// The `data:` payloads of an SSE body.
fn sse_data(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| *d != "[DONE]" && !d.is_empty())
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// The names of the tool calls a client SDK would hand the agent from this
/// answer (streamed deltas joined per choice and index, as the SDKs do).
fn delivered(path: Path, text: &str) -> Vec<String> {
    let mut names = Vec::new();
    match path {
        Path::ChatJson => {
            let v: Value = serde_json::from_str(text).unwrap();
            for c in v["choices"].as_array().unwrap() {
                for tc in c["message"]["tool_calls"].as_array().into_iter().flatten() {
                    names.push(tc["function"]["name"].as_str().unwrap_or("").to_string());
                }
                if let Some(n) = c["message"]["function_call"]["name"].as_str() {
                    names.push(n.to_string());
                }
            }
        }
        Path::ChatStream => {
            let mut joined: Vec<((u64, i64), String)> = Vec::new();
            for chunk in sse_data(text) {
                for c in chunk["choices"].as_array().into_iter().flatten() {
                    let n = c["index"].as_u64().unwrap_or(0);
                    let mut parts: Vec<(i64, &Value)> = c["delta"]["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|tc| (tc["index"].as_i64().unwrap_or(0), &tc["function"]))
                        .collect();
                    if c["delta"]["function_call"].is_object() {
                        parts.push((-1, &c["delta"]["function_call"]));
                    }
                    for (i, f) in parts {
                        let part = f["name"].as_str().unwrap_or("");
                        match joined.iter_mut().find(|(k, _)| *k == (n, i)) {
                            Some((_, name)) => name.push_str(part),
                            None => joined.push(((n, i), part.to_string())),
                        }
                    }
                }
            }
            names.extend(joined.into_iter().map(|(_, n)| n));
        }
        Path::ResponsesJson | Path::NativeResponsesJson => {
            let v: Value = serde_json::from_str(text).unwrap();
            for item in v["output"].as_array().unwrap() {
                if item["type"] == "function_call" {
                    names.push(item["name"].as_str().unwrap().to_string());
                }
            }
        }
        Path::ResponsesStream => {
            for e in sse_data(text) {
                let items: Vec<&Value> = match e["type"].as_str().unwrap() {
                    "response.output_item.added" | "response.output_item.done" => vec![&e["item"]],
                    "response.completed" => {
                        e["response"]["output"].as_array().unwrap().iter().collect()
                    }
                    _ => vec![],
                };
                for item in items {
                    if item["type"] == "function_call" {
                        names.push(item["name"].as_str().unwrap().to_string());
                    }
                }
            }
            names.dedup();
        }
        Path::MessagesJson => {
            let v: Value = serde_json::from_str(text).unwrap();
            for b in v["content"].as_array().unwrap() {
                if b["type"] == "tool_use" {
                    names.push(b["name"].as_str().unwrap().to_string());
                }
            }
        }
        Path::MessagesStream => {
            for e in sse_data(text) {
                if e["type"] == "content_block_start" && e["content_block"]["type"] == "tool_use" {
                    names.push(e["content_block"]["name"].as_str().unwrap().to_string());
                }
            }
        }
    }
    names
}

/// A chat answer with one call to `name`, in the path's upstream shape.
fn one_call(path: Path, name: &str, args: &str) -> Answer {
    match path {
        Path::NativeResponsesJson => Answer::Json(json!({"id": "resp_1", "object": "response",
            "status": "completed", "model": "m", "output": [
                {"id": "fc_1", "type": "function_call", "status": "completed",
                 "call_id": "call_1", "name": name, "arguments": args}]})),
        p if p.stream() => Answer::Stream(vec![
            json!({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}]},
                "finish_reason": null}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": args}}]}, "finish_reason": null}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ]),
        _ => Answer::Json(
            json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}]},
            "finish_reason": "tool_calls"}]}),
        ),
    }
}

fn proposals(s: &Setup) -> usize {
    s.hooks.approvals.lock().unwrap().len()
}

#[tokio::test]
async fn on_every_path_a_high_risk_call_waits_for_approval_then_goes_through_once() {
    let s = setup().await;
    let paths = [
        Path::ChatJson,
        Path::ChatStream,
        Path::ResponsesJson,
        Path::ResponsesStream,
        Path::MessagesJson,
        Path::MessagesStream,
        Path::NativeResponsesJson,
    ];
    for (n, path) in paths.into_iter().enumerate() {
        // Each path its own call (arguments differ), so decisions do not mix.
        let args = format!("{{\"name\": \"db-{n}\"}}");
        s.provider.set(one_call(path, RISKY, &args));
        let before = proposals(&s);

        let held = call(&s, path, json!({})).await;
        assert_eq!(
            delivered(path, &held),
            Vec::<String>::new(),
            "{path:?}: {held}"
        );
        assert_eq!(proposals(&s), before + 1, "{path:?}: one decision proposed");
        let id = format!("D-{}", before + 1);
        assert!(
            held.contains(&format!("moziplus bb decision wait {id}")),
            "{path:?}: {held}"
        );
        assert!(held.contains("\"requires_approval\""), "{path:?}: {held}");

        // Still undecided: held again under the same decision.
        let again = call(&s, path, json!({})).await;
        assert!(delivered(path, &again).is_empty(), "{path:?}: {again}");
        assert_eq!(proposals(&s), before + 1, "{path:?}: no second proposal");

        // Approved: the same call goes through, once.
        s.hooks
            .decided
            .lock()
            .unwrap()
            .insert(id.clone(), ApprovalStatus::Approved);
        let through = call(&s, path, json!({})).await;
        assert_eq!(delivered(path, &through), [RISKY], "{path:?}: {through}");
        let after = call(&s, path, json!({})).await;
        assert!(
            delivered(path, &after).is_empty(),
            "{path:?}: only once: {after}"
        );
        assert_eq!(
            proposals(&s),
            before + 2,
            "{path:?}: a new decision for the next time"
        );
    }
}

#[tokio::test]
async fn a_rejected_decision_is_told_and_the_call_not_delivered() {
    let s = setup().await;
    for path in [Path::ChatJson, Path::MessagesStream] {
        let args = format!("{{\"name\": \"{path:?}\"}}");
        s.provider.set(one_call(path, RISKY, &args));
        let before = proposals(&s);
        call(&s, path, json!({})).await;
        let id = format!("D-{}", before + 1);
        s.hooks.decided.lock().unwrap().insert(
            id.clone(),
            ApprovalStatus::Rejected("expired unanswered".into()),
        );
        let told = call(&s, path, json!({})).await;
        assert!(delivered(path, &told).is_empty(), "{path:?}: {told}");
        assert!(
            told.contains(&format!("decision {id} was rejected: expired unanswered")),
            "{told}"
        );
        assert!(told.contains("\"status\":\"rejected\""), "{told}");
    }
}

/// Chat stream chunks with one choice's tool-call deltas.
fn deltas(choice: u64, calls: Vec<Value>) -> Value {
    json!({"id": "c", "choices": [{"index": choice, "delta": {"tool_calls": calls}, "finish_reason": null}]})
}

fn finish(choices: &[u64], reason: &str) -> Value {
    let choices: Vec<Value> = choices
        .iter()
        .map(|i| json!({"index": i, "delta": {}, "finish_reason": reason}))
        .collect();
    json!({"id": "c", "choices": choices})
}

/// Streams `chunks` through chat and Responses; the call must be held on both.
async fn held_on_streams(s: &Setup, what: &str, chunks: Vec<Value>) {
    for path in [Path::ChatStream, Path::ResponsesStream] {
        s.provider.set(Answer::Stream(chunks.clone()));
        let before = proposals(s);
        let text = call(s, path, json!({})).await;
        let got = delivered(path, &text);
        assert!(
            !got.iter().any(|n| n.contains(RISKY)),
            "{what} on {path:?}: delivered {got:?}: {text}"
        );
        if path == Path::ChatStream {
            assert_eq!(proposals(s), before + 1, "{what} on {path:?}: {text}");
        }
    }
}

#[tokio::test]
async fn an_empty_or_missing_first_name_does_not_let_the_call_through() {
    let s = setup().await;
    for (what, first) in [
        (
            "empty first name",
            json!({"index": 0, "id": "call_e", "type": "function", "function": {"name": "", "arguments": ""}}),
        ),
        (
            "missing first name",
            json!({"index": 0, "id": "call_m", "type": "function", "function": {"arguments": ""}}),
        ),
        (
            "no function at all first",
            json!({"index": 0, "id": "call_n", "type": "function"}),
        ),
    ] {
        let args = format!("{{\"case\": \"{what}\"}}");
        held_on_streams(
            &s,
            what,
            vec![
                deltas(0, vec![first]),
                deltas(0, vec![json!({"index": 0, "function": {"name": RISKY}})]),
                deltas(
                    0,
                    vec![json!({"index": 0, "function": {"arguments": args}})],
                ),
                finish(&[0], "tool_calls"),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn a_name_split_across_deltas_is_judged_whole() {
    let s = setup().await;
    held_on_streams(&s, "split name", vec![
        deltas(0, vec![json!({"index": 0, "id": "call_s", "type": "function", "function": {"name": "delete_", "arguments": ""}})]),
        deltas(0, vec![json!({"index": 0, "function": {"name": "resource", "arguments": "{\"split\": 1}"}})]),
        finish(&[0], "tool_calls"),
    ])
    .await;
}

#[tokio::test]
async fn an_mcp_prefixed_name_is_high_risk() {
    let s = setup().await;
    held_on_streams(
        &s,
        "prefixed name",
        vec![
            deltas(
                0,
                vec![json!({"index": 0, "id": "call_p", "type": "function",
            "function": {"name": "mcp__k8s__delete_resource", "arguments": "{\"prefixed\": 1}"}})],
            ),
            finish(&[0], "tool_calls"),
        ],
    )
    .await;
    for path in [Path::ChatJson, Path::MessagesJson] {
        s.provider.set(one_call(
            path,
            "mcp__k8s__delete_resource",
            &format!("{{\"p\": \"{path:?}\"}}"),
        ));
        let text = call(&s, path, json!({})).await;
        assert!(delivered(path, &text).is_empty(), "{path:?}: {text}");
    }
}

#[tokio::test]
async fn a_call_in_a_second_choice_or_a_choice_out_of_order_is_held() {
    let s = setup().await;
    let path = Path::ChatStream;
    let text_chunk = |i: u64| json!({"id": "c", "choices": [{"index": i, "delta": {"content": "ok"}, "finish_reason": null}]});
    // A second choice.
    s.provider.set(Answer::Stream(vec![
        text_chunk(0),
        deltas(1, vec![json!({"index": 0, "id": "call_2", "type": "function", "function": {"name": RISKY, "arguments": "{\"choice\": 2}"}})]),
        finish(&[0, 1], "tool_calls"),
    ]));
    let before = proposals(&s);
    let text = call(&s, path, json!({"n": 2})).await;
    assert!(delivered(path, &text).is_empty(), "{text}");
    assert!(
        text.contains("\"content\":\"ok\""),
        "the other choice's text passes: {text}"
    );
    assert_eq!(proposals(&s), before + 1);
    // Choice 0 listed second in one chunk's array.
    s.provider.set(Answer::Stream(vec![
        json!({"id": "c", "choices": [
            {"index": 1, "delta": {"content": "first"}, "finish_reason": null},
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_o", "type": "function",
                "function": {"name": RISKY, "arguments": "{\"order\": 1}"}}]}, "finish_reason": null}]}),
        finish(&[1, 0], "tool_calls"),
    ]));
    let text = call(&s, path, json!({"n": 2})).await;
    assert!(delivered(path, &text).is_empty(), "{text}");
    assert_eq!(proposals(&s), before + 2);
    // As JSON, a second choice's call.
    s.provider.set(Answer::Json(json!({"id": "c", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_j", "type": "function", "function": {"name": RISKY, "arguments": "{\"json\": 2}"}}]},
         "finish_reason": "tool_calls"}]})));
    let text = call(&s, Path::ChatJson, json!({"n": 2})).await;
    assert!(delivered(Path::ChatJson, &text).is_empty(), "{text}");
    assert_eq!(proposals(&s), before + 3);
}

#[tokio::test]
async fn legacy_functions_and_function_call_are_held() {
    let s = setup().await;
    let legacy =
        json!({"tools": null, "functions": [{"name": RISKY, "parameters": {"type": "object"}}]});
    s.provider.set(Answer::Json(json!({"id": "c", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": null, "function_call": {"name": RISKY, "arguments": "{\"legacy\": 1}"}},
        "finish_reason": "function_call"}]})));
    let before = proposals(&s);
    let text = call(&s, Path::ChatJson, legacy.clone()).await;
    assert!(delivered(Path::ChatJson, &text).is_empty(), "{text}");
    assert_eq!(proposals(&s), before + 1);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    s.provider.set(Answer::Stream(vec![
        json!({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "function_call": {"name": "delete", "arguments": ""}}, "finish_reason": null}]}),
        json!({"id": "c", "choices": [{"index": 0, "delta": {"function_call": {"name": "_resource", "arguments": "{\"legacy\": 2}"}}, "finish_reason": null}]}),
        finish(&[0], "function_call"),
    ]));
    let text = call(&s, Path::ChatStream, legacy).await;
    assert!(delivered(Path::ChatStream, &text).is_empty(), "{text}");
    assert_eq!(proposals(&s), before + 2);
}

#[tokio::test]
async fn a_harmless_call_still_arrives_whole_beside_a_held_one() {
    let s = setup().await;
    s.provider.set(Answer::Stream(vec![
        deltas(0, vec![json!({"index": 0, "id": "call_r", "type": "function", "function": {"name": "read_file", "arguments": "{\"pa"}})]),
        deltas(0, vec![json!({"index": 0, "function": {"arguments": "th\": \"a\"}"}})]),
        deltas(0, vec![json!({"index": 1, "id": "call_d", "type": "function", "function": {"name": RISKY, "arguments": "{\"beside\": 1}"}})]),
        finish(&[0], "tool_calls"),
    ]));
    for path in [
        Path::ChatStream,
        Path::ResponsesStream,
        Path::MessagesStream,
    ] {
        let text = call(&s, path, json!({})).await;
        assert_eq!(delivered(path, &text), ["read_file"], "{path:?}: {text}");
    }
    let chat = call(&s, Path::ChatStream, json!({})).await;
    let args: String = sse_data(&chat)
        .iter()
        .flat_map(|c| {
            c["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|tc| {
            tc["function"]["arguments"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(args, "{\"path\": \"a\"}");
    let finish_reason = sse_data(&chat).iter().find_map(|c| {
        c["choices"][0]["finish_reason"]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(
        finish_reason.as_deref(),
        Some("tool_calls"),
        "a call was delivered"
    );
}

/// Random cuts of one high-risk call (the name cut at every byte, the
/// arguments over random deltas, the id and index on some deltas only,
/// sometimes a second choice with a call of its own) through chat and
/// Responses streams: exactly one decision per high-risk call, none leaked.
#[tokio::test]
async fn random_splits_of_high_risk_calls_propose_one_decision_each_and_leak_none() {
    let s = setup().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let names = [
        "delete_resource",
        "mcp__k8s__delete_resource",
        "functions.scale_deployment",
    ];
    let mut round = 0;
    for name in names {
        for cut in 0..=name.len() {
            for path in [Path::ChatStream, Path::ResponsesStream] {
                round += 1;
                let second_choice = path == Path::ChatStream && rng.gen_bool(0.5);
                let mut calls = vec![(0u64, format!("{{\"round\": {round}, \"target\": \"db\"}}"))];
                if second_choice {
                    calls.push((1, format!("{{\"round\": {round}, \"target\": \"cache\"}}")));
                }
                let mut chunks = Vec::new();
                for (choice, args) in &calls {
                    let (head, tail) = name.split_at(cut);
                    let mut pieces: Vec<Value> = vec![json!({"name": head})];
                    if !tail.is_empty() || rng.gen_bool(0.5) {
                        pieces.push(json!({"name": tail}));
                    }
                    // Arguments in 1-4 random pieces, some riding with a name piece.
                    let mut rest = args.as_str();
                    while !rest.is_empty() {
                        let mut at = rng.gen_range(1..=rest.len());
                        while !rest.is_char_boundary(at) {
                            at += 1;
                        }
                        let (piece, r) = rest.split_at(at);
                        rest = r;
                        if rng.gen_bool(0.3) {
                            if let Some(last) =
                                pieces.last_mut().filter(|p| p.get("arguments").is_none())
                            {
                                last["arguments"] = json!(piece);
                                continue;
                            }
                        }
                        pieces.push(json!({"arguments": piece}));
                    }
                    for (k, function) in pieces.into_iter().enumerate() {
                        let mut delta = json!({"function": function});
                        if k == 0 || rng.gen_bool(0.5) {
                            delta["index"] = json!(0);
                        }
                        if k == 0 {
                            delta["id"] = json!(format!("call_{round}_{choice}"));
                            delta["type"] = json!("function");
                        }
                        chunks.push(deltas(*choice, vec![delta]));
                    }
                }
                let choices: Vec<u64> = calls.iter().map(|(c, _)| *c).collect();
                chunks.push(finish(&choices, "tool_calls"));
                s.provider.set(Answer::Stream(chunks));
                let before = proposals(&s);
                let extra = if path == Path::ChatStream {
                    json!({"n": choices.len()})
                } else {
                    json!({})
                };
                let text = call(&s, path, extra).await;
                let got = delivered(path, &text);
                assert!(
                    got.is_empty(),
                    "round {round} ({name} cut at {cut}, {path:?}): leaked {got:?}\n{text}"
                );
                assert_eq!(
                    proposals(&s) - before,
                    calls.len(),
                    "round {round} ({name} cut at {cut}, {path:?}): one decision per call\n{text}"
                );
                let proposed = s.hooks.approvals.lock().unwrap();
                assert!(proposed[before..].iter().all(|a| a.tool_name == name));
            }
        }
    }
    assert!(round > 100, "{round} rounds");
}
