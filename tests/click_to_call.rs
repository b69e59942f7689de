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

async fn session(server: &Server, name: &str, n: u8) -> (String, Phone) {
    let op = server.operator(name, &format!("PJSIP/op{n}")).await;
    let phone = operator_phone(n, &["-;0;-;0;0"]);
    let (status, body) = server
        .call(Method::POST, &format!("/operators/{op}/session"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let id = op.clone();
    server
        .wait_operators("session ready", Duration::from_secs(10), move |ops| {
            ops.iter().any(|o| o["id"] == id.as_str() && o["state"] == "ready")
        })
        .await;
    (op, phone)
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
    let (op, _phone) = session(&server, "Olga", 1).await;
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
    assert_eq!(steps, ["init", "init", "ringing", "in-progress", "completed"], "{done}");
    assert!(reasons(&done).contains(&"init:dialled into the session".to_owned()));
    let (correlation, crm): (Option<String>, Value) =
        sqlx::query_as("SELECT correlation_id, crm FROM attempts WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert_eq!((correlation.as_deref(), crm), (Some("task-77"), json!({"task": 77})));
    assert_eq!(operator_state(&server, &op).await, "wrap-up");
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
    let (op, _phone) = session(&server, "Vera", 3).await;
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while operator_state(&server, &op).await != "ready" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "operator not back to ready after {result}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn cancel_while_ringing_hangs_up_the_customer() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-c2c4").await;
    let (op, _phone) = session(&server, "Gleb", 4).await;
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
    assert_eq!(operator_state(&server, &op).await, "ready");
    server.stop().await;
}

#[tokio::test]
async fn refusals_are_clear_and_create_nothing() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon-test-c2c5").await;
    let (op, _phone) = session(&server, "Rita", 1).await;
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
    refuse(json!({"operator_id": op, "phone": dnc}), 422, Some("phone")).await;
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
