//! The sandbox's provider dialects: the same simulated world, answered the way Twilio, Vonage, Sinch, Infobip
//! or Telnyx answer, quirks included (Twilio's terminal `sent` and `DateSent` window listings with the
//! account's other traffic, Vonage's id lists and `ids_not_found`, Sinch's recipients with and without `+`,
//! Infobip's 48-hour window and cursor, Telnyx's per-recipient status and `x-ratelimit-reset`).
//!
//! Built from the providers' API descriptions (paths, parameters, field names and forms), not from the
//! poller's profiles.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::{Fate, SimMessage, Slot, TimeKey, World};
use crate::escape::decode;
use crate::escape::encode;
use dlr_poller::timefmt;

/// Which provider the sandbox plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Generic,
    Twilio,
    Vonage,
    Sinch,
    Infobip,
    Telnyx,
}

/// What a message's status is at a moment, in the provider's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truth {
    pub word: String,
    pub code: Option<String>,
    pub reason: Option<String>,
    /// When the status was reached (final statuses).
    pub at: Option<DateTime<Utc>>,
}

/// Failure fates of a dialect: (word, code, reason).
type Failure = (&'static str, &'static str, &'static str);

impl Dialect {
    pub const ALL: [Dialect; 6] = [
        Dialect::Generic,
        Dialect::Twilio,
        Dialect::Vonage,
        Dialect::Sinch,
        Dialect::Infobip,
        Dialect::Telnyx,
    ];

    pub fn parse(name: &str) -> Option<Dialect> {
        Dialect::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Generic => "generic",
            Dialect::Twilio => "twilio",
            Dialect::Vonage => "vonage",
            Dialect::Sinch => "sinch",
            Dialect::Infobip => "infobip",
            Dialect::Telnyx => "telnyx",
        }
    }

    /// The account identity the sandbox expects (`--carrier-account`).
    pub fn account(self) -> Option<&'static str> {
        match self {
            Dialect::Twilio => Some("AC0123456789abcdef0123456789abcdef"),
            Dialect::Vonage => Some("abcdef01"),
            Dialect::Sinch => Some("sandboxplan01"),
            _ => None,
        }
    }

    /// The Authorization header a request must carry.
    pub fn authorization(self, token: &str) -> String {
        match self {
            Dialect::Twilio | Dialect::Vonage => {
                crate::escape::basic(self.account().unwrap_or_default(), token)
            }
            Dialect::Infobip => format!("App {token}"),
            _ => format!("Bearer {token}"),
        }
    }

    /// The tracking id of message `i`, shaped as the provider's message id.
    pub fn tracking_id(self, i: usize) -> String {
        match self {
            Dialect::Generic => format!("T{i:07}"),
            // Unique and in no particular order, as Twilio's are: an odd multiplier is a bijection.
            Dialect::Twilio => format!(
                "SM{:032x}",
                (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            ),
            Dialect::Vonage | Dialect::Telnyx => super::random_id(i),
            Dialect::Sinch => format!("T{i:07}"),
            Dialect::Infobip => format!("ib-{i:08}"),
        }
    }

    /// The word of a message on its way, not yet delivered.
    pub fn pending_word(self) -> &'static str {
        self.progress().0
    }

    /// (on its way, delivered, queued): the words of a message that will deliver or fail, before and after.
    fn progress(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Dialect::Generic => ("SENT", "DELIVERED", "QUEUED"),
            Dialect::Twilio => ("sent", "delivered", "queued"),
            Dialect::Vonage => ("accepted", "delivered", "buffered"),
            Dialect::Sinch => ("Dispatched", "Delivered", "Queued"),
            Dialect::Infobip => (
                "PENDING_ENROUTE",
                "DELIVERED_TO_HANDSET",
                "PENDING_ACCEPTED",
            ),
            Dialect::Telnyx => ("sent", "delivered", "queued"),
        }
    }

    /// Failures the world draws from.
    pub fn failures(self) -> &'static [Failure] {
        match self {
            Dialect::Generic => &[
                ("FAILED", "30003", "Unreachable destination handset"),
                ("REJECTED", "30007", "Carrier violation"),
                ("BOUNCED", "30005", "Unknown destination handset"),
                ("UNDELIVERABLE", "30006", "Landline or unreachable carrier"),
            ],
            Dialect::Twilio => &[
                ("undelivered", "30003", "Unreachable destination handset"),
                ("undelivered", "30007", "Message filtered"),
                ("failed", "30005", "Unknown destination handset"),
                ("undelivered", "30008", "Unknown error"),
            ],
            Dialect::Vonage => &[
                ("failed", "3", "Absent Subscriber Permanent"),
                ("rejected", "6", "Anti-Spam Rejection"),
                ("expired", "2", "Absent Subscriber Temporary"),
                ("failed", "11", "Unroutable"),
            ],
            Dialect::Sinch => &[
                ("Aborted", "402", ""),
                ("Failed", "404", ""),
                ("Rejected", "413", ""),
                ("Expired", "406", ""),
            ],
            Dialect::Infobip => &[
                ("UNDELIVERABLE_NOT_DELIVERED", "1", "Unknown subscriber"),
                ("REJECTED_NETWORK", "632", "SMS rejected by mobile operator"),
                ("EXPIRED_EXPIRED", "6", "Absent subscriber"),
                ("UNDELIVERABLE_REJECTED_OPERATOR", "9999", "A new error"),
            ],
            Dialect::Telnyx => &[
                ("delivery_failed", "40001", "Not routable"),
                ("delivery_failed", "40003", "Blocked as spam - permanent"),
                ("sending_failed", "40006", "Recipient server unavailable"),
                ("delivery_failed", "40008", "Undeliverable"),
            ],
        }
    }

    /// Words a message may report for good: pending ones, the final-without-receipt one, one outside the table.
    pub fn stuck_words(self) -> &'static [&'static str] {
        match self {
            Dialect::Generic => &[
                "QUEUED",
                "SENT",
                "TIMEOUT",
                "NO_STATUS",
                "pending",
                "ACCEPTD",
            ],
            Dialect::Twilio => &[
                "sent",
                "sent",
                "queued",
                "accepted",
                "scheduled",
                "en_route",
            ],
            Dialect::Vonage => &[
                "accepted",
                "buffered",
                "unknown",
                "unknown",
                "accepted",
                "in_transit",
            ],
            Dialect::Sinch => &[
                "Queued",
                "Dispatched",
                "Unknown",
                "Unknown",
                "Dispatched",
                "Pending",
            ],
            Dialect::Infobip => &[
                "PENDING_ENROUTE",
                "DELIVERED_TO_OPERATOR",
                "PENDING_WAITING_DELIVERY",
                "ACCEPTED",
                "PENDING_ACCEPTED",
                "SCHEDULED_LATER",
            ],
            Dialect::Telnyx => &[
                "sent",
                "queued",
                "delivery_unconfirmed",
                "delivery_unconfirmed",
                "sending",
                "gw_timeout",
            ],
        }
    }
}

/// What a message says at a moment, borrowed from it: (word, code, reason, when the status was reached).
pub(super) type Said<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<DateTime<Utc>>,
);

impl SimMessage {
    /// What the carrier says about this message at `now`, in `dialect`'s words; `None` when it does not know it.
    pub fn truth_at(&self, now: DateTime<Utc>, dialect: Dialect) -> Option<Truth> {
        self.said_at(now, dialect)
            .map(|(word, code, reason, at)| Truth {
                word: word.to_string(),
                code: code.map(str::to_string),
                reason: reason.filter(|r| !r.is_empty()).map(str::to_string),
                at,
            })
    }

    /// The same, borrowed (a listing of thousands is serialised without building a value per message).
    pub(super) fn said_at(&self, now: DateTime<Utc>, dialect: Dialect) -> Option<Said<'_>> {
        if !self.known {
            return None;
        }
        let (on_way, delivered, queued) = dialect.progress();
        Some(match &self.fate {
            Fate::Deliver { after } if now >= self.submitted_at + *after => {
                (delivered, None, None, Some(self.submitted_at + *after))
            }
            Fate::Deliver { .. } => (on_way, None, None, None),
            Fate::Fail {
                after,
                word,
                code,
                reason,
            } if now >= self.submitted_at + *after => (
                word,
                Some(code),
                Some(reason),
                Some(self.submitted_at + *after),
            ),
            Fate::Fail { .. } => (queued, None, None, None),
            Fate::Stuck { word } => (word, None, None, None),
        })
    }
}

/// A response: (status, extra headers, body).
pub type Response = (u16, Vec<(&'static str, String)>, String);

fn error(status: u16, body: Value) -> Response {
    (status, vec![], body.to_string())
}

fn query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Answers `GET path?query` in `dialect`. `messages` are the poller's and the account's other traffic.
pub fn respond(
    dialect: Dialect,
    world: &World,
    now: DateTime<Utc>,
    page_size: usize,
    segments: &[&str],
    raw_query: &str,
) -> Response {
    let q = query(raw_query);
    match dialect {
        Dialect::Twilio => twilio(world, now, segments, &q),
        Dialect::Vonage => vonage(world, now, segments, &q),
        Dialect::Sinch => sinch(world, now, segments, &q),
        Dialect::Infobip => infobip(world, now, page_size, segments, &q),
        Dialect::Telnyx => telnyx(world, now, segments),
        Dialect::Generic => error(404, json!({"error": "no such endpoint"})),
    }
}

fn rfc2822(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// When Twilio sent the message: two seconds after submission, unless it is still queued.
fn twilio_sent(m: &SimMessage, truth: &Truth) -> Option<DateTime<Utc>> {
    (!matches!(truth.word.as_str(), "queued" | "accepted" | "scheduled"))
        .then(|| m.submitted_at + TimeDelta::seconds(2))
}

fn twilio_message(m: &SimMessage, truth: &Truth, account: &str) -> Value {
    let sent = twilio_sent(m, truth);
    json!({
        "account_sid": account,
        "api_version": "2010-04-01",
        "sid": m.tracking_id,
        "to": m.phone_number,
        "from": "+15005550006",
        "direction": "outbound-api",
        "status": truth.word,
        "error_code": truth.code.as_deref().and_then(|c| c.parse::<i64>().ok()),
        "error_message": truth.reason,
        "date_created": rfc2822(m.submitted_at),
        "date_sent": sent.map(rfc2822),
        "date_updated": rfc2822(truth.at.or(sent).unwrap_or(m.submitted_at)),
        "num_segments": "1",
        "uri": format!("/2010-04-01/Accounts/{account}/Messages/{}.json", m.tracking_id),
    })
}

fn twilio_date(raw: &str) -> Option<DateTime<Utc>> {
    timefmt::parse(raw).ok().or_else(|| {
        chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    })
}

fn twilio(
    world: &World,
    now: DateTime<Utc>,
    segments: &[&str],
    q: &[(String, String)],
) -> Response {
    let account = Dialect::Twilio.account().unwrap_or_default();
    let not_found = || {
        error(
            404,
            json!({"code": 20404, "message": "The requested resource was not found", "status": 404}),
        )
    };
    let ["2010-04-01", "Accounts", acct, "Messages", rest @ ..] = segments else {
        if let ["2010-04-01", "Accounts", acct, "Messages.json"] = segments {
            if *acct != account {
                return not_found();
            }
            return twilio_list(world, now, q, account);
        }
        return not_found();
    };
    if *acct != account {
        return not_found();
    }
    let [file] = rest else {
        return not_found();
    };
    let Some(sid) = file.strip_suffix(".json") else {
        return not_found();
    };
    match world
        .find(sid)
        .and_then(|m| Some((m, m.truth_at(now, Dialect::Twilio)?)))
    {
        Some((m, truth)) => (200, vec![], twilio_message(m, &truth, account).to_string()),
        None => not_found(),
    }
}

/// The listing position a Twilio page token names (`PTM{i}`: our message i, `PTO{i}`: other traffic).
fn page_token(world: &World, token: &str) -> Option<TimeKey> {
    let slot = match token.strip_prefix("PT")?.split_at_checked(1)? {
        ("M", i) => Slot::Ours(i.parse().ok()?),
        ("O", i) => Slot::Other(i.parse().ok()?),
        _ => return None,
    };
    Some(world.at(slot)?.1)
}

fn twilio_list(
    world: &World,
    now: DateTime<Utc>,
    q: &[(String, String)],
    account: &str,
) -> Response {
    let size = match param(q, "PageSize").map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        _ => {
            return error(
                400,
                json!({"code": 20001, "message": "Invalid PageSize", "status": 400}),
            );
        }
    };
    let bound = |name: &str| param(q, name).map(twilio_date);
    let (from, to) = (bound("DateSent>"), bound("DateSent<"));
    if matches!(from, Some(None)) || matches!(to, Some(None)) {
        return error(
            400,
            json!({"code": 20001, "message": "Invalid DateSent", "status": 400}),
        );
    }
    let (from, to) = (from.flatten(), to.flatten());
    // A message counts as sent two seconds after its submission (see twilio_sent).
    let until = to.map_or(DateTime::<Utc>::MAX_UTC, |t| t - TimeDelta::seconds(2));
    let after = match param(q, "PageToken") {
        None => None,
        Some(token) => match page_token(world, token) {
            Some(key) => Some(key),
            None => {
                return error(
                    400,
                    json!({"code": 20001, "message": "Invalid PageToken", "status": 400}),
                );
            }
        },
    };
    // Newest first, as Twilio lists; read one past the page to know whether another follows.
    let mut walk = world
        .newest_first(until, after.as_ref())
        .take_while(|(m, _)| from.is_none_or(|f| m.submitted_at + TimeDelta::seconds(2) >= f))
        .filter(|(m, _)| m.listed)
        .filter_map(|(m, key)| {
            let truth = m.truth_at(now, Dialect::Twilio)?;
            twilio_sent(m, &truth)?;
            Some((m, truth, key))
        });
    let listed: Vec<_> = walk.by_ref().take(size).collect();
    let more = walk.next().is_some();
    let page: usize = param(q, "Page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let base = format!("/2010-04-01/Accounts/{account}/Messages.json");
    let filters: String = q
        .iter()
        .filter(|(k, _)| k.starts_with("DateSent"))
        .map(|(k, v)| format!("&{}={}", encode(k), encode(v)))
        .collect();
    let next = listed.last().filter(|_| more).map(|(_, _, key)| {
        let token = match key.2 {
            Slot::Ours(i) => format!("PTM{i}"),
            Slot::Other(i) => format!("PTO{i}"),
        };
        format!(
            "{base}?PageSize={size}{filters}&Page={}&PageToken={token}",
            page + 1
        )
    });
    let start = page * size;
    let body = json!({
        "messages": listed.iter().map(|(m, t, _)| twilio_message(m, t, account)).collect::<Vec<_>>(),
        "page": page,
        "page_size": size,
        "start": start,
        "end": (start + listed.len()).saturating_sub(1),
        "uri": format!("{base}?PageSize={size}{filters}&Page={page}"),
        "first_page_uri": format!("{base}?PageSize={size}{filters}&Page=0"),
        "next_page_uri": next,
        "previous_page_uri": null,
    });
    (200, vec![], body.to_string())
}

fn vonage_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

fn vonage(
    world: &World,
    now: DateTime<Utc>,
    segments: &[&str],
    q: &[(String, String)],
) -> Response {
    let account = Dialect::Vonage.account().unwrap_or_default();
    if segments != ["v2", "reports", "records"] {
        return error(404, json!({"title": "Not found"}));
    }
    let invalid = |name: &str, reason: &str| {
        error(
            422,
            json!({"title": "Unprocessable entity", "invalid_parameters": [{"name": name, "reason": reason}]}),
        )
    };
    if param(q, "account_id") != Some(account) {
        return error(
            403,
            json!({"title": "Forbidden", "detail": "User not authorized to query the requested data"}),
        );
    }
    if param(q, "product") != Some("SMS") {
        return invalid("product", "Missing required parameter");
    }
    if param(q, "direction") != Some("outbound") {
        return invalid("direction", "Missing required parameter");
    }
    let Some(ids) = param(q, "id") else {
        return invalid("id", "this sandbox answers id queries only");
    };
    let mut records = Vec::new();
    let mut missing = Vec::new();
    for id in ids.split(',').filter(|s| !s.is_empty()) {
        match world.find(id).and_then(|m| Some((m, m.truth_at(now, Dialect::Vonage)?))) {
            Some((m, truth)) => records.push(json!({
                "account_id": account,
                "message_id": m.tracking_id,
                "direction": "outbound",
                "to": m.phone_number.trim_start_matches('+'),
                "status": truth.word,
                "error_code": truth.code.clone().unwrap_or_else(|| "0".into()),
                "error_code_description": truth.reason.clone().unwrap_or_else(|| "Delivered".into()),
                "date_received": vonage_time(m.submitted_at),
                "date_finalized": truth.at.map(vonage_time),
                "currency": "EUR",
                "total_price": "0.0333",
            })),
            None => missing.push(id),
        }
    }
    let body = json!({
        "request_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        "request_status": "SUCCESS",
        "received_at": vonage_time(now),
        "account_id": account,
        "product": "SMS",
        "direction": "outbound",
        "items_count": records.len(),
        "ids_not_found": (!missing.is_empty()).then(|| missing.join(",")),
        "records": records,
    });
    (200, vec![], body.to_string())
}

fn sinch_code(truth: &Truth) -> i64 {
    truth
        .code
        .as_deref()
        .and_then(|c| c.parse().ok())
        .unwrap_or(match truth.word.as_str() {
            "Queued" => 400,
            "Dispatched" => 401,
            _ => 0,
        })
}

fn sinch(world: &World, now: DateTime<Utc>, segments: &[&str], q: &[(String, String)]) -> Response {
    let plan = Dialect::Sinch.account().unwrap_or_default();
    let not_found = || (404, vec![], String::new());
    match segments {
        ["xms", "v1", p, "batches"] if *p == plan => (
            200,
            vec![],
            json!({"count": 0, "page": 0, "page_size": 0, "batches": []}).to_string(),
        ),
        ["xms", "v1", p, "batches", batch, "delivery_report"] if *p == plan => {
            let Some(members) = world.batch(batch) else {
                return not_found();
            };
            let full = match param(q, "type") {
                None | Some("summary") => false,
                Some("full") => true,
                Some(other) => {
                    return error(
                        400,
                        json!({"code": "syntax_invalid_parameter_format",
                               "text": format!("'{other}' is not a valid report type")}),
                    );
                }
            };
            // Grouped by status and code; a recipient without a report yet is in no group.
            let mut groups: Vec<(String, i64, Vec<String>)> = Vec::new();
            for (n, m) in members.iter().filter(|m| m.listed).enumerate() {
                let Some(truth) = m.truth_at(now, Dialect::Sinch) else {
                    continue;
                };
                let code = sinch_code(&truth);
                // Numbers come with and without the leading +.
                let number = if n % 2 == 0 {
                    m.phone_number.clone()
                } else {
                    m.phone_number.trim_start_matches('+').to_string()
                };
                match groups
                    .iter_mut()
                    .find(|(w, c, _)| *w == truth.word && *c == code)
                {
                    Some(group) => group.2.push(number),
                    None => groups.push((truth.word.clone(), code, vec![number])),
                }
            }
            let statuses: Vec<Value> = groups
                .into_iter()
                .map(|(status, code, recipients)| {
                    let mut entry =
                        json!({"status": status, "code": code, "count": recipients.len()});
                    if full {
                        entry["recipients"] = json!(recipients);
                    }
                    entry
                })
                .collect();
            let body = json!({
                "type": "delivery_report_sms",
                "batch_id": batch,
                "total_message_count": members.len().to_string(),
                "statuses": statuses,
            });
            (200, vec![], body.to_string())
        }
        ["xms", "v1", p, "batches", batch, "delivery_report", msisdn] if *p == plan => {
            let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
            let found = world.batch(batch).and_then(|members| {
                members
                    .into_iter()
                    .find(|m| digits(&m.phone_number) == digits(msisdn))
            });
            let Some((m, truth)) = found.and_then(|m| Some((m, m.truth_at(now, Dialect::Sinch)?)))
            else {
                return not_found();
            };
            let body = json!({
                "type": "recipient_delivery_report_sms",
                "batch_id": batch,
                "recipient": m.phone_number.trim_start_matches('+'),
                "code": sinch_code(&truth),
                "status": truth.word,
                "at": timefmt::format_millis(truth.at.unwrap_or(m.submitted_at)),
            });
            (200, vec![], body.to_string())
        }
        _ => not_found(),
    }
}

/// Infobip's error groups and permanence of the sandbox's codes.
fn infobip_error(code: &str) -> (&'static str, bool) {
    match code {
        "1" => ("HANDSET_ERRORS", true),
        "6" => ("HANDSET_ERRORS", false),
        "632" => ("OPERATOR_ERRORS", false),
        _ => ("USER_ERRORS", true),
    }
}

fn infobip_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

fn infobip_log(m: &SimMessage, truth: &Truth) -> Value {
    let group = truth.word.split('_').next().unwrap_or_default();
    let error = match &truth.code {
        Some(code) => {
            let (group, permanent) = infobip_error(code);
            json!({"groupName": group, "id": code.parse::<i64>().unwrap_or(0),
                   "name": "EC_SANDBOX", "description": truth.reason, "permanent": permanent})
        }
        None => json!({"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR",
                       "description": "No Error", "permanent": false}),
    };
    json!({
        "destination": m.phone_number.trim_start_matches('+'),
        "bulkId": m.batch_id,
        "messageId": m.tracking_id,
        "sentAt": infobip_time(m.submitted_at),
        "doneAt": infobip_time(truth.at.unwrap_or(m.submitted_at)),
        "messageCount": 1,
        "status": {"groupName": group, "name": truth.word, "description": "sandbox"},
        "error": error,
    })
}

fn infobip(
    world: &World,
    now: DateTime<Utc>,
    page_size: usize,
    segments: &[&str],
    q: &[(String, String)],
) -> Response {
    if segments != ["sms", "3", "logs"] {
        return error(
            404,
            json!({"requestError": {"serviceException": {"messageId": "NOT_FOUND"}}}),
        );
    }
    let limit = match param(q, "limit").map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        _ => {
            return error(
                400,
                json!({"requestError": {"serviceException": {"messageId": "BAD_REQUEST", "text": "limit"}}}),
            );
        }
    };
    for name in ["messageId", "bulkId"] {
        if param(q, name).is_some_and(|v| v.len() > 2048) {
            return error(
                400,
                json!({"requestError": {"serviceException": {"messageId": "BAD_REQUEST",
                       "text": format!("{name} longer than 2048 characters")}}}),
            );
        }
    }
    let ids: Option<HashSet<&str>> = param(q, "messageId").map(|v| v.split(',').collect());
    let bulk = param(q, "bulkId");
    // Logs reach back 48 hours.
    let horizon = now - TimeDelta::hours(48);
    // Only the candidates are read: a benchmark's world holds a million messages.
    let candidates: Box<dyn Iterator<Item = &SimMessage>> = match (&ids, bulk) {
        (Some(ids), _) => {
            let mut ids: Vec<&str> = ids.iter().copied().collect();
            ids.sort_unstable();
            Box::new(ids.into_iter().filter_map(|id| world.find(id)))
        }
        (None, Some(b)) => Box::new(world.in_batch(b)),
        (None, None) => Box::new(world.all()),
    };
    let matching: Vec<Value> = candidates
        .filter(|m| m.submitted_at >= horizon)
        .filter(|m| {
            ids.as_ref()
                .is_none_or(|ids| ids.contains(m.tracking_id.as_str()))
        })
        .filter(|m| bulk.is_none_or(|b| m.batch_id.as_deref() == Some(b) && m.listed))
        .filter_map(|m| Some(infobip_log(m, &m.truth_at(now, Dialect::Infobip)?)))
        .collect();
    let cursor = param(q, "cursor")
        .and_then(|c| c.strip_prefix('c'))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
        .min(matching.len());
    let limit = limit.min(page_size.max(1));
    let end = (cursor + limit).min(matching.len());
    let use_cursor = param(q, "useCursor") == Some("true");
    let next = (use_cursor && end < matching.len()).then(|| format!("c{end}"));
    let body = json!({
        "results": matching[cursor..end],
        "cursor": {"limit": limit, "nextCursor": next},
    });
    (200, vec![], body.to_string())
}

fn telnyx(world: &World, now: DateTime<Utc>, segments: &[&str]) -> Response {
    let not_found = || {
        error(
            404,
            json!({"errors": [{"code": "10005", "title": "Resource not found",
                               "detail": "The requested resource or URL could not be found."}]}),
        )
    };
    let ["messages", id] = segments else {
        return not_found();
    };
    // Only the last 10 days are kept.
    let Some((m, truth)) = world
        .find(id)
        .filter(|m| now - m.submitted_at <= TimeDelta::days(10))
        .and_then(|m| Some((m, m.truth_at(now, Dialect::Telnyx)?)))
    else {
        return not_found();
    };
    let errors: Vec<Value> = truth
        .code
        .iter()
        .map(|code| json!({"code": code, "title": truth.reason, "detail": "sandbox"}))
        .collect();
    let body = json!({"data": {
        "record_type": "message",
        "direction": "outbound",
        "id": m.tracking_id,
        "type": "SMS",
        "from": {"phone_number": "+18445550001", "carrier": "TELNYX LLC", "line_type": "VoIP"},
        "to": [
            {"phone_number": "+18005550199", "status": "delivered", "carrier": "OTHER", "line_type": "Wireless"},
            {"phone_number": m.phone_number, "status": truth.word, "carrier": "SANDBOX", "line_type": "Wireless"},
        ],
        "errors": errors,
        "received_at": timefmt::format_millis(m.submitted_at),
        "sent_at": timefmt::format_millis(m.submitted_at + TimeDelta::seconds(1)),
        "completed_at": truth.at.map(timefmt::format_millis),
    }});
    (200, vec![], body.to_string())
}
