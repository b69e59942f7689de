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
use crate::calls::engine;
use crate::config::Settings;
use crate::db;
use crate::dialer::scheduler::Scheduler;
use crate::events::relay::Relay;
use crate::events::requests::RequestConsumer;
use crate::events::webhooks::Dispatcher;

pub struct App {
    settings: Settings,
    pool: PgPool,
    ari: AriClient,
    listener: TcpListener,
    ops_listener: Option<TcpListener>,
    cancel: CancellationToken,
}

#[derive(Clone)]
struct Shared {
    pool: PgPool,
    ari_state: watch::Receiver<ConnectionState>,
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
            listener,
            ops_listener,
            cancel,
        } = self;
        engine::recover_after_restart(&pool, &ari, &settings.instance.id).await?;
        let (stream, ws_task) = ari::ws::spawn(ari.clone(), settings.ari_stream(), cancel.child_token());
        let shared = Shared {
            pool: pool.clone(),
            ari_state: stream.state.clone(),
        };
        let (engine, engine_task) = engine::spawn(
            pool.clone(),
            ari.clone(),
            settings.instance.id.clone(),
            stream,
            cancel.child_token(),
        );
        let scheduler = Scheduler::new(pool.clone(), engine.clone(), settings.instance.id.clone());
        let api_state = ApiState {
            pool: pool.clone(),
            engine,
            single: settings.dialer.clone(),
        };
        let api = api::router(api_state.clone());
        let requests = RequestConsumer::new(
            api_state,
            settings.amqp.url.clone(),
            settings.amqp.request_queue.clone(),
        );
        let webhooks = Dispatcher::new(pool.clone(), settings.webhooks.clone())?;

        let mut tasks = JoinSet::new();
        tasks.spawn(named("ari-websocket", async move {
            ws_task.await?;
            Ok(())
        }));
        tasks.spawn(named("call-engine", async move { engine_task.await? }));
        tasks.spawn(named("scheduler", scheduler.run(cancel.child_token())));
        let relay = Relay::new(
            pool.clone(),
            settings.amqp.url.clone(),
            settings.amqp.events_exchange.clone(),
        );
        tasks.spawn(named("outbox-relay", relay.run(cancel.child_token())));
        tasks.spawn(named("call-requests", requests.run(cancel.child_token())));
        tasks.spawn(named("webhooks", webhooks.run(cancel.child_token())));
        tasks.spawn(named(
            "metrics",
            crate::metrics::collect(pool.clone(), cancel.child_token()),
        ));
        tasks.spawn(named(
            "metrics-ari",
            crate::metrics::watch_ari(shared.ari_state.clone(), cancel.child_token()),
        ));
        let ops = ops_router(shared);
        match ops_listener {
            Some(ops_listener) => {
                tasks.spawn(named("http", serve_http(listener, api, cancel.child_token())));
                tasks.spawn(named("http-ops", serve_http(ops_listener, ops, cancel.child_token())));
            }
            None => {
                tasks.spawn(named(
                    "http",
                    serve_http(listener, ops.merge(api), cancel.child_token()),
                ));
            }
        }
        let signals = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested");
            signals.cancel();
        });

        let mut failure = None;
        // The first task to end decides: during shutdown that is expected, otherwise it failed.
        if let Some(joined) = tasks.join_next().await {
            let (name, result) = joined?;
            if !cancel.is_cancelled() {
                let why = result
                    .err()
                    .map_or_else(|| "ended unexpectedly".to_owned(), |e| format!("{e:#}"));
                tracing::error!(task = name, error = %why, "task failed; stopping");
                failure = Some(anyhow::anyhow!("task {name} failed: {why}"));
            }
        }
        cancel.cancel();
        let grace = Duration::from_secs(settings.http.shutdown_grace_secs);
        let drained = tokio::time::timeout(grace, async {
            while let Some(joined) = tasks.join_next().await {
                if let Ok((name, Err(e))) = joined {
                    tracing::warn!(task = name, error = %format!("{e:#}"), "task ended with an error during shutdown");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "tasks still running after the grace period; aborting them"
            );
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

/// Ready when PostgreSQL answers and the ARI websocket is connected.
async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let database = sqlx::query("SELECT 1").execute(&shared.pool).await.is_ok();
    let ari_state = shared.ari_state.borrow().clone();
    let ari = ari_state.is_connected();
    let status = if database && ari {
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
        Json(serde_json::json!({ "database": database, "ari": ari, "ari_detail": detail })),
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
