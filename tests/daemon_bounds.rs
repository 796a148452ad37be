//! Issue 23 ("the second adversarial pass"): the bounds a real
//! `moziplus serve` now holds against a client or an agent of the same user
//! — secrets, body read time, CPU and memory per request. Each test failed
//! on the code before its fix.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

/// The tests of this file run one at a time: they measure memory and
/// latency, which a daemon of a parallel test on the same two cores skews.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A raw HTTP/1.1 request with extra header lines → (status, body).
fn request(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok();
    let (code, _, body) = parse_response(&String::from_utf8_lossy(&buf));
    (code, body)
}

/// Finding 12: a same-user agent read the daemon's `/proc/<pid>/environ`
/// (`NVIDIA_API_KEY`, `MOZI_SERVER__API_TOKEN`, …), and
/// `/api/gateway/status` showed the key's first and last 4 characters.
#[test]
fn the_daemon_keeps_no_secret_in_its_environment_or_on_its_status_pages() {
    let _serial = serial();
    let home = TestHome::new();
    let key = "nvapi-SECRETKEY-0123456789";
    let token = "tok-SECRETTOKEN-abcdef";
    let d = Daemon::start_env(
        &home,
        &[
            ("NVIDIA_API_KEY", key),
            ("MOZI_SERVER__API_TOKEN", token),
            ("MOZI_TEST_VISIBLE", "plain-marker"),
        ],
    );
    let environ = std::fs::read(format!("/proc/{}/environ", d.pid())).expect("read environ");
    let environ = String::from_utf8_lossy(&environ);
    // Positive control: the probe reads the daemon's start environment.
    assert!(
        environ.contains("MOZI_TEST_VISIBLE=plain-marker"),
        "the probe sees the daemon's variables"
    );
    assert!(
        !environ.contains("SECRETKEY") && !environ.contains("SECRETTOKEN"),
        "a secret is readable in /proc/{}/environ",
        d.pid()
    );

    // The withdrawn token still guards the API, and still opens it.
    let (code, _) = request(d.port, "POST", "/api/daemon/tick", "", b"");
    assert_eq!(code, 401, "a write without the token is refused");
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (code, body) = request(d.port, "POST", "/api/daemon/tick", &auth, b"");
    assert_eq!(code, 200, "the token read at start still works: {body}");

    let (code, body) = request(d.port, "GET", "/api/gateway/status", &auth, b"");
    assert_eq!(code, 200, "{body}");
    assert!(
        !body.contains("nvap") && !body.contains("6789"),
        "key characters shown: {body}"
    );
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let nvidia = status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["api_key_env"] == "NVIDIA_API_KEY")
        .expect("the NVIDIA provider");
    assert_eq!(nvidia["api_key"], "****", "set, without its characters");
}

/// Finding 3: two connections announce 32 MB bodies on `/v1` and send one
/// byte a second. Every API write got 503 for as long as they trickled,
/// and nothing ever cut them. Now API writes succeed meanwhile (the API's
/// share of the body memory), and each trickle is cut with 408 after one
/// rate window.
#[test]
fn api_writes_succeed_while_two_slow_uploads_trickle_and_the_trickles_are_cut() {
    let _serial = serial();
    // The gateway's share is then exactly two 32 MiB bodies (66 MiB less
    // the API's 2 MiB).
    let home = TestHome::with_config("server:\n  max_body_memory: 66MB\n", "agents: []\n");
    home.create_project("p");
    let d = Daemon::start(&home);
    let port = d.port;
    let trickles: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                write!(
                    s,
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-api-key: slow-{i}\r\nContent-Length: {}\r\n\r\n",
                    32 * 1024 * 1024
                )
                .unwrap();
                let started = std::time::Instant::now();
                let mut answer = Vec::new();
                while started.elapsed() < Duration::from_secs(30) {
                    if s.write_all(b" ").is_err() {
                        let _ = s.read_to_end(&mut answer);
                        break;
                    }
                    let mut buf = [0u8; 4096];
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            answer.extend_from_slice(&buf[..n]);
                            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                                std::thread::sleep(Duration::from_millis(300));
                                if let Ok(n) = s.read(&mut buf) {
                                    answer.extend_from_slice(&buf[..n]);
                                }
                                break;
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(800)),
                    }
                }
                (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
            })
        })
        .collect();
    // Both uploads are under way (their memory reserved) before the writes.
    std::thread::sleep(Duration::from_millis(1500));
    for n in 0..5 {
        let body = format!("{{\"title\":\"during the trickle {n}\"}}");
        let (code, text) = request(
            port,
            "POST",
            "/api/projects/p/tasks",
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        );
        assert!(
            (200..300).contains(&code),
            "an API write while two uploads trickle: {code} {text}"
        );
        // Positive control: the trickles do hold the gateway's whole share.
        let (code, text) = request(
            port,
            "POST",
            "/v1/chat/completions",
            "Content-Type: application/json\r\n",
            b"{}",
        );
        assert_eq!(code, 503, "the gateway's body memory is taken: {text}");
        std::thread::sleep(Duration::from_millis(300));
    }
    for t in trickles {
        let (took, answer) = t.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "the trickle is answered 408: {answer:?}"
        );
        assert!(answer.contains("body_min_rate"), "{answer}");
        assert!(took < Duration::from_secs(10), "cut after {took:?}");
    }
    assert_eq!(
        query_i64(&home.db("p"), "SELECT COUNT(*) FROM task"),
        5,
        "every write during the trickle was applied"
    );
}

/// `VmRSS` or `VmHWM` of `pid` in bytes, from `/proc/<pid>/status`.
fn memory(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// A `/v1` body of `n` tiny items: `{"model": …, "messages": [{"role":
/// "user", "content": [[], [], …]}]}`.
fn tiny_items(n: usize) -> Vec<u8> {
    let mut body =
        br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":["#.to_vec();
    for i in 0..n {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"[]");
    }
    body.extend_from_slice(b"]}]}");
    body
}

/// Finding 1: one body under the 32 MiB limit, made of tiny items, drove
/// RSS from 19 MB to 804 MB (chat), 1.24 GB (Responses) and 2.45 GB
/// (`count_tokens`), and the memory was kept. Now a body past
/// `server.max_body_items` is 413 in each API's own shape before anything
/// parses it: the peak stays near the body's size, and RSS comes back to
/// within 10% of its level before the calls.
#[test]
fn a_body_of_tiny_items_is_refused_in_the_apis_shape_and_memory_comes_back() {
    let _serial = serial();
    let home = TestHome::new();
    let d = Daemon::start(&home);
    let pid = d.pid();
    // 5 million items in 15 MB.
    let body = tiny_items(5_000_000);
    assert!(body.len() < 16 << 20);
    // Warm the daemon's paths once with a small body, then measure.
    let (code, _) = request(
        d.port,
        "POST",
        "/v1/chat/completions",
        "Content-Type: application/json\r\n",
        &tiny_items(10),
    );
    assert_ne!(code, 413, "a small body passes the bound");
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = memory(pid, "VmRSS:");
    let hwm_before = memory(pid, "VmHWM:");
    for (path, anthropic) in [
        ("/v1/chat/completions", false),
        ("/v1/responses", false),
        ("/v1/messages", true),
        ("/v1/messages/count_tokens", true),
    ] {
        let (code, text) = request(
            d.port,
            "POST",
            path,
            "Content-Type: application/json\r\n",
            &body,
        );
        assert_eq!(code, 413, "{path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("a JSON error");
        if anthropic {
            assert_eq!(v["type"], "error", "{path}: {text}");
            assert_eq!(v["error"]["type"], "request_too_large", "{path}: {text}");
        } else {
            assert_eq!(
                v["error"]["type"], "invalid_request_error",
                "{path}: {text}"
            );
        }
        let message = &v["error"]["message"];
        assert!(
            message.as_str().unwrap().contains("server.max_body_items"),
            "{path}: {text}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = memory(pid, "VmRSS:");
    let peak = memory(pid, "VmHWM:");
    println!(
        "RSS {} MB before, {} MB after; peak {} MB before, {} MB during four 15 MB bodies",
        rss_before >> 20,
        rss_after >> 20,
        hwm_before >> 20,
        peak >> 20
    );
    assert!(
        rss_after <= rss_before + rss_before / 10,
        "RSS {} MB after, {} MB before: memory kept",
        rss_after >> 20,
        rss_before >> 20
    );
    assert!(
        peak < hwm_before + (80 << 20),
        "peak RSS {} MB (was {} MB): parsing is not bounded",
        peak >> 20,
        hwm_before >> 20
    );
}

/// Finding 2: two `count_tokens` calls, each a single 25 MB word, made
/// `/health` take 15 s. Now a body past 8 MiB is 413 at once, and the
/// counting of two 4 MB words runs off the async worker: `/health` answers
/// in < 100 ms meanwhile.
#[test]
fn health_answers_fast_while_count_tokens_counts_two_huge_words() {
    let _serial = serial();
    let home = TestHome::new();
    let d = Daemon::start(&home);
    let port = d.port;
    let word = |mb: usize| {
        let mut b = br#"{"model":"m","messages":[{"role":"user","content":""#.to_vec();
        b.extend(std::iter::repeat_n(b'a', mb << 20));
        b.extend_from_slice(br#""}]}"#);
        b
    };
    let huge = word(25);
    for _ in 0..2 {
        let (code, text) = request(
            port,
            "POST",
            "/v1/messages/count_tokens",
            "Content-Type: application/json\r\n",
            &huge,
        );
        assert_eq!(code, 413, "a 25 MB count_tokens body: {text}");
    }

    let big = std::sync::Arc::new(word(4));
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let big = big.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let (code, text) = request(
                    port,
                    "POST",
                    "/v1/messages/count_tokens",
                    "Content-Type: application/json\r\n",
                    &big,
                );
                (code, text, started.elapsed())
            })
        })
        .collect();
    let mut took = Vec::new();
    while calls.iter().any(|c| !c.is_finished()) {
        let t = std::time::Instant::now();
        let (code, _) = http(port, "GET", "/health").expect("/health answers");
        assert_eq!(code, 200);
        took.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    took.sort();
    let probes = took.len();
    let worst = took.last().copied().unwrap_or_default();
    let p90 = took.get(probes * 9 / 10).copied().unwrap_or_default();
    let mut longest = Duration::ZERO;
    for c in calls {
        let (code, text, took) = c.join().unwrap();
        assert_eq!(code, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["input_tokens"].as_u64().unwrap() > 1000, "{text}");
        longest = longest.max(took);
    }
    println!(
        "two 4 MB count_tokens calls: {longest:?}; /health worst {worst:?} over {probes} probes"
    );
    assert!(
        probes >= 3,
        "the calls ran long enough to probe ({longest:?})"
    );
    // The bound is on the 90th percentile: a 2-core machine running other
    // builds delays any single answer now and then (150 ms was seen once),
    // while the defect froze /health for 15 s.
    assert!(
        p90 < Duration::from_millis(100),
        "/health p90 {p90:?}, worst {worst:?}"
    );
    assert!(
        worst < Duration::from_millis(1000),
        "/health took {worst:?}"
    );
}

/// Finding 3, the other half: one client's slow calls cannot take the
/// gateway from the others. With `server.max_requests_per_client: 2`, a key
/// with two uploads in flight gets 429 for a third call, in the gateway's
/// shape; another key is served meanwhile.
#[test]
fn a_client_has_at_most_its_share_of_gateway_calls_in_flight() {
    let _serial = serial();
    let home = TestHome::with_config("server:\n  max_requests_per_client: 2\n", "agents: []\n");
    let d = Daemon::start(&home);
    let hold: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
            write!(
                s,
                "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-api-key: k1\r\nContent-Length: 100000\r\n\r\n{{"
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (code, text) = request(
        d.port,
        "POST",
        "/v1/chat/completions",
        "Content-Type: application/json\r\nx-api-key: k1\r\n",
        b"{}",
    );
    assert_eq!(code, 429, "a third call of the same key: {text}");
    assert!(text.contains("max_requests_per_client"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{text}");
    let (code, text) = request(
        d.port,
        "POST",
        "/v1/chat/completions",
        "Content-Type: application/json\r\nx-api-key: k2\r\n",
        b"{}",
    );
    assert!(
        code != 429 && code != 503,
        "another key is served: {code} {text}"
    );
    drop(hold);
    // Once they are gone, the first key is served again.
    wait_for(Duration::from_secs(10), "k1 served again", || {
        request(
            d.port,
            "POST",
            "/v1/chat/completions",
            "Content-Type: application/json\r\nx-api-key: k1\r\n",
            b"{}",
        )
        .0 != 429
    });
}
