//! The RabbitMQ connection both the relay and the request consumer keep: connect with a time
//! limit, run a session on a channel, and reconnect with a growing delay (0.5 s to 10 s) when
//! the broker goes away, until cancelled.

use std::future::Future;
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

async fn connect(url: &SecretString) -> anyhow::Result<(Connection, Channel)> {
    let connection = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(url.expose_secret(), ConnectionProperties::default()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// Runs `session` on a fresh channel each time the broker is reachable. The session returns
/// `None` when cancelled, or the error that ended it; it then runs again after a delay.
pub async fn keep_connected<F, Fut>(
    url: &SecretString,
    what: &'static str,
    cancel: &CancellationToken,
    mut session: F,
) -> anyhow::Result<()>
where
    F: FnMut(Channel) -> Fut,
    Fut: Future<Output = Option<anyhow::Error>>,
{
    let mut backoff = Duration::from_millis(500);
    loop {
        let connected = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            c = connect(url) => c,
        };
        match connected {
            Ok((connection, channel)) => {
                tracing::info!(what, "connected to RabbitMQ");
                backoff = Duration::from_millis(500);
                let ended = session(channel).await;
                let _ = connection.close(0, "bye").await;
                match ended {
                    None => return Ok(()),
                    Some(e) => tracing::warn!(what, error = %format!("{e:#}"), "lost RabbitMQ"),
                }
            }
            Err(e) => tracing::warn!(what, error = %format!("{e:#}"), retry_ms = backoff.as_millis() as u64,
                "RabbitMQ unreachable"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
