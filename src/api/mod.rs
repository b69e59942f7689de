//! The REST API under `/api/v1`: campaigns, leads, DNC, operators and their sessions,
//! attempts and dispositions. Handlers parse and check input, then call the domain modules.

pub mod body;
pub mod error;
pub mod reports;
pub mod schema;
pub mod stream;
pub mod webhooks;

use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use body::{Bodies, JsonBody};
pub use error::ApiError;

use crate::auth::{Actor, AuthState, ScopeTable};
use crate::calls::engine::{CommandError, EngineHandle, OfferAction, OperatorInfo};
use crate::calls::place::{parse_call_request, CallRequest, PlaceError, Placer};
use crate::calls::store::{self as attempts, AttemptView, Disposition};
use crate::calls::AttemptResult;
use crate::campaigns::store::{self as campaigns, Campaign, StoreError};
use crate::campaigns::{Action, CampaignSpec};
use crate::ids::{AttemptId, CampaignId, LeadId, OperatorId};
use crate::leads::dnc::DncEntry;
use crate::leads::import::{self, ImportError, ImportReport, LeadInput};
use crate::leads::store::Lead;
use crate::leads::{dnc, store as leads, LeadState};
use crate::operators::store::{self as operators, Operator, OperatorError, OperatorInput};
use crate::operators::OperatorState;
use crate::phone::{PhoneNumber, Region};

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub engine: EngineHandle,
    /// Single calls (shared with the AMQP request consumer).
    pub placer: Placer,
    /// Predictive campaigns' last pacing decisions.
    pub pacing: crate::dialer::scheduler::PacingBoard,
    /// Body limits and import slots.
    pub bodies: Bodies,
    /// `[webhooks] allow_private_targets`.
    pub private_webhooks: bool,
    /// For stored recordings.
    pub ari: crate::ari::AriClient,
    /// Ends long-lived answers (the event stream) when the server stops.
    pub stop: tokio_util::sync::CancellationToken,
}

/// The `/api/v1` routes and the OpenAPI document generated from the same handler annotations:
/// a route cannot exist without its entry (and its scopes) in the document.
pub fn routes() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(get_campaign, update_campaign))
        .routes(routes!(list_leads, import_leads))
        .routes(routes!(list_campaign_attempts))
        .routes(routes!(campaign_action))
        .routes(routes!(get_lead, remove_lead))
        .routes(routes!(list_dnc, add_dnc))
        .routes(routes!(remove_dnc))
        .routes(routes!(list_operators, create_operator))
        .routes(routes!(get_operator, update_operator, delete_operator))
        .routes(routes!(start_session, end_session))
        .routes(routes!(operator_queue))
        .routes(routes!(dial_offered))
        .routes(routes!(skip_offered))
        .routes(routes!(pause_operator))
        .routes(routes!(ready_operator))
        .routes(routes!(create_call))
        .routes(routes!(get_attempt))
        .routes(routes!(get_recording))
        .routes(routes!(stream::event_stream))
        .routes(routes!(whoami))
        .routes(routes!(cancel_attempt))
        .routes(routes!(set_disposition))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(webhooks::delete_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(reports::compliance))
        .routes(routes!(reports::report))
        .routes(routes!(reports::campaign_live))
        .split_for_parts();
    // After the routes: their schemas and operations are in the document only now.
    let mut doc = doc;
    schema::add_common_answers(&mut doc);
    (router, doc)
}

/// The OpenAPI document, pretty-printed: what `obzvon openapi` prints and
/// `/api/v1/openapi.json` serves.
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&schema::document(&routes().1)).expect("the document serialises")
}

/// The API with token checks on every operation, plus the open `/api/v1/openapi.json`.
pub fn router(state: ApiState) -> Router {
    let (routes, doc) = routes();
    let auth = AuthState {
        pool: state.pool.clone(),
        scopes: Arc::new(ScopeTable::from_openapi(&doc)),
    };
    let doc = Arc::new(schema::document(&doc));
    routes
        .route_layer(axum::middleware::from_fn_with_state(auth, crate::auth::require_scope))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound("no such route; the API is described at /api/v1/openapi.json".into()) })
        .layer(axum::middleware::from_fn(body::json_errors))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "obzvon",
        description = "Outbound call-campaign dialer for Asterisk: campaigns, leads, operators, calls."
    ),
    modifiers(&BearerToken),
    components(schemas(ErrorBody, CampaignAction, reports::ReportDimension, crate::calls::AttemptResult, crate::dialer::window::Span))
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every error answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorBody {
    /// Machine-readable: not_found, bad_request, invalid, unauthorized, forbidden, conflict,
    /// too_large, timeout, unavailable.
    #[schema(example = "invalid")]
    error: String,
    /// For people.
    #[schema(example = "max_attempts: must be between 1 and 100")]
    message: String,
    /// For `invalid`: each field and what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<Vec<crate::campaigns::FieldError>>,
}

/// What `POST /campaigns/{id}/{action}` does.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum CampaignAction {
    Start,
    Pause,
    Resume,
    Stop,
}

/// A JSON lead import: a list of leads, or an object holding the list as `leads`. Each row
/// should be a `LeadInput`; a row that is not one is listed in the report's `rejected` with its
/// number and reason, and the other rows are imported.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
enum LeadUpload {
    List(Vec<LeadRow>),
    Wrapped(LeadList),
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
struct LeadList {
    leads: Vec<LeadRow>,
}

/// A row of a JSON import: a `LeadInput`, or anything else, which is rejected by its number.
// The document states it as `anyOf` (see `schema::document`).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
enum LeadRow {
    Lead(LeadInput),
    #[schema(value_type = Value)]
    Other(Value),
}

/// A lead and every attempt made for it, newest first.
#[derive(Serialize, ToSchema)]
struct LeadWithAttempts {
    #[serde(flatten)]
    lead: Lead,
    /// Newest first. Each campaign attempt says why it was dialled (`dial_reason`).
    attempts: Vec<AttemptView>,
    /// Why the scheduler did not dial the lead when it was due, newest first (at most 100).
    skips: Vec<crate::compliance::store::LeadSkip>,
}

#[derive(Serialize, ToSchema)]
struct OperatorStateAnswer {
    state: OperatorState,
}

#[derive(Serialize, ToSchema)]
struct Canceling {
    id: AttemptId,
    /// Always `canceling`: the hang-up is under way.
    #[schema(example = "canceling")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
struct Skipped {
    skipped: bool,
}

/// An operator's preview queue.
#[derive(Serialize, ToSchema)]
struct PreviewQueue {
    operator_id: OperatorId,
    state: OperatorState,
    /// The lead offered to the operator now, if any.
    offered: Option<OfferedLead>,
    /// The next due leads of the preview campaigns the operator works (at most 5).
    next: Vec<QueuedLead>,
}

#[derive(Serialize, Deserialize, ToSchema)]
struct OfferedLead {
    lead_id: LeadId,
    campaign_id: CampaignId,
    phone: String,
    name: Option<String>,
    external_id: Option<String>,
    #[schema(value_type = Object)]
    fields: Value,
    attempts_count: i32,
    /// Until then the lead is the operator's; then it is freed and the operator paused.
    reserved_until: DateTime<Utc>,
    /// When it is dialled by itself (the campaign's `preview.auto_dial_secs`), if ever.
    auto_dial_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, ToSchema)]
struct QueuedLead {
    lead_id: LeadId,
    campaign_id: CampaignId,
    phone: String,
    name: Option<String>,
    external_id: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
}

type ApiResult<T> = Result<T, ApiError>;

/// One audit-log entry for a management action done through the API.
async fn audit(
    s: &ApiState,
    actor: &Actor,
    action: &str,
    entity_type: &str,
    entity_id: impl std::fmt::Display,
    before: Option<Value>,
    after: Option<Value>,
) -> ApiResult<()> {
    crate::audit::record(
        &s.pool,
        &actor.label(),
        action,
        entity_type,
        Some(&entity_id.to_string()),
        before,
        after,
    )
    .await?;
    Ok(())
}

fn parse_id<T: FromStr>(raw: &str, what: &str) -> ApiResult<T> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("no {what} with id {raw:?}")))
}

fn json_body(body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request needs a JSON body".into()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> ApiResult<T> {
    crate::text::decode(value).map_err(|e| ApiError::Invalid(vec![e]))
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound("campaign not found".into()),
        StoreError::Invalid(fields) => ApiError::Invalid(fields),
        StoreError::Conflict(m) => ApiError::Conflict(m),
        StoreError::Db(e) => e.into(),
    }
}

fn operator_error(e: OperatorError) -> ApiError {
    match e {
        OperatorError::NotFound => ApiError::NotFound("operator not found".into()),
        OperatorError::Invalid(fields) => ApiError::Invalid(fields),
        OperatorError::Conflict(m) => ApiError::Conflict(m),
        OperatorError::Db(e) => e.into(),
    }
}

fn command_error(e: CommandError) -> ApiError {
    match e {
        CommandError::NotFound(m) => ApiError::NotFound(m),
        CommandError::Conflict(m) => ApiError::Conflict(m),
        CommandError::Failed(m) => ApiError::Unavailable(m),
    }
}

/// A page of a list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// Rows in the page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Rows to skip (default 0).
    #[param(minimum = 0)]
    offset: Option<i64>,
}

/// Leads in one state only (read from the same query string as the [`Page`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LeadFilter {
    /// Only leads in this state.
    #[param(value_type = Option<LeadState>)]
    state: Option<String>,
}

impl Page {
    fn bounds(&self) -> ApiResult<(i64, i64)> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::invalid("limit", "between 1 and 1000"));
        }
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::invalid("offset", "must not be negative"));
        }
        Ok((limit, offset))
    }
}

// ---- campaigns ------------------------------------------------------------------------------

#[utoipa::path(post, path = "/api/v1/campaigns", tag = "campaigns", operation_id = "create_campaign", request_body(content = CampaignSpec, description = "the campaign's settings; only name, trunk and caller_id are required", content_type = "application/json"), responses((status = 201, description = "created, in state draft", body = Campaign), (status = 409, description = "another campaign has this name", body = ErrorBody), (status = 422, description = "invalid settings; `fields` names each", body = ErrorBody)), security(("token" = ["campaigns:write"])))]
async fn create_campaign(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    let spec = CampaignSpec::from_json(json_body(&body)?).map_err(ApiError::Invalid)?;
    let mut campaign = campaigns::create(&s.pool, spec).await.map_err(store_error)?;
    audit(
        &s,
        &actor,
        "campaign.create",
        "campaign",
        campaign.id,
        None,
        Some(json!(campaign)),
    )
    .await?;
    campaign.warnings = Some(warnings_of(&s, &campaign.spec).await?);
    Ok((StatusCode::CREATED, Json(campaign)))
}

/// The campaign's warnings, counting the enabled operators who may take its calls.
async fn warnings_of(s: &ApiState, spec: &CampaignSpec) -> ApiResult<Vec<crate::campaigns::warnings::Warning>> {
    let takers = operators::list(&s.pool)
        .await?
        .iter()
        .filter(|o| o.enabled && spec.may_take(o.id, &o.skills))
        .count();
    Ok(crate::campaigns::warnings::of(spec, takers))
}

#[utoipa::path(get, path = "/api/v1/campaigns", tag = "campaigns", operation_id = "list_campaigns", responses((status = 200, description = "all campaigns, newest first", body = Vec<Campaign>)), security(("token" = ["campaigns:write"]), ("token" = ["reports:read"])))]
async fn list_campaigns(State(s): State<ApiState>) -> ApiResult<Json<Vec<Campaign>>> {
    Ok(Json(campaigns::list(&s.pool).await.map_err(store_error)?))
}

#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "campaigns", operation_id = "get_campaign", params(("id" = Uuid, Path, description = "campaign id")), responses((status = 200, description = "the campaign with its leads by state", body = Campaign), (status = 404, description = "no such campaign", body = ErrorBody)), security(("token" = ["campaigns:write"]), ("token" = ["reports:read"])))]
async fn get_campaign(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Campaign>> {
    let id: CampaignId = parse_id(&id, "campaign")?;
    let mut campaign = campaigns::get(&s.pool, id).await.map_err(store_error)?;
    campaign.leads = Some(leads::counts(&s.pool, id).await?);
    campaign.warnings = Some(warnings_of(&s, &campaign.spec).await?);
    Ok(Json(campaign))
}

#[utoipa::path(patch, path = "/api/v1/campaigns/{id}", tag = "campaigns", operation_id = "update_campaign", params(("id" = Uuid, Path, description = "campaign id")), request_body(content = inline(Object), description = "the settings to change (see CampaignChanges); the others keep their values", content_type = "application/json"), responses((status = 200, description = "updated", body = Campaign), (status = 404, description = "no such campaign", body = ErrorBody), (status = 409, description = "another campaign has this name", body = ErrorBody), (status = 422, description = "invalid settings", body = ErrorBody)), security(("token" = ["campaigns:write"])))]
async fn update_campaign(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Campaign>> {
    let id: CampaignId = parse_id(&id, "campaign")?;
    let before = campaigns::get(&s.pool, id).await.map_err(store_error)?;
    let campaign = campaigns::update(&s.pool, id, json_body(&body)?)
        .await
        .map_err(store_error)?;
    audit(
        &s,
        &actor,
        "campaign.update",
        "campaign",
        id,
        Some(json!(before)),
        Some(json!(campaign)),
    )
    .await?;
    let mut campaign = campaign;
    campaign.warnings = Some(warnings_of(&s, &campaign.spec).await?);
    Ok(Json(campaign))
}

#[utoipa::path(post, path = "/api/v1/campaigns/{id}/{action}", tag = "campaigns", operation_id = "campaign_action", params(("id" = Uuid, Path, description = "campaign id"), ("action" = CampaignAction, Path, description = "what to do")), responses((status = 200, description = "the campaign in its new state", body = Campaign), (status = 404, description = "no such campaign or action", body = ErrorBody), (status = 409, description = "not allowed from the current state", body = ErrorBody)), security(("token" = ["campaigns:write"])))]
async fn campaign_action(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Campaign>> {
    let id: CampaignId = parse_id(&id, "campaign")?;
    let audit_action = format!("campaign.{action}");
    let action = match action.as_str() {
        "start" => Action::Start,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "stop" => Action::Stop,
        other => {
            return Err(ApiError::NotFound(format!(
                "no campaign action {other:?}; use start, pause, resume or stop"
            )))
        }
    };
    let before = campaigns::get(&s.pool, id).await.map_err(store_error)?;
    let campaign = campaigns::act(&s.pool, id, action).await.map_err(store_error)?;
    audit(
        &s,
        &actor,
        &audit_action,
        "campaign",
        id,
        Some(json!({ "state": before.state })),
        Some(json!({ "state": campaign.state })),
    )
    .await?;
    s.engine.wake.notify_one();
    Ok(Json(campaign))
}

// ---- leads ------------------------------------------------------------------------------------

/// JSON (`application/json`: an array of leads, or `{"leads": [...]}`) or CSV (`text/csv`,
/// streamed). Answers with the import report; bad rows are listed, good rows imported.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/leads", tag = "leads", operation_id = "import_leads", params(("id" = Uuid, Path, description = "campaign id")), request_body(content((LeadUpload = "application/json"), (String = "text/csv")), description = "leads as JSON (a list, or {\"leads\": [...]}) or CSV with a header row naming a phone column (and name, timezone, external_id, priority; other columns become fields)"), responses((status = 200, description = "the import report: rows imported, duplicates, and each rejected row with its number and reason", body = ImportReport), (status = 404, description = "no such campaign", body = ErrorBody), (status = 503, description = "too many imports at once; try again", body = ErrorBody)), security(("token" = ["campaigns:write"])))]
async fn import_leads(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ImportReport>> {
    let id: CampaignId = parse_id(&id, "campaign")?;
    let campaign = campaigns::get(&s.pool, id).await.map_err(store_error)?;
    let region: Option<Region> = campaign.spec.region();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_csv = content_type.starts_with("text/csv");
    if !is_csv && !content_type.starts_with("application/json") {
        return Err(ApiError::BadRequest(
            "send leads as application/json (an array) or text/csv (with a phone column)".into(),
        ));
    }
    // The body arrives in full before a database connection is taken.
    let _slot = s.bodies.import_slot()?;
    let limits = &s.bodies.limits;
    let report = if is_csv {
        let file = body::spool(&headers, body, limits).await?;
        let _writer = s.bodies.writer_slot().await;
        import::import_csv(&s.pool, id, region, file).await
    } else {
        let bytes = body::read(&headers, body, limits.max_json_import_bytes, limits).await?;
        let rows = match json_body(&bytes)? {
            Value::Array(rows) => rows,
            Value::Object(mut o) => match o.remove("leads") {
                Some(Value::Array(rows)) if o.is_empty() => rows,
                Some(Value::Array(_)) => {
                    let extra = o.keys().next().cloned().unwrap_or_default();
                    return Err(ApiError::invalid(
                        &extra,
                        "unknown field; the object holds only `leads`",
                    ));
                }
                _ => return Err(ApiError::invalid("leads", "expected a list of leads")),
            },
            _ => return Err(ApiError::invalid("body", "expected a list of leads")),
        };
        let _writer = s.bodies.writer_slot().await;
        import::import_json(&s.pool, id, region, rows).await
    }
    .map_err(|e| match e {
        ImportError::BadFile(m) => ApiError::BadRequest(format!("{m}; nothing was imported")),
        ImportError::Db(e) => e.into(),
    })?;
    if report.imported > 0 {
        s.engine.wake.notify_one();
    }
    audit(&s, &actor, "leads.import", "campaign", id, None, Some(json!(report))).await?;
    Ok(Json(report))
}

#[utoipa::path(get, path = "/api/v1/campaigns/{id}/leads", tag = "leads", operation_id = "list_leads", params(("id" = Uuid, Path, description = "campaign id"), Page, LeadFilter), responses((status = 200, description = "leads, oldest first", body = Vec<Lead>), (status = 404, description = "no such campaign", body = ErrorBody)), security(("token" = ["campaigns:write"]), ("token" = ["reports:read"])))]
async fn list_leads(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
    Query(filter): Query<LeadFilter>,
) -> ApiResult<Json<Vec<Lead>>> {
    let id: CampaignId = parse_id(&id, "campaign")?;
    campaigns::get(&s.pool, id).await.map_err(store_error)?;
    let (limit, offset) = page.bounds()?;
    let state = match filter.state.as_deref() {
        None => None,
        Some(raw) => Some(LeadState::parse(raw).ok_or_else(|| {
            ApiError::invalid(
                "state",
                "one of pending, scheduled, dialing, done, exhausted, dnc, canceled",
            )
        })?),
    };
    Ok(Json(leads::list(&s.pool, id, state, limit, offset).await?))
}

#[utoipa::path(get, path = "/api/v1/leads/{id}", tag = "leads", operation_id = "get_lead", params(("id" = Uuid, Path, description = "lead id")), responses((status = 200, description = "the lead with its attempts (an operator's call card)", body = LeadWithAttempts), (status = 404, description = "no such lead", body = ErrorBody)), security(("token" = ["campaigns:write"]), ("token" = ["reports:read"]), ("token" = ["calls:write"])))]
async fn get_lead(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<LeadWithAttempts>> {
    let id: LeadId = parse_id(&id, "lead")?;
    let lead = leads::get(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("lead not found".into()))?;
    let attempts = attempts::list(&s.pool, None, Some(id), 1000, 0).await?;
    let skips = crate::compliance::store::skips_of(&s.pool, id, 100).await?;
    Ok(Json(LeadWithAttempts { lead, attempts, skips }))
}

/// Cancels the lead: it is not called again, and a call in progress is hung up.
#[utoipa::path(delete, path = "/api/v1/leads/{id}", tag = "leads", operation_id = "remove_lead", params(("id" = Uuid, Path, description = "lead id")), responses((status = 204, description = "canceled"), (status = 404, description = "no such lead", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the token lacks the scope", body = ErrorBody)), security(("token" = ["campaigns:write"])))]
async fn remove_lead(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: LeadId = parse_id(&id, "lead")?;
    match leads::remove(&s.pool, id).await? {
        None => Err(ApiError::NotFound("lead not found".into())),
        Some(live) => {
            if let Some(attempt) = live {
                s.engine.cancel(attempt).await;
            }
            audit(
                &s,
                &actor,
                "lead.remove",
                "lead",
                id,
                None,
                Some(json!({ "state": "canceled" })),
            )
            .await?;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

// ---- DNC --------------------------------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DncInput {
    #[schema(schema_with = schema::phone)]
    phone: String,
    /// Only for this campaign; absent: never called by any campaign.
    #[serde(default)]
    campaign_id: Option<CampaignId>,
    /// For a number written without its country code (default RU).
    #[serde(default)]
    #[schema(schema_with = schema::nullable_region)]
    region: Option<String>,
    #[serde(default)]
    #[schema(max_length = 500, format = "one-line", example = "asked not to be called")]
    reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/dnc", tag = "dnc", operation_id = "add_dnc", request_body(content = DncInput, description = "the number to block", content_type = "application/json"), responses((status = 201, description = "added (or already there)", body = DncEntry), (status = 404, description = "no such campaign", body = ErrorBody), (status = 422, description = "not a valid number", body = ErrorBody)), security(("token" = ["campaigns:write"])))]
async fn add_dnc(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<DncEntry>)> {
    let input: DncInput = typed(json_body(&body)?)?;
    let problems = crate::text::line_problems(&[
        ("phone", Some(&input.phone), 64),
        ("region", input.region.as_deref(), 8),
        ("reason", input.reason.as_deref(), 500),
    ]);
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let region = match input.region.as_deref() {
        Some(r) => Some(Region::parse(r).map_err(|e| ApiError::invalid("region", e.to_string()))?),
        None => None,
    };
    let phone = PhoneNumber::parse(&input.phone, region).map_err(|e| ApiError::invalid("phone", e.to_string()))?;
    if let Some(c) = input.campaign_id {
        campaigns::get(&s.pool, c).await.map_err(store_error)?;
    }
    let entry = dnc::add(&s.pool, &phone, input.campaign_id, input.reason.as_deref()).await?;
    audit(&s, &actor, "dnc.add", "dnc", phone.as_str(), None, Some(json!(entry))).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

#[utoipa::path(get, path = "/api/v1/dnc", tag = "dnc", operation_id = "list_dnc", params(Page), responses((status = 200, description = "DNC entries, newest first", body = Vec<DncEntry>)), security(("token" = ["campaigns:write"]), ("token" = ["reports:read"])))]
async fn list_dnc(State(s): State<ApiState>, Query(page): Query<Page>) -> ApiResult<Json<Vec<DncEntry>>> {
    let (limit, offset) = page.bounds()?;
    Ok(Json(dnc::list(&s.pool, limit, offset).await?))
}

#[utoipa::path(delete, path = "/api/v1/dnc/{id}", tag = "dnc", operation_id = "remove_dnc", params(("id" = i64, Path, description = "DNC entry id")), responses((status = 204, description = "removed"), (status = 404, description = "no such entry", body = ErrorBody)), security(("token" = ["campaigns:write"])))]
async fn remove_dnc(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: i64 = parse_id(&id, "DNC entry")?;
    if dnc::remove(&s.pool, id).await? {
        audit(&s, &actor, "dnc.remove", "dnc", id, Some(json!({ "id": id })), None).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("DNC entry not found".into()))
    }
}

// ---- operators --------------------------------------------------------------------------------

#[utoipa::path(post, path = "/api/v1/operators", tag = "operators", operation_id = "create_operator", request_body(content = OperatorInput, description = "name and endpoint are required", content_type = "application/json"), responses((status = 201, description = "created", body = Operator), (status = 409, description = "another operator uses this endpoint", body = ErrorBody), (status = 422, description = "invalid input", body = ErrorBody)), security(("token" = ["operators:write"])))]
async fn create_operator(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Operator>)> {
    let input: OperatorInput = typed(json_body(&body)?)?;
    let op = operators::create(&s.pool, input).await.map_err(operator_error)?;
    s.engine.operators_changed();
    audit(&s, &actor, "operator.create", "operator", op.id, None, Some(json!(op))).await?;
    Ok((StatusCode::CREATED, Json(op)))
}

#[utoipa::path(get, path = "/api/v1/operators", tag = "operators", operation_id = "list_operators", responses((status = 200, description = "operators with their session state", body = Vec<Operator>)), security(("token" = ["operators:write"]), ("token" = ["reports:read"])))]
async fn list_operators(State(s): State<ApiState>) -> ApiResult<Json<Vec<Operator>>> {
    Ok(Json(operators::list(&s.pool).await?))
}

#[utoipa::path(get, path = "/api/v1/operators/{id}", tag = "operators", operation_id = "get_operator", params(("id" = Uuid, Path, description = "operator id")), responses((status = 200, description = "the operator", body = Operator), (status = 404, description = "no such operator", body = ErrorBody)), security(("token" = ["operators:write"]), ("token" = ["reports:read"])))]
async fn get_operator(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Operator>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    Ok(Json(operators::get(&s.pool, id).await.map_err(operator_error)?))
}

#[utoipa::path(patch, path = "/api/v1/operators/{id}", tag = "operators", operation_id = "update_operator", params(("id" = Uuid, Path, description = "operator id")), request_body(content = OperatorInput, description = "the fields to change", content_type = "application/json"), responses((status = 200, description = "updated", body = Operator), (status = 404, description = "no such operator", body = ErrorBody), (status = 409, description = "another operator uses this endpoint", body = ErrorBody), (status = 422, description = "invalid input", body = ErrorBody)), security(("token" = ["operators:write"])))]
async fn update_operator(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Operator>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    let input: OperatorInput = typed(json_body(&body)?)?;
    let before = operators::get(&s.pool, id).await.map_err(operator_error)?;
    let after = operators::update(&s.pool, id, input).await.map_err(operator_error)?;
    s.engine.operators_changed();
    audit(
        &s,
        &actor,
        "operator.update",
        "operator",
        id,
        Some(json!(before)),
        Some(json!(after)),
    )
    .await?;
    Ok(Json(after))
}

#[utoipa::path(delete, path = "/api/v1/operators/{id}", tag = "operators", operation_id = "delete_operator", params(("id" = Uuid, Path, description = "operator id")), responses((status = 204, description = "deleted"), (status = 409, description = "logged in", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the token lacks the scope", body = ErrorBody)), security(("token" = ["operators:write"])))]
async fn delete_operator(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: OperatorId = parse_id(&id, "operator")?;
    let before = operators::get(&s.pool, id).await.map_err(operator_error)?;
    if operators::delete(&s.pool, id).await? {
        s.engine.operators_changed();
        audit(&s, &actor, "operator.delete", "operator", id, Some(json!(before)), None).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Conflict(
            "the operator is logged in; end the session first".into(),
        ))
    }
}

/// Starts a session by calling the operator's phone; answers 202 (the phone still rings).
#[utoipa::path(post, path = "/api/v1/operators/{id}/session", tag = "operators", operation_id = "start_session", params(("id" = Uuid, Path, description = "operator id")), responses((status = 202, description = "the phone is being rung"), (status = 409, description = "already logged in", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the token lacks the scope", body = ErrorBody)), security(("token" = ["operators:write"])))]
async fn start_session(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id: OperatorId = parse_id(&id, "operator")?;
    let op = operators::get(&s.pool, id).await.map_err(operator_error)?;
    let info = OperatorInfo {
        id: op.id,
        name: op.name,
        endpoint: op.endpoint,
        skills: op.skills,
        enabled: op.enabled,
    };
    s.engine.start_session(info).await.map_err(command_error)?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(delete, path = "/api/v1/operators/{id}/session", tag = "operators", operation_id = "end_session", params(("id" = Uuid, Path, description = "operator id")), responses((status = 202, description = "ending"), (status = 409, description = "not logged in", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the token lacks the scope", body = ErrorBody)), security(("token" = ["operators:write"])))]
async fn end_session(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id: OperatorId = parse_id(&id, "operator")?;
    s.engine.end_session(id).await.map_err(command_error)?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(post, path = "/api/v1/operators/{id}/pause", tag = "operators", operation_id = "pause_operator", params(("id" = Uuid, Path, description = "operator id")), responses((status = 200, description = "the new state", body = OperatorStateAnswer), (status = 404, description = "no such operator", body = ErrorBody), (status = 409, description = "not logged in", body = ErrorBody)), security(("token" = ["operators:write"])))]
async fn pause_operator(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<OperatorStateAnswer>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    let state = s.engine.set_paused(id, true).await.map_err(command_error)?;
    Ok(Json(OperatorStateAnswer { state }))
}

#[utoipa::path(post, path = "/api/v1/operators/{id}/ready", tag = "operators", operation_id = "ready_operator", params(("id" = Uuid, Path, description = "operator id")), responses((status = 200, description = "the new state", body = OperatorStateAnswer), (status = 404, description = "no such operator", body = ErrorBody), (status = 409, description = "not logged in", body = ErrorBody)), security(("token" = ["operators:write"])))]
async fn ready_operator(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<OperatorStateAnswer>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    let state = s.engine.set_paused(id, false).await.map_err(command_error)?;
    Ok(Json(OperatorStateAnswer { state }))
}

// ---- attempts ---------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/attempts/{id}", tag = "attempts", operation_id = "get_attempt", params(("id" = Uuid, Path, description = "attempt id")), responses((status = 200, description = "the attempt with its timeline", body = AttemptView), (status = 404, description = "no such attempt", body = ErrorBody)), security(("token" = ["calls:write"]), ("token" = ["campaigns:write"]), ("token" = ["reports:read"])))]
async fn get_attempt(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<AttemptView>> {
    let id: AttemptId = parse_id(&id, "attempt")?;
    let attempt = attempts::get(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("attempt not found".into()))?;
    Ok(Json(attempt))
}

#[utoipa::path(get, path = "/api/v1/attempts/{id}/recording", tag = "attempts", operation_id = "get_recording", params(("id" = Uuid, Path, description = "attempt id")), responses((status = 200, description = "the call's audio as Asterisk stored it (WAV)", content_type = "audio/wav", body = String), (status = 404, description = "no such attempt, or it has no recording (recording off, never bridged, or removed from Asterisk)", body = ErrorBody), (status = 503, description = "Asterisk did not hand the recording over", body = ErrorBody)), security(("token" = ["calls:write"]), ("token" = ["campaigns:write"]), ("token" = ["reports:read"])))]
async fn get_recording(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<axum::response::Response> {
    let id: AttemptId = parse_id(&id, "attempt")?;
    let attempt = attempts::get(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("attempt not found".into()))?;
    let Some(name) = attempt.recording_name else {
        return Err(ApiError::NotFound(
            "this call has no recording: the campaign does not record, or the call never reached an operator".into(),
        ));
    };
    let audio = match s.ari.stored_recording_file(&name).await {
        Ok(audio) => audio,
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
            return Err(ApiError::NotFound(
                "the recording is not stored in Asterisk (it was removed, or is still being written)".into(),
            ))
        }
        Err(e) => {
            tracing::warn!(attempt.id = %id, error = %e, "recording could not be fetched from Asterisk");
            return Err(ApiError::Unavailable(
                "Asterisk did not hand the recording over; try again".into(),
            ));
        }
    };
    let content_type = audio
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| header::HeaderValue::from_static("audio/wav"));
    let mut response = axum::response::Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"attempt-{id}.wav\""),
        )
        .header(header::CACHE_CONTROL, "private, max-age=3600");
    if let Some(length) = audio.content_length() {
        response = response.header(header::CONTENT_LENGTH, length);
    }
    response
        .body(Body::from_stream(audio.bytes_stream()))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// The token a request was made with.
#[derive(Serialize, ToSchema)]
struct WhoAmI {
    /// The token's name.
    #[schema(example = "console-supervisor")]
    name: String,
    /// What it may do; `admin` may do everything.
    #[schema(example = json!(["campaigns:write", "reports:read"]))]
    scopes: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "tokens", operation_id = "whoami", responses((status = 200, description = "the token's name and scopes (the console shows what they allow)", body = WhoAmI)), security(("token" = ["calls:write"]), ("token" = ["campaigns:write"]), ("token" = ["operators:write"]), ("token" = ["reports:read"])))]
async fn whoami(Extension(actor): Extension<Actor>) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: actor.name,
        scopes: actor.scopes,
    })
}

#[utoipa::path(get, path = "/api/v1/campaigns/{id}/attempts", tag = "attempts", operation_id = "list_campaign_attempts", params(("id" = Uuid, Path, description = "campaign id"), Page), responses((status = 200, description = "attempts, newest first", body = Vec<AttemptView>), (status = 404, description = "no such campaign", body = ErrorBody)), security(("token" = ["calls:write"]), ("token" = ["campaigns:write"]), ("token" = ["reports:read"])))]
async fn list_campaign_attempts(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Vec<AttemptView>>> {
    let id: CampaignId = parse_id(&id, "campaign")?;
    campaigns::get(&s.pool, id).await.map_err(store_error)?;
    let (limit, offset) = page.bounds()?;
    Ok(Json(attempts::list(&s.pool, Some(id), None, limit, offset).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DispositionInput {
    result: AttemptResult,
    #[serde(default)]
    #[schema(max_length = 4000, format = "free-text")]
    notes: Option<String>,
    /// With `callback-needed` only: when to call back (in the future); absent: after the
    /// campaign's retry delay.
    #[serde(default)]
    callback_at: Option<DateTime<Utc>>,
    /// With `callback-needed`: the callback goes to the same operator.
    #[serde(default)]
    same_operator: bool,
}

#[utoipa::path(post, path = "/api/v1/attempts/{id}/disposition", tag = "attempts", operation_id = "set_disposition", params(("id" = Uuid, Path, description = "attempt id")), request_body(content = DispositionInput, description = "result, notes, callback", content_type = "application/json"), responses((status = 200, description = "the attempt", body = AttemptView), (status = 404, description = "no such attempt", body = ErrorBody), (status = 409, description = "the call is not in wrap-up, or has its result", body = ErrorBody), (status = 422, description = "invalid input", body = ErrorBody)), security(("token" = ["calls:write"])))]
async fn set_disposition(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<AttemptView>> {
    let id: AttemptId = parse_id(&id, "attempt")?;
    let input: DispositionInput = typed(json_body(&body)?)?;
    if input.result == AttemptResult::CallbackNeeded {
        match input.callback_at {
            Some(at) if at <= Utc::now() => return Err(ApiError::invalid("callback_at", "must be in the future")),
            _ => {}
        }
    } else if input.callback_at.is_some() {
        return Err(ApiError::invalid("callback_at", "only with result callback-needed"));
    }
    if let Some(m) = input.notes.as_deref().and_then(|n| crate::text::note_problem(n, 4000)) {
        return Err(ApiError::invalid("notes", m));
    }
    let d = Disposition {
        result: input.result,
        notes: input.notes,
        callback_at: input.callback_at,
        same_operator: input.same_operator,
        source: "api",
        why: None,
    };
    attempts::set_disposition(&s.pool, id, &d).await.map_err(|e| match e {
        attempts::DispositionError::NotFound => ApiError::NotFound("attempt not found".into()),
        attempts::DispositionError::Conflict(m) => ApiError::Conflict(m),
        attempts::DispositionError::Db(e) => e.into(),
    })?;
    s.engine.disposition_done(id);
    let attempt = attempts::get(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("attempt not found".into()))?;
    Ok(Json(attempt))
}

// ---- single calls -----------------------------------------------------------------------------

/// Click-to-call: dials a number or a lead for an operator. 201 with the attempt once it
/// exists; refusals change nothing.
#[utoipa::path(post, path = "/api/v1/calls", tag = "calls", operation_id = "create_call", request_body(content = CallRequest, description = "the call to place: a phone or a lead, for an operator", content_type = "application/json"), responses((status = 201, description = "the attempt", body = AttemptView), (status = 404, description = "unknown operator, lead or campaign", body = ErrorBody), (status = 409, description = "operator busy or not ready, number in another call or on the DNC list, or the campaign's rules forbid the call now (outside the hours in the lead's zone, a contact limit, a quiet period)", body = ErrorBody), (status = 422, description = "invalid input", body = ErrorBody)), security(("token" = ["calls:write"])))]
async fn create_call(
    State(s): State<ApiState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<AttemptView>)> {
    let view = s.placer.place(parse_call_request(&body)?).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

impl From<PlaceError> for ApiError {
    fn from(e: PlaceError) -> Self {
        match e {
            PlaceError::BadRequest(m) => ApiError::BadRequest(m),
            PlaceError::Invalid(fields) => ApiError::Invalid(fields),
            PlaceError::NotFound(m) => ApiError::NotFound(m),
            PlaceError::Conflict(m) => ApiError::Conflict(m),
            PlaceError::Unavailable(m) => ApiError::Unavailable(m),
            PlaceError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// Stops a live attempt: the customer leg (and a ringing operator leg) is hung up, status
/// `canceled`.
#[utoipa::path(post, path = "/api/v1/attempts/{id}/cancel", tag = "attempts", operation_id = "cancel_attempt", params(("id" = Uuid, Path, description = "attempt id")), responses((status = 202, description = "canceling", body = Canceling), (status = 404, description = "no such attempt", body = ErrorBody), (status = 409, description = "not live", body = ErrorBody)), security(("token" = ["calls:write"])))]
async fn cancel_attempt(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<Canceling>)> {
    let id: AttemptId = parse_id(&id, "attempt")?;
    let attempt = attempts::get(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("attempt not found".into()))?;
    if !s.engine.cancel(id).await {
        return Err(ApiError::Conflict(format!(
            "the attempt is {}; only live calls can be canceled",
            attempt.status
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Canceling {
            id,
            status: "canceling",
        }),
    ))
}

// ---- preview queue ----------------------------------------------------------------------------

/// The operator's preview queue: the lead offered now (if any), then the next few due leads of
/// the preview campaigns they work.
#[utoipa::path(get, path = "/api/v1/operators/{id}/queue", tag = "preview", operation_id = "operator_queue", params(("id" = Uuid, Path, description = "operator id")), responses((status = 200, description = "the offered lead and the next due leads", body = PreviewQueue), (status = 404, description = "no such operator", body = ErrorBody)), security(("token" = ["operators:write"]), ("token" = ["calls:write"]), ("token" = ["reports:read"])))]
async fn operator_queue(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<PreviewQueue>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    let op = operators::get(&s.pool, id).await.map_err(operator_error)?;
    let offered: Option<Value> = sqlx::query_scalar(
        "SELECT jsonb_build_object('lead_id', l.id, 'campaign_id', l.campaign_id, 'phone', l.phone_e164,
                    'name', l.name, 'external_id', l.external_id, 'fields', l.fields,
                    'attempts_count', l.attempts_count, 'reserved_until', l.reserved_until,
                    'auto_dial_at', CASE WHEN (c.settings->'preview'->>'auto_dial_secs')::int > 0
                        THEN l.reserved_until - make_interval(secs => (c.settings->'preview'->>'reservation_secs')::int)
                             + make_interval(secs => (c.settings->'preview'->>'auto_dial_secs')::int) END)
         FROM leads l JOIN campaigns c ON c.id = l.campaign_id
         WHERE l.reserved_by = $1 AND l.reserved_until > now()",
    )
    .bind(id)
    .fetch_optional(&s.pool)
    .await?;
    let next: Vec<Value> = sqlx::query_scalar(
        "SELECT jsonb_build_object('lead_id', l.id, 'campaign_id', l.campaign_id, 'phone', l.phone_e164,
                    'name', l.name, 'external_id', l.external_id, 'next_attempt_at', l.next_attempt_at)
         FROM leads l JOIN campaigns c ON c.id = l.campaign_id
         WHERE c.state = 'running' AND c.settings->'pacing'->>'mode' = 'preview'
           AND (jsonb_array_length(c.settings->'operators') = 0 OR c.settings->'operators' ? $1::text)
           AND l.state IN ('pending', 'scheduled') AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
           AND (l.reserved_until IS NULL OR l.reserved_until <= now())
         ORDER BY l.priority DESC, l.next_attempt_at NULLS FIRST, l.created_at, l.id
         LIMIT 5",
    )
    .bind(id.to_string())
    .fetch_all(&s.pool)
    .await?;
    // The SQL builds the rows; decoding them here keeps them to the documented shape.
    fn decode<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
        serde_json::from_value(v).map_err(|e| ApiError::Internal(e.into()))
    }
    Ok(Json(PreviewQueue {
        operator_id: id,
        state: op.state,
        offered: offered.map(decode).transpose()?,
        next: next.into_iter().map(decode).collect::<Result<_, _>>()?,
    }))
}

#[utoipa::path(post, path = "/api/v1/operators/{id}/queue/dial", tag = "preview", operation_id = "dial_offered", params(("id" = Uuid, Path, description = "operator id")), responses((status = 201, description = "the attempt", body = AttemptView), (status = 404, description = "no such operator", body = ErrorBody), (status = 409, description = "nothing offered", body = ErrorBody)), security(("token" = ["calls:write"]), ("token" = ["operators:write"])))]
async fn dial_offered(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<AttemptView>)> {
    let id: OperatorId = parse_id(&id, "operator")?;
    let attempt = s
        .engine
        .offer_action(id, OfferAction::Dial)
        .await
        .map_err(command_error)?;
    let view = match attempt {
        Some(a) => attempts::get(&s.pool, a).await?,
        None => None,
    }
    .ok_or_else(|| ApiError::Conflict("the offer ended before it was dialled".into()))?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SkipInput {
    /// Why the operator skips the lead.
    #[schema(
        min_length = 1,
        max_length = 500,
        format = "not-blank",
        example = "customer asked for email"
    )]
    reason: String,
}

#[utoipa::path(post, path = "/api/v1/operators/{id}/queue/skip", tag = "preview", operation_id = "skip_offered", params(("id" = Uuid, Path, description = "operator id")), request_body(content = SkipInput, description = "why", content_type = "application/json"), responses((status = 200, description = "skipped", body = Skipped), (status = 404, description = "no such operator", body = ErrorBody), (status = 409, description = "nothing offered", body = ErrorBody), (status = 422, description = "no reason given", body = ErrorBody)), security(("token" = ["calls:write"]), ("token" = ["operators:write"])))]
async fn skip_offered(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Skipped>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    let input: SkipInput = typed(json_body(&body)?)?;
    if input.reason.trim().is_empty() {
        return Err(ApiError::invalid("reason", "must not be empty"));
    }
    if let Some(m) = crate::text::line_problem(&input.reason, 500) {
        return Err(ApiError::invalid("reason", m));
    }
    s.engine
        .offer_action(id, OfferAction::Skip(input.reason))
        .await
        .map_err(command_error)?;
    Ok(Json(Skipped { skipped: true }))
}
