//! The compliance report (`GET /api/v1/reports/compliance`) and a lead's skip record: per
//! campaign, the abandon rate over its profile's window, calls placed outside the calling
//! hours (recomputed from each attempt's dial time, so a bug in the claim shows up here),
//! skips by rule, and abandon messages started within 2 s of the answer.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::PgPool;

use super::{Effective, SkipRule};
use crate::campaigns::spec::{AbandonWindow, CampaignSpec};
use crate::ids::{AttemptId, CampaignId};
use crate::reports::{abandon_counts_sql, AbandonCounts};

/// The compliance figures of one campaign.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignCompliance {
    pub campaign_id: CampaignId,
    pub name: String,
    #[schema(value_type = super::Profile)]
    pub profile: super::Profile,
    pub abandon: AbandonFigures,
    /// Attempts dialled in [from, to).
    pub calls: i64,
    /// Of them, dialled outside the campaign's calling hours in the lead's zone (must be 0).
    pub calls_outside_hours: i64,
    /// Up to 20 of those, to look at.
    pub outside_hours_attempts: Vec<AttemptId>,
    /// Leads skipped in [from, to), by rule.
    pub skips: BTreeMap<String, i64>,
    pub messages: MessageFigures,
}

/// The abandon rate as the profile defines it, over its window ending at `to`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AbandonFigures {
    #[schema(value_type = AbandonWindow)]
    pub window: AbandonWindow,
    pub since: DateTime<Utc>,
    /// Calls answered by a person (machines excluded, but see `machine_hangups_counted`).
    pub answered: i64,
    pub abandoned: i64,
    /// Calls answering-machine detection hung up on.
    pub machine_hangups: i64,
    /// Of them, counted as people abandoned (in `answered` and `abandoned`): the campaign's
    /// measured `amd.false_positive_rate`, else all under us-tcpa and uk-ofcom.
    pub machine_hangups_counted: i64,
    /// abandoned ÷ answered; null before the first answer.
    pub rate: Option<f64>,
    pub cap: f64,
    pub within_cap: bool,
}

/// Abandon (information) messages of the abandoned calls in [from, to).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageFigures {
    pub abandoned: i64,
    /// Messages that started playing.
    pub played: i64,
    /// Of them, started within 2 s of the answer.
    pub within_2s: i64,
    /// Seconds from the answer to the message, the slowest.
    pub slowest_secs: Option<f64>,
}

/// The report for campaigns (one, or every campaign that placed calls in the range).
pub async fn collect(
    pool: &PgPool,
    campaign: Option<CampaignId>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<CampaignCompliance>, sqlx::Error> {
    let rows: Vec<(CampaignId, String, sqlx::types::Json<CampaignSpec>)> = sqlx::query_as(
        "SELECT c.id, c.name, c.settings FROM campaigns c
         WHERE ($1::uuid IS NULL OR c.id = $1)
           AND ($1::uuid IS NOT NULL OR EXISTS (SELECT 1 FROM attempts a WHERE a.campaign_id = c.id
                                                 AND a.created_at >= $2 AND a.created_at < $3))
         ORDER BY c.created_at",
    )
    .bind(campaign)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, name, spec) in rows {
        out.push(one(pool, id, name, &spec.0, from, to).await?);
    }
    Ok(out)
}

async fn one(
    pool: &PgPool,
    id: CampaignId,
    name: String,
    spec: &CampaignSpec,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<CampaignCompliance, sqlx::Error> {
    let rules = Effective::of(spec);
    let window = spec.pacing.abandon_window;
    let since = match window {
        AbandonWindow::Day => {
            let tz = spec.tz();
            let local = to.with_timezone(&tz).date_naive();
            crate::dialer::window::local_midnight(local, tz).unwrap_or(to - Duration::hours(24))
        }
        AbandonWindow::Hours24 => to - Duration::hours(24),
        AbandonWindow::Days30 => to - Duration::days(30),
    };
    let counts: AbandonCounts = sqlx::query_as(&format!(
        "SELECT {} FROM campaigns c JOIN attempts a ON a.campaign_id = c.id
         WHERE c.id = $1 AND a.created_at >= $2 AND a.created_at < $3",
        abandon_counts_sql()
    ))
    .bind(id)
    .bind(since)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let w = counts.rate();
    let rate = w.rate();
    let abandon = AbandonFigures {
        window,
        since,
        answered: w.answered as i64,
        abandoned: w.abandoned as i64,
        machine_hangups: counts.machine_hangups,
        machine_hangups_counted: counts.people_hung_up_on() as i64,
        rate,
        cap: spec.max_abandon_rate,
        within_cap: rate.is_none_or(|r| r <= spec.max_abandon_rate),
    };

    // Every dial of the range, checked again against the hours in the lead's zone.
    let dials: Vec<(AttemptId, DateTime<Utc>, Option<String>)> = sqlx::query_as(
        "SELECT a.id, coalesce(a.dialed_at, a.created_at), l.timezone
         FROM attempts a LEFT JOIN leads l ON l.id = a.lead_id
         WHERE a.campaign_id = $1 AND a.created_at >= $2 AND a.created_at < $3",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let campaign_tz = spec.tz();
    let outside: Vec<AttemptId> = dials
        .iter()
        .filter(|(_, at, tz)| {
            let tz: Tz = tz.as_deref().and_then(|t| t.parse().ok()).unwrap_or(campaign_tz);
            !rules.is_open(*at, tz)
        })
        .map(|(a, _, _)| *a)
        .collect();

    let counted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT rule, count(*) FROM lead_skips WHERE campaign_id = $1 AND at >= $2 AND at < $3 GROUP BY rule",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut skips: BTreeMap<String, i64> = SkipRule::ALL.iter().map(|r| (r.as_str().to_owned(), 0)).collect();
    skips.extend(counted);

    let (abandoned_calls, played, within, slowest): (i64, i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), count(message_at),
                count(*) FILTER (WHERE message_at - answered_at <= interval '2 seconds'),
                max(extract(epoch FROM message_at - answered_at))::float8
         FROM attempts WHERE campaign_id = $1 AND result = 'abandoned' AND created_at >= $2 AND created_at < $3",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;

    Ok(CampaignCompliance {
        campaign_id: id,
        name,
        profile: spec.compliance.profile,
        abandon,
        calls: dials.len() as i64,
        calls_outside_hours: outside.len() as i64,
        outside_hours_attempts: outside.into_iter().take(20).collect(),
        skips,
        messages: MessageFigures {
            abandoned: abandoned_calls,
            played,
            within_2s: within,
            slowest_secs: slowest,
        },
    })
}
