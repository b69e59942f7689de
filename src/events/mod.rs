//! Events for the CRM: written to the `outbox` table in the transaction of the change they
//! report (attempts in `calls::store`, operators and campaigns in their stores), then published
//! to RabbitMQ by the [`relay`] and POSTed to webhook subscriptions by [`webhooks`]. Call
//! requests come in through [`requests`]. `contracts/` holds the JSON Schema of each.

mod amqp;
pub mod feed;
pub mod relay;
pub mod requests;
pub mod targets;
pub mod webhooks;

/// Every event type the outbox carries (routing key in brackets):
/// call events `call.*`, `operator.state`, `campaign.state`.
pub const EVENT_TYPES: [&str; 9] = [
    "OutboundCallInitiated",
    "OutboundCallRinging",
    "OutboundCallAnswered",
    "OutboundCallBridged",
    "OutboundCallFailed",
    "OutboundCallEnded",
    "OutboundCallDisposition",
    "OperatorStateChanged",
    "CampaignStateChanged",
];

/// An outbox row as subscribers receive it: its payload with the event's id as `eventId`.
pub fn message(id: uuid::Uuid, mut payload: serde_json::Value) -> serde_json::Value {
    payload["eventId"] = serde_json::Value::String(id.to_string());
    payload
}
