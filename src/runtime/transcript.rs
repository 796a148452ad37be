//! A run's live transcript: each CLI's output turned into normalised
//! activity, and the CLI's own verdict on the run.
//!
//! The daemon feeds stdout line by line ([`Transcript::line`]); each line
//! yields zero or more [`Activity`] items (kept in the session log and
//! published as `session.activity` events). At the end [`Transcript::finish`]
//! gives the [`CliReport`]: whether the CLI itself says the run failed
//! (`is_error`, `turn.failed`, `meta.aborted`), and the usage, cost and CLI
//! session id it reported.

use serde::Serialize;
use serde_json::Value;

use super::OutputFormat;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// Text the model wrote (or a plain program printed).
    AssistantText,
    /// The agent called a tool (a shell command, an edit).
    ToolCall,
    /// What the tool returned.
    ToolResult,
    /// Token usage reported by the CLI.
    Usage,
    /// An error the CLI reported.
    Error,
}

/// One normalised transcript item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    pub kind: ActivityKind,
    /// Text, command or message (bounded to [`TEXT_LIMIT`] bytes).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// The tool's name, for tool calls and results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// Longest text kept per activity item.
pub const TEXT_LIMIT: usize = 2000;

impl Activity {
    fn new(kind: ActivityKind, text: &str) -> Activity {
        Activity {
            kind,
            text: clip(text),
            tool: None,
            input_tokens: None,
            output_tokens: None,
            cost_usd: None,
        }
    }
    fn tool(mut self, name: &str) -> Activity {
        self.tool = Some(name.to_string());
        self
    }
    fn usage(input: i64, output: i64, cost: Option<f64>) -> Activity {
        Activity {
            input_tokens: Some(input),
            output_tokens: Some(output),
            cost_usd: cost,
            ..Activity::new(ActivityKind::Usage, "")
        }
    }
}

fn clip(text: &str) -> String {
    if text.len() <= TEXT_LIMIT {
        return text.to_string();
    }
    let mut end = TEXT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The CLI's own account of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CliReport {
    /// Set when the CLI says the run failed, with its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tokens the CLI says it used (the gateway books its own count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The CLI's own session/thread/run id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cli_session: Option<String>,
    /// The structured output format expected a result and none came.
    #[serde(skip)]
    pub missing_result: bool,
}

/// The transcript state of one run.
#[derive(Debug)]
pub struct Transcript {
    format: OutputFormat,
    report: CliReport,
    /// Claude Code: a `result` event arrived.
    saw_result: bool,
    /// Codex: a `turn.completed` arrived.
    saw_turn: bool,
    /// OpenClaw prints one (pretty-printed) JSON document: kept whole, bounded.
    document: Vec<u8>,
}

/// Largest OpenClaw result document kept.
const DOCUMENT_LIMIT: usize = 1 << 20;

impl Transcript {
    pub fn new(format: OutputFormat) -> Transcript {
        Transcript {
            format,
            report: CliReport::default(),
            saw_result: false,
            saw_turn: false,
            document: Vec::new(),
        }
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// One line of stdout (without its newline).
    pub fn line(&mut self, line: &str) -> Vec<Activity> {
        match self.format {
            OutputFormat::Plain => {
                let t = line.trim_end();
                if t.is_empty() {
                    Vec::new()
                } else {
                    vec![Activity::new(ActivityKind::AssistantText, t)]
                }
            }
            OutputFormat::CodexJsonl => match serde_json::from_str::<Value>(line) {
                Ok(v) => self.codex(&v),
                Err(_) => Vec::new(),
            },
            OutputFormat::ClaudeStreamJson => match serde_json::from_str::<Value>(line) {
                Ok(v) => self.claude(&v),
                Err(_) => Vec::new(),
            },
            OutputFormat::OpenClawJson => {
                if self.document.len() + line.len() < DOCUMENT_LIMIT {
                    self.document.extend_from_slice(line.as_bytes());
                    self.document.push(b'\n');
                }
                Vec::new()
            }
        }
    }

    /// The end of stdout: the activity only known at the end (OpenClaw) and
    /// the CLI's report.
    pub fn finish(&mut self) -> (Vec<Activity>, CliReport) {
        let mut out = Vec::new();
        match self.format {
            OutputFormat::Plain => {}
            OutputFormat::CodexJsonl => {
                if !self.saw_turn && self.report.error.is_none() {
                    self.report.missing_result = true;
                }
            }
            OutputFormat::ClaudeStreamJson => {
                if !self.saw_result {
                    self.report.missing_result = true;
                }
            }
            OutputFormat::OpenClawJson => match last_json_document(&self.document) {
                Some(v) => out = self.openclaw(&v),
                None => self.report.missing_result = true,
            },
        }
        self.document = Vec::new();
        (out, std::mem::take(&mut self.report))
    }

    /// `codex exec --json` (codex-rs/exec `ThreadEvent`).
    fn codex(&mut self, v: &Value) -> Vec<Activity> {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
        match s("/type") {
            "thread.started" => {
                self.report.cli_session = Some(s("/thread_id").to_string());
                Vec::new()
            }
            "turn.completed" => {
                self.saw_turn = true;
                let n = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
                let input = n("/usage/input_tokens");
                let output = n("/usage/output_tokens");
                *self.report.input_tokens.get_or_insert(0) += input;
                *self.report.output_tokens.get_or_insert(0) += output;
                vec![Activity::usage(input, output, None)]
            }
            "turn.failed" => {
                let msg = s("/error/message");
                self.report.error = Some(format!("codex turn.failed: {msg}"));
                vec![Activity::new(ActivityKind::Error, msg)]
            }
            "error" => {
                let msg = s("/message");
                vec![Activity::new(ActivityKind::Error, msg)]
            }
            "item.started" | "item.completed" => {
                let done = s("/type") == "item.completed";
                match (s("/item/type"), done) {
                    ("agent_message", true) => {
                        vec![Activity::new(ActivityKind::AssistantText, s("/item/text"))]
                    }
                    ("command_execution", false) => {
                        vec![Activity::new(ActivityKind::ToolCall, s("/item/command")).tool("shell")]
                    }
                    ("command_execution", true) => {
                        let code = v
                            .pointer("/item/exit_code")
                            .and_then(Value::as_i64)
                            .map(|c| format!(" (exit {c})"))
                            .unwrap_or_default();
                        vec![Activity::new(
                            ActivityKind::ToolResult,
                            &format!("{}{code}", s("/item/aggregated_output")),
                        )
                        .tool("shell")]
                    }
                    ("file_change", true) => {
                        let paths: Vec<&str> = v
                            .pointer("/item/changes")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|c| c.get("path").and_then(Value::as_str))
                                    .collect()
                            })
                            .unwrap_or_default();
                        vec![Activity::new(ActivityKind::ToolResult, &paths.join(", "))
                            .tool("file_change")]
                    }
                    ("mcp_tool_call", false) => {
                        vec![Activity::new(ActivityKind::ToolCall, s("/item/tool")).tool("mcp")]
                    }
                    ("error", true) => {
                        vec![Activity::new(ActivityKind::Error, s("/item/message"))]
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    /// `claude -p --output-format stream-json --verbose` (SDK messages).
    fn claude(&mut self, v: &Value) -> Vec<Activity> {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
        match s("/type") {
            "system" => {
                if s("/subtype") == "init" && !s("/session_id").is_empty() {
                    self.report.cli_session = Some(s("/session_id").to_string());
                }
                Vec::new()
            }
            "assistant" => content_blocks(v.pointer("/message/content"))
                .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                    Some("text") => Some(Activity::new(
                        ActivityKind::AssistantText,
                        b.get("text").and_then(Value::as_str).unwrap_or(""),
                    )),
                    Some("tool_use") => {
                        let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                        let input = b.get("input").cloned().unwrap_or(Value::Null);
                        let text = input
                            .get("command")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .unwrap_or_else(|| input.to_string());
                        Some(Activity::new(ActivityKind::ToolCall, &text).tool(name))
                    }
                    _ => None,
                })
                .collect(),
            "user" => content_blocks(v.pointer("/message/content"))
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                .map(|b| {
                    let text = match b.get("content") {
                        Some(Value::String(t)) => t.clone(),
                        Some(Value::Array(parts)) => parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        _ => String::new(),
                    };
                    let kind = if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        ActivityKind::Error
                    } else {
                        ActivityKind::ToolResult
                    };
                    Activity::new(kind, &text)
                })
                .collect(),
            "result" => {
                self.saw_result = true;
                if !s("/session_id").is_empty() {
                    self.report.cli_session = Some(s("/session_id").to_string());
                }
                let n = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
                let input = n("/usage/input_tokens")
                    + n("/usage/cache_read_input_tokens")
                    + n("/usage/cache_creation_input_tokens");
                let output = n("/usage/output_tokens");
                let cost = v.get("total_cost_usd").and_then(Value::as_f64);
                self.report.input_tokens = Some(input);
                self.report.output_tokens = Some(output);
                self.report.cost_usd = cost;
                let mut out = vec![Activity::usage(input, output, cost)];
                let is_error = v.get("is_error").and_then(Value::as_bool) == Some(true);
                if is_error || (s("/subtype") != "success" && !s("/subtype").is_empty()) {
                    let why = match s("/result") {
                        "" => s("/subtype").to_string(),
                        r => r.to_string(),
                    };
                    self.report.error = Some(format!("claude reported an error: {why}"));
                    out.push(Activity::new(ActivityKind::Error, &why));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// `openclaw agent --json`: `payloads[].text`, `meta.aborted`,
    /// `meta.agentMeta.{sessionId,usage}`; older releases nest it under
    /// `result.meta`.
    fn openclaw(&mut self, v: &Value) -> Vec<Activity> {
        let meta = v
            .get("meta")
            .or_else(|| v.pointer("/result/meta"))
            .cloned()
            .unwrap_or(Value::Null);
        let payloads = v
            .get("payloads")
            .or_else(|| v.pointer("/result/payloads"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        if let Some(tools) = meta
            .pointer("/agentMeta/terminalReceipt/successfulToolNames")
            .and_then(Value::as_array)
        {
            for t in tools.iter().filter_map(Value::as_str) {
                out.push(Activity::new(ActivityKind::ToolCall, t).tool(t));
            }
        }
        for p in &payloads {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                out.push(Activity::new(ActivityKind::AssistantText, t));
            }
        }
        if let Some(id) = meta.pointer("/agentMeta/sessionId").and_then(Value::as_str) {
            self.report.cli_session = Some(id.to_string());
        }
        let usage = meta.pointer("/agentMeta/usage");
        if let Some(u) = usage {
            let n = |k: &str| u.get(k).and_then(Value::as_i64).unwrap_or(0);
            let input = n("input") + n("cacheRead") + n("cacheWrite");
            let output = n("output");
            let cost = u.pointer("/cost/total").and_then(Value::as_f64);
            self.report.input_tokens = Some(input);
            self.report.output_tokens = Some(output);
            self.report.cost_usd = cost;
            out.push(Activity::usage(input, output, cost));
        }
        let aborted = meta.get("aborted").and_then(Value::as_bool) == Some(true);
        let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
        let error = meta
            .get("error")
            .or_else(|| v.get("error"))
            .filter(|e| !e.is_null());
        if aborted || status == "error" || status == "aborted" || error.is_some() {
            let why = error
                .map(|e| {
                    e.get("message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| e.to_string())
                })
                .unwrap_or_else(|| "the run was aborted".to_string());
            self.report.error = Some(format!("openclaw reported an error: {why}"));
            out.push(Activity::new(ActivityKind::Error, &why));
        }
        out
    }
}

fn content_blocks(content: Option<&Value>) -> impl Iterator<Item = &Value> {
    content
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

/// The whole output as one JSON document, else its last JSON line.
fn last_json_document(out: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(out);
    if let Ok(v) = serde_json::from_str::<Value>(text.trim()) {
        return v.is_object().then_some(v);
    }
    // A document after some log lines: from the last line that opens one.
    let lines: Vec<&str> = text.lines().collect();
    for start in (0..lines.len()).rev() {
        if lines[start].starts_with('{') {
            let rest = lines[start..].join("\n");
            if let Ok(v) = serde_json::from_str::<Value>(&rest) {
                return v.is_object().then_some(v);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(format: OutputFormat, lines: &[&str]) -> (Vec<Activity>, CliReport) {
        let mut t = Transcript::new(format);
        let mut all: Vec<Activity> = lines.iter().flat_map(|l| t.line(l)).collect();
        let (tail, report) = t.finish();
        all.extend(tail);
        (all, report)
    }

    #[test]
    fn codex_events_become_activity_and_usage() {
        let (acts, r) = feed(
            OutputFormat::CodexJsonl,
            &[
                r#"{"type":"thread.started","thread_id":"th-1"}"#,
                r#"{"type":"turn.started"}"#,
                r#"{"type":"item.started","item":{"id":"i1","type":"command_execution","command":"bash -lc 'moziplus bb done T-1'","status":"in_progress"}}"#,
                r#"{"type":"item.completed","item":{"id":"i1","type":"command_execution","command":"x","aggregated_output":"ok\n","exit_code":0,"status":"completed"}}"#,
                r#"{"type":"item.completed","item":{"id":"i2","type":"agent_message","text":"Finished."}}"#,
                r#"{"type":"turn.completed","usage":{"input_tokens":120,"cached_input_tokens":20,"output_tokens":30}}"#,
            ],
        );
        let kinds: Vec<ActivityKind> = acts.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                ActivityKind::ToolCall,
                ActivityKind::ToolResult,
                ActivityKind::AssistantText,
                ActivityKind::Usage
            ]
        );
        assert_eq!(acts[1].text, "ok\n (exit 0)");
        assert_eq!(r.error, None);
        assert_eq!((r.input_tokens, r.output_tokens), (Some(120), Some(30)));
        assert_eq!(r.cli_session.as_deref(), Some("th-1"));
        assert!(!r.missing_result);
    }

    #[test]
    fn codex_turn_failed_is_the_cli_saying_no() {
        let (_, r) = feed(
            OutputFormat::CodexJsonl,
            &[r#"{"type":"turn.failed","error":{"message":"stream disconnected"}}"#],
        );
        assert_eq!(
            r.error.as_deref(),
            Some("codex turn.failed: stream disconnected")
        );
        let (_, r) = feed(OutputFormat::CodexJsonl, &["not json"]);
        assert!(r.missing_result);
    }

    #[test]
    fn claude_stream_json_result_and_is_error() {
        let (acts, r) = feed(
            OutputFormat::ClaudeStreamJson,
            &[
                r#"{"type":"system","subtype":"init","session_id":"cs-1","tools":["Bash"]}"#,
                r#"{"type":"assistant","message":{"content":[{"type":"text","text":"On it."},{"type":"tool_use","id":"tu1","name":"Bash","input":{"command":"moziplus bb done T-1"}}]}}"#,
                r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"tu1","content":"done","is_error":false}]}}"#,
                r#"{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"cs-1","total_cost_usd":0.0123,"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":7}}"#,
            ],
        );
        assert_eq!(acts[1].tool.as_deref(), Some("Bash"));
        assert_eq!(acts[1].text, "moziplus bb done T-1");
        assert_eq!(acts[2].kind, ActivityKind::ToolResult);
        assert_eq!(r.error, None);
        assert_eq!((r.input_tokens, r.output_tokens), (Some(15), Some(7)));
        assert_eq!(r.cost_usd, Some(0.0123));
        assert_eq!(r.cli_session.as_deref(), Some("cs-1"));

        let (_, r) = feed(
            OutputFormat::ClaudeStreamJson,
            &[
                r#"{"type":"result","subtype":"success","is_error":true,"result":"Not logged in","session_id":"cs-2"}"#,
            ],
        );
        assert_eq!(
            r.error.as_deref(),
            Some("claude reported an error: Not logged in")
        );
    }

    #[test]
    fn openclaw_result_is_read_from_meta() {
        let doc = r#"{
  "payloads": [ { "text": "all done", "mediaUrl": null } ],
  "meta": {
    "agentMeta": { "sessionId": "s1", "usage": { "input": 22, "output": 14, "cacheRead": 0, "cacheWrite": 0, "total": 36, "cost": { "total": 0 } },
                   "terminalReceipt": { "successfulToolNames": ["exec"] } },
    "aborted": false
  }
}"#;
        let lines: Vec<&str> = doc.lines().collect();
        let (acts, r) = feed(OutputFormat::OpenClawJson, &lines);
        assert_eq!(acts[0].kind, ActivityKind::ToolCall);
        assert_eq!(acts[1].text, "all done");
        assert_eq!((r.input_tokens, r.output_tokens), (Some(22), Some(14)));
        assert_eq!(r.error, None);
        assert_eq!(r.cli_session.as_deref(), Some("s1"));

        let (_, r) = feed(
            OutputFormat::OpenClawJson,
            &[r#"{"payloads":[],"meta":{"aborted":true}}"#],
        );
        assert_eq!(
            r.error.as_deref(),
            Some("openclaw reported an error: the run was aborted")
        );
        let (_, r) = feed(OutputFormat::OpenClawJson, &["no json here"]);
        assert!(r.missing_result);
    }

    #[test]
    fn long_text_is_clipped_on_a_char_boundary() {
        let long = "é".repeat(TEXT_LIMIT);
        let a = Activity::new(ActivityKind::AssistantText, &long);
        assert!(a.text.len() <= TEXT_LIMIT + '…'.len_utf8());
        assert!(a.text.ends_with('…'));
    }
}
