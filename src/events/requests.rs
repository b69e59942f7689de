//! Call requests in: a consumer of the `outbound.call.request` queue. A message body is the
//! same JSON as `POST /api/v1/calls` and goes through the same checks and the same engine
//! command. The message's AMQP `correlation_id` is used when the body names none, so the CRM's
//! id comes back in every event of the call. A request that cannot be placed (bad JSON, unknown
//! operator, busy number, ...) is republished to the dead-letter queue
//! `<queue>.dead` with the reason in the `x-obzvon-reason` header and acknowledged: never
//! retried forever, never a reason to stop consuming. With `reply_to` set, the outcome is also
//! sent there.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::calls::place::{parse_call_request, Placer};

pub struct RequestConsumer {
    placer: Placer,
    url: SecretString,
    queue: String,
}

/// The dead-letter exchange and queue for a request queue.
pub fn dead_letter_names(queue: &str) -> (String, String) {
    (format!("{queue}.dlx"), format!("{queue}.dead"))
}

impl RequestConsumer {
    pub fn new(placer: Placer, url: SecretString, queue: String) -> RequestConsumer {
        RequestConsumer { placer, url, queue }
    }

    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        super::amqp::keep_connected(&self.url, "call request consumer", &cancel, |channel| {
            self.session(channel, &cancel)
        })
        .await
    }

    async fn session(&self, channel: Channel, cancel: &CancellationToken) -> Option<anyhow::Error> {
        let setup = async {
            declare(&channel, &self.queue).await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            channel.basic_qos(16, BasicQosOptions::default()).await?;
            anyhow::Ok(())
        };
        if let Err(e) = setup.await {
            return Some(e);
        }
        tracing::info!(queue = self.queue, "consuming call requests");
        self.consume(&channel, cancel).await
    }

    async fn consume(&self, channel: &Channel, cancel: &CancellationToken) -> Option<anyhow::Error> {
        let consumer = channel
            .basic_consume(
                self.queue.as_str(),
                "obzvon-call-requests",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        let mut consumer = match consumer {
            Ok(c) => c,
            Err(e) => return Some(e.into()),
        };
        loop {
            let delivery = tokio::select! {
                _ = cancel.cancelled() => return None,
                d = consumer.next() => d,
            };
            match delivery {
                None => return Some(anyhow::anyhow!("the broker closed the consumer")),
                Some(Err(e)) => return Some(e.into()),
                Some(Ok(delivery)) => {
                    if let Err(e) = self.handle(channel, &delivery).await {
                        return Some(e);
                    }
                }
            }
        }
    }

    /// Places the call or dead-letters the message; errors only when the broker fails.
    async fn handle(&self, channel: &Channel, delivery: &Delivery) -> anyhow::Result<()> {
        let props = &delivery.properties;
        let outcome = match parse_call_request(&delivery.data) {
            Ok(mut input) => {
                if input.correlation_id.is_none() {
                    input.correlation_id = props.correlation_id().as_ref().map(|c| c.to_string());
                }
                self.placer.place(input).await
            }
            Err(e) => Err(e),
        };
        let reply = match &outcome {
            Ok(attempt) => {
                tracing::info!(attempt.id = %attempt.id, "call request placed");
                json!({ "ok": true, "attempt": attempt })
            }
            Err(e) => {
                let code = e.code();
                let reason = e.message();
                tracing::warn!(code, reason, "call request refused; dead-lettered");
                let mut headers = props.headers().clone().unwrap_or_default();
                headers.insert("x-obzvon-reason".into(), AMQPValue::LongString(reason.clone().into()));
                headers.insert("x-obzvon-error".into(), AMQPValue::LongString(code.into()));
                let mut dead = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_headers(headers);
                if let Some(c) = props.correlation_id() {
                    dead = dead.with_correlation_id(c.clone());
                }
                if let Some(m) = props.message_id() {
                    dead = dead.with_message_id(m.clone());
                }
                let (dlx, _) = dead_letter_names(&self.queue);
                let confirm = channel
                    .basic_publish(dlx.as_str(), "", BasicPublishOptions::default(), &delivery.data, dead)
                    .await?
                    .await?;
                if !confirm.is_ack() {
                    // Let the broker dead-letter it (queue argument) rather than lose or loop.
                    delivery
                        .nack(BasicNackOptions {
                            requeue: false,
                            ..Default::default()
                        })
                        .await?;
                    return Ok(());
                }
                json!({ "ok": false, "error": code, "reason": reason })
            }
        };
        if let Some(reply_to) = props.reply_to() {
            let mut p = BasicProperties::default().with_content_type("application/json".into());
            if let Some(c) = props.correlation_id() {
                p = p.with_correlation_id(c.clone());
            }
            let body = serde_json::to_vec(&reply)?;
            // A reply that cannot be routed is dropped by the broker; it never blocks requests.
            channel
                .basic_publish("", reply_to.as_str(), BasicPublishOptions::default(), &body, p)
                .await?
                .await?;
        }
        delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

/// The request queue (durable, dead-lettering to `<queue>.dlx`) and the dead-letter queue.
pub async fn declare(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let (dlx, dead) = dead_letter_names(queue);
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            dlx.as_str(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(dead.as_str(), durable, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            dead.as_str(),
            dlx.as_str(),
            "",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    channel.queue_declare(queue, durable, args).await?;
    Ok(())
}
