//! Who is writing.

/// Who is writing. Agents running under a daemon session are verified by their
/// session token and may only touch their own work; operators (a person at the
/// CLI) and the daemon may also cancel, block, reopen and decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub kind: ActorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// An agent run verified by `MOZI_SESSION` + `MOZI_SESSION_TOKEN`.
    Session,
    /// A person or script at the CLI (no session).
    Operator,
    /// The daemon itself.
    Daemon,
}

impl Actor {
    pub fn operator(name: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            kind: ActorKind::Operator,
        }
    }
    pub fn session(agent: impl Into<String>) -> Actor {
        Actor {
            name: agent.into(),
            kind: ActorKind::Session,
        }
    }
    pub fn daemon() -> Actor {
        Actor {
            name: "daemon".into(),
            kind: ActorKind::Daemon,
        }
    }
    /// May perform administrative changes (cancel, block, reopen, decide).
    pub fn is_privileged(&self) -> bool {
        !matches!(self.kind, ActorKind::Session)
    }
}
