//! [`DaemonError`]: what stops the daemon from starting (configuration,
//! registry, review protocols, briefs, skills, the home lock), kept out of
//! `mod.rs` so the parts that return it import a leaf.

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Refused(String),
    #[error("review protocol: {0}")]
    Protocol(#[from] crate::review::ProtocolError),
    #[error("briefs: {0}")]
    Brief(#[from] crate::brief::BriefError),
    #[error("skills: {0}")]
    Skill(#[from] crate::skills::SkillError),
    /// The store (PostgreSQL) could not be joined at start.
    #[error("store: {0}")]
    Store(String),
}
