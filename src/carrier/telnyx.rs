//! Telnyx (Messaging API v2). The tracking id is the message id (a UUID); there is no bulk query.
//!
//! ```text
//! GET {base}/messages/{id}
//!   200 {"data":{"id":"…","to":[{"phone_number":"+18665550001","status":"delivered"}],
//!        "errors":[{"code":"40001","title":"Not routable"}],"completed_at":"2019-01-23T18:10:02.574Z"}}
//! ```
//! Bearer authentication with the API key. The status is per recipient in `data.to[]`: the poller takes the
//! entry of the submission's number (the only one, usually). Only the last 10 days are kept. A 429 carries
//! `x-ratelimit-reset`, which the transport honours.

use chrono::TimeDelta;
use serde::Deserialize;

use super::http::{Auth, Http};
use super::wire::{self, encode};
use super::{Bulk, FetchError, Profile, Provider, Report};
use crate::domain::DueMessage;

/// The id `doctor` asks about: any answer but 401/403 shows the key works.
const PROBE_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The provider's entry in the registry.
pub const PROVIDER: Provider = Provider {
    name: "telnyx",
    account: None,
    default_url: Some("https://api.telnyx.com/v2"),
    url_hint: "",
    pace: None,
    table: include_str!("tables/telnyx.map"),
    profile: |_account| Box::new(Telnyx),
};

pub struct Telnyx;

fn uuid(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl Profile for Telnyx {
    fn name(&self) -> &'static str {
        PROVIDER.name
    }

    fn auth(&self) -> Auth {
        Auth::Bearer
    }

    fn unaskable(&self, message: &DueMessage) -> Option<String> {
        (!uuid(&message.tracking_id)).then(|| {
            format!(
                "tracking id {:?} is not a Telnyx message id (a UUID)",
                message.tracking_id
            )
        })
    }

    fn bulk(&self, _: &Http, _: Option<&str>, _: &[&DueMessage]) -> Result<Bulk, FetchError> {
        Ok(Bulk::NotOffered)
    }

    fn one(&self, http: &Http, message: &DueMessage) -> Result<Option<Report>, FetchError> {
        let path = format!("/messages/{}", encode(&message.tracking_id));
        let Some(m) = http.get(&path, parse_message)? else {
            return Ok(None);
        };
        if !m.id.eq_ignore_ascii_case(&message.tracking_id) {
            return Err(FetchError::Refused {
                code: None,
                reason: format!("GET {path}: Telnyx answered for message {:?}", m.id),
            });
        }
        Ok(Some(m.report(
            &message.tracking_id,
            message.phone_number.as_deref(),
        )))
    }

    fn probe(&self, http: &Http) -> Result<(), FetchError> {
        http.get(&format!("/messages/{PROBE_ID}"), |_| Ok(()))
            .map(|_| ())
    }

    fn retention(&self) -> Option<TimeDelta> {
        Some(TimeDelta::days(10))
    }
}

#[derive(Deserialize)]
struct WireEnvelope {
    data: Message,
}

/// A message as `GET /messages/{id}` describes it, the fields the poller reads.
#[derive(Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(default)]
    to: Vec<Recipient>,
    #[serde(default)]
    errors: Vec<WireError>,
    #[serde(default)]
    completed_at: Option<String>,
    #[serde(default)]
    sent_at: Option<String>,
}

#[derive(Deserialize)]
struct Recipient {
    #[serde(default)]
    phone_number: Option<String>,
    status: String,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default, deserialize_with = "wire::string_or_number")]
    code: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

impl Message {
    /// The report of the recipient with `phone` (by digits), else of the first recipient.
    pub fn report(self, tracking_id: &str, phone: Option<&str>) -> Report {
        let wanted = phone.map(wire::digits);
        let index = self
            .to
            .iter()
            .position(|r| wanted.is_some() && r.phone_number.as_deref().map(wire::digits) == wanted)
            .unwrap_or(0);
        let status = self
            .to
            .into_iter()
            .nth(index)
            .map(|r| r.status)
            .unwrap_or_default();
        let error = self.errors.into_iter().next();
        Report {
            tracking_id: tracking_id.to_string(),
            status,
            error_code: error.as_ref().and_then(|e| e.code.clone()),
            error_message: error.and_then(|e| match (e.title, e.detail) {
                (Some(title), Some(detail)) if detail != title => {
                    Some(format!("{title}: {detail}"))
                }
                (title, detail) => title.or(detail),
            }),
            status_updated_at: self
                .completed_at
                .or(self.sent_at)
                .as_deref()
                .and_then(wire::timestamp),
            ..Report::default()
        }
    }
}

pub fn parse_message(body: &[u8]) -> Result<Message, String> {
    let envelope: WireEnvelope = wire::json(body)?;
    if envelope.data.to.is_empty() {
        return Err("data.to is empty: no recipient status".to_string());
    }
    Ok(envelope.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = include_bytes!("../../tests/fixtures/carriers/telnyx.message.json");

    #[test]
    fn the_descriptions_message_example() {
        let m = parse_message(MESSAGE).unwrap();
        assert_eq!(m.id, "40385f64-5717-4562-b3fc-2c963f66afa6");
        let r = m.report("40385f64-5717-4562-b3fc-2c963f66afa6", Some("+18665550001"));
        assert_eq!(r.status, "queued");
        assert_eq!((r.error_code, r.status_updated_at), (None, None));
    }

    #[test]
    fn the_submissions_recipient_and_the_first_error() {
        let body = br#"{"data":{"id":"x","to":[{"phone_number":"+1555","status":"delivered"},
            {"phone_number":"+1666","status":"delivery_failed"}],
            "errors":[{"code":"40001","title":"Not routable","detail":"Landline"}],
            "completed_at":"2026-11-26T09:00:00.5+00:00"}}"#;
        let r = parse_message(body).unwrap().report("x", Some("1666"));
        assert_eq!(r.status, "delivery_failed");
        assert_eq!(r.error_code.as_deref(), Some("40001"));
        assert_eq!(r.error_message.as_deref(), Some("Not routable: Landline"));
        assert_eq!(r.status_updated_at.as_deref(), Some("2026-11-26T09:00:00Z"));
        let first = parse_message(body).unwrap().report("x", None);
        assert_eq!(first.status, "delivered");
        assert!(parse_message(br#"{"data":{"id":"x","to":[]}}"#).is_err());
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(uuid("40385f64-5717-4562-b3fc-2c963f66afa6"));
        assert!(!uuid("T0000001"));
        assert!(!uuid("40385f64x5717-4562-b3fc-2c963f66afa6"));
    }
}
