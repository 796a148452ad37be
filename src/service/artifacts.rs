//! Artifact storage: files an output names live under
//! `artifacts/<task>/outputs/` of the project, written privately and
//! atomically, never through a symlink and never outside that folder.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use super::{ServiceError, ServiceResult};

/// Where an artifact's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSource {
    /// A file on disk, read when the output is posted.
    File(PathBuf),
    /// This process's standard input.
    Stdin,
    /// Bytes already in hand.
    Bytes(Vec<u8>),
}

/// An artifact to store with an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    /// The path inside `outputs/`; default: the source file's name.
    pub name: Option<String>,
    pub source: ArtifactSource,
}

impl NewArtifact {
    /// The name the artifact is stored under.
    fn resolved_name(&self) -> ServiceResult<String> {
        match (&self.name, &self.source) {
            (Some(n), _) => Ok(n.clone()),
            (None, ArtifactSource::Stdin) => Err(ServiceError::Invalid(
                "--file - (stdin) needs --name".into(),
            )),
            (None, ArtifactSource::Bytes(_)) => Err(ServiceError::Invalid(
                "an artifact given as bytes needs a name".into(),
            )),
            (None, ArtifactSource::File(src)) => src
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .ok_or_else(|| {
                    ServiceError::Invalid(format!("cannot take a name from {}", src.display()))
                }),
        }
    }

    /// The artifact's bytes, at most [`MAX_ARTIFACT_BYTES`]. A file must be
    /// a regular file, opened without blocking (issue 23, finding 10: a FIFO
    /// froze the MCP server, `/dev/zero` had no end); a regular file's read
    /// cannot wait on a writer, so it needs no timer.
    fn read(self) -> ServiceResult<Vec<u8>> {
        let (what, reader): (String, Box<dyn Read>) = match self.source {
            ArtifactSource::Bytes(b) => {
                return match too_large(b.len() as u64) {
                    Some(e) => Err(e),
                    None => Ok(b),
                }
            }
            ArtifactSource::Stdin => ("standard input".into(), Box::new(std::io::stdin())),
            ArtifactSource::File(src) => {
                let f = crate::safe_fs::open_regular(&src).map_err(|e| {
                    ServiceError::Invalid(format!("cannot read {}: {e}", src.display()))
                })?;
                (src.display().to_string(), Box::new(f))
            }
        };
        let mut b = Vec::new();
        reader
            .take(MAX_ARTIFACT_BYTES + 1)
            .read_to_end(&mut b)
            .map_err(|e| ServiceError::io(format!("reading {what}"), e))?;
        match too_large(b.len() as u64) {
            Some(e) => Err(e),
            None => Ok(b),
        }
    }
}

/// The largest artifact an output may carry.
pub const MAX_ARTIFACT_BYTES: u64 = 64 * 1024 * 1024;

fn too_large(len: u64) -> Option<ServiceError> {
    (len > MAX_ARTIFACT_BYTES).then(|| {
        ServiceError::Invalid(format!(
            "an artifact is at most {MAX_ARTIFACT_BYTES} bytes (64 MiB); this one is larger"
        ))
    })
}

/// Stores `artifact` under `base` (the task's `outputs/`, created if
/// missing); returns the name it was stored under.
pub(super) fn store(base: &Path, artifact: NewArtifact) -> ServiceResult<String> {
    let name = artifact.resolved_name()?;
    crate::home::create_private_dir_all(base)
        .map_err(|e| ServiceError::io(format!("creating {}", base.display()), e))?;
    let dest = artifact_path(base, &name)?;
    let bytes = artifact.read()?;
    let tmp = dest.with_extension("partial~");
    // Never write through whatever already sits at the temporary path: a
    // planted symlink would send the bytes outside outputs/. Remove it and
    // create the file afresh.
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?
            .write_all(&bytes)?;
        std::fs::rename(&tmp, &dest)
    };
    write().map_err(|e| ServiceError::io(format!("writing {}", dest.display()), e))?;
    Ok(name)
}

/// Resolves a path inside `base` for an artifact name, refusing anything that
/// could escape it (absolute paths, `..`, symlinked parents pointing outside).
/// Missing folders of the name are created, one level at a time.
pub fn artifact_path(base: &Path, name: &str) -> ServiceResult<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty() || name.len() > 255 {
        return Err(ServiceError::Invalid(
            "artifact name must be 1-255 bytes".into(),
        ));
    }
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(ServiceError::Invalid(format!(
            "artifact name {name:?} must be a relative path inside outputs/ (no '/', '..' or '.' at its start)"
        )));
    }
    let full = base.join(rel);
    // Create missing folders one level at a time, checking that each level
    // resolves inside `base` before anything is created below it: folders
    // must never be created through a symlink that points outside.
    let canon = |p: &Path| {
        p.canonicalize()
            .map_err(|e| ServiceError::io(format!("resolving {}", p.display()), e))
    };
    let canon_base = canon(base)?;
    let mut dir = base.to_path_buf();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        dir.push(c);
        if std::fs::symlink_metadata(&dir).is_err() {
            std::fs::create_dir(&dir)
                .map_err(|e| ServiceError::io(format!("creating {}", dir.display()), e))?;
        }
        if !canon(&dir)?.starts_with(&canon_base) {
            return Err(ServiceError::Forbidden(format!(
                "artifact name {name:?} resolves outside {}",
                base.display()
            )));
        }
    }
    if full.is_symlink() {
        return Err(ServiceError::Forbidden(format!(
            "artifact {name:?} is a symlink; refusing to write through it"
        )));
    }
    Ok(full)
}
