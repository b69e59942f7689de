//! Leads in PostgreSQL, and what an attempt's result does to its lead.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

use super::LeadState;
use crate::calls::{AttemptResult, AttemptStatus};
use crate::ids::{AttemptId, CampaignId, LeadId, OperatorId};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Lead {
    pub id: LeadId,
    pub campaign_id: CampaignId,
    pub phone: String,
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub external_id: Option<String>,
    pub priority: i32,
    /// The lead's own data, as imported.
    #[schema(value_type = Object)]
    pub fields: serde_json::Value,
    pub state: LeadState,
    pub attempts_count: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_result: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, campaign_id, phone_e164, name, timezone, external_id, priority, fields, state,
    attempts_count, next_attempt_at, last_result, created_at, updated_at";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Lead, sqlx::Error> {
    let state: String = row.try_get("state")?;
    Ok(Lead {
        id: row.try_get("id")?,
        campaign_id: row.try_get("campaign_id")?,
        phone: row.try_get("phone_e164")?,
        name: row.try_get("name")?,
        timezone: row.try_get("timezone")?,
        external_id: row.try_get("external_id")?,
        priority: row.try_get("priority")?,
        fields: row.try_get("fields")?,
        state: LeadState::parse(&state).ok_or_else(|| sqlx::Error::Decode(format!("lead state {state}").into()))?,
        attempts_count: row.try_get("attempts_count")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_result: row.try_get("last_result")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn list(
    pool: &PgPool,
    campaign: CampaignId,
    state: Option<LeadState>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Lead>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM leads WHERE campaign_id = $1 AND ($2::text IS NULL OR state = $2)
         ORDER BY created_at, id LIMIT $3 OFFSET $4"
    ))
    .bind(campaign)
    .bind(state.map(|s| s.as_str()))
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn get(pool: &PgPool, id: LeadId) -> Result<Option<Lead>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM leads WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn counts(pool: &PgPool, campaign: CampaignId) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM leads WHERE campaign_id = $1 GROUP BY state")
            .bind(campaign)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Cancels a lead; returns its live attempt, if any, for the caller to hang up.
pub async fn remove(pool: &PgPool, id: LeadId) -> Result<Option<Option<AttemptId>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let found =
        sqlx::query("UPDATE leads SET state = 'canceled', next_attempt_at = NULL, updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if found == 0 {
        return Ok(None);
    }
    let live: Option<AttemptId> = sqlx::query_scalar(&format!(
        "SELECT id FROM attempts WHERE lead_id = $1 AND status IN {} LIMIT 1",
        AttemptStatus::LIVE_SQL
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(live))
}

/// What a lead does next after an attempt ended with `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextStep {
    pub state: LeadState,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Retry when the campaign has a delay for the result and attempts remain; a callback goes
/// to the asked time; final results end the lead.
pub fn next_step(
    result: AttemptResult,
    attempts_made: u32,
    max_attempts: u32,
    retry_delays: &BTreeMap<AttemptResult, u64>,
    callback_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> NextStep {
    use AttemptResult::*;
    let done = |state| NextStep {
        state,
        next_attempt_at: None,
    };
    match result {
        Success | NotInterested => done(LeadState::Done),
        DoNotCall => done(LeadState::Dnc),
        CallbackNeeded => {
            let delay = retry_delays.get(&CallbackNeeded).copied().unwrap_or(3600);
            NextStep {
                state: LeadState::Scheduled,
                next_attempt_at: Some(callback_at.unwrap_or(now + Duration::seconds(delay as i64))),
            }
        }
        other => match retry_delays.get(&other) {
            None => done(LeadState::Done),
            Some(_) if attempts_made >= max_attempts => done(LeadState::Exhausted),
            Some(delay) => NextStep {
                state: LeadState::Scheduled,
                next_attempt_at: Some(now + Duration::seconds(*delay as i64)),
            },
        },
    }
}

/// Applies `step` to the lead and records the result; a do-not-call result also lists the
/// number on the global DNC list.
pub async fn apply_step(
    tx: &mut Transaction<'_, Postgres>,
    lead: LeadId,
    result: AttemptResult,
    step: NextStep,
    callback_operator: Option<OperatorId>,
) -> Result<(), sqlx::Error> {
    // A lead removed or stopped meanwhile stays canceled.
    let phone: Option<String> = sqlx::query_scalar(
        "UPDATE leads SET state = $2, next_attempt_at = $3, last_result = $4, callback_operator_id = $5,
             updated_at = now()
         WHERE id = $1 AND state NOT IN ('canceled')
         RETURNING phone_e164",
    )
    .bind(lead)
    .bind(step.state.as_str())
    .bind(step.next_attempt_at)
    .bind(result.as_str())
    .bind(callback_operator)
    .fetch_optional(&mut **tx)
    .await?;
    if let (Some(phone), AttemptResult::DoNotCall) = (phone, result) {
        sqlx::query(
            "INSERT INTO dnc (phone_e164, reason, source) VALUES ($1, 'customer asked not to be called', 'disposition')
             ON CONFLICT DO NOTHING",
        )
        .bind(phone)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Frees a lead reserved for `operator` (an offer that lapsed or was withdrawn); with no lead,
/// every lead reserved for the operator.
pub async fn release_reservation(
    conn: &mut PgConnection,
    lead: Option<LeadId>,
    operator: OperatorId,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE leads SET reserved_by = NULL, reserved_until = NULL, updated_at = now()
         WHERE ($1::uuid IS NULL OR id = $1) AND reserved_by = $2",
    )
    .bind(lead)
    .bind(operator)
    .execute(conn)
    .await?;
    Ok(())
}

/// An operator skipped an offered lead: it comes back after `delay_secs`, and the reason is
/// kept in the audit log.
pub async fn skip_reserved(
    conn: &mut PgConnection,
    lead: LeadId,
    operator: OperatorId,
    delay_secs: u64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE leads SET reserved_by = NULL, reserved_until = NULL, state = 'scheduled',
             next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND reserved_by = $2",
    )
    .bind(lead)
    .bind(operator)
    .bind(delay_secs as f64)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO audit_log (actor, action, entity_type, entity_id, after)
         VALUES ($1, 'lead.skip', 'lead', $2, jsonb_build_object('reason', $3::text))",
    )
    .bind(format!("operator:{operator}"))
    .bind(lead.to_string())
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptResult::*;

    fn delays() -> BTreeMap<AttemptResult, u64> {
        BTreeMap::from([(NoAnswer, 60), (Busy, 30)])
    }

    #[test]
    fn retryable_results_wait_their_delay_until_attempts_run_out() {
        let now = Utc::now();
        let step = next_step(NoAnswer, 1, 3, &delays(), None, now);
        assert_eq!(step.state, LeadState::Scheduled);
        assert_eq!(step.next_attempt_at, Some(now + Duration::seconds(60)));
        assert_eq!(
            next_step(Busy, 2, 3, &delays(), None, now).next_attempt_at,
            Some(now + Duration::seconds(30))
        );
        assert_eq!(
            next_step(NoAnswer, 3, 3, &delays(), None, now).state,
            LeadState::Exhausted
        );
    }

    #[test]
    fn results_without_a_delay_are_final() {
        let now = Utc::now();
        assert_eq!(
            next_step(InvalidNumber, 1, 3, &delays(), None, now).state,
            LeadState::Done
        );
        assert_eq!(next_step(Success, 1, 3, &delays(), None, now).state, LeadState::Done);
        assert_eq!(next_step(DoNotCall, 1, 3, &delays(), None, now).state, LeadState::Dnc);
    }

    #[test]
    fn callbacks_go_to_the_asked_time_even_past_max_attempts() {
        let now = Utc::now();
        let at = now + Duration::hours(5);
        let step = next_step(CallbackNeeded, 3, 3, &delays(), Some(at), now);
        assert_eq!((step.state, step.next_attempt_at), (LeadState::Scheduled, Some(at)));
        assert_eq!(
            next_step(CallbackNeeded, 1, 3, &delays(), None, now).next_attempt_at,
            Some(now + Duration::hours(1))
        );
    }
}
