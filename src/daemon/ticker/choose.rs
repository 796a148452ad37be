//! The ticker's choice of agent: pure functions of the team (`agents.yaml`),
//! the project's allowed agents and the current load, so every rule is
//! unit-tested without a daemon, a database or a process.

use std::collections::HashMap;

use crate::config::agents::AgentDef;
use crate::review::ReviewerSpec;

/// Who could take a run right now on one project.
pub struct Team<'a, H: Fn(&str) -> bool> {
    /// Every agent of `agents.yaml`, in file order (ties go to the first).
    pub agents: &'a [AgentDef],
    /// The project's `agents:` list (`None` = every agent).
    pub allowed: Option<&'a [String]>,
    /// Runs in flight per agent, all projects together.
    pub busy: &'a HashMap<String, usize>,
    /// `daemon.max_per_agent` as seen by this project.
    pub max_per_agent: usize,
    /// Whether the agent is held on this project after an infrastructure
    /// failure (`runtime::health`).
    pub held: H,
}

impl<'a, H: Fn(&str) -> bool> Team<'a, H> {
    fn load(&self, agent: &AgentDef) -> usize {
        *self.busy.get(&agent.id).unwrap_or(&0)
    }

    /// Allowed on the project, under its run limit and not held.
    fn available(&self, agent: &AgentDef) -> bool {
        allowed(self.allowed, &agent.id)
            && self.load(agent) < self.max_per_agent
            && !(self.held)(&agent.id)
    }

    /// The agent a ready task goes to: its assignee when it names one, else
    /// one that takes the task's kind; available; the least busy of those
    /// (the first in `agents.yaml` on a tie).
    pub fn for_work(&self, assignee: Option<&str>, kind: &str) -> Option<&'a AgentDef> {
        self.agents
            .iter()
            .filter(|a| match assignee {
                Some(x) => x == a.id,
                None => takes_kind(a, kind),
            })
            .filter(|a| self.available(a))
            .min_by_key(|a| self.load(a))
    }

    /// Why [`Self::for_work`] found nobody: the agents that would take the
    /// task (its assignee, else those taking its kind, allowed on the
    /// project) split into the busy (at `max_per_agent`) and the held. Both
    /// empty: no agent would take it at all.
    pub fn why_nobody(
        &self,
        assignee: Option<&str>,
        kind: &str,
    ) -> (Vec<&'a AgentDef>, Vec<&'a AgentDef>) {
        let candidates = self.agents.iter().filter(|a| {
            allowed(self.allowed, &a.id)
                && match assignee {
                    Some(x) => x == a.id,
                    None => takes_kind(a, kind),
                }
        });
        let (mut busy, mut held) = (Vec::new(), Vec::new());
        for a in candidates {
            if (self.held)(&a.id) {
                held.push(a);
            } else if self.load(a) >= self.max_per_agent {
                busy.push(a);
            }
        }
        (busy, held)
    }

    /// The agent a review seat goes to: the first in `agents.yaml` that fits
    /// `spec`, is not the task's `author`, has not taken a seat this round
    /// (`taken`) and is available.
    pub fn reviewer(
        &self,
        spec: &ReviewerSpec,
        author: Option<&str>,
        taken: &[String],
    ) -> Option<&'a AgentDef> {
        self.agents.iter().find(|a| {
            spec.matches(a)
                && Some(a.id.as_str()) != author
                && !taken.contains(&a.id)
                && self.available(a)
        })
    }
}

/// Whether the project's `agents:` list (`None` = all) lets `agent` work on it.
/// The rule itself is the project service's ([`crate::service::rules`]).
pub fn allowed(list: Option<&[String]>, agent: &str) -> bool {
    crate::service::rules::agent_allowed(list, agent)
}

/// Whether `agent` takes work of `kind` (no kinds = any kind); the rule is
/// the project service's, which creation checks too.
pub fn takes_kind(agent: &AgentDef, kind: &str) -> bool {
    crate::service::rules::takes_kind(agent, kind)
}

/// The protocol's seats still open this round: each reviewer in `taken` (a
/// review given, or a review run in flight) fills the first seat that fits
/// them; one that fits none (or is not in `agents.yaml`) still fills the
/// last open seat.
pub fn open_seats<'p>(
    seats: &'p [ReviewerSpec],
    taken: &[String],
    agents: &[AgentDef],
) -> Vec<&'p ReviewerSpec> {
    let mut open: Vec<&ReviewerSpec> = seats.iter().collect();
    for who in taken {
        if let Some(def) = agents.iter().find(|a| a.id == *who) {
            if let Some(i) = open.iter().position(|s| s.matches(def)) {
                open.remove(i);
                continue;
            }
        }
        if !open.is_empty() {
            open.pop();
        }
    }
    open
}

/// Whether anyone could ever answer an escalation to `spec`: an agent that
/// fits it, is allowed on the project, is not the task's `author` and did not
/// review this round (`taken`). Load and holds do not count: they pass.
pub fn senior_exists(
    agents: &[AgentDef],
    spec: &ReviewerSpec,
    author: Option<&str>,
    taken: &[String],
    allowed_list: Option<&[String]>,
) -> bool {
    agents.iter().any(|a| {
        spec.matches(a)
            && !taken.contains(&a.id)
            && Some(a.id.as_str()) != author
            && allowed(allowed_list, &a.id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, kinds: &[&str], roles: &[&str]) -> AgentDef {
        let yaml = format!(
            "id: {id}\nruntime: command\nkinds: {kinds:?}\nroles: {roles:?}\n",
            kinds = kinds,
            roles = roles
        );
        serde_yaml_ng::from_str(&yaml).expect("agent definition")
    }

    fn team<'a>(
        agents: &'a [AgentDef],
        allowed: Option<&'a [String]>,
        busy: &'a HashMap<String, usize>,
        held: &'a [&'a str],
    ) -> Team<'a, impl Fn(&str) -> bool + 'a> {
        Team {
            agents,
            allowed,
            busy,
            max_per_agent: 2,
            held: move |id: &str| held.contains(&id),
        }
    }

    fn busy(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn ids(v: &[&ReviewerSpec]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn work_goes_to_the_assignee_even_when_it_does_not_take_the_kind() {
        let agents = [agent("a", &["code"], &[]), agent("b", &["docs"], &[])];
        let load = busy(&[]);
        let t = team(&agents, None, &load, &[]);
        assert_eq!(t.for_work(Some("b"), "code").map(|a| &a.id[..]), Some("b"));
        assert_eq!(t.for_work(Some("nobody"), "code"), None);
    }

    #[test]
    fn work_without_assignee_goes_to_an_agent_taking_its_kind() {
        let agents = [
            agent("docs", &["docs"], &[]),
            agent("coder", &["code"], &[]),
            agent("any", &[], &[]),
        ];
        let load = busy(&[]);
        let t = team(&agents, None, &load, &[]);
        assert_eq!(t.for_work(None, "code").map(|a| &a.id[..]), Some("coder"));
        // No kinds means any kind; the first in file order wins a tie.
        assert_eq!(t.for_work(None, "test").map(|a| &a.id[..]), Some("any"));
    }

    #[test]
    fn the_least_busy_agent_wins_and_ties_go_to_file_order() {
        let agents = [
            agent("a", &[], &[]),
            agent("b", &[], &[]),
            agent("c", &[], &[]),
        ];
        let load = busy(&[("a", 1), ("b", 0), ("c", 0)]);
        let t = team(&agents, None, &load, &[]);
        assert_eq!(t.for_work(None, "code").map(|a| &a.id[..]), Some("b"));
    }

    #[test]
    fn work_skips_agents_not_allowed_full_or_held() {
        let agents = [
            agent("outsider", &[], &[]),
            agent("full", &[], &[]),
            agent("held", &[], &[]),
            agent("free", &[], &[]),
        ];
        let allowed: Vec<String> = ["full", "held", "free"].map(String::from).to_vec();
        let load = busy(&[("full", 2), ("free", 1)]);
        let t = team(&agents, Some(&allowed), &load, &["held"]);
        assert_eq!(t.for_work(None, "code").map(|a| &a.id[..]), Some("free"));
        let load = busy(&[("full", 2), ("free", 2)]);
        let t = team(&agents, Some(&allowed), &load, &["held"]);
        assert_eq!(
            t.for_work(None, "code"),
            None,
            "everyone allowed is full or held"
        );
    }

    #[test]
    fn a_reviewer_is_never_the_author_nor_a_second_seat() {
        let agents = [
            agent("author", &[], &["reviewer"]),
            agent("r1", &[], &["reviewer"]),
            agent("r2", &[], &["reviewer"]),
            agent("coder", &[], &[]),
        ];
        let load = busy(&[]);
        let t = team(&agents, None, &load, &[]);
        let seat = ReviewerSpec::Role("reviewer".into());
        let pick = |taken: &[String]| {
            t.reviewer(&seat, Some("author"), taken)
                .map(|a| a.id.clone())
        };
        assert_eq!(pick(&[]), Some("r1".into()));
        assert_eq!(pick(&["r1".into()]), Some("r2".into()));
        assert_eq!(pick(&["r1".into(), "r2".into()]), None);
        let named = ReviewerSpec::Agent("coder".into());
        assert_eq!(
            t.reviewer(&named, Some("author"), &[]).map(|a| &a.id[..]),
            Some("coder")
        );
    }

    #[test]
    fn a_reviewer_must_be_available() {
        let agents = [
            agent("r1", &[], &["reviewer"]),
            agent("r2", &[], &["reviewer"]),
        ];
        let seat = ReviewerSpec::Role("reviewer".into());
        let load = busy(&[("r1", 2)]);
        let t = team(&agents, None, &load, &["r2"]);
        assert_eq!(t.reviewer(&seat, None, &[]), None, "r1 full, r2 held");
        let only_r2 = vec!["r2".to_string()];
        let load = busy(&[]);
        let t = team(&agents, Some(&only_r2), &load, &[]);
        assert_eq!(t.reviewer(&seat, None, &[]).map(|a| &a.id[..]), Some("r2"));
    }

    #[test]
    fn taken_reviewers_fill_the_seats_they_fit_and_strangers_fill_the_last() {
        let agents = [
            agent("sec", &[], &["security"]),
            agent("gen", &[], &["reviewer"]),
        ];
        let seats = [
            ReviewerSpec::Role("reviewer".into()),
            ReviewerSpec::Role("security".into()),
            ReviewerSpec::Agent("lead".into()),
        ];
        assert_eq!(open_seats(&seats, &[], &agents).len(), 3);
        assert_eq!(
            ids(&open_seats(&seats, &["sec".into()], &agents)),
            ["role reviewer", "agent lead"]
        );
        // Someone not in agents.yaml (or fitting no seat) takes the last one.
        assert_eq!(
            ids(&open_seats(&seats, &["ghost".into()], &agents)),
            ["role reviewer", "role security"]
        );
        assert!(open_seats(
            &seats,
            &["a".into(), "b".into(), "c".into(), "d".into()],
            &agents
        )
        .is_empty());
    }

    #[test]
    fn a_senior_exists_only_outside_the_round_and_the_author() {
        let agents = [
            agent("author", &[], &["senior"]),
            agent("s1", &[], &["senior"]),
            agent("r", &[], &["reviewer"]),
        ];
        let spec = ReviewerSpec::Role("senior".into());
        assert!(senior_exists(&agents, &spec, Some("author"), &[], None));
        assert!(!senior_exists(
            &agents,
            &spec,
            Some("author"),
            &["s1".into()],
            None
        ));
        let not_s1 = vec!["author".to_string(), "r".to_string()];
        assert!(!senior_exists(
            &agents,
            &spec,
            Some("author"),
            &[],
            Some(&not_s1)
        ));
    }

    #[test]
    fn allowed_lists_and_kinds() {
        assert!(allowed(None, "x"));
        let list = vec!["a".to_string()];
        assert!(allowed(Some(&list), "a"));
        assert!(!allowed(Some(&list), "b"));
        assert!(!allowed(Some(&[]), "a"), "an empty list allows nobody");
        assert!(takes_kind(&agent("any", &[], &[]), "whatever"));
        assert!(!takes_kind(&agent("c", &["code"], &[]), "docs"));
    }
}
