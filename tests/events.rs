//! Call events reach RabbitMQ through the transactional outbox: the full sequence per attempt,
//! in order, with message id = event id, persistent delivery and the `attemptId` header.
//! Real RabbitMQ, Asterisk, SIPp and PostgreSQL.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

struct Received {
    body: Value,
    message_id: String,
    attempt_header: Option<String>,
    persistent: bool,
}

/// Collects events per attempt until `done` says the sequence is complete.
async fn collect(
    consumer: &mut lapin::Consumer,
    attempt: &str,
    seen: &mut HashMap<String, Vec<Received>>,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(list) = seen.get(attempt) {
            if done(list) {
                return list
                    .iter()
                    .map(|r| r.body["type"].as_str().unwrap().to_owned())
                    .collect();
            }
        }
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "events for {attempt} incomplete: {:?}",
                    seen.get(attempt)
                        .map(|l| l.iter().map(|r| r.body["type"].clone()).collect::<Vec<_>>())
                )
            })
            .expect("consumer open")
            .expect("delivery");
        let props = &next.properties;
        let body: Value = serde_json::from_slice(&next.data).unwrap();
        let header = props.headers().as_ref().and_then(|h| match h.inner().get("attemptId") {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        });
        let received = Received {
            message_id: props.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default(),
            attempt_header: header,
            persistent: *props.delivery_mode() == Some(2),
            body,
        };
        let key = received.body["attemptId"].as_str().unwrap_or_default().to_owned();
        seen.entry(key).or_default().push(received);
    }
}

#[tokio::test]
async fn a_call_produces_its_full_event_sequence_on_rabbitmq_in_order() {
    require_trunk();
    let settings = settings();
    let amqp = Connection::connect(settings.amqp.url.expose_secret(), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ does not answer ({e}); start it with `scripts/testbed.sh up`"));
    let channel = amqp.create_channel().await.unwrap();
    let exchange = settings.amqp.events_exchange.clone();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(exchange.as_str(), ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .unwrap();
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().as_str(),
            exchange.as_str(),
            "call.#",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.name().as_str(),
            "test",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let server = Server::start("obzvon-test-events").await;
    let op = server.operator("Eva", "PJSIP/op1").await;
    let _phone = operator_phone(1, &["-;0;-;0;0"]);
    server
        .call(reqwest::Method::POST, &format!("/operators/{op}/session"), None)
        .await;
    server
        .wait_operators("session ready", Duration::from_secs(10), |ops| {
            ops[0]["state"] == "ready"
        })
        .await;

    let mut seen = HashMap::new();
    let call = server
        .post(
            "/calls",
            json!({"operator_id": op, "phone": number(1, 1, 1), "correlation_id": "req-1"}),
        )
        .await;
    let attempt = call["id"].as_str().unwrap().to_owned();
    let types = collect(&mut consumer, &attempt, &mut seen, |l| {
        l.iter().any(|r| r.body["type"] == "OutboundCallEnded")
    })
    .await;
    assert_eq!(
        types,
        [
            "OutboundCallInitiated",
            "OutboundCallRinging",
            "OutboundCallAnswered",
            "OutboundCallBridged",
            "OutboundCallEnded"
        ]
    );
    for r in &seen[&attempt] {
        assert_eq!(
            r.message_id,
            r.body["eventId"].as_str().unwrap(),
            "message id = event id"
        );
        assert_eq!(r.attempt_header.as_deref(), Some(attempt.as_str()));
        assert!(r.persistent);
        assert_eq!(r.body["operatorId"], op.as_str());
        assert_eq!(r.body["correlationId"], "req-1");
    }
    let ended = &seen[&attempt].last().unwrap().body;
    assert_eq!(
        (ended["status"].as_str(), ended["result"].as_str()),
        (Some("completed"), Some("success"))
    );

    server
        .post(
            &format!("/attempts/{attempt}/disposition"),
            json!({"result": "not-interested"}),
        )
        .await;
    let types = collect(&mut consumer, &attempt, &mut seen, |l| l.len() == 6).await;
    assert_eq!(types[5], "OutboundCallDisposition");
    assert_eq!(seen[&attempt][5].body["result"], "not-interested");

    // A campaign call that fails: initiated by the scheduler's claim, then ringing, failed.
    server
        .wait_operators("ready again", Duration::from_secs(15), |ops| ops[0]["state"] == "ready")
        .await;
    let campaign = server
        .post(
            "/campaigns",
            json!({"name": "ev", "trunk": "PJSIP/{number}@trunk", "caller_id": "1", "retry_delays_secs": {}}),
        )
        .await;
    let id = campaign["id"].as_str().unwrap();
    server
        .post_csv(
            &format!("/campaigns/{id}/leads"),
            format!("phone,external_id\n{},crm-42\n", number(2, 1, 0)),
        )
        .await;
    server.post(&format!("/campaigns/{id}/start"), json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let busy_attempt: String = loop {
        let row: Option<(uuid::Uuid,)> = sqlx::query_as("SELECT id FROM attempts WHERE campaign_id = $1::uuid")
            .bind(id)
            .fetch_optional(&server.pool)
            .await
            .unwrap();
        if let Some((a,)) = row {
            break a.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "campaign did not dial");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let types = collect(&mut consumer, &busy_attempt, &mut seen, |l| {
        l.iter().any(|r| r.body["type"] == "OutboundCallFailed")
    })
    .await;
    assert_eq!(
        types,
        ["OutboundCallInitiated", "OutboundCallRinging", "OutboundCallFailed"]
    );
    let failed = &seen[&busy_attempt][2].body;
    assert_eq!(
        (failed["result"].as_str(), failed["externalId"].as_str()),
        (Some("busy"), Some("crm-42"))
    );
    assert_eq!(seen[&busy_attempt][0].body["campaignId"], id);
    // The relay marks a batch sent right after the broker confirmed it; a consumer may be faster.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&server.pool)
            .await
            .unwrap();
        if unsent == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{unsent} events never marked sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}
