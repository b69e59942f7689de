use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::json;

use super::*;

fn spec(extra: serde_json::Value) -> Result<CampaignSpec, Vec<FieldError>> {
    let mut v = json!({"name": "c", "trunk": "PJSIP/{number}@trunk", "caller_id": "+74950000000"});
    for (k, val) in extra.as_object().expect("object") {
        v[k] = val.clone();
    }
    let spec = CampaignSpec::from_json(v)?;
    spec.validate().map(|_| spec)
}

fn fields(e: Vec<FieldError>) -> Vec<String> {
    e.into_iter().map(|f| f.field).collect()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn naming_a_profile_alone_gives_a_valid_campaign_with_its_window() {
    for (profile, window) in [("us-tcpa", AbandonWindow::Days30), ("uk-ofcom", AbandonWindow::Hours24)] {
        let s = spec(json!({"compliance": {"profile": profile}})).unwrap();
        assert_eq!(s.pacing.abandon_window, window, "{profile}");
        assert!(s.count_early_hangups_as_abandoned);
    }
    let s = spec(json!({"compliance": {"profile": "ru-230fz"}})).unwrap();
    assert_eq!(s.pacing.abandon_window, AbandonWindow::Day);
    assert!(spec(json!({"compliance": {"profile": "fr-bloctel"}})).is_err());
}

#[test]
fn a_campaign_cannot_loosen_its_profile_and_the_error_names_the_rule() {
    let e = spec(json!({
        "compliance": {"profile": "us-tcpa"},
        "calling_windows": {"mon": [{"from": "07:30", "to": "20:00"}], "tue": [{"from": "09:00", "to": "21:00"}]},
        "dial_timeout_secs": 12,
        "max_abandon_rate": 0.05,
        "pacing": {"target_abandon_rate": 0.03, "abandon_window": "day"},
        "connect_limit_ms": 3000,
        "caller_id": "dialer",
    }))
    .unwrap_err();
    let f = fields(e.clone());
    for expected in [
        "calling_windows.mon[0]",
        "dial_timeout_secs",
        "max_abandon_rate",
        "pacing.abandon_window",
        "connect_limit_ms",
        "caller_id",
    ] {
        assert!(f.contains(&expected.to_owned()), "{expected} missing: {f:?}");
    }
    assert!(!f.contains(&"calling_windows.tue[0]".to_owned()), "{f:?}");
    let hours = e.iter().find(|x| x.field == "calling_windows.mon[0]").unwrap();
    assert!(hours.message.contains("64.1200(c)(1)"), "{}", hours.message);

    let e = fields(
        spec(
            json!({"compliance": {"profile": "ru-230fz", "connected": {"per_week": 3}, "quiet_after_abandon_hours": 0},
                    "calling_windows": {"sat": [{"from": "08:00", "to": "20:00"}]}}),
        )
        .unwrap_err(),
    );
    assert_eq!(e, ["calling_windows.sat[0]", "compliance.connected.per_week"]);
    let e = fields(spec(json!({"compliance": {"profile": "uk-ofcom", "quiet_after_abandon_hours": 24}})).unwrap_err());
    assert_eq!(e, ["compliance.quiet_after_abandon_hours"]);
    // Detection must be able to decide within the connect limit.
    let e = fields(spec(json!({"compliance": {"profile": "us-tcpa"}, "amd": {"mode": "hang-up"}})).unwrap_err());
    assert_eq!(e, ["amd.total_analysis_ms"]);
    spec(json!({"compliance": {"profile": "us-tcpa"},
                "amd": {"mode": "hang-up", "total_analysis_ms": 2000, "after_greeting_silence_ms": 500}}))
    .unwrap();
    // Tighter than the floor is fine.
    spec(json!({"compliance": {"profile": "ru-230fz", "connected": {"per_week": 1}}})).unwrap();
    spec(json!({"compliance": {"profile": "uk-ofcom", "quiet_after_abandon_hours": 96}})).unwrap();
}

#[test]
fn ru_hours_differ_on_weekdays_weekends_and_holidays_in_the_debtors_zone() {
    let s =
        spec(json!({"compliance": {"profile": "ru-230fz", "holidays": ["2026-12-31"], "holiday_hours": "as-sunday"}}))
            .unwrap();
    let rules = Effective::of(&s);
    let vlad: Tz = "Asia/Vladivostok".parse().unwrap(); // UTC+10
                                                        // Thu 2026-12-03 07:30 local: before 08:00.
    let skip = rules.check_hours(utc("2026-12-02T21:30:00Z"), vlad).unwrap_err();
    assert_eq!(skip.rule, SkipRule::OutsideHours);
    assert_eq!(skip.until, Some(utc("2026-12-02T22:00:00Z")));
    assert!(skip.reason.contains("Asia/Vladivostok"), "{}", skip.reason);
    // 21:30 on a Thursday is open, on a Saturday it is not (09:00–20:00).
    assert!(rules.check_hours(utc("2026-12-03T11:30:00Z"), vlad).is_ok());
    let sat = rules.check_hours(utc("2026-12-05T11:30:00Z"), vlad).unwrap_err();
    assert_eq!(sat.until, Some(utc("2026-12-05T23:00:00Z"))); // Sunday 09:00 local
                                                              // A holiday (Thursday) takes the weekend hours: 08:30 is closed, 09:00 opens.
    let hol = rules.check_hours(utc("2026-12-30T22:30:00Z"), vlad).unwrap_err();
    assert_eq!(hol.rule, SkipRule::Holiday);
    assert_eq!(hol.until, Some(utc("2026-12-30T23:00:00Z")));
    // 18:30Z is 04:30 on the holiday in Vladivostok, and 21:30 on Wednesday 30th in Moscow:
    // open there.
    let msk: Tz = "Europe/Moscow".parse().unwrap();
    assert_eq!(
        rules.check_hours(utc("2026-12-30T18:30:00Z"), vlad).unwrap_err().rule,
        SkipRule::Holiday
    );
    assert!(rules.check_hours(utc("2026-12-30T18:30:00Z"), msk).is_ok());
}

#[test]
fn holidays_without_calls_move_the_lead_to_the_next_working_day() {
    let s = spec(json!({"compliance": {"holidays": ["2027-01-01", "2027-01-02", "2027-01-03"]}})).unwrap();
    let rules = Effective::of(&s);
    let skip = rules.check_hours(utc("2027-01-01T12:00:00Z"), Tz::UTC).unwrap_err();
    assert_eq!(skip.rule, SkipRule::Holiday);
    assert_eq!(skip.until, Some(utc("2027-01-04T00:00:00Z")));
    assert!(rules.check_hours(utc("2026-12-31T23:59:00Z"), Tz::UTC).is_ok());
}

#[test]
fn us_hours_apply_to_a_campaign_without_windows() {
    let s = spec(json!({"compliance": {"profile": "us-tcpa"}, "timezone": "America/Chicago"})).unwrap();
    let rules = Effective::of(&s);
    let la: Tz = "America/Los_Angeles".parse().unwrap();
    // 2026-12-03 15:30Z = 07:30 in Los Angeles.
    let skip = rules.check_hours(utc("2026-12-03T15:30:00Z"), la).unwrap_err();
    assert_eq!(skip.until, Some(utc("2026-12-03T16:00:00Z")));
    assert!(rules.check_hours(utc("2026-12-03T16:00:00Z"), la).is_ok());
    assert!(rules.check_hours(utc("2026-12-04T04:59:00Z"), la).is_ok()); // 20:59
    assert!(rules.check_hours(utc("2026-12-04T05:00:00Z"), la).is_err()); // 21:00
}

fn times(now: DateTime<Utc>, hours_ago: &[i64]) -> Vec<DateTime<Utc>> {
    hours_ago.iter().map(|h| now - Duration::hours(*h)).collect()
}

#[test]
fn a_third_connected_call_in_a_week_waits_until_the_oldest_leaves_the_week() {
    let s = spec(json!({"compliance": {"profile": "ru-230fz"}})).unwrap();
    let rules = Effective::of(&s);
    let now = utc("2026-12-03T12:00:00Z");
    // Connected 30 h and 100 h ago: one a day holds, two a week is reached.
    let h = History {
        dialled: times(now, &[2, 30, 50, 100]),
        answered: times(now, &[30, 100]),
        last_abandon: None,
        last_machine: None,
    };
    let skip = rules.check_number(&h, now).unwrap_err();
    assert_eq!(skip.rule, SkipRule::ContactLimit);
    assert_eq!(skip.until, Some(now - Duration::hours(100) + Duration::days(7)));
    assert!(skip.reason.contains("2 connected calls a week"), "{}", skip.reason);
    // One connected call in the last day: the daily limit comes first.
    let h = History {
        dialled: vec![],
        answered: times(now, &[3]),
        last_abandon: None,
        last_machine: None,
    };
    let skip = rules.check_number(&h, now).unwrap_err();
    assert_eq!(skip.until, Some(now + Duration::hours(21)));
    assert!(skip.reason.contains("1 connected calls a day"), "{}", skip.reason);
    // Unanswered calls do not count against connected limits.
    let h = History {
        dialled: times(now, &[1, 2, 3, 4, 5]),
        answered: vec![],
        last_abandon: None,
        last_machine: None,
    };
    let passed = rules.check_number(&h, now).unwrap();
    assert!(
        passed.contains(&"0 of 2 connected calls a week".to_owned()),
        "{passed:?}"
    );
}

#[test]
fn eight_a_month_counts_31_days() {
    let s = spec(json!({"compliance": {"profile": "ru-230fz"}})).unwrap();
    let rules = Effective::of(&s);
    let now = utc("2026-12-03T12:00:00Z");
    let answered = times(
        now,
        &[
            8 * 24,
            12 * 24,
            16 * 24,
            19 * 24,
            22 * 24,
            25 * 24,
            28 * 24,
            30 * 24 + 12,
        ],
    );
    let h = History {
        dialled: answered.clone(),
        answered,
        last_abandon: None,
        last_machine: None,
    };
    let skip = rules.check_number(&h, now).unwrap_err();
    assert!(skip.reason.contains("8 connected calls a month"), "{}", skip.reason);
    assert_eq!(
        skip.until,
        Some(now - Duration::hours(30 * 24 + 12) + Duration::days(31))
    );
}

#[test]
fn campaign_attempt_limits_and_the_uk_quiet_period() {
    let s = spec(json!({"compliance": {"profile": "uk-ofcom", "attempts": {"per_day": 3}}})).unwrap();
    let rules = Effective::of(&s);
    let now = utc("2026-12-03T12:00:00Z");
    let abandoned = now - Duration::hours(50);
    let h = History {
        dialled: vec![abandoned],
        answered: vec![abandoned],
        last_abandon: Some(abandoned),
        last_machine: None,
    };
    let skip = rules.check_number(&h, now).unwrap_err();
    assert_eq!(skip.rule, SkipRule::QuietPeriod);
    assert_eq!(skip.until, Some(abandoned + Duration::hours(72)));
    assert!(rules.check_number(&h, abandoned + Duration::hours(72)).is_ok());
    let h = History {
        dialled: times(now, &[1, 5, 9]),
        answered: vec![],
        last_abandon: None,
        last_machine: None,
    };
    let skip = rules.check_number(&h, now).unwrap_err();
    assert!(skip.reason.contains("3 calls a day"), "{}", skip.reason);
    assert_eq!(skip.until, Some(now + Duration::hours(15)));
}

#[test]
fn no_profile_and_no_limits_reads_no_history() {
    let s = spec(json!({})).unwrap();
    assert!(!Effective::of(&s).needs_history());
    assert!(Effective::of(&spec(json!({"compliance": {"attempts": {"per_week": 5}}})).unwrap()).needs_history());
    assert!(Effective::of(&spec(json!({"compliance": {"profile": "uk-ofcom"}})).unwrap()).needs_history());
    let _ = NaiveDate::from_ymd_opt(2027, 1, 1);
}
