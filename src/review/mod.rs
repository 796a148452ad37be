//! Review protocols and the verdict rule.
//!
//! [`protocol`] loads `config/review_protocols/*.yaml`. [`evaluate_round`] is
//! the pure rule that turns the reviews of one round into a state: waiting
//! for reviewers, waiting for the senior reviewer, or concluded. The daemon
//! (`daemon::ticker::conclude_reviews`) starts the runs and applies the
//! conclusion through `ProjectService::conclude_round_as_read`.
//!
//! The panel of a round is its first *N* reviews (N = seats in the protocol),
//! in the order they were written; a review written after the panel is full
//! is the senior reviewer's answer to an escalation. The daemon only starts a
//! senior run once the panel is full and one of its verdicts is below the
//! confidence threshold, and the senior's verdict then stands in for every
//! low-confidence one. A protocol without `senior_reviewer` keeps
//! low-confidence verdicts as they are.

pub mod protocol;

pub use protocol::{PassRule, Protocol, ProtocolError, Protocols, ReviewerSpec};

use crate::blackboard::{Review, Verdict};

/// The name of the built-in protocol of `distill` tasks: the daemon itself
/// checks the skill they produce (no reviewer runs).
pub const SKILL_CHECK_PROTOCOL: &str = "skill-check";

/// Where a review round stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundState {
    /// `open_seats` panel seats have no review yet.
    AwaitingReviewers { open_seats: usize },
    /// Panel complete; these reviewers' verdicts are below the threshold and
    /// wait for the senior reviewer.
    AwaitingSenior { doubtful: Vec<String> },
    /// The round is decided.
    Concluded(RoundOutcome),
}

/// How a round ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundOutcome {
    pub approved: bool,
    /// Whether a senior verdict replaced low-confidence ones.
    pub escalated: bool,
    /// One line per counted verdict, for the event, comment and observation.
    pub summary: String,
}

/// Applies `protocol` to the reviews of one round (any order; sorted by id here).
pub fn evaluate_round(protocol: &Protocol, reviews: &[Review]) -> RoundState {
    let mut reviews: Vec<&Review> = reviews.iter().collect();
    reviews.sort_by_key(|r| r.id);
    let seats = protocol.reviewers.len();
    if reviews.len() < seats {
        return RoundState::AwaitingReviewers {
            open_seats: seats - reviews.len(),
        };
    }
    let (panel, after) = reviews.split_at(seats);
    let doubtful: Vec<&&Review> = panel
        .iter()
        .filter(|r| r.confidence < protocol.confidence_threshold)
        .collect();
    let senior = after.first();
    if !doubtful.is_empty() && protocol.senior_reviewer.is_some() && senior.is_none() {
        return RoundState::AwaitingSenior {
            doubtful: doubtful.iter().map(|r| r.reviewer.clone()).collect(),
        };
    }
    let escalated = !doubtful.is_empty() && senior.is_some();
    let mut approvals = 0;
    let mut lines = Vec::new();
    for r in panel {
        let low = r.confidence < protocol.confidence_threshold;
        let (verdict, note) = match (low, senior) {
            (true, Some(s)) => (
                s.verdict,
                format!(
                    " (below {:.2}; senior {} decided)",
                    protocol.confidence_threshold, s.reviewer
                ),
            ),
            _ => (r.verdict, String::new()),
        };
        if verdict == Verdict::Approve {
            approvals += 1;
        }
        lines.push(format!(
            "{} {} {:.2}{note}",
            r.reviewer, r.verdict, r.confidence
        ));
    }
    if let (true, Some(s)) = (escalated, senior) {
        lines.push(format!(
            "senior {} {} {:.2}",
            s.reviewer, s.verdict, s.confidence
        ));
    }
    let approved = match protocol.pass_rule {
        PassRule::AllApprove => approvals == seats,
        PassRule::Majority => approvals * 2 > seats,
    };
    RoundState::Concluded(RoundOutcome {
        approved,
        escalated,
        summary: format!(
            "{}: {} ({approvals} of {seats} approve)",
            protocol.pass_rule.as_str(),
            lines.join("; ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(seats: usize, rule: PassRule, senior: bool) -> Protocol {
        Protocol {
            name: "p".into(),
            applies_to: vec!["code".into()],
            reviewers: vec![ReviewerSpec::Role("reviewer".into()); seats],
            pass_rule: rule,
            max_rounds: 3,
            confidence_threshold: 0.7,
            senior_reviewer: senior.then(|| ReviewerSpec::Role("senior".into())),
            debate: false,
            file: "p.yaml".into(),
            unusable: None,
        }
    }

    fn review(id: i64, who: &str, verdict: Verdict, confidence: f64) -> Review {
        Review {
            id,
            task_id: "T-0001".into(),
            reviewer: who.into(),
            protocol: Some("p".into()),
            round: 1,
            verdict,
            confidence,
            body: String::new(),
            created_at: 0,
        }
    }

    fn approved(s: RoundState) -> bool {
        match s {
            RoundState::Concluded(o) => o.approved,
            other => panic!("not concluded: {other:?}"),
        }
    }

    #[test]
    fn waits_for_every_seat() {
        let p = protocol(2, PassRule::AllApprove, true);
        let one = [review(1, "a", Verdict::Approve, 0.9)];
        assert_eq!(
            evaluate_round(&p, &one),
            RoundState::AwaitingReviewers { open_seats: 1 }
        );
        assert_eq!(
            evaluate_round(&p, &[]),
            RoundState::AwaitingReviewers { open_seats: 2 }
        );
    }

    #[test]
    fn all_approve_needs_every_seat() {
        let p = protocol(2, PassRule::AllApprove, true);
        let yes = [
            review(1, "a", Verdict::Approve, 0.9),
            review(2, "b", Verdict::Approve, 0.8),
        ];
        assert!(approved(evaluate_round(&p, &yes)));
        let no = [
            review(1, "a", Verdict::Approve, 0.9),
            review(2, "b", Verdict::Revise, 0.8),
        ];
        assert!(!approved(evaluate_round(&p, &no)));
    }

    #[test]
    fn majority_needs_more_than_half() {
        let p = protocol(3, PassRule::Majority, false);
        let two = [
            review(1, "a", Verdict::Approve, 0.9),
            review(2, "b", Verdict::Reject, 0.9),
            review(3, "c", Verdict::Approve, 0.9),
        ];
        assert!(approved(evaluate_round(&p, &two)));
        let p2 = protocol(2, PassRule::Majority, false);
        let half = [
            review(1, "a", Verdict::Approve, 0.9),
            review(2, "b", Verdict::Reject, 0.9),
        ];
        assert!(!approved(evaluate_round(&p2, &half)));
    }

    #[test]
    fn low_confidence_waits_for_the_senior_whose_verdict_stands_in() {
        let p = protocol(2, PassRule::AllApprove, true);
        let panel = [
            review(1, "a", Verdict::Approve, 0.9),
            review(2, "b", Verdict::Approve, 0.5),
        ];
        assert_eq!(
            evaluate_round(&p, &panel),
            RoundState::AwaitingSenior {
                doubtful: vec!["b".into()]
            }
        );
        let mut with_senior = panel.to_vec();
        with_senior.push(review(3, "s", Verdict::Revise, 0.95));
        match evaluate_round(&p, &with_senior) {
            RoundState::Concluded(o) => {
                assert!(!o.approved);
                assert!(o.escalated);
                assert!(o.summary.contains("senior s revise"), "{}", o.summary);
            }
            other => panic!("{other:?}"),
        }
        // Exactly at the threshold is confident enough.
        let edge = [
            review(1, "a", Verdict::Approve, 0.9),
            review(2, "b", Verdict::Approve, 0.7),
        ];
        assert!(approved(evaluate_round(&p, &edge)));
    }

    #[test]
    fn without_a_senior_low_confidence_verdicts_stand() {
        let p = protocol(1, PassRule::AllApprove, false);
        let low = [review(1, "a", Verdict::Approve, 0.2)];
        assert!(approved(evaluate_round(&p, &low)));
    }
}
