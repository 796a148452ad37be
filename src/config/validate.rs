//! Range checks for [`Config`](super::Config) and the line finder used to point
//! at the offending key.

use super::{parse_size, Config};

impl Config {
    /// Checks every value against its allowed range, section by section in
    /// file order. On failure returns the dotted key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.validate_daemon()?;
        self.validate_queues()?;
        self.validate_server()?;
        self.validate_webhooks()?;
        super::allow_hosts::AllowHosts::parse(&self.sandbox.allow_hosts)
            .map_err(|e| ("sandbox.allow_hosts".to_string(), e))?;
        self.budgets.validate()?;
        if let Some(max) = self.cluster.max_agents {
            check(
                (1..=100_000).contains(&max),
                "cluster.max_agents",
                format!("must be between 1 and 100000, got {max}"),
            )?;
        }
        self.gateway
            .validate()
            .map_err(|e| (e.key.clone(), e.reason.clone()))?;
        Ok(())
    }

    /// `daemon:`.
    fn validate_daemon(&self) -> Result<(), (String, String)> {
        let d = &self.daemon;
        check(
            (1..=86_400).contains(&d.tick_interval),
            "daemon.tick_interval",
            format!(
                "must be between 1 and 86400 seconds, got {}",
                d.tick_interval
            ),
        )?;
        check(
            (1..=7 * 86_400).contains(&d.task_timeout),
            "daemon.task_timeout",
            format!(
                "must be between 1 and 604800 seconds, got {}",
                d.task_timeout
            ),
        )?;
        check(
            (1..=1024).contains(&d.max_global_agents),
            "daemon.max_global_agents",
            format!("must be between 1 and 1024, got {}", d.max_global_agents),
        )?;
        check(
            (1..=1024).contains(&d.max_per_agent),
            "daemon.max_per_agent",
            format!("must be between 1 and 1024, got {}", d.max_per_agent),
        )?;
        check(
            d.zombie_threshold >= 1,
            "daemon.zombie_threshold",
            "must be at least 1",
        )?;
        check(
            d.kill_grace <= 600,
            "daemon.kill_grace",
            format!("must be at most 600 seconds, got {}", d.kill_grace),
        )?;
        check(
            !d.retry_backoff.is_empty() && d.retry_backoff.iter().all(|s| *s <= 86_400),
            "daemon.retry_backoff",
            format!(
                "must list at least one wait, each at most 86400 seconds, got {:?}",
                d.retry_backoff
            ),
        )?;
        check(
            d.reserved_urgent_slots <= 64,
            "daemon.reserved_urgent_slots",
            format!("must be at most 64, got {}", d.reserved_urgent_slots),
        )?;
        let a = &d.admission;
        check(
            a.demand_prior.is_finite() && a.demand_prior > 0.0 && a.demand_prior <= 10_000.0,
            "daemon.admission.demand_prior",
            format!(
                "must be a positive number of calls per minute (at most 10000), got {}",
                a.demand_prior
            ),
        )?;
        check(
            a.headroom.is_finite() && (1.0..=10.0).contains(&a.headroom),
            "daemon.admission.headroom",
            format!("must be between 1 and 10, got {}", a.headroom),
        )?;
        Ok(())
    }

    /// `inbox:`, `review:`, `backup:`, `experience:`.
    fn validate_queues(&self) -> Result<(), (String, String)> {
        let i = &self.inbox;
        check(
            i.watch_interval > 0.0 && i.watch_interval <= 60.0,
            "inbox.watch_interval",
            format!("must be > 0 and <= 60 seconds, got {}", i.watch_interval),
        )?;
        check(
            i.max_size_bytes >= 1024,
            "inbox.max_size_bytes",
            format!("must be at least 1024, got {}", i.max_size_bytes),
        )?;
        check(
            (256..=64 * 1024 * 1024).contains(&i.max_line_bytes),
            "inbox.max_line_bytes",
            format!("must be between 256 and 67108864, got {}", i.max_line_bytes),
        )?;
        check(
            !i.path.as_os_str().is_empty(),
            "inbox.path",
            "must not be empty",
        )?;
        let r = &self.review;
        check(
            (1..=100).contains(&r.default_max_rounds),
            "review.default_max_rounds",
            format!("must be between 1 and 100, got {}", r.default_max_rounds),
        )?;
        check(
            (1..=100).contains(&r.debate_max_rounds),
            "review.debate_max_rounds",
            format!("must be between 1 and 100, got {}", r.debate_max_rounds),
        )?;
        check(
            (0.0..=1.0).contains(&r.confidence_threshold),
            "review.confidence_threshold",
            format!("must be between 0 and 1, got {}", r.confidence_threshold),
        )?;
        let policy = r.unstaffed_policy();
        check(
            policy.is_ok(),
            "review.unstaffed_seat",
            policy.err().unwrap_or_default(),
        )?;
        let b = &self.backup;
        check(
            b.interval_minutes <= 10_080,
            "backup.interval_minutes",
            format!(
                "must be between 0 (off) and 10080 (a week), got {}",
                b.interval_minutes
            ),
        )?;
        check(
            (1..=10_000).contains(&b.keep),
            "backup.keep",
            format!("must be between 1 and 10000, got {}", b.keep),
        )?;
        let e = &self.experience;
        check(
            (2..=1000).contains(&e.distill_threshold),
            "experience.distill_threshold",
            format!("must be between 2 and 1000, got {}", e.distill_threshold),
        )?;
        check(
            (1..=3650).contains(&e.expire_days),
            "experience.expire_days",
            format!("must be between 1 and 3650, got {}", e.expire_days),
        )?;
        Ok(())
    }

    /// `server:` and `logging:`.
    fn validate_server(&self) -> Result<(), (String, String)> {
        check(
            self.server.bind.parse::<std::net::SocketAddr>().is_ok(),
            "server.bind",
            format!(
                "must be host:port with an IP address, got {:?}",
                self.server.bind
            ),
        )?;
        check(
            (1..=1_000_000).contains(&self.server.max_connections),
            "server.max_connections",
            format!(
                "must be between 1 and 1000000, got {}",
                self.server.max_connections
            ),
        )?;
        check(
            (1..=3600).contains(&self.server.header_timeout),
            "server.header_timeout",
            format!(
                "must be between 1 and 3600 seconds, got {}",
                self.server.header_timeout
            ),
        )?;
        check(
            parse_size(&self.server.max_body_memory).is_some_and(|n| n >= 1024 * 1024),
            "server.max_body_memory",
            format!(
                "must be a size like 128MB (at least 1MB), got {:?}",
                self.server.max_body_memory
            ),
        )?;
        check(
            (1..=3600).contains(&self.server.body_timeout),
            "server.body_timeout",
            format!(
                "must be between 1 and 3600 seconds, got {}",
                self.server.body_timeout
            ),
        )?;
        check(
            parse_size(&self.server.body_min_rate).is_some_and(|n| n <= 1024 * 1024 * 1024),
            "server.body_min_rate",
            format!(
                "must be a size per second like 1KB (0 turns the check off; at most 1GB), got {:?}",
                self.server.body_min_rate
            ),
        )?;
        check(
            (1..=1_000_000).contains(&self.server.max_requests_per_client),
            "server.max_requests_per_client",
            format!(
                "must be between 1 and 1000000, got {}",
                self.server.max_requests_per_client
            ),
        )?;
        check(
            (100..=100_000_000).contains(&self.server.max_body_items),
            "server.max_body_items",
            format!(
                "must be between 100 and 100000000, got {}",
                self.server.max_body_items
            ),
        )?;
        for h in &self.server.allowed_hosts {
            check(
                !h.trim().is_empty() && !h.contains(['/', ' ', '@']),
                "server.allowed_hosts",
                format!("each entry must be a host name or host:port, got {h:?}"),
            )?;
        }
        check(
            ["trace", "debug", "info", "warn", "error"].contains(&self.logging.level.as_str()),
            "logging.level",
            format!(
                "must be one of trace, debug, info, warn, error; got {:?}",
                self.logging.level
            ),
        )?;
        check(
            parse_size(&self.logging.max_file_size).is_some_and(|n| n >= 1024),
            "logging.max_file_size",
            format!(
                "must be a size like 10MB (at least 1KB), got {:?}",
                self.logging.max_file_size
            ),
        )?;
        Ok(())
    }

    /// `notifications.webhooks`.
    fn validate_webhooks(&self) -> Result<(), (String, String)> {
        for (i, w) in self.notifications.webhooks.iter().enumerate() {
            let key = "notifications.webhooks";
            let url_ok = reqwest::Url::parse(&w.url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            check(
                url_ok,
                key,
                format!(
                    "entry {i}: url must be an http:// or https:// URL, got {:?}",
                    w.url
                ),
            )?;
            check(
                !w.levels.is_empty(),
                key,
                format!("entry {i}: levels must name at least one level"),
            )?;
            check(
                (100..=60_000).contains(&w.timeout_ms),
                key,
                format!(
                    "entry {i}: timeout_ms must be between 100 and 60000, got {}",
                    w.timeout_ms
                ),
            )?;
            check(
                (1..=20).contains(&w.max_attempts),
                key,
                format!(
                    "entry {i}: max_attempts must be between 1 and 20, got {}",
                    w.max_attempts
                ),
            )?;
            for (name, value) in &w.headers {
                check(
                    reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                        && reqwest::header::HeaderValue::from_str(value).is_ok(),
                    key,
                    format!("entry {i}: header {name:?} is not a valid HTTP header"),
                )?;
            }
        }
        Ok(())
    }
}

/// `Ok` when `ok`, else the key and the message.
fn check(ok: bool, key: &str, message: impl Into<String>) -> Result<(), (String, String)> {
    if ok {
        Ok(())
    } else {
        Err((key.to_string(), message.into()))
    }
}

/// Finds the 1-based line of a dotted key (`daemon.tick_interval`) in YAML text
/// by following indentation. Good enough for error messages; `None` if absent.
pub fn find_key_line(text: &str, dotted: &str) -> Option<usize> {
    let parts: Vec<&str> = dotted.split('.').collect();
    let mut depth = 0;
    let mut parent_indent: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(pi) = parent_indent {
            if indent <= pi {
                // Left the parent mapping without finding the child.
                return None;
            }
        }
        let key = parts[depth];
        if trimmed.starts_with(&format!("{key}:")) {
            if depth + 1 == parts.len() {
                return Some(n + 1);
            }
            depth += 1;
            parent_indent = Some(indent);
        }
    }
    None
}
