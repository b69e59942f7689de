//! Leads: the people a campaign calls. Import ([`import`]), storage and removal ([`store`]),
//! and the do-not-call list ([`dnc`]).

use serde::{Deserialize, Serialize};

use crate::calls::outcome::wire_names;

pub mod dnc;
pub mod import;
pub mod store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LeadState {
    Pending,
    /// Waiting for `next_attempt_at` (a retry or a callback).
    Scheduled,
    Dialing,
    Done,
    /// Max attempts reached without a final result.
    Exhausted,
    Dnc,
    Canceled,
}

wire_names!(LeadState {
    Pending => "pending",
    Scheduled => "scheduled",
    Dialing => "dialing",
    Done => "done",
    Exhausted => "exhausted",
    Dnc => "dnc",
    Canceled => "canceled",
});
