//! Operator sessions: the operator's phone on one long call, waiting in its own mixing bridge;
//! customers are added to that bridge. A session is started from the phone (feature code
//! `*55` → `Stasis(obzvon,login)`) or by us ringing the phone (REST, or a single call for an
//! operator without a session, whose session lasts that one call). Phone keys: `0`
//! pause/ready, `#` hangs up the customer or ends wrap-up, `1`/`9` dial/skip an offered lead,
//! the campaign's disposition keys in wrap-up.
//!
//! A session whose phone stopped sending media, stopped answering qualify requests or whose
//! channel Asterisk ended for lack of RTP is dead: it ends, and a customer on the line is given
//! the next operator if one is free within the connect limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::legs::{LegState, StopWhy};
use super::{
    Answer, AriFail, AriOp, AriReply, CallKind, CommandError, Core, Now, Observation, ReplyTo, Report, SingleCall,
    Write,
};
use crate::ari::models::ChannelState;
use crate::ari::{events::StasisStart, Event, EventKind, HangupReason};
use crate::calls::EndedBy;
use crate::campaigns::CampaignSpec;
use crate::ids::{AttemptId, BridgeId, CampaignId, ChannelId, LeadId, OperatorId};
use crate::operators::OperatorState;

/// Q.850 44, "requested channel not available": what Asterisk sets when it hangs up a channel
/// for lack of RTP (`rtp_timeout`).
const CAUSE_RTP_TIMEOUT: i32 = 44;

/// What the engine knows of an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorInfo {
    pub id: OperatorId,
    pub name: String,
    /// `PJSIP/op1`.
    pub endpoint: String,
    pub skills: Vec<String>,
    pub enabled: bool,
}

/// A lead the scheduler reserved for an operator (preview).
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub operator: OperatorId,
    pub lead: LeadId,
    pub campaign: CampaignId,
    pub spec: Arc<CampaignSpec>,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OfferAction {
    Dial,
    Skip(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Offered {
    pub offer: Offer,
    pub until: Instant,
    pub auto_at: Option<Instant>,
}

/// A customer put through less than this before the phone went silent had no conversation.
const TALK_BEFORE_SILENCE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Session {
    pub info: OperatorInfo,
    pub channel: ChannelId,
    pub bridge: Option<BridgeId>,
    /// A session that exists for one single call (the operator had none): it ends with it.
    pub per_call: Option<AttemptId>,
    pub state: SessionState,
    /// In this state since (longest-idle distribution).
    pub since: Instant,
    /// Last change; a reconcile read before it is stale for this session.
    pub touched: Instant,
    /// Whether its state was written as logged in (else its end writes nothing).
    pub announced: bool,
    /// The last key pressed and when Asterisk saw it: the same press reported twice (an
    /// endpoint subscription repeats channel events) counts once.
    pub last_key: Option<(String, chrono::DateTime<chrono::Utc>)>,
    pub media: Media,
    /// The last customer put through to this phone, and when: if the phone turns out to have
    /// gone silent before (or just after) that, the customer talked to nobody.
    pub last_bridged: Option<(AttemptId, Instant)>,
}

/// What the media check saw of the phone.
#[derive(Debug, Clone, Copy)]
pub struct Media {
    /// Packets received, at the last sample.
    pub packets: u64,
    /// The last sample that showed new packets.
    pub heard_at: Instant,
    /// The last sample.
    pub checked_at: Instant,
    /// The last periodic sample asked for.
    pub asked_at: Instant,
    /// Packets a second the phone sends (smoothed over the samples; 0 until known).
    pub rate: f64,
    /// The last sample fell short of the phone's rate: it may have just died. Not given a
    /// customer until a sample shows it sending again.
    pub suspect: bool,
    /// A first sample was taken (the counters start before the session does).
    pub sampled: bool,
    /// Until when the phone sent, as far as the samples tell: the last sample when it sent
    /// all it should have, else the previous sample plus the packets it did send at its rate.
    pub sent_until: Instant,
}

impl Media {
    pub(super) fn new(at: Instant) -> Media {
        Media {
            packets: 0,
            heard_at: at,
            checked_at: at,
            asked_at: at,
            rate: 0.0,
            suspect: false,
            sampled: false,
            sent_until: at,
        }
    }

    /// Takes a sample of the packets received so far; whether the phone is sending as it
    /// did. A phone that died a moment before the sample has sent fewer packets since the last
    /// one than its rate says (a 20 ms phone that stopped 60 ms ago is three short), so a
    /// customer is not put through to a phone that went silent after the last sample.
    fn sample(&mut self, packets: u64, at: Instant) -> bool {
        if !self.sampled {
            // The first sample only sets where counting starts.
            self.sampled = true;
            self.packets = packets;
            self.checked_at = at;
            self.heard_at = at;
            self.sent_until = at;
            return true;
        }
        let elapsed = at.saturating_duration_since(self.checked_at).as_secs_f64();
        let grew = packets.saturating_sub(self.packets) as f64;
        let expected = self.rate * elapsed;
        let short = self.rate > 0.0 && expected - grew >= (0.2 * expected).max(3.0);
        let alive = if grew > 0.0 {
            !short
        } else {
            // Too soon after the last sample to expect a packet: its word stands.
            let too_soon = if self.rate > 0.0 {
                expected < 1.5
            } else {
                elapsed < 0.06
            };
            too_soon && !self.suspect && self.heard_at == self.checked_at
        };
        if grew > 0.0 {
            if elapsed >= 0.2 && !short {
                let measured = grew / elapsed;
                self.rate = if self.rate == 0.0 {
                    measured
                } else {
                    0.7 * self.rate + 0.3 * measured
                };
            }
            self.packets = packets;
            if alive {
                self.heard_at = at;
            }
            self.sent_until = if short {
                (self.checked_at + Duration::from_secs_f64(grew / self.rate)).min(at)
            } else {
                at
            };
        }
        self.suspect = !alive;
        self.checked_at = at;
        alive
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionState {
    /// We are ringing the operator's phone.
    Calling {
        until: Instant,
        reply: Option<ReplyTo>,
    },
    /// The phone's channel is in Stasis; it is being answered and put in its bridge.
    Joining,
    Ready,
    /// A preview lead is offered (on the wire: `reserved`).
    Offered(Offered),
    /// A customer is being connected to them, or dialled into their bridge.
    Reserved {
        attempt: AttemptId,
    },
    OnCall {
        attempt: AttemptId,
    },
    WrapUp {
        attempt: AttemptId,
        /// The campaign of the call (predictive pacing learns wrap-up times per campaign).
        campaign: Option<CampaignId>,
        until: Instant,
        keys: Arc<CampaignSpec>,
    },
    Paused,
}

/// Why a session ends.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEnd {
    /// The phone hung up (or was hung up on our request).
    HungUp,
    /// The phone died: no media, no answer to qualify, Asterisk's RTP timeout.
    Dead(String),
}

impl Session {
    fn new(info: OperatorInfo, channel: ChannelId, state: SessionState, now: Now) -> Session {
        Session {
            info,
            channel,
            bridge: None,
            per_call: None,
            state,
            since: now.at,
            touched: now.at,
            announced: false,
            last_key: None,
            media: Media::new(now.at),
            last_bridged: None,
        }
    }

    /// The operator state this session shows on the wire.
    pub fn wire_state(&self) -> OperatorState {
        match self.state {
            SessionState::Calling { .. } | SessionState::Joining => OperatorState::Offline,
            SessionState::Ready => OperatorState::Ready,
            SessionState::Offered(_) | SessionState::Reserved { .. } => OperatorState::Reserved,
            SessionState::OnCall { .. } => OperatorState::OnCall,
            SessionState::WrapUp { .. } => OperatorState::WrapUp,
            SessionState::Paused => OperatorState::Paused,
        }
    }

    /// A pool session (not one made for a single call).
    pub fn takes_calls(&self) -> bool {
        self.per_call.is_none()
    }

    /// Healthy enough to be given a customer: media heard recently (or the check is off).
    pub fn healthy(&self, cfg: &super::Config, now: Now) -> bool {
        if cfg.media_check.is_zero() {
            return true;
        }
        let fresh = cfg.media_check * 2 + Duration::from_millis(500);
        !self.media.suspect && now.at.saturating_duration_since(self.media.heard_at) < fresh.min(cfg.media_silence)
    }

    pub(super) fn deadline(&self, cfg: &super::Config) -> Option<Instant> {
        let state = match &self.state {
            SessionState::Calling { until, .. } => Some(*until + Duration::from_secs(5)),
            SessionState::Offered(o) => Some(o.auto_at.map_or(o.until, |a| a.min(o.until))),
            SessionState::WrapUp { until, .. } => Some(*until),
            _ => None,
        };
        let media = (!cfg.media_check.is_zero() && self.media_checked()).then(|| self.media.asked_at + cfg.media_check);
        state.into_iter().chain(media).min()
    }

    fn media_checked(&self) -> bool {
        !matches!(self.state, SessionState::Calling { .. } | SessionState::Joining) && self.bridge.is_some()
    }
}

fn endpoint_of(channel_name: &str) -> &str {
    // PJSIP/op1-00000012 → PJSIP/op1
    channel_name.rsplit_once('-').map_or(channel_name, |(e, _)| e)
}

fn session_bridge(op: OperatorId, channel: &ChannelId) -> BridgeId {
    let tail: String = channel
        .as_str()
        .chars()
        .rev()
        .take(12)
        .collect::<String>()
        .chars()
        .rev()
        .collect();
    BridgeId::new(format!("operator-{op}-{tail}"))
}

impl Core {
    /// Changes a session's state, writing it when the operator's wire state changes.
    pub(super) fn set_session_state(&mut self, op: OperatorId, state: SessionState, now: Now) {
        let Some(session) = self.sessions.get_mut(&op) else {
            return;
        };
        let before = session.wire_state();
        let wrapped = match &session.state {
            SessionState::WrapUp { campaign, keys, .. } if !matches!(state, SessionState::WrapUp { .. }) => {
                let secs = now.at.saturating_duration_since(session.since).as_secs_f64();
                Some((*campaign, keys.clone(), secs))
            }
            _ => None,
        };
        session.state = state;
        session.since = now.at;
        session.touched = now.at;
        let after = session.wire_state();
        // A session made for one single call is shown only while the operator talks.
        let shown = session.per_call.is_none() || after == OperatorState::OnCall;
        if before != after && shown {
            let first = !session.announced;
            session.announced = true;
            let place = first.then(|| {
                (
                    session.channel.clone(),
                    session.bridge.clone().unwrap_or_else(|| BridgeId::new("")),
                )
            });
            self.persist(Write::Operator {
                operator: op,
                state: after,
                session: place,
            });
        }
        if let Some((campaign, spec, secs)) = wrapped {
            self.learn(campaign, &spec, super::PacingOutcome::WrapUp { secs });
        }
    }

    /// REST login: we ring the operator's phone; the session starts when it answers.
    pub(super) fn start_session(&mut self, info: OperatorInfo, channel: ChannelId, reply: ReplyTo, now: Now) {
        if self.sessions.contains_key(&info.id) {
            return self.reply(
                reply,
                Err(CommandError::Conflict("the operator already has a session".into())),
            );
        }
        if !info.enabled {
            return self.reply(reply, Err(CommandError::Conflict("the operator is disabled".into())));
        }
        if self.draining {
            return self.reply(reply, Err(CommandError::Conflict("the dialer is shutting down".into())));
        }
        let op = info.id;
        self.ari(
            AriOp::Originate {
                channel: channel.clone(),
                endpoint: info.endpoint.clone(),
                caller_id: Some(format!("\"{0}\" <{0}>", self.cfg.session_caller_id)),
                timeout_secs: self.cfg.operator_ring.as_secs() as u32,
                app_args: vec!["session".to_owned(), op.to_string()],
                variables: Default::default(),
            },
            Report::Outcome,
        );
        let until = now.at + self.cfg.operator_ring;
        self.directory.insert(op, info.clone());
        let session = Session::new(
            info,
            channel.clone(),
            SessionState::Calling {
                until,
                reply: Some(reply),
            },
            now,
        );
        self.session_channels.insert(channel, op);
        self.sessions.insert(op, session);
    }

    /// A single call for an operator without a session: ring their phone; the customer is
    /// dialled when they answer.
    pub(super) fn ring_operator_for(&mut self, attempt: AttemptId, now: Now) {
        let Some(leg) = self.legs.get_mut(&attempt) else { return };
        let op = leg.operator.expect("single calls have their operator");
        leg.state = LegState::AwaitingOperator;
        leg.touched = now.at;
        let phone = leg.call.phone.clone();
        let Some(info) = self.directory.get(&op).cloned() else {
            let leg = self.legs.remove(&attempt).expect("present");
            self.finish_unstarted(leg, "the operator is unknown", now);
            return;
        };
        let channel = ChannelId::new(format!("single-op-{attempt}"));
        self.ari(
            AriOp::Originate {
                channel: channel.clone(),
                endpoint: info.endpoint.clone(),
                caller_id: Some(format!("\"{}\" <{phone}>", self.cfg.session_caller_id)),
                timeout_secs: self.cfg.operator_ring.as_secs() as u32,
                app_args: vec!["single-operator".to_owned(), attempt.to_string()],
                variables: Default::default(),
            },
            Report::Failure,
        );
        let until = now.at + self.cfg.operator_ring;
        let mut session = Session::new(info, channel.clone(), SessionState::Calling { until, reply: None }, now);
        session.per_call = Some(attempt);
        self.session_channels.insert(channel, op);
        self.sessions.insert(op, session);
    }

    /// Ends a single call whose customer was never dialled: canceled, the lead is not charged.
    pub(super) fn finish_unstarted(&mut self, mut leg: super::Leg, why: &str, now: Now) {
        if leg.stop.is_none() {
            leg.stop = Some(super::legs::Stop {
                by: EndedBy::Operator,
                why: StopWhy::NotPlaced(why.to_owned()),
            });
        }
        self.finish(leg, None, now);
    }

    /// A channel we do not know entered the application: an operator logging in by feature
    /// code, or something not ours.
    pub(super) fn on_unknown_stasis_start(&mut self, channel: ChannelId, start: &StasisStart, now: Now) {
        if start.args.first().map(String::as_str) != Some("login") {
            tracing::debug!(channel = %channel, args = ?start.args, "a channel we do not own entered the app");
            return;
        }
        let endpoint = endpoint_of(&start.channel.name).to_owned();
        let known = self
            .directory
            .values()
            .find(|o| o.enabled && o.endpoint.eq_ignore_ascii_case(&endpoint))
            .cloned();
        match known {
            Some(info) => self.login(channel, info, start.channel.state == ChannelState::Up, now),
            None => self.out.push(super::Action::LookupOperator { channel, endpoint }),
        }
    }

    pub(super) fn on_operator_found(&mut self, channel: ChannelId, operator: Option<OperatorInfo>, now: Now) {
        match operator {
            Some(info) if info.enabled => {
                self.directory.insert(info.id, info.clone());
                // The dialplan answered before Stasis, so the channel is up.
                self.login(channel, info, true, now)
            }
            _ => {
                tracing::warn!(channel = %channel, "login from an endpoint that is no operator's");
                self.ari(
                    AriOp::Hangup {
                        channel,
                        reason: HangupReason::Rejected,
                    },
                    Report::Nothing,
                );
            }
        }
    }

    fn login(&mut self, channel: ChannelId, info: OperatorInfo, up: bool, now: Now) {
        if self.sessions.contains_key(&info.id) {
            tracing::warn!(operator.id = %info.id, "second session refused: the operator is already logged in");
            self.ari(
                AriOp::Hangup {
                    channel,
                    reason: HangupReason::Busy,
                },
                Report::Nothing,
            );
            return;
        }
        let op = info.id;
        let session = Session::new(info, channel.clone(), SessionState::Joining, now);
        self.session_channels.insert(channel.clone(), op);
        self.sessions.insert(op, session);
        self.join(op, up, now);
    }

    /// Answers the session's channel (if needed), makes its bridge and puts it there.
    fn join(&mut self, op: OperatorId, up: bool, now: Now) {
        let session = self.sessions.get_mut(&op).expect("caller inserted it");
        let was = std::mem::replace(&mut session.state, SessionState::Joining);
        session.touched = now.at;
        // A phone that answers at once can enter Stasis before the originate's own answer
        // arrives: the request that rang it is answered here, or it would wait for ever.
        let waiting = match was {
            SessionState::Calling { reply, .. } => reply,
            _ => None,
        };
        let channel = session.channel.clone();
        let bridge = match session.per_call {
            Some(attempt) => BridgeId::new(format!("single-{attempt}")),
            None => session_bridge(op, &channel),
        };
        session.bridge = Some(bridge.clone());
        let name = session.info.name.clone();
        if !up {
            self.ari(
                AriOp::Answer {
                    channel: channel.clone(),
                },
                Report::Failure,
            );
        }
        self.ari(
            AriOp::CreateBridge {
                bridge: bridge.clone(),
                name,
            },
            Report::Failure,
        );
        self.ari(AriOp::AddToBridge { bridge, channel }, Report::Outcome);
        if let Some(reply) = waiting {
            self.reply(reply, Ok(Answer::Done));
        }
    }

    pub(super) fn on_session_event(&mut self, op: OperatorId, channel: &ChannelId, event: Event, now: Now) {
        match event.kind {
            EventKind::StasisStart(start) => {
                let calling = matches!(self.sessions[&op].state, SessionState::Calling { .. });
                if calling {
                    self.join(op, start.channel.state == ChannelState::Up, now);
                }
            }
            EventKind::ChannelDtmfReceived(key) => {
                let press = (key.digit.clone(), event.timestamp.to_utc());
                let session = self.sessions.get_mut(&op).expect("routed here");
                if session.last_key.as_ref() == Some(&press) {
                    return;
                }
                session.last_key = Some(press);
                self.on_key(op, &key.digit, now)
            }
            EventKind::ChannelDestroyed(d) => {
                let how = if d.cause == CAUSE_RTP_TIMEOUT {
                    SessionEnd::Dead(format!(
                        "Asterisk ended the phone's call for lack of audio ({})",
                        d.cause_txt
                    ))
                } else {
                    SessionEnd::HungUp
                };
                self.end_session(op, how, false, now);
            }
            _ => {}
        }
        let _ = channel;
    }

    pub(super) fn on_session_ari_done(
        &mut self,
        op: OperatorId,
        call: AriOp,
        result: Result<AriReply, AriFail>,
        now: Now,
    ) {
        match (call, result) {
            (AriOp::Originate { .. }, Ok(_)) => {
                if let Some(SessionState::Calling { reply, .. }) = self.sessions.get_mut(&op).map(|s| &mut s.state) {
                    if let Some(reply) = reply.take() {
                        self.reply(reply, Ok(Answer::Done));
                    }
                }
            }
            (AriOp::Originate { .. }, Err(fail)) => {
                let Some(session) = self.sessions.remove(&op) else {
                    return;
                };
                self.session_channels.remove(&session.channel);
                if let SessionState::Calling { reply: Some(reply), .. } = session.state {
                    // Asterisk answered and refused (no such endpoint, a technology it does not
                    // know): the operator's settings are at fault, not the service.
                    let error = match &fail {
                        AriFail::Refused(..) => CommandError::Conflict(format!(
                            "Asterisk cannot ring the operator's phone {}: {fail}; check the operator's endpoint",
                            session.info.endpoint
                        )),
                        _ => CommandError::Failed(format!("could not call the operator's phone: {fail}")),
                    };
                    self.reply(reply, Err(error));
                }
                if let Some(attempt) = session.per_call {
                    if let Some(leg) = self.legs.remove(&attempt) {
                        self.finish_unstarted(leg, "the operator's phone could not be rung", now);
                    }
                }
            }
            (AriOp::AddToBridge { .. }, Ok(_)) => {
                if self.sessions.get(&op).map(|s| &s.state) != Some(&SessionState::Joining) {
                    return;
                }
                let session = &self.sessions[&op];
                match session.per_call {
                    Some(attempt) => {
                        self.set_session_state(op, SessionState::Reserved { attempt }, now);
                        self.create_customer(attempt, now);
                    }
                    None => {
                        let endpoint = session.info.endpoint.clone();
                        let name = session.info.name.clone();
                        if let Some(s) = self.sessions.get_mut(&op) {
                            s.media = Media::new(now.at);
                        }
                        self.set_session_state(op, SessionState::Ready, now);
                        self.ari(
                            AriOp::Subscribe {
                                source: format!("endpoint:{endpoint}"),
                            },
                            Report::Nothing,
                        );
                        tracing::info!(operator.id = %op, operator = name, "operator session started");
                        self.operator_free(op, now);
                    }
                }
            }
            (AriOp::Answer { .. } | AriOp::CreateBridge { .. } | AriOp::AddToBridge { .. }, Err(fail)) => {
                tracing::error!(operator.id = %op, error = %fail, "could not set up the operator's bridge");
                self.end_session(
                    op,
                    SessionEnd::Dead(format!("the session could not be set up: {fail}")),
                    true,
                    now,
                );
            }
            (AriOp::RtpReceived { .. }, result) => self.on_media(op, result, now),
            (AriOp::Hangup { .. }, Err(AriFail::NotFound)) => {
                self.end_session(op, SessionEnd::Dead("the phone's channel is gone".into()), false, now)
            }
            _ => {}
        }
    }

    fn on_media(&mut self, op: OperatorId, result: Result<AriReply, AriFail>, now: Now) {
        let silence = self.cfg.media_silence;
        let Some(session) = self.sessions.get_mut(&op) else {
            return;
        };
        let alive = match result {
            Ok(AriReply::Packets { count, at }) => {
                let at = at.max(session.media.checked_at);
                let alive = session.media.sample(count, at);
                if alive || at.saturating_duration_since(session.media.heard_at) < silence {
                    alive
                } else {
                    let secs = silence.as_secs_f64();
                    self.end_session(
                        op,
                        SessionEnd::Dead(format!("no audio from the phone for {secs:.0} s")),
                        true,
                        now,
                    );
                    return;
                }
            }
            Err(AriFail::NotFound) => {
                self.end_session(op, SessionEnd::Dead("the phone's channel is gone".into()), true, now);
                return;
            }
            // 403: the channel has no RTP (not a SIP phone): the check cannot judge it.
            Ok(_) | Err(_) => {
                session.media.heard_at = now.at;
                session.media.checked_at = now.at;
                session.media.suspect = false;
                true
            }
        };
        if let SessionState::Reserved { attempt } = self.sessions[&op].state {
            self.media_verdict(attempt, op, alive, now);
        }
    }

    /// A qualify result for an endpoint (`ContactStatusChange`).
    pub(super) fn on_contact_status(&mut self, endpoint: &str, status: &str, now: Now) {
        if status != "Unreachable" {
            return;
        }
        let ops: Vec<OperatorId> = self
            .sessions
            .values()
            .filter(|s| s.info.endpoint.eq_ignore_ascii_case(endpoint))
            .map(|s| s.info.id)
            .collect();
        for op in ops {
            self.end_session(
                op,
                SessionEnd::Dead("the phone stopped answering qualify requests".into()),
                true,
                now,
            );
        }
    }

    fn on_key(&mut self, op: OperatorId, key: &str, now: Now) {
        let Some(session) = self.sessions.get(&op) else { return };
        match (&session.state, key) {
            (SessionState::Ready, "0") => {
                let _ = self.set_paused(op, true, now);
            }
            (SessionState::Paused, "0") => {
                let _ = self.set_paused(op, false, now);
            }
            (SessionState::OnCall { attempt }, "#") => {
                let attempt = *attempt;
                self.stop_leg(attempt, EndedBy::Operator, StopWhy::OperatorEnded, now);
            }
            (SessionState::WrapUp { .. }, "#") => self.end_wrap_up(op, now),
            (SessionState::Offered(_), "1") => self.offer_action(op, OfferAction::Dial, None, now),
            (SessionState::Offered(_), "9") => {
                self.offer_action(op, OfferAction::Skip("skipped with a phone key".into()), None, now)
            }
            (SessionState::WrapUp { attempt, keys, .. }, key) => {
                let Some(result) = keys.disposition_keys.get(key).copied() else {
                    tracing::debug!(operator.id = %op, key, "key means nothing in wrap-up");
                    return;
                };
                let attempt = *attempt;
                tracing::info!(attempt.id = %attempt, result = result.as_str(), "disposition by phone key");
                self.persist(Write::Disposition { attempt, result });
                self.end_wrap_up(op, now);
            }
            _ => tracing::debug!(operator.id = %op, key, "key ignored in this state"),
        }
    }

    pub(super) fn set_paused(&mut self, op: OperatorId, paused: bool, now: Now) -> Result<OperatorState, CommandError> {
        let Some(session) = self.sessions.get(&op) else {
            return Err(CommandError::Conflict("the operator has no session".into()));
        };
        if !session.takes_calls() || !matches!(session.state, SessionState::Ready | SessionState::Paused) {
            return Err(CommandError::Conflict(format!(
                "the operator is {}; pause or resume between calls",
                session.wire_state()
            )));
        }
        let next = if paused {
            SessionState::Paused
        } else {
            SessionState::Ready
        };
        let changed = session.state != next;
        if changed {
            self.set_session_state(op, next.clone(), now);
        }
        if next == SessionState::Ready {
            self.operator_free(op, now);
        }
        Ok(self.sessions[&op].wire_state())
    }

    pub(super) fn disposition_done(&mut self, attempt: AttemptId, now: Now) {
        let op = self
            .sessions
            .values()
            .find(|s| matches!(&s.state, SessionState::WrapUp { attempt: a, .. } if *a == attempt))
            .map(|s| s.info.id);
        if let Some(op) = op {
            self.end_wrap_up(op, now);
        }
    }

    fn end_wrap_up(&mut self, op: OperatorId, now: Now) {
        if !matches!(
            self.sessions.get(&op).map(|s| &s.state),
            Some(SessionState::WrapUp { .. })
        ) {
            return;
        }
        self.set_session_state(op, SessionState::Ready, now);
        self.operator_free(op, now);
    }

    // ---- preview ---------------------------------------------------------------------------

    pub(super) fn take_offer(&mut self, offer: Offer, now: Now) -> bool {
        let Some(session) = self.sessions.get(&offer.operator) else {
            return false;
        };
        if self.draining || !session.takes_calls() || session.state != SessionState::Ready {
            return false;
        }
        let preview = offer.spec.preview;
        let op = offer.operator;
        tracing::info!(operator.id = %op, lead.id = %offer.lead, "lead offered for preview");
        let offered = Offered {
            until: now.at + Duration::from_secs(u64::from(preview.reservation_secs)),
            auto_at: (preview.auto_dial_secs > 0)
                .then(|| now.at + Duration::from_secs(u64::from(preview.auto_dial_secs))),
            offer,
        };
        self.set_session_state(op, SessionState::Offered(offered), now);
        true
    }

    pub(super) fn offer_action(&mut self, op: OperatorId, action: OfferAction, reply: Option<ReplyTo>, now: Now) {
        let offered = match self.sessions.get(&op).map(|s| &s.state) {
            Some(SessionState::Offered(o)) => o.clone(),
            _ => {
                if let Some(reply) = reply {
                    self.reply(
                        reply,
                        Err(CommandError::Conflict("no lead is offered to this operator".into())),
                    );
                }
                return;
            }
        };
        let offer = offered.offer;
        match action {
            OfferAction::Dial => {
                let info = self.sessions[&op].info.clone();
                let call = SingleCall {
                    attempt: AttemptId::new(),
                    operator: info,
                    phone: offer.phone.clone(),
                    lead: Some(offer.lead),
                    campaign: Some(offer.campaign),
                    spec: offer.spec.clone(),
                    correlation_id: None,
                    crm: serde_json::json!({}),
                };
                let reply = reply.unwrap_or(super::ReplyTo(u64::MAX));
                self.place_for_operator(call, CallKind::Preview, reply, now);
            }
            OfferAction::Skip(reason) => {
                tracing::info!(operator.id = %op, lead.id = %offer.lead, reason, "offered lead skipped");
                self.persist(Write::SkipReserved {
                    lead: offer.lead,
                    operator: op,
                    delay_secs: offer.spec.preview.skip_delay_secs,
                    reason,
                });
                self.set_session_state(op, SessionState::Ready, now);
                if let Some(reply) = reply {
                    self.reply(reply, Ok(Answer::Attempt(None)));
                }
                self.operator_free(op, now);
            }
        }
    }

    /// Frees the operator's offered lead; the operator goes to `next`.
    pub(super) fn release_offer(&mut self, op: OperatorId, next: SessionState, now: Now) {
        let Some(SessionState::Offered(o)) = self.sessions.get(&op).map(|s| s.state.clone()) else {
            return;
        };
        self.persist(Write::ReleaseReservation {
            lead: o.offer.lead,
            operator: op,
        });
        self.set_session_state(op, next, now);
    }

    pub(super) fn session_timers(&mut self, now: Now) {
        let cfg = self.cfg.clone();
        let mut auto_dial = Vec::new();
        let mut lapsed = Vec::new();
        let mut wrapped = Vec::new();
        let mut unanswered = Vec::new();
        let mut check = Vec::new();
        for s in self.sessions.values() {
            match &s.state {
                SessionState::Offered(o) if o.auto_at.is_some_and(|t| t <= now.at) => auto_dial.push(s.info.id),
                SessionState::Offered(o) if o.until <= now.at => lapsed.push(s.info.id),
                SessionState::WrapUp { until, .. } if *until <= now.at => wrapped.push(s.info.id),
                SessionState::Calling { until, .. } if *until + Duration::from_secs(5) <= now.at => {
                    unanswered.push(s.info.id)
                }
                _ => {}
            }
            if !cfg.media_check.is_zero() && s.media_checked() && s.media.asked_at + cfg.media_check <= now.at {
                check.push(s.info.id);
            }
        }
        for op in auto_dial {
            self.offer_action(op, OfferAction::Dial, None, now);
        }
        for op in lapsed {
            tracing::info!(operator.id = %op, "offer lapsed; operator paused");
            self.release_offer(op, SessionState::Paused, now);
            self.wake();
        }
        for op in wrapped {
            self.end_wrap_up(op, now);
        }
        for op in unanswered {
            // Asterisk's ring timeout should have ended it; make sure.
            if let Some(s) = self.sessions.get(&op) {
                let channel = s.channel.clone();
                self.hangup(&channel);
            }
            self.end_session(op, SessionEnd::HungUp, false, now);
        }
        for op in check {
            let Some(s) = self.sessions.get_mut(&op) else { continue };
            s.media.asked_at = now.at;
            let channel = s.channel.clone();
            self.ari(AriOp::RtpReceived { channel }, Report::Outcome);
        }
    }

    /// A single call's own session ends with the call: its leg and bridge go.
    pub(super) fn end_per_call_session(&mut self, op: OperatorId, now: Now) {
        self.end_session(op, SessionEnd::HungUp, true, now);
    }

    /// Ends a session: its channel (when `hang_up`) and bridge go, the operator is offline,
    /// and what they held is handed on.
    pub(super) fn end_session(&mut self, op: OperatorId, how: SessionEnd, hang_up: bool, now: Now) {
        let Some(session) = self.sessions.remove(&op) else {
            return;
        };
        self.session_channels.remove(&session.channel);
        if hang_up {
            self.hangup(&session.channel);
        }
        if let SessionEnd::Dead(reason) = &how {
            tracing::warn!(operator.id = %op, operator = session.info.name, reason, "operator's phone is dead; session ended");
            self.observe(Observation::SessionDead {
                operator: op,
                reason: reason.clone(),
            });
            self.talked_to_nobody(&session, reason);
        } else {
            tracing::info!(operator.id = %op, operator = session.info.name, "operator session ended");
        }
        if let Some(bridge) = &session.bridge {
            self.ari(AriOp::DestroyBridge { bridge: bridge.clone() }, Report::Nothing);
        }
        if session.per_call.is_none() && session.announced {
            self.ari(
                AriOp::Unsubscribe {
                    source: format!("endpoint:{}", session.info.endpoint),
                },
                Report::Nothing,
            );
        }
        if session.announced {
            self.persist(Write::Operator {
                operator: op,
                state: OperatorState::Offline,
                session: None,
            });
        }
        match session.state {
            SessionState::Calling { reply, .. } => {
                if let Some(reply) = reply {
                    self.reply(
                        reply,
                        Err(CommandError::Failed("the operator's phone did not answer".into())),
                    );
                }
                tracing::info!(operator.id = %op, "operator did not answer the session call");
                if let Some(attempt) = session.per_call {
                    if let Some(leg) = self.legs.remove(&attempt) {
                        self.finish_unstarted(leg, "the operator did not answer", now);
                    }
                }
            }
            SessionState::Offered(o) => self.persist(Write::ReleaseReservation {
                lead: o.offer.lead,
                operator: op,
            }),
            SessionState::Reserved { attempt } | SessionState::OnCall { attempt } => {
                self.operator_gone_from(attempt, op, &how, session.per_call.is_some(), now)
            }
            SessionState::Joining if session.per_call.is_some() => {
                if let Some(leg) = session.per_call.and_then(|a| self.legs.remove(&a)) {
                    self.finish_unstarted(leg, "the operator's phone could not be joined", now);
                }
            }
            _ => {}
        }
        self.drop_orphaned_calls(now);
        self.wake();
    }

    /// A dead phone's last customer, if their call already ended but was put through when (or
    /// just before) the phone went silent: no check can see a phone die in the milliseconds
    /// before a bridge, so the call is recorded for what it was, `operator-lost`, not
    /// `success`, and the lead is called again. A call still up is handled by
    /// [`Core::operator_gone_from`].
    fn talked_to_nobody(&mut self, session: &Session, reason: &str) {
        let Some((attempt, bridged)) = session.last_bridged else {
            return;
        };
        if self.legs.contains_key(&attempt) || bridged + TALK_BEFORE_SILENCE < session.media.sent_until {
            return;
        }
        let ms = |d: Duration| d.as_millis();
        let reason = if bridged >= session.media.sent_until {
            format!(
                "the operator's phone had gone silent {} ms before the customer was put through ({reason})",
                ms(bridged - session.media.sent_until)
            )
        } else {
            format!(
                "the operator's phone went silent {} ms after the customer was put through ({reason})",
                ms(session.media.sent_until - bridged)
            )
        };
        tracing::warn!(attempt.id = %attempt, operator.id = %session.info.id, reason, "the customer talked to nobody");
        self.persist(Write::OperatorLost { attempt, reason });
    }

    /// The operator of a live leg is gone: a campaign customer waits for the next operator
    /// (the phone died) or is hung up (the operator hung up); a preview or single call ends.
    fn operator_gone_from(&mut self, attempt: AttemptId, op: OperatorId, how: &SessionEnd, per_call: bool, now: Now) {
        let Some(leg) = self.legs.get(&attempt) else { return };
        let dead = matches!(how, SessionEnd::Dead(_));
        match (leg.state.clone(), leg.operator.is_some()) {
            (LegState::Connecting { .. }, false) => self.connection_failed(attempt, op, now),
            (
                LegState::Bridged {
                    answered, recording, ..
                },
                preassigned,
            ) if dead => {
                let margin = self.cfg.abandon_margin;
                let leg = self.legs.get_mut(&attempt).expect("present");
                let limit = Duration::from_millis(leg.call.spec.connect_limit_ms).saturating_sub(margin);
                leg.lost = Some(op);
                leg.tried.push(op);
                leg.state = LegState::Waiting {
                    answered,
                    deadline: now.at + limit,
                };
                leg.touched = now.at;
                if let Some(name) = recording {
                    self.ari(AriOp::StopRecording { name }, Report::Nothing);
                }
                self.record(attempt, Some(crate::calls::AttemptStatus::InProgress), super::Change {
                        reason: Some(format!("operator {op}'s phone died during the call")),
                        detail: Some(serde_json::json!({ "operator_lost": op, "why": match how { SessionEnd::Dead(r) => r.clone(), SessionEnd::HungUp => String::new() } })),
                        ..super::Change::default()
                    },
                );
                // A preview or single call was for this operator only.
                let alone = preassigned
                    || per_call
                    || (!self.connect_or_wait(attempt, now) && !self.may_take(&self.legs[&attempt].call.spec));
                if alone {
                    self.abandon(attempt, now);
                }
            }
            _ => self.stop_leg(attempt, EndedBy::Operator, StopWhy::OperatorEnded, now),
        }
    }
}
