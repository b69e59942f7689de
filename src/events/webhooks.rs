//! Webhook delivery: due deliveries (one per event and subscription, created by a trigger on
//! the outbox) are POSTed with the event as body and an HMAC-SHA256 signature; a failure is
//! retried with doubling delays and marked `failed` after `max_tries`, with the last error
//! kept for `GET /api/v1/webhooks/{id}/deliveries`.
//!
//! Headers: `X-Obzvon-Event-Id`, `X-Obzvon-Event-Type`, `X-Obzvon-Timestamp` (Unix seconds)
//! and `X-Obzvon-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::WebhookSettings;

const BATCH: i64 = 50;
const POLL: Duration = Duration::from_millis(250);

/// `sha256=<hex>` over `"<timestamp>.<body>"`: what a receiver recomputes to trust a POST.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delay before try number `tries + 1`, after `tries` failed ones.
pub fn backoff(settings: &WebhookSettings, tries: u32) -> Duration {
    let secs = settings.backoff_secs * 2f64.powi(tries.saturating_sub(1).min(30) as i32);
    Duration::from_secs_f64(secs.min(settings.backoff_max_secs).max(0.0))
}

pub struct Dispatcher {
    pool: PgPool,
    http: reqwest::Client,
    settings: WebhookSettings,
}

struct Due {
    id: i64,
    url: String,
    /// `user:password` (percent-encoded as in a URL) for receivers behind basic auth.
    basic_auth: Option<String>,
    secret: String,
    tries: i32,
    event_id: Uuid,
    event_type: String,
    payload: serde_json::Value,
}

enum Outcome {
    Delivered(u16),
    Failed(Option<u16>, String),
}

impl Dispatcher {
    pub fn new(pool: PgPool, settings: WebhookSettings) -> anyhow::Result<Dispatcher> {
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .user_agent(concat!("obzvon/", env!("CARGO_PKG_VERSION")));
        let http = super::targets::guard(builder, settings.allow_private_targets).build()?;
        for outcome in ["delivered", "retry", "failed"] {
            // Exported from the start: a dashboard shows 0, not "no data".
            metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(0);
        }
        Ok(Dispatcher { pool, http, settings })
    }

    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        loop {
            let busy = match self.deliver_once().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "webhook delivery step failed");
                    false
                }
            };
            if !busy {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(POLL) => {}
                }
            } else if cancel.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// One batch of due deliveries, POSTed concurrently; returns how many were tried.
    pub async fn deliver_once(&self) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        #[expect(clippy::type_complexity, reason = "one row of the query below")]
        let rows: Vec<(
            i64,
            String,
            Option<String>,
            String,
            i32,
            Uuid,
            String,
            serde_json::Value,
        )> = sqlx::query_as(
            "SELECT d.id, w.url, w.basic_auth, w.secret, d.tries, o.id, o.event_type, o.payload
             FROM webhook_deliveries d
             JOIN webhooks w ON w.id = d.webhook_id
             JOIN outbox o ON o.id = d.event_id
             WHERE d.status = 'pending' AND d.next_try_at <= now()
             ORDER BY d.next_try_at, d.id LIMIT $1
             FOR UPDATE OF d SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let due: Vec<Due> = rows
            .into_iter()
            .map(
                |(id, url, basic_auth, secret, tries, event_id, event_type, payload)| Due {
                    id,
                    url,
                    basic_auth,
                    secret,
                    tries,
                    event_id,
                    event_type,
                    payload,
                },
            )
            .collect();
        let outcomes = futures_util::future::join_all(due.iter().map(|d| self.post(d))).await;
        for (d, outcome) in due.iter().zip(outcomes) {
            let tries = d.tries + 1;
            match outcome {
                Outcome::Delivered(status) => {
                    metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "delivered").increment(1);
                    sqlx::query(
                        "UPDATE webhook_deliveries SET status = 'delivered', tries = $2, last_status = $3,
                             last_error = NULL, delivered_at = now() WHERE id = $1",
                    )
                    .bind(d.id)
                    .bind(tries)
                    .bind(i32::from(status))
                    .execute(&mut *tx)
                    .await?;
                }
                Outcome::Failed(status, error) => {
                    let give_up = tries as u32 >= self.settings.max_tries;
                    let outcome = if give_up { "failed" } else { "retry" };
                    metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
                    if give_up {
                        tracing::warn!(delivery = d.id, target = super::targets::loggable(&d.url),
                            event = %d.event_id, tries, error, "webhook delivery failed for good");
                    } else {
                        tracing::debug!(
                            delivery = d.id,
                            target = super::targets::loggable(&d.url),
                            tries,
                            error,
                            "webhook delivery failed; will retry"
                        );
                    }
                    let delay = backoff(&self.settings, tries as u32);
                    sqlx::query(
                        "UPDATE webhook_deliveries SET tries = $2, last_status = $3, last_error = $4,
                             status = CASE WHEN $5 THEN 'failed' ELSE 'pending' END,
                             next_try_at = now() + make_interval(secs => $6)
                         WHERE id = $1",
                    )
                    .bind(d.id)
                    .bind(tries)
                    .bind(status.map(i32::from))
                    .bind(&error)
                    .bind(give_up)
                    .bind(delay.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(due.len())
    }

    async fn post(&self, d: &Due) -> Outcome {
        // Literal addresses never reach the resolver, so they are checked here.
        if !self.settings.allow_private_targets {
            let refusal = match url::Url::parse(&d.url)
                .ok()
                .and_then(|u| u.host().map(|h| h.to_owned()))
            {
                Some(url::Host::Ipv4(ip)) => super::targets::literal(ip.into()),
                Some(url::Host::Ipv6(ip)) => super::targets::literal(ip.into()),
                _ => None,
            };
            if let Some(why) = refusal {
                return Outcome::Failed(None, why);
            }
        }
        let payload = super::message(d.event_id, d.payload.clone());
        let body = serde_json::to_vec(&payload).expect("JSON serialises");
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .http
            .post(&d.url)
            .header("content-type", "application/json")
            .header("x-obzvon-event-id", d.event_id.to_string())
            .header("x-obzvon-event-type", &d.event_type)
            .header("x-obzvon-timestamp", timestamp.to_string())
            .header("x-obzvon-signature", signature(&d.secret, timestamp, &body))
            .body(body);
        if let Some((user, password)) = d.basic_auth.as_deref().and_then(|a| a.split_once(':')) {
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            request = request.basic_auth(decode(user), Some(decode(password)));
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Outcome::Delivered(r.status().as_u16()),
            Ok(r) => Outcome::Failed(Some(r.status().as_u16()), format!("HTTP {}", r.status())),
            // reqwest's message alone says little ("error sending request"); add the causes,
            // without the URL (its query may hold a token).
            Err(e) => {
                let e = e.without_url();
                let chain: Vec<String> = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(|e| e.to_string())
                    .collect();
                Outcome::Failed(None, chain.join(": "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            max_tries: 5,
            backoff_secs: 2.0,
            backoff_max_secs: 10.0,
            timeout_secs: 5,
            allow_private_targets: false,
        }
    }

    #[test]
    fn retries_wait_longer_each_time_up_to_the_cap() {
        let s = settings();
        let delays: Vec<u64> = (1..=5).map(|t| backoff(&s, t).as_secs()).collect();
        assert_eq!(delays, vec![2, 4, 8, 10, 10]);
    }

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        // Reference value: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 0123456789abcdef
        let sig = signature("0123456789abcdef", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(sig, REFERENCE);
        assert_ne!(signature("0123456789abcdef", 1_700_000_001, br#"{"a":1}"#), sig);
        assert_ne!(signature("0123456789abcdeX", 1_700_000_000, br#"{"a":1}"#), sig);
    }

    const REFERENCE: &str = "sha256=9eb18f493f8ec135d9eb2dad817c369bb4e9cbfa818657897a7437c1cd8c3a23";
}
