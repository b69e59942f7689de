//! Events for the CRM: written to the `outbox` table in the transaction of the change they
//! report (see `calls::store`), then published to RabbitMQ by the [`relay`].

pub mod relay;
