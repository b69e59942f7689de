//! ARI resource models, as in Asterisk's `rest-api/api-docs/*.json` (Asterisk 22). Only the
//! fields obzvon reads are typed; optional ones are `Option` so older or newer Asterisks that
//! omit them still parse.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::time::AriTime;

/// Channel states Asterisk reports (`Channel.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelState {
    Down,
    Rsrved,
    OffHook,
    Dialing,
    Ring,
    Ringing,
    Up,
    Busy,
    #[serde(rename = "Dialing Offhook")]
    DialingOffhook,
    #[serde(rename = "Pre-ring")]
    PreRing,
    Mute,
    Unknown,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CallerId {
    pub name: String,
    pub number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialplanCep {
    pub context: String,
    pub exten: String,
    pub priority: i64,
    #[serde(default)]
    pub app_name: Option<String>,
    #[serde(default)]
    pub app_data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub state: ChannelState,
    #[serde(default)]
    pub protocol_id: Option<String>,
    pub caller: CallerId,
    pub connected: CallerId,
    #[serde(default)]
    pub accountcode: String,
    pub dialplan: DialplanCep,
    pub creationtime: AriTime,
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub channelvars: Option<HashMap<String, String>>,
}

impl Channel {
    /// A channel known only by id, name and state (for adopting one found by a listing).
    pub fn bare(id: &str, name: &str, state: ChannelState) -> Channel {
        Channel {
            id: id.to_owned(),
            name: name.to_owned(),
            state,
            protocol_id: None,
            caller: CallerId::default(),
            connected: CallerId::default(),
            accountcode: String::new(),
            dialplan: DialplanCep {
                context: String::new(),
                exten: String::new(),
                priority: 0,
                app_name: None,
                app_data: None,
            },
            creationtime: AriTime::parse("1970-01-01T00:00:00.000+0000").expect("static time parses"),
            language: String::new(),
            channelvars: None,
        }
    }
}

/// `GET /channels/{id}/rtp_statistics` (only the fields obzvon reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtpStats {
    /// Packets received from the far end so far.
    pub rxcount: u64,
    #[serde(default)]
    pub txcount: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bridge {
    pub id: String,
    #[serde(default)]
    pub technology: String,
    pub bridge_type: String,
    #[serde(default)]
    pub bridge_class: String,
    #[serde(default)]
    pub creator: String,
    #[serde(default)]
    pub name: String,
    pub channels: Vec<String>,
    #[serde(default)]
    pub creationtime: Option<AriTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecording {
    pub name: String,
    pub format: String,
    #[serde(default)]
    pub target_uri: String,
    pub state: String,
    #[serde(default)]
    pub duration: Option<i64>,
    #[serde(default)]
    pub talking_duration: Option<i64>,
    #[serde(default)]
    pub silence_duration: Option<i64>,
    #[serde(default)]
    pub cause: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Playback {
    pub id: String,
    pub media_uri: String,
    pub target_uri: String,
    pub state: String,
    #[serde(default)]
    pub language: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    pub name: String,
    pub channel_ids: Vec<String>,
    pub bridge_ids: Vec<String>,
    #[serde(default)]
    pub endpoint_ids: Vec<String>,
    #[serde(default)]
    pub device_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsteriskInfo {
    #[serde(default)]
    pub system: Option<SystemInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    pub version: String,
    pub entity_id: String,
}
