//! Model → provider routing.
//!
//! The first `/` segment of `model`, trimmed and lower-cased, selects the
//! provider by name, then by alias, then by alias prefix (`nvidia…`); the
//! rest is the model name sent upstream. A first segment that names no
//! provider sends the *whole* model string to the default provider,
//! unlimited; without a default the request is refused with the known names.

use crate::config::ProviderConfig;
use crate::error::GatewayError;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Index into the provider list.
    pub provider: usize,
    /// Model name sent upstream (provider prefix stripped).
    pub upstream_model: String,
    /// Whether the call goes through the provider's rate lane. False for
    /// default-provider routes even if that provider is limited.
    pub limited: bool,
}

/// Resolve `model` against `providers`.
pub fn route(
    providers: &[ProviderConfig],
    default_provider: Option<&str>,
    model: &str,
) -> Result<Route, GatewayError> {
    let model = model.trim();
    if model.is_empty() {
        return Err(GatewayError::BadRequest(
            "`model` must not be empty".to_string(),
        ));
    }
    let (head, rest) = match model.split_once('/') {
        Some((head, rest)) => (head.trim().to_lowercase(), Some(rest.trim())),
        None => (model.to_lowercase(), None),
    };
    if let Some(index) = find_provider(providers, &head) {
        let upstream_model = rest.filter(|r| !r.is_empty()).ok_or_else(|| {
            GatewayError::BadRequest(format!(
                "model {model:?} names provider {head:?} but no model; use \"{head}/<model>\""
            ))
        })?;
        return Ok(Route {
            provider: index,
            upstream_model: upstream_model.to_string(),
            limited: providers[index].limited,
        });
    }
    if let Some(default) = default_provider {
        if let Some(index) = providers.iter().position(|p| p.name == default) {
            return Ok(Route {
                provider: index,
                upstream_model: model.to_string(),
                limited: false,
            });
        }
    }
    Err(GatewayError::UnknownProvider {
        provider: head,
        model: model.to_string(),
        known: known_names(providers),
    })
}

/// Index of the provider selected by a (lower-cased) first segment.
pub fn find_provider(providers: &[ProviderConfig], head: &str) -> Option<usize> {
    let exact = providers.iter().position(|p| {
        p.name == head
            || p.aliases
                .iter()
                .any(|a| a.trim().eq_ignore_ascii_case(head))
    });
    exact.or_else(|| {
        providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let prefix = p.alias_prefix.as_deref()?.to_lowercase();
                head.starts_with(&prefix).then_some((prefix.len(), i))
            })
            .max()
            .map(|(_, i)| i)
    })
}

/// `a, b (aliases: c, d; any name starting with "e")` for error messages.
pub fn known_names(providers: &[ProviderConfig]) -> String {
    if providers.is_empty() {
        return "(none configured)".to_string();
    }
    providers
        .iter()
        .map(|p| {
            let mut extra = Vec::new();
            if !p.aliases.is_empty() {
                extra.push(format!("aliases: {}", p.aliases.join(", ")));
            }
            if let Some(prefix) = &p.alias_prefix {
                extra.push(format!("any name starting with {prefix:?}"));
            }
            if extra.is_empty() {
                p.name.clone()
            } else {
                format!("{} ({})", p.name, extra.join("; "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Upstream URL for an endpoint such as `chat/completions`: the base URL
/// (which carries the API version) plus the endpoint, never a second `/v1`.
pub fn upstream_url(base_url: &str, endpoint: &str) -> String {
    format!(
        "{}/{}",
        base_url.trim_end_matches('/'),
        endpoint.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_providers;

    #[test]
    fn nvidia_aliases_are_limited_and_stripped() {
        let p = default_providers();
        let r = route(&p, None, "nvidia-team-b/deepseek-ai/deepseek-v4-pro").unwrap();
        assert_eq!(p[r.provider].name, "nvidia");
        assert_eq!(r.upstream_model, "deepseek-ai/deepseek-v4-pro");
        assert!(r.limited);
        let r = route(&p, None, " NVIDIA_Gateway /meta/llama").unwrap();
        assert_eq!((p[r.provider].name.as_str(), r.limited), ("nvidia", true));
        let r = route(&p, None, "nvidia-new-account/x").unwrap();
        assert_eq!(p[r.provider].name, "nvidia");
    }

    #[test]
    fn the_built_in_aliases_are_generic_names() {
        // Issue 26, item 10: the built-in list carried personal account
        // names (one with a phone number), served by /api/gateway/status.
        let p = default_providers();
        let nvidia = p.iter().find(|p| p.name == "nvidia").unwrap();
        assert_eq!(nvidia.aliases, ["nvidia-gateway", "nvidia_gateway"]);
        for p in &p {
            for a in &p.aliases {
                assert!(
                    !a.chars().any(|c| c.is_ascii_digit()),
                    "alias {a:?} of {} looks like an account name",
                    p.name
                );
            }
        }
    }

    #[test]
    fn known_unlimited_providers() {
        let p = default_providers();
        let r = route(&p, None, "siliconflow/Qwen/Qwen3").unwrap();
        assert_eq!(
            (
                p[r.provider].name.as_str(),
                r.upstream_model.as_str(),
                r.limited
            ),
            ("siliconflow", "Qwen/Qwen3", false)
        );
        let r = route(&p, None, "deepseek-api/deepseek-chat").unwrap();
        assert_eq!(p[r.provider].name, "deepseek");
    }

    #[test]
    fn unknown_goes_to_default_unlimited_or_is_refused() {
        let p = default_providers();
        let r = route(&p, Some("nvidia"), "gpt-4o").unwrap();
        assert_eq!((r.upstream_model.as_str(), r.limited), ("gpt-4o", false));
        let err = route(&p, None, "openai/gpt-4o").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("openai") && msg.contains("siliconflow") && msg.contains("nvidia"),
            "{msg}"
        );
    }

    #[test]
    fn urls_never_duplicate_the_version() {
        assert_eq!(
            upstream_url("https://x/v1/", "/chat/completions"),
            "https://x/v1/chat/completions"
        );
        assert_eq!(
            upstream_url("http://127.0.0.1:9/v1", "models"),
            "http://127.0.0.1:9/v1/models"
        );
    }
}
