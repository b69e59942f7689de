//! The pure core of the call engine: every live customer leg and operator session of this
//! instance as explicit state machines, advanced by [`Core::handle`] with one [`Input`] and the
//! time, returning the [`Action`]s to run. No `await`, no I/O, no clock of its own: the shell
//! (`engine::shell`) runs the actions against ARI and the journal and feeds their outcomes back
//! as inputs, so every transition can be driven by fabricated events and times in unit and
//! property tests.
//!
//! Campaign, preview and single calls are one machine ([`Leg`]): a campaign leg is dialled
//! alone and given an operator when the customer answers; a preview or single call is dialled
//! into the operator's bridge, so the customer's answer is the connection. A single call to an
//! operator without a session first rings the operator's phone, which becomes a session for
//! that one call.

mod legs;
mod reconcile;
mod sessions;

pub mod choose;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ari::{Event, HangupReason};
use crate::calls::{AttemptResult, AttemptStatus, EndedBy};
use crate::campaigns::spec::PacingMode;
use crate::campaigns::CampaignSpec;
pub use crate::dialer::predictive::Outcome as PacingOutcome;
use crate::ids::{AttemptId, BridgeId, CampaignId, ChannelId, LeadId, OperatorId};
use crate::operators::OperatorState;

pub use legs::{accountcode, call_variables, Call, CallKind, Leg, LegState};
pub use reconcile::{AsteriskView, ChannelFacts, Restored, RestoredLeg, RestoredSession};
pub use sessions::{Offer, OfferAction, OperatorInfo, Session, SessionState};

/// The time an input is handled at: a monotonic instant for deadlines, the wall clock for
/// what is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

impl Now {
    pub fn real() -> Now {
        Now {
            at: Instant::now(),
            wall: Utc::now(),
        }
    }

    /// The instant at which wall-clock time `t` is (or was) reached.
    pub fn instant_of(&self, t: DateTime<Utc>) -> Instant {
        match (t - self.wall).to_std() {
            Ok(ahead) => self.at + ahead,
            Err(_) => self
                .at
                .checked_sub((self.wall - t).to_std().unwrap_or_default())
                .unwrap_or(self.at),
        }
    }
}

/// Engine settings (`[engine]` in the configuration).
#[derive(Debug, Clone)]
pub struct Config {
    pub instance: String,
    /// The abandon decision is taken this long before the campaign's connect limit, so the
    /// customer hears the message within the limit (ARI needs a moment to start it).
    pub abandon_margin: Duration,
    /// An abandoned customer is hung up after the message, or after this long at most.
    pub abandon_max: Duration,
    /// How long an operator's phone rings when we call it (REST login, single call).
    pub operator_ring: Duration,
    /// The caller ID an operator's phone shows when we ring it for a session.
    pub session_caller_id: String,
    /// How often each session's received media is read; zero turns the media check off.
    pub media_check: Duration,
    /// A session whose phone sent no media for this long is ended as dead.
    pub media_silence: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instance: "test".to_owned(),
            abandon_margin: Duration::from_millis(300),
            abandon_max: Duration::from_secs(15),
            operator_ring: Duration::from_secs(30),
            session_caller_id: "obzvon".to_owned(),
            media_check: Duration::from_secs(1),
            media_silence: Duration::from_secs(4),
        }
    }
}

/// A lead the scheduler claimed; its attempt row exists (`init`).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub attempt: AttemptId,
    pub lead: LeadId,
    pub campaign: CampaignId,
    pub phone: String,
    pub spec: Arc<CampaignSpec>,
    pub preferred_operator: Option<OperatorId>,
}

/// A single call (click-to-call) as the API hands it to the engine, checked (number valid,
/// not on DNC, operator known).
#[derive(Debug, Clone)]
pub struct SingleCall {
    pub attempt: AttemptId,
    pub operator: OperatorInfo,
    pub phone: String,
    pub lead: Option<LeadId>,
    /// A named campaign: its trunk, caller ID, limits and retry rules apply.
    pub campaign: Option<CampaignId>,
    /// The campaign's settings, or the `[dialer]` defaults for a call outside campaigns.
    pub spec: Arc<CampaignSpec>,
    pub correlation_id: Option<String>,
    pub crm: serde_json::Value,
}

/// Everything the core reacts to.
#[derive(Debug)]
pub enum Input {
    Event(Event),
    /// The ARI websocket is up (events flow again); a [`Input::Reconcile`] follows.
    AriConnected,
    /// The ARI websocket is down: events may be missed until the next reconcile.
    AriLost,
    /// What the database says this instance held, at start-up before anything else.
    Restore(Restored),
    /// What Asterisk holds, read after every (re)connect.
    Reconcile(AsteriskView),
    Command(Command),
    /// An ARI call the core asked to hear about finished.
    AriDone {
        op: AriOp,
        result: Result<AriReply, AriFail>,
    },
    /// A single or preview call's attempt row was written (or refused).
    AttemptCreated {
        attempt: AttemptId,
        result: Result<(), CreateFail>,
    },
    /// The operator a login came from, looked up by endpoint (None: no such enabled operator).
    OperatorFound {
        channel: ChannelId,
        operator: Option<OperatorInfo>,
    },
    /// The operators table, re-read.
    Directory(Vec<OperatorInfo>),
    /// Time passed (a deadline the core asked for, or a periodic wake-up).
    Tick,
    /// SIGTERM: stop dialling, let live calls finish.
    Drain,
}

/// Requests from the API, the scheduler and the AMQP consumer.
#[derive(Debug)]
pub enum Command {
    Dial(Box<Claimed>),
    StartSession {
        operator: OperatorInfo,
        channel: ChannelId,
        reply: ReplyTo,
    },
    EndSession {
        operator: OperatorId,
        reply: ReplyTo,
    },
    SetPaused {
        operator: OperatorId,
        paused: bool,
        reply: ReplyTo,
    },
    /// A disposition was written over REST: the operator's wrap-up for it ends.
    DispositionDone {
        attempt: AttemptId,
    },
    Cancel {
        attempt: AttemptId,
        reply: ReplyTo,
    },
    Single {
        call: Box<SingleCall>,
        reply: ReplyTo,
    },
    Offer {
        offer: Box<Offer>,
        reply: ReplyTo,
    },
    OfferAction {
        operator: OperatorId,
        action: OfferAction,
        reply: ReplyTo,
    },
}

/// Names the caller waiting for a command's answer; the shell keeps the channel to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyTo(pub u64);

/// The answer to a command.
pub type Reply = Result<Answer, CommandError>;

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Done,
    State(OperatorState),
    Attempt(Option<AttemptId>),
    Flag(bool),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

/// Why an attempt row could not be written.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateFail {
    NumberBusy,
    Database(String),
}

/// What the core asks the shell to do. ARI calls of one input run in order, in one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Ari(Vec<AriCall>),
    /// A durable state change: journaled, then written to PostgreSQL in order.
    Persist(Write),
    /// Insert a single or preview call's attempt; answered by [`Input::AttemptCreated`].
    CreateAttempt(NewAttempt),
    /// Find the operator of a login by endpoint; answered by [`Input::OperatorFound`].
    LookupOperator {
        channel: ChannelId,
        endpoint: String,
    },
    Reply(ReplyTo, Reply),
    /// Capacity may have appeared: the scheduler should look again.
    Wake,
    Observe(Observation),
    /// Another process took over the Stasis application: stop acting at once.
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AriCall {
    pub op: AriOp,
    pub report: Report,
    /// What the call is about: calls of one chain run in the order they were asked for, across
    /// inputs; calls of different chains run side by side.
    pub chain: Chain,
}

/// Whose ARI calls must keep their order: one customer leg, one operator session, or (for
/// what belongs to neither any more) one channel, bridge or subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Chain {
    Leg(AttemptId),
    Session(OperatorId),
    Channel(ChannelId),
    Bridge(BridgeId),
    Subscription(String),
}

/// Which outcomes of an ARI call come back as [`Input::AriDone`]. A failure of a call that is
/// reported stops the rest of its batch; an unreported failure is only logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Nothing,
    Failure,
    Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AriOp {
    Originate {
        channel: ChannelId,
        endpoint: String,
        caller_id: Option<String>,
        timeout_secs: u32,
        app_args: Vec<String>,
        variables: BTreeMap<String, String>,
    },
    /// A channel that is not dialled until [`AriOp::Dial`].
    Create {
        channel: ChannelId,
        endpoint: String,
        app_args: Vec<String>,
        variables: BTreeMap<String, String>,
    },
    Dial {
        channel: ChannelId,
        timeout_secs: u32,
    },
    Answer {
        channel: ChannelId,
    },
    Hangup {
        channel: ChannelId,
        reason: HangupReason,
    },
    CreateBridge {
        bridge: BridgeId,
        name: String,
    },
    AddToBridge {
        bridge: BridgeId,
        channel: ChannelId,
    },
    DestroyBridge {
        bridge: BridgeId,
    },
    Play {
        channel: ChannelId,
        media: String,
        playback: String,
    },
    PlayBridge {
        bridge: BridgeId,
        media: String,
        playback: String,
    },
    StopPlayback {
        playback: String,
    },
    Record {
        bridge: BridgeId,
        name: String,
    },
    StopRecording {
        name: String,
    },
    /// Leave Stasis for a dialplan location (the AMD hop, which comes back).
    Continue {
        channel: ChannelId,
        context: String,
    },
    /// Subscribe the application to an event source (`channel:ID`, `endpoint:PJSIP/op1`).
    Subscribe {
        source: String,
    },
    Unsubscribe {
        source: String,
    },
    /// Packets received on the channel's media so far.
    RtpReceived {
        channel: ChannelId,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AriReply {
    Ok,
    /// Packets received so far, and when Asterisk said so (a sample is judged by when it was
    /// taken, not by when the engine got round to it).
    Packets {
        count: u64,
        at: Instant,
    },
}

/// How an ARI call failed, as far as the core cares.
#[derive(Debug, Clone, PartialEq)]
pub enum AriFail {
    /// 404: the channel, bridge or playback does not exist (any more).
    NotFound,
    /// 409: the id is taken (an originate retried) or the state forbids it.
    Conflict,
    /// Another 4xx/5xx.
    Refused(u16, String),
    /// The request never reached Asterisk (connection refused): nothing happened.
    Unreachable(String),
    /// Sent, but no answer came (timeout, connection cut): it may or may not have happened.
    Unknown(String),
}

impl std::fmt::Display for AriFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AriFail::NotFound => f.write_str("not found"),
            AriFail::Conflict => f.write_str("conflict"),
            AriFail::Refused(status, m) => write!(f, "refused ({status}): {m}"),
            AriFail::Unreachable(m) => write!(f, "Asterisk unreachable: {m}"),
            AriFail::Unknown(m) => write!(f, "no answer from Asterisk: {m}"),
        }
    }
}

/// A state change for PostgreSQL. Serializable: it is journaled before it is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Write {
    /// Moves a live attempt to `to` (or stamps it) if it is in one of `from`.
    Attempt {
        attempt: AttemptId,
        from: Vec<AttemptStatus>,
        to: AttemptStatus,
        change: Change,
    },
    /// Ends a live attempt and moves its lead on (retry, exhausted, done...).
    Finish {
        attempt: AttemptId,
        status: AttemptStatus,
        change: Change,
    },
    Operator {
        operator: OperatorId,
        state: OperatorState,
        /// Set when a session starts: where it lives.
        session: Option<(ChannelId, BridgeId)>,
    },
    /// A disposition set with a phone key in wrap-up.
    Disposition { attempt: AttemptId, result: AttemptResult },
    /// A call that ended before the dialer learnt its operator's phone was already silent
    /// when the customer was put through: its result is `operator-lost`, not `success`.
    OperatorLost { attempt: AttemptId, reason: String },
    /// The lead reserved for an operator's preview is free again.
    ReleaseReservation { lead: LeadId, operator: OperatorId },
    /// Every lead reserved for the operator is free again (after a restart).
    ReleaseReservationsOf { operator: OperatorId },
    /// The operator skipped the offered lead; it comes back after `delay_secs`.
    SkipReserved {
        lead: LeadId,
        operator: OperatorId,
        delay_secs: u64,
        reason: String,
    },
}

/// Fields a transition sets besides the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<AttemptResult>,
    /// Keep a result already recorded (a disposition during the call) over `result`.
    #[serde(default)]
    pub keep_result: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Q.850 cause, its text, the SIP code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangup: Option<(i32, String, Option<i32>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ringing_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridged_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<EndedBy>,
    /// The end time is unknown (the call ended while obzvon was away): take it from the
    /// call's CDR when Asterisk wrote one.
    #[serde(default)]
    pub end_from_cdr: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// When the abandon message started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_at: Option<DateTime<Utc>>,
    /// Answering-machine detection's status and cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amd: Option<(String, String)>,
}

/// A single or preview call's attempt row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAttempt {
    pub attempt: AttemptId,
    pub kind: CallKind,
    pub operator: OperatorId,
    pub phone: String,
    pub caller_id: String,
    pub lead: Option<LeadId>,
    pub campaign: Option<CampaignId>,
    pub correlation_id: Option<String>,
    pub crm: serde_json::Value,
}

/// Things worth a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    Ringing {
        after: Duration,
    },
    Connected {
        /// From the customer's answer.
        latency: Duration,
        /// From an operator taken for them (the media check and the bridge).
        connecting: Duration,
    },
    Ended {
        campaign: Option<CampaignId>,
        status: AttemptStatus,
        result: Option<AttemptResult>,
    },
    SessionDead {
        operator: OperatorId,
        reason: String,
    },
}

/// What the scheduler paces by.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ready: Vec<ReadyOperator>,
    /// Operators taking campaign calls who are busy now: being connected, on a call or in
    /// wrap-up.
    pub busy: Vec<BusyOperator>,
    pub campaigns: HashMap<CampaignId, CampaignLoad>,
    /// What predictive campaigns' calls taught since the last snapshot, oldest first.
    pub learnt: Vec<(CampaignId, PacingOutcome)>,
}

#[derive(Debug, Clone)]
pub struct BusyOperator {
    pub id: OperatorId,
    pub skills: Vec<String>,
    pub wrapping: bool,
    /// In this state for.
    pub elapsed: Duration,
}

/// Predictive pacing learns from this many outcomes between snapshots at most (the scheduler
/// takes a snapshot every second or so while a campaign runs).
const LEARNT_MAX: usize = 20_000;

#[derive(Debug, Clone)]
pub struct ReadyOperator {
    pub id: OperatorId,
    pub skills: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CampaignLoad {
    /// Dialled, not answered yet, or answered and waiting for an operator.
    pub dialing: usize,
    /// Every call holding a channel.
    pub live: usize,
    /// How long each call dialled and not answered yet has been ringing.
    pub ringing: Vec<Duration>,
    /// Answered customers waiting for an operator.
    pub waiting: usize,
}

/// The engine's state: every live leg and session of this instance.
pub struct Core {
    cfg: Config,
    legs: HashMap<AttemptId, Leg>,
    sessions: HashMap<OperatorId, Session>,
    /// Session channels (ours or Asterisk's) → their operator.
    session_channels: HashMap<ChannelId, OperatorId>,
    /// Operators by id, to recognise logins without a database round trip.
    directory: HashMap<OperatorId, OperatorInfo>,
    round_robin: HashMap<CampaignId, OperatorId>,
    /// Attempts that ended lately: a late or repeated command for one changes nothing.
    ended: Recent,
    ari_up: bool,
    /// Asterisk's state was read since the websocket last connected.
    synced: bool,
    draining: bool,
    replaced: bool,
    out: Vec<Action>,
    batch: Vec<AriCall>,
    learnt: Vec<(CampaignId, PacingOutcome)>,
}

impl Core {
    pub fn new(cfg: Config) -> Core {
        Core {
            cfg,
            legs: HashMap::new(),
            sessions: HashMap::new(),
            session_channels: HashMap::new(),
            directory: HashMap::new(),
            round_robin: HashMap::new(),
            ended: Recent::default(),
            ari_up: false,
            synced: false,
            draining: false,
            replaced: false,
            out: Vec::new(),
            batch: Vec::new(),
            learnt: Vec::new(),
        }
    }

    /// Handles one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Action> {
        if self.replaced {
            return Vec::new();
        }
        match input {
            Input::Event(event) => self.on_event(event, now),
            Input::AriConnected => {
                self.ari_up = true;
                self.synced = false;
            }
            Input::AriLost => {
                self.ari_up = false;
                self.synced = false;
            }
            Input::Restore(restored) => self.restore(restored, now),
            Input::Reconcile(view) => self.reconcile(view, now),
            Input::Command(command) => self.on_command(command, now),
            Input::AriDone { op, result } => self.on_ari_done(op, result, now),
            Input::AttemptCreated { attempt, result } => self.on_attempt_created(attempt, result, now),
            Input::OperatorFound { channel, operator } => self.on_operator_found(channel, operator, now),
            Input::Directory(operators) => {
                self.directory = operators.into_iter().map(|o| (o.id, o)).collect();
            }
            Input::Tick => self.on_tick(now),
            Input::Drain => self.drain(now),
        }
        let mut out = std::mem::take(&mut self.out);
        if !self.batch.is_empty() && !self.replaced {
            out.insert(0, Action::Ari(std::mem::take(&mut self.batch)));
        }
        self.batch.clear();
        out
    }

    /// The earliest time the core wants a [`Input::Tick`].
    pub fn next_deadline(&self) -> Option<Instant> {
        let legs = self.legs.values().filter_map(Leg::deadline);
        let sessions = self.sessions.values().filter_map(|s| s.deadline(&self.cfg));
        legs.chain(sessions).min()
    }

    /// Drained (or replaced): the shell may stop.
    pub fn finished(&self) -> bool {
        self.replaced || (self.draining && self.legs.is_empty())
    }

    pub fn replaced(&self) -> bool {
        self.replaced
    }

    /// Asterisk's state was read since the websocket last connected, so calls may be placed.
    pub fn synced(&self) -> bool {
        self.ari_up && self.synced
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    pub fn live_calls(&self) -> usize {
        self.legs.len()
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    pub fn legs(&self) -> impl Iterator<Item = &Leg> {
        self.legs.values()
    }

    /// Who may be given calls now, and each campaign's calls in flight. Nobody is ready while
    /// Asterisk's state is unknown (websocket down, not reconciled yet) or while draining.
    /// What the scheduler paces by; hands over what predictive pacing learnt meanwhile.
    pub fn snapshot(&mut self, now: Now) -> Snapshot {
        let accepting = self.ari_up && self.synced && !self.draining;
        let mut ready = Vec::new();
        let mut busy = Vec::new();
        for s in self.sessions.values().filter(|s| s.takes_calls()) {
            let wrapping = match s.state {
                SessionState::Ready if accepting && s.healthy(&self.cfg, now) => {
                    ready.push(ReadyOperator {
                        id: s.info.id,
                        skills: s.info.skills.clone(),
                    });
                    continue;
                }
                SessionState::Reserved { .. } | SessionState::OnCall { .. } => false,
                SessionState::WrapUp { .. } => true,
                _ => continue,
            };
            busy.push(BusyOperator {
                id: s.info.id,
                skills: s.info.skills.clone(),
                wrapping,
                elapsed: now.at.saturating_duration_since(s.since),
            });
        }
        let mut campaigns: HashMap<CampaignId, CampaignLoad> = HashMap::new();
        for leg in self.legs.values() {
            let Some(campaign) = leg.call.campaign else { continue };
            let load = campaigns.entry(campaign).or_default();
            load.live += 1;
            if leg.awaiting_operator() {
                load.dialing += 1;
            }
            match leg.state {
                LegState::Dialing { .. } | LegState::Ringing => {
                    let since = leg.dialed.unwrap_or(leg.touched);
                    load.ringing.push(now.at.saturating_duration_since(since));
                }
                // In detection: answered, and likely to want an operator in a moment.
                LegState::Waiting { .. } | LegState::Detecting { .. } => load.waiting += 1,
                _ => {}
            }
        }
        Snapshot {
            ready,
            busy,
            campaigns,
            learnt: std::mem::take(&mut self.learnt),
        }
    }

    /// Something a predictive campaign's pacing learns from.
    fn learn(&mut self, campaign: Option<CampaignId>, spec: &CampaignSpec, outcome: PacingOutcome) {
        let Some(campaign) = campaign else { return };
        if spec.pacing.mode != PacingMode::Predictive {
            return;
        }
        if self.learnt.len() >= LEARNT_MAX {
            self.learnt.remove(0);
        }
        self.learnt.push((campaign, outcome));
    }

    // ---- output helpers ------------------------------------------------------------------

    fn ari(&mut self, op: AriOp, report: Report) {
        let chain = self.chain_of(&op);
        self.batch.push(AriCall { op, report, chain });
    }

    /// The chain an ARI call belongs to, by what it names.
    fn chain_of(&self, op: &AriOp) -> Chain {
        let by_channel = |channel: &ChannelId| {
            if let Some(a) = channel.attempt().filter(|a| self.legs.contains_key(a)) {
                Chain::Leg(a)
            } else if let Some(op) = self.session_channels.get(channel) {
                Chain::Session(*op)
            } else {
                Chain::Channel(channel.clone())
            }
        };
        // Playbacks and recordings of a call are named after its attempt.
        let by_name = |name: &str| {
            ["ring-", "abandon-", "obzvon-"]
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .and_then(|a| a.parse::<AttemptId>().ok())
                .map(Chain::Leg)
        };
        let by_bridge = |bridge: &BridgeId| {
            self.sessions
                .values()
                .find(|s| s.bridge.as_ref() == Some(bridge))
                .map(|s| Chain::Session(s.info.id))
                .unwrap_or_else(|| Chain::Bridge(bridge.clone()))
        };
        match op {
            AriOp::Originate { channel, .. }
            | AriOp::Create { channel, .. }
            | AriOp::Dial { channel, .. }
            | AriOp::Answer { channel }
            | AriOp::Hangup { channel, .. }
            | AriOp::Play { channel, .. }
            | AriOp::RtpReceived { channel }
            | AriOp::Continue { channel, .. }
            | AriOp::AddToBridge { channel, .. } => by_channel(channel),
            AriOp::PlayBridge { bridge, playback, .. } => by_name(playback).unwrap_or_else(|| by_bridge(bridge)),
            AriOp::Record { bridge, name } => by_name(name).unwrap_or_else(|| by_bridge(bridge)),
            AriOp::CreateBridge { bridge, .. } | AriOp::DestroyBridge { bridge } => by_bridge(bridge),
            AriOp::StopPlayback { playback } => by_name(playback).unwrap_or(Chain::Subscription(playback.clone())),
            AriOp::StopRecording { name } => by_name(name).unwrap_or(Chain::Subscription(name.clone())),
            AriOp::Subscribe { source } | AriOp::Unsubscribe { source } => Chain::Subscription(source.clone()),
        }
    }

    fn persist(&mut self, write: Write) {
        self.out.push(Action::Persist(write));
    }

    fn reply(&mut self, to: ReplyTo, reply: Reply) {
        self.out.push(Action::Reply(to, reply));
    }

    fn wake(&mut self) {
        if !self.out.contains(&Action::Wake) {
            self.out.push(Action::Wake);
        }
    }

    fn observe(&mut self, o: Observation) {
        self.out.push(Action::Observe(o));
    }

    /// Hangs up a channel; if Asterisk says it is gone already, its call or session ends
    /// here (no `ChannelDestroyed` will come for it).
    fn hangup(&mut self, channel: &ChannelId) {
        if let Some(leg) = channel.attempt().and_then(|a| self.legs.get_mut(&a)) {
            leg.hangup_sent = true;
        }
        self.ari(
            AriOp::Hangup {
                channel: channel.clone(),
                reason: HangupReason::Normal,
            },
            Report::Failure,
        );
    }

    // ---- routing -------------------------------------------------------------------------

    fn on_event(&mut self, event: Event, now: Now) {
        use crate::ari::EventKind::*;
        match &event.kind {
            ApplicationReplaced => {
                self.replaced = true;
                self.batch.clear();
                self.out.push(Action::Stop);
                return;
            }
            ContactStatusChange(c) => {
                self.on_contact_status(&c.endpoint_id(), &c.contact_info.contact_status, now);
                return;
            }
            _ => {}
        }
        let channel = match &event.kind {
            PlaybackFinished(p) => p.playback.target_uri.strip_prefix("channel:").map(ChannelId::new),
            _ => event.channel_id().map(ChannelId::new),
        };
        let Some(channel) = channel else { return };
        if let Some(attempt) = channel.attempt().filter(|a| self.legs.contains_key(a)) {
            self.on_leg_event(attempt, event, now);
        } else if let Some(op) = self.session_channels.get(&channel).copied() {
            self.on_session_event(op, &channel, event, now);
        } else if let StasisStart(start) = &event.kind {
            self.on_unknown_stasis_start(channel, start, now);
        }
    }

    fn on_command(&mut self, command: Command, now: Now) {
        match command {
            Command::Dial(claimed) => self.dial(*claimed, now),
            Command::StartSession {
                operator,
                channel,
                reply,
            } => self.start_session(operator, channel, reply, now),
            Command::EndSession { operator, reply } => {
                let answer = match self.sessions.get(&operator) {
                    Some(s) => {
                        let channel = s.channel.clone();
                        self.hangup(&channel);
                        Ok(Answer::Done)
                    }
                    None => Err(CommandError::Conflict("the operator has no session".into())),
                };
                self.reply(reply, answer);
            }
            Command::SetPaused {
                operator,
                paused,
                reply,
            } => {
                let answer = self.set_paused(operator, paused, now).map(Answer::State);
                self.reply(reply, answer);
            }
            Command::DispositionDone { attempt } => self.disposition_done(attempt, now),
            Command::Cancel { attempt, reply } => {
                let found = self.cancel(attempt, now);
                self.reply(reply, Ok(Answer::Flag(found)));
            }
            Command::Single { call, reply } => self.single(*call, reply, now),
            Command::Offer { offer, reply } => {
                let taken = self.take_offer(*offer, now);
                self.reply(reply, Ok(Answer::Flag(taken)));
            }
            Command::OfferAction {
                operator,
                action,
                reply,
            } => self.offer_action(operator, action, Some(reply), now),
        }
    }

    fn on_ari_done(&mut self, op: AriOp, result: Result<AriReply, AriFail>, now: Now) {
        match &op {
            AriOp::Originate { channel, .. }
            | AriOp::Hangup { channel, .. }
            | AriOp::Create { channel, .. }
            | AriOp::Dial { channel, .. }
            | AriOp::AddToBridge { channel, .. }
            | AriOp::Answer { channel }
            | AriOp::Play { channel, .. }
            | AriOp::RtpReceived { channel } => {
                if let Some(attempt) = channel.attempt().filter(|a| self.legs.contains_key(a)) {
                    self.on_leg_ari_done(attempt, op, result, now);
                } else if let Some(op_id) = self.session_channels.get(channel).copied() {
                    self.on_session_ari_done(op_id, op, result, now);
                }
            }
            AriOp::CreateBridge { bridge, .. } | AriOp::Record { bridge, .. } => {
                let leg = self
                    .legs
                    .values()
                    .find(|l| l.bridge() == Some(bridge))
                    .map(|l| l.call.attempt);
                let session = self
                    .sessions
                    .values()
                    .find(|s| s.bridge.as_ref() == Some(bridge))
                    .map(|s| s.info.id);
                if let (AriOp::Record { .. }, Some(attempt)) = (&op, leg) {
                    self.on_leg_ari_done(attempt, op, result, now);
                } else if let Some(op_id) = session {
                    self.on_session_ari_done(op_id, op, result, now);
                }
            }
            _ => {}
        }
    }

    fn drain(&mut self, now: Now) {
        self.draining = true;
        let offered: Vec<OperatorId> = self
            .sessions
            .values()
            .filter(|s| matches!(s.state, SessionState::Offered(_)))
            .map(|s| s.info.id)
            .collect();
        for op in offered {
            self.release_offer(op, SessionState::Ready, now);
        }
    }

    fn on_tick(&mut self, now: Now) {
        self.leg_timers(now);
        self.session_timers(now);
    }
}

/// The last attempts that ended, bounded.
#[derive(Default)]
struct Recent {
    set: std::collections::HashSet<AttemptId>,
    order: std::collections::VecDeque<AttemptId>,
}

impl Recent {
    const KEEP: usize = 10_000;

    fn insert(&mut self, attempt: AttemptId) {
        if self.set.insert(attempt) {
            self.order.push_back(attempt);
            if self.order.len() > Self::KEEP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, attempt: &AttemptId) -> bool {
        self.set.contains(attempt)
    }
}
