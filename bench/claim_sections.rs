//! Where the time of one `moziplus bb claim` goes, section by section.
//!
//! Replays, in process and with the library's public API, exactly the steps
//! `src/cli/bb.rs` takes for `bb claim` (runtime, project lookup, open in
//! [`OpenMode::Agent`], the config load, the claim transaction, close, wake),
//! timing each with a monotonic clock, on a project with 10,000 pending
//! tasks. Run twice:
//!
//! * **cold** — nobody else has the database open, as in `bench/bb_cli.sh`:
//!   the CLI's connection is the only one, so it rebuilds the WAL index from
//!   the WAL left by the previous call and leaves the WAL in place on close
//!   (folding it into the database once it passes 256 KiB);
//! * **warm** — another connection holds the file open, as `moziplus serve`
//!   will: the WAL persists between CLI calls.
//!
//! What it cannot see is the process itself (exec, dynamic loading, clap):
//! `bench/bb_cli.sh` measures `moziplus --version` for that.
//!
//! `cargo bench --bench claim_sections [-- ITERATIONS]`

use std::time::{Duration, Instant};

use moziplus::blackboard::{Actor, Blackboard, OpenMode};
use moziplus::config::Config;
use moziplus::home::Home;
use moziplus::registry::{self, NewProject, ProjectId};

const SECTIONS: [&str; 7] = [
    "tokio runtime",
    "project lookup",
    "open blackboard",
    "config",
    "claim transaction",
    "close",
    "wake datagram",
];

/// Seeds rows in bulk over a connection of the bench's own: the blackboard
/// offers no raw pool.
async fn seed(db: &std::path::Path, sql: &str, n: i64) {
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .busy_timeout(std::time::Duration::from_secs(5)),
    )
    .await
    .unwrap();
    sqlx::query(sql).bind(n).execute(&pool).await.unwrap();
    pool.close().await;
}

/// One claim, as the CLI does it, inside a fresh runtime; returns the
/// duration of each section.
fn claim_once(home: &Home, task: &str) -> [Duration; 7] {
    let mut t = [Duration::ZERO; 7];
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    t[0] = start.elapsed();
    rt.block_on(async {
        let s = Instant::now();
        let id = registry::active_project(home, "bench").unwrap();
        t[1] = s.elapsed();
        let s = Instant::now();
        let bb = Blackboard::open(&home.blackboard_file(&id), id.as_str(), OpenMode::Agent)
            .await
            .unwrap();
        t[2] = s.elapsed();
        let s = Instant::now();
        let (config, settings) = Config::load_for_project(home, &id, &[]).unwrap();
        assert!(settings.agents.is_none());
        let lease = config.daemon.task_timeout;
        t[3] = s.elapsed();
        let s = Instant::now();
        bb.claim_task(task, &Actor::operator("bench"), lease as i64 * 1000)
            .await
            .unwrap();
        t[4] = s.elapsed();
        let s = Instant::now();
        bb.close().await;
        t[5] = s.elapsed();
        let s = Instant::now();
        moziplus::inbox::wake::send(home, id.as_str());
        t[6] = s.elapsed();
    });
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(label: &str, runs: &[[Duration; 7]]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let totals: Vec<Duration> = runs.iter().map(|r| r.iter().sum()).collect();
    println!("\n{label}: {} claims, median per section", runs.len());
    println!("| section | median |");
    println!("|---|---|");
    for (i, name) in SECTIONS.iter().enumerate() {
        println!(
            "| {name} | {:.3} ms |",
            ms(median(runs.iter().map(|r| r[i]).collect()))
        );
    }
    println!(
        "| **total in process** | **{:.3} ms** |",
        ms(median(totals))
    );
}

fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300)
        .min(4000);
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let holder = rt.block_on(async {
        registry::create_project(
            &home,
            NewProject {
                id: ProjectId::parse("bench").unwrap(),
                name: "bench".into(),
                description: String::new(),
                agents: Vec::new(),
            },
        )
        .await
        .unwrap();
        let bb = Blackboard::open(
            &home.blackboard_file(&ProjectId::parse("bench").unwrap()),
            "bench",
            OpenMode::CLI,
        )
        .await
        .unwrap();
        seed(
            bb.path(),
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO task (id, seq, title, creator, priority, created_at, updated_at)
             SELECT printf('T-%04d', i), i, 'task ' || i, 'bench', 1 + i % 4, i, i FROM n",
            10_000,
        )
        .await;
        bb
    });
    // Cold: close the seeding connection so every claim is the only one.
    rt.block_on(holder.close());
    let cold: Vec<_> = (1..=iterations)
        .map(|i| claim_once(&home, &format!("T-{i:04}")))
        .collect();
    report(
        "cold (no other connection: the WAL index is rebuilt per call)",
        &cold,
    );

    // Warm: a long-lived connection (the daemon's) keeps the WAL alive.
    let holder = rt.block_on(async {
        let bb = Blackboard::open(
            &home.blackboard_file(&ProjectId::parse("bench").unwrap()),
            "bench",
            OpenMode::CLI,
        )
        .await
        .unwrap();
        bb.status_counts().await.unwrap();
        bb
    });
    let warm: Vec<_> = (iterations + 1..=2 * iterations)
        .map(|i| claim_once(&home, &format!("T-{i:04}")))
        .collect();
    report(
        "warm (another connection holds the file open, as `moziplus serve` will)",
        &warm,
    );
    rt.block_on(holder.close());
}
