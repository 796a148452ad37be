//! Text and JSON output of the CLI.

use std::io::Write;

use serde::Serialize;

use crate::blackboard::{Task, TaskLine};

/// Prints either JSON (`--json`) or the text a person reads.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub json: bool,
}

impl Printer {
    /// Prints `value` as JSON, or `text()` otherwise.
    pub fn emit<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        self.write(&mut std::io::stdout().lock(), value, text)
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

/// One line per task: id, status, priority, kind, who, title.
pub fn task_table<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> String {
    let mut s = String::new();
    for t in tasks {
        let who = t
            .claimed_by
            .as_deref()
            .or(t.assignee.as_deref())
            .unwrap_or("-");
        s.push_str(&format!(
            "{:<8} {:<9} {:<7} {:<9} {:<14} r{} {}\n",
            t.id, t.status, t.priority, t.kind, who, t.round, t.title
        ));
    }
    if s.is_empty() {
        s.push_str("(no tasks)\n");
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
