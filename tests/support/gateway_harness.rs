//! Helpers shared by the gateway HTTP tests: hooks that record what the
//! gateway reports, provider configs, and serving a gateway on loopback.

#![allow(dead_code)]

use std::sync::{Arc, Mutex, Once};

use futures_util::future::BoxFuture;
use moziplus::gateway::{
    ApprovalRequest, ApprovalStatus, FailedAttempt, Gateway, GatewayConfig, GatewayHooks, Priority,
    ProviderConfig, RunAttribution, TokenUsage,
};
use serde_json::json;

/// The per-session key the daemon would hand an agent run.
pub const RUN_KEY: &str = "run-key-0001";
/// Environment variable holding the fake providers' upstream key.
pub const KEY_ENV: &str = "MOZIPLUS_TEST_UPSTREAM_KEY";
/// Its value: long enough to be masked as `nvap…7890`.
pub const KEY_VALUE: &str = "nvapi-test-secret-1234567890";

static ENV: Once = Once::new();

/// Set the upstream key variable once, before any gateway reads it.
pub fn init_env() {
    ENV.call_once(|| std::env::set_var(KEY_ENV, KEY_VALUE));
}

/// Hooks that resolve one run key and record usage, failed attempts and
/// approvals.
#[derive(Default)]
pub struct RecordingHooks {
    pub usage: Mutex<Vec<(RunAttribution, TokenUsage)>>,
    pub failures: Mutex<Vec<(RunAttribution, FailedAttempt)>>,
    pub approvals: Mutex<Vec<ApprovalRequest>>,
    /// Decisions settled by the test's "human", by decision id; any other
    /// is still proposed.
    pub decided: Mutex<std::collections::HashMap<String, ApprovalStatus>>,
}

pub fn attribution() -> RunAttribution {
    RunAttribution {
        session_id: "S-1".into(),
        project: "demo".into(),
        task: Some("T-0042".into()),
        agent: "coder".into(),
        task_priority: Some(Priority::High),
        model: None,
    }
}

impl GatewayHooks for RecordingHooks {
    fn resolve_key(&self, bearer_token: &str) -> Option<RunAttribution> {
        (bearer_token == RUN_KEY).then(attribution)
    }

    fn record_usage(&self, attribution: &RunAttribution, usage: &TokenUsage) {
        self.usage
            .lock()
            .unwrap()
            .push((attribution.clone(), usage.clone()));
    }

    fn record_failure(&self, attribution: &RunAttribution, failure: &FailedAttempt) {
        self.failures
            .lock()
            .unwrap()
            .push((attribution.clone(), failure.clone()));
    }

    fn approval_status(
        &self,
        _attribution: Option<RunAttribution>,
        decision_id: String,
    ) -> BoxFuture<'static, ApprovalStatus> {
        let status = self
            .decided
            .lock()
            .unwrap()
            .get(&decision_id)
            .cloned()
            .unwrap_or(ApprovalStatus::Proposed);
        Box::pin(async move { status })
    }

    fn propose_approval(
        &self,
        request: ApprovalRequest,
    ) -> BoxFuture<'static, Result<String, String>> {
        let mut approvals = self.approvals.lock().unwrap();
        approvals.push(request);
        let id = format!("D-{}", approvals.len());
        Box::pin(async move { Ok(id) })
    }
}

/// A provider pointing at `base_url` with the test key.
pub fn provider(name: &str, base_url: &str, limited: bool) -> ProviderConfig {
    serde_json::from_value(json!({
        "name": name,
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "limited": limited,
    }))
    .unwrap()
}

/// Defaults with fast retries, for tests on the real clock.
pub fn config(providers: Vec<ProviderConfig>) -> GatewayConfig {
    init_env();
    let mut cfg = GatewayConfig {
        providers,
        ..GatewayConfig::default()
    };
    cfg.retry.base = 0.05;
    cfg.retry.cap = 0.2;
    cfg
}

/// Serve the gateway's router on an ephemeral loopback port; returns
/// `http://127.0.0.1:PORT`.
pub async fn serve(gateway: &Gateway) -> String {
    let app = gateway.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Build and serve a gateway with recording hooks.
pub async fn start(cfg: GatewayConfig) -> (String, Gateway, Arc<RecordingHooks>) {
    let hooks = Arc::new(RecordingHooks::default());
    let gateway = Gateway::with_jitter_seed(cfg, hooks.clone(), moziplus::secrets::env_var, 7)
        .expect("valid test config");
    let url = serve(&gateway).await;
    (url, gateway, hooks)
}

/// A chat body for `model` whose first message is `marker`.
pub fn chat(model: &str, marker: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": marker}]})
}

/// The chat completions endpoint of a gateway served at `url`.
pub fn chat_url(url: &str) -> String {
    format!("{url}/v1/chat/completions")
}
