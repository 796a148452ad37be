//! Brief rendering (issue 6): a work brief for a task with 50 recent
//! comments, 10 dependencies each with an output, and 20 matching skills,
//! rendered with the repository's templates. Two measurements:
//! `render` (minijinja only, the context already gathered) and
//! `gather_and_render` (the blackboard reads of `brief::gather` on a real
//! SQLite file, then rendering). Run: `cargo bench --bench brief_render`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use moziplus::blackboard::{Actor, Blackboard, CommentType, NewTask, OpenMode, Task};
use moziplus::brief::{gather, BriefEngine, BriefKind, GatherInput};
use moziplus::home::Home;
use moziplus::skills::{Skill, SkillSource};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn setup(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, Blackboard, Task, Vec<Skill>) {
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let bb = Blackboard::open(
            &dir.path().join("blackboard.db"),
            "bench",
            OpenMode::Create { max_connections: 2 },
        )
        .await
        .unwrap();
        let lead = Actor::operator("lead");
        let mut deps = Vec::new();
        for n in 0..10 {
            let t = bb
                .create_task(
                    NewTask {
                        title: format!("dependency {n}"),
                        ..Default::default()
                    },
                    &lead,
                )
                .await
                .unwrap();
            let agent = Actor::session("worker");
            bb.claim_task(&t.id, &agent, 600_000).await.unwrap();
            bb.add_output(
                &t.id,
                &agent,
                &format!("result {n}"),
                Some("out.csv"),
                Some(&"a line of inline result text\n".repeat(10)),
            )
            .await
            .unwrap();
            bb.submit_task(&t.id, &agent).await.unwrap();
            deps.push(t.id);
        }
        let tags: Vec<String> = (0..20).map(|n| format!("topic-{n}")).collect();
        let task = bb
            .create_task(
                NewTask {
                    title: "the task".into(),
                    description: "Do the thing described here, carefully.".into(),
                    depends_on: deps,
                    tags: tags.clone(),
                    ..Default::default()
                },
                &lead,
            )
            .await
            .unwrap();
        for n in 0..50 {
            bb.add_comment(
                &task.id,
                &lead,
                CommentType::Comment,
                &format!("comment number {n}: a sentence or two of discussion about the task."),
            )
            .await
            .unwrap();
        }
        let skills = (0..20)
            .map(|n| Skill {
                id: format!("skill-{n}"),
                name: format!("skill-{n}"),
                description: "What this skill is for, in one sentence of moderate length.".into(),
                tags: vec![format!("topic-{n}")],
                version: 1,
                source_experiences: vec![],
                source: SkillSource::Custom,
                path: repo().join(format!("skills/custom/skill-{n}")),
            })
            .collect();
        (dir, bb, task, skills)
    })
}

fn bench_brief(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_dir, bb, task, skills) = setup(&rt);
    let engine = BriefEngine::load(&Home::new(repo())).unwrap();
    let root = repo();
    let input = GatherInput {
        kind: BriefKind::Work,
        agent: "worker",
        task: &task,
        project_context: None,
        protocol: None,
        skills: &skills,
        guardrails: engine.guardrails(),
        home_root: &root,
        comment_limit: 50,
        skill_limit: 20,
        experience_limit: 5,
    };
    let ctx = rt.block_on(gather(&bb, input)).unwrap();
    assert_eq!(
        (ctx.comments.len(), ctx.dependencies.len(), ctx.skills.len()),
        (50, 10, 20)
    );
    let text = engine.render(&ctx).unwrap();
    eprintln!("brief: {} bytes", text.len());
    let mut g = c.benchmark_group("brief");
    g.bench_function(
        "render (50 comments, 10 dependency outputs, 20 skills)",
        |b| b.iter(|| engine.render(&ctx).unwrap()),
    );
    g.bench_function("gather_and_render", |b| {
        b.iter(|| {
            let ctx = rt.block_on(gather(&bb, input)).unwrap();
            engine.render(&ctx).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_brief);
criterion_main!(benches);
