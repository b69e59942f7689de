//! Answering-machine detection: a campaign's `amd` settings, the channel variables that hand
//! them to our dialplan context (`dialplan/obzvon-amd.conf`, which runs Asterisk's `AMD()`
//! and comes back to Stasis with `amd,<AMDSTATUS>,<AMDCAUSE>[,message-left]`), and the
//! verdict read from those arguments.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::campaigns::spec::FieldError;

/// What happens to a call answered by a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AmdMode {
    /// No detection: every answer goes to an operator.
    #[default]
    Off,
    /// Hang up on a machine (result `machine`).
    HangUp,
    /// Wait for the greeting to end (the beep and the silence after it), play `message`,
    /// hang up (result `machine`).
    Message,
    /// Detect, record the verdict, and connect the call to an operator anyway.
    Operator,
}

/// A campaign's answering-machine detection. The timings are `AMD()`'s parameters; the time
/// detection takes counts against the connect limit, so a person heard as a person is still
/// connected (or given the abandon message) within `connect_limit_ms` of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Amd {
    pub mode: AmdMode,
    /// `message` mode: what the machine records (`sound:NAME`, a sound file on Asterisk).
    #[schema(pattern = r"^sound:[A-Za-z0-9_/-]{1,200}$", example = "sound:vm-goodbye")]
    pub message: String,
    /// Longest silence before the greeting; longer is a machine.
    #[schema(minimum = 500, maximum = 10000)]
    pub initial_silence_ms: u32,
    /// Longest greeting; longer is a machine.
    #[schema(minimum = 500, maximum = 10000)]
    pub greeting_ms: u32,
    /// Silence after the greeting that makes it a person.
    #[schema(minimum = 100, maximum = 5000)]
    pub after_greeting_silence_ms: u32,
    /// Longest the analysis may take; then NOTSURE (treated as a person).
    #[schema(minimum = 1000, maximum = 10000)]
    pub total_analysis_ms: u32,
    #[schema(minimum = 10, maximum = 1000)]
    pub min_word_length_ms: u32,
    #[schema(minimum = 10, maximum = 1000)]
    pub between_words_silence_ms: u32,
    /// More words than this is a machine.
    #[schema(minimum = 1, maximum = 20)]
    pub max_words: u32,
    /// Energy below which audio counts as silence (0–32767).
    #[schema(minimum = 1, maximum = 32767)]
    pub silence_threshold: u32,
    #[schema(minimum = 100, maximum = 10000)]
    pub max_word_length_ms: u32,
    /// Your measured share of machine verdicts that were people. Each machine hang-up counts
    /// this much as an abandoned call; without it, every one counts under us-tcpa and
    /// uk-ofcom (the strict reading) and none otherwise.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub false_positive_rate: Option<f64>,
}

impl Default for Amd {
    fn default() -> Self {
        // Asterisk's amd.conf defaults.
        Amd {
            mode: AmdMode::Off,
            message: "sound:vm-goodbye".to_owned(),
            initial_silence_ms: 2500,
            greeting_ms: 1500,
            after_greeting_silence_ms: 800,
            total_analysis_ms: 5000,
            min_word_length_ms: 100,
            between_words_silence_ms: 50,
            max_words: 2,
            silence_threshold: 256,
            max_word_length_ms: 5000,
            false_positive_rate: None,
        }
    }
}

/// The dialplan context an answered call is sent to for detection.
pub const CONTEXT: &str = "obzvon-amd";

/// Detection that has not come back after this long past its analysis time (plus, in
/// `message` mode, the greeting and the message) is given up: the call is hung up.
pub const GRACE_SECS: u64 = 60;

impl Amd {
    pub fn is_on(&self) -> bool {
        self.mode != AmdMode::Off
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let ranges: [(&str, u32, u32, u32); 9] = [
            ("initial_silence_ms", self.initial_silence_ms, 500, 10_000),
            ("greeting_ms", self.greeting_ms, 500, 10_000),
            ("after_greeting_silence_ms", self.after_greeting_silence_ms, 100, 5_000),
            ("total_analysis_ms", self.total_analysis_ms, 1_000, 10_000),
            ("min_word_length_ms", self.min_word_length_ms, 10, 1_000),
            ("between_words_silence_ms", self.between_words_silence_ms, 10, 1_000),
            ("max_words", self.max_words, 1, 20),
            ("silence_threshold", self.silence_threshold, 1, 32_767),
            ("max_word_length_ms", self.max_word_length_ms, 100, 10_000),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                errors.push(FieldError::new(
                    format!("amd.{field}"),
                    format!("must be between {min} and {max}"),
                ));
            }
        }
        if self.false_positive_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            errors.push(FieldError::new(
                "amd.false_positive_rate",
                "a fraction between 0 and 1, e.g. 0.05 for 5 %",
            ));
        }
        if sound_name(&self.message).is_none() {
            errors.push(FieldError::new(
                "amd.message",
                "a sound file on Asterisk written sound:NAME (letters, digits, _ / -), e.g. sound:vm-goodbye",
            ));
        }
        errors
    }

    /// Channel variables for the dialplan context, set when the call is dialled.
    pub fn variables(&self) -> BTreeMap<String, String> {
        let params = [
            self.initial_silence_ms,
            self.greeting_ms,
            self.after_greeting_silence_ms,
            self.total_analysis_ms,
            self.min_word_length_ms,
            self.between_words_silence_ms,
            self.max_words,
            self.silence_threshold,
            self.max_word_length_ms,
        ]
        .map(|v| v.to_string())
        .join(",");
        let mode = match self.mode {
            AmdMode::Message => "message",
            _ => "detect",
        };
        BTreeMap::from([
            ("OBZVON_AMD".to_owned(), params),
            ("OBZVON_AMD_MODE".to_owned(), mode.to_owned()),
            (
                "OBZVON_AMD_MESSAGE".to_owned(),
                sound_name(&self.message).unwrap_or("vm-goodbye").to_owned(),
            ),
        ])
    }

    /// How long detection may take before it is given up.
    pub fn limit(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.total_analysis_ms)) + std::time::Duration::from_secs(GRACE_SECS)
    }
}

/// `sound:NAME` → NAME, if NAME is safe to hand to the dialplan (no commas, no `${`).
fn sound_name(media: &str) -> Option<&str> {
    let name = media.strip_prefix("sound:")?;
    let ok =
        !name.is_empty() && name.len() <= 200 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_/-".contains(c));
    ok.then_some(name)
}

/// What detection decided, from the Stasis arguments the dialplan came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// AMDSTATUS: HUMAN, MACHINE, NOTSURE, HANGUP.
    pub status: String,
    /// AMDCAUSE, e.g. `LONGGREETING-1600-1500`.
    pub cause: String,
    /// `message` mode: the message was played to the machine.
    pub message_left: bool,
}

impl Verdict {
    /// `["amd", STATUS, CAUSE, ("message-left")]`, or None for other arguments.
    pub fn from_args(args: &[String]) -> Option<Verdict> {
        if args.first().map(String::as_str) != Some("amd") {
            return None;
        }
        let text = |i: usize| {
            args.get(i)
                .map(|s| s.chars().filter(|c| !c.is_control()).take(100).collect::<String>())
                .unwrap_or_default()
        };
        Some(Verdict {
            status: text(1),
            cause: text(2),
            message_left: args.get(3).map(String::as_str) == Some("message-left"),
        })
    }

    pub fn is_machine(&self) -> bool {
        self.status == "MACHINE"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_carry_amds_nine_parameters_in_order() {
        let v = Amd::default().variables();
        assert_eq!(v["OBZVON_AMD"], "2500,1500,800,5000,100,50,2,256,5000");
        assert_eq!(v["OBZVON_AMD_MESSAGE"], "vm-goodbye");
        let message = Amd {
            mode: AmdMode::Message,
            ..Amd::default()
        };
        assert_eq!(message.variables()["OBZVON_AMD_MODE"], "message");
    }

    #[test]
    fn a_message_that_could_break_out_of_the_dialplan_is_refused() {
        for bad in ["vm-goodbye", "sound:a,b", "sound:${EXTEN}", "sound:", "recording:x"] {
            let amd = Amd {
                message: bad.to_owned(),
                ..Amd::default()
            };
            assert!(amd.validate().iter().any(|e| e.field == "amd.message"), "{bad}");
        }
        assert!(Amd::default().validate().is_empty());
    }

    #[test]
    fn verdicts_are_read_from_the_stasis_arguments() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let v = Verdict::from_args(&args(&["amd", "MACHINE", "LONGGREETING-1600-1500", "message-left"])).unwrap();
        assert!(v.is_machine() && v.message_left);
        assert_eq!(v.cause, "LONGGREETING-1600-1500");
        let v = Verdict::from_args(&args(&["amd", "HUMAN", "HUMAN-800-800"])).unwrap();
        assert!(!v.is_machine() && !v.message_left);
        assert!(Verdict::from_args(&args(&["attempt", "x"])).is_none());
    }
}
