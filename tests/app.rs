//! The `obzvon serve` process built as in production (port 0): health endpoints, refusal to run
//! on an old schema, and a clean stop on cancellation.

mod common;

use std::time::Duration;

use common::*;
use obzvon::app::{App, StartError};
use obzvon::config::Settings;

/// The environment's settings, pointed at `db`, a free port and an app name of its own.
fn settings_for(db: &TestDb, app: &str) -> Settings {
    let mut s = settings();
    s.database.url = db.url.clone().into();
    s.http.listen = "127.0.0.1:0".parse().unwrap();
    s.ari.app = app.to_owned();
    s
}

#[tokio::test]
async fn serve_refuses_a_database_with_pending_migrations() {
    let db = TestDb::create().await;
    let err = App::build(settings_for(&db, "obzvon-test-pending"))
        .await
        .err()
        .expect("must refuse");
    assert!(matches!(err, StartError::PendingMigrations(_)), "{err}");
    assert!(err.to_string().contains("obzvon migrate"), "{err}");
}

#[tokio::test]
async fn serve_reports_ready_when_database_and_ari_are_up_and_stops_cleanly() {
    ari_client("probe").await; // fails clearly when the test bed is down
    let db = TestDb::create().await;
    obzvon::db::migrate(&db.pool().await).await.unwrap();
    let app = App::build(settings_for(&db, "obzvon-test-serve")).await.unwrap();
    let addr = app.local_addr();
    let cancel = app.cancel_token();
    let running = tokio::spawn(app.run_until_stopped());

    let http = reqwest::Client::new();
    let health = http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let mut ready = None;
    for _ in 0..50 {
        let r = http.get(format!("http://{addr}/readyz")).send().await.unwrap();
        if r.status() == 200 {
            ready = Some(r.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = ready.expect("/readyz never became ready");
    assert_eq!(ready["database"], true);
    assert_eq!(ready["ari"], true);

    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops within 10 s");
    result.unwrap().expect("clean stop");
    assert!(
        http.get(format!("http://{addr}/healthz")).send().await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn health_and_metrics_can_have_a_listener_of_their_own() {
    ari_client("probe").await;
    let db = TestDb::create().await;
    obzvon::db::migrate(&db.pool().await).await.unwrap();
    let mut s = settings_for(&db, "obzvon-test-ops");
    s.http.ops_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = App::build(s).await.unwrap();
    let (api, ops) = (app.local_addr(), app.ops_addr().expect("ops listener bound"));
    assert_ne!(api.port(), ops.port());
    let cancel = app.cancel_token();
    let running = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    for path in ["/healthz", "/metrics"] {
        let r = http.get(format!("http://{ops}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on the ops listener");
        let r = http.get(format!("http://{api}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} is not on the API listener");
    }
    let r = http.get(format!("http://{api}/api/v1/campaigns")).send().await.unwrap();
    assert_eq!(r.status(), 401, "the API is on its listener, with tokens");
    let r = http.get(format!("http://{ops}/api/v1/campaigns")).send().await.unwrap();
    assert_eq!(r.status(), 404, "and only there");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}
