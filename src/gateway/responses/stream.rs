//! Chat chunks as the Responses stream: the full event sequence with
//! `sequence_number`, high-risk tool calls held back.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{json, Value};

use super::answer::{call_item, message_item, response_object, usage_json};
use super::Echo;
use crate::gateway::surface::{approval_text, new_id, sse_event, unix_now, StreamTranslator};
use crate::gateway::tools::RiskyCall;

/// An output item being streamed.
struct OpenItem {
    /// Output index.
    index: usize,
    id: String,
    kind: OpenKind,
}

enum OpenKind {
    Text(String),
    Call {
        call_id: String,
        name: String,
        arguments: String,
        /// High-risk: nothing of it is sent.
        held: bool,
    },
}

/// Chat chunks → Responses stream events.
pub(crate) struct ResponsesStream {
    echo: Echo,
    high_risk: Vec<String>,
    id: String,
    created: u64,
    seq: u64,
    /// Finished output items with their output index, for `response.completed`.
    done: Vec<(usize, Value)>,
    next_index: usize,
    text: Option<OpenItem>,
    /// Tool calls by their chat `index`.
    calls: Vec<(u64, OpenItem)>,
    finish_reason: Option<String>,
    held: Vec<RiskyCall>,
}

impl ResponsesStream {
    pub fn new(echo: Echo, high_risk: Vec<String>) -> Self {
        ResponsesStream {
            echo,
            high_risk,
            id: new_id("resp_"),
            created: unix_now(),
            seq: 0,
            done: Vec::new(),
            next_index: 0,
            text: None,
            calls: Vec::new(),
            finish_reason: None,
            held: Vec::new(),
        }
    }

    fn emit(&mut self, out: &mut VecDeque<Bytes>, name: &str, mut data: Value) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        sse_event(out, name, &data);
    }

    fn object(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        response_object(
            &self.id,
            self.created,
            &self.echo.model,
            status,
            output,
            usage,
        )
    }

    /// The finished items in output order.
    fn take_output(&mut self) -> Vec<Value> {
        let mut done = std::mem::take(&mut self.done);
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, v)| v).collect()
    }

    fn text_delta(&mut self, delta: &str, out: &mut VecDeque<Bytes>) {
        if self.text.is_none() {
            let item = OpenItem {
                index: self.next_index,
                id: new_id("msg_"),
                kind: OpenKind::Text(String::new()),
            };
            self.next_index += 1;
            let added = json!({"output_index": item.index, "item": {"id": item.id, "type": "message",
                "status": "in_progress", "role": "assistant", "content": []}});
            let part = json!({"item_id": item.id, "output_index": item.index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}});
            self.emit(out, "response.output_item.added", added);
            self.emit(out, "response.content_part.added", part);
            self.text = Some(item);
        }
        let Some(item) = self.text.as_mut() else {
            return;
        };
        if let OpenKind::Text(t) = &mut item.kind {
            t.push_str(delta);
        }
        let data = json!({"item_id": item.id, "output_index": item.index, "content_index": 0, "delta": delta, "logprobs": []});
        self.emit(out, "response.output_text.delta", data);
    }

    fn close_text(&mut self, out: &mut VecDeque<Bytes>) {
        let Some(item) = self.text.take() else { return };
        let OpenKind::Text(text) = &item.kind else {
            return;
        };
        let (id, index) = (item.id.clone(), item.index);
        self.emit(out, "response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
        self.emit(
            out,
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0,
            "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        let done = message_item(&id, text, "completed");
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
        self.done.push((index, done));
    }

    fn call_delta(&mut self, tc: &Value, out: &mut VecDeque<Bytes>) {
        let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
        let name = tc
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = tc
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !self.calls.iter().any(|(i, _)| *i == index) {
            self.close_text(out);
            let held = self.high_risk.iter().any(|h| h == name);
            let call_id = tc
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| new_id("call_"), str::to_string);
            let item = OpenItem {
                index: if held { usize::MAX } else { self.next_index },
                id: new_id("fc_"),
                kind: OpenKind::Call {
                    call_id,
                    name: name.to_string(),
                    arguments: String::new(),
                    held,
                },
            };
            if !held {
                self.next_index += 1;
                let OpenKind::Call { call_id, name, .. } = &item.kind else {
                    return;
                };
                let added = call_item(&self.echo, &item.id, call_id, name, "", "in_progress");
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": item.index, "item": added}),
                );
            }
            self.calls.push((index, item));
        }
        let Some((_, item)) = self.calls.iter_mut().find(|(i, _)| *i == index) else {
            return;
        };
        let OpenKind::Call {
            arguments,
            held,
            name: n,
            ..
        } = &mut item.kind
        else {
            return;
        };
        if n.is_empty() && !name.is_empty() {
            n.push_str(name);
        }
        arguments.push_str(args);
        if !*held && !args.is_empty() {
            let data = json!({"item_id": item.id, "output_index": item.index, "delta": args});
            let custom = self.echo.custom_tools.contains(n.as_str());
            // Custom tool input is only known once complete (it is unwrapped from JSON).
            if !custom {
                self.emit(out, "response.function_call_arguments.delta", data);
            }
        }
    }

    fn close_calls(&mut self, out: &mut VecDeque<Bytes>) {
        for (_, item) in std::mem::take(&mut self.calls) {
            let OpenKind::Call {
                call_id,
                name,
                arguments,
                held,
            } = item.kind
            else {
                continue;
            };
            let arguments = if arguments.trim().is_empty() {
                "{}".to_string()
            } else {
                arguments
            };
            if held {
                self.held.push(RiskyCall {
                    id: call_id,
                    name,
                    arguments: crate::gateway::tools::strip_fences(&arguments).to_string(),
                });
                continue;
            }
            let done = call_item(
                &self.echo,
                &item.id,
                &call_id,
                &name,
                &arguments,
                "completed",
            );
            if done["type"] == "function_call" {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item.id, "output_index": item.index, "arguments": arguments}),
                );
            }
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": item.index, "item": done}),
            );
            self.done.push((item.index, done));
        }
    }
}

impl StreamTranslator for ResponsesStream {
    fn start(&mut self, out: &mut VecDeque<Bytes>) {
        let obj = self.object("in_progress", Vec::new(), Value::Null);
        self.emit(out, "response.created", json!({"response": obj}));
        let obj = self.object("in_progress", Vec::new(), Value::Null);
        self.emit(out, "response.in_progress", json!({"response": obj}));
    }

    fn chunk(&mut self, chunk: &Value, out: &mut VecDeque<Bytes>) {
        let Some(delta) = crate::gateway::surface::chat_delta(chunk) else {
            return;
        };
        if let Some(text) = delta.text {
            self.text_delta(text, out);
        }
        for tc in delta.tool_calls {
            self.call_delta(tc, out);
        }
        if let Some(f) = delta.finish_reason {
            self.finish_reason = Some(f.to_string());
        }
    }

    fn held_back(&self) -> Vec<RiskyCall> {
        let mut held = self.held.clone();
        for (_, item) in &self.calls {
            if let OpenKind::Call {
                call_id,
                name,
                arguments,
                held: true,
            } = &item.kind
            {
                held.push(RiskyCall {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments: crate::gateway::tools::strip_fences(arguments).to_string(),
                });
            }
        }
        held
    }

    fn finish(
        &mut self,
        usage: Option<(u64, u64, u64)>,
        approvals: &[Value],
        out: &mut VecDeque<Bytes>,
    ) {
        let held = self.held_back();
        self.calls
            .retain(|(_, i)| !matches!(i.kind, OpenKind::Call { held: true, .. }));
        if !held.is_empty() {
            let text = approval_text(&held, approvals);
            let prefix = if self.text.is_some() { "\n\n" } else { "" };
            self.text_delta(&format!("{prefix}{text}"), out);
        }
        self.close_text(out);
        self.close_calls(out);
        let incomplete = self.finish_reason.as_deref() == Some("length");
        let status = if incomplete {
            "incomplete"
        } else {
            "completed"
        };
        let output = self.take_output();
        let mut obj = self.object(status, output, usage_json(usage));
        if incomplete {
            obj["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        if !approvals.is_empty() {
            obj["requires_approval"] = Value::Array(approvals.to_vec());
        }
        let name = if incomplete {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, name, json!({"response": obj}));
    }

    fn fail(&mut self, message: &str, out: &mut VecDeque<Bytes>) {
        let output = self.take_output();
        let mut obj = self.object("failed", output, Value::Null);
        obj["error"] = json!({"code": "server_error", "message": message});
        self.emit(out, "response.failed", json!({"response": obj}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_are_complete_and_numbered() {
        let mut s = ResponsesStream::new(
            Echo {
                model: "m".into(),
                ..Echo::default()
            },
            vec!["scale_deployment".into()],
        );
        let mut out = VecDeque::new();
        s.start(&mut out);
        s.chunk(
            &json!({"choices": [{"delta": {"content": "Hel"}}]}),
            &mut out,
        );
        s.chunk(
            &json!({"choices": [{"delta": {"content": "lo"}}]}),
            &mut out,
        );
        s.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "exec_command", "arguments": "{\"cmd\""}}]}}]}), &mut out);
        s.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":\"ls\"}"}}]}}]}), &mut out);
        s.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "scale_deployment", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}), &mut out);
        assert_eq!(s.held_back().len(), 1);
        s.finish(Some((3, 4, 7)), &[json!({"decision_id": "D-1"})], &mut out);
        let events: Vec<Value> = out
            .iter()
            .map(|b| {
                let t = std::str::from_utf8(b).unwrap();
                serde_json::from_str(t.split("data: ").nth(1).unwrap().trim()).unwrap()
            })
            .collect();
        let names: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(names[..2], ["response.created", "response.in_progress"]);
        assert!(names.contains(&"response.function_call_arguments.done"));
        assert_eq!(*names.last().unwrap(), "response.completed");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        let text = serde_json::to_string(&events).unwrap();
        assert!(
            !text.contains("\"name\":\"scale_deployment\""),
            "held-back call leaked"
        );
        let done = &events.last().unwrap()["response"];
        assert_eq!(
            done["id"], events[0]["response"]["id"],
            "one response id throughout"
        );
        assert_eq!(done["usage"]["total_tokens"], 7);
        assert_eq!(done["output"][0]["type"], "message");
        assert_eq!(done["output"][1]["arguments"], "{\"cmd\":\"ls\"}");
        assert_eq!(done["requires_approval"][0]["decision_id"], "D-1");
    }
}
