//! Building and running the dialer process. `App::build` connects and binds (port 0 in tests)
//! and returns; `run_until_stopped` runs the supervised tasks until a signal or a failure.
//! If one task dies the others are cancelled and the process exits non-zero instead of limping.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::ari::{self, AriClient, ConnectionState};
use crate::calls::engine::{self, EngineExit};
use crate::calls::place::Placer;
use crate::config::{AriMode, Settings};
use crate::db;
use crate::dialer::scheduler::{PacingBoard, Scheduler};
use crate::events::relay::Relay;
use crate::events::requests::RequestConsumer;
use crate::events::webhooks::Dispatcher;

pub struct App {
    settings: Settings,
    pool: PgPool,
    ari: AriClient,
    /// Outbound ARI mode: where Asterisk connects its websocket.
    ari_listener: Option<TcpListener>,
    listener: TcpListener,
    ops_listener: Option<TcpListener>,
    cancel: CancellationToken,
}

#[derive(Clone)]
struct Shared {
    pool: PgPool,
    ari_state: watch::Receiver<ConnectionState>,
    engine: crate::calls::engine::EngineHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach PostgreSQL: {0}")]
    Database(#[source] sqlx::Error),
    #[error("the database schema is behind this binary; run `obzvon migrate` first (pending: {})", .0.join(", "))]
    PendingMigrations(Vec<String>),
    #[error("{0}")]
    Ari(#[from] ari::AriError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

impl App {
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        crate::metrics::handle();
        let pool = db::connect(&settings.database).await.map_err(StartError::Database)?;
        let pending = db::pending_migrations(&pool).await.map_err(StartError::Database)?;
        if !pending.is_empty() {
            return Err(StartError::PendingMigrations(pending));
        }
        let ari = AriClient::new(
            &settings.ari.url,
            &settings.ari.username,
            settings.ari.password.clone(),
            &settings.ari.app,
        )?;
        let addr = settings.http.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let ari_listener = match settings.ari.mode {
            AriMode::Inbound => None,
            AriMode::Outbound => {
                let addr = settings.ari.outbound_listen;
                Some(bind_reusable(addr).map_err(|source| StartError::Bind { addr, source })?)
            }
        };
        let ops_listener = match settings.http.ops_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(App {
            settings,
            pool,
            ari,
            ari_listener,
            listener,
            ops_listener,
            cancel: CancellationToken::new(),
        })
    }

    /// The health/metrics address when `http.ops_listen` is set.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Cancelling this token stops the app as a signal would.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let App {
            settings,
            pool,
            ari,
            ari_listener,
            listener,
            ops_listener,
            cancel,
        } = self;
        // `cancel` asks the process to stop: claiming stops at once and the engine drains.
        // `stop` ends everything else (the websocket, HTTP, the relay) once the engine is done.
        let stop = CancellationToken::new();
        let (stream, ws_task) = match ari_listener {
            None => ari::ws::spawn(ari.clone(), settings.ari_stream(), stop.child_token()),
            Some(listener) => {
                let expected = ari::ws::Expected {
                    username: settings.ari.outbound_username.clone(),
                    password: settings.ari.outbound_password.clone(),
                };
                ari::ws::spawn_outbound(listener, expected, settings.ari_stream(), stop.child_token())
            }
        };
        let ari_state = stream.state.clone();
        let (engine, mut engine_task) = engine::spawn(
            pool.clone(),
            ari.clone(),
            settings.engine(),
            stream,
            cancel.child_token(),
        )
        .await?;
        let shared = Shared {
            pool: pool.clone(),
            ari_state,
            engine: engine.clone(),
        };
        let pacing = PacingBoard::default();
        let scheduler = Scheduler::new(
            pool.clone(),
            engine.clone(),
            settings.instance.id.clone(),
            pacing.clone(),
        );
        let placer = Placer {
            pool: pool.clone(),
            engine: engine.clone(),
            defaults: settings.dialer.clone(),
        };
        let api_state = ApiState {
            pool: pool.clone(),
            engine,
            placer: placer.clone(),
            pacing,
            bodies: api::Bodies::new(&settings.http),
            private_webhooks: settings.webhooks.allow_private_targets,
            ari: ari.clone(),
            stop: stop.clone(),
        };
        let api = api::router(api_state).merge(crate::console::router());
        let requests = RequestConsumer::new(placer, settings.amqp.url.clone(), settings.amqp.request_queue.clone());
        let webhooks = Dispatcher::new(pool.clone(), settings.webhooks.clone())?;

        let mut tasks = JoinSet::new();
        tasks.spawn(named("ari-websocket", async move {
            ws_task.await?;
            Ok(())
        }));
        tasks.spawn(named("scheduler", scheduler.run(cancel.child_token())));
        let relay = Relay::new(
            pool.clone(),
            settings.amqp.url.clone(),
            settings.amqp.events_exchange.clone(),
        );
        tasks.spawn(named("outbox-relay", relay.run(stop.child_token())));
        tasks.spawn(named("call-requests", requests.run(cancel.child_token())));
        tasks.spawn(named("webhooks", webhooks.run(stop.child_token())));
        tasks.spawn(named(
            "metrics",
            crate::metrics::collect(pool.clone(), stop.child_token()),
        ));
        tasks.spawn(named(
            "metrics-ari",
            crate::metrics::watch_ari(shared.ari_state.clone(), stop.child_token()),
        ));
        let ops = ops_router(shared);
        match ops_listener {
            Some(ops_listener) => {
                tasks.spawn(named("http", serve_http(listener, api, stop.child_token())));
                tasks.spawn(named("http-ops", serve_http(ops_listener, ops, stop.child_token())));
            }
            None => {
                tasks.spawn(named("http", serve_http(listener, ops.merge(api), stop.child_token())));
            }
        }
        let signals = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested");
            signals.cancel();
        });

        let mut failure = None;
        let mut engine_exit = None;
        // The first task to end decides: during shutdown that is expected, otherwise it failed.
        tokio::select! {
            joined = tasks.join_next() => {
                if let Some(joined) = joined {
                    let (name, result) = joined?;
                    if !cancel.is_cancelled() {
                        let why = result
                            .err()
                            .map_or_else(|| "ended unexpectedly".to_owned(), |e| format!("{e:#}"));
                        tracing::error!(task = name, error = %why, "task failed; stopping");
                        failure = Some(anyhow::anyhow!("task {name} failed: {why}"));
                    }
                }
            }
            exit = &mut engine_task => engine_exit = Some(exit),
        }
        cancel.cancel();
        // The engine drains live calls (bounded by its grace period) before anything else stops.
        let exit = match engine_exit {
            Some(exit) => exit,
            None => engine_task.await,
        };
        match exit {
            Ok(Ok(EngineExit::Replaced)) => {
                tracing::warn!("another obzvon process took over the Stasis application; stopping");
            }
            Ok(Ok(exit)) => tracing::info!(?exit, "call engine stopped"),
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "call engine failed");
                failure.get_or_insert(anyhow::anyhow!("task call-engine failed: {e:#}"));
            }
            Err(e) => {
                failure.get_or_insert(anyhow::anyhow!("task call-engine panicked: {e}"));
            }
        }
        stop.cancel();
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(joined) = tasks.join_next().await {
                if let Ok((name, Err(e))) = joined {
                    tracing::warn!(task = name, error = %format!("{e:#}"), "task ended with an error during shutdown");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("tasks still running 10 s after the engine stopped; aborting them");
            tasks.abort_all();
        }
        pool.close().await;
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// A listener a new process can bind while the old one still holds it (a rolling restart in
/// outbound mode: Asterisk's next connection reaches whichever process listens).
fn bind_reusable(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

async fn named<F>(name: &'static str, task: F) -> (&'static str, anyhow::Result<()>)
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    (name, task.await)
}

/// Health and metrics: open, on the main listener or on `http.ops_listen`.
fn ops_router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { crate::metrics::handle().render() }))
        .with_state(shared)
}

async fn serve_http(listener: TcpListener, router: Router, cancel: CancellationToken) -> anyhow::Result<()> {
    let router = router.layer(axum::middleware::from_fn(crate::metrics::track_http));
    tracing::info!(addr = %listener.local_addr()?, "http listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    Ok(())
}

/// Ready when PostgreSQL answers, the ARI websocket is connected, the engine has read
/// Asterisk's state (it places calls) and it is not draining.
async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let database = sqlx::query("SELECT 1").execute(&shared.pool).await.is_ok();
    let ari_state = shared.ari_state.borrow().clone();
    let ari = ari_state.is_connected();
    let engine = shared.engine.status();
    let status = if database && ari && engine.synced && !engine.draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let detail = match &ari_state {
        ConnectionState::Connecting => "connecting".to_owned(),
        ConnectionState::Connected { since, .. } => format!("connected since {since}"),
        ConnectionState::Disconnected { since, reason, .. } => {
            format!("disconnected since {since}: {reason}")
        }
    };
    (
        status,
        Json(serde_json::json!({ "database": database, "ari": ari, "ari_detail": detail, "engine": engine })),
    )
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
