//! Supervision against the real test bed: after a campaign through Asterisk and SIPp, the
//! report's numbers equal counts taken directly from the attempts table, its CSV has the same
//! rows as its JSON, Asterisk wrote a CDR linked to each call (attempt id in userfield,
//! campaign in accountcode) whose billed seconds the report adds up, the live view matches, and
//! every metric the Grafana dashboards and alert rules query is exported by the running dialer.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn get_csv(server: &Server, path: &str) -> (String, String) {
    let r = server
        .http
        .get(format!("{}{path}", server.base))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
    (ctype, r.text().await.unwrap())
}

fn metric_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().unwrap().to_owned();
            match parts.next() {
                Some("histogram") | Some("summary") => vec![
                    format!("{name}_bucket"),
                    format!("{name}_sum"),
                    format!("{name}_count"),
                    name,
                ],
                _ => vec![name],
            }
        })
        .collect()
}

fn queried_metrics(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("obzvon_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn reports_match_the_attempts_cdrs_link_to_them_and_dashboards_query_exported_metrics() {
    require_trunk();
    let server = Server::start("obzvon-test-reports").await;
    let (op, _phone) = server.logged_in("Rita", 4).await;
    // Three answered (1 s ring, 1-2 s talk), two busy, one 503; no retries.
    let csv = format!(
        "phone,external_id\n{},a1\n{},a2\n{},a3\n{},b1\n{},b2\n{},c1\n",
        number(1, 1, 2),
        number(1, 1, 1),
        number(1, 1, 2),
        number(2, 1, 0),
        number(2, 0, 0),
        number(4, 0, 0)
    );
    let id = server
        .running_campaign(
            json!({"name": "reported", "trunk": "PJSIP/{number}@trunk", "caller_id": "1",
                   "retry_delays_secs": {}, "wrap_up_secs": 1}),
            csv,
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.get(&format!("/campaigns/{id}")).await["state"] != "finished" {
        assert!(tokio::time::Instant::now() < deadline, "the campaign did not finish");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Counts straight from the attempts table.
    let (dials, answered, bridged, leads, converted, abandoned): (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(answered_at), count(bridged_at), count(DISTINCT lead_id),
                count(DISTINCT lead_id) FILTER (WHERE result = 'success'),
                count(*) FILTER (WHERE result = 'abandoned')
         FROM attempts WHERE campaign_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&server.pool)
    .await
    .unwrap();
    assert_eq!(
        (dials, answered, leads),
        (6, 3, 6),
        "the test bed behaved as the numbers say"
    );
    let by_result: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT coalesce(result, 'none'), count(*) FROM attempts WHERE campaign_id = $1::uuid GROUP BY 1",
    )
    .bind(&id)
    .fetch_all(&server.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let (avg_talk, avg_ring): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT avg(extract(epoch FROM ended_at - bridged_at))::float8,
                avg(extract(epoch FROM coalesce(answered_at, ended_at) - ringing_at))::float8
         FROM attempts WHERE campaign_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&server.pool)
    .await
    .unwrap();

    let report = server.get(&format!("/reports/campaigns?campaign_id={id}")).await;
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    let row = &rows[0];
    assert_eq!(row["key"], id.as_str());
    assert_eq!(row["name"], "reported");
    assert_eq!(row["dials"], dials);
    assert_eq!(row["answered"], answered);
    assert_eq!(row["bridged"], bridged);
    assert_eq!(row["abandoned"], abandoned);
    assert_eq!(row["leads"], leads);
    assert_eq!(row["converted_leads"], converted);
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9;
    assert!(close(&row["answer_rate"], answered as f64 / dials as f64), "{row}");
    assert!(close(&row["attempts_per_lead"], dials as f64 / leads as f64));
    assert!(close(&row["conversion"], converted as f64 / leads as f64));
    assert!(close(&row["avg_talk_secs"], avg_talk.unwrap()), "{row}");
    assert!(close(&row["avg_ring_secs"], avg_ring.unwrap()), "{row}");
    assert!(row["median_talk_secs"].as_f64().unwrap() > 0.5);
    let results: HashMap<String, i64> = row["results"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect();
    assert_eq!(results, by_result);

    // The same attempts by operator, day and hour: every dial is counted once.
    for dimension in ["operators", "days", "hours"] {
        let r = server
            .get(&format!("/reports/{dimension}?campaign_id={id}&tz=Europe/Moscow"))
            .await;
        let total: i64 = r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["dials"].as_i64().unwrap())
            .sum();
        assert_eq!(total, dials, "{dimension}: {r}");
    }
    let by_operator = server.get(&format!("/reports/operators?campaign_id={id}")).await;
    let rita = by_operator["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == op.as_str())
        .unwrap_or_else(|| panic!("{by_operator}"));
    assert_eq!(
        (rita["name"].as_str(), rita["dials"].as_i64()),
        (Some("Rita"), Some(bridged))
    );

    // CSV: the same rows as the JSON.
    let (ctype, text) = get_csv(&server, "/reports/hours?tz=UTC").await;
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let json_rows = server.get("/reports/hours?tz=UTC").await["rows"]
        .as_array()
        .unwrap()
        .clone();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, obzvon::reports::csv_header());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), json_rows.len());
    for (record, json_row) in records.iter().zip(&json_rows) {
        assert_eq!(&record[0], json_row["key"].as_str().unwrap());
        assert_eq!(record[2].parse::<i64>().unwrap(), json_row["dials"].as_i64().unwrap());
        assert_eq!(
            record[3].parse::<i64>().unwrap(),
            json_row["answered"].as_i64().unwrap()
        );
        let busy = header.iter().position(|h| h == "result_busy").unwrap();
        assert_eq!(
            record[busy].parse::<i64>().unwrap(),
            json_row["results"]["busy"].as_i64().unwrap_or(0)
        );
    }
    let (status, body) = server.call(reqwest::Method::GET, "/reports/weeks", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server
        .call(reqwest::Method::GET, "/reports/days?tz=Mars/Olympus", None)
        .await;
    assert_eq!((status, body["fields"][0]["field"].as_str()), (422, Some("tz")));

    // Asterisk's CDRs (written to the test bed's database, where cdr_pgsql points) carry the
    // attempt id and the campaign. Copied into this test's database, the report bills them.
    let attempts: Vec<(uuid::Uuid, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("SELECT id, answered_at FROM attempts WHERE campaign_id = $1::uuid")
            .bind(&id)
            .fetch_all(&server.pool)
            .await
            .unwrap();
    let ids: Vec<String> = attempts.iter().map(|(a, _)| a.to_string()).collect();
    let cdr_db = sqlx::PgPool::connect(secrecy::ExposeSecret::expose_secret(&settings().database.url))
        .await
        .unwrap();
    // Each attempt's CDRs: the customer leg (userfield = attempt, accountcode = campaign) and,
    // once the customer leaves the operator's bridge, the bridged record (party A is the
    // operator; userfield ";<attempt>", peeraccount = campaign), billed for the conversation.
    type Cdr = (String, String, String, i32, String);
    let cdrs_of = |rows: &[Cdr], attempt: &str| -> Vec<Cdr> {
        rows.iter()
            .filter(|c| c.0.split(';').any(|part| part == attempt))
            .cloned()
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let cdrs: Vec<Cdr> = loop {
        let rows: Vec<Cdr> = sqlx::query_as(
            "SELECT userfield, accountcode, peeraccount, billsec, disposition FROM cdr
             WHERE string_to_array(userfield, ';') && $1::text[]",
        )
        .bind(&ids)
        .fetch_all(&cdr_db)
        .await
        .expect("the test bed's database has the cdr table (scripts/testbed.sh up creates it)");
        let complete = attempts.iter().all(|(a, answered)| {
            let mine = cdrs_of(&rows, &a.to_string());
            !mine.is_empty() && (answered.is_none() || mine.iter().map(|c| c.3).sum::<i32>() >= 1)
        });
        if complete {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "CDRs incomplete: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (attempt, answered_at) in &attempts {
        let mine = cdrs_of(&cdrs, &attempt.to_string());
        assert!(
            mine.iter().all(|c| c.1 == id || c.2 == id),
            "the campaign is the account code: {mine:?}"
        );
        if answered_at.is_some() {
            assert!(mine.iter().any(|c| c.4 == "ANSWERED"), "{mine:?}");
        } else {
            assert!(mine.iter().all(|c| c.3 == 0 && c.4 != "ANSWERED"), "{mine:?}");
        }
    }
    let billed_total: i64 = cdrs.iter().map(|c| i64::from(c.3)).sum();
    for (userfield, accountcode, peeraccount, billsec, disposition) in &cdrs {
        sqlx::query(
            "INSERT INTO cdr (userfield, accountcode, peeraccount, billsec, disposition) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(userfield)
        .bind(accountcode)
        .bind(peeraccount)
        .bind(billsec)
        .bind(disposition)
        .execute(&server.pool)
        .await
        .unwrap();
    }
    let report = server.get(&format!("/reports/campaigns?campaign_id={id}")).await;
    assert_eq!(report["rows"][0]["billed_secs"], billed_total);

    // The live view of the finished campaign.
    let live = server.get(&format!("/campaigns/{id}/live")).await;
    let lead_states: i64 = live["leads"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(lead_states, leads, "{live}");
    assert_eq!(live["calls_in_flight"], json!({}));
    assert_eq!(live["today"]["dials"], dials);
    let operators: i64 = live["operators"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(operators, 1, "Rita, ready or in wrap-up: {live}");

    // A running predictive campaign (no leads yet) so its abandon and pacing gauges exist; then
    // every metric the dashboards and the alert rules query must be on /metrics.
    let _watched = server
        .running_campaign(
            json!({"name": "watched", "trunk": "PJSIP/{number}@trunk", "caller_id": "1",
                   "pacing": {"mode": "predictive"}}),
            "phone\n".to_owned(),
        )
        .await;
    tokio::time::sleep(obzvon::metrics::COLLECT_EVERY + Duration::from_millis(500)).await;
    let metrics_url = server.base.replace("/api/v1", "/metrics");
    let exposition = server.http.get(metrics_url).send().await.unwrap().text().await.unwrap();
    let exported = metric_names(&exposition);
    let mut queried = BTreeSet::new();
    for (name, board) in dashboards() {
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                for metric in queried_metrics(target["expr"].as_str().unwrap()) {
                    assert!(
                        exported.contains(&metric),
                        "{name} / {}: {metric} is not exported; exported: {exported:?}",
                        panel["title"]
                    );
                    queried.insert(metric);
                }
            }
        }
    }
    let rules = std::fs::read_to_string(repo_path("alerts/obzvon.rules.yml")).unwrap();
    for metric in queried_metrics(&rules) {
        assert!(
            exported.contains(&metric),
            "alerts/obzvon.rules.yml: {metric} is not exported"
        );
    }
    assert!(queried.len() >= 12, "the dashboards cover the metrics: {queried:?}");
    assert!(exposition.contains("obzvon_abandon_rate_cap{campaign="), "{exposition}");
    assert!(
        exposition.contains("route=\"/api/v1/reports/{dimension}\""),
        "HTTP by route template"
    );
    server.stop().await;
}
