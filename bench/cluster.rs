//! The store on PostgreSQL, as several daemons use it. Needs a PostgreSQL
//! server: `MOZI_BENCH_PG_URL` (an admin URL; the bench makes and drops its
//! own database). `scripts/test.sh` starts one for the suite; for a bench:
//! `MOZI_BENCH_PG_URL=postgres://postgres@localhost/postgres?host=/tmp/pg cargo bench --bench cluster`.
//!
//! - **limiter grant**: one `Cluster::grant` (the shared NVIDIA lane's GCRA
//!   row), round trip, 2,000 times: median and p99 (target p99 < 2 ms);
//! - **budget reservation**: one call's worst case reserved in five budget
//!   windows of the store (`Cluster::reserve_budget`), then its spend and
//!   release, 2,000 times: median and p99 (target p99 < 5 ms);
//! - **claims per second, 3 daemons**: three handles on one project (each
//!   its own pool, as three daemons have), claiming 3,000 tasks at once
//!   (target ≥ 500/s);
//! - **a tick over 100 projects × 1,000 tasks** (10 ready each, the rest
//!   done, as `bench/tick.rs` on files): a real `ticker::tick` of a daemon
//!   whose home's blackboards are on PostgreSQL, after 60 ticks of warm-up
//!   (target < 50 ms).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moziplus::blackboard::cluster::Cluster;
use moziplus::blackboard::{Actor, Blackboard, NewTask, SystemClock};

fn percentile(xs: &mut [Duration], p: f64) -> Duration {
    xs.sort();
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

async fn board(url: &str, project: &str, connections: u32) -> Blackboard {
    Blackboard::open_postgres(url, project, connections, Arc::new(SystemClock))
        .await
        .expect("open on PostgreSQL")
}

async fn create_tasks(bb: &Blackboard, n: usize) {
    let op = Actor::operator("bench");
    for i in 0..n {
        bb.create_task(
            NewTask {
                title: format!("t{i}"),
                ..Default::default()
            },
            &op,
        )
        .await
        .expect("create");
    }
}

async fn limiter_grant(url: &str) {
    let cluster = Cluster::join(url, "bench").await.expect("join");
    let mut xs = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        // A rate no bench reaches: every grant is a grant.
        let wait = cluster
            .grant("bench", Duration::from_micros(1), 1_000_000)
            .await
            .expect("grant");
        xs.push(t.elapsed());
        assert_eq!(wait, 0);
    }
    println!(
        "limiter grant round trip: median {:.3} ms, p99 {:.3} ms (target p99 < 2 ms)",
        percentile(&mut xs, 0.5).as_secs_f64() * 1000.0,
        percentile(&mut xs, 0.99).as_secs_f64() * 1000.0
    );
}

/// One call's budget in the store shared by the daemons: its worst case
/// reserved in five windows (`Cluster::reserve_budget`), then its spend
/// booked and its hold released, as `gateway_hooks::budgets` does per LLM
/// call; 2,000 calls one after another.
async fn budget_reservation(url: &str) {
    use moziplus::blackboard::cluster::{Beat, BudgetAnswer, BudgetWindow};
    let cluster = Cluster::join(url, "bench-budget").await.expect("join");
    cluster
        .beat(&Beat {
            host: "bench",
            ..Default::default()
        })
        .await
        .expect("beat");
    let names = [
        ("task:p/T-0001", 0),
        ("agent-day:w", 1),
        ("project-day:p", 1),
        ("project-month:p", 1),
        ("home-day", 1),
    ];
    let windows: Vec<BudgetWindow<'_>> = names
        .iter()
        .map(|(scope, start)| BudgetWindow {
            scope,
            start: *start,
            max_tokens: Some(i64::MAX / 2),
            max_usd: None,
        })
        .collect();
    let keys: Vec<(String, i64)> = names.iter().map(|(s, t)| (s.to_string(), *t)).collect();
    let (mut reserve, mut settle) = (Vec::with_capacity(2000), Vec::with_capacity(2000));
    for i in 0..2000 {
        let t = Instant::now();
        let answer = cluster
            .reserve_budget(i, &windows, 1500, 0.0, Duration::from_secs(10), 0)
            .await
            .expect("reserve");
        reserve.push(t.elapsed());
        assert_eq!(answer, BudgetAnswer::Held);
        let t = Instant::now();
        cluster.spend_budget(&keys, 1200, 0.0).await.expect("spend");
        cluster.release_budget(i).await.expect("release");
        settle.push(t.elapsed());
    }
    println!(
        "budget reservation in the store (5 windows): median {:.3} ms, p99 {:.3} ms (target p99 < 5 ms); spend + release: median {:.3} ms",
        percentile(&mut reserve, 0.5).as_secs_f64() * 1000.0,
        percentile(&mut reserve, 0.99).as_secs_f64() * 1000.0,
        percentile(&mut settle, 0.5).as_secs_f64() * 1000.0
    );
}

async fn claims_per_second(url: &str) {
    const TASKS: usize = 3000;
    let setup = board(url, "claims", 4).await;
    create_tasks(&setup, TASKS).await;
    setup.close().await;
    let next = Arc::new(AtomicUsize::new(1));
    let mut daemons = Vec::new();
    for d in 0..3 {
        daemons.push(board(url, "claims", 4).await);
        let _ = d;
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for (d, bb) in daemons.into_iter().enumerate() {
        for lane in 0..4 {
            let bb = bb.clone();
            let next = next.clone();
            handles.push(tokio::spawn(async move {
                let agent = Actor::session(format!("w{d}-{lane}"));
                let mut claimed = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i > TASKS {
                        break claimed;
                    }
                    let id = format!("T-{i:04}");
                    if bb.claim_task(&id, &agent, 600_000).await.is_ok() {
                        claimed += 1;
                    }
                }
            }));
        }
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(total, TASKS, "every task claimed once");
    println!(
        "claims, 3 daemons x 4 connections on one project: {total} in {secs:.2} s = {:.0}/s (target >= 500/s)",
        total as f64 / secs
    );
}

/// A real `ticker::tick` (as `bench/tick.rs` runs it on files) over 100
/// projects x 1,000 tasks, 10 of them ready and the rest done, with the
/// home's blackboards on PostgreSQL (`MOZI_STORE__URL`).
fn tick_over_projects(rt: &tokio::runtime::Runtime, url: &str) {
    use moziplus::daemon::{ticker, Daemon};
    use moziplus::home::Home;
    use moziplus::registry::{self, NewProject, ProjectId};
    const PROJECTS: usize = 100;
    const TASKS: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    std::fs::create_dir_all(home.config_dir()).unwrap();
    std::fs::write(
        home.default_config_file(),
        format!("daemon:\n  zombie_threshold: 1000000\nstore: \"{url}\"\n"),
    )
    .unwrap();
    std::fs::write(home.agents_file(), "agents: []\n").unwrap();
    rt.block_on(async {
        for p in 0..PROJECTS {
            let id = ProjectId::parse(&format!("p{p:03}")).unwrap();
            registry::create_project(
                &home,
                NewProject {
                    id: id.clone(),
                    name: id.to_string(),
                    description: String::new(),
                    agents: vec![],
                },
            )
            .await
            .unwrap();
        }
    });
    // History (done) plus 10 ready tasks per project, in bulk.
    for p in 0..PROJECTS {
        psql(
            url,
            &format!(
                "INSERT INTO \"p_p{p:03}\".task (id, seq, title, kind, status, priority, creator, created_at, updated_at)
                 SELECT 'T-' || lpad(i::text, 4, '0'), i, 'task ' || i, 'code',
                        CASE WHEN i <= {TASKS} - 10 THEN 'done' ELSE 'pending' END, 3, 'bench', i, i
                 FROM generate_series(1, {TASKS}) AS i"
            ),
        );
    }
    // The statistics of a settled store (autovacuum's analyze of the bulk
    // load would otherwise land mid-measure).
    psql(url, "VACUUM ANALYZE");
    let d = Daemon::new(home, vec![]).unwrap();
    rt.block_on(d.projects().refresh(&d)).unwrap();
    // The first ticks: each connection meets each project's probe and page
    // once and plans them (8 connections x 100 projects); a daemon ticks
    // every few seconds for hours, so the figure is the ticks after these.
    let mut first = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        rt.block_on(ticker::tick(&d));
        first.push(t.elapsed());
    }
    for _ in 0..40 {
        rt.block_on(ticker::tick(&d));
    }
    let mut xs = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        rt.block_on(ticker::tick(&d));
        xs.push(t.elapsed());
    }
    println!(
        "tick over {PROJECTS} projects x {TASKS} tasks (10 ready each), PostgreSQL: median {:.1} ms, max {:.1} ms (target < 50 ms); the first 20 ticks: median {:.1} ms",
        percentile(&mut xs, 0.5).as_secs_f64() * 1000.0,
        percentile(&mut xs, 1.0).as_secs_f64() * 1000.0,
        percentile(&mut first, 0.5).as_secs_f64() * 1000.0
    );
}

fn main() {
    let Ok(admin) = std::env::var("MOZI_BENCH_PG_URL") else {
        println!("cluster bench skipped: set MOZI_BENCH_PG_URL to a PostgreSQL admin URL");
        return;
    };
    let name = format!("bench_cluster_{}", std::process::id());
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let url = with_database(&admin, &name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        limiter_grant(&url).await;
        budget_reservation(&url).await;
        claims_per_second(&url).await;
    });
    tick_over_projects(&rt, &url);
    drop(rt);
    psql(&admin, &format!("DROP DATABASE {name} WITH (FORCE)"));
}
