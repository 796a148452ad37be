//! The schedule rules on an injected clock: every "now" is an argument.

use super::*;
use chrono::{NaiveDate, Utc};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Millis {
    Utc.from_utc_datetime(
        &NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap(),
    )
    .timestamp_millis()
}

fn def(recurrence: Recurrence, timezone: &str) -> ScheduleDef {
    ScheduleDef {
        id: "daily".into(),
        recurrence,
        timezone: timezone.into(),
        title: "report {{ date }}".into(),
        description: String::new(),
        kind: None,
        assignee: None,
        priority: Priority::Normal,
        tags: vec![],
        review_protocol: None,
        depends_on_tags: vec![],
        overlap: OverlapPolicy::Skip,
        missed: MissedPolicy::Skip,
        jitter_ms: 0,
        enabled: true,
    }
}

fn cron(expr: &str, tz: &str) -> ScheduleDef {
    def(Recurrence::Cron(expr.into()), tz)
}

/// Every slot in `[from, to)`, in UTC milliseconds.
fn slots(d: &ScheduleDef, from: Millis, to: Millis) -> Vec<Millis> {
    let t = Timing::new(d, 0).unwrap();
    let mut out = vec![];
    let mut at = from - 1;
    while let Some(s) = t.next_slot(at) {
        if s >= to {
            break;
        }
        out.push(s);
        at = s;
    }
    out
}

#[test]
fn berlin_spring_forward_fires_the_skipped_time_right_after_the_gap() {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 never exists.
    let d = cron("30 2 * * *", "Europe/Berlin");
    let got = slots(&d, utc(2026, 3, 28, 12, 0), utc(2026, 3, 30, 12, 0));
    assert_eq!(
        got,
        vec![utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)],
        "one firing on the day of the gap (03:00 CEST), none lost"
    );
}

#[test]
fn berlin_fall_back_fires_the_repeated_time_once() {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice.
    let d = cron("30 2 * * *", "Europe/Berlin");
    let got = slots(&d, utc(2026, 10, 24, 12, 0), utc(2026, 10, 26, 12, 0));
    assert_eq!(
        got,
        vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        "the first 02:30 (CEST) only, then 02:30 CET the next day"
    );
}

#[test]
fn berlin_hourly_wildcard_follows_real_hours_across_both_changes() {
    let d = cron("0 * * * *", "Europe/Berlin");
    // The local day of the spring change has 23 hours, the fall one 25.
    let spring = slots(&d, utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 22, 0));
    assert_eq!(spring.len(), 23);
    let fall = slots(&d, utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 23, 0));
    assert_eq!(fall.len(), 25);
    // No slot twice, each an hour after the last.
    for w in fall.windows(2) {
        assert_eq!(w[1] - w[0], 3_600_000);
    }
}

#[test]
fn new_york_spring_and_fall() {
    // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    let d = cron("30 2 * * *", "America/New_York");
    let got = slots(&d, utc(2026, 3, 7, 12, 0), utc(2026, 3, 9, 12, 0));
    assert_eq!(got, vec![utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]);
    // 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:30 happens twice.
    let d = cron("30 1 * * *", "America/New_York");
    let got = slots(&d, utc(2026, 10, 31, 12, 0), utc(2026, 11, 2, 12, 0));
    assert_eq!(got, vec![utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]);
}

#[test]
fn seconds_are_optional_and_a_bad_expression_or_zone_is_named() {
    let d = cron("*/2 * * * * *", "UTC");
    // Anchored at 0: a slot at or before the anchor never fires.
    let got = slots(&d, 0, 10_000);
    assert_eq!(got, vec![2000, 4000, 6000, 8000]);
    let e = parse_cron("61 * * * *").unwrap_err();
    assert!(e.contains("invalid cron expression \"61 * * * *\""), "{e}");
    let e = parse_timezone("Mars/Olympus").unwrap_err();
    assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
    let e = validate(&cron("0 9 * * *", "Europe/Berln")).unwrap_err();
    assert!(e.contains("Europe/Berln"), "{e}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("2s"), Ok(2_000));
    assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
    assert_eq!(parse_duration("1d"), Ok(86_400_000));
    assert_eq!(parse_duration("250ms"), Ok(250));
    for bad in ["", "5", "m", "5 weeks", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn titles_render_the_slot_in_the_schedule_zone() {
    let d = cron("0 9 * * *", "Europe/Berlin");
    let t = Timing::new(&d, 0).unwrap();
    let slot = utc(2026, 12, 31, 23, 30); // already 2027-01-01 in Berlin
    let task = task_for_slot(&d, &t, slot).unwrap();
    assert_eq!(task.title, "report 2027-01-01");
    let e = render_title("x {{ nope }}", "s", &t.local(slot).unwrap()).unwrap_err();
    assert!(e.contains("{{ date }}"), "{e}");
}

fn interval(every: Millis) -> ScheduleDef {
    def(Recurrence::Interval(every), "UTC")
}

#[test]
fn due_slots_fire_on_time_and_old_ones_count_as_missed() {
    let d = interval(2_000);
    let t = Timing::new(&d, 0).unwrap();
    // Grace for a 2 s period is the 5 s minimum.
    let p = plan(&d, &t, None, 10_000);
    assert_eq!(
        p.steps,
        vec![
            Step::Skip {
                slot: 4_000,
                reason: FiringReason::Missed,
                slots: 2
            },
            Step::Fire {
                slot: 6_000,
                reason: FiringReason::OnTime
            },
            Step::Fire {
                slot: 8_000,
                reason: FiringReason::OnTime
            },
            Step::Fire {
                slot: 10_000,
                reason: FiringReason::OnTime
            },
        ]
    );
    assert_eq!(p.next_due, Some(12_000));
    // From the cursor on, nothing is planned twice.
    let p = plan(&d, &t, Some(10_000), 11_999);
    assert!(p.steps.is_empty());
    assert_eq!(p.next_due, Some(12_000));
}

#[test]
fn a_three_hour_gap_is_skipped_or_fired_once() {
    let mut d = cron("0 * * * *", "UTC");
    let t = Timing::new(&d, 0).unwrap();
    let last = utc(2026, 6, 1, 9, 0);
    let now = utc(2026, 6, 1, 12, 30); // 10:00, 11:00 and 12:00 passed unseen
    let p = plan(&d, &t, Some(last), now);
    assert_eq!(
        p.steps,
        vec![Step::Skip {
            slot: utc(2026, 6, 1, 12, 0),
            reason: FiringReason::Missed,
            slots: 3
        }]
    );
    assert_eq!(p.next_due, Some(utc(2026, 6, 1, 13, 0)));
    d.missed = MissedPolicy::Once;
    let p = plan(&d, &t, Some(last), now);
    assert_eq!(
        p.steps,
        vec![
            Step::Skip {
                slot: utc(2026, 6, 1, 11, 0),
                reason: FiringReason::Missed,
                slots: 2
            },
            Step::Fire {
                slot: utc(2026, 6, 1, 12, 0),
                reason: FiringReason::CatchUp
            },
        ]
    );
    // An every-minute schedule over the same gap: still one catch-up.
    let mut m = cron("* * * * *", "UTC");
    m.missed = MissedPolicy::Once;
    let t = Timing::new(&m, 0).unwrap();
    let p = plan(&m, &t, Some(last), now);
    let fires: Vec<_> = p
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s,
                Step::Fire {
                    reason: FiringReason::CatchUp,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(fires.len(), 1);
    // 12:30 itself is on time (due now), the 209 before it less than a minute late or missed.
    let on_time = p
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s,
                Step::Fire {
                    reason: FiringReason::OnTime,
                    ..
                }
            )
        })
        .count();
    assert!(on_time >= 1, "{:?}", p.steps);
}

#[test]
fn a_paused_schedule_records_its_due_slots_as_one_skip() {
    let mut d = interval(60_000);
    d.enabled = false;
    let t = Timing::new(&d, 0).unwrap();
    let p = plan(&d, &t, None, 300_000);
    assert_eq!(
        p.steps,
        vec![Step::Skip {
            slot: 300_000,
            reason: FiringReason::Paused,
            slots: 5
        }]
    );
    assert_eq!(p.next_due, None);
}

#[test]
fn the_anchor_bounds_the_first_slot() {
    let d = interval(1_000);
    let t = Timing::new(&d, 5_500).unwrap();
    assert_eq!(t.next_slot(0), Some(6_500));
    let p = plan(&d, &t, None, 6_400);
    assert!(p.steps.is_empty());
    assert_eq!(p.next_due, Some(6_500));
}

#[test]
fn jitter_is_a_fixed_offset_within_its_bound() {
    let mut d = interval(60_000);
    d.jitter_ms = 10_000;
    let t = Timing::new(&d, 0).unwrap();
    let mut distinct = std::collections::BTreeSet::new();
    for k in 1..50 {
        let slot = k * 60_000;
        let due = t.due_at(slot);
        assert!((slot..=slot + 10_000).contains(&due));
        assert_eq!(due, t.due_at(slot), "the same every time");
        distinct.insert(due - slot);
    }
    assert!(distinct.len() > 10, "offsets spread: {distinct:?}");
    let p = plan(
        &d,
        &t,
        None,
        60_000 + jitter_offset("daily", 60_000, 10_000) - 1,
    );
    assert!(p.steps.is_empty(), "not due before its offset");
}

#[test]
fn overlap_policies() {
    use OverlapDecision as D;
    for open in [
        TaskStatus::Pending,
        TaskStatus::Working,
        TaskStatus::Review,
        TaskStatus::Blocked,
    ] {
        assert_eq!(overlap_decision(OverlapPolicy::Skip, Some(open)), D::Skip);
        assert_eq!(
            overlap_decision(OverlapPolicy::Queue, Some(open)),
            D::FireAfterLast
        );
        assert_eq!(overlap_decision(OverlapPolicy::Allow, Some(open)), D::Fire);
    }
    for closed in [TaskStatus::Done, TaskStatus::Failed, TaskStatus::Cancelled] {
        for p in OverlapPolicy::ALL {
            assert_eq!(overlap_decision(*p, Some(closed)), D::Fire);
        }
    }
    for p in OverlapPolicy::ALL {
        assert_eq!(overlap_decision(*p, None), D::Fire);
    }
}
