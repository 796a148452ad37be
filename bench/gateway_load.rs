//! Load harness for the gateway's passthrough path (`bench/gateway.sh`
//! drives it; see docs/GATEWAY.md for the figures).
//!
//! One binary, several roles, so each runs in its own process and the
//! gateway's RSS can be read from /proc:
//!
//! * `fake PORT` — a minimal OpenAI-compatible upstream on loopback: a fixed
//!   chat completion, or 20 SSE chunks tagged with the caller's marker;
//! * `gateway PORT UPSTREAM_URL` — the moziplus gateway with one unlimited
//!   provider `fake` pointing at the upstream;
//! * `load URL MODEL RATE SECONDS [SURFACE]` — open-loop load: RATE
//!   requests/s for SECONDS on `chat` (default), `responses` or `messages`
//!   (`/v1/chat/completions`, `/v1/responses`, `/v1/messages`), prints
//!   latency percentiles as JSON;
//! * `ttfe URL MODEL SURFACE RATE COUNT` — COUNT streaming calls at RATE/s;
//!   time until the first content event (the first chunk of the upstream's
//!   text, re-cut or not) reaches the client, percentiles as JSON;
//! * `streams URL MODEL N` — N concurrent streaming calls; checks every
//!   stream carries only its own marker and ends with `[DONE]`.
//!
//! Run through `cargo bench --bench gateway_load -- ROLE ARGS…` (release
//! profile). Without a role it does nothing, so `cargo test --benches` and
//! `cargo bench` stay quick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use futures_util::StreamExt;
use moziplus::gateway::{Gateway, GatewayConfig, NoopHooks};
use serde_json::{json, Value};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(role) = args.first().cloned() else {
        eprintln!("usage: gateway_load fake|gateway|load|streams ARGS… (see bench/gateway.sh)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        match role.as_str() {
            "fake" => fake(&args[1]).await,
            "gateway" => gateway(&args[1], &args[2]).await,
            "gateway-budget" => gateway_budget(&args[1], &args[2]).await,
            "load" => {
                load(
                    &args[1],
                    &args[2],
                    args[3].parse().unwrap(),
                    args[4].parse().unwrap(),
                    args.get(5).map_or("chat", String::as_str),
                )
                .await
            }
            "ttfe" => {
                ttfe(
                    &args[1],
                    &args[2],
                    &args[3],
                    args[4].parse().unwrap(),
                    args[5].parse().unwrap(),
                )
                .await
            }
            "streams" => streams(&args[1], &args[2], args[3].parse().unwrap()).await,
            other => eprintln!("unknown role {other}"),
        }
    });
}

/// Sent by the load generator to every target. LiteLLM's proxy refuses to
/// start without a master key; the gateway (NoopHooks) treats it as an
/// anonymous key and the fake ignores it, so all three see the same request.
const BENCH_KEY: &str = "sk-bench-master-key-0123456789";

const COMPLETION: &str = r#"{"id":"cmpl-1","object":"chat.completion","created":0,"model":"echo","choices":[{"index":0,"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

async fn fake_chat(body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !v.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(COMPLETION))
            .unwrap();
    }
    let marker = v
        .pointer("/messages/0/content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let chunks = futures_util::stream::unfold(0usize, move |i| {
        let marker = marker.clone();
        async move {
            if i > 20 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let data = if i == 20 {
                "data: [DONE]\n\n".to_string()
            } else {
                let c = json!({"id": "s", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": format!("{marker}:{i};")}}]});
                format!("data: {c}\n\n")
            };
            Some((Ok::<Bytes, std::io::Error>(Bytes::from(data)), i + 1))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(chunks))
        .unwrap()
}

async fn fake(port: &str) {
    let app = Router::new().route("/v1/chat/completions", post(fake_chat));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind fake")
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await.expect("serve fake");
}

async fn gateway(port: &str, upstream: &str) {
    let cfg: GatewayConfig = serde_json::from_value(json!({
        "providers": [{"name": "fake", "base_url": upstream, "limited": false, "stream_usage": false}]
    }))
    .expect("config");
    // As in the daemon: a Prometheus recorder is installed, so metric
    // recording is part of the measured cost.
    let _metrics = moziplus::gateway::install_prometheus_recorder().expect("recorder");
    let gw = Gateway::new(cfg, Arc::new(NoopHooks), moziplus::secrets::env_var).expect("gateway");
    // As `moziplus serve` does: TCP_NODELAY on accepted connections.
    // `GW_NODELAY=0` leaves Nagle on, for an A/B of what it costs the tail.
    let nodelay = std::env::var("GW_NODELAY").map_or(true, |v| v != "0");
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind gateway")
        .tap_io(move |tcp| {
            let _ = tcp.set_nodelay(nodelay);
        });
    axum::serve(listener, gw.router())
        .await
        .expect("serve gateway");
}

/// Hooks that keep a budget for every call, as the daemon's do: the key is
/// a run of task T-1, agent `bench`, project `bench`, with a task cap no
/// call reaches; each call reserves its worst case in the daemon's
/// `BudgetBook` (five windows), books its usage there and releases.
struct BudgetHooks {
    budgets: moziplus::daemon::gateway_hooks::budgets::Budgets,
}

fn bench_run() -> moziplus::gateway::RunAttribution {
    moziplus::gateway::RunAttribution {
        session_id: "S-bench".into(),
        project: "bench".into(),
        task: Some("T-1".into()),
        agent: "bench".into(),
        task_priority: None,
        model: None,
    }
}

fn payer(a: &moziplus::gateway::RunAttribution) -> moziplus::daemon::budget_book::Payer<'_> {
    moziplus::daemon::budget_book::Payer {
        project: &a.project,
        task: a.task.as_deref(),
        agent: &a.agent,
    }
}

impl moziplus::gateway::GatewayHooks for BudgetHooks {
    fn resolve_key(&self, _key: &str) -> Option<moziplus::gateway::RunAttribution> {
        Some(bench_run())
    }
    fn record_usage(
        &self,
        a: &moziplus::gateway::RunAttribution,
        usage: &moziplus::gateway::TokenUsage,
    ) {
        self.budgets.spend(a, usage);
    }
    fn budgets_apply(&self, _a: &moziplus::gateway::RunAttribution) -> bool {
        true
    }
    fn reserve(
        &self,
        a: &moziplus::gateway::RunAttribution,
        e: &moziplus::gateway::CallEstimate,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<Option<u64>, moziplus::gateway::BudgetRefusal>,
    > {
        let r = self
            .budgets
            .book
            .reserve(payer(a), self.budgets.worst_case(e))
            .map_err(|r| moziplus::gateway::BudgetRefusal {
                message: r.message(),
            });
        Box::pin(async move { r })
    }
    fn release(&self, _a: &moziplus::gateway::RunAttribution, id: u64) {
        self.budgets.book.release(id);
    }
    fn propose_approval(
        &self,
        _r: moziplus::gateway::ApprovalRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("no approvals in the benchmark".to_string()) })
    }
}

/// The gateway with [`BudgetHooks`], serving `/metrics` too (the budget
/// check's histogram, `moziplus_gateway_budget_check_seconds`).
async fn gateway_budget(port: &str, upstream: &str) {
    let cfg: GatewayConfig = serde_json::from_value(json!({
        "providers": [{"name": "fake", "base_url": upstream, "limited": false, "stream_usage": false}],
        "prices": [{"model": "fake/*", "input": 1.0, "output": 2.0}]
    }))
    .expect("config");
    let handle = moziplus::gateway::install_prometheus_recorder().expect("recorder");
    let budgets: moziplus::config::BudgetsConfig = serde_yaml_ng::from_str(
        "tasks: {'*': {tokens: 1000000000000, usd: 1000000}}
projects: {'*': {day: {usd: 1000000}, month: {usd: 1000000}}}
agents: {'*': {day: {tokens: 1000000000000}}}
home: {day: {usd: 1000000}}
",
    )
    .expect("budgets");
    let hooks = BudgetHooks {
        budgets: moziplus::daemon::gateway_hooks::budgets::Budgets::new(
            budgets,
            Vec::new(),
            Arc::new(moziplus::blackboard::SystemClock),
        ),
    };
    let gw = Gateway::new(cfg, Arc::new(hooks), moziplus::secrets::env_var).expect("gateway");
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind gateway")
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    let app = gw.router().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    axum::serve(listener, app).await.expect("serve gateway");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Endpoint and body of one call on a surface; the fake echoes `marker`.
fn request(url: &str, surface: &str, model: &str, marker: &str, stream: bool) -> (String, Bytes) {
    let (path, body) = match surface {
        "chat" => (
            "/v1/chat/completions",
            json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": marker}]}),
        ),
        "responses" => (
            "/v1/responses",
            json!({"model": model, "stream": stream, "input": marker}),
        ),
        "messages" => (
            "/v1/messages",
            json!({"model": model, "stream": stream, "max_tokens": 64, "messages": [{"role": "user", "content": marker}]}),
        ),
        other => panic!("unknown surface {other}: chat, responses or messages"),
    };
    (format!("{url}{path}"), Bytes::from(body.to_string()))
}

async fn load(url: &str, model: &str, rate: u64, seconds: u64, surface: &str) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let (endpoint, body) = request(url, surface, model, "ping", false);
    // Warm-up: open connections, fill caches.
    for _ in 0..200 {
        let _ = client
            .post(&endpoint)
            .bearer_auth(BENCH_KEY)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
    }
    let total = rate * seconds;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, endpoint, body) = (client.clone(), endpoint.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let resp = client
                .post(&endpoint)
                .bearer_auth(BENCH_KEY)
                .header("anthropic-version", "2023-06-01")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let ok = match resp {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (t.elapsed().as_secs_f64() * 1000.0, ok)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        let (ms, ok) = t.await.unwrap();
        if ok {
            lat.push(ms);
        } else {
            errors += 1;
        }
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{}",
        json!({
            "requests": total, "errors": errors, "achieved_rps": (achieved * 10.0).round() / 10.0,
            "p50_ms": percentile(&lat, 0.50), "p90_ms": percentile(&lat, 0.90),
            "p99_ms": percentile(&lat, 0.99), "max_ms": percentile(&lat, 1.0),
        })
    );
}

async fn ttfe(url: &str, model: &str, surface: &str, rate: u64, count: u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    // Warm-up: open connections (not measured), as `load` does.
    let warm: Vec<_> = (0..50)
        .map(|i| {
            let (endpoint, body) = request(url, surface, model, &format!("w{i}"), true);
            let req = client
                .post(endpoint)
                .body(body)
                .header("content-type", "application/json");
            tokio::spawn(async move {
                if let Ok(r) = req.send().await {
                    let _ = r.bytes().await;
                }
            })
        })
        .collect();
    for w in warm {
        let _ = w.await;
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count as usize);
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let marker = format!("t{i}");
        let (endpoint, body) = request(url, surface, model, &marker, true);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let resp = client
                .post(&endpoint)
                .bearer_auth(BENCH_KEY)
                .header("anthropic-version", "2023-06-01")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()?;
            let first = format!("{marker}:0;");
            let mut s = resp.bytes_stream();
            let mut text = String::new();
            let mut at = None;
            while let Some(chunk) = s.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.ok()?));
                if at.is_none() && text.contains(&first) {
                    at = Some(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            at
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(ms) => lat.push(ms),
            None => errors += 1,
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{}",
        json!({"surface": surface, "streams": count, "errors": errors,
            "p50_ms": percentile(&lat, 0.50), "p90_ms": percentile(&lat, 0.90),
            "p99_ms": percentile(&lat, 0.99), "max_ms": percentile(&lat, 1.0)})
    );
}

async fn streams(url: &str, model: &str, n: usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()
        .unwrap();
    let endpoint = format!("{url}/v1/chat/completions");
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, endpoint, model) = (client.clone(), endpoint.clone(), model.to_string());
            tokio::spawn(async move {
                let marker = format!("m{i}");
                let body = json!({"model": model, "stream": true,
                    "messages": [{"role": "user", "content": marker}]});
                let resp = client
                    .post(&endpoint)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut s = resp.bytes_stream();
                let mut text = String::new();
                while let Some(chunk) = s.next().await {
                    text.push_str(&String::from_utf8_lossy(&chunk.map_err(|e| e.to_string())?));
                }
                let own = text.matches(&format!("\"{marker}:")).count();
                let any = text.matches("\"m").count();
                if own != 20 || any != 20 || !text.ends_with("data: [DONE]\n\n") {
                    return Err(format!(
                        "stream {marker}: {own} own chunks, {any} tagged chunks"
                    ));
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e);
        }
    }
    println!(
        "{}",
        json!({"streams": n, "failed": failures.len(), "first_failures": failures.iter().take(3).collect::<Vec<_>>(),
            "seconds": (start.elapsed().as_secs_f64() * 100.0).round() / 100.0})
    );
}
