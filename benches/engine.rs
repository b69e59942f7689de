//! Call engine benchmark: the real engine shell (`calls::engine::spawn`, with its journal on
//! disk and PostgreSQL behind it) and the real ARI client and event websocket, against a
//! simulated Asterisk in the same process. The simulator is an HTTP server with the ARI
//! endpoints the engine uses (originate, hang-up, bridges, add channel, record, play,
//! `rtp_statistics`, subscriptions, and the `/applications`, `/channels`, `/bridges` reads of
//! a reconcile) and the `/ari/events` websocket on the same port, as Asterisk has them. Its
//! channels ring, answer after a random delay or fail (busy, no answer), and hang up after a
//! talk time; its operator phones log in by feature code (`Stasis(obzvon,login)`), sit in
//! their bridges and send 50 RTP packets a second, so the engine's media checks pass.
//!
//! Leads are claimed with the scheduler's own `claim` (attempt rows in PostgreSQL) at a fixed
//! rate and handed to the engine with `EngineHandle::dial`, as the scheduler does; pacing is
//! not run (the rate is the load asked for), nor are the HTTP API and the outbox relay.
//! Defaults: 1,000 operators, 200 answers a second (250 calls dialled a second, 80 %
//! answered), a ring of 0.5–2.5 s, a talk of 1.5–4.5 s, one second of wrap-up: about 1,000
//! live calls. Calls are recorded (a bridge recording per
//! answered call). A 10 s warm-up, then a 30 s measured window.
//!
//! What "handling latency" means here: the time from the simulator writing an event to the
//! websocket until the ARI request the engine makes because of it reaches the simulator. It
//! is end to end as Asterisk would see it: the websocket read and parse, the engine's queue
//! and loop, the core, the chain worker, the ARI client (its bound on requests in flight) and
//! HTTP to the simulator. It is measured for the events that cause a request:
//! - answer: `StasisStart` of a customer → the `addChannel` putting it in an operator's bridge
//!   (two requests in series: the operator phone's media check, then the bridge);
//! - media reply: the answer to that media check → the `addChannel` (a REST reply handled);
//! - hang-up: `ChannelDestroyed` of a bridged customer → the stop of its recording;
//! - abandon: `PlaybackFinished` of the abandon message → the hang-up;
//! - login: `StasisStart` of an operator's phone → the creation of its bridge (set-up);
//! - dial: `EngineHandle::dial` → the originate (a command rather than an event).
//!
//! Events that cause no request (ringing, the `Dial` progress, bridge enter/leave, recording
//! events) go through the same queue in order, so they wait as long as these do.
//!
//! Knobs: OBZVON_BENCH_OPERATORS (1000), OBZVON_BENCH_ANSWERS (answers a second, 200),
//! OBZVON_BENCH_ANSWER_RATIO (0.8), OBZVON_BENCH_CALLS (a cap on live calls, 1000; dialling
//! waits above it), OBZVON_BENCH_SECS (30), OBZVON_BENCH_WARMUP_SECS (10),
//! OBZVON_BENCH_RING_MS (500-2500), OBZVON_BENCH_TALK_MS (1500-4500),
//! OBZVON_BENCH_WRAP_UP_SECS (1); OBZVON_BENCH_CORE_ONLY=1 runs only the extra at the end (the
//! same traffic through the pure core, in simulated time, no I/O). The engine runs on a runtime of two worker threads
//! (`obzvon-rt`), the simulator on its own (`sim-rt`), so their CPU time is told apart; the
//! resident memory is the whole process's, simulator included. Uses a fresh database on the
//! configured PostgreSQL (DATABASE_URL / OBZVON_DATABASE__URL) and drops it afterwards.
//! Run: `cargo bench --bench engine`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State as Shared;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use obzvon::ari::{AriClient, StreamSettings};
use obzvon::calls::engine::{self, EngineHandle};
use obzvon::campaigns::store as campaigns;
use obzvon::campaigns::CampaignSpec;
use obzvon::config::Settings;
use obzvon::dialer::scheduler::{claim, Limits};
use obzvon::operators::store::{self as operators, OperatorInput};
use rand::Rng;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("engine benchmark: run it with `cargo bench --bench engine`");
        return Ok(());
    }
    let opts = Opts::from_env();
    if std::env::var("OBZVON_BENCH_CORE_ONLY").is_ok_and(|v| v == "1") {
        return core_only(&opts);
    }
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sim-rt")
        .enable_all()
        .build()?;
    let engine_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("obzvon-rt")
        .enable_all()
        .build()?;
    engine_rt.block_on(async {
        let (opts, sim) = (&opts, sim_rt.handle());
        common::with_scratch_database(
            "engine",
            |settings, url| async move { run(&url, settings, opts, sim).await },
        )
        .await
    })?;
    drop(engine_rt);
    drop(sim_rt);
    core_only(&opts)
}

struct Opts {
    operators: usize,
    answers: f64,
    answer_ratio: f64,
    calls: usize,
    secs: u64,
    warmup: u64,
    ring_ms: (u64, u64),
    talk_ms: (u64, u64),
    wrap_up_secs: u32,
}

impl Opts {
    fn from_env() -> Opts {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        fn range(name: &str, default: (u64, u64)) -> (u64, u64) {
            std::env::var(name)
                .ok()
                .and_then(|v| {
                    let (a, b) = v.split_once('-')?;
                    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
                })
                .filter(|(a, b)| a <= b)
                .unwrap_or(default)
        }
        Opts {
            operators: var("OBZVON_BENCH_OPERATORS", 1000),
            answers: var("OBZVON_BENCH_ANSWERS", 200.0),
            answer_ratio: var("OBZVON_BENCH_ANSWER_RATIO", 0.8f64).clamp(0.05, 1.0),
            calls: var("OBZVON_BENCH_CALLS", 1000),
            secs: var("OBZVON_BENCH_SECS", 30),
            warmup: var("OBZVON_BENCH_WARMUP_SECS", 10),
            ring_ms: range("OBZVON_BENCH_RING_MS", (500, 2500)),
            talk_ms: range("OBZVON_BENCH_TALK_MS", (1500, 4500)),
            wrap_up_secs: var("OBZVON_BENCH_WRAP_UP_SECS", 1),
        }
    }

    fn dial_rate(&self) -> f64 {
        self.answers / self.answer_ratio
    }
}

async fn run(url: &str, settings: Settings, opts: &Opts, sim_rt: &tokio::runtime::Handle) -> anyhow::Result<()> {
    let rss_start = common::proc_kib("VmRSS");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(url)
        .await?;
    obzvon::db::migrate(&pool).await?;
    for n in 1..=opts.operators {
        operators::create(
            &pool,
            OperatorInput {
                name: Some(format!("Operator {n}")),
                endpoint: Some(format!("PJSIP/op{n}")),
                skills: None,
                enabled: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("operator {n}: {e}"))?;
    }
    let spec = CampaignSpec::from_json(json!({
        "name": "bench", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000",
        "max_concurrent_calls": 10000, "calls_per_second": 1000, "wrap_up_secs": opts.wrap_up_secs,
        "recording": true,
    }))
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let campaign = campaigns::create(&pool, spec).await?;
    let leads = (opts.dial_rate() * (opts.warmup + opts.secs) as f64 * 1.2) as i64 + 1000;
    sqlx::query(
        "INSERT INTO leads (id, campaign_id, phone_e164, state)
         SELECT gen_random_uuid(), $1, '+7916' || lpad(i::text, 7, '0'), 'pending' FROM generate_series(1, $2) AS i",
    )
    .bind(campaign.id)
    .bind(leads)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE leads").execute(&pool).await?;

    // The simulated Asterisk, on its own runtime.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let sim = Sim::new(opts);
    sim_rt.spawn(serve(std_listener, sim.clone()));

    let journal = tempfile::tempdir()?;
    let mut engine_settings = settings.engine();
    engine_settings.core.instance = "bench".to_owned();
    engine_settings.journal_dir = journal.path().to_owned();
    engine_settings.drain_grace = Duration::from_secs(30);
    let ari = AriClient::new(
        &format!("http://{addr}/ari"),
        "obzvon",
        SecretString::from("obzvon"),
        "obzvon",
    )?;
    let stop_ws = CancellationToken::new();
    let (stream, ws_task) = obzvon::ari::ws::spawn(ari.clone(), StreamSettings::default(), stop_ws.clone());
    let ws_stats = stream.stats.clone();
    let drain = CancellationToken::new();
    let (engine, engine_task) = engine::spawn(pool.clone(), ari, engine_settings, stream, drain.clone()).await?;
    wait_for(
        "the engine to read the simulated Asterisk",
        Duration::from_secs(30),
        || engine.status().synced,
    )
    .await?;

    // Operators log in by feature code, a few hundred a second.
    let login_started = Instant::now();
    sim_rt.spawn(log_in(sim.clone(), opts.operators));
    let ready = wait_ready(&engine, opts.operators, Duration::from_secs(120)).await?;
    println!(
        "{ready} operator sessions logged in and ready in {:.1} s",
        login_started.elapsed().as_secs_f64()
    );
    let rss_ready = common::proc_kib("VmRSS");

    // Dialling at a fixed rate; the measured window follows the warm-up.
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (engine, samples, sampling) = (engine.clone(), samples.clone(), sampling.clone());
        std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || sample(engine, samples, sampling))?
    };
    let spec = Arc::new(campaign.spec.clone());
    let start = Instant::now();
    let window_start = start + Duration::from_secs(opts.warmup);
    let window_end = window_start + Duration::from_secs(opts.secs);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut dialled, mut held_back, mut claim_ms) = (0u64, 0u64, Vec::new());
    let mut before: Option<Counters> = None;
    loop {
        tick.tick().await;
        let now = Instant::now();
        if before.is_none() && now >= window_start {
            before = Some(Counters::take(&sim, &ws_stats));
        }
        if now >= window_end {
            break;
        }
        let due = (opts.dial_rate() * (now - start).as_secs_f64()) as u64;
        let mut want = due.saturating_sub(dialled + held_back) as usize;
        let room = opts.calls.saturating_sub(engine.status().live_calls);
        if want > room {
            held_back += (want - room) as u64;
            want = room;
        }
        if want == 0 {
            continue;
        }
        let t = Instant::now();
        let (claims, _) = claim(&pool, &campaign, want, Limits::Off, "bench", Utc::now(), "bench").await?;
        claim_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        for mut c in claims {
            c.spec = spec.clone();
            sim.lock().dials.insert(c.attempt.channel_id(), Instant::now());
            engine.dial(c);
            dialled += 1;
        }
    }
    let after = Counters::take(&sim, &ws_stats);
    let before = before.expect("the window started before it ended");
    let backlog_at_end = engine.status().journal_backlog;

    // No more dialling: the live calls end, then the journal catches up.
    let stopped = Instant::now();
    let calls_ended = wait_for("the live calls to end", Duration::from_secs(60), || {
        engine.status().live_calls == 0
    })
    .await
    .is_ok();
    let calls_ended_in = stopped.elapsed();
    let caught_up = wait_for("the journal to reach the database", Duration::from_secs(300), || {
        engine.status().journal_backlog == 0
    })
    .await
    .is_ok();
    let caught_up_in = stopped.elapsed();
    sampling.store(false, Ordering::Release);
    let _ = sampler.join();
    drain.cancel();
    let exit = tokio::time::timeout(Duration::from_secs(60), engine_task).await;
    stop_ws.cancel();
    let _ = ws_task.await;

    let outcomes: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT status, coalesce(result, '-'), count(*) FROM attempts GROUP BY 1, 2 ORDER BY 3 DESC")
            .fetch_all(&pool)
            .await?;
    pool.close().await;

    // ---- the report -----------------------------------------------------------------------
    let secs = (after.at - before.at).as_secs_f64();
    let per_sec = |a: u64, b: u64| (a - b) as f64 / secs;
    println!();
    println!(
        "simulated: {} operators logged in by feature code (each in its own bridge, 50 RTP packets/s, media checked every {} ms); \
         {:.0} calls dialled/s, {:.0} % answered after {}-{} ms of ringing, talk {}-{} ms, wrap-up {} s, recording on; \
         unanswered: 60 % busy after 0.5-2 s, 40 % no answer after 2-6 s; abandon message 3 s; live calls capped at {}",
        opts.operators,
        settings.engine.media_check_ms,
        opts.dial_rate(),
        opts.answer_ratio * 100.0,
        opts.ring_ms.0,
        opts.ring_ms.1,
        opts.talk_ms.0,
        opts.talk_ms.1,
        opts.wrap_up_secs,
        opts.calls,
    );
    println!(
        "window: {secs:.1} s after a {} s warm-up; {dialled} calls dialled in all, {held_back} held back by the cap; claim p50 {:.1} ms, p99 {:.1} ms",
        opts.warmup,
        percentile(&claim_ms, 0.5),
        percentile(&claim_ms, 0.99),
    );
    let window: Vec<Sample> = samples
        .lock()
        .expect("samples")
        .iter()
        .filter(|s| s.at >= before.at && s.at <= after.at)
        .cloned()
        .collect();
    let live: Vec<f64> = window.iter().map(|s| s.live as f64).collect();
    let backlog_peak = window.iter().map(|s| s.backlog).max().unwrap_or(0);
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| answers/s (StasisStart of customers) | {:.1} |",
        per_sec(after.answered, before.answered)
    );
    println!(
        "| customers bridged/s | {:.1} |",
        per_sec(after.bridged, before.bridged)
    );
    println!(
        "| live calls (engine), mean / peak | {:.0} / {:.0} |",
        mean(&live),
        live.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "| ARI events sent by the simulator / parsed by the engine, per s | {:.0} / {:.0} |",
        per_sec(after.events_sent, before.events_sent),
        per_sec(after.events_parsed, before.events_parsed)
    );
    println!(
        "| events handled in the window | {} |",
        after.events_parsed - before.events_parsed
    );
    println!("| ARI requests/s | {:.0} |", per_sec(after.requests, before.requests));
    let mut kinds: Vec<(&str, u64)> = after
        .by_kind
        .iter()
        .map(|(k, v)| (*k, v - before.by_kind.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    let kinds: Vec<String> = kinds
        .iter()
        .map(|(k, v)| format!("{k} {:.0}", *v as f64 / secs))
        .collect();
    println!("| ARI requests/s by kind | {} |", kinds.join(", "));
    println!("| journal backlog: peak in window / at its end | {backlog_peak} / {backlog_at_end} entries |");
    println!(
        "| after dialling stopped: calls ended / journal applied | {} / {} |",
        if calls_ended {
            format!("{:.1} s", calls_ended_in.as_secs_f64())
        } else {
            "not within 60 s".to_owned()
        },
        if caught_up {
            format!("{:.1} s", caught_up_in.as_secs_f64())
        } else {
            format!("not within 300 s ({} left)", engine.status().journal_backlog)
        },
    );
    if let (Some(first), Some(last)) = (window.first(), window.last()) {
        println!(
            "| journal backlog / resident memory, start → end of the window | {} → {} entries / {:.0} → {:.0} MiB |",
            first.backlog,
            last.backlog,
            first.rss_kib as f64 / 1024.0,
            last.rss_kib as f64 / 1024.0
        );
    }
    println!(
        "| resident memory (whole process): start / operators ready / end of window / peak | {:.0} / {:.0} / {:.0} / {:.0} MiB |",
        rss_start as f64 / 1024.0,
        rss_ready as f64 / 1024.0,
        after.rss_kib as f64 / 1024.0,
        common::proc_kib("VmHWM") as f64 / 1024.0
    );
    let cpu = |a: f64, b: f64| (a - b, (a - b) / secs * 100.0);
    let (engine_cpu, engine_pct) = cpu(after.cpu_engine, before.cpu_engine);
    let (sim_cpu, sim_pct) = cpu(after.cpu_sim, before.cpu_sim);
    let (pg_cpu, pg_pct) = cpu(after.cpu_postgres, before.cpu_postgres);
    println!(
        "| CPU in the window: engine side (engine, ARI client, journal, claims) | {engine_cpu:.1} s ({engine_pct:.0} % of a core) |"
    );
    println!("| CPU in the window: simulated Asterisk | {sim_cpu:.1} s ({sim_pct:.0} % of a core) |");
    println!("| CPU in the window: PostgreSQL processes | {pg_cpu:.1} s ({pg_pct:.0} % of a core) |");
    let (busy, total) = (after.machine.0 - before.machine.0, after.machine.1 - before.machine.1);
    println!(
        "| machine: CPU busy over {} cores / load average at the end | {:.0} % / {} |",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        busy as f64 / total.max(1) as f64 * 100.0,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!("| handling latency (event written → engine's request arrives) | count | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    let lat = sim.lock().lat.clone();
    for (kind, label) in [
        ("answer", "answer: StasisStart → addChannel (media check + bridge)"),
        ("media", "media reply → addChannel"),
        ("hangup", "hang-up: ChannelDestroyed → stop recording"),
        ("abandon", "abandon: PlaybackFinished → hang-up"),
        ("dial", "dial command → originate"),
    ] {
        let ms: Vec<f64> = lat
            .get(kind)
            .map(|v| {
                v.iter()
                    .filter(|(at, _)| *at >= before.at && *at <= after.at)
                    .map(|(_, ms)| *ms)
                    .collect()
            })
            .unwrap_or_default();
        latency_row(label, &ms);
    }
    let login: Vec<f64> = lat
        .get("login")
        .map(|v| v.iter().map(|(_, ms)| *ms).collect())
        .unwrap_or_default();
    latency_row("login (set-up, before the window): StasisStart → create bridge", &login);
    println!();
    let outcomes: Vec<String> = outcomes
        .iter()
        .map(|(status, result, n)| format!("{status}/{result} {n}"))
        .collect();
    println!("attempts in the database (whole run): {}", outcomes.join(", "));
    match exit {
        Ok(Ok(Ok(exit))) => println!("engine ended: {exit:?}"),
        Ok(Ok(Err(e))) => println!("engine failed: {e:#}"),
        Ok(Err(e)) => println!("engine task: {e}"),
        Err(_) => println!("engine did not end within 60 s of the drain"),
    }
    Ok(())
}

fn latency_row(label: &str, ms: &[f64]) {
    if ms.is_empty() {
        println!("| {label} | 0 | - | - | - |");
        return;
    }
    println!(
        "| {label} | {} | {:.2} | {:.2} | {:.1} |",
        ms.len(),
        percentile(ms, 0.5),
        percentile(ms, 0.99),
        ms.iter().copied().fold(0.0, f64::max)
    );
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    while !done() {
        if Instant::now() > until {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn wait_ready(engine: &EngineHandle, want: usize, limit: Duration) -> anyhow::Result<usize> {
    let until = Instant::now() + limit;
    loop {
        let ready = engine.snapshot().await.map_or(0, |s| s.ready.len());
        if ready >= want {
            return Ok(ready);
        }
        if Instant::now() > until {
            anyhow::bail!("only {ready} of {want} operators ready after {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- measurements ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    live: usize,
    backlog: u64,
    rss_kib: u64,
}

/// Every 200 ms on a thread of its own (a busy runtime does not delay it).
fn sample(engine: EngineHandle, samples: Arc<Mutex<Vec<Sample>>>, sampling: Arc<AtomicBool>) {
    while sampling.load(Ordering::Acquire) {
        let s = engine.status();
        samples.lock().expect("samples").push(Sample {
            at: Instant::now(),
            live: s.live_calls,
            backlog: s.journal_backlog,
            rss_kib: common::proc_kib("VmRSS"),
        });
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Counters read at the start and the end of the window.
struct Counters {
    at: Instant,
    answered: u64,
    bridged: u64,
    events_sent: u64,
    events_parsed: u64,
    requests: u64,
    by_kind: HashMap<&'static str, u64>,
    rss_kib: u64,
    cpu_engine: f64,
    cpu_sim: f64,
    cpu_postgres: f64,
    /// Machine CPU ticks: busy, total.
    machine: (u64, u64),
}

impl Counters {
    fn take(sim: &Sim, ws: &obzvon::ari::ws::StreamStats) -> Counters {
        let (process, sim_threads) = process_cpu();
        let (cpu_postgres, machine, rss_kib) = (postgres_cpu(), machine_cpu(), common::proc_kib("VmRSS"));
        let st = sim.lock();
        Counters {
            at: Instant::now(),
            answered: st.answered,
            bridged: st.bridged,
            events_sent: sim.events_sent.load(Ordering::Relaxed),
            events_parsed: ws.events.load(Ordering::Relaxed),
            requests: st.requests.values().sum(),
            by_kind: st.requests.clone(),
            rss_kib,
            cpu_engine: process - sim_threads,
            cpu_sim: sim_threads,
            cpu_postgres,
            machine,
        }
    }
}

/// User + system seconds of a `/proc/.../stat` line (clock ticks of 1/100 s), and its name.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name, ticks as f64 / 100.0))
}

/// The whole process's CPU seconds, and those of the simulator's threads.
fn process_cpu() -> (f64, f64) {
    let process = stat_cpu("/proc/self/stat").map_or(0.0, |(_, s)| s);
    let sim = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| stat_cpu(&format!("{}/stat", t.path().display())))
        .filter(|(name, _)| name.starts_with("sim-rt"))
        .map(|(_, s)| s)
        .sum();
    (process, sim)
}

fn postgres_cpu() -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| stat_cpu(&format!("{}/stat", e.path().display())))
        .filter(|(name, _)| name == "postgres")
        .map(|(_, s)| s)
        .sum()
}

fn machine_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

// ---- the simulated Asterisk -----------------------------------------------------------------

/// Events whose sending starts a latency measurement, by what they are about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Probe {
    Answer(String),
    End(String),
    Abandon(String),
    /// The last 12 characters of the phone's channel id, which the session's bridge id ends with.
    Login(String),
}

struct Out {
    body: Value,
    probe: Option<Probe>,
}

struct Sim {
    state: Mutex<State>,
    ws_tx: mpsc::UnboundedSender<Out>,
    ws_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Out>>,
    events_sent: AtomicU64,
    answer_ratio: f64,
    ring_ms: (u64, u64),
    talk_ms: (u64, u64),
}

#[derive(Default)]
struct State {
    channels: HashMap<String, Chan>,
    bridges: HashMap<String, Bridge>,
    /// Live recordings: name → bridge.
    recordings: HashMap<String, String>,
    /// Playbacks: id → channel.
    playbacks: HashMap<String, String>,
    probes: HashMap<Probe, Instant>,
    /// Attempts handed to the engine, and when.
    dials: HashMap<String, Instant>,
    /// The last `rtp_statistics` answer for each channel.
    media_reply: HashMap<String, Instant>,
    lat: HashMap<&'static str, Vec<(Instant, f64)>>,
    requests: HashMap<&'static str, u64>,
    answered: u64,
    bridged: u64,
    next: u64,
}

struct Chan {
    id: String,
    name: String,
    state: &'static str,
    created: Instant,
    created_txt: String,
    number: String,
    context: &'static str,
    app_name: &'static str,
    app_data: String,
    in_app: bool,
    bridge: Option<String>,
    customer: bool,
    /// Woken when the channel is bridged or destroyed.
    wake: Arc<Notify>,
}

struct Bridge {
    id: String,
    name: String,
    channels: Vec<String>,
    created_txt: String,
}

enum Fate {
    Answer { ring: Duration, talk: Duration },
    Busy(Duration),
    NoAnswer(Duration),
}

fn ari_time() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
}

impl Chan {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "state": self.state, "protocol_id": "",
            "caller": {"name": "", "number": self.number}, "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {"context": self.context, "exten": "s", "priority": 1,
                         "app_name": self.app_name, "app_data": self.app_data},
            "creationtime": self.created_txt, "language": "en",
        })
    }
}

impl Bridge {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "technology": "simple_bridge", "bridge_type": "mixing", "bridge_class": "stasis",
            "creator": "Stasis", "name": self.name, "channels": self.channels,
            "creationtime": self.created_txt, "video_mode": "talker",
        })
    }
}

impl Sim {
    fn new(opts: &Opts) -> Arc<Sim> {
        let (ws_tx, ws_rx) = mpsc::unbounded_channel();
        Arc::new(Sim {
            state: Mutex::new(State::default()),
            ws_tx,
            ws_rx: tokio::sync::Mutex::new(ws_rx),
            events_sent: AtomicU64::new(0),
            answer_ratio: opts.answer_ratio,
            ring_ms: opts.ring_ms,
            talk_ms: opts.talk_ms,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("simulator state")
    }

    /// Queues an event for the websocket (called with the state locked, so events go out in
    /// the order of the changes they report).
    fn emit(&self, kind: &str, mut body: Value, probe: Option<Probe>) {
        body["type"] = json!(kind);
        body["timestamp"] = json!(ari_time());
        body["application"] = json!("obzvon");
        body["asterisk_id"] = json!("02:fc:00:00:00:01");
        let _ = self.ws_tx.send(Out { body, probe });
    }

    fn fate(&self) -> Fate {
        let mut rng = rand::rng();
        let ms = |rng: &mut rand::rngs::ThreadRng, (a, b): (u64, u64)| Duration::from_millis(rng.random_range(a..=b));
        if rng.random_bool(self.answer_ratio) {
            Fate::Answer {
                ring: ms(&mut rng, self.ring_ms),
                talk: ms(&mut rng, self.talk_ms),
            }
        } else if rng.random_bool(0.6) {
            Fate::Busy(ms(&mut rng, (500, 2000)))
        } else {
            Fate::NoAnswer(ms(&mut rng, (2000, 6000)))
        }
    }

    /// Ends a channel as Asterisk reports it: out of its bridge, out of the application, gone.
    fn destroy(&self, st: &mut State, id: &str, cause: (i32, &str, Option<i32>), probe: Option<Probe>) -> bool {
        let Some(ch) = st.channels.remove(id) else {
            return false;
        };
        let c = ch.json();
        if let Some(b) = ch.bridge.as_ref().and_then(|b| st.bridges.get_mut(b)) {
            b.channels.retain(|x| x != id);
            self.emit("ChannelLeftBridge", json!({"bridge": b.json(), "channel": c}), None);
        }
        self.emit("ChannelHangupRequest", json!({"cause": cause.0, "channel": c}), None);
        if ch.in_app {
            self.emit("StasisEnd", json!({"channel": c}), None);
        }
        let mut destroyed = json!({"cause": cause.0, "cause_txt": cause.1, "channel": c});
        if let Some(sip) = cause.2 {
            destroyed["tech_cause"] = json!(sip);
        }
        self.emit("ChannelDestroyed", destroyed, probe);
        st.media_reply.remove(id);
        ch.wake.notify_one();
        true
    }
}

impl State {
    fn latency(&mut self, kind: &'static str, since: Instant) {
        let now = Instant::now();
        self.lat
            .entry(kind)
            .or_default()
            .push((now, (now - since).as_secs_f64() * 1000.0));
    }

    fn application(&self) -> Value {
        let channels: Vec<&str> = self
            .channels
            .values()
            .filter(|c| c.in_app)
            .map(|c| c.id.as_str())
            .collect();
        let bridges: Vec<&str> = self.bridges.keys().map(String::as_str).collect();
        json!({"name": "obzvon", "channel_ids": channels, "bridge_ids": bridges, "endpoint_ids": [],
               "device_names": [], "events_allowed": [], "events_disallowed": []})
    }
}

/// One port for REST and the events websocket, as Asterisk's HTTP server has them: each
/// connection is looked at, upgrades to `/ari/events` go to the websocket, the rest to axum.
async fn serve(listener: std::net::TcpListener, sim: Arc<Sim>) {
    let listener = TcpListener::from_std(listener).expect("listener on the simulator's runtime");
    let addr = listener.local_addr().expect("bound");
    let (http_tx, http_rx) = mpsc::channel(64);
    let app = axum::Router::new().fallback(ari).with_state(sim.clone());
    tokio::spawn(async move {
        let _ = axum::serve(Diverted { rx: http_rx, addr }, app).await;
    });
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (http_tx, sim) = (http_tx.clone(), sim.clone());
        tokio::spawn(async move {
            let mut head = [0u8; 15];
            let n = loop {
                match stream.peek(&mut head).await {
                    Ok(n) if n == head.len() || n == 0 => break n,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Err(_) => return,
                }
            };
            if head[..n] == b"GET /ari/events"[..] {
                events(stream, sim).await;
            } else {
                let _ = http_tx.send((stream, peer)).await;
            }
        });
    }
}

struct Diverted {
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for Diverted {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.rx.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// The events websocket: writes what is queued, one frame per event, as Asterisk does.
async fn events(stream: TcpStream, sim: Arc<Sim>) {
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = socket.split();
    // Reading keeps the engine's pings answered.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = source.next().await {} });
    let mut queue = sim.ws_rx.lock().await;
    while let Some(out) = queue.recv().await {
        let text = out.body.to_string();
        if let Some(probe) = out.probe {
            sim.lock().probes.insert(probe, Instant::now());
        }
        if sink.send(Message::text(text)).await.is_err() {
            break;
        }
        sim.events_sent.fetch_add(1, Ordering::Relaxed);
    }
    reader.abort();
}

/// Operators' phones dial the login feature code, 250 a second.
async fn log_in(sim: Arc<Sim>, operators: usize) {
    for n in 1..=operators {
        {
            let mut st = sim.lock();
            let id = format!("1780000000.{n:06}");
            let ch = Chan {
                id: id.clone(),
                name: format!("PJSIP/op{n}-{n:08x}"),
                state: "Up",
                created: Instant::now(),
                created_txt: ari_time(),
                number: format!("op{n}"),
                context: "obzvon-operators",
                app_name: "Stasis",
                app_data: "obzvon,login".to_owned(),
                in_app: true,
                bridge: None,
                customer: false,
                wake: Arc::new(Notify::new()),
            };
            let probe = Probe::Login(id[id.len() - 12..].to_owned());
            sim.emit(
                "StasisStart",
                json!({"args": ["login"], "channel": ch.json()}),
                Some(probe),
            );
            st.channels.insert(id, ch);
        }
        if n % 25 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A customer's phone: rings, then answers and talks until it hangs up, or fails.
async fn customer(sim: Arc<Sim>, id: String, args: Vec<String>, fate: Fate) {
    tokio::time::sleep(Duration::from_millis(40)).await;
    {
        let mut st = sim.lock();
        let Some(ch) = st.channels.get_mut(&id) else { return };
        ch.state = "Ringing";
        let c = ch.json();
        sim.emit(
            "Dial",
            json!({"peer": c, "dialstatus": "", "dialstring": ch.number}),
            None,
        );
        sim.emit("ChannelStateChange", json!({"channel": c}), None);
        sim.emit("Dial", json!({"peer": c, "dialstatus": "RINGING"}), None);
    }
    let (ring, talk) = match fate {
        Fate::Answer { ring, talk } => (ring, talk),
        Fate::Busy(after) | Fate::NoAnswer(after) => {
            tokio::time::sleep(after).await;
            let (status, cause) = match fate {
                Fate::Busy(_) => ("BUSY", (17, "User busy", Some(486))),
                _ => ("NOANSWER", (19, "User alerting, no answer", Some(480))),
            };
            let mut st = sim.lock();
            if let Some(ch) = st.channels.get(&id) {
                sim.emit("Dial", json!({"peer": ch.json(), "dialstatus": status}), None);
            }
            sim.destroy(&mut st, &id, cause, None);
            return;
        }
    };
    tokio::time::sleep(ring).await;
    let wake = {
        let mut st = sim.lock();
        let Some(ch) = st.channels.get_mut(&id) else { return };
        ch.state = "Up";
        ch.in_app = true;
        ch.app_name = "Stasis";
        ch.app_data = format!("obzvon,{}", args.join(","));
        let c = ch.json();
        let wake = ch.wake.clone();
        sim.emit("Dial", json!({"peer": c, "dialstatus": "ANSWER"}), None);
        sim.emit("ChannelStateChange", json!({"channel": c}), None);
        sim.emit(
            "StasisStart",
            json!({"args": args, "channel": c}),
            Some(Probe::Answer(id.clone())),
        );
        st.answered += 1;
        wake
    };
    // The customer waits for the operator (or the abandon message, then the engine's hang-up).
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match sim.lock().channels.get(&id) {
            None => return,
            Some(ch) if ch.bridge.is_some() => break,
            Some(_) => {}
        }
        if tokio::time::timeout_at(until, wake.notified()).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(talk).await;
    let mut st = sim.lock();
    let bridged = st.channels.get(&id).is_some_and(|c| c.bridge.is_some());
    let probe = bridged.then(|| Probe::End(id.clone()));
    sim.destroy(&mut st, &id, (16, "Normal Clearing", None), probe);
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn empty() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn missing(what: &str) -> Response {
    reply(StatusCode::NOT_FOUND, json!({"message": format!("{what} not found")}))
}

/// Every ARI request: routed by hand (a handful of paths), counted by kind.
async fn ari(Shared(sim): Shared<Arc<Sim>>, method: Method, uri: Uri, _body: Bytes) -> Response {
    let path = uri.path().strip_prefix("/ari/").unwrap_or("");
    let segs: Vec<String> = path
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let query: HashMap<String, String> = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let q = |k: &str| query.get(k).cloned().unwrap_or_default();
    let mut guard = sim.lock();
    let st = &mut *guard;
    let kind: &'static str = match (&method, segs.as_slice()) {
        (&Method::POST, ["channels"]) => "originate",
        (&Method::DELETE, ["channels", _]) => "hangup",
        (&Method::GET, ["channels", _, "rtp_statistics"]) => "rtp_statistics",
        (&Method::POST, ["bridges", _, "addChannel"]) => "addChannel",
        (&Method::POST, ["bridges", _, "record"]) => "record",
        (&Method::POST, ["recordings", "live", _, "stop"]) => "stop recording",
        (&Method::POST, ["bridges", _]) => "create bridge",
        (&Method::POST | &Method::DELETE, ["applications", _, "subscription"]) => "subscription",
        (&Method::POST, ["channels", _, "play"]) => "play",
        (_, [first, ..]) => match *first {
            "channels" => "channels (other)",
            "bridges" => "bridges (other)",
            _ => "other",
        },
        _ => "other",
    };
    *st.requests.entry(kind).or_default() += 1;
    match (&method, segs.as_slice()) {
        (&Method::GET, ["applications", _]) => reply(StatusCode::OK, st.application()),
        (&Method::GET, ["applications"]) => reply(StatusCode::OK, json!([st.application()])),
        (&Method::POST | &Method::DELETE, ["applications", _, "subscription"]) => {
            reply(StatusCode::OK, st.application())
        }
        (&Method::GET, ["asterisk", "info"]) => reply(
            StatusCode::OK,
            json!({"system": {"version": "22.10.0-sim", "entity_id": "02:fc:00:00:00:01"}}),
        ),
        (&Method::GET, ["channels"]) => {
            let all: Vec<Value> = st.channels.values().map(Chan::json).collect();
            reply(StatusCode::OK, Value::Array(all))
        }
        (&Method::GET, ["bridges"]) => {
            let all: Vec<Value> = st.bridges.values().map(Bridge::json).collect();
            reply(StatusCode::OK, Value::Array(all))
        }
        (&Method::POST, ["channels"]) => {
            let id = q("channelId");
            if st.channels.contains_key(&id) {
                return reply(StatusCode::CONFLICT, json!({"message": "channel id in use"}));
            }
            if let Some(sent) = st.dials.remove(&id) {
                st.latency("dial", sent);
            }
            st.next += 1;
            let endpoint = q("endpoint");
            let ch = Chan {
                id: id.clone(),
                name: format!("PJSIP/trunk-{:08x}", st.next),
                state: "Down",
                created: Instant::now(),
                created_txt: ari_time(),
                number: endpoint
                    .split_once('/')
                    .map_or(endpoint.as_str(), |(_, n)| n)
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                context: "obzvon-trunk-in",
                app_name: "AppDial2",
                app_data: "(Outgoing Line)".to_owned(),
                in_app: false,
                bridge: None,
                customer: true,
                wake: Arc::new(Notify::new()),
            };
            let body = ch.json();
            st.channels.insert(id.clone(), ch);
            let args: Vec<String> = q("appArgs").split(',').map(str::to_owned).collect();
            tokio::spawn(customer(sim.clone(), id, args, sim.fate()));
            reply(StatusCode::OK, body)
        }
        (&Method::DELETE, ["channels", id]) => {
            if let Some(sent) = st.probes.remove(&Probe::Abandon((*id).to_owned())) {
                st.latency("abandon", sent);
            }
            if sim.destroy(st, id, (16, "Normal Clearing", None), None) {
                empty()
            } else {
                missing("Channel")
            }
        }
        (&Method::GET, ["channels", id]) => match st.channels.get(*id) {
            Some(c) => reply(StatusCode::OK, c.json()),
            None => missing("Channel"),
        },
        (&Method::GET, ["channels", id, "rtp_statistics"]) => {
            let Some(ch) = st.channels.get(*id) else {
                return missing("Channel");
            };
            // 20 ms packets since the channel began, counted when Asterisk answers.
            let packets = (ch.created.elapsed().as_secs_f64() * 50.0) as u64;
            st.media_reply.insert((*id).to_owned(), Instant::now());
            reply(
                StatusCode::OK,
                json!({"rxcount": packets, "txcount": packets, "rxjitter": 0.001, "txjitter": 0.001,
                       "rxploss": 0, "txploss": 0, "rtt": 0.002, "local_ssrc": 1, "remote_ssrc": 2}),
            )
        }
        (&Method::POST, ["channels", id, "answer" | "continue" | "ring" | "dial"]) => {
            if st.channels.contains_key(*id) {
                empty()
            } else {
                missing("Channel")
            }
        }
        (&Method::POST, ["channels", id, "play"]) => {
            if !st.channels.contains_key(*id) {
                return missing("Channel");
            }
            let playback = q("playbackId");
            let body = json!({"id": playback, "media_uri": q("media"), "target_uri": format!("channel:{id}"),
                              "state": "playing", "language": "en"});
            st.playbacks.insert(playback.clone(), (*id).to_owned());
            sim.emit("PlaybackStarted", json!({"playback": body}), None);
            let (sim, channel, started) = (sim.clone(), (*id).to_owned(), body.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let mut st = sim.lock();
                if st.playbacks.remove(&playback).is_some() && st.channels.contains_key(&channel) {
                    let mut done = started;
                    done["state"] = json!("done");
                    sim.emit(
                        "PlaybackFinished",
                        json!({"playback": done}),
                        Some(Probe::Abandon(channel)),
                    );
                }
            });
            reply(StatusCode::CREATED, body)
        }
        (&Method::DELETE, ["playbacks", id]) => {
            if st.playbacks.remove(*id).is_some() {
                empty()
            } else {
                missing("Playback")
            }
        }
        (&Method::POST, ["bridges", id]) => {
            let tail = &id[id.len().saturating_sub(12)..];
            if let Some(sent) = st.probes.remove(&Probe::Login(tail.to_owned())) {
                st.latency("login", sent);
            }
            let bridge = st.bridges.entry((*id).to_owned()).or_insert_with(|| Bridge {
                id: (*id).to_owned(),
                name: q("name"),
                channels: Vec::new(),
                created_txt: ari_time(),
            });
            reply(StatusCode::OK, bridge.json())
        }
        (&Method::DELETE, ["bridges", id]) => match st.bridges.remove(*id) {
            Some(b) => {
                for c in &b.channels {
                    if let Some(ch) = st.channels.get_mut(c) {
                        ch.bridge = None;
                    }
                }
                sim.emit("BridgeDestroyed", json!({"bridge": b.json()}), None);
                empty()
            }
            None => missing("Bridge"),
        },
        (&Method::POST, ["bridges", id, "addChannel"]) => {
            if !st.bridges.contains_key(*id) {
                return missing("Bridge");
            }
            let wanted = q("channel");
            let ids: Vec<&str> = wanted.split(',').collect();
            if ids.iter().any(|c| !st.channels.get(*c).is_some_and(|c| c.in_app)) {
                return reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Channel not in Stasis application"}),
                );
            }
            for c in ids {
                let ch = st.channels.get_mut(c).expect("checked");
                ch.bridge = Some((*id).to_owned());
                ch.wake.notify_one();
                let (customer, channel) = (ch.customer, ch.json());
                let bridge = st.bridges.get_mut(*id).expect("checked");
                bridge.channels.push(c.to_owned());
                let others: Vec<String> = bridge.channels.iter().filter(|x| *x != c).cloned().collect();
                sim.emit(
                    "ChannelEnteredBridge",
                    json!({"bridge": bridge.json(), "channel": channel}),
                    None,
                );
                if customer {
                    st.bridged += 1;
                    if let Some(sent) = st.probes.remove(&Probe::Answer(c.to_owned())) {
                        st.latency("answer", sent);
                    }
                    if let Some(sent) = others.iter().find_map(|o| st.media_reply.get(o).copied()) {
                        st.latency("media", sent);
                    }
                }
            }
            empty()
        }
        (&Method::POST, ["bridges", id, "removeChannel"]) => {
            let c = q("channel");
            match st.bridges.get_mut(*id) {
                Some(b) => b.channels.retain(|x| *x != c),
                None => return missing("Bridge"),
            }
            if let Some(ch) = st.channels.get_mut(&c) {
                ch.bridge = None;
            }
            empty()
        }
        (&Method::POST, ["bridges", id, "record"]) => {
            if !st.bridges.contains_key(*id) {
                return missing("Bridge");
            }
            let name = q("name");
            let body = json!({"name": name, "format": q("format"), "target_uri": format!("bridge:{id}"),
                              "state": "recording"});
            st.recordings.insert(name, (*id).to_owned());
            sim.emit("RecordingStarted", json!({"recording": body}), None);
            reply(StatusCode::CREATED, body)
        }
        (&Method::POST, ["bridges", id, "play"]) => {
            let body = json!({"id": q("playbackId"), "media_uri": q("media"), "target_uri": format!("bridge:{id}"),
                              "state": "playing"});
            reply(StatusCode::CREATED, body)
        }
        (&Method::POST, ["recordings", "live", name, "stop"]) => match st.recordings.remove(*name) {
            Some(bridge) => {
                if let Some(attempt) = name.strip_prefix("obzvon-") {
                    if let Some(sent) = st.probes.remove(&Probe::End(attempt.to_owned())) {
                        st.latency("hangup", sent);
                    }
                }
                sim.emit(
                    "RecordingFinished",
                    json!({"recording": {"name": name, "format": "wav", "target_uri": format!("bridge:{bridge}"),
                                         "state": "done"}}),
                    None,
                );
                empty()
            }
            None => missing("Recording"),
        },
        _ => missing("Resource"),
    }
}

// ---- extra: the core alone ------------------------------------------------------------------

/// The same traffic through `Core::handle` alone, in simulated time: no runtime, no sockets,
/// no journal; every ARI call the core asks for is answered 1 ms later (simulated). Prints the
/// wall time of each `handle` (and of the `next_deadline` scan the shell makes after each
/// input), so a slow figure in the full run can be told apart from the core's own cost.
fn core_only(opts: &Opts) -> anyhow::Result<()> {
    use engine::core::{Action, AriOp, AriReply, AsteriskView, Command, Config, Core, Input, Now, OperatorInfo};
    use obzvon::ids::{AttemptId, CampaignId, LeadId, OperatorId};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    enum Item {
        Feed(Input),
        Ring(String),
        Answer(String),
        Fail(String, i32, &'static str, i32),
        HangUp(String),
        Destroyed(String),
        PlaybackDone(String),
        Dial,
        Tick,
    }
    struct VChan {
        started: Duration,
        bridged: bool,
        fate: Fate,
        args: Vec<String>,
    }
    let sim = Sim::new(opts);
    let base = Instant::now();
    let wall0 = Utc::now();
    let now_at = |t: Duration| Now {
        at: base + t,
        wall: wall0 + chrono::Duration::from_std(t).expect("short"),
    };
    let event = |kind: &str, t: Duration, mut body: Value| -> Input {
        body["type"] = json!(kind);
        body["timestamp"] = json!((wall0 + chrono::Duration::from_std(t).expect("short"))
            .format("%Y-%m-%dT%H:%M:%S%.3f%z")
            .to_string());
        body["application"] = json!("obzvon");
        Input::Event(obzvon::ari::Event::parse(&body.to_string()).expect("simulated events parse"))
    };
    let chan = |id: &str, name: String, state: &'static str, customer: bool| Chan {
        id: id.to_owned(),
        name,
        state,
        created: base,
        created_txt: ari_time(),
        number: String::new(),
        context: if customer {
            "obzvon-trunk-in"
        } else {
            "obzvon-operators"
        },
        app_name: "Stasis",
        app_data: if customer {
            "obzvon,attempt".into()
        } else {
            "obzvon,login".into()
        },
        in_app: true,
        bridge: None,
        customer,
        wake: Arc::new(Notify::new()),
    };

    let mut core = Core::new(Config {
        instance: "bench".to_owned(),
        ..Config::default()
    });
    let spec = Arc::new(
        CampaignSpec::from_json(json!({
            "name": "bench", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000",
            "max_concurrent_calls": 10000, "calls_per_second": 1000, "wrap_up_secs": opts.wrap_up_secs,
            "recording": true,
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    );
    let campaign = CampaignId::new();
    let ops: Vec<OperatorInfo> = (1..=opts.operators)
        .map(|n| OperatorInfo {
            id: OperatorId::new(),
            name: format!("Operator {n}"),
            endpoint: format!("PJSIP/op{n}"),
            skills: Vec::new(),
            enabled: true,
        })
        .collect();
    struct Queue {
        heap: BinaryHeap<Reverse<(Duration, u64)>>,
        items: HashMap<u64, Item>,
        seq: u64,
    }
    impl Queue {
        fn push(&mut self, at: Duration, item: Item) {
            self.seq += 1;
            self.items.insert(self.seq, item);
            self.heap.push(Reverse((at, self.seq)));
        }
        fn pop(&mut self) -> Option<(Duration, Item)> {
            let Reverse((at, seq)) = self.heap.pop()?;
            Some((at, self.items.remove(&seq).expect("queued")))
        }
    }
    let mut queue = Queue {
        heap: BinaryHeap::new(),
        items: HashMap::new(),
        seq: 0,
    };
    let mut chans: HashMap<String, VChan> = HashMap::new();
    let mut phones: HashMap<String, Duration> = HashMap::new();
    queue.push(Duration::ZERO, Item::Feed(Input::Directory(ops.clone())));
    queue.push(Duration::ZERO, Item::Feed(Input::AriConnected));
    queue.push(Duration::ZERO, Item::Feed(Input::Reconcile(AsteriskView::default())));
    for (n, _) in ops.iter().enumerate() {
        let id = format!("1780000000.{:06}", n + 1);
        let at = Duration::from_millis(1 + n as u64 * 4);
        let c = chan(&id, format!("PJSIP/op{}-{:08x}", n + 1, n + 1), "Up", false);
        queue.push(
            at,
            Item::Feed(event(
                "StasisStart",
                at,
                json!({"args": ["login"], "channel": c.json()}),
            )),
        );
        phones.insert(id, at);
    }
    let login_done = Duration::from_millis(opts.operators as u64 * 4 + 1000);
    let dial_from = login_done;
    let window_start = dial_from + Duration::from_secs(opts.warmup);
    let end = window_start + Duration::from_secs(opts.secs);
    let step = Duration::from_secs_f64(1.0 / opts.dial_rate());
    queue.push(dial_from, Item::Dial);
    queue.push(Duration::from_secs(1), Item::Tick);
    let mut tick_at = Duration::from_secs(1);
    let ms = Duration::from_millis(1);
    let mut timings: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut writes = 0u64;
    let mut dial_n = 0u64;
    while let Some((t, item)) = queue.pop() {
        if t > end + Duration::from_secs(30) {
            break;
        }
        let input = match item {
            Item::Feed(input) => input,
            Item::Tick => {
                if t != tick_at {
                    continue;
                }
                queue.push(t + Duration::from_secs(1), Item::Tick);
                tick_at = t + Duration::from_secs(1);
                Input::Tick
            }
            Item::Dial => {
                if t < end {
                    queue.push(dial_from + step * (dial_n as u32 + 1), Item::Dial);
                }
                dial_n += 1;
                if t >= end || core.live_calls() >= opts.calls {
                    continue;
                }
                let attempt = AttemptId::new();
                Input::Command(Command::Dial(Box::new(engine::Claimed {
                    attempt,
                    lead: LeadId::new(),
                    campaign,
                    phone: format!("+7916{dial_n:07}"),
                    spec: spec.clone(),
                    preferred_operator: None,
                })))
            }
            Item::Ring(id) => {
                if !chans.contains_key(&id) {
                    continue;
                }
                event(
                    "ChannelStateChange",
                    t,
                    json!({"channel": chan(&id, "PJSIP/trunk-1".into(), "Ringing", true).json()}),
                )
            }
            Item::Answer(id) => {
                let Some(c) = chans.get(&id) else { continue };
                let body = json!({"args": c.args, "channel": chan(&id, "PJSIP/trunk-1".into(), "Up", true).json()});
                event("StasisStart", t, body)
            }
            Item::Fail(id, cause, txt, sip) => {
                if chans.remove(&id).is_none() {
                    continue;
                }
                let c = chan(&id, "PJSIP/trunk-1".into(), "Ringing", true).json();
                event(
                    "ChannelDestroyed",
                    t,
                    json!({"cause": cause, "cause_txt": txt, "tech_cause": sip, "channel": c}),
                )
            }
            Item::HangUp(id) | Item::Destroyed(id) => {
                if chans.remove(&id).is_none() {
                    continue;
                }
                let c = chan(&id, "PJSIP/trunk-1".into(), "Up", true).json();
                event(
                    "ChannelDestroyed",
                    t,
                    json!({"cause": 16, "cause_txt": "Normal Clearing", "channel": c}),
                )
            }
            Item::PlaybackDone(id) => {
                if !chans.contains_key(&id) {
                    continue;
                }
                let playback = json!({"id": format!("abandon-{id}"), "media_uri": "sound:x",
                                      "target_uri": format!("channel:{id}"), "state": "done"});
                event("PlaybackFinished", t, json!({"playback": playback}))
            }
        };
        let kind = match &input {
            Input::Event(_) => "event",
            Input::AriDone { .. } => "ARI reply",
            Input::Tick => "tick",
            Input::Command(_) => "dial command",
            _ => "set-up",
        };
        let now = now_at(t);
        let started = Instant::now();
        let actions = core.handle(input, now);
        let handled = started.elapsed().as_secs_f64() * 1e6;
        let started = Instant::now();
        let deadline = core.next_deadline();
        let scanned = started.elapsed().as_secs_f64() * 1e6;
        if t >= window_start && t < end {
            timings.entry(kind).or_default().push(handled);
            timings.entry("next_deadline scan").or_default().push(scanned);
        }
        if let Some(d) = deadline {
            let d = d.saturating_duration_since(base).max(t);
            if d < tick_at {
                tick_at = d;
                queue.push(d, Item::Tick);
            }
        }
        for action in actions {
            let calls = match action {
                Action::Ari(calls) => calls,
                Action::Persist(_) => {
                    writes += u64::from(t >= window_start && t < end);
                    continue;
                }
                _ => continue,
            };
            for call in calls {
                let reply_ok = |op: AriOp| {
                    Item::Feed(Input::AriDone {
                        op,
                        result: Ok(AriReply::Ok),
                    })
                };
                match &call.op {
                    AriOp::Originate { channel, app_args, .. } => {
                        let id = channel.as_str().to_owned();
                        let fate = sim.fate();
                        match &fate {
                            Fate::Answer { ring, .. } => queue.push(t + *ring, Item::Answer(id.clone())),
                            Fate::Busy(after) => queue.push(t + *after, Item::Fail(id.clone(), 17, "User busy", 486)),
                            Fate::NoAnswer(after) => {
                                queue.push(t + *after, Item::Fail(id.clone(), 19, "User alerting, no answer", 480))
                            }
                        }
                        queue.push(t + Duration::from_millis(40), Item::Ring(id.clone()));
                        chans.insert(
                            id,
                            VChan {
                                started: t,
                                bridged: false,
                                fate,
                                args: app_args.clone(),
                            },
                        );
                        queue.push(t + ms, reply_ok(call.op.clone()));
                    }
                    AriOp::AddToBridge { channel, .. } => {
                        if let Some(c) = chans.get_mut(channel.as_str()) {
                            if !c.bridged {
                                c.bridged = true;
                                if let Fate::Answer { talk, .. } = c.fate {
                                    queue.push(t + talk, Item::HangUp(channel.as_str().to_owned()));
                                }
                            }
                        }
                        queue.push(t + ms, reply_ok(call.op.clone()));
                    }
                    AriOp::RtpReceived { channel } => {
                        let from = phones
                            .get(channel.as_str())
                            .copied()
                            .or_else(|| chans.get(channel.as_str()).map(|c| c.started))
                            .unwrap_or_default();
                        let count = ((t + ms).saturating_sub(from).as_secs_f64() * 50.0) as u64;
                        let result = Ok(AriReply::Packets {
                            count,
                            at: base + t + ms,
                        });
                        queue.push(
                            t + ms,
                            Item::Feed(Input::AriDone {
                                op: call.op.clone(),
                                result,
                            }),
                        );
                    }
                    AriOp::Record { .. } => queue.push(t + ms, reply_ok(call.op.clone())),
                    AriOp::Hangup { channel, .. } => queue.push(t + ms, Item::Destroyed(channel.as_str().to_owned())),
                    AriOp::Play { channel, .. } => queue.push(
                        t + Duration::from_secs(3),
                        Item::PlaybackDone(channel.as_str().to_owned()),
                    ),
                    _ => {}
                }
            }
        }
    }
    println!();
    println!(
        "core only (extra; no I/O): the same traffic in simulated time, {} s measured; {writes} state writes emitted",
        opts.secs
    );
    println!("| Core::handle by input | count | per s | p50 µs | p99 µs | max µs | CPU % of a core |");
    println!("|---|---|---|---|---|---|---|");
    let mut kinds: Vec<_> = timings.into_iter().collect();
    kinds.sort_by(|a, b| a.0.cmp(b.0));
    for (kind, us) in kinds {
        println!(
            "| {kind} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} |",
            us.len(),
            us.len() as f64 / opts.secs as f64,
            percentile(&us, 0.5),
            percentile(&us, 0.99),
            us.iter().copied().fold(0.0, f64::max),
            us.iter().sum::<f64>() / 1e6 / opts.secs as f64 * 100.0
        );
    }
    Ok(())
}
