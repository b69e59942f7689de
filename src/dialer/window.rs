//! Calling windows: when a lead may be called, in the lead's own time zone. Pure functions,
//! DST-correct because each day's window edges are converted from local time separately.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// One span of local time, `from` inclusive, `to` exclusive; `to` "24:00" means midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Span {
    /// `HH:MM`, local; before `to`.
    #[schema(value_type = String, pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", example = "09:00")]
    pub from: LocalTime,
    /// `HH:MM`, local, exclusive; `24:00` is midnight at the day's end.
    #[schema(value_type = String, pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", example = "21:00")]
    pub to: LocalTime,
}

/// A local time of day written "HH:MM" ("24:00" allowed as an end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalTime {
    minutes: u32,
}

impl LocalTime {
    pub fn parse(text: &str) -> Option<LocalTime> {
        let (h, m) = text.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        if m >= 60 || h > 24 || (h == 24 && m != 0) {
            return None;
        }
        Some(LocalTime { minutes: h * 60 + m })
    }

    pub const fn at(hours: u32, minutes: u32) -> LocalTime {
        LocalTime {
            minutes: hours * 60 + minutes,
        }
    }

    fn offset_from(self, date: NaiveDate) -> chrono::NaiveDateTime {
        date.and_time(NaiveTime::MIN) + Duration::minutes(i64::from(self.minutes))
    }
}

impl Serialize for LocalTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:02}:{:02}", self.minutes / 60, self.minutes % 60))
    }
}

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        LocalTime::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a time of day HH:MM")))
    }
}

/// Spans per weekday (`mon` … `sun`). A weekday that is absent has no calling time; an empty
/// map (the default) means calls are allowed at any time.
pub type Windows = BTreeMap<String, Vec<Span>>;

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn key(day: Weekday) -> &'static str {
    WEEKDAYS[day.num_days_from_monday() as usize]
}

/// Problems with a window table, as (field, message) pairs for a 422.
pub fn validate(windows: &Windows) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (day, spans) in windows {
        if !WEEKDAYS.contains(&day.as_str()) {
            problems.push((
                format!("calling_windows.{day}"),
                "not a weekday; use mon, tue, … sun".to_owned(),
            ));
        }
        for (i, span) in spans.iter().enumerate() {
            if span.from >= span.to {
                problems.push((
                    format!("calling_windows.{day}[{i}]"),
                    "`from` must be before `to`".to_owned(),
                ));
            }
        }
    }
    problems
}

impl Span {
    pub const fn new(from: LocalTime, to: LocalTime) -> Span {
        Span { from, to }
    }

    /// The whole day, 00:00–24:00.
    pub const ALL_DAY: Span = Span::new(LocalTime::at(0, 0), LocalTime::at(24, 0));

    /// Whether the local time of day `t` is inside.
    pub fn contains_local(&self, t: NaiveTime) -> bool {
        use chrono::Timelike;
        let m = t.hour() * 60 + t.minute();
        self.from.minutes <= m && m < self.to.minutes
    }

    /// Whether `self` lies inside one of `outer`.
    pub fn within(&self, outer: &[Span]) -> bool {
        outer.iter().any(|o| o.from <= self.from && self.to <= o.to)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |t: LocalTime| format!("{:02}:{:02}", t.minutes / 60, t.minutes % 60);
        write!(f, "{}–{}", hm(self.from), hm(self.to))
    }
}

/// The times both `a` and `b` allow.
pub fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out: Vec<Span> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| Span::new(x.from.max(y.from), x.to.min(y.to))))
        .filter(|s| s.from < s.to)
        .collect();
    out.sort_by_key(|s| s.from);
    out
}

/// When calls may be placed: spans per weekday, and dates (holidays) with spans of their own
/// that replace their weekday's. With no weekday table at all, days not listed are open all
/// day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calendar {
    pub windows: Windows,
    pub dates: BTreeMap<NaiveDate, Vec<Span>>,
}

impl Calendar {
    pub fn weekly(windows: Windows) -> Calendar {
        Calendar {
            windows,
            dates: BTreeMap::new(),
        }
    }

    /// The spans open on `date` (local).
    pub fn spans(&self, date: NaiveDate) -> &[Span] {
        if let Some(spans) = self.dates.get(&date) {
            return spans;
        }
        if self.windows.is_empty() {
            return std::slice::from_ref(&Span::ALL_DAY);
        }
        self.windows.get(key(date.weekday())).map_or(&[], Vec::as_slice)
    }

    fn always_open(&self) -> bool {
        self.windows.is_empty() && self.dates.is_empty()
    }
}

/// Local start and end of each span on `date`, as UTC instants.
fn spans_on(date: NaiveDate, tz: Tz, calendar: &Calendar) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    calendar
        .spans(date)
        .iter()
        .filter_map(|s| {
            Some((
                to_utc(tz, s.from.offset_from(date))?,
                to_utc(tz, s.to.offset_from(date))?,
            ))
        })
        .collect()
}

/// The instant local midnight starts `date` in `tz`.
pub fn local_midnight(date: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    to_utc(tz, date.and_time(NaiveTime::MIN))
}

/// Local → UTC; a time inside a DST gap moves to the first valid instant after it.
fn to_utc(tz: Tz, local: chrono::NaiveDateTime) -> Option<DateTime<Utc>> {
    for shift in 0..=4 {
        if let Some(t) = tz
            .from_local_datetime(&(local + Duration::minutes(30 * shift)))
            .earliest()
        {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// Whether `now` is inside a window in `tz`.
pub fn is_open(now: DateTime<Utc>, tz: Tz, windows: &Windows) -> bool {
    next_open(now, tz, windows) == Some(now)
}

/// `now` if a window is open, else the start of the next window within eight days (None if
/// the table has no time at all).
pub fn next_open(now: DateTime<Utc>, tz: Tz, windows: &Windows) -> Option<DateTime<Utc>> {
    next_open_in(now, tz, &Calendar::weekly(windows.clone()))
}

/// How far ahead `next_open_in` looks: a run of holidays (New Year in Russia) plus a week.
const LOOKAHEAD_DAYS: i64 = 40;

/// `next_open` over a calendar with holidays; None if nothing opens within 40 days.
pub fn next_open_in(now: DateTime<Utc>, tz: Tz, calendar: &Calendar) -> Option<DateTime<Utc>> {
    if calendar.always_open() {
        return Some(now);
    }
    let today = now.with_timezone(&tz).date_naive();
    let mut best: Option<(DateTime<Utc>, i64)> = None;
    for offset in -1..=LOOKAHEAD_DAYS {
        // Later dates' spans start later: once one is found, one more day settles it.
        if best.is_some_and(|(_, found)| offset > found + 1) {
            break;
        }
        let date = today + Duration::days(offset);
        for (start, end) in spans_on(date, tz, calendar) {
            if start <= now && now < end {
                return Some(now);
            }
            if start > now && best.is_none_or(|(b, _)| start < b) {
                best = Some((start, offset));
            }
        }
    }
    best.map(|(start, _)| start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(spec: &[(&str, &str, &str)]) -> Windows {
        let mut w = Windows::new();
        for (day, from, to) in spec {
            w.entry(day.to_string()).or_default().push(Span {
                from: LocalTime::parse(from).unwrap(),
                to: LocalTime::parse(to).unwrap(),
            });
        }
        w
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn open_inside_closed_outside_in_the_leads_zone() {
        let w = windows(&[("tue", "09:00", "21:00")]);
        let moscow: Tz = "Europe/Moscow".parse().unwrap();
        // 2026-11-24 is a Tuesday. 06:00Z = 09:00 Moscow.
        assert!(is_open(utc("2026-11-24T06:00:00Z"), moscow, &w));
        assert!(!is_open(utc("2026-11-24T05:59:00Z"), moscow, &w));
        assert!(!is_open(utc("2026-11-24T18:00:00Z"), moscow, &w)); // 21:00 Moscow, end exclusive
                                                                    // Same instant, other zone: 06:00Z is 01:00 in New York.
        let ny: Tz = "America/New_York".parse().unwrap();
        assert!(!is_open(utc("2026-11-24T06:00:00Z"), ny, &w));
    }

    #[test]
    fn next_open_finds_the_next_weekday_window() {
        let w = windows(&[("mon", "10:00", "12:00"), ("wed", "10:00", "12:00")]);
        let tz: Tz = "UTC".parse().unwrap();
        assert_eq!(
            next_open(utc("2026-11-24T13:00:00Z"), tz, &w),
            Some(utc("2026-11-25T10:00:00Z"))
        );
        assert_eq!(
            next_open(utc("2026-11-25T13:00:00Z"), tz, &w),
            Some(utc("2026-11-30T10:00:00Z"))
        );
        assert_eq!(
            next_open(utc("2026-11-25T11:00:00Z"), tz, &w),
            Some(utc("2026-11-25T11:00:00Z"))
        );
    }

    #[test]
    fn windows_follow_daylight_saving_time() {
        let w = windows(&[("sun", "09:00", "10:00"), ("mon", "09:00", "10:00")]);
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 (Sunday) Berlin switches from +01 to +02 at 02:00 local.
        assert_eq!(
            next_open(utc("2026-03-28T12:00:00Z"), berlin, &w),
            Some(utc("2026-03-29T07:00:00Z"))
        );
        assert_eq!(
            next_open(utc("2026-03-29T09:00:00Z"), berlin, &w),
            Some(utc("2026-03-30T07:00:00Z"))
        );
        // A week earlier, before the switch, 09:00 local is 08:00Z.
        assert_eq!(
            next_open(utc("2026-03-21T12:00:00Z"), berlin, &w),
            Some(utc("2026-03-22T08:00:00Z"))
        );
    }

    #[test]
    fn a_window_starting_inside_a_dst_gap_opens_after_the_gap() {
        let w = windows(&[("sun", "02:30", "04:00")]);
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 02:30 does not exist on 2026-03-29 in Berlin; the window opens at 03:00 CEST = 01:00Z.
        assert_eq!(
            next_open(utc("2026-03-28T12:00:00Z"), berlin, &w),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn empty_table_is_always_open_and_midnight_end_works() {
        let tz: Tz = "UTC".parse().unwrap();
        assert!(is_open(utc("2026-11-24T03:00:00Z"), tz, &Windows::new()));
        let w = windows(&[("tue", "20:00", "24:00")]);
        assert!(is_open(utc("2026-11-24T23:59:00Z"), tz, &w));
        assert!(!is_open(utc("2026-11-25T00:00:00Z"), tz, &w));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let mut w = windows(&[("tue", "10:00", "09:00")]);
        w.insert("funday".into(), vec![]);
        let problems = validate(&w);
        assert!(problems.iter().any(|(f, _)| f == "calling_windows.tue[0]"));
        assert!(problems.iter().any(|(f, _)| f == "calling_windows.funday"));
        assert!(
            LocalTime::parse("25:00").is_none()
                && LocalTime::parse("9:00").is_none()
                && LocalTime::parse("24:30").is_none()
        );
    }
}
