//! From experiences to skills.
//!
//! Each tick, [`create_distill_tasks`] asks the blackboard for experience tags
//! with `distill_threshold` active lessons and creates one `distill` task per
//! tag (`Blackboard::create_distill_task_once` makes that exactly one, even
//! under concurrent ticks or a restart). The distill run posts two outputs,
//! `SKILL.md` and `meta.yaml`, and submits; the task's protocol is
//! [`SKILL_CHECK_PROTOCOL`], so instead of reviewer runs the daemon calls
//! [`check_output`]: a valid skill is installed under
//! `skills/custom/<name>/`, and the service
//! (`ProjectService::apply_distill_check`) marks the lessons `distilled` and
//! the task `done`; an invalid one is refused with an observation naming the defect,
//! and the task goes back for another round (or fails at the limit).

use std::path::{Path, PathBuf};

use super::{parse_skill, SkillError, SkillSource};
use crate::blackboard::{BbResult, Blackboard, Task};
use crate::config::ExperienceConfig;
use crate::home::Home;
use crate::registry::ProjectId;
use crate::review::SKILL_CHECK_PROTOCOL;

/// The output names a distill run must post.
pub const SKILL_OUTPUT: &str = "SKILL.md";
pub const META_OUTPUT: &str = "meta.yaml";

/// Creates the `distill` tasks that are due. Returns the new tasks.
pub async fn create_distill_tasks(bb: &Blackboard, cfg: &ExperienceConfig) -> BbResult<Vec<Task>> {
    let mut created = Vec::new();
    for tag in bb.distill_candidates(cfg.distill_threshold).await? {
        if let Some(t) = bb
            .create_distill_task_once(&tag, cfg.distill_threshold, SKILL_CHECK_PROTOCOL)
            .await?
        {
            tracing::info!(project = bb.project(), task = %t.id, tag, "distill task created");
            created.push(t);
        }
    }
    Ok(created)
}

/// The experience tag a distill task works on (from its `distill:<tag>` tag).
pub fn distilled_tag(task: &Task) -> Option<&str> {
    task.tags
        .iter()
        .find_map(|t| t.strip_prefix(crate::blackboard::DISTILL_TAG_PREFIX))
}

/// The `name` in a `SKILL.md` front matter, if it can be read at all.
fn front_matter_name(md: &str) -> Option<String> {
    let rest = md.strip_prefix("---\n")?;
    let front = &rest[..rest.find("\n---")?];
    front
        .lines()
        .find_map(|l| l.strip_prefix("name:"))
        .map(|n| n.trim().trim_matches(['"', '\'']).to_string())
}

/// Validates a distill run's output as a skill for experience tag `tag`.
/// `outputs` is the task's `outputs/` folder.
pub fn validate_distill_output(
    outputs: &Path,
    tag: &str,
    custom_dir: &Path,
) -> Result<super::Skill, SkillError> {
    // The agent wrote these: a regular file inside outputs/, never a link
    // out of it or a FIFO.
    let read = |name: &str| {
        let file = outputs.join(name);
        crate::safe_fs::open_confined(&file, outputs)
            .and_then(|mut f| {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut f, &mut text).map(|_| text)
            })
            .map_err(|e| SkillError {
            file: outputs.join(name),
            message: format!(
                "cannot read the distill output {name} ({e}); post it with `moziplus bb output --file … --name {name}`"
            ),
        })
    };
    let md = read(SKILL_OUTPUT)?;
    let meta = read(META_OUTPUT)?;
    let name = front_matter_name(&md).unwrap_or_default();
    let dir = custom_dir.join(if name.is_empty() { "?" } else { &name });
    let skill = parse_skill(&name, &md, &meta, &dir, SkillSource::Custom).map_err(|mut e| {
        // Name the file the agent wrote, not the folder it would go to.
        if let Some(f) = e.file.file_name() {
            e.file = outputs.join(f);
        }
        e
    })?;
    if !skill.tags.iter().any(|t| t == tag) {
        return Err(SkillError {
            file: outputs.join(META_OUTPUT),
            message: format!(
                "`tags` must include the distilled tag {tag:?} (it has {:?})",
                skill.tags
            ),
        });
    }
    Ok(skill)
}

/// Writes a checked skill into `skills/custom/<id>/`, replacing an older one
/// of the same id. The files are written into a temporary folder first and
/// renamed into place; they are copied through [`crate::safe_fs`], like they
/// were checked.
fn install(outputs: &Path, dest: &Path) -> std::io::Result<()> {
    let parent = dest.parent().expect("skill folder has a parent");
    std::fs::create_dir_all(parent)?;
    let tmp: PathBuf = parent.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&tmp)?;
    for f in [SKILL_OUTPUT, META_OUTPUT] {
        let mut from = crate::safe_fs::open_confined(&outputs.join(f), outputs)?;
        let mut to = std::fs::File::create(tmp.join(f))?;
        std::io::copy(&mut from, &mut to)?;
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest)?;
    }
    std::fs::rename(&tmp, dest)
}

/// What the daemon's check of a `distill` task's output found (see the
/// module doc); [`crate::service::ProjectService::apply_distill_check`]
/// turns it into the round's verdict.
#[derive(Debug)]
pub enum DistillCheck {
    /// The task has no `distill:<tag>` tag.
    NoTag,
    /// The skill was valid and is installed; the lessons tagged `tag` are
    /// still to be marked distilled.
    Installed { tag: String, skill: super::Skill },
    /// The output is not a valid skill (nothing was installed).
    Rejected(SkillError),
}

/// The daemon's review of a `distill` task in `review` (see the module doc):
/// validates the outputs and installs a valid skill. It writes no
/// blackboard; the verdict is the service's to apply.
pub async fn check_output(
    home: &Home,
    project: &ProjectId,
    task: &Task,
) -> std::io::Result<DistillCheck> {
    let Some(tag) = distilled_tag(task) else {
        return Ok(DistillCheck::NoTag);
    };
    let outputs = home.task_outputs_dir(project, &task.id);
    let custom = home.custom_skills_dir();
    let tag_owned = tag.to_string();
    // File work off the runtime (the files are the agent's).
    let result = tokio::task::spawn_blocking(move || {
        match validate_distill_output(&outputs, &tag_owned, &custom) {
            Ok(skill) => match install(&outputs, &skill.path) {
                Ok(()) => Ok(skill),
                Err(e) => Err(SkillError {
                    file: skill.path.clone(),
                    message: format!("cannot install the skill: {e}"),
                }),
            },
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(match result {
        Ok(skill) => DistillCheck::Installed {
            tag: tag.to_string(),
            skill,
        },
        Err(e) => DistillCheck::Rejected(e),
    })
}
