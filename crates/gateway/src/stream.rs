//! Streaming passthrough (`stream: true`).
//!
//! Upstream bytes are forwarded event by event as they arrive: the body is a
//! pull stream, so nothing is read from the upstream faster than the client
//! takes it, and at most one incomplete event ([`MAX_EVENT_BYTES`]) is held.
//! Each complete event is inspected for a `usage` object (the final chunk
//! with `stream_options.include_usage`) for the ledger; when the gateway
//! itself asked for usage, that usage-only chunk is removed again.
//!
//! A chat stream is complete only when the provider said so: a
//! `finish_reason` or `data: [DONE]`. One that ends without either was cut
//! off; the client gets an error in its API's shape (never a clean
//! `[DONE]`, `response.completed` or `message_stop`), and the attempt is
//! booked as failed ([`StreamOutcome`]). The breaker hears of a stream when
//! it ends, not when its headers arrive.
//!
//! The stream owns the rate-lane permit, so its slot is held until the last
//! byte — and released at once when the client disconnects (the body is
//! dropped, which drops the upstream response and closes its connection) or
//! when the upstream stalls for longer than the idle timeout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::Value;

use crate::approval::{self, HighRisk};
use crate::failure::StreamOutcome;
use crate::hooks::BudgetHold;
use crate::hooks::{RunAttribution, TokenUsage};
use crate::lane::LanePermit;
use crate::metrics;
use crate::state::GatewayInner;
use crate::surface::StreamTranslator;
use crate::usage::{cached_of, merge_usage, usage_of};

/// Largest event buffered for inspection; beyond it bytes pass through raw.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Splits SSE bytes into events and extracts usage.
pub(crate) struct SseScanner {
    buf: BytesMut,
    inspect: bool,
    strip_usage_only: bool,
    /// Usage found so far (the last one wins).
    pub usage: Option<(u64, u64, u64)>,
    /// Prompt tokens served from the provider's cache (the largest report).
    pub cached: u64,
    /// The provider said the answer is complete (a finish reason or `[DONE]`).
    pub finished: bool,
}

/// Whether an event of a chat stream says the answer is complete: a
/// `data: [DONE]` line or a non-null `finish_reason`. A text scan, so that
/// passthrough streams are not parsed.
fn marks_finish(text: &str) -> bool {
    if text.lines().any(|l| {
        l.strip_prefix("data:")
            .is_some_and(|d| d.trim() == "[DONE]")
    }) {
        return true;
    }
    const KEY: &str = "\"finish_reason\"";
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        rest = &rest[at + KEY.len()..];
        let value = rest
            .trim_start()
            .strip_prefix(':')
            .map_or("", str::trim_start);
        if !value.is_empty() && !value.starts_with("null") {
            return true;
        }
    }
    false
}

fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

impl SseScanner {
    pub fn new(strip_usage_only: bool) -> Self {
        SseScanner {
            buf: BytesMut::new(),
            inspect: true,
            strip_usage_only,
            usage: None,
            cached: 0,
            finished: false,
        }
    }

    /// Feed upstream bytes; returns the bytes to forward now.
    pub fn push(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) {
        if !self.inspect {
            out.push_back(chunk);
            return;
        }
        self.buf.extend_from_slice(&chunk);
        while let Some(end) = event_end(&self.buf) {
            let event = self.buf.split_to(end).freeze();
            if self.keep(&event) {
                out.push_back(event);
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            // Not SSE as we know it: stop inspecting, pass everything on
            // (and stop judging whether it finished).
            self.inspect = false;
            self.finished = true;
            out.push_back(self.buf.split().freeze());
        }
    }

    /// Upstream ended: flush what is left.
    pub fn finish(&mut self, out: &mut VecDeque<Bytes>) {
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            if self.keep(&rest) {
                out.push_back(rest);
            }
        }
    }

    fn keep(&mut self, event: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(event) else {
            return true;
        };
        if !self.finished && marks_finish(text) {
            self.finished = true;
        }
        if !text.contains("\"usage\"") {
            return true;
        }
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            if let Some(u) = usage_of(&v) {
                self.usage = Some(merge_usage(self.usage, u));
                self.cached = self.cached.max(cached_of(&v));
                let usage_only = v
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.is_empty());
                if self.strip_usage_only && usage_only {
                    return false;
                }
            }
        }
        true
    }
}

/// Everything the body stream needs to finish the books.
pub(crate) struct StreamContext {
    /// Re-cut the upstream chat stream into another API's events (tool
    /// calls collected whole and judged at the end); `None` passes bytes
    /// through.
    pub translate: Option<Box<dyn StreamTranslator>>,
    pub gateway: Arc<GatewayInner>,
    pub attribution: Option<RunAttribution>,
    pub provider: String,
    pub model: String,
    pub permit: Option<LanePermit>,
    pub first_byte: Duration,
    pub idle: Duration,
    /// Keep-alive interval for translators that have a ping event.
    pub ping: Duration,
    pub strip_usage_only: bool,
    /// The upstream speaks chat completions, so the stream must say it
    /// finished. Native Responses/Messages streams are passed on as they are.
    pub chat_stream: bool,
    /// The breaker's verdict on this attempt, given when the stream ends.
    pub outcome: StreamOutcome,
    /// The high-risk tool names in force for the provider.
    pub high_risk: HighRisk,
    /// The call's budget reservation: released when the stream ends, after
    /// its usage was booked. Only held: dropping it is what releases it.
    #[allow(dead_code)]
    pub budget: Option<Arc<BudgetHold>>,
}

struct State {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    scanner: SseScanner,
    pending: VecDeque<Bytes>,
    ctx: StreamContext,
    received_any: bool,
    done: bool,
    /// Translated streams: bytes of the upstream event being assembled.
    raw: BytesMut,
    /// Translated streams: the upstream finished normally (approvals and
    /// the closing events are still to come).
    ended: bool,
    last_data: tokio::time::Instant,
}

impl State {
    fn book_usage(&mut self) {
        if let Some((prompt, completion, total)) = self.scanner.usage.take() {
            let usage = TokenUsage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: total,
                model: self.ctx.model.clone(),
                provider: self.ctx.provider.clone(),
                cached_tokens: self.scanner.cached,
                cost_usd: None,
            };
            self.ctx
                .gateway
                .record_usage(self.ctx.attribution.as_ref(), usage);
        }
    }
}

fn error_event(message: &str) -> Bytes {
    let body = serde_json::json!({"error": {"message": message, "type": "upstream_error", "code": "stream_interrupted"}});
    Bytes::from(format!("data: {body}\n\n"))
}

/// Turn an upstream streaming response into the client's body stream.
pub(crate) fn passthrough(
    resp: reqwest::Response,
    mut ctx: StreamContext,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let mut pending = VecDeque::new();
    if let Some(t) = ctx.translate.as_mut() {
        // Opening events go out at once, before the upstream's first byte.
        t.start(&mut pending);
    }
    let state = State {
        upstream: resp.bytes_stream().boxed(),
        scanner: SseScanner::new(ctx.strip_usage_only),
        pending,
        ctx,
        received_any: false,
        done: false,
        raw: BytesMut::new(),
        ended: false,
        last_data: tokio::time::Instant::now(),
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(bytes) = st.pending.pop_front() {
                return Some((Ok(bytes), st));
            }
            if st.ended {
                st.ended = false;
                st.finish_translation().await;
                continue;
            }
            if st.done {
                st.book_usage();
                // Free the lane slot before the stream value is dropped.
                st.ctx.permit.take();
                return None;
            }
            let limit = if st.received_any { st.ctx.idle } else { st.ctx.first_byte };
            let ping = st.ctx.translate.as_ref().and_then(|t| t.ping());
            let silent = st.last_data.elapsed();
            let wait = match &ping {
                Some(_) => limit.saturating_sub(silent).min(st.ctx.ping),
                None => limit,
            };
            match tokio::time::timeout(wait, st.upstream.next()).await {
                Ok(Some(Ok(bytes))) => {
                    st.received_any = true;
                    st.last_data = tokio::time::Instant::now();
                    if st.ctx.translate.is_some() {
                        st.translate(bytes);
                    } else {
                        st.scanner.push(bytes, &mut st.pending);
                    }
                }
                Ok(Some(Err(e))) => {
                    metrics::upstream_error(&st.ctx.provider, "reset");
                    tracing::warn!(provider = %st.ctx.provider, model = %st.ctx.model, error = %e, "upstream stream broke");
                    st.fail(&format!("upstream stream broke: {e}"));
                }
                Ok(None) => {
                    if st.ctx.translate.is_some() {
                        st.translate_rest();
                    } else {
                        st.scanner.finish(&mut st.pending);
                    }
                    if st.done {
                        // An error event already ended it.
                    } else if st.ctx.chat_stream && !st.scanner.finished {
                        metrics::upstream_error(&st.ctx.provider, "truncated");
                        tracing::warn!(provider = %st.ctx.provider, model = %st.ctx.model, "upstream stream ended without a finish reason");
                        st.fail("upstream stream ended before the answer was finished (no finish_reason, no [DONE]): the answer is truncated");
                    } else {
                        st.ctx.outcome.success();
                        st.ended = st.ctx.translate.is_some();
                        st.done = true;
                    }
                }
                Err(_) if ping.is_some() && st.last_data.elapsed() < limit => {
                    st.pending.extend(ping);
                }
                Err(_) => {
                    metrics::upstream_error(&st.ctx.provider, "timeout");
                    tracing::warn!(provider = %st.ctx.provider, model = %st.ctx.model, "upstream stream stalled");
                    st.fail(&format!(
                        "upstream stream stalled: no data for {:.1}s",
                        limit.as_secs_f64()
                    ));
                }
            }
        }
    })
    .boxed()
}

impl State {
    /// The upstream broke or stalled: end the client's stream with an error
    /// in its own shape.
    fn fail(&mut self, message: &str) {
        let (model, attribution) = (&self.ctx.model, self.ctx.attribution.as_ref());
        self.ctx.outcome.failure(attribution, model, message);
        match self.ctx.translate.as_mut() {
            Some(t) => t.fail(message, &mut self.pending),
            None => {
                self.scanner.finish(&mut self.pending);
                self.pending.push_back(error_event(message));
            }
        }
        self.done = true;
    }

    /// Feed upstream bytes to the translator, event by event.
    fn translate(&mut self, bytes: Bytes) {
        self.raw.extend_from_slice(&bytes);
        while let Some(end) = event_end(&self.raw) {
            let event = self.raw.split_to(end).freeze();
            self.translate_event(&event);
            if self.done {
                return;
            }
        }
        if self.raw.len() > MAX_EVENT_BYTES {
            self.raw.clear();
            self.fail("upstream sent an event larger than the gateway accepts");
        }
    }

    fn translate_rest(&mut self) {
        if !self.raw.is_empty() {
            let rest = self.raw.split().freeze();
            self.translate_event(&rest);
        }
    }

    fn translate_event(&mut self, event: &[u8]) {
        let Ok(text) = std::str::from_utf8(event) else {
            return;
        };
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                continue;
            };
            if data == "[DONE]" {
                self.scanner.finished = true;
            }
            if data.is_empty() || data == "[DONE]" {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                tracing::debug!(provider = %self.ctx.provider, "skipping an upstream stream event that is not JSON");
                continue;
            };
            if let Some(err) = v.get("error") {
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| err.to_string(), str::to_string);
                self.fail(&format!("upstream error mid-stream: {message}"));
                return;
            }
            if let Some(u) = usage_of(&v) {
                self.scanner.usage = Some(u);
                self.scanner.cached = cached_of(&v);
            }
            let finish = v.get("choices").and_then(Value::as_array).is_some_and(|c| {
                c.iter()
                    .any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))
            });
            self.scanner.finished |= finish;
            if let Some(t) = self.ctx.translate.as_mut() {
                t.chunk(&v, &mut self.pending);
            }
        }
    }

    /// Upstream ended: the complete tool calls are judged, then the
    /// closing events (delivered calls, notes for withheld ones).
    async fn finish_translation(&mut self) {
        let Some(t) = self.ctx.translate.as_ref() else {
            return;
        };
        let calls = t.calls();
        let gw = self.ctx.gateway.clone();
        let attribution = self.ctx.attribution.as_ref();
        let verdicts =
            approval::decide(gw.approval_desk(), &self.ctx.high_risk, attribution, &calls).await;
        let usage = self.scanner.usage;
        if let Some(t) = self.ctx.translate.as_mut() {
            t.finish(usage, &verdicts, &mut self.pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks_and_strips_injected_usage() {
        let mut s = SseScanner::new(true);
        let mut out = VecDeque::new();
        s.push(
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n"),
            &mut out,
        );
        assert!(out.is_empty());
        s.push(Bytes::from_static(b"\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\ndata: [DONE]\n\n"), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].starts_with(b"data: {\"choices\":[{"));
        assert_eq!(&out[1][..], b"data: [DONE]\n\n");
        assert_eq!(s.usage, Some((3, 5, 8)));
    }

    #[test]
    fn keeps_usage_chunk_when_client_asked_and_handles_crlf() {
        let mut s = SseScanner::new(false);
        let mut out = VecDeque::new();
        s.push(Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.usage, Some((1, 2, 3)));
    }
}
