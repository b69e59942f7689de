//! Attempts in PostgreSQL. Every status change is one transaction that also appends to the
//! transition log; a change is applied only from the statuses it is legal from, so a duplicate
//! or late ARI event changes nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::engine::core::{Change, NewAttempt, Write};
use super::{AttemptResult, AttemptStatus};
use crate::campaigns::CampaignSpec;
use crate::ids::{AttemptId, CampaignId, LeadId, OperatorId};
use crate::leads::store::{apply_step, next_step, release_reservation, skip_reserved};

/// Applies one journaled write of the call engine, exactly once: `seq` is the entry's number in
/// the instance's journal, recorded in the same transaction, so a replay after a crash skips
/// what was applied already. A write that no longer applies (a late event) changes nothing.
pub async fn apply(pool: &PgPool, instance: &str, seq: u64, write: &Write) -> Result<(), sqlx::Error> {
    apply_batch(pool, instance, &[(seq, write)]).await
}

/// Applies journal entries (`seq`, write) in order in one transaction, with one checkpoint
/// and one commit for all of them; entries at or below the instance's checkpoint are skipped.
/// Any error rolls back the whole batch (the writer then goes entry by entry).
pub async fn apply_batch(pool: &PgPool, instance: &str, entries: &[(u64, &Write)]) -> Result<(), sqlx::Error> {
    let Some(&(last, _)) = entries.last() else {
        return Ok(());
    };
    let mut tx = pool.begin().await?;
    let applied: i64 = sqlx::query_scalar(
        "INSERT INTO engine_journal (instance) VALUES ($1)
         ON CONFLICT (instance) DO UPDATE SET instance = excluded.instance
         RETURNING applied_seq",
    )
    .bind(instance)
    .fetch_one(&mut *tx)
    .await?;
    if applied >= last as i64 {
        return Ok(());
    }
    for (seq, write) in entries {
        if *seq as i64 > applied {
            apply_write(&mut tx, instance, write).await?;
        }
    }
    mark_applied(&mut tx, instance, last).await?;
    tx.commit().await
}

/// Records that journal entry `seq` is done without applying it (an entry that cannot be
/// applied must not block the ones after it).
pub async fn skip(pool: &PgPool, instance: &str, seq: u64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO engine_journal (instance) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(instance)
        .execute(&mut *tx)
        .await?;
    mark_applied(&mut tx, instance, seq).await?;
    tx.commit().await
}

async fn mark_applied(tx: &mut Transaction<'_, Postgres>, instance: &str, seq: u64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE engine_journal SET applied_seq = greatest(applied_seq, $2), updated_at = now() WHERE instance = $1",
    )
    .bind(instance)
    .bind(seq as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The journal `instance` follows in this database, and its last entry applied.
pub async fn journal_checkpoint(pool: &PgPool, instance: &str) -> Result<(uuid::Uuid, u64), sqlx::Error> {
    sqlx::query("INSERT INTO engine_journal (instance) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(instance)
        .execute(pool)
        .await?;
    let (id, seq): (uuid::Uuid, i64) =
        sqlx::query_as("SELECT journal_id, applied_seq FROM engine_journal WHERE instance = $1")
            .bind(instance)
            .fetch_one(pool)
            .await?;
    Ok((id, seq.max(0) as u64))
}

async fn apply_write(tx: &mut Transaction<'_, Postgres>, instance: &str, write: &Write) -> Result<(), sqlx::Error> {
    match write {
        Write::Attempt {
            attempt,
            from,
            to,
            change,
        } => {
            transition(tx, *attempt, from, *to, change).await?;
        }
        Write::Finish {
            attempt,
            status,
            change,
        } => {
            finish(tx, *attempt, *status, change).await?;
        }
        Write::Operator {
            operator,
            state,
            session,
        } => {
            let place = session.as_ref().map(|(c, b)| (c.as_str(), b.as_str(), instance));
            crate::operators::store::set_state(tx, *operator, *state, place).await?;
        }
        Write::Disposition { attempt, result } => {
            let d = Disposition {
                result: *result,
                notes: None,
                callback_at: None,
                same_operator: false,
                source: "phone",
                why: None,
            };
            dispose_journaled(tx, *attempt, &d).await?;
        }
        Write::OperatorLost { attempt, reason } => {
            let d = Disposition {
                result: AttemptResult::OperatorLost,
                notes: None,
                callback_at: None,
                same_operator: false,
                source: "dialer",
                why: Some(reason.clone()),
            };
            dispose_journaled(tx, *attempt, &d).await?;
        }
        Write::ReleaseReservation { lead, operator } => release_reservation(tx, Some(*lead), *operator).await?,
        Write::ReleaseReservationsOf { operator } => release_reservation(tx, None, *operator).await?,
        Write::SkipReserved {
            lead,
            operator,
            delay_secs,
            reason,
        } => skip_reserved(tx, *lead, *operator, *delay_secs, reason).await?,
    }
    Ok(())
}

/// Moves an attempt to `to` if it is in one of `from`. Returns false (and changes nothing)
/// when it is not: the event was a duplicate or came too late.
pub async fn transition(
    tx: &mut Transaction<'_, Postgres>,
    attempt: AttemptId,
    from: &[AttemptStatus],
    to: AttemptStatus,
    change: &Change,
) -> Result<bool, sqlx::Error> {
    let from_names: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let (cause, cause_txt, sip) = match &change.hangup {
        Some((c, t, s)) => (Some(*c), Some(t.as_str()), *s),
        None => (None, None, None),
    };
    let previous: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "UPDATE attempts a SET status = $3,
             result = CASE WHEN $16 THEN coalesce(a.result, $4) ELSE coalesce($4, a.result) END,
             hangup_cause = coalesce($5, a.hangup_cause), hangup_cause_txt = coalesce($6, a.hangup_cause_txt),
             sip_code = coalesce($7, a.sip_code), operator_id = coalesce($8, a.operator_id),
             bridge_id = coalesce($9, a.bridge_id), recording_name = coalesce($10, a.recording_name),
             dialed_at = coalesce(a.dialed_at, $11), ringing_at = coalesce(a.ringing_at, $12),
             answered_at = coalesce(a.answered_at, $13), bridged_at = coalesce(a.bridged_at, $14),
             ended_at = coalesce(a.ended_at, $15), ended_by = coalesce(a.ended_by, $17),
             message_at = coalesce(a.message_at, $18), amd_status = coalesce($19, a.amd_status),
             amd_cause = coalesce($20, a.amd_cause), updated_at = now()
         FROM (SELECT id, status, answered_at FROM attempts WHERE id = $1 FOR UPDATE) old
         WHERE a.id = old.id AND old.status = ANY($2)
         RETURNING old.status, old.answered_at",
    )
    .bind(attempt)
    .bind(&from_names)
    .bind(to.as_str())
    .bind(change.result.map(|r| r.as_str()))
    .bind(cause)
    .bind(cause_txt)
    .bind(sip)
    .bind(change.operator)
    .bind(change.bridge.as_ref().map(|b| b.as_str()))
    .bind(change.recording.as_deref())
    .bind(change.dialed_at)
    .bind(change.ringing_at)
    .bind(change.answered_at)
    .bind(change.bridged_at)
    .bind(change.ended_at)
    .bind(change.keep_result)
    .bind(change.ended_by.map(|b| b.as_str()))
    .bind(change.message_at)
    .bind(change.amd.as_ref().map(|(status, _)| status.as_str()))
    .bind(change.amd.as_ref().map(|(_, cause)| cause.as_str()))
    .fetch_optional(&mut **tx)
    .await?;
    let Some((previous, was_answered)) = previous else {
        return Ok(false);
    };
    let previous = AttemptStatus::parse(&previous).expect("constraint keeps statuses known");
    // Stamps (a status to itself) with nothing to say are not worth a line in the timeline.
    if previous != to || change.reason.is_some() || change.detail.is_some() {
        log(
            tx,
            attempt,
            Some(previous.as_str()),
            to,
            change.result,
            change.reason.as_deref(),
            change.detail.clone(),
        )
        .await?;
    }
    if change.answered_at.is_some() && was_answered.is_none() {
        emit(tx, attempt, CallEvent::Answered).await?;
    }
    let event = match to {
        AttemptStatus::Ringing if previous == AttemptStatus::Init => Some(CallEvent::Ringing),
        AttemptStatus::InProgress if previous != AttemptStatus::InProgress => Some(CallEvent::Bridged),
        AttemptStatus::Completed | AttemptStatus::Canceled => Some(CallEvent::Ended),
        AttemptStatus::Failed => Some(CallEvent::Failed),
        _ => None,
    };
    if let Some(event) = event {
        emit(tx, attempt, event).await?;
    }
    Ok(true)
}

/// Ends a live attempt and moves its lead on (retry, exhausted, done...) in the same
/// transaction. The lead's attempt count and the campaign's rules are read here, so every kind
/// of call (campaign, preview, single) counts the same way.
pub async fn finish(
    tx: &mut Transaction<'_, Postgres>,
    attempt: AttemptId,
    status: AttemptStatus,
    change: &Change,
) -> Result<bool, sqlx::Error> {
    let mut ended = change.clone();
    let mut status = status;
    if change.end_from_cdr {
        // The call ended while obzvon was away: Asterisk's CDR, when it wrote one, knows when
        // and how (the attempt id is in its userfield, alone or after the operator's part).
        let cdr: Option<(DateTime<Utc>, String, String)> = sqlx::query_as(
            "SELECT c.calldate + make_interval(secs => c.duration), c.disposition, a.kind
             FROM cdr c JOIN attempts a ON a.id = $1
             WHERE string_to_array(c.userfield, ';') @> ARRAY[$1::text] ORDER BY c.calldate DESC LIMIT 1",
        )
        .bind(attempt)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((end, disposition, kind)) = cdr {
            ended.ended_at = Some(end);
            if status == AttemptStatus::Failed && change.result == Some(AttemptResult::Failed) {
                let (s, r) = match disposition.as_str() {
                    "BUSY" => (AttemptStatus::Failed, AttemptResult::Busy),
                    "NO ANSWER" => (AttemptStatus::Failed, AttemptResult::NoAnswer),
                    "CONGESTION" => (AttemptStatus::Failed, AttemptResult::Congestion),
                    // A preview or single call was dialled into the operator's bridge: answered
                    // means they talked.
                    "ANSWERED" if kind != "campaign" => (AttemptStatus::Completed, AttemptResult::Success),
                    // A campaign call answered while nobody was there to connect it.
                    "ANSWERED" => (AttemptStatus::Completed, AttemptResult::Abandoned),
                    _ => (AttemptStatus::Failed, AttemptResult::Failed),
                };
                status = s;
                ended.result = Some(r);
            }
        }
    }
    if ended.ended_at.is_none() {
        ended.ended_at = Some(Utc::now());
    }
    // A disposition set during the call already moved the lead on.
    let disposed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM attempt_transitions WHERE attempt_id = $1 AND reason = 'disposition')",
    )
    .bind(attempt)
    .fetch_one(&mut **tx)
    .await?;
    if !transition(tx, attempt, &AttemptStatus::LIVE, status, &ended).await? {
        return Ok(false);
    }
    if disposed && change.keep_result {
        return Ok(true);
    }
    let row = sqlx::query(
        "SELECT a.lead_id, a.result, l.attempts_count, c.settings
         FROM attempts a JOIN leads l ON l.id = a.lead_id JOIN campaigns c ON c.id = a.campaign_id
         WHERE a.id = $1",
    )
    .bind(attempt)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(true) };
    let lead: LeadId = row.try_get("lead_id")?;
    if status == AttemptStatus::Canceled {
        // Canceled by us: the lead goes back to the queue unless it was removed, and the
        // attempt does not count against it.
        sqlx::query(
            "UPDATE leads SET state = 'pending', attempts_count = greatest(attempts_count - 1, 0),
                 updated_at = now() WHERE id = $1 AND state = 'dialing'",
        )
        .bind(lead)
        .execute(&mut **tx)
        .await?;
        return Ok(true);
    }
    let result: Option<String> = row.try_get("result")?;
    let Some(result) = result.as_deref().and_then(AttemptResult::parse) else {
        return Ok(true);
    };
    let settings: serde_json::Value = row.try_get("settings")?;
    let spec: CampaignSpec = serde_json::from_value(settings).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let attempts: i32 = row.try_get("attempts_count")?;
    let step = next_step(
        result,
        attempts.max(0) as u32,
        spec.max_attempts,
        &spec.retry_delays_secs,
        None,
        Utc::now(),
    );
    apply_step(tx, lead, result, step, None).await?;
    Ok(true)
}

/// Call events for the CRM, written to the outbox in the transaction of the change they
/// report; the relay publishes them to RabbitMQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEvent {
    Initiated,
    Ringing,
    Answered,
    Bridged,
    Failed,
    Ended,
    Disposition,
}

impl CallEvent {
    pub fn name(self) -> &'static str {
        match self {
            CallEvent::Initiated => "OutboundCallInitiated",
            CallEvent::Ringing => "OutboundCallRinging",
            CallEvent::Answered => "OutboundCallAnswered",
            CallEvent::Bridged => "OutboundCallBridged",
            CallEvent::Failed => "OutboundCallFailed",
            CallEvent::Ended => "OutboundCallEnded",
            CallEvent::Disposition => "OutboundCallDisposition",
        }
    }

    pub fn routing_key(self) -> &'static str {
        match self {
            CallEvent::Initiated => "call.initiated",
            CallEvent::Ringing => "call.ringing",
            CallEvent::Answered => "call.answered",
            CallEvent::Bridged => "call.bridged",
            CallEvent::Failed => "call.failed",
            CallEvent::Ended => "call.ended",
            CallEvent::Disposition => "call.disposition",
        }
    }
}

/// The event's body: the attempt as it is after the change (`occurredAt` when the write is
/// applied: `clock_timestamp()`, since one transaction may apply a batch of journal entries). The relay adds `eventId` (the
/// outbox row's id, also the AMQP message id).
const EVENT_PAYLOAD: &str = "jsonb_build_object(
        'type', $3::text, 'occurredAt', clock_timestamp(),
        'attemptId', a.id, 'campaignId', a.campaign_id, 'leadId', a.lead_id, 'externalId', l.external_id,
        'operatorId', a.operator_id, 'correlationId', a.correlation_id, 'kind', a.kind, 'phone', a.phone_e164,
        'status', a.status, 'result', a.result, 'hangupCause', a.hangup_cause, 'sipCode', a.sip_code,
        'dispositionNotes', a.disposition_notes, 'callbackAt', a.callback_at, 'crm', a.crm,
        'createdAt', a.created_at, 'dialedAt', a.dialed_at, 'ringingAt', a.ringing_at,
        'answeredAt', a.answered_at, 'bridgedAt', a.bridged_at, 'endedAt', a.ended_at, 'endedBy', a.ended_by)";

async fn emit(tx: &mut Transaction<'_, Postgres>, attempt: AttemptId, event: CallEvent) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO outbox (id, event_type, routing_key, attempt_id, payload, headers)
         SELECT $2, $3, $4, a.id, {EVENT_PAYLOAD}, jsonb_build_object('attemptId', a.id)
         FROM attempts a LEFT JOIN leads l ON l.id = a.lead_id WHERE a.id = $1"
    ))
    .bind(attempt)
    .bind(uuid::Uuid::new_v4())
    .bind(event.name())
    .bind(event.routing_key())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn log(
    tx: &mut Transaction<'_, Postgres>,
    attempt: AttemptId,
    from: Option<&str>,
    to: AttemptStatus,
    result: Option<AttemptResult>,
    reason: Option<&str>,
    detail: Option<serde_json::Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO attempt_transitions (attempt_id, from_status, to_status, result, reason, detail)
         VALUES ($1, $2, $3, $4, $5, coalesce($6, '{}'::jsonb))",
    )
    .bind(attempt)
    .bind(from)
    .bind(to.as_str())
    .bind(result.map(|r| r.as_str()))
    .bind(reason)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A disposition from the operator (phone key or REST): sets the attempt's result and moves
/// the lead accordingly. Allowed while the call is up and after it ended.
pub struct Disposition {
    pub result: AttemptResult,
    pub notes: Option<String>,
    pub callback_at: Option<DateTime<Utc>>,
    pub same_operator: bool,
    pub source: &'static str,
    /// Why, when the dialer sets it.
    pub why: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DispositionError {
    #[error("attempt not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn set_disposition(pool: &PgPool, attempt: AttemptId, d: &Disposition) -> Result<(), DispositionError> {
    let mut tx = pool.begin().await?;
    disposition_in(&mut tx, attempt, d).await?;
    tx.commit().await?;
    Ok(())
}

/// A disposition from the engine's journal: one that no longer applies (the attempt is gone,
/// or never answered) changes nothing and must not block the entries after it.
async fn dispose_journaled(
    tx: &mut Transaction<'_, Postgres>,
    attempt: AttemptId,
    d: &Disposition,
) -> Result<(), sqlx::Error> {
    match disposition_in(tx, attempt, d).await {
        Ok(()) | Err(DispositionError::NotFound) | Err(DispositionError::Conflict(_)) => Ok(()),
        Err(DispositionError::Db(e)) => Err(e),
    }
}

async fn disposition_in(
    tx: &mut Transaction<'_, Postgres>,
    attempt: AttemptId,
    d: &Disposition,
) -> Result<(), DispositionError> {
    let row = sqlx::query(
        "SELECT a.status, a.lead_id, a.operator_id, a.answered_at, l.attempts_count, c.settings
         FROM attempts a LEFT JOIN leads l ON l.id = a.lead_id LEFT JOIN campaigns c ON c.id = a.campaign_id
         WHERE a.id = $1 FOR UPDATE OF a",
    )
    .bind(attempt)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(DispositionError::NotFound)?;
    let status: String = row.try_get("status")?;
    let status = AttemptStatus::parse(&status).expect("constraint keeps statuses known");
    let answered: Option<DateTime<Utc>> = row.try_get("answered_at")?;
    if answered.is_none() || matches!(status, AttemptStatus::Canceled) {
        return Err(DispositionError::Conflict(
            "only answered calls take a disposition; this attempt never reached the customer".into(),
        ));
    }
    sqlx::query(
        "UPDATE attempts SET result = $2, disposition_notes = coalesce($3, disposition_notes),
             callback_at = $4, updated_at = now() WHERE id = $1",
    )
    .bind(attempt)
    .bind(d.result.as_str())
    .bind(&d.notes)
    .bind(d.callback_at)
    .execute(&mut **tx)
    .await?;
    log(
        tx,
        attempt,
        Some(status.as_str()),
        status,
        Some(d.result),
        Some("disposition"),
        Some(serde_json::json!({ "source": d.source, "callback_at": d.callback_at, "why": d.why })),
    )
    .await?;
    emit(tx, attempt, CallEvent::Disposition).await?;
    let lead: Option<LeadId> = row.try_get("lead_id")?;
    let settings: Option<serde_json::Value> = row.try_get("settings")?;
    if let (Some(lead), Some(settings)) = (lead, settings) {
        let spec: CampaignSpec = serde_json::from_value(settings).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let attempts: i32 = row.try_get::<Option<i32>, _>("attempts_count")?.unwrap_or(1);
        let operator: Option<OperatorId> = row.try_get("operator_id")?;
        let step = next_step(
            d.result,
            attempts.max(0) as u32,
            spec.max_attempts,
            &spec.retry_delays_secs,
            d.callback_at,
            Utc::now(),
        );
        let callback_operator = if d.same_operator { operator } else { None };
        apply_step(tx, lead, d.result, step, callback_operator).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub id: AttemptId,
    pub lead_id: Option<LeadId>,
    pub campaign_id: Option<CampaignId>,
    pub operator_id: Option<OperatorId>,
    pub phone: String,
    /// `campaign` (dialled by the scheduler), `preview` (an offered lead the operator dialled)
    /// or `click-to-call`.
    #[schema(pattern = "^(campaign|preview|click-to-call)$")]
    pub kind: String,
    #[schema(value_type = AttemptStatus)]
    pub status: String,
    #[schema(value_type = Option<AttemptResult>)]
    pub result: Option<String>,
    pub hangup_cause: Option<i32>,
    pub hangup_cause_txt: Option<String>,
    pub sip_code: Option<i32>,
    pub recording_name: Option<String>,
    pub disposition_notes: Option<String>,
    pub callback_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub dialed_at: Option<DateTime<Utc>>,
    pub ringing_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub bridged_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Who ended the call: customer, operator, dialer or system.
    pub ended_by: Option<String>,
    /// Why the scheduler dialled it then: the pacing slot, the profile, the checks passed.
    #[schema(schema_with = crate::api::schema::nullable_free_object)]
    pub dial_reason: Option<serde_json::Value>,
    /// When the abandon message started.
    pub message_at: Option<DateTime<Utc>>,
    /// Answering-machine detection's verdict (HUMAN, MACHINE, NOTSURE) and its cause.
    pub amd_status: Option<String>,
    pub amd_cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<TransitionView>>,
}

/// One step of an attempt's life.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TransitionView {
    #[schema(value_type = Option<AttemptStatus>)]
    pub from_status: Option<String>,
    #[schema(value_type = AttemptStatus)]
    pub to_status: String,
    #[schema(value_type = Option<AttemptResult>)]
    pub result: Option<String>,
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}

const VIEW_COLUMNS: &str = "id, lead_id, campaign_id, operator_id, phone_e164, kind, status, result, hangup_cause,
    hangup_cause_txt, sip_code, recording_name, disposition_notes, callback_at, created_at, dialed_at, ringing_at,
    answered_at, bridged_at, ended_at, ended_by, dial_reason, message_at, amd_status, amd_cause";

fn view(row: &sqlx::postgres::PgRow) -> Result<AttemptView, sqlx::Error> {
    Ok(AttemptView {
        id: row.try_get("id")?,
        lead_id: row.try_get("lead_id")?,
        campaign_id: row.try_get("campaign_id")?,
        operator_id: row.try_get("operator_id")?,
        phone: row.try_get("phone_e164")?,
        kind: row.try_get("kind")?,
        status: row.try_get("status")?,
        result: row.try_get("result")?,
        hangup_cause: row.try_get("hangup_cause")?,
        hangup_cause_txt: row.try_get("hangup_cause_txt")?,
        sip_code: row.try_get("sip_code")?,
        recording_name: row.try_get("recording_name")?,
        disposition_notes: row.try_get("disposition_notes")?,
        callback_at: row.try_get("callback_at")?,
        created_at: row.try_get("created_at")?,
        dialed_at: row.try_get("dialed_at")?,
        ringing_at: row.try_get("ringing_at")?,
        answered_at: row.try_get("answered_at")?,
        bridged_at: row.try_get("bridged_at")?,
        ended_at: row.try_get("ended_at")?,
        ended_by: row.try_get("ended_by")?,
        dial_reason: row.try_get("dial_reason")?,
        message_at: row.try_get("message_at")?,
        amd_status: row.try_get("amd_status")?,
        amd_cause: row.try_get("amd_cause")?,
        timeline: None,
    })
}

pub async fn get(pool: &PgPool, id: AttemptId) -> Result<Option<AttemptView>, sqlx::Error> {
    let Some(row) = sqlx::query(&format!("SELECT {VIEW_COLUMNS} FROM attempts WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let mut attempt = view(&row)?;
    attempt.timeline = Some(
        sqlx::query_as(
            "SELECT from_status, to_status, result, reason, detail, at FROM attempt_transitions
             WHERE attempt_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(pool)
        .await?,
    );
    Ok(Some(attempt))
}

pub async fn list(
    pool: &PgPool,
    campaign: Option<CampaignId>,
    lead: Option<LeadId>,
    limit: i64,
    offset: i64,
) -> Result<Vec<AttemptView>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {VIEW_COLUMNS} FROM attempts WHERE ($1::uuid IS NULL OR campaign_id = $1)
           AND ($2::uuid IS NULL OR lead_id = $2)
         ORDER BY created_at, id LIMIT $3 OFFSET $4"
    ))
    .bind(campaign)
    .bind(lead)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    rows.iter().map(view).collect()
}

/// A live attempt this instance held, as the database has it (for adoption at start-up).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveAttempt {
    pub id: AttemptId,
    pub lead_id: Option<LeadId>,
    pub campaign_id: Option<CampaignId>,
    pub operator_id: Option<OperatorId>,
    pub phone_e164: String,
    pub caller_id: Option<String>,
    pub kind: String,
    pub status: String,
    pub dialed_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub bridge_id: Option<String>,
    pub callback_operator_id: Option<OperatorId>,
    pub settings: Option<serde_json::Value>,
    pub amd_status: Option<String>,
}

pub async fn live_for_instance(pool: &PgPool, instance: &str) -> Result<Vec<LiveAttempt>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT a.id, a.lead_id, a.campaign_id, a.operator_id, a.phone_e164, a.caller_id, a.kind, a.status,
                a.dialed_at, a.answered_at, a.bridge_id, l.callback_operator_id, c.settings, a.amd_status
         FROM attempts a LEFT JOIN leads l ON l.id = a.lead_id LEFT JOIN campaigns c ON c.id = a.campaign_id
         WHERE a.instance = $1 AND a.status IN {}",
        AttemptStatus::LIVE_SQL
    ))
    .bind(instance)
    .fetch_all(pool)
    .await
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the number is already in a live call")]
    NumberBusy,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Inserts a single or preview call's attempt (`init`) and, for a campaign's lead, counts it
/// on the lead like a campaign attempt. Refused whole if the number is already in a live call.
pub async fn create_attempt(pool: &PgPool, n: &NewAttempt, instance: &str) -> Result<(), CreateError> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO attempts (id, lead_id, campaign_id, operator_id, phone_e164, caller_id, kind, status,
             correlation_id, crm, instance)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'init', $8, $9, $10)",
    )
    .bind(n.attempt)
    .bind(n.lead)
    .bind(n.campaign)
    .bind(n.operator)
    .bind(&n.phone)
    .bind(&n.caller_id)
    .bind(n.kind.as_str())
    .bind(&n.correlation_id)
    .bind(&n.crm)
    .bind(instance)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        let busy = e.as_database_error().and_then(|d| d.constraint()) == Some("attempts_one_live_per_number");
        return Err(if busy { CreateError::NumberBusy } else { e.into() });
    }
    log(
        &mut tx,
        n.attempt,
        None,
        AttemptStatus::Init,
        None,
        Some(n.kind.as_str()),
        None,
    )
    .await?;
    emit(&mut tx, n.attempt, CallEvent::Initiated).await?;
    if let (Some(lead), Some(_)) = (n.lead, n.campaign) {
        sqlx::query(
            "UPDATE leads SET state = 'dialing', attempts_count = attempts_count + 1, next_attempt_at = NULL,
                 reserved_by = NULL, reserved_until = NULL, updated_at = now() WHERE id = $1",
        )
        .bind(lead)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
