//! The REST contract of docs/API.md against a real `moziplus serve` on a
//! loopback socket, real blackboard files, reqwest as the client: every
//! route's happy path and its bad inputs, bearer auth on and off, and the
//! OpenAPI document listing every route of the router.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::{json, Value};
use support::*;

struct Api {
    base: String,
    client: Client,
    token: Option<String>,
}

impl Api {
    fn new(d: &Daemon, token: Option<&str>) -> Api {
        Api {
            base: format!("http://127.0.0.1:{}", d.port),
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            token: token.map(str::to_string),
        }
    }

    /// Sends `body` as JSON text (so malformed JSON can be sent too).
    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.raw(Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.raw(
            Method::POST,
            path,
            Some(&body.to_string()),
            Some("application/json"),
        )
        .await
    }
}

/// `query_i64` off the async test's runtime (it runs its own).
fn count(db: &std::path::Path, sql: &str) -> i64 {
    let (db, sql) = (db.to_path_buf(), sql.to_string());
    std::thread::spawn(move || query_i64(&db, &sql))
        .join()
        .unwrap()
}

/// A 4xx JSON error of the given status whose message contains every needle.
#[track_caller]
fn assert_error(got: &(u16, Value), code: u16, needles: &[&str]) {
    assert_eq!(got.0, code, "{}", got.1);
    let msg = got.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        got.1["error"]["type"].is_string(),
        "error has a type: {}",
        got.1
    );
    for n in needles {
        assert!(msg.contains(n), "{msg:?} should mention {n:?}");
    }
}

fn agents_yaml(home: &TestHome) -> String {
    let script = home.script(
        "agent.sh",
        "#!/bin/bash\necho \"hello from $MOZI_TASK\"\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
    );
    format!(
        "agents:\n  - id: w\n    runtime: command\n    command: [\"{}\"]\n",
        script.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_routes_happy_paths_and_bad_inputs() {
    let home = TestHome::new("daemon:\n  tick_interval: 1\n", "");
    std::fs::write(home.path().join("config/agents.yaml"), agents_yaml(&home)).unwrap();
    home.create_project("p");
    let d = Daemon::start(&home);
    // Nothing runs until the agent-run part below.
    d.post("/api/daemon/stop").unwrap();
    let api = Api::new(&d, None);

    // ---- projects
    let (code, v) = api.get("/api/projects").await;
    assert_eq!(code, 200, "{v}");
    let p = &v["projects"][0];
    assert_eq!(p["id"], "p");
    for key in [
        "name",
        "description",
        "agents",
        "status",
        "created_at",
        "tasks_summary",
        "active_agents",
        "db_size_bytes",
        "decisions_proposed",
        "last_event_id",
    ] {
        assert!(p.get(key).is_some(), "project has {key}: {p}");
    }
    let (code, v) = api
        .post(
            "/api/projects",
            json!({"id": "q", "name": "Q", "description": "second", "agents": ["w"]}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["status"], "active");
    assert_eq!(v["agents"], json!(["w"]));
    assert!(home.db("q").exists(), "the blackboard file was created");
    assert_error(
        &api.post("/api/projects", json!({"id": "q", "name": "again"}))
            .await,
        409,
        &["q", "exists"],
    );
    assert_error(
        &api.post("/api/projects", json!({"id": "Bad Id!", "name": "x"}))
            .await,
        400,
        &["Bad Id!"],
    );
    assert_error(
        &api.post("/api/projects", json!({"id": "r"})).await,
        400,
        &["name"],
    );
    assert_error(
        &api.raw(
            Method::POST,
            "/api/projects",
            Some("{\"id\": \"r\","),
            Some("application/json"),
        )
        .await,
        400,
        &[],
    );
    assert_error(
        &api.raw(
            Method::POST,
            "/api/projects",
            Some("{\"id\":\"r\",\"name\":\"r\"}"),
            Some("text/plain"),
        )
        .await,
        415,
        &["application/json"],
    );
    let (code, v) = api.get("/api/projects/q").await;
    assert_eq!((code, &v["name"]), (200, &json!("Q")), "{v}");
    assert_error(&api.get("/api/projects/nope").await, 404, &["nope"]);
    assert_error(&api.get("/api/projects/NO%20PE").await, 400, &["NO PE"]);
    let (code, v) = api.post("/api/projects/q/archive", json!({})).await;
    assert_eq!((code, &v["status"]), (200, &json!("archived")), "{v}");
    assert_error(&api.get("/api/projects/q/tasks").await, 404, &["q"]);
    let (_, v) = api.get("/api/projects").await;
    assert_eq!(v["projects"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = api.get("/api/projects?include_archived=true").await;
    assert_eq!(v["projects"].as_array().unwrap().len(), 2, "{v}");
    assert_error(
        &api.post("/api/projects/q/archive", json!({})).await,
        409,
        &["archived"],
    );
    let (code, v) = api.post("/api/projects/q/restore", json!({})).await;
    assert_eq!((code, &v["status"]), (200, &json!("active")), "{v}");
    assert_error(
        &api.post("/api/projects/q/restore", json!({})).await,
        409,
        &["not archived"],
    );
    assert_error(
        &api.post("/api/projects/nope/restore", json!({})).await,
        404,
        &["nope"],
    );

    // ---- tasks
    let (code, a) = api
        .post(
            "/api/projects/p/tasks",
            json!({"title": "first", "priority": "high", "tags": ["ui"], "kind": "code"}),
        )
        .await;
    assert_eq!(code, 201, "{a}");
    let a_id = a["id"].as_str().unwrap().to_string();
    assert_eq!(a["creator"], "operator:api");
    let (code, b) = api
        .post(
            "/api/projects/p/tasks",
            json!({"title": "second", "depends_on": [a_id], "description": "needle in here"}),
        )
        .await;
    assert_eq!(code, 201, "{b}");
    let b_id = b["id"].as_str().unwrap().to_string();
    assert_error(
        &api.post(
            "/api/projects/p/tasks",
            json!({"title": "x", "depends_on": ["T-9999"]}),
        )
        .await,
        404,
        &["T-9999"],
    );
    assert_error(
        &api.post("/api/projects/p/tasks", json!({"description": "no title"}))
            .await,
        400,
        &["title"],
    );
    assert_error(
        &api.post(
            "/api/projects/p/tasks",
            json!({"title": "x", "colour": "red"}),
        )
        .await,
        400,
        &["colour"],
    );
    assert_error(
        &api.post(
            "/api/projects/p/tasks",
            json!({"title": "x", "priority": "asap"}),
        )
        .await,
        400,
        &["asap"],
    );
    assert_error(
        &api.post("/api/projects/nope/tasks", json!({"title": "x"}))
            .await,
        404,
        &["nope"],
    );
    // X-Mozi-Actor names the writer; a bad one is refused.
    let (code, c) = {
        let resp = api
            .client
            .post(format!("{}/api/projects/p/tasks", api.base))
            .header("x-mozi-actor", "alice")
            .json(&json!({"title": "third", "priority": "low"}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!((code, &c["creator"]), (201, &json!("alice")), "{c}");
    let resp = api
        .client
        .post(format!("{}/api/projects/p/tasks", api.base))
        .header("x-mozi-actor", "Not An Id")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    for i in 0..4 {
        let (code, _) = api
            .post(
                "/api/projects/p/tasks",
                json!({"title": format!("filler {i}")}),
            )
            .await;
        assert_eq!(code, 201);
    }

    // Pagination: every task exactly once, in (priority, creation) order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/projects/p/tasks?limit=2&cursor={c}"),
            None => "/api/projects/p/tasks?limit=2".to_string(),
        };
        let (code, v) = api.get(&path).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["total"], 7, "{v}");
        let page = v["tasks"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 7, "{seen:?}");
    assert_eq!(seen[0], a_id, "high priority first: {seen:?}");
    assert_eq!(
        seen[6],
        c["id"].as_str().unwrap(),
        "low priority last: {seen:?}"
    );
    // Filters.
    let (_, v) = api.get("/api/projects/p/tasks?tag=ui").await;
    assert_eq!(v["total"], 1, "{v}");
    let (_, v) = api.get("/api/projects/p/tasks?q=needle").await;
    assert_eq!(v["tasks"][0]["id"], json!(b_id), "{v}");
    let (_, v) = api.get("/api/projects/p/tasks?priority=low").await;
    assert_eq!(v["total"], 1, "{v}");
    let (_, v) = api
        .get("/api/projects/p/tasks?status=pending,blocked")
        .await;
    assert_eq!(v["total"], 7, "{v}");
    let (_, v) = api.get("/api/projects/p/tasks?assignee=nobody").await;
    assert_eq!(v["total"], 0, "{v}");
    assert_error(
        &api.get("/api/projects/p/tasks?cursor=zz-not-hex").await,
        400,
        &["cursor"],
    );
    assert_error(
        &api.get("/api/projects/p/tasks?limit=0").await,
        400,
        &["limit"],
    );
    assert_error(
        &api.get("/api/projects/p/tasks?limit=501").await,
        400,
        &["501"],
    );
    assert_error(
        &api.get("/api/projects/p/tasks?limit=ten").await,
        400,
        &["limit"],
    );
    assert_error(
        &api.get("/api/projects/p/tasks?status=sleeping").await,
        400,
        &["sleeping"],
    );
    assert_error(
        &api.get("/api/projects/p/tasks?bogus=1").await,
        400,
        &["bogus"],
    );

    // Detail.
    let (code, v) = api.get(&format!("/api/projects/p/tasks/{b_id}")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["depends_on"][0]["id"], json!(a_id), "{v}");
    for key in ["dependents", "comments", "outputs", "reviews", "sessions"] {
        assert!(v[key].is_array(), "detail has {key}: {v}");
    }
    assert_error(
        &api.get("/api/projects/p/tasks/T-9999").await,
        404,
        &["T-9999"],
    );
    assert_error(
        &api.get("/api/projects/p/tasks/banana").await,
        400,
        &["banana"],
    );

    // Operator transitions.
    let st = |t: &str| format!("/api/projects/p/tasks/{t}/status");
    let (code, v) = api
        .post(
            &st(&b_id),
            json!({"status": "blocked", "reason": "waiting on legal"}),
        )
        .await;
    assert_eq!((code, &v["status"]), (200, &json!("blocked")), "{v}");
    let (code, v) = api.post(&st(&b_id), json!({"status": "pending"})).await;
    assert_eq!((code, &v["status"]), (200, &json!("pending")), "{v}");
    let (code, v) = api.post(&st(&b_id), json!({"status": "cancelled"})).await;
    assert_eq!((code, &v["status"]), (200, &json!("cancelled")), "{v}");
    assert_error(
        &api.post(&st(&b_id), json!({"status": "blocked"})).await,
        409,
        &["cancelled", "blocked"],
    );
    assert_error(
        &api.post(&st(&b_id), json!({"status": "done"})).await,
        400,
        &["done"],
    );
    assert_error(
        &api.post(&st(&b_id), json!({"status": "asleep"})).await,
        400,
        &["asleep"],
    );
    assert_error(
        &api.post(&st("T-9999"), json!({"status": "cancelled"}))
            .await,
        404,
        &["T-9999"],
    );
    assert_error(&api.post(&st(&b_id), json!({})).await, 400, &["status"]);
    // The reason was kept as a system comment; comments.
    let cm = format!("/api/projects/p/tasks/{a_id}/comments");
    let (code, v) = api
        .post(
            &cm,
            json!({"body": "looks good", "comment_type": "question"}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["author"], "operator:api");
    assert_eq!(v["comment_type"], "question");
    assert_error(&api.post(&cm, json!({"body": "  "})).await, 400, &["empty"]);
    assert_error(
        &api.post(&cm, json!({"body": "x", "comment_type": "system"}))
            .await,
        400,
        &["system"],
    );
    assert_error(
        &api.post(
            "/api/projects/p/tasks/T-9999/comments",
            json!({"body": "x"}),
        )
        .await,
        404,
        &["T-9999"],
    );
    let (_, v) = api.get(&format!("/api/projects/p/tasks/{a_id}")).await;
    assert_eq!(v["comments"][0]["body"], "looks good", "{v}");

    // Oversized body.
    let big = json!({"body": "x".repeat(300 * 1024)});
    assert_error(&api.post(&cm, big).await, 413, &[]);

    // ---- decisions
    home.ok(&[
        "bb",
        "--project",
        "p",
        "decide",
        "--propose",
        "--question",
        "Ship it?",
        "--decision",
        "yes",
    ]);
    home.ok(&[
        "bb",
        "--project",
        "p",
        "decide",
        "--propose",
        "--question",
        "Rename?",
        "--decision",
        "no",
    ]);
    let (code, v) = api.get("/api/projects/p/decisions?status=proposed").await;
    assert_eq!(code, 200, "{v}");
    let ids: Vec<i64> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{v}");
    let (code, v) = api.get("/api/decisions?status=proposed").await;
    assert_eq!(code, 200);
    assert_eq!(v["decisions"][0]["project"], "p", "{v}");
    assert!(v["decisions"][0]["question"].is_string(), "{v}");
    let (code, v) = api
        .post(
            &format!("/api/projects/p/decisions/{}/approve", ids[0]),
            json!({"rationale": "fine"}),
        )
        .await;
    assert_eq!((code, &v["status"]), (200, &json!("approved")), "{v}");
    assert_eq!(v["decided_by"], "operator:api");
    // No body at all is fine too.
    let (code, v) = api
        .raw(
            Method::POST,
            &format!("/api/projects/p/decisions/{}/reject", ids[1]),
            None,
            None,
        )
        .await;
    assert_eq!((code, &v["status"]), (200, &json!("rejected")), "{v}");
    assert_error(
        &api.post(
            &format!("/api/projects/p/decisions/{}/reject", ids[0]),
            json!({}),
        )
        .await,
        409,
        &["already approved"],
    );
    assert_error(
        &api.post("/api/projects/p/decisions/999/approve", json!({}))
            .await,
        404,
        &["999"],
    );
    assert_error(
        &api.post("/api/projects/p/decisions/abc/approve", json!({}))
            .await,
        400,
        &["abc"],
    );
    assert_error(
        &api.get("/api/projects/p/decisions?status=maybe").await,
        400,
        &["maybe"],
    );
    let (_, v) = api.get("/api/decisions?status=proposed").await;
    assert_eq!(v["decisions"], json!([]), "{v}");

    // ---- observations and experiences
    home.ok(&[
        "bb",
        "--project",
        "p",
        "observe",
        "--level",
        "warn",
        "--body",
        "disk filling",
    ]);
    home.ok(&["bb", "--project", "p", "observe", "--body", "fyi"]);
    home.ok(&[
        "bb",
        "--project",
        "p",
        "experience",
        "add",
        "--tags",
        "rust,sqlite",
        "--lesson",
        "index the keyset",
    ]);
    let (code, v) = api.get("/api/projects/p/observations?level=warn").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["observations"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["observations"][0]["body"], "disk filling");
    let (_, v) = api.get("/api/projects/p/observations?limit=1").await;
    assert_eq!(v["observations"][0]["body"], "fyi", "{v}");
    assert_error(
        &api.get("/api/projects/p/observations?level=loud").await,
        400,
        &["loud"],
    );
    assert_error(
        &api.get("/api/projects/p/observations?limit=0").await,
        400,
        &["limit"],
    );
    let (code, v) = api.get("/api/projects/p/experiences?tag=sqlite").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["experiences"][0]["lesson"], "index the keyset", "{v}");
    let (_, v) = api.get("/api/projects/p/experiences?tag=go").await;
    assert_eq!(v["experiences"], json!([]));
    assert_error(
        &api.get("/api/projects/p/experiences?status=old").await,
        400,
        &["old"],
    );

    // Archiving a project with a working task is refused (409).
    let working = home.create_task("p", &["--title", "held"]);
    home.ok(&["bb", "--project", "p", "--agent", "w", "claim", &working]);
    assert_error(
        &api.post("/api/projects/p/archive", json!({})).await,
        409,
        &["working"],
    );

    // ---- sessions and logs: let the agent work one task.
    let (code, t) = api
        .post(
            "/api/projects/q/tasks",
            json!({"title": "run me", "assignee": "w"}),
        )
        .await;
    assert_eq!(code, 201, "{t}");
    let t_id = t["id"].as_str().unwrap().to_string();
    assert_eq!(d.post("/api/daemon/start").unwrap().0, 200);
    wait_for(
        Duration::from_secs(60),
        "the agent to finish the task",
        || {
            count(
            &home.db("q"),
            &format!("SELECT COUNT(*) FROM session WHERE task_id = '{t_id}' AND ended_at IS NOT NULL"),
        ) == 1
        },
    );
    let (code, v) = api
        .get(&format!("/api/projects/q/sessions?task={t_id}"))
        .await;
    assert_eq!(code, 200, "{v}");
    let sid = v["sessions"][0]["id"].as_str().unwrap().to_string();
    let (_, v) = api.get("/api/projects/q/sessions?limit=5").await;
    assert_eq!(v["sessions"][0]["id"], json!(sid), "{v}");
    let log = format!("/api/projects/q/sessions/{sid}/log");
    let (code, v) = api.get(&log).await;
    assert_eq!(code, 200, "{v}");
    let text = v["text"].as_str().unwrap();
    assert!(text.contains(&format!("hello from {t_id}")), "{v}");
    assert_eq!(v["ended"], true);
    assert_eq!(v["offset"], 0);
    assert_eq!(v["next_offset"], v["size"], "{v}");
    let (_, v2) = api.get(&format!("{log}?offset=6&limit=4")).await;
    assert_eq!(v2["text"].as_str().unwrap(), &text[6..10], "{v2}");
    assert_eq!(v2["next_offset"], 10);
    assert_error(&api.get(&format!("{log}?limit=0")).await, 400, &["limit"]);
    assert_error(
        &api.get(&format!("{log}?offset=-1")).await,
        400,
        &["offset"],
    );
    assert_error(
        &api.get("/api/projects/q/sessions/no-such-session/log")
            .await,
        404,
        &["no-such-session"],
    );
    // The tail of an ended session: every byte, then `end`.
    let body = api
        .client
        .get(format!("{}{log}/stream", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("event: log"), "{body}");
    assert!(body.contains(&format!("hello from {t_id}")), "{body}");
    assert!(body.trim_end().contains("event: end"), "{body}");
    assert_error(
        &api.get("/api/projects/q/sessions?limit=5000").await,
        400,
        &["limit"],
    );

    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_guards_every_write_and_leaves_reads_open() {
    let home = TestHome::new("server:\n  api_token: s3cret-token\n", "");
    home.create_project("p");
    let d = Daemon::start(&home);
    let anon = Api::new(&d, None);
    let wrong = Api::new(&d, Some("nope"));
    let right = Api::new(&d, Some("s3cret-token"));

    for path in [
        "/api/projects",
        "/api/projects/p",
        "/api/projects/p/tasks",
        "/api/decisions",
        "/api/daemon/status",
        "/api/openapi.json",
    ] {
        assert_eq!(anon.get(path).await.0, 200, "{path} is open to read");
    }
    let writes: [(&str, Value); 6] = [
        ("/api/projects", json!({"id": "z", "name": "z"})),
        ("/api/projects/p/tasks", json!({"title": "t"})),
        ("/api/projects/p/archive", json!({})),
        ("/api/daemon/stop", json!({})),
        ("/api/daemon/tick", json!({})),
        ("/api/projects/p/decisions/1/approve", json!({})),
    ];
    for (path, body) in &writes {
        assert_error(&anon.post(path, body.clone()).await, 401, &["Bearer"]);
        assert_error(&wrong.post(path, body.clone()).await, 401, &["wrong"]);
    }
    assert_eq!(count(&home.db("p"), "SELECT COUNT(*) FROM task"), 0);
    let (code, v) = right
        .post("/api/projects/p/tasks", json!({"title": "t"}))
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(right.post("/api/daemon/tick", json!({})).await.0, 200);
    d.stop();

    // Without a token, writes are open on loopback.
    let home = TestHome::new("", "");
    home.create_project("p");
    let d = Daemon::start(&home);
    let (code, v) = Api::new(&d, None)
        .post("/api/projects/p/tasks", json!({"title": "t"}))
        .await;
    assert_eq!(code, 201, "{v}");
    d.stop();

    // A non-loopback bind without a token refuses to start.
    let home = TestHome::new("", "");
    let out = home
        .cmd()
        .args(["serve", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("api_token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Paths registered with `.route("…")` or `#[utoipa::path(…, path = "…")]`
/// anywhere in the sources.
fn routes_in_sources() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for marker in [".route(\"", "path = \""] {
                    for (i, _) in text.match_indices(marker) {
                        let rest = &text[i + marker.len()..];
                        let path = &rest[..rest.find('"').unwrap()];
                        if path.starts_with('/') {
                            out.insert(path.to_string());
                        }
                    }
                }
                // `.route(\n  "…"` spelled over two lines.
                for (i, _) in text.match_indices(".route(\n") {
                    let rest = text[i + 8..].trim_start();
                    if let Some(r) = rest.strip_prefix('"') {
                        out.insert(r[..r.find('"').unwrap()].to_string());
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut out,
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_lists_every_route_and_only_routes_that_exist() {
    let home = TestHome::new("", "");
    home.create_project("p");
    let d = Daemon::start(&home);
    let api = Api::new(&d, None);
    let (code, doc) = api.get("/api/openapi.json").await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let paths = doc["paths"].as_object().unwrap();

    let routes = routes_in_sources();
    assert!(routes.len() > 30, "found the routes: {routes:?}");
    for r in &routes {
        if r.contains("{*") {
            continue; // the gateway's catch-all for unknown /v1 endpoints
        }
        assert!(
            paths.contains_key(r),
            "{r} is routed but not in openapi.json"
        );
    }
    for want in [
        "/api/projects",
        "/api/projects/{id}/tasks",
        "/api/projects/{id}/tasks/{task}/status",
        "/api/events",
        "/api/decisions",
        "/api/projects/{id}/sessions/{sid}/log/stream",
    ] {
        assert!(paths.contains_key(want), "{want} documented");
    }
    // Every documented operation is routed (the fallback answers "no route").
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if path.starts_with("/v1/") || path == "/api/events" || path.ends_with("/stream") {
                continue; // upstream calls and endless streams
            }
            let concrete = path
                .replace("{id}", "p")
                .replace("{task}", "T-0001")
                .replace("{n}", "1")
                .replace("{sid}", "s");
            let (_, v) = api
                .raw(m.clone(), &concrete, Some("{}"), Some("application/json"))
                .await;
            let msg = v["error"]["message"].as_str().unwrap_or_default();
            assert!(!msg.starts_with("no route"), "{m} {path}: {v}");
        }
    }
    // Schemas of the records are there.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "Task",
        "TaskDetail",
        "Decision",
        "Comment",
        "Session",
        "Project",
    ] {
        assert!(schemas.contains_key(s), "schema {s}");
    }
    d.stop();
}

/// Writes a skill folder in the format of `skills/builtins/*`.
fn write_skill(dir: &std::path::Path, id: &str, description: &str, tags: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("SKILL.md"),
        format!(
            "---\nname: {id}\ndescription: {description}\n---\n\n# {id}\n\n## When to use\nAlways.\n\n## Steps\n1. Do it.\n\n## Pitfalls\n- None.\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("meta.yaml"),
        format!("version: 1\ntags: [{tags}]\nsource_experiences: []\n"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn skills_of_a_project_with_overrides_and_errors() {
    let home = TestHome::new("", "");
    home.create_project("p");
    home.create_project("q");
    let root = home.path();
    write_skill(
        &root.join("skills/custom/csv-hygiene"),
        "csv-hygiene",
        "global version",
        "data",
    );
    write_skill(
        &root.join("skills/custom/other"),
        "other",
        "only global",
        "misc",
    );
    // p overrides csv-hygiene with its own; q sees the global one.
    write_skill(
        &root.join("projects/p/skills/csv-hygiene"),
        "csv-hygiene",
        "p's own version",
        "data, p",
    );
    let d = Daemon::start(&home);
    let api = Api::new(&d, None);

    let (code, v) = api.get("/api/projects/p/skills").await;
    assert_eq!(code, 200, "{v}");
    let skills = v["skills"].as_array().unwrap();
    let csv = skills
        .iter()
        .find(|s| s["id"] == "csv-hygiene")
        .expect("csv-hygiene");
    assert_eq!(csv["source"], "project", "{csv}");
    assert_eq!(csv["description"], "p's own version");
    assert!(
        skills
            .iter()
            .any(|s| s["id"] == "other" && s["source"] == "custom"),
        "{v}"
    );

    let (code, v) = api.get("/api/projects/q/skills").await;
    assert_eq!(code, 200, "{v}");
    let csv = v["skills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "csv-hygiene")
        .cloned()
        .unwrap();
    assert_eq!(csv["source"], "custom");
    assert_eq!(csv["description"], "global version");
    assert_eq!(csv["tags"], json!(["data"]));

    assert_error(&api.get("/api/projects/nope/skills").await, 404, &["nope"]);
    assert_error(&api.get("/api/projects/..%2Fetc/skills").await, 400, &[]);
    // A broken skill folder is reported, not skipped silently.
    std::fs::write(
        root.join("projects/p/skills/csv-hygiene/meta.yaml"),
        "version: [\n",
    )
    .unwrap();
    assert_error(
        &api.get("/api/projects/p/skills").await,
        503,
        &["meta.yaml"],
    );
    d.stop();
}
