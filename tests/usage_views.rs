//! One scripted workload, three views of it: `moziplus usage --json`,
//! `GET /api/usage` and the Prometheus counters on `/metrics` read the same
//! ledger and must agree. A real `moziplus serve`, a real agent process
//! making LLM calls with its run key, and a fake OpenAI-compatible provider
//! on loopback standing in for NVIDIA and a paid API.

#[path = "support/fake_upstream.rs"]
mod fake_upstream;
mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// Three calls: two priced (`paid/…`, one with cached tokens), one on
/// NVIDIA's free tier; then done.
const AGENT: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, urllib.request
base = os.environ["OPENAI_BASE_URL"].rstrip("/")
for model in ["paid/cached-a", "paid/echo", "nvidia/echo"]:
    req = urllib.request.Request(
        base + "/chat/completions",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=30).read()
subprocess.run([os.environ["MOZI_BIN"], "bb", "done", os.environ["MOZI_TASK"]], check=True)
"#;

/// The sum of every series of `name` (with `kind="<kind>"` when given).
fn metric_sum(metrics: &str, name: &str, kind: Option<&str>) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| kind.is_none_or(|k| l.contains(&format!("kind=\"{k}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_cli_the_api_and_prometheus_agree_on_one_workload() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(fake_upstream::FakeUpstream::start());
    let config = format!(
        "daemon:\n  tick_interval: 1\n\
         gateway:\n  prices:\n    - {{model: \"paid/*\", input: 2, output: 8, cached_input: 0.5}}\n    - {{model: \"nvidia/*\", input: 0, output: 0}}\n\
         \x20 providers:\n    - name: paid\n      base_url: {0}\n    - name: nvidia\n      base_url: {0}\n",
        fake.base_url
    );
    let home = TestHome::with_config(&config, "");
    let script = home.script("agent.py", AGENT);
    home.command_worker(&script);
    home.create_project("p");
    let task = home.create_task("p", "three calls", &[]);
    let d = Daemon::start(&home);
    let api = || -> Value {
        let (code, body) = d.get("/api/usage").expect("usage");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    wait_for(
        Duration::from_secs(60),
        "three responses in the ledger",
        || api()["total"]["responses"] == 3,
    );
    let from_api = api();
    let out = home.run(&["usage", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let from_cli: Value = out.json();
    let (code, metrics) = d.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    d.stop();
    assert_eq!(fake.state.hits(), 3);

    // The fake's usage: `cached-a` 1000 prompt (600 cached) + 200
    // completion; `echo` 10 + 5, twice.
    let total = &from_api["total"];
    assert_eq!(total["prompt_tokens"], 1020);
    assert_eq!(total["completion_tokens"], 210);
    assert_eq!(total["cached_tokens"], 600);
    let want_usd = (400.0 * 2.0 + 600.0 * 0.5 + 200.0 * 8.0 + 10.0 * 2.0 + 5.0 * 8.0) / 1e6;
    let usd = total["cost_usd"].as_f64().unwrap();
    assert!((usd - want_usd).abs() < 1e-12, "{usd} vs {want_usd}");
    // The CLI reads the same ledger into the same shape.
    for key in [
        "total",
        "by_project",
        "by_agent",
        "by_model",
        "by_task",
        "by_day",
    ] {
        assert_eq!(from_cli[key], from_api[key], "{key}");
    }
    assert_eq!(from_api["by_task"][0]["key"], format!("p/{task}"));
    let models: Vec<&str> = from_api["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["nvidia/echo", "paid/cached-a", "paid/echo"]);
    // Prometheus counts the same responses, tokens and cost.
    let m = |name: &str, kind: Option<&str>| metric_sum(&metrics, name, kind);
    assert_eq!(m("moziplus_llm_responses_total", None), 3.0, "{metrics}");
    assert_eq!(m("moziplus_llm_tokens_total", Some("prompt")), 1020.0);
    assert_eq!(m("moziplus_llm_tokens_total", Some("completion")), 210.0);
    assert_eq!(m("moziplus_llm_tokens_total", Some("cached")), 600.0);
    let micro = m("moziplus_llm_cost_microusd_total", None);
    assert!(
        (micro / 1e6 - want_usd).abs() < 3e-6,
        "{micro} µUSD vs {want_usd}"
    );
    assert!(
        metrics.contains(
            "moziplus_llm_responses_total{project=\"p\",agent=\"worker\",model=\"paid/echo\"}"
        ),
        "{metrics}"
    );
    drop(rt);
}
