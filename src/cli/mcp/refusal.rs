//! Why an MCP tool call was refused, with the CLI's distinctions: the
//! one vocabulary of both boards, the one on the project's service
//! ([`super::board`]) and the one through the daemon
//! ([`super::through_daemon`]), and of the exit codes `moziplus bb` gives
//! the same refusals.

use crate::registry::RegistryError;
use crate::service::ServiceError;

/// Why a tool call was refused, with the CLI's distinctions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// An unknown task, decision or project (CLI exit 1).
    NotFound,
    /// Held by someone else, not ready, already decided, a decision rejected:
    /// retrying later may work (CLI exit 3).
    Conflict,
    /// Not this caller's to do: another agent's identity, a session that is
    /// not running, not the task's holder (CLI exit 1).
    Forbidden,
    /// Bad input: a malformed id, a missing or contradictory argument, a
    /// transition the task's status does not allow (CLI exit 1).
    Invalid,
    /// Anything else: a wait that timed out, I/O, the database (CLI exit 1).
    Error,
}

impl ErrorKind {
    /// The exit code `moziplus bb` gives the same refusal.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Conflict => crate::cli::output::EXIT_CONFLICT,
            _ => crate::cli::output::EXIT_ERROR,
        }
    }
}

/// A refused call: its kind and the message the CLI prints for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

impl ErrorKind {
    /// The kind of a service error.
    pub fn of_service(e: &ServiceError) -> ErrorKind {
        match e {
            ServiceError::NotFound(_) => ErrorKind::NotFound,
            ServiceError::Conflict(_) => ErrorKind::Conflict,
            ServiceError::Forbidden(_) => ErrorKind::Forbidden,
            ServiceError::Invalid(_) | ServiceError::IllegalTransition(_) => ErrorKind::Invalid,
            ServiceError::Timeout(_) | ServiceError::Store(_) | ServiceError::Io { .. } => {
                ErrorKind::Error
            }
        }
    }

    /// The kind of a registry error (an unknown or archived project).
    pub fn of_registry(e: &RegistryError) -> ErrorKind {
        match e {
            RegistryError::Unknown { .. } | RegistryError::Archived(_) => ErrorKind::NotFound,
            RegistryError::InvalidId(_) => ErrorKind::Invalid,
            _ => ErrorKind::Error,
        }
    }

    /// The kind of any error a `bb` command ends with: the first service,
    /// registry or store error in its chain says it.
    pub fn of_error(e: &anyhow::Error) -> ErrorKind {
        for cause in e.chain() {
            if let Some(s) = cause.downcast_ref::<ServiceError>() {
                return ErrorKind::of_service(s);
            }
            if let Some(r) = cause.downcast_ref::<RegistryError>() {
                return ErrorKind::of_registry(r);
            }
            if cause
                .downcast_ref::<crate::blackboard::BbError>()
                .is_some_and(|b| b.is_conflict())
            {
                return ErrorKind::Conflict;
            }
        }
        ErrorKind::Error
    }

    /// Its name on the wire (`not_found`, `conflict`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Error => "error",
        }
    }

    /// The kind named `name`, if it is one.
    pub fn parse(name: &str) -> Option<ErrorKind> {
        [
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Forbidden,
            ErrorKind::Invalid,
            ErrorKind::Error,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Refusal {
        Refusal::new(ErrorKind::of_service(&e), e.to_string())
    }
}

impl From<RegistryError> for Refusal {
    fn from(e: RegistryError) -> Refusal {
        Refusal::new(ErrorKind::of_registry(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds and exit codes agree with `cli::report`: only a conflict
    /// exits 3.
    #[test]
    fn service_errors_keep_their_distinctions() {
        let cases = [
            (ServiceError::NotFound("x".into()), ErrorKind::NotFound, 1),
            (ServiceError::Conflict("x".into()), ErrorKind::Conflict, 3),
            (ServiceError::Forbidden("x".into()), ErrorKind::Forbidden, 1),
            (ServiceError::Invalid("x".into()), ErrorKind::Invalid, 1),
            (
                ServiceError::IllegalTransition("x".into()),
                ErrorKind::Invalid,
                1,
            ),
            (ServiceError::Timeout("x".into()), ErrorKind::Error, 1),
        ];
        for (e, kind, code) in cases {
            let conflict = e.is_conflict();
            let r = Refusal::from(e);
            assert_eq!((r.kind, r.kind.exit_code()), (kind, code), "{r:?}");
            assert_eq!(r.message, "x");
            assert_eq!(r.kind == ErrorKind::Conflict, conflict);
        }
        let unknown = Refusal::from(RegistryError::Unknown {
            id: "nope".into(),
            home: "/h".into(),
        });
        assert_eq!(unknown.kind, ErrorKind::NotFound);
        assert!(unknown.message.contains("unknown project \"nope\""));
    }
}
