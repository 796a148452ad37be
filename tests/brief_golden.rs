//! Golden tests of rendered briefs: the repository's own templates,
//! components, guardrails, protocols and builtin skills, a real SQLite
//! blackboard on a `ManualClock`, compared byte for byte with
//! `tests/golden/*.md`.
//!
//! After an intended change to a template, regenerate the files with
//! `UPDATE_GOLDEN=1 cargo test --test brief_golden` and review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use moziplus::blackboard::{
    Actor, Blackboard, CommentType, ManualClock, NewExperience, NewTask, OpenMode, Priority, Task,
    Verdict,
};
use moziplus::brief::{
    gather, BriefContext, BriefEngine, BriefError, BriefKind, GatherInput, Guardrail,
};
use moziplus::config::agents::AgentsFile;
use moziplus::config::ReviewConfig;
use moziplus::home::Home;
use moziplus::review::Protocols;
use moziplus::skills::{list_skills, Skill};

/// 2026-03-01T09:00:00Z
const T0: i64 = 1_772_355_600_000;
const MINUTE: i64 = 60_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct World {
    _dir: tempfile::TempDir,
    bb: Blackboard,
    clock: Arc<ManualClock>,
    engine: BriefEngine,
    protocols: Protocols,
    skills: Vec<Skill>,
    context: serde_yaml_ng::Mapping,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let bb = Blackboard::open_with_clock(
        &dir.path().join("blackboard.db"),
        "golden",
        OpenMode::Create { max_connections: 2 },
        clock.clone(),
    )
    .await
    .unwrap();
    let home = Home::new(repo());
    let agents = AgentsFile::load(&home.agents_file()).unwrap();
    World {
        engine: BriefEngine::load(&home).unwrap(),
        protocols: Protocols::load(
            &home.review_protocols_dir(),
            &ReviewConfig::default(),
            &agents,
        )
        .unwrap(),
        skills: list_skills(&home, None).unwrap(),
        context: serde_yaml_ng::from_str(
            "repo: /srv/weather\nservice: http://127.0.0.1:9000\nframeworks: [python, pandas]\n",
        )
        .unwrap(),
        _dir: dir,
        bb,
        clock,
    }
}

impl World {
    fn tick(&self) {
        self.clock.advance(MINUTE);
    }

    async fn task(
        &self,
        title: &str,
        kind: &str,
        protocol: Option<&str>,
        deps: &[&str],
        tags: &[&str],
    ) -> Task {
        self.tick();
        self.bb
            .create_task(
                NewTask {
                    title: title.into(),
                    description: format!("{title}. Acceptance: the result is on the blackboard."),
                    kind: Some(kind.into()),
                    priority: Some(Priority::High),
                    review_protocol: protocol.map(str::to_string),
                    depends_on: deps.iter().map(|s| s.to_string()).collect(),
                    tags: tags.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                },
                &Actor::operator("lead"),
            )
            .await
            .unwrap()
    }

    /// Claims as `agent`, posts `outputs` (summary, inline text) and submits.
    async fn work(&self, id: &str, agent: &str, outputs: &[(&str, Option<&str>, Option<&str>)]) {
        let a = Actor::session(agent);
        self.tick();
        self.bb.claim_task(id, &a, 600_000).await.unwrap();
        for (summary, file, text) in outputs {
            self.tick();
            self.bb
                .add_output(id, &a, summary, *file, *text)
                .await
                .unwrap();
        }
        self.tick();
        self.bb.submit_task(id, &a).await.unwrap();
    }

    async fn comment(&self, id: &str, who: &str, kind: CommentType, body: &str) {
        self.tick();
        self.bb
            .add_comment(id, &Actor::session(who), kind, body)
            .await
            .unwrap();
    }

    async fn render(&self, task: &str, kind: BriefKind, agent: &str) -> String {
        let task = self.bb.task(task).await.unwrap();
        let protocol = task
            .review_protocol
            .as_deref()
            .and_then(|n| self.protocols.get(n));
        let ctx: BriefContext = gather(
            &self.bb,
            GatherInput {
                kind,
                agent,
                task: &task,
                project_context: Some(&self.context),
                protocol,
                skills: &self.skills,
                guardrails: self.engine.guardrails(),
                home_root: &repo(),
                comment_limit: 50,
                skill_limit: 20,
                experience_limit: 5,
            },
        )
        .await
        .unwrap();
        self.engine.render(&ctx).unwrap()
    }
}

fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (create it with UPDATE_GOLDEN=1 cargo test --test brief_golden)",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendered brief at line {}:\n  golden:   {:?}\n  rendered: {:?}\n\
             full rendering:\n{actual}\n(if the change is intended: UPDATE_GOLDEN=1 cargo test --test brief_golden)",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line),
        );
    }
}

#[tokio::test]
async fn first_round_work_brief() {
    let w = world().await;
    let t = w
        .task(
            "Validate the temperature CSV",
            "data",
            None,
            &[],
            &["data", "validation"],
        )
        .await;
    w.comment(
        &t.id,
        "lead",
        CommentType::Comment,
        "Use the Celsius columns only.",
    )
    .await;
    w.comment(
        &t.id,
        "demo-coder",
        CommentType::Question,
        "Is a missing day an error or a warning?",
    )
    .await;
    w.comment(
        &t.id,
        "lead",
        CommentType::Answer,
        "A warning, listed in the output.",
    )
    .await;
    w.tick();
    w.bb.claim_task(&t.id, &Actor::session("demo-coder"), 600_000)
        .await
        .unwrap();
    golden(
        "work_first_round.md",
        &w.render(&t.id, BriefKind::Work, "demo-coder").await,
    );
}

#[tokio::test]
async fn rework_round_brief_carries_the_reviewers_requests() {
    let w = world().await;
    let t = w
        .task(
            "Write the report generator",
            "code",
            Some("output"),
            &[],
            &["review"],
        )
        .await;
    w.work(
        &t.id,
        "demo-coder",
        &[("generator, first cut", Some("report.py"), None)],
    )
    .await;
    w.tick();
    w.bb.add_review(&t.id, &Actor::session("demo-reviewer"), Verdict::Revise, 0.85,
        "Handle an empty CSV (raise a clear error) and document the output format in the module doc.")
        .await
        .unwrap();
    w.tick();
    w.bb.conclude_review_round(
        &t.id,
        Some(1),
        false,
        Some(3),
        &Actor::daemon(),
        "protocol output: all_approve: demo-reviewer revise 0.85 (0 of 1 approve)",
    )
    .await
    .unwrap();
    w.comment(
        &t.id,
        "lead",
        CommentType::Note,
        "The empty-CSV case matters: Mondays have no data.",
    )
    .await;
    w.tick();
    w.bb.claim_task(&t.id, &Actor::session("demo-coder"), 600_000)
        .await
        .unwrap();
    golden(
        "work_rework_round.md",
        &w.render(&t.id, BriefKind::Work, "demo-coder").await,
    );
    // The reviewer of round 2 is told what round 1 asked for.
    w.work_again(&t.id).await;
    golden(
        "review_rework_round.md",
        &w.render(&t.id, BriefKind::Review, "demo-reviewer").await,
    );
}

impl World {
    async fn work_again(&self, id: &str) {
        let a = Actor::session("demo-coder");
        self.tick();
        self.bb
            .add_output(
                id,
                &a,
                "generator, empty CSV handled",
                Some("report.py"),
                Some(
                    "def summary(rows):\n    if not rows:\n        raise ValueError(\"empty CSV\")",
                ),
            )
            .await
            .unwrap();
        self.comment(id, "demo-coder", CommentType::Rebuttal, "The output format is documented in README.md, not the module doc, as for the other tools.").await;
        self.tick();
        self.bb.submit_task(id, &a).await.unwrap();
    }
}

#[tokio::test]
async fn brief_with_dependency_outputs_skills_and_lessons() {
    let w = world().await;
    let plan = w
        .task("Plan the weekly weather report", "plan", None, &[], &[])
        .await;
    w.work(
        &plan.id,
        "demo-planner",
        &[(
            "cities and figures",
            None,
            Some("Cities: Beijing, Shanghai, Chengdu.\nFigures: daily min/max."),
        )],
    )
    .await;
    let data = w
        .task("Collect sample temperatures", "data", None, &[], &[])
        .await;
    w.work(
        &data.id,
        "demo-coder",
        &[
            ("temperatures CSV", Some("temps.csv"), None),
            ("notes", None, Some("Three days per city.")),
        ],
    )
    .await;
    for (tags, lesson) in [
        (
            vec!["blackboard"],
            "Post the output before `bb done`; a done without output is sent back.",
        ),
        (
            vec!["blackboard", "cli"],
            "`bb heartbeat` every few minutes; the lease is the run's timeout.",
        ),
        (
            vec!["weather"],
            "Chengdu's station reports in Fahrenheit on weekends.",
        ),
    ] {
        w.tick();
        w.bb.add_experience(
            NewExperience {
                task_id: None,
                tags: tags.into_iter().map(str::to_string).collect(),
                lesson: lesson.into(),
            },
            &Actor::session("demo-planner"),
        )
        .await
        .unwrap();
    }
    let t = w
        .task(
            "Publish the weather report",
            "analysis",
            None,
            &[&plan.id, &data.id],
            &["blackboard", "weather"],
        )
        .await;
    w.tick();
    w.bb.claim_task(&t.id, &Actor::session("demo-planner"), 600_000)
        .await
        .unwrap();
    golden(
        "work_with_dependencies_and_skills.md",
        &w.render(&t.id, BriefKind::Work, "demo-planner").await,
    );
}

#[tokio::test]
async fn distill_brief_lists_the_lessons_and_the_format() {
    let w = world().await;
    for n in 1..=5 {
        w.tick();
        w.bb.add_experience(
            NewExperience {
                task_id: None,
                tags: vec!["csv".into()],
                lesson: format!("CSV lesson {n}: check the header row."),
            },
            &Actor::session("demo-coder"),
        )
        .await
        .unwrap();
    }
    w.tick();
    let t =
        w.bb.create_distill_task_once("csv", 5, "skill-check")
            .await
            .unwrap()
            .expect("created");
    w.tick();
    w.bb.claim_task(&t.id, &Actor::session("demo-planner"), 600_000)
        .await
        .unwrap();
    golden(
        "distill.md",
        &w.render(&t.id, BriefKind::Work, "demo-planner").await,
    );
}

// --- strictness -----------------------------------------------------------

fn engine_with(work: &str, components: &[(&str, &str)]) -> Result<BriefEngine, BriefError> {
    let t = |n: &str, s: &str| {
        (
            n.to_string(),
            s.to_string(),
            PathBuf::from(format!("prompt_templates/{n}")),
        )
    };
    BriefEngine::from_parts(
        vec![
            t("work.md.j2", work),
            t("review.md.j2", "r"),
            t("distill.md.j2", "d"),
        ],
        components
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        vec![Guardrail {
            id: "g".into(),
            text: "rule".into(),
        }],
        Path::new("prompt_templates"),
        Path::new("config/template_components.yaml"),
    )
}

async fn some_context(w: &World) -> BriefContext {
    let t = w.task("A task", "code", None, &[], &[]).await;
    gather(
        &w.bb,
        GatherInput {
            kind: BriefKind::Work,
            agent: "a",
            task: &t,
            project_context: None,
            protocol: None,
            skills: &[],
            guardrails: &[],
            home_root: &repo(),
            comment_limit: 50,
            skill_limit: 20,
            experience_limit: 5,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_missing_variable_is_an_error_naming_it() {
    let w = world().await;
    let ctx = some_context(&w).await;
    let e = engine_with("# {{ task.title }}\n{{ task.colour }}\n", &[]).unwrap();
    let err = e.render(&ctx).unwrap_err().to_string();
    assert!(err.contains("rendering work.md.j2"), "{err}");
    assert!(err.contains("undefined variable(s) task.colour"), "{err}");
    assert!(err.contains("work.md.j2:2"), "{err}");
    let e = engine_with("{{ deadline }}", &[]).unwrap();
    let err = e.render(&ctx).unwrap_err().to_string();
    assert!(err.contains("undefined variable(s) deadline"), "{err}");
    // The same templates render when the variable exists.
    assert_eq!(
        engine_with("{{ task.title }}", &[])
            .unwrap()
            .render(&ctx)
            .unwrap(),
        "A task"
    );
}

#[tokio::test]
async fn an_unknown_component_is_an_error_naming_it() {
    let w = world().await;
    let ctx = some_context(&w).await;
    let e = engine_with(
        "{{ component(\"finish\") }}/{{ component(\"sign_off\") }}",
        &[("finish", "done with {{ task.id }}")],
    )
    .unwrap();
    let err = e.render(&ctx).unwrap_err().to_string();
    assert!(err.contains("unknown component \"sign_off\""), "{err}");
    assert!(err.contains("defines: finish"), "{err}");
    let ok = engine_with(
        "{{ component(\"finish\") }}",
        &[("finish", "done with {{ task.id }}")],
    )
    .unwrap();
    assert_eq!(
        ok.render(&ctx).unwrap(),
        format!("done with {}", ctx.task.id)
    );
    // A component reading a missing variable fails too, naming the component.
    let e = engine_with("{{ component(\"finish\") }}", &[("finish", "{{ nope }}")]).unwrap();
    let err = e.render(&ctx).unwrap_err().to_string();
    assert!(err.contains("component \"finish\""), "{err}");
}

#[test]
fn broken_template_sources_are_refused_naming_file_and_line() {
    let err = engine_with("fine\n{% if x %}never closed\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("prompt_templates/work.md.j2: syntax error"),
        "{err}"
    );
    assert!(err.contains("work.md.j2:2"), "{err}");
    let err = engine_with("ok", &[("finish", "{{ oops")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config/template_components.yaml: components.finish:"),
        "{err}"
    );
    let missing = BriefEngine::from_parts(
        vec![(
            "work.md.j2".into(),
            "w".into(),
            PathBuf::from("prompt_templates/work.md.j2"),
        )],
        BTreeMap::new(),
        vec![],
        Path::new("prompt_templates"),
        Path::new("config/template_components.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("prompt_templates/review.md.j2: missing"),
        "{missing}"
    );
}

#[test]
fn a_bad_guardrails_file_names_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/guardrails.yaml"),
        "rules:\n  - id: a\n    txt: typo\n",
    )
    .unwrap();
    let err = BriefEngine::load(&Home::new(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("guardrails.yaml: rules[0]: unknown field `txt`"),
        "{err}"
    );
    assert!(err.contains("line 3"), "{err}");
}
