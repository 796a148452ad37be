//! A call's budget reservation: before a call of a run goes upstream, the
//! gateway asks the daemon ([`GatewayHooks::reserve`]) to reserve its worst
//! case — the prompt's tokens counted with the gateway's tokenizer
//! (`o200k_base`, as `count_tokens`), the request's max output tokens (the
//! daemon's default where it names none) and their price. A refusal is the
//! client's error in its protocol's shape (402, `budget_exceeded`). The
//! reservation lives in a [`BudgetHold`] (in `hooks`, beside the
//! [`GatewayHooks::release`] it calls) that the call, and its stream, keep
//! until they end; usage is booked before the hold is dropped, and dropping
//! it releases the reservation.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::call::Call;
use crate::cpu;
use crate::error::GatewayError;
use crate::hooks::{BudgetHold, CallEstimate, RunAttribution};
use crate::routing::Route;
use crate::state::GatewayInner;

/// Prompts with more text than this are counted on a blocking thread.
const COUNT_INLINE_BYTES: usize = 64 * 1024;

/// The most output a request may ask for: chat's `max_completion_tokens`
/// or `max_tokens` (Responses' `max_output_tokens` and Messages'
/// `max_tokens` become chat's `max_tokens` in translation; a native
/// client body is read too).
fn max_output(call: &Call) -> Option<u64> {
    let read = |b: &Map<String, Value>| {
        ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| b.get(*k).and_then(Value::as_u64))
    };
    read(&call.body).or_else(|| call.client_body.as_ref().and_then(read))
}

/// Bytes of text in a chat body's messages (decides where to count).
fn text_bytes(body: &Map<String, Value>) -> usize {
    body.get("messages")
        .map_or(0, |m| m.to_string().len())
        .saturating_add(body.get("tools").map_or(0, |t| t.to_string().len()))
}

/// Reserves the call's worst case if the daemon keeps budgets for its run.
pub(crate) async fn reserve(
    gw: &Arc<GatewayInner>,
    call: &Call,
    route: &Route,
    provider: &str,
) -> Result<Option<Arc<BudgetHold>>, GatewayError> {
    let Some(attribution) = call.attribution.as_ref() else {
        return Ok(None);
    };
    if !gw.hooks.budgets_apply(attribution) {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let result = check(gw, call, route, provider, attribution).await;
    metrics::histogram!(crate::metrics::BUDGET_CHECK).record(started.elapsed().as_secs_f64());
    result
}

async fn check(
    gw: &Arc<GatewayInner>,
    call: &Call,
    route: &Route,
    provider: &str,
    attribution: &RunAttribution,
) -> Result<Option<Arc<BudgetHold>>, GatewayError> {
    let prompt_tokens = if text_bytes(&call.body) <= COUNT_INLINE_BYTES {
        cpu::count_chat(&call.body)
    } else {
        let body = call.body.clone();
        gw.cpu.run(move || cpu::count_chat(&body)).await?
    };
    let estimate = CallEstimate {
        provider: provider.to_string(),
        model: route.upstream_model.clone(),
        prompt_tokens,
        max_output_tokens: max_output(call),
        price: gw.prices.rates(provider, &route.upstream_model),
    };
    match gw.hooks.reserve(attribution, &estimate).await {
        Ok(None) => Ok(None),
        Ok(Some(id)) => Ok(Some(Arc::new(BudgetHold {
            hooks: gw.hooks.clone(),
            attribution: attribution.clone(),
            id,
        }))),
        Err(refusal) => Err(GatewayError::BudgetExceeded(refusal.message)),
    }
}
