//! Chat chunks as the Anthropic Messages stream.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{json, Value};

use super::answer::{stop_reason, usage_json};
use crate::gateway::surface::{approval_text, new_id, sse_event, StreamTranslator};
use crate::gateway::tools::RiskyCall;

/// Open content block of a stream.
enum Block {
    Text,
    Tool {
        id: String,
        name: String,
        arguments: String,
        /// High-risk: nothing of it is sent.
        held: bool,
    },
}

/// Chat chunks → Anthropic stream events.
pub(crate) struct MessagesStream {
    model: String,
    high_risk: Vec<String>,
    next_block: usize,
    /// The open block: its index and kind.
    open: Option<(usize, Block)>,
    /// Tool calls by chat index → block index (`usize::MAX` when held).
    calls: Vec<(u64, usize)>,
    held: Vec<RiskyCall>,
    finish_reason: Option<String>,
    tool_use: bool,
    any_text: bool,
}

impl MessagesStream {
    pub fn new(model: String, high_risk: Vec<String>) -> Self {
        MessagesStream {
            model,
            high_risk,
            next_block: 0,
            open: None,
            calls: Vec::new(),
            held: Vec::new(),
            finish_reason: None,
            tool_use: false,
            any_text: false,
        }
    }

    fn close(&mut self, out: &mut VecDeque<Bytes>) {
        match self.open.take() {
            Some((
                _,
                Block::Tool {
                    id,
                    name,
                    arguments,
                    held: true,
                },
            )) => self.held.push(RiskyCall {
                id,
                name,
                arguments: crate::gateway::tools::strip_fences(&arguments).to_string(),
            }),
            Some((index, _)) => sse_event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ),
            None => {}
        }
    }

    fn text(&mut self, text: &str, out: &mut VecDeque<Bytes>) {
        if !matches!(self.open, Some((_, Block::Text))) {
            self.close(out);
            let index = self.next_block;
            self.next_block += 1;
            sse_event(
                out,
                "content_block_start",
                &json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}}),
            );
            self.open = Some((index, Block::Text));
        }
        self.any_text = true;
        let index = self.open.as_ref().map_or(0, |(i, _)| *i);
        sse_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": text}}),
        );
    }

    fn tool(&mut self, tc: &Value, out: &mut VecDeque<Bytes>) {
        let chat_index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
        let args = tc
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !self.calls.iter().any(|(i, _)| *i == chat_index) {
            self.close(out);
            let name = tc
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let id = tc
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| new_id("toolu_"), str::to_string);
            let held = self.high_risk.contains(&name);
            let index = if held { usize::MAX } else { self.next_block };
            if !held {
                self.next_block += 1;
                self.tool_use = true;
                sse_event(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                );
            }
            self.calls.push((chat_index, index));
            self.open = Some((
                index,
                Block::Tool {
                    id,
                    name,
                    arguments: String::new(),
                    held,
                },
            ));
        }
        let Some((
            index,
            Block::Tool {
                arguments, held, ..
            },
        )) = self.open.as_mut()
        else {
            return;
        };
        arguments.push_str(args);
        if !*held && !args.is_empty() {
            sse_event(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": *index,
                "delta": {"type": "input_json_delta", "partial_json": args}}),
            );
        }
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
        let Some(delta) = crate::gateway::surface::chat_delta(chunk) else {
            return;
        };
        if let Some(text) = delta.text {
            self.text(text, out);
        }
        for tc in delta.tool_calls {
            self.tool(tc, out);
        }
        if let Some(f) = delta.finish_reason {
            self.finish_reason = Some(f.to_string());
        }
    }

    fn held_back(&self) -> Vec<RiskyCall> {
        let mut held = self.held.clone();
        if let Some((
            _,
            Block::Tool {
                id,
                name,
                arguments,
                held: true,
            },
        )) = &self.open
        {
            held.push(RiskyCall {
                id: id.clone(),
                name: name.clone(),
                arguments: crate::gateway::tools::strip_fences(arguments).to_string(),
            });
        }
        held
    }

    fn finish(
        &mut self,
        usage: Option<(u64, u64, u64)>,
        approvals: &[Value],
        out: &mut VecDeque<Bytes>,
    ) {
        self.close(out);
        if !self.held.is_empty() {
            let text = approval_text(&self.held.clone(), approvals);
            let text = if self.any_text {
                format!("\n\n{text}")
            } else {
                text
            };
            self.text(&text, out);
            self.close(out);
        }
        let finish = if !self.held.is_empty() && !self.tool_use {
            Some("stop")
        } else {
            self.finish_reason.as_deref()
        };
        let (i, o, _) = usage.unwrap_or((0, 0, 0));
        let mut delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(finish, self.tool_use), "stop_sequence": null},
            "usage": {"input_tokens": i, "output_tokens": o}});
        if !approvals.is_empty() {
            delta["requires_approval"] = Value::Array(approvals.to_vec());
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
