//! `budgets:` — caps in tokens and USD on what runs spend, enforced by the
//! gateway on every call (the daemon's `daemon::budget` decides).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}
