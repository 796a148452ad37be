//! Several daemons on one PostgreSQL store (the suite's real server,
//! `scripts/test.sh`): each a real `moziplus serve` with a home of its own
//! (its own `agents.yaml`), all pointed at one database with
//! `MOZI_STORE__URL`. Killed with SIGKILL, as a host that dies.

#[path = "support/fake_upstream.rs"]
mod fake_upstream;
mod support;

use std::time::{Duration, Instant};

use fake_upstream::FakeUpstream;
use support::*;

const AGENTS: &str = "agents:
  - id: w
    runtime: command
    command: [\"sh\", \"-c\", \"moziplus bb done --agent w\"]
";

const DEFAULTS: &str = "daemon:
  tick_interval: 1
  max_global_agents: 6
  max_per_agent: 6
";

/// Held by the tests that must not share the 2 cores with each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A host: its home and, while it runs, its daemon.
struct Host {
    home: TestHome,
    daemon: Option<Daemon>,
}

impl Host {
    fn new(url: &str) -> Host {
        Host::with_defaults(url, DEFAULTS)
    }

    fn with_defaults(url: &str, defaults: &str) -> Host {
        Host::with(url, defaults, AGENTS)
    }

    fn with(url: &str, defaults: &str, agents: &str) -> Host {
        let home = TestHome::with_config(defaults, agents);
        let out = home.run_env(
            &["project", "create", "--id", "p", "--name", "P"],
            &[("MOZI_STORE__URL", url)],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        Host { home, daemon: None }
    }

    fn start(&mut self, url: &str) {
        self.start_with(url, &[]);
    }

    /// Started with more environment (the provider keys' variables).
    fn start_with(&mut self, url: &str, env: &[(&str, &str)]) {
        let mut all = vec![("MOZI_STORE__URL", url)];
        all.extend_from_slice(env);
        self.daemon = Some(Daemon::start_env(&self.home, &all));
    }

    fn pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// SIGKILL, as a host that dies.
    fn kill(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.crash();
        }
    }
}

/// The leader's lease: (holder's pid, epoch), while valid.
fn leader(db: &PgDatabase) -> Option<(i32, i64)> {
    let row = db.psql(
        "SELECT holder || '|' || epoch FROM moziplus.lease
         WHERE name = 'leader' AND expires_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    );
    let (holder, epoch) = row.split_once('|')?;
    let pid = holder.split(':').nth(1)?.parse().ok()?;
    Some((pid, epoch.parse().ok()?))
}

fn done(db: &PgDatabase) -> i64 {
    db.psql("SELECT COUNT(*) FROM p_p.task WHERE status = 'done'")
        .parse()
        .unwrap()
}

/// Kills the leader; returns how long until another daemon held the lease.
fn kill_leader(db: &PgDatabase, hosts: &mut [Host]) -> Duration {
    let (pid, epoch) = leader(db).expect("a leader");
    let host = hosts
        .iter_mut()
        .find(|h| h.pid() == Some(pid))
        .expect("the leader is one of the hosts");
    host.kill();
    let killed = Instant::now();
    let mut took = None;
    while killed.elapsed() < Duration::from_secs(30) {
        if let Some((p, e)) = leader(db) {
            if p != pid {
                assert!(
                    e > epoch,
                    "a new holder raises the epoch: {e} after {epoch}"
                );
                took = Some(killed.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    took.expect("another daemon took the lease")
}

/// Three daemons × 300 tasks of a quick `command` agent; the leader is
/// SIGKILLed twice and another daemon once, each restarted. Every task is
/// done, no two runs of a task overlap in time, each task is completed
/// once, and a new leader holds the lease within 15 s of each kill.
#[test]
fn three_daemons_finish_300_tasks_through_kills_with_one_run_at_a_time() {
    let Some(db) = PgDatabase::create("cluster") else {
        return;
    };
    let url = db.url.clone();
    let mut hosts: Vec<Host> = (0..3).map(|_| Host::new(&url)).collect();
    // The tasks first, then the daemons: every daemon competes for them.
    for i in 1..=300 {
        let created = hosts[0].home.run_env(
            &[
                "bb",
                "--project",
                "p",
                "create",
                "--title",
                &format!("t{i}"),
            ],
            &[("MOZI_STORE__URL", &url)],
        );
        assert_eq!(created.code, 0, "{}", created.stderr);
    }
    for h in hosts.iter_mut() {
        h.start(&url);
    }
    wait_for(Duration::from_secs(60), "300 tasks created", || {
        db.psql("SELECT COUNT(*) FROM p_p.task") == "300"
    });

    let mut takeovers = Vec::new();
    for (i, at) in [60, 140, 220].into_iter().enumerate() {
        wait_for(
            Duration::from_secs(120),
            &format!("{at} tasks done"),
            || done(&db) >= at,
        );
        if i < 2 {
            takeovers.push(kill_leader(&db, &mut hosts));
        } else {
            let (leader_pid, _) = leader(&db).expect("a leader");
            let other = hosts
                .iter_mut()
                .find(|h| h.pid().is_some_and(|p| p != leader_pid))
                .unwrap();
            other.kill();
        }
        // The host comes back (a restart), as PM2 or systemd would do it.
        for h in hosts.iter_mut().filter(|h| h.daemon.is_none()) {
            h.start(&url);
        }
    }
    wait_for(Duration::from_secs(180), "every task done", || {
        done(&db) == 300
    });

    for took in &takeovers {
        assert!(
            *took <= Duration::from_secs(15),
            "a new leader after {took:?}"
        );
    }
    // Each task completed once.
    assert_eq!(
        db.psql(
            "SELECT COUNT(*) FROM (SELECT task_id FROM p_p.event WHERE kind = 'task.done'
             GROUP BY task_id HAVING COUNT(*) <> 1) AS x"
        ),
        "0",
        "a task completed more than once"
    );
    assert_eq!(
        db.psql("SELECT COUNT(DISTINCT task_id) FROM p_p.event WHERE kind = 'task.done'"),
        "300"
    );
    // No two runs of one task overlap: each run of a task ended before the
    // next one started.
    let overlaps = db.psql(
        "SELECT a.task_id || ' ' || a.id || ' ' || b.id FROM p_p.session a JOIN p_p.session b
           ON a.task_id = b.task_id AND a.id <> b.id
          AND a.started_at <= b.started_at
          AND (a.ended_at IS NULL OR a.ended_at > b.started_at)
        LIMIT 5",
    );
    assert_eq!(overlaps, "", "runs of one task overlapped");
    assert_eq!(
        db.psql("SELECT COUNT(*) FROM p_p.session WHERE ended_at IS NULL"),
        "0",
        "no run is left open"
    );
    // Every daemon did some of the work, and the kills were survived by
    // giving runs back, never by running a task twice at once.
    let by_daemon = db.psql("SELECT COUNT(DISTINCT split_part(daemon, ':', 2)) FROM p_p.session");
    assert!(
        by_daemon.parse::<i64>().unwrap() >= 3,
        "{by_daemon} daemons ran tasks"
    );
    eprintln!("takeovers: {takeovers:?}");
}

/// The most runs of project `p` that were in flight at one moment (by the
/// sessions' start and end).
fn most_at_once(db: &PgDatabase) -> i64 {
    db.psql(
        "SELECT COALESCE(MAX(c), 0) FROM (SELECT (SELECT COUNT(*) FROM p_p.session b
             WHERE b.started_at <= a.started_at
               AND (b.ended_at IS NULL OR b.ended_at > a.started_at)) AS c
         FROM p_p.session a) AS x",
    )
    .parse()
    .unwrap()
}

/// Two or three daemons with the same agent, tasks for all of them, every
/// daemon started at once: `max_per_agent` holds across the hosts at the
/// moment each run starts (a place in the store taken before the claim),
/// not as of the other daemons' last beats; and `cluster.max_agents` caps
/// the runs of every daemon together, while each host alone would allow
/// more.
#[test]
fn max_per_agent_and_cluster_max_agents_hold_across_daemons() {
    // Not beside the other short tests of daemons under load: the stream's
    // latency is measured, and 2 cores are shared.
    let _serial = serial();
    const SLOW: &str = "agents:
  - id: s
    runtime: command
    command: [\"sh\", \"-c\", \"sleep 1.5; moziplus bb done --agent s\"]
";
    let run = |label: &str, daemons: usize, tasks: usize, defaults: &str| -> Option<i64> {
        let db = PgDatabase::create(label)?;
        let url = db.url.clone();
        let mut hosts: Vec<Host> = (0..daemons)
            .map(|_| Host::with(&url, defaults, SLOW))
            .collect();
        for i in 1..=tasks {
            let created = hosts[0].home.run_env(
                &[
                    "bb",
                    "--project",
                    "p",
                    "create",
                    "--title",
                    &format!("t{i}"),
                ],
                &[("MOZI_STORE__URL", &url)],
            );
            assert_eq!(created.code, 0, "{}", created.stderr);
        }
        for h in hosts.iter_mut() {
            h.start(&url);
        }
        wait_for(Duration::from_secs(120), "every task done", || {
            done(&db) == tasks as i64
        });
        // Every daemon was in the cluster, with the agent, while the tasks
        // ran: each competed for every start (which one wins each start is
        // timing, so the runs may all land on one of them).
        let alive = db
            .psql("SELECT COUNT(*) FROM moziplus.daemon WHERE stopped_at IS NULL AND agents = 's'");
        assert_eq!(
            alive,
            daemons.to_string(),
            "{label}: daemons in the cluster"
        );
        // Every place was given back with its run.
        wait_for(Duration::from_secs(10), "places given back", || {
            db.psql("SELECT COUNT(*) FROM moziplus.slot") == "0"
        });
        Some(most_at_once(&db))
    };
    let Some(one_each) = run(
        "per_agent",
        2,
        6,
        "daemon:\n  tick_interval: 1\n  max_global_agents: 6\n  max_per_agent: 1\n",
    ) else {
        return;
    };
    assert_eq!(
        one_each, 1,
        "max_per_agent 1: runs of agent s overlapped across the daemons"
    );
    let capped = run(
        "cluster_max",
        3,
        12,
        "daemon:\n  tick_interval: 1\n  max_global_agents: 6\n  max_per_agent: 10\ncluster:\n  max_agents: 2\n",
    )
    .expect("the suite's PostgreSQL");
    assert_eq!(
        capped, 2,
        "cluster.max_agents 2 over three daemons of 6 slots each"
    );
}

/// A write through one daemon's API reaches another daemon's event stream
/// (LISTEN/NOTIFY wakes its pump): 100 writes, each timed from the request
/// until the other daemon's stream carries it; p99 under 100 ms.
#[test]
fn a_write_through_one_daemon_appears_on_anothers_event_stream() {
    // Not beside the other short tests of daemons under load: the stream's
    // latency is measured, and 2 cores are shared.
    let _serial = serial();
    let Some(db) = PgDatabase::create("cluster_events") else {
        return;
    };
    let url = db.url.clone();
    let mut a = Host::new(&url);
    let mut b = Host::new(&url);
    a.start(&url);
    b.start(&url);
    let port_a = a.daemon.as_ref().unwrap().port;
    let port_b = b.daemon.as_ref().unwrap().port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut delays = Vec::new();
    rt.block_on(async {
        let mut sse = Sse::open(port_b, "?project=p", None).await;
        let create = format!("http://127.0.0.1:{port_a}/api/projects/p/tasks");
        for i in 0..100 {
            let title = format!("e{i}");
            let sent = Instant::now();
            let r = post_json(&create, &serde_json::json!({ "title": title }), &[]).await;
            assert_eq!(r.status().as_u16(), 201);
            loop {
                let ev = sse
                    .next_event(Duration::from_secs(10))
                    .await
                    .expect("an event");
                if ev.data.contains("task.created") && ev.data.contains(&format!("\"{title}\"")) {
                    break;
                }
            }
            delays.push(sent.elapsed());
        }
    });
    delays.sort();
    let (median, p99) = (delays[50], delays[98]);
    eprintln!("write through A → B's stream: median {median:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}

/// Three daemons on the store at `url` whose gateways send `nvidia/…` to
/// the fake provider at `base_url` as a limited lane with `lane` (the
/// `limiter:` and `queue:` lines); their hosts (which stop the daemons when
/// dropped) and API ports.
fn three_lane_daemons(url: &str, base_url: &str, lane: &str) -> (Vec<Host>, Vec<u16>) {
    let defaults = format!(
        "daemon:\n  tick_interval: 1\ngateway:\n{lane}  providers:\n    - name: nvidia\n      base_url: {base_url}\n      limited: true\n"
    );
    let mut hosts: Vec<Host> = (0..3)
        .map(|_| Host::with_defaults(url, &defaults))
        .collect();
    for h in hosts.iter_mut() {
        h.start(url);
    }
    let ports = hosts
        .iter()
        .map(|h| h.daemon.as_ref().unwrap().port)
        .collect();
    (hosts, ports)
}

/// `n` chat calls to `model` at once, spread over the daemons at `ports`;
/// their statuses.
async fn calls_at_once(ports: &[u16], n: usize, model: &str) -> Vec<u16> {
    let calls = (0..n).map(|i| {
        let port = ports[i % ports.len()];
        async move {
            post_json(
                &format!("http://127.0.0.1:{port}/v1/chat/completions"),
                &serde_json::json!({
                    "model": model,
                    "messages": [{"role": "user", "content": format!("call {i}")}],
                }),
                &[],
            )
            .await
            .status()
            .as_u16()
        }
    });
    futures_util::future::join_all(calls).await
}

/// The NVIDIA lane holds across daemons: three daemons, 60 calls at once
/// (20 through each daemon's gateway) to a limited provider — a fake
/// standing in for NVIDIA, which the tests cannot reach — and at most 40
/// (± 1) reach it in the first minute. Alone, each daemon's lane would
/// let 40 through: 120.
#[test]
fn three_daemons_share_one_nvidia_lane() {
    let Some(db) = PgDatabase::create("cluster_lane") else {
        return;
    };
    let url = db.url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeUpstream::start());
    let (_hosts, ports) = three_lane_daemons(
        &url,
        &fake.base_url,
        "  limiter: { rate_per_minute: 40, capacity: 1 }\n  queue: { request_timeout: 120 }\n",
    );
    let started = Instant::now();
    rt.block_on(async {
        // The first minute; the calls still waiting are dropped with it.
        let _ = tokio::time::timeout(
            Duration::from_secs(60).saturating_sub(started.elapsed()),
            calls_at_once(&ports, 60, "nvidia/echo"),
        )
        .await;
    });
    let hits = fake.state.hits();
    eprintln!("calls that reached the provider in the first minute: {hits}");
    assert!(
        (39..=41).contains(&hits),
        "{hits} calls reached the provider in the first minute"
    );
}

/// A key's own rate holds across daemons, whatever each host calls it: one
/// daemon has a pool of one key (`NV_A`), the other a pool of three
/// (`NV_B1` to `NV_B3`) whose first is the same key under another name and
/// whose others have spent their daily quota (the fake provider, standing
/// in for NVIDIA, answers 429 saying so). Each key may
/// send 120 calls a minute; the pools' shared rate alone would let the two
/// daemons send more than that through the one key both still have. 40
/// calls at once through each daemon: in the first 20 s the shared key
/// sent at most 41 (its rate plus its burst of one); with the pools' rate
/// alone it sent 45.
#[test]
fn a_key_shared_by_two_daemons_keeps_its_own_rate() {
    let Some(db) = PgDatabase::create("cluster_key") else {
        return;
    };
    let url = db.url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeUpstream::start());
    let lane = |keys: &str| {
        format!(
            "daemon:\n  tick_interval: 1\ngateway:\n  limiter: {{ rate_per_minute: 120, capacity: 1 }}\n  queue: {{ request_timeout: 120 }}\n  providers:\n    - name: nvidia\n      base_url: {}\n      limited: true\n{keys}",
            fake.base_url
        )
    };
    fake.state
        .spent_keys
        .lock()
        .unwrap()
        .extend(["k-spent".to_string(), "k-spent-2".to_string()]);
    let mut one = Host::with_defaults(&url, &lane("      api_key_env: NV_A\n"));
    let mut two = Host::with_defaults(&url, &lane("      api_key_envs: [NV_B1, NV_B2, NV_B3]\n"));
    one.start_with(&url, &[("NV_A", "k-one")]);
    two.start_with(
        &url,
        &[
            ("NV_B1", "k-one"),
            ("NV_B2", "k-spent"),
            ("NV_B3", "k-spent-2"),
        ],
    );
    let ports = [
        one.daemon.as_ref().unwrap().port,
        two.daemon.as_ref().unwrap().port,
    ];
    let started = Instant::now();
    rt.block_on(async {
        let _ = tokio::time::timeout(
            Duration::from_secs(20).saturating_sub(started.elapsed()),
            calls_at_once(&ports, 80, "nvidia/echo"),
        )
        .await;
    });
    let by_key = |key: &str| {
        fake.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.authorization.as_deref() == Some(&format!("Bearer {key}")))
            .count()
    };
    let (shared, spent) = (by_key("k-one"), by_key("k-spent") + by_key("k-spent-2"));
    eprintln!("in the first 20 s: k-one {shared}, the spent keys {spent} (refused)");
    assert!(shared <= 41, "the shared key sent {shared} calls in 20 s");
    assert!(
        shared >= 30,
        "the shared key sent only {shared} calls in 20 s"
    );
    assert!(spent >= 2, "the spent keys were not tried: {spent}");
}

/// The lane's in-flight limit holds across daemons: three daemons, each
/// lane allowing 2 calls in flight, 12 slow calls at once spread over them
/// (to a fake provider standing in for NVIDIA, which counts the calls it
/// holds at once): never more than 2 reach it at the same time, where each
/// lane alone would let 6 through, and every call is answered.
#[test]
fn three_daemons_share_one_lanes_calls_in_flight() {
    // Not beside the other short tests of daemons under load: the stream's
    // latency is measured, and 2 cores are shared.
    let _serial = serial();
    let Some(db) = PgDatabase::create("cluster_flight") else {
        return;
    };
    let url = db.url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeUpstream::start());
    let (_hosts, ports) = three_lane_daemons(
        &url,
        &fake.base_url,
        "  limiter: { rate_per_minute: 6000, capacity: 100 }\n  queue: { concurrency: 2, request_timeout: 120 }\n",
    );
    let statuses = rt.block_on(calls_at_once(&ports, 12, "nvidia/slow-1000"));
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every call answered: {statuses:?}"
    );
    let most = fake
        .state
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        most, 2,
        "calls in flight at once at the provider, over three daemons of 2 each"
    );
    assert_eq!(fake.state.hits(), 12);
    // Every call's place was given back.
    wait_for(Duration::from_secs(10), "places given back", || {
        db.psql("SELECT COUNT(*) FROM moziplus.slot") == "0"
    });
}

/// PostgreSQL stops in the middle of a run (a server of this test's own,
/// so the suite's shared one keeps serving the other tests) and comes back:
/// the daemon keeps its run, says `store unreachable` on `/health/ready`
/// meanwhile, reconnects, and the run's `bb done` lands: the task is done,
/// one session, succeeded, nothing lost.
#[test]
fn a_postgresql_restart_in_the_middle_of_a_run_loses_nothing() {
    let Some(server) = PrivateServer::start() else {
        return;
    };
    let url = server.url.clone();
    let agents = "agents:
  - id: w
    runtime: command
    command: [\"sh\", \"-c\", \"sleep 12; moziplus bb comment --agent w --body 'after the restart' && moziplus bb done --agent w\"]
";
    let home = TestHome::with_config(DEFAULTS, agents);
    let env = [("MOZI_STORE__URL", url.as_str())];
    assert_eq!(
        home.run_env(&["project", "create", "--id", "p", "--name", "P"], &env)
            .code,
        0
    );
    let task = home.run_env(
        &[
            "bb",
            "--project",
            "p",
            "create",
            "--title",
            "through a restart",
        ],
        &env,
    );
    let task = task.stdout.trim().to_string();
    let d = Daemon::start_env(&home, &env);
    let status = |h: &TestHome| {
        h.run_env(&["bb", "--project", "p", "read", &task, "--json"], &env)
            .json()["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_for(Duration::from_secs(20), "the run to start", || {
        status(&home) == "working"
    });

    server.stop();
    wait_for(
        Duration::from_secs(15),
        "readiness to say the store is unreachable",
        || {
            d.get("/health/ready")
                .is_some_and(|(code, body)| code == 503 && body.contains("store unreachable"))
        },
    );
    server.start_again();

    wait_for(Duration::from_secs(60), "the task to be done", || {
        status(&home) == "done"
    });
    let read_json = || {
        home.run_env(&["bb", "--project", "p", "read", &task, "--json"], &env)
            .json()
    };
    wait_for(Duration::from_secs(15), "the run to end", || {
        !read_json()["sessions"][0]["ended_at"].is_null()
    });
    let sessions = read_json();
    let runs = sessions["sessions"].as_array().map_or(0, Vec::len);
    assert_eq!(runs, 1, "one run, kept through the restart: {sessions}");
    assert_eq!(
        sessions["sessions"][0]["outcome"], "succeeded",
        "{sessions}"
    );
    let read = home
        .run_env(&["bb", "--project", "p", "read", &task], &env)
        .stdout;
    assert!(
        read.contains("after the restart"),
        "the comment written after the restart is there: {read}"
    );
    wait_for(Duration::from_secs(15), "readiness again", || {
        d.get("/health/ready").is_some_and(|(code, _)| code == 200)
    });
}

/// PostgreSQL stops for longer than a daemon's liveness window (10 s)
/// while one of two daemons runs a task, then comes back: every daemon's
/// last beat is then old, but no daemon judges another gone before it has
/// itself beaten for a whole window again, so the run is kept (not given
/// back and started a second time beside the first) and its `bb done`
/// lands: one session, succeeded.
#[test]
fn a_store_outage_longer_than_the_liveness_window_gives_back_no_run() {
    let Some(server) = PrivateServer::start() else {
        return;
    };
    let url = server.url.clone();
    let agents = "agents:
  - id: w
    runtime: command
    command: [\"sh\", \"-c\", \"sleep 25; moziplus bb done --agent w\"]
";
    let mut hosts: Vec<Host> = (0..2).map(|_| Host::with(&url, DEFAULTS, agents)).collect();
    let env = [("MOZI_STORE__URL", url.as_str())];
    let created = hosts[0].home.run_env(
        &[
            "bb",
            "--project",
            "p",
            "create",
            "--title",
            "through an outage",
        ],
        &env,
    );
    assert_eq!(created.code, 0, "{}", created.stderr);
    let task = created.stdout.trim().to_string();
    hosts[0].start(&url);
    std::thread::sleep(Duration::from_secs(3));
    hosts[1].start(&url);
    let read = |h: &Host| {
        h.home
            .run_env(&["bb", "--project", "p", "read", &task, "--json"], &env)
            .json()
    };
    wait_for(Duration::from_secs(20), "the run to start", || {
        read(&hosts[0])["status"] == "working"
    });
    server.stop();
    std::thread::sleep(Duration::from_secs(14));
    server.start_again();
    wait_for(Duration::from_secs(90), "the task to be done", || {
        read(&hosts[0])["status"] == "done"
    });
    let detail = read(&hosts[0]);
    let sessions = detail["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        sessions.len(),
        1,
        "one run, kept through the outage: {detail}"
    );
    assert_eq!(sessions[0]["outcome"], "succeeded", "{detail}");
}

/// A daemon whose run's session another daemon ended (the leader judged
/// it gone: its beats had not reached the store for a liveness window)
/// stops that run's process at its next beat: the task went back and may
/// be running elsewhere already. The session is ended here in the store
/// as the leader's give-back writes it.
#[test]
fn a_run_whose_session_another_daemon_ended_is_stopped() {
    let Some(db) = PgDatabase::create("cluster_ended") else {
        return;
    };
    let url = db.url.clone();
    let agents = "agents:
  - id: w
    runtime: command
    command: [\"sh\", \"-c\", \"sleep 120; moziplus bb done --agent w\"]
";
    let mut host = Host::with(&url, DEFAULTS, agents);
    let created = host.home.run_env(
        &[
            "bb",
            "--project",
            "p",
            "create",
            "--title",
            "ended elsewhere",
        ],
        &[("MOZI_STORE__URL", &url)],
    );
    assert_eq!(created.code, 0, "{}", created.stderr);
    host.start(&url);
    wait_for(Duration::from_secs(20), "the run's process", || {
        !agent_processes(host.home.path()).is_empty()
            && db.psql("SELECT COUNT(*) FROM p_p.session WHERE ended_at IS NULL") == "1"
    });
    // Older than a beat: the daemon asks about runs past their start.
    std::thread::sleep(Duration::from_secs(3));
    db.psql(
        "UPDATE p_p.session SET ended_at = CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT),
                outcome = 'lost' WHERE ended_at IS NULL",
    );
    wait_for(Duration::from_secs(10), "the run's process stopped", || {
        agent_processes(host.home.path()).is_empty()
    });
}

/// A budget holds over every daemon together: two daemons, each with an
/// agent of its own that spends through its own daemon's gateway (15
/// tokens reserved and used per call, to a fake provider standing in for
/// NVIDIA), under one project's day cap of 150 tokens. The provider gets
/// 10 calls in all, not 10 per daemon; both tasks end blocked for budget;
/// both daemons' budget lists show the shared spend; the soft threshold is
/// reported once, not once per daemon; and no reservation is left held.
/// Then the cap is raised to 300 through one daemon (`moziplus budget
/// set`): both tasks are unblocked, the other daemon takes the new cap at
/// once, and the provider gets 10 calls more, 20 in all.
#[test]
fn a_projects_budget_holds_across_daemons() {
    let _serial = serial();
    let Some(db) = PgDatabase::create("cluster_budget") else {
        return;
    };
    let url = db.url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeUpstream::start());
    let defaults = format!(
        "daemon:\n  tick_interval: 1\n  retry_backoff: [1]\n\
         budgets:\n  projects: {{p: {{day: {{tokens: 150}}}}}}\n\
         gateway:\n  providers:\n    - name: fake\n      base_url: {}\n",
        fake.base_url
    );
    let mut hosts: Vec<Host> = ["a", "b"]
        .iter()
        .map(|agent| {
            let host = Host::with(&url, &defaults, "agents: []\n");
            let script = host.home.script("spender.py", &spending_agent(0.5));
            std::fs::write(
                host.home.path().join("config/agents.yaml"),
                format!(
                    "agents:\n  - id: {agent}\n    runtime: command\n    command: [\"{}\"]\n",
                    script.display()
                ),
            )
            .unwrap();
            host
        })
        .collect();
    let tasks: Vec<String> = ["a", "b"]
        .iter()
        .map(|agent| {
            let out = hosts[0].home.run_env(
                &[
                    "bb",
                    "--project",
                    "p",
                    "create",
                    "--title",
                    "spend",
                    "--assignee",
                    agent,
                    "--force",
                ],
                &[("MOZI_STORE__URL", &url)],
            );
            assert_eq!(out.code, 0, "{}", out.stderr);
            out.stdout.trim().to_string()
        })
        .collect();
    for h in hosts.iter_mut() {
        h.start(&url);
    }
    wait_for(
        Duration::from_secs(90),
        "both tasks blocked for budget",
        || {
            let blocked = db.psql("SELECT COUNT(*) FROM p_p.task WHERE status = 'blocked'");
            blocked == "2"
                && hosts
                    .iter()
                    .all(|h| agent_processes(h.home.path()).is_empty())
        },
    );
    let hits = fake.state.hits();
    assert_eq!(
        hits, 10,
        "150 tokens at 15 a call: the provider got {hits} calls through the two daemons"
    );
    for (h, task) in hosts.iter().zip(&tasks) {
        let reason = db.psql(&format!(
            "SELECT payload FROM p_p.event WHERE task_id = '{task}' AND kind = 'task.blocked'
             ORDER BY id DESC LIMIT 1"
        ));
        assert!(reason.contains("budget"), "{task}: {reason}");
        let d = h.daemon.as_ref().unwrap();
        let (code, body) = d.get("/api/budgets").unwrap();
        assert_eq!(code, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let line = list["budgets"]
            .as_array()
            .and_then(|b| b.iter().find(|l| l["budget"] == "project:p:day"))
            .unwrap_or_else(|| panic!("no project:p:day in {list}"));
        assert_eq!(line["used_tokens"], 150, "{line}");
        assert_eq!(line["held_tokens"], 0, "{line}");
    }
    let warned = db.psql("SELECT COUNT(*) FROM p_p.event WHERE kind = 'budget.soft_threshold'");
    assert_eq!(warned, "1", "the soft threshold is reported once");
    wait_for(Duration::from_secs(10), "no reservation held", || {
        db.psql("SELECT COUNT(*) FROM moziplus.budget_hold") == "0"
    });

    // Raised through the second daemon: the first runs its task under the
    // new cap too (a reservation made with the old one is refused as
    // stale, and asked again).
    let bind = format!("127.0.0.1:{}", hosts[1].daemon.as_ref().unwrap().port);
    let out = hosts[1].home.run(&[
        "budget",
        "--json",
        "--bind",
        &bind,
        "set",
        "project:p:day",
        "--tokens",
        "300",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let changed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut unblocked: Vec<String> = changed["unblocked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    unblocked.sort();
    let mut expected: Vec<String> = tasks.iter().map(|t| format!("p/{t}")).collect();
    expected.sort();
    assert_eq!(unblocked, expected, "{changed}");
    wait_for(Duration::from_secs(90), "both tasks blocked again", || {
        db.psql("SELECT COUNT(*) FROM p_p.task WHERE status = 'blocked'") == "2"
            && fake.state.hits() >= 20
            && hosts
                .iter()
                .all(|h| agent_processes(h.home.path()).is_empty())
    });
    assert_eq!(fake.state.hits(), 20, "300 tokens at 15 a call");
    // Each task's run was refused under the new cap, whichever daemon ran
    // it (a daemon on the old cap would have refused at 150).
    for task in &tasks {
        let reason = db.psql(&format!(
            "SELECT payload FROM p_p.event WHERE task_id = '{task}' AND kind = 'task.blocked'
             ORDER BY id DESC LIMIT 1"
        ));
        assert!(reason.contains("limit of 300 tokens"), "{task}: {reason}");
    }
    for h in &hosts {
        let (_, body) = h.daemon.as_ref().unwrap().get("/api/budgets").unwrap();
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let line = list["budgets"]
            .as_array()
            .and_then(|b| b.iter().find(|l| l["budget"] == "project:p:day"))
            .unwrap_or_else(|| panic!("no project:p:day in {list}"));
        assert_eq!(
            (&line["source"], &line["limit_tokens"], &line["used_tokens"]),
            (
                &serde_json::json!("override"),
                &serde_json::json!(300),
                &serde_json::json!(300)
            ),
            "{line}"
        );
    }
}
