//! Infobip (SMS API, message logs). The tracking id is the messageId; a batch is a bulkId.
//!
//! ```text
//! GET {base}/sms/3/logs?bulkId={batch_id}&limit=1000&useCursor=true   then &cursor={nextCursor}
//! GET {base}/sms/3/logs?messageId=ID1,ID2,…&limit=1000
//!   200 {"results":[{"messageId":"ID1","bulkId":"B1","doneAt":"2019-11-09T16:00:00.000+0100",
//!        "status":{"groupName":"DELIVERED","name":"DELIVERED_TO_HANDSET",…},
//!        "error":{"groupName":"OK","id":0,"name":"NO_ERROR","description":"No Error","permanent":false}}],
//!        "cursor":{"limit":1000,"nextCursor":null}}
//! ```
//! `Authorization: App {api key}`; each account has its own host, so `--carrier-url` is required.
//!
//! Only the logs endpoints are used: the `/reports` endpoints hand each report out once, so a crash or a second
//! reader would lose it. Logs reach back 48 hours ([`Profile::retention`]), and allow 120 requests a minute
//! (its pace, [`PROVIDER`]`.pace`).

use chrono::TimeDelta;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Duration;

use super::http::{Auth, Http};
use super::wire::{self, Page, encode};
use super::{Bulk, FetchError, Listing, Profile, Provider, Report};
use crate::domain::{DueMessage, LoneJobs};

/// The documented maximum length of the `messageId` (and `bulkId`) parameter's value.
const ID_CHARS: usize = 2_048;
const LIMIT: usize = 1_000;

/// The provider's entry in the registry.
pub const PROVIDER: Provider = Provider {
    name: "infobip",
    account: None,
    default_url: None,
    url_hint: " (each Infobip account has its own https://xxxxx.api.infobip.com)",
    // The logs allow 120 requests a minute.
    pace: Some(Duration::from_millis(520)),
    table: include_str!("tables/infobip.map"),
    profile: |_account| Box::new(Infobip),
};

pub struct Infobip;

impl Profile for Infobip {
    fn name(&self) -> &'static str {
        PROVIDER.name
    }

    fn auth(&self) -> Auth {
        Auth::App
    }

    fn bulk(
        &self,
        http: &Http,
        batch_id: Option<&str>,
        messages: &[&DueMessage],
    ) -> Result<Bulk, FetchError> {
        let wanted: std::collections::HashSet<&str> =
            messages.iter().map(|m| m.tracking_id.as_str()).collect();
        let mut listing = Listing::default();
        let keep = |reports: Vec<Report>, malformed: Vec<String>, listing: &mut Listing| {
            listing.malformed.extend(malformed);
            listing.reports.extend(
                reports
                    .into_iter()
                    .filter(|r| wanted.contains(r.tracking_id.as_str())),
            );
        };
        match batch_id {
            Some(batch) if batch.len() <= ID_CHARS => {
                let first = format!(
                    "/sms/3/logs?bulkId={}&limit={LIMIT}&useCursor=true",
                    encode(batch)
                );
                let mut malformed = Vec::new();
                let followed = wire::follow(
                    &format!("logs of bulk {batch:?}"),
                    String::new(),
                    |cursor| {
                        let path = if cursor.is_empty() {
                            first.clone()
                        } else {
                            format!("{first}&cursor={}", encode(cursor))
                        };
                        Ok(http.get(&path, parse_logs)?.map(|logs| {
                            malformed.extend(logs.malformed);
                            Page {
                                entries: logs.reports,
                                next: logs.next_cursor,
                            }
                        }))
                    },
                    |reports| {
                        keep(reports, Vec::new(), &mut listing);
                        true
                    },
                );
                listing.malformed.extend(malformed);
                // The pages read before a failure stand.
                if let Err(e) = followed {
                    return listing.cut_short(e);
                }
            }
            _ if messages.len() < 2 => return Ok(Bulk::NotOffered),
            _ => {
                let ids = messages.iter().map(|m| m.tracking_id.as_str());
                for list in wire::id_lists(ids, ID_CHARS) {
                    let path = format!("/sms/3/logs?messageId={}&limit={LIMIT}", encode(&list));
                    match http.get(&path, parse_logs) {
                        Ok(Some(logs)) => keep(logs.reports, logs.malformed, &mut listing),
                        Ok(None) => {}
                        Err(e) => return listing.cut_short(e),
                    }
                }
            }
        }
        Ok(Bulk::Listed(listing))
    }

    fn one(&self, http: &Http, message: &DueMessage) -> Result<Option<Report>, FetchError> {
        let path = format!("/sms/3/logs?messageId={}", encode(&message.tracking_id));
        Ok(http.get(&path, parse_logs)?.and_then(|logs| {
            logs.reports
                .into_iter()
                .find(|r| r.tracking_id == message.tracking_id)
        }))
    }

    fn probe(&self, http: &Http) -> Result<(), FetchError> {
        http.probe_listing("/sms/3/logs?limit=1")
    }

    fn retention(&self) -> Option<TimeDelta> {
        Some(TimeDelta::hours(48))
    }

    fn lone_jobs(&self) -> LoneJobs {
        LoneJobs::of(50)
    }

    fn asks_by_ids(&self) -> bool {
        true
    }
}

#[derive(Deserialize)]
struct WireLogs<'a> {
    #[serde(default, borrow)]
    results: Vec<&'a RawValue>,
    #[serde(default)]
    cursor: Option<WireCursor>,
}

#[derive(Deserialize)]
struct WireCursor {
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireLog {
    message_id: String,
    status: WireStatus,
    #[serde(default)]
    error: Option<WireError>,
    #[serde(default)]
    done_at: Option<String>,
    #[serde(default)]
    sent_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    #[serde(default)]
    group_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireError {
    #[serde(default)]
    group_name: Option<String>,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    permanent: Option<bool>,
}

impl From<WireLog> for Report {
    fn from(log: WireLog) -> Report {
        // Error id 0 (group OK) is Infobip's "no error".
        let error = log.error.filter(|e| e.id.is_some_and(|id| id != 0));
        let group = log.status.group_name;
        Report {
            tracking_id: log.message_id,
            status: log
                .status
                .name
                .or_else(|| group.clone())
                .unwrap_or_default(),
            status_group: group,
            error_code: error.as_ref().and_then(|e| e.id).map(|id| id.to_string()),
            error_message: error
                .as_ref()
                .and_then(|e| match (&e.name, &e.description) {
                    (Some(name), Some(text)) => Some(format!("{name}: {text}")),
                    (name, text) => text.clone().or(name.clone()),
                }),
            error_group: error.as_ref().and_then(|e| e.group_name.clone()),
            permanent: error.as_ref().and_then(|e| e.permanent),
            status_updated_at: log
                .done_at
                .or(log.sent_at)
                .as_deref()
                .and_then(wire::timestamp),
        }
    }
}

/// One page of logs.
pub struct Logs {
    pub reports: Vec<Report>,
    pub malformed: Vec<String>,
    pub next_cursor: Option<String>,
}

pub fn parse_logs(body: &[u8]) -> Result<Logs, String> {
    let wire: WireLogs = wire::json(body)?;
    let (logs, malformed) = wire::entries::<WireLog>(&wire.results);
    Ok(Logs {
        reports: logs.into_iter().map(Report::from).collect(),
        malformed,
        next_cursor: wire
            .cursor
            .and_then(|c| c.next_cursor)
            .filter(|c| !c.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGS: &[u8] = include_bytes!("../../tests/fixtures/carriers/infobip.logs.json");

    #[test]
    fn the_descriptions_logs_example() {
        let logs = parse_logs(LOGS).unwrap();
        assert_eq!(logs.reports.len(), 2);
        let r = &logs.reports[0];
        assert_eq!(r.tracking_id, "MESSAGE-ID-123-xyz");
        assert_eq!(r.status, "DELIVERED_TO_HANDSET");
        assert_eq!(r.status_group.as_deref(), Some("DELIVERED"));
        assert_eq!(r.error_code, None, "error 0 is no error");
        assert_eq!(r.status_updated_at.as_deref(), Some("2019-11-09T15:00:00Z"));
        assert_eq!(logs.next_cursor, None);
    }

    #[test]
    fn an_error_keeps_id_group_text_and_permanence() {
        let body = br#"{"results":[{"messageId":"M1","status":{"groupName":"UNDELIVERABLE","name":"UNDELIVERABLE_NOT_DELIVERED"},
            "error":{"groupName":"HANDSET_ERRORS","id":1,"name":"EC_UNKNOWN_SUBSCRIBER","description":"Unknown subscriber","permanent":true}},
            {"messageId":"M2"}],"cursor":{"limit":1000,"nextCursor":"c2"}}"#;
        let logs = parse_logs(body).unwrap();
        let r = &logs.reports[0];
        assert_eq!(r.error_code.as_deref(), Some("1"));
        assert_eq!(r.error_group.as_deref(), Some("HANDSET_ERRORS"));
        assert_eq!(r.permanent, Some(true));
        assert_eq!(
            r.error_message.as_deref(),
            Some("EC_UNKNOWN_SUBSCRIBER: Unknown subscriber")
        );
        assert_eq!(logs.malformed.len(), 1);
        assert_eq!(logs.next_cursor.as_deref(), Some("c2"));
    }
}
