//! Gateway configuration: the `gateway:` section of `config/default.yaml`.
//!
//! Every number has its documented default (docs/GATEWAY.md) so an empty section is a
//! working gateway. Unknown keys are refused (`deny_unknown_fields`) and
//! [`GatewayConfig::validate`] names the first out-of-range key, because a
//! silent reset to a default is how the old system hid configuration mistakes.
//!
//! Durations are plain seconds (floats), as in the rest of the daemon config.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration value out of range; `key` is the dotted path (checked in
/// `validate.rs`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid gateway config `{key}`: {reason}")]
pub struct ConfigError {
    /// Dotted key, e.g. `gateway.queue.concurrency`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub reason: String,
}

/// Full configuration of the embedded LLM gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Upstream providers. When the key is absent the built-in list of
    /// [`default_providers`] is used (NVIDIA limited, the others unlimited).
    #[serde(default = "default_providers")]
    pub providers: Vec<ProviderConfig>,
    /// Provider that receives models whose first segment names no provider.
    /// Requests routed this way are never rate limited. `None` refuses them.
    pub default_provider: Option<String>,
    /// Where client model names that name no provider go (Claude Code's
    /// `claude-…`, Codex's `-m`), as glob → `provider/model`, first match in
    /// file order. Tried after the calling run's agent `model:` and before
    /// `default_provider`.
    pub model_map: ModelMap,
    /// Refuse (401) calls whose bearer key is not a known run key.
    pub require_session_key: bool,
    /// Bearer token for `POST /api/gateway/config`. `None` leaves the admin
    /// API open, which is only acceptable on a loopback bind.
    pub admin_token: Option<Secret>,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Most JSON items (array elements plus object members, at any depth)
    /// a request body may hold; more get 413 before anything is parsed.
    /// Under `moziplus serve` the daemon's guard applies
    /// `server.max_body_items` first, and sets this to the same value.
    pub max_body_items: u64,
    /// Token bucket and adaptive retreat of limited providers.
    pub limiter: LimiterConfig,
    /// Priority queue and concurrency of limited providers.
    pub queue: QueueConfig,
    /// Per-provider circuit breaker.
    pub breaker: BreakerConfig,
    /// Upstream retry policy.
    pub retry: RetryConfig,
    /// High-risk tool approval.
    pub approval: ApprovalConfig,
    /// What calls cost: USD per million tokens by `provider/model` glob,
    /// first match in list order. When the key is absent the built-in list
    /// of [`default_prices`] is used (NVIDIA's free tier at $0). A model
    /// no entry matches costs nothing and is counted as unpriced.
    #[serde(default = "default_prices")]
    pub prices: Vec<PriceConfig>,
}

/// One `gateway.prices` entry: USD per million tokens of the calls whose
/// `provider/model` (the model as sent upstream) matches `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Glob over `provider/model`, e.g. `nvidia/*` or `openai/gpt-5*`.
    pub model: String,
    /// USD per million prompt tokens not read from the provider's cache.
    pub input: f64,
    /// USD per million completion tokens.
    pub output: f64,
    /// USD per million prompt tokens read from the provider's cache;
    /// absent = `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

/// The built-in price list: NVIDIA's free tier costs $0 (its tokens are
/// still counted).
pub fn default_prices() -> Vec<PriceConfig> {
    vec![PriceConfig {
        model: "nvidia/*".to_string(),
        input: 0.0,
        output: 0.0,
        cached_input: None,
    }]
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            providers: default_providers(),
            default_provider: None,
            model_map: ModelMap::default(),
            require_session_key: false,
            admin_token: None,
            max_body_bytes: 32 * 1024 * 1024,
            max_body_items: 100_000,
            limiter: LimiterConfig::default(),
            queue: QueueConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            approval: ApprovalConfig::default(),
            prices: default_prices(),
        }
    }
}

impl ProviderConfig {
    /// Every environment variable naming one of this provider's keys, in
    /// pool order, each once.
    pub fn key_envs(&self) -> Vec<String> {
        let mut envs: Vec<String> = Vec::new();
        for env in self.api_key_env.iter().chain(self.api_key_envs.iter()) {
            if !envs.contains(env) {
                envs.push(env.clone());
            }
        }
        envs
    }
}

/// One upstream OpenAI-compatible provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name used as the first segment of `model` (`nvidia/meta/llama…`).
    pub name: String,
    /// Base URL including the API version, e.g. `https://integrate.api.nvidia.com/v1`.
    /// The gateway appends `/chat/completions` etc. and never adds `/v1`.
    pub base_url: String,
    /// Environment variable holding the API key. The key itself never
    /// appears in config, logs or API output.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A key pool: more environment variables, each holding one more key
    /// of the same provider (after `api_key_env`, if set). Each key of a
    /// limited provider gets its own bucket and retreat; calls go to the
    /// key that can serve soonest.
    #[serde(default)]
    pub api_key_envs: Vec<String>,
    /// Limited providers go through the token bucket and priority queue.
    #[serde(default)]
    pub limited: bool,
    /// Other first segments that select this provider.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Any first segment starting with this prefix selects this provider
    /// ("any other name starting with `nvidia`").
    #[serde(default)]
    pub alias_prefix: Option<String>,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// Where requests go while this provider's breaker is open or after all
    /// retries failed.
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
    /// Ordered model chain for degrading low-priority requests that could not
    /// get a token in time, e.g. `[nvidia/qwen/qwen3.5-397b,
    /// nvidia/deepseek-ai/deepseek-v4-pro, local/llama3]`.
    #[serde(default)]
    pub degrade_chain: Vec<String>,
    /// Static model list for `/v1/models`; empty asks the upstream.
    #[serde(default)]
    pub models: Vec<String>,
    /// Validate tool calls in non-streaming chat responses.
    #[serde(default)]
    pub validate_tool_calls: bool,
    /// Overrides `approval.high_risk_tools` for this provider.
    #[serde(default)]
    pub high_risk_tools: Option<Vec<String>>,
    /// Ask the upstream for a final usage chunk on streams
    /// (`stream_options.include_usage`) so the ledger sees stream tokens. The
    /// extra chunk is removed again when the client did not ask for it.
    #[serde(default = "default_true")]
    pub stream_usage: bool,
    /// APIs besides chat completions this provider speaks itself. Calls on
    /// those surfaces are passed through unchanged instead of translated to
    /// chat completions (`responses` → `POST {base_url}/responses`,
    /// `messages` → `POST {base_url}/messages` with `x-api-key` and the
    /// client's `anthropic-version` / `anthropic-beta`).
    #[serde(default)]
    pub native: Vec<NativeApi>,
}

/// A client API a provider may speak natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NativeApi {
    /// OpenAI Responses (`/responses`).
    Responses,
    /// Anthropic Messages (`/messages`).
    Messages,
}

/// `gateway.model_map`: glob → `provider/model`, kept in file order (a YAML
/// map whose first matching key wins).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelMap(pub Vec<(String, String)>);

impl ModelMap {
    /// The target of the first glob matching `model`.
    pub fn lookup(&self, model: &str) -> Option<&str> {
        self.0.iter().find_map(|(glob, target)| {
            glob::Pattern::new(glob)
                .ok()
                .filter(|p| p.matches(model))
                .map(|_| target.as_str())
        })
    }
}

impl Serialize for ModelMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ModelMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ModelMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of model glob to \"provider/model\"")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<ModelMap, A::Error> {
                let mut pairs = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, String>()? {
                    pairs.push((k, v));
                }
                Ok(ModelMap(pairs))
            }
        }
        d.deserialize_map(Visit)
    }
}

fn default_true() -> bool {
    true
}

/// Fallback target of a provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Provider name to send the request to.
    pub provider: String,
    /// Model name sent upstream; `None` keeps the original model name.
    #[serde(default)]
    pub model: Option<String>,
}

/// Upstream timeouts, seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// TCP/TLS connect.
    pub connect: f64,
    /// Until response headers arrive (for non-streaming calls this includes
    /// the whole generation on most servers).
    pub first_byte: f64,
    /// Longest gap between two chunks of a stream; a stalled stream is cut so
    /// it does not hold a concurrency slot.
    pub idle: f64,
    /// Anthropic Messages streams: a `ping` event after this long without
    /// data from the provider, so clients and proxies keep the connection.
    pub ping: f64,
    /// Whole exchange including the body.
    pub total: f64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            connect: 10.0,
            first_byte: 120.0,
            idle: 60.0,
            ping: 10.0,
            total: 600.0,
        }
    }
}

/// Token bucket plus adaptive retreat, per key of a limited provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimiterConfig {
    /// Base rate, requests per minute (per key).
    pub rate_per_minute: f64,
    /// Bucket capacity: the most requests granted at once after idle time.
    /// The bucket starts with this many; the default 1 means no burst at
    /// all, one grant every `60 / rate` seconds from the first second.
    pub capacity: f64,
    /// Also cap grants in any rolling 60 s window at the effective rate, so
    /// a burst plus refill never exceeds the per-minute promise.
    pub window_guard: bool,
    /// After a 429 with under 30 s of history: the rate is multiplied by
    /// this. With more history the rate goes to the rate the provider
    /// accepted over the last minute (times `retreat_margin`).
    pub retreat_factor: f64,
    /// Share of the provider's observed accept rate the lane settles at.
    pub retreat_margin: f64,
    /// Seconds after a cut during which further 429s do not cut again
    /// (they were sent at the old rate).
    pub retreat_hold: f64,
    /// Rate never goes below this, requests per minute.
    pub floor_per_minute: f64,
    /// Seconds without a 429 between two recovery steps.
    pub recover_step_interval: f64,
    /// Recovery step near the rate where the last 429 came, per minute.
    pub recover_step_per_minute: f64,
    /// Seconds without a 429 between two steps near that rate (each step
    /// there risks a 429).
    pub probe_interval: f64,
    /// Recovery multiplier when the rate is well below that ceiling (or
    /// the ceiling is forgotten).
    pub recover_factor: f64,
    /// Seconds without a 429 after which the last 429's rate is forgotten
    /// and recovery climbs fast to the base.
    pub ceiling_memory: f64,
    /// Longest upstream `Retry-After` honoured as a pause, seconds.
    pub max_retry_after: f64,
    /// A 429 whose `Retry-After` is at least this long (seconds), or whose
    /// body names a daily quota, parks the key: the pool's other keys carry
    /// on and this one gets nothing until the time has passed.
    pub park_after: f64,
    /// How long a key is parked on a daily-quota 429 without `Retry-After`,
    /// seconds.
    pub park_default: f64,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            rate_per_minute: 40.0,
            capacity: 1.0,
            window_guard: true,
            retreat_factor: 0.9,
            retreat_margin: 1.0,
            retreat_hold: 10.0,
            floor_per_minute: 5.0,
            recover_step_interval: 20.0,
            recover_step_per_minute: 0.5,
            probe_interval: 60.0,
            recover_factor: 1.25,
            ceiling_memory: 180.0,
            max_retry_after: 300.0,
            park_after: 600.0,
            park_default: 3600.0,
        }
    }
}

/// What happens to a request arriving at a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// The newcomer gets 503 at once.
    Reject,
    /// The newest request of the lowest queued priority (if lower than the
    /// newcomer's) is answered 503 at once and the newcomer takes its place;
    /// otherwise the newcomer gets 503.
    DropLowest,
    /// The newcomer skips the queue but must still get a token immediately
    /// (429 otherwise); it is not counted against the concurrency limit.
    Passthrough,
}

impl fmt::Display for FullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FullPolicy::Reject => "reject",
            FullPolicy::DropLowest => "drop_lowest",
            FullPolicy::Passthrough => "passthrough",
        })
    }
}

/// How many requests a lane lets be in flight upstream at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Sized by latency (Little's law): the lane's rate times its observed
    /// answer time, with headroom, within `concurrency_min..=concurrency_max`.
    Auto,
    /// A fixed limit.
    Fixed(usize),
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Concurrency::Auto => f.write_str("auto"),
            Concurrency::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Concurrency::Auto => s.serialize_str("auto"),
            Concurrency::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Concurrency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto` or a number of requests of at least 1")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Concurrency, E> {
                Ok(Concurrency::Fixed(usize::try_from(v).unwrap_or(usize::MAX)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Concurrency, E> {
                u64::try_from(v)
                    .map(|v| Concurrency::Fixed(usize::try_from(v).unwrap_or(usize::MAX)))
                    .map_err(|_| {
                        E::custom(format!(
                            "concurrency {v} is negative; use `auto` or a number of at least 1"
                        ))
                    })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Concurrency, E> {
                match v.trim() {
                    "auto" => Ok(Concurrency::Auto),
                    other => other.parse::<usize>().map(Concurrency::Fixed).map_err(|_| {
                        E::custom(format!(
                            "concurrency {other:?} is neither `auto` nor a number; use `auto` or e.g. 20"
                        ))
                    }),
                }
            }
        }
        d.deserialize_any(Visit)
    }
}

impl utoipa::PartialSchema for Concurrency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .enum_values(Some(["auto"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Integer))
                    .minimum(Some(1)),
            )
            .description(Some(
                "`auto` (sized by rate x answer time) or a fixed number of requests in flight",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Concurrency {}

/// Priority queue of limited providers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Waiting requests per limited provider.
    pub max_size: usize,
    /// Requests in flight upstream at once per limited provider: `auto`
    /// (the default) or a number.
    pub concurrency: Concurrency,
    /// Lower bound of `auto`.
    pub concurrency_min: usize,
    /// Upper bound of `auto`.
    pub concurrency_max: usize,
    /// Answer time `auto` assumes until the lane has seen answers, seconds.
    pub answer_time_prior: f64,
    /// Queue-full policy.
    pub full_policy: FullPolicy,
    /// How long urgent/high/normal requests wait for a token, seconds.
    pub request_timeout: f64,
    /// How long low-priority requests wait before degrading, seconds.
    pub low_priority_timeout: f64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_size: 500,
            concurrency: Concurrency::Auto,
            concurrency_min: 2,
            concurrency_max: 64,
            answer_time_prior: 30.0,
            full_policy: FullPolicy::Reject,
            request_timeout: 60.0,
            low_priority_timeout: 2.0,
        }
    }
}

/// Circuit breaker per provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures (connect error, timeout, 5xx) that open it.
    pub failure_threshold: u32,
    /// Seconds it stays open before one half-open probe.
    pub open_seconds: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_seconds: 60.0,
        }
    }
}

/// Retry with jittered exponential backoff.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff, seconds.
    pub base: f64,
    /// Multiplier per attempt.
    pub factor: f64,
    /// Longest backoff, seconds.
    pub cap: f64,
    /// Retries after the first attempt.
    pub max_retries: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            base: 1.0,
            factor: 2.0,
            cap: 30.0,
            max_retries: 3,
        }
    }
}

/// High-risk tool approval.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Seconds after which an unanswered approval counts as rejected.
    pub expiry: f64,
    /// Tool names that need a human decision.
    pub high_risk_tools: Vec<String>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            expiry: 300.0,
            high_risk_tools: [
                "restart_deployment",
                "scale_deployment",
                "delete_resource",
                "apply_manifest",
                "rollback_deployment",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

/// A secret string (admin token). `Debug` and `Serialize` mask it so it can
/// never leak through logs or the config API.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The clear value; use only to compare or to send upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_secret(&self.0))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&mask_secret(&self.0))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A key for display: `****`, whatever its length — whether a key is set,
/// never any of its characters (issue 23, finding 12: the first and last 4
/// characters were shown on a page open to reads).
pub fn mask_secret(_value: &str) -> String {
    "****".to_string()
}

/// The generic names the gateway routes as aliases of `nvidia` (any other
/// first segment starting with `nvidia` is routed there too, by the alias
/// prefix). No account name of anyone's: `/api/gateway/status` shows them.
pub const NVIDIA_ALIASES: &[&str] = &["nvidia-gateway", "nvidia_gateway"];

fn provider(name: &str, base_url: &str, key_env: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.to_string(),
        base_url: base_url.to_string(),
        api_key_env: Some(key_env.to_string()),
        api_key_envs: Vec::new(),
        limited: false,
        aliases: Vec::new(),
        alias_prefix: None,
        timeouts: TimeoutConfig::default(),
        fallback: None,
        degrade_chain: Vec::new(),
        models: Vec::new(),
        validate_tool_calls: false,
        high_risk_tools: None,
        stream_usage: true,
        native: Vec::new(),
    }
}

/// Providers used when the config names none: NVIDIA (limited, all aliases of
/// the `nvidia` prefix) and the known unlimited providers.
pub fn default_providers() -> Vec<ProviderConfig> {
    let mut nvidia = provider(
        "nvidia",
        "https://integrate.api.nvidia.com/v1",
        "NVIDIA_API_KEY",
    );
    nvidia.limited = true;
    nvidia.aliases = NVIDIA_ALIASES.iter().map(|a| a.to_string()).collect();
    nvidia.alias_prefix = Some("nvidia".to_string());
    nvidia.validate_tool_calls = true;
    let mut deepseek = provider(
        "deepseek",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
    );
    deepseek.aliases = vec!["deepseek-api".to_string()];
    vec![
        nvidia,
        provider(
            "volcengine",
            "https://ark.cn-beijing.volces.com/api/v3",
            "VOLCENGINE_API_KEY",
        ),
        provider(
            "volcengine-plan",
            "https://ark.cn-beijing.volces.com/api/coding/v3",
            "VOLCENGINE_API_KEY",
        ),
        provider(
            "siliconflow",
            "https://api.siliconflow.cn/v1",
            "SILICONFLOW_API_KEY",
        ),
        deepseek,
    ]
}

/// Seconds as a `Duration`, saturating on absurd values (validated earlier).
pub(crate) fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.max(0.0)).unwrap_or(Duration::from_secs(u32::MAX as u64))
}
