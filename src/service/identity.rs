//! Who is calling: agent runs verified by their session token, operators,
//! and the names nobody outside the daemon may write as.
//!
//! When `MOZI_SESSION` is set (the daemon sets it for every run) the caller
//! must also present `MOZI_SESSION_TOKEN`; the session must be running and
//! belong to `MOZI_AGENT`, and an explicit agent name cannot name anyone
//! else. Without a session the caller is an operator named by the flag,
//! `MOZI_AGENT` or `human`. (The token stops agents from writing as each
//! other by mistake or by prompt; it is not a boundary against code running
//! as the same OS user.)

use super::{ProjectService, ServiceError, ServiceResult};
use crate::blackboard::{ids, Actor};

/// Names an HTTP caller cannot write as: the daemon's own identity and the
/// system roles records are attributed to.
pub const RESERVED_ACTORS: &[&str] = &["daemon", "system", "moziplus", "operator", "api"];

/// The identity a run presents, as the daemon hands it over in the
/// environment (`MOZI_AGENT`, `MOZI_SESSION`, `MOZI_SESSION_TOKEN`). Empty
/// values count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunIdentity {
    pub agent: Option<String>,
    pub session: Option<String>,
    pub token: Option<String>,
}

impl RunIdentity {
    /// Reads the identity from this process's environment.
    pub fn from_env() -> RunIdentity {
        let var = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        RunIdentity {
            agent: var("MOZI_AGENT"),
            session: var("MOZI_SESSION"),
            token: var("MOZI_SESSION_TOKEN"),
        }
    }
}

impl ProjectService {
    /// Works out who is calling (see the module docs). `name` is an explicit
    /// agent name (`--agent`), which under a session must be the session's.
    pub async fn authenticate(&self, id: &RunIdentity, name: Option<&str>) -> ServiceResult<Actor> {
        let Some(session) = &id.session else {
            let name = name
                .map(str::to_string)
                .or_else(|| id.agent.clone())
                .unwrap_or_else(|| "human".into());
            if !ids::is_valid_agent_id(&name) {
                return Err(ServiceError::Invalid(format!("invalid agent id {name:?}")));
            }
            // The CLI's --agent, MOZI_AGENT and MCP's `agent`, like HTTP's
            // X-Mozi-Actor (issue 23, finding 10).
            refuse_reserved(&name, "agent name")?;
            return Ok(Actor::operator(name));
        };
        let Some(token) = &id.token else {
            return Err(ServiceError::Forbidden(format!(
                "MOZI_SESSION={session} is set but MOZI_SESSION_TOKEN is missing"
            )));
        };
        let agent = id.agent.clone().ok_or_else(|| {
            ServiceError::Forbidden("MOZI_SESSION is set but MOZI_AGENT is missing".into())
        })?;
        if let Some(f) = name.filter(|f| *f != agent) {
            return Err(ServiceError::Forbidden(format!(
                "--agent {f} refused: this run is agent {agent}, and an agent may only write as itself"
            )));
        }
        self.bb.verify_session(session, &agent, token).await?;
        Ok(Actor::session(agent))
    }
}

/// Refuses a name of [`RESERVED_ACTORS`] (any case) as `what`.
fn refuse_reserved(name: &str, what: &str) -> ServiceResult<()> {
    if RESERVED_ACTORS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(ServiceError::Forbidden(format!(
            "{what} {name:?} is reserved ({}): name the person or script writing",
            RESERVED_ACTORS.join(", ")
        )));
    }
    Ok(())
}

/// Who an HTTP write is recorded as: `operator:api`, or the name the caller
/// gives (`X-Mozi-Actor`), which must be a valid agent id and not reserved.
/// `None` in `given` means no name was given; a name that is not text is
/// passed as `Some("")`.
pub fn api_operator(given: Option<&str>) -> ServiceResult<Actor> {
    let Some(name) = given else {
        return Ok(Actor::operator("operator:api"));
    };
    refuse_reserved(name, "X-Mozi-Actor")?;
    if ids::is_valid_agent_id(name) {
        Ok(Actor::operator(name))
    } else {
        Err(ServiceError::Invalid(format!(
            "X-Mozi-Actor {name:?} is not a valid agent id (lowercase letters, digits, - and _)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_operator_refuses_reserved_names_and_bad_ids() {
        assert_eq!(api_operator(None).unwrap().name, "operator:api");
        assert_eq!(api_operator(Some("alice")).unwrap().name, "alice");
        assert!(matches!(
            api_operator(Some("Daemon")),
            Err(ServiceError::Forbidden(_))
        ));
        assert!(matches!(
            api_operator(Some("not valid!")),
            Err(ServiceError::Invalid(_))
        ));
        assert!(matches!(
            api_operator(Some("")),
            Err(ServiceError::Invalid(_))
        ));
    }
}
