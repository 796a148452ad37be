//! The daemon's verdict on a `distill` task (protocol `skill-check`): what
//! [`crate::skills::distill::check_output`] found becomes the lessons'
//! bookkeeping, an observation saying why, and the round's conclusion.

use super::{ProjectService, ServiceResult};
use crate::blackboard::{Actor, ObservationLevel, Task};
use crate::skills::distill::DistillCheck;

impl ProjectService {
    /// Applies the distill check of `task`'s current round: an installed
    /// skill marks its lessons distilled and approves the round; a rejected
    /// output is refused with a warning naming the defect (another round, or
    /// `failed` at the limit); a task without a `distill:<tag>` tag is
    /// refused. A task that moved on meanwhile is left alone.
    pub async fn apply_distill_check(&self, task: &Task, check: DistillCheck) -> ServiceResult<()> {
        let daemon = Actor::daemon();
        let root = self.home.root();
        let (approved, why) = match check {
            DistillCheck::NoTag => (
                false,
                format!(
                    "{} has no distill:<tag> tag; cannot tell which lessons it distills",
                    task.id
                ),
            ),
            DistillCheck::Installed { tag, skill } => {
                let ids = self
                    .mark_distilled(&tag, task.created_at, &task.id, &skill.id)
                    .await?;
                let why = format!(
                    "skill {} installed at {} from {} experience(s) tagged {tag}",
                    skill.id,
                    skill
                        .path
                        .strip_prefix(root)
                        .unwrap_or(&skill.path)
                        .display(),
                    ids.len()
                );
                self.observe(ObservationLevel::Info, &daemon, Some(&task.id), &why)
                    .await?;
                (true, why)
            }
            DistillCheck::Rejected(e) => {
                let rel = e.file.strip_prefix(root).unwrap_or(&e.file).display();
                let why = format!(
                    "distill output rejected: {rel}: {}. Fix it and post SKILL.md and meta.yaml again.",
                    e.message
                );
                self.observe(ObservationLevel::Warn, &daemon, Some(&task.id), &why)
                    .await?;
                (false, why)
            }
        };
        self.conclude_round_as_read(task, approved, None, &why)
            .await?;
        Ok(())
    }
}
