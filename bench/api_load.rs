//! Load harness for the HTTP API and the event stream (README, Performance).
//!
//! Each role starts a real `moziplus serve` (the bench-profile binary, i.e.
//! release) on a temporary home and talks to it over loopback:
//!
//! * `fanout CLIENTS EVENTS` — opens CLIENTS `GET /api/events` streams, then
//!   writes EVENTS tasks with `moziplus bb create` (one CLI process each,
//!   100 ms apart) and reports the delivery latency of every (event, client)
//!   pair: receive time minus the event's `created_at` (stamped by the CLI
//!   inside its transaction; same host clock).
//! * `tasks TASKS REQUESTS` — seeds TASKS tasks into one project (mixed
//!   priorities, tags, some dependencies), then times REQUESTS sequential
//!   `GET /api/projects/P/tasks?limit=100` (first page, a deep page by cursor,
//!   and a status filter), one keep-alive connection.
//!
//! Run through `cargo bench --bench api_load -- ROLE ARGS…`. Without a role it
//! does nothing, so `cargo bench` and `cargo test --benches` stay quick.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moziplus::blackboard::{Actor, Blackboard, NewTask, OpenMode, Priority};

const BIN: &str = env!("CARGO_BIN_EXE_moziplus");

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(role) = args.first().cloned() else {
        eprintln!("usage: api_load fanout CLIENTS EVENTS | tasks TASKS REQUESTS");
        return;
    };
    let n = |i: usize, default: usize| -> usize {
        args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match role.as_str() {
        "fanout" => rt.block_on(fanout(n(1, 1000), n(2, 50))),
        "tasks" => rt.block_on(tasks(n(1, 10_000), n(2, 500))),
        other => eprintln!("unknown role {other}"),
    }
}

struct Serve {
    child: Child,
    port: u16,
    _home: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cmd(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("MOZI_") {
            c.env_remove(k);
        }
    }
    c.env("MOZI_HOME", home);
    c
}

fn new_home(projects: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/default.yaml"), "").unwrap();
    std::fs::write(dir.path().join("config/agents.yaml"), "agents: []\n").unwrap();
    for p in projects {
        let ok = cmd(dir.path())
            .args(["project", "create", "--id", p, "--name", p])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "project create {p}");
    }
    dir
}

async fn serve(home: tempfile::TempDir) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = cmd(home.path())
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Serve {
        child,
        port,
        _home: home,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "daemon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn fanout(clients: usize, events: usize) {
    let s = serve(new_home(&["bench"])).await;
    let port = s.port;
    let latencies = Arc::new(Mutex::new(Vec::<f64>::with_capacity(clients * events)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..clients {
        let (client, latencies, ready) = (client.clone(), latencies.clone(), ready_tx.clone());
        tokio::spawn(async move {
            let mut resp = client
                .get(format!("http://127.0.0.1:{port}/api/events"))
                .send()
                .await
                .expect("connect");
            ready.send(()).ok();
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                let now = chrono::Utc::now().timestamp_micros() as f64 / 1000.0;
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = buf.find("\n\n") {
                    let frame: String = buf.drain(..i + 2).collect();
                    if frame.contains("event:") {
                        continue; // heartbeat
                    }
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let v: serde_json::Value = serde_json::from_str(data).unwrap();
                    let created =
                        chrono::DateTime::parse_from_rfc3339(v["created_at"].as_str().unwrap())
                            .unwrap()
                            .timestamp_millis() as f64;
                    latencies.lock().unwrap().push(now - created);
                }
            }
        });
    }
    for _ in 0..clients {
        ready_rx.recv().await.unwrap();
    }
    eprintln!("{clients} streams open");
    let home = s._home.path().to_path_buf();
    for i in 0..events {
        let home = home.clone();
        tokio::task::spawn_blocking(move || {
            let ok = cmd(&home)
                .args(["bb", "--project", "bench", "create", "--title"])
                .arg(format!("event {i}"))
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok);
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.lock().unwrap().len() < clients * events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{{\"clients\":{clients},\"events\":{events},\"deliveries\":{},\"expected\":{},\"p50_ms\":{:.1},\"p90_ms\":{:.1},\"p99_ms\":{:.1},\"max_ms\":{:.1}}}",
        l.len(),
        clients * events,
        pct(&l, 0.5),
        pct(&l, 0.9),
        pct(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
}

async fn tasks(n: usize, requests: usize) {
    let home = new_home(&["big"]);
    {
        let bb = Blackboard::open(
            &home.path().join("projects/big/blackboard.db"),
            "big",
            OpenMode::Create { max_connections: 1 },
        )
        .await
        .unwrap();
        let who = Actor::operator("bench");
        for i in 0..n {
            let new = NewTask {
                title: format!("task {i} with a reasonably long title to look real"),
                description: "x".repeat(200),
                priority: Some(Priority::ALL[i % 4]),
                tags: if i % 10 == 0 {
                    vec!["ui".into()]
                } else {
                    vec![]
                },
                depends_on: if i % 50 == 1 {
                    vec![format!("T-{:04}", i)]
                } else {
                    vec![]
                },
                ..Default::default()
            };
            bb.create_task(new, &who).await.unwrap();
        }
        bb.close().await;
    }
    eprintln!("{n} tasks seeded");
    let s = serve(home).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}/api/projects/big/tasks", s.port);
    // A cursor deep into the list.
    let mut cursor = String::new();
    for _ in 0..50 {
        let v: serde_json::Value = client
            .get(format!("{base}?limit=100{cursor}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        cursor = format!("&cursor={}", v["next_cursor"].as_str().unwrap());
    }
    for (name, url) in [
        ("first page", format!("{base}?limit=100")),
        ("page 51 (cursor)", format!("{base}?limit=100{cursor}")),
        (
            "status=pending,blocked",
            format!("{base}?limit=100&status=pending,blocked"),
        ),
        ("tag=ui", format!("{base}?limit=100&tag=ui")),
    ] {
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let body = r.bytes().await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(body.len() > 1000);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{{\"tasks\":{n},\"query\":\"{name}\",\"requests\":{requests},\"median_ms\":{:.2},\"p99_ms\":{:.2}}}",
            pct(&times, 0.5),
            pct(&times, 0.99)
        );
    }
}
