//! `obzvon serve` as a child process, so tests can kill it (`kill -9`), stop it (SIGTERM) and
//! start it again on the same database, instance and journal, as an operator of the dialer
//! would.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use secrecy::ExposeSecret;

use super::{rest_client, settings, Rest, TestDb};

pub struct Obzvon {
    child: Option<Child>,
    pub rest: Rest,
    token: String,
    pub port: u16,
    pub log: PathBuf,
    env: Vec<(String, String)>,
}

impl std::ops::Deref for Obzvon {
    type Target = Rest;
    fn deref(&self) -> &Rest {
        &self.rest
    }
}

/// A TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Obzvon {
    /// Starts `obzvon serve` for `instance` on the (migrated) test database, with the Stasis
    /// application "obzvon" (the login dialplan names it), and waits until it is ready.
    /// `env` adds or overrides `OBZVON_…` settings (a database URL through a proxy, say).
    pub async fn start(db: &TestDb, instance: &str, env: &[(&str, String)]) -> Obzvon {
        let pool = db.pool().await;
        let (token, _) = obzvon::auth::create(&pool, &format!("faults-{instance}"), &["admin".to_owned()], "test")
            .await
            .unwrap();
        pool.close().await;
        let port = free_port();
        // This test's own directory: a journal left by an earlier run belongs to another
        // database (obzvon would set it aside; nothing of it is wanted here).
        let dir = std::env::temp_dir().join(format!("obzvon-proc-{instance}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = settings();
        let mut vars: Vec<(String, String)> = vec![
            ("OBZVON_DATABASE__URL".into(), db.url.clone()),
            ("OBZVON_ARI__URL".into(), s.ari.url.clone()),
            ("OBZVON_ARI__USERNAME".into(), s.ari.username.clone()),
            ("OBZVON_ARI__PASSWORD".into(), s.ari.password.expose_secret().to_owned()),
            ("OBZVON_ARI__APP".into(), "obzvon".into()),
            ("OBZVON_AMQP__URL".into(), s.amqp.url.expose_secret().to_owned()),
            ("OBZVON_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")),
            ("OBZVON_HTTP__SHUTDOWN_GRACE_SECS".into(), "30".into()),
            ("OBZVON_INSTANCE__ID".into(), instance.into()),
            (
                "OBZVON_ENGINE__JOURNAL_DIR".into(),
                dir.join("journal").display().to_string(),
            ),
            (
                "OBZVON_LOG__FILTER".into(),
                std::env::var("FAULTS_LOG").unwrap_or_else(|_| "info,sqlx=warn,lapin=error".into()),
            ),
        ];
        for (k, v) in env {
            vars.retain(|(key, _)| key != k);
            vars.push(((*k).to_owned(), v.clone()));
        }
        let mut me = Obzvon {
            child: None,
            rest: rest_client(format!("http://127.0.0.1:{port}/api/v1"), &token),
            token,
            port,
            log: dir.join("serve.log"),
            env: vars,
        };
        me.spawn();
        me.ready(Duration::from_secs(30)).await;
        me
    }

    /// Starts the process (again); its output is appended to `self.log`.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_obzvon"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("obzvon binary (built by cargo for the integration tests)");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until `/readyz` answers 200 (database, ARI, engine synced).
    pub async fn ready(&self, limit: Duration) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "obzvon not ready within {limit:?}; log {}:\n{}",
                self.log.display(),
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: the process dies at once, leaving whatever it held.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the process drains and exits by itself.
    pub fn term(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit status, or None if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// A second process of the same instance with the same settings (a rolling restart).
    pub fn twin(&self) -> Obzvon {
        let port = free_port();
        let mut env = self.env.clone();
        env.retain(|(k, _)| k != "OBZVON_HTTP__LISTEN");
        env.push(("OBZVON_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
        Obzvon {
            child: None,
            rest: rest_client(format!("http://127.0.0.1:{port}/api/v1"), &self.token),
            token: self.token.clone(),
            port,
            log: self.log.with_extension("twin.log"),
            env,
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Obzvon {
    fn drop(&mut self) {
        self.kill9();
    }
}
