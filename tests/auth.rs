//! API tokens and scopes against a running `obzvon serve`: every operation of the generated
//! OpenAPI document tried with no token (401), a token without its scope (403) and a token with
//! exactly one right scope (neither); the scope table itself; revocation; the audit trail;
//! and the `obzvon token` command.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const ALL: [&str; 4] = ["calls:write", "campaigns:write", "operators:write", "reports:read"];

/// The intended scopes of every operation: changing who may call what must change this table.
fn expected() -> BTreeMap<(String, String), Vec<&'static str>> {
    let c = "calls:write";
    let w = "campaigns:write";
    let o = "operators:write";
    let r = "reports:read";
    let rows: Vec<(&str, &str, Vec<&str>)> = vec![
        ("get", "/api/v1/campaigns", vec![w, r]),
        ("post", "/api/v1/campaigns", vec![w]),
        ("get", "/api/v1/campaigns/{id}", vec![w, r]),
        ("patch", "/api/v1/campaigns/{id}", vec![w]),
        ("get", "/api/v1/campaigns/{id}/leads", vec![w, r]),
        ("post", "/api/v1/campaigns/{id}/leads", vec![w]),
        ("get", "/api/v1/campaigns/{id}/attempts", vec![c, w, r]),
        ("post", "/api/v1/campaigns/{id}/{action}", vec![w]),
        ("get", "/api/v1/leads/{id}", vec![w, r, c]),
        ("delete", "/api/v1/leads/{id}", vec![w]),
        ("get", "/api/v1/dnc", vec![w, r]),
        ("post", "/api/v1/dnc", vec![w]),
        ("delete", "/api/v1/dnc/{id}", vec![w]),
        ("get", "/api/v1/operators", vec![o, r]),
        ("post", "/api/v1/operators", vec![o]),
        ("get", "/api/v1/operators/{id}", vec![o, r]),
        ("patch", "/api/v1/operators/{id}", vec![o]),
        ("delete", "/api/v1/operators/{id}", vec![o]),
        ("post", "/api/v1/operators/{id}/session", vec![o]),
        ("delete", "/api/v1/operators/{id}/session", vec![o]),
        ("get", "/api/v1/operators/{id}/queue", vec![o, c, r]),
        ("post", "/api/v1/operators/{id}/queue/dial", vec![c, o]),
        ("post", "/api/v1/operators/{id}/queue/skip", vec![c, o]),
        ("post", "/api/v1/operators/{id}/pause", vec![o]),
        ("post", "/api/v1/operators/{id}/ready", vec![o]),
        ("post", "/api/v1/calls", vec![c]),
        ("get", "/api/v1/attempts/{id}", vec![c, w, r]),
        ("get", "/api/v1/attempts/{id}/recording", vec![c, w, r]),
        ("get", "/api/v1/events/stream", vec![c, w, o, r]),
        ("get", "/api/v1/me", vec![c, w, o, r]),
        ("post", "/api/v1/attempts/{id}/cancel", vec![c]),
        ("post", "/api/v1/attempts/{id}/disposition", vec![c]),
        ("get", "/api/v1/reports/compliance", vec![r]),
        ("get", "/api/v1/reports/{dimension}", vec![r]),
        ("get", "/api/v1/campaigns/{id}/live", vec![w, r]),
        ("get", "/api/v1/webhooks", vec![]),
        ("post", "/api/v1/webhooks", vec![]),
        ("delete", "/api/v1/webhooks/{id}", vec![]),
        ("get", "/api/v1/webhooks/{id}/deliveries", vec![]),
    ];
    rows.into_iter()
        .map(|(m, p, mut s)| {
            if s.is_empty() {
                s.push("admin");
            }
            s.sort();
            ((m.to_owned(), p.to_owned()), s)
        })
        .collect()
}

/// The scopes of every operation in the served document.
fn documented(doc: &Value) -> BTreeMap<(String, String), Vec<String>> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let mut scopes: Vec<String> = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has no security entry"))
                .iter()
                .flat_map(|req| req["token"].as_array().unwrap().iter())
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            scopes.sort();
            out.insert((method.clone(), path.clone()), scopes);
        }
    }
    out
}

async fn token(server: &Server, name: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    obzvon::auth::create(&server.pool, name, &scopes, "test")
        .await
        .unwrap()
        .0
}

async fn send(server: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let url = server.base.replace("/api/v1", "") + path;
    let mut request = reqwest::Client::new().request(method.to_uppercase().parse().unwrap(), url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if method != "get" && method != "delete" {
        request = request.json(&json!({}));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if response
        .headers()
        .get("content-type")
        .is_some_and(|t| t == "text/event-stream")
    {
        // The event stream never ends by itself: its status is the answer.
        return (status, Value::Null);
    }
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn every_operation_is_documented_and_refuses_missing_or_wrong_scopes() {
    let server = Server::start("obzvon-test-auth1").await;
    // The document is open: a CRM developer reads it before having a token.
    let doc: Value = reqwest::get(format!("{}/openapi.json", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["components"]["securitySchemes"]["token"]["scheme"], "bearer");
    let documented = documented(&doc);
    let expected: BTreeMap<_, Vec<String>> = expected()
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(str::to_owned).collect()))
        .collect();
    assert_eq!(documented, expected, "the OpenAPI operations and their scopes");

    let mut tokens = BTreeMap::new();
    for scope in ALL.iter().chain(["admin"].iter()) {
        tokens.insert(*scope, token(&server, scope, &[scope]).await);
    }
    for ((method, template), scopes) in &documented {
        let path = template
            .replace("{action}", "start")
            .replace("{dimension}", "campaigns")
            .replace("/dnc/{id}", "/dnc/1")
            .replace("{id}", "00000000-0000-4000-8000-000000000000");
        let what = format!("{method} {template}");

        let (status, body) = send(&server, method, &path, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{what}: {body}"
        );
        assert!(body["message"].as_str().unwrap().contains("Bearer"), "{what}: {body}");
        let (status, body) = send(&server, method, &path, Some("obz_not-a-real-token")).await;
        assert_eq!(status, 401, "{what} with an unknown token: {body}");

        // A token with every scope but the accepted ones (and not admin). An operation every
        // scope may call (the token's own name, the event stream) has no wrong token.
        let wrong: Vec<&str> = ALL.iter().copied().filter(|s| !scopes.iter().any(|x| x == s)).collect();
        if !wrong.is_empty() {
            let wrong_token = token(&server, "wrong", &wrong).await;
            let (status, body) = send(&server, method, &path, Some(&wrong_token)).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (403, Some("forbidden")),
                "{what}: {body}"
            );
            assert!(body["message"].as_str().unwrap().contains(&scopes[0]), "{what}: {body}");
        }

        for scope in scopes {
            let (status, body) = send(&server, method, &path, Some(&tokens[scope.as_str()])).await;
            assert!(
                ![401, 403].contains(&status),
                "{what} with scope {scope}: {status} {body}"
            );
        }
        let (status, body) = send(&server, method, &path, Some(&tokens["admin"])).await;
        assert!(![401, 403].contains(&status), "{what} as admin: {status} {body}");
    }
    // Health and metrics stay open.
    let root = server.base.replace("/api/v1", "");
    for open in ["/healthz", "/metrics"] {
        let r = reqwest::get(format!("{root}{open}")).await.unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
    server.stop().await;
}

#[tokio::test]
async fn management_actions_are_audited_with_who_and_before_after_and_revoked_tokens_stop_working() {
    let server = Server::start("obzvon-test-auth2").await;
    let crm = token(&server, "crm-sync", &["campaigns:write"]).await;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/campaigns", server.base))
        .bearer_auth(&crm)
        .json(&json!({"name": "audited", "trunk": "PJSIP/{number}@trunk", "caller_id": "1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let r = client
        .patch(format!("{}/campaigns/{id}", server.base))
        .bearer_auth(&crm)
        .json(&json!({"caller_id": "2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows: Vec<(String, String, Option<Value>, Option<Value>)> = sqlx::query_as(
        "SELECT actor, action, before, after FROM audit_log WHERE entity_type = 'campaign' AND entity_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&server.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("token:crm-sync", "campaign.create")
    );
    assert_eq!(rows[1].1, "campaign.update");
    assert_eq!(rows[1].2.as_ref().unwrap()["caller_id"], "1", "before");
    assert_eq!(rows[1].3.as_ref().unwrap()["caller_id"], "2", "after");
    // A refused request is not a management action.
    let r = client
        .patch(format!("{}/campaigns/{id}", server.base))
        .bearer_auth(&crm)
        .json(&json!({"caller_id": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE entity_id = $1")
        .bind(id)
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);

    obzvon::auth::revoke(&server.pool, "crm-sync", "test").await.unwrap();
    let r = client
        .get(format!("{}/campaigns", server.base))
        .bearer_auth(&crm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(&server.pool)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && !crm.as_bytes().windows(h.len()).any(|w| w == h.as_slice())),
        "only SHA-256 hashes are stored"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_token_command_creates_lists_and_revokes() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    obzvon::db::migrate(&pool).await.unwrap();
    let bin = env!("CARGO_BIN_EXE_obzvon");
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .env("OBZVON_DATABASE__URL", &db.url)
            .env("USER", "supervisor")
            .env_remove("SUDO_USER")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&[
        "token",
        "create",
        "--name",
        "crm",
        "--scope",
        "calls:write,reports:read",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.trim();
    assert!(token.starts_with("obz_") && token.len() > 40, "{stdout}");
    assert!(stderr.contains("shown only now"), "{stderr}");
    let actor = obzvon::auth::authenticate(&pool, token)
        .await
        .unwrap()
        .expect("token works");
    assert_eq!(actor.scopes, ["calls:write", "reports:read"]);

    let (code, _, stderr) = run(&["token", "create", "--name", "x", "--scope", "calls:read"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown scope \"calls:read\""), "{stderr}");

    let (code, stdout, _) = run(&["token", "list"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("crm") && stdout.contains("calls:write,reports:read") && stdout.contains("active"));
    assert!(!stdout.contains(token), "list never shows the token");

    let (code, stdout, stderr) = run(&["token", "revoke", "crm"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("revoked"));
    assert!(obzvon::auth::authenticate(&pool, token).await.unwrap().is_none());
    let (code, _, stderr) = run(&["token", "revoke", "crm"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no active token"), "{stderr}");
    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM audit_log WHERE entity_type = 'api_token' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        audit,
        [
            ("cli:supervisor".to_owned(), "token.create".to_owned()),
            ("cli:supervisor".to_owned(), "token.revoke".to_owned())
        ]
    );
}
