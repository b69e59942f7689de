//! Rebuilding the core's state: from the database at start-up ([`Restored`]: the live attempts
//! and sessions this instance held), and from Asterisk after every (re)connect
//! ([`AsteriskView`]: the channels and bridges that exist). Asterisk is the truth for what is
//! live: a call whose channel is still there is adopted as it is (a conversation stays up, a
//! ringing call is followed, a waiting customer is connected or given the message); only a call
//! whose channel is gone is closed, "ended while obzvon was away".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::legs::{Call, CallKind, Leg, LegState};
use super::sessions::{Media, Session, SessionEnd};
use super::{AriOp, Core, Now, OperatorInfo, Report, SessionState, Write};
use crate::ari::models::ChannelState;
use crate::calls::AttemptStatus;
use crate::campaigns::CampaignSpec;
use crate::ids::{AttemptId, BridgeId, ChannelId, OperatorId};
use crate::operators::OperatorState;

/// What the database says this instance held.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub legs: Vec<RestoredLeg>,
    pub sessions: Vec<RestoredSession>,
}

#[derive(Debug, Clone)]
pub struct RestoredLeg {
    pub call: Call,
    pub status: AttemptStatus,
    /// Preview and single calls: the operator they were placed for.
    pub operator: Option<OperatorId>,
    pub dialed: bool,
    pub answered_at: Option<DateTime<Utc>>,
    pub bridge: Option<BridgeId>,
    /// Answering-machine detection's verdict, if it came back before the restart.
    pub amd_status: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RestoredSession {
    pub info: OperatorInfo,
    pub channel: ChannelId,
    pub bridge: BridgeId,
    pub state: OperatorState,
    pub since: DateTime<Utc>,
    /// The operator's latest attempt (the one on the line or being wrapped up).
    pub attempt: Option<AttemptId>,
    /// That attempt's campaign settings (wrap-up time, disposition keys).
    pub spec: Option<Arc<CampaignSpec>>,
}

/// What Asterisk holds, read after a (re)connect.
#[derive(Debug, Clone, Default)]
pub struct AsteriskView {
    /// When the read began: state changes the core made after it are newer than the view.
    pub taken_at: Option<Instant>,
    pub channels: HashMap<ChannelId, ChannelFacts>,
    /// Bridge → its channels.
    pub bridges: HashMap<BridgeId, Vec<ChannelId>>,
}

#[derive(Debug, Clone)]
pub struct ChannelFacts {
    pub state: ChannelState,
    pub name: String,
    /// In our Stasis application (not only subscribed to).
    pub in_app: bool,
    /// `Stasis` arguments of a channel that entered the application from the dialplan.
    pub app_data: Option<String>,
}

impl AsteriskView {
    fn bridge_of(&self, channel: &ChannelId) -> Option<&BridgeId> {
        self.bridges.iter().find(|(_, ch)| ch.contains(channel)).map(|(b, _)| b)
    }
}

impl Core {
    /// Loads what the database says; nothing is trusted until [`Core::reconcile`] confirms it
    /// against Asterisk (until then nobody counts as ready).
    pub(super) fn restore(&mut self, restored: Restored, now: Now) {
        for r in restored.sessions {
            let op = r.info.id;
            let state = match r.state {
                OperatorState::Paused => SessionState::Paused,
                OperatorState::OnCall | OperatorState::Reserved => match r.attempt {
                    Some(attempt) if restored.legs.iter().any(|l| l.call.attempt == attempt) => {
                        if r.state == OperatorState::OnCall {
                            SessionState::OnCall { attempt }
                        } else {
                            SessionState::Reserved { attempt }
                        }
                    }
                    _ => {
                        // A preview offer (or a call that ended) is not carried over.
                        self.persist(Write::ReleaseReservationsOf { operator: op });
                        SessionState::Ready
                    }
                },
                OperatorState::WrapUp => match (r.attempt, r.spec.clone()) {
                    (Some(attempt), Some(keys)) => {
                        let end = r.since + chrono::Duration::seconds(i64::from(keys.wrap_up_secs));
                        SessionState::WrapUp {
                            attempt,
                            campaign: None,
                            until: now.instant_of(end),
                            keys,
                        }
                    }
                    _ => SessionState::Ready,
                },
                _ => SessionState::Ready,
            };
            self.directory.insert(op, r.info.clone());
            self.session_channels.insert(r.channel.clone(), op);
            let since = now.instant_of(r.since);
            // A session made for one single call is named after its attempt.
            let per_call = r
                .channel
                .as_str()
                .strip_prefix("single-op-")
                .and_then(|a| a.parse().ok());
            self.sessions.insert(
                op,
                Session {
                    info: r.info,
                    channel: r.channel,
                    bridge: Some(r.bridge),
                    // A session made for one single call is named after its attempt.
                    per_call,
                    state,
                    since,
                    touched: now.at,
                    announced: true,
                    last_key: None,
                    media: Media::new(now.at),
                    last_bridged: None,
                },
            );
        }
        for r in restored.legs {
            let attempt = r.call.attempt;
            let limit = Duration::from_millis(r.call.spec.connect_limit_ms).saturating_sub(self.cfg.abandon_margin);
            let state = match (r.status, r.answered_at) {
                (AttemptStatus::InProgress, Some(answered)) => {
                    match (r.operator.or_else(|| self.operator_of_bridge(&r.bridge)), &r.bridge) {
                        (Some(operator), Some(bridge)) => LegState::Bridged {
                            answered,
                            operator,
                            bridge: bridge.clone(),
                            recording: None,
                        },
                        _ => LegState::Waiting {
                            answered,
                            deadline: now.instant_of(answered) + limit,
                        },
                    }
                }
                // Answered, sent to detection and no verdict yet: it comes back to Stasis.
                (_, Some(answered))
                    if r.call.spec.amd.is_on() && r.call.kind == CallKind::Campaign && r.amd_status.is_none() =>
                {
                    LegState::Detecting {
                        answered,
                        deadline: now.instant_of(answered) + limit,
                        give_up: now.at + r.call.spec.amd.limit(),
                    }
                }
                (_, Some(answered)) => LegState::Waiting {
                    answered,
                    deadline: now.instant_of(answered) + limit,
                },
                (AttemptStatus::Ringing, None) => LegState::Ringing,
                _ => LegState::Dialing { placed: true },
            };
            let mut leg = Leg::new(r.call, state, now);
            leg.operator = r.operator.filter(|_| leg.call.kind != CallKind::Campaign);
            leg.unconfirmed = r.status == AttemptStatus::Init && !r.dialed;
            leg.persisted = r.status;
            self.legs.insert(attempt, leg);
        }
    }

    fn operator_of_bridge(&self, bridge: &Option<BridgeId>) -> Option<OperatorId> {
        let bridge = bridge.as_ref()?;
        self.sessions
            .values()
            .find(|s| s.bridge.as_ref() == Some(bridge))
            .map(|s| s.info.id)
    }

    /// Confirms every leg and session against what Asterisk holds.
    pub(super) fn reconcile(&mut self, view: AsteriskView, now: Now) {
        let taken_at = view.taken_at.unwrap_or(now.at);
        // What the view can judge: legs and sessions that did not change after it was read.
        // Chosen before anything changes, since settling one may touch another.
        let legs: Vec<AttemptId> = self
            .legs
            .values()
            .filter(|l| l.touched <= taken_at)
            .map(|l| l.call.attempt)
            .collect();
        let sessions: Vec<OperatorId> = self
            .sessions
            .values()
            .filter(|s| s.touched <= taken_at)
            .map(|s| s.info.id)
            .collect();
        // Legs first: a leg's operator is read from the bridges as they are, and a session
        // that turns out dead then hands its customer on.
        self.reconcile_legs(&view, legs, now);
        self.reconcile_sessions(&view, sessions, now);
        self.adopt_logins(&view, now);
        self.synced = true;
        // Waiting customers: connected now if someone is free, else given the message when due.
        let waiting: Vec<AttemptId> = self
            .legs
            .values()
            .filter(|l| matches!(l.state, LegState::Waiting { .. }))
            .map(|l| l.call.attempt)
            .collect();
        for attempt in waiting {
            if !self.connect_or_wait(attempt, now) {
                if let Some(LegState::Waiting { deadline, .. }) = self.legs.get(&attempt).map(|l| &l.state) {
                    if *deadline <= now.at {
                        self.abandon(attempt, now);
                    }
                }
            }
        }
        self.drop_orphaned_calls(now);
        tracing::info!(
            calls = self.legs.len(),
            sessions = self.sessions.len(),
            "reconciled with Asterisk"
        );
        self.wake();
    }

    fn reconcile_sessions(&mut self, view: &AsteriskView, ops: Vec<OperatorId>, now: Now) {
        for op in ops {
            let Some(session) = self.sessions.get(&op) else {
                continue;
            };
            let present = view.channels.get(&session.channel);
            match (&session.state, present) {
                // Our originate to the phone is in flight or ringing.
                (SessionState::Calling { .. }, None) if session.touched + Duration::from_secs(2) > now.at => {}
                (SessionState::Calling { .. } | SessionState::Joining, None) => {
                    self.end_session(op, SessionEnd::HungUp, false, now)
                }
                (SessionState::Calling { .. } | SessionState::Joining, Some(_)) => {}
                (_, None) => self.end_session(
                    op,
                    SessionEnd::Dead("the phone's call ended while obzvon was away".into()),
                    false,
                    now,
                ),
                (_, Some(_)) => {
                    let in_bridge = session
                        .bridge
                        .as_ref()
                        .and_then(|b| view.bridges.get(b))
                        .is_some_and(|members| members.contains(&session.channel));
                    if !in_bridge {
                        self.end_session(op, SessionEnd::Dead("the session's bridge is gone".into()), true, now);
                    } else if session.per_call.is_none() && session.announced {
                        let endpoint = session.info.endpoint.clone();
                        self.ari(
                            AriOp::Subscribe {
                                source: format!("endpoint:{endpoint}"),
                            },
                            Report::Nothing,
                        );
                    }
                }
            }
        }
    }

    fn reconcile_legs(&mut self, view: &AsteriskView, attempts: Vec<AttemptId>, now: Now) {
        for attempt in attempts {
            let Some(leg) = self.legs.get(&attempt) else { continue };
            let channel = leg.channel();
            let facts = view.channels.get(&channel);
            match (&leg.state, facts) {
                // Something is in flight for these; its answer settles them (a connection
                // that never answers is given up by its own timer).
                (
                    LegState::Creating
                    | LegState::AwaitingOperator
                    | LegState::Dialing { placed: false }
                    | LegState::Connecting { .. },
                    _,
                ) => {}
                (_, None) => {
                    let leg = self.legs.remove(&attempt).expect("present");
                    tracing::warn!(attempt.id = %attempt, "the call ended while obzvon was away");
                    self.finish(leg, None, now);
                }
                (_, Some(facts)) => {
                    // Its events reach this application whatever happened to the originate's
                    // subscription.
                    if !facts.in_app {
                        self.ari(
                            AriOp::Subscribe {
                                source: format!("channel:{channel}"),
                            },
                            Report::Nothing,
                        );
                    }
                    let facts = facts.clone();
                    self.adopt_leg(attempt, &facts, view.bridge_of(&channel).cloned(), now);
                }
            }
        }
    }

    /// A leg whose channel exists: its state from what Asterisk shows.
    fn adopt_leg(&mut self, attempt: AttemptId, facts: &ChannelFacts, bridge: Option<BridgeId>, now: Now) {
        let margin = self.cfg.abandon_margin;
        let owner = bridge.as_ref().and_then(|b| {
            self.sessions
                .values()
                .find(|s| s.bridge.as_ref() == Some(b))
                .map(|s| (s.info.id, s.per_call))
        });
        let leg = self.legs.get_mut(&attempt).expect("caller checked");
        leg.unconfirmed = false;
        if facts.state != ChannelState::Up {
            if matches!(leg.state, LegState::Dialing { .. }) && facts.state == ChannelState::Ringing {
                leg.state = LegState::Ringing;
            }
            return;
        }
        let limit = Duration::from_millis(leg.call.spec.connect_limit_ms).saturating_sub(margin);
        let answered = leg.answered().unwrap_or(now.wall);
        match (owner, &leg.state) {
            (Some((op, _)), _) => {
                let bridge = bridge.expect("owner found by it");
                if !matches!(leg.state, LegState::Bridged { .. }) {
                    leg.state = LegState::Waiting {
                        answered,
                        deadline: now.at + limit,
                    };
                    self.bridged(attempt, op, bridge, now);
                } else if self
                    .sessions
                    .get(&op)
                    .is_some_and(|s| s.state != SessionState::OnCall { attempt })
                {
                    self.set_session_state(op, SessionState::OnCall { attempt }, now);
                }
            }
            (None, LegState::Abandoning { .. }) => {}
            // Still in our dialplan's answering-machine detection: its verdict comes back.
            (None, LegState::Detecting { .. }) if !facts.in_app => {}
            (None, LegState::Bridged { operator, .. }) => {
                // Connected before, and its operator is gone: the next operator, or the message.
                let lost = *operator;
                leg.lost = Some(lost);
                leg.tried.push(lost);
                leg.state = LegState::Waiting {
                    answered,
                    deadline: now.at + limit,
                };
                leg.touched = now.at;
            }
            (None, LegState::Waiting { .. } | LegState::Connecting { .. }) => {
                let deadline = now.instant_of(answered) + limit;
                leg.state = LegState::Waiting { answered, deadline };
            }
            (None, _) => {
                // Answered while we were away: the deadline counts from now's knowledge of it.
                let kind = leg.call.kind;
                leg.state = LegState::Waiting {
                    answered,
                    deadline: now.instant_of(answered) + limit,
                };
                if kind != CallKind::Campaign {
                    self.abandon(attempt, now);
                }
            }
        }
    }

    /// A phone that dialled the login code while we were away is in the application without
    /// a session: it logs in now.
    fn adopt_logins(&mut self, view: &AsteriskView, now: Now) {
        for (channel, facts) in &view.channels {
            if !facts.in_app || facts.state != ChannelState::Up {
                continue;
            }
            if self.session_channels.contains_key(channel)
                || channel.attempt().is_some_and(|a| self.legs.contains_key(&a))
            {
                continue;
            }
            let is_login = facts
                .app_data
                .as_deref()
                .is_some_and(|d| d.split(',').nth(1) == Some("login"));
            if !is_login || view.bridge_of(channel).is_some() {
                continue;
            }
            let start = crate::ari::events::StasisStart {
                args: vec!["login".to_owned()],
                channel: crate::ari::models::Channel::bare(channel.as_str(), &facts.name, facts.state),
                replace_channel: None,
            };
            self.on_unknown_stasis_start(channel.clone(), &start, now);
        }
    }
}
