//! Tick cost (issue 3): one `ticker::tick` over P projects × T tasks, of which
//! 10 per project are ready and the rest are finished history. No agents are
//! configured, so the tick does everything but spawn: registry refresh, lease
//! and decision expiry, review scan, the ready-task query and scheduling
//! decisions, zombie accounting. Run: `cargo bench --bench tick`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use moziplus::blackboard::{Blackboard, OpenMode};
use moziplus::daemon::{ticker, Daemon};
use moziplus::home::Home;
use moziplus::registry::{self, NewProject, ProjectId};

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

fn setup(
    rt: &tokio::runtime::Runtime,
    projects: usize,
    tasks: usize,
) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    std::fs::create_dir_all(home.config_dir()).unwrap();
    std::fs::write(
        home.default_config_file(),
        "daemon:\n  zombie_threshold: 1000000\n",
    )
    .unwrap();
    std::fs::write(home.agents_file(), "agents: []\n").unwrap();
    rt.block_on(async {
        for p in 0..projects {
            let id = ProjectId::parse(&format!("p{p:03}")).unwrap();
            registry::create_project(
                &home,
                NewProject { id: id.clone(), name: id.to_string(), description: String::new(), agents: vec![] },
            )
            .await
            .unwrap();
            let bb = Blackboard::open(&home.blackboard_file(&id), id.as_str(), OpenMode::Create { max_connections: 1 })
                .await
                .unwrap();
            // History (done) plus 10 ready tasks, inserted in bulk.
            seed(
                bb.path(),
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO task (id, seq, title, kind, status, priority, creator, created_at, updated_at)
                 SELECT printf('T-%04d', i), i, 'task ' || i, 'code',
                        CASE WHEN i <= ?1 - 10 THEN 'done' ELSE 'pending' END, 3, 'bench', i, i FROM n",
                tasks as i64,
            )
            .await;
            bb.close().await;
        }
    });
    let d = Daemon::new(home, vec![]).unwrap();
    rt.block_on(d.projects().refresh(&d)).unwrap();
    (dir, d)
}

fn bench_tick(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("tick");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for (projects, tasks) in [(10, 1_000), (100, 100), (100, 1_000), (10, 10_000)] {
        let (_dir, d) = setup(&rt, projects, tasks);
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{projects}x{tasks}")),
            &d,
            |b, d| b.iter(|| rt.block_on(ticker::tick(d))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_tick);
criterion_main!(benches);
