//! Points in time as the core sees them: microseconds since the Unix epoch, handed in by the
//! runtime's clock (the core never reads one).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A UTC instant with microsecond precision.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Time(i64);

impl Time {
    pub const fn from_micros(micros: i64) -> Time {
        Time(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub fn from_millis(millis: i64) -> Time {
        Time(millis.saturating_mul(1000))
    }

    /// `self + duration`, saturating.
    pub fn after(self, duration: Duration) -> Time {
        Time(self.0.saturating_add(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)))
    }

    /// How long from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// RFC 3339 with microseconds, e.g. `2026-11-25T17:00:00.000000Z`.
    pub fn rfc3339(self) -> String {
        match jiff::Timestamp::from_microsecond(self.0) {
            Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            Err(_) => format!("@{}us", self.0),
        }
    }

    /// Parses an RFC 3339 timestamp.
    pub fn parse(text: &str) -> Result<Time, String> {
        let ts: jiff::Timestamp = text
            .trim()
            .parse()
            .map_err(|e| format!("`{text}` is not an RFC 3339 timestamp: {e}"))?;
        Ok(Time(ts.as_microsecond()))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_microseconds_and_round_trips() {
        let t = Time::from_micros(1_764_090_000_123_456);
        assert_eq!(t.rfc3339(), "2025-11-25T17:00:00.123456Z");
        assert_eq!(Time::parse(&t.rfc3339()), Ok(t));
        assert_eq!(Time::parse("2025-11-25T18:00:00.123456+01:00"), Ok(t));
        assert!(Time::parse("yesterday").is_err());
    }
}
