//! Leads: the people a campaign calls. Import, normalisation and DNC land with the campaign
//! issue; the lifecycle names live here.

use serde::{Deserialize, Serialize};

use crate::calls::outcome::wire_names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
