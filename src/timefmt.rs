//! Times at the edges: every timestamp the tool reads or writes is RFC 3339 in UTC.
//!
//! Stored times use one fixed-width form (`2025-12-01T09:00:00Z`), so that SQL compares them as text in the right
//! order.

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};

/// Parses an RFC 3339 timestamp with any offset and converts it to UTC.
pub fn parse(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{s:?} is not an RFC 3339 timestamp (e.g. 2025-12-01T09:00:00Z)"))
}

/// The stored form: whole seconds, `Z`.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Milliseconds, for `created_at` and cycle start and end times, where ordering within a second matters.
pub fn format_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_converted_to_utc() {
        let t = parse("2025-12-01T10:00:00+01:00").unwrap();
        assert_eq!(format(t), "2025-12-01T09:00:00Z");
    }

    #[test]
    fn fractions_are_dropped_in_the_stored_form() {
        let t = parse("2025-12-01T09:00:00.750Z").unwrap();
        assert_eq!(format(t), "2025-12-01T09:00:00Z");
        assert_eq!(format_millis(t), "2025-12-01T09:00:00.750Z");
    }

    #[test]
    fn garbage_is_named_in_the_error() {
        let err = parse("yesterday").unwrap_err();
        assert!(format!("{err:#}").contains("\"yesterday\" is not an RFC 3339 timestamp"));
    }
}
