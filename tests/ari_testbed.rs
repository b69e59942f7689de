//! The typed ARI client against the real test bed: Asterisk 22, the SIPp trunk whose behaviour
//! follows the dialled number, and SIPp operator phones.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use obzvon::ari::events::ChannelDestroyed;
use obzvon::ari::{BridgeType, EventKind, HangupReason, Originate};
use obzvon::calls::{classify_unanswered, AttemptResult};
use obzvon::ids::AttemptId;

const T: Duration = Duration::from_secs(15);

fn destroyed(event: &obzvon::ari::Event) -> &ChannelDestroyed {
    match &event.kind {
        EventKind::ChannelDestroyed(d) => d,
        other => panic!("not ChannelDestroyed: {other:?}"),
    }
}

fn originate_to(number: &str, attempt: AttemptId, timeout_secs: u32) -> Originate {
    let mut variables = BTreeMap::new();
    variables.insert("CDR(userfield)".to_owned(), attempt.to_string());
    Originate {
        endpoint: trunk_endpoint(number),
        channel_id: Some(attempt.channel_id()),
        app_args: vec!["attempt".to_owned(), attempt.to_string()],
        caller_id: Some("\"obzvon\" <74950000000>".to_owned()),
        timeout_secs: Some(timeout_secs),
        variables,
        ..Default::default()
    }
}

/// Dials a test-bed number that answers at once and waits until the customer is in Stasis.
async fn answered_call(ari: &obzvon::ari::AriClient, events: &mut Events, behaviour: u8, talk_secs: u8) -> String {
    let attempt = AttemptId::new();
    let channel = attempt.channel_id();
    ari.originate(&originate_to(&number(behaviour, 0, talk_secs), attempt, 10))
        .await
        .unwrap();
    events.wait_channel(&channel, "StasisStart", T).await;
    channel
}

#[tokio::test]
async fn answered_call_starts_stasis_with_our_id_and_args_and_far_end_hangup_is_cause_16() {
    require_trunk();
    let ari = ari_client("answer").await;
    let mut events = connect_events(&ari).await;
    let attempt = AttemptId::new();
    let channel = attempt.channel_id();

    let created = ari
        .originate(&originate_to(&number(1, 1, 2), attempt, 10))
        .await
        .unwrap();
    assert_eq!(created.id, channel);

    // The same channel id again must be refused, not dialled twice.
    let again = ari
        .originate(&originate_to(&number(1, 1, 2), attempt, 10))
        .await
        .unwrap_err();
    assert!(again.is_conflict(), "second originate with one id: {again}");

    events.wait_for("Ringing", T, |e| {
        matches!(&e.kind, EventKind::ChannelStateChange(c) if c.channel.id == channel && c.channel.state == obzvon::ari::models::ChannelState::Ringing)
    }).await;
    let start = events.wait_channel(&channel, "StasisStart", T).await;
    let EventKind::StasisStart(start) = &start.kind else {
        unreachable!()
    };
    assert_eq!(start.args, ["attempt".to_owned(), attempt.to_string()]);
    assert_eq!(start.channel.state, obzvon::ari::models::ChannelState::Up);
    assert_eq!(
        ari.get_variable(&channel, "CDR(userfield)").await.unwrap(),
        attempt.to_string()
    );

    // The customer hangs up two seconds after answering.
    let end = events.wait_channel(&channel, "ChannelDestroyed", T).await;
    let d = destroyed(&end);
    assert_eq!((d.cause, d.cause_txt.as_str()), (16, "Normal Clearing"));
    assert!(events
        .seen
        .iter()
        .any(|e| e.type_name == "StasisEnd" && e.channel_id() == Some(channel.as_str())));
}

#[tokio::test]
async fn our_hangup_of_an_answered_call_is_cause_16() {
    require_trunk();
    let ari = ari_client("hangup").await;
    let mut events = connect_events(&ari).await;
    let channel = answered_call(&ari, &mut events, 1, 30).await;
    ari.hangup(&channel, HangupReason::Normal).await.unwrap();
    let end = events.wait_channel(&channel, "ChannelDestroyed", T).await;
    assert_eq!(destroyed(&end).cause, 16);
    // Hanging up what is gone is a 404 the call flow can ignore.
    assert!(ari
        .hangup(&channel, HangupReason::Normal)
        .await
        .unwrap_err()
        .is_not_found());
}

/// Dials `number` and returns the ChannelDestroyed cause, SIP code, and seconds it took.
async fn unanswered(label: &str, number: &str, timeout_secs: u32) -> (i32, Option<i32>, f64) {
    let ari = ari_client(label).await;
    let mut events = connect_events(&ari).await;
    let attempt = AttemptId::new();
    let started = Instant::now();
    ari.originate(&originate_to(number, attempt, timeout_secs))
        .await
        .unwrap();
    let end = events.wait_channel(&attempt.channel_id(), "ChannelDestroyed", T).await;
    assert!(
        !events.seen.iter().any(|e| e.type_name == "StasisStart"),
        "an unanswered leg must not enter Stasis"
    );
    let d = destroyed(&end);
    (d.cause, d.tech_cause, started.elapsed().as_secs_f64())
}

#[tokio::test]
async fn busy_is_cause_17_and_result_busy() {
    require_trunk();
    let (cause, sip, _) = unanswered("busy", &number(2, 1, 0), 10).await;
    assert_eq!((cause, sip), (17, Some(486)));
    assert_eq!(classify_unanswered(cause, sip), AttemptResult::Busy);
}

#[tokio::test]
async fn ringing_past_the_dial_timeout_is_no_answer() {
    require_trunk();
    let (cause, sip, secs) = unanswered("noanswer", &number(3, 0, 0), 5).await;
    assert!((4.5..8.0).contains(&secs), "gave up after {secs:.1} s, timeout was 5 s");
    assert_eq!(cause, 19, "sip {sip:?}");
    assert_eq!(classify_unanswered(cause, sip), AttemptResult::NoAnswer);
}

#[tokio::test]
async fn service_unavailable_is_cause_34_and_result_congestion() {
    require_trunk();
    let (cause, sip, _) = unanswered("congestion", &number(4, 0, 0), 10).await;
    assert_eq!((cause, sip), (34, Some(503)));
    assert_eq!(classify_unanswered(cause, sip), AttemptResult::Congestion);
}

#[tokio::test]
async fn not_found_and_decline_map_to_invalid_number_and_rejected() {
    require_trunk();
    let (cause, sip, _) = unanswered("notfound", &number(6, 0, 0), 10).await;
    assert_eq!(sip, Some(404));
    assert_eq!(
        classify_unanswered(cause, sip),
        AttemptResult::InvalidNumber,
        "cause {cause}"
    );
    let (cause, sip, _) = unanswered("decline", &number(7, 0, 0), 10).await;
    assert_eq!(sip, Some(603));
    assert_eq!(
        classify_unanswered(cause, sip),
        AttemptResult::Rejected,
        "cause {cause}"
    );
}

#[tokio::test]
async fn answer_then_immediate_hangup_still_starts_stasis() {
    require_trunk();
    let ari = ari_client("quick").await;
    let mut events = connect_events(&ari).await;
    let channel = answered_call(&ari, &mut events, 5, 0).await;
    let end = events.wait_channel(&channel, "ChannelDestroyed", T).await;
    assert_eq!(destroyed(&end).cause, 16);
}

/// Customer and operator in one mixing bridge, recorded; the operator presses a key.
#[tokio::test]
async fn bridge_customer_and_operator_record_and_receive_operator_keys() {
    require_trunk();
    let _phone = operator_phone(1, &["7;1500;-;0;0"]);
    let ari = ari_client("bridge").await;
    let mut events = connect_events(&ari).await;

    let attempt = AttemptId::new();
    let customer = attempt.channel_id();
    ari.originate(&originate_to(&number(1, 0, 20), attempt, 10))
        .await
        .unwrap();
    let operator = format!("op-{}", AttemptId::new());
    ari.originate(&Originate {
        endpoint: "PJSIP/op1".to_owned(),
        channel_id: Some(operator.clone()),
        app_args: vec!["operator".to_owned()],
        timeout_secs: Some(10),
        ..Default::default()
    })
    .await
    .unwrap();
    events.wait_channel(&customer, "StasisStart", T).await;
    events.wait_channel(&operator, "StasisStart", T).await;

    let bridge_id = format!("bridge-{attempt}");
    let bridge = ari.create_bridge(&bridge_id, BridgeType::Mixing, "test").await.unwrap();
    assert_eq!(bridge.id, bridge_id);
    ari.add_channels(&bridge_id, &[&customer, &operator]).await.unwrap();
    events.wait_channel(&customer, "ChannelEnteredBridge", T).await;
    events.wait_channel(&operator, "ChannelEnteredBridge", T).await;
    let listed = ari.get_bridge(&bridge_id).await.unwrap();
    assert_eq!(listed.channels.len(), 2);
    assert!(ari.list_bridges().await.unwrap().iter().any(|b| b.id == bridge_id));
    assert!(ari.application().await.unwrap().bridge_ids.contains(&bridge_id));

    let recording_name = format!("obzvon-test-{attempt}");
    let recording = ari.record_bridge(&bridge_id, &recording_name, "wav").await.unwrap();
    assert_eq!(recording.format, "wav");
    events
        .wait_for("RecordingStarted", T, |e| e.type_name == "RecordingStarted")
        .await;

    let key = events.wait_channel(&operator, "ChannelDtmfReceived", T).await;
    let EventKind::ChannelDtmfReceived(key) = &key.kind else {
        unreachable!()
    };
    assert_eq!(key.digit, "7");

    ari.stop_recording(&recording_name).await.unwrap();
    let finished = events
        .wait_for("RecordingFinished", T, |e| e.type_name == "RecordingFinished")
        .await;
    let EventKind::RecordingFinished(finished) = &finished.kind else {
        unreachable!()
    };
    assert_eq!(finished.recording.name, recording_name);

    ari.remove_channel(&bridge_id, &operator).await.unwrap();
    events.wait_channel(&operator, "ChannelLeftBridge", T).await;
    ari.destroy_bridge(&bridge_id).await.unwrap();
    ari.hangup(&customer, HangupReason::Normal).await.unwrap();
    ari.hangup(&operator, HangupReason::Normal).await.unwrap();
    events.wait_channel(&customer, "ChannelDestroyed", T).await;
    events.wait_channel(&operator, "ChannelDestroyed", T).await;
}

#[tokio::test]
async fn created_channels_are_dialled_on_demand_and_variables_round_trip() {
    require_trunk();
    let ari = ari_client("create").await;
    let mut events = connect_events(&ari).await;
    let attempt = AttemptId::new();
    let channel = attempt.channel_id();
    ari.create_channel(&obzvon::ari::CreateChannel {
        endpoint: trunk_endpoint(&number(1, 0, 20)),
        channel_id: Some(channel.clone()),
        app_args: vec!["created".to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
    // A created channel is in Stasis only once its StasisStart is out; ARI answers 409 before.
    events.wait_channel(&channel, "StasisStart", T).await;
    ari.set_variable(&channel, "OBZVON_ATTEMPT", &attempt.to_string())
        .await
        .unwrap();
    assert_eq!(
        ari.get_variable(&channel, "OBZVON_ATTEMPT").await.unwrap(),
        attempt.to_string()
    );
    assert!(ari.list_channels().await.unwrap().iter().any(|c| c.id == channel));
    ari.dial(&channel, None, Some(10)).await.unwrap();
    events.wait_for("answer", T, |e| {
        matches!(&e.kind, EventKind::ChannelStateChange(c) if c.channel.id == channel && c.channel.state == obzvon::ari::models::ChannelState::Up)
    }).await;
    let playback = ari.play(&channel, "sound:beep", None).await.unwrap();
    assert_eq!(playback.media_uri, "sound:beep");
    ari.hangup(&channel, HangupReason::Normal).await.unwrap();
    events.wait_channel(&channel, "ChannelDestroyed", T).await;
}

#[tokio::test]
async fn continue_hands_the_channel_back_to_the_dialplan() {
    require_trunk();
    let ari = ari_client("continue").await;
    let mut events = connect_events(&ari).await;
    let channel = answered_call(&ari, &mut events, 1, 30).await;
    // dialplan/obzvon-operators.conf: `i` plays "invalid" and hangs up.
    ari.continue_in_dialplan(&channel, "obzvon-operators", "i", 1)
        .await
        .unwrap();
    events.wait_channel(&channel, "StasisEnd", T).await;
    let end = events.wait_channel(&channel, "ChannelDestroyed", T).await;
    let EventKind::ChannelDestroyed(d) = &end.kind else {
        unreachable!()
    };
    assert_eq!(d.channel.dialplan.context, "obzvon-operators");
}
