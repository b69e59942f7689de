//! Helpers shared by the integration tests. They run against the real test bed
//! (`scripts/testbed.sh up`): Asterisk 22 in its chroot, the SIPp trunk, PostgreSQL. When a part
//! is missing the test fails with a message saying how to start it; nothing is skipped.
#![allow(dead_code)]

pub mod browser;
pub mod contracts;
pub mod farend;
pub mod people;
pub mod process;
pub mod proxy;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use obzvon::ari::{self, AriClient, ConnectionState, Event, EventStream};
use obzvon::config::Settings;
use rand::Rng;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Settings from the environment (what `scripts/testbed.sh env` prints) over the defaults.
pub fn settings() -> Settings {
    Settings::load(None).expect("test settings")
}

/// An ARI client under a Stasis application name of its own, so parallel tests never see
/// each other's events (two websockets on one app name would replace each other).
pub async fn ari_client(label: &str) -> AriClient {
    let mut s = settings();
    // Quiet test output; RUST_LOG still wins for debugging.
    s.log.filter = "warn".to_owned();
    obzvon::telemetry::init(&s.log);
    let app = format!("obzvon-test-{label}-{:06x}", rand::rng().random_range(0..0xffffff));
    let client = AriClient::new(&s.ari.url, &s.ari.username, s.ari.password.clone(), &app).unwrap();
    if let Err(e) = client.asterisk_info().await {
        panic!(
            "the Asterisk test bed does not answer at {} ({e}). Start it with `scripts/testbed.sh up` (as root).",
            s.ari.url
        );
    }
    client
}

pub fn require_trunk() {
    let found = Command::new("pgrep")
        .args(["-f", "sipp .*-p 5070 "])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "the SIPp trunk is not running on 127.0.0.1:5070. Start it with `scripts/testbed.sh up`."
    );
}

/// A test-bed number whose last five digits tell the SIPp trunk what to do (see
/// scripts/sipp/trunk-uas.xml): behaviour, ring seconds, talk seconds. The rest is random so
/// parallel tests never dial the same number: it counts up from a random start, so one test
/// process never draws the same number twice (a repeat would be refused at import as a
/// duplicate and the test would see one lead too few).
pub fn number(behaviour: u8, ring_secs: u8, talk_secs: u8) -> String {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| std::sync::atomic::AtomicU32::new(rand::rng().random_range(0..10_000)));
    let free = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10_000;
    format!("+79{free:04}{behaviour}{ring_secs:02}{talk_secs:02}")
}

/// The `p` quantile (0–1) of sorted figures, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn trunk_endpoint(number: &str) -> String {
    format!("PJSIP/{number}@trunk")
}

/// Events of one application, with waiting helpers that fail with what was seen.
pub struct Events {
    pub stream: EventStream,
    pub seen: Vec<Event>,
    pub cancel: CancellationToken,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn connect_events(client: &AriClient) -> Events {
    let cancel = CancellationToken::new();
    let settings = ari::StreamSettings {
        ping_interval: Duration::from_secs(2),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        chaos: Default::default(),
    };
    let (stream, _task) = ari::ws::spawn(client.clone(), settings, cancel.clone());
    let mut events = Events {
        stream,
        seen: Vec::new(),
        cancel,
    };
    events.wait_connected(Duration::from_secs(10)).await;
    events
}

impl Events {
    pub async fn wait_connected(&mut self, limit: Duration) -> u64 {
        let last = self.stream.state.clone();
        let state = tokio::time::timeout(limit, self.stream.state.wait_for(|s| s.is_connected()))
            .await
            .unwrap_or_else(|_| panic!("ARI websocket not connected within {limit:?}: {:?}", *last.borrow()))
            .expect("ws task alive")
            .clone();
        match state {
            ConnectionState::Connected { session, .. } => session,
            _ => unreachable!(),
        }
    }

    pub async fn wait_disconnected(&mut self, limit: Duration) -> ConnectionState {
        tokio::time::timeout(limit, self.stream.state.wait_for(|s| !s.is_connected()))
            .await
            .unwrap_or_else(|_| panic!("ARI websocket did not report the outage within {limit:?}"))
            .expect("ws task alive")
            .clone()
    }

    /// Waits for the first event (already seen or new) matching `pred`.
    pub async fn wait_for(&mut self, what: &str, limit: Duration, pred: impl Fn(&Event) -> bool) -> Event {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.events.recv()).await {
                Ok(Some(event)) => {
                    self.seen.push(event.clone());
                    if pred(&event) {
                        return event;
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!(
                    "no {what} within {limit:?}; saw: {:?}",
                    self.seen
                        .iter()
                        .map(|e| format!("{}({:?})", e.type_name, e.channel_id()))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    pub async fn wait_channel(&mut self, channel: &str, type_name: &str, limit: Duration) -> Event {
        let what = format!("{type_name} for {channel}");
        self.wait_for(&what, limit, |e| {
            e.type_name == type_name && e.channel_id() == Some(channel)
        })
        .await
    }
}

/// A connection and a channel to the test bed's RabbitMQ.
pub async fn broker() -> (lapin::Connection, lapin::Channel) {
    let settings = settings();
    let amqp = lapin::Connection::connect(
        settings.amqp.url.expose_secret(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("RabbitMQ does not answer ({e}); start it with `scripts/testbed.sh up`"));
    let channel = amqp.create_channel().await.unwrap();
    (amqp, channel)
}

/// A queue bound to every event of obzvon's exchange (declared here too, so events published
/// before obzvon's relay first connects are not dropped): named and durable (emptied first),
/// or exclusive to this channel. Returns its name.
pub async fn bind_events_queue(channel: &lapin::Channel, durable_name: Option<&str>) -> String {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    let exchange = settings().amqp.events_exchange;
    channel
        .exchange_declare(
            exchange.as_str(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let options = match durable_name {
        Some(name) => {
            channel.queue_delete(name, QueueDeleteOptions::default()).await.unwrap();
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            }
        }
        None => QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    };
    let queue = channel
        .queue_declare(durable_name.unwrap_or(""), options, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().as_str(),
            exchange.as_str(),
            "#",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue.name().to_string()
}

/// `rabbitmqctl ACTION` (stop_app, start_app: a broker outage for the tests that need one).
pub fn rabbitmqctl(action: &str) {
    let out = Command::new("rabbitmqctl")
        .args([action])
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl {action}: {e}; the test bed installs RabbitMQ"));
    assert!(
        out.status.success(),
        "rabbitmqctl {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The standard output of a finished command; fails the test, showing both outputs, if the
/// command failed.
pub fn stdout_of(what: &str, out: std::process::Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `scripts/testbed.sh ARGS…` and fails the test if it fails.
pub fn testbed(args: &[&str]) {
    let out = Command::new(repo_path("scripts/testbed.sh"))
        .args(args)
        .output()
        .expect("run scripts/testbed.sh");
    stdout_of(&format!("scripts/testbed.sh {args:?}"), out);
}

/// A SIPp operator phone (scripts/sipp/operator-phone.xml) on the port of endpoint `opN`;
/// killed when dropped. `keys` rows: key1;after1_ms;key2;after2_ms;hangup_after_ms.
pub struct Phone {
    child: Child,
    _dir: PathBuf,
}

impl Phone {
    /// Still running (its call was not hung up).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: the phone vanishes without a BYE, sends no more audio, answers nothing.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn operator_phone(n: u8, rows: &[&str]) -> Phone {
    let dir = std::env::temp_dir().join(format!("obzvon-phone-{n}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.csv");
    std::fs::write(&keys, format!("SEQUENTIAL\n{}\n", rows.join("\n"))).unwrap();
    let phone = spawn_sipp(dir, "operator-phone.xml", n, 16100, &["-inf", keys.to_str().unwrap()]);
    // SIPp binds its port right away; give it a moment before Asterisk sends the INVITE.
    std::thread::sleep(Duration::from_millis(300));
    phone
}

/// The port of endpoint `opN`'s phone: 5071-5076 for op1-op6 (asterisk-config/pjsip.conf),
/// 5100+N for the generated op7-op200.
pub fn phone_port(n: u8) -> u16 {
    assert!((1..=200).contains(&n), "the test bed has phones op1..op200, not op{n}");
    if n <= 6 {
        5070 + u16::from(n)
    } else {
        5100 + u16::from(n)
    }
}

/// Runs a scenario of scripts/sipp/ as the phone of endpoint `opN` (port [`phone_port`]).
fn spawn_sipp(dir: PathBuf, scenario: &str, n: u8, media_base: u16, extra: &[&str]) -> Phone {
    // The phone streams this audio (the scenarios name it relative to the working directory).
    std::fs::copy(
        repo_path("scripts/sipp/operator-audio.ul"),
        dir.join("operator-audio.ul"),
    )
    .expect("copy the phones' audio");
    let port = phone_port(n);
    let media = media_base + u16::from(n) * 10;
    let child = Command::new("sipp")
        .args(["-sf", repo_path(&format!("scripts/sipp/{scenario}")).to_str().unwrap()])
        .args(extra)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &media.to_string(),
        ])
        .args(["-nostdin", "-trace_err"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (Debian package sip-tester; scripts/testbed.sh up installs it)");
    Phone { child, _dir: dir }
}

/// A fresh, empty database on the test server, dropped when the guard is dropped.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin_url = settings().database.url.expose_secret().to_owned();
        let name = format!("obzvon_test_{:08x}", rand::rng().random::<u32>());
        let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL does not answer at the configured database.url ({e}). Start it with `scripts/testbed.sh up`.")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        TestDb {
            url: url.to_string(),
            name,
            admin_url,
        }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop from a fresh thread: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// An operator's phone logging in with the feature code (scripts/sipp/operator-login.xml):
/// it presses `key` every `every_ms` for as long as the session lasts. Killed when dropped.
pub fn login_phone(n: u8, key: &str, every_ms: u32) -> Phone {
    let dir = std::env::temp_dir().join(format!("obzvon-login-{n}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let op = format!("op{n}");
    let every = every_ms.to_string();
    let args = [
        "-s",
        "*55",
        "-key",
        "op",
        &op,
        "-key",
        "key",
        key,
        "-d",
        &every,
        "-m",
        "1",
        "127.0.0.1:5060",
    ];
    spawn_sipp(dir, "operator-login.xml", n, 16300, &args)
}

/// `obzvon serve` running in this test process on a fresh database, with a REST client.
pub struct Server {
    pub db: TestDb,
    pub rest: Rest,
    pub pool: sqlx::PgPool,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl std::ops::Deref for Server {
    type Target = Rest;
    fn deref(&self) -> &Rest {
        &self.rest
    }
}

/// A REST client of one obzvon (in this process or a child process), as an admin.
pub struct Rest {
    /// `http://127.0.0.1:PORT/api/v1`
    pub base: String,
    pub http: reqwest::Client,
    /// The bearer token, for requests written by hand (a stalled upload over a raw socket).
    pub token: String,
}

/// A client holding `token` as its bearer token.
pub fn rest_client(base: String, token: &str) -> Rest {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    Rest {
        base,
        token: token.to_owned(),
        http: reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    }
}

impl Server {
    /// `app` must be "obzvon" for feature-code logins (the dialplan names it).
    pub async fn start(app: &str) -> Server {
        let db = TestDb::create().await;
        obzvon::db::migrate(&db.pool().await).await.unwrap();
        Server::start_on(db, app).await
    }

    /// Starts on a database the test prepared (migrated); the instance id is `test-<db name>`.
    pub async fn start_on(db: TestDb, app: &str) -> Server {
        Server::start_custom(db, app, |_| {}).await
    }

    /// Starts on a migrated database with settings changed by `tweak`.
    pub async fn start_custom(db: TestDb, app: &str, tweak: impl FnOnce(&mut Settings)) -> Server {
        ari_client("probe").await;
        let pool = db.pool().await;
        let mut s = settings();
        s.database.url = db.url.clone().into();
        s.http.listen = "127.0.0.1:0".parse().unwrap();
        s.ari.app = app.to_owned();
        s.instance.id = format!("test-{}", db.name);
        s.http.shutdown_grace_secs = 5;
        s.engine.journal_dir = std::env::temp_dir().join("obzvon-test-journal");
        tweak(&mut s);
        let app = obzvon::app::App::build(s).await.unwrap();
        let base = format!("http://{}/api/v1", app.local_addr());
        // The test's client is an admin, like a CRM with every scope.
        let (token, _) = obzvon::auth::create(&pool, "tests", &["admin".to_owned()], "test")
            .await
            .unwrap();
        let cancel = app.cancel_token();
        let task = tokio::spawn(app.run_until_stopped());
        let server = Server {
            db,
            rest: rest_client(base, &token),
            pool,
            cancel,
            task: Some(task),
        };
        // Ready means the ARI websocket is up, so logins and originates are seen.
        let ready_url = server.base.replace("/api/v1", "/readyz");
        for _ in 0..100 {
            if server
                .http
                .get(&ready_url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("obzvon serve did not become ready");
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(15), task).await;
            result
                .expect("serve stops in time")
                .unwrap()
                .expect("serve stops cleanly");
        }
    }
}

impl Rest {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, answer) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {answer}");
        answer
    }

    pub async fn post_csv(&self, path: &str, csv: String) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Creates a campaign, imports `csv` into it and starts it; returns its id.
    pub async fn running_campaign(&self, body: serde_json::Value, csv: String) -> String {
        let id = self.campaign_with_leads(body, csv).await;
        self.post(&format!("/campaigns/{id}/start"), serde_json::json!({}))
            .await;
        id
    }

    /// Creates a campaign and imports its leads (CSV), without starting it.
    pub async fn campaign_with_leads(&self, body: serde_json::Value, csv: String) -> String {
        let campaign = self.post("/campaigns", body).await;
        let id = campaign["id"].as_str().unwrap().to_owned();
        let (status, report) = self.post_csv(&format!("/campaigns/{id}/leads"), csv).await;
        assert_eq!(status, 200, "{report}");
        id
    }

    pub async fn operator(&self, name: &str, endpoint: &str) -> String {
        let op = self
            .post("/operators", serde_json::json!({ "name": name, "endpoint": endpoint }))
            .await;
        op["id"].as_str().unwrap().to_owned()
    }

    /// Creates operator `name` on endpoint `opN`, starts a SIPp phone for it that answers and
    /// presses nothing, starts the session over REST and waits until the operator is ready.
    pub async fn logged_in(&self, name: &str, n: u8) -> (String, Phone) {
        let op = self.operator(name, &format!("PJSIP/op{n}")).await;
        let phone = operator_phone(n, &["-;0;-;0;0"]);
        let (status, body) = self
            .call(reqwest::Method::POST, &format!("/operators/{op}/session"), None)
            .await;
        assert_eq!(status, 202, "{body}");
        let id = op.clone();
        self.wait_operators("session ready", Duration::from_secs(10), move |ops| {
            ops.iter().any(|o| o["id"] == id.as_str() && o["state"] == "ready")
        })
        .await;
        (op, phone)
    }

    /// Waits until `check` holds for the operator list.
    pub async fn wait_operators(&self, what: &str, limit: Duration, check: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // A 5xx is "not yet": the API answers so while PostgreSQL is away or just back (the
            // fault suite's database outages), never for bad input.
            let (status, ops) = self.call(reqwest::Method::GET, "/operators", None).await;
            assert!(status == 200 || status >= 500, "GET /operators: {status} {ops}");
            if status == 200 && check(ops.as_array().unwrap()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within {limit:?}; operators: {status} {ops}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the attempt is no longer live (init, ringing, in-progress); returns it.
    pub async fn wait_attempt_ended(&self, attempt: &str, limit: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let a = self.get(&format!("/attempts/{attempt}")).await;
            if !matches!(a["status"].as_str(), Some("init" | "ringing" | "in-progress")) {
                return a;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "attempt still live after {limit:?}: {a}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Every dashboard file, parsed.
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_path("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The field names of a 422 answer, in order.
pub fn fields(body: &serde_json::Value) -> Vec<String> {
    body["fields"]
        .as_array()
        .map(|f| f.iter().map(|x| x["field"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Rows in `table` of the server's database.
pub async fn count(server: &Server, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&server.pool)
        .await
        .unwrap()
}
