//! The admin CLI: `project create|list|show|archive|restore` and
//! `doctor`, through the real binary on a throw-away home.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use moziplus::blackboard::LATEST_SCHEMA_VERSION;
use support::{block_on, listing_of, raw_connection, TestHome};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn registry_text(h: &TestHome) -> String {
    std::fs::read_to_string(h.path().join("projects/_registry.yaml")).unwrap()
}

fn listed_ids(h: &TestHome) -> Vec<(String, String)> {
    h.run(&["project", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn create_list_and_show() {
    let h = TestHome::new();
    assert!(h
        .run(&["project", "list"])
        .ok()
        .contains("no projects; create one with `moziplus project create"));

    let entry = h
        .run(&[
            "project",
            "create",
            "--id",
            "alpha",
            "--name",
            "Alpha Team",
            "--description",
            "the first: \"quoted\"",
            "--agents",
            "a,b",
            "--json",
        ])
        .json();
    assert_eq!(entry["id"], "alpha");
    assert_eq!(entry["name"], "Alpha Team");
    assert_eq!(entry["description"], "the first: \"quoted\"");
    assert_eq!(entry["agents"], serde_json::json!(["a", "b"]));
    assert_eq!(entry["status"], "active");

    // The folder tree, a private migrated blackboard, the per-project config.
    let dir = h.project_dir("alpha");
    for sub in ["config", "artifacts", "experiences", "skills"] {
        assert!(dir.join(sub).is_dir(), "missing {sub}/");
    }
    assert_eq!(mode(&h.db("alpha")), 0o600, "blackboard.db must be private");
    let version: i64 = block_on(async {
        let mut c = raw_connection(&h.db("alpha")).await;
        sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut c)
            .await
            .unwrap()
    });
    assert_eq!(version, LATEST_SCHEMA_VERSION);
    let project_yaml = std::fs::read_to_string(dir.join("config/project.yaml")).unwrap();
    assert!(project_yaml.contains("agents: [a, b]"), "{project_yaml}");

    // The agents list is enforced on claims.
    h.create_task("alpha", "restricted", &[]);
    h.bb("alpha", &["claim", "T-0001", "--agent", "c"]).fails(
        1,
        &["agent c is not allowed on project alpha (allowed: a, b)"],
    );
    h.bb_ok("alpha", &["claim", "T-0001", "--agent", "a"]);

    h.create_project("beta");
    assert_eq!(
        listed_ids(&h),
        [
            ("alpha".into(), "active".into()),
            ("beta".into(), "active".into())
        ]
    );
    let text = h.run(&["project", "list"]).ok();
    assert!(
        text.contains("alpha") && text.contains("Alpha Team") && text.contains("beta"),
        "{text}"
    );

    let show = h.run(&["project", "show", "alpha", "--json"]).json();
    assert_eq!(show["project"]["name"], "Alpha Team");
    assert_eq!(show["tasks_summary"]["working"], 1);
    assert_eq!(show["tasks_summary"]["pending"], 0);
    assert!(show["db_size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(Path::new(show["path"].as_str().unwrap()), dir);
    let text = h.run(&["project", "show", "alpha"]).ok();
    assert!(
        text.contains("Alpha Team") && text.contains("agents: a, b") && text.contains("working 1"),
        "{text}"
    );
    // One spelling of a state: `show` printed `Active` where `list` (and
    // the registry) say `active`.
    assert!(text.contains("\n  status: active\n"), "{text}");
    let listed = h.run(&["project", "list"]).ok();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("alpha ") && l.contains(" active ")),
        "{listed}"
    );

    // Refusals leave the registry and the folders as they were.
    let before = registry_text(&h);
    h.run(&["project", "create", "--id", "alpha", "--name", "Again"])
        .fails(1, &["project \"alpha\" already exists"]);
    h.run(&[
        "project", "create", "--id", "gamma", "--name", "G", "--agents", "../x",
    ])
    .fails(1, &["invalid agent id \"../x\" in --agents"]);
    h.run(&["project", "create", "--id", "gamma", "--name", "  "])
        .fails(1, &["project name must not be empty"]);
    std::fs::create_dir(h.project_dir("ghost")).unwrap();
    h.run(&["project", "create", "--id", "ghost", "--name", "Ghost"])
        .fails(
            1,
            &["projects/ghost already exists but is not in the registry"],
        );
    assert_eq!(registry_text(&h), before);
    assert!(!h.project_dir("gamma").exists());
    assert!(listing_of(&h.project_dir("ghost")).is_empty());
}

#[test]
fn archive_is_refused_while_a_task_is_working_and_restore_brings_it_back() {
    let h = TestHome::new();
    h.create_project("p");
    h.create_project("other");
    h.create_task("p", "busy", &[]);
    h.create_task("p", "also busy", &[]);
    h.create_task("p", "idle", &[]);
    h.bb_ok("p", &["claim", "T-0001", "--agent", "a"]);
    h.bb_ok("p", &["claim", "T-0002", "--agent", "b"]);

    let out = h.run(&["project", "archive", "p"]);
    out.fails(
        1,
        &["cannot archive project \"p\": 2 task(s) are working (T-0001, T-0002)"],
    );
    assert!(h.db("p").exists() && !h.path().join("projects/_archived/p").exists());
    assert_eq!(listed_ids(&h)[0], ("p".into(), "active".into()));

    h.bb_ok("p", &["done", "T-0001", "--agent", "a"]);
    h.run(&["project", "archive", "p"])
        .fails(1, &["1 task(s) are working (T-0002)"]);
    h.bb_ok("p", &["release", "T-0002", "--agent", "b"]);
    let before = h.dump("p");

    let out = h.run(&["project", "archive", "p"]);
    assert!(out.ok().contains("archived p to"), "{out}");
    let archived = h.path().join("projects/_archived/p");
    assert!(!h.project_dir("p").exists(), "the folder must move");
    assert!(archived.join("blackboard.db").is_file());
    assert!(
        !archived.join("blackboard.db-wal").exists(),
        "the WAL is folded in"
    );
    assert_eq!(mode(&archived), 0o500, "archived folder is read-only");
    assert_eq!(
        mode(&archived.join("blackboard.db")),
        0o400,
        "archived db is read-only"
    );
    assert_eq!(
        listed_ids(&h),
        [
            ("p".into(), "archived".into()),
            ("other".into(), "active".into())
        ]
    );

    // The blackboard CLI and backups refuse an archived project clearly.
    let archived_msg = "project \"p\" is archived; `moziplus project restore p` first";
    h.bb("p", &["read"]).fails(1, &[archived_msg]);
    h.bb("p", &["create", "--title", "x"])
        .fails(1, &[archived_msg]);
    h.run(&["backup", "--project", "p"])
        .fails(1, &[archived_msg]);
    h.run(&["project", "archive", "p"])
        .fails(1, &[archived_msg]);
    h.run(&["project", "create", "--id", "p", "--name", "P"])
        .fails(1, &["project \"p\" already exists"]);
    // Backing up everything skips it; show still describes it.
    h.run(&["backup"]).ok();
    assert!(listing_of(&h.path().join("backups/p")).is_empty());
    assert_eq!(listing_of(&h.path().join("backups/other")).len(), 1);
    let show = h.run(&["project", "show", "p", "--json"]).json();
    assert_eq!(show["project"]["status"], "archived");
    assert_eq!(Path::new(show["path"].as_str().unwrap()), archived);
    // Other projects carry on.
    h.create_task("other", "unaffected", &[]);

    let out = h.run(&["project", "restore", "p"]);
    assert!(out.ok().contains("restored p"), "{out}");
    assert!(!archived.exists());
    assert_eq!(mode(&h.db("p")), 0o600);
    assert_eq!(listed_ids(&h)[0], ("p".into(), "active".into()));
    h.dump("p").assert_same(&before, "archive + restore");
    h.run(&["project", "restore", "p"])
        .fails(1, &["project \"p\" is not archived"]);
    // Fully usable again.
    h.bb_ok("p", &["claim", "T-0003", "--agent", "a"]);
    h.bb_ok("p", &["done", "T-0003", "--agent", "a"]);
}

#[test]
fn registry_comments_and_order_survive_edits() {
    let h = TestHome::new();
    h.create_project("prod");
    // A person annotates the registry by hand.
    let annotated = registry_text(&h)
        .replacen(
            "projects:\n",
            "projects:\n  # the production board — ask Li before archiving\n",
            1,
        )
        .replace(
            "    status: active\n",
            "    status: active # reviewed 2026-01\n",
        );
    let annotated = format!("# Team registry: hand-maintained notes live here.\n{annotated}");
    std::fs::write(h.path().join("projects/_registry.yaml"), &annotated).unwrap();

    h.create_project("second");
    h.run(&["project", "archive", "prod"]).ok();
    let text = registry_text(&h);
    assert!(
        text.starts_with(&annotated.replace("status: active #", "status: archived #")),
        "{text}"
    );
    assert!(
        text.contains("  # the production board — ask Li before archiving\n"),
        "{text}"
    );
    assert!(
        text.contains("    status: archived # reviewed 2026-01\n"),
        "{text}"
    );
    assert!(text.contains("  - id: second\n"), "{text}");

    h.run(&["project", "restore", "prod"]).ok();
    let text = registry_text(&h);
    assert!(text.starts_with(&annotated), "{text}");
    assert_eq!(
        listed_ids(&h),
        [
            ("prod".into(), "active".into()),
            ("second".into(), "active".into())
        ]
    );
}

/// Copies the repository's shipped `config/` into a home.
fn install_repo_config(h: &TestHome) {
    fn copy(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let to = dst.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to);
            } else {
                std::fs::copy(e.path(), to).unwrap();
            }
        }
    }
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        &h.path().join("config"),
    );
}

#[test]
fn doctor_passes_on_a_fresh_home_and_fails_on_each_problem() {
    let h = TestHome::new();
    install_repo_config(&h);
    h.create_project("p");
    let out = h.run(&["doctor"]);
    let text = out.ok();
    for line in [
        "ok   config",
        "ok   agents.yaml",
        "ok   registry",
        "ok   project p permissions",
        "ok   project p blackboard",
        "all required checks passed",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{out}");
    }
    let checks = h.run(&["doctor", "--json"]).json();
    let failed: Vec<_> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["required"] == true && c["ok"] == false)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");

    let broken: &[(&str, &str, &[&str])] = &[
        (
            "config/default.yaml",
            "daemon:\n  tick_interval: 0\n",
            &[
                "FAIL config",
                "daemon.tick_interval",
                "must be between 1 and 86400",
            ],
        ),
        (
            "config/agents.yaml",
            "agents:\n  - id: x\n    runtim: demo\n",
            &["FAIL agents.yaml", "runtim"],
        ),
        (
            "projects/_registry.yaml",
            "projects: [\n",
            &["FAIL registry", "_registry.yaml"],
        ),
        (
            "projects/p/config/project.yaml",
            "max_global_agents: 0\n",
            &["FAIL project p config", "max_global_agents"],
        ),
    ];
    for (file, text, needles) in broken {
        let path = h.path().join(file);
        let original = std::fs::read(&path).unwrap();
        std::fs::write(&path, text).unwrap();
        let out = h.run(&["doctor"]);
        out.fails(1, &["doctor found"]);
        for n in *needles {
            assert!(
                out.stdout.contains(n),
                "{file}: doctor does not say {n:?}:\n{out}"
            );
        }
        std::fs::write(&path, original).unwrap();
    }
    h.run(&["doctor"]).ok();

    // A world-readable blackboard is a failed (required) check.
    std::fs::set_permissions(h.db("p"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = h.run(&["doctor"]);
    out.fails(1, &["doctor found"]);
    assert!(
        out.stdout.contains("FAIL project p permissions") && out.stdout.contains("mode 644"),
        "{out}"
    );
}

/// Issue 26, item 8: an empty folder as home passed `doctor` (0 agents, 0
/// projects, "config/default.yaml ok" for a file that does not exist), and
/// `serve` started in it silently.
#[test]
fn an_empty_home_is_named_and_warned_about() {
    let h = TestHome::new();
    let out = h.run(&["doctor"]);
    let text = out.ok();
    let root = h.path().display().to_string();
    for needle in [
        "ok   config".to_string(),
        format!("{root}/config/default.yaml missing, defaults used"),
        format!(
            "warn agents.yaml                      {root}/config/agents.yaml missing: no agents"
        ),
        format!("warn registry                         no projects in {root}"),
    ] {
        assert!(text.contains(&needle), "missing {needle:?}:\n{out}");
    }
    // serve says the same at once, and a taken port is named with the way
    // out before anything is written (it left daemon.lock behind).
    let listing = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(h.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = h.run(&["serve", "--bind", &format!("127.0.0.1:{port}")]);
    out.fails(1, &["the port is taken", "pass --bind 127.0.0.1:PORT"]);
    assert_eq!(listing(), before, "a refused serve writes nothing: {out}");
    assert!(
        out.stderr.contains("default.yaml missing, defaults used")
            && out.stderr.contains("defines no agents: no task will run"),
        "{out}"
    );
}
