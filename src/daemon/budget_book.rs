//! Budgets: caps in tokens and USD on what runs spend, decided here and
//! enforced by the gateway on every call before it is sent
//! ([`GatewayHooks::reserve`](crate::gateway::GatewayHooks::reserve)).
//!
//! [`BudgetBook`] is pure bookkeeping (no I/O; time from an injected
//! [`Clock`]). Each call reserves its worst case — the prompt's tokens plus
//! the most it may answer, and their price — in every budget that applies
//! to it: its task (all runs and rounds), its agent's day, its project's day
//! and month, the home's day. A call that would take any of them past its
//! limit is refused. The reservation is released when the call ends, and
//! what the gateway saw it use is added to the budgets' spend
//! ([`BudgetBook::spend`]). Everything happens under one lock, so callers
//! racing for the last of a budget cannot all pass: the spend can pass a
//! limit only by what a call used beyond its reserved worst case.
//!
//! Windows: a day starts at `budgets.reset_hour` in `budgets.time_zone` (a
//! UTC offset), a month on its first day at that hour. A window's spend is
//! keyed by its start, so a new window starts from nothing by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};

use crate::blackboard::{Clock, Millis};
use crate::config::budgets::parse_offset;
use crate::config::{BudgetLimit, BudgetsConfig};
use crate::locks::Recover;
use crate::locks::RecoverRw;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// One budget's window of spend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A task, all its runs and rounds: (project, task).
    Task(String, String),
    /// An agent's day starting at the given instant.
    AgentDay(String, Millis),
    /// A project's day.
    ProjectDay(String, Millis),
    /// A project's month.
    ProjectMonth(String, Millis),
    /// The home's day (every project).
    HomeDay(Millis),
}

impl Scope {
    /// For people: "task T-0001 of alpha", "project alpha per day", ….
    pub fn name(&self) -> String {
        match self {
            Scope::Task(p, t) => format!("task {t} of project {p}"),
            Scope::AgentDay(a, _) => format!("agent {a} per day"),
            Scope::ProjectDay(p, _) => format!("project {p} per day"),
            Scope::ProjectMonth(p, _) => format!("project {p} per month"),
            Scope::HomeDay(_) => "the home per day".to_string(),
        }
    }

    /// Its name and window start in the store shared by several daemons
    /// (`blackboard::cluster::BudgetWindow`): `project-day:alpha` and the
    /// day's start, `task:alpha/T-0001` and 0.
    pub fn key(&self) -> (String, Millis) {
        match self {
            Scope::Task(p, t) => (format!("task:{p}/{t}"), 0),
            Scope::AgentDay(a, s) => (format!("agent-day:{a}"), *s),
            Scope::ProjectDay(p, s) => (format!("project-day:{p}"), *s),
            Scope::ProjectMonth(p, s) => (format!("project-month:{p}"), *s),
            Scope::HomeDay(s) => ("home-day".to_string(), *s),
        }
    }

    /// The scope of a [`Scope::key`]; `None` for a name it never gives.
    pub fn from_key(name: &str, start: Millis) -> Option<Scope> {
        let (kind, rest) = name.split_once(':').unwrap_or((name, ""));
        Some(match kind {
            "task" => {
                let (p, t) = rest.split_once('/')?;
                Scope::Task(p.to_string(), t.to_string())
            }
            "agent-day" => Scope::AgentDay(rest.to_string(), start),
            "project-day" => Scope::ProjectDay(rest.to_string(), start),
            "project-month" => Scope::ProjectMonth(rest.to_string(), start),
            "home-day" if rest.is_empty() => Scope::HomeDay(start),
            _ => return None,
        })
    }

    /// The window's start (ms), `None` for a task (no window).
    pub fn window_start(&self) -> Option<Millis> {
        match self {
            Scope::Task(..) => None,
            Scope::AgentDay(_, s)
            | Scope::ProjectDay(_, s)
            | Scope::ProjectMonth(_, s)
            | Scope::HomeDay(s) => Some(*s),
        }
    }
}

/// Who a call is for.
#[derive(Debug, Clone, Copy)]
pub struct Payer<'a> {
    pub project: &'a str,
    pub task: Option<&'a str>,
    pub agent: &'a str,
}

/// Tokens and USD, spent or held.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Amount {
    pub tokens: u64,
    pub usd: f64,
}

impl Amount {
    fn add(&mut self, a: Amount) {
        self.tokens = self.tokens.saturating_add(a.tokens);
        self.usd += a.usd;
    }
    fn sub(&mut self, a: Amount) {
        self.tokens = self.tokens.saturating_sub(a.tokens);
        self.usd = (self.usd - a.usd).max(0.0);
    }
}

#[derive(Debug, Default)]
struct Spend {
    spent: Amount,
    held: Amount,
    /// The soft threshold was reported in this window.
    warned: bool,
}

/// A call the book refused: the budget, its use and its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub scope: Scope,
    /// `tokens` or `USD`.
    pub unit: &'static str,
    /// Spent plus held by calls in flight.
    pub used: f64,
    pub limit: f64,
    /// What this call might need at most.
    pub needed: f64,
}

impl Refusal {
    /// The message the agent's client shows.
    pub fn message(&self) -> String {
        let fmt = |v: f64| {
            if self.unit == "USD" {
                format!("${v:.4}")
            } else {
                format!("{v:.0} tokens")
            }
        };
        format!(
            "budget exceeded: {} has used {} of its limit of {}, and this call may need up to {} more. \
             An operator can raise the budget (`moziplus budget set`), or the window resets.",
            self.scope.name(),
            fmt(self.used),
            fmt(self.limit),
            fmt(self.needed),
        )
    }
}

/// A budget whose spend passed the soft threshold (once per window).
#[derive(Debug, Clone, PartialEq)]
pub struct SoftCrossing {
    pub scope: Scope,
    pub unit: &'static str,
    pub spent: f64,
    pub limit: f64,
}

#[derive(Debug)]
struct Hold {
    scopes: Vec<Scope>,
    amount: Amount,
}

#[derive(Debug, Default)]
struct State {
    spend: HashMap<Scope, Spend>,
    holds: HashMap<u64, Hold>,
    next: u64,
}

/// The budgets and their spend. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct BudgetBook {
    /// The limits in force: the configuration with the run-time changes
    /// (`set_limits`); windows, threshold and default stay the start's.
    config: RwLock<Arc<BudgetsConfig>>,
    enabled: AtomicBool,
    offset_ms: i64,
    reset_hour: u32,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl BudgetBook {
    /// The book for `config`. `Config::validate` refuses a time zone that
    /// does not parse; one that got past it anyway is logged and read as
    /// UTC.
    pub fn new(config: BudgetsConfig, clock: Arc<dyn Clock>) -> BudgetBook {
        let offset_ms = parse_offset(&config.time_zone).unwrap_or_else(|e| {
            tracing::error!(error = %e, "budgets.time_zone: windows follow UTC");
            0
        });
        BudgetBook {
            enabled: AtomicBool::new(config.has_limits()),
            reset_hour: config.reset_hour,
            config: RwLock::new(Arc::new(config)),
            offset_ms,
            state: Mutex::new(State::default()),
            clock,
        }
    }

    /// Whether any budget is set at all (else calls skip the book).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The budgets in force.
    pub fn config(&self) -> Arc<BudgetsConfig> {
        self.config.read_locked().clone()
    }

    /// Puts new limits in force (a budget changed at run time); windows,
    /// soft threshold and default output stay. Returns whether the book was
    /// off before (no limit at all): it booked no spend then, so the caller
    /// refills it from the ledger ([`BudgetBook::forget_spend`]).
    pub fn set_limits(&self, config: BudgetsConfig) -> bool {
        let mut slot = self.config.write_locked();
        let mut next = config;
        next.reset_hour = slot.reset_hour;
        next.time_zone = slot.time_zone.clone();
        next.soft_threshold = slot.soft_threshold;
        next.default_max_output_tokens = slot.default_max_output_tokens;
        let was = self.enabled.swap(next.has_limits(), Ordering::AcqRel);
        *slot = Arc::new(next);
        !was
    }

    /// Drops every window's spend (not the reservations in flight).
    pub fn forget_spend(&self) {
        let mut state = self.state();
        let held: Vec<(Scope, Amount)> = state
            .spend
            .iter()
            .filter(|(_, s)| s.held != Amount::default())
            .map(|(k, s)| (k.clone(), s.held))
            .collect();
        state.spend.clear();
        for (scope, amount) in held {
            state.spend.entry(scope).or_default().held = amount;
        }
    }

    /// Output tokens reserved for a call that names no maximum.
    pub fn default_max_output_tokens(&self) -> u64 {
        self.config().default_max_output_tokens
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// Start of the day window holding `at`.
    pub fn day_start(&self, at: Millis) -> Millis {
        // Local time less the reset hour: the day's start is a multiple of
        // a day in that frame.
        let shift = self.offset_ms - i64::from(self.reset_hour) * HOUR_MS;
        (at + shift).div_euclid(DAY_MS) * DAY_MS - shift
    }

    /// Start of the month window holding `at`: the first of its month at
    /// the reset hour, local time.
    pub fn month_start(&self, at: Millis) -> Millis {
        let reset = i64::from(self.reset_hour) * HOUR_MS;
        let local = at + self.offset_ms - reset;
        let Some(date) = Utc.timestamp_millis_opt(local).single() else {
            return self.day_start(at);
        };
        let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp_millis());
        match first {
            Some(f) => f + reset - self.offset_ms,
            None => self.day_start(at),
        }
    }

    /// The budgets a call of `payer` at `at` falls under, with their limits.
    pub fn scopes(&self, payer: Payer<'_>, at: Millis) -> Vec<(Scope, Option<BudgetLimit>)> {
        let c = self.config();
        let (day, month) = (self.day_start(at), self.month_start(at));
        let mut out = Vec::with_capacity(5);
        if let Some(task) = payer.task {
            out.push((
                Scope::Task(payer.project.to_string(), task.to_string()),
                c.task_limit(payer.project, task),
            ));
        }
        out.push((
            Scope::AgentDay(payer.agent.to_string(), day),
            c.agent_day(payer.agent),
        ));
        out.push((
            Scope::ProjectDay(payer.project.to_string(), day),
            c.project_limits(payer.project).and_then(|p| p.day),
        ));
        out.push((
            Scope::ProjectMonth(payer.project.to_string(), month),
            c.project_limits(payer.project).and_then(|p| p.month),
        ));
        out.push((Scope::HomeDay(day), c.home.day));
        out
    }

    /// Reserves `worst` for one call: `Ok(Some(id))` to release with
    /// [`BudgetBook::release`], `Ok(None)` when no budget applies, or the
    /// first budget it would cross.
    pub fn reserve(&self, payer: Payer<'_>, worst: Amount) -> Result<Option<u64>, Refusal> {
        let scopes = self.scopes(payer, self.now());
        if scopes.iter().all(|(_, l)| l.is_none()) {
            return Ok(None);
        }
        let mut state = self.state();
        check(&state, &scopes, worst)?;
        let scopes: Vec<Scope> = scopes.into_iter().map(|(s, _)| s).collect();
        for scope in &scopes {
            state
                .spend
                .entry(scope.clone())
                .or_default()
                .held
                .add(worst);
        }
        state.next += 1;
        let id = state.next;
        state.holds.insert(
            id,
            Hold {
                scopes,
                amount: worst,
            },
        );
        Ok(Some(id))
    }

    /// Ends a reservation (the call ended; what it used is booked by
    /// [`BudgetBook::spend`]). Unknown ids are ignored.
    pub fn release(&self, id: u64) {
        let mut state = self.state();
        let Some(hold) = state.holds.remove(&id) else {
            return;
        };
        for scope in &hold.scopes {
            if let Some(s) = state.spend.get_mut(scope) {
                s.held.sub(hold.amount);
            }
        }
    }

    /// Adds what a call used to every budget of its payer; returns the
    /// budgets whose soft threshold this spend crossed (each once per
    /// window).
    pub fn spend(&self, payer: Payer<'_>, used: Amount) -> Vec<SoftCrossing> {
        let scopes = self.scopes(payer, self.now());
        let soft = self.config().soft_threshold;
        let mut state = self.state();
        let mut crossed = Vec::new();
        for (scope, limit) in scopes {
            let s = state.spend.entry(scope.clone()).or_default();
            s.spent.add(used);
            if s.warned {
                continue;
            }
            if let Some(c) = limit.and_then(|l| crossing(scope, l, s.spent, soft)) {
                s.warned = true;
                crossed.push(c);
            }
        }
        crossed
    }

    /// An empty book with this one's limits, windows and clock (to read a
    /// ledger into, [`BudgetBook::rows`]).
    pub fn like(&self) -> BudgetBook {
        BudgetBook {
            config: RwLock::new(self.config()),
            enabled: AtomicBool::new(self.enabled()),
            offset_ms: self.offset_ms,
            reset_hour: self.reset_hour,
            state: Mutex::new(State::default()),
            clock: self.clock.clone(),
        }
    }

    /// Every budget window with spend, and what it spent.
    pub fn rows(&self) -> Vec<(Scope, Amount)> {
        let mut out: Vec<(Scope, Amount)> = self
            .state()
            .spend
            .iter()
            .filter(|(_, s)| s.spent != Amount::default())
            .map(|(k, s)| (k.clone(), s.spent))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Takes the spend and holds of the given windows as they are (the
    /// store shared by several daemons knows them better than this book).
    pub fn load(&self, windows: Vec<(Scope, Amount, Amount)>) {
        let mut state = self.state();
        // A window whose holds all ended is not among them.
        for s in state.spend.values_mut() {
            s.held = Amount::default();
        }
        for (scope, spent, held) in windows {
            let s = state.spend.entry(scope).or_default();
            s.spent = spent;
            s.held = held;
        }
    }

    /// Adds spend booked before this book existed (the stored ledger) to
    /// one budget window; no soft-threshold report.
    pub fn seed(&self, scope: Scope, amount: Amount) {
        self.state()
            .spend
            .entry(scope)
            .or_default()
            .spent
            .add(amount);
    }

    /// Spent and held in one budget window.
    pub fn spent(&self, scope: &Scope) -> (Amount, Amount) {
        self.state()
            .spend
            .get(scope)
            .map_or((Amount::default(), Amount::default()), |s| {
                (s.spent, s.held)
            })
    }

    /// Whether a call of `payer` needing `worst` would be let through now
    /// (nothing is reserved): `Err` names the first budget it would cross.
    /// A worst case of nothing asks for one token (and a trace of USD), so
    /// a budget spent to its limit refuses it.
    pub fn room_for(&self, payer: Payer<'_>, worst: Amount) -> Result<(), Refusal> {
        let worst = Amount {
            tokens: worst.tokens.max(1),
            usd: worst.usd.max(1e-9),
        };
        let scopes = self.scopes(payer, self.now());
        let state = self.state();
        check(&state, &scopes, worst)
    }

    /// Tasks with spend in the book: (project, task).
    pub fn tasks_with_spend(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .state()
            .spend
            .iter()
            .filter_map(|(scope, s)| match scope {
                Scope::Task(p, t) if s.spent.tokens > 0 || s.spent.usd > 0.0 => {
                    Some((p.clone(), t.clone()))
                }
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The windows a call at `at` falls in: (day start, month start).
    pub fn windows(&self, at: Millis) -> (Millis, Millis) {
        (self.day_start(at), self.month_start(at))
    }
}

/// The soft threshold `spent` has reached in `scope` of `limit`, if any:
/// tokens first, then USD.
pub fn crossing(
    scope: Scope,
    limit: BudgetLimit,
    spent: Amount,
    soft: f64,
) -> Option<SoftCrossing> {
    let over_tokens = limit
        .tokens
        .filter(|max| spent.tokens as f64 >= soft * *max as f64)
        .map(|max| ("tokens", spent.tokens as f64, max as f64));
    let over_usd = limit
        .usd
        .filter(|max| spent.usd >= soft * max)
        .map(|max| ("USD", spent.usd, max));
    over_tokens
        .or(over_usd)
        .map(|(unit, spent, limit)| SoftCrossing {
            scope,
            unit,
            spent,
            limit,
        })
}

/// Whether `worst` fits beside what every limited scope has spent and
/// holds: the first one it would cross.
fn check(
    state: &State,
    scopes: &[(Scope, Option<BudgetLimit>)],
    worst: Amount,
) -> Result<(), Refusal> {
    for (scope, limit) in scopes {
        let Some(limit) = limit else { continue };
        let s = state.spend.get(scope);
        let (spent, held) = s.map_or((Amount::default(), Amount::default()), |s| {
            (s.spent, s.held)
        });
        if let Some(max) = limit.tokens {
            let used = spent.tokens.saturating_add(held.tokens);
            if used.saturating_add(worst.tokens) > max {
                return Err(Refusal {
                    scope: scope.clone(),
                    unit: "tokens",
                    used: used as f64,
                    limit: max as f64,
                    needed: worst.tokens as f64,
                });
            }
        }
        if let Some(max) = limit.usd {
            let used = spent.usd + held.usd;
            if used + worst.usd > max + 1e-12 {
                return Err(Refusal {
                    scope: scope.clone(),
                    unit: "USD",
                    used,
                    limit: max,
                    needed: worst.usd,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blackboard::ManualClock;
    use crate::config::{BudgetLimit, PeriodLimits};

    /// 2026-12-06 10:00 UTC.
    const T0: Millis = 1_796_551_200_000;

    fn book(config: BudgetsConfig) -> (BudgetBook, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        (BudgetBook::new(config, clock.clone()), clock)
    }

    fn payer() -> Payer<'static> {
        Payer {
            project: "alpha",
            task: Some("T-0001"),
            agent: "worker",
        }
    }

    fn tokens(n: u64) -> Amount {
        Amount {
            tokens: n,
            usd: 0.0,
        }
    }

    fn task_cap(tokens: u64) -> BudgetsConfig {
        let mut c = BudgetsConfig::default();
        c.tasks.insert(
            "*".into(),
            BudgetLimit {
                tokens: Some(tokens),
                usd: None,
            },
        );
        c
    }

    #[test]
    fn a_reservation_holds_its_worst_case_until_released_and_spend_counts_what_was_used() {
        let (book, _) = book(task_cap(1_000));
        let task = Scope::Task("alpha".into(), "T-0001".into());
        let a = book.reserve(payer(), tokens(600)).unwrap().unwrap();
        assert_eq!(book.spent(&task), (tokens(0), tokens(600)));
        // A second worst case of 600 does not fit beside the first.
        let refused = book.reserve(payer(), tokens(600)).unwrap_err();
        assert_eq!(
            (refused.used, refused.limit, refused.needed),
            (600.0, 1000.0, 600.0)
        );
        assert_eq!(refused.scope, task);
        assert!(
            refused.message().contains(
                "task T-0001 of project alpha has used 600 tokens of its limit of 1000 tokens"
            ),
            "{}",
            refused.message()
        );
        // The call used 250: spent, then the hold goes.
        book.spend(payer(), tokens(250));
        book.release(a);
        assert_eq!(book.spent(&task), (tokens(250), tokens(0)));
        assert!(book.reserve(payer(), tokens(600)).unwrap().is_some());
        // A payer no budget applies to reserves nothing.
        let (free, _) = self::book(BudgetsConfig::default());
        assert_eq!(free.reserve(payer(), tokens(10)), Ok(None));
    }

    #[test]
    fn usd_limits_refuse_on_the_price_of_the_worst_case() {
        let mut c = BudgetsConfig::default();
        c.projects.insert(
            "alpha".into(),
            PeriodLimits {
                day: Some(BudgetLimit {
                    tokens: None,
                    usd: Some(5.0),
                }),
                month: None,
            },
        );
        let (book, _) = book(c);
        let spend = Amount {
            tokens: 1,
            usd: 4.5,
        };
        book.spend(payer(), spend);
        let worst = Amount {
            tokens: 1,
            usd: 0.6,
        };
        let refused = book.reserve(payer(), worst).unwrap_err();
        assert_eq!(refused.unit, "USD");
        assert!(
            refused
                .message()
                .contains("project alpha per day has used $4.5000 of its limit of $5.0000"),
            "{}",
            refused.message()
        );
        let other = Payer {
            project: "beta",
            ..payer()
        };
        assert_eq!(
            book.reserve(other, worst),
            Ok(None),
            "the cap is alpha's only"
        );
    }

    #[test]
    fn day_windows_reset_at_the_configured_hour_in_the_configured_zone() {
        let mut c = BudgetsConfig {
            reset_hour: 6,
            time_zone: "+08:00".into(),
            ..Default::default()
        };
        c.agents.insert(
            "worker".into(),
            PeriodLimits {
                day: Some(BudgetLimit {
                    tokens: Some(100),
                    usd: None,
                }),
                month: None,
            },
        );
        let (book, clock) = book(c);
        // 10:00 UTC is 18:00 at +08:00; the day began at 06:00 local,
        // 22:00 UTC the day before.
        assert_eq!(book.day_start(T0), T0 - 12 * HOUR_MS);
        book.spend(payer(), tokens(100));
        assert!(book.reserve(payer(), tokens(1)).is_err());
        // 05:59 local next day (21:59 UTC): still the same day.
        clock.set(T0 + 11 * HOUR_MS + 59 * 60_000);
        assert!(book.reserve(payer(), tokens(1)).is_err());
        // 06:00 local: a new day with nothing spent.
        clock.set(T0 + 12 * HOUR_MS);
        assert!(book.reserve(payer(), tokens(1)).unwrap().is_some());
        // Months start on the 1st at the reset hour, local time:
        // 2026-12-01 06:00 +08:00 = 2026-11-30 22:00 UTC.
        let dec_1 = Utc
            .with_ymd_and_hms(2026, 11, 30, 22, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(book.month_start(T0), dec_1);
        assert_eq!(
            book.month_start(dec_1 - 1),
            Utc.with_ymd_and_hms(2026, 10, 31, 22, 0, 0)
                .unwrap()
                .timestamp_millis()
        );
    }

    #[test]
    fn the_soft_threshold_is_reported_once_per_window() {
        let (book, _) = book(task_cap(1_000));
        assert!(book.spend(payer(), tokens(700)).is_empty());
        let crossed = book.spend(payer(), tokens(100));
        assert_eq!(crossed.len(), 1);
        assert_eq!((crossed[0].spent, crossed[0].limit), (800.0, 1000.0));
        assert!(book.spend(payer(), tokens(100)).is_empty(), "once");
    }

    #[test]
    fn new_limits_apply_at_once_and_room_for_asks_for_the_refused_call() {
        let (book, _) = book(task_cap(100));
        book.spend(payer(), tokens(90));
        let refused = book.reserve(payer(), tokens(15)).unwrap_err();
        assert_eq!(refused.used, 90.0);
        assert!(book.room_for(payer(), tokens(15)).is_err());
        assert!(
            book.room_for(payer(), tokens(0)).is_ok(),
            "10 tokens of room"
        );
        assert!(!book.set_limits(task_cap(200)), "the book was on");
        assert!(book.room_for(payer(), tokens(15)).is_ok());
        assert!(book.reserve(payer(), tokens(15)).unwrap().is_some());
        // Spent to the limit: not even one token of room.
        book.set_limits(task_cap(90));
        assert!(book.room_for(payer(), tokens(0)).is_err());
        // No limit at all turns the book off.
        book.set_limits(BudgetsConfig::default());
        assert!(!book.enabled());
        assert!(
            book.set_limits(task_cap(5)),
            "it was off: the caller refills it"
        );
        book.forget_spend();
        let task = Scope::Task("alpha".into(), "T-0001".into());
        assert_eq!(
            book.spent(&task),
            (tokens(0), tokens(15)),
            "the hold in flight stays"
        );
    }

    /// The names of the store shared by several daemons read back as the
    /// scopes they came from; names it never gives read as nothing.
    #[test]
    fn scope_keys_read_back_as_their_scopes() {
        let day = T0 - 36_000_000;
        for scope in [
            Scope::Task("alpha".into(), "T-0001".into()),
            Scope::AgentDay("worker".into(), day),
            Scope::ProjectDay("alpha".into(), day),
            Scope::ProjectMonth("alpha".into(), day),
            Scope::HomeDay(day),
        ] {
            let (name, start) = scope.key();
            assert_eq!(Scope::from_key(&name, start), Some(scope.clone()), "{name}");
        }
        assert_eq!(Scope::from_key("task:no-slash", 0), None);
        assert_eq!(Scope::from_key("week:alpha", 0), None);
        assert_eq!(Scope::from_key("home-day:x", 0), None);
    }
}
