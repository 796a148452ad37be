//! Agent briefs: what a run is told, rendered with minijinja from
//! `prompt_templates/*.j2`, the snippets of `config/template_components.yaml`
//! and the rules of `config/guardrails.yaml`.
//!
//! Two halves: [`gather`] reads what a brief needs from the blackboard into a
//! [`BriefContext`] (plain data, serializable); [`BriefEngine::render`] turns
//! it into text without I/O. Rendering is deterministic: the same context
//! gives the same bytes (golden tests in `tests/brief_golden.rs` pin them).
//!
//! Strictness: the environment uses `UndefinedBehavior::Strict`, so a
//! template that reads a variable the context does not have fails, and the
//! error names the variable(s) (found by comparing the template's undeclared
//! variables with the context) and the template line. `component("x")` with
//! no component `x` fails naming it and the components that exist.
//!
//! Templates: `work.md.j2` (work runs), `review.md.j2` (review runs, also the
//! senior reviewer's escalation), `distill.md.j2` (work runs of `distill`
//! tasks). All three must exist; every `*.j2` in the folder is loaded, so
//! templates may `{% include %}` each other.

mod context;

pub use context::{
    gather, BriefContext, BriefKind, CliUsage, CommentView, DependencyView, ExperienceView,
    GatherInput, OutputView, ProtocolView, ReviewView, SkillView, TaskView, WorkspaceView,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, Error as JinjaError, ErrorKind, State, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::home::Home;

/// The templates a home must provide.
pub const REQUIRED_TEMPLATES: [&str; 3] = ["work.md.j2", "review.md.j2", "distill.md.j2"];

/// One rule of `config/guardrails.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrail {
    pub id: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardrailsFile {
    rules: Vec<Guardrail>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentsFile {
    components: BTreeMap<String, String>,
}

/// Why briefs cannot be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum BriefError {
    #[error("{}: cannot read: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    /// YAML syntax, unknown key, wrong type (the parser names key and line).
    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
    /// A template that does not parse.
    #[error("{}: {message}", file.display())]
    Template { file: PathBuf, message: String },
    /// Rendering failed: a missing variable, an unknown component, …
    #[error("rendering {template}: {message}")]
    Render { template: String, message: String },
}

/// Loaded templates, components and guardrails. Cheap to share (`Arc` it).
#[derive(Debug)]
pub struct BriefEngine {
    env: Environment<'static>,
    guardrails: Vec<Guardrail>,
}

/// The repository's templates, for homes without `prompt_templates/`.
const BUILTIN_TEMPLATES: [(&str, &str); 4] = [
    (
        "_shared.md.j2",
        include_str!("../../prompt_templates/_shared.md.j2"),
    ),
    (
        "distill.md.j2",
        include_str!("../../prompt_templates/distill.md.j2"),
    ),
    (
        "review.md.j2",
        include_str!("../../prompt_templates/review.md.j2"),
    ),
    (
        "work.md.j2",
        include_str!("../../prompt_templates/work.md.j2"),
    ),
];
const BUILTIN_COMPONENTS: &str = include_str!("../../config/template_components.yaml");
const BUILTIN_GUARDRAILS: &str = include_str!("../../config/guardrails.yaml");

/// Reads `file`, or `builtin` when it does not exist.
fn read_or(file: &Path, builtin: &str) -> Result<String, BriefError> {
    match crate::safe_fs::read_to_string(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(builtin.to_string()),
        other => other.map_err(|error| BriefError::Read {
            file: file.to_path_buf(),
            error,
        }),
    }
}

fn read(file: &Path) -> Result<String, BriefError> {
    crate::safe_fs::read_to_string(file).map_err(|error| BriefError::Read {
        file: file.to_path_buf(),
        error,
    })
}

impl BriefEngine {
    /// Loads `prompt_templates/`, `config/template_components.yaml` and
    /// `config/guardrails.yaml` of `home`. A home without the folder (or
    /// without one of the two files) uses the copy built into the binary —
    /// the repository's own files; a folder that exists but lacks a required
    /// template is an error.
    pub fn load(home: &Home) -> Result<BriefEngine, BriefError> {
        let dir = home.prompt_templates_dir();
        let mut templates = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut files: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "j2"))
                    .collect();
                files.sort();
                for f in files {
                    let name = f
                        .file_name()
                        .expect("a file")
                        .to_string_lossy()
                        .into_owned();
                    templates.push((name, read(&f)?, f));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                for (name, text) in BUILTIN_TEMPLATES {
                    templates.push((name.to_string(), text.to_string(), dir.join(name)));
                }
            }
            Err(error) => return Err(BriefError::Read { file: dir, error }),
        }
        let comp_file = home.template_components_file();
        let components: ComponentsFile =
            serde_yaml_ng::from_str(&read_or(&comp_file, BUILTIN_COMPONENTS)?).map_err(|e| {
                BriefError::Invalid {
                    file: comp_file.clone(),
                    message: e.to_string(),
                }
            })?;
        let rails_file = home.guardrails_file();
        let rails: GuardrailsFile =
            serde_yaml_ng::from_str(&read_or(&rails_file, BUILTIN_GUARDRAILS)?).map_err(|e| {
                BriefError::Invalid {
                    file: rails_file.clone(),
                    message: e.to_string(),
                }
            })?;
        Self::from_parts(
            templates,
            components.components,
            rails.rules,
            &dir,
            &comp_file,
        )
    }

    /// Builds an engine from sources: `(name, text, file)` templates,
    /// components by name, guardrails. `dir` and `components_file` name the
    /// origins in errors.
    pub fn from_parts(
        templates: Vec<(String, String, PathBuf)>,
        components: BTreeMap<String, String>,
        guardrails: Vec<Guardrail>,
        dir: &Path,
        components_file: &Path,
    ) -> Result<BriefEngine, BriefError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        // Briefs are Markdown, not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        for required in REQUIRED_TEMPLATES {
            if !templates.iter().any(|(n, _, _)| n == required) {
                return Err(BriefError::Template {
                    file: dir.join(required),
                    message: "missing: every home needs this template".into(),
                });
            }
        }
        for (name, text, file) in templates {
            env.add_template_owned(name, text)
                .map_err(|e| BriefError::Template {
                    file,
                    message: jinja_message(&e),
                })?;
        }
        let names: Vec<String> = components.keys().cloned().collect();
        for (name, text) in components {
            env.add_template_owned(format!("component:{name}"), text)
                .map_err(|e| BriefError::Template {
                    file: components_file.to_path_buf(),
                    message: format!("components.{name}: {}", jinja_message(&e)),
                })?;
        }
        let known = names.join(", ");
        env.add_function(
            "component",
            move |state: &State, name: &str| -> Result<String, JinjaError> {
                let tmpl = state.env().get_template(&format!("component:{name}")).map_err(|_| {
                    JinjaError::new(
                        ErrorKind::InvalidOperation,
                        format!(
                            "unknown component {name:?}; config/template_components.yaml defines: {known}"
                        ),
                    )
                })?;
                // A component sees the same variables as the template using it.
                let mut vars = BTreeMap::new();
                for k in state.known_variables() {
                    if let Some(v) = state.lookup(&k) {
                        vars.insert(k.into_owned(), v);
                    }
                }
                tmpl.render(vars).map_err(|e| {
                    JinjaError::new(
                        ErrorKind::InvalidOperation,
                        format!("component {name:?}: {}", jinja_message(&e)),
                    )
                })
            },
        );
        Ok(BriefEngine { env, guardrails })
    }

    /// The guardrails every brief carries.
    pub fn guardrails(&self) -> &[Guardrail] {
        &self.guardrails
    }

    /// Renders the brief for `ctx` with the template its kind selects.
    pub fn render(&self, ctx: &BriefContext) -> Result<String, BriefError> {
        let name = ctx.template_name();
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| BriefError::Render {
                template: name.into(),
                message: jinja_message(&e),
            })?;
        tmpl.render(ctx).map_err(|e| {
            let mut message = jinja_message(&e);
            if e.kind() == ErrorKind::UndefinedError {
                let missing = missing_variables(&tmpl, ctx);
                if !missing.is_empty() {
                    message = format!(
                        "undefined variable(s) {} — not in the brief context ({})",
                        missing.join(", "),
                        message
                    );
                }
            }
            BriefError::Render {
                template: name.into(),
                message,
            }
        })
    }
}

/// The message of a minijinja error with its template and line, and the
/// messages of its causes (a failing component or include).
fn jinja_message(e: &JinjaError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// Variables the template reads that the context does not provide (nested
/// paths such as `task.colour`, checked against the serialized context).
fn missing_variables(tmpl: &minijinja::Template<'_, '_>, ctx: &BriefContext) -> Vec<String> {
    let json = serde_json::to_value(ctx).unwrap_or_default();
    let mut missing: Vec<String> = tmpl
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| {
            let mut parts = path.split('.');
            let root = parts.next().unwrap_or_default();
            if ["component", "loop", "range", "namespace", "dict", "debug"].contains(&root) {
                return false;
            }
            let mut cur = &json;
            for p in std::iter::once(root).chain(parts) {
                match cur.get(p) {
                    Some(v) => cur = v,
                    None => return true,
                }
            }
            false
        })
        .collect();
    missing.sort();
    missing
}

/// What [`render_task_brief`] needs to know about the run.
#[derive(Debug, Clone, Copy)]
pub struct BriefRequest<'a> {
    pub kind: BriefKind,
    pub agent: &'a str,
    pub project_context: Option<&'a serde_yaml_ng::Mapping>,
    /// Count the shown experiences as referenced (true for real runs, false
    /// for previews such as `moziplus brief render`).
    pub count_references: bool,
    /// How the brief names the `moziplus` binary (runs: its absolute path).
    pub bin: &'a str,
    /// Where the run works (`None` for previews).
    pub workspace: Option<&'a crate::workspace::TaskWorkspace>,
    /// The run is sandboxed, with these `sandbox.allow_hosts`.
    pub sandbox: Option<&'a [String]>,
}

/// Why a task's brief could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TaskBriefError {
    #[error(transparent)]
    Brief(#[from] BriefError),
    #[error(transparent)]
    Skill(#[from] crate::skills::SkillError),
    #[error(transparent)]
    Blackboard(#[from] crate::blackboard::BbError),
}

/// One warning observation on the project per broken skill (not again
/// while it is among the board's latest 200 observations): the brief skips
/// it, the operator learns why it is missing.
async fn report_broken_skills(
    bb: &crate::blackboard::Blackboard,
    broken: &[crate::skills::SkillError],
) {
    if broken.is_empty() {
        return;
    }
    let recent = bb.observations(200).await.unwrap_or_default();
    for e in broken {
        let body = format!("skill skipped: {e}; fix or remove it, the briefs go on without it");
        tracing::warn!(project = bb.project(), skill = %e, "broken skill skipped");
        if recent.iter().any(|o| o.body == body) {
            continue;
        }
        let _ = bb
            .add_observation(
                crate::blackboard::ObservationLevel::Warn,
                &crate::blackboard::Actor::daemon(),
                None,
                &body,
            )
            .await;
    }
}

/// Gathers and renders the brief of `task` for one run: the protocol the
/// task names, the skills visible to its project, guardrails and lessons.
pub async fn render_task_brief(
    home: &Home,
    bb: &crate::blackboard::Blackboard,
    engine: &BriefEngine,
    protocols: &crate::review::Protocols,
    task: &crate::blackboard::Task,
    req: BriefRequest<'_>,
) -> Result<TaskBrief, TaskBriefError> {
    let project = crate::registry::ProjectId::parse(bb.project())
        .map_err(|e| crate::blackboard::BbError::Invalid(e.to_string()))?;
    // Skill folders are read off the runtime: a slow disk or a hostile file
    // must not stall the daemon.
    // A broken skill is skipped and reported, never the task's failure
    // (issue 23, finding 6).
    let skills = {
        let (home, project) = (home.clone(), project.clone());
        let (skills, broken) = tokio::task::spawn_blocking(move || {
            crate::skills::list_skills_skipping_broken(&home, Some(&project))
        })
        .await
        .map_err(|e| crate::skills::SkillError {
            file: std::path::PathBuf::from("skills"),
            message: format!("the skill reader stopped: {e}"),
        })?;
        report_broken_skills(bb, &broken).await;
        (skills, broken)
    };
    let (skills, broken_skills) = skills;
    let protocol = task
        .review_protocol
        .as_deref()
        .and_then(|n| protocols.get(n));
    let ctx = gather(
        bb,
        GatherInput {
            kind: req.kind,
            agent: req.agent,
            task,
            project_context: req.project_context,
            protocol,
            skills: &skills,
            guardrails: engine.guardrails(),
            home_root: home.root(),
            comment_limit: COMMENT_LIMIT,
            skill_limit: SKILL_LIMIT,
            experience_limit: EXPERIENCE_LIMIT,
        },
    )
    .await?;
    let mut ctx = ctx;
    ctx.cli = context::CliUsage::with_bin(&task.id, req.bin);
    ctx.workspace = req.workspace.map(WorkspaceView::from);
    ctx.sandbox = req.sandbox.map(|hosts| context::SandboxView {
        allow_hosts: hosts.to_vec(),
    });
    let text = engine.render(&ctx)?;
    if req.count_references {
        let ids: Vec<i64> = ctx.experiences.iter().map(|e| e.id).collect();
        bb.reference_experiences(&ids).await?;
    }
    Ok(TaskBrief {
        text,
        broken_skills,
    })
}

/// A rendered task brief, and the skill folders it had to skip.
#[derive(Debug)]
pub struct TaskBrief {
    pub text: String,
    /// Skills that did not load (reported once as observations; the daemon
    /// lists them in readiness).
    pub broken_skills: Vec<crate::skills::SkillError>,
}

/// How many recent comments a brief shows.
pub const COMMENT_LIMIT: i64 = 50;
/// How many matching skills a brief lists.
pub const SKILL_LIMIT: usize = 20;
/// How many lessons a brief shows.
pub const EXPERIENCE_LIMIT: i64 = 5;
