//! Settings that are valid but probably not what the supervisor meant: answered with the
//! campaign (create, update, read) so a form can show them, never refused. Each has a stable
//! `code`, the field it concerns and a sentence.

use serde::Serialize;

use super::CampaignSpec;
use crate::dialer::window::{LocalTime, Span, WEEKDAYS};

/// Customers get at least this long to answer in most regulations (US TSR: 15 s / 4 rings).
const SHORTEST_RING_SECS: u32 = 15;
/// The hours most regulations allow (US TCPA: 08:00–21:00 local).
const USUAL_HOURS: Span = Span::new(LocalTime::at(8, 0), LocalTime::at(21, 0));
const WEEK_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Warning {
    /// Stable, for programs: `dial-timeout-short`, `no-operator`, `window-outside-usual-hours`,
    /// `retries-beyond-a-week`, `attempts-without-retries`, `caller-id-not-a-number`.
    #[schema(example = "dial-timeout-short")]
    pub code: &'static str,
    #[schema(example = "dial_timeout_secs")]
    pub field: String,
    /// For people.
    #[schema(example = "customers get 10 s to answer; most regulations and most people need at least 15 s")]
    pub message: String,
}

fn warning(code: &'static str, field: impl Into<String>, message: String) -> Warning {
    Warning {
        code,
        field: field.into(),
        message,
    }
}

/// The warnings for `spec`, given how many enabled operators may take its calls.
pub fn of(spec: &CampaignSpec, takers: usize) -> Vec<Warning> {
    let mut out = Vec::new();
    if spec.dial_timeout_secs < SHORTEST_RING_SECS {
        out.push(warning(
            "dial-timeout-short",
            "dial_timeout_secs",
            format!(
                "customers get {} s to answer; most regulations and most people need at least {SHORTEST_RING_SECS} s",
                spec.dial_timeout_secs
            ),
        ));
    }
    if takers == 0 {
        let who = if spec.operators.is_empty() && spec.skills.is_empty() {
            "no enabled operator exists".to_owned()
        } else {
            "no enabled operator is assigned to it with the skills it needs".to_owned()
        };
        out.push(warning(
            "no-operator",
            if spec.operators.is_empty() {
                "skills"
            } else {
                "operators"
            },
            format!("nobody can take this campaign's calls: {who}"),
        ));
    }
    for day in WEEKDAYS {
        for (i, span) in spec.calling_windows.get(day).into_iter().flatten().enumerate() {
            if !span.within(&[USUAL_HOURS]) {
                out.push(warning(
                    "window-outside-usual-hours",
                    format!("calling_windows.{day}[{i}]"),
                    format!("{span} reaches outside {USUAL_HOURS}, the hours most regulations allow in the customer's local time"),
                ));
            }
        }
    }
    if spec.max_attempts > 1 {
        match spec.retry_delays_secs.values().max() {
            None => out.push(warning(
                "attempts-without-retries",
                "retry_delays_secs",
                format!(
                    "{} attempts per lead, but no result is retried: every lead gets one call",
                    spec.max_attempts
                ),
            )),
            Some(&longest) => {
                let spread = u64::from(spec.max_attempts - 1).saturating_mul(longest);
                if spread > WEEK_SECS {
                    out.push(warning(
                        "retries-beyond-a-week",
                        "max_attempts",
                        format!(
                            "{} attempts with retry delays up to {} h can take {} days; the last calls may come long after the first",
                            spec.max_attempts,
                            longest / 3600,
                            spread.div_ceil(24 * 3600)
                        ),
                    ));
                }
            }
        }
    }
    if crate::phone::PhoneNumber::parse(&spec.caller_id, spec.region()).is_err() {
        out.push(warning(
            "caller-id-not-a-number",
            "caller_id",
            format!(
                "{:?} is not a valid phone number for {}: customers cannot call it back",
                spec.caller_id, spec.default_region
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> CampaignSpec {
        let mut v = serde_json::json!({"name": "W", "trunk": "PJSIP/{number}@trunk", "caller_id": "+74950000000"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        CampaignSpec::from_json(v).unwrap()
    }

    fn codes(w: &[Warning]) -> Vec<&str> {
        w.iter().map(|w| w.code).collect()
    }

    #[test]
    fn sensible_settings_have_no_warning() {
        assert!(of(&spec(serde_json::json!({})), 3).is_empty());
    }

    #[test]
    fn each_warning_comes_with_its_cause() {
        assert_eq!(
            codes(&of(&spec(serde_json::json!({"dial_timeout_secs": 10})), 1)),
            ["dial-timeout-short"]
        );
        assert_eq!(codes(&of(&spec(serde_json::json!({})), 0)), ["no-operator"]);
        let late = of(
            &spec(serde_json::json!({"calling_windows": {"tue": [{"from": "09:00", "to": "22:00"}]}})),
            1,
        );
        assert_eq!(codes(&late), ["window-outside-usual-hours"]);
        assert_eq!(late[0].field, "calling_windows.tue[0]");
        let slow = spec(serde_json::json!({"max_attempts": 5, "retry_delays_secs": {"no-answer": 259200}}));
        assert_eq!(codes(&of(&slow, 1)), ["retries-beyond-a-week"]);
        let none = spec(serde_json::json!({"max_attempts": 3, "retry_delays_secs": {}}));
        assert_eq!(codes(&of(&none, 1)), ["attempts-without-retries"]);
        assert_eq!(
            codes(&of(&spec(serde_json::json!({"caller_id": "1234"})), 1)),
            ["caller-id-not-a-number"]
        );
    }
}
