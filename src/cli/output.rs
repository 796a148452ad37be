//! Text and JSON output of the CLI, and its exit codes.

use std::io::Write;

use serde::Serialize;

use crate::blackboard::TaskLine;
use crate::locks::Recover;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for errors (bad input, unknown ids, I/O, forbidden writes).
pub const EXIT_ERROR: i32 = 1;
/// Exit code for usage errors (clap's own).
pub const EXIT_USAGE: i32 = 2;
/// Exit code for conflicts: claimed by someone else, not ready, already decided.
pub const EXIT_CONFLICT: i32 = 3;

/// Prints either JSON (`--json`) or the text a person reads: to this
/// process's standard output, or into a [`Capture`] (a run's `bb` that the
/// daemon runs for it: `cli::bb::for_run`).
#[derive(Debug, Clone)]
pub struct Printer {
    pub json: bool,
    capture: Option<Capture>,
}

/// What a command printed, kept instead of written: standard output and
/// standard error.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    err: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Capture {
    /// What was printed to standard output and to standard error.
    pub fn taken(&self) -> (String, String) {
        let take = |b: &std::sync::Mutex<Vec<u8>>| {
            String::from_utf8_lossy(&std::mem::take(&mut *b.locked())).into_owned()
        };
        (take(&self.out), take(&self.err))
    }
}

impl Printer {
    /// Prints to this process's standard output.
    pub fn new(json: bool) -> Printer {
        Printer {
            json,
            capture: None,
        }
    }

    /// Prints into `capture`.
    pub fn captured(json: bool, capture: Capture) -> Printer {
        Printer {
            json,
            capture: Some(capture),
        }
    }

    /// Prints `value` as JSON, or `text()` otherwise.
    pub fn emit<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        match &self.capture {
            Some(c) => self.write(&mut *c.out.locked(), value, text),
            None => self.write(&mut std::io::stdout().lock(), value, text),
        }
    }

    /// A line for the person beside the output (standard error): a hint,
    /// the next page.
    pub fn note(&self, line: &str) {
        match &self.capture {
            Some(c) => {
                let mut err = c.err.locked();
                err.extend_from_slice(line.as_bytes());
                err.push(b'\n');
            }
            None => eprintln!("{line}"),
        }
    }

    fn write<T: Serialize>(
        &self,
        mut out: impl Write,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            serde_json::to_writer_pretty(&mut out, value)?;
            out.write_all(b"\n")?;
        } else {
            let t = text();
            out.write_all(t.as_bytes())?;
            if !t.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }
}

/// A header, then one line per task: id, status, priority, kind, who
/// (claimant, else assignee), round, title; each column as wide as its
/// widest cell.
/// Tasks as an aligned table with a header; the last column says why each
/// waits (`-`: it does not).
pub fn task_table(tasks: &[crate::wire::ListedTask]) -> String {
    let rows: Vec<[String; 8]> = tasks
        .iter()
        .map(|l| {
            let t = &l.task;
            let who = t
                .claimed_by
                .as_deref()
                .or(t.assignee.as_deref())
                .unwrap_or("-");
            let waiting = if l.waiting_for.is_empty() {
                "-".to_string()
            } else {
                l.waiting_for
                    .iter()
                    .map(|w| w.text.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            [
                t.id.clone(),
                t.status.to_string(),
                t.priority.to_string(),
                t.kind.clone(),
                who.to_string(),
                format!("r{}", t.round),
                t.title.clone(),
                waiting,
            ]
        })
        .collect();
    if rows.is_empty() {
        return "(no tasks)\n".to_string();
    }
    let header = [
        "ID",
        "STATUS",
        "PRIORITY",
        "KIND",
        "WHO",
        "ROUND",
        "TITLE",
        "WAITING FOR",
    ]
    .map(String::from);
    let mut widths = [0usize; 8];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

pub fn line_table(lines: &[TaskLine]) -> String {
    let mut s = String::new();
    for t in lines {
        let who = t
            .claimed_by
            .as_deref()
            .or(t.assignee.as_deref())
            .unwrap_or("-");
        s.push_str(&format!(
            "  {:<8} {:<9} {:<7} {:<9} {:<14} {}\n",
            t.id, t.status, t.priority, t.kind, who, t.title
        ));
    }
    if s.is_empty() {
        s.push_str("  (none)\n");
    }
    s
}
