//! Human-readable durations: `500ms`, `10s`, `5m`, `1h`, `1d`, `1h30m`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Units accepted by [`Duration`], largest first, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// The regular expression published in the JSON Schema for durations.
pub const DURATION_PATTERN: &str = "^([0-9]+(d|h|m|s|ms|us|ns))+$";

/// A strictly positive span of time written as one or more `<integer><unit>` parts
/// in decreasing unit order, e.g. `500ms`, `10s`, `5m`, `1h`, `1d`, `1h30m`.
///
/// Units: `d` (24h), `h`, `m`, `s`, `ms`, `us`, `ns`. Zero, negative, empty and
/// fractional values are rejected. [`Display`](fmt::Display) gives the canonical
/// form (largest units first, zero parts omitted), which parses back to the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationParseError {
    /// The rejected input.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Duration {
    /// Wraps a std duration. Note that zero is representable here but rejected by
    /// parsing and by task validation.
    pub const fn new(d: std::time::Duration) -> Self {
        Duration(d)
    }
    /// `n` milliseconds.
    pub const fn from_millis(n: u64) -> Self {
        Duration(std::time::Duration::from_millis(n))
    }
    /// `n` seconds.
    pub const fn from_secs(n: u64) -> Self {
        Duration(std::time::Duration::from_secs(n))
    }
    /// `n` minutes.
    pub const fn from_mins(n: u64) -> Self {
        Duration(std::time::Duration::from_secs(n * 60))
    }
    /// `n` hours.
    pub const fn from_hours(n: u64) -> Self {
        Duration(std::time::Duration::from_secs(n * 3600))
    }
    /// The wrapped std duration.
    pub const fn as_std(&self) -> std::time::Duration {
        self.0
    }
    /// Total nanoseconds.
    pub const fn as_nanos(&self) -> u128 {
        self.0.as_nanos()
    }
    /// `true` for a zero length duration (never produced by parsing).
    pub const fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
    /// As a chrono duration (saturating at chrono's range).
    pub fn to_chrono(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.0).unwrap_or(chrono::TimeDelta::MAX)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| DurationParseError { input: input.to_string(), reason };
        let s = input.trim();
        if s.is_empty() {
            return Err(err(
                "empty duration; expected e.g. \"500ms\", \"10s\", \"5m\", \"1h\", \"1d\" or \"1h30m\"".into()
            ));
        }
        if s.starts_with('-') {
            return Err(err("negative durations are not allowed".into()));
        }
        if s.contains(char::is_whitespace) {
            return Err(err("must not contain spaces (write e.g. \"1h30m\")".into()));
        }
        let bytes = s.as_bytes();
        let mut pos = 0;
        let mut total: u128 = 0;
        let mut last_unit_idx: Option<usize> = None;
        while pos < bytes.len() {
            let start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            if start == pos {
                return Err(err(format!(
                    "expected a number at position {}; use <integer><unit> parts such as \"1h30m\"",
                    start + 1
                )));
            }
            let digits = &s[start..pos];
            let unit_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
                pos += 1;
            }
            let unit = &s[unit_start..pos];
            if unit.is_empty() {
                let reason = if pos < bytes.len() && bytes[pos] == b'.' {
                    "fractional values are not allowed; use a smaller unit (e.g. \"1500ms\")".to_string()
                } else {
                    format!("missing unit after {digits:?}; units are d, h, m, s, ms, us, ns")
                };
                return Err(err(reason));
            }
            let Some(idx) = UNITS.iter().position(|(u, _)| *u == unit) else {
                return Err(err(format!("unknown unit {unit:?}; units are d, h, m, s, ms, us, ns")));
            };
            if let Some(last) = last_unit_idx
                && idx <= last
            {
                return Err(err("units must appear at most once, largest first (e.g. \"1h30m\")".into()));
            }
            last_unit_idx = Some(idx);
            let value: u128 = digits.parse().map_err(|_| err("number too large".into()))?;
            total = value
                .checked_mul(UNITS[idx].1)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("duration too large".into()))?;
        }
        if total == 0 {
            return Err(err("must be greater than zero".into()));
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err("duration too large".into()))?;
        // Keep every duration representable as a chrono TimeDelta (about 292 billion years).
        if secs > i64::MAX as u64 / 1000 {
            return Err(err("duration too large".into()));
        }
        let nanos = (total % 1_000_000_000) as u32;
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_nanos();
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in UNITS {
            let n = rest / len;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                rest -= n * len;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"10s\", \"5m\", \"1h\" or \"1h30m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A positive duration: one or more <integer><unit> parts, largest unit first. Units: d, h, m, s, ms, us, ns. Examples: 500ms, 10s, 5m, 1h, 1d, 1h30m.",
            "examples": ["500ms", "10s", "1h30m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Duration, DurationParseError> {
        s.parse()
    }

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(p("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(p("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(p("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(p("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(p("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(p("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(p("1d2h3m4s5ms").unwrap().as_nanos(), 93_784_005_000_000);
        assert_eq!(p("90s").unwrap().to_string(), "1m30s");
        assert_eq!(p("1500ms").unwrap().to_string(), "1s500ms");
        assert_eq!(p("7ns").unwrap().to_string(), "7ns");
    }

    #[test]
    fn rejects_bad_input_with_reason() {
        for (input, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("0s", "greater than zero"),
            ("0h0m", "greater than zero"),
            ("-5s", "negative"),
            ("5", "missing unit"),
            ("1.5s", "fractional"),
            ("5w", "unknown unit \"w\""),
            ("5 s", "spaces"),
            ("s", "expected a number"),
            ("abc", "expected a number"),
            ("30m1h", "largest first"),
            ("1s1s", "largest first"),
            ("99999999999999999999999999999999999999999d", "too large"),
        ] {
            let e = p(input).unwrap_err();
            assert!(e.to_string().contains(needle), "{input:?}: {e} should mention {needle:?}");
        }
    }

    #[test]
    fn serde_is_a_string() {
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        assert!(serde_json::from_str::<Duration>("30").is_err());
        assert!(serde_json::from_str::<Duration>("\"0s\"").is_err());
    }
}
