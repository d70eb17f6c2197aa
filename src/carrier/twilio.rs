//! Twilio (REST API 2010-04-01, Messages). The tracking id is the Message SID (`SM` + 32 hex digits).
//!
//! ```text
//! GET {base}/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json
//! GET {base}/2010-04-01/Accounts/{AccountSid}/Messages.json?PageSize=1000&DateSent>=…&DateSent<=…
//!     then next_page_uri until it is null
//! ```
//! Basic authentication with the Account SID and auth token, or with an API key: a token `SK…:secret`.
//!
//! Twilio has no batch ids: a job whose submissions lie within [`MAX_SPAN`] of each other (one send) is listed
//! by the `DateSent` window around them, 1,000 per page, and only the messages the listing lacks are asked for
//! one by one. The listing also holds the account's other traffic of that window; it is skipped, and a listing
//! that runs past a few pages per thousand messages asked about is given up for one-by-one lookups.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::{Auth, Http};
use super::wire::{self, Page, encode, string_or_number};
use super::{Bulk, FetchError, Listing, Profile, Report};
use crate::store::DueMessage;
use crate::timefmt;

/// Submissions further apart than this are not one send: listing the window between them would read the
/// account's whole traffic of that time.
pub const MAX_SPAN: TimeDelta = TimeDelta::minutes(30);
/// How long before its submission a message may count as sent (clocks apart).
const BEFORE: TimeDelta = TimeDelta::minutes(1);
/// How long after its submission a message may still be sent (Twilio's queue).
const AFTER: TimeDelta = TimeDelta::minutes(10);
const PAGE_SIZE: usize = 1_000;

pub struct Twilio {
    account: String,
}

pub fn valid_account(id: &str) -> bool {
    sid(id, "AC")
}

fn sid(id: &str, prefix: &str) -> bool {
    id.len() == 34 && id.starts_with(prefix) && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl Twilio {
    pub fn new(account: String) -> Twilio {
        Twilio { account }
    }

    fn messages(&self) -> String {
        format!("/2010-04-01/Accounts/{}/Messages", encode(&self.account))
    }

    /// The first page of the listing of messages sent between `from` and `to`.
    pub fn list_path(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
        format!(
            "{}.json?PageSize={PAGE_SIZE}&{}={}&{}={}",
            self.messages(),
            encode("DateSent>"),
            encode(&timefmt::format(from)),
            encode("DateSent<"),
            encode(&timefmt::format(to)),
        )
    }
}

impl Profile for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn auth(&self) -> Auth {
        Auth::Basic {
            user: self.account.clone(),
        }
    }

    fn unaskable(&self, message: &DueMessage) -> Option<String> {
        let id = &message.tracking_id;
        (!(sid(id, "SM") || sid(id, "MM"))).then(|| {
            format!("tracking id {id:?} is not a Twilio Message SID (SM or MM followed by 32 hex digits)")
        })
    }

    fn bulk(
        &self,
        http: &Http,
        _batch_id: Option<&str>,
        messages: &[&DueMessage],
    ) -> Result<Bulk, FetchError> {
        let (Some(first), Some(last)) = (
            messages.iter().map(|m| m.submitted_at).min(),
            messages.iter().map(|m| m.submitted_at).max(),
        ) else {
            return Ok(Bulk::NotOffered);
        };
        if messages.len() < 2 || last - first > MAX_SPAN {
            return Ok(Bulk::NotOffered);
        }
        let wanted: HashMap<&str, ()> = messages
            .iter()
            .map(|m| (m.tracking_id.as_str(), ()))
            .collect();
        let budget = messages.len().div_ceil(PAGE_SIZE) * 2 + 2;
        let mut listing = Listing::default();
        let mut pages = 0;
        let what = format!(
            "messages sent {} to {}",
            timefmt::format(first - BEFORE),
            timefmt::format(last + AFTER)
        );
        wire::follow(
            &what,
            self.list_path(first - BEFORE, last + AFTER),
            |path| {
                let page = http.get(path, parse_list)?;
                Ok(page.map(|page| {
                    listing.malformed.extend(page.malformed);
                    Page {
                        entries: page.messages,
                        next: page.next_page_uri,
                    }
                }))
            },
            |reports| {
                pages += 1;
                listing.reports.extend(
                    reports
                        .into_iter()
                        .filter(|r| wanted.contains_key(r.tracking_id.as_str())),
                );
                if pages >= budget && listing.reports.len() < messages.len() {
                    log::debug!(
                        "{what}: {pages} pages held {} of the {} messages asked about; the rest are asked for one \
                         by one",
                        listing.reports.len(),
                        messages.len()
                    );
                    return false;
                }
                true
            },
        )?;
        Ok(Bulk::Listed(listing))
    }

    fn one(&self, http: &Http, message: &DueMessage) -> Result<Option<Report>, FetchError> {
        let path = format!("{}/{}.json", self.messages(), encode(&message.tracking_id));
        match http.get(&path, parse_message)? {
            Some(r) if r.tracking_id != message.tracking_id => Err(FetchError::Refused {
                code: None,
                reason: format!("GET {path}: Twilio answered for SID {:?}", r.tracking_id),
            }),
            other => Ok(other),
        }
    }

    fn probe(&self, http: &Http) -> Result<(), FetchError> {
        http.get(&format!("{}.json?PageSize=1", self.messages()), |_| Ok(()))
            .map(|_| ())
    }
}

/// A Message resource, the fields the poller reads.
#[derive(Deserialize)]
struct WireMessage {
    sid: String,
    status: String,
    #[serde(default, deserialize_with = "string_or_number")]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    date_updated: Option<String>,
}

impl From<WireMessage> for Report {
    fn from(m: WireMessage) -> Report {
        Report {
            tracking_id: m.sid,
            status: m.status,
            error_code: m.error_code,
            error_message: m.error_message,
            status_updated_at: m.date_updated.as_deref().and_then(wire::timestamp),
            ..Report::default()
        }
    }
}

#[derive(Deserialize)]
struct WireList<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

/// One page of the Messages listing.
pub struct ListPage {
    pub messages: Vec<Report>,
    pub malformed: Vec<String>,
    /// The next page's path (Twilio gives it from the API root: `/2010-04-01/...`).
    pub next_page_uri: Option<String>,
}

pub fn parse_list(body: &[u8]) -> Result<ListPage, String> {
    let list: WireList = wire::json(body)?;
    let next = match list.next_page_uri.filter(|u| !u.is_empty()) {
        Some(uri) if !uri.starts_with('/') || uri.starts_with("//") => {
            return Err(format!(
                "next_page_uri {uri:?} is not a path on the API host; it is not followed"
            ));
        }
        other => other,
    };
    let (messages, malformed) = wire::entries::<WireMessage>(&list.messages);
    Ok(ListPage {
        messages: messages.into_iter().map(Report::from).collect(),
        malformed,
        next_page_uri: next,
    })
}

pub fn parse_message(body: &[u8]) -> Result<Report, String> {
    wire::json::<WireMessage>(body).map(Report::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FETCH: &[u8] = include_bytes!("../../tests/fixtures/carriers/twilio.message.json");
    const LIST: &[u8] = include_bytes!("../../tests/fixtures/carriers/twilio.list.json");

    #[test]
    fn the_descriptions_message_example() {
        let report = parse_message(FETCH).unwrap();
        assert_eq!(report.status, "sent");
        assert_eq!(report.error_code.as_deref(), Some("30007"));
        assert_eq!(report.error_message.as_deref(), Some("Carrier violation"));
        assert_eq!(
            report.status_updated_at.as_deref(),
            Some("2019-05-24T17:18:28Z")
        );
        assert!(sid(&report.tracking_id, "SM"), "{}", report.tracking_id);
    }

    #[test]
    fn the_descriptions_list_example() {
        let page = parse_list(LIST).unwrap();
        assert!(!page.messages.is_empty());
        assert!(page.malformed.is_empty());
        assert!(page.messages.iter().all(|r| !r.status.is_empty()));
    }

    #[test]
    fn next_page_uri_must_stay_on_the_api_host() {
        for uri in [
            "https://elsewhere.example/x",
            "//elsewhere.example/x",
            "relative",
        ] {
            let body = serde_json::json!({ "messages": [], "next_page_uri": uri }).to_string();
            assert!(parse_list(body.as_bytes()).is_err(), "{uri}");
        }
        let body =
            r#"{"messages":[],"next_page_uri":"/2010-04-01/Accounts/AC1/Messages.json?Page=1"}"#;
        assert!(parse_list(body.as_bytes()).unwrap().next_page_uri.is_some());
    }

    #[test]
    fn list_path_escapes_the_filters() {
        let t = Twilio::new(format!("AC{}", "a".repeat(32)));
        let from = timefmt::parse("2026-11-26T08:00:00Z").unwrap();
        assert_eq!(
            t.list_path(from, from + TimeDelta::hours(1)),
            format!(
                "/2010-04-01/Accounts/AC{}/Messages.json?PageSize=1000&DateSent%3E=2026-11-26T08%3A00%3A00Z&\
                 DateSent%3C=2026-11-26T09%3A00%3A00Z",
                "a".repeat(32)
            )
        );
    }

    #[test]
    fn sids_are_checked() {
        assert!(valid_account(&format!(
            "AC{}",
            "0123456789abcdef".repeat(2)
        )));
        assert!(!valid_account("AC123"));
        assert!(!valid_account(&format!("SK{}", "0".repeat(32))));
        assert!(sid(&format!("MM{}", "F".repeat(32)), "MM"));
    }
}
