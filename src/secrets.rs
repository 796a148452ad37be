//! Secrets the daemon needs, kept out of its own environment (issue 23,
//! finding 12).
//!
//! Runs get an allow-listed environment, but an agent of the same user could
//! read the daemon's `/proc/<pid>/environ`: provider keys
//! (`NVIDIA_API_KEY`, …) and `MOZI_SERVER__API_TOKEN`, which then opened the
//! API to it. So `serve`, first thing and while the process has one thread,
//! calls [`withdraw_from_environment`]: every variable with a secret's name
//! ([`is_secret_name`]) is copied into this module's snapshot and removed.
//!
//! Removing a variable (`unsetenv`) only drops glibc's pointer to it; the
//! text stays in the block the kernel copied at `exec`, and that block is what
//! `/proc/<pid>/environ` shows. The values are therefore also overwritten in
//! place there (through `/proc/self/mem`, at the addresses
//! `/proc/self/stat` gives for the block).
//!
//! Code that reads one of these variables later (the configuration's
//! `MOZI_*` layer, the gateway's `api_key_env`, an agent's `pass_env`) reads
//! it through [`env_var`] / [`vars`], which answer from the snapshot first.
//! Outside `serve` (the CLIs) nothing is withdrawn and both read the plain
//! environment.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// What was withdrawn, by name.
static WITHDRAWN: OnceLock<BTreeMap<String, String>> = OnceLock::new();

/// Parts of a variable name that mark it a secret (matched on the
/// upper-cased name): `NVIDIA_API_KEY`, `MOZI_SERVER__API_TOKEN`,
/// `MOZI_GATEWAY__ADMIN_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `PGPASSWORD`, …
const SECRET_MARKS: &[&str] = &["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"];

/// Whether a variable named `name` is treated as a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKS.iter().any(|m| upper.contains(m))
}

/// A variable of the daemon's start environment: the withdrawn value when
/// there is one, else the process environment's.
pub fn env_var(name: &str) -> Option<String> {
    WITHDRAWN
        .get()
        .and_then(|w| w.get(name).cloned())
        .or_else(|| std::env::var(name).ok())
}

/// Every variable of the start environment (the process environment plus
/// the withdrawn ones), as `std::env::vars` would have listed it.
pub fn vars() -> Vec<(String, String)> {
    let mut all: BTreeMap<String, String> = std::env::vars().collect();
    if let Some(w) = WITHDRAWN.get() {
        all.extend(w.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    all.into_iter().collect()
}

/// Moves every secret-named variable out of the process environment into the
/// snapshot and erases its value from the exec-time block that
/// `/proc/<pid>/environ` shows. Returns the names withdrawn.
///
/// Must run while the process has a single thread (`unsetenv` races with any
/// concurrent `getenv`), before anything else reads the environment; `serve`
/// calls it before it starts the runtime. A second call withdraws nothing.
pub fn withdraw_from_environment() -> Vec<String> {
    let secret: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| is_secret_name(k))
        .collect();
    let names: Vec<String> = secret.keys().cloned().collect();
    if WITHDRAWN.set(secret).is_err() {
        return Vec::new();
    }
    for name in &names {
        std::env::remove_var(name);
    }
    if let Err(e) = erase_exec_block(&names) {
        // The values stay readable in /proc/<pid>/environ: say so, once.
        eprintln!(
            "moziplus: warning: cannot erase secrets from the process's start environment ({e}); \
             /proc/<pid>/environ may still show {}",
            names.join(", ")
        );
    }
    names
}

/// Overwrites with NUL bytes the values of `names` in the environment block
/// the kernel set up at `exec` (`env_start`..`env_end` of
/// `/proc/self/stat`). The names stay, so the block keeps its shape.
fn erase_exec_block(names: &[String]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if names.is_empty() {
        return Ok(());
    }
    let (start, end) = env_block()?;
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")?;
    let mut block = vec![0u8; (end - start) as usize];
    mem.read_exact_at(&mut block, start)?;
    let mut offset = 0usize;
    for entry in block.split(|b| *b == 0) {
        let len = entry.len();
        if let Some(eq) = entry.iter().position(|b| *b == b'=') {
            let name = String::from_utf8_lossy(&entry[..eq]);
            if names.iter().any(|n| *n == name) && len > eq + 1 {
                let zeros = vec![0u8; len - eq - 1];
                mem.write_all_at(&zeros, start + (offset + eq + 1) as u64)?;
            }
        }
        offset += len + 1;
    }
    Ok(())
}

/// `env_start` and `env_end` of `/proc/self/stat` (fields 50 and 51).
fn env_block() -> std::io::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces: count from its `)`.
    let tail = stat.rsplit_once(')').map(|(_, t)| t).unwrap_or_default();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    match (field(50), field(51)) {
        (Some(s), Some(e)) if s > 0 && e > s => Ok((s, e)),
        _ => Err(std::io::Error::other(
            "/proc/self/stat gives no environment block",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_recognised() {
        for n in [
            "NVIDIA_API_KEY",
            "MOZI_SERVER__API_TOKEN",
            "MOZI_GATEWAY__ADMIN_TOKEN",
            "aws_secret_access_key",
            "PGPASSWORD",
            "OPENAI_API_KEY",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            "PATH",
            "HOME",
            "MOZI_HOME",
            "MOZI_DAEMON__TICK_INTERVAL",
            "RUST_LOG",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn the_exec_block_of_this_process_is_found() {
        let (start, end) = env_block().expect("env_start/env_end");
        let mem = std::fs::File::open("/proc/self/mem").unwrap();
        let mut block = vec![0u8; (end - start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&mem, &mut block, start).unwrap();
        let proc_environ = std::fs::read("/proc/self/environ").unwrap();
        assert_eq!(
            block, proc_environ,
            "the block is what /proc/<pid>/environ shows"
        );
    }
}
