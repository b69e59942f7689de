//! Operators in PostgreSQL. The live session state is owned by the call engine, which writes
//! every change here so the REST API and other instances see it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};

use super::OperatorState;
use crate::campaigns::FieldError;
use crate::ids::OperatorId;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Operator {
    pub id: OperatorId,
    pub name: String,
    /// The Asterisk endpoint of the operator's phone, e.g. `PJSIP/op1`.
    pub endpoint: String,
    pub skills: Vec<String>,
    pub state: OperatorState,
    pub state_changed_at: DateTime<Utc>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    /// The call the operator is being connected to, is on, or is wrapping up.
    pub current_attempt_id: Option<crate::ids::AttemptId>,
}

/// An operator to create (`name` and `endpoint` required) or the fields to change.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorInput {
    #[schema(min_length = 1, max_length = 200, format = "not-blank", example = "Anna")]
    pub name: Option<String>,
    /// The Asterisk endpoint of the operator's phone; one operator per endpoint.
    #[schema(
        max_length = 200,
        pattern = r"^[^/\s\u0000-\u001F\u007F-\u009F]+/[^\s\u0000-\u001F\u007F-\u009F]+$",
        example = "PJSIP/op1"
    )]
    pub endpoint: Option<String>,
    #[schema(schema_with = crate::api::schema::operator_skills)]
    pub skills: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("operator not found")]
    NotFound,
    #[error("invalid operator")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

const COLUMNS: &str = "id, name, endpoint, skills, state, state_changed_at, enabled, created_at,
    (SELECT a.id FROM attempts a
     WHERE a.operator_id = operators.id AND operators.state IN ('reserved', 'on-call', 'wrap-up')
     ORDER BY a.created_at DESC LIMIT 1) AS current_attempt_id";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Operator, sqlx::Error> {
    let state: String = row.try_get("state")?;
    Ok(Operator {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        endpoint: row.try_get("endpoint")?,
        skills: row.try_get("skills")?,
        state: OperatorState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("operator state {state}").into()))?,
        state_changed_at: row.try_get("state_changed_at")?,
        enabled: row.try_get("enabled")?,
        created_at: row.try_get("created_at")?,
        current_attempt_id: row.try_get("current_attempt_id")?,
    })
}

/// Longest operator name and endpoint, and longest skill, in characters.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_ENDPOINT_CHARS: usize = 200;
pub const MAX_SKILL_CHARS: usize = crate::campaigns::spec::MAX_SKILL_CHARS;
pub const MAX_SKILLS: usize = crate::campaigns::spec::MAX_SKILLS;

fn check(input: &OperatorInput, creating: bool) -> Result<(), OperatorError> {
    use crate::text::line_problem;
    let mut errors = Vec::new();
    match input.name.as_deref() {
        Some(n) if n.trim().is_empty() => errors.push(FieldError::new("name", "must not be empty")),
        Some(n) => errors.extend(line_problem(n, MAX_NAME_CHARS).map(|m| FieldError::new("name", m))),
        None if creating => errors.push(FieldError::new("name", "required")),
        None => {}
    }
    match input.endpoint.as_deref() {
        Some(e) => match line_problem(e, MAX_ENDPOINT_CHARS) {
            Some(m) => errors.push(FieldError::new("endpoint", m)),
            None if !valid_endpoint(e) => {
                errors.push(FieldError::new("endpoint", "an Asterisk endpoint such as PJSIP/op1"))
            }
            None => {}
        },
        None if creating => errors.push(FieldError::new("endpoint", "required, such as PJSIP/op1")),
        None => {}
    }
    if let Some(skills) = &input.skills {
        if skills.len() > MAX_SKILLS {
            errors.push(FieldError::new("skills", format!("at most {MAX_SKILLS} skills")));
        }
        for (i, skill) in skills.iter().enumerate() {
            let problem = if skill.trim().is_empty() {
                Some("must not be empty".to_owned())
            } else {
                line_problem(skill, MAX_SKILL_CHARS)
            };
            errors.extend(problem.map(|m| FieldError::new(format!("skills[{i}]"), m)));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(OperatorError::Invalid(errors))
    }
}

fn valid_endpoint(e: &str) -> bool {
    matches!(e.split_once('/'), Some((tech, res)) if !tech.is_empty() && !res.is_empty() && !e.contains(char::is_whitespace))
}

fn duplicate_endpoint(e: sqlx::Error) -> OperatorError {
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("operators_endpoint_key") => OperatorError::Conflict("another operator already uses this endpoint".into()),
        _ => OperatorError::Db(e),
    }
}

pub async fn create(pool: &PgPool, input: OperatorInput) -> Result<Operator, OperatorError> {
    check(&input, true)?;
    let row = sqlx::query(&format!(
        "INSERT INTO operators (id, name, endpoint, skills, enabled) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(OperatorId::new())
    .bind(input.name.as_deref().map(str::trim))
    .bind(&input.endpoint)
    .bind(input.skills.unwrap_or_default())
    .bind(input.enabled.unwrap_or(true))
    .fetch_one(pool)
    .await
    .map_err(duplicate_endpoint)?;
    Ok(from_row(&row)?)
}

pub async fn update(pool: &PgPool, id: OperatorId, input: OperatorInput) -> Result<Operator, OperatorError> {
    check(&input, false)?;
    let row = sqlx::query(&format!(
        "UPDATE operators SET name = coalesce($2, name), endpoint = coalesce($3, endpoint),
             skills = coalesce($4, skills), enabled = coalesce($5, enabled), updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(input.name.as_deref().map(str::trim))
    .bind(&input.endpoint)
    .bind(&input.skills)
    .bind(input.enabled)
    .fetch_optional(pool)
    .await
    .map_err(duplicate_endpoint)?
    .ok_or(OperatorError::NotFound)?;
    Ok(from_row(&row)?)
}

pub async fn get(pool: &PgPool, id: OperatorId) -> Result<Operator, OperatorError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM operators WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(OperatorError::NotFound)?;
    Ok(from_row(&row)?)
}

pub async fn by_endpoint(pool: &PgPool, endpoint: &str) -> Result<Option<Operator>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM operators WHERE endpoint = $1 AND enabled"
    ))
    .bind(endpoint)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn list(pool: &PgPool) -> Result<Vec<Operator>, sqlx::Error> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM operators ORDER BY name, id"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn delete(pool: &PgPool, id: OperatorId) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM operators WHERE id = $1 AND state = 'offline'")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        > 0)
}

/// Records a session state change.
pub async fn set_state(
    conn: &mut PgConnection,
    id: OperatorId,
    state: OperatorState,
    session: Option<(&str, &str, &str)>,
) -> Result<(), sqlx::Error> {
    let (channel, bridge, instance) = match session {
        Some((c, b, i)) => (Some(c), Some(b), Some(i)),
        None => (None, None, None),
    };
    // The change and its event (when the state really changed) in one statement.
    sqlx::query(&format!(
        "WITH old AS (SELECT id, state FROM operators WHERE id = $1 FOR UPDATE),
         changed AS (
             UPDATE operators o SET state = $2, state_changed_at = clock_timestamp(), updated_at = now(),
                 session_channel_id = CASE WHEN $2 = 'offline' THEN NULL ELSE coalesce($3, o.session_channel_id) END,
                 session_bridge_id = CASE WHEN $2 = 'offline' THEN NULL ELSE coalesce($4, o.session_bridge_id) END,
                 session_instance = CASE WHEN $2 = 'offline' THEN NULL ELSE coalesce($5, o.session_instance) END
             FROM old WHERE o.id = old.id
             RETURNING o.id, o.name, o.endpoint, o.state, old.state AS previous
         )
         {STATE_EVENT} FROM changed o WHERE o.state <> o.previous"
    ))
    .bind(id)
    .bind(state.as_str())
    .bind(channel)
    .bind(bridge)
    .bind(instance)
    .execute(conn)
    .await?;
    Ok(())
}

/// `INSERT INTO outbox ... SELECT` of an `OperatorStateChanged` event; the query it is
/// appended to supplies `o` with id, name, endpoint, state and previous.
const STATE_EVENT: &str = "INSERT INTO outbox (id, event_type, routing_key, payload)
     SELECT gen_random_uuid(), 'OperatorStateChanged', 'operator.state',
            jsonb_build_object('type', 'OperatorStateChanged', 'occurredAt', clock_timestamp(), 'operatorId', o.id,
                'name', o.name, 'endpoint', o.endpoint, 'state', o.state, 'previousState', o.previous)";

/// A session this instance held, with the operator's latest attempt (for adoption at start-up).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HeldSession {
    pub id: OperatorId,
    pub name: String,
    pub endpoint: String,
    pub skills: Vec<String>,
    pub enabled: bool,
    pub state: String,
    pub state_changed_at: DateTime<Utc>,
    pub session_channel_id: String,
    pub session_bridge_id: String,
    pub attempt_id: Option<crate::ids::AttemptId>,
    pub settings: Option<serde_json::Value>,
}

pub async fn sessions_for_instance(pool: &PgPool, instance: &str) -> Result<Vec<HeldSession>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, o.name, o.endpoint, o.skills, o.enabled, o.state, o.state_changed_at,
                o.session_channel_id, coalesce(o.session_bridge_id, '') AS session_bridge_id,
                last.id AS attempt_id, c.settings
         FROM operators o
         LEFT JOIN LATERAL (SELECT a.id, a.campaign_id FROM attempts a WHERE a.operator_id = o.id
                            ORDER BY a.created_at DESC LIMIT 1) last ON true
         LEFT JOIN campaigns c ON c.id = last.campaign_id
         WHERE o.session_instance = $1 AND o.state <> 'offline' AND o.session_channel_id IS NOT NULL",
    )
    .bind(instance)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_need_a_technology_and_a_resource() {
        assert!(super::valid_endpoint("PJSIP/op1"));
        assert!(!super::valid_endpoint("op1"));
        assert!(!super::valid_endpoint("PJSIP/"));
        assert!(!super::valid_endpoint("PJSIP/op 1"));
    }
}
