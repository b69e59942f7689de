//! Configuration: built-in defaults, then a TOML file, then `OBZVON_<SECTION>__<KEY>`
//! environment variables (e.g. `OBZVON_ARI__PASSWORD`). Unknown keys are errors, so a typo in
//! the file is caught by `obzvon check-config` instead of silently ignored. Secrets are typed
//! and print as `[REDACTED]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Sections an `OBZVON_…` variable may address; anything else in the environment is ignored.
const SECTIONS: &[&str] = &[
    "database", "ari", "http", "amqp", "log", "instance", "dialer", "webhooks", "engine",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub ari: AriSettings,
    pub http: HttpSettings,
    pub amqp: AmqpSettings,
    pub log: LogSettings,
    pub instance: InstanceSettings,
    pub dialer: DialerSettings,
    pub webhooks: WebhookSettings,
    pub engine: EngineSettings,
}

/// The call engine: its journal and the timings of the call flow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Where the engine journals its state changes before they reach PostgreSQL; one file set
    /// per instance. Must survive restarts (not a tmpfs).
    pub journal_dir: PathBuf,
    /// The abandon decision is taken this long before a campaign's connect limit, so the
    /// customer hears the message within the limit.
    pub abandon_margin_ms: u64,
    /// An abandoned customer is hung up when the message ends, or after this long at most.
    pub abandon_max_secs: u64,
    /// How long an operator's phone rings when obzvon calls it (REST login, single calls).
    pub operator_ring_secs: u32,
    /// The caller ID an operator's phone shows when obzvon rings it.
    pub session_caller_id: String,
    /// How often each operator session's incoming audio is checked; 0 turns the check off
    /// (needed for phones that send no RTP during silence).
    pub media_check_ms: u64,
    /// A session whose phone sent no audio for this long is ended as dead.
    pub media_silence_ms: u64,
}

/// Delivery of events to webhook subscriptions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Tries per event and subscription before the delivery is marked failed.
    pub max_tries: u32,
    /// First retry delay; each next one doubles, up to `backoff_max_secs`.
    pub backoff_secs: f64,
    pub backoff_max_secs: f64,
    /// Per POST.
    pub timeout_secs: u64,
    /// Allow subscriptions to loopback, private and link-local addresses (a receiver on the
    /// same box or LAN). Off: only public addresses, checked after DNS and on redirects.
    pub allow_private_targets: bool,
}

/// Defaults for single calls that name no campaign (click-to-call).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialerSettings {
    /// Endpoint template; `{number}` becomes the E.164 number.
    pub trunk: String,
    pub caller_id: String,
    pub dial_timeout_secs: u32,
    /// ISO region for numbers written without a country code.
    pub default_region: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AriSettings {
    /// The ARI root, `http://host:8088/ari`.
    pub url: String,
    pub username: String,
    pub password: SecretString,
    /// The Stasis application name the dialplan and originates use.
    pub app: String,
    /// `inbound`: obzvon connects to Asterisk's event websocket. `outbound`: Asterisk connects
    /// to obzvon (an ARI outbound websocket with `connection_type = persistent`), which keeps
    /// the application registered and its events queued while obzvon restarts.
    pub mode: AriMode,
    /// Outbound mode: where obzvon waits for Asterisk's websocket.
    pub outbound_listen: SocketAddr,
    /// Outbound mode: the credentials Asterisk presents (websocket_client.conf).
    pub outbound_username: String,
    pub outbound_password: SecretString,
    pub ping_interval_secs: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Fault injection for the fault suite (scripts/faults.sh): the percentage of ARI events
    /// passed on twice, and of events swapped with the next one. Always 0 in production.
    pub fault_duplicate_percent: f64,
    pub fault_reorder_percent: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AriMode {
    Inbound,
    Outbound,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// When set, /healthz, /readyz and /metrics are served here instead of on `listen`.
    #[serde(default)]
    pub ops_listen: Option<SocketAddr>,
    pub shutdown_grace_secs: u64,
    /// Largest JSON body of an ordinary request.
    pub max_body_bytes: usize,
    /// Largest lead import: a JSON array is read whole (`max_json_import_bytes`), a CSV file
    /// is spooled to a temporary file first (`max_import_bytes`).
    pub max_json_import_bytes: usize,
    pub max_import_bytes: u64,
    /// A request body that sends nothing for this long, or is not complete after
    /// `body_total_secs`, is refused (408); no database connection is held meanwhile.
    pub body_idle_secs: u64,
    pub body_total_secs: u64,
    /// Lead imports receiving at once; one more is refused with 503 until one ends.
    pub max_concurrent_imports: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub url: SecretString,
    pub events_exchange: String,
    pub request_queue: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info,obzvon=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSettings {
    /// Names this obzvon process in the database (one per Asterisk box when several share one
    /// PostgreSQL); empty means the host name.
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The defaults: the test bed's values, which are also what `obzvon.example.toml` documents.
fn defaults() -> serde_json::Value {
    serde_json::json!({
        "database": {
            "url": "postgres://obzvon:obzvon@127.0.0.1:5432/obzvon",
            "max_connections": 10,
            "acquire_timeout_secs": 5,
        },
        "ari": {
            "url": "http://127.0.0.1:8088/ari",
            "username": "obzvon",
            "password": "obzvon",
            "app": "obzvon",
            "mode": "inbound",
            "outbound_listen": "127.0.0.1:8765",
            "outbound_username": "asterisk",
            "outbound_password": "asterisk",
            "ping_interval_secs": 10,
            "reconnect_min_ms": 200,
            "reconnect_max_ms": 10000,
            "fault_duplicate_percent": 0.0,
            "fault_reorder_percent": 0.0,
        },
        "http": {
            "listen": "127.0.0.1:8080",
            "shutdown_grace_secs": 60,
            "max_body_bytes": 1024 * 1024,
            "max_json_import_bytes": 32 * 1024 * 1024,
            "max_import_bytes": 256u64 * 1024 * 1024,
            "body_idle_secs": 15,
            "body_total_secs": 600,
            "max_concurrent_imports": 8,
        },
        "amqp": {
            "url": "amqp://guest:guest@127.0.0.1:5672/%2f",
            "events_exchange": "outbound.call.events",
            "request_queue": "outbound.call.request",
        },
        "log": { "format": "text", "filter": "info,sqlx=warn" },
        "instance": { "id": "" },
        "dialer": {
            "trunk": "PJSIP/{number}@trunk",
            "caller_id": "74950000000",
            "dial_timeout_secs": 30,
            "default_region": "RU",
        },
        "webhooks": { "max_tries": 8, "backoff_secs": 2.0, "backoff_max_secs": 300.0, "timeout_secs": 5,
            "allow_private_targets": false },
        "engine": {
            "journal_dir": "/var/lib/obzvon/journal",
            "abandon_margin_ms": 300,
            "abandon_max_secs": 15,
            "operator_ring_secs": 30,
            "session_caller_id": "obzvon",
            "media_check_ms": 1000,
            "media_silence_ms": 4000,
        },
    })
}

impl Settings {
    /// Loads defaults, then `file` if given (it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(defaults()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let env = Env::prefixed("OBZVON_")
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                SECTIONS.iter().any(|s| key.starts_with(&format!("{s}__")))
            })
            .split("__");
        let mut settings: Settings = figment.merge(env).extract().map_err(Box::new)?;
        if settings.instance.id.trim().is_empty() {
            settings.instance.id = hostname();
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let db = self.database.url.expose_secret();
        if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            problems.push("database.url must be a postgres:// URL".to_owned());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".to_owned());
        }
        match url::Url::parse(&self.ari.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => problems.push(format!(
                "ari.url {:?} must be an http(s) URL such as http://127.0.0.1:8088/ari",
                self.ari.url
            )),
        }
        if self.ari.app.trim().is_empty() || self.ari.app.contains([',', ' ', '/']) {
            problems.push(format!(
                "ari.app {:?} must be a non-empty name without commas, spaces or slashes",
                self.ari.app
            ));
        }
        if self.ari.username.is_empty() {
            problems.push("ari.username must not be empty".to_owned());
        }
        if self.ari.ping_interval_secs == 0 {
            problems.push("ari.ping_interval_secs must be at least 1".to_owned());
        }
        for (name, v) in [
            ("fault_duplicate_percent", self.ari.fault_duplicate_percent),
            ("fault_reorder_percent", self.ari.fault_reorder_percent),
        ] {
            if !(0.0..=50.0).contains(&v) {
                problems.push(format!(
                    "ari.{name} must be between 0 and 50 (it is for the fault suite only)"
                ));
            }
        }
        if self.ari.reconnect_min_ms == 0 || self.ari.reconnect_min_ms > self.ari.reconnect_max_ms {
            problems.push("ari.reconnect_min_ms must be at least 1 and not above ari.reconnect_max_ms".to_owned());
        }
        let amqp = self.amqp.url.expose_secret();
        if !(amqp.starts_with("amqp://") || amqp.starts_with("amqps://")) {
            problems.push("amqp.url must be an amqp:// URL".to_owned());
        }
        if !self.dialer.trunk.contains("{number}") {
            problems.push("dialer.trunk must contain {number}, such as PJSIP/{number}@trunk".to_owned());
        }
        if !(5..=300).contains(&self.dialer.dial_timeout_secs) {
            problems.push("dialer.dial_timeout_secs must be between 5 and 300".to_owned());
        }
        if crate::phone::Region::parse(&self.dialer.default_region).is_err() {
            problems.push("dialer.default_region must be an ISO region such as RU".to_owned());
        }
        let h = &self.http;
        if h.max_body_bytes < 1024 || h.max_json_import_bytes < 1024 || h.max_import_bytes < 1024 {
            problems.push(
                "http.max_body_bytes, max_json_import_bytes and max_import_bytes must be at least 1024".to_owned(),
            );
        }
        if h.body_idle_secs == 0 || h.body_idle_secs > h.body_total_secs {
            problems.push("http.body_idle_secs must be at least 1 and not above http.body_total_secs".to_owned());
        }
        if h.max_concurrent_imports == 0 {
            problems.push("http.max_concurrent_imports must be at least 1".to_owned());
        }
        let e = &self.engine;
        if e.journal_dir.as_os_str().is_empty() {
            problems.push("engine.journal_dir must name a directory".to_owned());
        }
        if e.abandon_margin_ms > 1500 {
            problems.push("engine.abandon_margin_ms must be at most 1500".to_owned());
        }
        if !(5..=300).contains(&e.operator_ring_secs) {
            problems.push("engine.operator_ring_secs must be between 5 and 300".to_owned());
        }
        if e.session_caller_id.trim().is_empty() || e.session_caller_id.contains(['"', '<', '>']) {
            problems.push("engine.session_caller_id must be a plain name or number".to_owned());
        }
        if e.media_check_ms > 0 && e.media_silence_ms < e.media_check_ms * 2 {
            problems.push("engine.media_silence_ms must be at least twice engine.media_check_ms".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The engine's settings, for this instance.
    pub fn engine(&self) -> crate::calls::engine::EngineSettings {
        let e = &self.engine;
        crate::calls::engine::EngineSettings {
            core: crate::calls::engine::core::Config {
                instance: self.instance.id.clone(),
                abandon_margin: Duration::from_millis(e.abandon_margin_ms),
                abandon_max: Duration::from_secs(e.abandon_max_secs),
                operator_ring: Duration::from_secs(u64::from(e.operator_ring_secs)),
                session_caller_id: e.session_caller_id.clone(),
                media_check: Duration::from_millis(e.media_check_ms),
                media_silence: Duration::from_millis(e.media_silence_ms),
            },
            journal_dir: e.journal_dir.clone(),
            drain_grace: Duration::from_secs(self.http.shutdown_grace_secs),
            single: crate::calls::place::single_spec(&self.dialer),
        }
    }

    pub fn ari_stream(&self) -> crate::ari::StreamSettings {
        crate::ari::StreamSettings {
            ping_interval: Duration::from_secs(self.ari.ping_interval_secs),
            min_backoff: Duration::from_millis(self.ari.reconnect_min_ms),
            max_backoff: Duration::from_millis(self.ari.reconnect_max_ms),
            chaos: crate::ari::ws::Chaos {
                duplicate: self.ari.fault_duplicate_percent / 100.0,
                reorder: self.ari.fault_reorder_percent / 100.0,
            },
        }
    }

    /// A summary safe to print: no passwords.
    pub fn redacted_summary(&self) -> String {
        let db = redact_url(self.database.url.expose_secret());
        format!(
            "instance.id = {}\ndatabase.url = {db}\nari.url = {} (user {}, app {})\nhttp.listen = {}\namqp.url = {}\nlog = {:?} {}",
            self.instance.id,
            self.ari.url,
            self.ari.username,
            self.ari.app,
            self.http.listen,
            redact_url(self.amqp.url.expose_secret()),
            self.log.format,
            self.log.filter,
        )
    }
}

fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable>".to_owned(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "obzvon".to_owned())
}

#[cfg(test)]
#[expect(clippy::result_large_err, reason = "figment::Jail's closures return figment::Error")]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_alone_are_valid() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let s = Settings::load(None).unwrap();
            assert_eq!(s.ari.app, "obzvon");
            assert_eq!(s.http.listen.port(), 8080);
            assert!(!s.instance.id.is_empty());
            Ok(())
        });
    }

    #[test]
    fn the_example_file_loads_and_documents_every_key() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("obzvon.example.toml");
            Settings::load(Some(&path)).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let example: toml::Table = text.parse().unwrap();
            let defaults = defaults();
            for (section, keys) in defaults.as_object().unwrap() {
                for key in keys.as_object().unwrap().keys() {
                    let present = example.get(section).and_then(|s| s.get(key)).is_some();
                    assert!(present, "obzvon.example.toml lacks {section}.{key}");
                }
            }
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("o.toml", "[ari]\npassword = \"from-file\"\napp = \"file-app\"\n")?;
            jail.set_env("OBZVON_ARI__APP", "env-app");
            jail.set_env("OBZVON_TESTBED", "/ignored/not/a/section");
            let s = Settings::load(Some(Path::new("o.toml"))).unwrap();
            assert_eq!(s.ari.app, "env-app");
            assert_eq!(s.ari.password.expose_secret(), "from-file");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_by_name() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("typo.toml", "[ari]\npasword = \"x\"\n")?;
            let err = Settings::load(Some(Path::new("typo.toml"))).unwrap_err().to_string();
            assert!(err.contains("pasword"), "{err}");

            jail.create_file(
                "bad.toml",
                "[ari]\nurl = \"ftp://x\"\napp = \"a,b\"\n[database]\nmax_connections = 0\n",
            )?;
            let err = Settings::load(Some(Path::new("bad.toml"))).unwrap_err().to_string();
            assert!(err.contains("ari.url"), "{err}");
            assert!(err.contains("ari.app"), "{err}");
            assert!(err.contains("database.max_connections"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_an_error_not_defaults() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let err = Settings::load(Some(Path::new("nope.toml"))).unwrap_err();
            assert!(matches!(err, ConfigError::MissingFile(_)));
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("OBZVON_ARI__PASSWORD", "s3cret-ari");
            jail.set_env("OBZVON_DATABASE__URL", "postgres://u:s3cret-db@h/db");
            let s = Settings::load(None).unwrap();
            let shown = format!("{s:?}\n{}", s.redacted_summary());
            assert!(!shown.contains("s3cret"), "{shown}");
            Ok(())
        });
    }
}
