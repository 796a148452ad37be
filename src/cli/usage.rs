//! `moziplus usage`: LLM usage and cost of every active project, read from
//! the projects' ledgers (`llm_usage`) and added up exactly as
//! `GET /api/usage` does (`wire::usage::usage_report`).

use anyhow::Context;
use clap::Args;

use super::output::Printer;
use crate::blackboard::OpenMode;
use crate::home::Home;
use crate::registry::{self, ProjectId, ProjectStatus};
use crate::wire::usage::{usage_report, UsageReport, UsageRow};

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The last this many days (UTC, from now), 1..=400.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=400))]
    days: i64,
    /// Print JSON (the shape of `GET /api/usage`).
    #[arg(long)]
    json: bool,
}

const DAY_MS: i64 = 86_400_000;

pub async fn run(home: &Home, args: UsageArgs) -> anyhow::Result<()> {
    let since = chrono::Utc::now().timestamp_millis() - args.days * DAY_MS;
    let mut projects = Vec::new();
    for entry in registry::load(home)? {
        if entry.status != ProjectStatus::Active {
            continue;
        }
        let id = ProjectId::parse(&entry.id)?;
        let bb = crate::registry::open_blackboard(home, &id, OpenMode::CLI)
            .await
            .with_context(|| format!("project {id}"))?;
        let lines = bb.usage_lines(since, i64::MAX).await?;
        bb.close().await;
        projects.push((entry.id.to_string(), lines));
    }
    projects.sort_by(|a, b| a.0.cmp(&b.0));
    let report = usage_report(since, &projects);
    Printer::new(args.json).emit(&report, || text(&report))
}

fn table(title: &str, rows: &[UsageRow]) -> String {
    let mut s = format!(
        "{title:<40} {:>9} {:>12} {:>12} {:>12} {:>12}\n",
        "responses", "prompt", "completion", "cached", "USD"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<40} {:>9} {:>12} {:>12} {:>12} {:>12.4}{}\n",
            r.key,
            r.responses,
            r.prompt_tokens,
            r.completion_tokens,
            r.cached_tokens,
            r.cost_usd,
            if r.unpriced > 0 {
                format!("  ({} unpriced)", r.unpriced)
            } else {
                String::new()
            }
        ));
    }
    s
}

fn text(r: &UsageReport) -> String {
    if r.total.responses == 0 {
        return format!("no LLM usage since {}\n", r.since);
    }
    [
        format!("LLM usage since {}\n", r.since),
        table("total", std::slice::from_ref(&r.total)),
        table("project", &r.by_project),
        table("agent", &r.by_agent),
        table("model", &r.by_model),
        table("task", &r.by_task),
        table("day (UTC)", &r.by_day),
    ]
    .join("\n")
}
