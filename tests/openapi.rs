//! The OpenAPI document as a contract: `obzvon openapi` prints it without a server, and it is
//! what the server serves; every operation names its bodies by type and lists the statuses it
//! can answer; Schemathesis fuzzes the live server against it (every check, every phase) and
//! finds nothing; a client generated from it by openapi-python-client drives a campaign.
//!
//! The Python tools live in a venv under target/py (`scripts/pytools.sh`). Schemathesis draws
//! `OBZVON_SCHEMATHESIS_EXAMPLES` cases per operation and phase (default 30).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

fn printed_document() -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_obzvon"))
        .arg("openapi")
        // No configuration at all: a CRM's build has none.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run obzvon openapi");
    serde_json::from_slice(&stdout_of("obzvon openapi", out)).expect("obzvon openapi prints JSON")
}

fn python_tools() -> PathBuf {
    let out = Command::new(repo_path("scripts/pytools.sh"))
        .output()
        .expect("run scripts/pytools.sh");
    PathBuf::from(String::from_utf8(stdout_of("scripts/pytools.sh", out)).unwrap().trim())
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.to_uppercase(), path.clone(), op));
        }
    }
    ops
}

#[tokio::test]
async fn the_printed_document_is_the_served_one_and_names_every_body_and_status() {
    let printed = printed_document();
    let server = Server::start("obzvon-test-openapi").await;
    let served: Value = reqwest::get(format!("{}/openapi.json", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(printed, served, "obzvon openapi prints what the server serves");
    assert_eq!(printed["openapi"], "3.1.0");

    let schemas = printed["components"]["schemas"].as_object().unwrap();
    let resolves = |schema: &Value| -> bool {
        let text = schema.to_string();
        text.match_indices("#/components/schemas/").all(|(at, _)| {
            let rest = &text[at + "#/components/schemas/".len()..];
            let name: String = rest.chars().take_while(|c| *c != '"').collect();
            schemas.contains_key(&name)
        })
    };
    let ops = operations(&printed);
    assert!(ops.len() >= 35, "{} operations", ops.len());
    for (method, path, op) in &ops {
        let label = format!("{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        for status in ["401", "403", "503"] {
            assert!(responses.contains_key(status), "{label} does not list {status}");
        }
        if path.contains('{') {
            assert!(responses.contains_key("404"), "{label} does not list 404");
        }
        if let Some(body) = op.get("requestBody") {
            for status in ["400", "408", "413", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{label} has a body but does not list {status}"
                );
            }
            let json = &body["content"]["application/json"]["schema"];
            assert!(
                json["$ref"].is_string(),
                "{label}: the JSON body is a named type: {json}"
            );
            assert!(resolves(json), "{label}: {json}");
        }
        for (status, answer) in responses {
            let schema = &answer["content"]["application/json"]["schema"];
            if schema.is_null() {
                // CSV reports, the recording's audio and the event stream are not JSON.
                let media = ["text/csv", "audio/wav", "text/event-stream"];
                assert!(
                    status == "204" || status == "202" || media.iter().any(|m| answer["content"].get(*m).is_some()),
                    "{label} {status} has no body"
                );
                continue;
            }
            // A named type or a list of one: no bare `object` placeholder.
            let named = schema["$ref"].is_string() || schema["items"]["$ref"].is_string();
            assert!(named, "{label} {status} answers with a placeholder: {schema}");
            assert!(resolves(schema), "{label} {status}: {schema}");
        }
    }
    // Components that state rules, not only shapes.
    let spec = &schemas["CampaignSpec"];
    assert_eq!(spec["additionalProperties"], false);
    assert_eq!(spec["properties"]["max_attempts"]["maximum"], 100);
    assert_eq!(spec["properties"]["name"]["maxLength"], 200);
    assert!(schemas["TimeZone"]["enum"]
        .as_array()
        .unwrap()
        .contains(&Value::from("Europe/Moscow")));
    let campaign = &schemas["Campaign"];
    assert!(campaign["properties"]["id"].is_object() && campaign["properties"]["trunk"].is_object());
    assert!(
        campaign.get("additionalProperties").is_none(),
        "a response carries the spec and its own fields"
    );
    server.stop().await;
}

#[tokio::test]
async fn schemathesis_finds_no_failure_against_the_live_server() {
    let bin = python_tools();
    let db = TestDb::create().await;
    obzvon::db::migrate(&db.pool().await).await.unwrap();
    // Webhook targets in generated cases are loopback addresses (nothing here resolves names).
    let server = Server::start_custom(db, "obzvon-test-schemathesis", |s| {
        s.webhooks.allow_private_targets = true;
    })
    .await;
    let examples = std::env::var("OBZVON_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "30".into());
    // A failure (the API broke a check) fails at once; an error inside Schemathesis itself (a
    // Python traceback from its own generator, seen once in about ten runs) gets one more run.
    let mut report = String::new();
    for run in 1..=2 {
        let started = std::time::Instant::now();
        let out = tokio::process::Command::new(bin.join("schemathesis"))
            .args(["run", &format!("{}/openapi.json", server.base)])
            .args(["-H", &format!("Authorization: Bearer {}", server.token)])
            .args(["--max-examples", &examples, "--workers", "2", "--no-color"])
            // The event stream never ends, so it has no response to check (tests/event_stream.rs).
            .args(["--exclude-operation-id", "event_stream"])
            .env("PYTHONPATH", repo_path("tests/schemathesis"))
            .env("SCHEMATHESIS_HOOKS", "obzvon_hooks")
            .current_dir(std::env::temp_dir())
            .output()
            .await
            .expect("run schemathesis");
        report = String::from_utf8_lossy(&out.stdout).into_owned();
        let summary: Vec<&str> = report
            .lines()
            .filter(|l| l.contains("generated") || l.contains("Seed:") || l.contains("Selected:"))
            .collect();
        eprintln!(
            "schemathesis run {run} in {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            summary.join(" | ")
        );
        assert!(
            !report.contains("Failures:"),
            "schemathesis reported failures:\n{report}"
        );
        let clean = report
            .lines()
            .any(|l| l.contains(" generated, ") && l.contains(" passed") && !l.contains("fail"));
        if out.status.success() && clean {
            break;
        }
        assert!(
            run < 2,
            "schemathesis did not finish cleanly twice:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("schemathesis errored inside itself; once more:\n{report}");
    }
    // All but the event stream, which is excluded above.
    let total = operations(&printed_document()).len() - 1;
    assert!(
        report.contains(&format!("Tested: {total}")),
        "all {total} operations were tested:\n{report}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_generated_python_client_creates_imports_starts_and_reads_the_report() {
    let bin = python_tools();
    let dir = repo_path(&format!("target/py/client-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let doc_path = dir.join("openapi.json");
    std::fs::write(&doc_path, serde_json::to_vec(&printed_document()).unwrap()).unwrap();
    let generated = Command::new(bin.join("openapi-python-client"))
        .args(["generate", "--meta", "none", "--overwrite", "--path"])
        .arg(&doc_path)
        .arg("--output-path")
        .arg(dir.join("obzvon_client"))
        .current_dir(&dir)
        .output()
        .expect("run openapi-python-client");
    let log = String::from_utf8_lossy(&generated.stdout).to_string() + &String::from_utf8_lossy(&generated.stderr);
    assert!(generated.status.success(), "generation failed:\n{log}");
    // What it cannot type is what is not JSON: the CSV variant of the import, the recording's
    // audio and the event stream (a client reads those two as raw HTTP).
    for line in log.lines().filter(|l| l.starts_with("WARNING")) {
        assert!(
            [
                "POST /api/v1/campaigns/{id}/leads",
                "GET /api/v1/attempts/{id}/recording",
                "GET /api/v1/events/stream"
            ]
            .iter()
            .any(|op| line.contains(op)),
            "generator warning: {line}\n{log}"
        );
    }

    let server = Server::start("obzvon-test-pyclient").await;
    let base = server.base.trim_end_matches("/api/v1").to_owned();
    let out = tokio::process::Command::new(bin.join("python"))
        .arg(repo_path("tests/schemathesis/client_check.py"))
        .args([&base, &server.token, "Generated client", "PJSIP/{number}@trunk"])
        .env("PYTHONPATH", &dir)
        .output()
        .await
        .expect("run the generated client");
    let seen: Value = serde_json::from_slice(&stdout_of("the generated client", out)).expect("one JSON line");
    assert_eq!(seen["state"], "running");
    assert_eq!(seen["live_state"], "running");
    // What the client did is in the database.
    let id: uuid::Uuid = seen["campaign_id"].as_str().unwrap().parse().unwrap();
    let (state, leads): (String, i64) = sqlx::query_as(
        "SELECT c.state, (SELECT count(*) FROM leads l WHERE l.campaign_id = c.id) FROM campaigns c WHERE c.id = $1",
    )
    .bind(id)
    .fetch_one(&server.pool)
    .await
    .unwrap();
    assert_eq!((state.as_str(), leads), ("running", 2));
    let _ = std::fs::remove_dir_all(&dir);
    server.stop().await;
}
