//! `GET /api/v1/events/stream`: the outbox events (the same bodies as RabbitMQ carries) as
//! server-sent events, for the console and for a CRM that prefers HTTP to AMQP. Each event's
//! SSE `id` is its outbox sequence number: a client that reconnects with `Last-Event-ID`
//! gets every event after it, in order. Without one the stream starts at the newest event.
//! A token sees the events its scopes would let it read over REST.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, ApiResult, ApiState, ErrorBody};
use crate::auth::Actor;
use crate::events::feed::{Feed, FeedEvent};
use crate::events::EVENT_TYPES;

/// How often an idle stream looks for new events.
const POLL: Duration = Duration::from_millis(300);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Only these event types, comma-separated (e.g. `OutboundCallBridged,OperatorStateChanged`).
    types: Option<String>,
    /// Start after this event id, as `Last-Event-ID` does (the header wins when both are sent).
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// Which scopes may read an event type: what its REST counterpart needs.
fn readable_with(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "OperatorStateChanged" => &["operators:write", "campaigns:write", "reports:read"],
        "CampaignStateChanged" => &["campaigns:write", "reports:read"],
        _ => &["calls:write", "campaigns:write", "reports:read"],
    }
}

fn may_read(actor: &Actor, event_type: &str) -> bool {
    let allowed = readable_with(event_type);
    actor
        .scopes
        .iter()
        .any(|s| s == "admin" || allowed.contains(&s.as_str()))
}

#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events", operation_id = "event_stream", params(StreamParams, ("Last-Event-ID" = Option<i64>, Header, description = "the last event id received; the stream resumes after it")), responses((status = 200, description = "server-sent events: `id` the event's sequence number, `event` its type, `data` the event as JSON (see contracts/events)", content_type = "text/event-stream", body = String), (status = 400, description = "Last-Event-ID is not an event id", body = ErrorBody), (status = 422, description = "unknown event type in `types`", body = ErrorBody)), security(("token" = ["calls:write"]), ("token" = ["campaigns:write"]), ("token" = ["operators:write"]), ("token" = ["reports:read"])))]
pub async fn event_stream(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let types = match params.types.as_deref() {
        None => None,
        Some(list) => {
            let wanted: Vec<String> = list
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            if let Some(bad) = wanted.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
                return Err(ApiError::invalid(
                    "types",
                    format!("unknown event type {bad:?}; known: {}", EVENT_TYPES.join(", ")),
                ));
            }
            Some(wanted)
        }
    };
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|v| *v >= 0)
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID must be an event id from this stream (a whole number)".into())
                })?,
        ),
        None => params.after,
    };
    let feed = match resume {
        Some(seq) => Feed::after(seq),
        None => Feed::from_now(&s.pool).await?,
    };
    let reader = Reader {
        pool: s.pool.clone(),
        feed,
        pending: VecDeque::new(),
        wanted: move |event_type: &str| {
            may_read(&actor, event_type) && types.as_ref().is_none_or(|t| t.iter().any(|w| w == event_type))
        },
    };
    let events = futures_util::stream::unfold(reader, Reader::next_event)
        .map(Ok)
        .take_until(s.stop.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Reader<F> {
    pool: sqlx::PgPool,
    feed: Feed,
    pending: VecDeque<FeedEvent>,
    wanted: F,
}

impl<F: Fn(&str) -> bool> Reader<F> {
    /// The next event the client may see; waits for one, and outlasts database hiccups.
    async fn next_event(mut self) -> Option<(Event, Self)> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                return Some((sse(row), self));
            }
            match self.feed.next(&self.pool).await {
                Ok((rows, full)) => {
                    self.pending
                        .extend(rows.into_iter().filter(|r| (self.wanted)(&r.event_type)));
                    if self.pending.is_empty() && !full {
                        tokio::time::sleep(POLL).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event stream could not read the outbox; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn sse(row: FeedEvent) -> Event {
    let body = crate::events::message(row.id, row.payload);
    Event::default()
        .id(row.seq.to_string())
        .event(row.event_type)
        .data(body.to_string())
}
