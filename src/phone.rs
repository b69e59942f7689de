//! Phone numbers: everything obzvon stores or dials is E.164, normalised with libphonenumber's
//! rules (the `phonenumber` crate) from whatever a CRM or a CSV holds.

use std::fmt;
use std::str::FromStr;

use phonenumber::country::Id as Country;
use serde::{Deserialize, Serialize};

/// A valid number in E.164 form (`+79161234567`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("empty phone number")]
    Empty,
    #[error("{0:?} is not a phone number")]
    Unparseable(String),
    #[error("{0:?} is not a valid number for its region")]
    Invalid(String),
    #[error("unknown region {0:?}: use an ISO 3166 code such as RU, DE, US")]
    UnknownRegion(String),
}

/// An ISO 3166-1 alpha-2 region used for numbers written without a country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(Country);

impl Region {
    pub fn parse(code: &str) -> Result<Region, PhoneError> {
        Country::from_str(&code.trim().to_ascii_uppercase())
            .map(Region)
            .map_err(|_| PhoneError::UnknownRegion(code.to_owned()))
    }
}

impl PhoneNumber {
    /// Parses `raw` (any common notation), using `region` when it has no country code.
    pub fn parse(raw: &str, region: Option<Region>) -> Result<PhoneNumber, PhoneError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        // A number written with its own country code is read without the default region: the
        // parser would otherwise apply that region's trunk-prefix rules to a foreign number
        // (with RU, `+49 89 1234567` came out as another number).
        let region = if trimmed.starts_with('+') {
            None
        } else {
            region.map(|r| r.0)
        };
        let parsed = phonenumber::parse(region, trimmed).map_err(|_| PhoneError::Unparseable(trimmed.to_owned()))?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneError::Invalid(trimmed.to_owned()));
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        // E.164 allows at most 15 digits; the parser sometimes yields more.
        if !(8..=16).contains(&e164.len()) {
            return Err(PhoneError::Invalid(trimmed.to_owned()));
        }
        // What we store must read back as itself.
        match phonenumber::parse(None, &e164) {
            Ok(again) if phonenumber::is_valid(&again) => Ok(PhoneNumber(e164)),
            _ => Err(PhoneError::Invalid(trimmed.to_owned())),
        }
    }

    /// Trusts a value that is already E.164 (read back from the database).
    pub fn from_e164_unchecked(e164: String) -> PhoneNumber {
        PhoneNumber(e164)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For logs at info level: the last four digits hidden.
    pub fn masked(&self) -> String {
        let keep = self.0.len().saturating_sub(4);
        format!("{}****", &self.0[..keep])
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        PhoneNumber::parse(&raw, None).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ru() -> Option<Region> {
        Some(Region::parse("ru").unwrap())
    }

    #[test]
    fn national_and_international_notations_normalise_to_e164() {
        for raw in [
            "+7 916 123-45-67",
            "8 (916) 123-45-67",
            "+79161234567",
            "9161234567",
            " +7(916)1234567 ",
        ] {
            assert_eq!(PhoneNumber::parse(raw, ru()).unwrap().as_str(), "+79161234567", "{raw}");
        }
        let de = Some(Region::parse("DE").unwrap());
        assert_eq!(PhoneNumber::parse("030 123456", de).unwrap().as_str(), "+4930123456");
    }

    #[test]
    fn bad_numbers_are_rejected_with_a_reason() {
        assert_eq!(PhoneNumber::parse("  ", ru()), Err(PhoneError::Empty));
        assert!(matches!(
            PhoneNumber::parse("hello", ru()),
            Err(PhoneError::Unparseable(_))
        ));
        assert!(matches!(
            PhoneNumber::parse("+7 123", ru()),
            Err(PhoneError::Invalid(_) | PhoneError::Unparseable(_))
        ));
        // Without a region a national number cannot be placed.
        assert!(PhoneNumber::parse("9161234567", None).is_err());
        assert!(Region::parse("XX").is_err());
    }

    #[test]
    fn masking_hides_the_last_digits() {
        assert_eq!(
            PhoneNumber::parse("+79161234567", None).unwrap().masked(),
            "+7916123****"
        );
    }
}
