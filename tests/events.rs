//! Events and requests over RabbitMQ, against real RabbitMQ, Asterisk, SIPp and PostgreSQL:
//! - a call's full event sequence, in order per attempt, with message id = event id,
//!   persistent delivery and the `attemptId` header; operator and campaign state events; every
//!   event valid against its JSON Schema in `contracts/`;
//! - a broker outage in the middle of a campaign: dialling goes on, every event arrives later;
//! - call requests on the request queue: refused ones dead-lettered with a reason, a valid one
//!   placed with its correlation id in the events.
//!
//! The tests share the broker and one of them stops it, so they run one at a time.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::contracts::Contracts;
use common::*;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::{json, Value};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Received {
    body: Value,
    message_id: String,
    attempt_header: Option<String>,
    persistent: bool,
}

/// What a bound queue delivered, grouped by attempt (or `op:<id>`, `campaign:<id>`); every
/// message is checked against its contract on arrival.
struct Seen {
    contracts: Contracts,
    by_key: HashMap<String, Vec<Received>>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            contracts: Contracts::load(),
            by_key: HashMap::new(),
        }
    }

    fn types(&self, key: &str) -> Vec<String> {
        self.by_key
            .get(key)
            .map(|l| l.iter().map(|r| r.body["type"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }

    fn event_ids(&self) -> HashSet<String> {
        self.by_key
            .values()
            .flatten()
            .map(|r| r.body["eventId"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Reads deliveries until `done` holds.
    async fn until(
        &mut self,
        consumer: &mut lapin::Consumer,
        what: &str,
        limit: Duration,
        done: impl Fn(&Seen) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(self) {
            let next = match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(next) => next.expect("consumer open").expect("delivery"),
                Err(_) => {
                    let summary: Vec<_> = self.by_key.keys().map(|k| (k.clone(), self.types(k))).collect();
                    panic!("{what}: not within {limit:?}; seen {summary:?}");
                }
            };
            let props = &next.properties;
            let body: Value = serde_json::from_slice(&next.data).unwrap();
            self.contracts.check_event(&body);
            let header = props.headers().as_ref().and_then(|h| match h.inner().get("attemptId") {
                Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                _ => None,
            });
            let key = if let Some(a) = body["attemptId"].as_str() {
                a.to_owned()
            } else if let Some(o) = body["operatorId"].as_str() {
                format!("op:{o}")
            } else {
                format!("campaign:{}", body["campaignId"].as_str().unwrap_or_default())
            };
            self.by_key.entry(key).or_default().push(Received {
                message_id: props.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default(),
                attempt_header: header,
                persistent: *props.delivery_mode() == Some(2),
                body,
            });
        }
    }
}

/// A queue bound to every event of the exchange; `durable` ones survive a broker restart.
async fn bind_all(channel: &Channel, durable_name: Option<&str>) -> lapin::Consumer {
    let queue = bind_events_queue(channel, durable_name).await;
    consume(channel, &queue).await
}

/// Reads `queue` without acknowledgements.
async fn consume(channel: &Channel, queue: &str) -> lapin::Consumer {
    channel
        .basic_consume(
            queue,
            "test",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// The queue's state without declaring it (an error when it does not exist).
async fn inspect(channel: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

async fn wait_all_sent(server: &Server) {
    // The relay marks a batch sent right after the broker confirmed it; a consumer may be faster.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&server.pool)
            .await
            .unwrap();
        if unsent == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{unsent} events never marked sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_call_produces_its_full_event_sequence_on_rabbitmq_in_order() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let (_amqp, channel) = broker().await;
    let mut consumer = bind_all(&channel, None).await;
    let mut seen = Seen::new();

    let server = Server::start("obzvon-test-events").await;
    let (op, _phone) = server.logged_in("Op1", 1).await;
    let op_key = format!("op:{op}");
    seen.until(&mut consumer, "operator logged in", Duration::from_secs(10), |s| {
        s.by_key
            .get(&op_key)
            .is_some_and(|l| l.iter().any(|r| r.body["state"] == "ready"))
    })
    .await;
    let login = &seen.by_key[&op_key].last().unwrap().body;
    assert_eq!(
        (login["previousState"].as_str(), login["endpoint"].as_str()),
        (Some("offline"), Some("PJSIP/op1"))
    );

    let call = server
        .post(
            "/calls",
            json!({"operator_id": op, "phone": number(1, 1, 1), "correlation_id": "req-1", "crm": {"ticket": 7}}),
        )
        .await;
    let attempt = call["id"].as_str().unwrap().to_owned();
    seen.until(&mut consumer, "the call's events", Duration::from_secs(30), |s| {
        s.types(&attempt).iter().any(|t| t == "OutboundCallEnded")
    })
    .await;
    assert_eq!(
        seen.types(&attempt),
        [
            "OutboundCallInitiated",
            "OutboundCallRinging",
            "OutboundCallAnswered",
            "OutboundCallBridged",
            "OutboundCallEnded"
        ]
    );
    for r in &seen.by_key[&attempt] {
        assert_eq!(
            r.message_id,
            r.body["eventId"].as_str().unwrap(),
            "message id = event id"
        );
        assert_eq!(r.attempt_header.as_deref(), Some(attempt.as_str()));
        assert!(r.persistent);
        assert_eq!(r.body["operatorId"], op.as_str());
        assert_eq!(r.body["correlationId"], "req-1");
        assert_eq!(r.body["crm"]["ticket"], 7);
    }
    let ended = &seen.by_key[&attempt].last().unwrap().body;
    assert_eq!(
        (ended["status"].as_str(), ended["result"].as_str()),
        (Some("completed"), Some("success"))
    );
    // The operator went on-call and into wrap-up, each reported.
    seen.until(&mut consumer, "operator states", Duration::from_secs(10), |s| {
        s.by_key[&op_key].iter().any(|r| r.body["state"] == "wrap-up")
    })
    .await;

    server
        .post(
            &format!("/attempts/{attempt}/disposition"),
            json!({"result": "not-interested"}),
        )
        .await;
    seen.until(&mut consumer, "disposition", Duration::from_secs(10), |s| {
        s.types(&attempt).len() == 6
    })
    .await;
    assert_eq!(seen.types(&attempt)[5], "OutboundCallDisposition");
    assert_eq!(seen.by_key[&attempt][5].body["result"], "not-interested");

    // A campaign call that fails: initiated by the scheduler's claim, then ringing, failed; the
    // campaign's start and its end (nothing left to call) are events too.
    server
        .wait_operators("ready again", Duration::from_secs(15), |ops| ops[0]["state"] == "ready")
        .await;
    let id = server
        .running_campaign(
            json!({"name": "ev", "trunk": "PJSIP/{number}@trunk", "caller_id": "1", "retry_delays_secs": {}}),
            format!("phone,external_id\n{},crm-42\n", number(2, 1, 0)),
        )
        .await;
    let campaign_key = format!("campaign:{id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let busy_attempt: String = loop {
        let row: Option<(uuid::Uuid,)> = sqlx::query_as("SELECT id FROM attempts WHERE campaign_id = $1::uuid")
            .bind(&id)
            .fetch_optional(&server.pool)
            .await
            .unwrap();
        if let Some((a,)) = row {
            break a.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "campaign did not dial");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    seen.until(
        &mut consumer,
        "failed call and finished campaign",
        Duration::from_secs(30),
        |s| {
            s.types(&busy_attempt).iter().any(|t| t == "OutboundCallFailed")
                && s.by_key
                    .get(&campaign_key)
                    .is_some_and(|l| l.iter().any(|r| r.body["state"] == "finished"))
        },
    )
    .await;
    assert_eq!(
        seen.types(&busy_attempt),
        ["OutboundCallInitiated", "OutboundCallRinging", "OutboundCallFailed"]
    );
    let failed = &seen.by_key[&busy_attempt][2].body;
    assert_eq!(
        (failed["result"].as_str(), failed["externalId"].as_str()),
        (Some("busy"), Some("crm-42"))
    );
    assert_eq!(seen.by_key[&busy_attempt][0].body["campaignId"], id.as_str());
    let states: Vec<(String, String)> = seen.by_key[&campaign_key]
        .iter()
        .map(|r| {
            (
                r.body["previousState"].as_str().unwrap().to_owned(),
                r.body["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("draft".into(), "running".into()),
            ("running".into(), "finished".into())
        ]
    );
    wait_all_sent(&server).await;
    server.stop().await;
}

/// Stops the RabbitMQ application (connections drop, the node stays) and starts it again
/// when dropped, so a failing test leaves the broker running.
struct BrokerOutage;

impl BrokerOutage {
    fn begin() -> BrokerOutage {
        rabbitmqctl("stop_app");
        BrokerOutage
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
    }
}

#[tokio::test]
async fn a_broker_outage_mid_run_delays_events_and_loses_none() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let queue = "obzvon-test-outage";
    let (amqp, channel) = broker().await;
    // Durable: it keeps the events published while this test's consumer is away.
    drop(bind_all(&channel, Some(queue)).await);
    let _ = amqp.close(0, "outage").await;

    let server = Server::start("obzvon-test-outage").await;
    // Progressive pacing dials for ready operators; nobody answers, so the operator just waits.
    let (_op, _phone) = server.logged_in("Op2", 2).await;
    // Calls that need no operator: busy, congestion, busy, 404, busy; no retries.
    let csv = format!(
        "phone\n{}\n{}\n{}\n{}\n{}\n",
        number(2, 1, 0),
        number(4, 0, 0),
        number(2, 1, 0),
        number(6, 0, 0),
        number(2, 0, 0)
    );
    let outage = BrokerOutage::begin();
    let id = server
        .running_campaign(
            json!({"name": "outage", "trunk": "PJSIP/{number}@trunk", "caller_id": "1",
                   "retry_delays_secs": {}, "pacing": {"ratio": 2}}),
            csv,
        )
        .await;
    // The dialer goes on without the broker: every lead is called and the campaign finishes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let state = server.get(&format!("/campaigns/{id}")).await["state"].clone();
        if state == "finished" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign state {state} while the broker is down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (finished, unsent): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM attempts WHERE status = 'failed'),
                (SELECT count(*) FROM outbox WHERE sent_at IS NULL)",
    )
    .fetch_one(&server.pool)
    .await
    .unwrap();
    assert_eq!(finished, 5, "all five calls were made during the outage");
    assert!(unsent >= 17, "events wait in the outbox: {unsent} unsent");
    drop(outage);

    let (_amqp, channel) = broker().await;
    let mut consumer = consume(&channel, queue).await;
    let expected: HashSet<String> = sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM outbox")
        .fetch_all(&server.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.to_string())
        .collect();
    let mut seen = Seen::new();
    seen.until(
        &mut consumer,
        "every event after the outage",
        Duration::from_secs(60),
        |s| expected.is_subset(&s.event_ids()),
    )
    .await;
    // In order per attempt, even though they were published in a burst after the outage.
    let attempts: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM attempts")
        .fetch_all(&server.pool)
        .await
        .unwrap();
    for a in attempts {
        assert_eq!(
            seen.types(&a.to_string()),
            ["OutboundCallInitiated", "OutboundCallRinging", "OutboundCallFailed"]
        );
    }
    wait_all_sent(&server).await;
    channel
        .queue_delete(queue, QueueDeleteOptions::default())
        .await
        .unwrap();
    server.stop().await;
}

/// Waits for a message on `queue` (polling basic.get).
async fn next_message(channel: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = channel
            .basic_get(queue, BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing arrived on {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header(m: &lapin::message::BasicGetMessage, name: &str) -> String {
    match m
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
    {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

#[tokio::test]
async fn call_requests_from_the_queue_are_placed_or_dead_lettered_with_a_reason() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let requests = format!("obzvon-test-requests-{}", std::process::id());
    let dead = format!("{requests}.dead");
    let (_amqp, channel) = broker().await;
    let mut events = bind_all(&channel, None).await;
    let reply = channel
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

    let db = TestDb::create().await;
    obzvon::db::migrate(&db.pool().await).await.unwrap();
    let queue_name = requests.clone();
    let server = Server::start_custom(db, "obzvon-test-requests", move |s| s.amqp.request_queue = queue_name).await;
    let (op, _phone) = server.logged_in("Op3", 3).await;
    // The consumer declares its queues when it connects.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let probe = _amqp.create_channel().await.unwrap();
        let declared = inspect(&probe, &requests).await;
        if declared.is_ok_and(|q| q.consumer_count() > 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "obzvon never consumed {requests}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let publish = |body: Vec<u8>, correlation: &str| {
        let props = BasicProperties::default()
            .with_correlation_id(correlation.into())
            .with_reply_to(reply.name().clone())
            .with_delivery_mode(2);
        let channel = channel.clone();
        let requests = requests.clone();
        async move {
            channel
                .basic_publish("", requests.as_str(), BasicPublishOptions::default(), &body, props)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let contracts = Contracts::load();

    // Refused: not JSON; an unknown field (the schema says so too); an operator that does not
    // exist. Each lands in the dead-letter queue with its reason, and the consumer goes on.
    let refused: [(Vec<u8>, &str, &str, &str); 3] = [
        (b"{not json".to_vec(), "bad-1", "bad_request", "not valid JSON"),
        (
            serde_json::to_vec(&json!({"operator_id": op, "phone": "+74951234567", "priority": 1})).unwrap(),
            "bad-2",
            "invalid",
            "priority",
        ),
        (
            serde_json::to_vec(&json!({"operator_id": uuid::Uuid::new_v4(), "phone": "+74951234567"})).unwrap(),
            "bad-3",
            "not_found",
            "operator not found",
        ),
    ];
    assert!(!contracts
        .call_request
        .is_valid(&serde_json::from_slice::<Value>(&refused[1].0).unwrap()));
    for (body, correlation, code, reason) in &refused {
        publish(body.clone(), correlation).await;
        let m = next_message(&channel, &dead).await;
        assert_eq!(m.data, *body, "the original body is kept");
        assert_eq!(m.properties.correlation_id().as_ref().unwrap().as_str(), *correlation);
        assert_eq!(header(&m, "x-obzvon-error"), *code);
        assert!(
            header(&m, "x-obzvon-reason").contains(reason),
            "{}",
            header(&m, "x-obzvon-reason")
        );
        let answer = next_message(&channel, reply.name().as_str()).await;
        let answer: Value = serde_json::from_slice(&answer.data).unwrap();
        assert_eq!(
            (answer["ok"].as_bool(), answer["error"].as_str()),
            (Some(false), Some(*code))
        );
    }
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "refused requests create nothing");

    // Valid: the AMQP correlation id comes back in every event of the call and in the reply.
    let request = json!({"operator_id": op, "phone": number(1, 1, 1), "crm": {"deal": "D-9"}});
    assert!(contracts.call_request.is_valid(&request));
    publish(serde_json::to_vec(&request).unwrap(), "crm-req-9").await;
    let answer = next_message(&channel, reply.name().as_str()).await;
    assert_eq!(
        answer.properties.correlation_id().as_ref().unwrap().as_str(),
        "crm-req-9"
    );
    let answer: Value = serde_json::from_slice(&answer.data).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let attempt = answer["attempt"]["id"].as_str().unwrap().to_owned();
    let mut seen = Seen::new();
    seen.until(
        &mut events,
        "the requested call's events",
        Duration::from_secs(30),
        |s| s.types(&attempt).iter().any(|t| t == "OutboundCallEnded"),
    )
    .await;
    assert_eq!(seen.types(&attempt).len(), 5, "{:?}", seen.types(&attempt));
    for r in &seen.by_key[&attempt] {
        assert_eq!(r.body["correlationId"], "crm-req-9");
        assert_eq!(r.body["crm"]["deal"], "D-9");
    }
    let dead_left = inspect(&channel, &dead).await.unwrap().message_count();
    assert_eq!(dead_left, 0, "only the refused requests were dead-lettered");
    server.stop().await;
    for q in [requests.as_str(), dead.as_str()] {
        channel.queue_delete(q, QueueDeleteOptions::default()).await.unwrap();
    }
}
