//! Human units in config.toml: durations ("250ms", "30s", "5m", "1h") and byte sizes ("64MB").
//!
//! Each unit has a parser, a formatter, and a serde module for `#[serde(with = "…")]`.
//! `humantime` and `bytesize` compute the values; this module keeps config.toml's narrower
//! spelling (a whole number and one of the units below, case-sensitive), its error texts, and
//! a formatter that writes one exact unit. Sizes use Postgres' convention: `kB` (and `KB`) is
//! 1024 bytes, `MB` 2^20 and `GB` 2^30.

use std::fmt;
use std::time::Duration;

use bytesize::ByteSize;
use serde::de::{self, Visitor};

/// What a duration must look like; part of every duration error.
const DURATION_EXPECTED: &str =
    "a duration: a whole number with a unit ms, s, m or h (e.g. \"250ms\", \"30s\", \"5m\", \"1h\")";

/// What a size must look like; part of every size error.
const SIZE_EXPECTED: &str =
    "a size: a whole number of bytes, optionally with a unit B, kB, KB, MB or GB (e.g. \"64MB\")";

/// Milliseconds per duration unit, largest first (the formatter picks the largest exact one).
/// humantime reads each of these spellings with the same meaning.
const DURATION_UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];

/// Each size unit with the IEC spelling under which bytesize reads its Postgres meaning: to
/// bytesize, "MB" is 10^6 bytes and units are case-insensitive.
const SIZE_UNITS: [(&str, &str); 5] = [
    ("B", "B"),
    ("kB", "KiB"),
    ("KB", "KiB"),
    ("MB", "MiB"),
    ("GB", "GiB"),
];

/// Bytes per unit the size formatter writes, largest first.
const SIZE_FORMATS: [(&str, u64); 3] = [
    ("GB", bytesize::GIB),
    ("MB", bytesize::MIB),
    ("kB", bytesize::KIB),
];

/// Why a duration or size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text does not start with a whole number.
    #[error("{text:?} does not start with a whole number; expected {expected}")]
    NoNumber {
        /// The rejected text.
        text: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// A duration without a unit: "30" could mean seconds or milliseconds.
    #[error("{text:?} has no unit; expected {expected}")]
    NoUnit {
        /// The rejected text.
        text: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The unit is not one of the allowed ones.
    #[error("{text:?} has an unknown unit {unit:?}; expected {expected}")]
    UnknownUnit {
        /// The rejected text.
        text: String,
        /// The unit as written.
        unit: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The value does not fit.
    #[error("{text:?} is too large")]
    Overflow {
        /// The rejected text.
        text: String,
    },
}

/// Parses a duration such as "250ms", "30s", "5m" or "1h"; a unit is required.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (_, unit) = split_number(text, DURATION_EXPECTED)?;
    if unit.is_empty() {
        return Err(UnitError::NoUnit {
            text: text.to_owned(),
            expected: DURATION_EXPECTED,
        });
    }
    known_unit(text, unit, &DURATION_UNITS, DURATION_EXPECTED)?;
    // Config durations have always been at most u64::MAX milliseconds.
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|duration| u64::try_from(duration.as_millis()).is_ok())
        .ok_or_else(|| overflow(text))
}

/// Formats a duration in the largest unit that represents it exactly ("10s", "250ms").
///
/// Sub-millisecond parts are dropped: config durations are whole milliseconds. Not
/// humantime's formatter: it writes "1m 30s" where config.toml has always read "90s".
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    largest_exact_unit(millis, &DURATION_UNITS)
        .map_or_else(|| format!("{millis}ms"), |(n, unit)| format!("{n}{unit}"))
}

/// Parses a size such as "64MB", "1kB" or "512" (bytes).
pub fn parse_size(text: &str) -> Result<usize, UnitError> {
    let (number, unit) = split_number(text, SIZE_EXPECTED)?;
    let iec = match unit {
        "" => "B",
        unit => known_unit(text, unit, &SIZE_UNITS, SIZE_EXPECTED)?,
    };
    let size: ByteSize = format!("{number} {iec}")
        .parse()
        .map_err(|_| overflow(text))?;
    // bytesize saturates a product past u64 instead of failing; u64::MAX is odd, so only a
    // plain number of bytes can really be it.
    Some(size.as_u64())
        .filter(|bytes| *bytes != u64::MAX || iec == "B")
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| overflow(text))
}

/// Formats a size with the largest unit that represents it exactly ("64MB"), else `None`
/// (the caller writes plain bytes).
pub fn format_size(bytes: usize) -> Option<String> {
    let bytes = u128::try_from(bytes).ok().filter(|b| *b != 0)?;
    largest_exact_unit(bytes, &SIZE_FORMATS).map(|(n, unit)| format!("{n}{unit}"))
}

/// Splits the leading ASCII digits from the (trimmed) rest, the unit.
///
/// The number must fit a u64: a longer one is too large whatever its unit, and the crates
/// would not say so (bytesize rounds it through an f64).
fn split_number<'a>(
    text: &'a str,
    expected: &'static str,
) -> Result<(&'a str, &'a str), UnitError> {
    let trimmed = text.trim();
    let end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(end);
    if digits.is_empty() {
        return Err(UnitError::NoNumber {
            text: text.to_owned(),
            expected,
        });
    }
    digits.parse::<u64>().map_err(|_| overflow(text))?;
    Ok((digits, unit.trim()))
}

/// Looks `unit` up in `units`: what it stands for, or an error naming it.
fn known_unit<T: Copy>(
    text: &str,
    unit: &str,
    units: &[(&str, T)],
    expected: &'static str,
) -> Result<T, UnitError> {
    let found = units.iter().find(|(name, _)| *name == unit);
    found
        .map(|(_, meaning)| *meaning)
        .ok_or_else(|| UnitError::UnknownUnit {
            text: text.to_owned(),
            unit: unit.to_owned(),
            expected,
        })
}

/// The error for a value too large to hold.
fn overflow(text: &str) -> UnitError {
    UnitError::Overflow {
        text: text.to_owned(),
    }
}

/// The first (largest) unit that divides `value` exactly, with the quotient.
fn largest_exact_unit(value: u128, units: &[(&'static str, u64)]) -> Option<(u128, &'static str)> {
    units
        .iter()
        .map(|(name, per)| (*name, u128::from(*per)))
        .find(|(_, per)| value.is_multiple_of(*per))
        .map(|(name, per)| (value / per, name))
}

/// Serde support for durations: `#[serde(with = "units::duration")]`.
pub mod duration {
    use super::{format_duration, DurationVisitor};
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    /// Writes the duration as a string with its largest exact unit.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*value))
    }

    /// Reads a duration string with a unit; integers and unit-less strings are rejected.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// Serde support for sizes: `#[serde(with = "units::size")]`.
pub mod size {
    use super::{format_size, SizeVisitor};
    use serde::{Deserializer, Serializer};

    /// Writes the size as "64MB" when a unit is exact, else as an integer number of bytes.
    pub fn serialize<S: Serializer>(value: &usize, serializer: S) -> Result<S::Ok, S::Error> {
        match format_size(*value) {
            Some(text) => serializer.serialize_str(&text),
            None => serializer.serialize_u64(u64::try_from(*value).unwrap_or(u64::MAX)),
        }
    }

    /// Reads a size string ("64MB", "512") or an integer number of bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Reads a duration from a string.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DURATION_EXPECTED)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_duration(text).map_err(E::custom)
    }
}

/// Reads a size from a string or a non-negative integer.
struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SIZE_EXPECTED)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<usize, E> {
        parse_size(text).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<usize, E> {
        usize::try_from(bytes).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(bytes), &self))
    }

    fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<usize, E> {
        usize::try_from(bytes).map_err(|_| E::invalid_value(de::Unexpected::Signed(bytes), &self))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_without_known_units_fail() {
        assert!(matches!(
            parse_duration("30"),
            Err(UnitError::NoUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5 parsecs"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1.5s"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(UnitError::NoNumber { .. })
        ));
        assert!(matches!(
            parse_duration("-1s"),
            Err(UnitError::NoNumber { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(UnitError::Overflow { .. })
        ));
        let message = parse_duration("30").map(|_| ()).unwrap_err().to_string();
        assert!(message.contains("ms, s, m or h"), "{message}");
    }

    #[test]
    fn durations_format_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("1kB"), Ok(1024));
        assert_eq!(parse_size("1KB"), Ok(1024));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(matches!(
            parse_size("1TB"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(parse_size("MB"), Err(UnitError::NoNumber { .. })));
    }

    #[test]
    fn sizes_format_with_an_exact_unit_or_not_at_all() {
        assert_eq!(format_size(64 << 20).as_deref(), Some("64MB"));
        assert_eq!(format_size(1 << 30).as_deref(), Some("1GB"));
        assert_eq!(format_size(3 << 10).as_deref(), Some("3kB"));
        assert_eq!(format_size(1000), None);
        assert_eq!(format_size(0), None);
    }
}
