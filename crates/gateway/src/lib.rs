//! The embedded OpenAI-compatible LLM gateway.
//!
//! Agents call `/v1/chat/completions` & co. with `model = "provider/model"`.
//! The gateway routes the call ([`routing`]), and for limited providers
//! (NVIDIA's free tier) admits it through a [`lane::RateLane`]: adaptive
//! token bucket ([`limiter`]), strict-priority queue ([`queue`]) and a
//! concurrency limit. Every provider has a circuit breaker ([`breaker`]),
//! jittered retries ([`retry`]) and an optional fallback provider. Responses
//! stream through chunk by chunk ([`stream`]); usage goes to an in-memory
//! ledger and to the daemon via [`GatewayHooks`]; high-risk tool calls become
//! approval requests ([`tools`]).
//!
//! # Mounting
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use moziplus_gateway::{Gateway, GatewayConfig, NoopHooks};
//! let keys = |name: &str| std::env::var(name).ok();
//! let gateway = Gateway::new(GatewayConfig::default(), Arc::new(NoopHooks), keys)?;
//! let app = axum::Router::new().merge(gateway.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8083").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The gateway is a crate of its own (re-exported as `moziplus::gateway`):
//! it cannot import the rest of moziplus, and knows nothing of tasks.
//! [`GatewayHooks`] is its only view of the daemon, and the provider keys
//! come from the key lookup its constructor is given (the daemon passes the
//! start environment without its secrets). Time is `tokio::time::Instant` throughout, so tests on a
//! paused clock control every timer; jitter comes from a seedable RNG.

pub mod breaker;
pub mod config;
pub mod error;
pub mod hooks;
pub mod lane;
pub mod ledger;
pub mod limiter;
pub mod metrics;
pub mod queue;
pub mod retry;
pub mod routing;
pub mod status;
pub mod tools;

mod admin;
mod approval;
mod attempt;
mod auth;
mod budget;
mod call;
mod cpu;
mod dialect;
mod failure;
mod handlers;
mod messages;
mod models;
mod pricing;
mod proxy;
mod respond;
mod responses;
mod state;
mod stream;
mod stream_calls;
mod surface;
mod upstream;
mod usage;
mod validate;

pub use admin::{AdminAuthorized, SettingsUpdate};
pub use auth::presented_keys;
/// Shared with the daemon API's bearer check.
pub use auth::{bearer, constant_time_eq};
pub use breaker::{BreakerState, CircuitBreaker};
pub use config::{
    ConfigError, FullPolicy, GatewayConfig, ModelMap, NativeApi, PriceConfig, ProviderConfig,
    Secret,
};
pub use cpu::json_items;
pub use error::{GatewayError, LimitSource};
pub use handlers::error_for_path;
pub use hooks::{
    ApprovalRequest, ApprovalStatus, BudgetRefusal, CallEstimate, FailedAttempt, GatewayHooks,
    NoopHooks, RunAttribution, SharedFlight, TokenUsage,
};
pub use lane::{LaneSettings, RateLane};
pub use limiter::{RetreatState, RetreatTally};
pub use metrics::install_prometheus_recorder;
pub use queue::Priority;
pub use state::Gateway;
pub use status::{GatewayStatus, RuntimeSettings};
