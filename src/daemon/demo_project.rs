//! The bundled demo (`moziplus serve --demo`): a project whose tasks — with
//! dependencies and a review step — are worked through by the demo agent
//! built into the binary (`moziplus demo-agent`, `runtime::demo`) using the
//! real blackboard CLI. No API key needed, and no file of the repository:
//! a home without `config/agents.yaml` or `config/review_protocols/` gets the
//! bundled ones ([`ensure_demo_config`]).

use crate::blackboard::{Actor, NewTask, OpenMode, Priority};
use crate::home::Home;
use crate::registry::{self, NewProject, ProjectId, RegistryError};

/// The demo project's id.
pub const DEMO_PROJECT: &str = "demo";

/// The bundled team (`config/agents.yaml` of the repository).
const BUNDLED_AGENTS: &str = include_str!("../../config/agents.yaml");
/// The bundled review protocols the demo's tasks use.
const BUNDLED_PROTOCOLS: [(&str, &str); 4] = [
    (
        "analysis_review.yaml",
        include_str!("../../config/review_protocols/analysis_review.yaml"),
    ),
    (
        "final_review.yaml",
        include_str!("../../config/review_protocols/final_review.yaml"),
    ),
    (
        "output_review.yaml",
        include_str!("../../config/review_protocols/output_review.yaml"),
    ),
    (
        "plan_review.yaml",
        include_str!("../../config/review_protocols/plan_review.yaml"),
    ),
];

/// Gives a home without a team or review protocols the bundled ones, so
/// `serve --demo` works in an empty directory. Existing files are never
/// touched. Returns the files written.
pub fn ensure_demo_config(home: &Home) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    std::fs::create_dir_all(home.config_dir())?;
    let agents = home.agents_file();
    if !agents.exists() {
        std::fs::write(&agents, BUNDLED_AGENTS)?;
        written.push(agents);
    }
    let dir = home.review_protocols_dir();
    if !dir.exists() {
        std::fs::create_dir_all(&dir)?;
        for (name, text) in BUNDLED_PROTOCOLS {
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            written.push(p);
        }
    }
    Ok(written)
}

/// Creates the demo project if needed and gives it a batch of work when it has
/// none open. Returns the ids of tasks created.
pub async fn ensure_demo(home: &Home) -> Result<Vec<String>, RegistryError> {
    let id = ProjectId::parse(DEMO_PROJECT)?;
    match registry::find(home, &id) {
        Ok(e) if e.status == registry::ProjectStatus::Archived => {
            registry::restore_project(home, &id).await?;
        }
        Ok(_) => {}
        Err(RegistryError::Unknown { .. }) => {
            registry::create_project(
                home,
                NewProject {
                    id: id.clone(),
                    name: "Demo: weather report".into(),
                    description:
                        "Seeded by `moziplus serve --demo`; worked by the bundled demo agents."
                            .into(),
                    agents: vec![],
                },
            )
            .await?;
        }
        Err(e) => return Err(e),
    }
    let bb = crate::registry::open_blackboard(home, &id, OpenMode::Create { max_connections: 1 })
        .await?;
    let counts = bb.status_counts().await?;
    let open: i64 = ["pending", "working", "review", "blocked"]
        .iter()
        .map(|s| counts.get(*s).copied().unwrap_or(0))
        .sum();
    let mut created = Vec::new();
    if open == 0 {
        let actor = Actor::operator("demo-seed");
        let add = |t: NewTask| {
            let bb = bb.clone();
            let actor = actor.clone();
            async move { bb.create_task(t, &actor).await }
        };
        let plan = add(NewTask {
            title: "Plan the weekly weather report".into(),
            description: "Decide which cities and figures the report covers.".into(),
            kind: Some("plan".into()),
            priority: Some(Priority::High),
            tags: vec!["demo".into(), "planning".into()],
            ..Default::default()
        })
        .await?;
        let data = add(NewTask {
            title: "Collect sample temperatures".into(),
            description: "Produce a CSV of daily temperatures for the planned cities.".into(),
            kind: Some("data".into()),
            depends_on: vec![plan.id.clone()],
            tags: vec!["demo".into(), "data".into()],
            ..Default::default()
        })
        .await?;
        let code = add(NewTask {
            title: "Write the report generator".into(),
            description:
                "A script turning the CSV into a Markdown summary. Reviewed before it counts."
                    .into(),
            kind: Some("code".into()),
            depends_on: vec![plan.id.clone()],
            review_protocol: Some("output".into()),
            tags: vec!["demo".into(), "demo-rework".into()],
            ..Default::default()
        })
        .await?;
        let report = add(NewTask {
            title: "Publish the weather report".into(),
            description: "Run the generator on the data and publish the summary.".into(),
            kind: Some("analysis".into()),
            priority: Some(Priority::Low),
            depends_on: vec![data.id.clone(), code.id.clone()],
            review_protocol: Some("final".into()),
            tags: vec!["demo".into()],
            ..Default::default()
        })
        .await?;
        created = vec![plan.id, data.id, code.id, report.id];
    }
    bb.close().await;
    Ok(created)
}
