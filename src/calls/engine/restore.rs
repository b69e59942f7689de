//! Reading what the core rebuilds from: the database (the live attempts and sessions this
//! instance held, the operators) and Asterisk (its channels and bridges).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;

use super::core::{AsteriskView, Call, CallKind, ChannelFacts, OperatorInfo, Restored, RestoredLeg, RestoredSession};
use crate::ari::{AriClient, AriError};
use crate::calls::store;
use crate::calls::AttemptStatus;
use crate::campaigns::CampaignSpec;
use crate::ids::{BridgeId, ChannelId};
use crate::operators::{store as operators, OperatorState};

/// The live attempts and sessions `instance` held, as the database has them. `single` is the
/// settings of single calls outside campaigns.
pub async fn from_database(pool: &PgPool, instance: &str, single: &CampaignSpec) -> Result<Restored, sqlx::Error> {
    let single = Arc::new(single.clone());
    let mut specs: HashMap<String, Arc<CampaignSpec>> = HashMap::new();
    let mut spec_of = |settings: Option<serde_json::Value>| -> Arc<CampaignSpec> {
        match settings {
            Some(v) => specs
                .entry(v.to_string())
                .or_insert_with(|| Arc::new(serde_json::from_value(v).unwrap_or_default()))
                .clone(),
            None => single.clone(),
        }
    };
    let mut legs = Vec::new();
    for a in store::live_for_instance(pool, instance).await? {
        let kind = match a.kind.as_str() {
            "preview" => CallKind::Preview,
            "click-to-call" => CallKind::Single,
            _ => CallKind::Campaign,
        };
        let spec = spec_of(a.settings);
        let call = Call {
            attempt: a.id,
            lead: a.lead_id,
            campaign: a.campaign_id,
            phone: a.phone_e164,
            spec,
            kind,
            preferred_operator: a.callback_operator_id.filter(|_| kind == CallKind::Campaign),
        };
        legs.push(RestoredLeg {
            call,
            status: AttemptStatus::parse(&a.status).unwrap_or(AttemptStatus::Init),
            operator: a.operator_id,
            dialed: a.dialed_at.is_some(),
            answered_at: a.answered_at,
            bridge: a.bridge_id.map(BridgeId::new),
            amd_status: a.amd_status,
        });
    }
    let mut sessions = Vec::new();
    for s in operators::sessions_for_instance(pool, instance).await? {
        sessions.push(RestoredSession {
            info: OperatorInfo {
                id: s.id,
                name: s.name,
                endpoint: s.endpoint,
                skills: s.skills,
                enabled: s.enabled,
            },
            channel: ChannelId::new(s.session_channel_id),
            bridge: BridgeId::new(s.session_bridge_id),
            state: OperatorState::parse(&s.state).unwrap_or(OperatorState::Ready),
            since: s.state_changed_at,
            attempt: s.attempt_id,
            spec: s.settings.map(|v| spec_of(Some(v))),
        });
    }
    Ok(Restored { legs, sessions })
}

pub async fn directory(pool: &PgPool) -> Result<Vec<OperatorInfo>, sqlx::Error> {
    Ok(operators::list(pool)
        .await?
        .into_iter()
        .map(|o| OperatorInfo {
            id: o.id,
            name: o.name,
            endpoint: o.endpoint,
            skills: o.skills,
            enabled: o.enabled,
        })
        .collect())
}

/// Asterisk's channels and bridges, and which channels are in our application.
pub async fn from_asterisk(ari: &AriClient) -> Result<AsteriskView, AriError> {
    let taken_at = Instant::now();
    let app = ari.application().await?;
    let channels = ari.list_channels().await?;
    let bridges = ari.list_bridges().await?;
    let in_app: std::collections::HashSet<&str> = app.channel_ids.iter().map(String::as_str).collect();
    Ok(AsteriskView {
        taken_at: Some(taken_at),
        channels: channels
            .into_iter()
            .map(|c| {
                let facts = ChannelFacts {
                    state: c.state,
                    in_app: in_app.contains(c.id.as_str()),
                    name: c.name,
                    app_data: c.dialplan.app_data,
                };
                (ChannelId::new(c.id), facts)
            })
            .collect(),
        bridges: bridges
            .into_iter()
            .map(|b| {
                (
                    BridgeId::new(b.id),
                    b.channels.into_iter().map(ChannelId::new).collect(),
                )
            })
            .collect(),
    })
}
