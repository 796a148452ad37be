//! OpenAI Responses (`POST /v1/responses`) on chat-completions providers.
//!
//! Request: `instructions` → leading system message; `input` (a string or
//! items) → messages: `message` items with `input_text`/`output_text`/
//! `input_image` parts, `function_call` → assistant `tool_calls`,
//! `function_call_output` → `role: tool`; `developer` is `system`. Leading
//! system/developer messages are merged into one system message (Codex
//! sends two; several chat templates accept only one, and only first);
//! a later one becomes a user message. `reasoning` items and items of
//! other kinds are dropped with a debug log. Function tools become chat
//! tools; `custom` (freeform) tools become a function with one string
//! parameter `input` and come back as `custom_tool_call`; other tool kinds
//! (`namespace`, `web_search`, `local_shell`, …) are dropped, not refused.
//! `previous_response_id` / `conversation` are refused: the gateway is
//! stateless.
//!
//! Response: `message` and `function_call` output items, `status`
//! (`completed`, or `incomplete` on `length`), `usage` in Responses names.
//! Streams get the full event sequence with `sequence_number`.

mod answer;
mod request;
mod stream;

pub(crate) use answer::from_chat;
pub(crate) use request::{to_chat, Echo};
pub(crate) use stream::ResponsesStream;
