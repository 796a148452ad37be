//! Regression tests of issue 13's HTTP-side defects: each test reproduces
//! the attack or fault the issue describes against the real `moziplus serve`
//! child process, over real loopback sockets, with real blackboard files.
//!
//! * defect 3 — the gateway admin API needs the token and JSON;
//! * defect 5 — cross-origin writes, non-JSON writes and foreign `Host`s;
//! * defect 9 — idle sockets under a 1,024-descriptor limit;
//! * defect 10 — the gateway as an open relay, and its body memory;
//! * defect 11 — a session log replaced by a symlink;
//! * defect 12 — a removed or replaced `blackboard.db`;
//! * defect 13 — a FIFO named `SKILL.md`, and shutdown;
//! * defect 14 — reserved actors, the JSON 413, a cursor past the end.

#[path = "support/fake_upstream.rs"]
mod fake_upstream;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// One raw HTTP/1.1 request with the given headers and body; `Host` is
/// `127.0.0.1:<port>` unless given. Returns (status, head, body).
///
/// Not the shared `post_json`: these tests are about what the server does
/// with exact bytes on the wire (a foreign `Host`, an `Origin`, a missing or
/// wrong `Content-Type`, `Transfer-Encoding` framing, bodies that are not
/// JSON), which a JSON client would normalise away.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("transfer-encoding") || k.eq_ignore_ascii_case("content-length")
    }) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&String::from_utf8_lossy(&buf))
}

/// The JSON error of a refusal: asserts the status, the `{"error":
/// {"message","type"}}` shape, and that the message names `needle`.
fn assert_json_error(got: &(u16, String, String), code: u16, needle: &str) {
    let (status, head, body) = got;
    assert_eq!(*status, code, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "a JSON error: {head}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "{needle:?} in {v}"
    );
    assert!(v["error"]["type"].is_string(), "{v}");
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// An agent that finishes its task at once.
fn done_agent(home: &TestHome) {
    let script = home.script(
        "ok.sh",
        "#!/bin/bash\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
    );
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: w\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
}

fn task_done(home: &TestHome, project: &str, task: &str) -> bool {
    query_i64(
        &home.db(project),
        &format!("SELECT COUNT(*) FROM task WHERE id = '{task}' AND status = 'done'"),
    ) == 1
}

#[test]
fn gateway_admin_api_needs_the_token_and_a_json_body() {
    let change = br#"{"rate_per_minute":0.001,"queue_max_size":1}"#;
    // The issue's setup: only server.api_token is set, and the exploit comes
    // with no credentials, then as text/plain from another origin.
    let home = TestHome::with_config("server:\n  api_token: s3cret\n", "");
    let d = Daemon::start(&home);
    let got = request(d.port, "POST", "/api/gateway/config", &[JSON], change);
    assert_json_error(&got, 401, "Authorization");
    let got = request(
        d.port,
        "POST",
        "/api/gateway/config",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "http://evil.example"),
        ],
        change,
    );
    assert_eq!(got.0, 403, "{}", got.2);
    let (_, _, body) = request(d.port, "GET", "/api/gateway/config", &[], b"");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(v["queue_max_size"], json!(1), "nothing changed: {v}");
    let (code, _, body) = request(
        d.port,
        "POST",
        "/api/gateway/config",
        &[JSON, ("Authorization", "Bearer s3cret")],
        br#"{"rate_per_minute":30}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(d.stop().success());

    // With a gateway admin token as well, either token works; the checks
    // below come with a valid token, so only the content type or origin is
    // wrong.
    let home = TestHome::with_config(
        "server:\n  api_token: s3cret\ngateway:\n  admin_token: adm1n\n",
        "",
    );
    let d = Daemon::start(&home);
    let got = request(d.port, "POST", "/api/gateway/config", &[JSON], change);
    assert_json_error(&got, 401, "Authorization");
    // As text/plain from another origin, even with the token.
    let got = request(
        d.port,
        "POST",
        "/api/gateway/config",
        &[
            ("Content-Type", "text/plain"),
            ("Authorization", "Bearer s3cret"),
        ],
        change,
    );
    assert_json_error(&got, 415, "application/json");
    let got = request(
        d.port,
        "POST",
        "/api/gateway/config",
        &[
            JSON,
            ("Authorization", "Bearer s3cret"),
            ("Origin", "http://evil.example"),
        ],
        change,
    );
    assert_json_error(&got, 403, "cross-origin");
    let got = request(
        d.port,
        "POST",
        "/api/gateway/config",
        &[JSON, ("Authorization", "Bearer wrong")],
        change,
    );
    assert_json_error(&got, 401, "wrong");
    // Nothing changed.
    let (_, _, body) = request(
        d.port,
        "GET",
        "/api/gateway/config",
        &[("Authorization", "Bearer adm1n")],
        b"",
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(v["rate_per_minute"], json!(0.001), "{v}");
    // The API token and the gateway admin token both work.
    for token in ["s3cret", "adm1n"] {
        let auth = format!("Bearer {token}");
        let (code, _, body) = request(
            d.port,
            "POST",
            "/api/gateway/config",
            &[JSON, ("Authorization", &auth)],
            br#"{"rate_per_minute":30}"#,
        );
        assert_eq!(code, 200, "{token}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["rate_per_minute"], json!(30.0), "{v}");
    }
    d.stop();
}

#[test]
fn cross_origin_writes_non_json_writes_and_foreign_hosts_are_refused() {
    let home = TestHome::with_config("server:\n  allowed_hosts: [\"mozi.lan\"]\n", "");
    home.create_project("p");
    let d = Daemon::start(&home);
    let port = d.port;
    // The issue's exploit: a page on another origin stops the ticker.
    let got = request(
        port,
        "POST",
        "/api/daemon/stop",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_json_error(&got, 403, "cross-origin");
    assert_eq!(d.status()["ticker_running"], true, "the ticker still runs");
    // `Origin: null` (sandboxed frames, file://) is not ours either.
    let got = request(port, "POST", "/api/daemon/stop", &[("Origin", "null")], b"");
    assert_json_error(&got, 403, "cross-origin");
    // A form post (a "simple" cross-site request) with a JSON-looking body.
    let body = br#"{"title":"injected"}"#;
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let got = request(
            port,
            "POST",
            "/api/projects/p/tasks",
            &[("Content-Type", ct)],
            body,
        );
        assert_json_error(&got, 415, "application/json");
    }
    // A body with no content type at all.
    let got = request(port, "POST", "/api/projects/p/tasks", &[], body);
    assert_json_error(&got, 415, "application/json");
    assert_eq!(
        query_i64(&home.db("p"), "SELECT COUNT(*) FROM task"),
        0,
        "no refused write created a task"
    );
    // DNS rebinding: a foreign name for our address, for reads too.
    for host in [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1:1",
        "mozi.lan.evil.example",
    ] {
        let host = host.replace("{port}", &port.to_string());
        let got = request(port, "GET", "/api/daemon/status", &[("Host", &host)], b"");
        assert_json_error(&got, 403, "allowed_hosts");
        let got = request(port, "GET", "/", &[("Host", &host)], b"");
        assert_eq!(got.0, 403, "the dashboard too: {host}");
    }
    // Our own names, and server.allowed_hosts, work.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        "localhost".to_string(),
        format!("mozi.lan:{port}"),
    ] {
        let got = request(port, "GET", "/api/daemon/status", &[("Host", &host)], b"");
        assert_eq!(got.0, 200, "{host}: {}", got.2);
    }
    // The dashboard's own writes: same origin, JSON body (frontend/src/api.ts).
    let own = format!("http://127.0.0.1:{port}");
    let (code, _, body) = request(
        port,
        "POST",
        "/api/projects/p/tasks",
        &[JSON, ("Origin", &own)],
        br#"{"title":"from the dashboard"}"#,
    );
    assert_eq!(code, 201, "{body}");
    let own = format!("http://localhost:{port}");
    let (code, _, body) = request(
        port,
        "POST",
        "/api/daemon/stop",
        &[
            ("Host", &format!("localhost:{port}")),
            ("Origin", &own),
            JSON,
        ],
        b"{}",
    );
    assert_eq!(code, 200, "{body}");
    // A script with no Origin and no body (curl -X POST) still works.
    let (code, _, body) = request(port, "POST", "/api/daemon/start", &[], b"");
    assert_eq!(code, 200, "{body}");
    d.stop();
}

/// `moziplus serve` with its descriptor limit (soft and hard) set to
/// `nofile`, as a shell's `ulimit -n` would.
fn start_with_fd_limit(home: &TestHome, nofile: u64) -> Daemon {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.path().join("daemon.log"))
        .unwrap();
    let mut cmd = home.command();
    cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                nofile,
                nofile,
            )
            .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().expect("spawn daemon");
    let d = Daemon { child, port };
    wait_for(Duration::from_secs(30), "daemon /health", || {
        d.get("/health").is_some_and(|(c, _)| c == 200)
    });
    d
}

/// The soft descriptor limit of a process, from /proc.
fn fd_limit_of(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn idle_sockets_under_a_1024_descriptor_limit_leave_the_daemon_answering() {
    // This process holds 1,100 sockets: lift its own soft limit first.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 2048,
        "the test needs a hard descriptor limit of at least 2048, have {hard}"
    );
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();

    let home = TestHome::with_config(
        "daemon:\n  tick_interval: 1\nserver:\n  header_timeout: 2\n",
        "",
    );
    done_agent(&home);
    home.create_project("p");
    let d = start_with_fd_limit(&home, 1024);
    assert_eq!(
        fd_limit_of(d.pid()),
        1024,
        "the daemon runs under 1,024 descriptors"
    );

    // The issue's attack: 1,100 connections that never send a byte.
    let mut idle: Vec<TcpStream> = (0..1100)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", d.port)).unwrap_or_else(|e| panic!("socket {i}: {e}"))
        })
        .collect();
    let t0 = Instant::now();
    let (code, body) = d.get("/health").expect("/health answers under the flood");
    let health_wait = t0.elapsed();
    assert_eq!(code, 200, "{body}");
    assert!(
        health_wait < Duration::from_secs(15),
        "/health took {health_wait:?} behind 1,100 idle sockets"
    );
    println!("/health answered in {health_wait:?} behind 1,100 idle sockets");
    // Work still runs: briefs, logs and the database find descriptors.
    let t = home.create_task("p", "runs during the flood", &[]);
    wait_for(Duration::from_secs(60), "the task to be done", || {
        task_done(&home, "p", &t)
    });
    // Idle sockets are closed by the daemon (the header timeout), not kept.
    let mut closed = 0;
    for s in idle.iter_mut().take(200) {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 200,
        "the daemon closes connections that send nothing"
    );
    drop(idle);
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap();
    assert!(
        !log.contains("os error 24"),
        "no run hit the descriptor limit:\n{log}"
    );
    assert!(d.stop().success());
}

static SINK_PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

/// An upstream that reads a chat request of any size and answers a minimal
/// completion; counts what it served. Stands in for NVIDIA.
async fn sink_upstream() -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use axum::routing::post;
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(move |body: axum::body::Bytes| {
                let counter = counter.clone();
                async move {
                    assert!(body.len() > 1024 * 1024);
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(json!({
                        "id": "chatcmpl-sink", "object": "chat.completion", "created": 0,
                        "model": "any",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "ok"}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }))
                }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    let port = *SINK_PORT
        .get()
        .expect("the sink's port is chosen with the config");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    served
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Sends a large body the way curl does (`Expect: 100-continue`): the body
/// goes only once the server asks for it. Returns the final status. Kept
/// local (not `post_json`): reqwest does not speak `Expect: 100-continue`,
/// and the test is about the server refusing the body before reading it.
fn post_large(port: u16, path: &str, token: &str, body: &[u8]) -> u16 {
    use std::io::BufRead;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
    let status_of = |reader: &mut std::io::BufReader<TcpStream>| -> u16 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let code = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        code
    };
    let first = status_of(&mut reader);
    if first != 100 {
        return first;
    }
    s.write_all(body).unwrap();
    status_of(&mut reader)
}

#[test]
fn the_gateway_needs_a_key_when_a_token_is_set_and_bounds_body_memory() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The fake stands in for NVIDIA, which the tests cannot reach.
    let up = rt.block_on(fake_upstream::FakeUpstream::start());
    let home = TestHome::with_config(
        &format!(
            "server:\n  api_token: s3cret\ngateway:\n  providers:\n    - name: fake\n      base_url: {}\n      limited: false\n    - name: sink\n      base_url: http://127.0.0.1:{}/v1\n      limited: false\n",
            up.base_url,
            SINK_PORT.get_or_init(free_port)
        ),
        "",
    );
    let d = Daemon::start(&home);
    let port = d.port;
    let chat = br#"{"model":"fake/echo","messages":[{"role":"user","content":"hi"}]}"#;
    // The issue's relay: no key at all, or a made-up one.
    let got = request(port, "POST", "/v1/chat/completions", &[JSON], chat);
    assert_json_error(&got, 401, "Authorization");
    let got = request(
        port,
        "POST",
        "/v1/chat/completions",
        &[JSON, ("Authorization", "Bearer sk-guess")],
        chat,
    );
    assert_json_error(&got, 401, "unknown key");
    let got = request(port, "GET", "/v1/models", &[], b"");
    assert_eq!(got.0, 401, "{}", got.2);
    assert_eq!(up.state.hits(), 0, "nothing was forwarded");
    // The operator's token works.
    let (code, _, body) = request(
        port,
        "POST",
        "/v1/chat/completions",
        &[JSON, ("Authorization", "Bearer s3cret")],
        chat,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(up.state.hits(), 1);

    // One body over the gateway's 32 MiB limit: 413, as JSON, unread.
    let got = request(
        port,
        "POST",
        "/v1/chat/completions",
        &[
            JSON,
            ("Authorization", "Bearer s3cret"),
            ("Content-Length", "41943040"),
        ],
        b"",
    );
    assert_json_error(&got, 413, "limit");

    // 20 concurrent 30 MB bodies (the issue: 16 MB -> 1.1 GB), to an
    // upstream that takes bodies of any size (the fake's JSON extractor
    // stops at 2 MB).
    let sink = rt.block_on(sink_upstream());
    let before = peak_rss(d.pid());
    let content = "x".repeat(30 * 1024 * 1024);
    let big = serde_json::to_vec(&json!({
        "model": "sink/any",
        "messages": [{"role": "user", "content": content}],
    }))
    .unwrap();
    drop(content);
    let big = std::sync::Arc::new(big);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let big = big.clone();
                scope.spawn(move || post_large(port, "/v1/chat/completions", "s3cret", &big))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = peak_rss(d.pid());
    println!(
        "20 x 30 MB bodies: statuses {statuses:?}; daemon peak RSS {} MB before, {} MB after",
        before / (1 << 20),
        after / (1 << 20)
    );
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "each body is served or refused for memory: {statuses:?}"
    );
    assert!(
        statuses.contains(&200),
        "some bodies are served: {statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "past the bound bodies are refused: {statuses:?}"
    );
    assert_eq!(
        sink.load(std::sync::atomic::Ordering::SeqCst),
        statuses.iter().filter(|s| **s == 200).count(),
        "every served body reached the upstream"
    );
    assert!(
        after < 450 * (1 << 20),
        "peak RSS {} MB: request bodies are not bounded",
        after / (1 << 20)
    );
    // The daemon is still fine.
    assert_eq!(d.get("/health").unwrap().0, 200);
    assert!(d.stop().success());
}

/// An agent whose script is `body` (bash), for every task.
fn agent_script(home: &TestHome, body: &str) {
    let script = home.script("agent.sh", &format!("#!/bin/bash\n{body}\n"));
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: w\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_session_log_replaced_by_a_symlink_is_not_followed() {
    let home = TestHome::with_config("daemon:\n  tick_interval: 1\n", "");
    let secret = home.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET outside the project\n").unwrap();
    // The issue's agent: it swaps its own log for a link to a file it wants
    // the daemon to serve.
    agent_script(
        &home,
        &format!(
            "log=\"$MOZI_HOME/projects/p/artifacts/$MOZI_TASK/sessions/$MOZI_SESSION.log\"\n\
             echo 'my honest output'\n\
             rm -f \"$log\" && ln -s {} \"$log\"\n\
             exec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"",
            secret.display()
        ),
    );
    home.create_project("p");
    let d = Daemon::start(&home);
    let t = home.create_task("p", "swap the log", &[]);
    wait_for(Duration::from_secs(60), "the task to be done", || {
        task_done(&home, "p", &t)
    });
    let sid = query_strings(
        &home.db("p"),
        &format!("SELECT id FROM session WHERE task_id = '{t}'"),
    )
    .remove(0);
    let log = home
        .path()
        .join(format!("projects/p/artifacts/{t}/sessions/{sid}.log"));
    assert!(
        std::fs::symlink_metadata(&log)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the agent replaced its log with a link"
    );
    let got = request(
        d.port,
        "GET",
        &format!("/api/projects/p/sessions/{sid}/log"),
        &[],
        b"",
    );
    assert!(
        !got.2.contains("TOP-SECRET"),
        "the linked file leaked: {}",
        got.2
    );
    assert_json_error(&got, 403, "symbolic link");
    let got = request(
        d.port,
        "GET",
        &format!("/api/projects/p/sessions/{sid}/log/stream"),
        &[],
        b"",
    );
    assert!(
        !got.2.contains("TOP-SECRET"),
        "the linked file leaked: {}",
        got.2
    );
    assert_json_error(&got, 403, "symbolic link");

    // A link to a file inside the project is refused too (never followed),
    // and so is a log path whose folder leads out of the project.
    let sessions = log.parent().unwrap().to_path_buf();
    std::fs::remove_file(&log).unwrap();
    std::fs::remove_dir_all(&sessions).unwrap();
    std::os::unix::fs::symlink(home.path(), &sessions).unwrap();
    std::fs::write(
        home.path().join(format!("{sid}.log")),
        "TOP-SECRET via a folder\n",
    )
    .unwrap();
    let got = request(
        d.port,
        "GET",
        &format!("/api/projects/p/sessions/{sid}/log"),
        &[],
        b"",
    );
    assert!(
        !got.2.contains("TOP-SECRET"),
        "the linked folder leaked: {}",
        got.2
    );
    assert_json_error(&got, 403, "outside");
    assert!(d.stop().success());
}

#[test]
fn a_removed_or_replaced_blackboard_refuses_writes_and_fails_readiness() {
    let home = TestHome::with_config("daemon:\n  tick_interval: 1\n", "");
    home.create_project("gone");
    home.create_project("swapped");
    home.create_project("fine");
    let d = Daemon::start(&home);
    let create = |project: &str| {
        request(
            d.port,
            "POST",
            &format!("/api/projects/{project}/tasks"),
            &[JSON],
            br#"{"title":"must not vanish"}"#,
        )
    };
    assert_eq!(create("gone").0, 201);
    // Ready once the first tick has completed (a loaded host may take a
    // few seconds to get there).
    wait_for(Duration::from_secs(20), "the daemon ready", || {
        d.get("/health/ready").is_some_and(|(code, _)| code == 200)
    });

    // The issue: delete the file under the running daemon.
    std::fs::remove_file(home.db("gone")).unwrap();
    let got = create("gone");
    assert_json_error(&got, 503, "removed");
    // Replace one by another file (a restore done by hand, an editor's save).
    let other = home.path().join("other.db");
    std::fs::copy(home.db("swapped"), &other).unwrap();
    std::fs::rename(&other, home.db("swapped")).unwrap();
    let got = create("swapped");
    assert_json_error(&got, 503, "replaced");
    // Readiness names both; the healthy project keeps working.
    let (code, body) = d.get("/health/ready").unwrap();
    assert_eq!(code, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let problems = v["project_problems"].to_string();
    assert!(
        problems.contains("gone") && problems.contains("removed"),
        "{v}"
    );
    assert!(
        problems.contains("swapped") && problems.contains("replaced"),
        "{v}"
    );
    assert!(!problems.contains("\"fine\""), "{v}");
    assert_eq!(create("fine").0, 201);
    // Ticks (every second) neither write into them nor put an empty file in
    // their place: the refusal stands until the operator acts.
    let ticks = d.ticks();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!home.db("gone").exists(), "no empty database re-created");
    // Positive controls: ticks did run in the window, and the same file
    // probe sees the database of the project that is fine.
    assert!(d.ticks() > ticks, "the ticker ran during the wait");
    assert!(
        home.db("fine").exists(),
        "the probe sees an existing database"
    );
    assert_json_error(&create("gone"), 503, "removed");
    assert_json_error(&create("swapped"), 503, "replaced");
    assert_eq!(d.get("/health/ready").unwrap().0, 503);
    let status = d.stop();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(home.path().join("daemon.log")).unwrap()
    );
}

#[test]
fn a_fifo_named_skill_md_does_not_freeze_the_daemon_and_sigterm_ends_it() {
    let home = TestHome::with_config("daemon:\n  tick_interval: 1\n", "");
    done_agent(&home);
    home.create_project("p");
    let d = Daemon::start(&home);
    // The issue: a FIFO where a skill's SKILL.md should be. Reading it
    // blocks until a writer appears, which never happens.
    let skill = home.path().join("projects/p/skills/trap");
    std::fs::create_dir_all(&skill).unwrap();
    nix::unistd::mkfifo(&skill.join("SKILL.md"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::fs::write(skill.join("meta.yaml"), "tags: [x]\nversion: 1\n").unwrap();
    let t = home.create_task("p", "brief reads the skills", &[]);
    // The run's brief reads the skill folder: the daemon must keep answering,
    // and the refusal must name the FIFO.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut named = false;
    while Instant::now() < deadline && !named {
        let t0 = Instant::now();
        let (code, _) = d.get("/health").expect("/health answers");
        assert_eq!(code, 200);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "/health took {:?}",
            t0.elapsed()
        );
        named = std::fs::read_to_string(home.path().join("daemon.log"))
            .unwrap()
            .contains("a FIFO");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        named,
        "the daemon reports the FIFO:\n{}",
        std::fs::read_to_string(home.path().join("daemon.log")).unwrap()
    );
    // The skills route refuses it too, promptly.
    let got = request(d.port, "GET", "/api/projects/p/skills", &[], b"");
    assert!(got.2.contains("a FIFO"), "{}", got.2);
    // A broken skill is skipped, not a reason to hold the task (issue 23,
    // finding 6): the run goes ahead with a brief without it.
    wait_for(
        Duration::from_secs(30),
        "the task done despite the FIFO",
        || task_done(&home, "p", &t),
    );
    // SIGTERM ends the process (support::Daemon::stop waits at most 60 s).
    let t0 = Instant::now();
    let status = d.stop();
    println!("stopped in {:?} with {status}", t0.elapsed());
    assert!(
        t0.elapsed() < Duration::from_secs(40),
        "shutdown took {:?}",
        t0.elapsed()
    );
}

#[test]
fn reserved_actors_json_413_and_a_cursor_past_the_end() {
    let home = TestHome::with_config("", "");
    home.create_project("p");
    let d = Daemon::start(&home);
    let port = d.port;
    // X-Mozi-Actor cannot claim the daemon's (or another reserved) identity.
    for name in ["daemon", "Daemon", "system", "operator"] {
        let got = request(
            port,
            "POST",
            "/api/projects/p/tasks",
            &[JSON, ("X-Mozi-Actor", name)],
            br#"{"title":"forged"}"#,
        );
        assert_json_error(&got, 403, "reserved");
    }
    assert_eq!(query_i64(&home.db("p"), "SELECT COUNT(*) FROM task"), 0);
    let (code, _, body) = request(
        port,
        "POST",
        "/api/projects/p/tasks",
        &[JSON, ("X-Mozi-Actor", "alice")],
        br#"{"title":"by alice"}"#,
    );
    assert_eq!(code, 201, "{body}");

    // The 413 of /api/gateway/config is JSON, with a length or chunked.
    let huge = format!("{{\"rate_per_minute\":1{}}}", " ".repeat(3 * 1024 * 1024));
    let got = request(
        port,
        "POST",
        "/api/gateway/config",
        &[JSON],
        huge.as_bytes(),
    );
    assert_json_error(&got, 413, "limit");
    let chunk = " ".repeat(200 * 1024);
    let chunked = format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len());
    let got = request(
        port,
        "POST",
        "/api/gateway/config",
        &[JSON, ("Transfer-Encoding", "chunked")],
        chunked.as_bytes(),
    );
    assert_json_error(&got, 413, "limit");

    // A cursor past the end of the stream: a resync naming it, not silence.
    let last = query_i64(&home.db("p"), "SELECT MAX(id) FROM event");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api/events?since=p:{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n",
        last + 1000
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.contains("event: resync"), "{text}");
    assert!(text.contains("past the end"), "{text}");
    assert!(
        text.contains(&format!("p:{last}")),
        "the resync carries the real end: {text}"
    );
    // A cursor within the stream still resumes normally.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(
        s,
        "GET /api/events?since=p:0&levels=urgent,attention,daily,optional HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).unwrap_or(0);
    let mut text = String::from_utf8_lossy(&buf[..n]).to_string();
    let t0 = Instant::now();
    while !text.contains("data:") && t0.elapsed() < Duration::from_secs(5) {
        let n = s.read(&mut buf).unwrap_or(0);
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(!text.contains("resync"), "{text}");
    assert!(
        text.contains("data:"),
        "the replay sends the events: {text}"
    );
    d.stop();
}
