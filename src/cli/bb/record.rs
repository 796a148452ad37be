//! Records about tasks: output, comment, review, observe, experience.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{Cx, TaskArg};
use crate::blackboard::{CommentType, ExperienceStatus, NewExperience, ObservationLevel, Verdict};
use crate::service::{ArtifactSource, NewArtifact, ServiceError};
use crate::wire::ToWire;

#[derive(Debug, Subcommand)]
pub(super) enum RecordVerb {
    /// Post an output of the current round (text, or a file stored under artifacts/<task>/outputs/).
    Output {
        #[command(flatten)]
        t: TaskArg,
        /// What the output is or says, in a line or a few.
        #[arg(long)]
        summary: String,
        /// A file to store as the artifact ('-' reads stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The artifact's path inside outputs/ (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Short inline text instead of a file.
        #[arg(long)]
        text: Option<String>,
    },
    /// Comment on a task.
    Comment {
        #[command(flatten)]
        t: TaskArg,
        /// The comment's text.
        #[arg(long)]
        body: String,
        /// What kind of comment.
        #[arg(long = "type", default_value = "comment", value_parser = vocab!(CommentType))]
        comment_type: CommentType,
    },
    /// Review a task in review (approve, revise or reject).
    Review {
        #[command(flatten)]
        t: TaskArg,
        /// approve passes, revise sends it back for another round, reject
        /// fails it.
        #[arg(long, value_parser = vocab!(Verdict))]
        verdict: Verdict,
        /// 0..1
        #[arg(long)]
        confidence: f64,
        /// Why: what is wrong, or what is good.
        #[arg(long, default_value = "")]
        body: String,
    },
    /// Record an observation (info, warn, alert).
    Observe {
        /// How loud: alert is shown to the operator at once.
        #[arg(long, default_value = "info", value_parser = vocab!(ObservationLevel))]
        level: ObservationLevel,
        /// What was seen.
        #[arg(long)]
        body: String,
        /// The task it is about (T-n).
        #[arg(long)]
        task: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum ExperienceVerb {
    /// Record a lesson learnt, under tags that say when it applies.
    Add {
        /// Comma-separated tags (at least one).
        #[arg(long, value_delimiter = ',', required = true)]
        tags: Vec<String>,
        /// The lesson, in a sentence or two.
        #[arg(long)]
        lesson: String,
        /// The task it was learnt on (T-n).
        #[arg(long, env = "MOZI_TASK")]
        task: Option<String>,
    },
    /// List lessons, newest first.
    List {
        /// Only lessons with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only lessons in this state.
        #[arg(long, value_parser = vocab!(ExperienceStatus))]
        status: Option<ExperienceStatus>,
        /// Most lessons printed.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// `bb experience add|list` (listing needs no identity).
pub(super) async fn experience(cx: &mut Cx, verb: ExperienceVerb) -> anyhow::Result<()> {
    match verb {
        ExperienceVerb::List { tag, status, limit } => {
            let es = cx
                .service
                .experiences(status, tag.as_deref(), limit)
                .await?;
            cx.out.emit(&es.to_wire(), || {
                es.iter()
                    .map(|e| {
                        format!(
                            "E{:<5} {:<10} [{}] {}\n",
                            e.id,
                            e.status,
                            e.tags.join(","),
                            e.lesson
                        )
                    })
                    .collect::<String>()
            })
        }
        ExperienceVerb::Add { tags, lesson, task } => {
            let actor = cx.actor().await?;
            let new = NewExperience {
                task_id: task,
                tags: tags.into_iter().filter(|s| !s.is_empty()).collect(),
                lesson,
            };
            let e = cx.service.add_experience(new, &actor).await?;
            cx.out
                .emit(&e.to_wire(), || format!("experience E{} recorded", e.id))
        }
    }
}

pub(super) async fn run(cx: &mut Cx, verb: RecordVerb) -> anyhow::Result<()> {
    let actor = cx.actor().await?;
    let (svc, out) = (&cx.service, cx.out.clone());
    match verb {
        RecordVerb::Output {
            t,
            summary,
            file,
            name,
            text,
        } => {
            let id = t.id()?;
            let artifact = match file {
                None if name.is_some() => {
                    return Err(ServiceError::Invalid("--name needs --file".into()).into())
                }
                None => None,
                Some(src) => Some(NewArtifact {
                    name,
                    source: match (src.as_os_str() == "-", cx.stdin.take()) {
                        (true, None) => ArtifactSource::Stdin,
                        (true, Some(given)) => ArtifactSource::Bytes(given),
                        (false, None) => ArtifactSource::File(src),
                        // In the daemon a path would be read on its side
                        // of the sandbox: the client sends the file.
                        (false, Some(_)) => {
                            return Err(ServiceError::Invalid(format!(
                                "--file {} refused: through the daemon a file is sent as stdin (`--file -`)",
                                src.display()
                            ))
                            .into())
                        }
                    },
                }),
            };
            let o = svc
                .post_output(id, &actor, &summary, text.as_deref(), artifact)
                .await?;
            out.emit(&o.to_wire(), || {
                format!(
                    "output {} recorded on {}{}",
                    o.id,
                    id,
                    o.artifact_path
                        .as_deref()
                        .map(|a| format!(" (outputs/{a})"))
                        .unwrap_or_default()
                )
            })
        }
        RecordVerb::Comment {
            t,
            body,
            comment_type,
        } => {
            let c = svc.comment(t.id()?, &actor, comment_type, &body).await?;
            out.emit(&c.to_wire(), || {
                format!("comment {} added to {}", c.id, c.task_id)
            })
        }
        RecordVerb::Review {
            t,
            verdict,
            confidence,
            body,
        } => {
            let id = t.id()?;
            let r = svc.review(id, &actor, verdict, confidence, &body).await?;
            out.emit(&r.to_wire(), || {
                format!(
                    "review {} ({}) recorded on {} round {}",
                    r.id, r.verdict, id, r.round
                )
            })
        }
        RecordVerb::Observe { level, body, task } => {
            let id = svc.observe(level, &actor, task.as_deref(), &body).await?;
            out.emit(&json!({ "id": id }), || {
                format!("observation {id} recorded")
            })
        }
    }
}
