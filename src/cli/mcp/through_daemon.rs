//! The tools inside a sandboxed run, where the database is hidden: each
//! call is the `moziplus bb --json` command line of the same verb, run by
//! the daemon for this run (`POST /api/runs/bb` over the socket `MOZI_API`
//! names, with `MOZI_RUN_KEY`: `cli::remote::call`). The daemon runs it with
//! the identity of its own record of the run, so the identity rules are the
//! ones a local `bb` meets: the session token is checked, `agent` cannot
//! name anyone else, the project is the run's.
//!
//! A success is what `bb --json` printed; a refusal is the message `bb`
//! printed with its kind as the daemon's `bb` names it (`cli::bb::for_run`),
//! the kinds a local server gives; a usage error is `invalid`. A `file` is read here, inside
//! the sandbox, as the agent sees it, and sent as `bb output --file -`.

use std::path::Path;

use serde_json::Value;

use super::refusal::{ErrorKind, Refusal};
use super::{
    CommentInput, DecideInput, DecisionWaitInput, ExperienceAddInput, FailInput, HeartbeatInput,
    OutputInput, ReadInput, ReviewInput, TaskInput,
};

/// The longest output file sent through the daemon (the API's body limit
/// is larger; an artifact this big belongs in the workspace's commits).
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// A `bb` command line: the arguments after `bb`, and its stdin.
#[derive(Debug, Default, PartialEq)]
pub struct BbCall {
    args: Vec<String>,
    stdin: Option<String>,
}

impl BbCall {
    /// `verb…` with `--json`, and `--agent` when the tool names one.
    fn new(verb: &[&str], agent: Option<&str>) -> BbCall {
        let mut args: Vec<String> = verb.iter().map(|s| s.to_string()).collect();
        args.push("--json".into());
        if let Some(a) = agent {
            args.push(format!("--agent={a}"));
        }
        BbCall { args, stdin: None }
    }

    /// `--name=value` (one argument, so a value starting with `-` stays a value).
    fn flag(mut self, name: &str, value: impl std::fmt::Display) -> BbCall {
        self.args.push(format!("--{name}={value}"));
        self
    }

    fn flag_opt(self, name: &str, value: Option<impl std::fmt::Display>) -> BbCall {
        match value {
            Some(v) => self.flag(name, v),
            None => self,
        }
    }

    fn switch(mut self, name: &str, on: bool) -> BbCall {
        if on {
            self.args.push(format!("--{name}"));
        }
        self
    }

    /// The task, as the last positional argument (after `--`); none: `bb`
    /// takes the run's task from its `MOZI_TASK`.
    fn task(mut self, task: Option<String>) -> BbCall {
        if let Some(t) = task {
            self.args.extend(["--".into(), t]);
        }
        self
    }
}

pub fn read(i: ReadInput) -> BbCall {
    BbCall::new(&["read"], None)
        .flag("limit", i.limit.unwrap_or(20))
        .task(i.task)
}

pub fn heartbeat(i: HeartbeatInput) -> BbCall {
    BbCall::new(&["heartbeat"], i.agent.as_deref())
        .flag_opt("lease", i.lease_secs)
        .task(i.task)
}

pub fn output(i: OutputInput) -> Result<BbCall, Refusal> {
    let call = BbCall::new(&["output"], i.agent.as_deref())
        .flag("summary", &i.summary)
        .flag_opt("text", i.text.as_ref());
    let call = match (i.file, i.name) {
        (None, Some(_)) => return Err(Refusal::new(ErrorKind::Invalid, "`name` needs `file`")),
        (None, None) => call,
        (Some(f), _) if f == "-" => {
            return Err(Refusal::new(
                ErrorKind::Invalid,
                "`file` \"-\" (standard input) is not available over MCP: pass the content as `text`, or write it to a file",
            ));
        }
        (Some(f), name) => {
            let text = read_file(Path::new(&f))?;
            let name = name.or_else(|| {
                Path::new(&f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            });
            let mut call = call.flag("file", "-").flag_opt("name", name);
            call.stdin = Some(text);
            call
        }
    };
    Ok(call.task(i.task))
}

/// A regular file's text, read without waiting on a FIFO or a device.
fn read_file(path: &Path) -> Result<String, Refusal> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: String| Refusal::new(ErrorKind::Invalid, why);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refuse(format!("cannot read `file` {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("cannot read `file` {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(refuse(format!(
            "`file` {} is not a regular file: pass a file, or the content as `text`",
            path.display()
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(refuse(format!(
            "`file` {} is {} bytes; through the daemon an output file holds at most {MAX_FILE_BYTES}: commit it in the workspace and name it in `text`",
            path.display(),
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("cannot read `file` {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| {
        refuse(format!(
            "`file` {} is not UTF-8 text, and through the daemon an output file is sent as text: commit it in the workspace and name it in `text`",
            path.display()
        ))
    })
}

pub fn comment(i: CommentInput) -> BbCall {
    let kind = i.kind.map(|k| match k {
        super::CommentKind::Comment => "comment",
        super::CommentKind::Question => "question",
        super::CommentKind::Answer => "answer",
        super::CommentKind::Rebuttal => "rebuttal",
        super::CommentKind::Note => "note",
    });
    BbCall::new(&["comment"], i.agent.as_deref())
        .flag("body", &i.body)
        .flag_opt("type", kind)
        .task(i.task)
}

pub fn review(i: ReviewInput) -> BbCall {
    let verdict = match i.verdict {
        super::VerdictInput::Approve => "approve",
        super::VerdictInput::Revise => "revise",
        super::VerdictInput::Reject => "reject",
    };
    BbCall::new(&["review"], i.agent.as_deref())
        .flag("verdict", verdict)
        .flag("confidence", i.confidence)
        .flag("body", i.body.unwrap_or_default())
        .task(i.task)
}

pub fn done(i: TaskInput) -> BbCall {
    BbCall::new(&["done"], i.agent.as_deref()).task(i.task)
}

pub fn fail(i: FailInput) -> BbCall {
    BbCall::new(&["fail"], i.agent.as_deref())
        .flag("reason", &i.reason)
        .task(i.task)
}

pub fn decide(i: DecideInput) -> BbCall {
    BbCall::new(&["decide"], i.agent.as_deref())
        .flag("question", &i.question)
        .flag("decision", i.decision.unwrap_or_default())
        .flag("rationale", i.rationale.unwrap_or_default())
        .flag_opt("task", i.task)
        .switch("propose", i.propose)
        .flag_opt("expires", i.expires_secs)
}

pub fn decision_wait(i: DecisionWaitInput) -> BbCall {
    BbCall::new(&["decision", "wait"], None)
        .flag("timeout", i.timeout_secs.unwrap_or(300))
        .task(Some(format!("D{}", i.id)))
}

pub fn experience_add(i: ExperienceAddInput) -> BbCall {
    let tags: Vec<String> = i.tags.into_iter().filter(|s| !s.is_empty()).collect();
    BbCall::new(&["experience", "add"], i.agent.as_deref())
        .flag("tags", tags.join(","))
        .flag("lesson", &i.lesson)
        .flag_opt("task", i.task)
}

/// Runs the command line through the daemon at `api` (blocking: on a
/// thread of its own, so a long `decision_wait` holds no other call).
pub async fn call(api: &str, call: BbCall) -> Result<Value, Refusal> {
    let api = api.to_string();
    let answer =
        tokio::task::spawn_blocking(move || crate::cli::remote::call(&api, &call.args, call.stdin))
            .await
            .map_err(|e| {
                Refusal::new(
                    ErrorKind::Error,
                    format!("the call to the daemon failed: {e}"),
                )
            })?
            .map_err(|e| Refusal::new(ErrorKind::Error, e))?;
    if answer.code == crate::cli::output::EXIT_OK {
        return serde_json::from_str(&answer.stdout).map_err(|e| {
            Refusal::new(
                ErrorKind::Error,
                format!("the daemon's `bb` printed no JSON ({e}): {}", answer.stdout),
            )
        });
    }
    let kind = match (
        answer.kind.as_deref().and_then(ErrorKind::parse),
        answer.code,
    ) {
        (Some(kind), _) => kind,
        (None, crate::cli::output::EXIT_CONFLICT) => ErrorKind::Conflict,
        (None, crate::cli::output::EXIT_USAGE) => ErrorKind::Invalid,
        (None, _) => ErrorKind::Error,
    };
    let message = answer.stderr.trim();
    let message = ["moziplus: error: ", "moziplus: conflict: "]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .unwrap_or(message);
    Err(Refusal::new(kind, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &BbCall) -> Vec<&str> {
        c.args.iter().map(String::as_str).collect()
    }

    /// Every value is one `--name=value` argument, so a value that starts
    /// with a dash stays a value; the task comes last, after `--`.
    #[test]
    fn each_tool_is_the_bb_command_line_of_its_verb() {
        let c = comment(CommentInput {
            task: Some("T-0001".into()),
            body: "-starts with a dash".into(),
            kind: Some(super::super::CommentKind::Note),
            agent: Some("coder".into()),
        });
        assert_eq!(
            args(&c),
            [
                "comment",
                "--json",
                "--agent=coder",
                "--body=-starts with a dash",
                "--type=note",
                "--",
                "T-0001"
            ]
        );
        let d = done(TaskInput {
            task: None,
            agent: None,
        });
        assert_eq!(args(&d), ["done", "--json"]);
        let w = decision_wait(DecisionWaitInput {
            id: 12,
            timeout_secs: None,
        });
        assert_eq!(
            args(&w),
            ["decision", "wait", "--json", "--timeout=300", "--", "D12"]
        );
    }

    #[test]
    fn an_output_file_is_read_here_and_sent_as_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("notes.md");
        std::fs::write(&f, "hello").unwrap();
        let input = |file: &Path| OutputInput {
            task: None,
            summary: "s".into(),
            text: None,
            file: Some(file.display().to_string()),
            name: None,
            agent: None,
        };
        let c = output(input(&f)).unwrap();
        assert_eq!(c.stdin.as_deref(), Some("hello"));
        assert_eq!(
            args(&c),
            [
                "output",
                "--json",
                "--summary=s",
                "--file=-",
                "--name=notes.md"
            ]
        );
        // A FIFO is refused at once, never waited on.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let r = output(input(&fifo)).unwrap_err();
        assert_eq!(r.kind, ErrorKind::Invalid);
        assert!(r.message.contains("not a regular file"), "{r:?}");
        let missing = output(input(&dir.path().join("nope"))).unwrap_err();
        assert!(missing.message.contains("nope"), "{missing:?}");
    }
}
