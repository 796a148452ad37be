//! A scripted fake LLM on loopback. It stands in for NVIDIA's free tier,
//! which the tests cannot reach, and like it speaks **only chat
//! completions** (`POST /v1/chat/completions`, streamed or not; `GET
//! /v1/models`). Everything else is a 404, so a CLI whose calls did not go
//! through the gateway's translation fails visibly.
//!
//! The script, per conversation: while no tool result is in the messages,
//! answer with one call to the shell tool the CLI offers (`exec` for
//! OpenClaw, `Bash` for Claude Code, `shell`/`exec_command` for Codex, the
//! first tool with a `command` parameter otherwise) running
//! `<moziplus> bb output T-… … && <moziplus> bb done T-…` (the task id as the
//! brief's `bb done` line names it, else `"$MOZI_TASK"`); once
//! a tool result is there, a final text message. Requests without tools
//! (titles, summaries) get a short text. Every answer carries usage
//! (`prompt_tokens` = 100 + the request's message count, `completion_tokens`
//! = 7), and the totals served are kept so tests can compare them with what
//! the daemon booked.
//!
//! It is as strict about message content as llama.cpp's server
//! (llama-cpp-python): every message needs `content` as a string, so an
//! assistant message carrying tool calls with `"content": null` or none at
//! all is refused with a 500 ("Input should be a valid string"). A CLI's
//! second turn of a tool loop therefore only passes if the gateway sends
//! what such a local server accepts.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the fake served.
#[derive(Debug, Default)]
pub struct Served {
    pub calls: usize,
    pub tool_calls: usize,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Each request: (path, model, Authorization header).
    pub requests: Vec<(String, String, Option<String>)>,
    /// A fixed error for every call: (status, message).
    pub fail_with: Option<(u16, String)>,
    /// A tool to call instead of the shell, with no arguments, when the
    /// request offers it (an MCP tool such as `mcp__moziplus__done`).
    pub mcp_tool: Option<String>,
    /// Requests refused for a message without string content.
    pub refused_content: usize,
    /// Run before the default `bb output … && bb done …` in the shell
    /// tool's command (e.g. a commit), joined with `&&`.
    pub shell_prefix: Option<String>,
}

#[derive(Clone)]
struct Ctx {
    served: Arc<Mutex<Served>>,
    bin: String,
}

pub struct ScriptedLlm {
    pub base_url: String,
    pub served: Arc<Mutex<Served>>,
    _thread: std::thread::JoinHandle<()>,
}

impl ScriptedLlm {
    /// Starts on a free loopback port (own thread and runtime, so blocking
    /// tests can use it). `bin` is the moziplus binary the tool call runs.
    pub fn start(bin: &str) -> ScriptedLlm {
        let served = Arc::new(Mutex::new(Served::default()));
        let ctx = Ctx {
            served: served.clone(),
            bin: bin.to_string(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new()
                    .route("/v1/chat/completions", post(chat))
                    .route("/v1/models", get(models))
                    .fallback(not_found)
                    .with_state(ctx);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        ScriptedLlm {
            base_url: format!("http://{addr}/v1"),
            served,
            _thread: thread,
        }
    }

    pub fn totals(&self) -> (usize, i64, i64) {
        let s = self.served.lock().unwrap();
        (s.calls, s.prompt_tokens, s.completion_tokens)
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"message": format!("the scripted LLM speaks only chat completions, not {uri}")}})),
    )
        .into_response()
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "scripted-model", "object": "model"}]}))
}

/// The name of the shell tool among `tools`, if any.
fn shell_tool(tools: &[Value]) -> Option<String> {
    let names: Vec<String> = tools
        .iter()
        .filter_map(|t| {
            t.pointer("/function/name")
                .or_else(|| t.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    for preferred in ["exec", "Bash", "shell", "exec_command", "local_shell"] {
        if names.iter().any(|n| n == preferred) {
            return Some(preferred.to_string());
        }
    }
    tools.iter().find_map(|t| {
        let params = t.pointer("/function/parameters/properties/command")?;
        let _ = params;
        t.pointer("/function/name")
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

/// The task id as the brief names it (`… bb done T-0001`), as a model
/// following the brief would write it; else `"$MOZI_TASK"`.
fn task_id(body: &Value) -> String {
    let text = body.to_string();
    text.find("bb done T-")
        .map(|i| {
            let id: String = text[i + "bb done ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            id
        })
        .unwrap_or_else(|| "\"$MOZI_TASK\"".to_string())
}

/// The tool call's arguments for `tool`.
fn arguments(tool: &str, bin: &str, task: &str, prefix: Option<&str>) -> Value {
    let mut command = format!(
        "{bin} bb output {task} --summary 'scripted result' --text 'made by the scripted LLM' && {bin} bb done {task}"
    );
    if let Some(p) = prefix {
        command = format!("{p} && {command}");
    }
    match tool {
        // An MCP tool of the board: its task and identity come from the run.
        t if t.starts_with("mcp__") => json!({}),
        // Codex's shell tools take an argv.
        "shell" | "local_shell" => json!({ "command": ["bash", "-lc", command] }),
        "exec_command" => json!({ "cmd": command }),
        "Bash" => json!({ "command": command, "description": "post the result and finish" }),
        _ => json!({ "command": command }),
    }
}

async fn chat(
    State(ctx): State<Ctx>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(i) = messages.iter().position(|m| {
        !m.get("content")
            .is_some_and(|c| c.is_string() || c.is_array())
    }) {
        // llama-cpp-python's pydantic validation, word for word in its detail.
        let detail = format!("messages.{i}.content: Input should be a valid string");
        ctx.served.lock().unwrap().refused_content += 1;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": detail, "type": "internal_server_error"}})),
        )
            .into_response();
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let has_result = messages
        .iter()
        .any(|m| m.get("role").and_then(Value::as_str) == Some("tool"));
    let usage = json!({
        "prompt_tokens": 100 + messages.len() as i64,
        "completion_tokens": 7,
        "total_tokens": 107 + messages.len() as i64,
    });
    let mcp_tool = ctx.served.lock().unwrap().mcp_tool.clone().filter(|name| {
        tools
            .iter()
            .any(|t| t.pointer("/function/name").or_else(|| t.get("name")) == Some(&json!(name)))
    });
    let call = if has_result {
        None
    } else {
        mcp_tool.or_else(|| shell_tool(&tools))
    };
    {
        let mut s = ctx.served.lock().unwrap();
        s.requests
            .push(("/v1/chat/completions".into(), model.clone(), auth));
        if let Some((status, msg)) = s.fail_with.clone() {
            return (
                StatusCode::from_u16(status).unwrap(),
                Json(json!({"error": {"message": msg, "type": "invalid_request_error"}})),
            )
                .into_response();
        }
        s.calls += 1;
        s.prompt_tokens += usage["prompt_tokens"].as_i64().unwrap();
        s.completion_tokens += 7;
        if call.is_some() {
            s.tool_calls += 1;
        }
    }
    let prefix = ctx.served.lock().unwrap().shell_prefix.clone();
    let id = format!("chatcmpl-{}", rand_id());
    let message = match &call {
        Some(tool) => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": format!("call_{}", rand_id()),
                "type": "function",
                "function": { "name": tool, "arguments": arguments(tool, &ctx.bin, &task_id(&body), prefix.as_deref()).to_string() }
            }]
        }),
        None => {
            json!({ "role": "assistant", "content": "Posted the result and marked the task done." })
        }
    };
    let finish = if call.is_some() { "tool_calls" } else { "stop" };
    if !stream {
        return Json(json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
            "usage": usage,
        }))
        .into_response();
    }
    let mut delta = message.clone();
    if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for (i, c) in calls.iter_mut().enumerate() {
            c["index"] = json!(i);
        }
    }
    if delta["content"].is_null() {
        delta.as_object_mut().unwrap().remove("content");
    }
    let chunk = |choices: Value, usage: Value| {
        let mut c = json!({ "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": choices });
        if !usage.is_null() {
            c["usage"] = usage;
        }
        format!("data: {c}\n\n")
    };
    let mut sse = String::new();
    sse.push_str(&chunk(
        json!([{ "index": 0, "delta": delta, "finish_reason": null }]),
        Value::Null,
    ));
    sse.push_str(&chunk(
        json!([{ "index": 0, "delta": {}, "finish_reason": finish }]),
        Value::Null,
    ));
    sse.push_str(&chunk(json!([]), usage));
    sse.push_str("data: [DONE]\n\n");
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        sse,
    )
        .into_response()
}

fn rand_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!("{:08x}", N.fetch_add(1, Ordering::Relaxed))
}
