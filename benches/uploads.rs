//! Stalled-upload benchmark: latency of `GET /api/v1/campaigns` on a real obzvon, first with
//! no other load, then while stalled lead uploads are open (default 50, OBZVON_BENCH_STALLED;
//! default 2000 GETs per phase, OBZVON_BENCH_REQUESTS), and what became of the uploads: refused
//! at once (import slots full) or held until `http.body_idle_secs` cut them off. The app runs
//! in this process on a fresh database of the configured PostgreSQL, with the test bed's ARI
//! and RabbitMQ (`eval "$(scripts/testbed.sh env)"`); the database is dropped afterwards.
//! Run: `cargo bench --bench uploads`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use obzvon::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough that the stalled uploads outlast both phases' GETs.
const BODY_IDLE_SECS: u64 = 20;
const BODY_TOTAL_SECS: u64 = 600;
/// What each stalled upload promises and never sends.
const PROMISED_BYTES: usize = 10_000_000;
/// An upload answered within this long of being sent was refused at once; later, it was held.
const AT_ONCE: Duration = Duration::from_secs(1);
/// How long the held uploads' answers are waited for once the measurement is over.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Requests sent before each measurement and not counted (connection set-up, first queries).
const WARM_UP: usize = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("uploads benchmark: run it with `cargo bench --bench uploads`");
        return Ok(());
    }
    let stalled = env_count("OBZVON_BENCH_STALLED", 50);
    let requests = env_count("OBZVON_BENCH_REQUESTS", 2000).max(1);
    common::with_scratch_database("uploads", |settings, url| async move {
        run(settings, &url, stalled, requests).await
    })
    .await
}

async fn run(mut settings: Settings, url: &str, stalled: usize, requests: usize) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await?;
    obzvon::db::migrate(&pool).await?;
    let (token, _) = obzvon::auth::create(&pool, "bench", &["admin".to_owned()], "bench").await?;
    pool.close().await;

    let journal = tempfile::tempdir()?;
    settings.log.filter = "warn".to_owned();
    obzvon::telemetry::init(&settings.log);
    settings.database.url = url.to_owned().into();
    settings.http.listen = "127.0.0.1:0".parse()?;
    settings.ari.app = "obzvon-bench-uploads".to_owned();
    settings.instance.id = format!("bench-uploads-{}", std::process::id());
    settings.engine.journal_dir = journal.path().to_owned();
    settings.http.shutdown_grace_secs = 5;
    settings.http.body_idle_secs = BODY_IDLE_SECS;
    settings.http.body_total_secs = BODY_TOTAL_SECS;
    let config = format!(
        "database.max_connections {}, http.max_concurrent_imports {}, http.body_idle_secs {}, http.body_total_secs {}",
        settings.database.max_connections,
        settings.http.max_concurrent_imports,
        settings.http.body_idle_secs,
        settings.http.body_total_secs
    );
    let app = obzvon::app::App::build(settings).await?;
    let addr = app.local_addr().to_string();
    let cancel = app.cancel_token();
    let task = tokio::spawn(app.run_until_stopped());

    let bench = Bench::new(addr, token)?;
    let result = bench.measure(stalled, requests, &config).await;

    cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(15), task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => println!("obzvon stopped with an error: {e:#}"),
        Ok(Err(e)) => println!("obzvon's task failed: {e}"),
        Err(_) => println!("obzvon did not stop within 15 s of being cancelled"),
    }
    result
}

/// A client of the running app, as an admin.
struct Bench {
    /// `127.0.0.1:PORT`
    addr: String,
    token: String,
    http: reqwest::Client,
}

/// The GET latencies of one phase.
struct Phase {
    latencies: Vec<Duration>,
    failed: usize,
    took: Duration,
}

/// What one stalled upload was answered, and when (counted from sending its head).
enum Outcome {
    Status(u16, Duration),
    Closed(Duration),
    Broken(String),
    NoAnswer,
}

impl Bench {
    fn new(addr: String, token: String) -> anyhow::Result<Bench> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Bench { addr, token, http })
    }

    async fn measure(&self, stalled: usize, requests: usize, config: &str) -> anyhow::Result<()> {
        self.wait_ready().await?;
        let created = self
            .http
            .post(format!("http://{}/api/v1/campaigns", self.addr))
            .json(&serde_json::json!({"name": "bench", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000"}))
            .send()
            .await?;
        anyhow::ensure!(created.status().is_success(), "POST /campaigns: {}", created.status());
        let campaign: serde_json::Value = created.json().await?;
        let id = campaign["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("POST /campaigns answered no id: {campaign}"))?
            .to_owned();

        let idle = self.gets(requests).await;

        let opened = Instant::now();
        let mut uploads = Vec::with_capacity(stalled);
        for _ in 0..stalled {
            let socket = self.stalled_upload(&id).await?;
            let sent = Instant::now();
            uploads.push(tokio::spawn(async move { answer(socket, sent).await }));
        }
        let opening = opened.elapsed();
        // Let the refusals arrive before measuring, so the phase sees only the held uploads.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = self.gets(requests).await;
        let measured_until = opened.elapsed();

        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        let mut outcomes = Vec::with_capacity(stalled);
        for upload in uploads {
            let abort = upload.abort_handle();
            outcomes.push(match tokio::time::timeout_at(deadline, upload).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => Outcome::Broken(e.to_string()),
                Err(_) => {
                    abort.abort();
                    Outcome::NoAnswer
                }
            });
        }

        print_report(&Report {
            config,
            requests,
            stalled,
            idle: &idle,
            loaded: &loaded,
            outcomes: &outcomes,
            opening,
            measured_until,
        });
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.addr);
        for _ in 0..200 {
            if self.http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("obzvon did not become ready within 10 s (is the test bed up? `scripts/testbed.sh up`)")
    }

    /// `requests` GETs one after another on the client's keep-alive connection, after a warm-up.
    async fn gets(&self, requests: usize) -> Phase {
        let url = format!("http://{}/api/v1/campaigns", self.addr);
        for _ in 0..WARM_UP {
            let _ = self.get(&url).await;
        }
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(requests);
        let mut failed = 0;
        for _ in 0..requests {
            let t = Instant::now();
            // A failure counts with the time the client waited for it.
            if !self.get(&url).await {
                failed += 1;
            }
            latencies.push(t.elapsed());
        }
        latencies.sort();
        Phase {
            latencies,
            failed,
            took: started.elapsed(),
        }
    }

    /// One GET, read to the end; whether it was a 200.
    async fn get(&self, url: &str) -> bool {
        match self.http.get(url).send().await {
            Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
            Err(_) => false,
        }
    }

    /// A lead upload that sends its head and the CSV header line, then nothing more.
    async fn stalled_upload(&self, campaign: &str) -> anyhow::Result<TcpStream> {
        let mut socket = TcpStream::connect(&self.addr).await?;
        let head = format!(
            "POST /api/v1/campaigns/{campaign}/leads HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: text/csv\r\nContent-Length: {PROMISED_BYTES}\r\n\r\nphone,name\n",
            self.addr, self.token
        );
        socket.write_all(head.as_bytes()).await?;
        Ok(socket)
    }
}

/// Reads the status line the server sends on a stalled upload's socket.
async fn answer(mut socket: TcpStream, sent: Instant) -> Outcome {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => return Outcome::Broken(e.to_string()),
        };
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&raw[..end]).into_owned();
            return match line.split(' ').nth(1).and_then(|s| s.parse().ok()) {
                Some(status) => Outcome::Status(status, sent.elapsed()),
                None => Outcome::Broken(format!("not an HTTP status line: {line:?}")),
            };
        }
        if n == 0 {
            return Outcome::Closed(sent.elapsed());
        }
    }
}

struct Report<'a> {
    config: &'a str,
    requests: usize,
    stalled: usize,
    idle: &'a Phase,
    loaded: &'a Phase,
    outcomes: &'a [Outcome],
    /// How long sending all the uploads' heads took.
    opening: Duration,
    /// From the first upload to the end of the loaded phase.
    measured_until: Duration,
}

fn print_report(r: &Report) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "machine: {cores} cores, load average {}; the bench runs only obzvon (in this process) and its client, \
         against the test bed's PostgreSQL, RabbitMQ and Asterisk",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("settings: {}", r.config);
    println!(
        "{} sequential GET /api/v1/campaigns per phase on one keep-alive connection ({WARM_UP} warm-up requests not counted)",
        r.requests
    );
    println!();
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>10} {:>8}",
        "GET /campaigns latency (ms)", "p50", "p99", "max", "failed", "took s"
    );
    for (label, phase) in [
        ("idle".to_owned(), r.idle),
        (format!("with {} stalled uploads", r.stalled), r.loaded),
    ] {
        println!(
            "{label:<34} {:>8.2} {:>8.2} {:>8.2} {:>10} {:>8.1}",
            ms(percentile(&phase.latencies, 0.50)),
            ms(percentile(&phase.latencies, 0.99)),
            ms(phase.latencies.last().copied().unwrap_or_default()),
            format!("{}/{}", phase.failed, phase.latencies.len()),
            phase.took.as_secs_f64()
        );
    }
    println!();

    let mut at_once: BTreeMap<u16, usize> = BTreeMap::new();
    let mut held: BTreeMap<u16, Vec<Duration>> = BTreeMap::new();
    let mut closed = Vec::new();
    let mut broken = Vec::new();
    let mut no_answer = 0;
    for outcome in r.outcomes {
        match outcome {
            Outcome::Status(status, after) if *after < AT_ONCE => *at_once.entry(*status).or_default() += 1,
            Outcome::Status(status, after) => held.entry(*status).or_default().push(*after),
            Outcome::Closed(after) => closed.push(*after),
            Outcome::Broken(e) => broken.push(e.clone()),
            Outcome::NoAnswer => no_answer += 1,
        }
    }
    let held_count: usize = held.values().map(Vec::len).sum::<usize>() + no_answer;
    println!(
        "{} stalled uploads (heads sent in {:.0} ms): {} answered within {} s ({}), {} held",
        r.stalled,
        ms(r.opening),
        at_once.values().sum::<usize>(),
        AT_ONCE.as_secs(),
        counts(&at_once),
        held_count
    );
    for (status, afters) in &held {
        let first = afters.iter().min().copied().unwrap_or_default();
        let last = afters.iter().max().copied().unwrap_or_default();
        println!(
            "  held, then answered {status}: {} (after {:.1}–{:.1} s)",
            afters.len(),
            first.as_secs_f64(),
            last.as_secs_f64()
        );
        // A cut-off inside the loaded phase means part of it ran without the held uploads.
        if first < r.measured_until {
            println!(
                "  note: the first held upload was answered {:.1} s after opening, before the loaded phase ended at {:.1} s",
                first.as_secs_f64(),
                r.measured_until.as_secs_f64()
            );
        }
    }
    if no_answer > 0 {
        println!(
            "  held, no answer within {} s after the measurement: {no_answer}",
            ANSWER_WAIT.as_secs()
        );
    }
    if !closed.is_empty() {
        println!("  closed without an answer: {}", closed.len());
    }
    for e in &broken {
        println!("  socket error: {e}");
    }
}

/// Nearest rank: the value at index ceil(q·n) − 1 of the sorted figures.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn counts(by_status: &BTreeMap<u16, usize>) -> String {
    if by_status.is_empty() {
        return "none".to_owned();
    }
    by_status
        .iter()
        .map(|(status, n)| format!("{status} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
