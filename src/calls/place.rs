//! Placing a single call (click-to-call) from a request: the REST route `POST /api/v1/calls`
//! and the `outbound.call.request` queue take the same body and go through this one function,
//! so both accept and refuse exactly the same requests.

use std::sync::Arc;

use chrono::Utc;

use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::engine::{CommandError, EngineHandle, OperatorInfo, SingleCall};
use super::store::{self as attempts, AttemptView};
use crate::campaigns::store::{self as campaigns, StoreError};
use crate::campaigns::{CampaignSpec, FieldError};
use crate::compliance::{self, Effective};
use crate::config::DialerSettings;
use crate::ids::{AttemptId, CampaignId, LeadId, OperatorId};
use crate::leads::{dnc, store as leads};
use crate::operators::store::{self as operators, OperatorError};
use crate::phone::{PhoneNumber, Region};

/// A call request body, as REST and the request queue take it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The operator whose phone takes the call (logged in, free).
    pub operator_id: OperatorId,
    /// The number to call; give this or `lead_id`, not both.
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::nullable_phone)]
    pub phone: Option<String>,
    /// The lead to call; give this or `phone`, not both.
    #[serde(default)]
    pub lead_id: Option<LeadId>,
    /// Named: the campaign's trunk, caller ID and retry rules apply.
    #[serde(default)]
    pub campaign_id: Option<CampaignId>,
    /// The number the customer sees, instead of the campaign's (or the configured one).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, format = "not-blank")]
    pub caller_id: Option<String>,
    /// For a number written without its country code; default the campaign's, else the
    /// configured one.
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::nullable_region)]
    pub region: Option<String>,
    /// The CRM's id for this call, echoed in every event.
    #[serde(default)]
    #[schema(max_length = 200, format = "one-line")]
    pub correlation_id: Option<String>,
    /// The CRM's own data, echoed in every event.
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::nullable_free_object)]
    pub crm: Option<Value>,
}

/// Why a call request was refused. `code` is the machine-readable reason (the API's error
/// codes; the request consumer puts it in `x-obzvon-error`).
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PlaceError {
    fn from(e: sqlx::Error) -> Self {
        PlaceError::Internal(e.into())
    }
}

impl From<CommandError> for PlaceError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound(m) => PlaceError::NotFound(m),
            CommandError::Conflict(m) => PlaceError::Conflict(m),
            CommandError::Failed(m) => PlaceError::Unavailable(m),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> PlaceError {
    PlaceError::Invalid(vec![FieldError::new(field, message)])
}

/// Where single calls are placed from.
#[derive(Clone)]
pub struct Placer {
    pub pool: PgPool,
    pub engine: EngineHandle,
    /// Trunk, caller ID, timeout and region for single calls that name no campaign.
    pub defaults: DialerSettings,
}

/// The settings of single calls outside campaigns: the `[dialer]` section over the defaults.
pub fn single_spec(d: &DialerSettings) -> CampaignSpec {
    CampaignSpec {
        trunk: d.trunk.clone(),
        caller_id: d.caller_id.clone(),
        dial_timeout_secs: d.dial_timeout_secs,
        default_region: d.default_region.clone(),
        ..CampaignSpec::default()
    }
}

/// Parses a request body field by field, naming the field that is wrong.
pub fn parse_call_request(body: &[u8]) -> Result<CallRequest, PlaceError> {
    if body.is_empty() {
        return Err(PlaceError::BadRequest("the request needs a JSON body".into()));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PlaceError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let request: CallRequest = crate::text::decode(value).map_err(|e| PlaceError::Invalid(vec![e]))?;
    request.check()?;
    Ok(request)
}

impl CallRequest {
    /// Text the request carries is bounded and printable; what `crm` holds must fit a jsonb.
    fn check(&self) -> Result<(), PlaceError> {
        use crate::text::{json_problem, line_problems};
        let mut errors = line_problems(&[
            ("phone", self.phone.as_deref(), 64),
            ("caller_id", self.caller_id.as_deref(), 64),
            ("region", self.region.as_deref(), 8),
            ("correlation_id", self.correlation_id.as_deref(), 200),
        ]);
        if let Some(m) = self.crm.as_ref().and_then(|crm| json_problem(crm, MAX_CRM_BYTES)) {
            errors.push(FieldError::new("crm", m));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PlaceError::Invalid(errors))
        }
    }
}

/// The CRM's own data a single call carries back in its events.
const MAX_CRM_BYTES: usize = 16 * 1024;

impl Placer {
    /// Places a single call for an operator; the answer is the attempt.
    pub async fn place(&self, input: CallRequest) -> Result<AttemptView, PlaceError> {
        let campaign = match input.campaign_id {
            Some(id) => Some(campaigns::get(&self.pool, id).await.map_err(|e| match e {
                StoreError::NotFound => PlaceError::NotFound("no such campaign".into()),
                StoreError::Db(e) => e.into(),
                other => PlaceError::Internal(anyhow::anyhow!("{other}")),
            })?),
            None => None,
        };
        let (raw_phone, lead_zone) = match (&input.phone, input.lead_id) {
            (Some(phone), None) => (phone.clone(), None),
            (None, Some(lead)) => {
                let lead = leads::get(&self.pool, lead)
                    .await?
                    .ok_or_else(|| PlaceError::NotFound("no such lead".into()))?;
                if campaign.as_ref().is_some_and(|c| c.id != lead.campaign_id) {
                    return Err(invalid("lead_id", "the lead belongs to another campaign"));
                }
                (lead.phone, lead.timezone)
            }
            _ => return Err(invalid("phone", "give either phone or lead_id")),
        };
        let region_code = input
            .region
            .clone()
            .or_else(|| campaign.as_ref().map(|c| c.spec.default_region.clone()))
            .unwrap_or_else(|| self.defaults.default_region.clone());
        let region = Region::parse(&region_code).map_err(|e| invalid("region", e.to_string()))?;
        let phone = PhoneNumber::parse(&raw_phone, Some(region)).map_err(|e| invalid("phone", e.to_string()))?;
        if dnc::is_listed(&self.pool, &phone, input.campaign_id).await? {
            return Err(PlaceError::Conflict("the number is on the do-not-call list".into()));
        }
        if let Some(c) = &campaign {
            // A call for a campaign keeps its rules: hours in the lead's zone, contact limits.
            let rules = Effective::of(&c.spec);
            let now = Utc::now();
            let zone = lead_zone.as_deref().and_then(|t| t.parse().ok()).unwrap_or(c.spec.tz());
            rules
                .check_hours(now, zone)
                .map_err(|skip| PlaceError::Conflict(format!("not now: {}", skip.reason)))?;
            if rules.needs_history() {
                let history = compliance::store::history_of(&self.pool, phone.as_str(), now).await?;
                rules
                    .check_number(&history, now)
                    .map_err(|skip| PlaceError::Conflict(format!("not now: {}", skip.reason)))?;
            }
        }
        let mut spec = match &campaign {
            Some(c) => c.spec.clone(),
            None => single_spec(&self.defaults),
        };
        match input.caller_id {
            Some(c) if c.trim().is_empty() => return Err(invalid("caller_id", "must not be empty")),
            Some(c) => spec.caller_id = c,
            None => {}
        }
        let operator = operators::get(&self.pool, input.operator_id)
            .await
            .map_err(|e| match e {
                OperatorError::NotFound => PlaceError::NotFound("operator not found".into()),
                OperatorError::Db(e) => e.into(),
                other => PlaceError::Internal(anyhow::anyhow!("{other}")),
            })?;
        let attempt = AttemptId::new();
        let call = SingleCall {
            attempt,
            operator: OperatorInfo {
                id: operator.id,
                name: operator.name,
                endpoint: operator.endpoint,
                skills: operator.skills,
                enabled: operator.enabled,
            },
            phone: phone.as_str().to_owned(),
            lead: input.lead_id,
            campaign: campaign.map(|c| c.id),
            spec: Arc::new(spec),
            correlation_id: input.correlation_id,
            crm: input.crm.unwrap_or_else(|| json!({})),
        };
        self.engine.single_call(call).await?;
        attempts::get(&self.pool, attempt)
            .await?
            .ok_or_else(|| PlaceError::Internal(anyhow::anyhow!("attempt {attempt} vanished after it was placed")))
    }
}

impl PlaceError {
    /// The machine-readable reason, as the REST API names it.
    pub fn code(&self) -> &'static str {
        match self {
            PlaceError::BadRequest(_) => "bad_request",
            PlaceError::Invalid(_) => "invalid",
            PlaceError::NotFound(_) => "not_found",
            PlaceError::Conflict(_) => "conflict",
            PlaceError::Unavailable(_) => "unavailable",
            PlaceError::Internal(_) => "internal",
        }
    }

    /// What the requester is told; an internal error is logged here and not shown.
    pub fn message(&self) -> String {
        match self {
            PlaceError::Invalid(fields) => FieldError::join(fields),
            PlaceError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "call request failed");
                "internal error; see the obzvon log".to_owned()
            }
            other => other.to_string(),
        }
    }
}
