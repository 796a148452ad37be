//! Range checks of [`GatewayConfig`]: the first bad key is named with its
//! dotted path so the daemon can report it with the file it came from.

use crate::config::{ConfigError, GatewayConfig};

fn bad(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: format!("gateway.{}", key.into()),
        reason: reason.into(),
    }
}

fn positive(key: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(key, format!("must be a positive number, got {v}")))
    }
}

fn ratio(key: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(bad(key, format!("must be in (0, 1], got {v}")))
    }
}

impl GatewayConfig {
    /// Check every value; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limiter;
        positive("limiter.rate_per_minute", l.rate_per_minute)?;
        positive("limiter.capacity", l.capacity)?;
        if !(l.retreat_factor > 0.0 && l.retreat_factor < 1.0) {
            return Err(bad(
                "limiter.retreat_factor",
                format!("must be in (0, 1), got {}", l.retreat_factor),
            ));
        }
        ratio("limiter.retreat_margin", l.retreat_margin)?;
        positive("limiter.retreat_hold", l.retreat_hold)?;
        if !(l.recover_factor > 1.0 && l.recover_factor.is_finite()) {
            return Err(bad(
                "limiter.recover_factor",
                format!("must be above 1, got {}", l.recover_factor),
            ));
        }
        positive("limiter.ceiling_memory", l.ceiling_memory)?;
        positive("limiter.park_after", l.park_after)?;
        positive("limiter.park_default", l.park_default)?;
        positive("limiter.floor_per_minute", l.floor_per_minute)?;
        if l.floor_per_minute > l.rate_per_minute {
            return Err(bad(
                "limiter.floor_per_minute",
                "must not exceed limiter.rate_per_minute",
            ));
        }
        positive("limiter.recover_step_per_minute", l.recover_step_per_minute)?;
        positive("limiter.recover_step_interval", l.recover_step_interval)?;
        positive("limiter.probe_interval", l.probe_interval)?;
        positive("limiter.max_retry_after", l.max_retry_after)?;
        let q = &self.queue;
        if q.max_size == 0 {
            return Err(bad("queue.max_size", "must be at least 1"));
        }
        if q.concurrency == crate::config::Concurrency::Fixed(0) {
            return Err(bad("queue.concurrency", "must be `auto` or at least 1"));
        }
        if q.concurrency_min == 0 {
            return Err(bad("queue.concurrency_min", "must be at least 1"));
        }
        if q.concurrency_max < q.concurrency_min {
            return Err(bad(
                "queue.concurrency_max",
                format!(
                    "must be at least queue.concurrency_min ({})",
                    q.concurrency_min
                ),
            ));
        }
        positive("queue.answer_time_prior", q.answer_time_prior)?;
        positive("queue.request_timeout", q.request_timeout)?;
        positive("queue.low_priority_timeout", q.low_priority_timeout)?;
        if self.breaker.failure_threshold == 0 {
            return Err(bad("breaker.failure_threshold", "must be at least 1"));
        }
        positive("breaker.open_seconds", self.breaker.open_seconds)?;
        positive("retry.base", self.retry.base)?;
        if self.retry.factor.is_nan() || self.retry.factor < 1.0 {
            return Err(bad("retry.factor", "must be at least 1"));
        }
        positive("retry.cap", self.retry.cap)?;
        if self.retry.max_retries > 10 {
            return Err(bad("retry.max_retries", "must be at most 10"));
        }
        positive("approval.expiry", self.approval.expiry)?;
        if self.max_body_bytes < 1024 {
            return Err(bad("max_body_bytes", "must be at least 1024"));
        }
        if !(100..=100_000_000).contains(&self.max_body_items) {
            return Err(bad("max_body_items", "must be between 100 and 100000000"));
        }
        self.validate_providers()
    }

    fn validate_providers(&self) -> Result<(), ConfigError> {
        let mut names: Vec<String> = Vec::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |k: &str| format!("providers[{i}].{k}");
            let name = p.name.trim().to_lowercase();
            if name.is_empty() || name.contains('/') || name != p.name {
                return Err(bad(
                    key("name"),
                    "must be non-empty, lower-case, without '/' or spaces",
                ));
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(bad(
                    key("base_url"),
                    format!("must start with http:// or https://, got {:?}", p.base_url),
                ));
            }
            let t = &p.timeouts;
            positive(&key("timeouts.connect"), t.connect)?;
            positive(&key("timeouts.first_byte"), t.first_byte)?;
            positive(&key("timeouts.idle"), t.idle)?;
            positive(&key("timeouts.ping"), t.ping)?;
            positive(&key("timeouts.total"), t.total)?;
            for alias in std::iter::once(&p.name).chain(p.aliases.iter()) {
                let alias = alias.trim().to_lowercase();
                if names.contains(&alias) {
                    return Err(bad(
                        key("aliases"),
                        format!("name or alias {alias:?} is used twice"),
                    ));
                }
                names.push(alias);
            }
        }
        let known = |n: &str| self.providers.iter().any(|p| p.name == n);
        for (i, p) in self.providers.iter().enumerate() {
            if let Some(fb) = &p.fallback {
                if !known(&fb.provider) || fb.provider == p.name {
                    return Err(bad(
                        format!("providers[{i}].fallback.provider"),
                        format!("{:?} must name another configured provider", fb.provider),
                    ));
                }
            }
        }
        for (glob, target) in &self.model_map.0 {
            let key = format!("model_map.{glob:?}");
            glob::Pattern::new(glob).map_err(|e| bad(key.clone(), format!("not a glob: {e}")))?;
            let head = target.split_once('/').map_or("", |(h, _)| h).to_lowercase();
            if crate::routing::find_provider(&self.providers, &head).is_none() {
                return Err(bad(
                    key,
                    format!("{target:?} must be \"<provider>/<model>\" with a configured provider"),
                ));
            }
        }
        for (i, price) in self.prices.iter().enumerate() {
            glob::Pattern::new(&price.model).map_err(|e| {
                bad(
                    format!("prices[{i}].model"),
                    format!("{:?} is not a glob: {e}", price.model),
                )
            })?;
            let amounts = [
                ("input", Some(price.input)),
                ("output", Some(price.output)),
                ("cached_input", price.cached_input),
            ];
            for (name, value) in amounts {
                if let Some(v) = value.filter(|v| !v.is_finite() || *v < 0.0) {
                    return Err(bad(
                        format!("prices[{i}].{name}"),
                        format!("{v} must be a number of USD per million tokens, 0 or more"),
                    ));
                }
            }
        }
        if let Some(d) = &self.default_provider {
            if !known(d) {
                return Err(bad(
                    "default_provider",
                    format!("{d:?} is not a configured provider"),
                ));
            }
        }
        Ok(())
    }
}
