//! Operators: storage ([`store`]); their live sessions are run by the call engine
//! (`calls::engine`).

use serde::{Deserialize, Serialize};

use crate::calls::outcome::wire_names;

pub mod store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
