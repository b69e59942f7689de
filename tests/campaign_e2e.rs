//! Campaigns end to end through the real test bed: obzvon serve, Asterisk 22, SIPp operator
//! phones logging in with *55, the SIPp trunk playing customers, PostgreSQL. The tests share
//! the Stasis application "obzvon" that the login dialplan names, so they run one at a time.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use common::*;
use obzvon::dialer::window;
use serde_json::{json, Value};
use sqlx::Row;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An operator on `PJSIP/opN` whose SIPp phone logs in with *55 and presses 1 in wrap-up.
async fn logged_in(server: &Server, name: &str, n: u8) -> (String, Phone) {
    let op = server.operator(name, &format!("PJSIP/op{n}")).await;
    let phone = login_phone(n, "1", 500);
    let id = op.clone();
    server
        .wait_operators("operator ready", Duration::from_secs(10), move |ops| {
            ops.iter().any(|o| o["id"] == id.as_str() && o["state"] == "ready")
        })
        .await;
    (op, phone)
}

fn campaign_body(name: &str, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "trunk": "PJSIP/{number}@trunk",
        "caller_id": "74950000000",
        "timezone": "UTC",
        "dial_timeout_secs": 5,
        "max_attempts": 2,
        "retry_delays_secs": {"busy": 2, "no-answer": 2, "congestion": 2, "abandoned": 2},
        "wrap_up_secs": 3,
        "calls_per_second": 20,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn lead_counts(server: &Server, campaign: &str) -> HashMap<String, i64> {
    let c = server.get(&format!("/campaigns/{campaign}")).await;
    serde_json::from_value(c["leads"].clone()).unwrap()
}

/// Waits until no lead of the campaign is pending or dialling and nothing is live.
async fn wait_settled(server: &Server, campaign: &str, limit: Duration, keep_scheduled: i64) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let counts = lead_counts(server, campaign).await;
        let busy = counts.get("pending").copied().unwrap_or(0)
            + counts.get("dialing").copied().unwrap_or(0)
            + counts.get("scheduled").copied().unwrap_or(0)
            - keep_scheduled;
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM attempts WHERE status IN ('init','ringing','in-progress')")
                .fetch_one(&server.pool)
                .await
                .unwrap();
        if busy == 0 && live == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign not settled within {limit:?}: {counts:?}, live {live}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[derive(Debug, Clone)]
struct AttemptRow {
    id: String,
    phone: String,
    status: String,
    result: Option<String>,
    operator: Option<uuid::Uuid>,
    created: DateTime<Utc>,
    answered: Option<DateTime<Utc>>,
    bridged: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
}

async fn attempts_by_phone(server: &Server) -> HashMap<String, Vec<AttemptRow>> {
    let rows = sqlx::query(
        "SELECT id::text, phone_e164, status, result, operator_id, created_at, answered_at, bridged_at, ended_at
         FROM attempts ORDER BY created_at",
    )
    .fetch_all(&server.pool)
    .await
    .unwrap();
    let mut map: HashMap<String, Vec<AttemptRow>> = HashMap::new();
    for r in rows {
        let a = AttemptRow {
            id: r.get("id"),
            phone: r.get("phone_e164"),
            status: r.get("status"),
            result: r.get("result"),
            operator: r.get("operator_id"),
            created: r.get("created_at"),
            answered: r.get("answered_at"),
            bridged: r.get("bridged_at"),
            ended: r.get("ended_at"),
        };
        map.entry(a.phone.clone()).or_default().push(a);
    }
    map
}

async fn lead_states(server: &Server) -> HashMap<String, (String, i32, Option<DateTime<Utc>>)> {
    sqlx::query("SELECT phone_e164, state, attempts_count, next_attempt_at FROM leads")
        .fetch_all(&server.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.get("phone_e164"),
                (r.get("state"), r.get("attempts_count"), r.get("next_attempt_at")),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_mixed_campaign_runs_to_completion_with_the_right_outcomes() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let olga = server.operator("Olga", "PJSIP/op1").await;
    let petr = server.operator("Petr", "PJSIP/op2").await;
    // In wrap-up Olga presses 2 (not interested), Petr presses 1 (success).
    let _phone1 = login_phone(1, "2", 600);
    let _phone2 = login_phone(2, "1", 600);
    server
        .wait_operators("both operators ready by feature code", Duration::from_secs(10), |ops| {
            ops.iter().filter(|o| o["state"] == "ready").count() == 2
        })
        .await;

    // A calling window around now (UTC), and one lead in Tokyo, where it is closed.
    let now = Utc::now();
    let weekday = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][now.weekday_index()];
    let from = format!("{:02}:00", now.hour().saturating_sub(1));
    let to = if now.hour() >= 22 {
        "24:00".to_owned()
    } else {
        format!("{:02}:00", now.hour() + 2)
    };
    let windows = json!({ weekday: [{"from": from, "to": to}] });
    let campaign = server
        .post(
            "/campaigns",
            campaign_body("mixed", json!({ "calling_windows": windows })),
        )
        .await;
    let id = campaign["id"].as_str().unwrap().to_owned();

    let mut csv = String::from("phone,name,timezone,external_id\n");
    let mut expect: Vec<(String, &str)> = Vec::new();
    let mut add = |behaviour: u8, ring: u8, talk: u8, kind: &'static str, tz: &str| {
        let n = number(behaviour, ring, talk);
        csv.push_str(&format!("{n},Lead {},{tz},crm-{}\n", expect.len(), expect.len()));
        expect.push((n, kind));
    };
    for _ in 0..6 {
        add(1, 1, 2, "answer", "");
    }
    for _ in 0..3 {
        add(2, 0, 0, "busy", "");
    }
    for _ in 0..3 {
        add(3, 0, 0, "no-answer", "");
    }
    for _ in 0..3 {
        add(4, 0, 0, "congestion", "");
    }
    for _ in 0..2 {
        add(5, 1, 0, "quick", "");
    }
    for _ in 0..2 {
        add(6, 0, 0, "invalid", "");
    }
    add(1, 0, 1, "dnc", "");
    add(1, 0, 1, "window", "Asia/Tokyo");
    let (status, report) = server.post_csv(&format!("/campaigns/{id}/leads"), csv.clone()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["imported"], 21, "{report}");
    // The same file again adds nothing.
    let (_, again) = server.post_csv(&format!("/campaigns/{id}/leads"), csv).await;
    assert_eq!(
        (again["imported"].as_i64(), again["duplicates"].as_i64()),
        (Some(0), Some(21)),
        "{again}"
    );

    let dnc_number = expect.iter().find(|(_, k)| *k == "dnc").unwrap().0.clone();
    server
        .post("/dnc", json!({ "phone": dnc_number, "reason": "asked" }))
        .await;

    let started = server.post(&format!("/campaigns/{id}/start"), json!({})).await;
    assert_eq!(started["state"], "running");
    wait_settled(&server, &id, Duration::from_secs(150), 1).await;
    // The last calls' dispositions come with the key presses in wrap-up.
    server
        .wait_operators("both operators out of wrap-up", Duration::from_secs(10), |ops| {
            ops.iter().all(|o| o["state"] == "ready")
        })
        .await;

    let attempts = attempts_by_phone(&server).await;
    let leads = lead_states(&server).await;
    let none = Vec::new();
    for (phone, kind) in &expect {
        let tries = attempts.get(phone).unwrap_or(&none);
        let (state, count, next_at) = &leads[phone];
        let results: Vec<_> = tries.iter().map(|a| a.result.clone().unwrap_or_default()).collect();
        let ctx = format!("{kind} {phone}: lead {state}/{count}, results {results:?}");
        match *kind {
            "answer" => {
                assert_eq!((state.as_str(), tries.len()), ("done", 1), "{ctx}");
                let a = &tries[0];
                assert_eq!(a.status, "completed", "{ctx}");
                assert!(a.answered.is_some() && a.bridged.is_some(), "{ctx}");
                // The disposition came from the phone of the operator who took the call.
                let expected = if a.operator.map(|o| o.to_string()) == Some(olga.clone()) {
                    "not-interested"
                } else {
                    "success"
                };
                assert_eq!(a.result.as_deref(), Some(expected), "{ctx}");
                assert!([&olga, &petr].contains(&&a.operator.unwrap().to_string()));
            }
            "busy" | "no-answer" | "congestion" => {
                assert_eq!((state.as_str(), tries.len(), *count), ("exhausted", 2, 2), "{ctx}");
                assert!(
                    tries
                        .iter()
                        .all(|a| a.status == "failed" && a.result.as_deref() == Some(*kind)),
                    "{ctx}"
                );
                // The retry waited its delay (2 s) after the first attempt ended.
                let gap = tries[1].created - tries[0].ended.unwrap();
                assert!(
                    gap >= chrono::Duration::milliseconds(1900),
                    "{ctx}: retried after {gap}"
                );
            }
            "invalid" => {
                assert_eq!((state.as_str(), tries.len()), ("done", 1), "{ctx}");
                assert_eq!(tries[0].result.as_deref(), Some("invalid-number"), "{ctx}");
            }
            "quick" => {
                assert!(
                    ["done", "exhausted"].contains(&state.as_str()) && tries.len() <= 2,
                    "{ctx}"
                );
                assert!(
                    tries.iter().all(|a| a.status == "completed" && a.answered.is_some()),
                    "{ctx}"
                );
            }
            "dnc" => assert_eq!((state.as_str(), tries.len()), ("dnc", 0), "{ctx}"),
            "window" => {
                assert_eq!((state.as_str(), tries.len()), ("scheduled", 0), "{ctx}");
                let tz: chrono_tz::Tz = "Asia/Tokyo".parse().unwrap();
                let windows: window::Windows = serde_json::from_value(windows.clone()).unwrap();
                let opens = window::next_open(Utc::now(), tz, &windows).unwrap();
                assert!(opens > Utc::now(), "the window is closed in Tokyo");
                assert_eq!(next_at.unwrap(), opens, "{ctx}: waits for the window to open");
            }
            other => unreachable!("{other}"),
        }
    }

    // Phone-key dispositions are in the timeline.
    let by_key: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempt_transitions WHERE reason = 'disposition' AND detail->>'source' = 'phone'",
    )
    .fetch_one(&server.pool)
    .await
    .unwrap();
    assert!(by_key >= 6, "dispositions by phone key: {by_key}");

    // No number was ever in two live calls.
    for (phone, tries) in &attempts {
        for pair in tries.windows(2) {
            assert!(
                pair[1].created >= pair[0].ended.unwrap(),
                "{phone} dialled while a call was live"
            );
        }
    }

    // An attempt over REST, with its timeline.
    let answered = attempts.values().flatten().find(|a| a.bridged.is_some()).unwrap();
    let some_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM attempts WHERE phone_e164 = $1")
        .bind(&answered.phone)
        .fetch_one(&server.pool)
        .await
        .unwrap();
    let view = server.get(&format!("/attempts/{some_id}")).await;
    let steps: Vec<&str> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to_status"].as_str().unwrap())
        .collect();
    // The originate's reply and the first ringing event race (one comes over HTTP, the other
    // over the websocket): either may be recorded first, but the states only move forward.
    assert_eq!(steps[0], "init", "{view}");
    let rank = |s: &str| {
        ["init", "ringing", "in-progress", "completed"]
            .iter()
            .position(|x| *x == s)
    };
    let ranks: Vec<usize> = steps.iter().map(|s| rank(s).unwrap()).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{view}");
    assert_eq!(ranks.iter().copied().max(), Some(3), "{view}");
    assert!(steps.contains(&"ringing") && steps.contains(&"in-progress"), "{view}");
    let reasons: Vec<&str> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["reason"].as_str())
        .collect();
    for reason in [
        "claimed by the scheduler: progressive",
        "dialled",
        "answered",
        "call ended",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(reason)),
            "{reason} missing: {view}"
        );
    }
    // The attempt says why it was dialled: the pacing slot and the checks its lead passed.
    let why = &view["dial_reason"];
    assert_eq!(why["profile"], "none", "{why}");
    assert!(why["pacing"].as_str().unwrap().contains("ready operator"), "{why}");
    let checks: Vec<&str> = why["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(
        checks.iter().any(|c| c.starts_with("inside the calling hours")),
        "{why}"
    );

    // Connect latency: customer answer → in the operator's bridge.
    let mut latencies: Vec<f64> = attempts
        .values()
        .flatten()
        .filter_map(|a| Some((a.bridged? - a.answered?).num_microseconds()? as f64 / 1000.0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    eprintln!(
        "connect latency over {} calls: p50 {p50:.1} ms, p99 {p99:.1} ms",
        latencies.len()
    );
    assert!(p99 < 1000.0, "connect latency p99 {p99} ms");

    // Ending the sessions over REST takes the operators offline.
    for op in [&olga, &petr] {
        let (status, _) = server
            .call(reqwest::Method::DELETE, &format!("/operators/{op}/session"), None)
            .await;
        assert_eq!(status, 202);
    }
    server
        .wait_operators("operators offline", Duration::from_secs(10), |ops| {
            ops.iter().all(|o| o["state"] == "offline")
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn with_one_operator_surplus_answers_are_abandoned_after_the_connect_limit() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, _phone) = logged_in(&server, "Solo", 3).await;
    let csv = format!("phone\n{}\n{}\n{}\n", number(1, 1, 4), number(1, 1, 4), number(1, 1, 4));
    let id = server.running_campaign(campaign_body(
                "abandon",
                json!({"pacing": {"mode": "progressive", "ratio": 3.0}, "connect_limit_ms": 1000, "retry_delays_secs": {},
                       "max_abandon_rate": 1.0}),
            ), csv).await;
    wait_settled(&server, &id, Duration::from_secs(40), 0).await;

    let attempts: Vec<AttemptRow> = attempts_by_phone(&server).await.into_values().flatten().collect();
    assert_eq!(attempts.len(), 3, "three calls at once for ratio 3");
    let abandoned: Vec<_> = attempts
        .iter()
        .filter(|a| a.result.as_deref() == Some("abandoned"))
        .collect();
    let connected: Vec<_> = attempts.iter().filter(|a| a.bridged.is_some()).collect();
    assert_eq!(connected.len(), 1, "one operator takes one call");
    assert_eq!(abandoned.len(), 2, "the other answers are abandoned");
    for a in abandoned {
        assert_eq!(a.status, "completed");
        let waited = a.ended.unwrap() - a.answered.unwrap();
        assert!(
            waited >= chrono::Duration::milliseconds(1000),
            "abandoned after {waited}, limit 1 s"
        );
    }
    // The scheduler marks the campaign finished on its next round.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let c = server.get(&format!("/campaigns/{id}")).await;
        if c["state"] == "finished" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "campaign not finished: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn the_abandon_message_reaches_the_customer_within_the_connect_limit_measured_at_the_far_end() {
    let _serial = SERIAL.lock().await;
    let far = common::farend::FarEnd::start("abandon");
    let server = Server::start("obzvon").await;
    let (_, _phone) = logged_in(&server, "Solo", 3).await;
    // One operator, five calls at once: the first talks, the others answer one to two seconds
    // later and nobody is free for them.
    let csv = format!(
        "phone\n{}\n{}\n{}\n{}\n{}\n",
        number(1, 0, 15),
        number(1, 1, 6),
        number(1, 1, 6),
        number(1, 2, 6),
        number(1, 2, 6)
    );
    let limit_ms = 2000;
    let id = server
        .running_campaign(
            campaign_body(
                "abandon timing",
                json!({"trunk": common::farend::TRUNK, "pacing": {"mode": "progressive", "ratio": 5.0},
                       "connect_limit_ms": limit_ms, "retry_delays_secs": {}, "max_abandon_rate": 1.0}),
            ),
            csv,
        )
        .await;
    wait_settled(&server, &id, Duration::from_secs(40), 0).await;
    let attempts: Vec<AttemptRow> = attempts_by_phone(&server).await.into_values().flatten().collect();
    let calls = far.calls();
    let mut heard_after = Vec::new();
    for a in attempts.iter().filter(|a| a.result.as_deref() == Some("abandoned")) {
        let call = calls
            .iter()
            .find(|c| c.attempt.as_deref() == Some(a.id.as_str()))
            .unwrap_or_else(|| panic!("the far end saw {a:?}"));
        let answered = call.answered_at.expect("the customer answered");
        let heard = far.first_audio(call).expect("the customer heard the message");
        heard_after.push((heard - answered).num_milliseconds());
    }
    eprintln!("abandon message heard after the answer (ms, far end): {heard_after:?}");
    assert_eq!(heard_after.len(), 4, "four abandoned: {attempts:?}");
    for ms in heard_after {
        assert!(
            (0..limit_ms).contains(&ms),
            "the message started {ms} ms after the answer"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn nothing_is_dialled_without_an_operator_and_ringing_calls_end_when_the_last_one_leaves() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let id = server
        .running_campaign(
            campaign_body("nobody", json!({"dial_timeout_secs": 20})),
            format!("phone\n{}\n{}\n", number(3, 0, 0), number(3, 0, 0)),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dialled: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE dialed_at IS NOT NULL")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(dialled, 0, "no operator logged in: nothing dialled");
    // An operator logs in: both leads ring (they never answer); the operator leaves.
    let (op, mut phone) = logged_in(&server, "Brief", 2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ringing: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE status = 'ringing'")
            .fetch_one(&server.pool)
            .await
            .unwrap();
        if ringing >= 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing rang");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    phone.kill();
    let op2 = op.clone();
    server
        .wait_operators("the operator left", Duration::from_secs(12), move |ops| {
            ops.iter().any(|o| o["id"] == op2.as_str() && o["state"] == "offline")
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ended = loop {
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT status, (SELECT reason FROM attempt_transitions t WHERE t.attempt_id = a.id ORDER BY id DESC LIMIT 1) FROM attempts a WHERE dialed_at IS NOT NULL")
                .fetch_all(&server.pool)
                .await
                .unwrap();
        if !rows.is_empty() && rows.iter().all(|(s, _)| s == "canceled") {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ringing calls not ended: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        ended
            .iter()
            .all(|(_, r)| r.as_deref().is_some_and(|r| r.contains("no operator"))),
        "{ended:?}"
    );
    let counts = lead_counts(&server, &id).await;
    assert_eq!(
        counts.get("pending").copied().unwrap_or(0),
        2,
        "both leads wait for an operator: {counts:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn pause_stops_new_dials_while_live_calls_finish_and_stop_cancels_pending_leads() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, _phone) = logged_in(&server, "Pat", 4).await;
    let csv: String = std::iter::once("phone".to_owned())
        .chain((0..8).map(|_| number(1, 0, 3)))
        .collect::<Vec<_>>()
        .join("\n");
    let id = server
        .running_campaign(campaign_body("pause", json!({"wrap_up_secs": 1})), csv)
        .await;

    // Pause while the first call is up.
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM attempts")
            .fetch_one(&server.pool)
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no call started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paused = server.post(&format!("/campaigns/{id}/pause"), json!({})).await;
    assert_eq!(paused["state"], "paused");
    let at_pause = count().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(count().await, at_pause, "no new dials while paused");
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attempts WHERE status IN ('init','ringing','in-progress')")
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert_eq!(live, 0, "the live call finished normally");
    let completed: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE status = 'completed'")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(completed, at_pause);

    let stopped = server.post(&format!("/campaigns/{id}/stop"), json!({})).await;
    assert_eq!(stopped["state"], "stopped");
    let counts = lead_counts(&server, &id).await;
    assert_eq!(counts.get("canceled").copied(), Some(8 - at_pause), "{counts:?}");
    assert_eq!(counts.get("pending"), None, "{counts:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count().await, at_pause, "nothing dialled after stop");
    let (status, body) = server
        .call(reqwest::Method::POST, &format!("/campaigns/{id}/resume"), None)
        .await;
    assert_eq!(status, 409, "a stopped campaign does not resume: {body}");
    server.stop().await;
}

trait WeekdayIndex {
    fn weekday_index(&self) -> usize;
}

impl WeekdayIndex for DateTime<Utc> {
    fn weekday_index(&self) -> usize {
        use chrono::Datelike;
        self.weekday().num_days_from_monday() as usize
    }
}

#[tokio::test]
async fn a_session_started_over_rest_rings_the_phone_takes_calls_and_pauses() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let rita = server.operator("Rita", "PJSIP/op1").await;
    let _phone = operator_phone(1, &["-;0;-;0;0"]);
    let (status, body) = server
        .call(reqwest::Method::POST, &format!("/operators/{rita}/session"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    server
        .wait_operators("ready after answering our call", Duration::from_secs(10), |ops| {
            ops[0]["state"] == "ready"
        })
        .await;
    let (status, _) = server
        .call(reqwest::Method::POST, &format!("/operators/{rita}/session"), None)
        .await;
    assert_eq!(status, 409, "one session per operator");

    let paused = server.post(&format!("/operators/{rita}/pause"), json!({})).await;
    assert_eq!(paused["state"], "paused");
    let id = server
        .running_campaign(
            campaign_body("rest-session", json!({"wrap_up_secs": 30, "recording": true})),
            format!("phone\n{}\n", number(1, 0, 1)),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dialled: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(dialled, 0, "nobody is dialled for a paused operator");

    let ready = server.post(&format!("/operators/{rita}/ready"), json!({})).await;
    assert_eq!(ready["state"], "ready");
    wait_settled(&server, &id, Duration::from_secs(20), 0).await;
    let (attempt, op, result, recording): (uuid::Uuid, Option<uuid::Uuid>, Option<String>, Option<String>) =
        sqlx::query_as("SELECT id, operator_id, result, recording_name FROM attempts")
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert_eq!(op.map(|o| o.to_string()), Some(rita.clone()));
    assert_eq!(
        result.as_deref(),
        Some("success"),
        "no disposition yet: the connected call counts as success"
    );
    assert_eq!(
        recording,
        Some(format!("obzvon-{attempt}")),
        "the campaign records its calls"
    );
    server
        .wait_operators("in wrap-up", Duration::from_secs(5), |ops| ops[0]["state"] == "wrap-up")
        .await;

    // The CRM sets the disposition: call back tomorrow, same operator. Wrap-up ends with it.
    let at = (Utc::now() + chrono::Duration::days(1)).with_nanosecond(0).unwrap();
    let view = server
        .post(
            &format!("/attempts/{attempt}/disposition"),
            json!({"result": "callback-needed", "callback_at": at, "notes": "after lunch", "same_operator": true}),
        )
        .await;
    assert_eq!(view["result"], "callback-needed");
    assert_eq!(view["disposition_notes"], "after lunch");
    let (state, next_at, callback_op): (String, Option<DateTime<Utc>>, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT state, next_attempt_at, callback_operator_id FROM leads")
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), next_at), ("scheduled", Some(at)));
    assert_eq!(callback_op.map(|o| o.to_string()), Some(rita.clone()));
    server
        .wait_operators("ready after the disposition", Duration::from_secs(5), |ops| {
            ops[0]["state"] == "ready"
        })
        .await;

    // The connect latency is exported for Prometheus.
    let metrics_url = server.base.replace("/api/v1", "/metrics");
    let metrics = server.http.get(metrics_url).send().await.unwrap().text().await.unwrap();
    let count_line = metrics
        .lines()
        .find(|l| l.starts_with("obzvon_connect_latency_seconds_count"))
        .unwrap_or_else(|| panic!("no connect latency metric in:\n{metrics}"));
    let count: f64 = count_line.split_whitespace().last().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{count_line}");
    assert!(metrics.contains("obzvon_attempts_total{"), "{metrics}");

    let (status, _) = server
        .call(reqwest::Method::DELETE, &format!("/operators/{rita}/session"), None)
        .await;
    assert_eq!(status, 202);
    server
        .wait_operators("offline", Duration::from_secs(10), |ops| ops[0]["state"] == "offline")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn calls_and_sessions_whose_channels_are_gone_after_a_crash_are_closed_and_nothing_is_dialled_twice() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::create().await;
    let pool = db.pool().await;
    obzvon::db::migrate(&pool).await.unwrap();
    let instance = format!("test-{}", db.name);
    // What a crashed instance leaves: a lead in `dialing` with a ringing attempt, an operator on a call.
    let (campaign, lead, attempt, op) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    for sql in [
        "INSERT INTO campaigns (id, name, trunk, caller_id, settings) VALUES ($1, 'crashed', 'PJSIP/{number}@trunk', '1', '{}')",
        "INSERT INTO leads (id, campaign_id, phone_e164, state, attempts_count) VALUES ($2, $1, '+79165550123', 'dialing', 1)",
        "INSERT INTO attempts (id, lead_id, campaign_id, phone_e164, status, instance) VALUES ($3, $2, $1, '+79165550123', 'ringing', $5)",
        "INSERT INTO operators (id, name, endpoint, state, session_channel_id, session_instance) VALUES ($4, 'Ghost', 'PJSIP/op1', 'on-call', 'gone-channel', $5)",
    ] {
        sqlx::query(sql).bind(campaign).bind(lead).bind(attempt).bind(op).bind(&instance).execute(&pool).await.unwrap();
    }
    let server = Server::start_on(db, "obzvon").await;
    // Ready means Asterisk's state was read; the engine's writes reach the database a moment later.
    server
        .wait_attempt_ended(&attempt.to_string(), Duration::from_secs(5))
        .await;
    let (status, result, ended_by, lead_state, attempts): (String, Option<String>, Option<String>, String, i32) =
        sqlx::query_as(
            "SELECT a.status, a.result, a.ended_by, l.state, l.attempts_count
             FROM attempts a JOIN leads l ON l.id = a.lead_id WHERE a.id = $1",
        )
        .bind(attempt)
        .fetch_one(&server.pool)
        .await
        .unwrap();
    // Its channel is gone from Asterisk: it ended while obzvon was away; the lead follows the
    // retry rules for an unknown failure instead of being dialled again at once.
    assert_eq!(
        (status.as_str(), result.as_deref(), ended_by.as_deref()),
        ("failed", Some("failed"), Some("system"))
    );
    assert_eq!(
        (lead_state.as_str(), attempts),
        ("scheduled", 1),
        "retried later, counted once"
    );
    let timeline = server.get(&format!("/attempts/{attempt}")).await;
    let last = timeline["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "ended while obzvon was away");
    // The session's end is its own write, after the attempt's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let op_state: String = sqlx::query_scalar("SELECT state FROM operators WHERE id = $1")
            .bind(op)
            .fetch_one(&server.pool)
            .await
            .unwrap();
        if op_state == "offline" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session's channel is gone too, yet the operator is {op_state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dials: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE lead_id = $1")
        .bind(lead)
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(dials, 1, "not dialled twice");
    server.stop().await;
}

#[tokio::test]
async fn a_lead_outside_its_calling_window_waits_and_is_dialled_when_the_window_opens() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, _phone) = logged_in(&server, "Win", 3).await;
    // The window opens at the next whole minute (at least 5 s away) and lasts ten minutes.
    let now = Utc::now();
    let mut opens = now.with_second(0).unwrap().with_nanosecond(0).unwrap() + chrono::Duration::minutes(1);
    if opens - now < chrono::Duration::seconds(5) {
        opens += chrono::Duration::minutes(1);
    }
    let weekday = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][opens.weekday_index()];
    let to = if opens.hour() == 23 && opens.minute() >= 50 {
        "24:00".to_owned()
    } else {
        (opens + chrono::Duration::minutes(10)).format("%H:%M").to_string()
    };
    let windows = json!({ weekday: [{"from": opens.format("%H:%M").to_string(), "to": to}] });
    let id = server
        .running_campaign(
            campaign_body("window", json!({ "calling_windows": windows })),
            format!("phone\n{}\n", number(1, 0, 1)),
        )
        .await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let leads = lead_states(&server).await;
    let (state, attempts, next_at) = leads.values().next().unwrap();
    assert_eq!(
        (state.as_str(), *attempts, *next_at),
        ("scheduled", 0, Some(opens)),
        "waits for {opens}"
    );

    wait_settled(&server, &id, Duration::from_secs(100), 0).await;
    let tries = attempts_by_phone(&server)
        .await
        .into_values()
        .next()
        .expect("dialled once the window opened");
    assert_eq!(tries.len(), 1);
    assert!(
        tries[0].created >= opens,
        "dialled at {} before the window opened at {opens}",
        tries[0].created
    );
    assert!(
        tries[0].created - opens < chrono::Duration::seconds(5),
        "dialled promptly when it opened"
    );
    assert_eq!(tries[0].result.as_deref(), Some("success"));
    server.stop().await;
}

#[tokio::test]
async fn removing_a_lead_hangs_up_its_live_call_and_it_is_not_called_again() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, _phone) = logged_in(&server, "Rem", 4).await;
    // This customer rings for 30 s: long enough to be removed while ringing.
    let id = server
        .running_campaign(
            campaign_body("remove", json!({"dial_timeout_secs": 30})),
            format!("phone\n{}\n", number(3, 0, 0)),
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (attempt, lead) = loop {
        let row: Option<(uuid::Uuid, uuid::Uuid)> =
            sqlx::query_as("SELECT id, lead_id FROM attempts WHERE status = 'ringing'")
                .fetch_optional(&server.pool)
                .await
                .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(tokio::time::Instant::now() < deadline, "the call never rang");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, _) = server
        .call(reqwest::Method::DELETE, &format!("/leads/{lead}"), None)
        .await;
    assert_eq!(status, 204);
    wait_settled(&server, &id, Duration::from_secs(10), 0).await;
    let view = server.get(&format!("/attempts/{attempt}")).await;
    assert_eq!(view["status"], "canceled", "{view}");
    assert!(view["ended_at"].is_string());
    let lead_view = server.get(&format!("/leads/{lead}")).await;
    assert_eq!(lead_view["state"], "canceled");
    assert_eq!(lead_view["attempts"].as_array().unwrap().len(), 1, "not called again");
    server.stop().await;
}

#[tokio::test]
async fn dialling_pauses_while_asterisk_is_down_and_resumes_without_losing_a_lead() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, phone) = logged_in(&server, "Ada", 2).await;
    let csv: String = std::iter::once("phone".to_owned())
        .chain((0..4).map(|_| number(1, 0, 2)))
        .collect::<Vec<_>>()
        .join("\n");
    let id = server
        .running_campaign(
            campaign_body("outage", json!({"wrap_up_secs": 1, "retry_delays_secs": {"failed": 1}})),
            csv,
        )
        .await;
    let count = |sql: &'static str| {
        let pool = server.pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while count("SELECT count(*) FROM attempts WHERE status = 'completed'").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no call completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    testbed(&["asterisk", "stop"]);
    drop(phone);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = count("SELECT count(*) FROM attempts").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count("SELECT count(*) FROM attempts").await,
        during,
        "nothing is dialled while Asterisk is down"
    );
    testbed(&["asterisk", "start"]);

    // The old session died with Asterisk; once obzvon sees Asterisk again the operator logs
    // in again and the campaign goes on.
    server
        .wait_operators("session gone after the outage", Duration::from_secs(15), |ops| {
            ops[0]["state"] == "offline"
        })
        .await;
    let ready_url = server.base.replace("/api/v1", "/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !server
        .http
        .get(&ready_url)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "obzvon did not reconnect to Asterisk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _phone = login_phone(2, "1", 500);
    wait_settled(&server, &id, Duration::from_secs(60), 0).await;
    let counts = lead_counts(&server, &id).await;
    assert_eq!(
        counts.get("done").copied(),
        Some(4),
        "every lead reached the customer: {counts:?}"
    );
    let refused =
        count("SELECT count(*) FROM attempt_transitions WHERE reason = 'originate refused by Asterisk'").await;
    assert_eq!(refused, 0, "no attempt was burned on a dead Asterisk");
    server.stop().await;
}

/// The most attempts of the campaign that held a channel at one moment.
fn most_at_once(attempts: &[AttemptRow]) -> usize {
    attempts
        .iter()
        .map(|a| {
            attempts
                .iter()
                .filter(|b| b.created <= a.created && b.ended.is_none_or(|e| e > a.created))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn two_campaigns_sharing_one_operator_count_them_once_and_take_turns() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, _phone) = logged_in(&server, "Shared", 3).await;
    // Two campaigns, three calls per ready operator each, one operator both may use: counted
    // for both, six calls would ring for them at once.
    let mut ids = Vec::new();
    let mut phones = Vec::new();
    for name in ["share-a", "share-b"] {
        let numbers: Vec<String> = (0..3).map(|_| number(1, 2, 4)).collect();
        let id = server
            .campaign_with_leads(
                campaign_body(
                    name,
                    json!({"pacing": {"mode": "progressive", "ratio": 3.0}, "connect_limit_ms": 1000,
                           "retry_delays_secs": {}, "max_abandon_rate": 1.0}),
                ),
                format!("phone\n{}\n", numbers.join("\n")),
            )
            .await;
        ids.push(id);
        phones.push(numbers);
    }
    for id in &ids {
        server.post(&format!("/campaigns/{id}/start"), json!({})).await;
    }
    for id in &ids {
        wait_settled(&server, id, Duration::from_secs(60), 0).await;
    }
    let by_phone = attempts_by_phone(&server).await;
    let all: Vec<AttemptRow> = by_phone.values().flatten().cloned().collect();
    assert_eq!(all.len(), 6, "every lead dialled once: {all:?}");
    let at_once = most_at_once(&all);
    assert!(
        at_once <= 3,
        "the operator was counted for both campaigns: {at_once} calls at once"
    );
    for (name, numbers) in ["share-a", "share-b"].iter().zip(&phones) {
        let bridged = numbers
            .iter()
            .flat_map(|n| &by_phone[n])
            .filter(|a| a.bridged.is_some())
            .count();
        assert_eq!(
            bridged, 1,
            "{name}: the operator takes one call of each campaign in turn"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_predictive_campaign_dials_ahead_of_its_operators_and_shows_its_pacing() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let (_, _p1) = logged_in(&server, "Pred1", 1).await;
    let (_, _p2) = logged_in(&server, "Pred2", 2).await;
    // A quarter of the customers answer after a second or two and talk three seconds; the
    // rest never answer (the 5 s dial timeout).
    let mut csv = String::from("phone\n");
    for i in 0..24 {
        let n = if i % 4 == 0 {
            number(1, 1 + (i % 2) as u8, 3)
        } else {
            number(3, 0, 0)
        };
        csv.push_str(&format!("{n}\n"));
    }
    let id = server
        .running_campaign(
            campaign_body(
                "predictive",
                json!({"pacing": {"mode": "predictive", "target_abandon_rate": 0.03, "abandon_window": "24h"},
                       "max_concurrent_calls": 20, "retry_delays_secs": {}}),
            ),
            csv,
        )
        .await;
    // While it runs, the live view shows the pacer's state.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let pacing = loop {
        let live = server.get(&format!("/campaigns/{id}/live")).await;
        if live["pacing"].is_object() {
            break live["pacing"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no pacing in /live: {live}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for field in [
        "dial_level",
        "live_rate",
        "predicted_free",
        "theta",
        "fallback",
        "answer_mean_secs",
    ] {
        assert!(!pacing[field].is_null(), "{field} missing from {pacing}");
    }
    wait_settled(&server, &id, Duration::from_secs(120), 0).await;

    let attempts: Vec<AttemptRow> = attempts_by_phone(&server).await.into_values().flatten().collect();
    assert_eq!(attempts.len(), 24, "each lead dialled once (no retries set)");
    let at_once = most_at_once(&attempts);
    assert!(
        at_once > 2,
        "two operators, a 25 % answer rate: it dials ahead ({at_once} at most at once)"
    );
    let answered = attempts.iter().filter(|a| a.answered.is_some()).count();
    let abandoned = attempts
        .iter()
        .filter(|a| a.result.as_deref() == Some("abandoned"))
        .count();
    let connected = attempts.iter().filter(|a| a.bridged.is_some()).count();
    assert_eq!(answered, 6, "{attempts:?}");
    // Six answers are too few to measure 3 %: at most one abandon is allowed for the sample.
    assert!(abandoned <= 1, "{abandoned} of {answered} abandoned");
    assert_eq!(connected + abandoned, answered);
    let metrics_url = server.base.replace("/api/v1", "/metrics");
    let text = server.http.get(metrics_url).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains("obzvon_pacing_dial_level{"),
        "pacing metrics exported:\n{text}"
    );
    server.stop().await;
}
