//! Chat chunks as the Anthropic Messages stream. Text streams as it comes;
//! tool calls are collected whole and sent as `tool_use` blocks when the
//! provider's stream ended and [`approval`] judged them.
//!
//! [`approval`]: crate::approval

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{json, Value};

use super::answer::{stop_reason, usage_json};
use crate::approval::{self, ToolCall, Verdict};
use crate::stream_calls::PendingCalls;
use crate::surface::{new_id, sse_event, StreamTranslator};

/// Chat chunks → Anthropic stream events.
pub(crate) struct MessagesStream {
    model: String,
    next_block: usize,
    /// The open text block's index.
    open_text: Option<usize>,
    calls: PendingCalls,
    finish_reason: Option<String>,
    any_text: bool,
}

impl MessagesStream {
    pub fn new(model: String) -> Self {
        MessagesStream {
            model,
            next_block: 0,
            open_text: None,
            calls: PendingCalls::default(),
            finish_reason: None,
            any_text: false,
        }
    }

    fn close_text(&mut self, out: &mut VecDeque<Bytes>) {
        if let Some(index) = self.open_text.take() {
            sse_event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn text(&mut self, text: &str, out: &mut VecDeque<Bytes>) {
        let index = match self.open_text {
            Some(index) => index,
            None => {
                let index = self.next_block;
                self.next_block += 1;
                sse_event(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "text", "text": ""}}),
                );
                self.open_text = Some(index);
                index
            }
        };
        self.any_text = true;
        sse_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": text}}),
        );
    }

    /// One complete call as a `tool_use` block.
    fn send_call(&mut self, call: &ToolCall, out: &mut VecDeque<Bytes>) {
        let index = self.next_block;
        self.next_block += 1;
        let id = if call.id.is_empty() {
            new_id("toolu_")
        } else {
            call.id.clone()
        };
        sse_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": call.name, "input": {}}}),
        );
        sse_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": call.arguments}}),
        );
        sse_event(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
    }
}

impl StreamTranslator for MessagesStream {
    fn start(&mut self, out: &mut VecDeque<Bytes>) {
        sse_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
            "id": new_id("msg_"), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage_json(None)}}),
        );
    }

    fn chunk(&mut self, chunk: &Value, out: &mut VecDeque<Bytes>) {
        let Some(delta) = crate::surface::chat_delta(chunk) else {
            return;
        };
        if let Some(text) = delta.text {
            self.text(text, out);
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
            let text = if self.any_text {
                format!("\n\n{note}")
            } else {
                note
            };
            self.text(&text, out);
        }
        self.close_text(out);
        let calls = self.calls.complete();
        let mut tool_use = false;
        for (call, verdict) in calls.iter().zip(verdicts) {
            if verdict.delivered() {
                self.send_call(call, out);
                tool_use = true;
            }
        }
        let finish = if !tool_use && !calls.is_empty() {
            // Every call was withheld: the turn ends with the note.
            Some("stop")
        } else {
            self.finish_reason.as_deref()
        };
        let (i, o, _) = usage.unwrap_or((0, 0, 0));
        let mut delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(finish, tool_use), "stop_sequence": null},
            "usage": {"input_tokens": i, "output_tokens": o}});
        let approvals = approval::entries(verdicts);
        if !approvals.is_empty() {
            delta["requires_approval"] = Value::Array(approvals);
        }
        sse_event(out, "message_delta", &delta);
        sse_event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn fail(&mut self, message: &str, out: &mut VecDeque<Bytes>) {
        sse_event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        );
    }

    fn ping(&self) -> Option<Bytes> {
        Some(Bytes::from_static(
            b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
        ))
    }
}
