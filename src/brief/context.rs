//! What a brief is rendered from, and reading it from the blackboard.

use serde::Serialize;

use super::Guardrail;
use crate::blackboard::{
    rfc3339, BbResult, Blackboard, Comment, CommentType, Experience, Output, Review, Task,
    TaskDetail, Verdict,
};
use crate::review::Protocol;
use crate::skills::{matching, Skill};

/// Which run the brief is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BriefKind {
    /// The agent works on the task (or, for `distill` tasks, writes a skill).
    Work,
    /// The agent reviews the task's current round.
    Review,
}

/// Everything a template can use. Field names are the template variables.
#[derive(Debug, Clone, Serialize)]
pub struct BriefContext {
    pub kind: BriefKind,
    pub agent: String,
    pub project: ProjectView,
    pub task: TaskView,
    /// Round 2 or later: the previous round was sent back.
    pub rework: bool,
    /// The previous round's reviews that asked for changes (revise/reject).
    pub feedback: Vec<ReviewView>,
    /// The current round's reviews so far (review runs: the panel's verdicts).
    pub round_reviews: Vec<ReviewView>,
    pub dependencies: Vec<DependencyView>,
    /// Recent comments, oldest first (rebuttals included).
    pub comments: Vec<CommentView>,
    /// The author's rebuttals written in the current round (debate).
    pub rebuttals: Vec<CommentView>,
    /// This task's outputs of the current round (what a reviewer judges).
    pub outputs: Vec<OutputView>,
    pub guardrails: Vec<Guardrail>,
    pub skills: Vec<SkillView>,
    pub experiences: Vec<ExperienceView>,
    pub protocol: Option<ProtocolView>,
    /// A review run called because the panel's confidence was too low.
    pub escalation: bool,
    pub cli: CliUsage,
    /// Where the run works (set by `render_task_brief` for runs).
    pub workspace: Option<WorkspaceView>,
    /// The run is in the sandbox (`permissions: sandbox`): what it may do.
    pub sandbox: Option<SandboxView>,
}

/// A sandboxed run as its brief describes it (`runtime::sandbox`).
#[derive(Debug, Clone, Serialize)]
pub struct SandboxView {
    /// `sandbox.allow_hosts`: the hosts reachable through the proxy.
    pub allow_hosts: Vec<String>,
}

/// The run's workspace as the brief names it (`crate::workspace`).
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceView {
    pub path: String,
    /// `git` (a worktree on `branch`) or `directory`.
    pub kind: String,
    pub branch: Option<String>,
    pub base: Option<String>,
    /// A review run's checkout: look, do not change.
    pub read_only: bool,
}

impl From<&crate::workspace::TaskWorkspace> for WorkspaceView {
    fn from(w: &crate::workspace::TaskWorkspace) -> Self {
        WorkspaceView {
            path: w.path.display().to_string(),
            kind: match w.kind {
                crate::workspace::WorkspaceKind::Git => "git".into(),
                crate::workspace::WorkspaceKind::Directory => "directory".into(),
            },
            branch: w.branch.clone(),
            base: w.base.clone(),
            read_only: w.read_only,
        }
    }
}

impl BriefContext {
    /// The template this brief is rendered with.
    pub fn template_name(&self) -> &'static str {
        match (self.kind, self.task.kind.as_str()) {
            (BriefKind::Review, _) => "review.md.j2",
            (BriefKind::Work, "distill") => "distill.md.j2",
            (BriefKind::Work, _) => "work.md.j2",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectView {
    pub id: String,
    /// `context:` of `project.yaml` as `[key, value]` pairs in file order
    /// (values rendered as YAML when not plain strings).
    pub context: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub kind: String,
    pub priority: String,
    pub round: i64,
    pub max_rounds: i64,
    pub tags: Vec<String>,
    pub author: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewView {
    pub reviewer: String,
    pub round: i64,
    pub verdict: String,
    pub confidence: String,
    pub body: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommentView {
    pub author: String,
    #[serde(rename = "type")]
    pub comment_type: String,
    pub body: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputView {
    pub agent: String,
    pub round: i64,
    pub summary: String,
    /// Relative to the home (the run's working directory).
    pub path: Option<String>,
    /// Inline text, cut at [`INLINE_LIMIT`] characters.
    pub text: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DependencyView {
    pub id: String,
    pub title: String,
    pub status: String,
    pub outputs: Vec<OutputView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkillView {
    pub id: String,
    pub name: String,
    pub description: String,
    /// `SKILL.md`, relative to the home when inside it.
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExperienceView {
    pub id: i64,
    pub agent: String,
    pub tags: Vec<String>,
    pub lesson: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProtocolView {
    pub name: String,
    pub pass_rule: String,
    pub seats: usize,
    pub confidence_threshold: String,
    pub max_rounds: i64,
    pub debate: bool,
}

/// The exact blackboard commands of this run (the run's env carries the
/// project, agent and session; `moziplus` is on its PATH).
#[derive(Debug, Clone, Serialize)]
pub struct CliUsage {
    /// The blackboard CLI itself (`moziplus bb` or its absolute path).
    pub bb: String,
    pub read: String,
    pub heartbeat: String,
    pub comment: String,
    pub question: String,
    pub rebuttal: String,
    pub output: String,
    pub output_file: String,
    pub done: String,
    pub fail: String,
    pub release: String,
    pub review: String,
    pub experience: String,
}

impl CliUsage {
    pub fn for_task(task: &str) -> CliUsage {
        CliUsage::with_bin(task, "moziplus")
    }

    /// The commands with the `moziplus` binary named by `bin` (runs get its
    /// absolute path: login shells such as Codex's `bash -lc` reset PATH).
    pub fn with_bin(task: &str, bin: &str) -> CliUsage {
        let bb = &format!("{bin} bb");
        CliUsage {
            bb: bb.clone(),
            read: format!("{bb} read {task}"),
            heartbeat: format!("{bb} heartbeat {task}"),
            comment: format!("{bb} comment {task} --body \"…\""),
            question: format!("{bb} comment {task} --type question --body \"…\""),
            rebuttal: format!("{bb} comment {task} --type rebuttal --body \"…\""),
            output: format!("{bb} output {task} --summary \"…\" --text \"…\""),
            output_file: format!("{bb} output {task} --summary \"…\" --file PATH --name NAME"),
            done: format!("{bb} done {task}"),
            fail: format!("{bb} fail {task} --reason \"…\""),
            release: format!("{bb} release {task} --reason \"…\""),
            review: format!(
                "{bb} review {task} --verdict approve|revise|reject --confidence 0..1 --body \"…\""
            ),
            experience: format!(
                "{bb} experience add --task {task} --tags TAG[,TAG] --lesson \"…\""
            ),
        }
    }
}

/// Inline output text longer than this is cut (the file has the rest).
pub const INLINE_LIMIT: usize = 2000;

/// What [`gather`] needs besides the blackboard.
#[derive(Debug, Clone, Copy)]
pub struct GatherInput<'a> {
    pub kind: BriefKind,
    pub agent: &'a str,
    pub task: &'a Task,
    pub project_context: Option<&'a serde_yaml_ng::Mapping>,
    pub protocol: Option<&'a Protocol>,
    /// Every skill visible to the project (`skills::list_skills`).
    pub skills: &'a [Skill],
    pub guardrails: &'a [Guardrail],
    /// The home's root, to show paths relative to it.
    pub home_root: &'a std::path::Path,
    pub comment_limit: i64,
    pub skill_limit: usize,
    pub experience_limit: i64,
}

fn review_view(r: &Review) -> ReviewView {
    ReviewView {
        reviewer: r.reviewer.clone(),
        round: r.round,
        verdict: r.verdict.to_string(),
        confidence: format!("{:.2}", r.confidence),
        body: r.body.clone(),
        at: rfc3339(r.created_at),
    }
}

fn comment_view(c: &Comment) -> CommentView {
    CommentView {
        author: c.author.clone(),
        comment_type: c.comment_type.to_string(),
        body: c.body.clone(),
        at: rfc3339(c.created_at),
    }
}

fn output_view(project: &str, o: &Output) -> OutputView {
    OutputView {
        agent: o.agent.clone(),
        round: o.round,
        summary: o.summary.clone(),
        path: o
            .artifact_path
            .as_ref()
            .map(|p| format!("projects/{project}/artifacts/{}/outputs/{p}", o.task_id)),
        text: o.inline_text.as_ref().map(|t| {
            if t.chars().count() > INLINE_LIMIT {
                let cut: String = t.chars().take(INLINE_LIMIT).collect();
                format!("{cut}… (cut; {} characters in all)", t.chars().count())
            } else {
                t.clone()
            }
        }),
    }
}

fn yaml_scalar(v: &serde_yaml_ng::Value) -> String {
    match v {
        serde_yaml_ng::Value::String(s) => s.clone(),
        // Lists and maps on one line, as JSON (YAML's flow style).
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Each dependency with the outputs of its latest round (what it delivered).
async fn dependency_views(
    bb: &Blackboard,
    project: &str,
    detail: &TaskDetail,
) -> BbResult<Vec<DependencyView>> {
    let mut dependencies = Vec::new();
    for d in &detail.depends_on {
        let outputs = bb.outputs(&d.id).await?;
        let last = outputs.iter().map(|o| o.round).max().unwrap_or(0);
        dependencies.push(DependencyView {
            id: d.id.clone(),
            title: d.title.clone(),
            status: d.status.to_string(),
            outputs: outputs
                .iter()
                .filter(|o| o.round == last)
                .map(|o| output_view(project, o))
                .collect(),
        });
    }
    Ok(dependencies)
}

/// The skills matching the task's tags and kind, paths relative to the home.
fn skill_views(input: &GatherInput<'_>, match_tags: &[String]) -> Vec<SkillView> {
    matching(input.skills, match_tags, input.skill_limit)
        .into_iter()
        .map(|s| {
            let file = s.path.join("SKILL.md");
            SkillView {
                id: s.id.clone(),
                name: s.name.clone(),
                description: s.description.clone(),
                path: file
                    .strip_prefix(input.home_root)
                    .unwrap_or(&file)
                    .display()
                    .to_string(),
            }
        })
        .collect()
}

fn experience_view(e: Experience) -> ExperienceView {
    ExperienceView {
        id: e.id,
        agent: e.agent,
        tags: e.tags,
        lesson: e.lesson,
    }
}

fn task_view(task: &Task, protocol: Option<&Protocol>) -> TaskView {
    TaskView {
        id: task.id.clone(),
        title: task.title.clone(),
        description: task.description.clone(),
        kind: task.kind.clone(),
        priority: task.priority.to_string(),
        round: task.round,
        max_rounds: protocol.map(|p| p.max_rounds).unwrap_or(task.max_rounds),
        tags: task.tags.clone(),
        author: task.claimed_by.clone(),
    }
}

fn protocol_view(p: &Protocol) -> ProtocolView {
    ProtocolView {
        name: p.name.clone(),
        pass_rule: p.pass_rule.as_str().into(),
        seats: p.reviewers.len(),
        confidence_threshold: format!("{:.2}", p.confidence_threshold),
        max_rounds: p.max_rounds,
        debate: p.debate,
    }
}

/// Reads what the brief of `input.task` needs. Does not count experience
/// references: the caller does that (`Blackboard::reference_experiences`)
/// when the brief is really handed to a run.
pub async fn gather(bb: &Blackboard, input: GatherInput<'_>) -> BbResult<BriefContext> {
    let task = input.task;
    let project = bb.project().to_string();
    let detail = bb.task_detail(&task.id, input.comment_limit).await?;
    let dependencies = dependency_views(bb, &project, &detail).await?;
    let feedback = detail
        .reviews
        .iter()
        .filter(|r| r.round == task.round - 1 && r.verdict != Verdict::Approve)
        .map(review_view)
        .collect();
    let round_reviews = detail
        .reviews
        .iter()
        .filter(|r| r.round == task.round)
        .map(review_view)
        .collect::<Vec<_>>();
    let seats = input.protocol.map(|p| p.reviewers.len()).unwrap_or(1);
    let escalation = input.kind == BriefKind::Review && round_reviews.len() >= seats;
    // Rebuttals since the round began (the round's first output or claim).
    let round_start = detail
        .outputs
        .iter()
        .filter(|o| o.round == task.round)
        .map(|o| o.created_at)
        .min()
        .or(task.claimed_at)
        .unwrap_or(0);
    let rebuttals = detail
        .comments
        .iter()
        .filter(|c| c.comment_type == CommentType::Rebuttal && c.created_at >= round_start)
        .map(comment_view)
        .collect();
    let outputs = detail
        .outputs
        .iter()
        .filter(|o| o.round == task.round)
        .map(|o| output_view(&project, o))
        .collect();
    let mut match_tags = task.tags.clone();
    match_tags.push(task.kind.clone());
    let skills = skill_views(&input, &match_tags);
    // A distill task's lessons are in its description; showing (and
    // counting) them again would only keep them from expiring.
    let experience_limit = if task.kind == "distill" {
        0
    } else {
        input.experience_limit
    };
    let experiences = bb
        .experiences_for_tags(&match_tags, experience_limit)
        .await?
        .into_iter()
        .map(experience_view)
        .collect();
    Ok(BriefContext {
        kind: input.kind,
        agent: input.agent.to_string(),
        project: ProjectView {
            id: project.clone(),
            context: input
                .project_context
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (yaml_scalar(k), yaml_scalar(v)))
                        .collect()
                })
                .unwrap_or_default(),
        },
        task: task_view(task, input.protocol),
        rework: task.round > 1,
        feedback,
        round_reviews,
        dependencies,
        comments: detail.comments.iter().map(comment_view).collect(),
        rebuttals,
        outputs,
        guardrails: input.guardrails.to_vec(),
        skills,
        experiences,
        protocol: input.protocol.map(protocol_view),
        escalation,
        cli: CliUsage::for_task(&task.id),
        workspace: None,
        sandbox: None,
    })
}
