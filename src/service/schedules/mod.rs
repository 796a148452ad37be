//! Schedules: recurring tasks, each slot fired exactly once.
//!
//! The rules live here and are pure functions of a schedule, a cursor and
//! "now" ([`Timing`], [`plan`], [`overlap_decision`]), so they are tested on
//! an injected clock; the store records each slot under its unique key in
//! the transaction that creates its task (`Blackboard::record_firing`).
//!
//! * **Slots.** A cron expression (5 fields, or 6 with seconds first) is read
//!   in the schedule's time zone by `croner`, which defines daylight saving:
//!   a fixed time in the skipped hour fires right after the gap, a fixed time
//!   in the repeated hour fires once (its first occurrence), and wildcard or
//!   stepped fields fire for each wall-clock match. An interval counts from
//!   the schedule's anchor.
//! * **Jitter.** Slot `s` is due at `s + offset`, the offset a hash of the
//!   schedule id and `s` below `jitter`: every daemon computes the same one,
//!   and the key stays `s`.
//! * **Late and missed.** A due slot is on time while it is less than its
//!   grace late ([`grace_ms`]: one period, at least 5 s, at most 60 s).
//!   Older slots were missed (the daemon was down): `missed: skip` records
//!   them as one skipped row, `missed: once` fires the newest of them once
//!   (`catch_up`) and records the rest as skipped.
//! * **Overlap.** `skip` records the slot as skipped while the last instance
//!   is open; `queue` fires a task that depends on it; `allow` fires anyway.
//! * **Paused.** Due slots of a paused schedule are recorded as skipped
//!   (`paused`); resuming anchors the schedule at that moment.
//! * **By hand.** `run-now` fires at once, keyed by that moment, whatever the
//!   overlap policy.

use std::str::FromStr;

use chrono::TimeZone;
use chrono_tz::Tz;

use super::{rules, ProjectService, ServiceError, ServiceResult};
use crate::blackboard::ids::{is_valid_project_id, is_valid_tag};
use crate::blackboard::{
    Actor, Firing, FiringReason, FiringRequest, FiringResult, Millis, MissedPolicy, NewTask,
    OverlapDecision, OverlapPolicy, Priority, Recurrence, Schedule, ScheduleDef, ScheduleSource,
    Task, TaskStatus,
};

/// The shortest grace a due slot gets before it counts as missed.
pub const MIN_GRACE_MS: Millis = 5_000;
/// The longest grace.
pub const MAX_GRACE_MS: Millis = 60_000;
/// At most this many slots are looked at per schedule and tick (a gap longer
/// than that is worked through over the next ticks).
pub const MAX_SLOTS_PER_TICK: usize = 10_000;
/// The shortest interval.
pub const MIN_INTERVAL_MS: Millis = 1_000;
/// The longest jitter.
pub const MAX_JITTER_MS: Millis = 24 * 3600 * 1000;

/// Parses a duration such as `2s`, `90s`, `5m`, `1h30m`, `1d` (units `ms`,
/// `s`, `m`, `h`, `d`) into milliseconds.
pub fn parse_duration(text: &str) -> Result<Millis, String> {
    let s = text.trim();
    let bad = || {
        format!("invalid duration {text:?}: write a number and a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h30m")
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: Millis = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: Millis = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses a cron expression: 5 fields, or 6 with seconds first (`croner`).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr.trim())
        .map_err(|e| {
            format!("invalid cron expression {expr:?}: {e}; write 5 fields (minute hour day month weekday) or 6 with seconds first, e.g. \"0 9 * * 1-5\"")
        })
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name.trim()).map_err(|_| {
        format!("unknown time zone {name:?}: use an IANA name such as UTC, Europe/Berlin or America/New_York")
    })
}

/// When a schedule's slots fall, parsed once.
#[derive(Debug, Clone)]
pub struct Timing {
    id: String,
    kind: TimingKind,
    tz: Tz,
    anchor: Millis,
    jitter_ms: Millis,
}

#[derive(Debug, Clone)]
enum TimingKind {
    Cron(Box<croner::Cron>),
    Interval(Millis),
}

impl Timing {
    /// The timing of `def`, anchored at `anchor`.
    pub fn new(def: &ScheduleDef, anchor: Millis) -> Result<Timing, String> {
        let tz = parse_timezone(&def.timezone)?;
        let kind = match &def.recurrence {
            Recurrence::Cron(expr) => TimingKind::Cron(Box::new(parse_cron(expr)?)),
            Recurrence::Interval(ms) if *ms >= MIN_INTERVAL_MS => TimingKind::Interval(*ms),
            Recurrence::Interval(ms) => {
                return Err(format!("interval {ms} ms is shorter than the shortest, 1s"))
            }
        };
        if !(0..=MAX_JITTER_MS).contains(&def.jitter_ms) {
            return Err(format!("jitter {} ms is outside 0 ms … 1d", def.jitter_ms));
        }
        Ok(Timing {
            id: def.id.clone(),
            kind,
            tz,
            anchor,
            jitter_ms: def.jitter_ms,
        })
    }

    pub fn of(schedule: &Schedule) -> Result<Timing, String> {
        Timing::new(&schedule.def, schedule.anchor_at)
    }

    /// The first slot strictly after `after` (and after the anchor).
    pub fn next_slot(&self, after: Millis) -> Option<Millis> {
        let after = after.max(self.anchor);
        match &self.kind {
            TimingKind::Interval(every) => {
                let k = (after - self.anchor) / every + 1;
                Some(self.anchor + k * every)
            }
            TimingKind::Cron(cron) => {
                let start = self.tz.timestamp_millis_opt(after).single()?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }

    /// The time from slot `slot` to the next one (the grace's measure).
    pub fn period_after(&self, slot: Millis) -> Millis {
        match &self.kind {
            TimingKind::Interval(every) => *every,
            TimingKind::Cron(_) => self
                .next_slot(slot)
                .map_or(MAX_GRACE_MS, |next| next - slot),
        }
    }

    /// When slot `slot` is due: the slot plus its jitter offset.
    pub fn due_at(&self, slot: Millis) -> Millis {
        slot + jitter_offset(&self.id, slot, self.jitter_ms)
    }

    /// The values a title template sees for slot `slot`.
    pub fn local(&self, slot: Millis) -> Option<chrono::DateTime<Tz>> {
        self.tz.timestamp_millis_opt(slot).single()
    }
}

/// How late a slot may fire and still be on time: one period, at least
/// [`MIN_GRACE_MS`], at most [`MAX_GRACE_MS`].
pub fn grace_ms(period: Millis) -> Millis {
    period.clamp(MIN_GRACE_MS, MAX_GRACE_MS)
}

/// The fixed jitter offset of `slot`: a hash of the id and the slot below
/// `jitter_ms` (0 without jitter).
pub fn jitter_offset(id: &str, slot: Millis, jitter_ms: Millis) -> Millis {
    if jitter_ms <= 0 {
        return 0;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{id}:{slot}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(bytes) % (jitter_ms as u64 + 1)) as Millis
}

/// One thing to record for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Fire {
        slot: Millis,
        reason: FiringReason,
    },
    /// `slots` slots, the newest of them `slot`, recorded as one skip.
    Skip {
        slot: Millis,
        reason: FiringReason,
        slots: i64,
    },
}

/// What one tick does with a schedule, and when it is due next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// When the next slot after these is due (`None`: never, or paused).
    pub next_due: Option<Millis>,
}

/// The pure rule: the slots of `schedule` after `cursor` (its last recorded
/// slot, or its anchor) that are due at `now`, and what to do with each.
pub fn plan(def: &ScheduleDef, timing: &Timing, cursor: Option<Millis>, now: Millis) -> Plan {
    let mut due = Vec::new();
    let mut at = cursor.unwrap_or(timing.anchor);
    let mut next_due = None;
    while due.len() < MAX_SLOTS_PER_TICK {
        let Some(slot) = timing.next_slot(at) else {
            break;
        };
        if timing.due_at(slot) > now {
            next_due = Some(timing.due_at(slot));
            break;
        }
        due.push(slot);
        at = slot;
    }
    if due.len() == MAX_SLOTS_PER_TICK {
        // More to work through: come back at once.
        next_due = Some(now);
    }
    let mut steps = Vec::new();
    if !def.enabled {
        if let Some(&newest) = due.last() {
            steps.push(Step::Skip {
                slot: newest,
                reason: FiringReason::Paused,
                slots: due.len() as i64,
            });
        }
        return Plan {
            steps,
            next_due: None,
        };
    }
    let (missed, on_time): (Vec<Millis>, Vec<Millis>) = due
        .into_iter()
        .partition(|&s| now - timing.due_at(s) > grace_ms(timing.period_after(s)));
    if let Some(&newest) = missed.last() {
        let n = missed.len() as i64;
        match def.missed {
            MissedPolicy::Skip => steps.push(Step::Skip {
                slot: newest,
                reason: FiringReason::Missed,
                slots: n,
            }),
            MissedPolicy::Once => {
                if n > 1 {
                    steps.push(Step::Skip {
                        slot: missed[missed.len() - 2],
                        reason: FiringReason::Missed,
                        slots: n - 1,
                    });
                }
                steps.push(Step::Fire {
                    slot: newest,
                    reason: FiringReason::CatchUp,
                });
            }
        }
    }
    steps.extend(on_time.into_iter().map(|slot| Step::Fire {
        slot,
        reason: FiringReason::OnTime,
    }));
    Plan { steps, next_due }
}

/// The overlap rule: what a slot does given the state of the last task the
/// schedule created (`None`: there was none).
pub fn overlap_decision(policy: OverlapPolicy, last: Option<TaskStatus>) -> OverlapDecision {
    let open = last.is_some_and(|s| !s.is_terminal());
    match policy {
        OverlapPolicy::Skip if open => OverlapDecision::Skip,
        OverlapPolicy::Queue if open => OverlapDecision::FireAfterLast,
        _ => OverlapDecision::Fire,
    }
}

/// Renders a title template for slot `slot`: `{{ date }}` (YYYY-MM-DD),
/// `{{ time }}` (HH:MM), `{{ datetime }}` (RFC 3339), all in the schedule's
/// time zone, and `{{ schedule }}` (its id).
pub fn render_title(
    template: &str,
    id: &str,
    local: &chrono::DateTime<Tz>,
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let ctx = minijinja::context! {
        date => local.format("%Y-%m-%d").to_string(),
        time => local.format("%H:%M").to_string(),
        datetime => local.to_rfc3339(),
        schedule => id,
    };
    env.render_str(template, ctx).map_err(|e| {
        format!("title template {template:?}: {e}; it may use {{{{ date }}}}, {{{{ time }}}}, {{{{ datetime }}}} and {{{{ schedule }}}}")
    })
}

/// Checks a definition; the error names the field and what to write.
pub fn validate(def: &ScheduleDef) -> Result<(), String> {
    if !is_valid_project_id(&def.id) {
        return Err(format!(
            "invalid schedule id {:?}: use 1-64 lowercase letters, digits, - or _, starting with a letter or digit",
            def.id
        ));
    }
    let timing = Timing::new(def, 0)?;
    if def.title.trim().is_empty() {
        return Err(format!("schedule {}: the title must not be empty", def.id));
    }
    let sample = timing
        .local(0)
        .ok_or_else(|| format!("schedule {}: time zone cannot show 1970", def.id))?;
    let title = render_title(&def.title, &def.id, &sample)?;
    if title.trim().is_empty() {
        return Err(format!("schedule {}: the title renders empty", def.id));
    }
    // The template makes a task the store accepts (kind, assignee, tags):
    // refused now, not at every firing.
    let task = task_for_slot(def, &timing, 0)?;
    crate::blackboard::validate_new_task(&task)
        .map_err(|e| format!("schedule {}: task template: {e}", def.id))?;
    for tag in &def.depends_on_tags {
        if !is_valid_tag(tag) {
            return Err(format!(
                "schedule {}: invalid tag {tag:?}: use lowercase letters, digits, - _ . :",
                def.id
            ));
        }
    }
    Ok(())
}

/// The task a slot of `def` creates.
pub fn task_for_slot(def: &ScheduleDef, timing: &Timing, slot: Millis) -> Result<NewTask, String> {
    let local = timing
        .local(slot)
        .ok_or_else(|| format!("schedule {}: slot {slot} is out of range", def.id))?;
    Ok(NewTask {
        title: render_title(&def.title, &def.id, &local)?,
        description: def.description.clone(),
        kind: def.kind.clone(),
        priority: Some(def.priority),
        assignee: def.assignee.clone(),
        parent_id: None,
        review_protocol: def.review_protocol.clone(),
        max_rounds: None,
        depends_on: Vec::new(),
        tags: def.tags.clone(),
    })
}

/// A schedule as `list` and `show` present it.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub schedule: Schedule,
    /// When its next slot is due (`None` when paused, or never again).
    pub next_at: Option<Millis>,
    /// The last slot that created a task, with the task's state.
    pub last_instance: Option<Firing>,
}

/// What one pass over a project's schedules did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleTick {
    pub fired: Vec<Task>,
    pub skipped: usize,
    /// The earliest next due time over every schedule.
    pub next_due: Option<Millis>,
    /// Schedules that could not be worked on, and why.
    pub problems: Vec<(String, String)>,
}

impl From<String> for ServiceError {
    fn from(message: String) -> Self {
        ServiceError::Invalid(message)
    }
}

impl ProjectService {
    /// Adds (or with `replace`, changes) a schedule. Refuses a template whose
    /// tasks could never start, unless `force`.
    pub async fn put_schedule(
        &self,
        def: &ScheduleDef,
        actor: &Actor,
        replace: bool,
        force: bool,
    ) -> ServiceResult<Schedule> {
        rules::require_privileged(actor, || {
            "schedules are managed by operators (the CLI, the API or project.yaml), not by agent runs".into()
        })?;
        validate(def)?;
        let timing = Timing::new(def, 0)?;
        self.refuse_never_starting(&task_for_slot(def, &timing, 0)?, force)?;
        let (schedule, _) = self
            .bb
            .put_schedule(def, ScheduleSource::Operator, replace, actor)
            .await?;
        self.committed(schedule)
    }

    /// Brings the `project.yaml` schedules into the store: each id it names
    /// is created or overwritten (the file wins), and schedules that came
    /// from the file but are no longer in it are removed. Returns the ids
    /// refused, with why.
    pub async fn sync_config_schedules(
        &self,
        defs: &[ScheduleDef],
    ) -> ServiceResult<Vec<(String, String)>> {
        let actor = Actor::daemon();
        let mut refused = Vec::new();
        let mut keep = Vec::new();
        for def in defs {
            keep.push(def.id.clone());
            if let Err(why) = validate(def) {
                refused.push((def.id.clone(), why));
                continue;
            }
            self.bb
                .put_schedule(def, ScheduleSource::Config, true, &actor)
                .await?;
        }
        self.bb
            .remove_config_schedules_except(&keep, &actor)
            .await?;
        self.committed(refused)
    }

    pub async fn remove_schedule(&self, id: &str, actor: &Actor) -> ServiceResult<()> {
        rules::require_privileged(actor, || "only operators remove schedules".into())?;
        self.bb.remove_schedule(id, actor).await?;
        self.committed(())
    }

    /// Pauses (`enabled = false`) or resumes a schedule.
    pub async fn set_schedule_enabled(
        &self,
        id: &str,
        enabled: bool,
        actor: &Actor,
    ) -> ServiceResult<Schedule> {
        rules::require_privileged(actor, || "only operators pause or resume schedules".into())?;
        let s = self.bb.set_schedule_enabled(id, enabled, actor).await?;
        self.committed(s)
    }

    /// Fires a schedule now, whatever its overlap policy (a paused one too).
    pub async fn run_schedule_now(&self, id: &str, actor: &Actor) -> ServiceResult<Task> {
        rules::require_privileged(actor, || "only operators run schedules by hand".into())?;
        let schedule = self.bb.schedule(id).await?;
        let timing = Timing::of(&schedule)?;
        let now = self.bb.now();
        let task = task_for_slot(&schedule.def, &timing, now)?;
        let request = FiringRequest::Fire {
            reason: FiringReason::Manual,
            task: Box::new(task),
        };
        match self
            .bb
            .record_firing(id, now, request, |_| OverlapDecision::Fire, actor)
            .await?
        {
            FiringResult::Fired(task) => self.committed(*task),
            other => Err(ServiceError::Conflict(format!(
                "schedule {id} was already fired at this millisecond ({other:?}); try again"
            ))),
        }
    }

    /// One schedule with its next firing and last instance.
    pub async fn schedule_view(&self, id: &str) -> ServiceResult<ScheduleView> {
        let schedule = self.bb.schedule(id).await?;
        self.view_of(schedule).await
    }

    /// Every schedule with its next firing and last instance.
    pub async fn schedule_views(&self) -> ServiceResult<Vec<ScheduleView>> {
        let mut out = Vec::new();
        for s in self.bb.schedules().await? {
            out.push(self.view_of(s).await?);
        }
        Ok(out)
    }

    /// The newest recorded slots of a schedule (its history), newest first.
    pub async fn schedule_firings(&self, id: &str, limit: i64) -> ServiceResult<Vec<Firing>> {
        self.bb.schedule(id).await?;
        Ok(self.bb.firings(id, limit).await?)
    }

    async fn view_of(&self, schedule: Schedule) -> ServiceResult<ScheduleView> {
        let id = schedule.def.id.clone();
        let next_at = match Timing::of(&schedule) {
            Ok(timing) if schedule.def.enabled => {
                let cursor = self.bb.last_slot(&id).await?;
                let now = self.bb.now();
                plan(&schedule.def, &timing, cursor, now)
                    .next_due
                    .map(|due| due.max(now))
            }
            _ => None,
        };
        let last_instance = self
            .bb
            .firings(&id, 200)
            .await?
            .into_iter()
            .find(|f| f.task_id.is_some());
        Ok(ScheduleView {
            schedule,
            next_at,
            last_instance,
        })
    }

    /// Records every due slot of every schedule (the daemon's tick): fires,
    /// skips, and says when the next one is due. A schedule that cannot be
    /// read or whose task is refused is reported and left for the next tick.
    pub async fn fire_due_schedules(&self) -> ServiceResult<ScheduleTick> {
        let actor = Actor::daemon();
        let mut tick = ScheduleTick::default();
        for schedule in self.bb.schedules().await? {
            let id = schedule.def.id.clone();
            let timing = match Timing::of(&schedule) {
                Ok(t) => t,
                Err(why) => {
                    tick.problems.push((id, why));
                    continue;
                }
            };
            let cursor = self.bb.last_slot(&id).await?;
            let now = self.bb.now();
            let planned = plan(&schedule.def, &timing, cursor, now);
            let policy = schedule.def.overlap;
            for step in planned.steps {
                let (slot, request) = match step {
                    Step::Skip {
                        slot,
                        reason,
                        slots,
                    } => (slot, FiringRequest::Skip { reason, slots }),
                    Step::Fire { slot, reason } => {
                        match task_for_slot(&schedule.def, &timing, slot) {
                            Ok(task) => (
                                slot,
                                FiringRequest::Fire {
                                    reason,
                                    task: Box::new(task),
                                },
                            ),
                            Err(why) => {
                                tick.problems.push((id.clone(), why));
                                break;
                            }
                        }
                    }
                };
                let decide = |last: Option<&Task>| overlap_decision(policy, last.map(|t| t.status));
                match self
                    .bb
                    .record_firing(&id, slot, request, decide, &actor)
                    .await
                {
                    Ok(FiringResult::Fired(task)) => tick.fired.push(*task),
                    Ok(FiringResult::Skipped(_)) => tick.skipped += 1,
                    Ok(FiringResult::AlreadyRecorded) => {}
                    Err(e)
                        if e.is_conflict()
                            || matches!(
                                e,
                                crate::blackboard::BbError::Invalid(_)
                                    | crate::blackboard::BbError::NotFound { .. }
                            ) =>
                    {
                        tick.problems.push((id.clone(), e.to_string()));
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(due) = planned.next_due {
                tick.next_due = Some(tick.next_due.map_or(due, |d: Millis| d.min(due)));
            }
        }
        if !tick.fired.is_empty() || tick.skipped > 0 {
            self.committed(())?;
        }
        Ok(tick)
    }
}

/// A schedule as the API, the CLI and `project.yaml` write it, checked:
/// the definition and whether to create it even if its tasks could never
/// start.
pub fn def_from_wire(new: crate::wire::NewSchedule) -> Result<(ScheduleDef, bool), String> {
    let id = new.id.clone();
    let recurrence = match (new.cron, new.every) {
        (Some(cron), None) => Recurrence::Cron(cron),
        (None, Some(every)) => Recurrence::Interval(
            parse_duration(&every).map_err(|e| format!("schedule {id}: every: {e}"))?,
        ),
        (Some(_), Some(_)) => {
            return Err(format!(
                "schedule {id}: give either cron or every, not both"
            ))
        }
        (None, None) => {
            return Err(format!(
                "schedule {id}: give cron (e.g. \"0 9 * * 1-5\") or every (e.g. 10m)"
            ))
        }
    };
    let jitter_ms = match new.jitter.as_deref() {
        Some(j) => parse_duration(j).map_err(|e| format!("schedule {id}: jitter: {e}"))?,
        None => 0,
    };
    let def = ScheduleDef {
        id: new.id,
        recurrence,
        timezone: new.timezone.unwrap_or_else(|| "UTC".into()),
        title: new.title,
        description: new.description,
        kind: new.kind,
        assignee: new.assignee,
        priority: new.priority.unwrap_or(Priority::Normal),
        tags: new.tags,
        review_protocol: new.review_protocol,
        depends_on_tags: new.depends_on_tags,
        overlap: new.overlap.unwrap_or(OverlapPolicy::Skip),
        missed: new.missed.unwrap_or(MissedPolicy::Skip),
        jitter_ms,
        enabled: new.enabled.unwrap_or(true),
    };
    validate(&def)?;
    Ok((def, new.force))
}

#[cfg(test)]
mod tests;
