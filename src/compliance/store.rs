//! What the compliance rules read from the database: a number's recent calls (for contact
//! limits and quiet periods) and a lead's recorded skips. The scheduler's claim reads the same
//! history in its own statement, through [`history_columns`].

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{History, HISTORY_DAYS};
use crate::ids::LeadId;

/// The aggregates over attempts `a` that make a [`History`]: `dialled`, `answered` (newest
/// first), `last_abandon`, `last_machine`.
pub const HISTORY_COLUMNS: &str = "array_agg(a.created_at ORDER BY a.created_at DESC) AS dialled,
    array_agg(a.answered_at ORDER BY a.answered_at DESC) FILTER (WHERE a.answered_at IS NOT NULL) AS answered,
    max(a.ended_at) FILTER (WHERE a.result = 'abandoned') AS last_abandon,
    max(a.ended_at) FILTER (WHERE a.result = 'machine' AND a.bridged_at IS NULL) AS last_machine";

/// The subquery over the calls to `phone` (an SQL expression) since `since` (a parameter).
pub fn history_columns(phone: &str, since: &str) -> String {
    format!("SELECT {HISTORY_COLUMNS} FROM attempts a WHERE a.phone_e164 = {phone} AND a.created_at > {since}")
}

/// A number's calls of the last `HISTORY_DAYS`, from every campaign and single call.
pub async fn history_of(pool: &PgPool, phone: &str, now: DateTime<Utc>) -> Result<History, sqlx::Error> {
    type Row = (
        Option<Vec<DateTime<Utc>>>,
        Option<Vec<DateTime<Utc>>>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let (dialled, answered, last_abandon, last_machine): Row = sqlx::query_as(&history_columns("$1", "$2"))
        .bind(phone)
        .bind(now - Duration::days(HISTORY_DAYS))
        .fetch_one(pool)
        .await?;
    Ok(History {
        dialled: dialled.unwrap_or_default(),
        answered: answered.unwrap_or_default(),
        last_abandon,
        last_machine,
    })
}

/// One recorded skip of a lead.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LeadSkip {
    #[schema(pattern = "^(outside-hours|holiday|contact-limit|quiet-period|dnc|number-busy)$")]
    pub rule: String,
    pub reason: String,
    /// When the lead may be tried again (null: never).
    pub until: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

/// The newest skips of a lead, newest first.
pub async fn skips_of(pool: &PgPool, lead: LeadId, limit: i64) -> Result<Vec<LeadSkip>, sqlx::Error> {
    sqlx::query_as("SELECT rule, reason, until, at FROM lead_skips WHERE lead_id = $1 ORDER BY id DESC LIMIT $2")
        .bind(lead)
        .bind(limit)
        .fetch_all(pool)
        .await
}
