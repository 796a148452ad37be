//! Opening files that someone else may have put there (issue 13, defects 11
//! and 13).
//!
//! Skills, templates, session logs and artifacts live in folders agents and
//! people write to. Opening one of them must neither block (a FIFO named
//! `SKILL.md` blocks `open` until a writer appears, and a read from it never
//! ends) nor hand out a file from elsewhere (a log replaced by a symlink to
//! `/etc/shadow`). So:
//!
//! * [`open_regular`] opens without blocking (`O_NONBLOCK`) and refuses
//!   anything but a regular file;
//! * [`open_confined`] also refuses a symbolic link as the file itself
//!   (`O_NOFOLLOW`) and a file whose real path (read back from the open
//!   descriptor, so a swapped folder cannot race the check) is outside the
//!   canonicalised `root`.
//!
//! These are blocking calls: async code runs them in `spawn_blocking`.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

fn refused(kind: io::ErrorKind, message: String) -> io::Error {
    io::Error::new(kind, message)
}

fn check_regular(f: &File, path: &Path) -> io::Result<()> {
    let meta = f.metadata()?;
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "a directory"
    } else {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        }
    };
    Err(refused(
        io::ErrorKind::InvalidInput,
        format!("{} is {what}; only regular files are read", path.display()),
    ))
}

/// Opens `path` for reading; refuses a FIFO, socket, device or directory
/// without blocking on it. Symbolic links are followed.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    check_regular(&f, path)?;
    Ok(f)
}

/// Reads a regular file (see [`open_regular`]) as UTF-8.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open_regular(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Opens `path` for reading only if it is a regular file, not a symbolic
/// link, and really inside `root` (both canonicalised).
pub fn open_confined(path: &Path, root: &Path) -> io::Result<File> {
    let root = root.canonicalize()?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                refused(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symbolic link; refusing to follow it",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    check_regular(&f, path)?;
    let real = real_path(&f, path)?;
    if !real.starts_with(&root) {
        return Err(refused(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is outside {}; refusing to read it",
                real.display(),
                root.display()
            ),
        ));
    }
    Ok(f)
}

/// Where an open file really is: read back from `/proc/self/fd`, else the
/// canonical folder of `path` joined with its name.
fn real_path(f: &File, path: &Path) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())) {
        return Ok(p);
    }
    let parent = path.parent().unwrap_or(Path::new(".")).canonicalize()?;
    Ok(parent.join(path.file_name().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_symlinks_and_outside_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(&root).unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, "secret").unwrap();
        let inside = root.join("log");
        std::fs::write(&inside, "hello").unwrap();

        let mut text = String::new();
        open_confined(&inside, &root)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello");

        let link = root.join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let e = open_confined(&link, &root).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A symlinked folder on the way out is caught by the real path.
        let dir_link = root.join("up");
        std::os::unix::fs::symlink(dir.path(), &dir_link).unwrap();
        let e = open_confined(&dir_link.join("secret"), &root).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");

        let fifo = root.join("SKILL.md");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_to_string(&fifo).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = open_confined(&fifo, &root).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = read_to_string(&root).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }
}
