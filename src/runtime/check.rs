//! `moziplus doctor`'s runtime checks: each configured runtime's binary on
//! PATH (the PATH a run gets), its version within the adapter's supported
//! range, and Node.js's version where the CLI needs it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{version_in_range, Adapter, Requirement};
use crate::config::agents::AgentsFile;

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub name: String,
    pub ok: bool,
    /// Built-in CLI runtimes are required; `command` programs are advisory.
    pub required: bool,
    pub detail: String,
}

/// The PATH a run gets: the `moziplus` binary's folder, then the daemon's.
pub fn run_path(exe: &Path) -> String {
    let bin = exe
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{bin}:{}", std::env::var("PATH").unwrap_or_default())
}

/// Finds `program` on `path` (a program with a `/` is taken as is).
pub fn which(program: &str, path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(program);
    if p.components().count() > 1 {
        return p.is_file().then_some(p);
    }
    std::env::split_paths(path)
        .map(|d| d.join(program))
        .find(|c| c.is_file())
}

/// `program --version`'s first line (10 s at most).
pub fn version_of(program: &Path, path: &str) -> Result<String, String> {
    let mut child = std::process::Command::new(program)
        .arg("--version")
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {} --version: {e}", program.display()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --version did not answer within 10 s",
                    program.display()
                ));
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .ok_or_else(|| format!("{} --version printed nothing", program.display()))
}

/// Checks one CLI requirement; `node` is `node --version` on the same PATH.
pub fn check_requirement(req: &Requirement, path: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let name = format!("runtime {}", req.program);
    let Some(bin) = which(req.program, path) else {
        out.push(Finding {
            name,
            ok: false,
            required: true,
            detail: format!(
                "`{}` not found on PATH; install {} ({} <= version < {})",
                req.program, req.package, req.min, req.below
            ),
        });
        return out;
    };
    if let Some(node_min) = req.node_min {
        let node = which("node", path)
            .ok_or_else(|| "`node` not found on PATH".to_string())
            .and_then(|n| version_of(&n, path));
        out.push(match node {
            Ok(v) if version_in_range(&v, node_min, "1000.0.0") => Finding {
                name: format!("runtime {} node", req.program),
                ok: true,
                required: true,
                detail: format!("node {v} (>= {node_min})"),
            },
            Ok(v) => Finding {
                name: format!("runtime {} node", req.program),
                ok: false,
                required: true,
                detail: format!(
                    "node {v} is too old: {} needs Node.js >= {node_min}",
                    req.package
                ),
            },
            Err(e) => Finding {
                name: format!("runtime {} node", req.program),
                ok: false,
                required: true,
                detail: format!("{e}: {} needs Node.js >= {node_min}", req.package),
            },
        });
    }
    out.push(match version_of(&bin, path) {
        Ok(v) if version_in_range(&v, req.min, req.below) => Finding {
            name,
            ok: true,
            required: true,
            detail: format!("{} ({v}; supported {} <= version < {})", bin.display(), req.min, req.below),
        },
        Ok(v) => Finding {
            name,
            ok: false,
            required: true,
            detail: format!(
                "{} reports {v:?}, outside the supported range {} <= version < {} (npm install {}@{})",
                bin.display(),
                req.min,
                req.below,
                req.package,
                req.min
            ),
        },
        Err(e) => Finding { name, ok: false, required: true, detail: e },
    });
    out
}

/// Every runtime the team uses, each checked once.
pub fn check_team(agents: &AgentsFile, home: &Path, exe: &Path) -> Vec<Finding> {
    let path = run_path(exe);
    let mut out = Vec::new();
    let mut seen: Vec<&'static str> = Vec::new();
    for a in &agents.agents {
        let Some(adapter) = Adapter::for_agent(agents, a) else {
            continue;
        };
        match adapter.requirement() {
            Some(req) => {
                if !seen.contains(&req.program) {
                    seen.push(req.program);
                    out.extend(check_requirement(&req, &path));
                }
            }
            None => {
                let program = adapter.program(home, exe);
                let found = which(&program, &path);
                out.push(Finding {
                    name: format!("agent {}", a.id),
                    ok: found.is_some(),
                    required: false,
                    detail: match found {
                        Some(p) => {
                            format!("{} runtime: {program} ({})", adapter.name(), p.display())
                        }
                        None => {
                            format!("{} runtime: {program:?} not found on PATH", adapter.name())
                        }
                    },
                });
            }
        }
    }
    out
}
