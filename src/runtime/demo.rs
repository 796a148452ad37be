//! The demo agent, built into the binary: `moziplus demo-agent`.
//!
//! It does real, visible work on demo tasks through the blackboard CLI, the
//! way an LLM agent would, without any model or API key: it reads its task,
//! posts a heartbeat, a comment and an output file, records a lesson and
//! finishes — or reviews, on a review run (one rework round on tasks tagged
//! `demo-rework`), or turns the lessons of a `distill` task into a skill.
//! Being part of the binary, `moziplus serve --demo` works from any home.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use super::{env, Launch, OutputFormat, RunContext};

/// The demo runtime runs this binary's `demo-agent` subcommand.
pub fn prepare(run: &RunContext<'_>) -> Launch {
    Launch {
        program: run.exe.display().to_string(),
        args: vec!["demo-agent".into(), run.brief_path.display().to_string()],
        env: env::base_from_process(run),
        stdin: None,
        cwd: run.home.to_path_buf(),
        format: OutputFormat::Plain,
    }
}

struct Agent {
    bin: std::path::PathBuf,
    task: String,
    name: String,
    pace: Duration,
}

impl Agent {
    fn bb(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin)
            .arg("bb")
            .args(args)
            .output()
            .with_context(|| format!("cannot run {} bb", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "bb {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn step(&self, msg: &str) {
        println!("[{}] {msg}", self.name);
        std::thread::sleep(self.pace);
    }
}

/// `moziplus demo-agent [BRIEF]`: works the task in `MOZI_TASK`.
pub fn main() -> anyhow::Result<()> {
    let var = |k: &str| {
        std::env::var(k).with_context(|| format!("{k} is not set (the daemon sets it for a run)"))
    };
    let pace = std::env::var("MOZI_DEMO_PACE")
        .ok()
        .and_then(|p| p.parse::<f64>().ok())
        .unwrap_or(1.5);
    let agent = Agent {
        bin: std::env::var_os("MOZI_BIN")
            .map(Into::into)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| "moziplus".into()),
        task: var("MOZI_TASK")?,
        name: var("MOZI_AGENT")?,
        pace: Duration::from_secs_f64(pace.clamp(0.0, 60.0)),
    };
    let kind = std::env::var("MOZI_RUN_KIND").unwrap_or_else(|_| "work".into());
    let task: Value = serde_json::from_str(&agent.bb(&["read", &agent.task, "--json"])?)
        .context("bb read --json printed no JSON")?;
    if kind == "review" {
        review(&agent, &task)
    } else if task["kind"] == "distill" {
        distill(&agent, &task)
    } else {
        work(&agent, &task)
    }
}

fn lesson(kind: &str) -> &'static str {
    match kind {
        "plan" => "Fix the list of cities before anyone collects data; changing it later invalidates every CSV.",
        "data" => "Write temperatures in Celsius with one row per city and day; the generator expects that shape.",
        "code" => "An empty CSV must raise a clear error, not produce an empty report.",
        _ => "Quote the weekly mean with its unit and the number of cities it covers.",
    }
}

/// A private folder under the temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_file(name: &str, text: &str) -> anyhow::Result<(TempDir, std::path::PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "moziplus-demo-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let dir = TempDir(dir);
    let path = dir.0.join(name);
    std::fs::write(&path, text)?;
    Ok((dir, path))
}

fn work(a: &Agent, task: &Value) -> anyhow::Result<()> {
    let round = task["round"].as_i64().unwrap_or(1);
    let kind = task["kind"].as_str().unwrap_or("");
    let title = task["title"].as_str().unwrap_or("");
    a.step(&format!("reading {}: {title}", a.task));
    a.bb(&[
        "comment",
        &a.task,
        "--body",
        &format!("{} started round {round}", a.name),
        "--type",
        "note",
    ])?;
    a.bb(&["heartbeat", &a.task])?;
    a.step("working");
    let mut lines = vec![
        format!("# {title}"),
        String::new(),
        format!("Round {round} by {}.", a.name),
        String::new(),
    ];
    match kind {
        "plan" => lines.extend([
            "Cities: Beijing, Shanghai, Chengdu.".into(),
            "Figures: daily min/max, weekly mean.".into(),
        ]),
        "data" => {
            lines.push("city,day,min,max".into());
            for c in ["beijing", "shanghai", "chengdu"] {
                for d in 1..=3 {
                    lines.push(format!("{c},{d},{},{}", 10 + d, 20 + d));
                }
            }
        }
        "code" => lines.extend(
            [
                "```python",
                "import csv, statistics",
                "def summary(rows):",
                "    return statistics.mean(float(r['max']) for r in rows)",
                "```",
            ]
            .map(String::from),
        ),
        _ => lines.push("Weekly mean max temperature: 21.0 °C across three cities.".into()),
    }
    let feedback: Vec<&Value> = task["reviews"]
        .as_array()
        .map(|r| r.iter().filter(|r| r["verdict"] != "approve").collect())
        .unwrap_or_default();
    if !feedback.is_empty() {
        lines.push(String::new());
        lines.push("Addressed review feedback:".into());
        lines.extend(
            feedback
                .iter()
                .map(|r| format!("- {}", r["body"].as_str().unwrap_or(""))),
        );
    }
    let name = format!("result-r{round}.md");
    let (_dir, path) = temp_file(&name, &(lines.join("\n") + "\n"))?;
    a.step("posting output");
    a.bb(&[
        "output",
        &a.task,
        "--summary",
        &format!("{kind} result, round {round}"),
        "--file",
        &path.display().to_string(),
        "--name",
        &name,
    ])?;
    // One lesson per run, all tagged alike: after enough of them the daemon
    // asks for a distilled skill (experience.distill_threshold).
    a.bb(&[
        "experience",
        "add",
        "--task",
        &a.task,
        "--tags",
        "weather-report",
        "--lesson",
        lesson(kind),
    ])?;
    a.bb(&["done", &a.task])?;
    println!("[{}] done", a.name);
    Ok(())
}

fn distill(a: &Agent, task: &Value) -> anyhow::Result<()> {
    a.step(&format!(
        "distilling {}: {}",
        a.task,
        task["title"].as_str().unwrap_or("")
    ));
    let description = task["description"].as_str().unwrap_or("");
    let lessons: Vec<&str> = description
        .lines()
        .filter(|l| l.starts_with("- experience "))
        .collect();
    let ids: Vec<i64> = lessons
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2).and_then(|n| n.parse().ok()))
        .collect();
    let mut texts: Vec<&str> = Vec::new();
    for l in &lessons {
        if let Some((_, t)) = l.split_once("): ") {
            if !texts.contains(&t) {
                texts.push(t);
            }
        }
    }
    let steps: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(n, t)| format!("{}. {t}", n + 1))
        .collect();
    let skill = format!(
        "---\nname: weather-report\ndescription: Producing the weekly weather report — cities, data shape, generator and summary — as the demo team learned it.\n---\n\n# Weekly weather report\n\n## When to use\nAny task tagged weather-report: planning, collecting, generating or publishing the report.\n\n## Steps\n{}\n\n## Pitfalls\n- Changing the cities after data collection started.\n- Empty input files.\n",
        steps.join("\n")
    );
    let ids_text: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let meta = format!(
        "version: 1\ntags: [weather-report, demo]\nsource_experiences: [{}]\n",
        ids_text.join(", ")
    );
    a.step("posting the skill");
    for (name, text) in [("SKILL.md", skill), ("meta.yaml", meta)] {
        let (_dir, path) = temp_file(name, &text)?;
        a.bb(&[
            "output",
            &a.task,
            "--summary",
            &format!("distilled {name}"),
            "--file",
            &path.display().to_string(),
            "--name",
            name,
        ])?;
    }
    a.bb(&["done", &a.task])?;
    println!("[{}] skill submitted", a.name);
    Ok(())
}

fn review(a: &Agent, task: &Value) -> anyhow::Result<()> {
    let round = task["round"].as_i64().unwrap_or(1);
    a.step(&format!("reviewing {} round {round}", a.task));
    let rework = task["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "demo-rework"));
    if rework && round == 1 {
        a.bb(&[
            "review",
            &a.task,
            "--verdict",
            "revise",
            "--confidence",
            "0.85",
            "--body",
            "Handle an empty CSV and document the output format.",
        ])?;
        println!("[{}] asked for a revision", a.name);
    } else {
        a.bb(&[
            "review",
            &a.task,
            "--verdict",
            "approve",
            "--confidence",
            "0.9",
            "--body",
            "Looks right; ship it.",
        ])?;
        println!("[{}] approved", a.name);
    }
    Ok(())
}
