//! Text and JSON output of the CLI.

use std::io::Write;

use serde::Serialize;

use crate::blackboard::{Task, TaskLine};

/// Prints either JSON (`--json`) or the text a person reads.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub json: bool,
}

tokio::task_local! {
    /// Where [`Printer::emit`] writes inside [`capture`] instead of stdout.
    static CAPTURE: std::cell::RefCell<Vec<u8>>;
}

/// Runs `fut` with everything [`Printer::emit`] prints collected instead of
/// written to stdout, and returns it with the result: the MCP server runs the
/// `bb` verbs in its own process, whose stdout is the protocol's stream.
pub async fn capture<T>(fut: impl std::future::Future<Output = T>) -> (T, Vec<u8>) {
    CAPTURE
        .scope(std::cell::RefCell::new(Vec::new()), async move {
            let result = fut.await;
            (result, CAPTURE.with(|c| c.take()))
        })
        .await
}

impl Printer {
    /// Prints `value` as JSON, or `text()` otherwise (into the buffer of an
    /// enclosing [`capture`], if any).
    pub fn emit<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if CAPTURE.try_with(|_| ()).is_ok() {
            return CAPTURE.with(|c| self.write(&mut *c.borrow_mut(), value, text));
        }
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
