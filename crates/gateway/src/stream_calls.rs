//! Tool calls in upstream chat streams: [`PendingCalls`] assembles them
//! from their deltas as a client SDK would, so that
//! [`approval::decide`] judges complete calls only (never a first
//! fragment); [`ChatHoldback`] is the stream translator for chat streams
//! that may carry calls, sending them whole once judged.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::approval::{self, ToolCall, Verdict};
use crate::surface::StreamTranslator;

/// One tool call being assembled from stream deltas.
struct PendingCall {
    /// Chat choice index.
    choice: u64,
    /// `tool_calls[].index`; `None` for a legacy `function_call`.
    index: Option<u64>,
    id: String,
    name: String,
    arguments: String,
}

/// Tool calls assembled from chat stream deltas as a client SDK would: per
/// choice and call index, the id from the first delta that has one, name
/// and argument fragments joined in order. Judged only once complete.
#[derive(Default)]
pub(crate) struct PendingCalls {
    calls: Vec<PendingCall>,
}

impl PendingCalls {
    /// A `tool_calls[]` delta of `choice`. A delta without `index` belongs
    /// to the choice's last call, unless it brings a new id.
    pub fn add(&mut self, choice: u64, delta: &Value) {
        let id = delta.get("id").and_then(Value::as_str).unwrap_or("");
        let index = delta.get("index").and_then(Value::as_u64);
        let found = match index {
            Some(i) => self
                .calls
                .iter()
                .rposition(|c| c.choice == choice && c.index == Some(i)),
            None => self
                .calls
                .iter()
                .rposition(|c| c.choice == choice && c.index.is_some())
                .filter(|&at| id.is_empty() || self.calls[at].id == id),
        };
        let at = found.unwrap_or_else(|| {
            let index = index.unwrap_or_else(|| {
                self.calls
                    .iter()
                    .filter(|c| c.choice == choice && c.index.is_some())
                    .count() as u64
            });
            self.calls.push(PendingCall {
                choice,
                index: Some(index),
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
            self.calls.len() - 1
        });
        let function = delta.get("function").unwrap_or(&Value::Null);
        self.extend(at, id, function);
    }

    /// A legacy `function_call` delta of `choice`.
    pub fn add_legacy(&mut self, choice: u64, delta: &Value) {
        let at = match self
            .calls
            .iter()
            .rposition(|c| c.choice == choice && c.index.is_none())
        {
            Some(at) => at,
            None => {
                self.calls.push(PendingCall {
                    choice,
                    index: None,
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                self.calls.len() - 1
            }
        };
        self.extend(at, "", delta);
    }

    fn extend(&mut self, at: usize, id: &str, function: &Value) {
        let call = &mut self.calls[at];
        if call.id.is_empty() {
            call.id = id.to_string();
        }
        if let Some(name) = function.get("name").and_then(Value::as_str) {
            call.name.push_str(name);
        }
        match function.get("arguments") {
            Some(Value::String(a)) => call.arguments.push_str(a),
            Some(Value::Null) | None => {}
            Some(other) => call.arguments.push_str(&other.to_string()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls, complete, in the order they began.
    pub fn complete(&self) -> Vec<ToolCall> {
        self.calls
            .iter()
            .map(|c| {
                let arguments = if c.arguments.trim().is_empty() {
                    "{}"
                } else {
                    &c.arguments
                };
                ToolCall::new(&c.id, &c.name, arguments)
            })
            .collect()
    }
}

/// Chat streams whose request offered tools (with a high-risk list in
/// force): text passes through as it comes, tool-call deltas (every choice,
/// and the legacy `function_call`) are collected, and the closing chunks
/// wait for the end of the provider's stream. Then [`approval::decide`]
/// judges the complete calls: delivered ones go out whole (one delta each),
/// withheld ones are told in a content chunk, and a choice left without
/// calls finishes with `stop`; the finish chunk carries `requires_approval`.
pub(crate) struct ChatHoldback {
    strip_usage_only: bool,
    calls: PendingCalls,
    /// Chunks from the first one with a finish reason on.
    tail: Vec<Value>,
    id: Option<Value>,
    model: Option<Value>,
}

impl ChatHoldback {
    pub fn new(strip_usage_only: bool) -> Self {
        ChatHoldback {
            strip_usage_only,
            calls: PendingCalls::default(),
            tail: Vec::new(),
            id: None,
            model: None,
        }
    }

    fn send(out: &mut VecDeque<Bytes>, chunk: &Value) {
        out.push_back(Bytes::from(format!("data: {chunk}\n\n")));
    }

    fn chunk_with(&self, choice: u64, delta: Value) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "model": self.model,
            "choices": [{"index": choice, "delta": delta, "finish_reason": null}]})
    }
}

impl StreamTranslator for ChatHoldback {
    fn start(&mut self, _out: &mut VecDeque<Bytes>) {}

    fn chunk(&mut self, chunk: &Value, out: &mut VecDeque<Bytes>) {
        let mut chunk = chunk.clone();
        if self.id.is_none() {
            self.id = chunk.get("id").cloned();
            self.model = chunk.get("model").cloned();
        }
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            Self::send(out, &chunk);
            return;
        };
        if choices.is_empty() && self.strip_usage_only {
            return;
        }
        let usage_only = choices.is_empty();
        let mut finished = false;
        let mut carries = false;
        for (position, choice) in choices.iter_mut().enumerate() {
            let n = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            finished |= choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else {
                continue;
            };
            if let Some(calls) = delta.remove("tool_calls") {
                for tc in calls.as_array().into_iter().flatten() {
                    self.calls.add(n, tc);
                }
            }
            if let Some(f) = delta.remove("function_call") {
                self.calls.add_legacy(n, &f);
            }
            carries |= delta.keys().any(|k| k != "role")
                || delta.get("role").is_some() && self.calls.is_empty();
        }
        if finished || !self.tail.is_empty() {
            self.tail.push(chunk);
            return;
        }
        if carries || usage_only || chunk.get("usage").is_some_and(|u| !u.is_null()) {
            Self::send(out, &chunk);
        }
    }

    fn calls(&self) -> Vec<ToolCall> {
        self.calls.complete()
    }

    fn finish(
        &mut self,
        _usage: Option<(u64, u64, u64)>,
        verdicts: &[Verdict],
        out: &mut VecDeque<Bytes>,
    ) {
        let calls = self.calls.complete();
        // Per choice: the next tool_calls index, calls delivered, notes.
        let mut delivered: Vec<u64> = Vec::new();
        let mut held: Vec<u64> = Vec::new();
        let mut next_index: Vec<(u64, u64)> = Vec::new();
        for ((pending, call), verdict) in self.calls.calls.iter().zip(&calls).zip(verdicts) {
            let choice = pending.choice;
            match verdict {
                Verdict::Deliver => {
                    delivered.push(choice);
                    let function = json!({"name": call.name, "arguments": call.arguments});
                    let delta = match pending.index {
                        None => json!({"function_call": function}),
                        Some(_) => {
                            let k = match next_index.iter_mut().find(|(c, _)| *c == choice) {
                                Some((_, k)) => {
                                    *k += 1;
                                    *k - 1
                                }
                                None => {
                                    next_index.push((choice, 1));
                                    0
                                }
                            };
                            json!({"tool_calls": [{"index": k, "id": call.id, "type": "function", "function": function}]})
                        }
                    };
                    Self::send(out, &self.chunk_with(choice, delta));
                }
                Verdict::Withhold { note, .. } => {
                    held.push(choice);
                    let delta = json!({"content": format!("\n\n{note}")});
                    Self::send(out, &self.chunk_with(choice, delta));
                }
            }
        }
        let approvals = approval::entries(verdicts);
        let mut told = false;
        for mut chunk in std::mem::take(&mut self.tail) {
            let mut finishes = false;
            for (position, choice) in chunk
                .get_mut("choices")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let n = choice
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let Some(f) = choice.get_mut("finish_reason").filter(|f| !f.is_null()) else {
                    continue;
                };
                finishes = true;
                if held.contains(&n) && !delivered.contains(&n) {
                    *f = json!("stop");
                }
            }
            if finishes && !told && !approvals.is_empty() {
                chunk["requires_approval"] = Value::Array(approvals.clone());
                told = true;
            }
            Self::send(out, &chunk);
        }
        out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    }

    fn fail(&mut self, message: &str, out: &mut VecDeque<Bytes>) {
        let body = json!({"error": {"message": message, "type": "upstream_error", "code": "stream_interrupted"}});
        Self::send(out, &body);
    }
}
