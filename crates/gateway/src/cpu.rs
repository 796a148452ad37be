//! CPU-heavy steps off the async workers (issue 23, finding 2).
//!
//! Two `count_tokens` calls, each a single 25 MB word, made `/health` take
//! 15 s and stalled the ticker: the tokenizer ran on the async worker (the
//! daemon has one). Parsing a large body and counting tokens now run on
//! tokio's blocking threads through [`CpuPool::run`], at most
//! its size at once (half the machine's cores, at least one, so
//! the async worker always finds a core). A step waits at most [`WAIT`] for a
//! permit, then the request is answered 503.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::{GatewayError, LimitSource};

/// The longest a step waits for a permit.
pub const WAIT: Duration = Duration::from_secs(30);

/// Bodies at least this large are parsed on a blocking thread; smaller ones
/// parse in well under a millisecond.
pub const PARSE_OFF_THREAD_BYTES: usize = 256 * 1024;

/// The largest `count_tokens` body (the gateway's own limit may be lower):
/// past it 413, so one call costs at most this much tokenizer work.
pub const COUNT_TOKENS_MAX_BODY: usize = 8 * 1024 * 1024;

/// The longest run of non-blank text the tokenizer is given at once. Its
/// merge step is quadratic in the length of one such run (a 25 MB "word"
/// took 15 s); a longer run is counted in pieces of this size, which
/// changes an estimate by a token or so per piece and keeps the cost linear.
pub const LONGEST_RUN: usize = 256;

/// The items of a JSON text: array elements plus object members, at every
/// depth, counted in one pass over the bytes without building anything
/// (finding 1: 15 MB of tiny items became 804 MB of parsed values). Text
/// that is not JSON is counted as far as it goes; the parser refuses it later.
pub fn json_items(bytes: &[u8]) -> u64 {
    let mut items = 0u64;
    let mut in_string = false;
    let mut escaped = false;
    // Just after `[` or `{`: the next non-blank byte starts the first item,
    // unless it closes the container.
    let mut opened = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        if opened && !b.is_ascii_whitespace() {
            opened = false;
            if b != b']' && b != b'}' {
                items += 1;
            }
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => opened = true,
            b',' => items += 1,
            _ => {}
        }
    }
    items
}

/// The tokens of `text` with `bpe`, runs of non-blank text longer than
/// [`LONGEST_RUN`] bytes counted piece by piece.
pub fn count_text(bpe: &tiktoken_rs::CoreBPE, text: &str) -> u64 {
    let mut total = 0u64;
    let mut segment = 0usize;
    let mut run: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            run = None;
            continue;
        }
        let start = *run.get_or_insert(i);
        if i + c.len_utf8() - start > LONGEST_RUN {
            total += bpe.encode_ordinary(&text[segment..i]).len() as u64;
            segment = i;
            run = Some(i);
        }
    }
    total + bpe.encode_ordinary(&text[segment..]).len() as u64
}

/// The prompt tokens of a chat body (a client's, or the translation of a
/// Responses or Messages body) with the `o200k_base` BPE: the text of every
/// message, tool call and tool definition, plus 3 tokens of framing per
/// message; an image counts 1,600. Used by `count_tokens` and by budget
/// reservations.
pub fn count_chat(chat: &serde_json::Map<String, serde_json::Value>) -> u64 {
    use serde_json::Value;
    let bpe = tiktoken_rs::o200k_base_singleton();
    let count = |s: &str| count_text(bpe, s);
    let mut n = 0;
    for m in chat["messages"].as_array().into_iter().flatten() {
        n += 3;
        n += count(m["role"].as_str().unwrap_or(""));
        match &m["content"] {
            Value::String(s) => n += count(s),
            Value::Array(parts) => {
                for p in parts {
                    match p.get("text").and_then(Value::as_str) {
                        Some(t) => n += count(t),
                        // An image: Anthropic's rule of thumb for a ~1 MP picture.
                        None => n += 1_600,
                    }
                }
            }
            _ => {}
        }
        for c in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            n += count(
                c.pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            );
            n += count(
                c.pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            );
        }
    }
    if let Some(tools) = chat.get("tools") {
        n += count(&tools.to_string());
    }
    n
}

/// The permits for CPU-heavy steps of one gateway.
#[derive(Debug)]
pub struct CpuPool {
    permits: Arc<Semaphore>,
    size: usize,
}

impl Default for CpuPool {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuPool::new((cores / 2).max(1))
    }
}

impl CpuPool {
    /// A pool running at most `size` steps at once.
    pub fn new(size: usize) -> CpuPool {
        CpuPool {
            permits: Arc::new(Semaphore::new(size.max(1))),
            size: size.max(1),
        }
    }

    /// Runs `step` on a blocking thread once a permit is free.
    pub async fn run<T: Send + 'static>(
        &self,
        step: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GatewayError> {
        let busy = || GatewayError::Unavailable {
            origin: LimitSource::Gateway,
            retry_after: Duration::from_secs(1),
            code: "cpu_busy",
            message: format!(
                "the gateway's CPU-heavy steps (parsing, token counting) are all busy ({} at \
                 once) and none freed up within {}s: retry shortly",
                self.size,
                WAIT.as_secs()
            ),
        };
        let permit = tokio::time::timeout(WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            step()
        })
        .await
        .map_err(|e| GatewayError::BadRequest(format!("the request could not be processed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_counts_as_before_and_a_huge_word_in_linear_time() {
        let bpe = tiktoken_rs::o200k_base_singleton();
        let text = "hello world, this is a longer prompt with ordinary words";
        assert_eq!(
            count_text(bpe, text),
            bpe.encode_ordinary(text).len() as u64
        );
        let word = "a".repeat(1 << 20);
        let started = std::time::Instant::now();
        let n = count_text(bpe, &word);
        assert!(n > 0);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "1 MB word took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn steps_run_off_the_async_thread_at_most_permits_at_once() {
        let pool = Arc::new(CpuPool::new(2));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let caller = std::thread::current().id();
        let steps = (0..6).map(|_| {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            async move {
                pool.run(move || {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = running.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    running.fetch_sub(1, SeqCst);
                    std::thread::current().id()
                })
                .await
                .unwrap()
            }
        });
        let threads = futures_util::future::join_all(steps).await;
        assert!(
            threads.iter().all(|t| *t != caller),
            "ran on the caller's thread"
        );
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
