//! The ARI event websocket. One task owns the connection: it reads frames, parses them and
//! forwards them into an unbounded channel, and does nothing else, because Asterisk drops a
//! reader that falls behind. It reconnects by itself with jittered exponential backoff and
//! publishes its [`ConnectionState`] so the dialer can pause and reconcile after an outage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rand::Rng;
use secrecy::ExposeSecret;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::client::AriClient;
use super::events::Event;

/// Whether the event stream is live. Events can be missed while it is not, so on every
/// `Disconnected → Connected` edge the app re-reads the truth from Asterisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected yet since start-up.
    Connecting,
    Connected {
        since: DateTime<Utc>,
        /// Counts successful connections; a new value means a new session.
        session: u64,
    },
    Disconnected {
        since: DateTime<Utc>,
        reason: String,
        failed_attempts: u32,
    },
}

impl ConnectionState {
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected { .. })
    }
}

#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// How often we ping Asterisk; a connection silent for two intervals is dropped.
    pub ping_interval: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Fault injection for the fault suite: events passed on twice or swapped with the next.
    pub chaos: Chaos,
}

/// Deliberate faults in the event stream (the fault suite's "duplicated and reordered ARI
/// events"); zero in production.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Chaos {
    /// Chance that an event is passed on twice.
    pub duplicate: f64,
    /// Chance that an event is held back and passed on after the next one.
    pub reorder: f64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            ping_interval: Duration::from_secs(10),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            chaos: Chaos::default(),
        }
    }
}

/// The receiving side of the event stream.
pub struct EventStream {
    pub events: mpsc::UnboundedReceiver<Event>,
    pub state: watch::Receiver<ConnectionState>,
    pub stats: Arc<StreamStats>,
}

#[derive(Debug, Default)]
pub struct StreamStats {
    pub connections: AtomicU64,
    pub disconnects: AtomicU64,
    pub events: AtomicU64,
    pub bad_frames: AtomicU64,
}

/// Starts the websocket task for `client`'s application. It runs until `cancel` fires.
pub fn spawn(client: AriClient, settings: StreamSettings, cancel: CancellationToken) -> (EventStream, JoinHandle<()>) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let (state_tx, state) = watch::channel(ConnectionState::Connecting);
    let stats = Arc::new(StreamStats::default());
    let task = tokio::spawn(run(client, settings, events_tx, state_tx, stats.clone(), cancel));
    (EventStream { events, state, stats }, task)
}

async fn run(
    client: AriClient,
    settings: StreamSettings,
    events: mpsc::UnboundedSender<Event>,
    state: watch::Sender<ConnectionState>,
    stats: Arc<StreamStats>,
    cancel: CancellationToken,
) {
    let mut failed_attempts: u32 = 0;
    let mut down_since: Option<(DateTime<Utc>, Instant)> = None;
    loop {
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            connected = connect(&client) => connected,
        };
        let reason = match connected {
            Ok(socket) => {
                failed_attempts = 0;
                let session = stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
                match down_since.take() {
                    Some((_, at)) => tracing::info!(
                        app = client.app(),
                        outage_ms = at.elapsed().as_millis() as u64,
                        "ARI websocket reconnected"
                    ),
                    None => tracing::info!(app = client.app(), "ARI websocket connected"),
                }
                state.send_replace(ConnectionState::Connected {
                    since: Utc::now(),
                    session,
                });
                let reason =
                    read_session(socket, &events, &stats, settings.ping_interval, settings.chaos, &cancel).await;
                stats.disconnects.fetch_add(1, Ordering::Relaxed);
                if cancel.is_cancelled() {
                    return;
                }
                tracing::warn!(app = client.app(), %reason, "ARI websocket lost; reconnecting");
                reason
            }
            Err(e) => {
                failed_attempts = failed_attempts.saturating_add(1);
                if failed_attempts == 1 || failed_attempts.is_multiple_of(20) {
                    tracing::warn!(app = client.app(), error = %e, failed_attempts, "ARI websocket connect failed");
                }
                e.to_string()
            }
        };
        let since = down_since.get_or_insert_with(|| (Utc::now(), Instant::now())).0;
        state.send_replace(ConnectionState::Disconnected {
            since,
            reason,
            failed_attempts,
        });
        let delay = backoff_delay(
            failed_attempts,
            settings.min_backoff,
            settings.max_backoff,
            &mut rand::rng(),
        );
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn connect(
    client: &AriClient,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, WsError> {
    let mut request = events_url(client).into_client_request()?;
    let credentials = format!("{}:{}", client.username(), client.password().expose_secret());
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    );
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(&header).map_err(|e| WsError::HttpFormat(e.into()))?,
    );
    let (socket, _response) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| {
            WsError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "websocket handshake timed out",
            ))
        })??;
    Ok(socket)
}

fn events_url(client: &AriClient) -> String {
    let mut url = client.base_url().join("events").expect("static path joins");
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme).expect("ws and wss are valid schemes");
    url.query_pairs_mut()
        .append_pair("app", client.app())
        .append_pair("subscribeAll", "false");
    url.into()
}

/// Reads one websocket session until it ends; returns why it ended. Written over any
/// `Stream + Sink` of messages so tests can drive it without a network.
pub async fn read_session<S>(
    mut socket: S,
    events: &mpsc::UnboundedSender<Event>,
    stats: &StreamStats,
    ping_interval: Duration,
    chaos: Chaos,
    cancel: &CancellationToken,
) -> String
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let mut forwarder = Forwarder {
        events,
        stats,
        chaos,
        held: None,
    };
    let mut ticker = tokio::time::interval(ping_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = socket.close().await;
                return "shutting down".to_owned();
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > ping_interval * 2 {
                    return format!("no frame from Asterisk for {} ms", last_heard.elapsed().as_millis());
                }
                if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                    return format!("ping failed: {e}");
                }
            }
            frame = socket.next() => {
                last_heard = tokio::time::Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => forwarder.forward(text.as_str()),
                    Some(Ok(Message::Close(frame))) => {
                        return match frame {
                            Some(f) => format!("closed by Asterisk ({}: {})", f.code, f.reason),
                            None => "closed by Asterisk".to_owned(),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("websocket error: {e}"),
                    None => return "connection ended".to_owned(),
                }
            }
        }
    }
}

/// Parses frames and passes the events on (with the fault suite's chaos, when asked).
struct Forwarder<'a> {
    events: &'a mpsc::UnboundedSender<Event>,
    stats: &'a StreamStats,
    chaos: Chaos,
    /// An event held back to be passed on after the next one.
    held: Option<Event>,
}

impl Forwarder<'_> {
    fn forward(&mut self, text: &str) {
        match Event::parse(text) {
            Ok(event) => {
                self.stats.events.fetch_add(1, Ordering::Relaxed);
                // The receiver is gone only during shutdown; nothing to do with the event then.
                if self.chaos == Chaos::default() {
                    let _ = self.events.send(event);
                    return;
                }
                let mut rng = rand::rng();
                if self.held.is_none() && rng.random_bool(self.chaos.reorder.clamp(0.0, 1.0)) {
                    self.held = Some(event);
                    return;
                }
                if rng.random_bool(self.chaos.duplicate.clamp(0.0, 1.0)) {
                    let _ = self.events.send(event.clone());
                }
                let _ = self.events.send(event);
                if let Some(late) = self.held.take() {
                    let _ = self.events.send(late);
                }
            }
            Err(e) => {
                self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, frame_len = text.len(), "unparseable ARI frame skipped");
            }
        }
    }
}

impl Drop for Forwarder<'_> {
    /// A held event is late, never lost.
    fn drop(&mut self) {
        if let Some(late) = self.held.take() {
            let _ = self.events.send(late);
        }
    }
}

/// What Asterisk must present when it connects to us (outbound websocket mode).
#[derive(Clone)]
pub struct Expected {
    pub username: String,
    pub password: secrecy::SecretString,
}

/// The event stream in outbound mode: Asterisk connects to `listener` (ARI outbound websocket,
/// `connection_type = persistent` in its websocket_client.conf). The Stasis application then
/// stays registered in Asterisk while obzvon is away, so a customer who answers during a
/// restart enters the application instead of being hung up, and the events wait in Asterisk
/// until it connects again. REST still goes over HTTP. A new connection replaces the current
/// one (Asterisk reconnects when it thinks the old one is dead).
pub fn spawn_outbound(
    listener: tokio::net::TcpListener,
    expected: Expected,
    settings: StreamSettings,
    cancel: CancellationToken,
) -> (EventStream, JoinHandle<()>) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let (state_tx, state) = watch::channel(ConnectionState::Connecting);
    let stats = Arc::new(StreamStats::default());
    let task = tokio::spawn(run_outbound(
        listener,
        expected,
        settings,
        events_tx,
        state_tx,
        stats.clone(),
        cancel,
    ));
    (EventStream { events, state, stats }, task)
}

async fn run_outbound(
    listener: tokio::net::TcpListener,
    expected: Expected,
    settings: StreamSettings,
    events: mpsc::UnboundedSender<Event>,
    state: watch::Sender<ConnectionState>,
    stats: Arc<StreamStats>,
    cancel: CancellationToken,
) {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(addr, "waiting for Asterisk's outbound ARI websocket");
    let mut next = None;
    loop {
        let socket = match next.take() {
            Some(socket) => socket,
            None => {
                let stream = tokio::select! {
                    _ = cancel.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "accepting Asterisk's websocket failed");
                            continue;
                        }
                    },
                };
                match handshake(stream, &expected).await {
                    Some(socket) => socket,
                    None => continue,
                }
            }
        };
        let session = stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(addr, "Asterisk connected its ARI websocket");
        state.send_replace(ConnectionState::Connected {
            since: Utc::now(),
            session,
        });
        // One connection at a time; a new one that passes the handshake means Asterisk gave up
        // on this one (anything else knocking is refused without touching it).
        let reason = {
            let session = read_session(socket, &events, &stats, settings.ping_interval, settings.chaos, &cancel);
            tokio::pin!(session);
            loop {
                tokio::select! {
                    reason = &mut session => break reason,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        if let Some(socket) = handshake(stream, &expected).await {
                            next = Some(socket);
                            break "Asterisk opened a new connection".to_owned();
                        }
                    }
                }
            }
        };
        stats.disconnects.fetch_add(1, Ordering::Relaxed);
        if cancel.is_cancelled() {
            return;
        }
        tracing::warn!(%reason, "Asterisk's ARI websocket ended; waiting for it to connect again");
        state.send_replace(ConnectionState::Disconnected {
            since: Utc::now(),
            reason,
            failed_attempts: 0,
        });
    }
}

/// The handshake of a connection to the outbound listener, bounded in time; None if refused.
async fn handshake(
    stream: tokio::net::TcpStream,
    expected: &Expected,
) -> Option<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(Duration::from_secs(5), accept(stream, expected)).await {
        Ok(Ok(socket)) => Some(socket),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a websocket handshake on the outbound ARI listener was refused");
            None
        }
        Err(_) => {
            tracing::warn!("a websocket handshake on the outbound ARI listener timed out");
            None
        }
    }
}

/// The server side of the handshake: Asterisk's credentials checked, its `ari` subprotocol
/// echoed, nothing else offered (Asterisk refuses extensions such as compression).
#[expect(
    clippy::result_large_err,
    reason = "tungstenite's handshake callback returns its HTTP error answer"
)]
async fn accept(
    stream: tokio::net::TcpStream,
    expected: &Expected,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, WsError> {
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            expected.username,
            expected.password.expose_secret()
        ))
    );
    fn verdict(req: &Request, mut resp: Response, want: &str) -> Result<Response, ErrorResponse> {
        let given = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(want) {
            let mut refused = ErrorResponse::new(Some("wrong credentials".to_owned()));
            *refused.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
            return Err(refused);
        }
        let offers_ari = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|p| p.trim() == "ari"));
        if offers_ari {
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static("ari"));
        }
        Ok(resp)
    }
    tokio_tungstenite::accept_hdr_async(stream, move |req: &Request, resp: Response| verdict(req, resp, &want)).await
}

/// Full-jitter exponential backoff: a random delay in `[min, min(max, min·2^attempt)]`.
pub fn backoff_delay(attempt: u32, min: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = min
        .checked_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
        .max(min);
    let span = (ceiling - min).as_millis() as u64;
    min + Duration::from_millis(if span == 0 { 0 } else { rng.random_range(0..=span) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    #[test]
    fn backoff_grows_stays_within_bounds_and_varies() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(10));
        let mut rng = rand::rng();
        for attempt in 0..40 {
            for _ in 0..50 {
                let d = backoff_delay(attempt, min, max, &mut rng);
                assert!(d >= min && d <= max, "attempt {attempt}: {d:?}");
                let ceiling = (min * 2u32.saturating_pow(attempt.min(20))).min(max);
                assert!(d <= ceiling, "attempt {attempt}: {d:?} above {ceiling:?}");
            }
        }
        let samples: std::collections::HashSet<_> = (0..50).map(|_| backoff_delay(10, min, max, &mut rng)).collect();
        assert!(samples.len() > 10, "jitter must spread reconnects, got {samples:?}");
    }

    /// A websocket double: yields scripted frames, then stays pending; records what is sent.
    struct Scripted {
        frames: stream::Iter<std::vec::IntoIter<Result<Message, WsError>>>,
        then_pending: bool,
        sent: Vec<Message>,
    }

    impl Stream for Scripted {
        type Item = Result<Message, WsError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match Pin::new(&mut self.frames).poll_next(cx) {
                Poll::Ready(None) if self.then_pending => Poll::Pending,
                other => other,
            }
        }
    }

    impl Sink<Message> for Scripted {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
            self.sent.push(item);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }

    fn scripted(frames: Vec<Result<Message, WsError>>, then_pending: bool) -> Scripted {
        Scripted {
            frames: stream::iter(frames),
            then_pending,
            sent: Vec::new(),
        }
    }

    const DESTROYED: &str = include_str!("../../tests/fixtures/ari/channel_destroyed_busy.json");

    #[tokio::test]
    async fn forwards_events_skips_garbage_and_reports_the_close() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stats = StreamStats::default();
        let socket = scripted(
            vec![
                Ok(Message::text(DESTROYED)),
                Ok(Message::text("{not json")),
                Ok(Message::Pong(Default::default())),
                Ok(Message::text(DESTROYED)),
                Ok(Message::Close(None)),
            ],
            false,
        );
        let reason = read_session(
            socket,
            &tx,
            &stats,
            Duration::from_secs(60),
            Chaos::default(),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(reason, "closed by Asterisk");
        assert_eq!(stats.events.load(Ordering::Relaxed), 2);
        assert_eq!(stats.bad_frames.load(Ordering::Relaxed), 1);
        assert_eq!(rx.recv().await.unwrap().type_name, "ChannelDestroyed");
        assert_eq!(rx.recv().await.unwrap().type_name, "ChannelDestroyed");
    }

    #[tokio::test]
    async fn fault_injection_duplicates_and_swaps_events_when_asked_and_never_loses_one() {
        let ringing = include_str!("../../tests/fixtures/ari/channel_state_change_ringing.json");
        let frames = || {
            scripted(
                vec![
                    Ok(Message::text(ringing)),
                    Ok(Message::text(DESTROYED)),
                    Ok(Message::Close(None)),
                ],
                false,
            )
        };
        let run = |chaos: Chaos| async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            read_session(
                frames(),
                &tx,
                &StreamStats::default(),
                Duration::from_secs(60),
                chaos,
                &CancellationToken::new(),
            )
            .await;
            drop(tx);
            let mut names = Vec::new();
            while let Some(e) = rx.recv().await {
                names.push(e.type_name);
            }
            names
        };
        assert_eq!(run(Chaos::default()).await, ["ChannelStateChange", "ChannelDestroyed"]);
        let twice = run(Chaos {
            duplicate: 1.0,
            reorder: 0.0,
        })
        .await;
        assert_eq!(
            twice,
            [
                "ChannelStateChange",
                "ChannelStateChange",
                "ChannelDestroyed",
                "ChannelDestroyed"
            ]
        );
        let swapped = run(Chaos {
            duplicate: 0.0,
            reorder: 1.0,
        })
        .await;
        assert_eq!(swapped, ["ChannelDestroyed", "ChannelStateChange"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_dropped_after_two_ping_intervals() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let stats = StreamStats::default();
        let socket = scripted(vec![], true);
        let started = tokio::time::Instant::now();
        let reason = read_session(
            socket,
            &tx,
            &stats,
            Duration::from_secs(5),
            Chaos::default(),
            &CancellationToken::new(),
        )
        .await;
        assert!(reason.starts_with("no frame from Asterisk"), "{reason}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_secs(16),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_the_session() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let reason = read_session(
            scripted(vec![], true),
            &tx,
            &StreamStats::default(),
            Duration::from_secs(5),
            Chaos::default(),
            &cancel,
        )
        .await;
        assert_eq!(reason, "shutting down");
    }
}
