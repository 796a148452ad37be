//! The one seam between the MCP tools and the board's rules.
//!
//! Every tool of [`super::Server`] ends here, in [`Board::call`], with the
//! verb it means. Until the project service (issue 14) is the home of the
//! rules, a call runs exactly what the same `moziplus bb` command line runs,
//! in this process: the verb's arguments are parsed by the CLI's own clap
//! definitions and handed to `bb::run`, with what it prints collected instead
//! of written (stdout is the protocol's stream). Identity, session checks,
//! holder and status rules, artifact storage and the daemon's wake-up are
//! therefore the CLI's, not a copy of them; moving the tools onto the service
//! changes this file only.

use clap::Parser as _;
use serde_json::Value;

use crate::blackboard::BbError;
use crate::home::Home;

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
    /// transition the task's status does not allow (CLI exit 1 or 2).
    Invalid,
    /// Anything else (I/O, the database) (CLI exit 1).
    Error,
}

impl ErrorKind {
    /// The exit code `moziplus bb` gives the same refusal.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Conflict => crate::cli::EXIT_CONFLICT,
            _ => crate::cli::EXIT_ERROR,
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
    fn of(e: &anyhow::Error) -> Refusal {
        let kind = e
            .chain()
            .find_map(|c| {
                if let Some(s) = c.downcast_ref::<crate::service::ServiceError>() {
                    use crate::service::ServiceError as S;
                    return Some(match s {
                        S::NotFound(_) => ErrorKind::NotFound,
                        S::Conflict(_) => ErrorKind::Conflict,
                        S::Forbidden(_) => ErrorKind::Forbidden,
                        S::Invalid(_) | S::IllegalTransition(_) => ErrorKind::Invalid,
                        S::Store(b) => match b {
                            BbError::NotFound { .. } => ErrorKind::NotFound,
                            BbError::Conflict(_) => ErrorKind::Conflict,
                            BbError::Forbidden(_) => ErrorKind::Forbidden,
                            BbError::Invalid(_) | BbError::IllegalTransition { .. } => {
                                ErrorKind::Invalid
                            }
                            _ => ErrorKind::Error,
                        },
                        _ => ErrorKind::Error,
                    });
                }
                if let Some(b) = c.downcast_ref::<BbError>() {
                    return Some(match b {
                        BbError::NotFound { .. } => ErrorKind::NotFound,
                        BbError::Conflict(_) => ErrorKind::Conflict,
                        BbError::Forbidden(_) => ErrorKind::Forbidden,
                        BbError::Invalid(_) | BbError::IllegalTransition { .. } => {
                            ErrorKind::Invalid
                        }
                        _ => ErrorKind::Error,
                    });
                }
                use crate::registry::RegistryError;
                match c.downcast_ref::<RegistryError>()? {
                    RegistryError::Unknown(_) => Some(ErrorKind::NotFound),
                    _ => None,
                }
            })
            .unwrap_or_else(|| {
                // The CLI's own refusals of bad input are plain messages.
                if e.chain()
                    .any(|c| c.downcast_ref::<std::io::Error>().is_some())
                {
                    ErrorKind::Error
                } else {
                    ErrorKind::Invalid
                }
            });
        Refusal {
            kind,
            message: crate::cli::chain_message(e),
        }
    }
}

/// The board of the run this server belongs to.
#[derive(Debug, Clone)]
pub struct Board {
    home: Home,
}

impl Board {
    pub fn new(home: Home) -> Board {
        Board { home }
    }

    /// Runs one verb: `verb` is the `moziplus bb` command line after `bb`
    /// (without `--json`, which is always added). Returns the verb's JSON.
    pub async fn call(&self, verb: Vec<String>) -> Result<Value, Refusal> {
        let argv = ["moziplus", "bb", "--json"]
            .into_iter()
            .map(String::from)
            .chain(verb);
        let cli = super::super::Cli::try_parse_from(argv).map_err(|e| Refusal {
            kind: ErrorKind::Invalid,
            message: first_line(&e.to_string()),
        })?;
        let super::super::Command::Bb(args) = cli.command else {
            return Err(Refusal {
                kind: ErrorKind::Error,
                message: "not a bb command line".into(),
            });
        };
        let (result, printed) =
            super::super::output::capture(super::super::bb::run(&self.home, args, None)).await;
        result.map_err(|e| Refusal::of(&e))?;
        let text = String::from_utf8_lossy(&printed);
        serde_json::from_str(&text).map_err(|e| Refusal {
            kind: ErrorKind::Error,
            message: format!("the verb printed no JSON ({e}): {text}"),
        })
    }
}

/// clap's message without the usage and help lines that follow it.
fn first_line(rendered: &str) -> String {
    rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string()
}
