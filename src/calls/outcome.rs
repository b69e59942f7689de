//! Attempt status and result, and the hang-up cause → result mapping.

use serde::{Deserialize, Serialize};

/// Where an attempt is in its life (DESIGN.md "States and outcomes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptStatus {
    Init,
    Ringing,
    InProgress,
    Completed,
    /// Never connected (busy, no answer, congestion, invalid number, ...).
    Failed,
    /// Stopped by us: campaign stopped, lead removed, shutdown.
    Canceled,
}

/// What came of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptResult {
    Success,
    NoAnswer,
    Busy,
    CallbackNeeded,
    Abandoned,
    Machine,
    Rejected,
    InvalidNumber,
    Congestion,
    Failed,
    NotInterested,
    DoNotCall,
    /// Answered, and the customer hung up before the connect limit while the dialer was still
    /// in time: not an abandon, but it counts in the answered calls.
    EarlyHangup,
    /// Connected, then the operator's phone died and no other operator took the customer within
    /// the connect limit; the customer heard the abandon message.
    OperatorLost,
}

impl AttemptResult {
    /// A result that settles the lead: never retried, whatever the campaign's delays say.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            AttemptResult::Success | AttemptResult::DoNotCall | AttemptResult::NotInterested
        )
    }
}

/// Who ended a call. Stored with every attempt next to `ended_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndedBy {
    /// The far end hung up (or never answered).
    Customer,
    /// The operator ended it (`#`, or hung up the phone).
    Operator,
    /// obzvon ended it: abandon message, cancel, no operator left, dial refused.
    Dialer,
    /// Nobody we saw: Asterisk, the network, or the call ended while obzvon was away.
    System,
}

macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($name => Some($ty::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_names;

wire_names!(AttemptStatus {
    Init => "init",
    Ringing => "ringing",
    InProgress => "in-progress",
    Completed => "completed",
    Failed => "failed",
    Canceled => "canceled",
});

wire_names!(AttemptResult {
    Success => "success",
    NoAnswer => "no-answer",
    Busy => "busy",
    CallbackNeeded => "callback-needed",
    Abandoned => "abandoned",
    Machine => "machine",
    Rejected => "rejected",
    InvalidNumber => "invalid-number",
    Congestion => "congestion",
    Failed => "failed",
    NotInterested => "not-interested",
    DoNotCall => "do-not-call",
    EarlyHangup => "early-hangup",
    OperatorLost => "operator-lost",
});

wire_names!(EndedBy {
    Customer => "customer",
    Operator => "operator",
    Dialer => "dialer",
    System => "system",
});

impl AttemptStatus {
    /// The statuses of an attempt that may hold a channel; one number has at most one live
    /// attempt. SQL that needs the set spells it with [`AttemptStatus::LIVE_SQL`].
    pub const LIVE: [AttemptStatus; 3] = [AttemptStatus::Init, AttemptStatus::Ringing, AttemptStatus::InProgress];

    /// `('init', 'ringing', 'in-progress')`, for SQL text (checked against [`AttemptStatus::LIVE`]
    /// by a unit test; the partial indexes of the schema use the same list).
    pub const LIVE_SQL: &'static str = "('init', 'ringing', 'in-progress')";

    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }
}

/// The result of a customer leg that ended before it was answered, from the Q.850 cause
/// Asterisk reports in `ChannelDestroyed` and the SIP code (`tech_cause`) where there is one.
///
/// The SIP code wins when present: carriers map SIP to Q.850 inconsistently, the final
/// response is what the far end actually said. A leg we gave up on ourselves (dial timeout,
/// cause 16/0 without a SIP code) counts as no answer; a leg *we* cancelled is `canceled` by
/// status, decided by the caller, not here.
pub fn classify_unanswered(cause: i32, sip_code: Option<i32>) -> AttemptResult {
    use AttemptResult::*;
    if let Some(code) = sip_code {
        match code {
            486 | 600 => return Busy,
            408 | 480 | 487 => return NoAnswer,
            404 | 484 | 604 => return InvalidNumber,
            403 | 603 => return Rejected,
            500 | 502 | 503 | 504 => return Congestion,
            _ => {}
        }
    }
    match cause {
        17 => Busy,
        18 | 19 | 16 | 0 => NoAnswer,
        1 | 3 | 28 => InvalidNumber,
        21 => Rejected,
        34 | 38 | 41 | 42 | 44 | 47 => Congestion,
        _ => Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_match_serde() {
        for s in AttemptStatus::ALL {
            assert_eq!(AttemptStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        for r in AttemptResult::ALL {
            assert_eq!(AttemptResult::parse(r.as_str()), Some(*r));
            assert_eq!(serde_json::to_string(r).unwrap(), format!("\"{}\"", r.as_str()));
        }
        assert_eq!(AttemptStatus::ALL.len(), 6);
        assert_eq!(AttemptResult::ALL.len(), 14);
        assert_eq!(AttemptStatus::parse("in_progress"), None);
    }

    #[test]
    fn live_statuses() {
        let live: Vec<_> = AttemptStatus::ALL
            .iter()
            .filter(|s| s.is_live())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(live, ["init", "ringing", "in-progress"]);
        let sql = format!(
            "({})",
            live.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
        );
        assert_eq!(sql, AttemptStatus::LIVE_SQL);
    }

    #[test]
    fn q850_causes_map_to_results() {
        use AttemptResult::*;
        for (cause, expected) in [
            (17, Busy),
            (19, NoAnswer),
            (18, NoAnswer),
            (16, NoAnswer),
            (34, Congestion),
            (38, Congestion),
            (1, InvalidNumber),
            (28, InvalidNumber),
            (21, Rejected),
            (102, Failed),
            (127, Failed),
        ] {
            assert_eq!(classify_unanswered(cause, None), expected, "cause {cause}");
        }
    }

    #[test]
    fn sip_code_decides_when_present() {
        use AttemptResult::*;
        // What the test bed's Asterisk reports for each trunk behaviour.
        assert_eq!(classify_unanswered(17, Some(486)), Busy);
        assert_eq!(classify_unanswered(19, Some(480)), NoAnswer);
        assert_eq!(classify_unanswered(34, Some(503)), Congestion);
        // Carriers that send a misleading Q.850 cause still map by SIP.
        assert_eq!(classify_unanswered(16, Some(486)), Busy);
        assert_eq!(classify_unanswered(31, Some(404)), InvalidNumber);
        assert_eq!(classify_unanswered(16, Some(603)), Rejected);
        // Unknown SIP codes fall back to the cause.
        assert_eq!(classify_unanswered(34, Some(599)), Congestion);
    }
}
