//! Typed identifiers. A bare `Uuid` never crosses a module line, so a lead id cannot be passed
//! where an attempt id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::new_v4())
            }

            pub fn from_uuid(id: Uuid) -> Self {
                $name(id)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(
    /// An attempt; also the ARI channel id of its customer leg.
    AttemptId
);
uuid_id!(LeadId);
uuid_id!(CampaignId);
uuid_id!(OperatorId);

impl AttemptId {
    /// The customer leg's ARI channel id: the attempt id itself, so events need no lookup and
    /// a retried originate gets 409 instead of dialling twice.
    pub fn channel_id(&self) -> String {
        self.0.to_string()
    }

    /// The customer leg's channel, typed.
    pub fn channel(&self) -> ChannelId {
        ChannelId(self.0.to_string())
    }
}

macro_rules! text_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

text_id!(
    /// An ARI channel id: ours (an attempt's customer leg, a session call we place) or
    /// Asterisk's (a phone that dialled the login code).
    ChannelId
);
text_id!(
    /// An ARI bridge id (always chosen by us).
    BridgeId
);

impl ChannelId {
    /// The attempt whose customer leg this is, if it is one.
    pub fn attempt(&self) -> Option<AttemptId> {
        Uuid::parse_str(&self.0).ok().map(AttemptId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_print_as_uuids() {
        let id = AttemptId::new();
        assert_eq!(id.to_string().parse::<AttemptId>().unwrap(), id);
        assert_eq!(id.channel_id(), id.to_string());
        assert_eq!(id.channel().attempt(), Some(id));
        assert_eq!(ChannelId::new("session-1").attempt(), None);
        assert!("not-a-uuid".parse::<LeadId>().is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
    }
}
