//! The load harness (run by `scripts/load.sh`, not by the suite): `obzvon serve` as a child
//! process, N operators on the generated endpoints op7.. logged in with *55 by SIPp
//! processes of 25 phones each (each call its own phone, streaming audio and pressing a key now and then), and a
//! campaign whose far ends (the SIPp trunk, driven by the dialled number) answer after
//! realistic delays and talk realistic lengths, or are busy, or ring out. It runs for a set
//! time, lets the calls in flight finish, and prints one table: what was dialled, how fast
//! obzvon connected the answers, and what it cost (obzvon's CPU beside Asterisk's and the
//! box's, its memory, PostgreSQL transactions, rows and WAL per attempt, outbox lag, scheduler
//! tick).
//!
//! Settings (environment): LOAD_OPERATORS (50; at most 194), LOAD_SECS (120), LOAD_LIVE
//! (share of dials a person answers, 0.3), LOAD_TALK_MEAN_SECS (20), LOAD_WRAP_SECS (5),
//! LOAD_PACING (predictive | progressive), LOAD_CPS (campaign calls per second, 50),
//! LOAD_MAX_CALLS (campaign concurrency cap, 1000), LOAD_LEADS (default: enough for the run).

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::process::Obzvon;
use common::*;
use obzvon::sim::Population;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use sqlx::Row;

/// The first generated endpoint (op1-op6 are the other tests').
const FIRST_OP: usize = 7;
const LAST_OP: usize = 200;
const DIAL_TIMEOUT_SECS: u32 = 28;
/// The operators' SIPps: the first one's SIP port and media ports (the next ones count up).
const PHONES_PORT: u16 = 5301;
const PHONES_PER_SIPP: usize = 25;
const PHONES_MEDIA: u16 = 20000;
/// Numbers +79XXXX plus the five digits that tell the trunk what to do.
const MAX_LEADS: usize = 10_000;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// CPU time of a process (user + system) in seconds.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), counted from field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// /proc counts CPU time in USER_HZ ticks, 100 a second on Linux whatever the kernel's HZ.
fn clock_ticks() -> f64 {
    100.0
}

/// The box's CPU time busy (all cores) and in all, in seconds.
fn box_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / clock_ticks(), total / clock_ticks())
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn testbed_pid(file: &str) -> Option<u32> {
    let dir = std::env::var("OBZVON_TESTBED_DIR").unwrap_or_else(|_| "/var/lib/obzvon-testbed".into());
    std::fs::read_to_string(format!("{dir}/{file}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The CPU of every process named `postgres` (the server and its backends) now; backends
/// that come and go between two readings are missed, so this is a floor.
fn postgres_cpu() -> f64 {
    let mut sum = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres") {
            sum += process_cpu(pid);
        }
    }
    sum
}

/// PostgreSQL's counters for the test database: transactions, rows written, WAL position.
async fn pg_counters(pool: &sqlx::PgPool) -> (f64, f64, f64) {
    // Statistics reach the shared view within a second of a transaction's end.
    let row = sqlx::query(
        "SELECT (xact_commit + xact_rollback)::float8 AS xacts,
                (tup_inserted + tup_updated + tup_deleted)::float8 AS rows,
                pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 AS wal
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    (row.get("xacts"), row.get("rows"), row.get("wal"))
}

/// The operators' phones: SIPp processes of `PHONES_PER_SIPP` each, placing one *55 call per
/// operator (the login scenario with the endpoint taken from an injection file), each call
/// streaming audio and pressing 9 (a key that means nothing here, so wrap-up lasts the
/// campaign's wrap-up) every minute. One SIPp streaming audio for 194 phones fell behind at
/// ~680 live calls (Asterisk hung up 146 of them for lack of RTP), so they are spread out.
fn phones(operators: usize) -> Phones {
    let dir = std::env::temp_dir().join(format!("obzvon-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo_path("scripts/sipp/operator-audio.ul"),
        dir.join("operator-audio.ul"),
    )
    .unwrap();
    let scenario = std::fs::read_to_string(repo_path("scripts/sipp/operator-login.xml"))
        .unwrap()
        .replace("[op]", "[field0]");
    std::fs::write(dir.join("operators.xml"), scenario).unwrap();
    let mut children = Vec::new();
    let ops: Vec<usize> = (FIRST_OP..FIRST_OP + operators).collect();
    for (k, group) in ops.chunks(PHONES_PER_SIPP).enumerate() {
        let mut inf = String::from("SEQUENTIAL\n");
        for n in group {
            inf.push_str(&format!("op{n};\n"));
        }
        let file = format!("operators-{k}.csv");
        std::fs::write(dir.join(&file), inf).unwrap();
        let n = group.len().to_string();
        let port = (PHONES_PORT + k as u16).to_string();
        let media = (PHONES_MEDIA + k as u16 * 1000).to_string();
        let child = Command::new("sipp")
            .args(["-sf", "operators.xml", "-inf", &file, "-s", "*55"])
            .args(["-key", "key", "9", "-d", "60000", "-m", &n, "-l", &n, "-r", "20"])
            .args(["-i", "127.0.0.1", "-p", &port, "-mi", "127.0.0.1", "-mp", &media])
            .args(["-nostdin", "-trace_err", "127.0.0.1:5060"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (Debian package sip-tester; scripts/testbed.sh up installs it)");
        children.push(child);
    }
    Phones { children, dir }
}

/// The operators' SIPps, stopped (and their directory removed) when the run ends or fails.
struct Phones {
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Phones {
    fn cpu(&self) -> f64 {
        self.children.iter().map(|c| process_cpu(c.id())).sum()
    }
}

impl Drop for Phones {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Attempt {
    created: DateTime<Utc>,
    answered: Option<DateTime<Utc>>,
    bridged: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
    result: Option<String>,
}

/// The smallest bucket bound of a Prometheus histogram holding `q` of its observations.
fn histogram_quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with(&format!("{name}_bucket{{"))) {
        let le = line.split("le=\"").nth(1)?.split('"').next()?;
        let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
        let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        buckets.push((bound, count));
    }
    let total = buckets.iter().map(|b| b.1).fold(0.0, f64::max);
    if total == 0.0 {
        return None;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets.iter().find(|(_, c)| *c >= q * total).map(|(b, _)| *b)
}

#[tokio::test]
#[ignore = "the load harness: scripts/load.sh runs it"]
async fn load_run() {
    require_trunk();
    let operators: usize = env("LOAD_OPERATORS", 50);
    assert!(
        (1..=LAST_OP - FIRST_OP + 1).contains(&operators),
        "LOAD_OPERATORS: 1 to {} (the test bed's endpoints op{FIRST_OP}..op{LAST_OP})",
        LAST_OP - FIRST_OP + 1
    );
    let secs: u64 = env("LOAD_SECS", 120);
    let live: f64 = env("LOAD_LIVE", 0.3);
    let talk_mean: f64 = env("LOAD_TALK_MEAN_SECS", 20.0);
    let wrap: u32 = env("LOAD_WRAP_SECS", 5);
    let pacing: String = env("LOAD_PACING", "predictive".to_owned());
    let cps: u32 = env("LOAD_CPS", 50);
    let max_calls: u32 = env("LOAD_MAX_CALLS", 1000);
    // Each operator takes a call per talk + wrap-up; a dial finds a person `live` of the time.
    let expected = operators as f64 * secs as f64 / (talk_mean + f64::from(wrap) + 2.0) / live;
    let leads: usize = env("LOAD_LEADS", ((expected * 1.5) as usize + 100).min(MAX_LEADS));
    assert!(
        leads <= MAX_LEADS,
        "LOAD_LEADS: at most {MAX_LEADS} (the numbers the harness makes)"
    );

    let db = TestDb::create().await;
    let pool = db.pool().await;
    obzvon::db::migrate(&pool).await.unwrap();
    let server = Obzvon::start(
        &db,
        "load",
        &[(
            "OBZVON_LOG__FILTER",
            std::env::var("LOAD_LOG").unwrap_or_else(|_| "warn".into()),
        )],
    )
    .await;
    let pid = server.pid();
    for n in FIRST_OP..FIRST_OP + operators {
        server.operator(&format!("Operator {n}"), &format!("PJSIP/op{n}")).await;
    }
    let phones = phones(operators);
    server
        .wait_operators(
            "every operator logged in",
            Duration::from_secs(60 + operators as u64 / 5),
            |ops| ops.iter().filter(|o| o["state"] == "ready").count() == operators,
        )
        .await;

    let seed: u64 = env("LOAD_SEED", rand::random());
    let mut rng = StdRng::seed_from_u64(seed);
    let people = Population {
        talk_mean_secs: talk_mean,
        dial_timeout_secs: f64::from(DIAL_TIMEOUT_SECS) - 1.0,
        ..Population::default()
    };
    let mut csv = String::from("phone\n");
    for i in 0..leads {
        csv.push_str(&common::people::lead_number(i, live, 0.25, &people, &mut rng));
        csv.push('\n');
    }
    let body = json!({
        "name": "load",
        "trunk": "PJSIP/{number}@trunk",
        "caller_id": "74950000000",
        "timezone": "UTC",
        "pacing": if pacing == "progressive" { json!({"mode": "progressive", "ratio": 1.0}) }
                  else { json!({"mode": "predictive", "target_abandon_rate": 0.03, "abandon_window": "24h"}) },
        "dial_timeout_secs": DIAL_TIMEOUT_SECS,
        "max_attempts": 1,
        "wrap_up_secs": wrap,
        "connect_limit_ms": 2000,
        "max_concurrent_calls": max_calls,
        "calls_per_second": cps,
        "recording": false,
    });
    let id = server.post("/campaigns", body).await["id"].as_str().unwrap().to_owned();
    let (status, report) = server.post_csv(&format!("/campaigns/{id}/leads"), csv).await;
    assert_eq!(status, 200, "{report}");
    // A few 9XX codes are not in use, and their numbers are refused as invalid.
    let imported = report["imported"].as_u64().unwrap_or(0) as usize;
    assert!(
        imported * 10 >= leads * 9,
        "only {imported} of {leads} leads imported: {report}"
    );

    let asterisk = testbed_pid("asterisk-root/run/asterisk/asterisk.pid");
    let trunk = testbed_pid("log/trunk.pid");
    let cpu = |p: Option<u32>| p.map(process_cpu).unwrap_or(0.0);
    let pg0 = pg_counters(&pool).await;
    let (busy0, all0) = box_cpu();
    // CPU seconds so far of obzvon, Asterisk, the SIPps and PostgreSQL.
    let readings = || {
        (
            process_cpu(pid),
            cpu(asterisk),
            cpu(trunk) + phones.cpu(),
            postgres_cpu(),
        )
    };
    let (ob0, ast0, sipp0, post0) = readings();
    let started = Utc::now();
    let clock = Instant::now();
    server.post(&format!("/campaigns/{id}/start"), json!({})).await;
    eprintln!("load: {operators} operators, {leads} leads, {pacing} pacing, {secs} s, seed {seed}");

    let mut rss_max = 0f64;
    let mut last_print = Instant::now();
    while clock.elapsed() < Duration::from_secs(secs) {
        rss_max = rss_max.max(rss_mib(pid));
        if last_print.elapsed() >= Duration::from_secs(10) {
            let live = server.get(&format!("/campaigns/{id}/live")).await;
            eprintln!(
                "load: {:>4} s  calls in flight {}  operators {}",
                clock.elapsed().as_secs(),
                live["calls_in_flight"],
                live["operators"]
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // No new dials; the calls in flight finish.
    server.post(&format!("/campaigns/{id}/pause"), json!({})).await;
    let dial_span = clock.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        rss_max = rss_max.max(rss_mib(pid));
        let in_flight: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE ended_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
        if in_flight == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the relay send the last events and PostgreSQL's statistics catch up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (busy1, all1) = box_cpu();
    let (ob1, ast1, sipp1, post1) = readings();
    let pg1 = pg_counters(&pool).await;
    let wall = clock.elapsed().as_secs_f64();

    let rows: Vec<Attempt> = sqlx::query(
        "SELECT created_at, answered_at, bridged_at, ended_at, result FROM attempts WHERE created_at >= $1",
    )
    .bind(started)
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| Attempt {
        created: r.get("created_at"),
        answered: r.get("answered_at"),
        bridged: r.get("bridged_at"),
        ended: r.get("ended_at"),
        result: r.get("result"),
    })
    .collect();
    let attempts = rows.len().max(1) as f64;
    // Peak concurrency: a sweep over each call's start and end.
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for a in &rows {
        edges.push((a.created, 1));
        edges.push((a.ended.unwrap_or_else(Utc::now), -1));
    }
    edges.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    let mut connect: Vec<f64> = rows
        .iter()
        .filter_map(|a| Some((a.bridged? - a.answered?).num_microseconds()? as f64 / 1000.0))
        .collect();
    connect.sort_by(f64::total_cmp);
    let mut results: HashMap<String, usize> = HashMap::new();
    for a in &rows {
        *results
            .entry(a.result.clone().unwrap_or_else(|| "none".into()))
            .or_default() += 1;
    }
    let answered = rows.iter().filter(|a| a.answered.is_some()).count();
    let mut lag: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM sent_at - created_at) * 1000)::float8 FROM outbox
         WHERE created_at >= $1 AND sent_at IS NOT NULL",
    )
    .bind(started)
    .fetch_all(&pool)
    .await
    .unwrap();
    lag.sort_by(f64::total_cmp);
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    let metrics = server
        .http
        .get(format!("http://127.0.0.1:{}/metrics", server.port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tick_p99 = histogram_quantile(&metrics, "obzvon_scheduler_tick_seconds", 0.99);
    let bucket = |name: &str, q: f64| {
        histogram_quantile(&metrics, name, q).map_or("none".to_owned(), |s| format!("≤ {:.0}", s * 1000.0))
    };
    let ari_wait = (
        bucket("obzvon_ari_request_wait_seconds", 0.5),
        bucket("obzvon_ari_request_wait_seconds", 0.99),
    );
    let ari_trip = (
        bucket("obzvon_ari_request_seconds", 0.5),
        bucket("obzvon_ari_request_seconds", 0.99),
    );
    let ari_count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("obzvon_ari_request_seconds_count "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);

    let obzvon_cpu = ob1 - ob0;
    let asterisk_cpu = ast1 - ast0;
    let box_busy = busy1 - busy0;
    let box_all = all1 - all0;
    let share = |c: f64| 100.0 * c / box_all.max(1e-9);
    let mut results: Vec<_> = results.into_iter().collect();
    results.sort();
    let line = |k: &str, v: String| println!("| {k:<38} | {v:<44} |");
    println!("| {:<38} | {:<44} |", "load run", format!("seed {seed}"));
    println!("| {:-<38} | {:-<44} |", "", "");
    line("operators", operators.to_string());
    line("pacing", pacing.clone());
    line(
        "dialling time (s)",
        format!(
            "{dial_span:.0} (then {:.0} s for the calls in flight)",
            wall - dial_span
        ),
    );
    line("calls placed", format!("{}", rows.len()));
    line("calls/s", format!("{:.2}", rows.len() as f64 / dial_span));
    line(
        "answered by a person, bridged",
        format!("{answered}, {}", connect.len()),
    );
    line(
        "results",
        results
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    line("peak concurrent calls", peak.to_string());
    line(
        "connect latency p50 / p99 / max (ms)",
        format!(
            "{:.1} / {:.1} / {:.1}",
            percentile(&connect, 0.5),
            percentile(&connect, 0.99),
            connect.last().copied().unwrap_or(0.0)
        ),
    );
    line(
        "obzvon CPU s per 1,000 attempts",
        format!("{:.2}", obzvon_cpu / attempts * 1000.0),
    );
    line(
        "CPU share of the box: obzvon / Asterisk",
        format!(
            "{:.1} % / {:.1} % (obzvon = {:.1} % of Asterisk)",
            share(obzvon_cpu),
            share(asterisk_cpu),
            100.0 * obzvon_cpu / asterisk_cpu.max(1e-9)
        ),
    );
    line(
        "CPU share: SIPp / PostgreSQL / box busy",
        format!(
            "{:.1} % / {:.1} % / {:.1} %",
            share(sipp1 - sipp0),
            share(post1 - post0),
            share(box_busy)
        ),
    );
    line("obzvon RSS max (MiB)", format!("{rss_max:.1}"));
    line(
        "PostgreSQL transactions per attempt",
        format!("{:.1}", (pg1.0 - pg0.0) / attempts),
    );
    line(
        "PostgreSQL rows written per attempt",
        format!("{:.1}", (pg1.1 - pg0.1) / attempts),
    );
    line("WAL bytes per attempt", format!("{:.0}", (pg1.2 - pg0.2) / attempts));
    line(
        "outbox lag p50 / p99 / max (ms)",
        format!(
            "{:.1} / {:.1} / {:.1} ({} events, {unsent} unsent)",
            percentile(&lag, 0.5),
            percentile(&lag, 0.99),
            lag.last().copied().unwrap_or(0.0),
            lag.len()
        ),
    );
    line(
        "connect, the dialer's part p50 / p99 (ms)",
        format!(
            "{} / {} (operator taken → bridged; the rest is waiting for one)",
            bucket("obzvon_connect_dialer_seconds", 0.5),
            bucket("obzvon_connect_dialer_seconds", 0.99)
        ),
    );
    line(
        "ARI requests/s; turn wait p50 / p99 (ms)",
        format!("{:.0}; {} / {}", ari_count / wall, ari_wait.0, ari_wait.1),
    );
    line(
        "ARI round trip p50 / p99 (bucket, ms)",
        format!("{} / {}", ari_trip.0, ari_trip.1),
    );
    line(
        "ARI event age p50 / p99; engine input p99",
        format!(
            "{} / {} ms; {}",
            bucket("obzvon_ari_event_lag_seconds", 0.5),
            bucket("obzvon_ari_event_lag_seconds", 0.99),
            histogram_quantile(&metrics, "obzvon_engine_input_seconds", 0.99)
                .map_or("none".to_owned(), |s| format!("≤ {:.2} ms", s * 1000.0))
        ),
    );
    line(
        "scheduler tick p99 (bucket, ms)",
        tick_p99.map_or("none".into(), |s| format!("≤ {:.1}", s * 1000.0)),
    );
    drop(phones);
    drop(server);
    pool.close().await;
}
