//! The "generic" carrier profile: paths and JSON bodies of the delivery-status API.
//!
//! ```text
//! GET {base}/batches/{batch_id}/messages[?page_token=T]
//!   200 {"batch_id":"B1","messages":[{"tracking_id":"T1","status":"DELIVERED","error_code":null,
//!        "error_message":null,"status_updated_at":"2025-12-01T09:03:12Z"}],"next_page_token":null}
//! GET {base}/messages/{tracking_id}
//!   200 {"tracking_id":"T1","status":"QUEUED","error_code":null,"error_message":null,"status_updated_at":null}
//! ```
//! Unknown fields are ignored; `error_code` may be a string or a number.

use serde::Deserialize;

use super::http::{Auth, Http};
use super::wire::{self, Page, encode, string_or_number};
use super::{Bulk, FetchError, Listing, Profile, Provider, Report};
use crate::domain::DueMessage;

/// The provider's entry in the registry.
pub const PROVIDER: Provider = Provider {
    name: "generic",
    account: None,
    default_url: None,
    url_hint: "",
    pace: None,
    table: include_str!("tables/generic.map"),
    profile: |_account| Box::new(Generic),
};

/// The generic profile: Bearer token, batch listings by page token, lookups by tracking id.
pub struct Generic;

/// The tracking id `doctor` asks about: any answer but 401/403 shows the credentials work.
const PROBE_ID: &str = "dlr-poller-doctor-probe";

impl Profile for Generic {
    fn name(&self) -> &'static str {
        PROVIDER.name
    }

    fn auth(&self) -> Auth {
        Auth::Bearer
    }

    fn bulk(
        &self,
        http: &Http,
        batch_id: Option<&str>,
        _messages: &[&DueMessage],
    ) -> Result<Bulk, FetchError> {
        let Some(batch_id) = batch_id else {
            return Ok(Bulk::NotOffered);
        };
        let mut listing = Listing::default();
        let followed = wire::follow(
            &format!("batch {batch_id:?}"),
            String::new(),
            |token| {
                let path = batch_path(batch_id, Some(token).filter(|t| !t.is_empty()));
                Ok(http.get(&path, parse_batch_page)?.map(|page| {
                    listing.malformed.extend(page.malformed);
                    Page {
                        entries: page.messages,
                        next: page.next_page_token,
                    }
                }))
            },
            |reports| {
                listing.reports.extend(reports);
                true
            },
        );
        let found = match followed {
            Ok(found) => found,
            // The pages read before the failure stand.
            Err(e) => return listing.cut_short(e),
        };
        Ok(if found {
            Bulk::Listed(listing)
        } else {
            Bulk::UnknownBatch
        })
    }

    fn one(&self, http: &Http, message: &DueMessage) -> Result<Option<Report>, FetchError> {
        let path = message_path(&message.tracking_id);
        match http.get(&path, parse_message)? {
            Some(r) if r.tracking_id != message.tracking_id => Err(FetchError::Refused {
                code: None,
                reason: format!(
                    "GET {path}: carrier answered for tracking id {:?}",
                    r.tracking_id
                ),
            }),
            other => Ok(other),
        }
    }

    fn probe(&self, http: &Http) -> Result<(), FetchError> {
        http.get(&message_path(PROBE_ID), |_| Ok(())).map(|_| ())
    }
}

/// One page of a batch listing.
#[derive(Debug, PartialEq, Eq)]
pub struct BatchPage {
    pub messages: Vec<Report>,
    /// Entries that could not be read, described; the rest of the page still counts.
    pub malformed: Vec<String>,
    pub next_page_token: Option<String>,
}

pub fn batch_path(batch_id: &str, page_token: Option<&str>) -> String {
    let mut path = format!("/batches/{}/messages", encode(batch_id));
    if let Some(token) = page_token {
        path.push_str("?page_token=");
        path.push_str(&encode(token));
    }
    path
}

pub fn message_path(tracking_id: &str) -> String {
    format!("/messages/{}", encode(tracking_id))
}

#[derive(Deserialize)]
struct WireBatch {
    messages: Vec<WireMessage>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// The same page with its entries kept raw, read when the page as a whole does not parse, so that one bad entry
/// costs only itself.
#[derive(Deserialize)]
struct LenientBatch<'a> {
    #[serde(borrow)]
    messages: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    tracking_id: String,
    status: String,
    #[serde(default, deserialize_with = "string_or_number")]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    status_updated_at: Option<String>,
}

impl From<WireMessage> for Report {
    fn from(m: WireMessage) -> Report {
        Report {
            tracking_id: m.tracking_id,
            status: m.status,
            error_code: m.error_code,
            error_message: m.error_message,
            status_updated_at: m.status_updated_at,
            ..Report::default()
        }
    }
}

/// Parses a listing page. A body that is not a listing is an error; an entry that is not a message is set aside
/// in `malformed`, and the carrier is asked about that message on its own.
pub fn parse_batch_page(body: &[u8]) -> Result<BatchPage, String> {
    if let Ok(wire) = serde_json::from_slice::<WireBatch>(body) {
        return Ok(BatchPage {
            messages: wire.messages.into_iter().map(Report::from).collect(),
            malformed: Vec::new(),
            next_page_token: wire.next_page_token.filter(|t| !t.is_empty()),
        });
    }
    let wire: LenientBatch = wire::json(body)?;
    let (messages, malformed) = wire::entries::<WireMessage>(&wire.messages);
    Ok(BatchPage {
        messages: messages.into_iter().map(Report::from).collect(),
        malformed,
        next_page_token: wire.next_page_token.filter(|t| !t.is_empty()),
    })
}

pub fn parse_message(body: &[u8]) -> Result<Report, String> {
    wire::json::<WireMessage>(body).map(Report::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_ids() {
        assert_eq!(batch_path("B1", None), "/batches/B1/messages");
        assert_eq!(
            batch_path("B 1/x?", Some("p=2&x")),
            "/batches/B%201%2Fx%3F/messages?page_token=p%3D2%26x"
        );
        assert_eq!(message_path("T-1_a.b~"), "/messages/T-1_a.b~");
        assert_eq!(message_path("Ü"), "/messages/%C3%9C");
    }

    #[test]
    fn batch_page_as_documented() {
        let body = br#"{"batch_id":"B1","messages":[{"tracking_id":"T1","status":"DELIVERED","error_code":null,
            "error_message":null,"status_updated_at":"2025-12-01T09:03:12Z"}],"next_page_token":"p2"}"#;
        let page = parse_batch_page(body).unwrap();
        assert_eq!(page.next_page_token.as_deref(), Some("p2"));
        assert_eq!(
            page.messages,
            [Report {
                tracking_id: "T1".into(),
                status: "DELIVERED".into(),
                error_code: None,
                error_message: None,
                status_updated_at: Some("2025-12-01T09:03:12Z".into()),
                ..Report::default()
            }]
        );
    }

    #[test]
    fn last_page_and_lenient_fields() {
        let body = br#"{"messages":[{"tracking_id":"T2","status":"FAILED","error_code":30003,
            "error_message":"Unreachable","extra":{"x":1}}],"next_page_token":null,"more":true}"#;
        let page = parse_batch_page(body).unwrap();
        assert_eq!(page.next_page_token, None);
        assert_eq!(page.messages[0].error_code.as_deref(), Some("30003"));
        assert_eq!(page.messages[0].status_updated_at, None);
        let empty_token = parse_batch_page(br#"{"messages":[],"next_page_token":""}"#).unwrap();
        assert_eq!(empty_token.next_page_token, None);
    }

    #[test]
    fn message_as_documented() {
        let body = br#"{"tracking_id":"T1","status":"QUEUED","error_code":null,"error_message":null,"status_updated_at":null}"#;
        let report = parse_message(body).unwrap();
        assert_eq!(report.status, "QUEUED");
        assert_eq!(report.tracking_id, "T1");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for body in [
            &b"<html>oops</html>"[..],
            br#"{"messages":[{"tracking_id":"T1","status":"DELIV"#,
            br#"{"messages":{"T1":"SENT"}}"#,
            br#"{"error":"internal"}"#,
            b"",
        ] {
            assert!(
                parse_batch_page(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse_message(br#"{"status":"SENT"}"#).is_err());
    }

    /// Property: whatever a carrier sends, parsing returns a result (never panics), and every strict prefix of
    /// a valid body is an error, never a shorter page.
    #[test]
    fn parser_survives_mutated_bodies() {
        let valid = br#"{"batch_id":"B1","messages":[{"tracking_id":"T1","status":"DELIVERED","error_code":null,"error_message":"caf\u00e9","status_updated_at":"2025-12-01T09:03:12Z"},{"tracking_id":"T2","status":"FAILED","error_code":30003,"error_message":null,"status_updated_at":null}],"next_page_token":"p2"}"#;
        let page = parse_batch_page(valid).unwrap();
        assert_eq!((page.messages.len(), page.malformed.len()), (2, 0));
        for n in 0..valid.len() {
            assert!(
                parse_batch_page(&valid[..n]).is_err(),
                "prefix of {n} bytes parsed"
            );
            let _ = parse_message(&valid[..n]);
        }
        let mut rng = crate::retry::Rng::seeded(2025);
        let alphabet = b"{}[]\":,0123456789.eE-+ \\nulltruefalse\x00\xff\xc3";
        for _ in 0..20_000 {
            let mut body = valid.to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(body.len() as u64) as usize;
                let byte = alphabet[rng.below(alphabet.len() as u64) as usize];
                match rng.below(3) {
                    0 => body[at] = byte,
                    1 => body.insert(at, byte),
                    _ => {
                        body.remove(at);
                    }
                }
            }
            if let Ok(page) = parse_batch_page(&body) {
                assert!(page.next_page_token.as_deref() != Some(""));
                assert!(page.messages.len() + page.malformed.len() <= 2);
            }
            let _ = parse_message(&body);
        }
        let deep = "[".repeat(100_000);
        assert!(
            parse_batch_page(deep.as_bytes()).is_err(),
            "deep nesting is an error, not a stack overflow"
        );
    }

    /// Property: any report the wire format can carry survives serialising and parsing unchanged.
    #[test]
    fn reports_round_trip() {
        let mut rng = crate::retry::Rng::seeded(7);
        let pieces = [
            "T", "é", "\"", "\\", "/", " ", "\n", "☃", "𝄞", "%2F", "0", "null",
        ];
        let text = |rng: &mut crate::retry::Rng| -> String {
            (0..rng.below(6))
                .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
                .collect()
        };
        for _ in 0..2_000 {
            let report = Report {
                tracking_id: text(&mut rng),
                status: text(&mut rng),
                error_code: (rng.below(2) == 0).then(|| text(&mut rng)),
                error_message: (rng.below(2) == 0).then(|| text(&mut rng)),
                status_updated_at: (rng.below(2) == 0).then(|| text(&mut rng)),
                ..Report::default()
            };
            let body = serde_json::json!({
                "messages": [{
                    "tracking_id": report.tracking_id, "status": report.status, "error_code": report.error_code,
                    "error_message": report.error_message, "status_updated_at": report.status_updated_at,
                }],
                "next_page_token": null,
            });
            let page = parse_batch_page(body.to_string().as_bytes()).unwrap();
            assert_eq!(page.messages, [report]);
        }
    }

    #[test]
    fn a_malformed_entry_costs_only_itself() {
        let body = br#"{"messages":[{"tracking_id":"T1"},{"tracking_id":"T2","status":"SENT"},
            {"tracking_id":7,"status":"SENT"},"junk"],"next_page_token":null}"#;
        let page = parse_batch_page(body).unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].tracking_id, "T2");
        assert_eq!(page.malformed.len(), 3);
        assert!(
            page.malformed[0].starts_with("entry 0 (missing field `status`"),
            "{:?}",
            page.malformed
        );
        assert!(
            page.malformed[1].contains("invalid type: integer `7`"),
            "{:?}",
            page.malformed
        );
        assert!(
            page.malformed[2].ends_with(r#": "junk""#),
            "{:?}",
            page.malformed
        );
    }
}
