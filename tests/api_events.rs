//! `GET /api/events` and webhooks against a real `moziplus serve`: resume
//! with `Last-Event-ID` across a daemon crash while CLI processes keep
//! writing; level and project filters; 500 concurrent clients with one that
//! never reads; webhook delivery with a retry and a dead URL.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tokio::io::AsyncWriteExt;

/// `(project, id, kind)` of a frame.
fn key(f: &Frame) -> (String, i64, String) {
    let v = f.json();
    (
        v["project"].as_str().unwrap().to_string(),
        v["id"].as_i64().unwrap(),
        v["kind"].as_str().unwrap().to_string(),
    )
}

/// Runs a blocking helper (CLI processes, SQLite reads) off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Event ids of a project after `after`, as the database has them.
fn db_event_ids(db: &std::path::Path, after: i64) -> Vec<i64> {
    query_strings(
        db,
        &format!("SELECT CAST(e.id AS TEXT) FROM event e WHERE e.id > {after} ORDER BY e.id"),
    )
    .into_iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

const ALL: &str = "?levels=urgent,attention,daily,optional";

#[tokio::test(flavor = "multi_thread")]
async fn resume_after_a_daemon_crash_delivers_every_event_once_in_order() {
    let home = std::sync::Arc::new(TestHome::with_config("", ""));
    home.create_project("a");
    home.create_project("b");
    let d = Daemon::start(&home);
    let mut s = Sse::open(d.port, ALL, None).await;
    let h = home.clone();
    let t1 = blocking(move || h.create_task("a", "before the crash", &[])).await;
    let f = s
        .next_event(Duration::from_secs(10))
        .await
        .expect("live event");
    assert_eq!(f.json()["task_id"], json!(t1));
    assert_eq!(f.json()["kind"], "task.created");
    let cursor = f.id.clone().expect("an id: cursor");
    assert!(cursor.contains("a:"), "{cursor}");
    // The heartbeat comes every 2 s and carries the same cursor.
    let hb = loop {
        let f = s.next(Duration::from_secs(5)).await.expect("a heartbeat");
        if f.event == "heartbeat" {
            break f;
        }
    };
    assert_eq!(hb.json()["cursor"], json!(cursor), "{}", hb.data);
    assert!(hb.id.is_none());
    drop(s);
    d.crash();

    // While the daemon is down, CLI processes write to both projects.
    let h = home.clone();
    blocking(move || {
        for i in 0..5 {
            let t = h.create_task("a", &format!("a{i}"), &[]);
            h.ok(&["bb", "--project", "a", "comment", &t, "--body", "note"]);
            h.create_task("b", &format!("b{i}"), &[]);
        }
    })
    .await;
    let d = Daemon::start(&home);
    let mut s = Sse::open(d.port, ALL, Some(&cursor)).await;
    // And more while it runs.
    let h = home.clone();
    blocking(move || {
        for i in 0..3 {
            h.create_task("a", &format!("late a{i}"), &[]);
            h.create_task("b", &format!("late b{i}"), &[]);
        }
    })
    .await;
    let (ha, hb) = (home.db("a"), home.db("b"));
    let after_a: i64 = cursor
        .split(',')
        .find_map(|p| p.strip_prefix("a:"))
        .unwrap()
        .parse()
        .unwrap();
    let want_a = blocking(move || db_event_ids(&ha, after_a)).await;
    let after_b: i64 = cursor
        .split(',')
        .find_map(|p| p.strip_prefix("b:"))
        .map(|n| n.parse().unwrap())
        .unwrap_or(0);
    let want_b = blocking(move || db_event_ids(&hb, after_b)).await;
    assert_eq!(want_a.len(), 13, "5 creates + 5 comments + 3 late creates");
    assert!(want_b.len() >= 8);
    let mut got: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut last_id = String::new();
    while got.get("a").map_or(0, Vec::len) < want_a.len()
        || got.get("b").map_or(0, Vec::len) < want_b.len()
    {
        let f = s
            .next_event(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("stream stalled; got {got:?}"));
        let (p, id, _) = key(&f);
        got.entry(p).or_default().push(id);
        last_id = f.id.unwrap();
    }
    assert_eq!(got["a"], want_a, "project a: every event once, in order");
    assert_eq!(got["b"], want_b, "project b: every event once, in order");
    // Nothing more (no duplicates trailing behind).
    assert!(s.next_event(Duration::from_millis(1500)).await.is_none());
    // Positive control: the same stream does deliver a new event now, so
    // the quiet above is not a stream that stopped delivering.
    let h = home.clone();
    let t_control = blocking(move || h.create_task("a", "control", &[])).await;
    let f = s
        .next_event(Duration::from_secs(10))
        .await
        .expect("the control event");
    assert_eq!(f.json()["task_id"], json!(t_control), "{f:?}");
    assert!(
        last_id.contains(&format!("a:{}", want_a.last().unwrap())),
        "{last_id}"
    );
    drop(s);

    // `?since=` resumes the same way (for clients that cannot set headers).
    let mut s = Sse::open(d.port, &format!("{ALL}&since={cursor}&project=b"), None).await;
    let mut ids = Vec::new();
    while ids.len() < want_b.len() {
        let f = s.next_event(Duration::from_secs(10)).await.expect("replay");
        let (p, id, _) = key(&f);
        assert_eq!(p, "b", "project filter");
        ids.push(id);
    }
    assert_eq!(ids, want_b);

    // An unusable cursor: resync, then the stream closes.
    let mut s = Sse::open(d.port, "", Some("a:notanumber")).await;
    let f = s.next(Duration::from_secs(5)).await.expect("resync frame");
    assert_eq!(f.event, "resync", "{f:?}");
    assert!(f.json()["cursor"].is_string());
    assert!(s.next(Duration::from_secs(5)).await.is_none(), "closed");
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn default_levels_leave_out_agent_activity() {
    let home = std::sync::Arc::new(TestHome::with_config("", ""));
    home.create_project("a");
    let t = home.create_task("a", "x", &[]);
    let d = Daemon::start(&home);
    let mut default = Sse::open(d.port, "", None).await;
    let mut urgent = Sse::open(d.port, "?levels=urgent", None).await;
    let h = home.clone();
    let t2 = blocking(move || {
        h.ok(&[
            "bb",
            "--project",
            "a",
            "comment",
            &t,
            "--body",
            "optional level",
        ]);
        h.ok(&[
            "bb",
            "--project",
            "a",
            "observe",
            "--level",
            "alert",
            "--body",
            "on fire",
        ]);
        h.create_task("a", "daily level", &[])
    })
    .await;
    let f = default.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        f.json()["kind"],
        "observation.added",
        "the comment is skipped: {f:?}"
    );
    assert_eq!(f.json()["level"], "urgent");
    let f = default.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (f.json()["kind"].clone(), f.json()["task_id"].clone()),
        (json!("task.created"), json!(t2))
    );
    assert_eq!(f.json()["level"], "daily");
    let f = urgent.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(f.json()["kind"], "observation.added");
    assert!(urgent
        .next_event(Duration::from_millis(1000))
        .await
        .is_none());
    // Positive control: the urgent stream still delivers an urgent event.
    let h = home.clone();
    blocking(move || {
        h.bb_ok(
            "a",
            &["observe", "--level", "alert", "--body", "still on fire"],
        )
    })
    .await;
    let f = urgent.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(f.json()["kind"], "observation.added", "{f:?}");
    assert_eq!(f.json()["level"], "urgent");
    // `gateway=1` adds the shared gateway snapshot about once a second.
    let mut gw = Sse::open(d.port, "?gateway=1", None).await;
    let mut snapshots = Vec::new();
    let started = Instant::now();
    while snapshots.len() < 2 {
        let f = gw
            .next(Duration::from_secs(5))
            .await
            .expect("a gateway frame");
        if f.event == "gateway" {
            assert!(f.json()["providers"].is_array(), "{}", f.data);
            assert!(f.id.is_none());
            snapshots.push(Instant::now());
        }
    }
    assert!(
        snapshots[1] - snapshots[0] >= Duration::from_millis(900),
        "at most one snapshot a second: {:?}",
        snapshots[1] - snapshots[0]
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A bad level is a 400 before the stream starts.
    let r = reqwest::get(format!(
        "http://127.0.0.1:{}/api/events?levels=loud",
        d.port
    ))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    d.stop();
}

/// The next event frame of `kind`, skipping others.
async fn next_of_kind(sse: &mut Sse, kind: &str) -> Value {
    loop {
        let f = sse
            .next_event(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no {kind} event"));
        if f.json()["kind"] == kind {
            return f.json();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn task_events_carry_the_tasks_row_live_and_on_replay() {
    let home = std::sync::Arc::new(TestHome::with_config("", ""));
    home.create_project("a");
    let t = home.create_task("a", "carried", &["--kind", "manual"]);
    let d = Daemon::start(&home);
    let all = "?levels=urgent,attention,daily,optional&project=a";
    let mut live = Sse::open(d.port, all, None).await;
    let (h, id) = (home.clone(), t.clone());
    blocking(move || {
        h.ok(&["bb", "--project", "a", "--agent", "worker", "claim", &id]);
        h.ok(&[
            "bb",
            "--project",
            "a",
            "--agent",
            "worker",
            "heartbeat",
            &id,
        ]);
        h.ok(&["bb", "--project", "a", "comment", &id, "--body", "no row"]);
    })
    .await;
    let claimed = next_of_kind(&mut live, "task.claimed").await;
    let row = &claimed["task"];
    assert_eq!(row["id"], json!(t), "{claimed}");
    assert_eq!(row["status"], "working");
    assert_eq!(row["claimed_by"], "worker");
    assert_eq!(row["title"], "carried");
    assert!(row["lease_expires_at"].is_string(), "{row}");
    assert!(row["tags"].is_array(), "the task API's shape: {row}");
    let beat = next_of_kind(&mut live, "task.heartbeat").await;
    assert_eq!(beat["task"]["status"], "working", "{beat}");
    let comment = next_of_kind(&mut live, "comment.added").await;
    assert!(
        comment.get("task").is_none(),
        "only task.* events carry the row: {comment}"
    );
    // Replayed events carry the row as it is now.
    let mut replay = Sse::open(d.port, &format!("{all}&since=a:0"), None).await;
    let created = next_of_kind(&mut replay, "task.created").await;
    assert_eq!(created["task"]["id"], json!(t), "{created}");
    assert_eq!(created["task"]["status"], "working", "{created}");
    d.stop();
}

fn metric(port: u16, name: &str) -> f64 {
    let (_, text) = http(port, "GET", "/metrics").expect("metrics");
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_clients_and_one_that_never_reads() {
    const CLIENTS: usize = 499;
    let home = std::sync::Arc::new(TestHome::with_config("", ""));
    home.create_project("a");
    home.create_project("flood");
    let d = Daemon::start(&home);
    let port = d.port;

    // The stuck client: a tiny receive buffer, never reads; it asks for the
    // flood project.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stuck = sock
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    stuck
        .write_all(b"GET /api/events?levels=urgent,attention,daily,optional&project=flood HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();

    // 499 readers of project a, each reporting when it sees a title.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let mut readers = Vec::new();
    for n in 0..CLIENTS {
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut s = Sse::open(port, "?project=a", None).await;
            tx.send((n, "connected".into(), Instant::now())).ok();
            while let Some(f) = s.next_event(Duration::from_secs(120)).await {
                let title = f.json()["payload"]["title"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                tx.send((n, title, Instant::now())).ok();
            }
        }));
    }
    let mut connected = 0;
    while connected < CLIENTS {
        let (_, what, _) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("clients connect")
            .unwrap();
        if what == "connected" {
            connected += 1;
        }
    }
    blocking(move || {
        wait_for(Duration::from_secs(10), "every client registered", || {
            metric(port, "moziplus_sse_clients") >= (CLIENTS + 1) as f64
        })
    })
    .await;

    let create = |project: &'static str, title: String| async move {
        let url = format!("http://127.0.0.1:{port}/api/projects/{project}/tasks");
        let r = post_json(&url, &json!({ "title": title }), &[]).await;
        assert_eq!(r.status().as_u16(), 201);
    };
    // Wait until every reader saw `title`; returns the slowest delivery.
    async fn all_see(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, String, Instant)>,
        title: &str,
        sent: Instant,
    ) -> Duration {
        let mut seen = std::collections::BTreeSet::new();
        let mut slowest = Duration::ZERO;
        while seen.len() < CLIENTS {
            let (n, t, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} clients saw {title}", seen.len()))
                .unwrap();
            if t == title && seen.insert(n) {
                slowest = slowest.max(at - sent);
            }
        }
        slowest
    }

    // Flood the stuck client's project until its buffer is full and the
    // daemon gives up on it.
    let long = "x".repeat(480);
    let mut flooded = 0;
    while metric(port, "moziplus_sse_resyncs_total") < 1.0 {
        assert!(flooded < 5000, "the stuck client was never cut off");
        let batch: Vec<_> = (0..50)
            .map(|i| create("flood", format!("{long}{flooded}-{i}")))
            .collect();
        futures_util::future::join_all(batch).await;
        flooded += 50;
    }
    // With the stuck client cut off, the others still get news promptly.
    for round in 0..3 {
        let title = format!("ping {round}");
        let sent = Instant::now();
        create("a", title.clone()).await;
        let slowest = all_see(&mut rx, &title, sent).await;
        eprintln!("ping {round}: all {CLIENTS} clients within {slowest:?}");
        assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    }
    // The stuck client, once it reads, finds `resync` and the end of the stream.
    // (The response ends with the last chunk; the connection may stay open.)
    let mut text = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 65536];
        while !text.ends_with(b"\r\n0\r\n\r\n") {
            let n = stuck.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "the stuck client's response ended");
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("event: resync"),
        "{}",
        &text[text.len().saturating_sub(500)..]
    );
    assert!(text.contains("not reading"), "resync names the reason");
    for r in readers {
        r.abort();
    }
    d.stop();
}

/// A webhook receiver: answers 500 to the first request, 200 after; keeps
/// the bodies.
async fn receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<(u16, Value)>>>) {
    use axum::routing::post;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = log.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let l = l.clone();
            async move {
                let mut log = l.lock().unwrap();
                let code = if log.is_empty() { 500 } else { 200 };
                assert_eq!(headers["x-test"], "yes", "configured headers are sent");
                log.push((code, serde_json::from_str(&body).unwrap_or(Value::Null)));
                axum::http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_retry_and_report_a_dead_url_as_an_observation() {
    let (port, log) = receiver().await;
    let dead = free_port();
    let home = std::sync::Arc::new(TestHome::with_config(
        &format!(
            "notifications:\n  webhooks:\n    - url: http://127.0.0.1:{port}/hook\n      levels: [daily]\n      max_attempts: 3\n      timeout_ms: 2000\n      headers: {{ X-Test: \"yes\" }}\n    - url: http://127.0.0.1:{dead}/gone\n      levels: [daily]\n      max_attempts: 2\n      timeout_ms: 500\n"
        ),
        "",
    ));
    home.create_project("a");
    let d = Daemon::start(&home);
    let h = home.clone();
    let t = blocking(move || h.create_task("a", "hook me", &[])).await;
    let l = log.clone();
    blocking(move || {
        wait_for(Duration::from_secs(20), "a delivery after the 500", || {
            l.lock().unwrap().iter().any(|(c, _)| *c == 200)
        })
    })
    .await;
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one failure, one retry: {got:?}");
    assert_eq!(got[0].1, got[1].1, "the retry sends the same event");
    let ev = &got[1].1;
    assert_eq!(ev["project"], "a");
    assert_eq!(ev["kind"], "task.created");
    assert_eq!(ev["task_id"], json!(t));
    assert_eq!(ev["level"], "daily");
    assert!(ev["id"].as_i64().is_some() && ev["created_at"].is_string());
    // The dead URL became an observation naming it.
    let db = home.db("a");
    blocking(move || {
        wait_for(Duration::from_secs(20), "the failure observation", || {
            query_i64(
                &db,
                &format!("SELECT COUNT(*) FROM observation WHERE body LIKE '%{dead}/gone%' AND level = 'warn'"),
            ) == 1
        })
    })
    .await;
    // Optional-level events (the comment) are not sent to a daily webhook:
    // the next daily event arrives and nothing came before it.
    let h = home.clone();
    let t3 = blocking(move || {
        h.ok(&["bb", "--project", "a", "comment", &t, "--body", "quiet"]);
        h.create_task("a", "after the comment", &[])
    })
    .await;
    let l = log.clone();
    blocking(move || {
        wait_for(Duration::from_secs(20), "the next daily event", || {
            l.lock().unwrap().len() >= 3
        })
    })
    .await;
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].1["task_id"], json!(t3), "{got:?}");
    d.stop();

    // A bad webhook is a config error naming the file and key.
    let home = TestHome::with_config(
        "notifications:\n  webhooks:\n    - url: ftp://example.com/x\n",
        "",
    );
    let out = home.run(&["serve", "--bind", "127.0.0.1:0"]);
    assert_ne!(out.code, 0, "{out}");
    let err = out.stderr.as_str();
    assert!(
        err.contains("default.yaml")
            && err.contains("notifications.webhooks")
            && err.contains("ftp://"),
        "{err}"
    );
}

/// Issue 26, item 3: an open breaker showed only on the Gateway tab —
/// readiness said ready, and no event, observation or webhook told anyone.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_breaker_is_an_attention_event_a_webhook_and_a_readiness_problem() {
    let (port, log) = receiver().await;
    // A provider whose address refuses connections (nothing listens there),
    // with a key, a breaker that opens after 2 failures and no retries.
    let refused = free_port();
    let home = std::sync::Arc::new(TestHome::with_config(
        &format!(
            "notifications:\n  webhooks:\n    - url: http://127.0.0.1:{port}/hook\n      levels: [attention]\n      max_attempts: 3\n      timeout_ms: 2000\n      headers: {{ X-Test: \"yes\" }}\n\
             gateway:\n  breaker: {{ failure_threshold: 2, open_seconds: 600 }}\n  retry: {{ max_retries: 0 }}\n  providers:\n    - name: down\n      base_url: http://127.0.0.1:{refused}/v1\n      api_key_env: DOWN_TEST_KEY\n"
        ),
        "",
    ));
    home.create_project("a");
    let d = Daemon::start_env(&home, &[("DOWN_TEST_KEY", "k")]);
    let (code, body) = d.get("/health/ready").unwrap();
    assert_eq!(code, 200, "{body}");
    for _ in 0..3 {
        let resp = support::post_json(
            &d.url("/v1/chat/completions"),
            &json!({"model": "down/m", "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
        assert!(resp.status().is_server_error(), "{}", resp.status());
    }
    // Readiness names the provider in `degraded` and turns 503.
    let daemon_port = d.port;
    let ready = blocking(move || {
        let mut last = String::new();
        wait_for(Duration::from_secs(15), "the provider in degraded", || {
            let (code, body) = http(daemon_port, "GET", "/health/ready").unwrap();
            last = body;
            code == 503 && last.contains("provider down")
        });
        last
    })
    .await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let problem = ready["degraded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["runtime"] == "provider down")
        .cloned()
        .unwrap();
    assert!(
        problem["reason"]
            .as_str()
            .unwrap()
            .contains("breaker open after 2 consecutive failures"),
        "{problem}"
    );
    // An attention event in the project's log, delivered to the webhook.
    let db = home.db("a");
    blocking(move || {
        wait_for(Duration::from_secs(15), "the provider.degraded event", || {
            query_i64(
                &db,
                "SELECT COUNT(*) FROM event WHERE kind = 'provider.degraded' AND level = 'attention'",
            ) == 1
        })
    })
    .await;
    let l = log.clone();
    blocking(move || {
        wait_for(Duration::from_secs(20), "the webhook delivery", || {
            l.lock()
                .unwrap()
                .iter()
                .any(|(c, ev)| *c == 200 && ev["kind"] == "provider.degraded")
        })
    })
    .await;
    let got = log.lock().unwrap().clone();
    let ev = &got.iter().find(|(c, _)| *c == 200).unwrap().1;
    assert_eq!(ev["project"], "a");
    assert!(
        ev["payload"]["provider"] == "down" || ev.to_string().contains("\"provider\":\"down\""),
        "{ev}"
    );
    drop(d);
}
