//! Records about tasks: outputs (with their artifacts), comments, reviews,
//! decisions, observations and experiences.

use std::time::Duration;

use super::{artifacts, rules, NewArtifact, ProjectService, ServiceError, ServiceResult};
use crate::blackboard::{
    Actor, Comment, CommentType, Decision, DecisionStatus, Experience, ExperienceStatus,
    NewDecision, NewExperience, Observation, ObservationLevel, Output, Review, Verdict,
};

impl ProjectService {
    /// Posts an output of the current round: a summary with inline `text`,
    /// or with an `artifact` stored under `artifacts/<task>/outputs/`. Only
    /// the holder may post; that is checked before anything is written to
    /// disk, and again under the write lock.
    pub async fn post_output(
        &self,
        id: &str,
        actor: &Actor,
        summary: &str,
        text: Option<&str>,
        artifact: Option<NewArtifact>,
    ) -> ServiceResult<Output> {
        if artifact.is_some() && text.is_some() {
            return Err(ServiceError::Invalid(
                "pass either --file or --text, not both".into(),
            ));
        }
        crate::blackboard::require_holder(&self.bb.task(id).await?, actor, "post an output to")?;
        let stored = match artifact {
            None => None,
            Some(a) => {
                let base = self.home.task_outputs_dir(&self.project, id);
                Some(artifacts::store(&base, a)?)
            }
        };
        let output = self
            .bb
            .add_output(id, actor, summary, stored.as_deref(), text)
            .await?;
        self.committed(output)
    }

    /// Comments on a task (`system` comments are the daemon's only).
    pub async fn comment(
        &self,
        id: &str,
        actor: &Actor,
        comment_type: CommentType,
        body: &str,
    ) -> ServiceResult<Comment> {
        rules::may_comment(actor, comment_type)?;
        let comment = self.bb.add_comment(id, actor, comment_type, body).await?;
        self.committed(comment)
    }

    /// Reviews a task in `review` (not one's own; once per round).
    pub async fn review(
        &self,
        id: &str,
        actor: &Actor,
        verdict: Verdict,
        confidence: f64,
        body: &str,
    ) -> ServiceResult<Review> {
        let review = self
            .bb
            .add_review(id, actor, verdict, confidence, body)
            .await?;
        self.committed(review)
    }

    /// Records a settled decision, or proposes one for a person.
    pub async fn decide(&self, new: NewDecision, actor: &Actor) -> ServiceResult<Decision> {
        let decision = self.bb.add_decision(new, actor).await?;
        self.committed(decision)
    }

    /// Proposes a decision for a person to approve or reject (the gateway's
    /// high-risk tool calls): unanswered, it is rejected `expires_in` from
    /// now.
    pub async fn propose(
        &self,
        task_id: Option<String>,
        question: String,
        decision: String,
        rationale: String,
        expires_in: Duration,
        actor: &Actor,
    ) -> ServiceResult<Decision> {
        let millis = i64::try_from(expires_in.as_millis()).unwrap_or(i64::MAX);
        let new = NewDecision {
            task_id,
            question,
            decision,
            rationale,
            settled: false,
            expires_at: Some(self.bb.now().saturating_add(millis)),
        };
        self.decide(new, actor).await
    }

    /// Rejects the proposals past their expiry (the daemon's ticks, and
    /// [`decision`](Self::decision) before it shows one); returns how many.
    pub async fn expire_decisions(&self) -> ServiceResult<u64> {
        let expired = self.bb.expire_decisions().await?;
        if expired > 0 {
            self.notifier.notify();
        }
        Ok(expired)
    }

    /// A proposal expiring `secs` from now.
    pub fn expiry_in(&self, secs: u64) -> ServiceResult<crate::blackboard::Millis> {
        let secs = super::rules::client_secs("a decision's expiry (expires_secs)", secs, 1)?;
        Ok(self.bb.now() + secs as crate::blackboard::Millis * 1000)
    }

    /// Approves or rejects a proposed decision (operators and the daemon).
    pub async fn settle_decision(
        &self,
        id: i64,
        approve: bool,
        actor: &Actor,
        rationale: &str,
    ) -> ServiceResult<Decision> {
        rules::require_privileged(actor, || {
            format!(
                "agent {} may not approve or reject decisions; a person must",
                actor.name
            )
        })?;
        let decision = self.bb.decide(id, approve, actor, rationale).await?;
        self.committed(decision)
    }

    /// One decision as it stands now: a proposal past its expiry is
    /// rejected first (the daemon does the same on its ticks; a caller must
    /// never see an expired proposal as still open).
    pub async fn decision(&self, id: i64) -> ServiceResult<Decision> {
        let d = self.bb.decision(id).await?;
        if d.status == DecisionStatus::Proposed && d.expires_at.is_some_and(|e| e <= self.bb.now())
        {
            self.expire_decisions().await?;
            return Ok(self.bb.decision(id).await?);
        }
        Ok(d)
    }

    pub async fn decisions(
        &self,
        status: Option<DecisionStatus>,
        limit: i64,
    ) -> ServiceResult<Vec<Decision>> {
        Ok(self.bb.decisions(status, limit).await?)
    }

    /// Waits until decision `id` is settled and returns it (approved or
    /// rejected); [`ServiceError::Timeout`] after `timeout`.
    pub async fn wait_decision(&self, id: i64, timeout: Duration) -> ServiceResult<Decision> {
        super::rules::client_secs("a decision wait's timeout", timeout.as_secs(), 0)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = self.decision(id).await?;
            if d.status != DecisionStatus::Proposed {
                return Ok(d);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::Timeout(format!(
                    "decision D{id} is still proposed after {} s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(super::DECISION_POLL).await;
        }
    }

    /// Records an observation (info, warn, alert); returns its id.
    pub async fn observe(
        &self,
        level: ObservationLevel,
        actor: &Actor,
        task: Option<&str>,
        body: &str,
    ) -> ServiceResult<i64> {
        let id = self.bb.add_observation(level, actor, task, body).await?;
        self.committed(id)
    }

    /// Newest observations first, of one level or all.
    pub async fn observations(
        &self,
        level: Option<ObservationLevel>,
        limit: i64,
    ) -> ServiceResult<Vec<Observation>> {
        Ok(self.bb.observations_at(level, limit).await?)
    }

    /// Records a lesson learned.
    pub async fn add_experience(
        &self,
        new: NewExperience,
        actor: &Actor,
    ) -> ServiceResult<Experience> {
        let e = self.bb.add_experience(new, actor).await?;
        self.committed(e)
    }

    /// Marks the active experiences tagged `tag`, created no later than
    /// `until`, as distilled into `skill` by `task` (the distill check after
    /// installing it); returns their ids.
    pub async fn mark_distilled(
        &self,
        tag: &str,
        until: crate::blackboard::Millis,
        task: &str,
        skill: &str,
    ) -> ServiceResult<Vec<i64>> {
        let ids = self.bb.mark_distilled(tag, until, task, skill).await?;
        self.committed(ids)
    }

    pub async fn experiences(
        &self,
        status: Option<ExperienceStatus>,
        tag: Option<&str>,
        limit: i64,
    ) -> ServiceResult<Vec<Experience>> {
        Ok(self.bb.experiences(status, tag, limit).await?)
    }
}
