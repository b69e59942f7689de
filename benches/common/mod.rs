//! What the benchmarks share: a scratch database on the configured PostgreSQL and readings of
//! this process from /proc.
#![allow(dead_code)]

use std::future::Future;

use obzvon::config::Settings;
use secrecy::ExposeSecret;

/// Runs `run` with the settings (DATABASE_URL / OBZVON_DATABASE__URL, as the tests use) and the
/// URL of a fresh database `obzvon_bench_<label>_<pid>`, which is dropped afterwards whatever
/// `run` returned.
pub async fn with_scratch_database<T, F, Fut>(label: &str, run: F) -> anyhow::Result<T>
where
    F: FnOnce(Settings, String) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let settings = Settings::load(None)?;
    let admin_url = settings.database.url.expose_secret().to_owned();
    let admin = sqlx::PgPool::connect(&admin_url).await?;
    let name = format!("obzvon_bench_{label}_{}", std::process::id());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    let mut url = url::Url::parse(&admin_url)?;
    url.set_path(&name);
    let result = run(settings, url.to_string()).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    result
}

/// A line of /proc/self/status, in KiB (`VmRSS`, `VmHWM`).
pub fn proc_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
