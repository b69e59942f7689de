//! Prometheus metrics (`obzvon_` prefix), served at `/metrics`. The recorder is process-wide
//! and installed once, so several apps in one test process share it.
//!
//! Counters and histograms are recorded where things happen (engine, scheduler, HTTP, ARI);
//! gauges that describe state (operators, live calls, outbox backlog, abandon rates) are read
//! from PostgreSQL every few seconds by [`collect`], so they are right across restarts and
//! across instances sharing one database.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ari::ConnectionState;

/// Latency buckets: the connect goal is p99 under 100 ms.
const LATENCY_BUCKETS: [f64; 12] = [0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0];
/// Work measured in microseconds to milliseconds (the engine's per-input handling; goal p99 < 5 ms).
const FAST_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1];
/// Originate to ringing: network and carrier time, up to seconds.
const RING_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0];

/// Customer answer → customer and operator in one bridge.
pub const CONNECT_LATENCY: &str = "obzvon_connect_latency_seconds";
/// An operator taken for an answered customer → both in one bridge (the dialer's own part of
/// the connect latency, without the wait for a free operator).
pub const CONNECT_WORK: &str = "obzvon_connect_dialer_seconds";
/// An ARI request waiting for its turn (at most `ari::client::MAX_REQUESTS_IN_FLIGHT` at once).
pub const ARI_REQUEST_WAIT: &str = "obzvon_ari_request_wait_seconds";
/// An ARI request's round trip to Asterisk, from its turn to the answer's last byte.
pub const ARI_REQUEST: &str = "obzvon_ari_request_seconds";
/// An ARI event's age when the engine takes it up (Asterisk's timestamp to now).
pub const ARI_EVENT_LAG: &str = "obzvon_ari_event_lag_seconds";
/// The engine's handling of one input (an event, a command, an ARI answer, a tick): the core's
/// transition and handing its actions on.
pub const ENGINE_INPUT: &str = "obzvon_engine_input_seconds";
/// Originate request → the customer's phone rings.
pub const ORIGINATE_TO_RING: &str = "obzvon_originate_to_ring_seconds";
pub const ATTEMPTS: &str = "obzvon_attempts_total";
pub const SCHEDULER_TICK: &str = "obzvon_scheduler_tick_seconds";
pub const LIVE_CALLS: &str = "obzvon_live_calls";
pub const OPERATORS: &str = "obzvon_operators";
pub const ABANDON_RATE: &str = "obzvon_abandon_rate";
pub const ABANDON_CAP: &str = "obzvon_abandon_rate_cap";
pub const ARI_CONNECTED: &str = "obzvon_ari_connected";
pub const ARI_RECONNECTS: &str = "obzvon_ari_reconnects_total";
pub const OUTBOX_BACKLOG: &str = "obzvon_outbox_backlog";
pub const OUTBOX_OLDEST: &str = "obzvon_outbox_oldest_unsent_seconds";
pub const HTTP_REQUESTS: &str = "obzvon_http_requests_total";
pub const HTTP_DURATION: &str = "obzvon_http_request_duration_seconds";
pub const WEBHOOK_DELIVERIES: &str = "obzvon_webhook_deliveries_total";
/// Engine state changes journaled and not yet in PostgreSQL (grows during a database outage).
pub const JOURNAL_BACKLOG: &str = "obzvon_engine_journal_backlog";
/// Operator sessions ended because the phone died (no audio, no qualify answer, RTP timeout).
pub const SESSIONS_DEAD: &str = "obzvon_operator_sessions_dead_total";

/// Predictive pacing, per campaign: calls ringing per operator, the learnt live-answer rate,
/// operators expected free within the mean answer time, 1 while the window's abandon rate holds
/// it at one call per ready operator, and the abandon rate over the campaign's window.
pub const PACING_DIAL_LEVEL: &str = "obzvon_pacing_dial_level";
pub const PACING_LIVE_RATE: &str = "obzvon_pacing_live_answer_rate";
pub const PACING_PREDICTED_FREE: &str = "obzvon_pacing_predicted_free_operators";
pub const PACING_FALLBACK: &str = "obzvon_pacing_fallback";
pub const PACING_WINDOW_ABANDON_RATE: &str = "obzvon_pacing_window_abandon_rate";
pub const PACING_TARGET: &str = "obzvon_pacing_target_abandon_rate";

/// How often the state gauges are read from PostgreSQL.
pub const COLLECT_EVERY: Duration = Duration::from_secs(5);

pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CONNECT_LATENCY.to_owned()), &LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(SCHEDULER_TICK.to_owned()), &LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), &LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ORIGINATE_TO_RING.to_owned()), &RING_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CONNECT_WORK.to_owned()), &LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ARI_REQUEST_WAIT.to_owned()), &LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ARI_REQUEST.to_owned()), &LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ARI_EVENT_LAG.to_owned()), &LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ENGINE_INPUT.to_owned()), &FAST_BUCKETS))
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests that build one themselves; keep ours readable.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        CONNECT_LATENCY,
        Unit::Seconds,
        "Customer answer to customer and operator in one bridge"
    );
    describe_histogram!(
        ORIGINATE_TO_RING,
        Unit::Seconds,
        "Originate request to the customer's phone ringing"
    );
    describe_histogram!(
        CONNECT_WORK,
        Unit::Seconds,
        "An operator taken for an answered customer to both in one bridge"
    );
    describe_histogram!(
        ARI_REQUEST_WAIT,
        Unit::Seconds,
        "ARI requests waiting for a turn (a bounded number are in flight at once)"
    );
    describe_histogram!(ARI_REQUEST, Unit::Seconds, "ARI request round trips to Asterisk");
    describe_histogram!(
        ARI_EVENT_LAG,
        Unit::Seconds,
        "ARI events' age when the engine takes them up (Asterisk's timestamp to then)"
    );
    describe_histogram!(
        ENGINE_INPUT,
        Unit::Seconds,
        "The engine's handling of one input (core transition and handing its actions on)"
    );
    describe_counter!(ATTEMPTS, "Finished attempts by campaign, status and result");
    describe_histogram!(
        SCHEDULER_TICK,
        Unit::Seconds,
        "One scheduler round over the running campaigns"
    );
    describe_gauge!(
        LIVE_CALLS,
        "Attempts in init, ringing or in-progress, by campaign and status"
    );
    describe_gauge!(OPERATORS, "Operators by session state");
    describe_gauge!(
        ABANDON_RATE,
        "Abandoned / answered over the campaign's abandon window (its profile's; default its local day), running campaigns"
    );
    describe_gauge!(ABANDON_CAP, "The campaign's max_abandon_rate");
    describe_gauge!(ARI_CONNECTED, "1 while the ARI websocket is connected");
    describe_counter!(ARI_RECONNECTS, "ARI websocket connections after the first");
    describe_gauge!(OUTBOX_BACKLOG, "Events not yet confirmed by RabbitMQ");
    describe_gauge!(
        JOURNAL_BACKLOG,
        "Call engine state changes journaled on disk and not yet written to PostgreSQL"
    );
    describe_counter!(
        SESSIONS_DEAD,
        "Operator sessions ended because the phone stopped sending audio or answering"
    );
    describe_gauge!(
        OUTBOX_OLDEST,
        Unit::Seconds,
        "Age of the oldest unsent event (0 when none)"
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request duration by route");
    describe_counter!(WEBHOOK_DELIVERIES, "Webhook POSTs by outcome: delivered, retry, failed");
    describe_gauge!(
        PACING_DIAL_LEVEL,
        "Predictive pacing: calls ringing per operator who may take them"
    );
    describe_gauge!(
        PACING_LIVE_RATE,
        "Predictive pacing: learnt share of dials a person answers"
    );
    describe_gauge!(
        PACING_PREDICTED_FREE,
        "Predictive pacing: operators expected free within the mean answer time"
    );
    describe_gauge!(
        PACING_FALLBACK,
        "Predictive pacing: 1 while the window's abandon rate is at the target (one call per ready operator)"
    );
    describe_gauge!(PACING_TARGET, "Predictive pacing: the campaign's target_abandon_rate");
    describe_gauge!(
        PACING_WINDOW_ABANDON_RATE,
        "Predictive pacing: abandoned / answered over the campaign's abandon window"
    );
}

/// Counts every HTTP request by its route template (not the raw path, which holds ids).
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// Follows the ARI connection: the connected gauge and the reconnect counter.
pub async fn watch_ari(mut state: watch::Receiver<ConnectionState>, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut connected_before = false;
    metrics::counter!(ARI_RECONNECTS).increment(0);
    loop {
        let connected = state.borrow_and_update().is_connected();
        metrics::gauge!(ARI_CONNECTED).set(if connected { 1.0 } else { 0.0 });
        if connected {
            if connected_before {
                metrics::counter!(ARI_RECONNECTS).increment(1);
            }
            connected_before = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            changed = state.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

/// Reads the state gauges from PostgreSQL every [`COLLECT_EVERY`] until cancelled.
pub async fn collect(pool: PgPool, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut seen = Seen::default();
    loop {
        if let Err(e) = collect_once(&pool, &mut seen).await {
            tracing::warn!(error = %e, "could not read metrics from PostgreSQL");
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(COLLECT_EVERY) => {}
        }
    }
}

/// Label sets set last time: a campaign that drops out is set to 0, not left stale.
#[derive(Default)]
struct Seen {
    live: HashSet<(String, String)>,
    abandon: HashSet<(String, String)>,
}

async fn collect_once(pool: &PgPool, seen: &mut Seen) -> Result<(), sqlx::Error> {
    let operators: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.state, count(o.id) FROM unnest(ARRAY['offline', 'ready', 'reserved', 'on-call', 'wrap-up', 'paused']) AS s(state)
         LEFT JOIN operators o ON o.state = s.state AND o.enabled GROUP BY s.state",
    )
    .fetch_all(pool)
    .await?;
    for (state, n) in operators {
        metrics::gauge!(OPERATORS, "state" => state).set(n as f64);
    }

    let live: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT coalesce(campaign_id::text, 'single'), status, count(*) FROM attempts
         WHERE status IN {live} GROUP BY 1, 2",
        live = crate::calls::AttemptStatus::LIVE_SQL
    ))
    .fetch_all(pool)
    .await?;
    let mut now_live = HashSet::new();
    for (campaign, status, n) in live {
        metrics::gauge!(LIVE_CALLS, "campaign" => campaign.clone(), "status" => status.clone()).set(n as f64);
        now_live.insert((campaign, status));
    }
    for (campaign, status) in seen.live.difference(&now_live) {
        metrics::gauge!(LIVE_CALLS, "campaign" => campaign.clone(), "status" => status.clone()).set(0.0);
    }
    if now_live.is_empty() {
        // Export the series even when idle, so dashboards and alerts see 0 rather than nothing.
        metrics::gauge!(LIVE_CALLS, "campaign" => "single", "status" => "in-progress").set(0.0);
    }
    seen.live = now_live;

    let (backlog, oldest): (i64, f64) = sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
         FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!(OUTBOX_BACKLOG).set(backlog as f64);
    metrics::gauge!(OUTBOX_OLDEST).set(oldest);

    let running: Vec<(crate::ids::CampaignId, String, f64, Option<String>)> = sqlx::query_as(
        "SELECT id, name, coalesce((settings->>'max_abandon_rate')::float8, 0.03), settings->'pacing'->>'abandon_window'
         FROM campaigns WHERE state = 'running'",
    )
    .fetch_all(pool)
    .await?;
    let mut now_abandon = HashSet::new();
    for (id, name, cap, window) in running {
        // Over the window the campaign's cap is counted in (its profile's).
        let window = window
            .and_then(|w| serde_json::from_value(serde_json::Value::String(w)).ok())
            .unwrap_or(crate::campaigns::spec::AbandonWindow::Day);
        let rate = crate::reports::abandon_counts(pool, id, window).await?.rate();
        let labels = (id.to_string(), name);
        metrics::gauge!(ABANDON_RATE, "campaign" => labels.0.clone(), "campaign_name" => labels.1.clone())
            .set(rate.unwrap_or(0.0));
        metrics::gauge!(ABANDON_CAP, "campaign" => labels.0.clone(), "campaign_name" => labels.1.clone()).set(cap);
        now_abandon.insert(labels);
    }
    for (id, name) in seen.abandon.difference(&now_abandon) {
        // Stopped or finished: no longer dialling, so no rate to watch.
        metrics::gauge!(ABANDON_RATE, "campaign" => id.clone(), "campaign_name" => name.clone()).set(0.0);
    }
    seen.abandon = now_abandon;
    Ok(())
}
