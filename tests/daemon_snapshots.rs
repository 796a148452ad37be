//! Automatic online snapshots: the daemon snapshots every project
//! soon after it starts when none is recent, keeps to `backup.keep`, does not
//! snapshot again after a restart within the interval, and `interval_minutes:
//! 0` turns it off. The snapshots are real databases holding the rows.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

fn snapshots(home: &TestHome, project: &str) -> Vec<PathBuf> {
    let dir = home.path().join("backups").join(project);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "db"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn tasks_in(db: &Path) -> i64 {
    query_i64(db, "SELECT COUNT(*) FROM task")
}

#[test]
fn the_daemon_snapshots_each_project_once_per_interval_across_restarts() {
    let home = TestHome::with_config("backup:\n  interval_minutes: 60\n  keep: 2\n", "");
    for p in ["a", "b"] {
        home.create_project(p);
        home.create_task(p, "kept in the snapshot", &[]);
    }
    // Two old snapshots of `a` (older than the interval): the new one makes
    // three, and `keep: 2` prunes the oldest.
    let dir_a = home.path().join("backups/a");
    std::fs::create_dir_all(&dir_a).unwrap();
    for stamp in ["20200101T000000.000Z", "20200102T000000.000Z"] {
        let f = dir_a.join(format!("{stamp}.db"));
        std::fs::copy(home.db("a"), &f).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    let d = Daemon::start(&home);
    wait_for(Duration::from_secs(20), "a snapshot of b", || {
        !snapshots(&home, "b").is_empty()
    });
    wait_for(Duration::from_secs(20), "a fresh snapshot of a", || {
        snapshots(&home, "a")
            .last()
            .is_some_and(|f| !f.to_string_lossy().contains("2020"))
    });
    let a = snapshots(&home, "a");
    assert_eq!(a.len(), 2, "keep: 2 pruned the oldest: {a:?}");
    assert!(a[0].to_string_lossy().contains("20200102"), "{a:?}");
    for p in ["a", "b"] {
        let newest = snapshots(&home, p).pop().unwrap();
        assert_eq!(tasks_in(&newest), 1, "{} holds the task", newest.display());
    }
    d.stop();

    // A restart within the interval takes no new snapshot.
    let before: Vec<_> = ["a", "b"].map(|p| snapshots(&home, p)).to_vec();
    let d = Daemon::start(&home);
    std::thread::sleep(Duration::from_secs(4));
    let after: Vec<_> = ["a", "b"].map(|p| snapshots(&home, p)).to_vec();
    assert_eq!(before, after, "no second snapshot within the interval");
    // Positive control: a snapshot taken now (by `moziplus backup`, into the
    // same folder) is seen by the same listing.
    home.ok(&["backup", "--project", "a", "--keep", "2"]);
    let taken = snapshots(&home, "a");
    assert_ne!(taken, after[0], "the listing sees the new snapshot");
    d.stop();
}

#[test]
fn interval_zero_turns_snapshots_off() {
    let home = TestHome::with_config("backup:\n  interval_minutes: 0\n", "");
    home.create_project("a");
    let d = Daemon::start(&home);
    std::thread::sleep(Duration::from_secs(4));
    assert!(snapshots(&home, "a").is_empty());
    d.stop();
    // Positive control: the same home with snapshots on gets one at start,
    // so the absence above is the setting's doing, not a slow daemon's.
    std::fs::write(
        home.path().join("config/default.yaml"),
        "backup:\n  interval_minutes: 60\n",
    )
    .unwrap();
    let d = Daemon::start(&home);
    wait_for(
        Duration::from_secs(20),
        "a snapshot with snapshots on",
        || !snapshots(&home, "a").is_empty(),
    );
    d.stop();
}

#[test]
fn an_out_of_range_backup_setting_is_refused() {
    let home = TestHome::with_config("backup:\n  keep: 0\n", "");
    let out = home.run(&["doctor"]);
    assert_ne!(out.code, 0, "{out}");
    let err = out.stderr.clone() + &out.stdout;
    assert!(err.contains("backup.keep"), "{err}");
}
