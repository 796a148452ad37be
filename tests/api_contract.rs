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

    /// Sends `body` as text with the given content type, or no body at all:
    /// for the malformed JSON, wrong content types and bodiless POSTs that
    /// the shared [`post_json`] (always a well-formed JSON body) cannot send.
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
        decode(req.send().await.expect("request")).await
    }

    async fn get(&self, path: impl AsRef<str>) -> (u16, Value) {
        self.raw(Method::GET, path.as_ref(), None, None).await
    }

    /// `POST path` with `body` as JSON (and the token, if any).
    async fn post(&self, path: impl AsRef<str>, body: Value) -> (u16, Value) {
        self.post_with(path, body, &[]).await
    }

    /// [`post`](Self::post) with extra headers.
    async fn post_with(
        &self,
        path: impl AsRef<str>,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let auth = self.token.as_deref().map(bearer);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            all.push(("authorization", a));
        }
        let url = format!("{}{}", self.base, path.as_ref());
        decode(post_json(&url, &body, &all).await).await
    }
}

/// (status, body as JSON, or as a JSON string when it is not JSON).
async fn decode(resp: reqwest::Response) -> (u16, Value) {
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
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

/// A home with the `w` agent (a script that says hello and finishes its
/// task) and project `p`, served with the ticker stopped: nothing runs
/// unless a test starts it.
fn serve_stopped() -> (TestHome, Daemon) {
    let home = TestHome::with_config("daemon:\n  tick_interval: 1\n", "");
    std::fs::write(home.path().join("config/agents.yaml"), agents_yaml(&home)).unwrap();
    home.create_project("p");
    let d = Daemon::start(&home);
    d.post("/api/daemon/stop").unwrap();
    (home, d)
}

/// `POST path body` that must answer 201; returns the created record.
async fn created(api: &Api, path: &str, body: Value) -> Value {
    let (code, v) = api.post(path, body).await;
    assert_eq!(code, 201, "{v}");
    v
}

/// The id of a created record.
fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The seven tasks of project `p` the task tests read: `first` (high, tag
/// `ui`), `second` (depends on `first`, "needle" in its description),
/// `third` (low, written by `alice` through X-Mozi-Actor) and four fillers.
/// Returns the ids of the first three.
async fn seed_tasks(api: &Api) -> (String, String, String) {
    let tasks = "/api/projects/p/tasks";
    let a = created(
        api,
        tasks,
        json!({"title": "first", "priority": "high", "tags": ["ui"], "kind": "code"}),
    )
    .await;
    assert_eq!(a["creator"], "operator:api");
    let b = created(
        api,
        tasks,
        json!({"title": "second", "depends_on": [id_of(&a)], "description": "needle in here"}),
    )
    .await;
    // X-Mozi-Actor names the writer.
    let c = api
        .post_with(
            tasks,
            json!({"title": "third", "priority": "low"}),
            &[("x-mozi-actor", "alice")],
        )
        .await;
    assert_eq!((c.0, &c.1["creator"]), (201, &json!("alice")), "{}", c.1);
    for i in 0..4 {
        created(api, tasks, json!({"title": format!("filler {i}")})).await;
    }
    (id_of(&a), id_of(&b), id_of(&c.1))
}

#[tokio::test(flavor = "multi_thread")]
async fn projects_are_listed_created_archived_and_restored() {
    let (home, d) = serve_stopped();
    let api = Api::new(&d, None);
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
    let v = created(
        &api,
        "/api/projects",
        json!({"id": "q", "name": "Q", "description": "second", "agents": ["w"]}),
    )
    .await;
    assert_eq!(v["status"], "active");
    assert_eq!(v["agents"], json!(["w"]));
    assert!(home.db("q").exists(), "the blackboard file was created");
    let new = |body: Value| api.post("/api/projects", body);
    assert_error(
        &new(json!({"id": "q", "name": "again"})).await,
        409,
        &["q", "exists"],
    );
    assert_error(
        &new(json!({"id": "Bad Id!", "name": "x"})).await,
        400,
        &["Bad Id!"],
    );
    assert_error(&new(json!({"id": "r"})).await, 400, &["name"]);
    let raw = |body: &'static str, ct: &'static str| {
        api.raw(Method::POST, "/api/projects", Some(body), Some(ct))
    };
    assert_error(&raw("{\"id\": \"r\",", "application/json").await, 400, &[]);
    assert_error(
        &raw("{\"id\":\"r\",\"name\":\"r\"}", "text/plain").await,
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
    let again = api.post("/api/projects/q/archive", json!({})).await;
    assert_error(&again, 409, &["archived"]);
    let (code, v) = api.post("/api/projects/q/restore", json!({})).await;
    assert_eq!((code, &v["status"]), (200, &json!("active")), "{v}");
    let again = api.post("/api/projects/q/restore", json!({})).await;
    assert_error(&again, 409, &["not archived"]);
    let nope = api.post("/api/projects/nope/restore", json!({})).await;
    assert_error(&nope, 404, &["nope"]);
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn archiving_a_project_with_a_working_task_is_refused() {
    let (home, d) = serve_stopped();
    let api = Api::new(&d, None);
    let working = home.create_task("p", "held", &[]);
    home.ok(&["bb", "--project", "p", "--agent", "w", "claim", &working]);
    assert_error(
        &api.post("/api/projects/p/archive", json!({})).await,
        409,
        &["working"],
    );
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_are_created_and_bad_fields_refused() {
    let (_home, d) = serve_stopped();
    let api = Api::new(&d, None);
    seed_tasks(&api).await;
    let new = |body: Value| api.post("/api/projects/p/tasks", body);
    let dep = new(json!({"title": "x", "depends_on": ["T-9999"]})).await;
    assert_error(&dep, 404, &["T-9999"]);
    let untitled = new(json!({"description": "no title"})).await;
    assert_error(&untitled, 400, &["title"]);
    assert_error(
        &new(json!({"title": "x", "colour": "red"})).await,
        400,
        &["colour"],
    );
    assert_error(
        &new(json!({"title": "x", "priority": "asap"})).await,
        400,
        &["asap"],
    );
    assert_error(
        &api.post("/api/projects/nope/tasks", json!({"title": "x"}))
            .await,
        404,
        &["nope"],
    );
    // A task that could never start is refused naming the value, the
    // known choices and `force`; with `"force": true` it is created.
    let ghost = new(json!({"title": "x", "assignee": "ghost"})).await;
    assert_error(
        &ghost,
        400,
        &[
            "unknown assignee \"ghost\"",
            "defines: w",
            "\"force\": true",
        ],
    );
    let nosuch = new(json!({"title": "x", "review_protocol": "nosuch"})).await;
    assert_error(
        &nosuch,
        400,
        &["unknown review protocol \"nosuch\"", "\"force\": true"],
    );
    let forced = created(
        &api,
        "/api/projects/p/tasks",
        json!({"title": "x", "assignee": "ghost", "force": true}),
    )
    .await;
    assert_eq!(forced["assignee"], "ghost", "{forced}");
    assert_eq!(forced["status"], "pending", "{forced}");
    // A bad X-Mozi-Actor is refused.
    let (code, v) = api
        .post_with(
            "/api/projects/p/tasks",
            json!({"title": "x"}),
            &[("x-mozi-actor", "Not An Id")],
        )
        .await;
    assert_eq!(code, 400, "{v}");
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn task_list_pages_every_task_once_and_filters() {
    let (_home, d) = serve_stopped();
    let api = Api::new(&d, None);
    let (a_id, b_id, c_id) = seed_tasks(&api).await;
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
    assert_eq!(seen[6], c_id, "low priority last: {seen:?}");
    // Filters.
    let list = |query: &'static str| api.get(format!("/api/projects/p/tasks?{query}"));
    assert_eq!(list("tag=ui").await.1["total"], 1);
    let (_, v) = list("q=needle").await;
    assert_eq!(v["tasks"][0]["id"], json!(b_id), "{v}");
    assert_eq!(list("priority=low").await.1["total"], 1);
    assert_eq!(list("status=pending,blocked").await.1["total"], 7);
    assert_eq!(list("assignee=nobody").await.1["total"], 0);
    assert_error(&list("cursor=zz-not-hex").await, 400, &["cursor"]);
    assert_error(&list("limit=0").await, 400, &["limit"]);
    assert_error(&list("limit=501").await, 400, &["501"]);
    assert_error(&list("limit=ten").await, 400, &["limit"]);
    assert_error(&list("status=sleeping").await, 400, &["sleeping"]);
    assert_error(&list("bogus=1").await, 400, &["bogus"]);
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn task_detail_and_operator_transitions() {
    let (_home, d) = serve_stopped();
    let api = Api::new(&d, None);
    let (a_id, b_id, _) = seed_tasks(&api).await;
    let (code, v) = api.get(&format!("/api/projects/p/tasks/{b_id}")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["depends_on"][0]["id"], json!(a_id), "{v}");
    for key in ["dependents", "comments", "outputs", "reviews", "sessions"] {
        assert!(v[key].is_array(), "detail has {key}: {v}");
    }
    let missing = api.get("/api/projects/p/tasks/T-9999").await;
    assert_error(&missing, 404, &["T-9999"]);
    let banana = api.get("/api/projects/p/tasks/banana").await;
    assert_error(&banana, 400, &["banana"]);

    // Operator transitions.
    let st = |t: &str| format!("/api/projects/p/tasks/{t}/status");
    let set = |t: &str, body: Value| api.post(st(t), body);
    let reason = json!({"status": "blocked", "reason": "waiting on legal"});
    let (code, v) = set(&b_id, reason).await;
    assert_eq!((code, &v["status"]), (200, &json!("blocked")), "{v}");
    let (code, v) = set(&b_id, json!({"status": "pending"})).await;
    assert_eq!((code, &v["status"]), (200, &json!("pending")), "{v}");
    let (code, v) = set(&b_id, json!({"status": "cancelled"})).await;
    assert_eq!((code, &v["status"]), (200, &json!("cancelled")), "{v}");
    let blocked = set(&b_id, json!({"status": "blocked"})).await;
    assert_error(&blocked, 409, &["cancelled", "blocked"]);
    assert_error(&set(&b_id, json!({"status": "done"})).await, 400, &["done"]);
    let asleep = set(&b_id, json!({"status": "asleep"})).await;
    assert_error(&asleep, 400, &["asleep"]);
    let unknown = set("T-9999", json!({"status": "cancelled"})).await;
    assert_error(&unknown, 404, &["T-9999"]);
    assert_error(&set(&b_id, json!({})).await, 400, &["status"]);
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_are_reprioritised_and_reassigned() {
    let (home, d) = serve_stopped();
    let api = Api::new(&d, None);
    let (a_id, _, c_id) = seed_tasks(&api).await;
    let edit = |t: &str, body: Value| {
        let path = format!("/api/projects/p/tasks/{t}");
        let body = body.to_string();
        let api = &api;
        async move {
            api.raw(Method::PATCH, &path, Some(&body), Some("application/json"))
                .await
        }
    };
    let (code, v) = edit(&c_id, json!({"priority": "urgent", "assignee": "w"})).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (&v["priority"], &v["assignee"]),
        (&json!("urgent"), &json!("w")),
        "{v}"
    );
    // The store says so, and one task.updated event names both changes.
    let db = home.path().join("projects/p/blackboard.db");
    let stored = format!(
        "SELECT count(*) FROM task WHERE id = '{c_id}' AND priority = 1 AND assignee = 'w'"
    );
    assert_eq!(count(&db, &stored), 1);
    let event = format!("SELECT count(*) FROM event WHERE kind = 'task.updated' AND task_id = '{c_id}' AND payload LIKE '%\"to\":\"urgent\"%'");
    assert_eq!(count(&db, &event), 1);
    // "" clears the assignee.
    let (code, v) = edit(&c_id, json!({"assignee": ""})).await;
    assert_eq!((code, &v["assignee"]), (200, &Value::Null), "{v}");
    // An agent that is not configured is refused unless forced.
    let ghost = edit(&c_id, json!({"assignee": "ghost"})).await;
    assert_error(&ghost, 400, &["ghost", "force"]);
    let (code, v) = edit(&c_id, json!({"assignee": "ghost", "force": true})).await;
    assert_eq!((code, &v["assignee"]), (200, &json!("ghost")), "{v}");
    // From another origin (a page elsewhere in the operator's browser): refused.
    let foreign = api
        .client
        .patch(format!("{}/api/projects/p/tasks/{c_id}", api.base))
        .header("origin", "http://evil.example")
        .header("content-type", "application/json")
        .body(r#"{"priority":"low"}"#)
        .send()
        .await
        .unwrap();
    assert_error(&decode(foreign).await, 403, &["cross-origin"]);
    assert_eq!(
        count(&db, &stored.replace("assignee = 'w'", "1")),
        1,
        "still urgent"
    );
    assert_error(
        &edit(&c_id, json!({"priority": "asap"})).await,
        400,
        &["asap"],
    );
    assert_error(&edit(&c_id, json!({})).await, 400, &["nothing to change"]);
    assert_error(
        &edit(&c_id, json!({"colour": "red"})).await,
        400,
        &["colour"],
    );
    assert_error(
        &edit("T-9999", json!({"priority": "low"})).await,
        404,
        &["T-9999"],
    );
    // A finished task is not edited: reopen it first.
    let st = format!("/api/projects/p/tasks/{a_id}/status");
    let (code, _) = api.post(&st, json!({"status": "cancelled"})).await;
    assert_eq!(code, 200);
    let done = edit(&a_id, json!({"priority": "low"})).await;
    assert_error(&done, 409, &["cancelled", "reopen"]);
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn comments_are_added_and_bad_or_oversized_ones_refused() {
    let (_home, d) = serve_stopped();
    let api = Api::new(&d, None);
    let a = created(&api, "/api/projects/p/tasks", json!({"title": "first"})).await;
    let a_id = id_of(&a);
    let cm = format!("/api/projects/p/tasks/{a_id}/comments");
    let question = json!({"body": "looks good", "comment_type": "question"});
    let v = created(&api, &cm, question).await;
    assert_eq!(v["author"], "operator:api");
    assert_eq!(v["comment_type"], "question");
    assert_error(&api.post(&cm, json!({"body": "  "})).await, 400, &["empty"]);
    let system = json!({"body": "x", "comment_type": "system"});
    assert_error(&api.post(&cm, system).await, 400, &["system"]);
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
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_are_listed_approved_and_rejected() {
    let (home, d) = serve_stopped();
    let api = Api::new(&d, None);
    for (question, decision) in [("Ship it?", "yes"), ("Rename?", "no")] {
        home.bb_ok(
            "p",
            &[
                "decide",
                "--propose",
                "--question",
                question,
                "--decision",
                decision,
            ],
        );
    }
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
    let decide = |id: &str, verb: &str| format!("/api/projects/p/decisions/{id}/{verb}");
    let (code, v) = api
        .post(
            // The display form D7; the reject below uses the bare number.
            &decide(&format!("D{}", ids[0]), "approve"),
            json!({"rationale": "fine"}),
        )
        .await;
    assert_eq!((code, &v["status"]), (200, &json!("approved")), "{v}");
    assert_eq!(v["decided_by"], "operator:api");
    // No body at all is fine too.
    let reject = decide(&ids[1].to_string(), "reject");
    let (code, v) = api.raw(Method::POST, &reject, None, None).await;
    assert_eq!((code, &v["status"]), (200, &json!("rejected")), "{v}");
    let twice = api
        .post(&decide(&format!("%23{}", ids[0]), "reject"), json!({}))
        .await;
    assert_error(&twice, 409, &["already approved"]);
    let missing = api.post(&decide("999", "approve"), json!({})).await;
    assert_error(&missing, 404, &["999"]);
    let bad = api.post(&decide("abc", "approve"), json!({})).await;
    assert_error(&bad, 400, &["abc"]);
    let maybe = api.get("/api/projects/p/decisions?status=maybe").await;
    assert_error(&maybe, 400, &["maybe"]);
    let (_, v) = api.get("/api/decisions?status=proposed").await;
    assert_eq!(v["decisions"], json!([]), "{v}");
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn observations_and_experiences_are_filtered() {
    let (home, d) = serve_stopped();
    let api = Api::new(&d, None);
    home.bb_ok(
        "p",
        &["observe", "--level", "warn", "--body", "disk filling"],
    );
    home.bb_ok("p", &["observe", "--body", "fyi"]);
    home.bb_ok(
        "p",
        &[
            "experience",
            "add",
            "--tags",
            "rust,sqlite",
            "--lesson",
            "index the keyset",
        ],
    );
    let (code, v) = api.get("/api/projects/p/observations?level=warn").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["observations"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["observations"][0]["body"], "disk filling");
    let (_, v) = api.get("/api/projects/p/observations?limit=1").await;
    assert_eq!(v["observations"][0]["body"], "fyi", "{v}");
    let loud = api.get("/api/projects/p/observations?level=loud").await;
    assert_error(&loud, 400, &["loud"]);
    let zero = api.get("/api/projects/p/observations?limit=0").await;
    assert_error(&zero, 400, &["limit"]);
    let (code, v) = api.get("/api/projects/p/experiences?tag=sqlite").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["experiences"][0]["lesson"], "index the keyset", "{v}");
    let (_, v) = api.get("/api/projects/p/experiences?tag=go").await;
    assert_eq!(v["experiences"], json!([]));
    let old = api.get("/api/projects/p/experiences?status=old").await;
    assert_error(&old, 400, &["old"]);
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_their_logs_after_the_agent_works_a_task() {
    let (home, d) = serve_stopped();
    let api = Api::new(&d, None);
    let project = json!({"id": "q", "name": "Q", "agents": ["w"]});
    created(&api, "/api/projects", project).await;
    let t = created(
        &api,
        "/api/projects/q/tasks",
        json!({"title": "run me", "assignee": "w"}),
    )
    .await;
    let t_id = id_of(&t);
    assert_eq!(d.post("/api/daemon/start").unwrap().0, 200);
    let ended =
        format!("SELECT COUNT(*) FROM session WHERE task_id = '{t_id}' AND ended_at IS NOT NULL");
    wait_for(
        Duration::from_secs(60),
        "the agent to finish the task",
        || count(&home.db("q"), &ended) == 1,
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
    let negative = api.get(&format!("{log}?offset=-1")).await;
    assert_error(&negative, 400, &["offset"]);
    let unknown = api
        .get("/api/projects/q/sessions/no-such-session/log")
        .await;
    assert_error(&unknown, 404, &["no-such-session"]);
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
    let limit = api.get("/api/projects/q/sessions?limit=5000").await;
    assert_error(&limit, 400, &["limit"]);
    d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_guards_every_write_and_leaves_reads_open() {
    let home = TestHome::with_config("server:\n  api_token: s3cret-token\n", "");
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
    // The dashboard's reprioritise / reassign (PATCH) is a write too.
    let edit = (Some(r#"{"priority":"low"}"#), Some("application/json"));
    let task = format!("/api/projects/p/tasks/{}", v["id"].as_str().unwrap());
    let refused = anon.raw(Method::PATCH, &task, edit.0, edit.1).await;
    assert_error(&refused, 401, &["Bearer"]);
    let (code, v) = right.raw(Method::PATCH, &task, edit.0, edit.1).await;
    assert_eq!((code, &v["priority"]), (200, &json!("low")), "{v}");
    assert_eq!(right.post("/api/daemon/tick", json!({})).await.0, 200);
    d.stop();

    // Without a token, writes are open on loopback.
    let home = TestHome::with_config("", "");
    home.create_project("p");
    let d = Daemon::start(&home);
    let (code, v) = Api::new(&d, None)
        .post("/api/projects/p/tasks", json!({"title": "t"}))
        .await;
    assert_eq!(code, 201, "{v}");
    d.stop();

    // A non-loopback bind without a token refuses to start.
    let home = TestHome::with_config("", "");
    let out = home
        .command()
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
/// anywhere in the sources (`src/` and `crates/`).
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
    // The main crate and the workspace crates (the gateway's routes).
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    walk(&repo.join("src"), &mut out);
    walk(&repo.join("crates"), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_lists_every_route_and_only_routes_that_exist() {
    let home = TestHome::with_config("", "");
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
                .replace("{event}", "1")
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
    let home = TestHome::with_config("", "");
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

/// `/api/budgets`: reads are open, writes need the token; a bad budget or
/// a negative USD is a 400 naming it; a change is in force and listed at
/// once; `moziplus budget` sends the home's token itself.
#[tokio::test(flavor = "multi_thread")]
async fn budgets_are_read_openly_changed_with_the_token_and_bad_ones_named() {
    let home = TestHome::with_config(
        "server:\n  api_token: s3cret-token\nbudgets:\n  projects: {'*': {day: {usd: 5}}}\n",
        "",
    );
    home.create_project("p");
    let d = Daemon::start(&home);
    let anon = Api::new(&d, None);
    let right = Api::new(&d, Some("s3cret-token"));
    let (code, list) = anon.get("/api/budgets").await;
    assert_eq!(code, 200, "{list}");
    let line = |list: &Value, key: &str| {
        list["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["budget"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no {key} in {list}"))
    };
    assert_eq!(line(&list, "project:*:day")["source"], "config");
    let applied = line(&list, "project:p:day");
    assert_eq!(
        (
            &applied["source"],
            &applied["limit_usd"],
            &applied["used_usd"]
        ),
        (&json!("project:*:day"), &json!(5.0), &json!(0.0)),
        "{applied}"
    );

    let body = r#"{"budget":"project:p:day","usd":2.5}"#;
    async fn put(api: &Api, body: &str) -> (u16, Value) {
        api.raw(
            Method::PUT,
            "/api/budgets",
            Some(body),
            Some("application/json"),
        )
        .await
    }
    assert_error(&put(&anon, body).await, 401, &["Bearer"]);
    assert_error(
        &put(&right, r#"{"budget":"project:p","usd":1}"#).await,
        400,
        &["\"project:p\"", "project:<id>:day"],
    );
    assert_error(
        &put(&right, r#"{"budget":"home:day","usd":-1}"#).await,
        400,
        &["usd", "-1"],
    );
    let (code, changed) = put(&right, body).await;
    assert_eq!(code, 200, "{changed}");
    assert_eq!(changed["budget"]["source"], "override", "{changed}");
    assert_eq!(changed["budget"]["limit_usd"], 2.5, "{changed}");
    let (_, list) = anon.get("/api/budgets").await;
    assert_eq!(line(&list, "project:p:day")["limit_usd"], 2.5);

    let clear = "/api/budgets?budget=project:p:day";
    assert_error(
        &anon.raw(Method::DELETE, clear, None, None).await,
        401,
        &["Bearer"],
    );
    // The CLI reads the home's token and goes through the API.
    let bind = format!("127.0.0.1:{}", d.port);
    let mut cli = home.command();
    cli.args([
        "budget",
        "--bind",
        &bind,
        "--json",
        "clear",
        "project:p:day",
    ]);
    let out = tokio::task::spawn_blocking(move || cli.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cleared: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cleared["budget"]["source"], "project:*:day", "{cleared}");
    assert_eq!(cleared["budget"]["limit_usd"], 5.0, "{cleared}");
    d.stop();
}

/// Every event of `/api/events/log` from `query`, following `next_cursor`
/// page by page; returns the events and the number of pages.
async fn all_pages(api: &Api, query: &str) -> (Vec<Value>, usize) {
    let (mut events, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let path = match &cursor {
            None => format!("/api/events/log?{query}"),
            Some(c) => format!("/api/events/log?{query}&cursor={c}"),
        };
        let (code, v) = api.get(&path).await;
        assert_eq!(code, 200, "{path}: {v}");
        pages += 1;
        events.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (events, pages),
        }
        assert!(pages < 100, "the cursor never ends");
    }
}

/// Issue 26, item 6: after a restart the Events page showed `urgent 0`
/// beside a failed task, because the feed held only what the live stream
/// had sent since the page loaded. The alerts and their acknowledgements
/// are the store's: the counts survive two real daemon restarts, the log
/// pages across projects with a cursor (nothing cut silently), and an
/// acknowledgement through the API (token-guarded, cross-origin refused)
/// or `bb events ack` is stored with who and when.
#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_their_acknowledgements_survive_daemon_restarts() {
    let home = TestHome::with_config("server:\n  api_token: s3cret-token\n", "");
    home.create_project("shop");
    home.create_project("blog");
    let out = home.bb_ok(
        "shop",
        &["observe", "--level", "alert", "--body", "disk full"],
    );
    assert!(out.contains("recorded"), "{out}");
    for body in ["slow upstream", "key parked"] {
        home.bb_ok("blog", &["observe", "--level", "warn", "--body", body]);
    }
    for i in 0..5 {
        home.bb_ok("shop", &["observe", "--body", &format!("note {i}")]);
    }
    let d = Daemon::start(&home);
    let api = Api::new(&d, Some("s3cret-token"));
    let (code, v) = api.get("/api/events/log?unacked=1").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["unacked"], json!({"urgent": 1, "attention": 2}), "{v}");
    let alerts = v["events"].as_array().unwrap();
    assert_eq!(alerts.len(), 3, "{v}");
    assert!(alerts.iter().all(|e| e["acked_at"].is_null()), "{v}");
    let urgent = alerts.iter().find(|e| e["level"] == "urgent").unwrap();
    assert_eq!(urgent["project"], "shop");
    assert_eq!(urgent["payload"]["body"], "disk full", "{urgent}");
    let urgent_id = urgent["id"].as_i64().unwrap();
    d.stop();

    // A restart changes nothing: the counts are the store's.
    let d = Daemon::start(&home);
    let api = Api::new(&d, Some("s3cret-token"));
    let anon = Api::new(&d, None);
    let (_, v) = anon.get("/api/events/log?unacked=1&project=shop").await;
    assert_eq!(v["unacked"], json!({"urgent": 1, "attention": 0}), "{v}");

    // Paging: two at a time across both projects, every event once, newest first.
    let (all, pages) = all_pages(&anon, "limit=2").await;
    let total = count(&home.db("shop"), "SELECT COUNT(*) FROM event")
        + count(&home.db("blog"), "SELECT COUNT(*) FROM event");
    assert_eq!(all.len() as i64, total, "every stored event is listed");
    assert_eq!(pages as i64, (total + 1) / 2, "pages of two");
    let keys: BTreeSet<(String, i64)> = all
        .iter()
        .map(|e| {
            (
                e["project"].as_str().unwrap().to_string(),
                e["id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys.len(), all.len(), "no event twice");
    let times: Vec<&str> = all
        .iter()
        .map(|e| e["created_at"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let (daily, _) = all_pages(&anon, "levels=optional&limit=3").await;
    assert!(daily.len() >= 5 && daily.iter().all(|e| e["level"] == "optional"));

    // Bad input is named.
    assert_error(&anon.get("/api/events/log?limit=0").await, 400, &["limit"]);
    assert_error(
        &anon.get("/api/events/log?cursor=shop").await,
        400,
        &["next_cursor"],
    );
    assert_error(
        &anon.get("/api/events/log?levels=loud").await,
        400,
        &["loud"],
    );
    assert_error(
        &anon.get("/api/events/log?unacked=yes").await,
        400,
        &["unacked"],
    );

    // The acknowledgement is a write: token, same origin.
    let ack = format!("/api/projects/shop/events/{urgent_id}/ack");
    assert_error(&anon.post(&ack, json!({})).await, 401, &["Bearer"]);
    let foreign = api
        .post_with(&ack, json!({}), &[("origin", "http://evil.example")])
        .await;
    assert_error(&foreign, 403, &["cross-origin"]);
    let (code, v) = api
        .post_with(&ack, json!({}), &[("x-mozi-actor", "alice")])
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (&v["acked_by"], &v["id"]),
        (&json!("alice"), &json!(urgent_id)),
        "{v}"
    );
    let acked_at = v["acked_at"].as_str().unwrap().to_string();
    // Again: the first acknowledgement stands.
    let (code, again) = api
        .post_with(&ack, json!({}), &[("x-mozi-actor", "bob")])
        .await;
    assert_eq!(
        (code, &again["acked_by"]),
        (200, &json!("alice")),
        "{again}"
    );
    assert_eq!(again["acked_at"], json!(acked_at));
    // Not an alert, not there.
    let note = daily[0]["id"].as_i64().unwrap();
    let project = daily[0]["project"].as_str().unwrap();
    assert_error(
        &api.post(
            format!("/api/projects/{project}/events/{note}/ack"),
            json!({}),
        )
        .await,
        400,
        &["optional", "only urgent and attention"],
    );
    assert_error(
        &api.post("/api/projects/shop/events/99999/ack", json!({}))
            .await,
        404,
        &["event 99999"],
    );
    let (_, v) = anon.get("/api/events/log?unacked=1").await;
    assert_eq!(v["unacked"], json!({"urgent": 0, "attention": 2}), "{v}");

    // `bb events ack` beside the running daemon.
    let (_, v) = anon.get("/api/events/log?unacked=1&project=blog").await;
    let warn_id = v["events"][0]["id"].as_i64().unwrap();
    let out = home.bb("blog", &["events", "ack", &warn_id.to_string()]);
    assert!(out.stdout.contains("acknowledged by"), "{out}");
    d.stop();

    let d = Daemon::start(&home);
    let anon = Api::new(&d, None);
    let (_, v) = anon.get("/api/events/log?unacked=1").await;
    assert_eq!(v["unacked"], json!({"urgent": 0, "attention": 1}), "{v}");
    assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = anon.get("/api/events/log?project=shop&levels=urgent").await;
    assert_eq!(v["events"][0]["acked_by"], "alice", "{v}");
    let out = home.bb("blog", &["events", "--unacked"]);
    assert!(out.stdout.contains("[unacknowledged]"), "{out}");
    assert!(
        out.stdout
            .contains("unacknowledged alerts: urgent 0, attention 1"),
        "{out}"
    );
    d.stop();
}

/// Issue 26, item 6: `bb events` stopped at 100 rows without saying so.
/// It now says where the listing stopped and the command for the rest, on
/// stderr (stdout stays the rows, `--json` stays an array), for the log and
/// for `--unacked`; refusals name what is wrong.
#[test]
fn bb_events_says_when_it_stops_short_of_all_rows() {
    let home = TestHome::with_config("", "");
    home.create_project("p");
    for i in 0..103 {
        home.bb_ok("p", &["observe", "--body", &format!("note {i}")]);
    }
    for i in 0..3 {
        home.bb_ok(
            "p",
            &["observe", "--level", "warn", "--body", &format!("warn {i}")],
        );
    }
    let db = home.db("p");
    let total = query_i64(&db, "SELECT COUNT(*) FROM event");
    let hundredth = query_i64(&db, "SELECT id FROM event ORDER BY id LIMIT 1 OFFSET 99");
    let out = home.bb("p", &["events"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout.lines().filter(|l| l.contains("Z ")).count(),
        100,
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "stopped at 100 events; more follow: bb events --after {hundredth}"
        )),
        "{out}"
    );
    let rest = home.bb("p", &["events", "--after", &hundredth.to_string()]);
    let rows = rest.stdout.lines().filter(|l| l.contains("Z ")).count() as i64;
    assert_eq!(rows, total - 100, "{rest}");
    assert!(rest.stderr.is_empty(), "the end says nothing more: {rest}");
    assert!(
        rest.stdout
            .contains("unacknowledged alerts: urgent 0, attention 3"),
        "{rest}"
    );

    let json = home.bb("p", &["--json", "events", "--unacked", "--limit", "2"]);
    let v: Value = serde_json::from_str(&json.stdout).expect("--json is one array");
    let ids: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let last = query_i64(&db, "SELECT MAX(id) FROM event");
    assert_eq!(ids, [last, last - 1], "newest first: {v}");
    let before = (last - 1).to_string();
    assert!(
        json.stderr
            .contains(&format!("bb events --unacked --before {before}")),
        "{json}"
    );
    let next = home.bb("p", &["events", "--unacked", "--before", &before]);
    assert!(
        next.stdout.contains("warn 0") && !next.stdout.contains("warn 1"),
        "{next}"
    );

    for (args, needle) in [
        (vec!["events", "ack", "1"], "only urgent and attention"),
        (vec!["events", "ack", "999"], "event 999 not found"),
        (vec!["events", "--limit", "0"], "0"),
        (vec!["events", "--before", "3"], "--unacked"),
    ] {
        let out = home.bb("p", &args);
        assert_ne!(out.code, 0, "{args:?}: {out}");
        assert!(
            out.stderr.contains(needle),
            "{args:?} should say {needle:?}: {out}"
        );
    }
    let ack = home.bb("p", &["events", "ack", &(last - 2).to_string()]);
    assert!(ack.stdout.contains("acknowledged by human"), "{ack}");
    assert_eq!(
        query_i64(&home.db("p"), "SELECT COUNT(*) FROM event_ack"),
        1
    );
}

/// Issue 26, item 6: the gateway charts started at page load and were lost
/// on reload. The daemon stores one sample per lane (at once, then every
/// 10 s) in `<home>/gateway/history.db`, and a restarted daemon still serves
/// the earlier samples. (The provider is never called: a lane's sample
/// needs no traffic.)
#[tokio::test(flavor = "multi_thread")]
async fn gateway_history_is_stored_and_survives_a_restart() {
    let home = TestHome::with_config(
        "gateway:\n  limiter: { rate_per_minute: 6 }\n  providers:\n    - name: nvidia\n      base_url: http://127.0.0.1:9/v1\n      limited: true\n",
        "",
    );
    let d = Daemon::start(&home);
    let api = Api::new(&d, None);
    let mut first = Value::Null;
    for _ in 0..100 {
        let (code, v) = api.get("/api/gateway/history").await;
        assert_eq!(code, 200, "{v}");
        if let Some(s) = v["samples"].as_array().and_then(|a| a.first()) {
            assert_eq!(
                (&v["every_seconds"], &v["keep_seconds"]),
                (&json!(10), &json!(86400)),
                "{v}"
            );
            first = s.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(first["provider"], "nvidia", "a sample within 20 s: {first}");
    assert!(
        first["base_rate_per_minute"].as_f64().unwrap() > 0.0,
        "{first}"
    );
    assert_eq!(first["requests"], 0, "{first}");
    d.stop();

    let d = Daemon::start(&home);
    let api = Api::new(&d, None);
    let (_, v) = api
        .get("/api/gateway/history?seconds=600&provider=nvidia")
        .await;
    let ats: Vec<i64> = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["at_ms"].as_i64().unwrap())
        .collect();
    assert!(
        ats.contains(&first["at_ms"].as_i64().unwrap()),
        "kept across the restart: {v}"
    );
    let (_, none) = api.get("/api/gateway/history?provider=other").await;
    assert_eq!(none["samples"], json!([]), "{none}");
    assert_error(
        &api.get("/api/gateway/history?seconds=0").await,
        400,
        &["seconds"],
    );
    assert_error(
        &api.get("/api/gateway/history?seconds=90000").await,
        400,
        &["24 h"],
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.path().join("gateway/history.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the history file is private: {mode:o}");
    d.stop();
}
