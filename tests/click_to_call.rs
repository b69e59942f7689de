//! Single calls from a lead or task card (`POST /api/v1/calls`) through the real test bed:
//! with a live session the customer is dialled into the operator's bridge; without one the
//! operator's phone rings first. The tests share the operator phones' ports, so they run one
//! at a time.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn wait_attempt(server: &Server, id: &str, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let a = server.get(&format!("/attempts/{id}")).await;
        if check(&a) {
            return a;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} within {limit:?}: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn reasons(attempt: &Value) -> Vec<String> {
    attempt["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["to_status"].as_str().unwrap(),
                t["reason"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The engine records the operator's state right after the attempt's end: wait for it.
async fn wait_operator_state(server: &Server, op: &str, state: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while operator_state(server, op).await != state {
        assert!(tokio::time::Instant::now() < deadline, "operator not {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn operator_state(server: &Server, op: &str) -> String {
    server.get(&format!("/operators/{op}")).await["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn with_a_session_the_customer_is_dialled_into_the_operators_bridge() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-c2c1").await;
    let (op, _phone) = server.logged_in("Olga", 1).await;
    let call = server
        .post(
            "/calls",
            json!({"operator_id": op, "phone": number(1, 1, 2), "correlation_id": "task-77", "crm": {"task": 77}}),
        )
        .await;
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(call["kind"], "click-to-call");
    // Refused while the operator is busy with this call; nothing is created.
    let (status, body) = server
        .call(
            Method::POST,
            "/calls",
            Some(json!({"operator_id": op, "phone": number(1, 1, 2)})),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    let done = wait_attempt(&server, &id, "completed", Duration::from_secs(15), |a| {
        a["status"] == "completed"
    })
    .await;
    assert_eq!(done["result"], "success");
    assert_eq!(done["operator_id"], op.as_str());
    assert!(done["answered_at"].is_string() && done["bridged_at"].is_string());
    let steps: Vec<&str> = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to_status"].as_str().unwrap())
        .collect();
    // The note that Asterisk took the dial comes with the answer to our request, which may
    // arrive before or after the ringing event on the websocket: it is recorded in whichever
    // status the call has then.
    let mut progress = steps.clone();
    progress.dedup();
    assert_eq!(progress, ["init", "ringing", "in-progress", "completed"], "{done}");
    assert_eq!(steps.len(), 5, "one note besides the four statuses: {done}");
    let noted = reasons(&done);
    assert!(
        ["init:dialled into the session", "ringing:dialled into the session"]
            .iter()
            .any(|r| noted.contains(&(*r).to_owned())),
        "{noted:?}"
    );
    let (correlation, crm): (Option<String>, Value) =
        sqlx::query_as("SELECT correlation_id, crm FROM attempts WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert_eq!((correlation.as_deref(), crm), (Some("task-77"), json!({"task": 77})));
    wait_operator_state(&server, &op, "wrap-up").await;
    server.stop().await;
}

#[tokio::test]
async fn without_a_session_the_operator_phone_rings_first_then_the_customer() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-c2c2").await;
    let op = server.operator("Boris", "PJSIP/op2").await;
    let _phone = operator_phone(2, &["-;0;-;0;0"]);
    let call = server
        .post("/calls", json!({"operator_id": op, "phone": number(1, 1, 1)}))
        .await;
    let id = call["id"].as_str().unwrap().to_owned();
    let done = wait_attempt(&server, &id, "completed", Duration::from_secs(15), |a| {
        a["status"] == "completed"
    })
    .await;
    assert_eq!(done["result"], "success");
    let r = reasons(&done);
    let answered = r
        .iter()
        .position(|x| x == "init:operator answered")
        .expect("the operator answered first");
    let ringing = r.iter().position(|x| x.starts_with("ringing")).unwrap();
    assert!(answered < ringing, "operator before customer: {r:?}");
    // The operator's leg ends with the call.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let channels = ari_client("c2c-check").await.list_channels().await.unwrap();
    assert!(
        !channels.iter().any(|c| c.id.contains(&id)),
        "no leg of the call is left"
    );
    server.stop().await;
}

#[tokio::test]
async fn busy_and_no_answer_put_the_operator_back_to_ready_with_the_right_result() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-c2c3").await;
    let (op, _phone) = server.logged_in("Vera", 3).await;
    for (number, result) in [(number(2, 1, 0), "busy"), (number(3, 0, 0), "no-answer")] {
        let mut body = json!({"operator_id": op, "phone": number});
        if result == "no-answer" {
            // No campaign: the dialer default timeout (30 s) would be slow; a campaign sets 5 s.
            let c = server
                .post(
                    "/campaigns",
                    json!({"name": "c2c", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000", "dial_timeout_secs": 5}),
                )
                .await;
            body["campaign_id"] = c["id"].clone();
        }
        let call = server.post("/calls", body).await;
        let id = call["id"].as_str().unwrap().to_owned();
        let done = wait_attempt(&server, &id, "failed", Duration::from_secs(15), |a| {
            a["status"] == "failed"
        })
        .await;
        assert_eq!(done["result"], result, "{done}");
        wait_operator_state(&server, &op, "ready").await;
    }
    server.stop().await;
}

/// Single calls on a campaign's lead count like the campaign's own attempts: with
/// `max_attempts` 2, the second busy call exhausts the lead (it used to count as attempt 1
/// every time, so such a lead never reached `exhausted`).
#[tokio::test]
async fn single_calls_on_a_campaign_lead_count_its_attempts_until_it_is_exhausted() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-c2c6").await;
    let (op, _phone) = server.logged_in("Zoya", 4).await;
    let c = server
        .post(
            "/campaigns",
            json!({"name": "counted", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000",
                   "max_attempts": 2, "retry_delays_secs": {"busy": 1}}),
        )
        .await;
    let campaign = c["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .post_csv(
            &format!("/campaigns/{campaign}/leads"),
            format!("phone\n{}\n", number(2, 0, 0)),
        )
        .await;
    assert_eq!(status, 200);
    let leads = server.get(&format!("/campaigns/{campaign}/leads")).await;
    let lead = leads[0]["id"].as_str().unwrap().to_owned();
    for round in 1..=2 {
        let call = server
            .post(
                "/calls",
                json!({"operator_id": op, "lead_id": lead, "campaign_id": campaign}),
            )
            .await;
        let id = call["id"].as_str().unwrap().to_owned();
        wait_attempt(&server, &id, "busy", Duration::from_secs(15), |a| {
            a["status"] == "failed"
        })
        .await;
        wait_operator_state(&server, &op, "ready").await;
        let l = server.get(&format!("/leads/{lead}")).await;
        assert_eq!(l["attempts_count"], round, "{l}");
        let want = if round == 1 { "scheduled" } else { "exhausted" };
        assert_eq!(l["state"], want, "after call {round}: {l}");
    }
    server.stop().await;
}

#[tokio::test]
async fn cancel_while_ringing_hangs_up_the_customer() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-c2c4").await;
    let (op, _phone) = server.logged_in("Gleb", 4).await;
    let call = server
        .post("/calls", json!({"operator_id": op, "phone": number(3, 0, 0)}))
        .await;
    let id = call["id"].as_str().unwrap().to_owned();
    wait_attempt(&server, &id, "ringing", Duration::from_secs(10), |a| {
        a["status"] == "ringing"
    })
    .await;
    let (status, body) = server.call(Method::POST, &format!("/attempts/{id}/cancel"), None).await;
    assert_eq!(status, 202, "{body}");
    let done = wait_attempt(&server, &id, "canceled", Duration::from_secs(10), |a| {
        a["status"] == "canceled"
    })
    .await;
    assert!(done["ended_at"].is_string());
    let (status, _) = server.call(Method::POST, &format!("/attempts/{id}/cancel"), None).await;
    assert_eq!(status, 409, "an ended call cannot be canceled again");
    wait_operator_state(&server, &op, "ready").await;
    server.stop().await;
}

#[tokio::test]
async fn refusals_are_clear_and_create_nothing() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-c2c5").await;
    let (op, _phone) = server.logged_in("Rita", 1).await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM attempts")
            .fetch_one(&server.pool)
            .await
            .unwrap()
    };
    let refuse = |body: Value, status: u16, field: Option<&'static str>| {
        let server = &server;
        async move {
            let (got, answer) = server.call(Method::POST, "/calls", Some(body.clone())).await;
            assert_eq!(got, status, "{body} → {answer}");
            assert!(
                answer["message"].as_str().is_some_and(|m| !m.is_empty()),
                "a reason a CRM can show: {answer}"
            );
            if let Some(field) = field {
                assert_eq!(answer["fields"][0]["field"], field, "{answer}");
            }
        }
    };
    refuse(json!({"operator_id": op, "phone": "12"}), 422, Some("phone")).await;
    refuse(json!({"operator_id": op}), 422, Some("phone")).await;
    let dnc = number(1, 0, 1);
    server.post("/dnc", json!({"phone": dnc})).await;
    refuse(json!({"operator_id": op, "phone": dnc}), 409, None).await;
    refuse(
        json!({"operator_id": uuid::Uuid::new_v4(), "phone": number(1, 0, 1)}),
        404,
        None,
    )
    .await;
    let disabled = server.operator("Off", "PJSIP/op3").await;
    server
        .call(
            Method::PATCH,
            &format!("/operators/{disabled}"),
            Some(json!({"enabled": false})),
        )
        .await;
    refuse(json!({"operator_id": disabled, "phone": number(1, 0, 1)}), 409, None).await;
    server.post(&format!("/operators/{op}/pause"), json!({})).await;
    refuse(json!({"operator_id": op, "phone": number(1, 0, 1)}), 409, None).await;
    server.post(&format!("/operators/{op}/ready"), json!({})).await;
    assert_eq!(count().await, 0, "nothing was created by a refusal");

    // A number already in a live call (here a campaign-less call of another operator).
    let other = server.operator("Other", "PJSIP/op2").await;
    let _phone2 = operator_phone(2, &["-;0;-;0;0"]);
    let busy = number(1, 0, 5);
    let first = server.post("/calls", json!({"operator_id": op, "phone": busy})).await;
    refuse(json!({"operator_id": other, "phone": busy}), 409, None).await;
    assert_eq!(count().await, 1, "only the first call exists");
    let id = first["id"].as_str().unwrap();
    server.call(Method::POST, &format!("/attempts/{id}/cancel"), None).await;
    server.stop().await;
}

async fn wait_offer(server: &Server, op: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let q = server.get(&format!("/operators/{op}/queue")).await;
        if q["offered"].is_object() {
            return q;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no lead offered within {limit:?}: {q}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn attempt_for_lead(server: &Server, lead: &str, limit: Duration) -> (chrono::DateTime<chrono::Utc>, String) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let row: Option<(chrono::DateTime<chrono::Utc>, String)> =
            sqlx::query_as("SELECT created_at, status FROM attempts WHERE lead_id = $1::uuid")
                .bind(lead)
                .fetch_optional(&server.pool)
                .await
                .unwrap();
        if let Some(row) = row {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lead {lead} not dialled within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_ended(server: &Server, lead: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let state: String = sqlx::query_scalar("SELECT state FROM leads WHERE id = $1::uuid")
            .bind(lead)
            .fetch_one(&server.pool)
            .await
            .unwrap();
        if state == "done" {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "lead {lead} is {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn preview_offers_leads_one_by_one_dialled_by_key_by_rest_skipped_and_auto_dialled() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-prev1").await;
    // The phone presses 1 four seconds into the session: that dials the first offer.
    let op = server.operator("Pia", "PJSIP/op1").await;
    let _phone = operator_phone(1, &["1;4000;-;0;0"]);
    server
        .call(Method::POST, &format!("/operators/{op}/session"), None)
        .await;
    server
        .wait_operators("session ready", Duration::from_secs(10), |ops| {
            ops[0]["state"] == "ready"
        })
        .await;
    let csv = format!(
        "phone,name,priority\n{},A,40\n{},B,30\n{},C,20\n{},D,10\n",
        number(1, 0, 1),
        number(1, 0, 1),
        number(1, 0, 1),
        number(1, 0, 1)
    );
    server
        .running_campaign(
            json!({"name": "preview", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000",
                   "pacing": {"mode": "preview"}, "wrap_up_secs": 1,
                   "preview": {"auto_dial_secs": 6, "reservation_secs": 60, "skip_delay_secs": 600}}),
            csv,
        )
        .await;

    // A: offered first (highest priority); the phone key dials it before the auto-dial.
    let q = wait_offer(&server, &op, Duration::from_secs(5)).await;
    assert_eq!(q["offered"]["name"], "A", "{q}");
    // The reservation is written just before the engine records the operator as reserved.
    server
        .wait_operators("reserved while offered", Duration::from_secs(2), |ops| {
            ops[0]["state"] == "reserved"
        })
        .await;
    assert_eq!(q["next"].as_array().unwrap().len(), 3, "B, C, D wait: {q}");
    assert!(q["offered"]["auto_dial_at"].is_string());
    let offered_at = chrono::Utc::now();
    let a = q["offered"]["lead_id"].as_str().unwrap().to_owned();
    let (created, _) = attempt_for_lead(&server, &a, Duration::from_secs(8)).await;
    assert!(
        created - offered_at < chrono::Duration::seconds(5),
        "dialled by the key, not by the timer"
    );
    wait_ended(&server, &a).await;

    // B: dialled over REST at once.
    let q = wait_offer(&server, &op, Duration::from_secs(5)).await;
    assert_eq!(q["offered"]["name"], "B", "{q}");
    let dialled = server.post(&format!("/operators/{op}/queue/dial"), json!({})).await;
    assert_eq!(dialled["kind"], "preview");
    assert_eq!(dialled["lead_id"], q["offered"]["lead_id"]);
    let b = q["offered"]["lead_id"].as_str().unwrap().to_owned();
    wait_ended(&server, &b).await;

    // C: skipped with a reason; it comes back later.
    let q = wait_offer(&server, &op, Duration::from_secs(5)).await;
    assert_eq!(q["offered"]["name"], "C", "{q}");
    let c = q["offered"]["lead_id"].as_str().unwrap().to_owned();
    server
        .post(
            &format!("/operators/{op}/queue/skip"),
            json!({"reason": "customer asked for an email"}),
        )
        .await;
    let (state, next_at): (String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT state, next_attempt_at FROM leads WHERE id = $1::uuid")
            .bind(&c)
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert_eq!(state, "scheduled");
    assert!(next_at > chrono::Utc::now() + chrono::Duration::seconds(500));
    let reason: String =
        sqlx::query_scalar("SELECT after->>'reason' FROM audit_log WHERE action = 'lead.skip' AND entity_id = $1")
            .bind(&c)
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert_eq!(reason, "customer asked for an email");

    // D: nobody acts; it is dialled by itself after the preview time.
    let q = wait_offer(&server, &op, Duration::from_secs(5)).await;
    assert_eq!(q["offered"]["name"], "D", "{q}");
    let offered_at = chrono::Utc::now();
    let d = q["offered"]["lead_id"].as_str().unwrap().to_owned();
    let (created, _) = attempt_for_lead(&server, &d, Duration::from_secs(10)).await;
    let waited = created - offered_at;
    assert!(
        waited >= chrono::Duration::milliseconds(5500),
        "auto-dialled after {waited}, preview time 6 s"
    );
    wait_ended(&server, &d).await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let q = server.get(&format!("/operators/{op}/queue")).await;
    assert!(q["offered"].is_null(), "nothing left to offer: {q}");
    server.stop().await;
}

#[tokio::test]
async fn an_offer_nobody_acts_on_lapses_returns_the_lead_and_pauses_the_operator() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-prev2").await;
    let (op, _phone) = server.logged_in("Lev", 2).await;
    server
        .running_campaign(
            json!({"name": "lapse", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000",
                   "pacing": {"mode": "preview"}, "preview": {"reservation_secs": 10}}),
            format!("phone\n{}\n", number(1, 0, 1)),
        )
        .await;
    let q = wait_offer(&server, &op, Duration::from_secs(5)).await;
    let lead = q["offered"]["lead_id"].as_str().unwrap().to_owned();
    server
        .wait_operators("paused after the offer lapsed", Duration::from_secs(15), |ops| {
            ops[0]["state"] == "paused"
        })
        .await;
    let (state, reserved): (String, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT state, reserved_by FROM leads WHERE id = $1::uuid")
            .bind(&lead)
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), reserved), ("pending", None), "the lead is free again");
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0);
    // Ready again: the lead is offered anew.
    server.post(&format!("/operators/{op}/ready"), json!({})).await;
    let q = wait_offer(&server, &op, Duration::from_secs(5)).await;
    assert_eq!(q["offered"]["lead_id"], lead.as_str());
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/operators/{op}/queue/skip"),
            Some(json!({"reason": ""})),
        )
        .await;
    assert_eq!(status, 422, "a skip needs a reason");
    server.stop().await;
}
