//! Review protocol files (`config/review_protocols/*.yaml`).
//!
//! A protocol says which task kinds it covers, who reviews (agents by id or
//! by role), how the verdicts combine (`pass_rule`), how many rounds a task
//! gets, below which confidence a verdict is escalated to a senior reviewer,
//! and whether the author may answer with a rebuttal (`debate`).
//!
//! Files are read once at daemon start. Anything wrong — a YAML error, an
//! unknown key, a value out of range, a reviewer no agent can fill, two
//! protocols claiming the same kind — refuses the start with the file, the key
//! and (where known) the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::agents::AgentsFile;
use crate::config::{find_key_line, ReviewConfig};

/// Who fills a reviewer seat: `{ agent: ID }` or `{ role: NAME }` in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "ReviewerEntry")]
pub enum ReviewerSpec {
    /// A named agent.
    Agent(String),
    /// Any agent with this role in `config/agents.yaml`.
    Role(String),
}

/// The YAML shape of a seat.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewerEntry {
    agent: Option<String>,
    role: Option<String>,
}

impl TryFrom<ReviewerEntry> for ReviewerSpec {
    type Error = String;
    fn try_from(e: ReviewerEntry) -> Result<Self, String> {
        match (e.agent, e.role) {
            (Some(a), None) => Ok(ReviewerSpec::Agent(a)),
            (None, Some(r)) => Ok(ReviewerSpec::Role(r)),
            _ => Err(
                "a reviewer is `{ agent: ID }` or `{ role: NAME }`, exactly one of the two".into(),
            ),
        }
    }
}

impl ReviewerSpec {
    /// Whether `agent` can fill this seat.
    pub fn matches(&self, agent: &crate::config::agents::AgentDef) -> bool {
        match self {
            ReviewerSpec::Agent(id) => agent.id == *id,
            ReviewerSpec::Role(role) => agent.roles.iter().any(|r| r == role),
        }
    }
}

impl std::fmt::Display for ReviewerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReviewerSpec::Agent(a) => write!(f, "agent {a}"),
            ReviewerSpec::Role(r) => write!(f, "role {r}"),
        }
    }
}

/// How the panel's verdicts combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassRule {
    /// Every seat approves.
    AllApprove,
    /// More than half of the seats approve.
    Majority,
}

impl PassRule {
    /// The name used in protocol files (`pass_rule:`), briefs and verdicts.
    pub fn as_str(self) -> &'static str {
        match self {
            PassRule::AllApprove => "all_approve",
            PassRule::Majority => "majority",
        }
    }
}

/// One protocol, with the defaults from `review:` applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Protocol {
    pub name: String,
    pub applies_to: Vec<String>,
    /// One seat per entry; each seat is filled by a different agent.
    pub reviewers: Vec<ReviewerSpec>,
    pub pass_rule: PassRule,
    pub max_rounds: i64,
    pub confidence_threshold: f64,
    pub senior_reviewer: Option<ReviewerSpec>,
    pub debate: bool,
    /// The file it came from.
    pub file: PathBuf,
    /// Why the team cannot staff it (a seat no agent can fill), with file,
    /// key and line; tasks needing it wait in review.
    pub unusable: Option<String>,
}

/// The on-disk shape; optional keys take the `review:` defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtocolFile {
    name: String,
    applies_to: Vec<String>,
    reviewers: Vec<ReviewerSpec>,
    pass_rule: PassRule,
    #[serde(default)]
    max_rounds: Option<i64>,
    #[serde(default)]
    confidence_threshold: Option<f64>,
    #[serde(default)]
    senior_reviewer: Option<ReviewerSpec>,
    #[serde(default)]
    debate: bool,
}

/// A protocol file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("{}: cannot read: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    /// YAML syntax, unknown key or wrong type (the parser names key and line).
    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
    /// A well-typed value that cannot work.
    #[error("{}{}: `{key}` {message}", file.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Key {
        file: PathBuf,
        key: String,
        line: Option<usize>,
        message: String,
    },
}

/// Every protocol of a home, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Protocols {
    by_name: BTreeMap<String, Protocol>,
}

impl Protocols {
    /// Reads every `*.yaml` in `dir` (a missing folder is an empty set) and
    /// checks each against the agents that must fill its seats.
    pub fn load(
        dir: &Path,
        defaults: &ReviewConfig,
        agents: &AgentsFile,
    ) -> Result<Protocols, ProtocolError> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Err(ProtocolError::Read {
                    file: dir.to_path_buf(),
                    error,
                })
            }
        };
        files.sort();
        let mut by_name = BTreeMap::new();
        let mut kind_owner: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in files {
            let text =
                crate::safe_fs::read_to_string(&file).map_err(|error| ProtocolError::Read {
                    file: file.clone(),
                    error,
                })?;
            let p = Protocol::parse(&file, &text, defaults, agents)?;
            let key_err = |key: &str, message: String| ProtocolError::Key {
                file: file.clone(),
                key: key.into(),
                line: find_key_line(&text, key),
                message,
            };
            if let Some(other) = by_name.get(&p.name) {
                let other: &Protocol = other;
                return Err(key_err(
                    "name",
                    format!(
                        "{:?} is already defined by {}",
                        p.name,
                        other.file.display()
                    ),
                ));
            }
            for kind in &p.applies_to {
                if let Some(owner) = kind_owner.get(kind) {
                    return Err(key_err(
                        "applies_to",
                        format!("kind {kind:?} is already covered by {}", owner.display()),
                    ));
                }
                kind_owner.insert(kind.clone(), file.clone());
            }
            by_name.insert(p.name.clone(), p);
        }
        Ok(Protocols { by_name })
    }

    /// The protocol called `name`.
    pub fn get(&self, name: &str) -> Option<&Protocol> {
        self.by_name.get(name)
    }

    /// The protocol covering tasks of `kind`.
    pub fn for_kind(&self, kind: &str) -> Option<&Protocol> {
        self.by_name
            .values()
            .find(|p| p.applies_to.iter().any(|k| k == kind))
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Protocol> {
        self.by_name.values()
    }

    /// The protocols the team cannot staff: `(name, why)`.
    pub fn unusable(&self) -> Vec<(String, String)> {
        self.by_name
            .values()
            .filter_map(|p| p.unusable.clone().map(|w| (p.name.clone(), w)))
            .collect()
    }
}

impl Protocol {
    /// Parses and checks one protocol file's text.
    ///
    /// Over 100 lines on purpose: one check per key, in the file's order, each
    /// naming its key and line; the list reads top to bottom like the file.
    pub fn parse(
        file: &Path,
        text: &str,
        defaults: &ReviewConfig,
        agents: &AgentsFile,
    ) -> Result<Protocol, ProtocolError> {
        let raw: ProtocolFile =
            serde_yaml_ng::from_str(text).map_err(|e| ProtocolError::Invalid {
                file: file.to_path_buf(),
                message: e.to_string(),
            })?;
        let err = |key: &str, message: String| ProtocolError::Key {
            file: file.to_path_buf(),
            key: key.into(),
            line: find_key_line(text, key),
            message,
        };
        if !crate::blackboard::ids::is_valid_tag(&raw.name) || raw.name.contains(':') {
            return Err(err(
                "name",
                format!(
                    "{:?} is not a valid protocol name (lowercase letters, digits, - _)",
                    raw.name
                ),
            ));
        }
        if raw.applies_to.is_empty() {
            return Err(err("applies_to", "must name at least one task kind".into()));
        }
        if raw.reviewers.is_empty() {
            return Err(err("reviewers", "must name at least one reviewer".into()));
        }
        let max_rounds = raw.max_rounds.unwrap_or(if raw.debate {
            defaults.debate_max_rounds as i64
        } else {
            defaults.default_max_rounds as i64
        });
        if !(1..=100).contains(&max_rounds) {
            return Err(err(
                "max_rounds",
                format!("must be between 1 and 100, got {max_rounds}"),
            ));
        }
        let confidence_threshold = raw
            .confidence_threshold
            .unwrap_or(defaults.confidence_threshold);
        if !(0.0..=1.0).contains(&confidence_threshold) {
            return Err(err(
                "confidence_threshold",
                format!("must be between 0 and 1, got {confidence_threshold}"),
            ));
        }
        // Every seat must be fillable by some agent, and the panel needs as
        // many distinct agents as it has seats. A team that cannot staff a
        // protocol still starts: the protocol is marked unusable (doctor,
        // readiness, dashboard) and only the tasks needing it wait.
        let staffing = |key: &str, message: String| Some(err(key, message).to_string());
        let mut unusable = None;
        let mut candidates: Vec<&str> = Vec::new();
        for spec in &raw.reviewers {
            let fits: Vec<&str> = agents
                .agents
                .iter()
                .filter(|a| spec.matches(a))
                .map(|a| a.id.as_str())
                .collect();
            if fits.is_empty() && unusable.is_none() {
                unusable = staffing(
                    "reviewers",
                    format!("no agent in config/agents.yaml can be the reviewer {spec}"),
                );
            }
            candidates.extend(fits);
        }
        candidates.sort_unstable();
        candidates.dedup();
        if candidates.len() < raw.reviewers.len() && unusable.is_none() {
            unusable = staffing(
                "reviewers",
                format!(
                    "{} seats but only {} distinct agent(s) can fill them ({})",
                    raw.reviewers.len(),
                    candidates.len(),
                    candidates.join(", ")
                ),
            );
        }
        if let Some(spec) = &raw.senior_reviewer {
            if !agents.agents.iter().any(|a| spec.matches(a)) && unusable.is_none() {
                unusable = staffing(
                    "senior_reviewer",
                    format!("no agent in config/agents.yaml can be the senior reviewer {spec}"),
                );
            }
        }
        Ok(Protocol {
            unusable,
            name: raw.name,
            applies_to: raw.applies_to,
            reviewers: raw.reviewers,
            pass_rule: raw.pass_rule,
            max_rounds,
            confidence_threshold,
            senior_reviewer: raw.senior_reviewer,
            debate: raw.debate,
            file: file.to_path_buf(),
        })
    }
}
