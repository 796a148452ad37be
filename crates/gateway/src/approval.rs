//! The high-risk rule, in one place: is this tool call high-risk, propose
//! the decision, hold the call back.
//!
//! **Invariant: within a run, a high-risk tool call is never delivered to
//! the agent before a human approved it.** Every path that hands tool calls
//! to an agent asks [`decide`] about the *complete* calls of an answer
//! (never a first fragment of a stream) and gets one [`Verdict`] per call:
//!
//! * chat JSON: [`withhold_in_chat_answer`] (also what the translated
//!   Responses/Messages JSON answers are built from);
//! * chat, Responses and Messages streams: the stream translators collect
//!   the calls whole and ask at the end of the provider's stream;
//! * native passthrough JSON (`native: [responses]` / `[messages]`):
//!   [`withhold_in_native_answer`]. Native streams are passed on unparsed.
//!
//! A name is high-risk when it, or what follows a namespace separator in it
//! (`__`, `.`, `/`, `:`), matches one of the configured glob patterns:
//! `delete_resource` matches `mcp__k8s__delete_resource`,
//! `functions.delete_resource` and `k8s/delete_resource`.
//!
//! A held call becomes a `proposed` decision ([`GatewayHooks::propose_approval`]);
//! the agent gets a text naming it and `requires_approval`. When the model
//! makes the same call again (same run, tool and arguments), the decision
//! is looked up ([`GatewayHooks::approval_status`]): approved, the call goes
//! through — once; still open, it is held again under the same decision (no
//! second proposal); rejected or expired, the agent is told so.
//!
//! [`GatewayHooks::propose_approval`]: crate::hooks::GatewayHooks::propose_approval
//! [`GatewayHooks::approval_status`]: crate::hooks::GatewayHooks::approval_status

use std::collections::HashMap;
use std::sync::Mutex;

use moziplus_locks::Recover;
use serde_json::{json, Value};

use crate::config::secs;
use crate::hooks::{ApprovalRequest, ApprovalStatus, GatewayHooks, RunAttribution};
use crate::tools::strip_fences;

/// The configured high-risk name patterns.
#[derive(Debug, Clone, Default)]
pub(crate) struct HighRisk {
    patterns: Vec<glob::Pattern>,
}

/// Where a tool name's namespace ends: MCP (`mcp__server__tool`), dotted
/// (`functions.tool`), paths and colons.
const NAMESPACE_SEPARATORS: [&str; 4] = ["__", ".", "/", ":"];

impl HighRisk {
    /// Patterns that are not valid globs are matched literally.
    pub fn new(patterns: &[String]) -> Self {
        let patterns = patterns
            .iter()
            .filter_map(|p| {
                glob::Pattern::new(p)
                    .or_else(|_| glob::Pattern::new(&glob::Pattern::escape(p)))
                    .ok()
            })
            .collect();
        HighRisk { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The name, or a part of it after a namespace separator, matches a pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim();
        if name.is_empty() {
            return false;
        }
        let mut candidates = vec![name];
        for sep in NAMESPACE_SEPARATORS {
            candidates.extend(
                name.match_indices(sep)
                    .map(|(at, _)| &name[at + sep.len()..]),
            );
        }
        candidates
            .iter()
            .filter(|c| !c.is_empty())
            .any(|c| self.patterns.iter().any(|p| p.matches(c)))
    }
}

/// A complete tool call, as the agent would receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id (`tool_calls[].id`, `call_id`, `tool_use.id`).
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments JSON (fences stripped).
    pub arguments: String,
}

impl ToolCall {
    pub fn new(id: &str, name: &str, arguments: &str) -> Self {
        ToolCall {
            id: id.to_string(),
            name: name.to_string(),
            arguments: strip_fences(arguments).to_string(),
        }
    }
}

/// What happens to one tool call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Not high-risk, or approved: the agent gets it.
    Deliver,
    /// The agent gets `note` instead, and `entry` in `requires_approval`.
    Withhold { entry: Value, note: String },
}

impl Verdict {
    pub fn delivered(&self) -> bool {
        matches!(self, Verdict::Deliver)
    }
}

/// Identifies "the same call": run, tool and arguments (as JSON, so key
/// order and spacing do not matter).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CallKey {
    session: String,
    tool: String,
    arguments: String,
}

impl CallKey {
    fn of(attribution: Option<&RunAttribution>, call: &ToolCall) -> Self {
        let arguments = serde_json::from_str::<Value>(&call.arguments)
            .map_or_else(|_| call.arguments.trim().to_string(), |v| v.to_string());
        CallKey {
            session: attribution.map_or_else(String::new, |a| a.session_id.clone()),
            tool: call.name.clone(),
            arguments,
        }
    }
}

/// The decisions proposed for held calls, by call, until the call is made
/// again after the decision settled.
#[derive(Debug, Default)]
pub(crate) struct OpenDecisions {
    by_call: Mutex<HashMap<CallKey, String>>,
}

/// What deciding needs of the gateway: the decisions still open, the hooks
/// that propose and read them, and how long a proposal lives (seconds).
pub(crate) struct Desk<'a> {
    pub open: &'a OpenDecisions,
    pub hooks: &'a dyn GatewayHooks,
    pub expiry: f64,
}

/// Most held calls remembered; the map is cleared beyond it (a forgotten
/// call is proposed again, never delivered unapproved).
const MAX_OPEN_DECISIONS: usize = 10_000;

/// One verdict per call, in order. `patterns` are the high-risk names in
/// force for the provider that answered.
pub(crate) async fn decide(
    desk: Desk<'_>,
    patterns: &HighRisk,
    attribution: Option<&RunAttribution>,
    calls: &[ToolCall],
) -> Vec<Verdict> {
    let mut verdicts = Vec::with_capacity(calls.len());
    for call in calls {
        let verdict = if patterns.matches(&call.name) {
            decide_one(&desk, attribution, call).await
        } else {
            Verdict::Deliver
        };
        verdicts.push(verdict);
    }
    verdicts
}

async fn decide_one(
    desk: &Desk<'_>,
    attribution: Option<&RunAttribution>,
    call: &ToolCall,
) -> Verdict {
    let key = CallKey::of(attribution, call);
    let open = desk.open.by_call.locked().get(&key).cloned();
    let expiry = desk.expiry;
    if let Some(id) = open {
        let status = desk
            .hooks
            .approval_status(attribution.cloned(), id.clone())
            .await;
        tracing::info!(tool = %call.name, decision = %id, status = ?status, "high-risk tool call made again");
        return match status {
            ApprovalStatus::Approved => {
                // Once: the next identical call needs a new decision.
                desk.open.by_call.locked().remove(&key);
                Verdict::Deliver
            }
            ApprovalStatus::Proposed => proposed(call, &id, expiry),
            ApprovalStatus::Rejected(reason) => {
                desk.open.by_call.locked().remove(&key);
                refused(
                    call,
                    Some(&id),
                    &format!("decision {id} was rejected: {reason}"),
                )
            }
        };
    }
    let request = ApprovalRequest {
        attribution: attribution.cloned(),
        tool_name: call.name.clone(),
        arguments_json: call.arguments.clone(),
        tool_call_id: call.id.clone(),
        expires_in: secs(expiry),
    };
    let decision = desk.hooks.propose_approval(request).await;
    tracing::info!(tool = %call.name, decision = ?decision, "high-risk tool call held back; needs approval");
    match decision {
        Ok(id) => {
            let mut open = desk.open.by_call.locked();
            if open.len() >= MAX_OPEN_DECISIONS {
                open.clear();
            }
            open.insert(key, id.clone());
            proposed(call, &id, expiry)
        }
        Err(e) => refused(call, None, &format!("approval could not be requested: {e}")),
    }
}

fn proposed(call: &ToolCall, id: &str, expires_in_seconds: f64) -> Verdict {
    Verdict::Withhold {
        entry: json!({
            "tool_call_id": call.id, "tool": call.name, "decision_id": id,
            "status": "proposed", "expires_in_seconds": expires_in_seconds,
            "wait_command": format!("moziplus bb decision wait {id}"),
        }),
        note: format!(
            "The high-risk tool call `{}` needs a human decision before it runs: decision {id} is proposed. Wait for it with `moziplus bb decision wait {id}`, then call the tool again if it was approved.",
            call.name
        ),
    }
}

fn refused(call: &ToolCall, id: Option<&str>, reason: &str) -> Verdict {
    Verdict::Withhold {
        entry: json!({
            "tool_call_id": call.id, "tool": call.name, "decision_id": id,
            "status": "rejected", "reason": reason,
        }),
        note: format!(
            "The high-risk tool call `{}` was not delivered and must not be run: {reason}",
            call.name
        ),
    }
}

/// The `requires_approval` entries of the withheld calls.
pub(crate) fn entries(verdicts: &[Verdict]) -> Vec<Value> {
    verdicts
        .iter()
        .filter_map(|v| match v {
            Verdict::Withhold { entry, .. } => Some(entry.clone()),
            Verdict::Deliver => None,
        })
        .collect()
}

/// The text told instead of the withheld calls (empty when none was).
pub(crate) fn notes(verdicts: &[Verdict]) -> String {
    let notes: Vec<&str> = verdicts
        .iter()
        .filter_map(|v| match v {
            Verdict::Withhold { note, .. } => Some(note.as_str()),
            Verdict::Deliver => None,
        })
        .collect();
    notes.join("\n")
}

/// `text` followed by `note`, a blank line between when both are there.
pub(crate) fn append_note(text: &str, note: &str) -> String {
    match (text.is_empty(), note.is_empty()) {
        (_, true) => text.to_string(),
        (true, false) => note.to_string(),
        (false, false) => format!("{text}\n\n{note}"),
    }
}

fn arguments_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "{}".to_string(),
        Some(other) => other.to_string(),
    }
}

/// The complete tool calls of a chat answer, every choice, in order:
/// `tool_calls` and the legacy `function_call`.
pub(crate) fn chat_answer_calls(answer: &Value) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    for choice in answer
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let message = &choice["message"];
        for c in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let id = c.get("id").and_then(Value::as_str).unwrap_or("");
            let name = c
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            calls.push(ToolCall::new(
                id,
                name,
                &arguments_text(c.pointer("/function/arguments")),
            ));
        }
        if let Some(f) = message.get("function_call").filter(|f| f.is_object()) {
            let name = f.get("name").and_then(Value::as_str).unwrap_or("");
            calls.push(ToolCall::new("", name, &arguments_text(f.get("arguments"))));
        }
    }
    calls
}

/// Remove the withheld calls from a chat answer (`verdicts` in the order of
/// [`chat_answer_calls`]): their notes join the message's text, a choice
/// left without calls finishes with `stop`, and `requires_approval` lists
/// them. Returns whether anything was withheld.
pub(crate) fn withhold_in_chat_answer(answer: &mut Value, verdicts: &[Verdict]) -> bool {
    let entries = entries(verdicts);
    if entries.is_empty() {
        return false;
    }
    let mut verdicts = verdicts.iter();
    for choice in answer
        .get_mut("choices")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let mut held = Vec::new();
        let mut kept_any = false;
        let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) else {
            continue;
        };
        if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
            calls.retain(|_| match verdicts.next() {
                Some(Verdict::Withhold { note, .. }) => {
                    held.push(note.clone());
                    false
                }
                _ => {
                    kept_any = true;
                    true
                }
            });
            if calls.is_empty() {
                message.remove("tool_calls");
            }
        }
        if message.get("function_call").is_some_and(Value::is_object) {
            match verdicts.next() {
                Some(Verdict::Withhold { note, .. }) => {
                    held.push(note.clone());
                    message.remove("function_call");
                }
                _ => kept_any = true,
            }
        }
        if held.is_empty() {
            continue;
        }
        let text = message.get("content").and_then(Value::as_str).unwrap_or("");
        let text = append_note(text, &held.join("\n"));
        message.insert("content".into(), Value::String(text));
        if !kept_any {
            choice["finish_reason"] = json!("stop");
        }
    }
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("requires_approval".into(), Value::Array(entries));
    }
    true
}

/// The complete tool calls of a native Responses or Messages answer.
pub(crate) fn native_answer_calls(answer: &Value) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    for item in answer
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match item.get("type").and_then(Value::as_str) {
            Some("function_call") => calls.push(ToolCall::new(
                item.get("call_id").and_then(Value::as_str).unwrap_or(""),
                item.get("name").and_then(Value::as_str).unwrap_or(""),
                &arguments_text(item.get("arguments")),
            )),
            Some("custom_tool_call") => calls.push(ToolCall::new(
                item.get("call_id").and_then(Value::as_str).unwrap_or(""),
                item.get("name").and_then(Value::as_str).unwrap_or(""),
                &json!({"input": item.get("input")}).to_string(),
            )),
            _ => {}
        }
    }
    for block in answer
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if block.get("type").and_then(Value::as_str) == Some("tool_use") {
            calls.push(ToolCall::new(
                block.get("id").and_then(Value::as_str).unwrap_or(""),
                block.get("name").and_then(Value::as_str).unwrap_or(""),
                &arguments_text(block.get("input")),
            ));
        }
    }
    calls
}

/// Remove the withheld calls from a native Responses (`output` items) or
/// Messages (`content` blocks) answer, `verdicts` in the order of
/// [`native_answer_calls`]; the notes become a text item/block and
/// `requires_approval` lists them. Returns whether anything was withheld.
pub(crate) fn withhold_in_native_answer(answer: &mut Value, verdicts: &[Verdict]) -> bool {
    let entries = entries(verdicts);
    if entries.is_empty() {
        return false;
    }
    let note = notes(verdicts);
    let mut verdicts = verdicts.iter();
    let is_call = |v: &Value, kinds: &[&str]| {
        v.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| kinds.contains(&t))
    };
    if let Some(output) = answer.get_mut("output").and_then(Value::as_array_mut) {
        output.retain(|item| {
            !is_call(item, &["function_call", "custom_tool_call"])
                || verdicts.next().is_none_or(Verdict::delivered)
        });
        let id = format!("msg_{:024x}", rand::random::<u128>() >> 32);
        output.push(json!({"id": id, "type": "message", "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": note, "annotations": []}]}));
    }
    if let Some(content) = answer.get_mut("content").and_then(Value::as_array_mut) {
        content.retain(|b| {
            !is_call(b, &["tool_use"]) || verdicts.next().is_none_or(Verdict::delivered)
        });
        let tool_use_left = content.iter().any(|b| is_call(b, &["tool_use"]));
        content.push(json!({"type": "text", "text": note}));
        if !tool_use_left && answer["stop_reason"] == "tool_use" {
            answer["stop_reason"] = json!("end_turn");
        }
    }
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("requires_approval".into(), Value::Array(entries));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_as_patterns_with_namespaces_considered() {
        let hr = HighRisk::new(&["delete_resource".into(), "scale_*".into()]);
        for name in [
            "delete_resource",
            "mcp__k8s__delete_resource",
            "functions.delete_resource",
            "k8s/delete_resource",
            "k8s:delete_resource",
            "scale_deployment",
            "mcp__k8s__scale_statefulset",
        ] {
            assert!(hr.matches(name), "{name}");
        }
        for name in [
            "",
            "delete_resources",
            "undelete_resource",
            "list_resources",
            "scale",
        ] {
            assert!(!hr.matches(name), "{name}");
        }
        assert!(HighRisk::new(&[]).is_empty());
    }

    #[test]
    fn the_same_call_is_the_same_whatever_its_json_spacing() {
        let a = ToolCall::new("c1", "t", "{\"a\": 1, \"b\": 2}");
        let b = ToolCall::new("c2", "t", "```json\n{\"b\":2,\"a\":1}\n```");
        assert_eq!(CallKey::of(None, &a), CallKey::of(None, &b));
        let c = ToolCall::new("c3", "t", "{\"a\": 2}");
        assert_ne!(CallKey::of(None, &a), CallKey::of(None, &c));
    }

    #[test]
    fn withheld_calls_leave_a_chat_answer_in_every_choice_and_legacy_form() {
        let mut answer = json!({"choices": [
            {"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "read", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "delete_resource", "arguments": "{}"}}]},
             "finish_reason": "tool_calls"},
            {"index": 1, "message": {"role": "assistant", "content": "x",
                "function_call": {"name": "delete_resource", "arguments": "{}"}}, "finish_reason": "function_call"}]});
        let calls = chat_answer_calls(&answer);
        assert_eq!(calls.len(), 3);
        let hold = |id: &str| Verdict::Withhold {
            entry: json!({"tool_call_id": id}),
            note: format!("held {id}"),
        };
        let verdicts = vec![Verdict::Deliver, hold("b"), hold("")];
        assert!(withhold_in_chat_answer(&mut answer, &verdicts));
        let text = answer.to_string();
        assert!(!text.contains("\"name\":\"delete_resource\""), "{text}");
        assert_eq!(
            answer["choices"][0]["finish_reason"], "tool_calls",
            "one call remains"
        );
        assert_eq!(answer["choices"][0]["message"]["content"], "held b");
        assert_eq!(answer["choices"][1]["finish_reason"], "stop");
        assert_eq!(answer["choices"][1]["message"]["content"], "x\n\nheld ");
        assert_eq!(answer["requires_approval"].as_array().unwrap().len(), 2);
    }
}
