//! Reports over the attempts table (and Asterisk's CDRs for billed seconds): per campaign,
//! operator, day or hour within a time range; the live view of one campaign; today's abandon
//! rate, which the scheduler and the metrics also use.

use chrono::{DateTime, Utc};
use futures_util::{Stream, TryStreamExt};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::calls::AttemptResult;
use crate::campaigns::spec::AbandonWindow;
use crate::dialer::predictive::WindowRate;
use crate::ids::CampaignId;

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Campaign,
    Operator,
    Day,
    Hour,
}

impl Dimension {
    pub fn parse(s: &str) -> Option<Dimension> {
        match s {
            "campaigns" | "campaign" => Some(Dimension::Campaign),
            "operators" | "operator" => Some(Dimension::Operator),
            "days" | "day" => Some(Dimension::Day),
            "hours" | "hour" => Some(Dimension::Hour),
            _ => None,
        }
    }

    /// SQL for the group key and its display name, over `a` (attempts), `c`, `o`; `$4` is the
    /// time zone for days and hours.
    fn key_sql(self) -> (&'static str, &'static str) {
        match self {
            Dimension::Campaign => (
                "coalesce(a.campaign_id::text, 'single')",
                "coalesce(c.name, 'single calls')",
            ),
            Dimension::Operator => (
                "coalesce(a.operator_id::text, 'none')",
                "coalesce(o.name, 'no operator')",
            ),
            Dimension::Day => ("to_char(a.created_at AT TIME ZONE $4, 'YYYY-MM-DD')", "''"),
            Dimension::Hour => ("to_char(a.created_at AT TIME ZONE $4, 'YYYY-MM-DD HH24:00')", "''"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReportQuery {
    pub dimension: Dimension,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub campaign: Option<CampaignId>,
    /// IANA zone for days and hours.
    pub timezone: String,
}

/// One row of a report. Rates are fractions (0..1); times in seconds; `None` when there is
/// nothing to average.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ReportRow {
    pub key: String,
    pub name: String,
    pub dials: i64,
    pub answered: i64,
    pub answer_rate: Option<f64>,
    pub abandoned: i64,
    pub abandon_rate: Option<f64>,
    pub bridged: i64,
    pub avg_talk_secs: Option<f64>,
    pub median_talk_secs: Option<f64>,
    pub avg_ring_secs: Option<f64>,
    pub leads: i64,
    pub attempts_per_lead: Option<f64>,
    pub converted_leads: i64,
    pub conversion: Option<f64>,
    /// Sum of Asterisk's `billsec` over the CDRs of these attempts (the customer leg before the
    /// operator, and the bridged conversation).
    pub billed_secs: i64,
    /// Attempts by result (`none` for attempts still live or canceled without one).
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub results: serde_json::Map<String, serde_json::Value>,
}

fn ratio(n: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn report_sql(dimension: Dimension) -> String {
    let (key, name) = dimension.key_sql();
    format!(
        "WITH a AS (
             SELECT a.*, {key} AS key, {name} AS name, {ABANDONED} AS counts_abandoned
             FROM attempts a
             LEFT JOIN campaigns c ON c.id = a.campaign_id
             LEFT JOIN operators o ON o.id = a.operator_id
             WHERE a.created_at >= $1 AND a.created_at < $2 AND ($3::uuid IS NULL OR a.campaign_id = $3)
               AND $4::text IS NOT NULL -- every dimension binds the zone; only days and hours use it
         ),
         results AS (
             SELECT key, jsonb_object_agg(result, n) AS results
             FROM (SELECT key, coalesce(result, 'none') AS result, count(*) AS n FROM a GROUP BY 1, 2) r
             GROUP BY key
         ),
         billed AS (
             SELECT a.key, sum(cdr.billsec)::bigint AS billed
             FROM a JOIN cdr ON string_to_array(cdr.userfield, ';') @> ARRAY[a.id::text] GROUP BY a.key
         ),
         talk AS (
             SELECT a.*, extract(epoch FROM a.ended_at - a.bridged_at)::float8 AS talk,
                    extract(epoch FROM coalesce(a.answered_at, a.ended_at) - a.ringing_at)::float8 AS ring
             FROM a
         )
         SELECT s.*, r.results, coalesce(b.billed, 0)::bigint AS billed
         FROM (
             SELECT t.key, max(t.name) AS name, count(*) AS dials, count(t.answered_at) AS answered,
                    count(*) FILTER (WHERE t.counts_abandoned) AS abandoned, count(t.bridged_at) AS bridged,
                    avg(t.talk) AS avg_talk, percentile_cont(0.5) WITHIN GROUP (ORDER BY t.talk) AS median_talk,
                    avg(t.ring) AS avg_ring, count(DISTINCT t.lead_id) AS leads,
                    count(DISTINCT t.lead_id) FILTER (WHERE t.result = 'success') AS converted
             FROM talk t GROUP BY t.key
         ) s
         JOIN results r ON r.key = s.key LEFT JOIN billed b ON b.key = s.key
         ORDER BY s.key"
    )
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<ReportRow, sqlx::Error> {
    let dials: i64 = row.try_get("dials")?;
    let answered: i64 = row.try_get("answered")?;
    let abandoned: i64 = row.try_get("abandoned")?;
    let leads: i64 = row.try_get("leads")?;
    let converted: i64 = row.try_get("converted")?;
    let results: serde_json::Value = row.try_get("results")?;
    Ok(ReportRow {
        key: row.try_get("key")?,
        name: row.try_get("name")?,
        dials,
        answered,
        answer_rate: ratio(answered, dials),
        abandoned,
        abandon_rate: ratio(abandoned, answered),
        bridged: row.try_get("bridged")?,
        avg_talk_secs: row.try_get("avg_talk")?,
        median_talk_secs: row.try_get("median_talk")?,
        avg_ring_secs: row.try_get("avg_ring")?,
        leads,
        // Single calls without a lead count as their own "lead" for the per-lead figures.
        attempts_per_lead: ratio(dials, leads),
        converted_leads: converted,
        conversion: ratio(converted, leads),
        billed_secs: row.try_get("billed")?,
        results: match results {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
    })
}

/// The report's rows as they come from PostgreSQL.
pub fn rows<'a>(
    pool: &'a PgPool,
    q: &'a ReportQuery,
    sql: &'a str,
) -> impl Stream<Item = Result<ReportRow, sqlx::Error>> + 'a {
    sqlx::query(sql)
        .bind(q.from)
        .bind(q.to)
        .bind(q.campaign)
        .bind(&q.timezone)
        .fetch(pool)
        .and_then(|row| async move { from_row(&row) })
}

/// The SQL of a report; kept by the caller while the stream of [`rows`] lives.
pub fn sql(dimension: Dimension) -> String {
    report_sql(dimension)
}

pub async fn collect(pool: &PgPool, q: &ReportQuery) -> Result<Vec<ReportRow>, sqlx::Error> {
    let sql = sql(q.dimension);
    rows(pool, q, &sql).try_collect().await
}

/// The CSV header; the results breakdown becomes one `result_<name>` column per result.
pub fn csv_header() -> Vec<String> {
    let mut h: Vec<String> = [
        "key",
        "name",
        "dials",
        "answered",
        "answer_rate",
        "abandoned",
        "abandon_rate",
        "bridged",
        "avg_talk_secs",
        "median_talk_secs",
        "avg_ring_secs",
        "leads",
        "attempts_per_lead",
        "converted_leads",
        "conversion",
        "billed_secs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    h.extend(AttemptResult::ALL.iter().map(|r| format!("result_{}", r.as_str())));
    h.push("result_none".to_owned());
    h
}

pub fn csv_record(r: &ReportRow) -> Vec<String> {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
    let mut out = vec![
        r.key.clone(),
        r.name.clone(),
        r.dials.to_string(),
        r.answered.to_string(),
        f(r.answer_rate),
        r.abandoned.to_string(),
        f(r.abandon_rate),
        r.bridged.to_string(),
        f(r.avg_talk_secs),
        f(r.median_talk_secs),
        f(r.avg_ring_secs),
        r.leads.to_string(),
        f(r.attempts_per_lead),
        r.converted_leads.to_string(),
        f(r.conversion),
        r.billed_secs.to_string(),
    ];
    let count = |name: &str| r.results.get(name).and_then(|v| v.as_i64()).unwrap_or(0).to_string();
    out.extend(AttemptResult::ALL.iter().map(|x| count(x.as_str())));
    out.push(count("none"));
    out
}

/// The rule for an abandoned call, as SQL over an attempt `a` and its campaign `c`: the
/// result `abandoned`, and also `early-hangup` (the customer hung up before the connect limit)
/// when the campaign counts those conservatively. Answered calls are the denominator.
pub const ABANDONED: &str = "(a.result = 'abandoned' OR (a.result = 'early-hangup'
    AND coalesce((c.settings->>'count_early_hangups_as_abandoned')::boolean, false)))";

/// Calls answered by a person (answering machines excluded) and abandoned calls of a
/// campaign over a window (by when they were dialled); machine hang-ups count in both as
/// `AbandonCounts` says.
pub async fn abandon_counts(
    pool: &PgPool,
    campaign: CampaignId,
    window: AbandonWindow,
) -> Result<WindowRate, sqlx::Error> {
    let since = match window {
        AbandonWindow::Day => "date_trunc('day', now() AT TIME ZONE c.timezone) AT TIME ZONE c.timezone",
        AbandonWindow::Hours24 => "now() - interval '24 hours'",
        AbandonWindow::Days30 => "now() - interval '30 days'",
    };
    let counts: AbandonCounts = sqlx::query_as(&format!(
        "SELECT {}
         FROM campaigns c JOIN attempts a ON a.campaign_id = c.id
         WHERE c.id = $1 AND a.created_at >= {since}",
        abandon_counts_sql()
    ))
    .bind(campaign)
    .fetch_one(pool)
    .await?;
    Ok(counts.rate())
}

/// The columns of [`AbandonCounts`], over attempts `a` of one campaign `c` (`$1`). Machine
/// hang-ups count as people by the campaign's measured `amd.false_positive_rate`; without
/// one, all of them under a profile with an abandon cap (the strict reading: nobody knows
/// which were people), none otherwise.
pub fn abandon_counts_sql() -> String {
    format!(
        "count(a.answered_at) FILTER (WHERE a.result IS DISTINCT FROM 'machine') AS answered,
         count(*) FILTER (WHERE {ABANDONED}) AS abandoned,
         count(*) FILTER (WHERE a.result = 'machine' AND a.bridged_at IS NULL) AS machine_hangups,
         (SELECT coalesce((c.settings->'amd'->>'false_positive_rate')::float8,
             CASE WHEN c.settings->'compliance'->>'profile' IN ('us-tcpa', 'uk-ofcom') THEN 1.0 ELSE 0.0 END)
          FROM campaigns c WHERE c.id = $1) AS machine_share"
    )
}

/// A campaign's answered and abandoned calls over a window, before machine hang-ups are
/// shared out.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct AbandonCounts {
    pub answered: i64,
    pub abandoned: i64,
    pub machine_hangups: i64,
    pub machine_share: Option<f64>,
}

impl AbandonCounts {
    /// The machine hang-ups that count as people (rounded up) join both sides.
    pub fn people_hung_up_on(&self) -> u64 {
        (self.machine_hangups.max(0) as f64 * self.machine_share.unwrap_or(0.0)).ceil() as u64
    }

    pub fn rate(&self) -> WindowRate {
        let people = self.people_hung_up_on();
        WindowRate {
            answered: self.answered.max(0) as u64 + people,
            abandoned: self.abandoned.max(0) as u64 + people,
        }
    }
}

/// The live view of a campaign for a supervisor's screen.
pub async fn live(pool: &PgPool, campaign: CampaignId) -> Result<serde_json::Value, sqlx::Error> {
    let view: serde_json::Value = sqlx::query_scalar(&format!(
        "SELECT jsonb_build_object(
             'campaign_id', c.id, 'name', c.name, 'state', c.state, 'at', now(),
             'leads', (SELECT coalesce(jsonb_object_agg(state, n), '{{}}'::jsonb)
                       FROM (SELECT state, count(*) AS n FROM leads WHERE campaign_id = c.id GROUP BY state) l),
             'calls_in_flight', (SELECT coalesce(jsonb_object_agg(status, n), '{{}}'::jsonb)
                       FROM (SELECT status, count(*) AS n FROM attempts
                             WHERE campaign_id = c.id AND status IN {live}
                             GROUP BY status) f),
             'calls', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                           'attempt_id', a.id, 'lead_id', a.lead_id, 'phone', a.phone_e164, 'status', a.status,
                           'operator_id', a.operator_id, 'operator', o.name, 'created_at', a.created_at,
                           'answered_at', a.answered_at, 'bridged_at', a.bridged_at) ORDER BY a.created_at), '[]'::jsonb)
                       FROM (SELECT * FROM attempts WHERE campaign_id = c.id AND status IN {live}
                             ORDER BY created_at LIMIT 500) a
                       LEFT JOIN operators o ON o.id = a.operator_id),
             'max_abandon_rate', (c.settings->>'max_abandon_rate')::float8,
             'operators', (SELECT coalesce(jsonb_object_agg(state, n), '{{}}'::jsonb)
                       FROM (SELECT o.state, count(*) AS n FROM operators o
                             WHERE o.enabled AND (jsonb_array_length(c.settings->'operators') = 0
                                                  OR c.settings->'operators' ? o.id::text)
                             GROUP BY o.state) op),
             'today', (SELECT jsonb_build_object(
                           'dials', count(*), 'answered', count(a.answered_at),
                           'abandoned', count(*) FILTER (WHERE {ABANDONED}),
                           'abandon_rate', count(*) FILTER (WHERE {ABANDONED})::float8
                                           / nullif(count(a.answered_at), 0))
                       FROM attempts a
                       WHERE a.campaign_id = c.id
                         AND a.created_at >= date_trunc('day', now() AT TIME ZONE c.timezone) AT TIME ZONE c.timezone))
         FROM campaigns c WHERE c.id = $1",
        live = crate::calls::AttemptStatus::LIVE_SQL
    ))
    .bind(campaign)
    .fetch_optional(pool)
    .await?
    .unwrap_or(serde_json::Value::Null);
    Ok(view)
}
