//! Skills: folders with a `SKILL.md` and a `meta.yaml`.
//!
//! Three sources, later wins for the same id: `skills/builtins/` (shipped),
//! `skills/custom/` (distilled or written by people), and a project's own
//! `projects/<id>/skills/`. `SKILL.md` opens with OpenClaw's front matter
//! (`name`, `description`) so OpenClaw agents can load the same folders;
//! its body has `## When to use`, `## Steps` and `## Pitfalls` sections.
//! `meta.yaml` carries `version`, `tags` (how briefs find a skill) and
//! `source_experiences`.
//!
//! [`distill`] turns experiences into `distill` tasks and their output into
//! custom skills.

pub mod distill;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::home::Home;
use crate::registry::ProjectId;

/// Where a skill comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkillSource {
    Builtin,
    Custom,
    Project,
}

/// One loaded skill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skill {
    /// The folder name (and the front matter's `name`).
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub version: u32,
    pub source_experiences: Vec<i64>,
    pub source: SkillSource,
    /// The skill's folder.
    pub path: PathBuf,
}

/// A skill folder that does not follow the format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct SkillError {
    pub file: PathBuf,
    pub message: String,
}

/// `SKILL.md`'s front matter. Other keys OpenClaw knows (e.g. `metadata`)
/// are allowed and ignored.
#[derive(Debug, Deserialize)]
struct FrontMatter {
    name: Option<String>,
    description: Option<String>,
}

/// `meta.yaml`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SkillMeta {
    pub version: u32,
    pub tags: Vec<String>,
    #[serde(default)]
    pub source_experiences: Vec<i64>,
}

/// The sections a `SKILL.md` body must have.
pub const REQUIRED_SECTIONS: [&str; 3] = ["## When to use", "## Steps", "## Pitfalls"];

/// Whether `id` can name a skill folder.
pub fn is_valid_skill_id(id: &str) -> bool {
    crate::blackboard::ids::is_valid_project_id(id)
}

/// Checks a skill's two files; `dir_name` is the folder it lives (or will
/// live) in. `file` is only used to name the files in errors.
///
/// Over 100 lines on purpose: one check per front-matter field, each with
/// its own message, in the order a skill author reads the file.
pub fn parse_skill(
    dir_name: &str,
    skill_md: &str,
    meta_yaml: &str,
    dir: &Path,
    source: SkillSource,
) -> Result<Skill, SkillError> {
    let md_file = dir.join("SKILL.md");
    let err = |file: &Path, message: String| SkillError {
        file: file.to_path_buf(),
        message,
    };
    let rest = skill_md.strip_prefix("---\n").ok_or_else(|| {
        err(
            &md_file,
            "must start with a `---` front matter line (name, description)".into(),
        )
    })?;
    let end = rest
        .find("\n---\n")
        .or_else(|| rest.strip_suffix("\n---").map(|r| r.len()))
        .ok_or_else(|| {
            err(
                &md_file,
                "front matter is not closed by a `---` line".into(),
            )
        })?;
    let (front, body) = (&rest[..end], &rest[end..]);
    let fm: FrontMatter =
        serde_yaml_ng::from_str(front).map_err(|e| err(&md_file, format!("front matter: {e}")))?;
    let name = fm.name.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
        err(
            &md_file,
            "front matter key `name` is missing or empty".into(),
        )
    })?;
    if name != dir_name {
        return Err(err(
            &md_file,
            format!("front matter `name` is {name:?} but the skill's folder is {dir_name:?}; they must match"),
        ));
    }
    if !is_valid_skill_id(&name) {
        return Err(err(
            &md_file,
            format!("front matter `name` {name:?} is not a valid skill id (lowercase letters, digits, - _; up to 64)"),
        ));
    }
    let description = fm
        .description
        .filter(|d| !d.trim().is_empty())
        .ok_or_else(|| {
            err(
                &md_file,
                "front matter key `description` is missing or empty".into(),
            )
        })?;
    if description.len() > 1024 {
        return Err(err(
            &md_file,
            format!(
                "front matter `description` is {} bytes; the limit is 1024",
                description.len()
            ),
        ));
    }
    for section in REQUIRED_SECTIONS {
        if !body.lines().any(|l| l.trim_end() == section) {
            return Err(err(
                &md_file,
                format!("missing the section heading `{section}`"),
            ));
        }
    }
    let meta_file = dir.join("meta.yaml");
    let meta: SkillMeta =
        serde_yaml_ng::from_str(meta_yaml).map_err(|e| err(&meta_file, e.to_string()))?;
    if meta.version == 0 {
        return Err(err(&meta_file, "`version` must be 1 or more".into()));
    }
    if meta.tags.is_empty() {
        return Err(err(&meta_file, "`tags` must list at least one tag".into()));
    }
    if let Some(t) = meta
        .tags
        .iter()
        .find(|t| !crate::blackboard::ids::is_valid_tag(t))
    {
        return Err(err(&meta_file, format!("`tags`: invalid tag {t:?}")));
    }
    Ok(Skill {
        id: name.clone(),
        name,
        description: description.trim().to_string(),
        tags: meta.tags,
        version: meta.version,
        source_experiences: meta.source_experiences,
        source,
        path: dir.to_path_buf(),
    })
}

/// Reads one skill folder.
pub fn load_skill(dir: &Path, source: SkillSource) -> Result<Skill, SkillError> {
    let read = |f: &str| {
        crate::safe_fs::read_to_string(&dir.join(f)).map_err(|e| SkillError {
            file: dir.join(f),
            message: format!("cannot read: {e}"),
        })
    };
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_skill(
        &dir_name,
        &read("SKILL.md")?,
        &read("meta.yaml")?,
        dir,
        source,
    )
}

/// A folder's skills, the broken ones skipped and returned beside them.
fn load_folder_skipping(
    dir: &Path,
    source: SkillSource,
    into: &mut BTreeMap<String, Skill>,
    broken: &mut Vec<SkillError>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            broken.push(SkillError {
                file: dir.to_path_buf(),
                message: format!("cannot read: {e}"),
            });
            return;
        }
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    // Files beside the folders (a README) are not skills, as before.
    for d in dirs.into_iter().filter(|d| d.is_dir()) {
        match load_skill(&d, source) {
            Ok(skill) => {
                into.insert(skill.id.clone(), skill);
            }
            Err(e) => broken.push(e),
        }
    }
}

/// Every skill visible to `project` that loads, and the broken ones,
/// skipped (issue 23, finding 6: one broken project skill failed every
/// task of the project). Briefs use this; `serve`'s start checks and
/// `doctor` use [`list_skills`], which refuses a broken skill.
pub fn list_skills_skipping_broken(
    home: &Home,
    project: Option<&ProjectId>,
) -> (Vec<Skill>, Vec<SkillError>) {
    let (mut by_id, mut broken) = (BTreeMap::new(), Vec::new());
    load_folder_skipping(
        &home.builtin_skills_dir(),
        SkillSource::Builtin,
        &mut by_id,
        &mut broken,
    );
    load_folder_skipping(
        &home.custom_skills_dir(),
        SkillSource::Custom,
        &mut by_id,
        &mut broken,
    );
    if let Some(p) = project {
        load_folder_skipping(
            &home.project_skills_dir(p),
            SkillSource::Project,
            &mut by_id,
            &mut broken,
        );
    }
    (by_id.into_values().collect(), broken)
}

fn load_folder(
    dir: &Path,
    source: SkillSource,
    into: &mut BTreeMap<String, Skill>,
) -> Result<(), SkillError> {
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(SkillError {
                file: dir.to_path_buf(),
                message: format!("cannot read: {e}"),
            })
        }
    };
    dirs.sort();
    for d in dirs {
        let skill = load_skill(&d, source)?;
        into.insert(skill.id.clone(), skill);
    }
    Ok(())
}

/// Every skill visible to `project` (or only the global ones), sorted by id:
/// builtins, overridden by custom skills, overridden by the project's own.
/// A malformed skill folder is an error naming its file.
pub fn list_skills(home: &Home, project: Option<&ProjectId>) -> Result<Vec<Skill>, SkillError> {
    let mut by_id = BTreeMap::new();
    load_folder(&home.builtin_skills_dir(), SkillSource::Builtin, &mut by_id)?;
    load_folder(&home.custom_skills_dir(), SkillSource::Custom, &mut by_id)?;
    if let Some(p) = project {
        load_folder(
            &home.project_skills_dir(p),
            SkillSource::Project,
            &mut by_id,
        )?;
    }
    Ok(by_id.into_values().collect())
}

/// The skills sharing at least one tag with `tags`, most shared tags first
/// (then by id), at most `limit`.
pub fn matching<'a>(skills: &'a [Skill], tags: &[String], limit: usize) -> Vec<&'a Skill> {
    let mut scored: Vec<(usize, &Skill)> = skills
        .iter()
        .map(|s| (s.tags.iter().filter(|t| tags.contains(t)).count(), s))
        .filter(|(n, _)| *n > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    scored.into_iter().take(limit).map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD: &str = "---\nname: retry-backoff\ndescription: Retry flaky calls with backoff.\n---\n\n# Retry\n\n## When to use\nx\n\n## Steps\n1. y\n\n## Pitfalls\n- z\n";
    const META: &str = "version: 1\ntags: [http]\nsource_experiences: [1, 2]\n";

    fn parse(md: &str, meta: &str) -> Result<Skill, SkillError> {
        parse_skill(
            "retry-backoff",
            md,
            meta,
            Path::new("skills/custom/retry-backoff"),
            SkillSource::Custom,
        )
    }

    #[test]
    fn a_complete_skill_parses() {
        let s = parse(MD, META).unwrap();
        assert_eq!(s.name, "retry-backoff");
        assert_eq!(s.tags, ["http"]);
        assert_eq!(s.source_experiences, [1, 2]);
    }

    #[test]
    fn each_defect_is_named() {
        let cases = [
            (
                MD.replacen("---\n", "", 1),
                META.to_string(),
                "front matter",
            ),
            (
                MD.replace("name: retry-backoff\n", ""),
                META.to_string(),
                "`name` is missing",
            ),
            (
                MD.replace("description: Retry flaky calls with backoff.\n", ""),
                META.to_string(),
                "`description` is missing",
            ),
            (
                MD.replace("name: retry-backoff", "name: other"),
                META.to_string(),
                "folder is \"retry-backoff\"",
            ),
            (
                MD.replace("## Pitfalls", "## Caveats"),
                META.to_string(),
                "`## Pitfalls`",
            ),
            (
                MD.to_string(),
                "version: 1\ntags: []\n".to_string(),
                "`tags` must list",
            ),
            (
                MD.to_string(),
                "version: 1\ntags: [x]\ncolour: red\n".to_string(),
                "unknown field `colour`",
            ),
            (
                MD.to_string(),
                "version: 0\ntags: [x]\n".to_string(),
                "`version` must be",
            ),
        ];
        for (md, meta, want) in cases {
            let e = parse(&md, &meta).unwrap_err();
            assert!(e.to_string().contains(want), "{want:?} not in {e}");
        }
    }

    #[test]
    fn matching_orders_by_shared_tags() {
        let mk = |id: &str, tags: &[&str]| Skill {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            version: 1,
            source_experiences: vec![],
            source: SkillSource::Builtin,
            path: PathBuf::new(),
        };
        let all = [mk("a", &["x"]), mk("b", &["x", "y"]), mk("c", &["z"])];
        let got: Vec<&str> = matching(&all, &["x".into(), "y".into()], 10)
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(got, ["b", "a"]);
    }
}
