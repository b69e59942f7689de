//! Webhook subscriptions over REST (scope `admin`): the events of the outbox are also POSTed
//! to each subscription, signed with its secret (see `events::webhooks`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{json_body, parse_id, typed, ApiError, ApiResult, ApiState, ErrorBody, JsonBody};
use crate::auth::Actor;
use crate::events::EVENT_TYPES;
use crate::text::line_problems;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// http:// or https:// address that receives the POSTs; a public address unless the
    /// configuration allows private ones. A user name and password in it are kept apart and
    /// sent as basic auth, never shown again.
    #[schema(schema_with = crate::api::schema::webhook_url)]
    url: String,
    /// HMAC-SHA256 key, 16 to 200 characters; generated (and shown once) when absent.
    #[serde(default)]
    #[schema(min_length = 16, max_length = 200, format = "one-line")]
    secret: Option<String>,
    /// Event types to deliver; empty or absent means all.
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::event_types)]
    event_types: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 500, format = "one-line")]
    description: Option<String>,
}

/// A subscription (its secret is never shown after creation).
#[derive(Serialize, sqlx::FromRow, ToSchema)]
pub struct WebhookView {
    id: Uuid,
    url: String,
    event_types: Vec<String>,
    description: Option<String>,
    enabled: bool,
    /// Whether deliveries carry a user name and password (never shown).
    basic_auth: bool,
    created_at: DateTime<Utc>,
    pending: i64,
    delivered: i64,
    failed: i64,
}

/// A new subscription, with its secret: the only time it is shown.
#[derive(Serialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    view: WebhookView,
    secret: String,
}

/// One delivery of one event to one subscription.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    id: i64,
    event_id: Uuid,
    event_type: String,
    /// pending, delivered or failed (given up).
    #[schema(pattern = "^(pending|delivered|failed)$")]
    status: String,
    tries: i32,
    next_try_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last try.
    last_status: Option<i32>,
    last_error: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

const VIEW: &str = "SELECT w.id, w.url, w.event_types, w.description, w.enabled,
        w.basic_auth IS NOT NULL AS basic_auth, w.created_at,
        count(*) FILTER (WHERE d.status = 'pending') AS pending,
        count(*) FILTER (WHERE d.status = 'delivered') AS delivered,
        count(*) FILTER (WHERE d.status = 'failed') AS failed
     FROM webhooks w LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id";

/// Subscribes a URL to events. The answer holds the secret; it is not shown again.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", operation_id = "create_webhook",
    request_body(content = WebhookInput, content_type = "application/json"),
    responses((status = 201, description = "created; includes the secret", body = WebhookCreated),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "the token lacks the scope", body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn create_webhook(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<WebhookCreated>)> {
    let input: WebhookInput = typed(json_body(&body)?)?;
    let problems = line_problems(&[
        ("url", Some(&input.url), 2000),
        ("secret", input.secret.as_deref(), 200),
        ("description", input.description.as_deref(), 500),
    ]);
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let mut url = url::Url::parse(&input.url).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ApiError::invalid("url", "an http:// or https:// address"));
    }
    // Credentials live apart from the URL, which logs and GET /webhooks may show.
    let basic_auth = match (url.username(), url.password()) {
        ("", None) => None,
        (user, password) => Some(format!("{user}:{}", password.unwrap_or(""))),
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if let Some(bad) = input.event_types.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
        return Err(ApiError::invalid(
            "event_types",
            format!("unknown event type {bad:?}; known: {}", EVENT_TYPES.join(", ")),
        ));
    }
    let secret = match input.secret {
        Some(secret) if secret.chars().count() < 16 => return Err(ApiError::invalid("secret", "16 to 200 characters")),
        Some(secret) => secret,
        None => {
            let mut raw = [0u8; 24];
            rand::rng().fill_bytes(&mut raw);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        }
    };
    if let Some(why) = crate::events::targets::refusal(&url, s.private_webhooks).await {
        return Err(ApiError::invalid("url", why));
    }
    let id = Uuid::new_v4();
    let mut tx = s.pool.begin().await?;
    sqlx::query(
        "INSERT INTO webhooks (id, url, basic_auth, secret, event_types, description) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(url.as_str())
    .bind(&basic_auth)
    .bind(&secret)
    .bind(&input.event_types)
    .bind(&input.description)
    .execute(&mut *tx)
    .await?;
    let view: WebhookView = sqlx::query_as(&format!("{VIEW} WHERE w.id = $1 GROUP BY w.id"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    crate::audit::record(
        &mut *tx,
        &actor.label(),
        "webhook.create",
        "webhook",
        Some(&id.to_string()),
        None,
        Some(json!(view)),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(WebhookCreated { view, secret })))
}

/// Subscriptions with their delivery counts (secrets are never shown again).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    responses((status = 200, description = "subscriptions", body = Vec<WebhookView>),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "the token lacks the scope", body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn list_webhooks(State(s): State<ApiState>) -> ApiResult<Json<Vec<WebhookView>>> {
    let rows: Vec<WebhookView> = sqlx::query_as(&format!("{VIEW} GROUP BY w.id ORDER BY w.created_at"))
        .fetch_all(&s.pool)
        .await?;
    Ok(Json(rows))
}

/// Removes a subscription and its pending deliveries.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", operation_id = "delete_webhook",
    params(("id" = Uuid, Path, description = "webhook id")),
    responses((status = 204, description = "deleted"),
        (status = 404, description = "no such webhook", body = ErrorBody),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "the token lacks the scope", body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn delete_webhook(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: Uuid = parse_id(&id, "webhook")?;
    let mut tx = s.pool.begin().await?;
    let before: Option<Value> =
        sqlx::query_scalar("DELETE FROM webhooks WHERE id = $1 RETURNING to_jsonb(webhooks) - 'secret' - 'basic_auth'")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(before) = before else {
        return Err(ApiError::NotFound("webhook not found".into()));
    };
    crate::audit::record(
        &mut *tx,
        &actor.label(),
        "webhook.delete",
        "webhook",
        Some(&id.to_string()),
        Some(before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryFilter {
    /// Only deliveries in this state.
    #[param(pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
    /// Rows, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Deliveries of one subscription, newest first; `status=failed` shows what was given up.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "list_deliveries",
    params(("id" = Uuid, Path, description = "webhook id"), DeliveryFilter),
    responses((status = 200, description = "deliveries, newest first", body = Vec<Delivery>),
        (status = 404, description = "no such webhook", body = ErrorBody),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "the token lacks the scope", body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn list_deliveries(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(filter): Query<DeliveryFilter>,
) -> ApiResult<Json<Vec<Delivery>>> {
    let id: Uuid = parse_id(&id, "webhook")?;
    if let Some(status) = filter.status.as_deref() {
        if !matches!(status, "pending" | "delivered" | "failed") {
            return Err(ApiError::invalid("status", "pending, delivered or failed"));
        }
    }
    let limit = filter.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "between 1 and 1000"));
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = $1)")
        .bind(id)
        .fetch_one(&s.pool)
        .await?;
    if !exists {
        return Err(ApiError::NotFound("webhook not found".into()));
    }
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT jsonb_build_object('id', d.id, 'event_id', d.event_id, 'event_type', o.event_type,
                'status', d.status, 'tries', d.tries, 'next_try_at', d.next_try_at, 'last_status', d.last_status,
                'last_error', d.last_error, 'delivered_at', d.delivered_at, 'created_at', d.created_at)
         FROM webhook_deliveries d JOIN outbox o ON o.id = d.event_id
         WHERE d.webhook_id = $1 AND ($2::text IS NULL OR d.status = $2)
         ORDER BY d.id DESC LIMIT $3",
    )
    .bind(id)
    .bind(filter.status)
    .bind(limit)
    .fetch_all(&s.pool)
    .await?;
    // The SQL builds the rows; decoding them here keeps them to the documented shape.
    let rows = rows
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<Vec<Delivery>, _>>()
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(rows))
}
