//! Compliance through the real test bed: rule profiles refuse looser settings, leads outside
//! the hours in their own zone, over a contact limit or in a quiet period wait with their
//! reason, the compliance report counts it all, and answering-machine detection (Asterisk's
//! AMD() in our dialplan) tells people from machines on far ends that really speak
//! (`[testbed-far-end]` in asterisk-config/extensions.conf). The tests share the Stasis
//! application "obzvon", so they run one at a time.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use common::*;
use serde_json::{json, Value};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn campaign_body(name: &str, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "trunk": "PJSIP/{number}@trunk",
        "caller_id": "+74950000000",
        "timezone": "UTC",
        "dial_timeout_secs": 20,
        "max_attempts": 1,
        "wrap_up_secs": 1,
        "calls_per_second": 20,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// A zone (Etc/GMT±N) where the local hour is now `hour`.
fn zone_at_local_hour(hour: i32) -> String {
    let utc = Utc::now().hour() as i32;
    let mut offset = (hour - utc).rem_euclid(24);
    if offset > 14 {
        offset -= 24;
    }
    // Etc/GMT signs are inverted: Etc/GMT-3 is UTC+3.
    match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

async fn lead_ids(server: &Server, campaign: &str) -> HashMap<String, String> {
    let leads = server.get(&format!("/campaigns/{campaign}/leads?limit=1000")).await;
    leads
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["phone"].as_str().unwrap().to_owned(),
                l["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until `lead` has a recorded skip; returns the lead read after it.
async fn wait_skip(server: &Server, lead: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let l = server.get(&format!("/leads/{lead}")).await;
        if l["skips"].as_array().is_some_and(|s| !s.is_empty()) {
            // The lead and its skips are read one after the other: read the lead again, as
            // it was once the skip was there.
            return server.get(&format!("/leads/{lead}")).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "no skip recorded: {l}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every lead of the campaign has been dialled and nothing is live.
async fn wait_dialled(server: &Server, campaign: &str, leads: i64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (done, live): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status NOT IN ('init','ringing','in-progress')),
                    count(*) FILTER (WHERE status IN ('init','ringing','in-progress'))
             FROM attempts WHERE campaign_id = $1::uuid",
        )
        .bind(campaign)
        .fetch_one(&server.pool)
        .await
        .unwrap();
        if done >= leads && live == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {leads} calls ended, {live} live, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Inserts a past call to `phone` from another campaign.
async fn past_call(server: &Server, campaign: &str, phone: &str, ago_hours: i64, result: &str, answered: bool) {
    sqlx::query(
        "INSERT INTO attempts (id, campaign_id, phone_e164, kind, status, result, created_at, answered_at, ended_at)
         VALUES (gen_random_uuid(), $1::uuid, $2, 'campaign', 'completed', $3, now() - make_interval(hours => $4),
                 CASE WHEN $5 THEN now() - make_interval(hours => $4) END, now() - make_interval(hours => $4))",
    )
    .bind(campaign)
    .bind(phone)
    .bind(result)
    .bind(ago_hours as i32)
    .bind(answered)
    .execute(&server.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_profile_refuses_settings_that_loosen_it_and_names_the_rule() {
    let _serial = SERIAL.lock().await;
    let server = Server::start("obzvon").await;
    let body = campaign_body(
        "tcpa",
        json!({"compliance": {"profile": "us-tcpa"}, "dial_timeout_secs": 10,
               "calling_windows": {"mon": [{"from": "07:00", "to": "20:00"}]}}),
    );
    let (status, answer) = server.call(reqwest::Method::POST, "/campaigns", Some(body)).await;
    assert_eq!(status, 422, "{answer}");
    let f = fields(&answer);
    assert!(
        f.contains(&"calling_windows.mon[0]".to_owned()) && f.contains(&"dial_timeout_secs".to_owned()),
        "{answer}"
    );
    assert!(answer.to_string().contains("64.1200"), "the rule is named: {answer}");
    assert_eq!(count(&server, "campaigns").await, 0, "nothing created");
    // Only the profile named: valid, with the profile's window and early hang-ups counted.
    let c = server
        .post(
            "/campaigns",
            campaign_body("tcpa", json!({"compliance": {"profile": "us-tcpa"}})),
        )
        .await;
    assert_eq!(c["pacing"]["abandon_window"], "30d", "{c}");
    assert_eq!(c["count_early_hangups_as_abandoned"], true, "{c}");
    // Loosening it later is refused too, and changes nothing.
    let id = c["id"].as_str().unwrap();
    let (status, answer) = server
        .call(
            reqwest::Method::PATCH,
            &format!("/campaigns/{id}"),
            Some(json!({"max_abandon_rate": 0.05})),
        )
        .await;
    assert_eq!(
        (status, fields(&answer)),
        (422, vec!["max_abandon_rate".to_owned()]),
        "{answer}"
    );
    let after = server.get(&format!("/campaigns/{id}")).await;
    assert_eq!(after["max_abandon_rate"], 0.03);
    server.stop().await;
}

#[tokio::test]
async fn a_lead_outside_the_hours_in_its_own_zone_waits_with_the_reason_and_others_are_dialled() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, _phone) = server.logged_in("Hours", 1).await;
    let night = zone_at_local_hour(3);
    let day = zone_at_local_hour(12);
    let (sleeping, awake) = (number(1, 0, 1), number(1, 0, 1));
    let id = server
        .running_campaign(
            campaign_body("hours", json!({"compliance": {"profile": "us-tcpa"}})),
            format!("phone,timezone\n{sleeping},{night}\n{awake},{day}\n"),
        )
        .await;
    let leads = lead_ids(&server, &id).await;
    let lead = wait_skip(&server, &leads[&sleeping], Duration::from_secs(15)).await;
    let skip = &lead["skips"][0];
    assert_eq!(skip["rule"], "outside-hours", "{lead}");
    assert!(skip["reason"].as_str().unwrap().contains(&night), "{skip}");
    // It waits until 08:00 in its zone: five hours from the 03:xx it is there now.
    let until: DateTime<Utc> = skip["until"].as_str().unwrap().parse().unwrap();
    let wait = until - Utc::now();
    assert!(
        wait > chrono::Duration::hours(4) && wait <= chrono::Duration::hours(5),
        "until {until}"
    );
    assert_eq!(lead["state"], "scheduled", "{lead}");
    assert_eq!(lead["next_attempt_at"], skip["until"]);
    assert!(lead["attempts"].as_array().unwrap().is_empty(), "{lead}");

    wait_dialled(&server, &id, 1, Duration::from_secs(30)).await;
    let called = server.get(&format!("/leads/{}", leads[&awake])).await;
    let why = &called["attempts"][0]["dial_reason"];
    assert_eq!(why["profile"], "us-tcpa", "{called}");
    assert!(
        why["checks"].to_string().contains(&format!("08:00–21:00 in {day}")),
        "{why}"
    );

    let report = server.get(&format!("/reports/compliance?campaign_id={id}")).await;
    let c = &report["campaigns"][0];
    assert_eq!(c["calls"], 1, "{report}");
    assert_eq!(c["calls_outside_hours"], 0, "{report}");
    assert_eq!(c["skips"]["outside-hours"], 1, "{report}");
    assert_eq!(c["abandon"]["window"], "30d", "{report}");
    server.stop().await;
}

#[tokio::test]
async fn a_fourth_call_in_a_week_is_refused_with_its_reason_across_campaigns() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, _phone) = server.logged_in("Limits", 2).await;
    let (busy_week, quiet_week) = (number(1, 0, 1), number(1, 0, 1));
    let other = server.post("/campaigns", campaign_body("earlier", json!({}))).await;
    let other = other["id"].as_str().unwrap();
    // Three calls this week from another campaign, one of them answered; two for the other.
    for (ago, answered) in [(30, false), (60, true), (100, false)] {
        past_call(&server, other, &busy_week, ago, "no-answer", answered).await;
    }
    for ago in [30, 60] {
        past_call(&server, other, &quiet_week, ago, "no-answer", false).await;
    }
    let id = server
        .running_campaign(
            campaign_body("limits", json!({"compliance": {"attempts": {"per_week": 3}}})),
            format!("phone\n{busy_week}\n{quiet_week}\n"),
        )
        .await;
    let leads = lead_ids(&server, &id).await;
    let lead = wait_skip(&server, &leads[&busy_week], Duration::from_secs(15)).await;
    let skip = &lead["skips"][0];
    assert_eq!(skip["rule"], "contact-limit", "{lead}");
    let reason = skip["reason"].as_str().unwrap();
    assert!(reason.contains("3 calls a week"), "{reason}");
    // The limit lifts when the call of 100 h ago is a week old.
    let until: DateTime<Utc> = skip["until"].as_str().unwrap().parse().unwrap();
    let expected = Utc::now() + chrono::Duration::hours(7 * 24 - 100);
    assert!(
        (until - expected).num_seconds().abs() < 60,
        "until {until}, expected {expected}"
    );

    wait_dialled(&server, &id, 1, Duration::from_secs(30)).await;
    let called = server.get(&format!("/leads/{}", leads[&quiet_week])).await;
    let checks = called["attempts"][0]["dial_reason"]["checks"].to_string();
    assert!(checks.contains("2 of 3 calls a week"), "{checks}");
    let report = server.get(&format!("/reports/compliance?campaign_id={id}")).await;
    assert_eq!(report["campaigns"][0]["skips"]["contact-limit"], 1, "{report}");
    server.stop().await;
}

#[tokio::test]
async fn no_repeat_call_within_72_hours_of_an_abandoned_call_under_uk_ofcom() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, _phone) = server.logged_in("Quiet", 3).await;
    let (abandoned, fine) = (number(1, 0, 1), number(1, 0, 1));
    let other = server.post("/campaigns", campaign_body("earlier", json!({}))).await;
    let other = other["id"].as_str().unwrap();
    past_call(&server, other, &abandoned, 10, "abandoned", true).await;
    // An abandoned call four days ago is outside the quiet period.
    past_call(&server, other, &fine, 96, "abandoned", true).await;
    let id = server
        .running_campaign(
            campaign_body(
                "ofcom",
                json!({"compliance": {"profile": "uk-ofcom"}, "caller_id": "+442071234567"}),
            ),
            format!("phone\n{abandoned}\n{fine}\n"),
        )
        .await;
    let leads = lead_ids(&server, &id).await;
    let lead = wait_skip(&server, &leads[&abandoned], Duration::from_secs(15)).await;
    let skip = &lead["skips"][0];
    assert_eq!(skip["rule"], "quiet-period", "{lead}");
    assert!(skip["reason"].as_str().unwrap().contains("72 h"), "{skip}");
    let until: DateTime<Utc> = skip["until"].as_str().unwrap().parse().unwrap();
    let expected = Utc::now() + chrono::Duration::hours(62);
    assert!((until - expected).num_seconds().abs() < 60, "until {until}");
    wait_dialled(&server, &id, 1, Duration::from_secs(30)).await;
    let called = server.get(&format!("/leads/{}", leads[&fine])).await;
    assert_eq!(called["attempts"].as_array().unwrap().len(), 1, "{called}");
    let report = server.get(&format!("/reports/compliance?campaign_id={id}")).await;
    let c = &report["campaigns"][0];
    assert_eq!(
        (c["skips"]["quiet-period"].as_i64(), c["calls"].as_i64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(c["abandon"]["window"], "24h", "{report}");
    server.stop().await;
}

#[derive(Debug, sqlx::FromRow)]
struct Detected {
    phone_e164: String,
    result: Option<String>,
    amd_status: Option<String>,
    amd_cause: Option<String>,
    answered_at: Option<DateTime<Utc>>,
    bridged_at: Option<DateTime<Utc>>,
}

/// The far-end number whose last digit picks a person (1, 3) or a machine (2, 4).
/// The rest counts up from a random start, so no two calls of one run share a number.
fn far_end(kind: u8) -> String {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let next =
        NEXT.get_or_init(|| std::sync::atomic::AtomicU32::new(rand::Rng::random_range(&mut rand::rng(), 0..1_000_000)));
    let free = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1_000_000;
    format!("+7916{free:06}{kind}")
}

#[tokio::test]
async fn answering_machine_detection_tells_people_from_machines_on_real_audio() {
    let _serial = SERIAL.lock().await;
    let server = Server::start("obzvon").await;
    let mut phones = Vec::new();
    for n in 1..=4 {
        phones.push(server.logged_in(&format!("Amd{n}"), n).await);
    }
    // 40 calls: ten of each far end, mixed.
    let kinds: Vec<u8> = (0..40).map(|i| [1, 2, 3, 4][i % 4]).collect();
    let numbers: Vec<String> = kinds.iter().map(|k| far_end(*k)).collect();
    let csv = std::iter::once("phone".to_owned())
        .chain(numbers.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n");
    let id = server
        .running_campaign(
            campaign_body(
                "amd",
                json!({"trunk": "Local/{number}@testbed-far-end", "amd": {"mode": "hang-up"},
                       "connect_limit_ms": 4000, "max_concurrent_calls": 8}),
            ),
            csv,
        )
        .await;
    wait_dialled(&server, &id, 40, Duration::from_secs(240)).await;
    let rows: Vec<Detected> = sqlx::query_as(
        "SELECT phone_e164, result, amd_status, amd_cause, answered_at, bridged_at
         FROM attempts WHERE campaign_id = $1::uuid",
    )
    .bind(&id)
    .fetch_all(&server.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 40);
    let mut right = 0;
    let mut wrong = Vec::new();
    for r in &rows {
        let machine = r.phone_e164.ends_with('2') || r.phone_e164.ends_with('4');
        let heard_machine = r.amd_status.as_deref() == Some("MACHINE");
        assert!(
            r.amd_status.is_some(),
            "every answered call went through detection: {r:?}"
        );
        if machine == heard_machine {
            right += 1;
        } else {
            wrong.push(format!("{r:?}"));
        }
        if heard_machine {
            assert_eq!(r.result.as_deref(), Some("machine"), "{r:?}");
            assert!(r.bridged_at.is_none(), "a machine is not given to an operator: {r:?}");
        }
    }
    // People: from the answer to the operator, detection included.
    let mut connect: Vec<f64> = rows
        .iter()
        .filter_map(|r| Some((r.bridged_at? - r.answered_at?).num_milliseconds() as f64 / 1000.0))
        .collect();
    connect.sort_by(f64::total_cmp);
    let mut causes: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        *causes.entry(format!("{:?}", r.amd_cause)).or_default() += 1;
    }
    println!("AMD causes: {causes:?}");
    println!(
        "AMD accuracy: {right} of {} calls right ({:.1} %); people connected to an operator: {} of 20, \
         answer to operator p50 {:.2} s, max {:.2} s; wrong: {wrong:?}",
        rows.len(),
        100.0 * right as f64 / rows.len() as f64,
        connect.len(),
        connect.get(connect.len() / 2).copied().unwrap_or(f64::NAN),
        connect.last().copied().unwrap_or(f64::NAN),
    );
    assert!(right >= 36, "detection is right on at least 90 % of calls: {wrong:?}");
    drop(phones);
    server.stop().await;
}

#[tokio::test]
async fn in_message_mode_a_machine_gets_the_message_after_its_greeting() {
    let _serial = SERIAL.lock().await;
    let server = Server::start("obzvon").await;
    let (_, _phone) = server.logged_in("Msg", 5).await;
    let machine = far_end(2);
    let id = server
        .running_campaign(
            campaign_body(
                "amd-message",
                json!({"trunk": "Local/{number}@testbed-far-end",
                       "amd": {"mode": "message", "message": "sound:vm-goodbye"}}),
            ),
            format!("phone\n{machine}\n"),
        )
        .await;
    wait_dialled(&server, &id, 1, Duration::from_secs(60)).await;
    let attempts = server.get(&format!("/campaigns/{id}/attempts")).await;
    let attempt = server
        .get(&format!("/attempts/{}", attempts[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(attempt["result"], "machine", "{attempt}");
    assert_eq!(attempt["amd_status"], "MACHINE", "{attempt}");
    let reasons = attempt["timeline"].to_string();
    assert!(reasons.contains("message left after the greeting"), "{reasons}");
    // The message followed the greeting (vm-intro, several seconds), not the verdict.
    let answered: DateTime<Utc> = attempt["answered_at"].as_str().unwrap().parse().unwrap();
    let ended: DateTime<Utc> = attempt["ended_at"].as_str().unwrap().parse().unwrap();
    assert!(ended - answered > chrono::Duration::seconds(5), "{attempt}");
    server.stop().await;
}

#[tokio::test]
async fn a_single_call_for_a_campaign_lead_keeps_the_campaigns_rules() {
    let _serial = SERIAL.lock().await;
    let server = Server::start("obzvon").await;
    let op = server.operator("Single", "PJSIP/op6").await;
    let night = zone_at_local_hour(2);
    let phone = number(1, 0, 1);
    let id = server
        .campaign_with_leads(
            campaign_body("single", json!({"compliance": {"profile": "us-tcpa"}})),
            format!("phone,timezone\n{phone},{night}\n"),
        )
        .await;
    let lead = lead_ids(&server, &id).await[&phone].clone();
    let (status, answer) = server
        .call(
            reqwest::Method::POST,
            "/calls",
            Some(json!({"operator_id": op, "lead_id": lead, "campaign_id": id})),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer.to_string().contains(&night),
        "the reason names the zone: {answer}"
    );
    assert_eq!(count(&server, "attempts").await, 0, "nothing dialled");
    server.stop().await;
}
