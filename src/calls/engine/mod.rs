//! The call engine: one task that owns every live call and operator session of this instance.
//! ARI events, scheduler dial requests and API commands arrive as messages and are handled one
//! at a time, so there are no races between them; every state change is written to PostgreSQL
//! before the next message is taken.
//!
//! Operator session: the phone's channel (feature code `*55` → `Stasis(obzvon,login)`, or a
//! call we place when the CRM starts the session) waits alone in the operator's own mixing
//! bridge. An answered customer is added to that bridge, so connecting is one ARI call. Keys on
//! the session: `0` toggles pause/ready, `#` hangs up the customer (on a call) or ends wrap-up,
//! the campaign's disposition keys set the result in wrap-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

mod preview;
mod single;

pub use preview::{Offer, OfferAction};
pub use single::SingleCall;

use super::store::{self, Change, Disposition};
use super::{classify_unanswered, AttemptResult, AttemptStatus};
use crate::ari::models::ChannelState;
use crate::ari::{
    self, AriClient, BridgeType, ConnectionState, Event, EventKind, EventStream, HangupReason, Originate,
};
use crate::campaigns::spec::{CampaignSpec, Distribution};
use crate::ids::{AttemptId, CampaignId, LeadId, OperatorId};
use crate::operators::store as operators;
use crate::operators::OperatorState;

/// Hang-up text for a call whose channel was gone when the websocket came back.
const VANISHED: &str = "channel vanished during an ARI outage";

const LIVE: [AttemptStatus; 3] = [AttemptStatus::Init, AttemptStatus::Ringing, AttemptStatus::InProgress];

/// A lead the scheduler claimed; its attempt row exists (`init`).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub attempt: AttemptId,
    /// None for a single call to a bare number.
    pub lead: Option<LeadId>,
    /// None for a single call outside any campaign (no retries then).
    pub campaign: Option<CampaignId>,
    pub phone: String,
    pub spec: Arc<CampaignSpec>,
    /// The lead's attempts including this one.
    pub attempt_number: u32,
    pub preferred_operator: Option<OperatorId>,
}

/// Counts the scheduler paces by.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ready: Vec<ReadyOperator>,
    pub campaigns: HashMap<CampaignId, CampaignLoad>,
}

#[derive(Debug, Clone)]
pub struct ReadyOperator {
    pub id: OperatorId,
    pub skills: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CampaignLoad {
    /// Dialled, not answered yet, or answered and waiting for an operator.
    pub dialing: usize,
    /// Every call holding a channel.
    pub live: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

enum Msg {
    Dial(Box<Claimed>),
    Snapshot(oneshot::Sender<Snapshot>),
    StartSession(OperatorId, oneshot::Sender<Result<(), CommandError>>),
    EndSession(OperatorId, oneshot::Sender<Result<(), CommandError>>),
    SetPaused(OperatorId, bool, oneshot::Sender<Result<OperatorState, CommandError>>),
    Disposition(AttemptId, Disposition, oneshot::Sender<Result<(), CommandError>>),
    Cancel(AttemptId, oneshot::Sender<bool>),
    Single(Box<SingleCall>, oneshot::Sender<Result<(), CommandError>>),
    Offer(Box<Offer>, oneshot::Sender<bool>),
    OfferAction(
        OperatorId,
        OfferAction,
        oneshot::Sender<Result<Option<AttemptId>, CommandError>>,
    ),
}

/// How the rest of the app talks to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Msg>,
    /// Fired when capacity may have appeared (operator ready, call ended): the scheduler wakes.
    pub wake: Arc<Notify>,
}

impl EngineHandle {
    pub fn dial(&self, claimed: Claimed) {
        let _ = self.tx.send(Msg::Dial(Box::new(claimed)));
    }

    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Snapshot(tx)).ok()?;
        rx.await.ok()
    }

    pub async fn start_session(&self, op: OperatorId) -> Result<(), CommandError> {
        self.ask(|tx| Msg::StartSession(op, tx)).await
    }

    pub async fn end_session(&self, op: OperatorId) -> Result<(), CommandError> {
        self.ask(|tx| Msg::EndSession(op, tx)).await
    }

    pub async fn set_paused(&self, op: OperatorId, paused: bool) -> Result<OperatorState, CommandError> {
        self.ask(|tx| Msg::SetPaused(op, paused, tx)).await
    }

    pub async fn disposition(&self, attempt: AttemptId, d: Disposition) -> Result<(), CommandError> {
        self.ask(|tx| Msg::Disposition(attempt, d, tx)).await
    }

    /// Places a single call for an operator (click-to-call); Ok once the attempt exists.
    pub async fn single_call(&self, call: SingleCall) -> Result<(), CommandError> {
        self.ask(|tx| Msg::Single(Box::new(call), tx)).await
    }

    /// Offers a reserved lead to a ready operator (preview); false if they cannot take it now.
    pub async fn offer(&self, offer: Offer) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Offer(Box::new(offer), tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Dials or skips the lead offered to an operator; the attempt when dialled.
    pub async fn offer_action(&self, op: OperatorId, action: OfferAction) -> Result<Option<AttemptId>, CommandError> {
        self.ask(|tx| Msg::OfferAction(op, action, tx)).await
    }

    /// Hangs up a live attempt of this instance; false if it holds no such call.
    pub async fn cancel(&self, attempt: AttemptId) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Cancel(attempt, tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CommandError>>) -> Msg,
    ) -> Result<T, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| CommandError::Failed("the call engine is stopping".into()))?;
        rx.await
            .map_err(|_| CommandError::Failed("the call engine is stopping".into()))?
    }
}

struct Session {
    operator: OperatorId,
    name: String,
    skills: Vec<String>,
    channel: String,
    bridge: String,
    state: OperatorState,
    since: Instant,
    /// The call on the line, or the one being wrapped up.
    attempt: Option<AttemptId>,
    wrap_until: Option<Instant>,
    disposition_keys: Option<Arc<CampaignSpec>>,
    /// Preview: the lead offered to this operator.
    offer: Option<preview::Offered>,
}

struct Call {
    claimed: Claimed,
    status: AttemptStatus,
    /// When we asked Asterisk to dial (originate-to-ring latency).
    dialed: Instant,
    answered: Option<Instant>,
    operator: Option<OperatorId>,
    abandon_at: Option<Instant>,
    abandoning: bool,
    hangup_at: Option<Instant>,
    canceled: bool,
    recording: Option<String>,
    single: Option<single::Single>,
}

pub struct Engine {
    pool: PgPool,
    ari: AriClient,
    instance: String,
    sessions: HashMap<OperatorId, Session>,
    session_channels: HashMap<String, OperatorId>,
    /// Session calls we placed to operator phones, waiting for an answer.
    pending_sessions: HashMap<String, OperatorId>,
    calls: HashMap<String, Call>,
    /// Legs ringing a logged-out operator for a single call → that call's customer channel.
    single_operator_legs: HashMap<String, String>,
    round_robin: HashMap<CampaignId, OperatorId>,
    wake: Arc<Notify>,
    ari_connected: bool,
}

pub fn spawn(
    pool: PgPool,
    ari: AriClient,
    instance: String,
    events: EventStream,
    cancel: CancellationToken,
) -> (EngineHandle, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    let engine = Engine {
        pool,
        ari,
        instance,
        sessions: HashMap::new(),
        session_channels: HashMap::new(),
        pending_sessions: HashMap::new(),
        calls: HashMap::new(),
        single_operator_legs: HashMap::new(),
        round_robin: HashMap::new(),
        wake: wake.clone(),
        ari_connected: false,
    };
    let task = tokio::spawn(engine.run(rx, events, cancel));
    (EngineHandle { tx, wake }, task)
}

impl Engine {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut events: EventStream,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_session = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(msg) = rx.recv() => self.on_message(msg).await,
                event = events.events.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => break,
                },
                changed = events.state.changed() => {
                    if changed.is_err() { break }
                    let state = events.state.borrow_and_update().clone();
                    self.ari_connected = state.is_connected();
                    if let ConnectionState::Connected { session, .. } = state {
                        if last_session.replace(session).is_some() {
                            self.reconcile().await;
                        }
                        self.wake.notify_one();
                    }
                }
                _ = tick.tick() => self.on_tick().await,
            }
        }
        self.shutdown().await;
        Ok(())
    }

    // ---- messages ------------------------------------------------------------------------

    async fn on_message(&mut self, msg: Msg) {
        match msg {
            Msg::Dial(claimed) => self.dial(*claimed).await,
            Msg::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Msg::StartSession(op, reply) => {
                let _ = reply.send(self.start_session(op).await);
            }
            Msg::EndSession(op, reply) => {
                let result = match self.sessions.get(&op) {
                    Some(s) => {
                        let _ = self.ari.hangup(&s.channel, HangupReason::Normal).await;
                        Ok(())
                    }
                    None => Err(CommandError::Conflict("the operator has no session".into())),
                };
                let _ = reply.send(result);
            }
            Msg::SetPaused(op, paused, reply) => {
                let _ = reply.send(self.set_paused(op, paused).await);
            }
            Msg::Disposition(attempt, d, reply) => {
                let result = store::set_disposition(&self.pool, attempt, &d)
                    .await
                    .map_err(|e| match e {
                        store::DispositionError::NotFound => CommandError::NotFound("attempt not found".into()),
                        store::DispositionError::Conflict(m) => CommandError::Conflict(m),
                        store::DispositionError::Db(e) => CommandError::Failed(e.to_string()),
                    });
                if result.is_ok() {
                    self.end_wrap_up_for(attempt).await;
                }
                let _ = reply.send(result);
            }
            Msg::Cancel(attempt, reply) => {
                let channel = attempt.channel_id();
                let found = match self.calls.get_mut(&channel) {
                    Some(call) => {
                        call.canceled = true;
                        let operator_leg = call
                            .single
                            .as_ref()
                            .filter(|s| !s.customer_dialled)
                            .and_then(|s| s.operator_channel.clone());
                        let _ = self.ari.hangup(&channel, HangupReason::Normal).await;
                        // A logged-out operator still being rung: ending that leg ends the call.
                        if let Some(leg) = operator_leg {
                            let _ = self.ari.hangup(&leg, HangupReason::Normal).await;
                        }
                        true
                    }
                    None => false,
                };
                let _ = reply.send(found);
            }
            Msg::Single(call, reply) => {
                let _ = reply.send(self.start_single(*call).await);
            }
            Msg::Offer(offer, reply) => {
                let _ = reply.send(self.take_offer(*offer).await);
            }
            Msg::OfferAction(op, action, reply) => {
                let _ = reply.send(self.offer_action(op, action).await);
            }
        }
    }

    /// While the ARI websocket is down nobody counts as ready: the scheduler dials nothing
    /// until events can be seen again.
    fn snapshot(&self) -> Snapshot {
        let ready = self
            .sessions
            .values()
            .filter(|s| self.ari_connected && s.state == OperatorState::Ready)
            .map(|s| ReadyOperator {
                id: s.operator,
                skills: s.skills.clone(),
            })
            .collect();
        let mut campaigns: HashMap<CampaignId, CampaignLoad> = HashMap::new();
        for call in self.calls.values() {
            let Some(campaign) = call.claimed.campaign else {
                continue;
            };
            let load = campaigns.entry(campaign).or_default();
            load.live += 1;
            if call.operator.is_none() {
                load.dialing += 1;
            }
        }
        Snapshot { ready, campaigns }
    }

    // ---- customer calls ------------------------------------------------------------------

    async fn dial(&mut self, claimed: Claimed) {
        let attempt = claimed.attempt;
        let channel = attempt.channel_id();
        let spec = claimed.spec.clone();
        let variables = cdr_variables(attempt, claimed.campaign);
        let request = Originate {
            endpoint: spec.trunk.replace("{number}", &claimed.phone),
            channel_id: Some(channel.clone()),
            app_args: vec!["attempt".to_owned(), attempt.to_string()],
            caller_id: Some(spec.caller_id.clone()),
            timeout_secs: Some(spec.dial_timeout_secs),
            variables,
            ..Default::default()
        };
        self.calls.insert(
            channel.clone(),
            Call {
                claimed: claimed.clone(),
                status: AttemptStatus::Init,
                dialed: Instant::now(),
                answered: None,
                operator: None,
                abandon_at: None,
                abandoning: false,
                hangup_at: None,
                canceled: false,
                recording: None,
                single: None,
            },
        );
        match self.ari.originate(&request).await {
            Ok(_) => {
                let change = Change {
                    dialed_at: Some(Utc::now()),
                    ..Default::default()
                };
                self.mark(attempt, &[AttemptStatus::Init], AttemptStatus::Init, &change)
                    .await;
            }
            // 409: a channel with this id exists, so this attempt is already dialling.
            Err(e) if e.is_conflict() => {
                tracing::warn!(attempt.id = %attempt, error = %e, "attempt already dialling; not dialled twice")
            }
            Err(e) => {
                tracing::warn!(attempt.id = %attempt, campaign.id = ?claimed.campaign, error = %e, "originate failed");
                self.calls.remove(&channel);
                // Asterisk unreachable: nothing was dialled, so the lead goes back unharmed.
                // Asterisk refused (4xx/5xx): the attempt failed and follows the retry rules.
                let (status, result, reason) = match e.status() {
                    None => (AttemptStatus::Canceled, None, "Asterisk unreachable; not dialled"),
                    Some(_) => (
                        AttemptStatus::Failed,
                        Some(AttemptResult::Failed),
                        "originate refused by Asterisk",
                    ),
                };
                let change = Change {
                    result,
                    reason: Some(reason),
                    detail: Some(serde_json::json!({ "error": e.to_string() })),
                    ..Default::default()
                };
                self.write(
                    store::finish(
                        &self.pool,
                        attempt,
                        claimed.lead.map(|l| (l, claimed.attempt_number)),
                        Some(&spec),
                        status,
                        &change,
                    )
                    .await,
                );
                self.wake.notify_one();
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        if event.kind == EventKind::ApplicationReplaced {
            tracing::error!(
                app = self.ari.app(),
                "another ARI client took over our Stasis application"
            );
            return;
        }
        let channel = match &event.kind {
            EventKind::PlaybackFinished(p) => p.playback.target_uri.strip_prefix("channel:").map(str::to_owned),
            _ => event.channel_id().map(str::to_owned),
        };
        let Some(channel) = channel else { return };
        if self.calls.contains_key(&channel) {
            self.on_customer_event(&channel, event).await;
        } else if let Some(op) = self.session_channels.get(&channel).copied() {
            self.on_session_event(op, &channel, event).await;
        } else if let Some(customer) = self.single_operator_legs.get(&channel).cloned() {
            self.on_single_operator_event(&customer, &channel, event).await;
        } else if let EventKind::StasisStart(start) = &event.kind {
            self.on_new_channel(&channel, start).await;
        } else if let EventKind::ChannelDestroyed(_) = &event.kind {
            if let Some(op) = self.pending_sessions.remove(&channel) {
                tracing::info!(operator.id = %op, "operator did not answer the session call");
            }
        }
    }

    async fn on_customer_event(&mut self, channel: &str, event: Event) {
        let attempt = self.calls[channel].claimed.attempt;
        if self.calls[channel].single.is_some() && !matches!(event.kind, EventKind::ChannelDestroyed(_)) {
            self.on_single_customer_event(channel, event).await;
            return;
        }
        match event.kind {
            EventKind::ChannelStateChange(c) if c.channel.state == ChannelState::Ringing => {
                let call = self.calls.get_mut(channel).expect("checked");
                if call.status == AttemptStatus::Init {
                    call.status = AttemptStatus::Ringing;
                    metrics::histogram!(crate::metrics::ORIGINATE_TO_RING).record(call.dialed.elapsed().as_secs_f64());
                    let change = Change {
                        ringing_at: Some(event.timestamp.to_utc()),
                        ..Default::default()
                    };
                    self.mark(attempt, &[AttemptStatus::Init], AttemptStatus::Ringing, &change)
                        .await;
                }
            }
            EventKind::StasisStart(_) => {
                let call = self.calls.get_mut(channel).expect("checked");
                if call.answered.is_some() {
                    return;
                }
                call.answered = Some(Instant::now());
                call.abandon_at = Some(Instant::now() + Duration::from_millis(call.claimed.spec.connect_limit_ms));
                let change = Change {
                    answered_at: Some(event.timestamp.to_utc()),
                    ..Default::default()
                };
                // Status stays `ringing` until the customer is with an operator (`in-progress`).
                self.mark(
                    attempt,
                    &[AttemptStatus::Init, AttemptStatus::Ringing],
                    AttemptStatus::Ringing,
                    &change,
                )
                .await;
                if let Some(call) = self.calls.get_mut(channel) {
                    call.status = AttemptStatus::Ringing;
                }
                if !self.connect(channel).await {
                    tracing::info!(attempt.id = %attempt, "answered; no operator ready yet");
                }
            }
            EventKind::PlaybackFinished(_) if self.calls[channel].abandoning => {
                let _ = self.ari.hangup(channel, HangupReason::Normal).await;
            }
            EventKind::ChannelDestroyed(d) => {
                self.on_customer_gone(channel, d.cause, &d.cause_txt, d.tech_cause, event.timestamp.to_utc())
                    .await;
            }
            _ => {}
        }
    }

    /// Puts an answered customer with a ready operator. False if none is ready.
    async fn connect(&mut self, channel: &str) -> bool {
        let Some(call) = self.calls.get(channel) else {
            return false;
        };
        if call.operator.is_some() || call.abandoning || call.answered.is_none() {
            return false;
        }
        let spec = call.claimed.spec.clone();
        let Some(campaign) = call.claimed.campaign else {
            return false;
        };
        let attempt = call.claimed.attempt;
        let Some(op) = self.pick_operator(campaign, &spec, call.claimed.preferred_operator) else {
            return false;
        };
        let session = self.sessions.get_mut(&op).expect("picked from sessions");
        session.state = OperatorState::Reserved;
        let bridge = session.bridge.clone();
        if let Err(e) = self.ari.add_channels(&bridge, &[channel]).await {
            tracing::warn!(error = %e, attempt.id = %attempt, "could not bridge the customer");
            if let Some(s) = self.sessions.get_mut(&op) {
                s.state = OperatorState::Ready;
            }
            return false;
        }
        let bridged_at = Utc::now();
        let call = self.calls.get_mut(channel).expect("checked");
        let latency = call
            .answered
            .map(|a| a.elapsed().as_secs_f64() * 1000.0)
            .unwrap_or_default();
        metrics::histogram!(crate::metrics::CONNECT_LATENCY).record(latency / 1000.0);
        call.operator = Some(op);
        call.status = AttemptStatus::InProgress;
        call.abandon_at = None;
        if let Some(s) = self.sessions.get_mut(&op) {
            s.state = OperatorState::OnCall;
            s.since = Instant::now();
            s.attempt = Some(attempt);
            s.disposition_keys = Some(spec.clone());
        }
        tracing::info!(attempt.id = %attempt, operator.id = %op, connect_ms = latency, "customer bridged to operator");
        let recording = if spec.recording {
            let name = format!("obzvon-{attempt}");
            match self.ari.record_bridge(&bridge, &name, "wav").await {
                Ok(_) => Some(name),
                Err(e) => {
                    tracing::warn!(error = %e, "recording did not start");
                    None
                }
            }
        } else {
            None
        };
        if let Some(call) = self.calls.get_mut(channel) {
            call.recording = recording.clone();
        }
        let change = Change {
            operator: Some(op),
            bridge_id: Some(&bridge),
            bridged_at: Some(bridged_at),
            recording_name: recording.as_deref(),
            ..Default::default()
        };
        self.mark(attempt, &[AttemptStatus::Ringing], AttemptStatus::InProgress, &change)
            .await;
        self.operator_state(op, OperatorState::OnCall).await;
        true
    }

    fn pick_operator(
        &mut self,
        campaign: CampaignId,
        spec: &CampaignSpec,
        preferred: Option<OperatorId>,
    ) -> Option<OperatorId> {
        let last = self.round_robin.get(&campaign).copied();
        let chosen = choose_operator(self.sessions.values(), spec, preferred, last)?;
        self.round_robin.insert(campaign, chosen);
        Some(chosen)
    }

    async fn on_customer_gone(
        &mut self,
        channel: &str,
        cause: i32,
        cause_txt: &str,
        sip: Option<i32>,
        at: DateTime<Utc>,
    ) {
        let Some(call) = self.calls.remove(channel) else { return };
        let claimed = &call.claimed;
        let (status, result, reason) = if call.canceled {
            (AttemptStatus::Canceled, None, "canceled")
        } else if cause_txt == VANISHED && call.answered.is_none() {
            // We cannot know how it ended; not a no-answer, so retry rules for `failed` apply.
            (AttemptStatus::Failed, Some(AttemptResult::Failed), VANISHED)
        } else if call.operator.is_some() {
            (AttemptStatus::Completed, Some(AttemptResult::Success), "call ended")
        } else if call.answered.is_some() {
            (
                AttemptStatus::Completed,
                Some(AttemptResult::Abandoned),
                "no operator within the connect limit",
            )
        } else {
            (
                AttemptStatus::Failed,
                Some(classify_unanswered(cause, sip)),
                "not answered",
            )
        };
        let change = Change {
            result,
            reason: Some(reason),
            hangup: Some((cause, cause_txt, sip)),
            ended_at: Some(at),
            ..Default::default()
        };
        self.write(
            store::finish(
                &self.pool,
                claimed.attempt,
                claimed.lead.map(|l| (l, claimed.attempt_number)),
                Some(&claimed.spec),
                status,
                &change,
            )
            .await,
        );
        metrics::counter!(
            crate::metrics::ATTEMPTS,
            "campaign" => accountcode(claimed.campaign),
            "status" => status.as_str(),
            "result" => result.map_or("none", |r| r.as_str())
        )
        .increment(1);
        tracing::info!(
            attempt.id = %claimed.attempt, status = status.as_str(),
            result = result.map(|r| r.as_str()).unwrap_or("-"), cause, "attempt ended"
        );
        if let Some(name) = &call.recording {
            let _ = self.ari.stop_recording(name).await;
        }
        if let Some(op) = call.operator {
            self.start_wrap_up(op, &claimed.spec).await;
        }
        if let Some(single) = &call.single {
            let _ = self.ari.stop_playback(&single::ring_id(claimed.attempt)).await;
            self.release_single(single, call.answered.is_some()).await;
        }
        self.wake.notify_one();
    }

    // ---- operator sessions ---------------------------------------------------------------

    async fn start_session(&mut self, op: OperatorId) -> Result<(), CommandError> {
        if self.sessions.contains_key(&op) || self.pending_sessions.values().any(|p| *p == op) {
            return Err(CommandError::Conflict("the operator already has a session".into()));
        }
        let operator = operators::get(&self.pool, op).await.map_err(|e| match e {
            operators::OperatorError::NotFound => CommandError::NotFound("operator not found".into()),
            other => CommandError::Failed(other.to_string()),
        })?;
        if !operator.enabled {
            return Err(CommandError::Conflict("the operator is disabled".into()));
        }
        let channel = format!("session-{op}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        self.pending_sessions.insert(channel.clone(), op);
        let request = Originate {
            endpoint: operator.endpoint.clone(),
            channel_id: Some(channel.clone()),
            app_args: vec!["session".to_owned(), op.to_string()],
            caller_id: Some("\"obzvon\" <obzvon>".to_owned()),
            timeout_secs: Some(30),
            ..Default::default()
        };
        if let Err(e) = self.ari.originate(&request).await {
            self.pending_sessions.remove(&channel);
            return Err(CommandError::Failed(format!(
                "could not call the operator's phone: {e}"
            )));
        }
        Ok(())
    }

    async fn on_new_channel(&mut self, channel: &str, start: &ari::events::StasisStart) {
        let operator = if let Some(op) = self.pending_sessions.remove(channel) {
            operators::get(&self.pool, op).await.ok()
        } else if start.args.first().map(String::as_str) == Some("login") {
            // PJSIP/op1-00000012 → PJSIP/op1
            let endpoint = start
                .channel
                .name
                .rsplit_once('-')
                .map_or(start.channel.name.as_str(), |(e, _)| e);
            match operators::by_endpoint(&self.pool, endpoint).await {
                Ok(Some(op)) => Some(op),
                Ok(None) => {
                    tracing::warn!(endpoint, "login from an endpoint that is no operator's");
                    let _ = self.ari.hangup(channel, HangupReason::Rejected).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "operator lookup failed");
                    let _ = self.ari.hangup(channel, HangupReason::Failure).await;
                    return;
                }
            }
        } else {
            tracing::debug!(channel, args = ?start.args, "a channel we do not own entered the app");
            return;
        };
        let Some(operator) = operator else {
            let _ = self.ari.hangup(channel, HangupReason::Failure).await;
            return;
        };
        if self.sessions.contains_key(&operator.id) {
            tracing::warn!(operator.id = %operator.id, "second session refused: the operator is already logged in");
            let _ = self.ari.hangup(channel, HangupReason::Busy).await;
            return;
        }
        let bridge = format!(
            "operator-{}-{}",
            operator.id,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let joined = async {
            if start.channel.state != ChannelState::Up {
                self.ari.answer(channel).await?;
            }
            self.ari
                .create_bridge(&bridge, BridgeType::Mixing, &operator.name)
                .await?;
            self.ari.add_channels(&bridge, &[channel]).await
        }
        .await;
        if let Err(e) = joined {
            tracing::error!(error = %e, operator.id = %operator.id, "could not set up the operator's bridge");
            let _ = self.ari.hangup(channel, HangupReason::Failure).await;
            let _ = self.ari.destroy_bridge(&bridge).await;
            return;
        }
        self.session_channels.insert(channel.to_owned(), operator.id);
        self.sessions.insert(
            operator.id,
            Session {
                operator: operator.id,
                name: operator.name.clone(),
                skills: operator.skills.clone(),
                channel: channel.to_owned(),
                bridge: bridge.clone(),
                state: OperatorState::Ready,
                since: Instant::now(),
                attempt: None,
                wrap_until: None,
                disposition_keys: None,
                offer: None,
            },
        );
        self.write(
            operators::set_state(
                &self.pool,
                operator.id,
                OperatorState::Ready,
                Some((channel, &bridge, &self.instance)),
            )
            .await,
        );
        tracing::info!(operator.id = %operator.id, operator = operator.name, "operator session started");
        self.operator_available().await;
    }

    async fn on_session_event(&mut self, op: OperatorId, channel: &str, event: Event) {
        match event.kind {
            EventKind::ChannelDtmfReceived(key) => self.on_key(op, &key.digit).await,
            EventKind::StasisEnd(_) | EventKind::ChannelDestroyed(_) => {
                let Some(mut session) = self.sessions.remove(&op) else {
                    return;
                };
                self.session_channels.remove(channel);
                self.drop_offer(op, session.offer.take()).await;
                let _ = self.ari.destroy_bridge(&session.bridge).await;
                if let (OperatorState::OnCall | OperatorState::Reserved, Some(attempt)) =
                    (session.state, session.attempt)
                {
                    // The operator hung up the phone during a call: the customer goes too.
                    let _ = self.ari.hangup(&attempt.channel_id(), HangupReason::Normal).await;
                }
                self.write(operators::set_state(&self.pool, op, OperatorState::Offline, None).await);
                tracing::info!(operator.id = %op, operator = session.name, "operator session ended");
            }
            _ => {}
        }
    }

    async fn on_key(&mut self, op: OperatorId, key: &str) {
        let Some(session) = self.sessions.get(&op) else { return };
        match (session.state, key) {
            (OperatorState::Ready, "0") => {
                let _ = self.set_paused(op, true).await;
            }
            (OperatorState::Paused, "0") => {
                let _ = self.set_paused(op, false).await;
            }
            (OperatorState::OnCall, "#") => {
                if let Some(attempt) = session.attempt {
                    let _ = self.ari.hangup(&attempt.channel_id(), HangupReason::Normal).await;
                }
            }
            (OperatorState::WrapUp, "#") => self.finish_wrap_up(op).await,
            (OperatorState::Reserved, "1") if session.offer.is_some() => {
                if let Err(e) = self.offer_action(op, OfferAction::Dial).await {
                    tracing::warn!(operator.id = %op, error = %e, "dial by phone key failed");
                }
            }
            (OperatorState::Reserved, "9") if session.offer.is_some() => {
                let _ = self
                    .offer_action(op, OfferAction::Skip("skipped with a phone key".into()))
                    .await;
            }
            (OperatorState::WrapUp, key) => {
                let result = session
                    .disposition_keys
                    .as_ref()
                    .and_then(|spec| spec.disposition_keys.get(key).copied());
                let (Some(result), Some(attempt)) = (result, session.attempt) else {
                    tracing::debug!(operator.id = %op, key, "key means nothing in wrap-up");
                    return;
                };
                let d = Disposition {
                    result,
                    notes: None,
                    callback_at: None,
                    same_operator: false,
                    source: "phone",
                };
                match store::set_disposition(&self.pool, attempt, &d).await {
                    Ok(()) => {
                        tracing::info!(attempt.id = %attempt, result = result.as_str(), "disposition by phone key")
                    }
                    Err(e) => tracing::warn!(error = %e, "disposition by phone key failed"),
                }
                self.finish_wrap_up(op).await;
            }
            _ => tracing::debug!(operator.id = %op, key, "key ignored in this state"),
        }
    }

    async fn set_paused(&mut self, op: OperatorId, paused: bool) -> Result<OperatorState, CommandError> {
        let Some(session) = self.sessions.get_mut(&op) else {
            return Err(CommandError::Conflict("the operator has no session".into()));
        };
        let next = match (session.state, paused) {
            (OperatorState::Ready | OperatorState::Paused, true) => OperatorState::Paused,
            (OperatorState::Ready | OperatorState::Paused, false) => OperatorState::Ready,
            (state, _) => {
                return Err(CommandError::Conflict(format!(
                    "the operator is {state}; pause or resume between calls"
                )))
            }
        };
        session.state = next;
        session.since = Instant::now();
        self.operator_state(op, next).await;
        if next == OperatorState::Ready {
            self.operator_available().await;
        }
        Ok(next)
    }

    async fn start_wrap_up(&mut self, op: OperatorId, spec: &CampaignSpec) {
        let Some(session) = self.sessions.get_mut(&op) else {
            return;
        };
        session.state = OperatorState::WrapUp;
        session.since = Instant::now();
        session.wrap_until = Some(Instant::now() + Duration::from_secs(u64::from(spec.wrap_up_secs)));
        self.operator_state(op, OperatorState::WrapUp).await;
    }

    async fn end_wrap_up_for(&mut self, attempt: AttemptId) {
        let op = self
            .sessions
            .values()
            .find(|s| s.state == OperatorState::WrapUp && s.attempt == Some(attempt))
            .map(|s| s.operator);
        if let Some(op) = op {
            self.finish_wrap_up(op).await;
        }
    }

    async fn finish_wrap_up(&mut self, op: OperatorId) {
        let Some(session) = self.sessions.get_mut(&op) else {
            return;
        };
        if session.state != OperatorState::WrapUp {
            return;
        }
        session.state = OperatorState::Ready;
        session.since = Instant::now();
        session.wrap_until = None;
        self.operator_state(op, OperatorState::Ready).await;
        self.operator_available().await;
    }

    /// A ready operator first takes an answered customer who is waiting, then wakes the
    /// scheduler to dial more.
    async fn operator_available(&mut self) {
        let mut waiting: Vec<(Instant, String)> = self
            .calls
            .iter()
            .filter(|(_, c)| c.operator.is_none() && !c.abandoning && c.answered.is_some())
            .map(|(ch, c)| (c.answered.expect("filtered"), ch.clone()))
            .collect();
        waiting.sort();
        for (_, channel) in waiting {
            if !self.connect(&channel).await {
                break;
            }
        }
        self.wake.notify_one();
    }

    async fn operator_state(&self, op: OperatorId, state: OperatorState) {
        self.write(operators::set_state(&self.pool, op, state, None).await);
    }

    // ---- timers, recovery, shutdown ------------------------------------------------------

    async fn on_tick(&mut self) {
        let now = Instant::now();
        self.offer_timers(now).await;
        let to_abandon: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| !c.abandoning && c.operator.is_none() && c.abandon_at.is_some_and(|t| t <= now))
            .map(|(ch, _)| ch.clone())
            .collect();
        for channel in to_abandon {
            let Some(call) = self.calls.get_mut(&channel) else {
                continue;
            };
            call.abandoning = true;
            call.hangup_at = Some(now + Duration::from_secs(15));
            let media = call.claimed.spec.abandon_message.clone();
            tracing::info!(attempt.id = %call.claimed.attempt, "no operator within the connect limit; abandoning");
            if let Err(e) = self.ari.play(&channel, &media, None).await {
                tracing::warn!(error = %e, "abandon message did not play");
                let _ = self.ari.hangup(&channel, HangupReason::Normal).await;
            }
        }
        let overdue: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.hangup_at.is_some_and(|t| t <= now))
            .map(|(ch, _)| ch.clone())
            .collect();
        for channel in overdue {
            if let Some(call) = self.calls.get_mut(&channel) {
                call.hangup_at = None;
            }
            let _ = self.ari.hangup(&channel, HangupReason::Normal).await;
        }
        let wrapped: Vec<OperatorId> = self
            .sessions
            .values()
            .filter(|s| s.state == OperatorState::WrapUp && s.wrap_until.is_some_and(|t| t <= now))
            .map(|s| s.operator)
            .collect();
        for op in wrapped {
            self.finish_wrap_up(op).await;
        }
    }

    /// After an ARI reconnect: whatever ended while we were deaf is settled now.
    async fn reconcile(&mut self) {
        let channels: Vec<String> = self.calls.keys().cloned().collect();
        for channel in channels {
            if let Err(e) = self.ari.get_channel(&channel).await {
                if e.is_not_found() {
                    self.on_customer_gone(&channel, 0, VANISHED, None, Utc::now()).await;
                }
            }
        }
        let sessions: Vec<(OperatorId, String)> = self
            .sessions
            .values()
            .map(|s| (s.operator, s.channel.clone()))
            .collect();
        for (op, channel) in sessions {
            if matches!(self.ari.get_channel(&channel).await, Err(e) if e.is_not_found()) {
                let event_less_end = self.sessions.remove(&op);
                self.session_channels.remove(&channel);
                if let Some(s) = event_less_end {
                    let _ = self.ari.destroy_bridge(&s.bridge).await;
                }
                self.write(operators::set_state(&self.pool, op, OperatorState::Offline, None).await);
            }
        }
        tracing::info!(
            calls = self.calls.len(),
            sessions = self.sessions.len(),
            "reconciled after reconnect"
        );
    }

    async fn shutdown(&mut self) {
        let channels: Vec<String> = self.calls.keys().cloned().collect();
        for channel in channels {
            let _ = self.ari.hangup(&channel, HangupReason::Normal).await;
            if let Some(call) = self.calls.get_mut(&channel) {
                call.canceled = call.operator.is_none();
            }
            self.on_customer_gone(&channel, 16, "obzvon shut down", None, Utc::now())
                .await;
        }
        let sessions: Vec<OperatorId> = self.sessions.keys().copied().collect();
        for op in sessions {
            if let Some(s) = self.sessions.remove(&op) {
                let _ = self.ari.hangup(&s.channel, HangupReason::Normal).await;
                let _ = self.ari.destroy_bridge(&s.bridge).await;
            }
            self.write(operators::set_state(&self.pool, op, OperatorState::Offline, None).await);
        }
    }

    /// Records a transition of a live call; a duplicate or late event changes nothing.
    async fn mark(&self, attempt: AttemptId, from: &[AttemptStatus], to: AttemptStatus, change: &Change<'_>) {
        self.write(store::transition_now(&self.pool, attempt, from, to, change).await);
    }

    fn write<T>(&self, result: Result<T, sqlx::Error>) {
        if let Err(e) = result {
            tracing::error!(error = %e, "could not record a call state change");
        }
    }
}

/// At start-up, before any work is taken: sessions and calls a previous run of this instance
/// left in the database are gone with that process; settle them so nothing stays stuck or is
/// dialled twice.
pub async fn recover_after_restart(pool: &PgPool, ari: &AriClient, instance: &str) -> anyhow::Result<()> {
    for (op, channel) in operators::reset_sessions(pool, instance).await? {
        tracing::info!(operator.id = %op, "session from a previous run closed");
        if let Some(channel) = channel {
            let _ = ari.hangup(&channel, HangupReason::Normal).await;
        }
    }
    for (attempt, lead) in store::live_for_instance(pool, instance).await? {
        let _ = ari.hangup(&attempt.channel_id(), HangupReason::Normal).await;
        let change = Change {
            reason: Some("obzvon restarted during the call"),
            ..Default::default()
        };
        let mut tx = pool.begin().await?;
        store::transition(
            &mut tx,
            attempt,
            &LIVE,
            AttemptStatus::Canceled,
            &Change {
                ended_at: Some(Utc::now()),
                ..change
            },
        )
        .await?;
        if let Some(lead) = lead {
            sqlx::query("UPDATE leads SET state = 'pending', updated_at = now() WHERE id = $1 AND state = 'dialing'")
                .bind(lead)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        tracing::warn!(attempt.id = %attempt, "attempt from a previous run canceled; its lead is queued again");
    }
    Ok(())
}

/// The CDR account code: the campaign, or `single` for calls outside campaigns.
fn accountcode(campaign: Option<CampaignId>) -> String {
    campaign.map_or_else(|| "single".to_owned(), |c| c.to_string())
}

/// Channel variables that tie Asterisk's CDRs to the attempt: the attempt id in the userfield,
/// the campaign as account code, and the customer as CDR party A, so the bridged conversation's
/// record is the customer's (posted when the customer hangs up), not the operator's session's.
fn cdr_variables(attempt: AttemptId, campaign: Option<CampaignId>) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("CDR(userfield)".to_owned(), attempt.to_string()),
        ("CHANNEL(accountcode)".to_owned(), accountcode(campaign)),
        ("CDR_PROP(party_a)".to_owned(), "1".to_owned()),
    ])
}

/// Which ready operator takes a call: the preferred one (a callback) if eligible, else by the
/// campaign's distribution among operators assigned to it who have all its skills.
fn choose_operator<'a>(
    sessions: impl Iterator<Item = &'a Session>,
    spec: &CampaignSpec,
    preferred: Option<OperatorId>,
    last: Option<OperatorId>,
) -> Option<OperatorId> {
    let mut eligible: Vec<&Session> = sessions
        .filter(|s| {
            s.state == OperatorState::Ready
                && (spec.operators.is_empty() || spec.operators.contains(&s.operator))
                && spec.skills.iter().all(|k| s.skills.contains(k))
        })
        .collect();
    if let Some(p) = preferred.filter(|p| eligible.iter().any(|s| s.operator == *p)) {
        return Some(p);
    }
    match spec.distribution {
        Distribution::LongestIdle => eligible
            .iter()
            .min_by_key(|s| (s.since, s.operator))
            .map(|s| s.operator),
        Distribution::RoundRobin => {
            eligible.sort_by_key(|s| s.operator);
            eligible
                .iter()
                .find(|s| last.is_some_and(|l| s.operator > l))
                .or(eligible.first())
                .map(|s| s.operator)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(idle_secs: u64, state: OperatorState, skills: &[&str]) -> Session {
        Session {
            operator: OperatorId::new(),
            name: "op".into(),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            channel: String::new(),
            bridge: String::new(),
            state,
            since: Instant::now() - Duration::from_secs(idle_secs),
            attempt: None,
            wrap_until: None,
            disposition_keys: None,
            offer: None,
        }
    }

    #[test]
    fn longest_idle_ready_operator_takes_the_call() {
        let s = [
            session(5, OperatorState::Ready, &[]),
            session(50, OperatorState::Ready, &[]),
            session(500, OperatorState::Paused, &[]),
            session(400, OperatorState::WrapUp, &[]),
        ];
        let spec = CampaignSpec::default();
        assert_eq!(choose_operator(s.iter(), &spec, None, None), Some(s[1].operator));
        let nobody = [session(5, OperatorState::OnCall, &[])];
        assert_eq!(choose_operator(nobody.iter(), &spec, None, None), None);
    }

    #[test]
    fn round_robin_goes_around_in_a_fixed_order() {
        let s = [
            session(1, OperatorState::Ready, &[]),
            session(1, OperatorState::Ready, &[]),
            session(1, OperatorState::Ready, &[]),
        ];
        let spec = CampaignSpec {
            distribution: Distribution::RoundRobin,
            ..CampaignSpec::default()
        };
        let mut order = Vec::new();
        let mut last = None;
        for _ in 0..6 {
            last = choose_operator(s.iter(), &spec, None, last);
            order.push(last.unwrap());
        }
        assert_eq!(order[..3], order[3..], "repeats every three calls");
        let distinct: std::collections::HashSet<_> = order[..3].iter().collect();
        assert_eq!(distinct.len(), 3, "everyone gets a call");
    }

    #[test]
    fn skills_and_assignment_limit_who_is_eligible_and_callbacks_prefer_their_operator() {
        let s = [
            session(100, OperatorState::Ready, &["en"]),
            session(10, OperatorState::Ready, &["ru", "sales"]),
            session(1, OperatorState::Ready, &["ru"]),
        ];
        let skilled = CampaignSpec {
            skills: vec!["ru".into(), "sales".into()],
            ..CampaignSpec::default()
        };
        assert_eq!(choose_operator(s.iter(), &skilled, None, None), Some(s[1].operator));
        let assigned = CampaignSpec {
            operators: vec![s[2].operator],
            ..CampaignSpec::default()
        };
        assert_eq!(choose_operator(s.iter(), &assigned, None, None), Some(s[2].operator));
        let spec = CampaignSpec::default();
        assert_eq!(
            choose_operator(s.iter(), &spec, Some(s[2].operator), None),
            Some(s[2].operator)
        );
        // A preferred operator who is not eligible is passed over.
        assert_eq!(
            choose_operator(s.iter(), &skilled, Some(s[0].operator), None),
            Some(s[1].operator)
        );
    }
}
