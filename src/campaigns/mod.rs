//! Campaigns. REST control and settings land with the campaign issue; the state names live here.

use serde::{Deserialize, Serialize};

use crate::calls::outcome::wire_names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CampaignState {
    Draft,
    Running,
    Paused,
    Stopped,
    /// Every lead reached a final state.
    Finished,
}

wire_names!(CampaignState {
    Draft => "draft",
    Running => "running",
    Paused => "paused",
    Stopped => "stopped",
    Finished => "finished",
});
