//! Predictive pacing on the real test bed: 20 SIPp operators on the generated endpoints
//! op7..op26 log in with *55, and 400 leads whose far ends (the SIPp trunk, driven by the
//! dialled number) answer after random delays and talk random lengths, or are busy, or ring
//! out. Pacing must dial ahead of the ready operators and keep the measured abandon rate at the
//! target; the run prints its occupancy and connect latency beside what to compare with the
//! simulator (`obzvon simulate` with the same parameters, printed too).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use obzvon::sim::Population;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use sqlx::Row;

const OPERATORS: u8 = 20;
/// The first generated endpoint (op1-op6 are the other tests').
const FIRST_OP: u8 = 7;
const LEADS: usize = 400;
/// Dials answered by a person.
const LIVE: f64 = 0.3;
/// Of the others: busy after 2-6 s; the rest ring out at the dial timeout.
const BUSY: f64 = 0.25;
const TALK_MEAN_SECS: f64 = 20.0;
const WRAP_SECS: u32 = 5;
const DIAL_TIMEOUT_SECS: u32 = 28;
const TARGET: f64 = 0.03;

struct Call {
    operator: Option<uuid::Uuid>,
    result: Option<String>,
    created: DateTime<Utc>,
    answered: Option<DateTime<Utc>>,
    bridged: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
}

#[tokio::test]
async fn predictive_pacing_with_twenty_operators_dials_ahead_and_holds_the_abandon_target() {
    require_trunk();
    let server = Server::start("obzvon").await;
    let mut phones = Vec::new();
    for n in FIRST_OP..FIRST_OP + OPERATORS {
        server.operator(&format!("Operator {n}"), &format!("PJSIP/op{n}")).await;
        // The phone presses 9 now and then: a key that means nothing in any state here, so
        // wrap-up lasts the campaign's wrap_up_secs, as in the simulator.
        phones.push(login_phone(n, "9", 60_000));
    }
    server
        .wait_operators("all twenty operators ready", Duration::from_secs(60), |ops| {
            ops.iter().filter(|o| o["state"] == "ready").count() == usize::from(OPERATORS)
        })
        .await;

    let seed: u64 = rand::random();
    eprintln!("pacing test bed: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // A person answers 2 s + Gamma(3, 3 s) after the dial (before the timeout) and talks
    // lognormal, mean TALK_MEAN_SECS, coefficient of variation 1: the simulator's draws.
    let people = Population {
        talk_mean_secs: TALK_MEAN_SECS,
        dial_timeout_secs: f64::from(DIAL_TIMEOUT_SECS) - 1.0,
        ..Population::default()
    };
    let mut csv = String::from("phone\n");
    for i in 0..LEADS {
        csv.push_str(&common::people::lead_number(i, LIVE, BUSY, &people, &mut rng));
        csv.push('\n');
    }
    let body = json!({
        "name": "predictive on the test bed",
        "trunk": "PJSIP/{number}@trunk",
        "caller_id": "74950000000",
        "timezone": "UTC",
        "pacing": {"mode": "predictive", "target_abandon_rate": TARGET, "abandon_window": "24h"},
        "dial_timeout_secs": DIAL_TIMEOUT_SECS,
        "max_attempts": 1,
        "wrap_up_secs": WRAP_SECS,
        "connect_limit_ms": 2000,
        "max_concurrent_calls": 120,
        "calls_per_second": 10,
        "recording": false,
    });
    let id = server.post("/campaigns", body).await["id"].as_str().unwrap().to_owned();
    let (status, report) = server.post_csv(&format!("/campaigns/{id}/leads"), csv).await;
    assert_eq!(
        (status, report["imported"].as_u64()),
        (200, Some(LEADS as u64)),
        "{report}"
    );
    let started = Utc::now();
    server.post(&format!("/campaigns/{id}/start"), json!({})).await;

    // Watch the live view while it runs: how far ahead of the ready operators it dials.
    let mut samples = 0usize;
    let mut ahead = 0usize;
    let mut max_level = 0f64;
    let mut max_ringing = 0i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    loop {
        let live = server.get(&format!("/campaigns/{id}/live")).await;
        let in_flight = |s: &str| live["calls_in_flight"][s].as_i64().unwrap_or(0);
        let ringing = in_flight("init") + in_flight("ringing");
        let ready = live["operators"]["ready"].as_i64().unwrap_or(0);
        let left = live["leads"]["pending"].as_i64().unwrap_or(0) + live["leads"]["dialing"].as_i64().unwrap_or(0);
        if let Some(level) = live["pacing"]["dial_level"].as_f64() {
            max_level = max_level.max(level);
        }
        max_ringing = max_ringing.max(ringing);
        if live["leads"]["pending"].as_i64().unwrap_or(0) > 0 {
            samples += 1;
            if ringing > ready {
                ahead += 1;
            }
        }
        let live_calls = ringing + in_flight("in-progress");
        if left == 0 && live_calls == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the campaign did not finish in 15 minutes: {live}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let rows: Vec<Call> = sqlx::query(
        "SELECT operator_id, result, created_at, answered_at, bridged_at, ended_at FROM attempts ORDER BY created_at",
    )
    .fetch_all(&server.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| Call {
        operator: r.get("operator_id"),
        result: r.get("result"),
        created: r.get("created_at"),
        answered: r.get("answered_at"),
        bridged: r.get("bridged_at"),
        ended: r.get("ended_at"),
    })
    .collect();
    assert_eq!(rows.len(), LEADS, "one attempt per lead (max_attempts 1)");
    let count = |r: &str| rows.iter().filter(|a| a.result.as_deref() == Some(r)).count();
    let answered = rows.iter().filter(|a| a.answered.is_some()).count();
    let abandoned = count("abandoned");
    let bridged = rows.iter().filter(|a| a.bridged.is_some()).count();
    let abandon_rate = abandoned as f64 / answered.max(1) as f64;

    // Occupancy over the dialling period: from the start until the last lead was dialled
    // (after it the list, not pacing, leaves operators idle). Busy = talk + wrap-up.
    let last_dial = rows.iter().map(|a| a.created).max().unwrap();
    let span = (last_dial - started).to_std().unwrap().as_secs_f64();
    let mut busy: HashMap<uuid::Uuid, f64> = HashMap::new();
    for a in &rows {
        let (Some(op), Some(b), Some(e)) = (a.operator, a.bridged, a.ended) else {
            continue;
        };
        let end = (e + chrono::Duration::seconds(i64::from(WRAP_SECS))).min(last_dial);
        let start = b.max(started);
        if end > start {
            *busy.entry(op).or_default() += (end - start).to_std().unwrap().as_secs_f64();
        }
    }
    let occupancy = busy.values().sum::<f64>() / (f64::from(OPERATORS) * span);
    let talk_minutes_per_hour = busy.values().sum::<f64>() / f64::from(OPERATORS) / span * 60.0;
    let mut connect: Vec<f64> = rows
        .iter()
        .filter_map(|a| Some((a.bridged? - a.answered?).num_microseconds()? as f64 / 1000.0))
        .collect();
    connect.sort_by(f64::total_cmp);
    let share_ahead = ahead as f64 / samples.max(1) as f64;

    eprintln!(
        "pacing test bed: operators={OPERATORS} leads={LEADS} dials={} answered={answered} bridged={bridged} \
         abandoned={abandoned} abandon_rate={:.2}% (target {:.1}%) occupancy={:.1}% ({:.1} busy min/h) over {:.0} s \
         connect_ms p50={:.1} p99={:.1} max={:.1} max_dial_level={max_level:.2} max_ringing={max_ringing} \
         ahead_of_ready={:.0}% of samples",
        rows.len(),
        abandon_rate * 100.0,
        TARGET * 100.0,
        occupancy * 100.0,
        talk_minutes_per_hour,
        span,
        percentile(&connect, 0.5),
        percentile(&connect, 0.99),
        connect.last().copied().unwrap_or(0.0),
        share_ahead * 100.0,
    );
    eprintln!(
        "pacing test bed: compare with `obzvon simulate --agents {OPERATORS} --hit-rates {LIVE} --talk-mean-secs \
         {TALK_MEAN_SECS} --wrap-secs {WRAP_SECS} --machine-share 0 --login-spread-secs 0 --hours {:.3} --no-extra \
         --seeds 200`",
        span / 3600.0
    );

    assert!(
        max_level > 1.0 && share_ahead > 0.2,
        "predictive dials ahead of the ready operators: dial level up to {max_level:.2}, more calls ringing than \
         ready operators in {:.0}% of the samples",
        share_ahead * 100.0
    );
    // The target with room for a small sample: two standard deviations of the binomial count.
    let tolerance = 2.0 * (TARGET * (1.0 - TARGET) / answered.max(1) as f64).sqrt();
    assert!(
        abandon_rate <= TARGET + tolerance,
        "abandon rate {:.2}% over {answered} answers is above the target {:.1}% + {:.1}%",
        abandon_rate * 100.0,
        TARGET * 100.0,
        tolerance * 100.0
    );
    assert!(
        answered as f64 > LEADS as f64 * LIVE * 0.6,
        "{answered} answered of {LEADS}: the far ends did not behave"
    );
    assert!(
        percentile(&connect, 0.99) < 500.0,
        "connect latency p99 {:.1} ms",
        percentile(&connect, 0.99)
    );
    drop(phones);
    server.stop().await;
}
