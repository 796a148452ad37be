//! The gateway's state: [`Gateway`], the cheap handle every route holds,
//! and what it shares ([`GatewayInner`]): the providers with their keys,
//! clients, lanes, breakers and counters, the runtime settings, the hooks,
//! the usage ledger, the prices, the open approvals, the jitter source and
//! the CPU pool. Built once by [`Gateway::new`]; the routes are mounted by
//! `handlers` (`Gateway::router`).

use std::sync::{Arc, Mutex, MutexGuard};

use moziplus_locks::Recover;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::approval;
use crate::breaker::{BreakerState, CircuitBreaker};
use crate::config::{self, ConfigError, GatewayConfig, ProviderConfig, Secret};
use crate::cpu;
use crate::hooks::{GatewayHooks, RunAttribution, TokenUsage};
use crate::lane::{LaneSettings, RateLane};
use crate::ledger::Ledger;
use crate::metrics;
use crate::pricing;
use crate::status::{GatewayStatus, ProviderCounters, ProviderStatus, RuntimeSettings};

/// The gateway. Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<GatewayInner>,
}

/// One key of a provider's pool: the variable it came from and its value
/// (`None` when the variable is unset or empty).
pub(crate) struct PoolKey {
    pub env: String,
    pub secret: Option<Secret>,
}

pub(crate) struct ProviderRuntime {
    pub cfg: ProviderConfig,
    /// The pool, in `key_envs` order (empty when the provider needs no key).
    pub keys: Vec<PoolKey>,
    pub client: reqwest::Client,
    pub lane: Option<RateLane>,
    pub breaker: Mutex<CircuitBreaker>,
    pub counters: Mutex<ProviderCounters>,
}

impl ProviderRuntime {
    /// The key to send with: pool key `index` (a lane permit's), else the
    /// first key that is set.
    pub fn key(&self, index: Option<usize>) -> Option<&Secret> {
        index
            .and_then(|i| self.keys.get(i))
            .and_then(|k| k.secret.as_ref())
            .or_else(|| self.keys.iter().find_map(|k| k.secret.as_ref()))
    }

    pub fn breaker(&self) -> MutexGuard<'_, CircuitBreaker> {
        lock(&self.breaker)
    }

    pub fn count(&self, f: impl FnOnce(&mut ProviderCounters)) {
        f(&mut lock(&self.counters));
    }
}

pub(crate) struct GatewayInner {
    pub config: GatewayConfig,
    pub providers: Vec<ProviderRuntime>,
    pub settings: Mutex<RuntimeSettings>,
    pub hooks: Arc<dyn GatewayHooks>,
    pub ledger: Mutex<Ledger>,
    /// `gateway.prices`, compiled.
    pub prices: pricing::PriceTable,
    /// Decisions proposed for held high-risk calls ([`approval`]).
    pub approvals: approval::OpenDecisions,
    rng: Mutex<StdRng>,
    started: Instant,
    /// CPU-heavy steps (large parses, token counting) off the async worker.
    pub cpu: cpu::CpuPool,
}

/// Lock a mutex, ignoring poisoning: gateway state stays usable after a
/// panicking request task.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.locked()
}

impl GatewayInner {
    /// What [`approval::decide`] needs of the gateway.
    pub fn approval_desk(&self) -> approval::Desk<'_> {
        approval::Desk {
            open: &self.approvals,
            hooks: &*self.hooks,
            expiry: self.config.approval.expiry,
        }
    }

    /// A random number in `[0, 1)` for backoff jitter.
    pub fn jitter_unit(&self) -> f64 {
        lock(&self.rng).gen::<f64>()
    }

    pub fn settings(&self) -> RuntimeSettings {
        lock(&self.settings).clone()
    }

    /// Book one response's usage: priced, then into the ledger, metrics,
    /// and the daemon hook.
    pub fn record_usage(&self, attribution: Option<&RunAttribution>, mut usage: TokenUsage) {
        usage.cost_usd = self.prices.cost(&usage);
        let usage = &usage;
        lock(&self.ledger).record(attribution, usage);
        metrics::usage(
            &usage.provider,
            usage.prompt_tokens,
            usage.completion_tokens,
        );
        if let Some(a) = attribution {
            self.hooks.record_usage(a, usage);
        }
    }
}

impl Gateway {
    /// Build the gateway: validates the config, reads each provider key
    /// with `key_lookup` (a variable's name → its value; the daemon passes
    /// `moziplus::secrets::env_var`, a test may pass
    /// `|name| std::env::var(name).ok()`), creates HTTP clients and one rate
    /// lane per limited provider (which spawns its dispatcher: call inside a
    /// tokio runtime).
    pub fn new(
        config: GatewayConfig,
        hooks: Arc<dyn GatewayHooks>,
        key_lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Gateway, ConfigError> {
        Self::build(config, hooks, &key_lookup, StdRng::from_entropy())
    }

    /// Like [`Gateway::new`] with a fixed jitter seed, for reproducible tests.
    pub fn with_jitter_seed(
        config: GatewayConfig,
        hooks: Arc<dyn GatewayHooks>,
        key_lookup: impl Fn(&str) -> Option<String>,
        seed: u64,
    ) -> Result<Gateway, ConfigError> {
        Self::build(config, hooks, &key_lookup, StdRng::seed_from_u64(seed))
    }

    fn build(
        config: GatewayConfig,
        hooks: Arc<dyn GatewayHooks>,
        key_lookup: &dyn Fn(&str) -> Option<String>,
        rng: StdRng,
    ) -> Result<Gateway, ConfigError> {
        config.validate()?;
        let mut providers = Vec::with_capacity(config.providers.len());
        for (i, p) in config.providers.iter().enumerate() {
            let client = reqwest::Client::builder()
                .connect_timeout(config::secs(p.timeouts.connect))
                .pool_idle_timeout(std::time::Duration::from_secs(90))
                .tcp_nodelay(true)
                .build()
                .map_err(|e| ConfigError {
                    key: format!("gateway.providers[{i}]"),
                    reason: format!("cannot build HTTP client: {e}"),
                })?;
            let keys: Vec<PoolKey> = p
                .key_envs()
                .into_iter()
                .map(|env| {
                    let secret = key_lookup(&env)
                        .filter(|k| !k.trim().is_empty())
                        .map(|k| Secret::new(k.trim()));
                    PoolKey { env, secret }
                })
                .collect();
            let lane = p.limited.then(|| {
                let names = keys.iter().map(|k| k.env.clone()).collect();
                let mut settings = LaneSettings::from_config(&config, names);
                settings.key_ids = keys
                    .iter()
                    .map(|k| {
                        k.secret.as_ref().map_or_else(
                            || format!("env:{}", k.env),
                            |s| crate::lane::key_fingerprint(s.expose()),
                        )
                    })
                    .collect();
                RateLane::new(&p.name, settings)
            });
            providers.push(ProviderRuntime {
                cfg: p.clone(),
                keys,
                client,
                lane,
                breaker: Mutex::new(CircuitBreaker::new(
                    config.breaker.failure_threshold,
                    config::secs(config.breaker.open_seconds),
                )),
                counters: Mutex::new(ProviderCounters::default()),
            });
            metrics::breaker_state(&p.name, BreakerState::Closed);
        }
        let settings = RuntimeSettings {
            rate_per_minute: config.limiter.rate_per_minute,
            capacity: config.limiter.capacity,
            queue_max_size: config.queue.max_size,
            full_policy: config.queue.full_policy,
            concurrency: config.queue.concurrency,
            request_timeout: config.queue.request_timeout,
            low_priority_timeout: config.queue.low_priority_timeout,
        };
        let prices = pricing::PriceTable::new(&config.prices);
        Ok(Gateway {
            inner: Arc::new(GatewayInner {
                config,
                providers,
                settings: Mutex::new(settings),
                hooks,
                ledger: Mutex::new(Ledger::default()),
                prices,
                approvals: approval::OpenDecisions::default(),
                rng: Mutex::new(rng),
                started: Instant::now(),
                cpu: cpu::CpuPool::default(),
            }),
        })
    }

    /// Live status: settings, per-provider breaker/lane/counters (keys
    /// masked) and the usage ledger.
    pub fn status(&self) -> GatewayStatus {
        let now = Instant::now();
        let inner = &self.inner;
        let providers = inner
            .providers
            .iter()
            .map(|p| ProviderStatus {
                name: p.cfg.name.clone(),
                base_url: p.cfg.base_url.clone(),
                limited: p.cfg.limited,
                api_key_env: p.cfg.api_key_env.clone(),
                api_key: p.key(None).map(|k| config::mask_secret(k.expose())),
                aliases: p.cfg.aliases.clone(),
                fallback: p.cfg.fallback.as_ref().map(|f| f.provider.clone()),
                breaker: p.breaker().snapshot(now),
                lane: p.lane.as_ref().map(RateLane::snapshot),
                requests: lock(&p.counters).clone(),
            })
            .collect();
        GatewayStatus {
            uptime_seconds: now.duration_since(inner.started).as_secs_f64(),
            settings: inner.settings(),
            default_provider: inner.config.default_provider.clone(),
            providers,
            usage: lock(&inner.ledger).snapshot(),
            admission: inner.hooks.admission(),
        }
    }

    /// The runtime settings in force (`/api/gateway/config`).
    pub fn settings(&self) -> RuntimeSettings {
        self.inner.settings()
    }

    /// The rate lane of a limited provider (for the dashboard or tests).
    pub fn lane(&self, provider: &str) -> Option<RateLane> {
        self.inner
            .providers
            .iter()
            .find(|p| p.cfg.name == provider)
            .and_then(|p| p.lane.clone())
    }

    /// Called by the daemon on shutdown, before it closes its stores:
    /// the hooks book what they still hold ([`GatewayHooks::shutdown`]).
    pub async fn shutdown(&self) {
        self.inner.hooks.shutdown().await;
    }

    /// The configuration the gateway was built with.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }
}
