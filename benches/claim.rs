//! Scheduler claim benchmark: leads claimed per second and claim latency with a large lead
//! table (default 1,000,000 leads; OBZVON_BENCH_LEADS to change), spread over
//! OBZVON_BENCH_CAMPAIGNS running campaigns (default 1) and one more that is not claimed from.
//! Uses a fresh database on the configured PostgreSQL (DATABASE_URL / OBZVON_DATABASE__URL, as
//! the tests do) and drops it afterwards. Run: `cargo bench --bench claim`; the scale form:
//! `OBZVON_BENCH_LEADS=10000000 OBZVON_BENCH_CAMPAIGNS=20 cargo bench --bench claim`.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use obzvon::campaigns::store as campaigns;
use obzvon::campaigns::CampaignSpec;
use obzvon::dialer::scheduler::{claim, Limits};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("claim benchmark: run it with `cargo bench --bench claim`");
        return Ok(());
    }
    let leads: i64 = std::env::var("OBZVON_BENCH_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let campaigns: usize = std::env::var("OBZVON_BENCH_CAMPAIGNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    common::with_scratch_database("claim", |_, url| async move { run(&url, leads, campaigns).await }).await
}

async fn run(url: &str, leads: i64, running: usize) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(url)
        .await?;
    obzvon::db::migrate(&pool).await?;
    let spec = CampaignSpec::from_json(serde_json::json!({
        "name": "bench", "trunk": "PJSIP/{number}@trunk", "caller_id": "1", "max_concurrent_calls": 10000,
        "calls_per_second": 1000,
    }))
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let campaign = campaigns::create(&pool, spec.clone()).await?;
    let mut all = vec![campaign.clone()];
    for k in 1..running {
        let mut spec = spec.clone();
        spec.name = format!("bench {k}");
        all.push(campaigns::create(&pool, spec).await?);
    }
    let ids: Vec<obzvon::ids::CampaignId> = all.iter().map(|c| c.id).collect();
    // A second campaign's leads share the table, as in production.
    let other = campaigns::create(
        &pool,
        CampaignSpec::from_json(serde_json::json!({"name": "other", "trunk": "PJSIP/{number}@t", "caller_id": "1"}))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    )
    .await?;

    let t = Instant::now();
    sqlx::query(
        "INSERT INTO leads (id, campaign_id, phone_e164, priority, state, next_attempt_at)
         SELECT gen_random_uuid(), CASE WHEN i % 10 = 0 THEN $2 ELSE $1[1 + (i / 10) % cardinality($1)] END,
                '+791' || lpad(i::text, 8, '0'), (i % 5)::int,
                CASE WHEN i % 4 = 0 THEN 'scheduled' ELSE 'pending' END,
                CASE WHEN i % 4 = 0 THEN now() + interval '1 hour' ELSE NULL END
         FROM generate_series(1, $3) AS i",
    )
    .bind(&ids)
    .bind(other.id)
    .bind(leads)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE leads").execute(&pool).await?;
    println!(
        "{leads} leads inserted in {:.1} s (90% in {running} benchmarked campaign(s), a quarter of them scheduled for later)",
        t.elapsed().as_secs_f64()
    );

    for batch in [1usize, 10, 50, 100] {
        let (claimed, latencies, elapsed) = claim_for(&pool, &campaign, batch, Duration::from_secs(5), 1).await?;
        report(&format!("batch {batch:>2}, 1 claimer "), claimed, &latencies, elapsed);
    }
    // Two instances sharing the database (this machine has two cores).
    let (claimed, latencies, elapsed) = claim_for(&pool, &campaign, 50, Duration::from_secs(5), 2).await?;
    report("batch 50, 2 claimers", claimed, &latencies, elapsed);
    if running > 1 {
        // As the scheduler's round goes: each campaign in turn, from one box and from two.
        for claimers in [1, 2] {
            let (claimed, latencies, elapsed) =
                claim_round(&pool, &all, 50, Duration::from_secs(10), claimers, Limits::Off).await?;
            report(
                &format!("batch 50, {running} campaigns in turn, {claimers} claimer(s)"),
                claimed,
                &latencies,
                elapsed,
            );
        }
    }
    // The scheduler's claims are held to each campaign's calls per second and concurrency
    // across boxes (one more statement and a row lock per claim); 1,000 a second each here,
    // and the calls claimed so far have ended.
    sqlx::query("UPDATE attempts SET status = 'completed', ended_at = now() WHERE status = 'init'")
        .execute(&pool)
        .await?;
    let (claimed, latencies, elapsed) = claim_round(&pool, &all, 50, Duration::from_secs(5), 2, Limits::Shared).await?;
    report(
        &format!("batch 50, {running} campaign(s) in turn, 2 claimers, shared limits"),
        claimed,
        &latencies,
        elapsed,
    );

    // 100,000 leads of a campaign with contact limits; every number had two calls last week
    // (200,000 attempts of history).
    let limited = campaigns::create(
        &pool,
        CampaignSpec::from_json(serde_json::json!({
            "name": "limited", "trunk": "PJSIP/{number}@t", "caller_id": "1", "max_concurrent_calls": 10000,
            "compliance": {"attempts": {"per_day": 3, "per_week": 10}, "connected": {"per_month": 8},
                           "quiet_after_abandon_hours": 72},
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    )
    .await?;
    sqlx::query(
        "INSERT INTO leads (id, campaign_id, phone_e164, state)
         SELECT gen_random_uuid(), $1, '+7926' || lpad(i::text, 7, '0'), 'pending' FROM generate_series(1, 100000) AS i",
    )
    .bind(limited.id)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO attempts (id, campaign_id, phone_e164, status, result, created_at, answered_at, ended_at)
         SELECT gen_random_uuid(), $1, '+7926' || lpad(i::text, 7, '0'), 'completed', 'no-answer',
                now() - make_interval(days => d), CASE WHEN d = 2 THEN now() - make_interval(days => d) END,
                now() - make_interval(days => d)
         FROM generate_series(1, 100000) AS i, (VALUES (2), (5)) AS v(d)",
    )
    .bind(other.id)
    .execute(&pool)
    .await?;
    // As history is in production: long written, vacuumed (hint bits set, visibility known).
    sqlx::query("VACUUM (ANALYZE) leads").execute(&pool).await?;
    sqlx::query("VACUUM (ANALYZE) attempts").execute(&pool).await?;
    // A campaign with contact limits and a quiet period reads each number's last 31 days.
    let (claimed, latencies, elapsed) = claim_for(&pool, &limited, 50, Duration::from_secs(5), 1).await?;
    report(
        "batch 50, contact limits (100,000 leads, 200,000 past calls)",
        claimed,
        &latencies,
        elapsed,
    );
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT lead_id FROM attempts WHERE lead_id IS NOT NULL GROUP BY lead_id HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await?;
    println!("leads claimed twice across concurrent claimers: {duplicates}");
    pool.close().await;
    Ok(())
}

async fn claim_for(
    pool: &sqlx::PgPool,
    campaign: &campaigns::Campaign,
    batch: usize,
    span: Duration,
    claimers: usize,
) -> anyhow::Result<(usize, Vec<f64>, Duration)> {
    claim_round(pool, std::slice::from_ref(campaign), batch, span, claimers, Limits::Off).await
}

/// `claimers` tasks (boxes) claim `batch` leads from each campaign in turn for `span`.
async fn claim_round(
    pool: &sqlx::PgPool,
    campaigns: &[campaigns::Campaign],
    batch: usize,
    span: Duration,
    claimers: usize,
    limits: Limits,
) -> anyhow::Result<(usize, Vec<f64>, Duration)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..claimers {
        let pool = pool.clone();
        let campaigns = campaigns.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut claimed = 0;
            let instance = format!("bench-{c}");
            // The boxes start their rounds at different campaigns.
            for campaign in campaigns.iter().cycle().skip(c * campaigns.len() / claimers.max(1)) {
                if started.elapsed() >= span {
                    break;
                }
                let t = Instant::now();
                let (got, _) = claim(&pool, campaign, batch, limits, &instance, Utc::now(), "bench").await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                claimed += got.len();
            }
            anyhow::Ok((claimed, latencies))
        }));
    }
    let mut claimed = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let (c, l) = task.await??;
        claimed += c;
        latencies.extend(l);
    }
    Ok((claimed, latencies, started.elapsed()))
}

fn report(label: &str, claimed: usize, latencies: &[f64], elapsed: Duration) {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{label}: {:>7.0} leads claimed/s, claim latency p50 {:.2} ms, p99 {:.2} ms ({} claims)",
        claimed as f64 / elapsed.as_secs_f64(),
        p(0.5),
        p(0.99),
        sorted.len()
    );
}
