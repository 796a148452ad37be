//! A fake OpenAI-compatible upstream on loopback. It stands in for NVIDIA's
//! API (and the other providers), which the tests cannot reach.
//!
//! Behaviour is chosen by the model name the gateway sends upstream, so
//! parallel tests never interfere:
//! * `echo` (any unknown name) — 200 with usage; streams 5 chunks;
//! * `status-<code>` — that status with an OpenAI error body (429/503 add
//!   `Retry-After: 1`);
//! * `flaky429`, `flaky503` — first call fails like `status-…`, later calls succeed;
//! * `slow-<ms>` — waits before answering;
//! * `stall` — streams one chunk, then nothing (stalled stream);
//! * `reset` — streams one chunk, then breaks the connection;
//! * `truncated` — a provider that answers 200 and stops half-way: streamed,
//!   one chunk `"Hel"`, then the body ends cleanly without a finish reason
//!   or `[DONE]`; as JSON, a choice with `"Hel"` and `finish_reason: null`;
//! * `nochoices` — a JSON answer without `choices`;
//! * `slowstream` — 50 chunks, 100 ms apart (for disconnects);
//! * `gap-<ms>` — streams 3 chunks, `<ms>` apart (long silences);
//! * `tool-<name>` — a tool call to `<name>` with markdown-fenced arguments
//!   (streamed as tool-call deltas when `stream` is set);
//! * `toolflaky` — first a tool call with broken JSON, then a valid one;
//! * `cached…` — JSON usage of 1,000 prompt tokens, 600 of them read from
//!   the provider's cache (`prompt_tokens_details.cached_tokens`), and 200
//!   completion tokens.
//!
//! It speaks only the chat-completions family: every other path (such as
//! `/v1/responses` or `/v1/messages`) is recorded and answered 404, like
//! NVIDIA's free tier.
//!
//! Server-wide knobs: a rolling per-minute limit (429 + `Retry-After`
//! beyond it) and a forced status for every call (outage).

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    /// When it arrived (tokio's clock: virtual under a paused test clock).
    pub at: tokio::time::Instant,
}

#[derive(Default)]
pub struct FakeState {
    pub seen: Mutex<Vec<Seen>>,
    pub per_model: Mutex<HashMap<String, usize>>,
    pub force_status: Mutex<Option<u16>>,
    /// Keys whose daily quota is spent: every call with one (`Bearer
    /// <key>`) gets a 429 saying so, as NVIDIA answers.
    pub spent_keys: Mutex<Vec<String>>,
    pub limit_per_minute: Mutex<Option<usize>>,
    window: Mutex<VecDeque<Instant>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub streams_cancelled: AtomicUsize,
    pub streams_completed: AtomicUsize,
    /// Paths outside the chat-completions family that were asked for.
    pub not_found: Mutex<Vec<String>>,
    /// Those requests: path, headers, JSON body.
    pub not_found_seen: Mutex<Vec<(String, HeaderMap, Value)>>,
}

impl FakeState {
    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn hits_for(&self, model: &str) -> usize {
        self.per_model
            .lock()
            .unwrap()
            .get(model)
            .copied()
            .unwrap_or(0)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the fake saw a request")
    }
}

pub struct FakeUpstream {
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    pub state: Arc<FakeState>,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .fallback(not_found)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeUpstream {
            base_url: format!("http://{addr}/v1"),
            state,
        }
    }
}

async fn not_found(
    State(state): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.not_found.lock().unwrap().push(uri.path().to_string());
    state.not_found_seen.lock().unwrap().push((
        uri.path().to_string(),
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ));
    error(404, "this upstream speaks only chat completions")
}

struct InFlight(Arc<FakeState>);

impl InFlight {
    fn enter(state: &Arc<FakeState>) -> InFlight {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn error(status: u16, message: &str) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"error": {"message": message, "type": "fake_error", "code": status}})),
    )
        .into_response();
    if status == 429 || status == 503 {
        resp.headers_mut()
            .insert("retry-after", "1".parse().unwrap());
    }
    resp
}

fn over_limit(state: &FakeState) -> Option<u64> {
    let limit = (*state.limit_per_minute.lock().unwrap())?;
    let mut window = state.window.lock().unwrap();
    let now = Instant::now();
    while window
        .front()
        .is_some_and(|t| now - *t >= Duration::from_secs(60))
    {
        window.pop_front();
    }
    if window.len() >= limit {
        let wait = Duration::from_secs(60) - (now - window[0]);
        return Some(wait.as_secs() + 1);
    }
    window.push_back(now);
    None
}

fn marker(body: &Value) -> String {
    body.pointer("/messages/0/content")
        .or_else(|| body.get("prompt"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

async fn chat(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let count = {
        let mut per = state.per_model.lock().unwrap();
        let c = per.entry(model.clone()).or_default();
        *c += 1;
        *c
    };
    state.seen.lock().unwrap().push(Seen {
        path: "chat".into(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.clone(),
        at: tokio::time::Instant::now(),
    });
    let guard = InFlight::enter(&state);
    if let Some(status) = *state.force_status.lock().unwrap() {
        return error(status, "forced outage");
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if state.spent_keys.lock().unwrap().iter().any(|k| k == bearer) {
        return error(429, "daily quota exceeded for this key");
    }
    if let Some(wait) = over_limit(&state) {
        let mut resp = error(429, "fake upstream per-minute limit");
        resp.headers_mut()
            .insert("retry-after", wait.to_string().parse().unwrap());
        return resp;
    }
    if let Some(code) = model
        .strip_prefix("status-")
        .and_then(|c| c.parse::<u16>().ok())
    {
        return error(code, &format!("scripted {code}"));
    }
    if model == "flaky429" && count == 1 {
        return error(429, "scripted first 429");
    }
    if model == "flaky503" && count == 1 {
        return error(503, "scripted first 503");
    }
    if let Some(ms) = model
        .strip_prefix("slow-")
        .and_then(|c| c.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mark = marker(&body);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return sse(state.clone(), guard, model, mark, include_usage);
    }
    drop(guard);
    if model == "truncated" {
        return Json(json!({"id": "cmpl-cut", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]}))
        .into_response();
    }
    if model == "nochoices" {
        return Json(json!({"id": "cmpl-stub", "object": "chat.completion", "model": model}))
            .into_response();
    }
    let message = if let Some(tool) = model.strip_prefix("tool-") {
        tool_message(tool, "```json\n{\"name\": \"api\", \"replicas\": 3}\n```")
    } else if model == "toolflaky" {
        let args = if count == 1 {
            "{\"name\": \"api\", "
        } else {
            "{\"name\": \"api\", \"replicas\": 2}"
        };
        tool_message("scale_deployment", args)
    } else {
        json!({"role": "assistant", "content": format!("echo:{mark}")})
    };
    let usage = if model.starts_with("cached") {
        json!({"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
            "prompt_tokens_details": {"cached_tokens": 600}})
    } else {
        json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
    };
    Json(json!({
        "id": format!("cmpl-{mark}"),
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage
    }))
    .into_response()
}

fn tool_message(name: &str, args: &str) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}
    ]})
}

struct StreamGuard {
    state: Arc<FakeState>,
    finished: bool,
    _in_flight: InFlight,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.state.streams_completed
        } else {
            &self.state.streams_cancelled
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

fn chunk(model: &str, mark: &str, i: usize, count: usize) -> Bytes {
    let choice = if let Some(tool) = model.strip_prefix("tool-") {
        // A tool call in pieces: name first, the arguments over the rest.
        const ARGS: [&str; 4] = ["{\"name\": ", "\"api\", ", "\"replicas\": 3", "}"];
        let mut call = json!({"index": 0, "function": {"arguments": ARGS.get(i.saturating_sub(1)).copied().unwrap_or("")}});
        if i == 0 {
            call = json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": tool, "arguments": ""}});
        }
        let finish = if i + 1 == count {
            json!("tool_calls")
        } else {
            Value::Null
        };
        json!({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": finish})
    } else {
        let finish = if i + 1 == count {
            json!("stop")
        } else {
            Value::Null
        };
        json!({"index": 0, "delta": {"content": format!("{mark}#{i} ")}, "finish_reason": finish})
    };
    let v = json!({"id": format!("chatcmpl-{mark}"), "object": "chat.completion.chunk", "choices": [choice]});
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse(
    state: Arc<FakeState>,
    in_flight: InFlight,
    model: String,
    mark: String,
    include_usage: bool,
) -> Response {
    if model == "truncated" {
        let v = json!({"id": "chatcmpl-cut", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]});
        let once = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(Bytes::from(format!(
            "data: {v}\n\n"
        )))]);
        drop(in_flight);
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(once))
            .unwrap();
    }
    let (count, gap) = match model.as_str() {
        "slowstream" => (50, Duration::from_millis(100)),
        m if m.starts_with("gap-") => (3, Duration::from_millis(m[4..].parse().unwrap_or(1000))),
        _ => (5, Duration::from_millis(2)),
    };
    let guard = StreamGuard {
        state,
        finished: false,
        _in_flight: in_flight,
    };
    let stream = futures_util::stream::unfold((0usize, guard), move |(i, mut guard)| {
        let model = model.clone();
        let mark = mark.clone();
        async move {
            if i == usize::MAX || i > count + 1 {
                return None;
            }
            if i > 0 {
                match model.as_str() {
                    "stall" => futures_util::future::pending::<()>().await,
                    "reset" => {
                        // Let the headers and first chunk reach the client first.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return Some((
                            Err(std::io::Error::other("fake reset")),
                            (usize::MAX, guard),
                        ));
                    }
                    _ => tokio::time::sleep(gap).await,
                }
            }
            let bytes = if i < count {
                chunk(&model, &mark, i, count)
            } else if i == count {
                if include_usage {
                    let v = json!({"id": format!("chatcmpl-{mark}"), "object": "chat.completion.chunk", "choices": [],
                        "usage": {"prompt_tokens": 7, "completion_tokens": count, "total_tokens": 7 + count}});
                    Bytes::from(format!("data: {v}\n\n"))
                } else {
                    Bytes::new()
                }
            } else {
                guard.finished = true;
                Bytes::from_static(b"data: [DONE]\n\n")
            };
            Some((Ok::<Bytes, std::io::Error>(bytes), (i + 1, guard)))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn embeddings(State(state): State<Arc<FakeState>>, body: Bytes) -> Json<Value> {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.seen.lock().unwrap().push(Seen {
        path: "embeddings".into(),
        authorization: None,
        body,
        at: tokio::time::Instant::now(),
    });
    Json(
        json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
    )
}

async fn models() -> Result<Json<Value>, Infallible> {
    Ok(Json(
        json!({"object": "list", "data": [{"id": "m1", "object": "model"}, {"id": "org/m2", "object": "model"}]}),
    ))
}
