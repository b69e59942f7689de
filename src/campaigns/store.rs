//! Campaigns in PostgreSQL: create, read, update settings, and lifecycle actions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::{Action, CampaignSpec, CampaignState, FieldError};
use crate::ids::CampaignId;

/// A campaign: its settings (every field of `CampaignSpec`) and where it is in its life.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Campaign {
    pub id: CampaignId,
    pub state: CampaignState,
    #[serde(flatten)]
    pub spec: CampaignSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// `GET /campaigns/{id}` only: the campaign's leads by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, i64>>, example = json!({"pending": 120, "done": 30}))]
    pub leads: Option<std::collections::BTreeMap<String, i64>>,
    /// In the answers to create, update and `GET /campaigns/{id}`: valid settings that are
    /// probably a mistake (see `warnings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<super::warnings::Warning>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("campaign not found")]
    NotFound,
    #[error("invalid settings")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

const COLUMNS: &str = "id, state, settings, created_at, updated_at, started_at, stopped_at";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Campaign, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let settings: serde_json::Value = row.try_get("settings")?;
    Ok(Campaign {
        id: row.try_get("id")?,
        state: CampaignState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("campaign state {state}").into()))?,
        spec: serde_json::from_value(settings).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        stopped_at: row.try_get("stopped_at")?,
        leads: None,
        warnings: None,
    })
}

fn unique_name(e: sqlx::Error) -> StoreError {
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("campaigns_name_key") => StoreError::Conflict("another campaign already has this name".into()),
        _ => StoreError::Db(e),
    }
}

/// Binds the spec to $2..$8 in the column order insert and update share: name, enabled,
/// trunk, caller_id, timezone, default_region, settings.
fn bind_spec<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    spec: &'q CampaignSpec,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&spec.name)
        .bind(spec.enabled)
        .bind(&spec.trunk)
        .bind(&spec.caller_id)
        .bind(&spec.timezone)
        .bind(&spec.default_region)
        .bind(serde_json::to_value(spec).expect("spec serialises"))
}

pub async fn create(pool: &PgPool, spec: CampaignSpec) -> Result<Campaign, StoreError> {
    spec.validate().map_err(StoreError::Invalid)?;
    let row = bind_spec(
        sqlx::query(&format!(
            "INSERT INTO campaigns (id, name, enabled, trunk, caller_id, timezone, default_region, settings)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
        ))
        .bind(CampaignId::new()),
        &spec,
    )
    .fetch_one(pool)
    .await
    .map_err(unique_name)?;
    Ok(from_row(&row)?)
}

pub async fn get(pool: &PgPool, id: CampaignId) -> Result<Campaign, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM campaigns WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(from_row(&row)?)
}

pub async fn list(pool: &PgPool) -> Result<Vec<Campaign>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM campaigns ORDER BY created_at"))
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Campaigns the scheduler dials for: running and enabled.
pub async fn running(pool: &PgPool) -> Result<Vec<Campaign>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM campaigns WHERE state = 'running' AND enabled ORDER BY created_at"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Applies a partial JSON object over the current settings; the result must validate.
pub async fn update(pool: &PgPool, id: CampaignId, patch: serde_json::Value) -> Result<Campaign, StoreError> {
    let serde_json::Value::Object(patch) = patch else {
        return Err(StoreError::Invalid(vec![FieldError::new(
            "body",
            "expected a JSON object",
        )]));
    };
    let mut tx = pool.begin().await?;
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM campaigns WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    let current = from_row(&row)?;
    let mut merged = serde_json::to_value(&current.spec).expect("spec serialises");
    for (key, value) in patch {
        merged[key] = value;
    }
    let spec = CampaignSpec::from_json(merged).map_err(StoreError::Invalid)?;
    spec.validate().map_err(StoreError::Invalid)?;
    let row = bind_spec(
        sqlx::query(&format!(
            "UPDATE campaigns SET name = $2, enabled = $3, trunk = $4, caller_id = $5, timezone = $6,
             default_region = $7, settings = $8, revision = revision + 1, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id),
        &spec,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(unique_name)?;
    tx.commit().await?;
    Ok(from_row(&row)?)
}

/// Start, pause, resume or stop. Stopping cancels the leads still waiting; calls in progress
/// finish normally.
pub async fn act(pool: &PgPool, id: CampaignId, action: Action) -> Result<Campaign, StoreError> {
    let mut tx = pool.begin().await?;
    let state: String = sqlx::query_scalar("SELECT state FROM campaigns WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    let current = CampaignState::parse(&state).expect("constraint keeps states known");
    let next = current.apply(action).map_err(StoreError::Conflict)?;
    sqlx::query(&format!(
        "WITH c AS (
             UPDATE campaigns SET state = $2, updated_at = now(),
                 started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
                 stopped_at = CASE WHEN $2 = 'stopped' THEN now() ELSE stopped_at END
             WHERE id = $1 RETURNING id, name, state, $3::text AS previous
         ) {STATE_EVENT}"
    ))
    .bind(id)
    .bind(next.as_str())
    .bind(current.as_str())
    .execute(&mut *tx)
    .await?;
    if next == CampaignState::Stopped {
        sqlx::query(
            "UPDATE leads SET state = 'canceled', next_attempt_at = NULL, updated_at = now()
             WHERE campaign_id = $1 AND state IN ('pending', 'scheduled')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    get(pool, id).await
}

/// `INSERT INTO outbox ... SELECT` of a `CampaignStateChanged` event from `c` (id, name,
/// state, previous), written in the statement that changes the state.
const STATE_EVENT: &str = "INSERT INTO outbox (id, event_type, routing_key, payload)
     SELECT gen_random_uuid(), 'CampaignStateChanged', 'campaign.state',
            jsonb_build_object('type', 'CampaignStateChanged', 'occurredAt', now(), 'campaignId', c.id,
                'name', c.name, 'state', c.state, 'previousState', c.previous)
     FROM c";

/// Marks running campaigns with nothing left to call as finished.
pub async fn finish_completed(pool: &PgPool) -> Result<Vec<CampaignId>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "WITH c AS (
             UPDATE campaigns c SET state = 'finished', updated_at = now()
             WHERE c.state = 'running'
               AND EXISTS (SELECT 1 FROM leads l WHERE l.campaign_id = c.id)
               AND NOT EXISTS (SELECT 1 FROM leads l WHERE l.campaign_id = c.id
                               AND l.state IN ('pending', 'scheduled', 'dialing'))
             RETURNING c.id, c.name, c.state, 'running'::text AS previous
         ), events AS ({STATE_EVENT})
         SELECT id FROM c"
    ))
    .fetch_all(pool)
    .await
}
