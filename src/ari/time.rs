//! Asterisk's timestamp format. ARI writes `2026-11-24T03:04:44.695+0000`: a numeric offset
//! without a colon, which RFC 3339 parsers reject.

use std::fmt;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.f%z";

/// A point in time as Asterisk reports it, keeping the offset it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AriTime(DateTime<FixedOffset>);

impl AriTime {
    pub fn parse(text: &str) -> Result<Self, chrono::ParseError> {
        DateTime::parse_from_str(text, FORMAT).map(AriTime)
    }

    pub fn to_utc(self) -> DateTime<Utc> {
        self.0.with_timezone(&Utc)
    }

    pub fn as_datetime(&self) -> &DateTime<FixedOffset> {
        &self.0
    }
}

impl fmt::Display for AriTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.3f%z"))
    }
}

impl<'de> Deserialize<'de> for AriTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        AriTime::parse(&text).map_err(|e| de::Error::custom(format!("bad Asterisk time {text:?}: {e}")))
    }
}

impl Serialize for AriTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    fn parses_asterisk_format_with_millis_and_compact_offset() {
        let t = AriTime::parse("2026-11-24T03:04:44.695+0000").unwrap();
        assert_eq!(
            t.to_utc(),
            Utc.with_ymd_and_hms(2026, 11, 24, 3, 4, 44).unwrap() + chrono::Duration::milliseconds(695)
        );
    }

    #[test]
    fn keeps_non_utc_offsets() {
        let t = AriTime::parse("2026-03-29T02:30:00.000+0300").unwrap();
        assert_eq!(t.as_datetime().offset().local_minus_utc(), 3 * 3600);
        assert_eq!(t.to_utc().hour(), 23);
    }

    #[test]
    fn parses_microseconds_and_no_fraction() {
        assert!(AriTime::parse("2026-11-24T03:04:44.123456+0000").is_ok());
        assert!(AriTime::parse("2026-11-24T03:04:44+0000").is_ok());
    }

    #[test]
    fn rejects_missing_offset_and_garbage() {
        assert!(AriTime::parse("2026-11-24T03:04:44.695").is_err());
        assert!(AriTime::parse("yesterday").is_err());
    }

    #[test]
    fn round_trips_through_serde() {
        let t: AriTime = serde_json::from_str("\"2026-11-24T03:04:44.695-0500\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"2026-11-24T03:04:44.695-0500\"");
    }
}
