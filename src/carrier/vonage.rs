//! Vonage (Reports API, product SMS). The tracking id is the message id the SMS API returned. The SMS API only
//! sends; the Reports API is the polling path, and it bills per record returned, so only due messages are asked
//! about, never a whole date range.
//!
//! ```text
//! GET {base}/v2/reports/records?account_id={api_key}&product=SMS&direction=outbound&id=ID1,ID2,…
//!   200 {"request_status":"SUCCESS","ids_not_found":"ID3","records":[{"message_id":"ID1","status":"delivered",
//!        "error_code":"0","error_code_description":"Delivered","date_finalized":"2019-06-28T15:30:00+0000"}]}
//! ```
//! Basic authentication with the API key and secret.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::http::{Auth, Http};
use super::wire::{self, encode, string_or_number};
use super::{AccountRule, Bulk, FetchError, Listing, Profile, Provider, Report};
use crate::domain::{DueMessage, LoneJobs};

/// Characters of ids per request (about a hundred message ids): a URL well inside what proxies accept. The
/// description sets no limit on the list; an older guide said 20 ids. A list Vonage refuses (400, 414) is asked
/// again in halves (see `Vonage::ask_in_halves`), and the length of halves it answers becomes the cycle's limit,
/// down to [`MIN_LIST_CHARS`].
const ID_CHARS: usize = 4_000;
/// Twenty message ids and their commas: the limit an older Vonage guide gave.
const MIN_LIST_CHARS: usize = 20 * 37;
/// The id `doctor` asks about (no record, so nothing is billed).
const PROBE_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The provider's entry in the registry.
pub const PROVIDER: Provider = Provider {
    name: "vonage",
    account: Some(AccountRule {
        what: "API key",
        shape: "8 letters or digits",
        valid: valid_account,
    }),
    default_url: Some("https://api.nexmo.com"),
    url_hint: "",
    // The Reports API allows about 10 requests a second.
    pace: Some(Duration::from_millis(110)),
    table: include_str!("tables/vonage.map"),
    profile: |account| Box::new(Vonage::new(account.unwrap_or_default())),
};

pub struct Vonage {
    api_key: String,
    /// Characters of ids per list in this cycle: [`ID_CHARS`], lowered when Vonage refuses a list.
    list_chars: AtomicUsize,
}

pub fn valid_account(id: &str) -> bool {
    id.len() == 8 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Vonage {
    pub fn new(api_key: String) -> Vonage {
        Vonage {
            api_key,
            list_chars: AtomicUsize::new(ID_CHARS),
        }
    }

    /// Asks for the records of `ids` into `listing`; where Vonage refuses the list (400, 414), asks for its
    /// halves, down to lists of [`MIN_LIST_CHARS`]: the ids of a shorter list refused are left to their own
    /// questions (one id Vonage cannot take, or a refusal that is not about the list). Returns whether every id
    /// was answered; a refused list whose halves both were answered was too long, and the cycle keeps to the
    /// halves' length from then on.
    fn ask_in_halves(
        &self,
        http: &Http,
        ids: &str,
        wanted: &HashSet<&str>,
        listing: &mut Listing,
    ) -> Result<bool, FetchError> {
        let records = match self.ask(http, ids) {
            Ok(records) => records,
            Err(FetchError::Refused {
                code: Some(code), ..
            }) if code == "HTTP 400" || code == "HTTP 414" => {
                let Some((a, b)) = halves(ids).filter(|_| ids.len() > MIN_LIST_CHARS) else {
                    return Ok(false);
                };
                let first = self.ask_in_halves(http, &a, wanted, listing)?;
                let second = self.ask_in_halves(http, &b, wanted, listing)?;
                if first && second {
                    self.fits(a.len().max(b.len()));
                }
                return Ok(first && second);
            }
            Err(e) => return Err(e),
        };
        listing.malformed.extend(records.malformed);
        listing.reports.extend(
            records
                .reports
                .into_iter()
                .filter(|r| wanted.contains(r.tracking_id.as_str())),
        );
        listing.not_found.extend(
            records
                .not_found
                .into_iter()
                .filter(|id| wanted.contains(id.as_str())),
        );
        Ok(true)
    }

    /// Lowers the cycle's list length to `chars`, that of the halves of a refused list that Vonage answered.
    fn fits(&self, chars: usize) {
        let chars = chars.max(MIN_LIST_CHARS);
        let was = self.list_chars.fetch_min(chars, Ordering::Relaxed);
        if chars < was {
            log::warn!(
                "Vonage refused a list of ids and answered one of {chars} characters: asking in lists of at most \
                 {chars} characters (about {} ids) for the rest of the cycle",
                chars / 37
            );
        }
    }

    pub fn records_path(&self, ids: &str) -> String {
        format!(
            "/v2/reports/records?account_id={}&product=SMS&direction=outbound&id={}",
            encode(&self.api_key),
            encode(ids)
        )
    }

    fn ask(&self, http: &Http, ids: &str) -> Result<Records, FetchError> {
        let path = self.records_path(ids);
        // A 404 is not an answer this API gives for unknown ids (they come in ids_not_found): treat it as
        // nothing known.
        Ok(http.get(&path, parse_records)?.unwrap_or_default())
    }
}

impl Profile for Vonage {
    fn name(&self) -> &'static str {
        PROVIDER.name
    }

    fn auth(&self) -> Auth {
        Auth::Basic {
            user: self.api_key.clone(),
        }
    }

    fn bulk(
        &self,
        http: &Http,
        _batch_id: Option<&str>,
        messages: &[&DueMessage],
    ) -> Result<Bulk, FetchError> {
        if messages.len() < 2 {
            return Ok(Bulk::NotOffered);
        }
        let wanted: HashSet<&str> = messages.iter().map(|m| m.tracking_id.as_str()).collect();
        let mut listing = Listing::default();
        let limit = self.list_chars.load(Ordering::Relaxed);
        for ids in wire::id_lists(messages.iter().map(|m| m.tracking_id.as_str()), limit) {
            // Each list's records are billed: those obtained are kept whatever becomes of the next list.
            if let Err(e) = self.ask_in_halves(http, &ids, &wanted, &mut listing) {
                return listing.cut_short(e);
            }
        }
        Ok(Bulk::Listed(listing))
    }

    fn one(&self, http: &Http, message: &DueMessage) -> Result<Option<Report>, FetchError> {
        let records = self.ask(http, &message.tracking_id)?;
        Ok(records
            .reports
            .into_iter()
            .find(|r| r.tracking_id == message.tracking_id))
    }

    fn probe(&self, http: &Http) -> Result<(), FetchError> {
        self.ask(http, PROBE_ID).map(|_| ())
    }

    fn lone_jobs(&self) -> LoneJobs {
        LoneJobs::of(100)
    }
}

/// The two halves of a comma-separated list of more than one id.
fn halves(ids: &str) -> Option<(String, String)> {
    let ids: Vec<&str> = ids.split(',').collect();
    (ids.len() > 1).then(|| {
        let (a, b) = ids.split_at(ids.len() / 2);
        (a.join(","), b.join(","))
    })
}

#[derive(Deserialize)]
struct WireRecords<'a> {
    #[serde(default)]
    request_status: Option<String>,
    #[serde(default)]
    ids_not_found: Option<String>,
    #[serde(default, borrow)]
    records: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireRecord {
    message_id: String,
    status: String,
    #[serde(default, deserialize_with = "string_or_number")]
    error_code: Option<String>,
    #[serde(default)]
    error_code_description: Option<String>,
    #[serde(default)]
    date_finalized: Option<String>,
    #[serde(default)]
    date_received: Option<String>,
}

impl From<WireRecord> for Report {
    fn from(r: WireRecord) -> Report {
        // Error code 0 is Vonage's "no error" (it comes with delivered records).
        let error = r.error_code.filter(|c| c.trim() != "0");
        Report {
            tracking_id: r.message_id,
            status: r.status,
            error_message: error.as_ref().and(r.error_code_description),
            error_code: error,
            status_updated_at: r
                .date_finalized
                .or(r.date_received)
                .as_deref()
                .and_then(wire::timestamp),
            ..Report::default()
        }
    }
}

/// One answer of the records endpoint.
#[derive(Debug, Default)]
pub struct Records {
    pub reports: Vec<Report>,
    pub not_found: Vec<String>,
    pub malformed: Vec<String>,
}

pub fn parse_records(body: &[u8]) -> Result<Records, String> {
    let wire: WireRecords = wire::json(body)?;
    // FAILED and ABORTED say the query did not run: asked again. Otherwise (SUCCESS, or a TRUNCATED list with
    // a cursor) the records that came are used; ids in neither list are asked for one by one.
    if let Some(status @ ("FAILED" | "ABORTED")) = wire.request_status.as_deref() {
        return Err(format!("request_status {status}"));
    }
    let (records, malformed) = wire::entries::<WireRecord>(&wire.records);
    Ok(Records {
        reports: records.into_iter().map(Report::from).collect(),
        not_found: wire
            .ids_not_found
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        malformed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDS: &[u8] = include_bytes!("../../tests/fixtures/carriers/vonage.records.json");

    #[test]
    fn a_refused_list_splits_into_halves_down_to_single_ids() {
        assert_eq!(halves("a,b,c"), Some(("a".to_string(), "b,c".to_string())));
        assert_eq!(halves("a,b"), Some(("a".to_string(), "b".to_string())));
        assert_eq!(halves("a"), None);
    }

    #[test]
    fn the_descriptions_records_example() {
        let records = parse_records(RECORDS).unwrap();
        assert_eq!(records.reports.len(), 1);
        let r = &records.reports[0];
        assert_eq!(
            (r.tracking_id.as_str(), r.status.as_str()),
            ("0000000A", "delivered")
        );
        assert_eq!(r.error_code, None, "code 0 is no error");
        assert_eq!(r.status_updated_at.as_deref(), Some("2019-06-28T15:30:00Z"));
        assert_eq!(records.not_found.len(), 2);
    }

    #[test]
    fn a_failed_record_keeps_its_code_and_text() {
        let body = br#"{"request_status":"SUCCESS","records":[{"message_id":"M1","status":"failed",
            "error_code":"3","error_code_description":"Absent Subscriber Permanent"},{"message_id":7}]}"#;
        let records = parse_records(body).unwrap();
        assert_eq!(records.reports[0].error_code.as_deref(), Some("3"));
        assert_eq!(
            records.reports[0].error_message.as_deref(),
            Some("Absent Subscriber Permanent")
        );
        assert_eq!(records.malformed.len(), 1);
    }

    #[test]
    fn a_query_that_did_not_run_is_not_an_answer() {
        assert!(parse_records(br#"{"request_status":"FAILED"}"#).is_err());
        assert!(parse_records(br#"{"request_status":"ABORTED","records":[]}"#).is_err());
        let pending = parse_records(br#"{"request_status":"PENDING","records":[]}"#).unwrap();
        assert!(pending.reports.is_empty());
    }

    #[test]
    fn the_query_is_as_described() {
        let v = Vonage::new("abcdef01".into());
        assert_eq!(
            v.records_path("a,b"),
            "/v2/reports/records?account_id=abcdef01&product=SMS&direction=outbound&id=a%2Cb"
        );
        assert!(valid_account("abcdef01"));
        assert!(!valid_account("abc"));
    }
}
