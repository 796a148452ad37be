//! Anthropic Messages (`POST /v1/messages`) on chat-completions providers.
//!
//! Request: `system` (string or text blocks) → leading system message;
//! `messages` with content blocks `text`, `image` (base64 or url →
//! `image_url`), `tool_use` → assistant `tool_calls`, `tool_result` →
//! `role: tool` (sent before the rest of that user turn). A `system`-role
//! message inside `messages` (Claude Code) is merged into the system
//! message while it leads, else sent as a user message. `tools` with
//! `input_schema` → function tools (server tools without a schema, such as
//! `web_search_…`, are dropped); `tool_choice` auto/any/tool/none →
//! auto/required/function/none; `max_tokens`, `stop_sequences` → `stop`,
//! `temperature`, `top_p`. Dropped: `thinking` (and thinking blocks),
//! `metadata`, `top_k`, `context_management`, `output_config`,
//! `cache_control`, `service_tier`.
//!
//! Response: `{type: "message", role, model, content: [text | tool_use],
//! stop_reason, usage}`; streams get `message_start`,
//! `content_block_start/delta/stop`, `message_delta`, `message_stop`, and
//! `ping` while the upstream is silent.

mod answer;
mod request;
mod stream;

pub(crate) use answer::from_chat;
pub(crate) use request::{count_tokens, to_chat};
pub(crate) use stream::MessagesStream;
