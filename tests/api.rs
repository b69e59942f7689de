//! The REST API's answers to bad input: a clear 4xx naming what is wrong, and nothing changed.
//! Runs `obzvon serve` against the real test bed under a Stasis app name of its own.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn valid_campaign(name: &str) -> Value {
    json!({"name": name, "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000"})
}

#[tokio::test]
async fn bad_campaign_settings_get_422_naming_the_field_and_change_nothing() {
    let server = Server::start("obzvon-test-api1").await;
    let (status, body) = server
        .call(Method::POST, "/campaigns", Some(json!({"name": "x"})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(fields(&body).contains(&"trunk".to_owned()) && fields(&body).contains(&"caller_id".to_owned()));

    let mut bad = valid_campaign("y");
    bad["pacing"] = json!({"ratio": -1});
    bad["timezone"] = json!("Nowhere/Land");
    let (status, body) = server.call(Method::POST, "/campaigns", Some(bad)).await;
    assert_eq!(status, 422);
    assert!(fields(&body).contains(&"pacing.ratio".to_owned()) && fields(&body).contains(&"timezone".to_owned()));

    let mut unknown = valid_campaign("z");
    unknown["max_atempts"] = json!(3);
    let (status, body) = server.call(Method::POST, "/campaigns", Some(unknown)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("max_atempts"));

    // A NUL byte and an overlong name were a 500 (PostgreSQL refuses both): now a 422.
    let (status, body) = server
        .call(Method::POST, "/campaigns", Some(valid_campaign("nul\u{0}name")))
        .await;
    assert_eq!((status, fields(&body)), (422, vec!["name".to_owned()]), "{body}");
    let (status, body) = server
        .call(Method::POST, "/campaigns", Some(valid_campaign(&"n".repeat(100_000))))
        .await;
    assert_eq!((status, fields(&body)), (422, vec!["name".to_owned()]), "{body}");
    let mut typed = valid_campaign("typed");
    typed["max_attempts"] = json!("three");
    let (status, body) = server.call(Method::POST, "/campaigns", Some(typed)).await;
    assert_eq!(
        (status, fields(&body)),
        (422, vec!["max_attempts".to_owned()]),
        "{body}"
    );
    assert!(!body.to_string().contains("u32"), "no Rust type names: {body}");

    let raw = server
        .http
        .post(format!("{}/campaigns", server.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert_eq!(count(&server, "campaigns").await, 0, "nothing was created");

    let created = server.post("/campaigns", valid_campaign("ok")).await;
    let id = created["id"].as_str().unwrap();
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/campaigns/{id}"),
            Some(json!({"dial_timeout_secs": 1})),
        )
        .await;
    assert_eq!((status, fields(&body)), (422, vec!["dial_timeout_secs".to_owned()]));
    let (status, body) = server
        .call(Method::POST, "/campaigns", Some(valid_campaign("OK")))
        .await;
    // A name another campaign has is a conflict with what exists, not bad input.
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "names are unique: {body}"
    );
    let unchanged = server.get(&format!("/campaigns/{id}")).await;
    assert_eq!(unchanged["dial_timeout_secs"], 30);

    let (status, _) = server.call(Method::POST, &format!("/campaigns/{id}/pause"), None).await;
    assert_eq!(status, 409, "a draft cannot be paused");
    let (status, _) = server
        .call(Method::POST, &format!("/campaigns/{id}/launch"), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server.call(Method::GET, "/campaigns/not-a-uuid", None).await;
    assert_eq!(status, 404);
    let patched = server
        .call(
            Method::PATCH,
            &format!("/campaigns/{id}"),
            Some(json!({"dial_timeout_secs": 20})),
        )
        .await;
    assert_eq!(patched.1["dial_timeout_secs"], 20);
    server.stop().await;
}

#[tokio::test]
async fn bad_imports_are_refused_whole_and_bad_rows_are_reported_by_number() {
    let server = Server::start("obzvon-test-api2").await;
    let c = server.post("/campaigns", valid_campaign("imports")).await;
    let id = c["id"].as_str().unwrap();

    let (status, body) = server
        .post_csv(&format!("/campaigns/{id}/leads"), "name,tel\nA,+79161234567\n".into())
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("phone"));
    let (status, _) = server
        .post_csv(
            &format!("/campaigns/{}/leads", uuid::Uuid::new_v4()),
            "phone\n+79161234567\n".into(),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/campaigns/{id}/leads"),
            Some(json!({"rows": []})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(count(&server, "leads").await, 0, "refused imports change nothing");

    let csv = "phone,name,priority,timezone,segment\n\
               +7 916 123-45-67,Anna,5,Europe/Moscow,gold\n\
               8 (916) 123-45-68,Boris,,,\n\
               12345,Bad,,,\n\
               +79161234569,Vera,high,,\n\
               +79161234570,Gleb,,Mars/Base,\n\
               89161234567,Anna again,,,\n";
    let (status, report) = server.post_csv(&format!("/campaigns/{id}/leads"), csv.into()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["received"], 6);
    assert_eq!(report["imported"], 2);
    assert_eq!(report["duplicates"], 1, "the same number written another way");
    let rejected: Vec<i64> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row"].as_i64().unwrap())
        .collect();
    assert_eq!(rejected, [3, 4, 5], "{report}");
    let leads = server.get(&format!("/campaigns/{id}/leads?state=pending")).await;
    let anna = leads.as_array().unwrap().iter().find(|l| l["name"] == "Anna").unwrap();
    assert_eq!(anna["phone"], "+79161234567");
    assert_eq!(anna["fields"]["segment"], "gold");
    assert_eq!(anna["priority"], 5);

    let json_rows = json!([{"phone": "+79161234571", "external_id": "crm-9"}, {"phone": "nope"}, {"phone": "+79161234572", "colour": "x"}]);
    let (status, report) = server
        .call(Method::POST, &format!("/campaigns/{id}/leads"), Some(json_rows))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (report["imported"].as_i64(), report["rejected_count"].as_i64()),
        (Some(1), Some(2)),
        "{report}"
    );

    // What COPY's text format would misread unless escaped comes back as it was sent.
    let awkward = json!([{"phone": "+79161234573", "name": r"Back\slash \N", "external_id": r"crm\t1",
                          "fields": {"note": "tab\there\nnew line \\N", "path": r"C:\dir", "empty": "", "none": null}}]);
    let (status, report) = server
        .call(Method::POST, &format!("/campaigns/{id}/leads"), Some(awkward.clone()))
        .await;
    assert_eq!((status, report["imported"].as_i64()), (200, Some(1)), "{report}");
    let leads = server.get(&format!("/campaigns/{id}/leads?state=pending")).await;
    let back = leads
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["phone"] == "+79161234573")
        .unwrap();
    assert_eq!(back["name"], awkward[0]["name"]);
    assert_eq!(back["external_id"], awkward[0]["external_id"]);
    assert_eq!(back["fields"], awkward[0]["fields"]);
    assert!(back["timezone"].is_null(), "{back}");

    let (status, _) = server
        .call(Method::GET, &format!("/campaigns/{id}/leads?state=ringing"), None)
        .await;
    assert_eq!(status, 422);

    let lead = anna["id"].as_str().unwrap();
    let (status, _) = server.call(Method::DELETE, &format!("/leads/{lead}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(server.get(&format!("/leads/{lead}")).await["state"], "canceled");
    server.stop().await;
}

#[tokio::test]
async fn operators_dnc_and_dispositions_refuse_bad_input() {
    let server = Server::start("obzvon-test-api3").await;
    let (status, body) = server
        .call(Method::POST, "/operators", Some(json!({"name": "A"})))
        .await;
    assert_eq!((status, fields(&body)), (422, vec!["endpoint".to_owned()]));
    let (status, body) = server
        .call(
            Method::POST,
            "/operators",
            Some(json!({"name": "A", "endpoint": "op1"})),
        )
        .await;
    assert_eq!((status, fields(&body)), (422, vec!["endpoint".to_owned()]));
    let op = server.operator("A", "PJSIP/op9").await;
    let (status, body) = server
        .call(
            Method::POST,
            "/operators",
            Some(json!({"name": "B", "endpoint": "PJSIP/op9"})),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("endpoint"), "{body}");
    assert_eq!(count(&server, "operators").await, 1);

    let (status, body) = server.call(Method::POST, &format!("/operators/{op}/pause"), None).await;
    assert_eq!(status, 409, "no session to pause: {body}");
    let (status, _) = server
        .call(Method::DELETE, &format!("/operators/{op}/session"), None)
        .await;
    assert_eq!(status, 409);

    let (status, body) = server
        .call(Method::POST, "/dnc", Some(json!({"phone": "garbage"})))
        .await;
    assert_eq!((status, fields(&body)), (422, vec!["phone".to_owned()]));
    let entry = server
        .post("/dnc", json!({"phone": "8 916 123 45 67", "region": "RU"}))
        .await;
    assert_eq!(entry["phone_e164"], "+79161234567");

    let (status, _) = server
        .call(
            Method::POST,
            &format!("/attempts/{}/disposition", uuid::Uuid::new_v4()),
            Some(json!({"result": "success"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/attempts/{}/disposition", uuid::Uuid::new_v4()),
            Some(json!({"result": "great"})),
        )
        .await;
    assert_eq!((status, fields(&body)), (422, vec!["result".to_owned()]));
    // A disposition needs a call that reached the customer.
    let attempt = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO attempts (id, phone_e164, status, result, ended_at) VALUES ($1, '+79165550101', 'failed', 'busy', now())")
        .bind(attempt)
        .execute(&server.pool)
        .await
        .unwrap();
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/attempts/{attempt}/disposition"),
            Some(json!({"result": "success"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let result: Option<String> = sqlx::query_scalar("SELECT result FROM attempts WHERE id = $1")
        .bind(attempt)
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(result.as_deref(), Some("busy"), "unchanged");
    server.stop().await;
}

#[tokio::test]
async fn a_phone_asterisk_refuses_to_ring_is_a_conflict_with_the_operator_named() {
    let server = Server::start("obzvon-test-api4").await;
    // A channel technology this Asterisk does not have: it refuses the originate outright.
    let op = server.operator("Wrong tech", "NoSuchTech/op1").await;
    let (status, body) = server
        .call(Method::POST, &format!("/operators/{op}/session"), None)
        .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("NoSuchTech/op1") && message.contains("check the operator's endpoint"),
        "{message}"
    );
    // Nothing is left behind: the operator is not logged in.
    let after = server.get(&format!("/operators/{op}")).await;
    assert_eq!(after["state"], "offline", "{after}");
    server.stop().await;
}

/// Valid but suspicious settings come back as warnings with the campaign, each with its code
/// and field, and each goes away when its cause does; none of them refuses the campaign.
#[tokio::test]
async fn campaign_warnings_appear_and_disappear_with_their_causes() {
    let server = Server::start("obzvon-test-api-warnings").await;
    let codes = |c: &Value| -> Vec<(String, String)> {
        c["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("no warnings list: {c}"))
            .iter()
            .map(|w| {
                assert!(!w["message"].as_str().unwrap().is_empty());
                (
                    w["code"].as_str().unwrap().to_owned(),
                    w["field"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mut body = valid_campaign("suspicious");
    body["dial_timeout_secs"] = json!(10);
    body["caller_id"] = json!("1234");
    body["calling_windows"] = json!({"mon": [{"from": "07:00", "to": "21:00"}]});
    body["max_attempts"] = json!(5);
    body["retry_delays_secs"] = json!({"no-answer": 259200});
    let created = server.post("/campaigns", body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let all = [
        ("dial-timeout-short", "dial_timeout_secs"),
        ("no-operator", "skills"),
        ("window-outside-usual-hours", "calling_windows.mon[0]"),
        ("retries-beyond-a-week", "max_attempts"),
        ("caller-id-not-a-number", "caller_id"),
    ];
    let want: Vec<(String, String)> = all.iter().map(|(c, f)| ((*c).to_owned(), (*f).to_owned())).collect();
    assert_eq!(codes(&created), want);
    assert_eq!(
        codes(&server.get(&format!("/campaigns/{id}")).await),
        want,
        "GET shows them too"
    );

    // Remove the causes one at a time: each warning goes with its own.
    let fixes = [
        json!({"dial_timeout_secs": 20}),
        json!({}),
        json!({"calling_windows": {"mon": [{"from": "09:00", "to": "21:00"}]}}),
        json!({"retry_delays_secs": {"no-answer": 3600}}),
        json!({"caller_id": "74950000000"}),
    ];
    for (i, fix) in fixes.iter().enumerate() {
        let answer = if i == 1 {
            server.operator("Warned", "PJSIP/op9").await;
            server.get(&format!("/campaigns/{id}")).await
        } else {
            let (status, answer) = server
                .call(Method::PATCH, &format!("/campaigns/{id}"), Some(fix.clone()))
                .await;
            assert_eq!(status, 200, "{answer}");
            answer
        };
        assert_eq!(codes(&answer), want[i + 1..].to_vec(), "after fixing {}", all[i].0);
    }
    // Attempts that no result retries.
    let (_, answer) = server
        .call(
            Method::PATCH,
            &format!("/campaigns/{id}"),
            Some(json!({"retry_delays_secs": {}})),
        )
        .await;
    assert_eq!(
        codes(&answer),
        [("attempts-without-retries".to_owned(), "retry_delays_secs".to_owned())]
    );
    server.stop().await;
}
