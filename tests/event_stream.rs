//! `GET /api/v1/events/stream` against a running server and real PostgreSQL: events arrive as
//! they are written, in order, with their outbox number as the SSE id; a client that comes back
//! with `Last-Event-ID` gets exactly what it missed; a token sees only what its scopes read.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    id: i64,
    event: String,
    data: Value,
}

struct Subscriber {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

async fn subscribe(server: &Server, token: &str, query: &str, last: Option<&str>) -> (u16, Option<Subscriber>, Value) {
    let mut request = reqwest::Client::new()
        .get(format!("{}/events/stream{query}", server.base))
        .bearer_auth(token);
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None, response.json().await.unwrap_or(Value::Null));
    }
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let sub = Subscriber {
        body: Box::pin(response.bytes_stream()),
        buffer: String::new(),
    };
    (status, Some(sub), Value::Null)
}

impl Subscriber {
    /// The next event within `limit`, or None (keep-alive comments are skipped).
    async fn next(&mut self, limit: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(cut) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..cut + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    return Some(Sse {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap(),
                    });
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await.ok()??;
            self.buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }
}

async fn token(server: &Server, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    obzvon::auth::create(&server.pool, "stream", &scopes, "test")
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn events_stream_live_resume_after_the_last_id_and_follow_the_scopes() {
    let server = Server::start("obzvon-test-stream").await;
    // Something before the stream opens is not sent to it: it starts at the newest event.
    let before = server
        .post(
            "/campaigns",
            json!({"name": "Before", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000"}),
        )
        .await;
    server
        .post(
            &format!("/campaigns/{}/start", before["id"].as_str().unwrap()),
            json!({}),
        )
        .await;

    let (status, sub, _) = subscribe(&server, &server.token, "", None).await;
    assert_eq!(status, 200);
    let mut sub = sub.unwrap();
    let campaign = server
        .post(
            "/campaigns",
            json!({"name": "Streamed", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000"}),
        )
        .await;
    let id = campaign["id"].as_str().unwrap().to_owned();
    server.post(&format!("/campaigns/{id}/start"), json!({})).await;
    server.post(&format!("/campaigns/{id}/pause"), json!({})).await;

    let started = sub.next(Duration::from_secs(5)).await.expect("the start, live");
    assert_eq!(started.event, "CampaignStateChanged");
    assert_eq!(started.data["campaignId"], id.as_str(), "{:?}", started.data);
    assert_eq!(started.data["state"], "running");
    assert!(started.data["eventId"].is_string());
    let paused = sub.next(Duration::from_secs(5)).await.expect("the pause, live");
    assert_eq!(paused.data["state"], "paused");
    assert!(paused.id > started.id, "ids grow: {} then {}", started.id, paused.id);
    drop(sub);

    // Back with Last-Event-ID = the start: the pause comes again, and nothing before it.
    let (_, sub, _) = subscribe(&server, &server.token, "", Some(&started.id.to_string())).await;
    let mut sub = sub.unwrap();
    let again = sub.next(Duration::from_secs(5)).await.expect("the missed event");
    assert_eq!((again.id, again.data["state"].clone()), (paused.id, json!("paused")));
    assert!(sub.next(Duration::from_millis(1200)).await.is_none(), "nothing more");

    // From the beginning: a reporting token reads campaign events; an operators-only token
    // reads none of them; a type filter keeps only what it names.
    let reports = token(&server, &["reports:read"]).await;
    let (_, sub, _) = subscribe(&server, &reports, "?after=0", None).await;
    let mut sub = sub.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = sub.next(Duration::from_millis(1500)).await {
        seen.push((e.event, e.data["state"].as_str().unwrap_or_default().to_owned()));
    }
    assert_eq!(
        seen.len(),
        3,
        "before's start, and this campaign's start and pause: {seen:?}"
    );
    let operators = token(&server, &["operators:write"]).await;
    let (_, sub, _) = subscribe(&server, &operators, "?after=0", None).await;
    assert!(
        sub.unwrap().next(Duration::from_millis(1500)).await.is_none(),
        "campaign events need a campaign or report scope"
    );
    let (_, sub, _) = subscribe(&server, &server.token, "?after=0&types=OperatorStateChanged", None).await;
    assert!(sub.unwrap().next(Duration::from_millis(1500)).await.is_none());

    // Bad positions and types are refused in words.
    let (status, _, body) = subscribe(&server, &server.token, "", Some("yesterday")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("Last-Event-ID"), "{body}");
    let (status, _, body) = subscribe(&server, &server.token, "?types=CallHappened", None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "types", "{body}");
    let (status, _, _) = subscribe(&server, "obz_nope", "", None).await;
    assert_eq!(status, 401);

    // A stream does not keep the server from stopping.
    let (_, open, _) = subscribe(&server, &server.token, "", None).await;
    let stopped = tokio::time::timeout(Duration::from_secs(20), server.stop()).await;
    assert!(stopped.is_ok(), "serve stopped with a stream open");
    drop(open);
}
