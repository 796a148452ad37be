//! The project's configuration for the `moziplus bb` verbs that need it: a
//! claim checks the project's allowed agents and takes its lease from
//! `daemon.task_timeout`, as does a heartbeat without `--lease`.
//!
//! Reading and merging the YAML layers does not need the database, so for
//! those verbs it runs on a thread of its own while the main thread opens the
//! blackboard (and sqlx's connection thread parses the schema): on two cores
//! the two overlap instead of adding up in every claim.

use anyhow::anyhow;

use crate::config::{Config, ConfigError, ProjectSettings};
use crate::home::Home;
use crate::registry::ProjectId;

type Loaded = Result<(Config, ProjectSettings), ConfigError>;

pub enum ProjectConfig {
    /// Being loaded on its own thread.
    Loading(std::thread::JoinHandle<Loaded>),
    /// Already loaded (by [`super::early`], on the thread that parsed the
    /// arguments).
    Loaded(Box<Loaded>),
    /// Loaded on the calling thread when asked for.
    OnDemand,
}

impl ProjectConfig {
    /// Loads the configuration on this thread now.
    pub fn load_now(home: &Home, project: &ProjectId) -> Self {
        ProjectConfig::Loaded(Box::new(Config::load_for_project(home, project, &[])))
    }

    /// Starts loading on a thread of its own when `needed`.
    pub fn start(home: &Home, project: &ProjectId, needed: bool) -> ProjectConfig {
        if !needed {
            return ProjectConfig::OnDemand;
        }
        let (home, project) = (home.clone(), project.clone());
        std::thread::Builder::new()
            .name("moziplus-config".into())
            .spawn(move || Config::load_for_project(&home, &project, &[]))
            .map_or(ProjectConfig::OnDemand, ProjectConfig::Loading)
    }

    /// The loaded configuration (waiting for its thread if need be).
    pub fn get(
        self,
        home: &Home,
        project: &ProjectId,
    ) -> anyhow::Result<(Config, ProjectSettings)> {
        match self {
            ProjectConfig::Loading(thread) => Ok(thread.join().map_err(|_| {
                anyhow!("loading the configuration of project {project} panicked")
            })??),
            ProjectConfig::Loaded(result) => Ok((*result)?),
            ProjectConfig::OnDemand => Ok(Config::load_for_project(home, project, &[])?),
        }
    }
}
