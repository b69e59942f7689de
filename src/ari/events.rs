//! ARI websocket events. Every frame becomes an [`Event`]: the common envelope plus a typed
//! [`EventKind`]; types obzvon does not model arrive as [`EventKind::Unknown`] with their name
//! kept in [`Event::type_name`], so a newer Asterisk never breaks the reader.

use serde::Deserialize;
use serde_json::Value;

use super::models::{Bridge, Channel, LiveRecording, Playback};
use super::time::AriTime;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The `type` field as Asterisk sent it (also for unknown kinds).
    pub type_name: String,
    pub application: String,
    pub timestamp: AriTime,
    pub asterisk_id: Option<String>,
    pub kind: EventKind,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("ARI event is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("ARI event has no string field `{0}`")]
    Missing(&'static str),
    #[error("ARI {type_name} event does not match its model: {source}")]
    Model {
        type_name: String,
        source: serde_json::Error,
    },
}

impl Event {
    /// Parses one websocket text frame.
    pub fn parse(text: &str) -> Result<Event, EventError> {
        let value: Value = serde_json::from_str(text)?;
        let field = |name: &'static str| -> Result<String, EventError> {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(EventError::Missing(name))
        };
        let type_name = field("type")?;
        let application = field("application")?;
        let timestamp = AriTime::parse(&field("timestamp")?).map_err(|_| EventError::Missing("timestamp"))?;
        let asterisk_id = value.get("asterisk_id").and_then(Value::as_str).map(str::to_owned);
        let kind = EventKind::deserialize(&value).map_err(|source| EventError::Model {
            type_name: type_name.clone(),
            source,
        })?;
        Ok(Event {
            type_name,
            application,
            timestamp,
            asterisk_id,
            kind,
        })
    }

    /// The channel the event is about, for routing it to that channel's call.
    pub fn channel_id(&self) -> Option<&str> {
        use EventKind::*;
        let channel = match &self.kind {
            StasisStart(e) => Some(&e.channel),
            StasisEnd(e) | ChannelStateChange(e) => Some(&e.channel),
            ChannelDestroyed(e) => Some(&e.channel),
            Dial(e) => Some(&e.peer),
            ChannelHangupRequest(e) => Some(&e.channel),
            ChannelDtmfReceived(e) => Some(&e.channel),
            ChannelEnteredBridge(e) => e.channel.as_ref(),
            ChannelLeftBridge(e) => Some(&e.channel),
            ChannelVarset(e) => e.channel.as_ref(),
            ApplicationMoveFailed(e) => Some(&e.channel),
            _ => None,
        };
        channel.map(|c| c.id.as_str())
    }
}

/// Payloads are boxed: channels are large, and events travel through channels by value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    StasisStart(Box<StasisStart>),
    StasisEnd(Box<ChannelOnly>),
    ChannelStateChange(Box<ChannelOnly>),
    ChannelDestroyed(Box<ChannelDestroyed>),
    Dial(Box<Dial>),
    ChannelHangupRequest(Box<ChannelHangupRequest>),
    ChannelDtmfReceived(Box<ChannelDtmfReceived>),
    ChannelEnteredBridge(Box<ChannelEnteredBridge>),
    ChannelLeftBridge(Box<ChannelLeftBridge>),
    ChannelVarset(Box<ChannelVarset>),
    BridgeDestroyed(Box<BridgeOnly>),
    RecordingStarted(Box<RecordingEvent>),
    RecordingFinished(Box<RecordingEvent>),
    RecordingFailed(Box<RecordingEvent>),
    PlaybackStarted(Box<PlaybackEvent>),
    PlaybackFinished(Box<PlaybackEvent>),
    ApplicationReplaced,
    ApplicationRegistered,
    ApplicationUnregistered,
    ApplicationMoveFailed(Box<ApplicationMoveFailed>),
    /// A qualify result for a contact of an endpoint the application subscribed to.
    ContactStatusChange(Box<ContactStatusChange>),
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StasisStart {
    pub args: Vec<String>,
    pub channel: Channel,
    #[serde(default)]
    pub replace_channel: Option<Channel>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelOnly {
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelDestroyed {
    /// Q.850 cause code (16 normal clearing, 17 busy, 19 no answer, 34 congestion, ...).
    pub cause: i32,
    pub cause_txt: String,
    /// The technology's own cause, for PJSIP the SIP response code (486, 503, ...).
    #[serde(default)]
    pub tech_cause: Option<i32>,
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dial {
    #[serde(default)]
    pub caller: Option<Channel>,
    pub peer: Channel,
    #[serde(default)]
    pub forward: Option<String>,
    #[serde(default)]
    pub forwarded: Option<Channel>,
    #[serde(default)]
    pub dialstring: Option<String>,
    pub dialstatus: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelHangupRequest {
    #[serde(default)]
    pub cause: Option<i32>,
    #[serde(default)]
    pub tech_cause: Option<i32>,
    #[serde(default)]
    pub soft: Option<bool>,
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelDtmfReceived {
    pub digit: String,
    pub duration_ms: i64,
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelEnteredBridge {
    pub bridge: Bridge,
    #[serde(default)]
    pub channel: Option<Channel>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelLeftBridge {
    pub bridge: Bridge,
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelVarset {
    pub variable: String,
    pub value: String,
    #[serde(default)]
    pub channel: Option<Channel>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContactStatusChange {
    pub endpoint: Endpoint,
    pub contact_info: ContactInfo,
}

impl ContactStatusChange {
    /// `PJSIP/op1`, as operators' endpoints are written.
    pub fn endpoint_id(&self) -> String {
        format!("{}/{}", self.endpoint.technology, self.endpoint.resource)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Endpoint {
    pub technology: String,
    pub resource: String,
    #[serde(default)]
    pub state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContactInfo {
    #[serde(default)]
    pub uri: String,
    /// `Reachable`, `Unreachable`, `Unknown`, `NonQualified`, `Removed`.
    pub contact_status: String,
    #[serde(default)]
    pub aor: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BridgeOnly {
    pub bridge: Bridge,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordingEvent {
    pub recording: LiveRecording,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlaybackEvent {
    pub playback: Playback,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApplicationMoveFailed {
    pub channel: Channel,
    pub destination: String,
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    //! Fixtures are frames captured from the test bed's Asterisk 22 (tests/fixtures/ari/).
    use super::*;
    use crate::ari::models::ChannelState;

    fn fixture(name: &str) -> Event {
        let path = format!("{}/tests/fixtures/ari/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Event::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn stasis_start_carries_our_channel_id_and_app_args() {
        let event = fixture("stasis_start_answered");
        assert_eq!(event.type_name, "StasisStart");
        assert_eq!(event.application, "capture");
        assert_eq!(event.asterisk_id.as_deref(), Some("02:fc:00:00:00:01"));
        assert_eq!(event.timestamp.to_string(), "2026-11-24T03:07:02.726+0000");
        let EventKind::StasisStart(start) = &event.kind else {
            panic!("{:?}", event.kind)
        };
        assert_eq!(start.args, ["attempt", "abc"]);
        assert_eq!(start.channel.id, "cap-answer");
        assert_eq!(start.channel.state, ChannelState::Up);
        assert_eq!(start.channel.caller.number, "74951234567");
        assert_eq!(event.channel_id(), Some("cap-answer"));
    }

    #[test]
    fn channel_destroyed_has_q850_and_sip_causes() {
        for (name, cause, tech, text) in [
            ("channel_destroyed_busy", 17, Some(486), "User busy"),
            ("channel_destroyed_no_answer", 19, Some(480), "User alerting, no answer"),
            ("channel_destroyed_normal", 16, None, "Normal Clearing"),
        ] {
            let event = fixture(name);
            let EventKind::ChannelDestroyed(d) = &event.kind else {
                panic!("{name}: {:?}", event.kind)
            };
            assert_eq!(
                (d.cause, d.tech_cause, d.cause_txt.as_str()),
                (cause, tech, text),
                "{name}"
            );
        }
    }

    #[test]
    fn ringing_dial_hangup_request_and_stasis_end() {
        let EventKind::ChannelStateChange(c) = fixture("channel_state_change_ringing").kind else {
            panic!()
        };
        assert_eq!(c.channel.state, ChannelState::Ringing);

        let event = fixture("dial_progress");
        let EventKind::Dial(dial) = &event.kind else { panic!() };
        assert_eq!(dial.peer.id, "cap-answer");
        assert_eq!(dial.dialstring.as_deref(), Some("+79161210102@trunk"));
        assert_eq!(event.channel_id(), Some("cap-answer"));

        let EventKind::ChannelHangupRequest(h) = fixture("channel_hangup_request_busy").kind else {
            panic!()
        };
        assert_eq!((h.cause, h.tech_cause), (Some(17), Some(486)));

        assert!(matches!(fixture("stasis_end").kind, EventKind::StasisEnd(_)));
    }

    #[test]
    fn dtmf_bridge_and_varset_events() {
        let EventKind::ChannelDtmfReceived(d) = fixture("channel_dtmf_received").kind else {
            panic!()
        };
        assert_eq!(d.digit, "5");
        assert_eq!(d.channel.id, "cap-op");

        let event = fixture("channel_entered_bridge");
        let EventKind::ChannelEnteredBridge(b) = &event.kind else {
            panic!()
        };
        assert_eq!(b.bridge.id, "cap-bridge");
        assert_eq!(b.bridge.bridge_type, "mixing");
        assert_eq!(event.channel_id(), Some("cap-op"));

        let EventKind::ChannelLeftBridge(l) = fixture("channel_left_bridge").kind else {
            panic!()
        };
        assert_eq!(l.channel.id, "cap-op");

        assert!(matches!(fixture("channel_varset").kind, EventKind::ChannelVarset(_)));
    }

    #[test]
    fn unknown_types_are_kept_by_name_not_rejected() {
        let text = r#"{"type":"EndpointStateChange","application":"obzvon","timestamp":"2026-11-24T03:07:02.726+0000","endpoint":{"technology":"PJSIP","resource":"op1","state":"online","channel_ids":[]}}"#;
        let event = Event::parse(text).unwrap();
        assert_eq!(event.kind, EventKind::Unknown);
        assert_eq!(event.type_name, "EndpointStateChange");
        assert_eq!(event.channel_id(), None);
    }

    #[test]
    fn unit_application_events_parse() {
        let text =
            r#"{"type":"ApplicationReplaced","application":"obzvon","timestamp":"2026-11-24T03:07:02.726+0000"}"#;
        assert_eq!(Event::parse(text).unwrap().kind, EventKind::ApplicationReplaced);
    }

    #[test]
    fn a_known_type_with_a_broken_body_is_an_error_naming_the_type() {
        let text = r#"{"type":"ChannelDestroyed","application":"obzvon","timestamp":"2026-11-24T03:07:02.726+0000","cause":"x"}"#;
        let err = Event::parse(text).unwrap_err();
        assert!(err.to_string().contains("ChannelDestroyed"), "{err}");
    }

    #[test]
    fn missing_envelope_fields_are_errors() {
        assert!(Event::parse(r#"{"application":"a","timestamp":"2026-11-24T03:07:02.726+0000"}"#).is_err());
        assert!(Event::parse(r#"{"type":"StasisEnd","application":"a","timestamp":"2026-11-24 03:07"}"#).is_err());
        assert!(Event::parse("[]").is_err());
    }
}
