//! What a call costs: `gateway.prices` compiled once, applied to the usage
//! a response reported as it passed through the gateway.
//!
//! The cost of one response is
//! `(prompt − cached) × input + cached × cached_input + completion × output`,
//! each price in USD per million tokens, from the first entry whose glob
//! matches `provider/model` (the model as sent upstream). A model no entry
//! matches has no price: its cost is `None` and the ledger counts it as
//! unpriced, so a missing price shows instead of passing for free.

use crate::config::PriceConfig;
use crate::hooks::TokenUsage;

/// One compiled price entry.
#[derive(Debug, Clone)]
struct Entry {
    pattern: glob::Pattern,
    input: f64,
    output: f64,
    cached_input: f64,
}

/// `gateway.prices`, compiled (globs checked by `GatewayConfig::validate`).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: Vec<Entry>,
}

impl PriceTable {
    /// Compile the configured entries; an entry whose glob does not parse
    /// (refused earlier by validation) is skipped.
    pub fn new(prices: &[PriceConfig]) -> PriceTable {
        let entries = prices
            .iter()
            .filter_map(|p| {
                Some(Entry {
                    pattern: glob::Pattern::new(&p.model).ok()?,
                    input: p.input,
                    output: p.output,
                    cached_input: p.cached_input.unwrap_or(p.input),
                })
            })
            .collect();
        PriceTable { entries }
    }

    /// USD per million (input, output) tokens of `provider/model`, `None`
    /// when unpriced.
    pub fn rates(&self, provider: &str, model: &str) -> Option<(f64, f64)> {
        let name = format!("{provider}/{model}");
        self.entries
            .iter()
            .find(|e| e.pattern.matches(&name))
            .map(|e| (e.input, e.output))
    }

    /// The cost in USD of one response's usage, `None` when no entry
    /// prices `provider/model`.
    pub fn cost(&self, usage: &TokenUsage) -> Option<f64> {
        let name = format!("{}/{}", usage.provider, usage.model);
        let e = self.entries.iter().find(|e| e.pattern.matches(&name))?;
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let fresh = usage.prompt_tokens - cached;
        Some(
            (fresh as f64 * e.input
                + cached as f64 * e.cached_input
                + usage.completion_tokens as f64 * e.output)
                / 1_000_000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_prices;

    fn usage(provider: &str, model: &str, prompt: u64, cached: u64, completion: u64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            cached_tokens: cached,
            model: model.into(),
            provider: provider.into(),
            cost_usd: None,
        }
    }

    fn price(model: &str, input: f64, output: f64, cached: Option<f64>) -> PriceConfig {
        PriceConfig {
            model: model.into(),
            input,
            output,
            cached_input: cached,
        }
    }

    #[test]
    fn the_first_matching_glob_prices_input_cached_input_and_output() {
        let table = PriceTable::new(&[
            price("openai/gpt-5-mini*", 0.25, 2.0, Some(0.025)),
            price("openai/*", 1.25, 10.0, None),
        ]);
        // 1M prompt of which 400k cached, 100k completion on the mini.
        let cost = table
            .cost(&usage(
                "openai",
                "gpt-5-mini-2025",
                1_000_000,
                400_000,
                100_000,
            ))
            .unwrap();
        let want = 0.6 * 0.25 + 0.4 * 0.025 + 0.1 * 2.0;
        assert!((cost - want).abs() < 1e-12, "{cost} vs {want}");
        // Without `cached_input` the cached tokens cost as input.
        let cost = table
            .cost(&usage("openai", "gpt-5", 1_000_000, 500_000, 0))
            .unwrap();
        assert!((cost - 1.25).abs() < 1e-12, "{cost}");
        // More cached than prompt tokens (a provider's mistake) cannot go negative.
        let cost = table.cost(&usage("openai", "gpt-5", 10, 50, 0)).unwrap();
        assert!(cost >= 0.0);
    }

    #[test]
    fn nvidia_free_tier_costs_nothing_and_an_unknown_model_is_unpriced() {
        let table = PriceTable::new(&default_prices());
        assert_eq!(
            table.cost(&usage(
                "nvidia",
                "deepseek-ai/deepseek-v4-pro",
                5_000,
                0,
                900
            )),
            Some(0.0)
        );
        assert_eq!(
            table.cost(&usage("siliconflow", "Qwen/Qwen3", 5, 0, 5)),
            None
        );
    }
}
