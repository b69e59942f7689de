//! Campaigns: settings ([`spec`]), storage and lifecycle ([`store`]).

use serde::{Deserialize, Serialize};

use crate::calls::outcome::wire_names;

pub mod spec;
pub mod store;
pub mod warnings;

pub use spec::{CampaignSpec, FieldError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

/// What a supervisor asks of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Stop,
}

impl CampaignState {
    /// The state an action leads to, or why it cannot be taken now.
    pub fn apply(self, action: Action) -> Result<CampaignState, String> {
        use Action::*;
        use CampaignState::*;
        match (self, action) {
            (Draft, Start) => Ok(Running),
            (Running, Pause) => Ok(Paused),
            (Paused, Resume) => Ok(Running),
            (Running | Paused | Draft, Stop) => Ok(Stopped),
            // New leads were added to a finished campaign: call them.
            (Finished, Resume) => Ok(Running),
            (state, action) => Err(format!("cannot {action:?} a {state} campaign").to_lowercase()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_transitions() {
        use Action::*;
        use CampaignState::*;
        assert_eq!(Draft.apply(Start), Ok(Running));
        assert_eq!(Running.apply(Pause), Ok(Paused));
        assert_eq!(Paused.apply(Resume), Ok(Running));
        assert_eq!(Paused.apply(Stop), Ok(Stopped));
        assert!(Stopped.apply(Start).is_err());
        assert!(Running.apply(Start).is_err());
        assert!(Draft.apply(Pause).is_err());
    }
}
