//! Times at the edges: every timestamp the tool reads or writes is RFC 3339 in UTC.
//!
//! Stored times use one fixed-width form (`2025-12-01T09:00:00Z`), so that SQL compares them as text in the right
//! order.

use anyhow::{Context, Result};
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use std::time::Duration;

/// Parses an RFC 3339 timestamp with any offset and converts it to UTC.
pub fn parse(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{s:?} is not an RFC 3339 timestamp (e.g. 2025-12-01T09:00:00Z)"))
        .and_then(|t| in_range(t, s))
}

/// Whether `t` has the stored form: a year from 0000 to 9999 in UTC. `9999-12-31T23:59:59-01:00` does not (it is
/// in year 10000 in UTC, `+10000-...`, which sorts before every other time as text).
pub fn representable(t: DateTime<Utc>) -> bool {
    (0..=9999).contains(&t.year())
}

fn in_range(t: DateTime<Utc>, s: &str) -> Result<DateTime<Utc>> {
    if representable(t) {
        Ok(t)
    } else {
        anyhow::bail!("{s:?} is outside the years 0000 to 9999 in UTC")
    }
}

/// Parses a submission time from the dispatcher's table: RFC 3339; PostgreSQL's ISO output of a `timestamptz`
/// (`2025-12-01 09:00:00+00`, fractions and any offset allowed); or without an offset, SQLite's own
/// `CURRENT_TIMESTAMP` / `datetime('now')` form and PostgreSQL's `timestamp` (`2025-12-01 09:00:00`), read as
/// UTC. A dispatcher that fills `submitted_at` with a column default writes one of the latter.
pub fn parse_submitted(s: &str) -> Result<DateTime<Utc>> {
    // Tried without building an error for each form that does not match: this runs for every row of a window.
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").map(|t| t.and_utc())
        })
        .map_or_else(|_| parse(s), |t| in_range(t, s))
}

/// The stored form: whole seconds, `Z`.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Milliseconds, for `created_at` and cycle start and end times, where ordering within a second matters.
pub fn format_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Formats a duration the way it is typed on the command line.
pub fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{h}h{m}m"),
        _ => format!("{s}s"),
    }
}

/// An age for people: whole minutes from an hour up (`2h5m`), whole seconds below (`42s`, `5m7s`).
pub fn humanize_rounded(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_typed_and_ages_for_people() {
        assert_eq!(humanize(Duration::from_secs(840)), "14m");
        assert_eq!(humanize(Duration::from_secs(5400)), "1h30m");
        assert_eq!(humanize(Duration::from_millis(100)), "100ms");
        assert_eq!(humanize(Duration::from_secs(86400)), "24h");
        assert_eq!(humanize_rounded(Duration::from_secs(7523)), "2h5m");
        assert_eq!(humanize_rounded(Duration::from_secs(307)), "5m7s");
        assert_eq!(humanize_rounded(Duration::from_secs(42)), "42s");
        assert_eq!(humanize_rounded(Duration::from_secs(7200)), "2h");
    }

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
    fn submission_times_may_be_in_postgresqls_iso_form() {
        let t = parse_submitted("2025-12-01 10:00:00+01").unwrap();
        assert_eq!(format(t), "2025-12-01T09:00:00Z");
        let t = parse_submitted("2025-12-01 09:00:00.123456+00").unwrap();
        assert_eq!(format_millis(t), "2025-12-01T09:00:00.123Z");
        let t = parse_submitted("2025-12-01 09:00:00+05:30").unwrap();
        assert_eq!(format(t), "2025-12-01T03:30:00Z");
    }

    #[test]
    fn submission_times_may_be_in_sqlites_own_utc_form() {
        let t = parse_submitted("2025-12-01 09:00:00").unwrap();
        assert_eq!(format(t), "2025-12-01T09:00:00Z");
        let t = parse_submitted("2025-12-01 09:00:00.250").unwrap();
        assert_eq!(format_millis(t), "2025-12-01T09:00:00.250Z");
        assert_eq!(
            format(parse_submitted("2025-12-01T10:00:00+01:00").unwrap()),
            "2025-12-01T09:00:00Z"
        );
        // Without a date and time, it is still an error that names the value, as RFC 3339 expects.
        let err = parse_submitted("2025-12-01").unwrap_err();
        assert!(format!("{err:#}").contains("\"2025-12-01\" is not an RFC 3339 timestamp"));
        assert!(
            parse("2025-12-01 09:00:00").is_err(),
            "--now stays RFC 3339"
        );
    }

    #[test]
    fn times_outside_the_stored_form_are_errors() {
        for s in [
            "9999-12-31T23:59:59-01:00",
            "0000-01-01T00:00:00+01:00",
            "+10000-01-01 00:00:00",
            "-0001-01-01 00:00:00",
        ] {
            let err = parse_submitted(s).map_err(|e| format!("{e:#}"));
            assert!(
                err.as_ref().is_err_and(
                    |e| e.contains("outside the years") || e.contains("is not an RFC 3339")
                ),
                "{s}: {err:?}"
            );
        }
        assert!(parse("9999-12-31T23:59:59-01:00").is_err());
        assert_eq!(
            format(parse("9999-12-31T23:59:59Z").unwrap()),
            "9999-12-31T23:59:59Z"
        );
    }

    #[test]
    fn garbage_is_named_in_the_error() {
        let err = parse("yesterday").unwrap_err();
        assert!(format!("{err:#}").contains("\"yesterday\" is not an RFC 3339 timestamp"));
    }
}
