//! Webhooks against a running `obzvon serve` and real HTTP receivers in this process: every
//! event POSTed with a signature the receiver can check, a failing receiver retried with backoff
//! until it answers, and a dead one given up after `max_tries` with the failure visible;
//! inward targets refused unless allowed, and credentials kept out of URLs, answers and logs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::contracts::Contracts;
use common::*;
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Receiver {
    /// (headers, body, when) of every POST.
    posts: Arc<Mutex<Vec<(HeaderMap, Bytes, std::time::Instant)>>>,
    /// Answer 500 to this many POSTs first.
    fail_first: Arc<Mutex<usize>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.posts.lock().unwrap().push((headers, body, std::time::Instant::now()));
    let mut fail = r.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn start_receiver(fail_first: usize) -> (Receiver, String) {
    let receiver = Receiver::default();
    *receiver.fail_first.lock().unwrap() = fail_first;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, url)
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, limit: Duration, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn events_are_posted_signed_retried_and_given_up_after_the_bound() {
    let db = TestDb::create().await;
    obzvon::db::migrate(&db.pool().await).await.unwrap();
    let server = Server::start_custom(db, "obzvon-test-webhooks", |s| {
        s.webhooks.max_tries = 3;
        s.webhooks.backoff_secs = 0.3;
        s.webhooks.backoff_max_secs = 1.0;
        s.webhooks.timeout_secs = 2;
        // The receivers are in this process, on loopback.
        s.webhooks.allow_private_targets = true;
    })
    .await;

    // Bad subscriptions are refused and create nothing.
    for (body, field) in [
        (json!({"url": "ftp://x/y"}), "url"),
        (json!({"url": "http://127.0.0.1:1/x", "secret": "short"}), "secret"),
        (
            json!({"url": "http://127.0.0.1:1/x", "event_types": ["CallHappened"]}),
            "event_types",
        ),
    ] {
        let (status, answer) = server.call(reqwest::Method::POST, "/webhooks", Some(body)).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["fields"][0]["field"], field);
    }
    assert!(server.get("/webhooks").await.as_array().unwrap().is_empty());

    // A receiver that fails twice per event before it answers, for campaign events only.
    let (flaky, flaky_url) = start_receiver(2).await;
    let secret = "a-secret-of-the-crm-0123";
    let hook = server
        .post(
            "/webhooks",
            json!({"url": flaky_url, "secret": secret, "event_types": ["CampaignStateChanged"]}),
        )
        .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    assert_eq!(hook["secret"], secret, "shown once, at creation");
    assert!(server.get("/webhooks").await[0].get("secret").is_none(), "never again");
    // A receiver that is never there: nothing listens on port 1.
    let dead = server
        .post("/webhooks", json!({"url": "http://127.0.0.1:1/hook"}))
        .await;
    let dead_id = dead["id"].as_str().unwrap().to_owned();
    assert_eq!(dead["secret"].as_str().unwrap().len(), 32, "a generated secret");

    let campaign = server
        .post(
            "/campaigns",
            json!({"name": "hooked", "trunk": "PJSIP/{number}@trunk", "caller_id": "1"}),
        )
        .await;
    let id = campaign["id"].as_str().unwrap();
    server.post(&format!("/campaigns/{id}/start"), json!({})).await;

    wait_until("the flaky receiver gets the event", Duration::from_secs(15), || {
        let flaky = flaky.clone();
        async move { flaky.posts.lock().unwrap().len() >= 3 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = flaky.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 3, "two failures, one success, then no more");
    let contracts = Contracts::load();
    for (headers, body, _) in &posts {
        let h = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        let timestamp: i64 = h("x-obzvon-timestamp").parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 30);
        assert_eq!(
            h("x-obzvon-signature"),
            obzvon::events::webhooks::signature(secret, timestamp, body),
            "the signature checks out with the subscription's secret"
        );
        assert_ne!(
            h("x-obzvon-signature"),
            obzvon::events::webhooks::signature("another-secret-0000", timestamp, body)
        );
        let event: Value = serde_json::from_slice(body).unwrap();
        contracts.check_event(&event);
        assert_eq!(h("x-obzvon-event-id"), event["eventId"].as_str().unwrap());
        assert_eq!(h("x-obzvon-event-type"), "CampaignStateChanged");
        assert_eq!(
            (event["campaignId"].as_str(), event["state"].as_str()),
            (Some(id), Some("running"))
        );
    }
    assert!(
        posts[2].2 - posts[1].2 > posts[1].2 - posts[0].2,
        "the second retry waited longer than the first"
    );
    let deliveries = server.get(&format!("/webhooks/{hook_id}/deliveries")).await;
    assert_eq!(deliveries.as_array().unwrap().len(), 1);
    assert_eq!(
        (deliveries[0]["status"].as_str(), deliveries[0]["tries"].as_i64()),
        (Some("delivered"), Some(3))
    );

    // The dead receiver: tried max_tries times, then failed, with the error kept.
    wait_until("the dead receiver is given up", Duration::from_secs(15), || {
        let server = &server;
        let dead_id = dead_id.clone();
        async move {
            let failed = server
                .get(&format!("/webhooks/{dead_id}/deliveries?status=failed"))
                .await;
            !failed.as_array().unwrap().is_empty()
        }
    })
    .await;
    let failed = server
        .get(&format!("/webhooks/{dead_id}/deliveries?status=failed"))
        .await;
    assert_eq!(failed[0]["tries"], 3);
    assert!(!failed[0]["last_error"].as_str().unwrap().is_empty(), "{failed}");
    let listed = server.get("/webhooks").await;
    let dead_view = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == dead_id.as_str())
        .unwrap();
    assert_eq!(dead_view["failed"], 1, "{listed}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tries: i32 = sqlx::query_scalar("SELECT max(tries) FROM webhook_deliveries WHERE webhook_id = $1::uuid")
        .bind(&dead_id)
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(tries, 3, "nothing is tried after giving up");

    // Deleting a subscription is audited and stops its deliveries.
    let (status, _) = server
        .call(reqwest::Method::DELETE, &format!("/webhooks/{hook_id}"), None)
        .await;
    assert_eq!(status, 204);
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE entity_type = 'webhook' ORDER BY id")
            .fetch_all(&server.pool)
            .await
            .unwrap();
    assert_eq!(audited, ["webhook.create", "webhook.create", "webhook.delete"]);
    server.post(&format!("/campaigns/{id}/pause"), json!({})).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        flaky.posts.lock().unwrap().len(),
        3,
        "a deleted subscription gets nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn inward_targets_are_refused_and_credentials_never_shown() {
    let db = TestDb::create().await;
    obzvon::db::migrate(&db.pool().await).await.unwrap();
    let server = Server::start_custom(db, "obzvon-test-webhooks2", |s| {
        s.webhooks.max_tries = 1;
        s.webhooks.timeout_secs = 2;
    })
    .await;
    // Loopback (the database, the broker, ARI), private, link-local (cloud metadata), CGNAT,
    // unspecified, IPv6 loopback and IPv4-mapped forms, and a name that resolves inward.
    for url in [
        "http://127.0.0.1:5432/",
        "http://10.0.0.7/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.1.1/",
        "http://0.0.0.0:8088/ari",
        "http://[::1]:15672/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:5672/",
    ] {
        let (status, answer) = server
            .call(reqwest::Method::POST, "/webhooks", Some(json!({ "url": url })))
            .await;
        assert_eq!(status, 422, "{url}: {answer}");
        assert_eq!(answer["fields"][0]["field"], "url");
        assert!(
            answer["message"].as_str().unwrap().contains("allow_private_targets"),
            "{answer}"
        );
    }
    assert!(server.get("/webhooks").await.as_array().unwrap().is_empty());

    // A subscription made while private targets were allowed (or a name that now points
    // inward) is refused at delivery time too: the receiver gets nothing.
    let (receiver, url) = start_receiver(0).await;
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/hook")
        .to_owned();
    for target in [url.clone(), format!("http://localhost:{port}/hook")] {
        sqlx::query("INSERT INTO webhooks (id, url, secret) VALUES ($1, $2, 'a-secret-of-the-crm-0123')")
            .bind(uuid::Uuid::new_v4())
            .bind(&target)
            .execute(&server.pool)
            .await
            .unwrap();
    }
    let campaign = server
        .post(
            "/campaigns",
            json!({"name": "inward", "trunk": "PJSIP/{number}@trunk", "caller_id": "1"}),
        )
        .await;
    let id = campaign["id"].as_str().unwrap();
    server.post(&format!("/campaigns/{id}/start"), json!({})).await;
    wait_until("both deliveries are given up", Duration::from_secs(15), || {
        let pool = server.pool.clone();
        async move {
            let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'")
                .fetch_one(&pool)
                .await
                .unwrap();
            failed == 2
        }
    })
    .await;
    let errors: Vec<String> = sqlx::query_scalar("SELECT last_error FROM webhook_deliveries ORDER BY id")
        .fetch_all(&server.pool)
        .await
        .unwrap();
    assert!(errors[0].contains("not a public address"), "{errors:?}");
    assert!(errors[1].contains("no public address"), "{errors:?}");
    assert!(receiver.posts.lock().unwrap().is_empty());
    server.stop().await;

    // With private targets allowed, credentials in a URL are kept apart: sent as basic auth,
    // never in GET /webhooks, the audit log or a delivery error.
    let db = TestDb::create().await;
    obzvon::db::migrate(&db.pool().await).await.unwrap();
    let server = Server::start_custom(db, "obzvon-test-webhooks3", |s| {
        s.webhooks.allow_private_targets = true;
        s.webhooks.max_tries = 1;
    })
    .await;
    let (receiver, url) = start_receiver(0).await;
    let with_credentials = url.replace("http://", "http://crm:pa%3Ass@");
    let hook = server.post("/webhooks", json!({ "url": with_credentials })).await;
    assert_eq!(hook["url"], url.as_str(), "{hook}");
    assert_eq!(hook["basic_auth"], true);
    let dead = server
        .post(
            "/webhooks",
            json!({ "url": "http://crm:pa%3Ass@127.0.0.1:1/hook?token=t0ken" }),
        )
        .await;
    let campaign = server
        .post(
            "/campaigns",
            json!({"name": "credentials", "trunk": "PJSIP/{number}@trunk", "caller_id": "1"}),
        )
        .await;
    let id = campaign["id"].as_str().unwrap();
    server.post(&format!("/campaigns/{id}/start"), json!({})).await;
    wait_until("the receiver gets the event", Duration::from_secs(15), || {
        let receiver = receiver.clone();
        async move { !receiver.posts.lock().unwrap().is_empty() }
    })
    .await;
    let (headers, _, _) = receiver.posts.lock().unwrap()[0].clone();
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("crm:pa:ss")
    );
    assert_eq!(headers["authorization"].to_str().unwrap(), expected);
    let dead_id = dead["id"].as_str().unwrap().to_owned();
    wait_until("the dead receiver is given up", Duration::from_secs(15), || {
        let server = &server;
        let dead_id = dead_id.clone();
        async move {
            let failed = server
                .get(&format!("/webhooks/{dead_id}/deliveries?status=failed"))
                .await;
            !failed.as_array().unwrap().is_empty()
        }
    })
    .await;
    let failed = server.get(&format!("/webhooks/{dead_id}/deliveries")).await;
    let shown = format!("{} {failed} {}", server.get("/webhooks").await, hook);
    let audit: Vec<Value> = sqlx::query_scalar("SELECT to_jsonb(audit_log) FROM audit_log")
        .fetch_all(&server.pool)
        .await
        .unwrap();
    for text in [shown, format!("{audit:?}")] {
        assert!(!text.contains("pa%3Ass") && !text.contains("pa:ss"), "{text}");
    }
    // A delivery error names no URL at all (its query may hold a token).
    assert!(!failed.to_string().contains("t0ken"), "{failed}");
    server.stop().await;
}
