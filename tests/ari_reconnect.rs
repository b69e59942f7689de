//! The event stream heals itself: Asterisk restarted under it, or the websocket shut from the
//! server side (`ari shutdown websocket sessions`). Both tests disturb the shared Asterisk, so
//! they take a lock and run one at a time; cargo runs test binaries one after another.

mod common;

use std::time::Duration;

use common::*;
use obzvon::ari::{ConnectionState, EventKind, Originate};
use obzvon::ids::AttemptId;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Proves the connection works end to end again: a new originate reports its ChannelDestroyed.
async fn originate_busy_call_and_see_it_end(ari: &obzvon::ari::AriClient, events: &mut Events) {
    let attempt = AttemptId::new();
    ari.originate(&Originate {
        endpoint: trunk_endpoint(&number(2, 0, 0)),
        channel_id: Some(attempt.channel_id()),
        timeout_secs: Some(10),
        ..Default::default()
    })
    .await
    .expect("originate after reconnect");
    let end = events
        .wait_channel(&attempt.channel_id(), "ChannelDestroyed", Duration::from_secs(15))
        .await;
    let EventKind::ChannelDestroyed(d) = &end.kind else {
        unreachable!()
    };
    assert_eq!(d.cause, 17);
}

#[tokio::test]
async fn reconnects_by_itself_after_asterisk_restarts() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let ari = ari_client("restart").await;
    let mut events = connect_events(&ari).await;
    let first = events.wait_connected(Duration::from_secs(5)).await;

    testbed(&["asterisk", "stop"]);
    let outage = events.wait_disconnected(Duration::from_secs(10)).await;
    let ConnectionState::Disconnected { reason, .. } = &outage else {
        unreachable!()
    };
    assert!(!reason.is_empty());
    testbed(&["asterisk", "start"]);

    let second = events.wait_connected(Duration::from_secs(30)).await;
    assert!(second > first, "a new session must be reported ({first} -> {second})");
    assert!(
        events
            .stream
            .stats
            .disconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    originate_busy_call_and_see_it_end(&ari, &mut events).await;
}

#[tokio::test]
async fn reconnects_by_itself_when_asterisk_closes_the_websocket() {
    let _serial = SERIAL.lock().await;
    require_trunk();
    let ari = ari_client("kill").await;
    let mut events = connect_events(&ari).await;
    let first = events.wait_connected(Duration::from_secs(5)).await;

    testbed(&["cli", "ari shutdown websocket sessions"]);
    events.wait_disconnected(Duration::from_secs(10)).await;
    let second = events.wait_connected(Duration::from_secs(15)).await;
    assert!(second > first);
    originate_busy_call_and_see_it_end(&ari, &mut events).await;
}
