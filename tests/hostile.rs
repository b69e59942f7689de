//! The REST API under input a CRM or an attacker will eventually send: stalled and oversized
//! uploads, control characters and huge strings in every text field, broken CSV quoting, and
//! the refusals axum itself makes. Each answer is a JSON 4xx naming what is wrong, nothing is
//! changed, and the rest of the API keeps answering. Against `obzvon serve`, the real test bed
//! and PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn campaign(name: &str) -> Value {
    json!({"name": name, "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000"})
}

/// Starts a CSV upload by hand that promises `promised` bytes, sends the header line and then
/// nothing: a client on a dead link, or one starving the service on purpose.
async fn stalled_upload(server: &Server, campaign: &str, promised: usize) -> TcpStream {
    let addr = server
        .base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut socket = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/campaigns/{campaign}/leads HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/csv\r\nContent-Length: {promised}\r\n\r\nphone,name\n",
        server.token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

/// The status and JSON body the server sends on a hand-written request's socket.
async fn answer(socket: &mut TcpStream, limit: Duration) -> (u16, Value) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: Option<usize> = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            });
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (
                    status,
                    serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
                );
            }
        }
        assert!(n > 0, "the server closed without an answer: {text}");
    }
}

#[tokio::test]
async fn stalled_uploads_hold_no_database_connection_and_are_cut_off() {
    let db = TestDb::create().await;
    obzvon::db::migrate(&db.pool().await).await.unwrap();
    let server = Server::start_custom(db, "obzvon-test-hostile1", |s| {
        s.database.max_connections = 3;
        s.http.body_idle_secs = 2;
        s.http.max_concurrent_imports = 4;
    })
    .await;
    let c = server.post("/campaigns", campaign("stalled")).await;
    let id = c["id"].as_str().unwrap().to_owned();

    // Twice as many stalled uploads as the pool has connections: four take the import slots,
    // the rest are refused at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(stalled_upload(&server, &id, 10_000_000).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        let mut extra = stalled_upload(&server, &id, 1_000).await;
        let (status, body) = answer(&mut extra, Duration::from_secs(5)).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "{body}");
    }
    // Meanwhile everything else answers, promptly.
    for _ in 0..10 {
        let started = Instant::now();
        let (status, body) = server.call(Method::GET, "/campaigns", None).await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = server.call(Method::GET, &format!("/campaigns/{id}"), None).await;
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
    // After the idle time each stalled upload is told why, in JSON, and nothing was imported.
    for socket in &mut held {
        let (status, body) = answer(socket, Duration::from_secs(10)).await;
        assert_eq!((status, body["error"].as_str()), (408, Some("timeout")), "{body}");
        assert!(body["message"].as_str().unwrap().contains("stalled"), "{body}");
    }
    assert_eq!(count(&server, "leads").await, 0);
    // The slots are free again.
    let (status, report) = server
        .post_csv(&format!("/campaigns/{id}/leads"), "phone\n+79161234567\n".into())
        .await;
    assert_eq!((status, report["imported"].as_i64()), (200, Some(1)), "{report}");
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_and_axum_refusals_are_json() {
    let db = TestDb::create().await;
    obzvon::db::migrate(&db.pool().await).await.unwrap();
    let server = Server::start_custom(db, "obzvon-test-hostile2", |s| {
        s.http.max_body_bytes = 64 * 1024;
        s.http.max_import_bytes = 256 * 1024;
    })
    .await;
    let c = server.post("/campaigns", campaign("sizes")).await;
    let id = c["id"].as_str().unwrap().to_owned();

    let big = json!({"name": "x".repeat(100_000), "trunk": "PJSIP/{number}@trunk", "caller_id": "1"});
    let (status, body) = server.call(Method::POST, "/campaigns", Some(big)).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("64 KiB"), "{body}");
    let mut csv = String::from("phone\n");
    while csv.len() < 300 * 1024 {
        csv.push_str("+79161234567\n");
    }
    let (status, body) = server.post_csv(&format!("/campaigns/{id}/leads"), csv).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")), "{body}");
    assert_eq!(count(&server, "campaigns").await, 1);
    assert_eq!(count(&server, "leads").await, 0);

    // What axum refuses before a handler runs is JSON too.
    let (status, body) = server.call(Method::GET, "/no-such-thing", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = server
        .call(Method::GET, &format!("/campaigns/{id}/leads?limit=ten"), None)
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    assert!(!body["message"].as_str().unwrap().contains("i64"), "{body}");
    let (status, body) = server.call(Method::PUT, "/campaigns", Some(json!({}))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed")),
        "{body}"
    );
    // HEAD runs the GET handler, so it needs GET's token.
    let head = reqwest::Client::new()
        .head(format!("{}/campaigns", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn control_characters_and_huge_strings_in_any_text_field_get_422() {
    let server = Server::start("obzvon-test-hostile3").await;
    let huge = "x".repeat(300_000);
    let cases: Vec<(Method, &str, Value, &str)> = vec![
        (
            Method::POST,
            "/operators",
            json!({"name": "A\u{0}", "endpoint": "PJSIP/op1"}),
            "name",
        ),
        (
            Method::POST,
            "/operators",
            json!({"name": "A", "endpoint": format!("PJSIP/{huge}")}),
            "endpoint",
        ),
        (
            Method::POST,
            "/operators",
            json!({"name": "A", "endpoint": "PJSIP/op1", "skills": ["ru\u{1b}"]}),
            "skills[0]",
        ),
        (
            Method::POST,
            "/dnc",
            json!({"phone": "+79161234567", "reason": "r\u{0}"}),
            "reason",
        ),
        (Method::POST, "/dnc", json!({"phone": "+7916\u{0}1234567"}), "phone"),
        (
            Method::POST,
            "/webhooks",
            json!({"url": "https://example.org/hook", "description": "d\u{0}"}),
            "description",
        ),
        (
            Method::POST,
            "/calls",
            json!({"operator_id": uuid::Uuid::new_v4(), "phone": "+79161234567", "crm": {"note": "a\u{0}"}}),
            "crm",
        ),
        (
            Method::POST,
            "/calls",
            json!({"operator_id": uuid::Uuid::new_v4(), "phone": "+79161234567", "correlation_id": huge.clone()}),
            "correlation_id",
        ),
        (
            Method::POST,
            "/calls",
            json!({"operator_id": "nope", "phone": "+79161234567"}),
            "operator_id",
        ),
    ];
    for (method, path, body, field) in cases {
        let (status, answer) = server.call(method.clone(), path, Some(body)).await;
        assert_eq!(
            (status, fields(&answer)),
            (422, vec![field.to_owned()]),
            "{method} {path}: {answer}"
        );
        let message = answer["message"].as_str().unwrap();
        for rust in ["struct", "Uuid", "u32", "String"] {
            assert!(!message.contains(rust), "{message}");
        }
    }
    for table in ["operators", "dnc", "webhooks", "attempts"] {
        assert_eq!(count(&server, table).await, 0, "{table}");
    }

    // Lead rows: each bad text is its own rejected row, the good rows go in.
    let c = server.post("/campaigns", campaign("texts")).await;
    let id = c["id"].as_str().unwrap().to_owned();
    let rows = json!([
        {"phone": "+79161234501", "name": "Anna"},
        {"phone": "+79161234502", "name": "B\u{0}"},
        {"phone": "+79161234503", "fields": {"note": "n\u{0}"}},
        {"phone": "+79161234504", "external_id": huge.clone()},
        {"phone": 79161234505u64},
        "not a lead",
        {"phone": "+79161234506", "fields": {"deal": {"sum": 5, "notes": "two\nlines"}}},
        // An unknown key with a NUL: quoted in the reason, which the audit row (jsonb) stores.
        {"phone": "+79161234507", "x\u{0}y": 1},
    ]);
    let (status, report) = server
        .call(Method::POST, &format!("/campaigns/{id}/leads"), Some(rows))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["imported"], 2, "{report}");
    let rejected: Vec<(i64, String)> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row"].as_i64().unwrap(), r["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        rejected.iter().map(|r| r.0).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6, 8],
        "{report}"
    );
    assert!(rejected[5].1.contains("x\\u{0}y"), "{rejected:?}");
    assert!(
        rejected.iter().all(|(_, r)| !r.chars().any(char::is_control)),
        "{rejected:?}"
    );
    assert!(
        rejected[0].1.starts_with("name: contains a control character"),
        "{rejected:?}"
    );
    assert!(rejected[1].1.starts_with("fields: note: "), "{rejected:?}");
    assert!(rejected[2].1.starts_with("external_id: too long"), "{rejected:?}");
    for (_, reason) in &rejected {
        assert!(!reason.contains("struct") && !reason.contains("LeadInput"), "{reason}");
    }
    server.stop().await;
}

#[tokio::test]
async fn broken_csv_quoting_rejects_the_row_with_its_line_and_keeps_the_rest() {
    let server = Server::start("obzvon-test-hostile4").await;
    let c = server.post("/campaigns", campaign("quotes")).await;
    let id = c["id"].as_str().unwrap().to_owned();
    let csv = "phone;name;address\r\n\
               +79161234501;Anna;\"1 Main St\r\nFlat 2\"\r\n\
               +79161234502;\"Boris\r\n\
               +79161234503;Vera;\r\n\
               +79161234504;\"Gleb\r\n\
               +79161234505;Dina;\r\n";
    let (status, report) = server.post_csv(&format!("/campaigns/{id}/leads"), csv.into()).await;
    assert_eq!(status, 200, "{report}");
    let rejected: Vec<(i64, i64)> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row"].as_i64().unwrap(), r["line"].as_i64().unwrap()))
        .collect();
    // Boris's quote closes at Gleb's: that row is refused by its first line and reading goes on
    // with Vera; Gleb's quote is never closed at all: refused, and Dina still goes in.
    assert_eq!(rejected, [(2, 4), (4, 6)], "{report}");
    assert_eq!(report["imported"], 3, "{report}");
    let leads = server.get(&format!("/campaigns/{id}/leads")).await;
    let mut names: Vec<&str> = leads
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Anna", "Dina", "Vera"]);
    let anna = leads.as_array().unwrap().iter().find(|l| l["name"] == "Anna").unwrap();
    assert_eq!(
        anna["fields"]["address"], "1 Main St\r\nFlat 2",
        "a quoted line break in a free column is kept"
    );
    server.stop().await;
}
