//! Sinch (XMS REST API). Sinch gives no per-message id: a recipient's report is keyed by the batch id and the
//! number, so the poller asks with the submission's `carrier_batch_id` and `phone_number`.
//!
//! ```text
//! GET {base}/xms/v1/{service_plan_id}/batches/{batch_id}/delivery_report?type=full
//!   200 {"batch_id":"B1","statuses":[{"code":0,"status":"Delivered","count":1,"recipients":["+4915100000001"]}]}
//! GET {base}/xms/v1/{service_plan_id}/batches/{batch_id}/delivery_report/{recipient_msisdn}
//!   200 {"batch_id":"B1","recipient":"4915100000001","code":401,"status":"Dispatched","at":"2021-08-30T08:16:08.930Z"}
//! ```
//! Bearer authentication with the API token. Numbers may come with or without a leading `+`: they are matched
//! by their digits. A recipient of ours missing from a full batch report (Sinch lists recipients still in
//! progress, Queued or Dispatched, only in their recipient reports) is asked for by its recipient report; only
//! a 404 there records it as unknown to the carrier. Sinch sends a code and no text: the code's documented
//! meaning (its table) is the failure reason.

use std::collections::HashMap;

use serde::Deserialize;

use super::http::{Auth, Http};
use super::wire::{self, encode};
use super::{AccountRule, Bulk, FetchError, Listing, Profile, Provider, Report};
use crate::domain::DueMessage;

/// Codes that are not errors with the word they come with: queued, dispatched. With any other word (Sinch's own
/// fixtures have `Failed` with 400) the code is the carrier's and is kept. 0 is no error with any word.
const NOT_ERRORS: [(i64, &str); 2] = [(400, "Queued"), (401, "Dispatched")];

/// The provider's entry in the registry.
pub const PROVIDER: Provider = Provider {
    name: "sinch",
    account: Some(AccountRule {
        what: "service plan id",
        shape: "letters and digits (32 hex digits, usually)",
        valid: valid_account,
    }),
    default_url: Some("https://us.sms.api.sinch.com"),
    url_hint: "",
    pace: None,
    table: include_str!("tables/sinch.map"),
    profile: |account| Box::new(Sinch::new(account.unwrap_or_default())),
};

pub struct Sinch {
    plan: String,
}

pub fn valid_account(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Sinch {
    pub fn new(plan: String) -> Sinch {
        Sinch { plan }
    }

    fn report_path(&self, batch_id: &str) -> String {
        format!(
            "/xms/v1/{}/batches/{}/delivery_report",
            encode(&self.plan),
            encode(batch_id)
        )
    }
}

impl Profile for Sinch {
    fn name(&self) -> &'static str {
        PROVIDER.name
    }

    fn auth(&self) -> Auth {
        Auth::Bearer
    }

    fn unaskable(&self, message: &DueMessage) -> Option<String> {
        let missing = match (&message.batch_id, &message.phone_number) {
            (None, _) => "carrier_batch_id",
            (_, None) => "phone_number",
            _ => return None,
        };
        Some(format!(
            "its submission has no {missing}; Sinch reports only by batch id and recipient number"
        ))
    }

    fn bulk(
        &self,
        http: &Http,
        batch_id: Option<&str>,
        messages: &[&DueMessage],
    ) -> Result<Bulk, FetchError> {
        let Some(batch_id) = batch_id else {
            return Ok(Bulk::NotOffered);
        };
        let path = format!("{}?type=full", self.report_path(batch_id));
        let Some(report) = http.get(&path, parse_batch)? else {
            return Ok(Bulk::UnknownBatch);
        };
        let mut by_number: HashMap<String, Vec<&str>> = HashMap::new();
        for m in messages {
            if let Some(phone) = &m.phone_number {
                by_number
                    .entry(wire::digits(phone))
                    .or_default()
                    .push(&m.tracking_id);
            }
        }
        let mut listing = Listing {
            malformed: report.malformed,
            ..Listing::default()
        };
        for (at, recipient) in report.recipients {
            let Some(ids) = by_number.get(&wire::digits(&recipient)) else {
                continue;
            };
            let (status, code) = &report.statuses[at];
            for id in ids {
                listing.reports.push(report_of(id, status, *code, None));
            }
        }
        // A recipient the full report lacks (Sinch lists those still in progress only in their recipient
        // reports) is asked for by its recipient report.
        Ok(Bulk::Listed(listing))
    }

    fn one(&self, http: &Http, message: &DueMessage) -> Result<Option<Report>, FetchError> {
        let (Some(batch_id), Some(phone)) = (&message.batch_id, &message.phone_number) else {
            return Ok(None);
        };
        // The number as Sinch writes an MSISDN: its digits, after a `+` where the submission has one (a number
        // stored as `+49 151 1234 5678` is asked for as `+4915112345678`).
        let plus = if phone.trim_start().starts_with('+') {
            "+"
        } else {
            ""
        };
        let msisdn = format!("{plus}{}", wire::digits(phone));
        let path = format!("{}/{}", self.report_path(batch_id), encode(&msisdn));
        let Some(r) = http.get(&path, parse_recipient)? else {
            return Ok(None);
        };
        if wire::digits(&r.recipient) != wire::digits(phone) {
            return Err(FetchError::Refused {
                code: None,
                reason: format!("GET {path}: Sinch answered for another recipient"),
            });
        }
        Ok(Some(report_of(
            &message.tracking_id,
            &r.status,
            r.code,
            r.at.as_deref().and_then(wire::timestamp),
        )))
    }

    fn probe(&self, http: &Http) -> Result<(), FetchError> {
        http.probe_listing(&format!(
            "/xms/v1/{}/batches?page_size=1",
            encode(&self.plan)
        ))
    }
}

fn report_of(tracking_id: &str, status: &str, code: Option<i64>, at: Option<String>) -> Report {
    Report {
        tracking_id: tracking_id.to_string(),
        status: status.to_string(),
        error_code: code
            .filter(|&c| {
                c != 0
                    && !NOT_ERRORS
                        .iter()
                        .any(|&(n, word)| n == c && word.eq_ignore_ascii_case(status))
            })
            .map(|c| c.to_string()),
        status_updated_at: at,
        ..Report::default()
    }
}

#[derive(Deserialize)]
struct WireBatch {
    #[serde(default)]
    statuses: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireStatus {
    status: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    recipients: Vec<String>,
}

/// A full batch report: each status (its word and code) once, and each recipient with the index of its status
/// (a status is not copied per recipient: a report of many recipients under one long word stays the size of
/// the body).
pub struct BatchReport {
    pub statuses: Vec<(String, Option<i64>)>,
    pub recipients: Vec<(usize, String)>,
    pub malformed: Vec<String>,
}

pub fn parse_batch(body: &[u8]) -> Result<BatchReport, String> {
    let wire: WireBatch = wire::json(body)?;
    let mut report = BatchReport {
        statuses: Vec::new(),
        recipients: Vec::new(),
        malformed: Vec::new(),
    };
    for (i, status) in wire.statuses.into_iter().enumerate() {
        match serde_json::from_value::<WireStatus>(status) {
            Ok(s) => {
                let at = report.statuses.len();
                report.statuses.push((s.status, s.code));
                report
                    .recipients
                    .extend(s.recipients.into_iter().map(|r| (at, r)));
            }
            Err(e) => report.malformed.push(format!("status entry {i} ({e})")),
        }
    }
    Ok(report)
}

#[derive(Deserialize)]
pub struct RecipientReport {
    pub recipient: String,
    pub status: String,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub at: Option<String>,
}

pub fn parse_recipient(body: &[u8]) -> Result<RecipientReport, String> {
    wire::json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPIENT: &[u8] = include_bytes!("../../tests/fixtures/carriers/sinch.recipient.json");
    const SUMMARY: &[u8] = include_bytes!("../../tests/fixtures/carriers/sinch.batch.summary.json");
    const FULL: &[u8] = include_bytes!("../../tests/fixtures/carriers/sinch.batch.full.json");

    #[test]
    fn the_descriptions_recipient_example() {
        let r = parse_recipient(RECIPIENT).unwrap();
        assert_eq!((r.status.as_str(), r.code), ("Dispatched", Some(401)));
        assert_eq!(r.recipient, "+44231235674");
        let report = report_of(
            "T1",
            &r.status,
            r.code,
            r.at.as_deref().and_then(wire::timestamp),
        );
        assert_eq!(report.error_code, None, "401 is not an error");
        // With another word, the same code is the carrier's failure code, kept.
        let failed = report_of("T1", "Failed", Some(400), None);
        assert_eq!(failed.error_code.as_deref(), Some("400"));
        assert_eq!(report_of("T1", "Queued", Some(400), None).error_code, None);
        assert_eq!(report_of("T1", "Delivered", Some(0), None).error_code, None);
        assert_eq!(report_of("T1", "Unknown", Some(0), None).error_code, None);
        assert_eq!(
            report.status_updated_at.as_deref(),
            Some("2021-08-30T08:16:08Z")
        );
    }

    #[test]
    fn a_summary_report_names_no_recipients() {
        let report = parse_batch(SUMMARY).unwrap();
        assert!(report.recipients.is_empty());
        assert!(report.malformed.is_empty());
    }

    #[test]
    fn a_full_report_lists_each_recipient() {
        let report = parse_batch(FULL).unwrap();
        assert_eq!(report.recipients.len(), 4);
        let aborted = report
            .recipients
            .iter()
            .find(|(_, recipient)| recipient == "44231235676")
            .map(|(at, _)| &report.statuses[*at]);
        assert_eq!(aborted, Some(&("Aborted".to_string(), Some(402))));
        assert_eq!(
            report_of("T", "Aborted", Some(402), None)
                .error_code
                .as_deref(),
            Some("402")
        );
    }

    #[test]
    fn rows_without_batch_or_number_cannot_be_asked() {
        let s = Sinch::new("plan1".into());
        let mut m = DueMessage {
            tracking_id: "T1".into(),
            customer_id: None,
            phone_number: Some("+4915100000001".into()),
            batch_id: None,
            submitted_at: chrono::DateTime::UNIX_EPOCH,
            polls: 0,
            new: false,
        };
        assert!(s.unaskable(&m).unwrap().contains("carrier_batch_id"));
        m.batch_id = Some("B1".into());
        assert_eq!(s.unaskable(&m), None);
        m.phone_number = None;
        assert!(s.unaskable(&m).unwrap().contains("phone_number"));
        assert!(valid_account("jd63jf88477ll"));
        assert!(!valid_account("plan/../x"));
    }
}
