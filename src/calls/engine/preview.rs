//! Preview dialing: the scheduler reserves a due lead for a ready operator and offers it here.
//! The operator (state `reserved`) dials it by REST or with key `1`, skips it with a reason
//! (REST, or key `9`), or it is dialled by itself after the campaign's preview time. An offer
//! nobody acts on lapses: the lead is free again and the operator is paused, being away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CommandError, Engine, SingleCall};
use crate::campaigns::CampaignSpec;
use crate::ids::{AttemptId, CampaignId, LeadId, OperatorId};
use crate::leads::store as leads;
use crate::operators::OperatorState;

/// A lead the scheduler reserved for an operator.
#[derive(Debug, Clone)]
pub struct Offer {
    pub operator: OperatorId,
    pub lead: LeadId,
    pub campaign: CampaignId,
    pub spec: Arc<CampaignSpec>,
    pub phone: String,
}

#[derive(Debug, Clone)]
pub(super) struct Offered {
    offer: Offer,
    until: Instant,
    auto_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub enum OfferAction {
    Dial,
    Skip(String),
}

impl Engine {
    /// Takes an offer for a ready operator; false (and the caller frees the lead) otherwise.
    pub(super) async fn take_offer(&mut self, offer: Offer) -> bool {
        let Some(session) = self.sessions.get_mut(&offer.operator) else {
            return false;
        };
        if session.state != OperatorState::Ready || session.offer.is_some() {
            return false;
        }
        let now = Instant::now();
        let preview = offer.spec.preview;
        let op = offer.operator;
        tracing::info!(operator.id = %op, lead.id = %offer.lead, "lead offered for preview");
        session.offer = Some(Offered {
            until: now + Duration::from_secs(u64::from(preview.reservation_secs)),
            auto_at: (preview.auto_dial_secs > 0).then(|| now + Duration::from_secs(u64::from(preview.auto_dial_secs))),
            offer,
        });
        session.state = OperatorState::Reserved;
        self.operator_state(op, OperatorState::Reserved).await;
        true
    }

    pub(super) async fn offer_action(
        &mut self,
        op: OperatorId,
        action: OfferAction,
    ) -> Result<Option<AttemptId>, CommandError> {
        let offered = self
            .sessions
            .get_mut(&op)
            .and_then(|s| s.offer.take())
            .ok_or_else(|| CommandError::Conflict("no lead is offered to this operator".into()))?;
        if let Some(s) = self.sessions.get_mut(&op) {
            s.state = OperatorState::Ready;
        }
        let offer = offered.offer;
        match action {
            OfferAction::Dial => {
                let attempt = AttemptId::new();
                let call = SingleCall {
                    attempt,
                    operator: op,
                    phone: offer.phone.clone(),
                    lead: Some(offer.lead),
                    trunk: offer.spec.trunk.clone(),
                    caller_id: offer.spec.caller_id.clone(),
                    dial_timeout_secs: offer.spec.dial_timeout_secs,
                    campaign: Some((offer.campaign, offer.spec.clone())),
                    correlation_id: None,
                    crm: serde_json::json!({}),
                };
                if let Err(e) = self.start_single(call).await {
                    self.write(leads::release_reservation(&self.pool, offer.lead, op).await);
                    self.operator_state(op, OperatorState::Ready).await;
                    self.operator_available().await;
                    return Err(e);
                }
                Ok(Some(attempt))
            }
            OfferAction::Skip(reason) => {
                let delay = offer.spec.preview.skip_delay_secs;
                self.write(leads::skip_reserved(&self.pool, offer.lead, op, delay, &reason).await);
                tracing::info!(operator.id = %op, lead.id = %offer.lead, reason, "offered lead skipped");
                self.operator_state(op, OperatorState::Ready).await;
                self.operator_available().await;
                Ok(None)
            }
        }
    }

    /// Auto-dial and expiry of offers.
    pub(super) async fn offer_timers(&mut self, now: Instant) {
        let due: Vec<(OperatorId, bool)> = self
            .sessions
            .values()
            .filter_map(|s| {
                let o = s.offer.as_ref()?;
                if o.auto_at.is_some_and(|t| t <= now) {
                    Some((s.operator, true))
                } else if o.until <= now {
                    Some((s.operator, false))
                } else {
                    None
                }
            })
            .collect();
        for (op, auto) in due {
            if auto {
                if let Err(e) = self.offer_action(op, OfferAction::Dial).await {
                    tracing::warn!(operator.id = %op, error = %e, "auto-dial of the offered lead failed");
                }
                continue;
            }
            let Some(offered) = self.sessions.get_mut(&op).and_then(|s| s.offer.take()) else {
                continue;
            };
            tracing::info!(operator.id = %op, lead.id = %offered.offer.lead, "offer lapsed; operator paused");
            self.write(leads::release_reservation(&self.pool, offered.offer.lead, op).await);
            if let Some(s) = self.sessions.get_mut(&op) {
                s.state = OperatorState::Paused;
                s.since = now;
            }
            self.operator_state(op, OperatorState::Paused).await;
            self.wake.notify_one();
        }
    }

    /// A session ending with an offer frees the lead.
    pub(super) async fn drop_offer(&mut self, op: OperatorId, offered: Option<Offered>) {
        if let Some(o) = offered {
            self.write(leads::release_reservation(&self.pool, o.offer.lead, op).await);
        }
    }
}
