//! Operators and their sessions. Session handling lands with the campaign issue; the state
//! names live here.

use serde::{Deserialize, Serialize};

use crate::calls::outcome::wire_names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorState {
    Offline,
    Ready,
    /// Chosen for a call that is being connected.
    Reserved,
    OnCall,
    WrapUp,
    Paused,
}

wire_names!(OperatorState {
    Offline => "offline",
    Ready => "ready",
    Reserved => "reserved",
    OnCall => "on-call",
    WrapUp => "wrap-up",
    Paused => "paused",
});
