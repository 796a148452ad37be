//! Reading a request body against the clock (issue 23, finding 3).
//!
//! Two connections that announced 32 MB bodies on `/v1` and then sent one
//! byte a second held the whole body-memory budget for as long as they
//! trickled: every API write and every agent's LLM call got 503, because
//! nothing timed out the reading of a body. The guard now reads every body
//! itself, before any handler, with [`read_body`]:
//!
//! * **a minimum transfer rate**: in every window of [`RATE_WINDOW`] the
//!   client must send `server.body_min_rate` bytes per second on average,
//!   or the request is answered 408 and the connection closed — a 1 byte/s
//!   trickle is cut after one window;
//! * **a whole-body deadline**: the body must be complete within
//!   `server.body_timeout` seconds of the headers, whatever its rate;
//! * **the route's limit**, also for a body without a length (chunked): 413
//!   as soon as it is passed.
//!
//! The memory a body may take is reserved before it is read (see
//! `guard`); a refusal here drops the reservation at once.

use std::time::Duration;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::time::Instant;

/// The window over which the minimum rate is measured.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

/// How long a body may take, and how large it may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    /// The whole body within this time of the headers.
    pub timeout: Duration,
    /// Bytes per second, averaged over each [`RATE_WINDOW`].
    pub min_rate: u64,
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyRefusal {
    /// Larger than the route's limit.
    TooLarge { limit: u64 },
    /// Fewer than `min_rate` bytes per second over a window.
    TooSlow {
        received: u64,
        window: Duration,
        min_rate: u64,
    },
    /// Not complete within the deadline.
    Deadline { received: u64, timeout: Duration },
    /// The connection failed or closed mid-body.
    Broken(String),
}

impl std::fmt::Display for BodyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyRefusal::TooLarge { limit } => {
                write!(f, "request body is larger than the limit of {limit} bytes")
            }
            BodyRefusal::TooSlow {
                received,
                window,
                min_rate,
            } => write!(
                f,
                "request body too slow: {received} bytes in {}s, below server.body_min_rate \
                 ({min_rate} bytes/s)",
                window.as_secs()
            ),
            BodyRefusal::Deadline { received, timeout } => write!(
                f,
                "request body not complete within server.body_timeout ({}s; {received} bytes \
                 received)",
                timeout.as_secs()
            ),
            BodyRefusal::Broken(e) => write!(f, "cannot read the request body: {e}"),
        }
    }
}

/// Reads `body` whole under `rules`, at most `limit` bytes; `expected` is
/// the announced length, if any (only a capacity hint).
pub async fn read_body(
    body: Body,
    rules: BodyRules,
    limit: u64,
    expected: Option<u64>,
) -> Result<Bytes, BodyRefusal> {
    let started = Instant::now();
    let deadline = started + rules.timeout;
    let mut stream = body.into_data_stream();
    // The announced length is reserved already; allocating it at once avoids
    // the doubling copies (a large allocation is mapped, not touched, until
    // the bytes arrive).
    let mut buf = Vec::with_capacity(expected.unwrap_or(0).min(limit) as usize);
    let mut window_start = started;
    let mut window_bytes = 0u64;
    loop {
        let window_end = window_start + RATE_WINDOW;
        match tokio::time::timeout_at(deadline.min(window_end), stream.next()).await {
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyRefusal::Broken(e.to_string())),
            Ok(Some(Ok(chunk))) => {
                let received = buf.len() as u64 + chunk.len() as u64;
                if received > limit {
                    return Err(BodyRefusal::TooLarge { limit });
                }
                window_bytes += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
            }
            Err(_elapsed) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(BodyRefusal::Deadline {
                received: buf.len() as u64,
                timeout: rules.timeout,
            });
        }
        if now >= window_end {
            if window_bytes < rules.min_rate.saturating_mul(RATE_WINDOW.as_secs()) {
                return Err(BodyRefusal::TooSlow {
                    received: window_bytes,
                    window: RATE_WINDOW,
                    min_rate: rules.min_rate,
                });
            }
            window_start = now;
            window_bytes = 0;
        }
    }
    Ok(Bytes::from(buf))
}

/// The items of a JSON text (the gateway's count, also used by the guard).
pub use crate::gateway::json_items;

#[cfg(test)]
mod tests {
    use super::*;

    fn trickle(every: Duration, n: usize) -> Body {
        let chunks = futures_util::stream::unfold(0usize, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
        });
        Body::from_stream(chunks)
    }

    const RULES: BodyRules = BodyRules {
        timeout: Duration::from_secs(60),
        min_rate: 1024,
    };

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_after_one_window() {
        let started = Instant::now();
        let r = read_body(
            trickle(Duration::from_secs(1), 1000),
            RULES,
            1 << 20,
            Some(1000),
        )
        .await;
        assert!(matches!(r, Err(BodyRefusal::TooSlow { .. })), "{r:?}");
        assert!(started.elapsed() <= RATE_WINDOW + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes_and_a_slow_whole_one_meets_the_deadline() {
        let rules = BodyRules {
            timeout: Duration::from_secs(20),
            min_rate: 1,
        };
        let ok = read_body(
            trickle(Duration::from_millis(100), 50),
            rules,
            1 << 20,
            None,
        )
        .await;
        assert_eq!(ok.unwrap().len(), 50);
        // 10 bytes/s passes the rate but not the 20 s deadline.
        let late = read_body(
            trickle(Duration::from_millis(100), 1000),
            rules,
            1 << 20,
            None,
        )
        .await;
        assert!(
            matches!(late, Err(BodyRefusal::Deadline { .. })),
            "{late:?}"
        );
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_without_a_length() {
        let r = read_body(Body::from(vec![b'x'; 2048]), RULES, 1024, None).await;
        assert_eq!(r, Err(BodyRefusal::TooLarge { limit: 1024 }));
    }

    #[test]
    fn json_items_counts_elements_and_members_at_every_depth() {
        assert_eq!(json_items(b"{}"), 0);
        assert_eq!(json_items(b"[ ]"), 0);
        assert_eq!(json_items(br#"{"a": 1}"#), 1);
        assert_eq!(
            json_items(br#"{"a": [1, 2, {"b": [], "c": "x,[{"}], "d": "\"],"}"#),
            7
        );
        let tiny = format!("[{}[]]", "[],".repeat(1000));
        assert_eq!(json_items(tiny.as_bytes()), 1001);
    }
}
