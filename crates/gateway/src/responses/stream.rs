//! Chat chunks as the Responses stream: the full event sequence with
//! `sequence_number`. Text streams as it comes; tool calls are collected
//! whole and sent when the provider's stream ended and [`approval`] judged
//! them (a high-risk call is never sent unapproved, and never judged on a
//! first fragment).
//!
//! [`approval`]: crate::approval

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{json, Value};

use super::answer::{call_item, message_item, response_object, usage_json};
use super::Echo;
use crate::approval::{self, ToolCall, Verdict};
use crate::stream_calls::PendingCalls;
use crate::surface::{new_id, sse_event, unix_now, StreamTranslator};

/// The text item being streamed.
struct OpenText {
    /// Output index.
    index: usize,
    id: String,
    text: String,
}

/// Chat chunks → Responses stream events.
pub(crate) struct ResponsesStream {
    echo: Echo,
    id: String,
    created: u64,
    seq: u64,
    /// Finished output items with their output index, for `response.completed`.
    done: Vec<(usize, Value)>,
    next_index: usize,
    text: Option<OpenText>,
    /// Tool calls of the answer, assembled from their deltas.
    calls: PendingCalls,
    finish_reason: Option<String>,
}

impl ResponsesStream {
    pub fn new(echo: Echo) -> Self {
        ResponsesStream {
            echo,
            id: new_id("resp_"),
            created: unix_now(),
            seq: 0,
            done: Vec::new(),
            next_index: 0,
            text: None,
            calls: PendingCalls::default(),
            finish_reason: None,
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
            let item = OpenText {
                index: self.next_index,
                id: new_id("msg_"),
                text: String::new(),
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
        item.text.push_str(delta);
        let data = json!({"item_id": item.id, "output_index": item.index, "content_index": 0, "delta": delta, "logprobs": []});
        self.emit(out, "response.output_text.delta", data);
    }

    fn close_text(&mut self, out: &mut VecDeque<Bytes>) {
        let Some(OpenText { index, id, text }) = self.text.take() else {
            return;
        };
        self.emit(out, "response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
        self.emit(
            out,
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0,
            "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        let done = message_item(&id, &text, "completed");
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
        self.done.push((index, done));
    }

    /// One complete call, as its whole event sequence.
    fn send_call(&mut self, call: &ToolCall, out: &mut VecDeque<Bytes>) {
        let (index, item_id) = (self.next_index, new_id("fc_"));
        self.next_index += 1;
        let arguments = if call.arguments.trim().is_empty() {
            "{}"
        } else {
            call.arguments.as_str()
        };
        let added = call_item(
            &self.echo,
            &item_id,
            &call.id,
            &call.name,
            "",
            "in_progress",
        );
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        let done = call_item(
            &self.echo,
            &item_id,
            &call.id,
            &call.name,
            arguments,
            "completed",
        );
        if done["type"] == "function_call" {
            self.emit(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": index, "delta": arguments}),
            );
            self.emit(
                out,
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": index, "arguments": arguments}),
            );
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
        self.done.push((index, done));
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
        let Some(delta) = crate::surface::chat_delta(chunk) else {
            return;
        };
        if let Some(text) = delta.text {
            self.text_delta(text, out);
        }
        for tc in delta.tool_calls {
            self.calls.add(0, tc);
        }
        if let Some(f) = delta.finish_reason {
            self.finish_reason = Some(f.to_string());
        }
    }

    fn calls(&self) -> Vec<ToolCall> {
        self.calls.complete()
    }

    fn finish(
        &mut self,
        usage: Option<(u64, u64, u64)>,
        verdicts: &[Verdict],
        out: &mut VecDeque<Bytes>,
    ) {
        let note = approval::notes(verdicts);
        if !note.is_empty() {
            let prefix = if self.text.is_some() { "\n\n" } else { "" };
            self.text_delta(&format!("{prefix}{note}"), out);
        }
        self.close_text(out);
        let calls = self.calls.complete();
        for (call, verdict) in calls.iter().zip(verdicts) {
            if verdict.delivered() {
                self.send_call(call, out);
            }
        }
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
        let approvals = approval::entries(verdicts);
        if !approvals.is_empty() {
            obj["requires_approval"] = Value::Array(approvals);
        }
        let name = if incomplete {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, name, json!({"response": obj}));
    }

    /// `response.failed` (what Codex reads). The same error also sits at the
    /// top level of the event: the OpenAI SDKs raise `APIError` on a stream
    /// event with an `error` member and would otherwise hand the failure
    /// over as one more event.
    fn fail(&mut self, message: &str, out: &mut VecDeque<Bytes>) {
        self.close_text(out);
        let output = self.take_output();
        let mut obj = self.object("failed", output, Value::Null);
        let error = json!({"code": "server_error", "message": message});
        obj["error"] = error.clone();
        self.emit(
            out,
            "response.failed",
            json!({"response": obj, "error": error}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_are_complete_and_numbered() {
        let mut s = ResponsesStream::new(Echo {
            model: "m".into(),
            ..Echo::default()
        });
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
        let calls = s.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].name, "scale_deployment");
        let held = Verdict::Withhold {
            entry: json!({"decision_id": "D-1"}),
            note: "held: wait for D-1".into(),
        };
        s.finish(Some((3, 4, 7)), &[Verdict::Deliver, held], &mut out);
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
