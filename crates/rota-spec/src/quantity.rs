//! Container resource quantities.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A CPU limit in millicores. Accepts a number of cores (`0.5`, `2`) or a string
/// (`"500m"`, `"1.5"`, `"2"`); serializes as `"<n>m"` or, for whole cores, `"<n>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuQuantity {
    millicores: u64,
}

impl CpuQuantity {
    /// From millicores.
    pub const fn from_millicores(millicores: u64) -> Self {
        CpuQuantity { millicores }
    }
    /// Millicores (1000 = one core).
    pub const fn millicores(&self) -> u64 {
        self.millicores
    }
    /// Cores as a float.
    pub fn cores(&self) -> f64 {
        self.millicores as f64 / 1000.0
    }

    fn from_cores(cores: f64) -> Result<Self, String> {
        if !cores.is_finite() || cores < 0.0 {
            return Err(format!("invalid cpu quantity {cores}: must be a positive number of cores"));
        }
        if cores > 1_000_000.0 {
            return Err(format!("cpu quantity {cores} is too large"));
        }
        let m = (cores * 1000.0).round();
        if (m - cores * 1000.0).abs() > 1e-6 {
            return Err(format!("cpu quantity {cores} is finer than a millicore"));
        }
        Ok(CpuQuantity { millicores: m as u64 })
    }

    /// Parses `"500m"`, `"1.5"`, `"2"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(m) = t.strip_suffix('m') {
            return m
                .parse::<u64>()
                .map(Self::from_millicores)
                .map_err(|_| format!("invalid cpu quantity {s:?}: expected e.g. \"500m\", \"1.5\" or 2"));
        }
        match t.parse::<f64>() {
            Ok(c) => Self::from_cores(c),
            Err(_) => Err(format!("invalid cpu quantity {s:?}: expected e.g. \"500m\", \"1.5\" or 2")),
        }
    }
}

impl fmt::Display for CpuQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millicores.is_multiple_of(1000) {
            write!(f, "{}", self.millicores / 1000)
        } else {
            write!(f, "{}m", self.millicores)
        }
    }
}

impl Serialize for CpuQuantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuQuantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CpuQuantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cpu quantity such as 0.5, 2 or \"500m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CpuQuantity, E> {
                CpuQuantity::parse(v).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<CpuQuantity, E> {
                CpuQuantity::from_cores(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CpuQuantity, E> {
                CpuQuantity::from_cores(v as f64).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CpuQuantity, E> {
                CpuQuantity::from_cores(v as f64).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for CpuQuantity {
    fn schema_name() -> Cow<'static, str> {
        "CpuQuantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "CPU cores as a number (0.5, 2) or a string (\"500m\", \"1.5\").",
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": "^([0-9]+m|[0-9]+(\\.[0-9]+)?)$"}
            ]
        })
    }
}

/// Parses a memory quantity into bytes: a plain integer, or an integer with one of the
/// suffixes `K`, `M`, `G`, `T` (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "invalid memory quantity {s:?}: expected an integer with an optional suffix K, M, G, T, Ki, Mi, Gi, Ti (e.g. \"256Mi\")"
        )
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match suffix {
        "" => 1,
        "K" | "k" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(|| format!("memory quantity {s:?} is too large"))?;
    if bytes == 0 {
        return Err(format!("memory quantity {s:?} must be greater than zero"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(CpuQuantity::parse("500m").unwrap().millicores(), 500);
        assert_eq!(CpuQuantity::parse("1.5").unwrap().millicores(), 1500);
        assert_eq!(CpuQuantity::parse("2").unwrap().to_string(), "2");
        assert_eq!(CpuQuantity::parse("250m").unwrap().to_string(), "250m");
        assert!(CpuQuantity::parse("lots").is_err());
        assert!(CpuQuantity::parse("-1").is_err());
        let c: CpuQuantity = serde_json::from_str("0.25").unwrap();
        assert_eq!(c.millicores(), 250);
        let c: CpuQuantity = serde_json::from_str("\"750m\"").unwrap();
        assert_eq!(c.cores(), 0.75);
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("256Mi").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        assert!(parse_memory("0").is_err());
        assert!(parse_memory("12Xi").is_err());
        assert!(parse_memory("Mi").is_err());
        assert!(parse_memory("").is_err());
    }
}
