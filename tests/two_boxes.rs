//! Several boxes, one database: two obzvon instances, each with its own Asterisk (the test bed's
//! and its second, `scripts/testbed.sh box2`), share one PostgreSQL and one campaign. Each box
//! dials for its own logged-in operators only, no lead is claimed twice, the campaign's
//! concurrency and calls per second hold across both, the reports add up, and when one box dies
//! (obzvon and its Asterisk killed) the other keeps dialling and the dead box settles its calls
//! when it returns.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::farend::{FarEnd, TRUNK};
use common::process::Obzvon;
use common::*;
use obzvon::campaigns::store as campaigns;
use obzvon::campaigns::CampaignSpec;
use obzvon::dialer::scheduler::{claim, Limits};
use serde_json::{json, Value};

/// The second test-bed Asterisk's ARI (scripts/testbed.sh, `BOX2_ARI_PORT`).
const BOX2_ARI: &str = "http://127.0.0.1:8089/ari";

async fn campaign_with(pool: &sqlx::PgPool, spec: Value, leads: i64) -> campaigns::Campaign {
    let mut body = json!({"name": format!("shared {}", uuid::Uuid::new_v4()), "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000"});
    for (k, v) in spec.as_object().unwrap() {
        body[k] = v.clone();
    }
    let campaign = campaigns::create(pool, CampaignSpec::from_json(body).unwrap())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO leads (id, campaign_id, phone_e164, state)
         SELECT gen_random_uuid(), $1, '+7916' || lpad((i + $3)::text, 7, '0'), 'pending' FROM generate_series(1, $2) AS i",
    )
    .bind(campaign.id)
    .bind(leads)
    .bind(rand::random_range(0..1_000_000i64))
    .execute(pool)
    .await
    .unwrap();
    campaign
}

/// The most of these (sorted) times that fall within one second of each other.
fn most_in_one_second(created: &[DateTime<Utc>]) -> usize {
    (0..created.len())
        .map(|i| {
            created[i..]
                .iter()
                .take_while(|u| **u - created[i] < chrono::Duration::seconds(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn live_by_instance(pool: &sqlx::PgPool) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT instance, count(*) FROM attempts WHERE status IN ('init', 'ringing', 'in-progress') GROUP BY instance",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn claims_from_two_instances_keep_one_campaigns_concurrency_and_calls_per_second() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    obzvon::db::migrate(&pool).await.unwrap();

    // Concurrency: each box asks for five at a time, in turn; together they stop at eight live.
    let capped = campaign_with(&pool, json!({"max_concurrent_calls": 8, "calls_per_second": 1000}), 50).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        for box_ in ["box-a", "box-b"] {
            let (claims, report) = claim(&pool, &capped, 5, Limits::Shared, box_, Utc::now(), "t")
                .await
                .unwrap();
            got.push((box_, claims.len(), report.held_by_limits));
        }
    }
    assert_eq!(
        got,
        [
            ("box-a", 5, 0),
            ("box-b", 3, 2),
            ("box-a", 0, 5),
            ("box-b", 0, 5),
            ("box-a", 0, 5),
            ("box-b", 0, 5)
        ]
    );
    assert_eq!(
        live_by_instance(&pool).await,
        HashMap::from([("box-a".to_owned(), 5), ("box-b".to_owned(), 3)])
    );
    // Three of box a's calls end: box b may place three.
    sqlx::query(
        "UPDATE attempts SET status = 'completed', ended_at = now() WHERE id IN
             (SELECT id FROM attempts WHERE instance = 'box-a' LIMIT 3)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (claims, _) = claim(&pool, &capped, 5, Limits::Shared, "box-b", Utc::now(), "t")
        .await
        .unwrap();
    assert_eq!(claims.len(), 3);

    // Calls per second: two boxes claiming as fast as they can share one budget of 2 a second
    // (a second's worth at once, then 2 a second), whoever asks.
    let paced = campaign_with(&pool, json!({"max_concurrent_calls": 1000, "calls_per_second": 2}), 200).await;
    let started = std::time::Instant::now();
    let span = Duration::from_millis(2500);
    let mut tasks = Vec::new();
    for box_ in ["box-a", "box-b"] {
        let (pool, paced) = (pool.clone(), paced.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while started.elapsed() < span {
                n += claim(&pool, &paced, 5, Limits::Shared, box_, Utc::now(), "t")
                    .await
                    .unwrap()
                    .0
                    .len();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        }));
    }
    let mut per_box = Vec::new();
    for t in tasks {
        per_box.push(t.await.unwrap());
    }
    let total: usize = per_box.iter().sum();
    // 2 at once and 2 a second for 2.5 s: 7 (6 or 8 with the clock's edges).
    assert!((6..=8).contains(&total), "claimed {per_box:?} in 2.5 s at 2 a second");
    let created: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT created_at FROM attempts WHERE campaign_id = $1 ORDER BY created_at")
            .bind(paced.id)
            .fetch_all(&pool)
            .await
            .unwrap();
    let most = most_in_one_second(&created);
    assert!(most <= 4, "{most} calls within one second: {created:?}");
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Attempt {
    id: uuid::Uuid,
    lead_id: uuid::Uuid,
    instance: Option<String>,
    status: String,
    result: Option<String>,
    operator_id: Option<uuid::Uuid>,
    bridged_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

async fn attempts(pool: &sqlx::PgPool) -> Vec<Attempt> {
    sqlx::query_as(
        "SELECT id, lead_id, instance, status, result, operator_id, bridged_at, created_at, ended_at
         FROM attempts ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn live(a: &Attempt) -> bool {
    matches!(a.status.as_str(), "init" | "ringing" | "in-progress")
}

/// Operators `opN` for each `n` with phones that answer; their sessions start on `box_`.
async fn operators_on(box_: &Obzvon, ns: &[u8]) -> (HashSet<String>, Vec<Phone>) {
    let mut ids = HashSet::new();
    let mut phones = Vec::new();
    for &n in ns {
        let id = box_.operator(&format!("op{n}"), &format!("PJSIP/op{n}")).await;
        phones.push(operator_phone(n, &["-;0;-;0;0"]));
        let (status, body) = box_
            .call(reqwest::Method::POST, &format!("/operators/{id}/session"), None)
            .await;
        assert_eq!(status, 202, "{body}");
        let want = id.clone();
        box_.wait_operators("session ready", Duration::from_secs(10), move |ops| {
            ops.iter().any(|o| o["id"] == want.as_str() && o["state"] == "ready")
        })
        .await;
        ids.insert(id);
    }
    (ids, phones)
}

/// Samples the attempts every 100 ms until `until` holds; the most live at once seen.
async fn watch(
    pool: &sqlx::PgPool,
    what: &str,
    limit: Duration,
    peak: &mut usize,
    until: impl Fn(&[Attempt]) -> bool,
) -> Vec<Attempt> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let all = attempts(pool).await;
        *peak = (*peak).max(all.iter().filter(|a| live(a)).count());
        if until(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_boxes_share_a_campaign_and_one_keeps_dialling_while_the_other_is_down() {
    require_trunk();
    testbed(&["box2", "start"]);
    let far = FarEnd::start("two-boxes");
    let db = TestDb::create().await;
    let pool = db.pool().await;
    obzvon::db::migrate(&pool).await.unwrap();
    let a = Obzvon::start(&db, "two-boxes-a", &[]).await;
    let mut b = Obzvon::start(&db, "two-boxes-b", &[("OBZVON_ARI__URL", BOX2_ARI.to_owned())]).await;
    let (ops_a, _phones_a) = operators_on(&a, &[1, 2]).await;
    let (ops_b, _phones_b) = operators_on(&b, &[3, 4]).await;

    // Four operators would take four calls at once; the campaign allows three, across boxes.
    let mut csv = String::from("phone\n");
    let leads = 30;
    for i in 0..leads {
        let n = if i % 6 == 5 { number(2, 1, 0) } else { number(1, 1, 4) };
        csv.push_str(&format!("{n}\n"));
    }
    let campaign = a
        .post(
            "/campaigns",
            json!({
                "name": "two boxes", "trunk": TRUNK, "caller_id": "74950000000", "timezone": "UTC",
                "pacing": {"mode": "progressive", "ratio": 1.0},
                "dial_timeout_secs": 15, "max_attempts": 1, "wrap_up_secs": 1,
                "max_concurrent_calls": 3, "calls_per_second": 2,
            }),
        )
        .await;
    let id = campaign["id"].as_str().unwrap().to_owned();
    let (status, report) = a.post_csv(&format!("/campaigns/{id}/leads"), csv).await;
    assert_eq!((status, report["imported"].as_u64()), (200, Some(leads)), "{report}");
    a.post(&format!("/campaigns/{id}/start"), json!({})).await;

    let mut peak = 0;
    let box_b = |x: &Attempt| x.instance.as_deref() == Some("two-boxes-b");
    let box_a = |x: &Attempt| x.instance.as_deref() == Some("two-boxes-a");
    // Both boxes dial; box b has a call up when it dies.
    watch(
        &pool,
        "both boxes dialling, box b on a call",
        Duration::from_secs(40),
        &mut peak,
        |all| {
            all.iter().filter(|x| box_a(x) && !live(x)).count() >= 2
                && all.iter().filter(|x| box_b(x) && !live(x)).count() >= 2
                && all.iter().any(|x| box_b(x) && live(x) && x.bridged_at.is_some())
        },
    )
    .await;
    b.kill9();
    testbed(&["box2", "kill"]);
    let at_kill = attempts(&pool).await;
    let b_left_live: Vec<uuid::Uuid> = at_kill.iter().filter(|x| box_b(x) && live(x)).map(|x| x.id).collect();
    let a_ended = at_kill.iter().filter(|x| box_a(x) && !live(x)).count();
    eprintln!("box b killed with {} live call(s)", b_left_live.len());

    // Box a goes on alone (within what the dead box's calls leave of the three).
    let down = watch(
        &pool,
        "box a dialling on while box b is down",
        Duration::from_secs(40),
        &mut peak,
        |all| all.iter().filter(|x| box_a(x) && !live(x)).count() >= a_ended + 3,
    )
    .await;
    // Box b's calls wait for it: the database cannot know they are gone.
    for id in &b_left_live {
        assert!(
            down.iter().any(|x| x.id == *id && live(x)),
            "{id} settled before its box returned"
        );
    }

    // Box b returns (its Asterisk restarted empty) and settles what it left.
    testbed(&["box2", "start"]);
    b.spawn();
    b.ready(Duration::from_secs(30)).await;
    let done = watch(
        &pool,
        "every lead called and every call ended",
        Duration::from_secs(120),
        &mut peak,
        |all| all.len() as u64 == leads && all.iter().all(|x| !live(x)),
    )
    .await;
    let mut settled = Vec::new();
    for id in &b_left_live {
        let x = done.iter().find(|x| x.id == *id).unwrap();
        assert!(x.ended_at.is_some() && x.result.is_some(), "settled: {x:?}");
        settled.push(x.result.clone().unwrap_or_default());
    }
    assert!(peak <= 3, "{peak} calls live at once; the campaign allows 3");
    assert_eq!(peak, 3, "four operators kept the campaign at its limit");

    // No lead claimed twice (one attempt each, dialled once at the far end), each box's calls
    // went to its own operators.
    let per_lead: HashMap<uuid::Uuid, usize> = done.iter().fold(HashMap::new(), |mut m, x| {
        *m.entry(x.lead_id).or_default() += 1;
        m
    });
    assert!(per_lead.values().all(|&n| n == 1), "{per_lead:?}");
    let mut dialled: HashMap<String, usize> = HashMap::new();
    for call in far.calls() {
        if let Some(at) = call.attempt {
            *dialled.entry(at).or_default() += 1;
        }
    }
    assert!(
        dialled.values().all(|&n| n == 1),
        "an attempt dialled twice: {dialled:?}"
    );
    assert!(
        dialled.keys().all(|at| done.iter().any(|x| x.id.to_string() == *at)),
        "the far end saw a call of no attempt: {dialled:?}"
    );
    for x in done.iter().filter(|x| x.bridged_at.is_some()) {
        let op = x.operator_id.unwrap().to_string();
        let mine = if box_a(x) { &ops_a } else { &ops_b };
        assert!(mine.contains(&op), "{x:?} bridged to another box's operator");
    }
    let mut created: Vec<DateTime<Utc>> = done.iter().map(|x| x.created_at).collect();
    created.sort();
    let most = most_in_one_second(&created);
    assert!(most <= 4, "{most} calls within one second at 2 a second");

    // The reports read the same from either box and add up to the calls made.
    let path = format!("/reports/operators?campaign_id={id}");
    let (ra, rb) = (a.get(&path).await, b.get(&path).await);
    assert_eq!(ra["rows"], rb["rows"]);
    let bridged: i64 = ra["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["bridged"].as_i64().unwrap())
        .sum();
    assert_eq!(bridged as usize, done.iter().filter(|x| x.bridged_at.is_some()).count());
    let total = &b.get(&format!("/reports/campaigns?campaign_id={id}")).await["rows"][0];
    assert_eq!(total["dials"].as_u64(), Some(leads), "{total}");
    eprintln!(
        "box a {} calls, box b {} calls ({} left live when it died, settled as {settled:?}), {} bridged, peak {peak} live",
        done.iter().filter(|x| box_a(x)).count(),
        done.iter().filter(|x| box_b(x)).count(),
        b_left_live.len(),
        bridged
    );
    drop(b);
    drop(a);
    testbed(&["box2", "stop"]);
}
