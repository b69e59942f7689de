//! The core driven by fabricated events and times: every transition of a customer leg and an
//! operator session, adoption after a restart, and a property test over random orders,
//! duplicates and late events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::*;
use crate::ari::Event;
use crate::calls::{AttemptResult, AttemptStatus, EndedBy};
use crate::campaigns::CampaignSpec;
use crate::ids::{AttemptId, BridgeId, CampaignId, ChannelId, LeadId, OperatorId};
use crate::operators::OperatorState;

// ---- the rig -------------------------------------------------------------------------------

struct Rig {
    core: Core,
    t0: Instant,
    w0: DateTime<Utc>,
    ms: u64,
    replies: u64,
    operators: Vec<OperatorInfo>,
}

fn quiet() -> Config {
    Config {
        media_check: Duration::ZERO,
        ..Config::default()
    }
}

impl Rig {
    fn new(cfg: Config) -> Rig {
        let operators: Vec<OperatorInfo> = (1..=4)
            .map(|n| OperatorInfo {
                id: OperatorId::new(),
                name: format!("op{n}"),
                endpoint: format!("PJSIP/op{n}"),
                skills: vec![],
                enabled: true,
            })
            .collect();
        let mut rig = Rig {
            core: Core::new(cfg),
            t0: Instant::now(),
            // Whole milliseconds, as ARI timestamps have them.
            w0: DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap(),
            ms: 0,
            replies: 0,
            operators,
        };
        let list = rig.operators.clone();
        rig.feed(Input::Directory(list));
        rig
    }

    fn now(&self) -> Now {
        Now {
            at: self.t0 + Duration::from_millis(self.ms),
            wall: self.w0 + chrono::Duration::milliseconds(self.ms as i64),
        }
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        let now = self.now();
        self.core.handle(input, now)
    }

    fn advance(&mut self, ms: u64) -> Vec<Action> {
        self.ms += ms;
        self.feed(Input::Tick)
    }

    fn event(&mut self, v: Value) -> Vec<Action> {
        let e = Event::parse(&v.to_string()).expect("fabricated event parses");
        self.feed(Input::Event(e))
    }

    fn reply_to(&mut self) -> ReplyTo {
        self.replies += 1;
        ReplyTo(self.replies)
    }

    /// The websocket is up and Asterisk holds nothing.
    fn up(&mut self) {
        self.feed(Input::AriConnected);
        let taken_at = Some(self.now().at);
        self.feed(Input::Reconcile(AsteriskView {
            taken_at,
            ..AsteriskView::default()
        }));
    }

    fn op(&self, n: usize) -> OperatorInfo {
        self.operators[n - 1].clone()
    }

    /// Operator `n` dials the login code; returns their session's bridge.
    fn login(&mut self, n: usize) -> BridgeId {
        // Logins a moment apart, so "longest idle" is the first to log in.
        self.ms += 1;
        let channel = login_channel(n);
        let out = self.event(stasis_start(
            &channel,
            &format!("PJSIP/op{n}-0000000{n}"),
            "Up",
            &["login"],
            self.now().wall,
        ));
        let bridge = ops(&out)
            .into_iter()
            .find_map(|o| match o {
                AriOp::AddToBridge { bridge, channel: c } if c == channel => Some(bridge),
                _ => None,
            })
            .expect("the login channel is put in its bridge");
        let out = self.feed(Input::AriDone {
            op: AriOp::AddToBridge {
                bridge: bridge.clone(),
                channel,
            },
            result: Ok(AriReply::Ok),
        });
        assert!(
            operator_writes(&out).contains(&(self.op(n).id, OperatorState::Ready)),
            "login makes the operator ready: {out:?}"
        );
        bridge
    }

    fn claim(&mut self, spec: &Arc<CampaignSpec>) -> (AttemptId, Vec<Action>) {
        let attempt = AttemptId::new();
        let out = self.feed(Input::Command(Command::Dial(Box::new(Claimed {
            attempt,
            lead: LeadId::new(),
            campaign: CAMPAIGN.with(|c| *c),
            phone: "+79160010103".into(),
            spec: spec.clone(),
            preferred_operator: None,
        }))));
        (attempt, out)
    }

    /// A campaign call, originated and accepted by Asterisk.
    fn dial(&mut self, spec: &Arc<CampaignSpec>) -> AttemptId {
        let (attempt, out) = self.claim(spec);
        let originate = ops(&out)
            .into_iter()
            .find(|o| matches!(o, AriOp::Originate { .. }))
            .expect("dialled");
        self.feed(Input::AriDone {
            op: originate,
            result: Ok(AriReply::Ok),
        });
        attempt
    }

    fn ringing(&mut self, attempt: AttemptId) -> Vec<Action> {
        let ch = attempt.channel();
        self.event(state_change(&ch, "Ringing", self.now().wall))
    }

    fn answer(&mut self, attempt: AttemptId) -> Vec<Action> {
        let ch = attempt.channel();
        self.event(stasis_start(
            &ch,
            "PJSIP/trunk-00000001",
            "Up",
            &["attempt"],
            self.now().wall,
        ))
    }

    fn hangup(&mut self, channel: &ChannelId, cause: i32) -> Vec<Action> {
        self.event(destroyed(channel, cause, None, self.now().wall))
    }

    fn bridged_ok(&mut self, attempt: AttemptId, bridge: &BridgeId) -> Vec<Action> {
        self.feed(Input::AriDone {
            op: AriOp::AddToBridge {
                bridge: bridge.clone(),
                channel: attempt.channel(),
            },
            result: Ok(AriReply::Ok),
        })
    }

    /// A campaign call answered and bridged into `bridge` (media check off).
    fn talking(&mut self, spec: &Arc<CampaignSpec>, bridge: &BridgeId) -> AttemptId {
        let attempt = self.dial(spec);
        self.answer(attempt);
        self.bridged_ok(attempt, bridge);
        attempt
    }

    fn session_state(&self, n: usize) -> Option<OperatorState> {
        let id = self.op(n).id;
        self.core.sessions().find(|s| s.info.id == id).map(|s| s.wire_state())
    }
}

thread_local! {
    static CAMPAIGN: CampaignId = CampaignId::new();
}

fn spec() -> Arc<CampaignSpec> {
    Arc::new(CampaignSpec {
        name: "t".into(),
        trunk: "PJSIP/{number}@trunk".into(),
        caller_id: "74950000000".into(),
        wrap_up_secs: 3,
        recording: false,
        ..CampaignSpec::default()
    })
}

fn login_channel(n: usize) -> ChannelId {
    ChannelId::new(format!("17330000{n}.{n}"))
}

// ---- fabricated ARI events -------------------------------------------------------------------

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
}

fn channel_json(id: &ChannelId, name: &str, state: &str) -> Value {
    json!({
        "id": id.as_str(), "name": name, "state": state,
        "caller": {"name": "", "number": ""}, "connected": {"name": "", "number": ""},
        "accountcode": "", "dialplan": {"context": "obzvon", "exten": "s", "priority": 1},
        "creationtime": "2026-12-01T10:00:00.000+0000", "language": "en"
    })
}

fn envelope(kind: &str, at: DateTime<Utc>, body: Value) -> Value {
    let mut v = json!({"type": kind, "application": "obzvon", "timestamp": ts(at)});
    for (k, x) in body.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn stasis_start(ch: &ChannelId, name: &str, state: &str, args: &[&str], at: DateTime<Utc>) -> Value {
    envelope(
        "StasisStart",
        at,
        json!({"args": args, "channel": channel_json(ch, name, state)}),
    )
}

fn state_change(ch: &ChannelId, state: &str, at: DateTime<Utc>) -> Value {
    envelope(
        "ChannelStateChange",
        at,
        json!({"channel": channel_json(ch, "PJSIP/trunk-1", state)}),
    )
}

fn destroyed(ch: &ChannelId, cause: i32, sip: Option<i32>, at: DateTime<Utc>) -> Value {
    let mut body =
        json!({"cause": cause, "cause_txt": format!("cause {cause}"), "channel": channel_json(ch, "PJSIP/x-1", "Up")});
    if let Some(sip) = sip {
        body["tech_cause"] = json!(sip);
    }
    envelope("ChannelDestroyed", at, body)
}

fn dtmf(ch: &ChannelId, digit: &str, at: DateTime<Utc>) -> Value {
    envelope(
        "ChannelDtmfReceived",
        at,
        json!({"digit": digit, "duration_ms": 100, "channel": channel_json(ch, "PJSIP/op1-1", "Up")}),
    )
}

fn playback_finished(id: &str, ch: &ChannelId, at: DateTime<Utc>) -> Value {
    envelope(
        "PlaybackFinished",
        at,
        json!({"playback": {"id": id, "media_uri": "sound:vm-goodbye", "target_uri": format!("channel:{ch}"), "state": "done"}}),
    )
}

fn contact_status(resource: &str, status: &str, at: DateTime<Utc>) -> Value {
    envelope(
        "ContactStatusChange",
        at,
        json!({"endpoint": {"technology": "PJSIP", "resource": resource, "state": "online", "channel_ids": []},
               "contact_info": {"uri": "sip:op@127.0.0.1", "contact_status": status, "aor": resource, "roundtrip_usec": "0"}}),
    )
}

// ---- reading actions ---------------------------------------------------------------------------

fn ops(actions: &[Action]) -> Vec<AriOp> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Ari(calls) => Some(calls.iter().map(|c| c.op.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

fn hangups(actions: &[Action]) -> Vec<ChannelId> {
    ops(actions)
        .into_iter()
        .filter_map(|o| match o {
            AriOp::Hangup { channel, .. } => Some(channel),
            _ => None,
        })
        .collect()
}

fn writes(actions: &[Action]) -> Vec<Write> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

fn finish_of(actions: &[Action], attempt: AttemptId) -> Option<(AttemptStatus, Change)> {
    writes(actions).into_iter().find_map(|w| match w {
        Write::Finish {
            attempt: a,
            status,
            change,
        } if a == attempt => Some((status, change)),
        _ => None,
    })
}

fn operator_writes(actions: &[Action]) -> Vec<(OperatorId, OperatorState)> {
    writes(actions)
        .into_iter()
        .filter_map(|w| match w {
            Write::Operator { operator, state, .. } => Some((operator, state)),
            _ => None,
        })
        .collect()
}

fn added(actions: &[Action], attempt: AttemptId) -> Option<BridgeId> {
    ops(actions).into_iter().find_map(|o| match o {
        AriOp::AddToBridge { bridge, channel } if channel == attempt.channel() => Some(bridge),
        _ => None,
    })
}

// ---- campaign calls ----------------------------------------------------------------------------

#[test]
fn a_campaign_call_is_dialled_rings_is_connected_on_answer_and_ends_in_wrap_up() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let s = spec();
    let (attempt, out) = rig.claim(&s);
    let originate = ops(&out);
    assert!(
        matches!(&originate[..], [AriOp::Originate { channel, endpoint, .. }] if *channel == attempt.channel() && endpoint == "PJSIP/+79160010103@trunk"),
        "{originate:?}"
    );
    let out = rig.feed(Input::AriDone {
        op: originate[0].clone(),
        result: Ok(AriReply::Ok),
    });
    assert!(matches!(&writes(&out)[..], [Write::Attempt { change, .. }] if change.dialed_at.is_some()));
    let out = rig.ringing(attempt);
    assert!(
        matches!(&writes(&out)[..], [Write::Attempt { to: AttemptStatus::Ringing, change, .. }] if change.ringing_at.is_some())
    );
    rig.ms += 1500;
    let out = rig.answer(attempt);
    assert_eq!(
        added(&out, attempt),
        Some(bridge.clone()),
        "into the ready operator's bridge"
    );
    assert_eq!(rig.session_state(1), Some(OperatorState::Reserved));
    rig.ms += 5;
    let out = rig.bridged_ok(attempt, &bridge);
    assert!(writes(&out).iter().any(|w| matches!(w, Write::Attempt { to: AttemptStatus::InProgress, change, .. } if change.bridged_at.is_some() && change.operator == Some(rig.op(1).id))));
    assert!(out.contains(&Action::Observe(Observation::Connected {
        latency: Duration::from_millis(5),
        connecting: Duration::from_millis(5),
    })));
    assert_eq!(rig.session_state(1), Some(OperatorState::OnCall));
    rig.ms += 3000;
    let out = rig.hangup(&attempt.channel(), 16);
    let (status, change) = finish_of(&out, attempt).expect("finished");
    assert_eq!(status, AttemptStatus::Completed);
    assert_eq!(change.result, Some(AttemptResult::Success));
    assert!(change.keep_result, "a disposition during the call wins");
    assert_eq!(change.ended_by, Some(EndedBy::Customer));
    assert_eq!(rig.session_state(1), Some(OperatorState::WrapUp));
    assert!(out.contains(&Action::Wake));
    rig.advance(2900);
    assert_eq!(rig.session_state(1), Some(OperatorState::WrapUp));
    rig.advance(200);
    assert_eq!(
        rig.session_state(1),
        Some(OperatorState::Ready),
        "wrap-up ends after wrap_up_secs"
    );
    assert_eq!(rig.core.live_calls(), 0);
}

#[test]
fn unanswered_calls_end_with_the_result_of_their_cause_and_sip_code() {
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let s = spec();
    for (cause, sip, result) in [
        (17, Some(486), AttemptResult::Busy),
        (19, Some(480), AttemptResult::NoAnswer),
        (34, Some(503), AttemptResult::Congestion),
        (1, Some(404), AttemptResult::InvalidNumber),
    ] {
        let attempt = rig.dial(&s);
        rig.ringing(attempt);
        let now = rig.now().wall;
        let out = rig.event(destroyed(&attempt.channel(), cause, sip, now));
        let (status, change) = finish_of(&out, attempt).unwrap();
        assert_eq!((status, change.result), (AttemptStatus::Failed, Some(result)));
        assert_eq!(change.hangup.as_ref().map(|h| h.0), Some(cause));
    }
    assert_eq!(
        rig.session_state(1),
        Some(OperatorState::Ready),
        "the operator was never taken"
    );
}

#[test]
fn an_answered_customer_with_nobody_free_hears_the_message_within_the_connect_limit_and_is_abandoned() {
    let cfg = quiet();
    let margin = cfg.abandon_margin;
    let mut rig = Rig::new(cfg);
    rig.up();
    let bridge = rig.login(1);
    let s = spec();
    // The operator is busy with a first customer.
    rig.talking(&s, &bridge);
    let second = rig.dial(&s);
    let answered_at = rig.now().at;
    let out = rig.answer(second);
    assert_eq!(added(&out, second), None, "nobody free");
    let deadline = rig.core.next_deadline().unwrap();
    assert_eq!(
        deadline,
        answered_at + Duration::from_millis(s.connect_limit_ms) - margin,
        "the decision leaves the margin for the message to start inside the limit"
    );
    let out = rig.advance(s.connect_limit_ms - margin.as_millis() as u64 - 1);
    assert!(ops(&out).is_empty());
    let out = rig.advance(1);
    assert!(
        ops(&out)
            .iter()
            .any(|o| matches!(o, AriOp::Play { channel, media, .. } if *channel == second.channel() && media == "sound:vm-goodbye")),
        "{out:?}"
    );
    let now = rig.now().wall;
    let out = rig.event(playback_finished(&format!("abandon-{second}"), &second.channel(), now));
    assert_eq!(hangups(&out), vec![second.channel()]);
    let out = rig.hangup(&second.channel(), 16);
    let (status, change) = finish_of(&out, second).unwrap();
    assert_eq!(
        (status, change.result),
        (AttemptStatus::Completed, Some(AttemptResult::Abandoned))
    );
    assert_eq!(change.ended_by, Some(EndedBy::Dialer));
}

#[test]
fn a_customer_who_hangs_up_during_the_abandon_message_ended_it_themselves() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let s = spec();
    rig.talking(&s, &bridge);
    let waiting = rig.dial(&s);
    rig.answer(waiting);
    let out = rig.advance(s.connect_limit_ms);
    assert!(ops(&out).iter().any(|o| matches!(o, AriOp::Play { .. })));
    let out = rig.hangup(&waiting.channel(), 16);
    let (_, change) = finish_of(&out, waiting).unwrap();
    assert_eq!(change.result, Some(AttemptResult::Abandoned));
    assert_eq!(
        change.ended_by,
        Some(EndedBy::Customer),
        "nobody asked Asterisk to hang up"
    );
}

#[test]
fn a_customer_who_hangs_up_before_the_limit_is_an_early_hang_up_not_an_abandon() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let s = spec();
    let busy = rig.talking(&s, &bridge);
    let quick = rig.dial(&s);
    rig.answer(quick);
    rig.ms += 300;
    let out = rig.hangup(&quick.channel(), 16);
    let (status, change) = finish_of(&out, quick).unwrap();
    assert_eq!(
        (status, change.result),
        (AttemptStatus::Completed, Some(AttemptResult::EarlyHangup))
    );
    assert_eq!(change.ended_by, Some(EndedBy::Customer));
    // The same while the bridge is being made: the operator is free again at once.
    rig.hangup(&busy.channel(), 16);
    rig.advance(3100);
    let quick = rig.dial(&s);
    let out = rig.answer(quick);
    assert_eq!(added(&out, quick), Some(bridge));
    let out = rig.hangup(&quick.channel(), 16);
    assert_eq!(
        finish_of(&out, quick).unwrap().1.result,
        Some(AttemptResult::EarlyHangup)
    );
    assert_eq!(rig.session_state(1), Some(OperatorState::Ready));
}

#[test]
fn a_waiting_customer_goes_to_the_first_operator_who_becomes_ready() {
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    rig.feed(Input::Command(Command::SetPaused {
        operator: rig.op(1).id,
        paused: true,
        reply: ReplyTo(0),
    }));
    let bridge2 = rig.login(2);
    let s = spec();
    let talking = rig.talking(&s, &bridge2);
    let waiting = rig.dial(&s);
    rig.answer(waiting);
    rig.ms += 200;
    // op2's call ends; wrap-up ended with '#': op2 takes the waiting customer.
    rig.hangup(&talking.channel(), 16);
    let now = rig.now().wall;
    let out = rig.event(dtmf(&login_channel(2), "#", now));
    assert_eq!(added(&out, waiting), Some(bridge2.clone()));
    // The customer waited for the operator; the dialer's own part is the bridging alone.
    rig.ms += 4;
    let out = rig.bridged_ok(waiting, &bridge2);
    assert!(
        out.contains(&Action::Observe(Observation::Connected {
            latency: Duration::from_millis(204),
            connecting: Duration::from_millis(4),
        })),
        "{out:?}"
    );
}

#[test]
fn a_dial_is_given_back_when_nobody_who_may_take_it_is_logged_in() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let s = spec();
    let (attempt, out) = rig.claim(&s);
    assert!(ops(&out).is_empty(), "not dialled");
    let (status, change) = finish_of(&out, attempt).unwrap();
    assert_eq!(
        status,
        AttemptStatus::Canceled,
        "the lead goes back, the attempt does not count"
    );
    assert!(change.reason.unwrap().contains("no operator"));
    // An operator without the campaign's skill does not count either.
    rig.login(1);
    let skilled = Arc::new(CampaignSpec {
        skills: vec!["de".into()],
        ..(*s).clone()
    });
    let (attempt, out) = rig.claim(&skilled);
    assert_eq!(finish_of(&out, attempt).unwrap().0, AttemptStatus::Canceled);
    // Before Asterisk's state is read nothing is dialled at all.
    let mut cold = Rig::new(quiet());
    cold.feed(Input::AriConnected);
    let (attempt, out) = cold.claim(&s);
    assert_eq!(finish_of(&out, attempt).unwrap().0, AttemptStatus::Canceled);
}

#[test]
fn when_the_last_operator_leaves_ringing_calls_are_hung_up_and_their_leads_go_back() {
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let s = spec();
    let ringing = rig.dial(&s);
    rig.ringing(ringing);
    let out = rig.hangup(&login_channel(1), 16);
    assert!(operator_writes(&out).contains(&(rig.op(1).id, OperatorState::Offline)));
    assert_eq!(hangups(&out), vec![ringing.channel()]);
    let out = rig.hangup(&ringing.channel(), 16);
    let (status, change) = finish_of(&out, ringing).unwrap();
    assert_eq!(status, AttemptStatus::Canceled);
    assert_eq!(change.ended_by, Some(EndedBy::Dialer));
}

#[test]
fn a_cancel_before_asterisk_answered_the_originate_hangs_up_once_it_did() {
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let s = spec();
    let (attempt, out) = rig.claim(&s);
    let originate = ops(&out).remove(0);
    let reply = rig.reply_to();
    let out = rig.feed(Input::Command(Command::Cancel { attempt, reply }));
    assert!(hangups(&out).is_empty(), "no channel to hang up yet");
    assert!(out.contains(&Action::Reply(reply, Ok(Answer::Flag(true)))));
    let out = rig.feed(Input::AriDone {
        op: originate,
        result: Ok(AriReply::Ok),
    });
    assert_eq!(hangups(&out), vec![attempt.channel()]);
    let out = rig.hangup(&attempt.channel(), 16);
    assert_eq!(finish_of(&out, attempt).unwrap().0, AttemptStatus::Canceled);
}

#[test]
fn an_originate_asterisk_never_got_gives_the_lead_back_and_a_refused_one_fails() {
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let s = spec();
    let (attempt, out) = rig.claim(&s);
    let out = rig.feed(Input::AriDone {
        op: ops(&out).remove(0),
        result: Err(AriFail::Unreachable("refused".into())),
    });
    assert_eq!(finish_of(&out, attempt).unwrap().0, AttemptStatus::Canceled);
    let (attempt, out) = rig.claim(&s);
    let out = rig.feed(Input::AriDone {
        op: ops(&out).remove(0),
        result: Err(AriFail::Refused(500, "Allocation failed".into())),
    });
    let (status, change) = finish_of(&out, attempt).unwrap();
    assert_eq!(
        (status, change.result),
        (AttemptStatus::Failed, Some(AttemptResult::Failed))
    );
    assert_eq!(rig.core.live_calls(), 0);
}

#[test]
fn duplicate_and_late_events_change_nothing() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let s = spec();
    let attempt = rig.dial(&s);
    rig.ringing(attempt);
    let out = rig.answer(attempt);
    assert!(added(&out, attempt).is_some());
    let again = rig.answer(attempt);
    assert!(again.is_empty(), "a second StasisStart: {again:?}");
    assert!(rig.ringing(attempt).is_empty(), "a late ringing");
    rig.bridged_ok(attempt, &bridge);
    assert!(
        rig.bridged_ok(attempt, &bridge).is_empty(),
        "a duplicate bridge confirmation"
    );
    let out = rig.hangup(&attempt.channel(), 16);
    assert!(finish_of(&out, attempt).is_some());
    assert!(
        rig.hangup(&attempt.channel(), 16).is_empty(),
        "a second ChannelDestroyed"
    );
    assert!(rig.answer(attempt).is_empty(), "an event for an ended call");
}

// ---- operators ------------------------------------------------------------------------------

#[test]
fn phone_keys_pause_hang_up_and_set_dispositions() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let ch = login_channel(1);
    let now = rig.now().wall;
    rig.event(dtmf(&ch, "0", now));
    assert_eq!(rig.session_state(1), Some(OperatorState::Paused));
    rig.event(dtmf(&ch, "0", now));
    assert_eq!(
        rig.session_state(1),
        Some(OperatorState::Paused),
        "the same press reported twice counts once"
    );
    rig.ms += 500;
    let now = rig.now().wall;
    rig.event(dtmf(&ch, "0", now));
    assert_eq!(rig.session_state(1), Some(OperatorState::Ready));
    let s = spec();
    let attempt = rig.talking(&s, &bridge);
    let out = rig.event(dtmf(&ch, "#", now));
    assert_eq!(hangups(&out), vec![attempt.channel()], "# hangs up the customer");
    let out = rig.hangup(&attempt.channel(), 16);
    let (_, change) = finish_of(&out, attempt).unwrap();
    assert_eq!(change.ended_by, Some(EndedBy::Operator));
    assert_eq!(change.result, Some(AttemptResult::Success));
    let out = rig.event(dtmf(&ch, "2", now));
    assert!(writes(&out).contains(&Write::Disposition {
        attempt,
        result: AttemptResult::NotInterested
    }));
    assert_eq!(
        rig.session_state(1),
        Some(OperatorState::Ready),
        "a disposition ends wrap-up"
    );
}

#[test]
fn an_operator_who_hangs_up_during_a_call_ends_it_and_the_session() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let s = spec();
    let attempt = rig.talking(&s, &bridge);
    let out = rig.hangup(&login_channel(1), 16);
    assert!(hangups(&out).contains(&attempt.channel()));
    assert_eq!(rig.session_state(1), None);
    let out = rig.hangup(&attempt.channel(), 16);
    let (status, change) = finish_of(&out, attempt).unwrap();
    assert_eq!(
        (status, change.result, change.ended_by),
        (
            AttemptStatus::Completed,
            Some(AttemptResult::Success),
            Some(EndedBy::Operator)
        )
    );
}

fn media(rig: &mut Rig, n: usize, packets: u64) -> Vec<Action> {
    rig.feed(Input::AriDone {
        op: AriOp::RtpReceived {
            channel: login_channel(n),
        },
        result: Ok(AriReply::Packets {
            count: packets,
            at: rig.now().at,
        }),
    })
}

#[test]
fn a_phone_that_stops_sending_audio_is_dead_and_its_customer_goes_to_the_next_operator() {
    let mut rig = Rig::new(Config::default());
    rig.up();
    let bridge1 = rig.login(1);
    let bridge2 = rig.login(2);
    let s = spec();
    // Both phones stream audio; op1 takes a customer (longest idle).
    let mut packets = 0;
    for _ in 0..2 {
        let out = rig.advance(1000);
        assert_eq!(
            ops(&out)
                .iter()
                .filter(|o| matches!(o, AriOp::RtpReceived { .. }))
                .count(),
            2
        );
        packets += 50;
        media(&mut rig, 1, packets);
        media(&mut rig, 2, packets);
    }
    let attempt = rig.dial(&s);
    let out = rig.answer(attempt);
    assert_eq!(added(&out, attempt), None, "the phone is checked first");
    assert!(ops(&out).contains(&AriOp::RtpReceived {
        channel: login_channel(1)
    }));
    packets += 5;
    let out = media(&mut rig, 1, packets);
    assert_eq!(added(&out, attempt), Some(bridge1.clone()), "it sends audio: bridged");
    rig.bridged_ok(attempt, &bridge1);
    // op1's phone goes silent; op2 is busy with another customer meanwhile.
    let other = rig.dial(&s);
    rig.answer(other);
    packets += 5;
    media(&mut rig, 2, packets);
    rig.bridged_ok(other, &bridge2);
    let mut dead = Vec::new();
    for _ in 0..5 {
        rig.advance(1000);
        packets += 50;
        dead = media(&mut rig, 1, 100);
        media(&mut rig, 2, packets);
        if rig.session_state(1).is_none() {
            break;
        }
    }
    assert_eq!(rig.session_state(1), None, "ended within the silence limit");
    assert!(hangups(&dead).contains(&login_channel(1)));
    assert!(dead
        .iter()
        .any(|a| matches!(a, Action::Observe(Observation::SessionDead { .. }))));
    assert!(!hangups(&dead).contains(&attempt.channel()), "the customer stays");
    // op2 finishes and becomes ready within the limit: the customer is moved there.
    rig.hangup(&other.channel(), 16);
    let now = rig.now().wall;
    let out = rig.event(dtmf(&login_channel(2), "#", now));
    assert!(ops(&out).contains(&AriOp::RtpReceived {
        channel: login_channel(2)
    }));
    packets += 5;
    let out = media(&mut rig, 2, packets);
    assert_eq!(added(&out, attempt), Some(bridge2.clone()));
    let out = rig.bridged_ok(attempt, &bridge2);
    assert!(writes(&out).iter().any(
        |w| matches!(w, Write::Attempt { change, .. } if change.reason.as_deref().is_some_and(|r| r.contains("moved")))
    ));
    let out = rig.hangup(&attempt.channel(), 16);
    assert_eq!(finish_of(&out, attempt).unwrap().1.result, Some(AttemptResult::Success));
}

#[test]
fn a_phone_that_went_silent_between_two_samples_falls_short_of_its_rate_and_gets_no_customer() {
    let mut rig = Rig::new(Config::default());
    rig.up();
    rig.login(1);
    let bridge2 = rig.login(2);
    // Both phones send 50 packets a second.
    for packets in [0, 50, 100] {
        rig.advance(1000);
        media(&mut rig, 1, packets);
        media(&mut rig, 2, packets);
    }
    let s = spec();
    let attempt = rig.dial(&s);
    // 800 ms after the last sample op1 sent 25 packets, 15 fewer than its rate: it stopped
    // 300 ms ago.
    rig.ms += 800;
    let out = rig.answer(attempt);
    assert!(ops(&out).contains(&AriOp::RtpReceived {
        channel: login_channel(1)
    }));
    let out = media(&mut rig, 1, 125);
    assert_eq!(added(&out, attempt), None, "not bridged into a phone that fell silent");
    let out = media(&mut rig, 2, 140);
    assert_eq!(
        added(&out, attempt),
        Some(bridge2),
        "the phone at full rate takes the call"
    );
    assert!(
        !rig.core.snapshot(rig.now()).ready.iter().any(|r| r.id == rig.op(1).id),
        "op1 is suspect"
    );
}

#[test]
fn a_phone_that_stopped_sending_audio_a_moment_ago_is_not_bridged_and_the_next_operator_is_tried() {
    let mut rig = Rig::new(Config::default());
    rig.up();
    rig.login(1);
    let bridge2 = rig.login(2);
    rig.advance(1000);
    media(&mut rig, 1, 50);
    media(&mut rig, 2, 50);
    let s = spec();
    let attempt = rig.dial(&s);
    rig.ms += 400;
    let out = rig.answer(attempt);
    assert!(ops(&out).contains(&AriOp::RtpReceived {
        channel: login_channel(1)
    }));
    // op1's phone went silent right after the last periodic check.
    let out = media(&mut rig, 1, 50);
    assert_eq!(added(&out, attempt), None, "not bridged into a silent phone");
    assert!(
        ops(&out).contains(&AriOp::RtpReceived {
            channel: login_channel(2)
        }),
        "op2 is tried"
    );
    assert_eq!(
        rig.session_state(1),
        Some(OperatorState::Ready),
        "op1 is not ended on one sample"
    );
    let out = media(&mut rig, 2, 70);
    assert_eq!(added(&out, attempt), Some(bridge2));
}

/// One operator whose phone streams 50 packets a second; a customer is put through and
/// hangs up after `talk_ms`; the phone goes silent `silent_after_ms` after the bridge (a
/// negative figure: before it, yet too late for the pre-bridge check to tell). Returns the
/// writes from the moment the phone is declared dead.
fn customer_then_dead_phone(silent_after_ms: i64, talk_ms: u64) -> (AttemptId, Vec<Write>) {
    let mut rig = Rig::new(Config::default());
    rig.up();
    let bridge = rig.login(1);
    let mut packets = 0;
    for _ in 0..2 {
        rig.advance(1000);
        packets += 50;
        media(&mut rig, 1, packets);
    }
    let s = spec();
    let attempt = rig.dial(&s);
    rig.ms += 500;
    rig.answer(attempt);
    // The pre-bridge sample: a phone that stopped 20 ms ago is one packet short, within
    // the jitter the check must allow.
    let sent = |from_ms: i64, to_ms: i64| (to_ms.min(silent_after_ms) - from_ms).max(0) as u64 / 20;
    packets += 25 - (-silent_after_ms).clamp(0, 25) as u64 / 20;
    let out = media(&mut rig, 1, packets);
    assert_eq!(added(&out, attempt), Some(bridge.clone()), "the check passes");
    rig.bridged_ok(attempt, &bridge);
    let mut at_ms = 0i64;
    let mut ended = false;
    for _ in 0..20 {
        let step = 500;
        let out = rig.advance(step);
        if !ended && at_ms + step as i64 >= talk_ms as i64 {
            rig.hangup(&attempt.channel(), 16);
            ended = true;
        }
        let asked = ops(&out).iter().any(|o| matches!(o, AriOp::RtpReceived { .. }));
        packets += sent(at_ms, at_ms + step as i64);
        at_ms += step as i64;
        if asked {
            let out = media(&mut rig, 1, packets);
            if rig.session_state(1).is_none() {
                assert!(ended, "the call ended before the phone was found dead");
                return (attempt, writes(&out));
            }
        }
    }
    panic!("the silent phone was never found dead");
}

#[test]
fn a_customer_put_through_as_the_phone_died_is_recorded_operator_lost_when_it_is_found_dead() {
    for silent_after_ms in [-20, 0, 300] {
        let (attempt, writes) = customer_then_dead_phone(silent_after_ms, 1500);
        assert!(
            writes
                .iter()
                .any(|w| matches!(w, Write::OperatorLost { attempt: a, .. } if *a == attempt)),
            "silent {silent_after_ms} ms after the bridge: {writes:?}"
        );
    }
}

#[test]
fn a_phone_that_dies_after_a_real_conversation_leaves_its_result_alone() {
    let (_, writes) = customer_then_dead_phone(2500, 3000);
    assert!(
        !writes.iter().any(|w| matches!(w, Write::OperatorLost { .. })),
        "{writes:?}"
    );
}

#[test]
fn a_customer_whose_operator_died_hears_the_message_when_nobody_else_is_free() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let bridge2 = rig.login(2);
    let s = spec();
    let attempt = rig.talking(&s, &bridge);
    rig.talking(&s, &bridge2);
    // Asterisk's RTP timeout ends the phone's channel (cause 44).
    let out = rig.hangup(&login_channel(1), 44);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Observe(Observation::SessionDead { .. }))));
    assert!(!hangups(&out).contains(&attempt.channel()));
    assert!(
        ops(&out).iter().all(|o| !matches!(o, AriOp::Play { .. })),
        "op2 may free up within the limit"
    );
    let out = rig.advance(s.connect_limit_ms);
    assert!(
        ops(&out)
            .iter()
            .any(|o| matches!(o, AriOp::Play { channel, .. } if *channel == attempt.channel())),
        "{out:?} {:?}",
        rig.core.legs().map(|l| &l.state).collect::<Vec<_>>()
    );
    let out = rig.hangup(&attempt.channel(), 16);
    let (status, change) = finish_of(&out, attempt).unwrap();
    assert_eq!(
        (status, change.result),
        (AttemptStatus::Completed, Some(AttemptResult::OperatorLost))
    );
}

#[test]
fn an_unreachable_phone_ends_its_session_and_a_stale_one_gets_no_customer() {
    let mut rig = Rig::new(Config::default());
    rig.up();
    rig.login(1);
    let now = rig.now().wall;
    let out = rig.event(contact_status("op1", "Unreachable", now));
    assert_eq!(rig.session_state(1), None);
    assert!(operator_writes(&out).contains(&(rig.op(1).id, OperatorState::Offline)));
    // A session whose last media is older than two checks is not given a customer.
    rig.login(2);
    rig.ms += 2600;
    let s = spec();
    assert!(
        rig.core.snapshot(rig.now()).ready.is_empty(),
        "not offered to pacing either"
    );
    let attempt = rig.dial(&s);
    let out = rig.answer(attempt);
    assert_eq!(added(&out, attempt), None);
}

// ---- single and preview calls -------------------------------------------------------------------

fn single(rig: &Rig, n: usize) -> SingleCall {
    SingleCall {
        attempt: AttemptId::new(),
        operator: rig.op(n),
        phone: "+79160010103".into(),
        lead: None,
        campaign: None,
        spec: spec(),
        correlation_id: None,
        crm: json!({}),
    }
}

#[test]
fn a_single_call_with_a_session_is_dialled_into_the_operators_bridge() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let call = single(&rig, 1);
    let attempt = call.attempt;
    let reply = rig.reply_to();
    let out = rig.feed(Input::Command(Command::Single {
        call: Box::new(call),
        reply,
    }));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::CreateAttempt(n) if n.attempt == attempt && n.kind == CallKind::Single)));
    assert_eq!(rig.session_state(1), Some(OperatorState::Reserved));
    let out = rig.feed(Input::AttemptCreated {
        attempt,
        result: Ok(()),
    });
    assert!(out.contains(&Action::Reply(reply, Ok(Answer::Done))));
    let create = ops(&out).remove(0);
    assert!(matches!(&create, AriOp::Create { channel, .. } if *channel == attempt.channel()));
    rig.feed(Input::AriDone {
        op: create,
        result: Ok(AriReply::Ok),
    });
    let out = rig.event(stasis_start(
        &attempt.channel(),
        "PJSIP/trunk-2",
        "Down",
        &["click-to-call"],
        rig.now().wall,
    ));
    let calls = ops(&out);
    assert!(matches!(&calls[..], [AriOp::AddToBridge { bridge: b, .. }, AriOp::Dial { .. }] if *b == bridge));
    let out = rig.ringing(attempt);
    assert!(ops(&out)
        .iter()
        .any(|o| matches!(o, AriOp::PlayBridge { media, .. } if media == "tone:ring")));
    let now = rig.now().wall;
    let out = rig.event(state_change(&attempt.channel(), "Up", now));
    assert!(writes(&out).iter().any(|w| matches!(
        w,
        Write::Attempt {
            to: AttemptStatus::InProgress,
            ..
        }
    )));
    assert_eq!(rig.session_state(1), Some(OperatorState::OnCall));
    rig.hangup(&attempt.channel(), 16);
    assert_eq!(rig.session_state(1), Some(OperatorState::WrapUp));
}

#[test]
fn a_single_call_without_a_session_rings_the_operator_first_and_the_session_ends_with_the_call() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let call = single(&rig, 3);
    let attempt = call.attempt;
    let reply = rig.reply_to();
    rig.feed(Input::Command(Command::Single {
        call: Box::new(call),
        reply,
    }));
    let out = rig.feed(Input::AttemptCreated {
        attempt,
        result: Ok(()),
    });
    let op_leg = ChannelId::new(format!("single-op-{attempt}"));
    assert!(ops(&out).iter().any(
        |o| matches!(o, AriOp::Originate { channel, endpoint, .. } if *channel == op_leg && endpoint == "PJSIP/op3")
    ));
    let out = rig.event(stasis_start(
        &op_leg,
        "PJSIP/op3-1",
        "Up",
        &["single-operator"],
        rig.now().wall,
    ));
    let bridge = ops(&out)
        .into_iter()
        .find_map(|o| match o {
            AriOp::CreateBridge { bridge, .. } => Some(bridge),
            _ => None,
        })
        .unwrap();
    let out = rig.feed(Input::AriDone {
        op: AriOp::AddToBridge {
            bridge: bridge.clone(),
            channel: op_leg.clone(),
        },
        result: Ok(AriReply::Ok),
    });
    assert!(ops(&out)
        .iter()
        .any(|o| matches!(o, AriOp::Create { channel, .. } if *channel == attempt.channel())));
    assert!(operator_writes(&out).is_empty(), "not shown as logged in");
    assert!(rig.core.snapshot(rig.now()).ready.is_empty(), "not a pool session");
    rig.event(stasis_start(
        &attempt.channel(),
        "PJSIP/trunk-2",
        "Down",
        &["click-to-call"],
        rig.now().wall,
    ));
    let now = rig.now().wall;
    let out = rig.event(state_change(&attempt.channel(), "Up", now));
    assert!(operator_writes(&out).contains(&(rig.op(3).id, OperatorState::OnCall)));
    let out = rig.hangup(&attempt.channel(), 16);
    assert!(hangups(&out).contains(&op_leg), "the operator's leg goes with the call");
    assert!(operator_writes(&out).contains(&(rig.op(3).id, OperatorState::Offline)));
    assert_eq!(rig.session_state(3), None);
}

#[test]
fn a_single_call_whose_operator_does_not_answer_is_not_charged_to_the_lead() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let call = single(&rig, 3);
    let attempt = call.attempt;
    rig.feed(Input::Command(Command::Single {
        call: Box::new(call),
        reply: ReplyTo(0),
    }));
    rig.feed(Input::AttemptCreated {
        attempt,
        result: Ok(()),
    });
    let op_leg = ChannelId::new(format!("single-op-{attempt}"));
    let out = rig.hangup(&op_leg, 19);
    let (status, change) = finish_of(&out, attempt).unwrap();
    assert_eq!(
        status,
        AttemptStatus::Canceled,
        "the customer was never dialled: {change:?}"
    );
    assert_eq!(rig.core.live_calls(), 0);
}

#[test]
fn a_single_call_to_a_busy_number_is_refused_and_frees_the_operator() {
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let call = single(&rig, 1);
    let attempt = call.attempt;
    let reply = rig.reply_to();
    rig.feed(Input::Command(Command::Single {
        call: Box::new(call),
        reply,
    }));
    let out = rig.feed(Input::AttemptCreated {
        attempt,
        result: Err(CreateFail::NumberBusy),
    });
    assert!(out.contains(&Action::Reply(
        reply,
        Err(CommandError::Conflict("the number is already in a live call".into()))
    )));
    assert_eq!(rig.session_state(1), Some(OperatorState::Ready));
    assert_eq!(rig.core.live_calls(), 0);
    // A paused operator is refused at once.
    rig.feed(Input::Command(Command::SetPaused {
        operator: rig.op(1).id,
        paused: true,
        reply: ReplyTo(0),
    }));
    let reply = rig.reply_to();
    let call = single(&rig, 1);
    let out = rig.feed(Input::Command(Command::Single {
        call: Box::new(call),
        reply,
    }));
    assert!(
        matches!(&out[..], [Action::Reply(r, Err(CommandError::Conflict(m)))] if *r == reply && m.contains("paused"))
    );
}

fn offer(rig: &Rig, n: usize) -> Offer {
    let s = Arc::new(CampaignSpec {
        preview: crate::campaigns::spec::Preview {
            auto_dial_secs: 0,
            reservation_secs: 60,
            skip_delay_secs: 600,
        },
        ..(*spec()).clone()
    });
    Offer {
        operator: rig.op(n).id,
        lead: LeadId::new(),
        campaign: CampaignId::new(),
        spec: s,
        phone: "+79160010103".into(),
    }
}

#[test]
fn a_preview_offer_is_dialled_by_key_skipped_by_key_or_lapses_and_pauses_the_operator() {
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let ch = login_channel(1);
    let o = offer(&rig, 1);
    let reply = rig.reply_to();
    let out = rig.feed(Input::Command(Command::Offer {
        offer: Box::new(o.clone()),
        reply,
    }));
    assert!(out.contains(&Action::Reply(reply, Ok(Answer::Flag(true)))));
    assert_eq!(rig.session_state(1), Some(OperatorState::Reserved));
    let now = rig.now().wall;
    let out = rig.event(dtmf(&ch, "1", now));
    let created = out.iter().find_map(|a| match a {
        Action::CreateAttempt(n) => Some(n.clone()),
        _ => None,
    });
    let created = created.expect("key 1 dials the offered lead");
    assert_eq!((created.kind, created.lead), (CallKind::Preview, Some(o.lead)));
    rig.feed(Input::AttemptCreated {
        attempt: created.attempt,
        result: Err(CreateFail::Database("down".into())),
    });
    assert_eq!(rig.session_state(1), Some(OperatorState::Ready));
    // Skipped with 9.
    let o = offer(&rig, 1);
    rig.feed(Input::Command(Command::Offer {
        offer: Box::new(o.clone()),
        reply: ReplyTo(0),
    }));
    let out = rig.event(dtmf(&ch, "9", now));
    assert!(writes(&out)
        .iter()
        .any(|w| matches!(w, Write::SkipReserved { lead, delay_secs: 600, .. } if *lead == o.lead)));
    // Lapsed.
    let o = offer(&rig, 1);
    rig.feed(Input::Command(Command::Offer {
        offer: Box::new(o.clone()),
        reply: ReplyTo(0),
    }));
    let out = rig.advance(60_000);
    assert!(writes(&out).contains(&Write::ReleaseReservation {
        lead: o.lead,
        operator: rig.op(1).id
    }));
    assert_eq!(rig.session_state(1), Some(OperatorState::Paused));
}

// ---- drain, takeover, restart ----------------------------------------------------------------

#[test]
fn draining_dials_nothing_new_lets_live_calls_finish_and_keeps_sessions_up() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let s = spec();
    let attempt = rig.talking(&s, &bridge);
    let out = rig.feed(Input::Drain);
    assert!(hangups(&out).is_empty(), "nothing is cut");
    assert!(!rig.core.finished());
    let (late, out) = rig.claim(&s);
    assert_eq!(finish_of(&out, late).unwrap().0, AttemptStatus::Canceled);
    assert!(rig.core.snapshot(rig.now()).ready.is_empty());
    let out = rig.hangup(&attempt.channel(), 16);
    assert!(
        !hangups(&out).contains(&login_channel(1)),
        "the session stays for the next process"
    );
    assert!(rig.core.finished());
}

#[test]
fn another_process_taking_the_application_stops_this_one_at_once() {
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let now = rig.now().wall;
    let out = rig.event(envelope("ApplicationReplaced", now, json!({})));
    assert_eq!(out, vec![Action::Stop]);
    assert!(rig.core.finished());
    assert!(
        rig.hangup(&login_channel(1), 16).is_empty(),
        "a replaced engine does nothing more"
    );
}

fn facts(name: &str, state: crate::ari::models::ChannelState, in_app: bool) -> ChannelFacts {
    ChannelFacts {
        state,
        name: name.into(),
        in_app,
        app_data: None,
    }
}

#[test]
fn after_a_restart_live_calls_are_adopted_and_only_calls_that_are_gone_are_closed() {
    use crate::ari::models::ChannelState::*;
    let mut rig = Rig::new(quiet());
    let s = spec();
    let op = rig.op(1);
    let session_channel = login_channel(1);
    let bridge = BridgeId::new("operator-x");
    let call = |_: &Rig| Call {
        attempt: AttemptId::new(),
        lead: Some(LeadId::new()),
        campaign: Some(CampaignId::new()),
        phone: "+79160010103".into(),
        spec: s.clone(),
        kind: CallKind::Campaign,
        preferred_operator: None,
    };
    let talking = call(&rig);
    let ringing = call(&rig);
    let gone = call(&rig);
    let waiting = call(&rig);
    let answered = rig.now().wall - chrono::Duration::seconds(10);
    let restored = Restored {
        sessions: vec![RestoredSession {
            info: op.clone(),
            channel: session_channel.clone(),
            bridge: bridge.clone(),
            state: OperatorState::OnCall,
            since: answered,
            attempt: Some(talking.attempt),
            spec: Some(s.clone()),
        }],
        legs: vec![
            RestoredLeg {
                call: talking.clone(),
                status: AttemptStatus::InProgress,
                operator: Some(op.id),
                dialed: true,
                answered_at: Some(answered),
                bridge: Some(bridge.clone()),
                amd_status: None,
            },
            RestoredLeg {
                call: ringing.clone(),
                status: AttemptStatus::Ringing,
                operator: None,
                dialed: true,
                answered_at: None,
                bridge: None,
                amd_status: None,
            },
            RestoredLeg {
                call: gone.clone(),
                status: AttemptStatus::InProgress,
                operator: Some(op.id),
                dialed: true,
                answered_at: Some(answered),
                bridge: Some(BridgeId::new("operator-old")),
                amd_status: None,
            },
            RestoredLeg {
                call: waiting.clone(),
                status: AttemptStatus::Ringing,
                operator: None,
                dialed: true,
                answered_at: Some(answered),
                bridge: None,
                amd_status: None,
            },
        ],
    };
    let out = rig.feed(Input::Restore(restored));
    assert!(ops(&out).is_empty(), "nothing is touched before Asterisk is read");
    rig.feed(Input::AriConnected);
    let view = AsteriskView {
        taken_at: Some(rig.now().at),
        channels: [
            (session_channel.clone(), facts("PJSIP/op1-1", Up, true)),
            (talking.attempt.channel(), facts("PJSIP/trunk-1", Up, true)),
            (ringing.attempt.channel(), facts("PJSIP/trunk-2", Ringing, false)),
            (waiting.attempt.channel(), facts("PJSIP/trunk-3", Up, true)),
        ]
        .into_iter()
        .collect(),
        bridges: [(bridge.clone(), vec![session_channel.clone(), talking.attempt.channel()])]
            .into_iter()
            .collect(),
    };
    let out = rig.feed(Input::Reconcile(view));
    assert!(
        !hangups(&out).contains(&talking.attempt.channel()),
        "the conversation stays up"
    );
    assert!(
        !hangups(&out).contains(&session_channel),
        "the operator stays logged in"
    );
    assert!(finish_of(&out, talking.attempt).is_none());
    assert!(
        finish_of(&out, ringing.attempt).is_none(),
        "the ringing call is followed"
    );
    assert!(ops(&out).contains(&AriOp::Subscribe {
        source: format!("channel:{}", ringing.attempt)
    }));
    let (status, change) = finish_of(&out, gone.attempt).expect("the vanished call is closed");
    assert_eq!(status, AttemptStatus::Completed);
    assert_eq!(change.reason.as_deref(), Some("ended while obzvon was away"));
    assert!(change.end_from_cdr);
    assert!(
        ops(&out)
            .iter()
            .any(|o| matches!(o, AriOp::Play { channel, .. } if *channel == waiting.attempt.channel())),
        "a customer answered 10 s ago hears the message now"
    );
    assert_eq!(rig.session_state(1), Some(OperatorState::OnCall));
    // The adopted conversation ends with its real end.
    let out = rig.hangup(&talking.attempt.channel(), 16);
    let (status, change) = finish_of(&out, talking.attempt).unwrap();
    assert_eq!(
        (status, change.result),
        (AttemptStatus::Completed, Some(AttemptResult::Success))
    );
    assert_eq!(rig.session_state(1), Some(OperatorState::WrapUp));
    // The followed call ends with what Asterisk says.
    let now = rig.now().wall;
    let out = rig.event(destroyed(&ringing.attempt.channel(), 17, Some(486), now));
    assert_eq!(
        finish_of(&out, ringing.attempt).unwrap().1.result,
        Some(AttemptResult::Busy)
    );
}

#[test]
fn a_reconnect_settles_what_ended_unseen_and_logs_in_a_phone_that_dialled_meanwhile() {
    use crate::ari::models::ChannelState::*;
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let s = spec();
    let attempt = rig.talking(&s, &bridge);
    rig.feed(Input::AriLost);
    rig.ms += 5000;
    rig.feed(Input::AriConnected);
    let mut login = facts("PJSIP/op2-00000009", Up, true);
    login.app_data = Some("obzvon,login".into());
    let view = AsteriskView {
        taken_at: Some(rig.now().at),
        channels: [
            (login_channel(1), facts("PJSIP/op1-1", Up, true)),
            (ChannelId::new("new-login"), login),
        ]
        .into_iter()
        .collect(),
        bridges: [(bridge.clone(), vec![login_channel(1)])].into_iter().collect(),
    };
    let out = rig.feed(Input::Reconcile(view));
    let (status, change) = finish_of(&out, attempt).expect("the call ended while the websocket was down");
    assert_eq!(
        (status, change.ended_by),
        (AttemptStatus::Completed, Some(EndedBy::System))
    );
    assert_eq!(rig.session_state(1), Some(OperatorState::WrapUp));
    assert!(
        ops(&out)
            .iter()
            .any(|o| matches!(o, AriOp::AddToBridge { channel, .. } if channel.as_str() == "new-login")),
        "op2's login is taken up: {out:?}"
    );
}

// ---- the property: random orders, duplicates, late events ---------------------------------

mod property {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Claim(usize),
        Login(usize),
        Logout(usize, bool),
        Ring(usize),
        Answer(usize),
        Up(usize),
        Gone(usize, i32),
        Key(usize, &'static str),
        Cancel(usize),
        /// Complete a pending ARI call (by index): 0-7 succeed, 8 is refused, 9 finds nothing.
        Finish(usize, u8),
        Media(usize, u64),
        Time(u64),
        Single(usize, usize),
        Lost,
        Reconnect,
        Played(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..4usize).prop_map(Step::Claim),
            2 => (1..=3usize).prop_map(Step::Login),
            1 => ((1..=3usize), any::<bool>()).prop_map(|(n, dead)| Step::Logout(n, dead)),
            // Events for the four campaign calls (0-3) and the four single calls (4-7).
            2 => (0..8usize).prop_map(Step::Ring),
            3 => (0..8usize).prop_map(Step::Answer),
            2 => (0..8usize).prop_map(Step::Up),
            2 => ((0..8usize), prop_oneof![Just(16), Just(17), Just(19), Just(34)]).prop_map(|(a, c)| Step::Gone(a, c)),
            2 => ((1..=3usize), prop_oneof![Just("0"), Just("#"), Just("1"), Just("9"), Just("2")]).prop_map(|(n, k)| Step::Key(n, k)),
            1 => (0..8usize).prop_map(Step::Cancel),
            6 => ((0..64usize), 0..10u8).prop_map(|(i, how)| Step::Finish(i, how)),
            1 => ((1..=3usize), 0..3u64).prop_map(|(n, p)| Step::Media(n, p)),
            3 => (0..4000u64).prop_map(Step::Time),
            1 => ((0..4usize), (1..=3usize)).prop_map(|(a, n)| Step::Single(a, n)),
            1 => Just(Step::Lost),
            1 => Just(Step::Reconnect),
            1 => (0..8usize).prop_map(Step::Played),
        ]
    }

    /// What the property checks across a whole run.
    struct Watch {
        originated: HashSet<ChannelId>,
        finished: HashSet<AttemptId>,
        status: HashMap<AttemptId, AttemptStatus>,
    }

    fn rank(s: AttemptStatus) -> u8 {
        match s {
            AttemptStatus::Init => 0,
            AttemptStatus::Ringing => 1,
            AttemptStatus::InProgress => 2,
            _ => 3,
        }
    }

    impl Watch {
        fn check(
            &mut self,
            before: &HashMap<BridgeId, (OperatorId, SessionState)>,
            live: &HashSet<AttemptId>,
            out: &[Action],
        ) -> Result<(), TestCaseError> {
            for op in ops(out) {
                match op {
                    AriOp::Originate { channel, .. } => {
                        prop_assert!(self.originated.insert(channel.clone()), "{channel} originated twice");
                    }
                    AriOp::AddToBridge { bridge, channel } => {
                        let Some(attempt) = channel.attempt() else { continue };
                        let Some((op, state)) = before.get(&bridge) else {
                            // A per-call session's bridge, made in the same batch.
                            prop_assert!(
                                bridge.as_str().starts_with("single-"),
                                "{attempt} into unknown bridge {bridge}"
                            );
                            continue;
                        };
                        // Free: ready, joining (ready within this input), already reserved for
                        // this very customer, or reserved for a call that ended in this input.
                        let free = match state {
                            SessionState::Ready | SessionState::Joining => true,
                            SessionState::Reserved { attempt: a } => *a == attempt || !live.contains(a),
                            _ => false,
                        };
                        prop_assert!(free, "{attempt} bridged to operator {op} who was {state:?}");
                    }
                    _ => {}
                }
            }
            for w in writes(out) {
                match w {
                    Write::Finish { attempt, status, .. } => {
                        prop_assert!(self.finished.insert(attempt), "{attempt} finished twice");
                        prop_assert!(!status.is_live(), "finished as {status}");
                    }
                    Write::Attempt { attempt, to, .. } => {
                        prop_assert!(!self.finished.contains(&attempt), "{attempt} written after it finished");
                        let was = self.status.get(&attempt).copied().unwrap_or(AttemptStatus::Init);
                        prop_assert!(rank(to) >= rank(was), "{attempt} went back from {was} to {to}");
                        prop_assert!(to.is_live(), "a transition to {to} without finishing");
                        self.status.insert(attempt, to);
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }

    fn short(a: AttemptId) -> String {
        a.to_string()[..4].to_owned()
    }

    /// The core's own bookkeeping agrees with itself.
    fn consistent(core: &Core) -> Result<(), TestCaseError> {
        let mut taken = HashSet::new();
        // A leg we asked Asterisk to hang up may outlive its operator's session until
        // Asterisk confirms; every other leg must agree with its operator's session.
        for leg in core.legs().filter(|l| l.stop.is_none()) {
            let op = match &leg.state {
                LegState::Connecting { operator, .. } | LegState::Bridged { operator, .. } => *operator,
                _ => continue,
            };
            prop_assert!(taken.insert(op), "operator {op} holds two customers");
            let session = core.sessions().find(|s| s.info.id == op);
            let Some(session) = session else {
                return Err(TestCaseError::fail(format!(
                    "{} is with operator {op} who has no session",
                    leg.call.attempt
                )));
            };
            let attempt = leg.call.attempt;
            let ok = match &leg.state {
                LegState::Connecting { .. } => session.state == SessionState::Reserved { attempt },
                _ => session.state == SessionState::OnCall { attempt },
            };
            prop_assert!(
                ok,
                "{attempt} is {:?} but its operator is {:?}",
                leg.state,
                session.state
            );
        }
        // And the other way: an operator held for a customer holds a live one.
        for s in core.sessions() {
            let (SessionState::Reserved { attempt } | SessionState::OnCall { attempt }) = &s.state else {
                continue;
            };
            let Some(leg) = core.legs().find(|l| l.call.attempt == *attempt) else {
                return Err(TestCaseError::fail(format!(
                    "{} is {:?} for a call that is gone",
                    s.info.name, s.state
                )));
            };
            let theirs = leg.operator == Some(s.info.id)
                || matches!(&leg.state, LegState::Connecting { operator, .. } | LegState::Bridged { operator, .. } if *operator == s.info.id);
            prop_assert!(
                theirs,
                "{} is {:?} but the call is {:?}",
                s.info.name,
                s.state,
                leg.state
            );
        }
        Ok(())
    }

    proptest! {
        // 256 cases by default; PROPTEST_CASES=20000 for a longer search.
        #![proptest_config(ProptestConfig { max_shrink_iters: 2000, ..ProptestConfig::default() })]

        #[test]
        fn no_illegal_transition_no_double_dial_no_bridge_into_a_busy_operator(steps in prop::collection::vec(step(), 1..120)) {
            let mut rig = Rig::new(Config::default());
            rig.up();
            let s = spec();
            let attempts: Vec<AttemptId> = (0..4).map(|_| AttemptId::new()).collect();
            let singles: Vec<AttemptId> = (0..4).map(|_| AttemptId::new()).collect();
            let every: Vec<AttemptId> = attempts.iter().chain(&singles).copied().collect();
            let mut pending: Vec<AriOp> = Vec::new();
            let mut watch = Watch { originated: HashSet::new(), finished: HashSet::new(), status: HashMap::new() };
            let mut trace: Vec<String> = Vec::new();
            for step in steps.clone() {
                let before: HashMap<BridgeId, (OperatorId, SessionState)> = rig
                    .core
                    .sessions()
                    .filter_map(|s| s.bridge.clone().map(|b| (b, (s.info.id, s.state.clone()))))
                    .collect();
                let now = rig.now().wall;
                let out = match step {
                    Step::Claim(i) => rig.feed(Input::Command(Command::Dial(Box::new(Claimed {
                        attempt: attempts[i],
                        lead: LeadId::new(),
                        campaign: CAMPAIGN.with(|c| *c),
                        phone: format!("+7916001010{i}"),
                        spec: s.clone(),
                        preferred_operator: None,
                    })))),
                    Step::Login(n) => rig.event(stasis_start(&login_channel(n), &format!("PJSIP/op{n}-1"), "Up", &["login"], now)),
                    Step::Logout(n, dead) => rig.hangup(&login_channel(n), if dead { 44 } else { 16 }),
                    Step::Ring(i) => rig.ringing(every[i]),
                    Step::Answer(i) => rig.answer(every[i]),
                    Step::Up(i) => rig.event(state_change(&every[i].channel(), "Up", now)),
                    Step::Gone(i, cause) => rig.hangup(&every[i].channel(), cause),
                    Step::Key(n, k) => rig.event(dtmf(&login_channel(n), k, now)),
                    Step::Cancel(i) => rig.feed(Input::Command(Command::Cancel { attempt: every[i], reply: ReplyTo(0) })),
                    Step::Finish(i, how) if !pending.is_empty() => {
                        let op = pending.remove(i % pending.len());
                        let result = match how {
                            0..=7 => Ok(match op { AriOp::RtpReceived { .. } => AriReply::Packets { count: rig.ms, at: rig.now().at }, _ => AriReply::Ok }),
                            8 => Err(AriFail::Refused(500, "fabricated".into())),
                            _ => Err(AriFail::NotFound),
                        };
                        rig.feed(Input::AriDone { op, result })
                    }
                    Step::Finish(..) => Vec::new(),
                    Step::Media(n, p) => rig.feed(Input::AriDone {
                        op: AriOp::RtpReceived { channel: login_channel(n) },
                        result: Ok(AriReply::Packets { count: p, at: rig.now().at }),
                    }),
                    Step::Time(ms) => rig.advance(ms),
                    Step::Single(i, n) => {
                        let mut call = single(&rig, n);
                        call.attempt = singles[i];
                        let out = rig.feed(Input::Command(Command::Single { call: Box::new(call), reply: ReplyTo(0) }));
                        let created = out.iter().any(|a| matches!(a, Action::CreateAttempt(_)));
                        let mut out = out;
                        if created {
                            out.extend(rig.feed(Input::AttemptCreated { attempt: singles[i], result: Ok(()) }));
                        }
                        out
                    }
                    Step::Lost => rig.feed(Input::AriLost),
                    Step::Reconnect => {
                        // Asterisk still holds every channel the core knows (nothing vanished).
                        rig.feed(Input::AriConnected);
                        let mut view = AsteriskView { taken_at: Some(rig.now().at), ..AsteriskView::default() };
                        for l in rig.core.legs() {
                            let state = if l.answered().is_some() { crate::ari::models::ChannelState::Up } else { crate::ari::models::ChannelState::Ringing };
                            view.channels.insert(l.channel(), facts("PJSIP/trunk-1", state, true));
                            if let LegState::Bridged { bridge, .. } = &l.state {
                                view.bridges.entry(bridge.clone()).or_default().push(l.channel());
                            }
                        }
                        for s in rig.core.sessions() {
                            view.channels.insert(s.channel.clone(), facts("PJSIP/op1-1", crate::ari::models::ChannelState::Up, true));
                            if let Some(b) = &s.bridge {
                                view.bridges.entry(b.clone()).or_default().push(s.channel.clone());
                            }
                        }
                        rig.feed(Input::Reconcile(view))
                    }
                    Step::Played(i) => rig.event(playback_finished(&format!("abandon-{}", every[i]), &every[i].channel(), now)),
                };
                trace.push(format!(
                    "{step:?}\n    ops {:?}\n    legs {:?}\n    sessions {:?}",
                    ops(&out).iter().map(|o| format!("{o:?}").chars().take(80).collect::<String>()).collect::<Vec<_>>(),
                    rig.core.legs().map(|l| (short(l.call.attempt), l.state.clone(), l.operator.map(|o| o.to_string()[..4].to_owned()))).collect::<Vec<_>>(),
                    rig.core.sessions().map(|s| (s.info.name.clone(), s.state.clone())).collect::<Vec<_>>(),
                ));
                let live: HashSet<AttemptId> = rig.core.legs().map(|l| l.call.attempt).collect();
                let checked = watch.check(&before, &live, &out).and_then(|()| consistent(&rig.core));
                if let Err(e) = checked {
                    let tail: Vec<String> = trace.iter().rev().take(12).rev().cloned().collect();
                    return Err(TestCaseError::fail(format!("{e}\nlast steps:\n{}", tail.join("\n"))));
                }
                for a in &out {
                    if let Action::Ari(calls) = a {
                        pending.extend(calls.iter().filter(|c| c.report != Report::Nothing).map(|c| c.op.clone()));
                    }
                }
            }
            // Liveness: once every ARI call has been answered and time has passed every
            // deadline, nothing is left waiting on something that will not come.
            for _ in 0..40 {
                while let Some(op) = (!pending.is_empty()).then(|| pending.remove(0)) {
                    let result = Ok(match op { AriOp::RtpReceived { .. } => AriReply::Packets { count: rig.ms, at: rig.now().at }, _ => AriReply::Ok });
                    let out = rig.feed(Input::AriDone { op, result });
                    for a in &out {
                        if let Action::Ari(calls) = a {
                            pending.extend(calls.iter().filter(|c| c.report != Report::Nothing).map(|c| c.op.clone()));
                        }
                    }
                }
                let out = rig.advance(2000);
                for a in &out {
                    if let Action::Ari(calls) = a {
                        pending.extend(calls.iter().filter(|c| c.report != Report::Nothing).map(|c| c.op.clone()));
                    }
                }
            }
            for leg in rig.core.legs() {
                let stuck = matches!(leg.state, LegState::Connecting { .. } | LegState::Waiting { .. } | LegState::Creating);
                prop_assert!(!stuck, "{} still {:?}\nlast steps:\n{}", leg.call.attempt, leg.state, trace.iter().rev().take(8).rev().cloned().collect::<Vec<_>>().join("\n"));
            }
            consistent(&rig.core)?;
        }
    }
}

#[test]
fn predictive_campaigns_report_ringing_ages_busy_operators_and_what_their_calls_taught() {
    use crate::campaigns::spec::PacingMode;
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    rig.login(2);
    let mut predictive = (*spec()).clone();
    predictive.pacing.mode = PacingMode::Predictive;
    let s = Arc::new(predictive);
    let campaign = CAMPAIGN.with(|c| *c);
    rig.core.snapshot(rig.now());

    let answered = rig.dial(&s);
    rig.ringing(answered);
    let unanswered = rig.dial(&s);
    rig.ms += 1500;
    let snap = rig.core.snapshot(rig.now());
    let load = &snap.campaigns[&campaign];
    assert_eq!(load.ringing, [Duration::from_millis(1500); 2]);
    assert_eq!(snap.ready.len(), 2);
    rig.answer(answered);
    rig.bridged_ok(answered, &bridge);
    rig.ms += 700;
    let snap = rig.core.snapshot(rig.now());
    assert_eq!(snap.ready.len(), 1);
    assert!(
        matches!(&snap.busy[..], [b] if b.id == rig.op(1).id && !b.wrapping && b.elapsed == Duration::from_millis(700)),
        "{:?}",
        snap.busy
    );
    let taught: Vec<PacingOutcome> = snap
        .learnt
        .iter()
        .map(|(c, o)| {
            assert_eq!(*c, campaign);
            *o
        })
        .collect();
    assert!(
        matches!(&taught[..], [PacingOutcome::LiveAnswer { after_secs }, PacingOutcome::Connected { abandoned: false }] if (*after_secs - 1.5).abs() < 1e-9),
        "{taught:?}"
    );
    rig.ms += 2300;
    rig.hangup(&answered.channel(), 16);
    rig.hangup(&unanswered.channel(), 19);
    rig.advance(3100);
    let taught: Vec<String> = rig
        .core
        .snapshot(rig.now())
        .learnt
        .iter()
        .map(|(_, o)| format!("{o:?}"))
        .collect();
    assert_eq!(
        taught,
        [
            "Talk { secs: 3.0 }",
            "NoLiveAnswer { after_secs: 4.5 }",
            "WrapUp { secs: 3.1 }"
        ]
    );

    let progressive = spec();
    let other = rig.dial(&progressive);
    rig.hangup(&other.channel(), 19);
    assert!(
        rig.core.snapshot(rig.now()).learnt.is_empty(),
        "progressive campaigns teach nothing"
    );
}

#[test]
fn a_sample_the_engine_reads_late_is_judged_by_when_it_was_taken() {
    let mut rig = Rig::new(Config::default());
    rig.up();
    rig.login(1);
    let mut packets = 0;
    for _ in 0..3 {
        rig.advance(1000);
        packets += 50;
        media(&mut rig, 1, packets);
    }
    // The next sample is taken a second later, but the engine only gets to it five seconds on
    // (a stalled disk, a busy machine): fifty more packets in one second is a live phone.
    let taken = rig.now().at + Duration::from_millis(1000);
    rig.ms += 6000;
    let out = rig.feed(Input::AriDone {
        op: AriOp::RtpReceived {
            channel: login_channel(1),
        },
        result: Ok(AriReply::Packets {
            count: packets + 50,
            at: taken,
        }),
    });
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Observe(Observation::SessionDead { .. }))),
        "{out:?}"
    );
    assert_eq!(rig.session_state(1), Some(OperatorState::Ready));
}

// ---- answering-machine detection -----------------------------------------------------------------

fn amd_spec(mode: crate::calls::amd::AmdMode) -> Arc<CampaignSpec> {
    let mut s = (*spec()).clone();
    s.amd.mode = mode;
    s.connect_limit_ms = 3000;
    Arc::new(s)
}

impl Rig {
    fn verdict(&mut self, attempt: AttemptId, args: &[&str]) -> Vec<Action> {
        let ch = attempt.channel();
        let mut all = vec!["amd"];
        all.extend_from_slice(args);
        self.event(stasis_start(&ch, "PJSIP/trunk-00000001", "Up", &all, self.now().wall))
    }
}

#[test]
fn an_answered_call_goes_to_detection_first_and_a_person_is_connected_within_the_limit() {
    use crate::calls::amd::AmdMode;
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let s = amd_spec(AmdMode::HangUp);
    let (attempt, out) = rig.claim(&s);
    let AriOp::Originate { variables, .. } = &ops(&out)[0] else {
        panic!()
    };
    assert_eq!(variables["OBZVON_AMD"], "2500,1500,800,5000,100,50,2,256,5000");
    rig.ringing(attempt);
    let out = rig.answer(attempt);
    let sent = ops(&out);
    assert!(
        sent.contains(&AriOp::Continue {
            channel: attempt.channel(),
            context: "obzvon-amd".into()
        }),
        "{sent:?}"
    );
    assert!(sent.contains(&AriOp::Subscribe {
        source: format!("channel:{}", attempt.channel().as_str())
    }));
    assert_eq!(added(&out, attempt), None, "not connected before the verdict");
    assert_eq!(rig.session_state(1), Some(OperatorState::Ready));
    rig.ms += 1800;
    let out = rig.verdict(attempt, &["HUMAN", "HUMAN-300-800"]);
    assert_eq!(added(&out, attempt), Some(bridge), "a person goes to the operator");
    assert!(writes(&out).iter().any(
        |w| matches!(w, Write::Attempt { change, .. } if change.amd == Some(("HUMAN".into(), "HUMAN-300-800".into())))
    ));
}

#[test]
fn detection_that_uses_up_the_connect_limit_gives_a_person_the_abandon_message_at_once() {
    use crate::calls::amd::AmdMode;
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let s = amd_spec(AmdMode::HangUp);
    let (attempt, _) = rig.claim(&s);
    rig.answer(attempt);
    rig.ms += 3500;
    let out = rig.verdict(attempt, &["NOTSURE", "TOOLONG-5000"]);
    assert!(
        ops(&out)
            .iter()
            .any(|o| matches!(o, AriOp::Play { channel, .. } if *channel == attempt.channel())),
        "the message, not an operator: {out:?}"
    );
    let out = rig.hangup(&attempt.channel(), 16);
    assert_eq!(
        finish_of(&out, attempt).unwrap().1.result,
        Some(AttemptResult::Abandoned)
    );
}

#[test]
fn a_machine_is_hung_up_on_and_the_operator_stays_free() {
    use crate::calls::amd::AmdMode;
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let s = amd_spec(AmdMode::Message);
    let (attempt, _) = rig.claim(&s);
    rig.answer(attempt);
    rig.ms += 9000;
    let out = rig.verdict(attempt, &["MACHINE", "LONGGREETING-1600-1500", "message-left"]);
    assert_eq!(hangups(&out), vec![attempt.channel()]);
    assert_eq!(added(&out, attempt), None);
    let out = rig.hangup(&attempt.channel(), 16);
    let (status, change) = finish_of(&out, attempt).unwrap();
    assert_eq!(
        (status, change.result),
        (AttemptStatus::Completed, Some(AttemptResult::Machine))
    );
    assert_eq!(
        change.reason.as_deref(),
        Some("answering machine detected; message left after the greeting")
    );
    assert_eq!(rig.session_state(1), Some(OperatorState::Ready));
}

#[test]
fn operator_mode_connects_a_machine_and_a_lost_verdict_ends_the_call_as_abandoned() {
    use crate::calls::amd::AmdMode;
    let mut rig = Rig::new(quiet());
    rig.up();
    let bridge = rig.login(1);
    let (attempt, _) = rig.claim(&amd_spec(AmdMode::Operator));
    rig.answer(attempt);
    let out = rig.verdict(attempt, &["MACHINE", "MAXWORDS-3-2"]);
    assert_eq!(added(&out, attempt), Some(bridge));

    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let (attempt, _) = rig.claim(&amd_spec(AmdMode::HangUp));
    rig.answer(attempt);
    let out = rig.advance(70_000);
    assert_eq!(hangups(&out), vec![attempt.channel()], "given up after analysis + 60 s");
    let out = rig.hangup(&attempt.channel(), 16);
    assert_eq!(
        finish_of(&out, attempt).unwrap().1.result,
        Some(AttemptResult::Abandoned)
    );
}

#[test]
fn a_customer_who_hangs_up_during_detection_is_an_early_hang_up() {
    use crate::calls::amd::AmdMode;
    let mut rig = Rig::new(quiet());
    rig.up();
    rig.login(1);
    let (attempt, _) = rig.claim(&amd_spec(AmdMode::HangUp));
    rig.answer(attempt);
    rig.ms += 700;
    let out = rig.hangup(&attempt.channel(), 16);
    let (_, change) = finish_of(&out, attempt).unwrap();
    assert_eq!(change.result, Some(AttemptResult::EarlyHangup));
    assert_eq!(change.ended_by, Some(EndedBy::Customer));
}

#[test]
fn a_session_whose_phone_answers_before_the_originates_answer_still_answers_the_request() {
    let mut rig = Rig::new(quiet());
    rig.up();
    let reply = rig.reply_to();
    let channel = ChannelId::new("session-fast");
    let out = rig.feed(Input::Command(Command::StartSession {
        operator: rig.op(1),
        channel: channel.clone(),
        reply,
    }));
    let originate = ops(&out)[0].clone();
    assert!(matches!(originate, AriOp::Originate { .. }), "{originate:?}");
    // The phone is in Stasis before the originate's HTTP answer is read.
    let out = rig.event(stasis_start(&channel, "PJSIP/op1-00000001", "Up", &[], rig.now().wall));
    assert!(out.contains(&Action::Reply(reply, Ok(Answer::Done))), "{out:?}");
    let out = rig.feed(Input::AriDone {
        op: originate,
        result: Ok(AriReply::Ok),
    });
    assert!(
        !out.iter().any(|a| matches!(a, Action::Reply(..))),
        "answered once: {out:?}"
    );
}
