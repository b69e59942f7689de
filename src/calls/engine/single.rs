//! Single calls (click-to-call from a lead or task card). With a live session the customer is
//! dialled straight into the operator's bridge, so the operator hears the ringing (a ring tone
//! on the bridge, or the trunk's early media). Without one the operator's phone is rung first
//! and the customer is dialled once the operator answers, into a bridge of the call's own.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::{CommandError, Engine, Session};
use crate::ari::models::ChannelState;
use crate::ari::{BridgeType, CreateChannel, Event, EventKind, HangupReason, Originate};
use crate::calls::store::{self, Change, CreateError, NewSingle};
use crate::calls::{AttemptResult, AttemptStatus};
use crate::campaigns::CampaignSpec;
use crate::ids::{AttemptId, CampaignId, LeadId, OperatorId};
use crate::operators::store as operators;
use crate::operators::OperatorState;

/// A single call as the API hands it to the engine, checked (number valid, not on DNC).
#[derive(Debug, Clone)]
pub struct SingleCall {
    pub attempt: AttemptId,
    pub operator: OperatorId,
    pub phone: String,
    pub lead: Option<LeadId>,
    /// A named campaign: its retry rules apply to the lead.
    pub campaign: Option<(CampaignId, Arc<CampaignSpec>)>,
    pub trunk: String,
    pub caller_id: String,
    pub dial_timeout_secs: u32,
    pub correlation_id: Option<String>,
    pub crm: serde_json::Value,
}

/// The single-call part of a live call.
#[derive(Debug, Clone)]
pub(super) struct Single {
    pub(super) operator: OperatorId,
    /// The operator's session bridge, or the call's own once the operator answered.
    pub(super) bridge: Option<String>,
    /// Without a session: the leg that rings the operator's phone first.
    pub(super) operator_channel: Option<String>,
    pub(super) with_session: bool,
    pub(super) customer_dialled: bool,
    pub(super) trunk: String,
    pub(super) caller_id: String,
    pub(super) dial_timeout_secs: u32,
}

impl Engine {
    pub(super) async fn start_single(&mut self, req: SingleCall) -> Result<(), CommandError> {
        let with_session = match self.sessions.get(&req.operator) {
            Some(Session {
                state: OperatorState::Ready,
                ..
            }) => true,
            Some(s) => {
                return Err(CommandError::Conflict(format!(
                    "the operator is {}: a single call needs them ready or logged out",
                    s.state
                )))
            }
            None => {
                let op = operators::get(&self.pool, req.operator).await.map_err(|e| match e {
                    operators::OperatorError::NotFound => CommandError::NotFound("operator not found".into()),
                    other => CommandError::Failed(other.to_string()),
                })?;
                if !op.enabled {
                    return Err(CommandError::Conflict("the operator is disabled".into()));
                }
                false
            }
        };
        let busy = self
            .calls
            .values()
            .any(|c| c.single.as_ref().is_some_and(|s| s.operator == req.operator));
        if busy {
            return Err(CommandError::Conflict("the operator is already on a call".into()));
        }
        let created = store::create_single(
            &self.pool,
            &NewSingle {
                attempt: req.attempt,
                operator: req.operator,
                phone: &req.phone,
                caller_id: &req.caller_id,
                lead: req.lead,
                campaign: req.campaign.as_ref().map(|(c, _)| *c),
                correlation_id: req.correlation_id.as_deref(),
                crm: &req.crm,
                instance: &self.instance,
            },
        )
        .await;
        match created {
            Ok(()) => {}
            Err(CreateError::NumberBusy) => {
                return Err(CommandError::Conflict("the number is already in a live call".into()))
            }
            Err(CreateError::Db(e)) => return Err(CommandError::Failed(e.to_string())),
        }
        let channel = req.attempt.channel_id();
        let spec = req.campaign.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
        let mut single = Single {
            operator: req.operator,
            bridge: None,
            operator_channel: None,
            with_session,
            customer_dialled: false,
            trunk: req.trunk.clone(),
            caller_id: req.caller_id.clone(),
            dial_timeout_secs: req.dial_timeout_secs,
        };
        if with_session {
            let session = self.sessions.get_mut(&req.operator).expect("checked above");
            session.state = OperatorState::Reserved;
            session.attempt = Some(req.attempt);
            session.disposition_keys = Some(spec.clone());
            single.bridge = Some(session.bridge.clone());
        } else {
            single.operator_channel = Some(format!("single-op-{}", req.attempt));
        }
        let attempt_number: u32 = if req.lead.is_some() { 1 } else { 0 };
        self.calls.insert(
            channel.clone(),
            super::Call {
                claimed: super::Claimed {
                    attempt: req.attempt,
                    lead: req.lead.filter(|_| req.campaign.is_some()),
                    campaign: req.campaign.as_ref().map(|(c, _)| *c),
                    phone: req.phone.clone(),
                    spec,
                    attempt_number,
                    preferred_operator: None,
                },
                status: AttemptStatus::Init,
                dialed: Instant::now(),
                answered: None,
                operator: None,
                abandon_at: None,
                abandoning: false,
                hangup_at: None,
                canceled: false,
                recording: None,
                single: Some(single.clone()),
            },
        );
        if with_session {
            self.dial_customer(&channel).await;
            return Ok(());
        }
        // No session: ring the operator's phone first.
        let endpoint = operators::get(&self.pool, req.operator)
            .await
            .map(|o| o.endpoint)
            .map_err(|e| CommandError::Failed(e.to_string()))?;
        let op_channel = single.operator_channel.clone().expect("set above");
        self.single_operator_legs.insert(op_channel.clone(), channel.clone());
        let request = Originate {
            endpoint,
            channel_id: Some(op_channel),
            app_args: vec!["single-operator".to_owned(), req.attempt.to_string()],
            caller_id: Some(format!("\"obzvon\" <{}>", req.phone)),
            timeout_secs: Some(30),
            ..Default::default()
        };
        if let Err(e) = self.ari.originate(&request).await {
            tracing::warn!(attempt.id = %req.attempt, error = %e, "could not ring the operator's phone");
            self.end_unstarted(&channel, "the operator's phone could not be rung")
                .await;
        }
        Ok(())
    }

    /// Creates the customer leg; it is bridged and dialled when its StasisStart arrives
    /// (ARI refuses to bridge a channel before it is in Stasis).
    async fn dial_customer(&mut self, channel: &str) {
        let Some(call) = self.calls.get_mut(channel) else {
            return;
        };
        let attempt = call.claimed.attempt;
        let Some(single) = call.single.as_mut() else { return };
        single.customer_dialled = true;
        let single = single.clone();
        let mut variables = super::cdr_variables(attempt, call.claimed.campaign);
        variables.insert("CALLERID(num)".to_owned(), single.caller_id.clone());
        let created = self
            .ari
            .create_channel(&CreateChannel {
                endpoint: single.trunk.replace("{number}", &call.claimed.phone),
                channel_id: Some(channel.to_owned()),
                app_args: vec!["single".to_owned(), attempt.to_string()],
                variables,
                ..Default::default()
            })
            .await;
        if let Err(e) = created {
            tracing::warn!(attempt.id = %attempt, error = %e, "could not create the customer leg");
            self.end_unstarted(channel, "the customer could not be dialled").await;
        }
    }

    /// The customer leg is in Stasis: into the bridge, then dial.
    async fn bridge_and_dial(&mut self, channel: &str) {
        let Some(call) = self.calls.get(channel) else { return };
        let attempt = call.claimed.attempt;
        let Some(single) = call.single.clone() else { return };
        let Some(bridge) = single.bridge.clone() else { return };
        if let Some(call) = self.calls.get_mut(channel) {
            call.dialed = Instant::now();
        }
        let placed = async {
            self.ari.add_channels(&bridge, &[channel]).await?;
            self.ari.dial(channel, None, Some(single.dial_timeout_secs)).await
        }
        .await;
        match placed {
            Ok(()) => {
                let change = Change {
                    dialed_at: Some(Utc::now()),
                    reason: Some(if single.with_session {
                        "dialled into the session"
                    } else {
                        "operator answered"
                    }),
                    ..Default::default()
                };
                self.mark(attempt, &[AttemptStatus::Init], AttemptStatus::Init, &change)
                    .await;
            }
            Err(e) => {
                tracing::warn!(attempt.id = %attempt, error = %e, "could not dial the customer");
                let _ = self.ari.hangup(channel, HangupReason::Normal).await;
            }
        }
    }

    pub(super) async fn on_single_customer_event(&mut self, channel: &str, event: Event) {
        let Some(call) = self.calls.get(channel) else { return };
        let attempt = call.claimed.attempt;
        let Some(single) = call.single.clone() else { return };
        match event.kind {
            EventKind::StasisStart(_) => self.bridge_and_dial(channel).await,
            EventKind::ChannelStateChange(c) if c.channel.state == ChannelState::Ringing => {
                if call.status != AttemptStatus::Init {
                    return;
                }
                if let Some(call) = self.calls.get_mut(channel) {
                    call.status = AttemptStatus::Ringing;
                    metrics::histogram!(crate::metrics::ORIGINATE_TO_RING).record(call.dialed.elapsed().as_secs_f64());
                }
                // The operator hears ringing until the customer answers.
                if let Some(bridge) = &single.bridge {
                    let _ = self.ari.play_bridge(bridge, "tone:ring", &ring_id(attempt)).await;
                }
                let change = Change {
                    ringing_at: Some(event.timestamp.to_utc()),
                    ..Default::default()
                };
                self.mark(attempt, &[AttemptStatus::Init], AttemptStatus::Ringing, &change)
                    .await;
            }
            EventKind::ChannelStateChange(c) if c.channel.state == ChannelState::Up => {
                if call.answered.is_some() {
                    return;
                }
                let _ = self.ari.stop_playback(&ring_id(attempt)).await;
                if let Some(call) = self.calls.get_mut(channel) {
                    call.answered = Some(Instant::now());
                    call.operator = Some(single.operator);
                    call.status = AttemptStatus::InProgress;
                }
                if let Some(s) = self.sessions.get_mut(&single.operator) {
                    s.state = OperatorState::OnCall;
                    s.since = Instant::now();
                }
                let now = Utc::now();
                let change = Change {
                    operator: Some(single.operator),
                    bridge_id: single.bridge.as_deref(),
                    answered_at: Some(event.timestamp.to_utc()),
                    bridged_at: Some(now),
                    ..Default::default()
                };
                self.mark(
                    attempt,
                    &[AttemptStatus::Init, AttemptStatus::Ringing],
                    AttemptStatus::InProgress,
                    &change,
                )
                .await;
                self.operator_state(single.operator, OperatorState::OnCall).await;
            }
            _ => {}
        }
    }

    /// Events of the leg that rings a logged-out operator's phone.
    pub(super) async fn on_single_operator_event(&mut self, customer: &str, op_channel: &str, event: Event) {
        match event.kind {
            EventKind::StasisStart(_) => {
                let Some(call) = self.calls.get(customer) else {
                    let _ = self.ari.hangup(op_channel, HangupReason::Normal).await;
                    return;
                };
                if call.canceled {
                    let _ = self.ari.hangup(op_channel, HangupReason::Normal).await;
                    return;
                }
                let bridge = format!("single-{}", call.claimed.attempt);
                let joined = async {
                    self.ari
                        .create_bridge(&bridge, BridgeType::Mixing, "single call")
                        .await?;
                    self.ari.add_channels(&bridge, &[op_channel]).await
                }
                .await;
                if let Err(e) = joined {
                    tracing::warn!(error = %e, "could not bridge the operator");
                    let _ = self.ari.hangup(op_channel, HangupReason::Normal).await;
                    return;
                }
                if let Some(single) = self.calls.get_mut(customer).and_then(|c| c.single.as_mut()) {
                    single.bridge = Some(bridge);
                }
                self.dial_customer(customer).await;
            }
            EventKind::ChannelDestroyed(_) => {
                self.single_operator_legs.remove(op_channel);
                let Some(call) = self.calls.get(customer) else { return };
                let dialled = call.single.as_ref().is_some_and(|s| s.customer_dialled);
                if dialled {
                    // The operator hung up: the customer goes too.
                    let _ = self.ari.hangup(customer, HangupReason::Normal).await;
                } else {
                    self.end_unstarted(customer, "the operator did not answer").await;
                }
            }
            _ => {}
        }
    }

    /// Ends a single call whose customer was never dialled.
    async fn end_unstarted(&mut self, channel: &str, reason: &str) {
        let Some(call) = self.calls.remove(channel) else { return };
        let (status, result) = if call.canceled {
            (AttemptStatus::Canceled, None)
        } else {
            (AttemptStatus::Failed, Some(AttemptResult::Failed))
        };
        let change = Change {
            result,
            reason: Some(reason),
            ..Default::default()
        };
        self.write(
            store::finish(
                &self.pool,
                call.claimed.attempt,
                call.claimed.lead.map(|l| (l, call.claimed.attempt_number)),
                Some(&call.claimed.spec),
                status,
                &change,
            )
            .await,
        );
        if let Some(single) = &call.single {
            self.release_single(single, false).await;
        }
    }

    /// After a single call: a session operator wraps up (answered) or is ready again; a
    /// session-less operator's leg and bridge go.
    pub(super) async fn release_single(&mut self, single: &Single, answered: bool) {
        if single.with_session {
            if !answered {
                if let Some(s) = self.sessions.get_mut(&single.operator) {
                    if s.state == OperatorState::Reserved {
                        s.state = OperatorState::Ready;
                        s.since = Instant::now();
                        self.operator_state(single.operator, OperatorState::Ready).await;
                        self.operator_available().await;
                    }
                }
            }
            return;
        }
        if let Some(op_channel) = &single.operator_channel {
            self.single_operator_legs.remove(op_channel);
            let _ = self.ari.hangup(op_channel, HangupReason::Normal).await;
        }
        if let Some(bridge) = &single.bridge {
            let _ = self.ari.destroy_bridge(bridge).await;
        }
        if answered {
            self.operator_state(single.operator, OperatorState::Offline).await;
        }
    }
}

pub(super) fn ring_id(attempt: AttemptId) -> String {
    format!("ring-{attempt}")
}
