//! Review rounds: for every task in `review`, the tick applies its
//! protocol to the reviews of the current round — concludes the round when
//! it is decided, starts reviewer runs for open seats, or escalates doubtful
//! verdicts to the senior reviewer. `distill` tasks (protocol `skill-check`)
//! are checked by the daemon itself (`skills::distill::check_output`).
//!
//! Who takes a seat is [`super::choose`]'s pure decision; this module reads
//! the round, acts on the verdict rule (`review::evaluate_round`) and starts
//! the runs.

use serde_json::json;

use super::super::projects::OpenProject;
use super::super::runs::{run_counts, start_run, RunKind};
use super::super::Daemon;
use super::choose::{self, Team};
use super::TickError;
use crate::blackboard::{
    Actor, DecisionStatus, EventLevel, ObservationLevel, Review, Task, TaskStatus,
};
use crate::config::UnstaffedSeat;
use crate::review::{evaluate_round, Protocol, ReviewerSpec, RoundState, SKILL_CHECK_PROTOCOL};
use crate::runtime::health::Warning;
use crate::service::ProjectService;

/// Drives every task in `review` one step (see the module's documentation).
pub(super) async fn conclude_reviews(d: &Daemon, slot: &OpenProject) -> Result<(), TickError> {
    let (bb, service) = (slot.bb(), &slot.service);
    let in_review = bb
        .list_tasks(&crate::blackboard::TaskFilter {
            statuses: vec![TaskStatus::Review],
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let mut unstaffed = Vec::new();
    for task in in_review {
        review_task(d, slot, service, &task, &mut unstaffed).await?;
    }
    // Readiness lists this tick's unstaffed seats, and nothing older.
    d.runtime_health()
        .set_warnings(slot.id.as_str(), "review", unstaffed);
    Ok(())
}

/// One task in `review`: its protocol, then the step its round calls for.
async fn review_task(
    d: &Daemon,
    slot: &OpenProject,
    service: &ProjectService,
    task: &Task,
    unstaffed: &mut Vec<Warning>,
) -> Result<(), TickError> {
    let bb = service.blackboard();
    let name = task.review_protocol.clone().unwrap_or_default();
    if name == SKILL_CHECK_PROTOCOL {
        let check = crate::skills::distill::check_output(d.home(), &slot.id, task).await?;
        service.apply_distill_check(task, check).await?;
        return Ok(());
    }
    let Some(protocol) = d.protocols().get(&name) else {
        let why = format!(
            "unknown review protocol {name:?}; config/review_protocols/ defines: {}",
            d.protocols().names().join(", ")
        );
        service.fail(&task.id, &Actor::daemon(), &why).await?;
        return Ok(());
    };
    if let Some(why) = &protocol.unusable {
        // The team cannot staff this protocol: the task waits in review
        // (said once per round) until agents.yaml is fixed and the daemon
        // restarted; nothing else is held.
        let body = format!(
            "{} waits in review: review protocol {:?} cannot be used ({why}); add the agents it needs to config/agents.yaml and restart the daemon",
            task.id, protocol.name
        );
        let key = format!("{}:{}:{}:protocol", slot.id, task.id, task.round);
        observe_once(d, service, key, ObservationLevel::Warn, task, &body).await?;
        return Ok(());
    }
    let round: Vec<Review> = bb
        .reviews(&task.id)
        .await?
        .into_iter()
        .filter(|r| r.round == task.round)
        .collect();
    match evaluate_round(protocol, &round) {
        RoundState::Concluded(outcome) => {
            let why = format!("protocol {}: {}", protocol.name, outcome.summary);
            conclude_round(slot, service, task, protocol, outcome.approved, &why).await
        }
        RoundState::AwaitingReviewers { .. } => {
            fill_seats(d, slot, task, protocol, &round, unstaffed).await?;
            Ok(())
        }
        RoundState::AwaitingSenior { doubtful } => {
            escalate(d, slot, service, task, protocol, &round, &doubtful).await
        }
    }
}

/// The agents with a review run in flight on `task`.
fn reviewing(d: &Daemon, slot: &OpenProject, task: &Task) -> Vec<String> {
    d.runs()
        .into_iter()
        .filter(|r| r.project == slot.id.as_str() && r.task_id == task.id)
        .map(|r| r.agent)
        .collect()
}

/// Concludes the round the tick judged (`approved → done`, otherwise the
/// next round or `failed` at the protocol's `max_rounds`); a task that moved
/// on meanwhile is left alone.
async fn conclude_round(
    slot: &OpenProject,
    service: &ProjectService,
    task: &Task,
    protocol: &Protocol,
    approved: bool,
    why: &str,
) -> Result<(), TickError> {
    if let Some(c) = service
        .conclude_round_as_read(task, approved, Some(protocol.max_rounds), why)
        .await?
    {
        tracing::info!(project = %slot.id, task = %task.id, conclusion = ?c, "review round concluded");
    }
    Ok(())
}

/// Starts reviewer runs for the round's open seats, while the limits allow.
async fn fill_seats(
    d: &Daemon,
    slot: &OpenProject,
    task: &Task,
    protocol: &Protocol,
    round: &[Review],
    unstaffed: &mut Vec<Warning>,
) -> Result<(), TickError> {
    // Seats already taken by a review or a running review run.
    let mut taken: Vec<String> = round.iter().map(|r| r.reviewer.clone()).collect();
    taken.extend(reviewing(d, slot, task));
    for spec in choose::open_seats(&protocol.reviewers, &taken, &d.agents().agents) {
        let author = task.claimed_by.as_deref();
        let allowed = slot.settings.agents.as_deref();
        let mut seat = spec.clone();
        if !choose::senior_exists(&d.agents().agents, spec, author, &taken, allowed) {
            // Nobody but the author could take this seat: say so on the
            // task, once per round, list it in readiness, and apply
            // `review.unstaffed_seat` (issue 23, finding 8).
            match note_unstaffed(d, slot, task, protocol, spec, &taken, unstaffed).await? {
                Some(stand_in) => seat = stand_in,
                None => continue,
            }
        }
        if !start_reviewer(d, slot, task, &seat, &taken).await? {
            break;
        }
        // start_reviewer records whom it started in `d.runs()`.
        taken = reviewing(d, slot, task)
            .into_iter()
            .chain(round.iter().map(|r| r.reviewer.clone()))
            .collect();
    }
    Ok(())
}

/// A seat of `task`'s round that no agent but its author fits: a warning
/// observation on the task (once per round), a readiness warning (every
/// tick it lasts), then `review.unstaffed_seat`:
/// - `wait`: nothing more;
/// - `fail`: the task fails with that reason;
/// - `decide`: an operator decision is proposed (once per round); approved,
///   the round concludes approved without the seat; rejected or expired,
///   the task fails;
/// - `role:NAME`: returns that role as the seat to fill, when an agent of
///   it other than the author and this round's reviewers exists.
async fn note_unstaffed(
    d: &Daemon,
    slot: &OpenProject,
    task: &Task,
    protocol: &Protocol,
    spec: &ReviewerSpec,
    taken: &[String],
    unstaffed: &mut Vec<Warning>,
) -> Result<Option<ReviewerSpec>, TickError> {
    let author = task.claimed_by.as_deref().unwrap_or("its author");
    let policy = slot
        .config
        .review
        .unstaffed_policy()
        .unwrap_or(UnstaffedSeat::Wait);
    if let UnstaffedSeat::Role(role) = &policy {
        let stand_in = ReviewerSpec::Role(role.clone());
        if choose::senior_exists(
            &d.agents().agents,
            &stand_in,
            task.claimed_by.as_deref(),
            taken,
            slot.settings.agents.as_deref(),
        ) {
            let key = format!("{}:{}:{}:stand-in:{spec}", slot.id, task.id, task.round);
            let body = format!(
                "{} round {}: no agent but {author} fits seat {spec} of review protocol {:?}; \
                 review.unstaffed_seat gives the seat to {stand_in}",
                task.id, task.round, protocol.name
            );
            observe_once(d, &slot.service, key, ObservationLevel::Info, task, &body).await?;
            return Ok(Some(stand_in));
        }
    }
    let body = format!(
        "{} is waiting for a reviewer other than {author}: no other agent of config/agents.yaml \
         allowed on this project fits seat {spec} of review protocol {:?}; add one, or change \
         the task's protocol",
        task.id, protocol.name
    );
    unstaffed.push(Warning {
        project: slot.id.to_string(),
        kind: "review".into(),
        subject: task.id.clone(),
        reason: body.clone(),
        since_ms: chrono::Utc::now().timestamp_millis(),
    });
    let service = &slot.service;
    let key = format!("{}:{}:{}:unstaffed:{spec}", slot.id, task.id, task.round);
    observe_once(d, service, key, ObservationLevel::Warn, task, &body).await?;
    match policy {
        UnstaffedSeat::Fail => {
            service.fail(&task.id, &Actor::daemon(), &body).await?;
        }
        UnstaffedSeat::Decide => {
            decide_unstaffed(slot, service, task, protocol, spec).await?;
        }
        UnstaffedSeat::Wait | UnstaffedSeat::Role(_) => {}
    }
    Ok(None)
}

/// An observation on `task`, written only the first time `key` is noted
/// (the keys carry the round: said once per round, not on every tick).
async fn observe_once(
    d: &Daemon,
    service: &ProjectService,
    key: String,
    level: ObservationLevel,
    task: &Task,
    body: &str,
) -> Result<(), TickError> {
    if d.runtime_health().note_once(key) {
        service
            .observe(level, &Actor::daemon(), Some(&task.id), body)
            .await?;
    }
    Ok(())
}

/// `review.unstaffed_seat: decide`: the round's proposal for the operator
/// (one per task and round, found again by its question), and its outcome
/// once settled.
async fn decide_unstaffed(
    slot: &OpenProject,
    service: &ProjectService,
    task: &Task,
    protocol: &Protocol,
    spec: &ReviewerSpec,
) -> Result<(), TickError> {
    let question = format!(
        "{} round {}: review seat {spec} of protocol {:?} has no reviewer but the author; \
         approve the round without it?",
        task.id, task.round, protocol.name
    );
    service.expire_decisions().await?;
    let existing = service
        .decisions(None, 1000)
        .await?
        .into_iter()
        .find(|x| x.task_id.as_deref() == Some(task.id.as_str()) && x.question == question);
    let Some(decision) = existing else {
        // A day to answer; unanswered, the proposal is rejected and the
        // task fails with the reason.
        let expiry = std::time::Duration::from_secs(24 * 3600);
        let proposed = service
            .propose(
                Some(task.id.clone()),
                question,
                "approve the round without this seat".into(),
                "no agent other than the author fits the seat (review.unstaffed_seat: decide)"
                    .into(),
                expiry,
                &Actor::daemon(),
            )
            .await?;
        tracing::info!(project = %slot.id, task = %task.id, decision = proposed.id, "unstaffed review seat: decision proposed");
        return Ok(());
    };
    let id = crate::blackboard::ids::format_decision_id(decision.id);
    match decision.status {
        DecisionStatus::Proposed => Ok(()),
        DecisionStatus::Approved => {
            let why = format!(
                "protocol {}: seat {spec} left empty by the operator's decision {id}",
                protocol.name
            );
            conclude_round(slot, service, task, protocol, true, &why).await
        }
        _ => {
            let why = format!(
                "{}: the operator did not approve the round without seat {spec} (decision {id} {})",
                task.id,
                decision.status.as_str()
            );
            service.fail(&task.id, &Actor::daemon(), &why).await?;
            Ok(())
        }
    }
}

/// Verdicts below the confidence threshold go to the senior reviewer; when
/// nobody could ever answer, the verdicts stand as given.
async fn escalate(
    d: &Daemon,
    slot: &OpenProject,
    service: &ProjectService,
    task: &Task,
    protocol: &Protocol,
    round: &[Review],
    doubtful: &[String],
) -> Result<(), TickError> {
    if !reviewing(d, slot, task).is_empty() {
        return Ok(());
    }
    let spec = protocol
        .senior_reviewer
        .as_ref()
        .expect("AwaitingSenior needs one");
    let taken: Vec<String> = round.iter().map(|r| r.reviewer.clone()).collect();
    if !choose::senior_exists(
        &d.agents().agents,
        spec,
        task.claimed_by.as_deref(),
        &taken,
        slot.settings.agents.as_deref(),
    ) {
        return let_verdicts_stand(slot, service, task, protocol, round, spec).await;
    }
    if start_reviewer(d, slot, task, spec, &taken).await? {
        let body = format!(
            "{} round {}: confidence of {} below {:.2}; escalated to the senior reviewer ({spec})",
            task.id,
            task.round,
            doubtful.join(", "),
            protocol.confidence_threshold
        );
        service
            .observe(
                ObservationLevel::Info,
                &Actor::daemon(),
                Some(&task.id),
                &body,
            )
            .await?;
        service.blackboard().record_event(
            EventLevel::Attention,
            "review.escalated",
            Some(&task.id),
            &Actor::daemon(),
            json!({ "round": task.round, "doubtful": doubtful, "threshold": protocol.confidence_threshold }),
        )
        .await?;
    }
    Ok(())
}

/// No senior reviewer other than this round's reviewers exists: the round
/// is judged without one, and an observation says why.
async fn let_verdicts_stand(
    slot: &OpenProject,
    service: &ProjectService,
    task: &Task,
    protocol: &Protocol,
    round: &[Review],
    spec: &ReviewerSpec,
) -> Result<(), TickError> {
    let mut lenient = protocol.clone();
    lenient.senior_reviewer = None;
    let RoundState::Concluded(o) = evaluate_round(&lenient, round) else {
        return Ok(());
    };
    let why = format!(
        "protocol {}: {} (no senior reviewer ({spec}) other than this round's reviewers is available; low-confidence verdicts stand)",
        protocol.name, o.summary
    );
    service
        .observe(
            ObservationLevel::Warn,
            &Actor::daemon(),
            Some(&task.id),
            &why,
        )
        .await?;
    conclude_round(slot, service, task, protocol, o.approved, &why).await
}

/// Starts a review run on `task` by the agent [`Team::reviewer`] picks for
/// `spec` (not its author, no seat this round (`taken`), allowed on the
/// project, under its limits). Returns false when the limits are full or
/// nobody fits right now.
async fn start_reviewer(
    d: &Daemon,
    slot: &OpenProject,
    task: &Task,
    spec: &ReviewerSpec,
    taken: &[String],
) -> Result<bool, TickError> {
    let bb = slot.bb();
    let guard = d.schedule_lock_owned().await;
    let (running, per_project, per_agent) = run_counts(d);
    let project_cap = slot
        .settings
        .max_global_agents
        .unwrap_or(d.config().daemon.max_global_agents) as usize;
    if running >= d.config().daemon.max_global_agents as usize
        || *per_project.get(slot.id.as_str()).unwrap_or(&0) >= project_cap
    {
        return Ok(false);
    }
    let team = Team {
        agents: &d.agents().agents,
        allowed: slot.settings.agents.as_deref(),
        busy: &per_agent,
        max_per_agent: slot.config.daemon.max_per_agent as usize,
        held: |agent: &str| d.runtime_health().held(slot.id.as_str(), agent, bb.now()),
    };
    let Some(agent) = team
        .reviewer(spec, task.claimed_by.as_deref(), taken)
        .cloned()
    else {
        return Ok(false);
    };
    // On a store shared by several daemons: the reviewer's place across
    // the cluster (see `ticker::start_page`).
    if let Some(m) = d.membership() {
        let room = m
            .take_run_slot(
                slot.id.as_str(),
                &task.id,
                &agent.id,
                slot.config.daemon.max_per_agent,
                d.config().cluster.max_agents,
            )
            .await?;
        if room != super::super::cluster::Room::Taken {
            return Ok(false);
        }
    }
    // Session row → spawn → supervision in a task the tick's time limit
    // cannot cancel (see step 3 of `ticker::tick_project`).
    let (d, bb, task) = (d.clone(), bb.clone(), task.clone());
    let timeout = slot.config.daemon.task_timeout;
    tokio::spawn(async move {
        start_run(&d, &bb, &task, &agent, RunKind::Review, timeout).await;
        if let Some(m) = d.membership() {
            super::free_unless_running(&d, m, bb.project(), &task.id, &agent.id).await;
        }
        drop(guard);
    })
    .await?;
    Ok(true)
}
