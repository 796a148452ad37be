//! `budgets:` — caps in tokens and USD on what runs spend, enforced by the
//! gateway on every call (the daemon's `daemon::budget_book` decides).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::blackboard::ids::{is_valid_agent_id, is_valid_project_id, is_valid_task_id};

/// A cap: tokens (prompt + completion), USD, or both; absent = no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetLimit {
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default)]
    pub usd: Option<f64>,
}

impl BudgetLimit {
    fn is_set(&self) -> bool {
        self.tokens.is_some() || self.usd.is_some()
    }
}

/// Per-day and per-month caps of one project (agents and the home: day
/// only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeriodLimits {
    pub day: Option<BudgetLimit>,
    pub month: Option<BudgetLimit>,
}

/// `budgets:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Hour (0–23, local to `time_zone`) at which day and month windows
    /// begin.
    pub reset_hour: u32,
    /// UTC offset of the windows: `UTC`, `+08:00`, `-05:30`.
    pub time_zone: String,
    /// Share of a cap at which the budget is reported once per window
    /// (event, observation, webhook).
    pub soft_threshold: f64,
    /// Output tokens a call reserves when its request names no maximum.
    pub default_max_output_tokens: u64,
    /// Every task (`"*"`) or one (`"<project>/<task>"`): all its runs and
    /// rounds.
    pub tasks: BTreeMap<String, BudgetLimit>,
    /// Per agent id (`"*"` = each agent): `day`.
    pub agents: BTreeMap<String, PeriodLimits>,
    /// Per project id (`"*"` = each project): `day`, `month`.
    pub projects: BTreeMap<String, PeriodLimits>,
    /// The whole home: `day`.
    pub home: PeriodLimits,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            reset_hour: 0,
            time_zone: "UTC".to_string(),
            soft_threshold: 0.8,
            default_max_output_tokens: 8192,
            tasks: BTreeMap::new(),
            agents: BTreeMap::new(),
            projects: BTreeMap::new(),
            home: PeriodLimits::default(),
        }
    }
}

impl BudgetsConfig {
    /// Whether any cap is set.
    pub fn has_limits(&self) -> bool {
        let period = |p: &PeriodLimits| {
            p.day.is_some_and(|l| l.is_set()) || p.month.is_some_and(|l| l.is_set())
        };
        self.tasks.values().any(BudgetLimit::is_set)
            || self.agents.values().any(period)
            || self.projects.values().any(period)
            || period(&self.home)
    }

    /// The cap of task `task` of `project`: its own entry, else `"*"`.
    pub fn task_limit(&self, project: &str, task: &str) -> Option<BudgetLimit> {
        self.tasks
            .get(&format!("{project}/{task}"))
            .or_else(|| self.tasks.get("*"))
            .copied()
            .filter(BudgetLimit::is_set)
    }

    /// The day cap of `agent`: its own entry, else `"*"`.
    pub fn agent_day(&self, agent: &str) -> Option<BudgetLimit> {
        self.agents
            .get(agent)
            .or_else(|| self.agents.get("*"))
            .and_then(|p| p.day)
            .filter(BudgetLimit::is_set)
    }

    /// The caps of `project`: its own entry, else `"*"`.
    pub fn project_limits(&self, project: &str) -> Option<PeriodLimits> {
        self.projects
            .get(project)
            .or_else(|| self.projects.get("*"))
            .copied()
    }

    /// Range checks: `(dotted key, what is wrong)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: String, why: String| Err((format!("budgets.{k}"), why));
        if self.reset_hour > 23 {
            return bad(
                "reset_hour".into(),
                format!("must be an hour from 0 to 23, got {}", self.reset_hour),
            );
        }
        if let Err(e) = parse_offset(&self.time_zone) {
            return bad("time_zone".into(), e);
        }
        if !(self.soft_threshold > 0.0 && self.soft_threshold <= 1.0) {
            return bad(
                "soft_threshold".into(),
                format!(
                    "must be a share above 0 and at most 1 (0.8 = 80%), got {}",
                    self.soft_threshold
                ),
            );
        }
        if !(1..=10_000_000).contains(&self.default_max_output_tokens) {
            return bad(
                "default_max_output_tokens".into(),
                format!(
                    "must be between 1 and 10000000, got {}",
                    self.default_max_output_tokens
                ),
            );
        }
        let limit = |key: String, l: &BudgetLimit| -> Result<(), (String, String)> {
            if let Some(usd) = l.usd.filter(|u| !u.is_finite() || *u < 0.0) {
                return bad(
                    format!("{key}.usd"),
                    format!("must be a number of USD, 0 or more, got {usd}"),
                );
            }
            Ok(())
        };
        for (k, l) in &self.tasks {
            if k != "*" && !k.contains('/') {
                return bad(
                    format!("tasks.{k:?}"),
                    "must be \"*\" (every task) or \"<project>/<task>\"".into(),
                );
            }
            limit(format!("tasks.{k:?}"), l)?;
        }
        for (section, map) in [("agents", &self.agents), ("projects", &self.projects)] {
            for (k, p) in map {
                if let Some(l) = &p.day {
                    limit(format!("{section}.{k:?}.day"), l)?;
                }
                if let Some(l) = &p.month {
                    if section == "agents" {
                        return bad(
                            format!("{section}.{k:?}.month"),
                            "agents have day budgets only".into(),
                        );
                    }
                    limit(format!("{section}.{k:?}.month"), l)?;
                }
            }
        }
        if let Some(l) = &self.home.day {
            limit("home.day".into(), l)?;
        }
        if self.home.month.is_some() {
            return bad("home.month".into(), "the home has a day budget only".into());
        }
        Ok(())
    }
}

/// One budget as operators name it: `task:<project>/<task>`, `task:*`,
/// `agent:<id>:day`, `project:<id>:day`, `project:<id>:month`, `home:day`
/// (`*` in place of an id: the entry every one without its own uses).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BudgetKey {
    /// `"*"` or `"<project>/<task>"`.
    Task(String),
    AgentDay(String),
    ProjectDay(String),
    ProjectMonth(String),
    HomeDay,
}

impl BudgetKey {
    /// Parses the forms above (`agent:<id>` and `home` mean their day).
    pub fn parse(s: &str) -> Result<BudgetKey, String> {
        let bad = |why: &str| {
            format!(
                "{s:?} is not a budget: {why}; use task:<project>/<task>, agent:<id>:day, \
                 project:<id>:day, project:<id>:month or home:day (`*` for every one)"
            )
        };
        let id_ok = |id: &str, valid: fn(&str) -> bool| id == "*" || valid(id);
        let parts: Vec<&str> = s.trim().split(':').collect();
        match parts.as_slice() {
            ["task", t] => {
                let ok = *t == "*"
                    || t.split_once('/')
                        .is_some_and(|(p, task)| is_valid_project_id(p) && is_valid_task_id(task));
                if ok {
                    Ok(BudgetKey::Task(t.to_string()))
                } else {
                    Err(bad("a task is named <project>/<task>, as alpha/T-0001"))
                }
            }
            ["agent", a] | ["agent", a, "day"] if id_ok(a, is_valid_agent_id) => {
                Ok(BudgetKey::AgentDay(a.to_string()))
            }
            ["agent", _, period] if *period != "day" => Err(bad("agents have day budgets only")),
            ["project", p, "day"] if id_ok(p, is_valid_project_id) => {
                Ok(BudgetKey::ProjectDay(p.to_string()))
            }
            ["project", p, "month"] if id_ok(p, is_valid_project_id) => {
                Ok(BudgetKey::ProjectMonth(p.to_string()))
            }
            ["project", _] => Err(bad("name the period: project:<id>:day or :month")),
            ["home"] | ["home", "day"] => Ok(BudgetKey::HomeDay),
            ["home", _] => Err(bad("the home has a day budget only")),
            ["agent", ..] | ["project", ..] => {
                Err(bad("the id is not a valid agent or project id"))
            }
            _ => Err(bad("unknown form")),
        }
    }

    /// The `*` entry of its kind (itself for the home).
    pub fn star(&self) -> BudgetKey {
        match self {
            BudgetKey::Task(_) => BudgetKey::Task("*".into()),
            BudgetKey::AgentDay(_) => BudgetKey::AgentDay("*".into()),
            BudgetKey::ProjectDay(_) => BudgetKey::ProjectDay("*".into()),
            BudgetKey::ProjectMonth(_) => BudgetKey::ProjectMonth("*".into()),
            BudgetKey::HomeDay => BudgetKey::HomeDay,
        }
    }

    /// Whether it names every task, agent or project (`*`).
    pub fn is_star(&self) -> bool {
        match self {
            BudgetKey::Task(k)
            | BudgetKey::AgentDay(k)
            | BudgetKey::ProjectDay(k)
            | BudgetKey::ProjectMonth(k) => k == "*",
            BudgetKey::HomeDay => false,
        }
    }
}

impl std::fmt::Display for BudgetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetKey::Task(t) => write!(f, "task:{t}"),
            BudgetKey::AgentDay(a) => write!(f, "agent:{a}:day"),
            BudgetKey::ProjectDay(p) => write!(f, "project:{p}:day"),
            BudgetKey::ProjectMonth(p) => write!(f, "project:{p}:month"),
            BudgetKey::HomeDay => write!(f, "home:day"),
        }
    }
}

/// A budget changed at run time: it replaces the entry's whole limit (no
/// tokens and no USD = no cap, whatever the configuration says).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetOverride {
    pub key: BudgetKey,
    pub limit: BudgetLimit,
}

impl BudgetsConfig {
    /// The entry's own limit (no `*` fallback; `None` = no entry).
    pub fn entry(&self, key: &BudgetKey) -> Option<BudgetLimit> {
        match key {
            BudgetKey::Task(t) => self.tasks.get(t).copied(),
            BudgetKey::AgentDay(a) => self.agents.get(a).and_then(|p| p.day),
            BudgetKey::ProjectDay(p) => self.projects.get(p).and_then(|p| p.day),
            BudgetKey::ProjectMonth(p) => self.projects.get(p).and_then(|p| p.month),
            BudgetKey::HomeDay => self.home.day,
        }
    }

    /// Every entry: (key, limit), in key order.
    pub fn entries(&self) -> Vec<(BudgetKey, BudgetLimit)> {
        let mut out: Vec<(BudgetKey, BudgetLimit)> = Vec::new();
        for (t, l) in &self.tasks {
            out.push((BudgetKey::Task(t.clone()), *l));
        }
        for (a, p) in &self.agents {
            if let Some(l) = p.day {
                out.push((BudgetKey::AgentDay(a.clone()), l));
            }
        }
        for (id, p) in &self.projects {
            if let Some(l) = p.day {
                out.push((BudgetKey::ProjectDay(id.clone()), l));
            }
            if let Some(l) = p.month {
                out.push((BudgetKey::ProjectMonth(id.clone()), l));
            }
        }
        if let Some(l) = self.home.day {
            out.push((BudgetKey::HomeDay, l));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// These budgets with `overrides` applied: each replaces its entry's
    /// limit. A named project or agent entry an override creates starts
    /// from the `*` entry, so setting `project:alpha:day` keeps the month
    /// cap alpha had from `project:*:month`. `*` overrides apply first.
    pub fn with_overrides(&self, overrides: &[BudgetOverride]) -> BudgetsConfig {
        let mut c = self.clone();
        let (stars, named): (Vec<_>, Vec<_>) = overrides.iter().partition(|o| o.key.is_star());
        for o in stars.into_iter().chain(named) {
            let star = |m: &BTreeMap<String, PeriodLimits>| m.get("*").copied().unwrap_or_default();
            match &o.key {
                BudgetKey::Task(t) => {
                    c.tasks.insert(t.clone(), o.limit);
                }
                BudgetKey::AgentDay(a) => {
                    let base = star(&c.agents);
                    c.agents.entry(a.clone()).or_insert(base).day = Some(o.limit);
                }
                BudgetKey::ProjectDay(p) => {
                    let base = star(&c.projects);
                    c.projects.entry(p.clone()).or_insert(base).day = Some(o.limit);
                }
                BudgetKey::ProjectMonth(p) => {
                    let base = star(&c.projects);
                    c.projects.entry(p.clone()).or_insert(base).month = Some(o.limit);
                }
                BudgetKey::HomeDay => c.home.day = Some(o.limit),
            }
        }
        c
    }
}

/// Checks a limit an operator sets (`what` names where it came from).
pub fn check_limit(limit: &BudgetLimit) -> Result<(), String> {
    if let Some(usd) = limit.usd.filter(|u| !u.is_finite() || *u < 0.0) {
        return Err(format!("usd must be a number of USD, 0 or more, got {usd}"));
    }
    Ok(())
}

/// `budgets.json` as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverridesFile {
    overrides: Vec<StoredOverride>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredOverride {
    budget: String,
    tokens: Option<u64>,
    usd: Option<f64>,
}

/// Reads the budgets changed at run time ([`Home::budget_overrides_file`]);
/// no file = none. A file that does not parse is an error naming it and
/// the entry.
///
/// [`Home::budget_overrides_file`]: crate::home::Home::budget_overrides_file
pub fn load_overrides(path: &Path) -> Result<Vec<BudgetOverride>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    parse_overrides(&text, &path.display().to_string()).map_err(|e| {
        format!("{e}; fix or remove the file (it holds the budgets set with `moziplus budget set`)")
    })
}

/// Reads overrides in the form of `budgets.json` (from `origin`, named in
/// the errors).
pub fn parse_overrides(text: &str, origin: &str) -> Result<Vec<BudgetOverride>, String> {
    let file: OverridesFile = serde_json::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    file.overrides
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let key = BudgetKey::parse(&o.budget)
                .map_err(|e| format!("{origin}: overrides[{i}]: {e}"))?;
            let limit = BudgetLimit {
                tokens: o.tokens,
                usd: o.usd,
            };
            check_limit(&limit).map_err(|e| format!("{origin}: overrides[{i}]: {e}"))?;
            Ok(BudgetOverride { key, limit })
        })
        .collect()
}

/// Writes the overrides (0600, replaced atomically: a reader sees the old
/// file or the new one).
pub fn save_overrides(path: &Path, overrides: &[BudgetOverride]) -> std::io::Result<()> {
    let mut text = overrides_json(overrides).map_err(std::io::Error::other)?;
    text.push('\n');
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    crate::home::write_private_file(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The overrides in the form of `budgets.json`.
pub fn overrides_json(overrides: &[BudgetOverride]) -> Result<String, serde_json::Error> {
    let file = OverridesFile {
        overrides: overrides
            .iter()
            .map(|o| StoredOverride {
                budget: o.key.to_string(),
                tokens: o.limit.tokens,
                usd: o.limit.usd,
            })
            .collect(),
    };
    serde_json::to_string_pretty(&file)
}

/// `overrides` with `key` set to `limit` (`None`: the override removed).
pub fn change_override(
    overrides: &[BudgetOverride],
    key: &BudgetKey,
    limit: Option<BudgetLimit>,
) -> Vec<BudgetOverride> {
    let mut out: Vec<BudgetOverride> = overrides
        .iter()
        .filter(|o| &o.key != key)
        .cloned()
        .collect();
    if let Some(limit) = limit {
        out.push(BudgetOverride {
            key: key.clone(),
            limit,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// A UTC offset: `UTC`, `Z`, `+08:00`, `-05:30`, `+0530`; in ms. Whole
/// quarter hours only (every zone's offset is one).
pub fn parse_offset(zone: &str) -> Result<i64, String> {
    const HOUR_MS: i64 = 3_600_000;
    let z = zone.trim();
    if z.eq_ignore_ascii_case("utc") || z == "Z" {
        return Ok(0);
    }
    let bad = || {
        format!("{zone:?} is not a UTC offset; use \"UTC\" or a form like \"+08:00\" or \"-05:30\"")
    };
    let (sign, rest) = match z.as_bytes().first() {
        Some(b'+') => (1, &z[1..]),
        Some(b'-') => (-1, &z[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let h: i64 = digits[..2].parse().map_err(|_| bad())?;
    let m: i64 = digits[2..].parse().map_err(|_| bad())?;
    if h > 14 || m >= 60 || m % 15 != 0 {
        return Err(bad());
    }
    Ok(sign * (h * HOUR_MS + m * 60_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_or_name_the_accepted_forms() {
        assert_eq!(parse_offset("UTC"), Ok(0));
        assert_eq!(parse_offset("+05:30"), Ok(19_800_000));
        assert_eq!(parse_offset("-0800"), Ok(-28_800_000));
        let e = parse_offset("Europe/Paris").unwrap_err();
        assert!(e.contains("not a UTC offset"), "{e}");
        assert!(parse_offset("+05:10").is_err(), "quarter hours only");
    }

    #[test]
    fn a_named_entry_wins_over_the_star_and_bad_values_name_their_key() {
        let c: BudgetsConfig = serde_yaml_ng::from_str(
            "tasks: {'*': {tokens: 200000}, alpha/T-0001: {usd: 1}}\n\
             projects: {'*': {day: {usd: 5}}}\n",
        )
        .unwrap();
        assert!(c.has_limits());
        assert_eq!(c.task_limit("alpha", "T-0001").unwrap().usd, Some(1.0));
        assert_eq!(
            c.task_limit("alpha", "T-0002").unwrap().tokens,
            Some(200_000)
        );
        assert_eq!(
            c.project_limits("beta").unwrap().day.unwrap().usd,
            Some(5.0)
        );
        assert!(!BudgetsConfig::default().has_limits());
        let bad: BudgetsConfig = serde_yaml_ng::from_str("agents: {w: {month: {usd: 1}}}").unwrap();
        assert_eq!(bad.validate().unwrap_err().0, "budgets.agents.\"w\".month");
        let bad: BudgetsConfig = serde_yaml_ng::from_str("time_zone: Mars").unwrap();
        assert_eq!(bad.validate().unwrap_err().0, "budgets.time_zone");
    }

    #[test]
    fn budget_keys_parse_print_and_name_the_forms_they_accept() {
        for (raw, shown) in [
            ("task:alpha/T-0001", "task:alpha/T-0001"),
            ("task:*", "task:*"),
            ("agent:worker", "agent:worker:day"),
            ("project:alpha:month", "project:alpha:month"),
            ("project:*:day", "project:*:day"),
            ("home", "home:day"),
        ] {
            assert_eq!(BudgetKey::parse(raw).unwrap().to_string(), shown, "{raw}");
        }
        for (raw, why) in [
            ("task:alpha", "<project>/<task>"),
            ("agent:w:month", "day budgets only"),
            ("project:alpha", "name the period"),
            ("home:month", "day budget only"),
            ("project:Alpha:day", "not a valid"),
            ("team:x", "unknown form"),
        ] {
            let e = BudgetKey::parse(raw).unwrap_err();
            assert!(e.contains(why) && e.contains("home:day"), "{raw}: {e}");
        }
    }

    #[test]
    fn overrides_replace_their_entry_and_a_new_named_entry_starts_from_the_star() {
        let c: BudgetsConfig = serde_yaml_ng::from_str(
            "tasks: {'*': {tokens: 100}}\n\
             projects: {'*': {day: {usd: 5}, month: {usd: 50}}}\n",
        )
        .unwrap();
        let key = |s: &str| BudgetKey::parse(s).unwrap();
        let limit = |tokens: Option<u64>, usd: Option<f64>| BudgetLimit { tokens, usd };
        let o = change_override(&[], &key("project:alpha:day"), Some(limit(None, Some(9.0))));
        let o = change_override(&o, &key("task:alpha/T-0001"), Some(limit(None, None)));
        let merged = c.with_overrides(&o);
        let alpha = merged.project_limits("alpha").unwrap();
        assert_eq!(alpha.day.unwrap().usd, Some(9.0));
        assert_eq!(
            alpha.month.unwrap().usd,
            Some(50.0),
            "the star's month stays"
        );
        assert_eq!(
            merged.task_limit("alpha", "T-0001"),
            None,
            "no cap wins over the star"
        );
        assert_eq!(
            merged.task_limit("alpha", "T-0002").unwrap().tokens,
            Some(100)
        );
        // Removing an override goes back to the configuration.
        let o = change_override(&o, &key("task:alpha/T-0001"), None);
        assert_eq!(o.len(), 1);
        assert_eq!(
            c.with_overrides(&o)
                .task_limit("alpha", "T-0001")
                .unwrap()
                .tokens,
            Some(100)
        );
        // Stored and read back; a bad file names itself and the entry.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budgets.json");
        assert_eq!(load_overrides(&path).unwrap(), vec![], "no file: none");
        save_overrides(&path, &o).unwrap();
        assert_eq!(load_overrides(&path).unwrap(), o);
        std::fs::write(
            &path,
            r#"{"overrides":[{"budget":"task:x","tokens":1,"usd":null}]}"#,
        )
        .unwrap();
        let e = load_overrides(&path).unwrap_err();
        assert!(e.contains("budgets.json: overrides[0]"), "{e}");
    }
}
