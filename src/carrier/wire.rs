//! What the profiles share in reading and writing the wire: escaping, lenient JSON fields, the providers'
//! timestamp forms, phone number matching, and following a paged listing.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use super::FetchError;
pub use crate::percent::encode;
use crate::timefmt;

/// A listing longer than this many pages is treated as an endless paging chain.
pub const MAX_PAGES: usize = 1_000;

/// Parses a JSON body, with the parser's message as the error.
pub fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// A field that carriers send as a string or as a number (error codes).
pub fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Code {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(Option::<Code>::deserialize(d)?.map(|c| match c {
        Code::Text(s) => s,
        Code::Number(n) => n.to_string(),
    }))
}

/// The first `max` characters of `s`.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// Reads a provider's timestamp into the schema's UTC form: RFC 3339, RFC 2822 (Twilio), or ISO 8601 with a
/// `+0000` offset and optional fractions (Vonage, Infobip). `None` for anything else, and for a time outside
/// the years 0000 to 9999 in UTC (the carrier's word is kept; only the time is left out).
pub fn timestamp(s: &str) -> Option<String> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_rfc2822(s))
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| timefmt::representable(*t))
        .map(timefmt::format)
}

/// The digits of a phone number, for matching a carrier's form of it (`+4915...`, `4915...`) to the
/// submission's.
pub fn digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

/// Reads a listing's entries one by one, so that one bad entry costs only itself: the entries that parse, and a
/// description of each that does not.
pub fn entries<'a, T: Deserialize<'a>>(
    raw: &[&'a serde_json::value::RawValue],
) -> (Vec<T>, Vec<String>) {
    let mut good = Vec::with_capacity(raw.len());
    let mut bad = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        match serde_json::from_str::<T>(entry.get()) {
            Ok(value) => good.push(value),
            Err(e) => bad.push(format!("entry {i} ({e}): {}", truncate(entry.get(), 120))),
        }
    }
    (good, bad)
}

/// One page of a listing: its entries and where the next page is.
pub struct Page<T> {
    pub entries: Vec<T>,
    pub next: Option<String>,
}

/// Follows a paged listing from `first` until a page without a next one, handing each page's entries to
/// `take` (which returns false to stop early). `fetch` asks for one page by its token (a path, a cursor; the
/// first may be empty); `None` from it is a 404. A listing that loops, pages
/// past [`MAX_PAGES`] or loses a later page is unusable. Returns false when the first page was a 404.
pub fn follow<T>(
    what: &str,
    first: String,
    mut fetch: impl FnMut(&str) -> Result<Option<Page<T>>, FetchError>,
    mut take: impl FnMut(Vec<T>) -> bool,
) -> Result<bool, FetchError> {
    let mut seen = HashSet::from([first.clone()]);
    let mut at = first;
    for number in 1..=MAX_PAGES {
        let page = match fetch(&at)? {
            Some(page) => page,
            None if number == 1 => return Ok(false),
            None => {
                return Err(FetchError::Unusable {
                    reason: format!("{what}: page {number} answered 404"),
                });
            }
        };
        if !take(page.entries) {
            return Ok(true);
        }
        match page.next {
            None => return Ok(true),
            Some(next) if !seen.insert(next.clone()) => {
                return Err(FetchError::Unusable {
                    reason: format!("{what}: paging loops (page token {next:?} came back)"),
                });
            }
            Some(next) => at = next,
        }
    }
    Err(FetchError::Unusable {
        reason: format!("{what}: more than {MAX_PAGES} pages; giving up on the listing"),
    })
}

/// Splits values into comma-separated lists of at most `max_chars` characters each (at least one value per
/// list), for query parameters that take many ids.
pub fn id_lists<'a>(ids: impl IntoIterator<Item = &'a str>, max_chars: usize) -> Vec<String> {
    let mut lists: Vec<String> = Vec::new();
    let mut current = String::new();
    for id in ids {
        if !current.is_empty() && current.len() + 1 + id.len() > max_chars {
            lists.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(id);
    }
    if !current.is_empty() {
        lists.push(current);
    }
    lists
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_timestamps() {
        for (raw, expected) in [
            ("2025-12-01T09:03:12Z", Some("2025-12-01T09:03:12Z")),
            (
                "Fri, 24 May 2019 17:18:28 +0000",
                Some("2019-05-24T17:18:28Z"),
            ),
            ("2019-06-28T15:30:00+0000", Some("2019-06-28T15:30:00Z")),
            ("2019-11-09T16:00:00.000+0100", Some("2019-11-09T15:00:00Z")),
            ("2021-08-30T08:16:08.930Z", Some("2021-08-30T08:16:08Z")),
            ("yesterday", None),
            ("", None),
        ] {
            assert_eq!(timestamp(raw).as_deref(), expected, "{raw:?}");
        }
    }

    #[test]
    fn id_lists_stay_under_the_limit() {
        let ids: Vec<String> = (0..100).map(|i| format!("id-{i:04}")).collect();
        let lists = id_lists(ids.iter().map(String::as_str), 50);
        assert!(lists.iter().all(|l| l.len() <= 50), "{lists:?}");
        let joined: Vec<&str> = lists.iter().flat_map(|l| l.split(',')).collect();
        assert_eq!(joined, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(id_lists(["a-very-long-id"], 5), ["a-very-long-id"]);
        assert!(id_lists([], 5).is_empty());
    }

    #[test]
    fn follow_stops_loops_and_lost_pages() {
        let pages = |at: &str| -> Result<Option<Page<u32>>, FetchError> {
            Ok(match at {
                "1" => Some(Page {
                    entries: vec![1],
                    next: Some("2".into()),
                }),
                "2" => Some(Page {
                    entries: vec![2],
                    next: Some("1".into()),
                }),
                "3" => Some(Page {
                    entries: vec![3],
                    next: Some("4".into()),
                }),
                _ => None,
            })
        };
        let mut got = Vec::new();
        let err = follow("L", "1".into(), pages, |e| {
            got.extend(e);
            true
        })
        .unwrap_err();
        assert!(err.to_string().contains("paging loops"), "{err}");
        assert_eq!(got, [1, 2]);
        let err = follow("L", "3".into(), pages, |_| true).unwrap_err();
        assert!(err.to_string().contains("page 2 answered 404"), "{err}");
        assert_eq!(follow("L", "9".into(), pages, |_| true), Ok(false));
    }
}
