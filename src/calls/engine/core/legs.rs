//! Customer legs: one attempt each, from the originate (or, for a single call, the attempt's
//! row) to the channel's end. Every state carries what it needs; the end result is decided in
//! one place ([`Leg::outcome`]) from the state the leg was in and who asked for the hang-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{
    Action, Answer, AriFail, AriOp, AriReply, Change, CommandError, Core, CreateFail, NewAttempt, Now, Observation,
    PacingOutcome, ReplyTo, Report, SessionState, SingleCall, Write,
};
use crate::ari::models::ChannelState;
use crate::ari::{Event, EventKind};
use crate::calls::{classify_unanswered, AttemptResult, AttemptStatus, EndedBy};
use crate::campaigns::CampaignSpec;
use crate::ids::{AttemptId, BridgeId, CampaignId, ChannelId, LeadId, OperatorId};

/// What is being called.
#[derive(Debug, Clone)]
pub struct Call {
    pub attempt: AttemptId,
    pub lead: Option<LeadId>,
    pub campaign: Option<CampaignId>,
    pub phone: String,
    /// The campaign's settings (for a single call outside campaigns, the `[dialer]` defaults).
    pub spec: Arc<CampaignSpec>,
    pub kind: CallKind,
    /// A callback asked for this operator.
    pub preferred_operator: Option<OperatorId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Dialled by the scheduler; an operator is chosen when the customer answers.
    Campaign,
    /// An offered lead the operator dialled.
    Preview,
    /// Click-to-call.
    Single,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Campaign => "campaign",
            CallKind::Preview => "preview",
            CallKind::Single => "click-to-call",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Leg {
    pub call: Call,
    pub state: LegState,
    /// Preview and single calls: the operator the customer is dialled for.
    pub operator: Option<OperatorId>,
    /// Set once we asked Asterisk to end the call: who ended it and why.
    pub stop: Option<Stop>,
    /// The operator whose phone died while connected to this customer.
    pub lost: Option<OperatorId>,
    /// Operators a connection to this customer failed with.
    pub tried: Vec<OperatorId>,
    /// Restored from the database with no proof it was ever dialled.
    pub unconfirmed: bool,
    /// The status last written for it (what the database has, once the journal is applied).
    pub persisted: AttemptStatus,
    /// Waiting for the attempt row, then answered with the attempt (single and preview calls).
    pub reply: Option<ReplyTo>,
    /// When the originate was sent (or, for a preview or single call, the dial into the bridge).
    pub dialed: Option<Instant>,
    /// We asked Asterisk to hang the channel up (so its end is the dialer's).
    pub hangup_sent: bool,
    /// Asterisk said the channel does not exist (404); closed unseen after a grace period.
    pub gone_at: Option<Instant>,
    /// When the state last changed (a reconcile read before that is stale for this leg).
    pub touched: Instant,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LegState {
    /// The attempt row is being written (single and preview calls).
    Creating,
    /// The operator's phone rings first (single call without a session).
    AwaitingOperator,
    /// Asked Asterisk to dial; `placed` once it accepted.
    Dialing {
        placed: bool,
    },
    Ringing,
    /// Answered and in our dialplan's answering-machine detection; its verdict comes back as
    /// a StasisStart. `deadline` is the connect limit's (detection counts against it);
    /// at `give_up` detection is taken as lost and the call hung up.
    Detecting {
        answered: DateTime<Utc>,
        deadline: Instant,
        give_up: Instant,
    },
    /// Answered, no operator yet; at `deadline` it becomes an abandon.
    Waiting {
        answered: DateTime<Utc>,
        deadline: Instant,
    },
    /// Being connected to an operator: first their phone's media is checked (`checked`
    /// false), then the customer is added to their bridge.
    Connecting {
        answered: DateTime<Utc>,
        deadline: Instant,
        operator: OperatorId,
        bridge: BridgeId,
        checked: bool,
        /// When the operator was taken for this customer.
        chosen: DateTime<Utc>,
    },
    Bridged {
        answered: DateTime<Utc>,
        operator: OperatorId,
        bridge: BridgeId,
        recording: Option<String>,
    },
    /// Hearing the abandon message; hung up when it ends, or at `hangup_at`.
    Abandoning {
        answered: DateTime<Utc>,
        hangup_at: Instant,
    },
}

/// A connection still unanswered this long after the deadline is given up (the ARI call's
/// answer was lost): the customer hears the message instead of silence.
const CONNECT_GRACE: Duration = Duration::from_secs(2);

/// A channel Asterisk said was gone (404) is given this long for its `ChannelDestroyed` to
/// arrive with the real cause before it is closed as ended unseen.
const GONE_GRACE: Duration = Duration::from_secs(2);

/// Why we asked Asterisk to hang up a leg.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub by: EndedBy,
    pub why: StopWhy,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StopWhy {
    /// Cancel requested, lead removed, campaign stopped.
    Canceled,
    /// Nobody is logged in who may take the call any more.
    NoOperator,
    /// The operator hung up (`#`, or the phone) or ended the call.
    OperatorEnded,
    /// The abandon message was played.
    Abandoned,
    /// We could not place the call.
    Failed(String),
    /// Answering-machine detection heard a machine (and, in `message` mode, left the message).
    Machine { message_left: bool },
    /// Answering-machine detection never came back.
    DetectionLost,
    /// The customer was never dialled (a single call whose operator did not answer): the
    /// attempt does not count.
    NotPlaced(String),
}

/// How an attempt ends, for the record.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: AttemptStatus,
    pub result: Option<AttemptResult>,
    pub reason: String,
    pub by: EndedBy,
    /// A connected call keeps a disposition set during it.
    pub keep_result: bool,
}

/// The channel's end as Asterisk reported it.
#[derive(Debug, Clone)]
pub struct Destroyed {
    pub cause: i32,
    pub cause_txt: String,
    pub sip: Option<i32>,
    pub at: DateTime<Utc>,
}

impl Leg {
    pub fn new(call: Call, state: LegState, now: Now) -> Leg {
        Leg {
            call,
            state,
            operator: None,
            stop: None,
            lost: None,
            tried: Vec::new(),
            unconfirmed: false,
            persisted: AttemptStatus::Init,
            reply: None,
            dialed: None,
            hangup_sent: false,
            gone_at: None,
            touched: now.at,
        }
    }

    pub fn channel(&self) -> ChannelId {
        self.call.attempt.channel()
    }

    /// The bridge the customer is in or being added to.
    pub fn bridge(&self) -> Option<&BridgeId> {
        match &self.state {
            LegState::Connecting { bridge, .. } | LegState::Bridged { bridge, .. } => Some(bridge),
            _ => None,
        }
    }

    /// Dialled and not yet with an operator (what pacing counts as in flight).
    pub fn awaiting_operator(&self) -> bool {
        matches!(
            self.state,
            LegState::Creating
                | LegState::AwaitingOperator
                | LegState::Dialing { .. }
                | LegState::Ringing
                | LegState::Detecting { .. }
                | LegState::Waiting { .. }
                | LegState::Connecting { .. }
        )
    }

    pub fn answered(&self) -> Option<DateTime<Utc>> {
        match &self.state {
            LegState::Waiting { answered, .. }
            | LegState::Detecting { answered, .. }
            | LegState::Connecting { answered, .. }
            | LegState::Bridged { answered, .. }
            | LegState::Abandoning { answered, .. } => Some(*answered),
            _ => None,
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        let state = match &self.state {
            LegState::Waiting { deadline, .. } => Some(*deadline),
            LegState::Detecting { give_up, .. } => Some(*give_up),
            LegState::Connecting { deadline, .. } => Some(*deadline + CONNECT_GRACE),
            LegState::Abandoning { hangup_at, .. } => Some(*hangup_at),
            _ => None,
        };
        let gone = self.gone_at.map(|t| t + GONE_GRACE);
        state.into_iter().chain(gone).min()
    }

    /// Dialled into an operator's bridge (preview and single calls) rather than connected on
    /// answer.
    fn preassigned(&self) -> bool {
        self.operator.is_some()
    }

    /// How the attempt ends from the state it is in; `destroyed` is Asterisk's report of the
    /// channel's end (None: it ended unseen, while obzvon was away).
    pub fn outcome(&self, destroyed: Option<&Destroyed>) -> Outcome {
        use AttemptResult as R;
        use AttemptStatus as S;
        let end = |status, result, reason: &str, by| Outcome {
            status,
            result,
            reason: reason.to_owned(),
            by,
            keep_result: false,
        };
        let by_us = |default: EndedBy| self.stop.as_ref().map_or(default, |s| s.by);
        // Who hung up a call that was up: us if we asked (and who of us), else the customer.
        let ender = || {
            if self.hangup_sent {
                by_us(EndedBy::Dialer)
            } else {
                EndedBy::Customer
            }
        };
        match self.stop.as_ref().map(|s| &s.why) {
            Some(StopWhy::Canceled) if self.answered().is_none() || !matches!(self.state, LegState::Bridged { .. }) => {
                return end(S::Canceled, None, "canceled", by_us(EndedBy::Dialer));
            }
            Some(StopWhy::NoOperator) if self.answered().is_some() => {
                return end(
                    S::Completed,
                    Some(R::Abandoned),
                    "answered as the last operator who could take it left; hung up",
                    EndedBy::Dialer,
                );
            }
            Some(StopWhy::NoOperator) => {
                return end(
                    S::Canceled,
                    None,
                    "no operator who may take the call is logged in; not connected",
                    EndedBy::Dialer,
                );
            }
            Some(StopWhy::NotPlaced(why)) if self.answered().is_none() => {
                return end(S::Canceled, None, why, by_us(EndedBy::Dialer));
            }
            Some(StopWhy::Failed(why)) if self.answered().is_none() => {
                return end(S::Failed, Some(R::Failed), why, EndedBy::Dialer);
            }
            Some(StopWhy::Machine { message_left }) => {
                let reason = if *message_left {
                    "answering machine detected; message left after the greeting"
                } else {
                    "answering machine detected; hung up"
                };
                return end(S::Completed, Some(R::Machine), reason, EndedBy::Dialer);
            }
            Some(StopWhy::DetectionLost) => {
                return end(
                    S::Completed,
                    Some(R::Abandoned),
                    "answering-machine detection did not come back; hung up (counted as abandoned)",
                    EndedBy::Dialer,
                );
            }
            Some(StopWhy::OperatorEnded) if self.answered().is_none() => {
                return end(
                    S::Canceled,
                    None,
                    "the operator hung up before the answer",
                    EndedBy::Operator,
                );
            }
            _ => {}
        }
        let Some(d) = destroyed else {
            return self.outcome_unseen();
        };
        match &self.state {
            LegState::Creating | LegState::AwaitingOperator | LegState::Dialing { .. } | LegState::Ringing => end(
                S::Failed,
                Some(classify_unanswered(d.cause, d.sip)),
                "not answered",
                EndedBy::Customer,
            ),
            LegState::Waiting { .. } | LegState::Connecting { .. } | LegState::Detecting { .. } => match self.lost {
                Some(_) => end(
                    S::Completed,
                    Some(R::OperatorLost),
                    "the operator's phone died and the customer hung up before another operator took the call",
                    EndedBy::Customer,
                ),
                None => end(
                    S::Completed,
                    Some(R::EarlyHangup),
                    "the customer hung up before the connect limit",
                    EndedBy::Customer,
                ),
            },
            LegState::Bridged { .. } => Outcome {
                keep_result: true,
                ..end(S::Completed, Some(R::Success), "call ended", ender())
            },
            LegState::Abandoning { .. } => {
                let by = ender();
                match self.lost {
                    Some(_) => end(
                        S::Completed,
                        Some(R::OperatorLost),
                        "the operator's phone died and no other operator was free; abandon message played",
                        by,
                    ),
                    None => end(
                        S::Completed,
                        Some(R::Abandoned),
                        "no operator within the connect limit; abandon message played",
                        by,
                    ),
                }
            }
        }
    }

    /// The channel was gone when obzvon looked (it ended while obzvon was away).
    fn outcome_unseen(&self) -> Outcome {
        use AttemptResult as R;
        use AttemptStatus as S;
        const AWAY: &str = "ended while obzvon was away";
        let end = |status, result| Outcome {
            status,
            result,
            reason: AWAY.to_owned(),
            by: EndedBy::System,
            keep_result: false,
        };
        if self.unconfirmed {
            return Outcome {
                reason: "never dialled: obzvon stopped before Asterisk took the call".to_owned(),
                ..end(S::Canceled, None)
            };
        }
        match &self.state {
            LegState::Creating | LegState::AwaitingOperator => end(S::Canceled, None),
            LegState::Dialing { .. } | LegState::Ringing => end(S::Failed, Some(R::Failed)),
            // Answered and (as far as we know) never connected: counted as abandoned, the
            // conservative reading of the rules.
            LegState::Waiting { .. }
            | LegState::Detecting { .. }
            | LegState::Connecting { .. }
            | LegState::Abandoning { .. } => {
                end(S::Completed, Some(self.lost.map_or(R::Abandoned, |_| R::OperatorLost)))
            }
            LegState::Bridged { .. } => Outcome {
                keep_result: true,
                ..end(S::Completed, Some(R::Success))
            },
        }
    }
}

/// How far a live status is along `init → ringing → in-progress`.
fn progress(s: AttemptStatus) -> u8 {
    match s {
        AttemptStatus::Init => 0,
        AttemptStatus::Ringing => 1,
        _ => 2,
    }
}

/// Channel variables that tie Asterisk's CDRs and the far end's SIP log to the attempt: the
/// attempt id in the CDR userfield and in an `X-Obzvon-Attempt` header, the campaign as
/// account code, and the customer as CDR party A, so the bridged conversation's record is the
/// customer's (posted when the customer hangs up), not the operator's session's.
pub fn call_variables(attempt: AttemptId, campaign: Option<CampaignId>) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("CDR(userfield)".to_owned(), attempt.to_string()),
        ("CHANNEL(accountcode)".to_owned(), accountcode(campaign)),
        ("CDR_PROP(party_a)".to_owned(), "1".to_owned()),
        ("PJSIP_HEADER(add,X-Obzvon-Attempt)".to_owned(), attempt.to_string()),
    ])
}

/// The CDR account code: the campaign, or `single` for calls outside campaigns.
pub fn accountcode(campaign: Option<CampaignId>) -> String {
    campaign.map_or_else(|| "single".to_owned(), |c| c.to_string())
}

fn ring_playback(attempt: AttemptId) -> String {
    format!("ring-{attempt}")
}

fn abandon_playback(attempt: AttemptId) -> String {
    format!("abandon-{attempt}")
}

fn recording_name(attempt: AttemptId) -> String {
    format!("obzvon-{attempt}")
}

impl Core {
    /// The scheduler claimed a lead: dial it, unless nobody could take the call.
    pub(super) fn dial(&mut self, claimed: super::Claimed, now: Now) {
        let call = Call {
            attempt: claimed.attempt,
            lead: Some(claimed.lead),
            campaign: Some(claimed.campaign),
            phone: claimed.phone,
            spec: claimed.spec,
            kind: CallKind::Campaign,
            preferred_operator: claimed.preferred_operator,
        };
        if self.ended.contains(&call.attempt) || self.legs.contains_key(&call.attempt) {
            // The same attempt again: it is dialling or it ended; never dial it twice.
            return;
        }
        let refusal = if self.draining {
            Some("not dialled: the dialer is shutting down")
        } else if !self.ari_up || !self.synced {
            Some("not dialled: Asterisk's state is not known yet")
        } else if !self.may_take(&call.spec) {
            Some("not dialled: no operator who may take the call is logged in")
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.ended.insert(call.attempt);
            tracing::info!(attempt.id = %call.attempt, reason, "claimed lead given back");
            self.persist(Write::Finish {
                attempt: call.attempt,
                status: AttemptStatus::Canceled,
                change: Change {
                    reason: Some(reason.to_owned()),
                    ended_by: Some(EndedBy::Dialer),
                    ended_at: Some(now.wall),
                    ..Change::default()
                },
            });
            return;
        }
        let spec = call.spec.clone();
        let attempt = call.attempt;
        let mut variables = call_variables(attempt, call.campaign);
        if spec.amd.is_on() {
            variables.extend(spec.amd.variables());
        }
        self.ari(
            AriOp::Originate {
                channel: attempt.channel(),
                endpoint: spec.trunk.replace("{number}", &call.phone),
                caller_id: Some(spec.caller_id.clone()),
                timeout_secs: spec.dial_timeout_secs,
                app_args: vec!["attempt".to_owned(), attempt.to_string()],
                variables,
            },
            Report::Outcome,
        );
        let mut leg = Leg::new(call, LegState::Dialing { placed: false }, now);
        leg.dialed = Some(now.at);
        self.legs.insert(attempt, leg);
    }

    /// A single call (click-to-call), or a preview lead the operator dials.
    pub(super) fn single(&mut self, req: SingleCall, reply: ReplyTo, now: Now) {
        let kind = CallKind::Single;
        self.place_for_operator(req, kind, reply, now);
    }

    /// Reserves the operator (a ready session) or checks they are free (no session), then has
    /// the attempt row written; dialling starts when it exists.
    pub(super) fn place_for_operator(&mut self, req: SingleCall, kind: CallKind, reply: ReplyTo, now: Now) {
        let op = req.operator.id;
        if self.ended.contains(&req.attempt) || self.legs.contains_key(&req.attempt) {
            return self.reply(
                reply,
                Err(CommandError::Conflict("this attempt was placed already".into())),
            );
        }
        if self.draining {
            return self.reply(reply, Err(CommandError::Conflict("the dialer is shutting down".into())));
        }
        if !self.ari_up {
            return self.reply(reply, Err(CommandError::Failed("Asterisk is not connected".into())));
        }
        let with_session = match self.sessions.get(&op) {
            Some(s) if s.per_call.is_none() && matches!(s.state, SessionState::Ready | SessionState::Offered(_)) => {
                true
            }
            Some(s) if s.per_call.is_some() => {
                return self.reply(
                    reply,
                    Err(CommandError::Conflict("the operator is already on a call".into())),
                )
            }
            Some(s) => {
                let state = s.wire_state();
                return self.reply(
                    reply,
                    Err(CommandError::Conflict(format!(
                        "the operator is {state}: a single call needs them ready or logged out"
                    ))),
                );
            }
            None => false,
        };
        if !with_session && self.legs.values().any(|l| l.operator == Some(op)) {
            return self.reply(
                reply,
                Err(CommandError::Conflict("the operator is already on a call".into())),
            );
        }
        if !req.operator.enabled {
            return self.reply(reply, Err(CommandError::Conflict("the operator is disabled".into())));
        }
        let attempt = req.attempt;
        if with_session {
            self.set_session_state(op, SessionState::Reserved { attempt }, now);
        }
        self.out.push(Action::CreateAttempt(NewAttempt {
            attempt,
            kind,
            operator: op,
            phone: req.phone.clone(),
            caller_id: req.spec.caller_id.clone(),
            lead: req.lead,
            campaign: req.campaign,
            correlation_id: req.correlation_id.clone(),
            crm: req.crm.clone(),
        }));
        let call = Call {
            attempt,
            lead: req.lead,
            campaign: req.campaign,
            phone: req.phone,
            spec: req.spec,
            kind,
            preferred_operator: None,
        };
        let mut leg = Leg::new(call, LegState::Creating, now);
        leg.operator = Some(op);
        leg.reply = Some(reply);
        self.legs.insert(attempt, leg);
        if !with_session {
            self.directory.entry(op).or_insert(req.operator);
        }
    }

    pub(super) fn on_attempt_created(&mut self, attempt: AttemptId, result: Result<(), CreateFail>, now: Now) {
        let Some(leg) = self.legs.get_mut(&attempt) else { return };
        let reply = leg.reply.take();
        let op = leg.operator.expect("single and preview legs have their operator");
        let kind = leg.call.kind;
        if let Err(fail) = result {
            let error = match fail {
                CreateFail::NumberBusy => CommandError::Conflict("the number is already in a live call".into()),
                CreateFail::Database(e) => CommandError::Failed(format!("the attempt could not be written: {e}")),
            };
            let leg = self.legs.remove(&attempt).expect("present");
            if let Some(reply) = reply {
                self.reply(reply, Err(error));
            }
            self.release_operator_of(&leg, now);
            return;
        }
        if let Some(reply) = reply {
            let answer = match kind {
                CallKind::Preview => Answer::Attempt(Some(attempt)),
                _ => Answer::Done,
            };
            self.reply(reply, Ok(answer));
        }
        if self.legs[&attempt].stop.is_some() {
            let leg = self.legs.remove(&attempt).expect("present");
            self.finish(leg, None, now);
            return;
        }
        match self.sessions.get(&op).map(|s| (s.per_call, s.state.clone())) {
            None => self.ring_operator_for(attempt, now),
            Some((None, SessionState::Reserved { attempt: a })) if a == attempt => self.create_customer(attempt, now),
            // The operator logged in while the row was written: a ready session takes it.
            Some((None, SessionState::Ready)) => {
                self.set_session_state(op, SessionState::Reserved { attempt }, now);
                self.create_customer(attempt, now);
            }
            _ => {
                let leg = self.legs.remove(&attempt).expect("present");
                self.finish_unstarted(leg, "the operator became busy before the call was placed", now);
            }
        }
    }

    /// Creates the customer leg of a preview or single call; it is added to the operator's
    /// bridge and dialled when it enters Stasis (ARI cannot bridge a channel before that).
    pub(super) fn create_customer(&mut self, attempt: AttemptId, now: Now) {
        let Some(leg) = self.legs.get_mut(&attempt) else { return };
        leg.state = LegState::Dialing { placed: false };
        leg.touched = now.at;
        let mut variables = call_variables(attempt, leg.call.campaign);
        variables.insert("CALLERID(num)".to_owned(), leg.call.spec.caller_id.clone());
        let op = AriOp::Create {
            channel: attempt.channel(),
            endpoint: leg.call.spec.trunk.replace("{number}", &leg.call.phone),
            app_args: vec![leg.call.kind.as_str().to_owned(), attempt.to_string()],
            variables,
        };
        self.ari(op, Report::Outcome);
    }

    pub(super) fn on_leg_event(&mut self, attempt: AttemptId, event: Event, now: Now) {
        match event.kind {
            EventKind::ChannelStateChange(c) if c.channel.state == ChannelState::Ringing => {
                self.leg_ringing(attempt, event.timestamp.to_utc(), now)
            }
            EventKind::ChannelStateChange(c) if c.channel.state == ChannelState::Up => {
                let preassigned = self.legs[&attempt].preassigned();
                if preassigned {
                    self.preassigned_answered(attempt, event.timestamp.to_utc(), now);
                }
            }
            EventKind::StasisStart(start) => {
                if let Some(verdict) = crate::calls::amd::Verdict::from_args(&start.args) {
                    return self.amd_verdict(attempt, verdict, now);
                }
                let leg = &self.legs[&attempt];
                if leg.preassigned() {
                    self.dial_into_operator_bridge(attempt, now);
                } else {
                    self.answered(attempt, event.timestamp.to_utc(), now);
                }
            }
            EventKind::PlaybackStarted(p) if p.playback.id == abandon_playback(attempt) => {
                self.record(
                    attempt,
                    None,
                    Change {
                        message_at: Some(event.timestamp.to_utc()),
                        ..Change::default()
                    },
                );
            }
            EventKind::PlaybackFinished(p) if p.playback.id == abandon_playback(attempt) => {
                if matches!(self.legs[&attempt].state, LegState::Abandoning { .. }) {
                    let channel = attempt.channel();
                    self.hangup(&channel);
                }
            }
            EventKind::ChannelDestroyed(d) => {
                let destroyed = Destroyed {
                    cause: d.cause,
                    cause_txt: d.cause_txt.clone(),
                    sip: d.tech_cause,
                    at: event.timestamp.to_utc(),
                };
                let leg = self.legs.remove(&attempt).expect("routed here");
                self.finish(leg, Some(destroyed), now);
            }
            _ => {}
        }
    }

    fn leg_ringing(&mut self, attempt: AttemptId, at: DateTime<Utc>, now: Now) {
        let leg = self.legs.get_mut(&attempt).expect("routed here");
        if !matches!(leg.state, LegState::Dialing { .. }) {
            return;
        }
        leg.state = LegState::Ringing;
        leg.touched = now.at;
        let after = leg.dialed.map(|d| now.at.saturating_duration_since(d));
        let into_bridge = leg
            .operator
            .and_then(|op| self.sessions.get(&op))
            .and_then(|s| s.bridge.clone());
        if let Some(after) = after {
            self.observe(Observation::Ringing { after });
        }
        self.record(
            attempt,
            Some(AttemptStatus::Ringing),
            Change {
                ringing_at: Some(at),
                ..Change::default()
            },
        );
        // The operator hears ringing until the customer answers.
        if let Some(bridge) = into_bridge {
            self.ari(
                AriOp::PlayBridge {
                    bridge,
                    media: "tone:ring".to_owned(),
                    playback: ring_playback(attempt),
                },
                Report::Nothing,
            );
        }
    }

    /// A campaign customer answered: connect them now, or wait for an operator until the
    /// deadline.
    fn answered(&mut self, attempt: AttemptId, at: DateTime<Utc>, now: Now) {
        let margin = self.cfg.abandon_margin;
        let leg = self.legs.get_mut(&attempt).expect("routed here");
        if !matches!(leg.state, LegState::Dialing { .. } | LegState::Ringing) {
            return;
        }
        let limit = Duration::from_millis(leg.call.spec.connect_limit_ms);
        let deadline = now.instant_of(at) + limit.saturating_sub(margin);
        // A person or a machine? Detection says first; pacing learns the answer from it.
        let detecting = leg.call.spec.amd.is_on() && leg.call.kind == CallKind::Campaign && leg.stop.is_none();
        leg.touched = now.at;
        if detecting {
            let give_up = now.at + leg.call.spec.amd.limit();
            leg.state = LegState::Detecting {
                answered: at,
                deadline,
                give_up,
            };
        } else {
            leg.state = LegState::Waiting { answered: at, deadline };
            if let Some(dialed) = leg.dialed {
                let after = now.instant_of(at).saturating_duration_since(dialed).as_secs_f64();
                let (campaign, spec) = (leg.call.campaign, leg.call.spec.clone());
                self.learn(campaign, &spec, PacingOutcome::LiveAnswer { after_secs: after });
            }
        }
        let reason = if detecting {
            "answered; answering-machine detection"
        } else {
            "answered"
        };
        self.record(
            attempt,
            Some(AttemptStatus::Ringing),
            Change {
                answered_at: Some(at),
                reason: Some(reason.to_owned()),
                ..Change::default()
            },
        );
        if detecting {
            self.detect(attempt);
        } else if self.legs[&attempt].stop.is_some() {
            // Answered just as we were ending it: it ends now.
            self.abandon(attempt, now);
        } else {
            self.connect_or_wait(attempt, now);
        }
    }

    /// Sends an answered campaign call through answering-machine detection in our dialplan.
    /// The channel leaves Stasis meanwhile, so it is subscribed to first: a customer who hangs
    /// up during detection is still seen.
    fn detect(&mut self, attempt: AttemptId) {
        let channel = attempt.channel();
        self.ari(
            AriOp::Subscribe {
                source: format!("channel:{}", channel.as_str()),
            },
            Report::Nothing,
        );
        self.ari(
            AriOp::Continue {
                channel,
                context: crate::calls::amd::CONTEXT.to_owned(),
            },
            Report::Failure,
        );
    }

    /// Detection came back: a machine is hung up on (its message left, in `message` mode) or,
    /// in `operator` mode, connected like a person; a person waits for an operator within what
    /// is left of the connect limit, or hears the abandon message at once if detection used
    /// it all.
    fn amd_verdict(&mut self, attempt: AttemptId, verdict: crate::calls::amd::Verdict, now: Now) {
        use crate::calls::amd::AmdMode;
        let leg = self.legs.get_mut(&attempt).expect("routed here");
        let LegState::Detecting { answered, deadline, .. } = leg.state else {
            return;
        };
        let (campaign, spec) = (leg.call.campaign, leg.call.spec.clone());
        let after = leg
            .dialed
            .map(|d| now.instant_of(answered).saturating_duration_since(d).as_secs_f64());
        let machine = verdict.is_machine() && spec.amd.mode != AmdMode::Operator;
        tracing::info!(attempt.id = %attempt, status = %verdict.status, cause = %verdict.cause, "answering-machine detection");
        self.record(
            attempt,
            None,
            Change {
                amd: Some((verdict.status.clone(), verdict.cause.clone())),
                reason: Some(format!(
                    "answering-machine detection: {} ({})",
                    verdict.status, verdict.cause
                )),
                ..Change::default()
            },
        );
        if machine {
            if let Some(after) = after {
                self.learn(campaign, &spec, PacingOutcome::NoLiveAnswer { after_secs: after });
            }
            let message_left = verdict.message_left;
            self.stop_leg(attempt, EndedBy::Dialer, StopWhy::Machine { message_left }, now);
            return;
        }
        let leg = self.legs.get_mut(&attempt).expect("present");
        leg.state = LegState::Waiting { answered, deadline };
        leg.touched = now.at;
        if let Some(after) = after {
            self.learn(campaign, &spec, PacingOutcome::LiveAnswer { after_secs: after });
        }
        // Being ended already, or out of time: the message now; else an operator, or a wait.
        let stopping = self.legs[&attempt].stop.is_some();
        if stopping || (!self.connect_or_wait(attempt, now) && deadline <= now.at) {
            self.abandon(attempt, now);
        }
    }

    /// Gives a waiting customer a ready operator; if nobody who may take the call is even
    /// logged in, the abandon message at once rather than silence until the deadline.
    pub(super) fn connect_or_wait(&mut self, attempt: AttemptId, now: Now) -> bool {
        let Some(leg) = self.legs.get(&attempt) else {
            return false;
        };
        let LegState::Waiting { answered, deadline } = leg.state.clone() else {
            return false;
        };
        let spec = leg.call.spec.clone();
        // Past the connect limit it is an abandon, whoever is free now.
        if leg.preassigned() || !self.ari_up || leg.stop.is_some() || deadline <= now.at {
            return false;
        }
        let preferred = leg.call.preferred_operator;
        let tried = leg.tried.clone();
        let Some(op) = self.pick_operator(leg.call.campaign, &spec, preferred, &tried, now) else {
            if !self.may_take(&spec) {
                self.abandon(attempt, now);
            }
            return false;
        };
        let session = &self.sessions[&op];
        let bridge = session.bridge.clone().expect("ready sessions have a bridge");
        let phone = session.channel.clone();
        // A health check before every bridge: the phone must still be sending audio.
        let check = !self.cfg.media_check.is_zero();
        self.set_session_state(op, SessionState::Reserved { attempt }, now);
        let leg = self.legs.get_mut(&attempt).expect("checked");
        leg.state = LegState::Connecting {
            answered,
            deadline,
            operator: op,
            bridge: bridge.clone(),
            checked: !check,
            chosen: now.wall,
        };
        leg.touched = now.at;
        if check {
            self.ari(AriOp::RtpReceived { channel: phone }, Report::Outcome);
        } else {
            self.add_to_bridge(attempt, bridge);
        }
        true
    }

    fn add_to_bridge(&mut self, attempt: AttemptId, bridge: BridgeId) {
        self.ari(
            AriOp::AddToBridge {
                bridge,
                channel: attempt.channel(),
            },
            Report::Outcome,
        );
    }

    /// The pre-bridge media check of a connecting customer's operator came back.
    pub(super) fn media_verdict(&mut self, attempt: AttemptId, op: OperatorId, alive: bool, now: Now) {
        let Some(leg) = self.legs.get_mut(&attempt) else { return };
        let LegState::Connecting {
            operator,
            checked: false,
            bridge,
            answered,
            deadline,
            chosen,
        } = leg.state.clone()
        else {
            return;
        };
        if operator != op {
            return;
        }
        if alive {
            leg.state = LegState::Connecting {
                answered,
                deadline,
                operator,
                bridge: bridge.clone(),
                checked: true,
                chosen,
            };
            self.add_to_bridge(attempt, bridge);
            return;
        }
        tracing::warn!(attempt.id = %attempt, operator.id = %op, "the operator's phone sends no audio; not bridged");
        self.connection_failed(attempt, op, now);
    }

    /// A connection of a waiting customer to `op` did not happen: the customer waits again
    /// (for someone else), `op` is free again if it was held for them, the next operator is
    /// tried, and past the deadline the customer hears the message.
    pub(super) fn connection_failed(&mut self, attempt: AttemptId, op: OperatorId, now: Now) {
        let Some(leg) = self.legs.get_mut(&attempt) else { return };
        let LegState::Connecting { answered, deadline, .. } = leg.state else {
            return;
        };
        leg.tried.push(op);
        leg.state = LegState::Waiting { answered, deadline };
        leg.touched = now.at;
        if self
            .sessions
            .get(&op)
            .is_some_and(|s| s.state == SessionState::Reserved { attempt })
        {
            self.set_session_state(op, SessionState::Ready, now);
        }
        if !self.connect_or_wait(attempt, now) && deadline <= now.at {
            self.abandon(attempt, now);
        }
    }

    /// A preview or single call's customer leg is in Stasis: into the operator's bridge, then
    /// dial.
    fn dial_into_operator_bridge(&mut self, attempt: AttemptId, now: Now) {
        let leg = &self.legs[&attempt];
        if leg.stop.is_some() {
            self.hangup(&attempt.channel());
            return;
        }
        // Once: a repeated StasisStart must not dial the customer again.
        if !matches!(leg.state, LegState::Dialing { .. }) || leg.dialed.is_some() {
            return;
        }
        let timeout = leg.call.spec.dial_timeout_secs;
        let Some(bridge) = self.reserved_bridge(attempt) else {
            self.stop_leg(
                attempt,
                EndedBy::Dialer,
                StopWhy::Failed("the operator's session is gone".into()),
                now,
            );
            return;
        };
        let channel = attempt.channel();
        self.ari(
            AriOp::AddToBridge {
                bridge,
                channel: channel.clone(),
            },
            Report::Failure,
        );
        self.ari(
            AriOp::Dial {
                channel,
                timeout_secs: timeout,
            },
            Report::Outcome,
        );
        if let Some(leg) = self.legs.get_mut(&attempt) {
            leg.dialed = Some(now.at);
        }
    }

    /// A preview or single call's customer answered: already in the operator's bridge.
    fn preassigned_answered(&mut self, attempt: AttemptId, at: DateTime<Utc>, now: Now) {
        let leg = self.legs.get_mut(&attempt).expect("routed here");
        if !matches!(leg.state, LegState::Dialing { .. } | LegState::Ringing) {
            return;
        }
        let op = leg.operator.expect("preassigned");
        let Some(bridge) = self.reserved_bridge(attempt) else {
            self.stop_leg(attempt, EndedBy::Dialer, StopWhy::OperatorEnded, now);
            return;
        };
        self.ari(
            AriOp::StopPlayback {
                playback: ring_playback(attempt),
            },
            Report::Nothing,
        );
        let leg = self.legs.get_mut(&attempt).expect("routed here");
        leg.state = LegState::Waiting {
            answered: at,
            deadline: now.at,
        };
        self.bridged(attempt, op, bridge, now);
    }

    /// The bridge of the operator a preview or single call was placed for, while their session
    /// is still reserved for it.
    fn reserved_bridge(&self, attempt: AttemptId) -> Option<BridgeId> {
        let op = self.legs.get(&attempt)?.operator?;
        let session = self.sessions.get(&op)?;
        (session.state == SessionState::Reserved { attempt })
            .then(|| session.bridge.clone())
            .flatten()
    }

    /// The customer is with the operator: record it, start the recording.
    pub(super) fn bridged(&mut self, attempt: AttemptId, op: OperatorId, bridge: BridgeId, now: Now) {
        let leg = self.legs.get_mut(&attempt).expect("caller checked");
        let Some(answered) = leg.answered() else { return };
        // The dialer's own part: from an operator taken for the customer (at once if one was
        // free at the answer) to both in one bridge.
        let chosen = match leg.state {
            LegState::Connecting { chosen, .. } => chosen,
            _ => answered,
        };
        let recording = leg.call.spec.recording.then(|| recording_name(attempt));
        let rerouted = leg.lost;
        leg.state = LegState::Bridged {
            answered,
            operator: op,
            bridge: bridge.clone(),
            recording: recording.clone(),
        };
        leg.touched = now.at;
        let (campaign, spec) = (leg.call.campaign, leg.call.spec.clone());
        let latency = (now.wall - answered).to_std().unwrap_or_default();
        let connecting = (now.wall - chosen).to_std().unwrap_or_default();
        let reason = rerouted.map(|lost| format!("moved to another operator after operator {lost}'s phone died"));
        self.observe(Observation::Connected { latency, connecting });
        if rerouted.is_none() {
            self.learn(campaign, &spec, PacingOutcome::Connected { abandoned: false });
        }
        tracing::info!(attempt.id = %attempt, operator.id = %op, connect_ms = latency.as_millis() as u64, "customer bridged to operator");
        self.record(
            attempt,
            Some(AttemptStatus::InProgress),
            Change {
                operator: Some(op),
                bridge: Some(bridge.clone()),
                answered_at: Some(answered),
                bridged_at: Some(now.wall),
                reason,
                ..Change::default()
            },
        );
        self.set_session_state(op, SessionState::OnCall { attempt }, now);
        if let Some(s) = self.sessions.get_mut(&op) {
            s.last_bridged = Some((attempt, now.at));
        }
        if let Some(name) = recording {
            self.ari(AriOp::Record { bridge, name }, Report::Outcome);
        }
    }

    pub(super) fn on_leg_ari_done(
        &mut self,
        attempt: AttemptId,
        op: AriOp,
        result: Result<AriReply, AriFail>,
        now: Now,
    ) {
        match (op, result) {
            (AriOp::Originate { .. }, Ok(_)) | (AriOp::Originate { .. }, Err(AriFail::Conflict)) => {
                let leg = self.legs.get_mut(&attempt).expect("routed here");
                if leg.state == (LegState::Dialing { placed: false }) {
                    leg.state = LegState::Dialing { placed: true };
                    leg.touched = now.at;
                }
                let stopping = leg.stop.is_some();
                self.record(
                    attempt,
                    None,
                    Change {
                        dialed_at: Some(now.wall),
                        reason: Some("dialled".to_owned()),
                        ..Change::default()
                    },
                );
                if stopping {
                    self.hangup(&attempt.channel());
                }
            }
            (AriOp::Originate { .. }, Err(fail)) => {
                tracing::warn!(attempt.id = %attempt, error = %fail, "originate failed");
                let mut leg = self.legs.remove(&attempt).expect("routed here");
                self.ended.insert(attempt);
                let (status, result, reason) = match &fail {
                    AriFail::Unreachable(_) => (AttemptStatus::Canceled, None, "Asterisk unreachable; not dialled"),
                    AriFail::Unknown(_) => {
                        // It may have been dialled: make sure it is not ringing on its own.
                        self.hangup(&attempt.channel());
                        (
                            AttemptStatus::Failed,
                            Some(AttemptResult::Failed),
                            "no answer from Asterisk to the originate",
                        )
                    }
                    _ => (
                        AttemptStatus::Failed,
                        Some(AttemptResult::Failed),
                        "originate refused by Asterisk",
                    ),
                };
                leg.stop = Some(Stop {
                    by: EndedBy::Dialer,
                    why: StopWhy::Failed(reason.to_owned()),
                });
                self.persist(Write::Finish {
                    attempt,
                    status,
                    change: Change {
                        result,
                        reason: Some(reason.to_owned()),
                        ended_at: Some(now.wall),
                        ended_by: Some(EndedBy::Dialer),
                        detail: Some(serde_json::json!({ "error": fail.to_string() })),
                        ..Change::default()
                    },
                });
                self.observe(Observation::Ended {
                    campaign: leg.call.campaign,
                    status,
                    result,
                });
                self.release_operator_of(&leg, now);
                self.wake();
            }
            (AriOp::Create { .. }, Ok(_)) => {
                let leg = self.legs.get_mut(&attempt).expect("routed here");
                if leg.state == (LegState::Dialing { placed: false }) {
                    leg.state = LegState::Dialing { placed: true };
                    leg.touched = now.at;
                }
                if leg.stop.is_some() {
                    self.hangup(&attempt.channel());
                }
            }
            (AriOp::Create { .. }, Err(fail)) => {
                tracing::warn!(attempt.id = %attempt, error = %fail, "could not create the customer leg");
                let mut leg = self.legs.remove(&attempt).expect("routed here");
                if leg.stop.is_none() {
                    leg.stop = Some(Stop {
                        by: EndedBy::Dialer,
                        why: StopWhy::Failed("the customer could not be dialled".into()),
                    });
                }
                self.finish(leg, None, now);
            }
            (AriOp::Dial { .. }, Ok(_)) => {
                let leg = &self.legs[&attempt];
                let reason = match self.sessions.get(&leg.operator.expect("preassigned")) {
                    Some(s) if s.per_call.is_some() => "operator answered",
                    _ => "dialled into the session",
                };
                self.record(
                    attempt,
                    None,
                    Change {
                        dialed_at: Some(now.wall),
                        reason: Some(reason.to_owned()),
                        ..Change::default()
                    },
                );
            }
            (AriOp::Dial { .. } | AriOp::AddToBridge { .. }, Err(fail)) if self.legs[&attempt].preassigned() => {
                tracing::warn!(attempt.id = %attempt, error = %fail, "could not dial the customer into the operator's bridge");
                self.stop_leg(
                    attempt,
                    EndedBy::Dialer,
                    StopWhy::Failed("the customer could not be dialled".into()),
                    now,
                );
            }
            (AriOp::AddToBridge { bridge, .. }, result) => {
                let leg = &self.legs[&attempt];
                let LegState::Connecting {
                    operator,
                    bridge: wanted,
                    checked: true,
                    ..
                } = leg.state.clone()
                else {
                    return;
                };
                if wanted != bridge {
                    return;
                }
                match result {
                    Ok(_) => self.bridged(attempt, operator, bridge, now),
                    Err(fail) => {
                        tracing::warn!(attempt.id = %attempt, operator.id = %operator, error = %fail, "could not bridge the customer");
                        self.connection_failed(attempt, operator, now);
                    }
                }
            }
            (AriOp::Hangup { .. }, Err(AriFail::NotFound)) => {
                // Gone before we could hang it up: its ChannelDestroyed may still be on its
                // way; if not, it is closed as ended unseen.
                if let Some(leg) = self.legs.get_mut(&attempt) {
                    leg.gone_at.get_or_insert(now.at);
                }
            }
            (AriOp::Continue { .. }, Err(fail)) => {
                // Detection could not start: the call goes on as a person's.
                tracing::warn!(attempt.id = %attempt, error = %fail, "could not send the call to answering-machine detection");
                let verdict = crate::calls::amd::Verdict {
                    status: "NOTSURE".to_owned(),
                    cause: format!("not run: {fail}"),
                    message_left: false,
                };
                self.amd_verdict(attempt, verdict, now);
            }
            (AriOp::Play { .. }, Err(fail)) => {
                tracing::warn!(attempt.id = %attempt, error = %fail, "abandon message did not play");
                self.hangup(&attempt.channel());
            }
            (AriOp::Record { name, .. }, Ok(_)) => {
                self.record(
                    attempt,
                    None,
                    Change {
                        recording: Some(name),
                        ..Change::default()
                    },
                );
            }
            (AriOp::Record { .. }, Err(fail)) => {
                tracing::warn!(attempt.id = %attempt, error = %fail, "recording did not start");
                if let Some(LegState::Bridged { recording, .. }) = self.legs.get_mut(&attempt).map(|l| &mut l.state) {
                    *recording = None;
                }
            }
            _ => {}
        }
    }

    /// Records a change of a leg: `to` moves its status on (never back); None stamps times or
    /// notes on the status it has. The write names the status it comes from, so the database
    /// takes it only in order.
    pub(super) fn record(&mut self, attempt: AttemptId, to: Option<AttemptStatus>, change: Change) {
        let Some(leg) = self.legs.get_mut(&attempt) else { return };
        let from = leg.persisted;
        let to = match to {
            Some(t) if progress(t) >= progress(from) => t,
            _ => from,
        };
        leg.persisted = to;
        self.persist(Write::Attempt {
            attempt,
            from: vec![from],
            to,
            change,
        });
    }

    /// Asks Asterisk to end a leg, remembering who and why for the record.
    pub(super) fn stop_leg(&mut self, attempt: AttemptId, by: EndedBy, why: StopWhy, now: Now) {
        let Some(leg) = self.legs.get_mut(&attempt) else { return };
        if leg.stop.is_none() {
            leg.stop = Some(Stop { by, why });
        }
        leg.touched = now.at;
        match leg.state {
            // Not in Asterisk yet: it ends when its row or the originate's answer arrives.
            LegState::Creating | LegState::Dialing { placed: false } => {}
            LegState::AwaitingOperator => {
                // The operator's phone is still ringing: ending that ends the call.
                let op = leg.operator.expect("single call");
                let leg = self.legs.remove(&attempt).expect("present");
                if let Some(s) = self.sessions.get(&op) {
                    let channel = s.channel.clone();
                    self.hangup(&channel);
                }
                self.finish(leg, None, now);
            }
            _ => self.hangup(&attempt.channel()),
        }
    }

    pub(super) fn cancel(&mut self, attempt: AttemptId, now: Now) -> bool {
        if !self.legs.contains_key(&attempt) {
            return false;
        }
        self.stop_leg(attempt, EndedBy::Dialer, StopWhy::Canceled, now);
        true
    }

    /// The abandon message, then hang-up.
    pub(super) fn abandon(&mut self, attempt: AttemptId, now: Now) {
        let hangup_at = now.at + self.cfg.abandon_max;
        let Some(leg) = self.legs.get_mut(&attempt) else { return };
        let LegState::Waiting { answered, .. } = leg.state else {
            return;
        };
        if leg.stop.is_some() {
            // Being ended already (canceled, say): that stands; only the hang-up is waited for.
            leg.state = LegState::Abandoning {
                answered,
                hangup_at: now.at + Duration::from_secs(3600),
            };
            self.hangup(&attempt.channel());
            return;
        }
        leg.state = LegState::Abandoning { answered, hangup_at };
        leg.stop = Some(Stop {
            by: EndedBy::Dialer,
            why: StopWhy::Abandoned,
        });
        leg.touched = now.at;
        let (campaign, spec) = (leg.call.campaign, leg.call.spec.clone());
        let media = spec.abandon_message.clone();
        self.learn(campaign, &spec, PacingOutcome::Connected { abandoned: true });
        tracing::info!(attempt.id = %attempt, "no operator within the connect limit; abandon message");
        self.ari(
            AriOp::Play {
                channel: attempt.channel(),
                media,
                playback: abandon_playback(attempt),
            },
            Report::Failure,
        );
    }

    pub(super) fn leg_timers(&mut self, now: Now) {
        enum Due {
            Abandon,
            GiveUpConnecting(OperatorId),
            HangUp,
            Gone,
            DetectionLost,
        }
        let due: Vec<(AttemptId, Due)> = self
            .legs
            .values()
            .filter_map(|l| {
                let due = if l.gone_at.is_some_and(|t| t + GONE_GRACE <= now.at) {
                    Due::Gone
                } else {
                    match l.state {
                        LegState::Waiting { deadline, .. } if deadline <= now.at => Due::Abandon,
                        LegState::Connecting { deadline, operator, .. } if deadline + CONNECT_GRACE <= now.at => {
                            Due::GiveUpConnecting(operator)
                        }
                        LegState::Abandoning { hangup_at, .. } if hangup_at <= now.at => Due::HangUp,
                        LegState::Detecting { give_up, .. } if give_up <= now.at && l.stop.is_none() => {
                            Due::DetectionLost
                        }
                        _ => return None,
                    }
                };
                Some((l.call.attempt, due))
            })
            .collect();
        for (attempt, due) in due {
            match due {
                Due::Abandon => {
                    if !self.connect_or_wait(attempt, now) {
                        self.abandon(attempt, now);
                    }
                }
                Due::GiveUpConnecting(op) => {
                    tracing::warn!(attempt.id = %attempt, operator.id = %op, "no answer from Asterisk to the connection; giving up on it");
                    self.connection_failed(attempt, op, now);
                }
                Due::HangUp => {
                    if let Some(LegState::Abandoning { hangup_at, .. }) =
                        self.legs.get_mut(&attempt).map(|l| &mut l.state)
                    {
                        // Once: the channel's end is what finishes the leg.
                        *hangup_at = now.at + Duration::from_secs(3600);
                    }
                    self.hangup(&attempt.channel());
                }
                Due::Gone => {
                    let leg = self.legs.remove(&attempt).expect("listed above");
                    self.finish(leg, None, now);
                }
                Due::DetectionLost => {
                    tracing::warn!(attempt.id = %attempt, "answering-machine detection did not come back; hanging up");
                    self.stop_leg(attempt, EndedBy::Dialer, StopWhy::DetectionLost, now);
                }
            }
        }
    }

    /// Records the end of a leg and frees its operator.
    pub(super) fn finish(&mut self, leg: Leg, destroyed: Option<Destroyed>, now: Now) {
        let attempt = leg.call.attempt;
        self.ended.insert(attempt);
        let outcome = leg.outcome(destroyed.as_ref());
        let ended_at = destroyed.as_ref().map_or(now.wall, |d| d.at);
        self.persist(Write::Finish {
            attempt,
            status: outcome.status,
            change: Change {
                result: outcome.result,
                keep_result: outcome.keep_result,
                reason: Some(outcome.reason.clone()),
                hangup: destroyed.as_ref().map(|d| (d.cause, d.cause_txt.clone(), d.sip)),
                ended_at: Some(ended_at),
                ended_by: Some(outcome.by),
                end_from_cdr: destroyed.is_none(),
                ..Change::default()
            },
        });
        tracing::info!(
            attempt.id = %attempt, status = outcome.status.as_str(),
            result = outcome.result.map(|r| r.as_str()).unwrap_or("-"), ended_by = outcome.by.as_str(),
            "attempt ended"
        );
        self.observe(Observation::Ended {
            campaign: leg.call.campaign,
            status: outcome.status,
            result: outcome.result,
        });
        match leg.state {
            LegState::Dialing { .. } | LegState::Ringing => {
                if let Some(dialed) = leg.dialed {
                    let after = now.at.saturating_duration_since(dialed).as_secs_f64();
                    self.learn(
                        leg.call.campaign,
                        &leg.call.spec,
                        PacingOutcome::NoLiveAnswer { after_secs: after },
                    );
                }
            }
            // Hung up while waiting for an operator, within the limit: answered, not abandoned
            // (unless the campaign counts those too).
            LegState::Waiting { .. } => self.learn(
                leg.call.campaign,
                &leg.call.spec,
                PacingOutcome::Connected {
                    abandoned: leg.call.spec.count_early_hangups_as_abandoned,
                },
            ),
            _ => {}
        }
        if let LegState::Bridged {
            recording: Some(name), ..
        } = &leg.state
        {
            self.ari(AriOp::StopRecording { name: name.clone() }, Report::Nothing);
        }
        if leg.preassigned() && matches!(leg.state, LegState::Dialing { .. } | LegState::Ringing) {
            self.ari(
                AriOp::StopPlayback {
                    playback: ring_playback(attempt),
                },
                Report::Nothing,
            );
        }
        self.release_operator_of(&leg, now);
        self.wake();
    }

    /// After a leg: its operator wraps up (connected) or is free again.
    fn release_operator_of(&mut self, leg: &Leg, now: Now) {
        let attempt = leg.call.attempt;
        let op = match &leg.state {
            LegState::Bridged { operator, .. } | LegState::Connecting { operator, .. } => Some(*operator),
            _ => leg.operator,
        };
        let Some(op) = op else { return };
        let Some(session) = self.sessions.get(&op) else { return };
        if session.per_call == Some(attempt) {
            self.end_per_call_session(op, now);
            return;
        }
        match session.state {
            SessionState::OnCall { attempt: a } if a == attempt => {
                let spec = leg.call.spec.clone();
                let talked = now.at.saturating_duration_since(session.since);
                self.learn(
                    leg.call.campaign,
                    &spec,
                    PacingOutcome::Talk {
                        secs: talked.as_secs_f64(),
                    },
                );
                let until = now.at + Duration::from_secs(u64::from(spec.wrap_up_secs));
                self.set_session_state(
                    op,
                    SessionState::WrapUp {
                        attempt,
                        campaign: leg.call.campaign,
                        until,
                        keys: spec,
                    },
                    now,
                );
            }
            SessionState::Reserved { attempt: a } if a == attempt => {
                self.set_session_state(op, SessionState::Ready, now);
                self.operator_free(op, now);
            }
            _ => {}
        }
    }

    /// Campaign legs nobody may take any more (the last operator left): ringing ones are
    /// hung up and their leads go back; waiting ones hear the abandon message now.
    pub(super) fn drop_orphaned_calls(&mut self, now: Now) {
        let orphaned: Vec<(AttemptId, bool)> = self
            .legs
            .values()
            .filter(|l| l.call.kind == CallKind::Campaign && l.stop.is_none())
            .filter(|l| {
                matches!(
                    l.state,
                    LegState::Dialing { .. } | LegState::Ringing | LegState::Waiting { .. }
                )
            })
            .filter(|l| !self.may_take(&l.call.spec))
            .map(|l| (l.call.attempt, matches!(l.state, LegState::Waiting { .. })))
            .collect();
        for (attempt, answered) in orphaned {
            if answered {
                self.abandon(attempt, now);
            } else {
                tracing::info!(attempt.id = %attempt, "no operator left for the campaign; ringing call hung up");
                self.stop_leg(attempt, EndedBy::Dialer, StopWhy::NoOperator, now);
            }
        }
    }

    /// Someone logged in who may take the campaign's calls: in any state but paused.
    pub(super) fn may_take(&self, spec: &CampaignSpec) -> bool {
        self.sessions.values().any(|s| {
            s.takes_calls()
                && !matches!(
                    s.state,
                    SessionState::Paused | SessionState::Calling { .. } | SessionState::Joining
                )
                && spec.may_take(s.info.id, &s.info.skills)
        })
    }

    /// The operator for a waiting customer among the ready, healthy sessions.
    fn pick_operator(
        &mut self,
        campaign: Option<CampaignId>,
        spec: &CampaignSpec,
        preferred: Option<OperatorId>,
        tried: &[OperatorId],
        now: Now,
    ) -> Option<OperatorId> {
        let last = campaign.and_then(|c| self.round_robin.get(&c).copied());
        let cfg = &self.cfg;
        let candidates = self.sessions.values().filter(|s| {
            s.takes_calls()
                && s.state == SessionState::Ready
                && s.bridge.is_some()
                && s.healthy(cfg, now)
                && !tried.contains(&s.info.id)
        });
        let chosen = super::choose::choose_operator(
            candidates.map(|s| super::choose::Candidate {
                id: s.info.id,
                skills: &s.info.skills,
                idle_since: s.since,
            }),
            spec,
            preferred,
            last,
        )?;
        if let Some(c) = campaign {
            self.round_robin.insert(c, chosen);
        }
        Some(chosen)
    }

    /// A session became ready: first the customer waiting longest who may go to it, else the
    /// scheduler may dial more.
    pub(super) fn operator_free(&mut self, op: OperatorId, now: Now) {
        let Some(session) = self.sessions.get(&op) else { return };
        let skills = session.info.skills.clone();
        let mut waiting: Vec<(DateTime<Utc>, AttemptId)> = self
            .legs
            .values()
            .filter(|l| !l.preassigned() && !l.tried.contains(&op))
            .filter_map(|l| match l.state {
                LegState::Waiting { answered, .. } if l.call.spec.may_take(op, &skills) => {
                    Some((answered, l.call.attempt))
                }
                _ => None,
            })
            .collect();
        waiting.sort();
        for (_, attempt) in waiting {
            if self.connect_or_wait(attempt, now) {
                return;
            }
        }
        self.wake();
    }
}
