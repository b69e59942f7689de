//! Reports over REST (scope `reports:read`): `GET /api/v1/reports/{dimension}` as JSON, or as
//! CSV streamed row by row with `Accept: text/csv`; and a campaign's live view.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{parse_id, store_error, ApiError, ApiResult, ApiState, ErrorBody};
use crate::campaigns::store as campaigns;
use crate::ids::CampaignId;
use crate::reports::{self, Dimension, ReportQuery};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Start of the range (RFC 3339); default 24 hours before `to`. Before `to`.
    from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339), exclusive; default now.
    to: Option<DateTime<Utc>>,
    /// Only this campaign.
    #[param(value_type = Option<uuid::Uuid>)]
    campaign_id: Option<String>,
    /// IANA zone for days and hours; default the campaign's, else UTC.
    #[param(schema_with = crate::api::schema::time_zone)]
    tz: Option<String>,
}

/// How report rows are grouped.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub enum ReportDimension {
    Campaigns,
    Operators,
    Days,
    Hours,
    Campaign,
    Operator,
    Day,
    Hour,
}

/// A report: one row per campaign, operator, day or hour.
#[derive(Serialize, ToSchema)]
pub struct Report {
    #[schema(example = "campaigns")]
    dimension: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rows: Vec<reports::ReportRow>,
}

/// Attempts today (since local midnight in the campaign's zone).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Today {
    dials: i64,
    answered: i64,
    abandoned: i64,
    /// abandoned ÷ answered; null before the first answer.
    abandon_rate: Option<f64>,
}

/// A campaign right now.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LiveView {
    campaign_id: CampaignId,
    name: String,
    state: crate::campaigns::CampaignState,
    at: DateTime<Utc>,
    /// Leads by state.
    leads: std::collections::BTreeMap<String, i64>,
    /// Live attempts by status.
    calls_in_flight: std::collections::BTreeMap<String, i64>,
    /// The live calls, oldest first (at most 500).
    calls: Vec<LiveCall>,
    /// The cap on the abandon rate (`max_abandon_rate`).
    max_abandon_rate: Option<f64>,
    /// The campaign's enabled operators by state.
    operators: std::collections::BTreeMap<String, i64>,
    today: Today,
    /// Predictive campaigns: the pacer's last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pacing: Option<crate::dialer::predictive::Decision>,
}

/// A call in flight.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LiveCall {
    attempt_id: crate::ids::AttemptId,
    lead_id: Option<crate::ids::LeadId>,
    #[schema(example = "+79161234567")]
    phone: String,
    status: crate::calls::AttemptStatus,
    operator_id: Option<crate::ids::OperatorId>,
    /// The operator's name.
    operator: Option<String>,
    created_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    bridged_at: Option<DateTime<Utc>>,
}

/// The compliance report.
#[derive(Serialize, ToSchema)]
pub struct ComplianceReport {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    campaigns: Vec<crate::compliance::report::CampaignCompliance>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ComplianceParams {
    /// Start of the range (RFC 3339); default 24 hours before `to`. Before `to`.
    from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339), exclusive; default now. The abandon rate is counted over
    /// the profile's window ending here.
    to: Option<DateTime<Utc>>,
    /// Only this campaign (default: every campaign that dialled in the range).
    #[param(value_type = Option<uuid::Uuid>)]
    campaign_id: Option<String>,
}

/// Per campaign: its rule profile, the abandon rate as the profile defines it (live-answered
/// calls, over its window ending at `to`) against the cap, calls dialled outside the calling
/// hours in the lead's zone (must be 0), leads skipped by rule (outside hours, holiday, contact
/// limit, quiet period, DNC, number busy), and abandon messages started within 2 s.
#[utoipa::path(get, path = "/api/v1/reports/compliance", tag = "reports", operation_id = "compliance_report",
    params(ComplianceParams),
    responses((status = 200, description = "one entry per campaign", body = ComplianceReport),
        (status = 404, description = "no such campaign", body = ErrorBody),
        (status = 422, description = "bad range", body = ErrorBody),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "the token lacks the scope", body = ErrorBody)),
    security(("token" = ["reports:read"])))]
pub async fn compliance(
    State(s): State<ApiState>,
    Query(params): Query<ComplianceParams>,
) -> ApiResult<Json<ComplianceReport>> {
    let (from, to) = range(params.from, params.to)?;
    let campaign = campaign_of(&s, params.campaign_id.as_deref()).await?.map(|c| c.id);
    let campaigns = crate::compliance::report::collect(&s.pool, campaign, from, to).await?;
    Ok(Json(ComplianceReport { from, to, campaigns }))
}

/// Dials, answered, answer and abandon rates, talk and ring times, attempts per lead,
/// conversion, billed seconds (CDR) and results, grouped by campaign, operator, day or hour of
/// attempts created in [from, to) (default: the last 24 hours).
#[utoipa::path(get, path = "/api/v1/reports/{dimension}", tag = "reports", operation_id = "report",
    params(("dimension" = ReportDimension, Path, description = "how rows are grouped"), ReportParams),
    responses((status = 200, description = "rows as JSON, or CSV with Accept: text/csv",
            content((Report = "application/json"), (String = "text/csv"))),
        (status = 404, description = "unknown dimension or campaign", body = ErrorBody),
        (status = 422, description = "bad range or zone", body = ErrorBody),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "the token lacks the scope", body = ErrorBody)),
    security(("token" = ["reports:read"])))]
pub async fn report(
    State(s): State<ApiState>,
    Path(dimension): Path<String>,
    Query(params): Query<ReportParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let dimension = Dimension::parse(&dimension).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no report {dimension:?}; use campaigns, operators, days or hours"
        ))
    })?;
    let (from, to) = range(params.from, params.to)?;
    let campaign = campaign_of(&s, params.campaign_id.as_deref()).await?;
    let timezone = params
        .tz
        .or_else(|| campaign.as_ref().map(|c| c.spec.timezone.clone()))
        .unwrap_or_else(|| "UTC".to_owned());
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ApiError::invalid("tz", "an IANA time zone such as Europe/Moscow"));
    }
    let query = ReportQuery {
        dimension,
        from,
        to,
        campaign: campaign.map(|c| c.id),
        timezone,
    };
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if !wants_csv {
        let rows = reports::collect(&s.pool, &query).await?;
        let report = Report {
            dimension: dimension_name(dimension),
            from,
            to,
            rows,
        };
        return Ok(Json(report).into_response());
    }
    // CSV: a task reads the rows and sends each as soon as PostgreSQL returns it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let pool = s.pool.clone();
    tokio::spawn(async move {
        let _ = tx.send(Ok(csv_line(&reports::csv_header()))).await;
        let sql = reports::sql(query.dimension);
        let mut rows = std::pin::pin!(reports::rows(&pool, &query, &sql));
        while let Some(row) = rows.next().await {
            let chunk = row.map(|r| csv_line(&reports::csv_record(&r))).map_err(|e| {
                tracing::error!(error = %e, "report query failed while streaming");
                std::io::Error::other("report query failed")
            });
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let filename = format!(
        "obzvon-{}-{}.csv",
        dimension_name(dimension),
        from.format("%Y%m%dT%H%M")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// A report's range: `to` defaults to now, `from` to 24 hours before it.
fn range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - Duration::hours(24));
    if from >= to {
        return Err(ApiError::invalid("from", "must be before `to`"));
    }
    Ok((from, to))
}

/// The campaign a report is limited to, if the query names one (404 if there is none such).
async fn campaign_of(s: &ApiState, raw: Option<&str>) -> ApiResult<Option<campaigns::Campaign>> {
    match raw {
        Some(raw) => {
            let id: CampaignId = parse_id(raw, "campaign")?;
            Ok(Some(campaigns::get(&s.pool, id).await.map_err(store_error)?))
        }
        None => Ok(None),
    }
}

fn dimension_name(d: Dimension) -> &'static str {
    match d {
        Dimension::Campaign => "campaigns",
        Dimension::Operator => "operators",
        Dimension::Day => "days",
        Dimension::Hour => "hours",
    }
}

fn csv_line(fields: &[String]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields).expect("writing to memory");
    w.into_inner().expect("writing to memory")
}

/// Leads by state, calls in flight, the campaign's operators by state, today's abandon rate;
/// for a predictive campaign, `pacing`: its last decision (dial level, learnt rates and times,
/// operators predicted free, whether the abandon target holds it at one call per operator).
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/live", tag = "reports", operation_id = "campaign_live",
    params(("id" = Uuid, Path, description = "campaign id")),
    responses((status = 200, description = "the live view", body = LiveView),
        (status = 404, description = "no such campaign", body = ErrorBody),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "the token lacks the scope", body = ErrorBody)),
    security(("token" = ["reports:read"]), ("token" = ["campaigns:write"])))]
pub async fn campaign_live(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<LiveView>> {
    let id: CampaignId = parse_id(&id, "campaign")?;
    match reports::live(&s.pool, id).await? {
        serde_json::Value::Null => Err(ApiError::NotFound("campaign not found".into())),
        view => {
            // The SQL builds the view; decoding it here keeps it to the documented shape.
            let mut view: LiveView = serde_json::from_value(view).map_err(|e| ApiError::Internal(e.into()))?;
            view.pacing = s.pacing.read().expect("pacing board").get(&id).copied();
            Ok(Json(view))
        }
    }
}
