//! A campaign's settings, as the API takes them and the database stores them (`settings`
//! jsonb), with validation that names the offending field.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::calls::amd::Amd;
use crate::calls::AttemptResult;
use crate::compliance::Compliance;
use crate::dialer::window::{self, Windows};
use crate::ids::OperatorId;
use crate::phone::Region;

/// Everything a supervisor sets on a campaign. Rules between fields that a schema cannot state:
/// `pacing.target_abandon_rate` is at most `max_abandon_rate`, `preview.auto_dial_secs` is
/// below `preview.reservation_secs`, each calling window's `from` is before its `to`, and a
/// `compliance.profile` other than `none` sets floors on the calling windows, dial timeout,
/// abandon cap and window, connect limit, caller ID and contact limits (docs/compliance.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignSpec {
    /// Shown to supervisors; unique among campaigns.
    #[schema(
        required = true,
        min_length = 1,
        max_length = 200,
        format = "not-blank",
        example = "Autumn renewals"
    )]
    pub name: String,
    /// Endpoint template; `{number}` becomes the E.164 number: `PJSIP/{number}@trunk`.
    #[schema(
        required = true,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*\{number\}[^\u0000-\u001F\u007F-\u009F]*$",
        example = "PJSIP/{number}@trunk"
    )]
    pub trunk: String,
    /// The number customers see (and can call back).
    #[schema(
        required = true,
        min_length = 1,
        max_length = 64,
        format = "not-blank",
        example = "74950000000"
    )]
    pub caller_id: String,
    /// IANA zone for leads without their own (default UTC).
    #[schema(schema_with = crate::api::schema::time_zone)]
    pub timezone: String,
    /// ISO region for numbers written without a country code (default RU).
    #[schema(schema_with = crate::api::schema::region)]
    pub default_region: String,
    pub enabled: bool,
    pub pacing: Pacing,
    /// Preview mode: how offers to operators behave.
    pub preview: Preview,
    /// How long a customer's phone rings before the attempt is `no-answer` (default 30).
    #[schema(minimum = 5, maximum = 300)]
    pub dial_timeout_secs: u32,
    /// Attempts per lead at most (default 3).
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: u32,
    /// Seconds before a lead is tried again after this result; results not listed are final.
    #[schema(schema_with = crate::api::schema::retry_delays)]
    pub retry_delays_secs: BTreeMap<AttemptResult, u64>,
    /// Local times of day (in the lead's zone, else the campaign's) when calls may be placed,
    /// per weekday; no entry for a day means no calls that day; an empty table means any time.
    #[schema(schema_with = crate::api::schema::calling_windows)]
    pub calling_windows: Windows,
    /// Seconds an operator has after a call before the next one (default 10).
    #[schema(minimum = 0, maximum = 3600)]
    pub wrap_up_secs: u32,
    /// An answered customer who is not with an operator after this long is abandoned.
    #[schema(minimum = 100, maximum = 60000)]
    pub connect_limit_ms: u64,
    /// What an abandoned customer hears before we hang up (ARI media URI).
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*:[^\u0000-\u001F\u007F-\u009F]*$",
        example = "sound:vm-goodbye"
    )]
    pub abandon_message: String,
    /// Count a customer who hangs up before the connect limit (`early-hangup`) as abandoned
    /// too: the conservative reading some regulators ask for. Off: such calls count only in
    /// the answered calls (the denominator).
    pub count_early_hangups_as_abandoned: bool,
    /// The cap on abandoned ÷ answered calls per local day (3 % in most regulations). Once a
    /// campaign reaches it, progressive pacing stops over-dialling (ratio 1) for the rest of
    /// the day.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub max_abandon_rate: f64,
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrent_calls: u32,
    #[schema(exclusive_minimum = 0.0, maximum = 1000.0)]
    pub calls_per_second: f64,
    /// Operators who work this campaign; empty means every operator.
    pub operators: Vec<OperatorId>,
    /// Skills an operator must all have to take this campaign's calls.
    #[schema(schema_with = crate::api::schema::skills)]
    pub skills: Vec<String>,
    pub distribution: Distribution,
    pub recording: bool,
    /// Phone keys an operator presses in wrap-up, and the result each sets.
    #[schema(schema_with = crate::api::schema::disposition_keys)]
    pub disposition_keys: BTreeMap<String, AttemptResult>,
    /// Rule profile, contact limits, quiet periods and holidays (`docs/compliance.md`).
    pub compliance: Compliance,
    /// Answering-machine detection for campaign calls (not preview or single calls, where an
    /// operator hears the answer).
    pub amd: Amd,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Pacing {
    pub mode: PacingMode,
    /// Progressive: calls in flight per ready operator.
    #[schema(exclusive_minimum = 0.0, maximum = 5.0)]
    pub ratio: f64,
    /// Predictive: the abandon rate (abandoned ÷ answered over `abandon_window`) it aims to
    /// stay under; at most `max_abandon_rate`.
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub target_abandon_rate: f64,
    /// Predictive: the window the abandon rate is counted over, as the regulation says.
    pub abandon_window: AbandonWindow,
}

/// Over what time a campaign's abandon rate is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AbandonWindow {
    /// Since local midnight in the campaign's zone.
    #[serde(rename = "day")]
    Day,
    /// The last 24 hours.
    #[serde(rename = "24h")]
    Hours24,
    /// The last 30 days.
    #[serde(rename = "30d")]
    Days30,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Preview {
    /// Seconds after the offer when the lead is dialled by itself; 0 = only on request.
    #[schema(minimum = 0, maximum = 3599)]
    pub auto_dial_secs: u32,
    /// How long an offer holds the lead; then the lead is free and the operator paused.
    #[schema(minimum = 10, maximum = 3600)]
    pub reservation_secs: u32,
    /// A skipped lead comes back after this long (at most 30 days).
    #[schema(minimum = 0, maximum = 2592000)]
    pub skip_delay_secs: u64,
}

impl Default for Preview {
    fn default() -> Self {
        Preview {
            auto_dial_secs: 0,
            reservation_secs: 120,
            skip_delay_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PacingMode {
    Progressive,
    Preview,
    Predictive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    #[default]
    LongestIdle,
    RoundRobin,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            mode: PacingMode::Progressive,
            ratio: 1.0,
            target_abandon_rate: 0.03,
            abandon_window: AbandonWindow::Day,
        }
    }
}

impl Default for CampaignSpec {
    fn default() -> Self {
        use AttemptResult::*;
        CampaignSpec {
            name: String::new(),
            trunk: String::new(),
            caller_id: String::new(),
            timezone: "UTC".to_owned(),
            default_region: "RU".to_owned(),
            enabled: true,
            pacing: Pacing::default(),
            preview: Preview::default(),
            dial_timeout_secs: 30,
            max_attempts: 3,
            retry_delays_secs: BTreeMap::from([
                (NoAnswer, 1800),
                (Busy, 600),
                (Congestion, 300),
                (Abandoned, 120),
                (Failed, 600),
                (Machine, 3600),
                (CallbackNeeded, 3600),
                (EarlyHangup, 1800),
                (OperatorLost, 120),
            ]),
            calling_windows: Windows::new(),
            wrap_up_secs: 10,
            connect_limit_ms: 2000,
            abandon_message: "sound:vm-goodbye".to_owned(),
            count_early_hangups_as_abandoned: false,
            max_abandon_rate: 0.03,
            max_concurrent_calls: 10,
            calls_per_second: 5.0,
            operators: Vec::new(),
            skills: Vec::new(),
            distribution: Distribution::LongestIdle,
            recording: false,
            disposition_keys: BTreeMap::from([
                ("1".to_owned(), Success),
                ("2".to_owned(), NotInterested),
                ("3".to_owned(), CallbackNeeded),
                ("4".to_owned(), DoNotCall),
            ]),
            compliance: Compliance::default(),
            amd: Amd::default(),
        }
    }
}

/// One problem with one field, for a 422 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// "field: problem; field: problem", for a one-line answer.
    pub fn join(fields: &[FieldError]) -> String {
        fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Longest text each field takes, in characters (the README lists them).
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TRUNK_CHARS: usize = 200;
pub const MAX_CALLER_ID_CHARS: usize = 64;
pub const MAX_TIMEZONE_CHARS: usize = 64;
pub const MAX_REGION_CHARS: usize = 8;
pub const MAX_MEDIA_CHARS: usize = 500;
pub const MAX_SKILL_CHARS: usize = 64;
pub const MAX_SKILLS: usize = 100;
/// The longest retry or skip delay: 30 days.
pub const MAX_DELAY_SECS: u64 = 30 * 86_400;

/// Keys an operator phone uses outside dispositions (see operators::session).
pub const RESERVED_KEYS: [&str; 2] = ["0", "#"];

/// Settings that are objects. The JSON decoder would also fill them from a list of their
/// values in order (`"pacing": ["predictive", 2]`), which the document does not allow.
const OBJECT_SETTINGS: [&str; 6] = [
    "/pacing",
    "/preview",
    "/compliance",
    "/compliance/attempts",
    "/compliance/connected",
    "/amd",
];

fn objects_where_objects_belong(value: &serde_json::Value) -> Result<(), Vec<FieldError>> {
    let mut wrong: Vec<FieldError> = OBJECT_SETTINGS
        .iter()
        .filter(|p| value.pointer(p).is_some_and(|v| v.is_array()))
        .map(|p| FieldError::new(p[1..].replace('/', "."), "expected an object"))
        .collect();
    if let Some(days) = value.get("calling_windows").and_then(|w| w.as_object()) {
        for (day, spans) in days {
            for (i, span) in spans.as_array().into_iter().flatten().enumerate() {
                if span.is_array() {
                    wrong.push(FieldError::new(
                        format!("calling_windows.{}[{i}]", crate::text::printable(day)),
                        "expected an object {\"from\": \"HH:MM\", \"to\": \"HH:MM\"}",
                    ));
                }
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong)
    }
}

impl CampaignSpec {
    /// An operator may take this campaign's calls: assigned to it (or the campaign names
    /// nobody) and holding every skill it needs.
    pub fn may_take(&self, operator: OperatorId, skills: &[String]) -> bool {
        (self.operators.is_empty() || self.operators.contains(&operator))
            && self.skills.iter().all(|k| skills.contains(k))
    }

    /// Parses a JSON document into a spec, naming the field serde stumbled on.
    pub fn from_json(mut value: serde_json::Value) -> Result<CampaignSpec, Vec<FieldError>> {
        objects_where_objects_belong(&value)?;
        crate::compliance::apply_profile_defaults(&mut value);
        crate::text::decode(value).map_err(|e| vec![e])
    }

    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: &str| errors.push(FieldError::new(field, message));
        let texts = [
            ("name", &self.name, MAX_NAME_CHARS),
            ("trunk", &self.trunk, MAX_TRUNK_CHARS),
            ("caller_id", &self.caller_id, MAX_CALLER_ID_CHARS),
            ("timezone", &self.timezone, MAX_TIMEZONE_CHARS),
            ("default_region", &self.default_region, MAX_REGION_CHARS),
            ("abandon_message", &self.abandon_message, MAX_MEDIA_CHARS),
        ];
        for (field, value, max) in texts {
            if let Some(message) = crate::text::line_problem(value, max) {
                bad(field, &message);
            }
        }
        for (i, skill) in self.skills.iter().enumerate() {
            if let Some(message) = crate::text::line_problem(skill, MAX_SKILL_CHARS) {
                bad(&format!("skills[{i}]"), &message);
            }
        }
        if self.name.trim().is_empty() {
            bad("name", "required");
        }
        if self.trunk.trim().is_empty() {
            bad("trunk", "required: an endpoint template such as PJSIP/{number}@trunk");
        } else if !self.trunk.contains("{number}") {
            bad("trunk", "must contain {number}, where the customer's number goes");
        }
        if self.caller_id.trim().is_empty() {
            bad("caller_id", "required");
        }
        if self.timezone.parse::<Tz>().is_err() {
            bad("timezone", "not an IANA time zone such as Europe/Moscow");
        }
        if Region::parse(&self.default_region).is_err() {
            bad("default_region", "not an ISO 3166 region such as RU");
        }
        if !(self.pacing.target_abandon_rate > 0.0 && self.pacing.target_abandon_rate <= self.max_abandon_rate) {
            bad(
                "pacing.target_abandon_rate",
                "a fraction above 0 and at most max_abandon_rate, e.g. 0.03 for 3 %",
            );
        }
        if !(10..=3600).contains(&self.preview.reservation_secs) {
            bad("preview.reservation_secs", "must be between 10 and 3600");
        }
        if self.preview.skip_delay_secs > MAX_DELAY_SECS {
            bad("preview.skip_delay_secs", "at most 30 days (2592000)");
        }
        if self.skills.len() > MAX_SKILLS {
            bad("skills", &format!("at most {MAX_SKILLS} skills"));
        }
        if self.preview.auto_dial_secs >= self.preview.reservation_secs {
            bad(
                "preview.auto_dial_secs",
                "must be below preview.reservation_secs (0 = never)",
            );
        }
        if !(self.pacing.ratio > 0.0 && self.pacing.ratio <= 5.0) {
            bad("pacing.ratio", "must be above 0 and at most 5");
        }
        if !(5..=300).contains(&self.dial_timeout_secs) {
            bad("dial_timeout_secs", "must be between 5 and 300");
        }
        if !(1..=100).contains(&self.max_attempts) {
            bad("max_attempts", "must be between 1 and 100");
        }
        for (result, secs) in &self.retry_delays_secs {
            if result.is_final() {
                bad(
                    &format!("retry_delays_secs.{result}"),
                    "a final result cannot be retried",
                );
            } else if *secs > MAX_DELAY_SECS {
                bad(&format!("retry_delays_secs.{result}"), "at most 30 days");
            }
        }
        for (field, message) in window::validate(&self.calling_windows) {
            bad(&field, &message);
        }
        if self.wrap_up_secs > 3600 {
            bad("wrap_up_secs", "at most 3600");
        }
        if !(100..=60_000).contains(&self.connect_limit_ms) {
            bad("connect_limit_ms", "must be between 100 and 60000");
        }
        if !self.abandon_message.contains(':') {
            bad("abandon_message", "an ARI media URI such as sound:vm-goodbye");
        }
        if !(0.0..=1.0).contains(&self.max_abandon_rate) {
            bad("max_abandon_rate", "a fraction between 0 and 1, e.g. 0.03 for 3 %");
        }
        if !(1..=10_000).contains(&self.max_concurrent_calls) {
            bad("max_concurrent_calls", "must be between 1 and 10000");
        }
        if !(self.calls_per_second > 0.0 && self.calls_per_second <= 1000.0) {
            bad("calls_per_second", "must be above 0 and at most 1000");
        }
        for key in self.disposition_keys.keys() {
            let ok = key.len() == 1 && key.chars().all(|c| c.is_ascii_digit() || c == '*');
            if !ok || RESERVED_KEYS.contains(&key.as_str()) {
                bad(
                    &format!("disposition_keys.{key}"),
                    "a single key 1-9 or * (0 and # are reserved)",
                );
            }
        }
        errors.extend(self.amd.validate());
        errors.extend(crate::compliance::validate(self));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub fn tz(&self) -> Tz {
        self.timezone.parse().unwrap_or(Tz::UTC)
    }

    pub fn region(&self) -> Option<Region> {
        Region::parse(&self.default_region).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({"name": "Autumn", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000"})
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn minimal_spec_gets_sensible_defaults() {
        let spec = CampaignSpec::from_json(valid()).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.pacing.mode, PacingMode::Progressive);
        assert_eq!(spec.connect_limit_ms, 2000);
        assert_eq!(spec.disposition_keys["1"], AttemptResult::Success);
    }

    #[test]
    fn control_characters_and_overlong_text_are_refused_with_the_field_named() {
        let mut v = valid();
        v["name"] = json!("Autumn\u{0}");
        v["caller_id"] = json!("7495\n0000000");
        v["trunk"] = json!(format!("PJSIP/{{number}}@{}", "t".repeat(MAX_TRUNK_CHARS)));
        v["skills"] = json!(["ru", "x\u{1b}"]);
        let errors = CampaignSpec::from_json(v).unwrap().validate().unwrap_err();
        assert_eq!(fields(errors.clone()), ["name", "trunk", "caller_id", "skills[1]"]);
        assert!(errors[0].message.contains("U+0000"), "{errors:?}");
        assert!(errors[1].message.contains("at most 200"), "{errors:?}");
        // Printable text at the limit is fine, whatever the script.
        let mut v = valid();
        v["name"] = json!("Осень ".repeat(MAX_NAME_CHARS / 6));
        CampaignSpec::from_json(v).unwrap().validate().unwrap();
    }

    #[test]
    fn decoding_errors_speak_of_numbers_and_lists_not_rust_types() {
        for (field, value, words) in [
            ("max_attempts", json!("three"), "a whole number"),
            ("max_abandon_rate", json!([1]), "a number"),
            ("skills", json!("ru"), "a list"),
            ("pacing", json!(3), "an object"),
        ] {
            let mut v = valid();
            v[field] = value;
            let e = CampaignSpec::from_json(v).unwrap_err();
            let message = &e[0].message;
            assert!(message.contains(words), "{field}: {message}");
            for rust in ["u32", "f64", "struct ", "Vec<"] {
                assert!(!message.contains(rust), "{field}: {message}");
            }
        }
    }

    #[test]
    fn a_list_where_an_object_belongs_is_refused() {
        let mut v = valid();
        v["compliance"] = json!({"connected": [null, null]});
        v["pacing"] = json!(["predictive", 2]);
        v["calling_windows"] = json!({"mon": [["09:00", "18:00"]]});
        assert_eq!(
            fields(CampaignSpec::from_json(v).unwrap_err()),
            ["pacing", "compliance.connected", "calling_windows.mon[0]"]
        );
    }

    #[test]
    fn trunk_and_caller_id_are_required() {
        let spec = CampaignSpec::from_json(json!({"name": "x"})).unwrap();
        let f = fields(spec.validate().unwrap_err());
        assert!(
            f.contains(&"trunk".to_owned()) && f.contains(&"caller_id".to_owned()),
            "{f:?}"
        );
    }

    #[test]
    fn type_errors_and_unknown_fields_name_the_field() {
        let mut v = valid();
        v["pacing"] = json!({"ratio": "fast"});
        assert_eq!(fields(CampaignSpec::from_json(v).unwrap_err()), ["pacing.ratio"]);
        let mut v = valid();
        v["colour"] = json!("red");
        let e = CampaignSpec::from_json(v).unwrap_err();
        assert!(e[0].message.contains("colour"), "{e:?}");
        let mut v = valid();
        v["retry_delays_secs"] = json!({"sometimes": 5});
        assert_eq!(fields(CampaignSpec::from_json(v).unwrap_err()), ["retry_delays_secs"]);
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut v = valid();
        v["timezone"] = json!("Mars/Olympus");
        v["pacing"] = json!({"mode": "predictive", "ratio": 0, "target_abandon_rate": 0.05});
        v["preview"] = json!({"auto_dial_secs": 500});
        v["dial_timeout_secs"] = json!(1);
        v["retry_delays_secs"] = json!({"success": 5});
        v["disposition_keys"] = json!({"0": "success"});
        v["calling_windows"] = json!({"mon": [{"from": "18:00", "to": "09:00"}]});
        let f = fields(CampaignSpec::from_json(v).unwrap().validate().unwrap_err());
        for expected in [
            "timezone",
            "pacing.target_abandon_rate",
            "pacing.ratio",
            "preview.auto_dial_secs",
            "dial_timeout_secs",
            "retry_delays_secs.success",
            "disposition_keys.0",
            "calling_windows.mon[0]",
        ] {
            assert!(f.contains(&expected.to_owned()), "{expected} missing from {f:?}");
        }
    }

    #[test]
    fn predictive_pacing_takes_a_target_under_the_cap_and_a_window() {
        let mut v = valid();
        v["pacing"] = json!({"mode": "predictive", "target_abandon_rate": 0.02, "abandon_window": "30d"});
        let spec = CampaignSpec::from_json(v).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.pacing.abandon_window, AbandonWindow::Days30);
        let mut v = valid();
        v["pacing"] = json!({"mode": "predictive", "abandon_window": "week"});
        assert_eq!(
            fields(CampaignSpec::from_json(v).unwrap_err()),
            ["pacing.abandon_window"]
        );
        let mut v = valid();
        v["pacing"] = json!({"mode": "predictive", "target_abandon_rate": 0.0});
        assert_eq!(
            fields(CampaignSpec::from_json(v).unwrap().validate().unwrap_err()),
            ["pacing.target_abandon_rate"]
        );
        let defaults = CampaignSpec::default().pacing;
        assert_eq!(
            (defaults.target_abandon_rate, defaults.abandon_window),
            (0.03, AbandonWindow::Day)
        );
    }
}
