//! The tools' calls onto the project service.
//!
//! [`Board`] is opened once for the server's life: the project's
//! [`ProjectService`] (one blackboard connection pool, as `moziplus bb` opens
//! for one command) and the run's identity, read once from the environment
//! ([`RunIdentity::from_env`], `MOZI_PROJECT`, `MOZI_TASK`). Each tool is one
//! method here that authenticates the caller exactly as the CLI does
//! ([`ProjectService::authenticate`], per write, so a session that ended is
//! refused) and calls the service verb; every rule (holder, status, session,
//! artifact storage, the daemon's wake-up) is the service's.
//!
//! Refusals keep the service's distinctions: [`ServiceError`] maps onto
//! [`ErrorKind`], whose [`ErrorKind::exit_code`] is the exit code `moziplus
//! bb` gives the same error (`cli::report`: conflict 3, anything else 1).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::refusal::{ErrorKind, Refusal};
use super::through_daemon;
use super::{
    CommentInput, DecideInput, DecisionWaitInput, ExperienceAddInput, FailInput, HeartbeatInput,
    OutputInput, ReadInput, ReviewInput, TaskInput,
};
use crate::blackboard::{Actor, DecisionStatus, NewDecision, NewExperience, OpenMode};
use crate::home::Home;
use crate::registry;
use crate::service::{ArtifactSource, NewArtifact, ProjectService, RunIdentity, ServiceError};
use crate::wire::ToWire;

type Outcome = Result<Value, Refusal>;

/// A service result as the tool's structured content (the document
/// `moziplus bb --json` prints for the same verb).
fn json<T: ToWire>(value: &T) -> Outcome {
    serde_json::to_value(value.to_wire())
        .map_err(|e| Refusal::new(ErrorKind::Error, format!("cannot encode the result: {e}")))
}

/// The board of the run this server belongs to, opened once.
#[derive(Debug, Clone)]
pub struct Board {
    /// The project's service, or why it could not be opened (every call is
    /// then refused with that reason, so the agent reads it).
    service: Result<ProjectService, Refusal>,
    /// Inside a sandbox, the daemon's socket (`MOZI_API`): every call goes
    /// there ([`through_daemon`]) and `service` is not opened.
    daemon: Option<String>,
    identity: RunIdentity,
    /// This run's task (`MOZI_TASK`), the default of every `task`.
    task: Option<String>,
}

impl Board {
    /// Opens the project the environment names (`MOZI_PROJECT`) in `home`.
    pub async fn open(home: &Home) -> Board {
        let var = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        let daemon = var("MOZI_API");
        let service = match var("MOZI_PROJECT") {
            _ if daemon.is_some() => Err(Refusal::new(
                ErrorKind::Error,
                "the board is reached through the daemon (MOZI_API)",
            )),
            None => Err(Refusal::new(
                ErrorKind::Invalid,
                "no project: MOZI_PROJECT is not set in the server's environment",
            )),
            Some(raw) => Self::open_service(home, &raw).await,
        };
        Board {
            service,
            daemon,
            identity: RunIdentity::from_env(),
            task: var("MOZI_TASK"),
        }
    }

    async fn open_service(home: &Home, raw: &str) -> Result<ProjectService, Refusal> {
        let project = registry::active_project(home, raw)?;
        ProjectService::open(home, &project, OpenMode::Agent)
            .await
            .map_err(|e| {
                let r = Refusal::from(e);
                Refusal::new(r.kind, format!("project {project}: {}", r.message))
            })
    }

    /// Closes the blackboard (at the end of the server's life).
    pub async fn close(self) {
        if let Ok(service) = self.service {
            service.close().await;
        }
    }

    fn service(&self) -> Result<&ProjectService, Refusal> {
        self.service.as_ref().map_err(Refusal::clone)
    }

    /// Who is writing, checked as the CLI checks it (`agent` is its
    /// `--agent`): on every write, so a session that ended is refused.
    async fn actor(&self, agent: Option<&str>) -> Result<(&ProjectService, Actor), Refusal> {
        let service = self.service()?;
        let actor = service.authenticate(&self.identity, agent).await?;
        Ok((service, actor))
    }

    /// `task`, else this run's task.
    fn task(&self, task: Option<String>) -> Result<String, Refusal> {
        task.or_else(|| self.task.clone()).ok_or_else(|| {
            Refusal::new(
                ErrorKind::Invalid,
                "no task: pass `task` (MOZI_TASK is not set in the server's environment)",
            )
        })
    }

    pub async fn read(&self, i: ReadInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::read(i)).await;
        }
        let service = self.service()?;
        let limit = i.limit.unwrap_or(20);
        match i.task {
            None => json(&service.summary(limit).await?),
            Some(id) => json(&service.task_detail(&id, limit).await?),
        }
    }

    pub async fn heartbeat(&self, i: HeartbeatInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::heartbeat(i)).await;
        }
        let (service, actor) = self.actor(i.agent.as_deref()).await?;
        let id = self.task(i.task)?;
        let lease = match i.lease_secs {
            Some(s) => s,
            None => {
                let (config, _) =
                    crate::config::Config::load_for_project(service.home(), service.project(), &[])
                        .map_err(|e| Refusal::new(ErrorKind::Error, e.to_string()))?;
                config.daemon.task_timeout
            }
        };
        json(&service.heartbeat(&id, &actor, lease).await?)
    }

    pub async fn output(&self, i: OutputInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::output(i)?).await;
        }
        let (service, actor) = self.actor(i.agent.as_deref()).await?;
        let id = self.task(i.task)?;
        let artifact = match (i.file, i.name) {
            (None, Some(_)) => {
                return Err(Refusal::new(ErrorKind::Invalid, "`name` needs `file`"));
            }
            (None, None) => None,
            // The CLI's `--file -` reads stdin, which is this protocol's stream.
            (Some(f), _) if f == "-" => {
                return Err(Refusal::new(
                    ErrorKind::Invalid,
                    "`file` \"-\" (standard input) is not available over MCP: pass the content as `text`, or write it to a file",
                ));
            }
            (Some(f), name) => Some(NewArtifact {
                name,
                source: ArtifactSource::File(PathBuf::from(f)),
            }),
        };
        let o = service
            .post_output(&id, &actor, &i.summary, i.text.as_deref(), artifact)
            .await?;
        json(&o)
    }

    pub async fn comment(&self, i: CommentInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::comment(i)).await;
        }
        let (service, actor) = self.actor(i.agent.as_deref()).await?;
        let id = self.task(i.task)?;
        let kind = i.kind.unwrap_or(super::CommentKind::Comment).into();
        json(&service.comment(&id, &actor, kind, &i.body).await?)
    }

    pub async fn review(&self, i: ReviewInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::review(i)).await;
        }
        let (service, actor) = self.actor(i.agent.as_deref()).await?;
        let id = self.task(i.task)?;
        let body = i.body.unwrap_or_default();
        let r = service
            .review(&id, &actor, i.verdict.into(), i.confidence, &body)
            .await?;
        json(&r)
    }

    pub async fn done(&self, i: TaskInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::done(i)).await;
        }
        let (service, actor) = self.actor(i.agent.as_deref()).await?;
        let id = self.task(i.task)?;
        json(&service.submit(&id, &actor).await?)
    }

    pub async fn fail(&self, i: FailInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::fail(i)).await;
        }
        let (service, actor) = self.actor(i.agent.as_deref()).await?;
        let id = self.task(i.task)?;
        json(&service.fail(&id, &actor, &i.reason).await?)
    }

    pub async fn decide(&self, i: DecideInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::decide(i)).await;
        }
        let (service, actor) = self.actor(i.agent.as_deref()).await?;
        let new = NewDecision {
            task_id: i.task,
            question: i.question,
            decision: i.decision.unwrap_or_default(),
            rationale: i.rationale.unwrap_or_default(),
            settled: !i.propose,
            expires_at: i.expires_secs.map(|s| service.expiry_in(s)).transpose()?,
        };
        json(&service.decide(new, &actor).await?)
    }

    /// An approved decision is the result; a rejected one is a conflict, as
    /// `bb decision wait` exits 3.
    pub async fn decision_wait(&self, i: DecisionWaitInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::decision_wait(i)).await;
        }
        let service = self.service()?;
        let timeout = Duration::from_secs(i.timeout_secs.unwrap_or(300));
        let d = service.wait_decision(i.id, timeout).await?;
        if d.status == DecisionStatus::Rejected {
            return Err(ServiceError::Conflict(format!("decision D{} was rejected", d.id)).into());
        }
        json(&d)
    }

    pub async fn experience_add(&self, i: ExperienceAddInput) -> Outcome {
        if let Some(api) = &self.daemon {
            return through_daemon::call(api, through_daemon::experience_add(i)).await;
        }
        let (service, actor) = self.actor(i.agent.as_deref()).await?;
        let new = NewExperience {
            task_id: i.task.or_else(|| self.task.clone()),
            tags: i.tags.into_iter().filter(|s| !s.is_empty()).collect(),
            lesson: i.lesson,
        };
        json(&service.add_experience(new, &actor).await?)
    }
}
