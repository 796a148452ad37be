//! The rules a write must pass, as plain functions of what is stored: which
//! agents a project admits, how long a lease runs, who holds operators'
//! powers, which comment types are reserved. Who holds a task is the store's
//! invariant, checked under its write lock: [`crate::blackboard::require_holder`],
//! which the service also calls before work outside the database. Both the
//! front doors (through [`super::ProjectService`]) and the ticker ask here;
//! none re-implements one.

use super::{ServiceError, ServiceResult};
use crate::blackboard::{Actor, ActorKind, CommentType, Millis};

/// Whether `agent` may work on a project whose `agents:` list is `allowed`
/// (no list: every agent).
pub fn agent_allowed(allowed: Option<&[String]>, agent: &str) -> bool {
    allowed.is_none_or(|list| list.iter().any(|a| a == agent))
}

/// Whether `agent` takes work of `kind` (no kinds = any kind).
pub fn takes_kind(agent: &crate::config::agents::AgentDef, kind: &str) -> bool {
    agent.kinds.is_empty() || agent.kinds.iter().any(|k| k == kind)
}

/// Refuses an agent the project does not admit.
pub fn require_allowed(
    allowed: Option<&[String]>,
    agent: &str,
    project: &str,
) -> ServiceResult<()> {
    match allowed {
        Some(list) if !agent_allowed(allowed, agent) => Err(ServiceError::Forbidden(format!(
            "agent {agent} is not allowed on project {project} (allowed: {})",
            list.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// A lease of `secs` seconds, in milliseconds. A lease must last at least a
/// second: a zero lease would expire before the holder could use it.
pub fn lease_ms(secs: u64) -> ServiceResult<Millis> {
    Ok(client_secs("--lease (lease_secs)", secs, 1)? as Millis * 1000)
}

/// The longest duration a client may ask for: a lease, a decision's expiry,
/// a wait (365 days). Past it a client's number is a mistake, and in
/// milliseconds or as an `Instant` it overflowed (issue 23, finding 10:
/// u64::MAX became a lease of i64::MAX, an empty `expires_at`, a panic).
pub const MAX_CLIENT_SECS: u64 = 365 * 24 * 3600;

/// `secs` of a client's `what`, checked to lie in `min..=MAX_CLIENT_SECS`.
pub fn client_secs(what: &str, secs: u64, min: u64) -> ServiceResult<u64> {
    if (min..=MAX_CLIENT_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(ServiceError::Invalid(format!(
            "{what} must be between {min} and {MAX_CLIENT_SECS} seconds (365 days), got {secs}"
        )))
    }
}

/// Operators' and the daemon's powers (administrative transitions, settling
/// decisions) are refused to an agent running under a session; `refusal`
/// says what was refused.
pub fn require_privileged(actor: &Actor, refusal: impl FnOnce() -> String) -> ServiceResult<()> {
    if actor.is_privileged() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(refusal()))
    }
}

/// `system` comments record what the daemon did; nobody else writes one.
pub fn may_comment(actor: &Actor, comment_type: CommentType) -> ServiceResult<()> {
    if comment_type == CommentType::System && actor.kind != ActorKind::Daemon {
        return Err(ServiceError::Invalid(
            "system comments are written by the daemon only".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_agents_and_lease() {
        let list = vec!["a".to_string(), "b".to_string()];
        assert!(agent_allowed(None, "z"));
        assert!(agent_allowed(Some(&list), "b"));
        assert!(!agent_allowed(Some(&list), "c"));
        let e = require_allowed(Some(&list), "c", "alpha").unwrap_err();
        assert_eq!(
            e.to_string(),
            "agent c is not allowed on project alpha (allowed: a, b)"
        );
        assert!(require_allowed(None, "c", "alpha").is_ok());
        assert_eq!(lease_ms(2).unwrap(), 2000);
        assert!(matches!(lease_ms(0), Err(ServiceError::Invalid(_))));
    }

    #[test]
    fn system_comments_are_the_daemons() {
        for actor in [Actor::operator("human"), Actor::session("a")] {
            assert!(may_comment(&actor, CommentType::System).is_err());
            assert!(may_comment(&actor, CommentType::Note).is_ok());
        }
        assert!(may_comment(&Actor::daemon(), CommentType::System).is_ok());
    }
}
