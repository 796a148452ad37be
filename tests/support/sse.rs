//! A reader of the daemon's event stream (`GET /api/events`, server-sent
//! events) over real HTTP.

use std::time::{Duration, Instant};

use serde_json::Value;

/// One SSE frame.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Reads frames from a streaming response.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    pub async fn open(port: u16, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req =
            reqwest::Client::new().get(format!("http://127.0.0.1:{port}/api/events{query}"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("connect to /api/events");
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next frame, or `None` at the end of the stream or after `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..i + 2).collect();
                let mut f = Frame {
                    event: "message".into(),
                    ..Default::default()
                };
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        f.event = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        f.id = Some(v.trim().into());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        f.data.push_str(v.trim_start());
                    }
                }
                if raw.trim().starts_with(':') && f.data.is_empty() {
                    continue; // comment / keep-alive
                }
                return Some(f);
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// The next blackboard event (skipping heartbeats).
    pub async fn next_event(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let f = self.next(left).await?;
            if f.event == "message" {
                return Some(f);
            }
        }
    }
}
