//! The web console in a real browser (headless Chromium over WebDriver) against the real test
//! bed: a supervisor signs in, meets a validation error, creates a campaign, uploads leads,
//! starts it and watches the call reach a SIPp operator; the operator, signed in with a token
//! of their own, sees the lead, sets the outcome, and the report shows it. Screenshots of each
//! page are kept in target/console-screenshots/.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::*;
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn token(server: &Server, name: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    obzvon::auth::create(&server.pool, name, &scopes, "test")
        .await
        .unwrap()
        .0
}

async fn sign_in(browser: &Browser, console: &str, token: &str) {
    browser.goto(console).await;
    browser.fill("#token", token).await;
    browser.click("#signin").await;
    browser
        .wait_text("#whoami", Duration::from_secs(10), |t| !t.is_empty())
        .await;
}

#[tokio::test]
async fn a_supervisor_and_an_operator_run_a_campaign_in_the_browser() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let console = server.base.replace("/api/v1", "/console/");
    let supervisor_token = token(&server, "Supervisor Sveta", &["campaigns:write", "reports:read"]).await;
    let operator_token = token(&server, "Operator Olga", &["operators:write", "calls:write"]).await;
    let olga = server.operator("Olga Ivanova", "PJSIP/op5").await;
    let _olga_phone = operator_phone(5, &["-;0;-;0;0"]);
    let sup = Browser::start().await;
    let op = Browser::start().await;

    // Signing in: an unknown token is refused in words, a real one opens the campaigns.
    sup.goto(&console).await;
    sup.find("#token").await;
    sup.screenshot("01-sign-in").await;
    sup.fill("#token", "obz_not-a-token").await;
    sup.click("#signin").await;
    sup.wait_text(".alert.error", Duration::from_secs(5), |t| {
        t.contains("unknown or revoked")
    })
    .await;
    sign_in(&sup, &console, &supervisor_token).await;
    assert_eq!(sup.text("#whoami").await, "Supervisor Sveta");
    sup.find("#campaigns").await;

    // A campaign without a caller ID is refused, and the form says so next to the field.
    sup.click("#new-campaign").await;
    sup.fill("#f-name", "Renewals December").await;
    sup.fill("#f-timezone", "UTC").await;
    sup.fill("#f-dial_timeout_secs", "10").await;
    sup.fill("#f-wrap_up_secs", "120").await;
    sup.click("#w-any").await;
    sup.click("#f-recording").await;
    sup.click("#save-campaign").await;
    let error = sup
        .wait_text("label[data-for=caller_id] .error-text", Duration::from_secs(5), |t| {
            !t.is_empty()
        })
        .await;
    assert_eq!(error, "required", "the caller ID's own error");
    sup.find("#form-error").await;
    sup.screenshot("02-campaign-form-error").await;
    let campaigns: i64 = sqlx::query_scalar("SELECT count(*) FROM campaigns")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(campaigns, 0, "a refused form creates nothing");

    sup.fill("#f-caller_id", "+74950000000").await;
    sup.click("#save-campaign").await;
    sup.find("#action-start").await;
    // Saved, with a warning about the 10 s ring; editing it to 20 s takes the warning away.
    let warned = sup.text("#warnings li[data-code=dial-timeout-short]").await;
    assert!(warned.contains("10 s"), "{warned}");
    sup.screenshot("03-campaign-warning").await;
    // A setting the form does not show survives an edit through it.
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM campaigns WHERE name = 'Renewals December'")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    server
        .rest
        .call(
            reqwest::Method::PATCH,
            &format!("/campaigns/{id}"),
            Some(json!({"pacing": {"mode": "progressive", "ratio": 1.5, "abandon_window": "30d"}})),
        )
        .await;
    sup.goto(&format!("{console}#/campaigns/{id}")).await;
    sup.click("#edit-campaign").await;
    sup.fill("#f-dial_timeout_secs", "20").await;
    sup.click("#save-campaign").await;
    sup.find("#action-start").await;
    assert_eq!(
        sup.eval("return document.getElementById('warnings') !== null").await,
        json!(false),
        "no warning once the ring is 20 s"
    );
    let settings: serde_json::Value = sqlx::query_scalar("SELECT settings FROM campaigns WHERE id = $1")
        .bind(id)
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(settings["dial_timeout_secs"], 20);
    assert_eq!(settings["recording"], true);
    assert_eq!(settings["calling_windows"], json!({}));
    assert_eq!(settings["pacing"]["abandon_window"], "30d", "kept through the form");

    // Leads from a file: one good row, a repeat, and a number that is not one.
    let customer = number(1, 1, 4);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("leads.csv");
    std::fs::write(
        &csv,
        format!("phone,name,plan\n{customer},Pavel Smirnov,Gold\n{customer},Pavel again,Gold\n12,Nobody,None\n"),
    )
    .unwrap();
    sup.find("#lead-file")
        .await
        .send_keys(csv.to_str().unwrap())
        .await
        .unwrap();
    sup.click("#upload-leads").await;
    let imported = sup
        .wait_text("#import-result .alert", Duration::from_secs(10), |t| {
            t.contains("imported")
        })
        .await;
    assert!(
        imported.starts_with("1 imported, 1 duplicates, 1 rejected of 3 rows"),
        "{imported}"
    );
    let rejected = sup.text("#rejected").await;
    assert!(rejected.contains('3'), "the rejected row by its number: {rejected}");
    sup.screenshot("04-campaign-imported").await;

    // The operator signs in with their own token: no campaigns or reports for them.
    sign_in(&op, &console, &operator_token).await;
    let nav = op.text("#nav").await;
    assert!(
        nav.contains("Operators") && !nav.contains("Campaigns") && !nav.contains("Reports"),
        "{nav}"
    );
    op.goto(&format!("{console}#/campaigns")).await;
    op.wait_text("main .alert.error", Duration::from_secs(5), |t| {
        t.contains("does not allow")
    })
    .await;
    op.goto(&format!("{console}#/operators/{olga}")).await;
    op.click("#login").await;
    op.wait_text("main .state-big .badge", Duration::from_secs(15), |t| t == "ready")
        .await;
    op.screenshot("05-operator-ready").await;

    // Start: the call goes through the trunk to Olga's phone; both pages follow it live.
    sup.click("#action-start").await;
    sup.wait_text("#calls", Duration::from_secs(15), |t| t.contains(&customer))
        .await;
    op.wait_text("#lead-name", Duration::from_secs(15), |t| t == "Pavel Smirnov")
        .await;
    let card = op.text("#current-call").await;
    assert!(card.contains("Gold"), "the lead's fields on the call card: {card}");
    op.screenshot("06-operator-on-call").await;
    sup.wait_text("#calls", Duration::from_secs(10), |t| t.contains("Olga Ivanova"))
        .await;
    sup.screenshot("07-campaign-monitor").await;

    // The customer hangs up after 4 s: wrap-up, where Olga sets the outcome.
    op.wait_text("main .state-big .badge", Duration::from_secs(20), |t| t == "wrap-up")
        .await;
    op.click("#current-call button[data-result=success]").await;
    op.fill("#notes", "Renewed for a year").await;
    op.screenshot("08-operator-wrap-up").await;
    op.click("#save-outcome").await;
    let attempt: uuid::Uuid = sqlx::query_scalar("SELECT id FROM attempts WHERE campaign_id = $1")
        .bind(id)
        .fetch_one(&server.pool)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (result, notes): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT result, disposition_notes FROM attempts WHERE id = $1")
                .bind(attempt)
                .fetch_one(&server.pool)
                .await
                .unwrap();
        // A bridged call is a success until the operator says otherwise: the notes show the
        // disposition arrived.
        if notes.is_some() {
            assert_eq!(
                (result.as_deref(), notes.as_deref()),
                (Some("success"), Some("Renewed for a year"))
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outcome was not saved: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The outcome ends the wrap-up: Olga is ready for the next call without pressing Ready.
    op.wait_text("main .state-big .badge", Duration::from_secs(10), |t| t == "ready")
        .await;

    // The report counts the call and the conversion.
    sup.goto(&format!("{console}#/reports")).await;
    sup.wait_text("#report-connected .value", Duration::from_secs(10), |t| t == "1")
        .await;
    let conversion = sup.text("#report-conversion").await;
    assert!(conversion.contains("1 of 1 leads"), "{conversion}");
    let operators = sup.text("#report-operators").await;
    assert!(operators.contains("Olga Ivanova"), "{operators}");
    sup.screenshot("09-reports").await;
    sup.eval("document.getElementById('report-operators').scrollIntoView(); return true")
        .await;
    sup.screenshot("09-reports-lower").await;

    // The call's page: timeline and the recording, playable in the page.
    sup.goto(&format!("{console}#/attempts/{attempt}")).await;
    sup.find("#timeline li").await;
    let audio = sup.find("#recording-audio").await;
    let src = audio.attr("src").await.unwrap().unwrap_or_default();
    assert!(
        src.starts_with("blob:"),
        "the recording is loaded with the token: {src}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let duration = loop {
        let d = sup
            .eval("return document.getElementById('recording-audio').duration || 0")
            .await
            .as_f64()
            .unwrap_or(0.0);
        if d > 0.0 {
            break d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the browser could not read the recording"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(duration > 1.0, "the recording holds the conversation: {duration} s");
    sup.screenshot("10-attempt").await;

    // The recording over REST: the WAV itself; 404 where there is none.
    let response = server
        .http
        .get(format!("{}/attempts/{attempt}/recording", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    let wav = response.bytes().await.unwrap();
    assert_eq!(&wav[..4], b"RIFF", "a WAV file");
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            &format!("/attempts/{}/recording", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");

    sup.goto(&format!("{console}#/campaigns")).await;
    sup.wait_text("#campaigns", Duration::from_secs(10), |t| {
        t.contains("1 of 1 leads done")
    })
    .await;
    sup.screenshot("11-campaigns").await;
    op.click("#logout").await;
    op.wait_text("main .state-big .badge", Duration::from_secs(10), |t| t == "offline")
        .await;
    sup.close().await;
    op.close().await;
    server.stop().await;
}

/// The operator's preview queue and callback picker: a lead offered on the workplace is
/// skipped (a reason is required), the next is dialled from the page, and its outcome is a
/// callback at the time picked.
#[tokio::test]
async fn an_operator_skips_and_dials_preview_leads_and_books_a_callback_in_the_browser() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let server = Server::start("obzvon").await;
    let console = server.base.replace("/api/v1", "/console/");
    let operator_token = token(&server, "Operator Petr", &["operators:write", "calls:write"]).await;
    let petr = server.operator("Petr Sokolov", "PJSIP/op6").await;
    let _phone = operator_phone(6, &["-;0;-;0;0"]);
    let (first, second) = (number(1, 0, 3), number(1, 0, 3));
    server
        .running_campaign(
            json!({"name": "Preview", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000",
                   "pacing": {"mode": "preview"}, "wrap_up_secs": 120, "timezone": "UTC",
                   "preview": {"reservation_secs": 120, "skip_delay_secs": 600}}),
            format!("phone,name,priority\n{first},Anna First,20\n{second},Boris Second,10\n"),
        )
        .await;
    let op = Browser::start().await;
    sign_in(&op, &console, &operator_token).await;
    op.goto(&format!("{console}#/operators/{petr}")).await;
    op.click("#login").await;

    // Anna is offered; a skip without a reason is refused and changes nothing.
    op.wait_text("#preview .alert", Duration::from_secs(15), |t| t.contains("Anna First"))
        .await;
    op.screenshot("21-operator-preview").await;
    op.click("#preview-skip").await;
    op.wait_text("#toast", Duration::from_secs(5), |t| t.contains("reason"))
        .await;
    assert!(op.text("#preview .alert").await.contains("Anna First"), "still offered");
    op.fill("#skip-reason", "asked for an email instead").await;
    op.click("#preview-skip").await;
    let lead_state = |phone: String| {
        let pool = server.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT state FROM leads WHERE phone_e164 = $1")
                .bind(phone)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    op.wait_text("#preview .alert", Duration::from_secs(15), |t| {
        t.contains("Boris Second")
    })
    .await;
    assert_eq!(
        lead_state(first.clone()).await,
        "scheduled",
        "the skipped lead waits for later"
    );

    // Boris is dialled from the page; after the call, a callback tomorrow at 10:30.
    op.click("#preview-dial").await;
    op.wait_text("#lead-name", Duration::from_secs(15), |t| t == "Boris Second")
        .await;
    op.wait_text("main .state-big .badge", Duration::from_secs(20), |t| t == "wrap-up")
        .await;
    op.click("#current-call button[data-result=callback-needed]").await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
    op.eval(&format!(
        "const i = document.getElementById('callback-at'); i.value = '{tomorrow}T10:30'; return i.value"
    ))
    .await;
    op.screenshot("22-operator-callback").await;
    op.click("#save-outcome").await;
    let want = tomorrow.and_hms_opt(10, 30, 0).unwrap().and_utc();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (result, at): (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
            sqlx::query_as("SELECT result, callback_at FROM attempts WHERE phone_e164 = $1")
                .bind(&second)
                .fetch_one(&server.pool)
                .await
                .unwrap();
        if result.as_deref() == Some("callback-needed") {
            assert_eq!(at, Some(want), "the time picked, in the operator's zone (UTC here)");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no callback saved: {result:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    op.close().await;
    server.stop().await;
}
