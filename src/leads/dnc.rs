//! The do-not-call list: numbers never dialled, globally or for one campaign. Checked when
//! the scheduler claims a lead.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::ids::CampaignId;
use crate::phone::PhoneNumber;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DncEntry {
    pub id: i64,
    pub phone_e164: String,
    pub campaign_id: Option<CampaignId>,
    pub reason: Option<String>,
    pub source: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn add(
    pool: &PgPool,
    phone: &PhoneNumber,
    campaign: Option<CampaignId>,
    reason: Option<&str>,
) -> Result<DncEntry, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO dnc (phone_e164, campaign_id, reason, source) VALUES ($1, $2, $3, 'api')
         ON CONFLICT (phone_e164, campaign_id) DO UPDATE SET reason = coalesce(EXCLUDED.reason, dnc.reason)
         RETURNING id, phone_e164, campaign_id, reason, source, created_at",
    )
    .bind(phone.as_str())
    .bind(campaign)
    .bind(reason)
    .fetch_one(pool)
    .await
}

pub async fn list(pool: &PgPool, limit: i64, offset: i64) -> Result<Vec<DncEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, phone_e164, campaign_id, reason, source, created_at FROM dnc ORDER BY id LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}

pub async fn remove(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM dnc WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        > 0)
}

/// Whether the number may not be called, globally or for `campaign`.
pub async fn is_listed(pool: &PgPool, phone: &PhoneNumber, campaign: Option<CampaignId>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM dnc WHERE phone_e164 = $1 AND (campaign_id IS NULL OR campaign_id = $2))",
    )
    .bind(phone.as_str())
    .bind(campaign)
    .fetch_one(pool)
    .await
}
