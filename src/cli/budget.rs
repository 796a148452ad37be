//! `moziplus budget list|set|clear`: the budgets in force with their use,
//! and budgets changed at run time. With a daemon serving the home, the
//! command goes through its API (`/api/budgets`), so the change is in force
//! at once and unblocks the tasks blocked for budget that have room again;
//! without one it reads the ledgers and writes `<home>/budgets.json`
//! itself, which the next daemon reads at start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::daemon_ctl::daemon_address;
use super::output::Printer;
use crate::blackboard::{OpenMode, SystemClock};
use crate::config::agents::AgentsFile;
use crate::config::budgets::{
    change_override, check_limit, load_overrides, save_overrides, BudgetKey,
};
use crate::config::{BudgetLimit, Config};
use crate::daemon::gateway_hooks::budgets::{budget_list, seed_project, Budgets};
use crate::daemon::home_lock::is_held;
use crate::home::Home;
use crate::registry::{self, ProjectId, ProjectStatus};
use crate::wire::budgets::{BudgetChange, BudgetChanged, BudgetLine, BudgetList};

#[derive(Debug, Args)]
pub struct BudgetArgs {
    /// Print JSON (the shapes of `/api/budgets`).
    #[arg(long, global = true)]
    json: bool,
    /// The daemon's address when it was started with `serve --bind`
    /// (default: the home's server.bind).
    #[arg(long, global = true)]
    bind: Option<String>,
    #[command(subcommand)]
    verb: BudgetVerb,
}

#[derive(Debug, Subcommand)]
enum BudgetVerb {
    /// Every budget in force, where its limit comes from, and its use.
    List,
    /// Set a budget at run time; it wins over `budgets:` of the configuration.
    Set(SetArgs),
    /// Remove a budget set at run time: the configuration's entry applies again.
    Clear {
        /// task:<project>/<task>, agent:<id>:day, project:<id>:day, project:<id>:month, home:day (`*` for every one).
        budget: String,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("cap").required(true).multiple(true).args(["tokens", "usd", "no_cap"])))]
struct SetArgs {
    /// task:<project>/<task>, agent:<id>:day, project:<id>:day, project:<id>:month, home:day (`*` for every one).
    budget: String,
    /// The cap in tokens (prompt + completion).
    #[arg(long)]
    tokens: Option<u64>,
    /// The cap in USD.
    #[arg(long)]
    usd: Option<f64>,
    /// No cap at all, whatever the configuration says.
    #[arg(long, conflicts_with_all = ["tokens", "usd"])]
    no_cap: bool,
}

pub async fn run(home: &Home, args: BudgetArgs) -> anyhow::Result<()> {
    let out = Printer::new(args.json);
    let daemon = is_held(home);
    let bind = args.bind.as_deref();
    match &args.verb {
        BudgetVerb::List => {
            let list = if daemon {
                let (client, base, _) = client(home, bind)?;
                send(client.get(format!("{base}/api/budgets"))).await?
            } else {
                offline_list(home).await?
            };
            out.emit(&list, || list_text(&list))
        }
        BudgetVerb::Set(set) => {
            let key = BudgetKey::parse(&set.budget).map_err(anyhow::Error::msg)?;
            let limit = BudgetLimit {
                tokens: set.tokens,
                usd: set.usd,
            };
            check_limit(&limit).map_err(anyhow::Error::msg)?;
            change(home, bind, out, daemon, &key, Some(limit)).await
        }
        BudgetVerb::Clear { budget } => {
            let key = BudgetKey::parse(budget).map_err(anyhow::Error::msg)?;
            change(home, bind, out, daemon, &key, None).await
        }
    }
}

async fn change(
    home: &Home,
    bind: Option<&str>,
    out: Printer,
    daemon: bool,
    key: &BudgetKey,
    limit: Option<BudgetLimit>,
) -> anyhow::Result<()> {
    if daemon {
        let (client, base, token) = client(home, bind)?;
        let request = match limit {
            Some(l) => client
                .put(format!("{base}/api/budgets"))
                .json(&BudgetChange {
                    budget: key.to_string(),
                    tokens: l.tokens,
                    usd: l.usd,
                }),
            None => client
                .delete(format!("{base}/api/budgets"))
                .query(&[("budget", key.to_string())]),
        };
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let changed: BudgetChanged = send(request).await?;
        return out.emit(&changed, || {
            let mut s = format!("{}\n", line_text(&changed.budget));
            for t in &changed.unblocked {
                s.push_str(&format!("unblocked {t} (blocked for budget; same round)\n"));
            }
            s
        });
    }
    let path = home.budget_overrides_file();
    let overrides = load_overrides(&path).map_err(anyhow::Error::msg)?;
    let next = change_override(&overrides, key, limit);
    save_overrides(&path, &next).with_context(|| format!("cannot write {}", path.display()))?;
    let list = offline_list(home).await?;
    let line = list
        .budgets
        .into_iter()
        .find(|l| l.budget == key.to_string())
        .unwrap_or_else(|| BudgetLine {
            budget: key.to_string(),
            name: key.to_string(),
            source: "none".into(),
            limit_tokens: None,
            limit_usd: None,
            used_tokens: None,
            used_usd: None,
            held_tokens: None,
            held_usd: None,
            window_start: None,
        });
    let changed = BudgetChanged {
        budget: line,
        unblocked: Vec::new(),
    };
    out.emit(&changed, || {
        format!(
            "{}\nstored in {}; no daemon serves this home: the next one applies it at start \
             (a task blocked for budget is unblocked by a change made while a daemon runs, or `moziplus bb reopen`)\n",
            line_text(&changed.budget),
            path.display()
        )
    })
}

fn client(
    home: &Home,
    bind: Option<&str>,
) -> anyhow::Result<(reqwest::Client, String, Option<String>)> {
    let (addr, config) = daemon_address(home, bind)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok((client, format!("http://{addr}"), config.server.api_token))
}

async fn send<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> anyhow::Result<T> {
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) if e.is_connect() => bail!(
            "a daemon holds this home but does not answer ({e}): pass --bind with the address it listens on"
        ),
        Err(e) => return Err(e).context("asking the daemon"),
    };
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!("the daemon refused: {status}: {message}");
    }
    serde_json::from_str(&body).with_context(|| format!("the daemon's answer: {body}"))
}

/// The list as the daemon would give it, from the configuration, the
/// stored overrides and the active projects' ledgers.
async fn offline_list(home: &Home) -> anyhow::Result<BudgetList> {
    let config = Config::load_global(home, &[])?;
    let overrides = load_overrides(&home.budget_overrides_file()).map_err(anyhow::Error::msg)?;
    let budgets = Budgets::new(
        config.budgets.clone(),
        overrides.clone(),
        Arc::new(SystemClock),
    );
    let mut projects = Vec::new();
    for entry in registry::load(home)? {
        if entry.status != ProjectStatus::Active {
            continue;
        }
        let id = ProjectId::parse(&entry.id)?;
        if budgets.book.enabled() {
            let bb = crate::registry::open_blackboard(home, &id, OpenMode::CLI)
                .await
                .with_context(|| format!("project {id}"))?;
            seed_project(&budgets.book, id.as_str(), &bb)
                .await
                .map_err(anyhow::Error::msg)?;
            bb.close().await;
        }
        projects.push(id.to_string());
    }
    let agents: Vec<String> = AgentsFile::load(&home.agents_file())
        .map(|a| a.agents.into_iter().map(|a| a.id).collect())
        .unwrap_or_default();
    Ok(budget_list(&budgets.book, &overrides, &projects, &agents))
}

fn amount(tokens: Option<u64>, usd: Option<f64>) -> String {
    match (tokens, usd) {
        (None, None) => "-".into(),
        (Some(t), None) => format!("{t} tokens"),
        (None, Some(u)) => format!("${u:.4}"),
        (Some(t), Some(u)) => format!("{t} tokens, ${u:.4}"),
    }
}

fn line_text(l: &BudgetLine) -> String {
    let limit = match (l.limit_tokens, l.limit_usd) {
        (None, None) => "no cap".to_string(),
        (t, u) => amount(t, u),
    };
    let used = match (l.used_tokens, l.used_usd) {
        (None, None) => String::new(),
        (t, u) => format!("  used {}", amount(t, u)),
    };
    format!("{:<36} {:<28} {:<16}{used}", l.budget, limit, l.source)
}

fn list_text(list: &BudgetList) -> String {
    if list.budgets.is_empty() {
        return "no budget is set (budgets: in config/default.yaml, or `moziplus budget set`)\n"
            .into();
    }
    let mut s = format!(
        "windows begin at {:02}:00 {}; soft threshold {:.0}%\n{:<36} {:<28} {:<16}  use\n",
        list.reset_hour,
        list.time_zone,
        list.soft_threshold * 100.0,
        "budget",
        "limit",
        "source"
    );
    for l in &list.budgets {
        s.push_str(&line_text(l));
        s.push('\n');
    }
    s
}
