//! The outbox relay: publishes unsent outbox rows, oldest first, to the topic exchange with
//! publisher confirms, and marks a row sent only after the broker confirmed it. A broker outage
//! delays events and loses none: rows stay unsent until the broker is back. Message id = event
//! id, persistent delivery, `attemptId` header.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BATCH: i64 = 200;
const POLL: Duration = Duration::from_millis(200);

pub struct Relay {
    pool: PgPool,
    url: SecretString,
    exchange: String,
}

/// What one relay step did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RelayOutcome {
    pub published: usize,
}

impl Relay {
    pub fn new(pool: PgPool, url: SecretString, exchange: String) -> Relay {
        Relay { pool, url, exchange }
    }

    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        super::amqp::keep_connected(&self.url, "outbox relay", &cancel, |channel| {
            self.session(channel, &cancel)
        })
        .await
    }

    async fn session(&self, channel: Channel, cancel: &CancellationToken) -> Option<anyhow::Error> {
        let setup = async {
            channel
                .exchange_declare(
                    self.exchange.as_str(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await
        };
        if let Err(e) = setup.await {
            return Some(e.into());
        }
        self.publish_until_error(&channel, cancel).await
    }

    /// Publishes until cancelled (None) or the broker fails (Some(error)).
    async fn publish_until_error(&self, channel: &Channel, cancel: &CancellationToken) -> Option<anyhow::Error> {
        loop {
            match self.relay_once(channel).await {
                Ok(outcome) if outcome.published > 0 => continue,
                Ok(_) => {}
                Err(e) => return Some(e),
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// One batch: lock the oldest unsent rows, publish each and wait for its confirm, then mark
    /// the confirmed ones sent, all in one transaction.
    pub async fn relay_once(&self, channel: &Channel) -> anyhow::Result<RelayOutcome> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(Uuid, String, String, Option<Uuid>, serde_json::Value)> = sqlx::query_as(
            "SELECT id, event_type, routing_key, attempt_id, payload FROM outbox
             WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(RelayOutcome::default());
        }
        let mut sent = Vec::with_capacity(rows.len());
        let mut failure = None;
        for (id, event_type, routing_key, attempt, payload) in rows {
            let payload = super::message(id, payload);
            let mut headers = FieldTable::default();
            if let Some(attempt) = attempt {
                headers.insert("attemptId".into(), AMQPValue::LongString(attempt.to_string().into()));
            }
            headers.insert("eventType".into(), AMQPValue::LongString(event_type.into()));
            let properties = BasicProperties::default()
                .with_message_id(id.to_string().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(headers);
            let body = serde_json::to_vec(&payload)?;
            let confirmed = async {
                let confirm = channel
                    .basic_publish(
                        self.exchange.as_str(),
                        routing_key.as_str(),
                        BasicPublishOptions::default(),
                        &body,
                        properties,
                    )
                    .await?
                    .await?;
                anyhow::ensure!(confirm.is_ack(), "the broker refused the event");
                anyhow::Ok(())
            }
            .await;
            match confirmed {
                Ok(()) => sent.push(id),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !sent.is_empty() {
            sqlx::query("UPDATE outbox SET sent_at = now(), publish_tries = publish_tries + 1 WHERE id = ANY($1)")
                .bind(&sent)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(RelayOutcome { published: sent.len() }),
        }
    }
}
