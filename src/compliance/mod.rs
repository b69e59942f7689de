//! Compliance by construction: the jurisdiction rule profiles a campaign names
//! (`compliance.profile`), the floors they set on its settings, per-number contact limits and
//! quiet periods, holidays, and the reason recorded for every lead dialled or skipped. Pure
//! functions: the scheduler feeds them a number's recent history and the time, they answer
//! "dial, because…" or "not before T, because…". `docs/compliance.md` cites the rules.

pub mod report;
pub mod store;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::campaigns::spec::{AbandonWindow, CampaignSpec, FieldError};
use crate::dialer::window::{self, Calendar, LocalTime, Span, Windows, WEEKDAYS};

/// A set of rules from one jurisdiction's law or regulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Profile {
    /// No floors beyond the campaign's own settings.
    #[default]
    #[serde(rename = "none")]
    None,
    /// US: TCPA (47 CFR § 64.1200) and the FTC Telemarketing Sales Rule (16 CFR § 310.4).
    #[serde(rename = "us-tcpa")]
    UsTcpa,
    /// UK: Ofcom's statement of policy on persistent misuse (2016).
    #[serde(rename = "uk-ofcom")]
    UkOfcom,
    /// Russia: debt collection under Federal Law 230-FZ, article 7.
    #[serde(rename = "ru-230fz")]
    Ru230fz,
}

/// How many calls a number may get over rolling periods (none: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// In any 24 hours.
    #[schema(minimum = 0, maximum = 1000)]
    pub per_day: Option<u32>,
    /// In any 7 days.
    #[schema(minimum = 0, maximum = 1000)]
    pub per_week: Option<u32>,
    /// In any 31 days (so every calendar month is covered).
    #[schema(minimum = 0, maximum = 1000)]
    pub per_month: Option<u32>,
}

/// What a campaign does on the dates in `holidays`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HolidayHours {
    /// No calls at all.
    #[default]
    NoCalls,
    /// Sunday's calling window (and, under a profile, its weekend hours).
    AsSunday,
}

/// A campaign's compliance settings. Limits count every call to the number from every
/// campaign in this database, not only this one's; a profile's limits are floors the
/// campaign can tighten, never loosen.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Compliance {
    pub profile: Profile,
    /// Calls dialled to a number (answered or not).
    pub attempts: Limits,
    /// Calls to a number that were answered.
    pub connected: Limits,
    /// No call to a number for this many hours after it had an abandoned call (0: the
    /// profile's, if any).
    #[schema(minimum = 0, maximum = 720)]
    pub quiet_after_abandon_hours: u32,
    /// Local dates (in the lead's zone) with no calls, or Sunday's hours (`holiday_hours`).
    #[schema(value_type = Vec<String>, format = "date", max_items = 400, example = json!(["2027-01-01"]))]
    pub holidays: Vec<NaiveDate>,
    pub holiday_hours: HolidayHours,
}

pub const MAX_HOLIDAYS: usize = 400;
pub const MAX_QUIET_HOURS: u32 = 720;
pub const MAX_LIMIT: u32 = 1000;

/// What a profile requires, with the rule each requirement comes from.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub profile: Profile,
    /// Local calling hours Monday to Friday and at weekends (and, for `ru-230fz`, holidays).
    pub weekday_hours: Option<Span>,
    pub weekend_hours: Option<Span>,
    pub hours_rule: &'static str,
    /// Shortest ring before an unanswered call is given up.
    pub min_ring_secs: Option<u32>,
    pub ring_rule: &'static str,
    /// Highest abandon rate, the window it is counted over, and the rule.
    pub abandon: Option<(f64, AbandonWindow)>,
    pub abandon_rule: &'static str,
    /// Longest wait after the answer before the customer is connected or hears the message.
    pub max_connect_ms: Option<u64>,
    pub message_rule: &'static str,
    pub quiet_after_abandon_hours: u32,
    pub quiet_rule: &'static str,
    /// No repeat call within this many hours after answering-machine detection hung up on
    /// the number.
    pub quiet_after_machine_hours: u32,
    pub machine_rule: &'static str,
    pub connected: Limits,
    pub connected_rule: &'static str,
    /// The caller ID must be a number the customer can call back.
    pub callable_caller_id: bool,
    pub caller_id_rule: &'static str,
    /// Holidays take the weekend hours (when calls are allowed on them at all).
    pub holidays_as_weekend: bool,
}

const fn hours(from: u32, to: u32) -> Span {
    Span::new(LocalTime::at(from, 0), LocalTime::at(to, 0))
}

const NONE: Rules = Rules {
    profile: Profile::None,
    weekday_hours: None,
    weekend_hours: None,
    hours_rule: "",
    min_ring_secs: None,
    ring_rule: "",
    abandon: None,
    abandon_rule: "",
    max_connect_ms: None,
    message_rule: "",
    quiet_after_abandon_hours: 0,
    quiet_rule: "",
    quiet_after_machine_hours: 0,
    machine_rule: "",
    connected: Limits {
        per_day: None,
        per_week: None,
        per_month: None,
    },
    connected_rule: "",
    callable_caller_id: false,
    caller_id_rule: "",
    holidays_as_weekend: false,
};

impl Profile {
    pub fn rules(self) -> Rules {
        match self {
            Profile::None => NONE,
            Profile::UsTcpa => Rules {
                profile: self,
                weekday_hours: Some(hours(8, 21)),
                weekend_hours: Some(hours(8, 21)),
                hours_rule: "calls only 08:00–21:00 in the called party's local time (47 CFR § 64.1200(c)(1), 16 CFR § 310.4(c))",
                // "15 seconds or four rings": four US rings (2 s on, 4 s off) take 20 s, the
                // stricter of the two.
                min_ring_secs: Some(20),
                ring_rule: "an unanswered call rings at least 15 seconds or four rings, whichever is longer: 20 s (47 CFR § 64.1200(a)(6), 16 CFR § 310.4(b)(4)(ii))",
                abandon: Some((0.03, AbandonWindow::Days30)),
                abandon_rule: "at most 3 % of live-answered calls abandoned per campaign over 30 days (47 CFR § 64.1200(a)(7)(i), 16 CFR § 310.4(b)(4)(i))",
                max_connect_ms: Some(2000),
                message_rule: "a call not connected to a live agent within 2 s of the greeting is abandoned and hears a message naming the seller with a do-not-call number and an opt-out (47 CFR § 64.1200(a)(7)(i)-(ii), 16 CFR § 310.4(b)(4)(iii))",
                callable_caller_id: true,
                caller_id_rule: "the caller ID is a number the called party can call during business hours (47 CFR § 64.1601(e), 16 CFR § 310.4(a)(8))",
                ..NONE
            },
            Profile::UkOfcom => Rules {
                profile: self,
                min_ring_secs: Some(15),
                ring_rule: "an unanswered call rings at least 15 seconds (Ofcom persistent misuse statement 2016)",
                abandon: Some((0.03, AbandonWindow::Hours24)),
                abandon_rule: "at most 3 % of live calls abandoned per campaign per 24 hours (Ofcom persistent misuse statement 2016)",
                max_connect_ms: Some(2000),
                message_rule: "an abandoned call hears an information message within 2 s of the answer (Ofcom persistent misuse statement 2016)",
                quiet_after_abandon_hours: 72,
                quiet_rule: "no repeat call within 72 hours to a number that had an abandoned call (Ofcom persistent misuse statement 2016)",
                // Repeat calls after an AMD verdict need a guaranteed live operator; obzvon
                // cannot guarantee one, so it does not call again within the 24 hours.
                quiet_after_machine_hours: 24,
                machine_rule: "no repeat call within 24 hours to a number answering-machine detection hung up on, unless a live operator is guaranteed (Ofcom persistent misuse statement 2016)",
                callable_caller_id: true,
                caller_id_rule: "a valid caller ID the called person can call back (Ofcom persistent misuse statement 2016; General Condition C6)",
                ..NONE
            },
            Profile::Ru230fz => Rules {
                profile: self,
                weekday_hours: Some(hours(8, 22)),
                weekend_hours: Some(hours(9, 20)),
                hours_rule: "calls only 08:00–22:00 on working days and 09:00–20:00 on weekends and holidays, in the debtor's local time (230-FZ art. 7 part 3 item 1)",
                connected: Limits {
                    per_day: Some(1),
                    per_week: Some(2),
                    per_month: Some(8),
                },
                connected_rule: "at most one telephone conversation a day, two a week, eight a month (230-FZ art. 7 part 3 item 3 «а»–«в», as amended by 467-FZ: calendar week and month, covered by rolling 7 and 31 days)",
                holidays_as_weekend: true,
                ..NONE
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::None => "none",
            Profile::UsTcpa => "us-tcpa",
            Profile::UkOfcom => "uk-ofcom",
            Profile::Ru230fz => "ru-230fz",
        }
    }

    pub fn parse(text: &str) -> Option<Profile> {
        [Profile::None, Profile::UsTcpa, Profile::UkOfcom, Profile::Ru230fz]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

impl Rules {
    fn hours_on(&self, weekday: &str) -> Option<Span> {
        if matches!(weekday, "sat" | "sun") {
            self.weekend_hours
        } else {
            self.weekday_hours
        }
    }
}

/// Fills in, for a document that names a profile, the settings whose defaults the profile
/// changes (the abandon window it counts over; early hang-ups counted as abandoned), so a
/// campaign that says only `"profile": "us-tcpa"` is valid. Explicit values stay and are
/// checked by `validate`.
pub fn apply_profile_defaults(value: &mut serde_json::Value) {
    let Some(profile) = value
        .pointer("/compliance/profile")
        .and_then(|p| p.as_str())
        .and_then(Profile::parse)
    else {
        return;
    };
    let rules = profile.rules();
    let Some(doc) = value.as_object_mut() else { return };
    if let Some((_, window)) = rules.abandon {
        let pacing = doc.entry("pacing").or_insert_with(|| serde_json::json!({}));
        if let Some(pacing) = pacing.as_object_mut() {
            pacing
                .entry("abandon_window")
                .or_insert_with(|| serde_json::to_value(window).expect("serialisable"));
        }
        doc.entry("count_early_hangups_as_abandoned")
            .or_insert(serde_json::Value::Bool(true));
    }
}

/// The profile's floors against the campaign's settings: one error per setting it loosens,
/// naming the rule.
pub fn validate(spec: &CampaignSpec) -> Vec<FieldError> {
    let c = &spec.compliance;
    let rules = c.profile.rules();
    let name = rules.profile.as_str();
    let mut errors = Vec::new();
    let mut bad = |field: String, message: String| errors.push(FieldError::new(field, message));
    if c.holidays.len() > MAX_HOLIDAYS {
        bad("compliance.holidays".into(), format!("at most {MAX_HOLIDAYS} dates"));
    }
    if c.quiet_after_abandon_hours > MAX_QUIET_HOURS {
        bad(
            "compliance.quiet_after_abandon_hours".into(),
            format!("at most {MAX_QUIET_HOURS} hours (30 days)"),
        );
    }
    for (kind, limits) in [("attempts", &c.attempts), ("connected", &c.connected)] {
        for (period, value) in limits.each() {
            if value > MAX_LIMIT {
                bad(
                    format!("compliance.{kind}.{}", period.field),
                    format!("at most {MAX_LIMIT}"),
                );
            }
        }
    }
    for (day, spans) in &spec.calling_windows {
        let Some(allowed) = rules.hours_on(day) else { continue };
        for (i, span) in spans.iter().enumerate() {
            if !span.within(&[allowed]) {
                bad(
                    format!("calling_windows.{day}[{i}]"),
                    format!("{name}: {} (here {allowed})", rules.hours_rule),
                );
            }
        }
    }
    if let Some(min) = rules.min_ring_secs {
        if spec.dial_timeout_secs < min {
            bad(
                "dial_timeout_secs".into(),
                format!("at least {min} under {name}: {}", rules.ring_rule),
            );
        }
    }
    if let Some((cap, window)) = rules.abandon {
        if spec.max_abandon_rate > cap {
            bad(
                "max_abandon_rate".into(),
                format!("at most {cap} under {name}: {}", rules.abandon_rule),
            );
        }
        if spec.pacing.abandon_window != window {
            let wire = serde_json::to_value(window).expect("serialisable");
            bad(
                "pacing.abandon_window".into(),
                format!("must be {wire} under {name}: {}", rules.abandon_rule),
            );
        }
        if !spec.count_early_hangups_as_abandoned {
            bad(
                "count_early_hangups_as_abandoned".into(),
                format!(
                    "must be true under {name}: a customer who hangs up before being connected was not connected \
                     within the limit, so it counts as abandoned (the strict reading of: {})",
                    rules.abandon_rule
                ),
            );
        }
    }
    if let Some(max) = rules.max_connect_ms {
        if spec.connect_limit_ms > max {
            bad(
                "connect_limit_ms".into(),
                format!("at most {max} under {name}: {}", rules.message_rule),
            );
        }
    }
    if rules.max_connect_ms.is_some()
        && spec.amd.is_on()
        && u64::from(spec.amd.total_analysis_ms) > spec.connect_limit_ms
    {
        bad(
            "amd.total_analysis_ms".into(),
            format!(
                "at most connect_limit_ms ({}) under {name}: detection counts against the connect limit, \
                 and a person it takes longer on would be abandoned ({})",
                spec.connect_limit_ms, rules.message_rule
            ),
        );
    }
    if rules.callable_caller_id && crate::phone::PhoneNumber::parse(&spec.caller_id, spec.region()).is_err() {
        bad(
            "caller_id".into(),
            format!("must be a valid phone number under {name}: {}", rules.caller_id_rule),
        );
    }
    if c.quiet_after_abandon_hours != 0 && c.quiet_after_abandon_hours < rules.quiet_after_abandon_hours {
        bad(
            "compliance.quiet_after_abandon_hours".into(),
            format!(
                "at least {} under {name} (or 0 for that): {}",
                rules.quiet_after_abandon_hours, rules.quiet_rule
            ),
        );
    }
    for (period, floor) in rules.connected.each() {
        if let Some(mine) = c.connected.get(period) {
            if mine > floor {
                bad(
                    format!("compliance.connected.{}", period.field),
                    format!("at most {floor} under {name}: {}", rules.connected_rule),
                );
            }
        }
    }
    errors
}

/// One rolling period a limit counts over.
#[derive(Debug, Clone, Copy)]
struct Period {
    /// The setting's name.
    field: &'static str,
    hours: i64,
    /// "2 calls a week".
    words: &'static str,
    /// "in the last 7 days".
    span: &'static str,
}

impl Period {
    fn length(&self) -> Duration {
        Duration::hours(self.hours)
    }
}

const PERIODS: [Period; 3] = [
    Period {
        field: "per_day",
        hours: 24,
        words: "a day",
        span: "24 hours",
    },
    Period {
        field: "per_week",
        hours: 7 * 24,
        words: "a week",
        span: "7 days",
    },
    Period {
        field: "per_month",
        hours: 31 * 24,
        words: "a month",
        span: "31 days",
    },
];

impl Limits {
    fn get(&self, period: &Period) -> Option<u32> {
        match period.field {
            "per_day" => self.per_day,
            "per_week" => self.per_week,
            _ => self.per_month,
        }
    }

    /// The limits set, with their periods.
    fn each(&self) -> impl Iterator<Item = (&'static Period, u32)> + '_ {
        PERIODS.iter().filter_map(|p| self.get(p).map(|v| (p, v)))
    }

    /// The tighter of two limit sets, period by period.
    fn tightest(&self, other: &Limits) -> Limits {
        let min = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Limits {
            per_day: min(self.per_day, other.per_day),
            per_week: min(self.per_week, other.per_week),
            per_month: min(self.per_month, other.per_month),
        }
    }

    fn is_empty(&self) -> bool {
        self.each().next().is_none()
    }
}

/// How far back a number's history is read: the longest limit period (and quiet period).
pub const HISTORY_DAYS: i64 = 31;

/// Why a lead was not dialled now, for its record and the compliance report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub rule: SkipRule,
    pub reason: String,
    /// When the lead may be tried again (None: never, e.g. DNC).
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipRule {
    OutsideHours,
    Holiday,
    ContactLimit,
    QuietPeriod,
    Dnc,
    NumberBusy,
}

impl SkipRule {
    pub const ALL: [SkipRule; 6] = [
        SkipRule::OutsideHours,
        SkipRule::Holiday,
        SkipRule::ContactLimit,
        SkipRule::QuietPeriod,
        SkipRule::Dnc,
        SkipRule::NumberBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipRule::OutsideHours => "outside-hours",
            SkipRule::Holiday => "holiday",
            SkipRule::ContactLimit => "contact-limit",
            SkipRule::QuietPeriod => "quiet-period",
            SkipRule::Dnc => "dnc",
            SkipRule::NumberBusy => "number-busy",
        }
    }
}

/// A number's calls over the last `HISTORY_DAYS`, newest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// When each call to the number was dialled.
    pub dialled: Vec<DateTime<Utc>>,
    /// When each answered call was answered.
    pub answered: Vec<DateTime<Utc>>,
    /// When its last abandoned call ended.
    pub last_abandon: Option<DateTime<Utc>>,
    /// When answering-machine detection last hung up on it.
    pub last_machine: Option<DateTime<Utc>>,
}

/// A campaign's rules once its profile and its own settings are combined: what the scheduler
/// checks for each lead.
#[derive(Debug, Clone)]
pub struct Effective {
    pub profile: Profile,
    pub calendar: Calendar,
    pub attempts: Limits,
    pub connected: Limits,
    pub quiet_after_abandon: Option<Duration>,
    pub quiet_after_machine: Option<Duration>,
    connected_rule: String,
    quiet_rule: String,
    machine_rule: String,
}

impl Effective {
    pub fn of(spec: &CampaignSpec) -> Effective {
        let c = &spec.compliance;
        let rules = c.profile.rules();
        let quiet = c.quiet_after_abandon_hours.max(rules.quiet_after_abandon_hours);
        let name = rules.profile.as_str();
        Effective {
            profile: rules.profile,
            calendar: calendar(&spec.calling_windows, &rules, c),
            attempts: c.attempts,
            connected: c.connected.tightest(&rules.connected),
            quiet_after_abandon: (quiet > 0).then(|| Duration::hours(i64::from(quiet))),
            quiet_after_machine: (rules.quiet_after_machine_hours > 0)
                .then(|| Duration::hours(i64::from(rules.quiet_after_machine_hours))),
            machine_rule: format!("{name}: {}", rules.machine_rule),
            connected_rule: if rules.connected.is_empty() {
                "campaign setting".to_owned()
            } else {
                format!("{name}: {}", rules.connected_rule)
            },
            quiet_rule: if rules.quiet_after_abandon_hours > 0 {
                format!("{name}: {}", rules.quiet_rule)
            } else {
                "campaign setting".to_owned()
            },
        }
    }

    /// Whether a number's history matters (any limit or quiet period).
    pub fn needs_history(&self) -> bool {
        !self.attempts.is_empty()
            || !self.connected.is_empty()
            || self.quiet_after_abandon.is_some()
            || self.quiet_after_machine.is_some()
    }

    /// Whether calls may be placed at `now` in `tz` (what `check_hours` decides, without
    /// the sentences).
    pub fn is_open(&self, now: DateTime<Utc>, tz: Tz) -> bool {
        window::next_open_in(now, tz, &self.calendar) == Some(now)
    }

    /// The calling hours at `now` in `tz`: Ok with a sentence saying so, or the skip until
    /// they open.
    pub fn check_hours(&self, now: DateTime<Utc>, tz: Tz) -> Result<String, Skip> {
        let local = now.with_timezone(&tz);
        let today = local.date_naive();
        let open = window::next_open_in(now, tz, &self.calendar);
        if open == Some(now) {
            let span = self
                .calendar
                .spans(today)
                .iter()
                .find(|s| s.contains_local(local.time()))
                .map_or_else(|| "any time".to_owned(), |s| s.to_string());
            return Ok(format!(
                "inside the calling hours {span} in {tz} (local {})",
                local.format("%a %H:%M")
            ));
        }
        let holiday = self.calendar.dates.contains_key(&today);
        let rule = if holiday {
            SkipRule::Holiday
        } else {
            SkipRule::OutsideHours
        };
        let until = open.unwrap_or(now + Duration::days(1));
        let when = until.with_timezone(&tz).format("%a %Y-%m-%d %H:%M");
        let reason = match (holiday, open) {
            (true, _) => format!("holiday {today} in {tz}: no calls until {when} local"),
            (false, Some(_)) => format!(
                "outside the calling hours in {tz} (local {}) until {when} local",
                local.format("%a %H:%M")
            ),
            (false, None) => format!("no calling time in the next 40 days in {tz}; looked again tomorrow"),
        };
        Err(Skip {
            rule,
            reason,
            until: Some(until),
        })
    }

    /// Contact limits and quiet periods for a number with `history`: the sentences of the
    /// checks passed, or the first limit reached with when it lifts.
    pub fn check_number(&self, history: &History, now: DateTime<Utc>) -> Result<Vec<String>, Skip> {
        let mut passed = Vec::new();
        let quiet_periods = [
            (
                self.quiet_after_abandon,
                history.last_abandon,
                "an abandoned call",
                &self.quiet_rule,
                Some("no abandoned call within the quiet period"),
            ),
            (
                self.quiet_after_machine,
                history.last_machine,
                "answering-machine detection",
                &self.machine_rule,
                None,
            ),
        ];
        for (quiet, last, after, rule, passed_as) in quiet_periods {
            let Some(quiet) = quiet else { continue };
            if let Some(at) = last.filter(|at| now < *at + quiet) {
                return Err(Skip {
                    rule: SkipRule::QuietPeriod,
                    reason: format!(
                        "quiet period of {} h after {after} at {} ({rule})",
                        quiet.num_hours(),
                        at.format("%Y-%m-%d %H:%M UTC"),
                    ),
                    until: Some(at + quiet),
                });
            }
            passed.extend(passed_as.map(str::to_owned));
        }
        let sets = [
            ("calls", &self.attempts, &history.dialled, "campaign setting"),
            (
                "connected calls",
                &self.connected,
                &history.answered,
                self.connected_rule.as_str(),
            ),
        ];
        for (what, limits, times, rule) in sets {
            for (period, limit) in limits.each() {
                let since = now - period.length();
                let recent: Vec<&DateTime<Utc>> = times.iter().filter(|t| **t > since).collect();
                let words = period.words;
                if recent.len() as u64 >= u64::from(limit) {
                    // The limit lifts when the `limit`-th newest call leaves the period.
                    let until = match limit {
                        0 => now + period.length(),
                        n => *recent[n as usize - 1] + period.length(),
                    };
                    return Err(Skip {
                        rule: SkipRule::ContactLimit,
                        reason: format!(
                            "contact limit \"{limit} {what} {words}\" reached ({} in the last {}; {rule}) until {}",
                            recent.len(),
                            period.span,
                            until.format("%Y-%m-%d %H:%M UTC")
                        ),
                        until: Some(until),
                    });
                }
                passed.push(format!("{} of {limit} {what} {words}", recent.len()));
            }
        }
        Ok(passed)
    }
}

/// The campaign's weekly windows within the profile's hours, and its holidays.
fn calendar(windows: &Windows, rules: &Rules, c: &Compliance) -> Calendar {
    let mut weekly = Windows::new();
    let restricted = !windows.is_empty() || rules.weekday_hours.is_some();
    if restricted {
        for day in WEEKDAYS {
            let mine: &[Span] = if windows.is_empty() {
                std::slice::from_ref(&Span::ALL_DAY)
            } else {
                windows.get(day).map_or(&[], Vec::as_slice)
            };
            let spans = match rules.hours_on(day) {
                Some(allowed) => window::intersect(mine, &[allowed]),
                None => mine.to_vec(),
            };
            if !spans.is_empty() {
                weekly.insert(day.to_owned(), spans);
            }
        }
    }
    let sunday: Vec<Span> = if restricted {
        weekly.get("sun").cloned().unwrap_or_default()
    } else {
        vec![Span::ALL_DAY]
    };
    let holiday_spans = match (c.holiday_hours, rules.holidays_as_weekend) {
        (HolidayHours::NoCalls, _) => Vec::new(),
        (HolidayHours::AsSunday, true) => window::intersect(&sunday, &[rules.weekend_hours.expect("set")]),
        (HolidayHours::AsSunday, false) => sunday,
    };
    let dates: BTreeMap<NaiveDate, Vec<Span>> = c.holidays.iter().map(|d| (*d, holiday_spans.clone())).collect();
    Calendar { windows: weekly, dates }
}

#[cfg(test)]
mod tests;
