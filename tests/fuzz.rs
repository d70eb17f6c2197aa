//! Property tests of every parser that reads outside input: the carriers' response bodies, the `--status-map`
//! file, `submitted_at` values from the dispatcher's table, `--db` URLs and their percent escapes, the duration
//! and clock flags, the `Retry-After` header, and the masking of phone numbers and secrets in outside text for
//! logs. Whatever comes in, a parser returns a value or an error: it never panics (proptest counts a panic as a
//! failure), and what it returns is at most a fixed multiple of what it read, so that a broken or hostile carrier
//! cannot make one answer (at most 16 MiB, the transport's cap) cost more memory than its bytes allow.
//!
//! Inputs are arbitrary bytes and text, and near-valid ones built from each format's real shape with random
//! values: any Unicode, numbers past every integer and float range, nested junk where a field belongs, URLs of
//! `%` escapes (whole, cut short, bogus) and multi-byte characters. The time is bounded: every input is a few KiB
//! at most, every test runs a fixed number of cases and shrinks a failure for a bounded number of steps, and no
//! file of failures is written, so the whole file runs in seconds in a debug build; a failure prints its shrunk
//! input.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use dlr_poller::carrier::table::{Mapped, Outcome, Table};
use dlr_poller::carrier::{Report, generic, infobip, names, sinch, telnyx, twilio, vonage};
use dlr_poller::cli::{Cli, Command};
use dlr_poller::config::PollConfig;
use dlr_poller::domain::Category;
use dlr_poller::store::{DEFAULT_SUBMISSIONS, Target};
use dlr_poller::{config, percent, redact, retry, timefmt};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;

/// The runner's settings for a test of `cases` cases: no file of failures in the repository, and a bounded
/// search for the smallest failing input.
fn settings(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        max_shrink_time: 5_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// How much a parser may return for what it read.

/// How many times the size of its input a parser's output may be. An unreadable listing entry of two bytes
/// (`0,`) is described in about a hundred (its index, the JSON parser's message, the entry itself); a number
/// read as an error code may be spelt longer than it came (`1e5` is `100000.0`); nothing else grows.
const GROWTH: usize = 64;
/// What any output may have whatever its input: a description of an empty body.
const SLACK: usize = 1_024;

fn within(what: &str, output: usize, input: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        output <= GROWTH * input.len() + SLACK,
        "{what}: {output} bytes out of {} bytes in",
        input.len()
    );
    Ok(())
}

fn opt_len(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::len)
}

fn report_size(r: &Report) -> usize {
    r.tracking_id.len()
        + r.status.len()
        + opt_len(&r.status_group)
        + opt_len(&r.error_code)
        + opt_len(&r.error_message)
        + opt_len(&r.error_group)
        + opt_len(&r.status_updated_at)
}

/// Whether `text` holds no run of seven digits or more: what the poller takes for a phone number.
fn no_phone_number(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .all(|run| run.len() < 7)
}

/// The size of the reports, checking on the way that each, made safe to log and store, holds no phone number in
/// its words (its time is only ever stored read into the schema's form).
fn reports_size(reports: &[Report]) -> Result<usize, TestCaseError> {
    for report in reports {
        let safe = report.clone().redacted();
        prop_assert_eq!(&safe.tracking_id, &report.tracking_id);
        let words = [
            safe.status_group.as_ref(),
            safe.error_code.as_ref(),
            safe.error_message.as_ref(),
            safe.error_group.as_ref(),
        ];
        for text in words.into_iter().flatten().chain([&safe.status]) {
            prop_assert!(no_phone_number(text), "{:?} redacted is {:?}", report, safe);
        }
    }
    Ok(reports.iter().map(report_size).sum())
}

fn strings_size(strings: &[String]) -> usize {
    strings.iter().map(String::len).sum()
}

// ---------------------------------------------------------------------------------------------------------------
// Each carrier's parsers on one body: no panic, output bounded, and the promises each makes of its result.

fn check_generic(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(page) = generic::parse_batch_page(body) {
        prop_assert_ne!(page.next_page_token.as_deref(), Some(""));
        let size = reports_size(&page.messages)?
            + strings_size(&page.malformed)
            + opt_len(&page.next_page_token);
        within("generic::parse_batch_page", size, body)?;
    }
    if let Ok(report) = generic::parse_message(body) {
        within("generic::parse_message", reports_size(&[report])?, body)?;
    }
    Ok(())
}

fn check_twilio(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(page) = twilio::parse_list(body) {
        if let Some(next) = &page.next_page_uri {
            prop_assert!(
                next.starts_with('/') && !next.starts_with("//"),
                "next_page_uri {next:?} would leave the API host"
            );
        }
        let size = reports_size(&page.messages)?
            + strings_size(&page.malformed)
            + opt_len(&page.next_page_uri);
        within("twilio::parse_list", size, body)?;
    }
    if let Ok(report) = twilio::parse_message(body) {
        within("twilio::parse_message", reports_size(&[report])?, body)?;
    }
    Ok(())
}

fn check_vonage(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(records) = vonage::parse_records(body) {
        for id in &records.not_found {
            prop_assert!(
                !id.is_empty() && !id.contains(',') && id.trim() == id,
                "ids_not_found entry {id:?}"
            );
        }
        for r in &records.reports {
            prop_assert!(
                r.error_code.as_deref().is_none_or(|c| c.trim() != "0"),
                "error code 0 is Vonage's no error: {r:?}"
            );
            prop_assert!(r.error_message.is_none() || r.error_code.is_some(), "{r:?}");
        }
        let size = reports_size(&records.reports)?
            + strings_size(&records.not_found)
            + strings_size(&records.malformed);
        within("vonage::parse_records", size, body)?;
    }
    Ok(())
}

fn check_sinch(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(batch) = sinch::parse_batch(body) {
        // A code is 8 bytes.
        let size = batch
            .statuses
            .iter()
            .map(|(status, _)| status.len() + 8)
            .sum::<usize>()
            + batch
                .recipients
                .iter()
                .map(|(_, recipient)| 8 + recipient.len())
                .sum::<usize>()
            + strings_size(&batch.malformed);
        within("sinch::parse_batch", size, body)?;
    }
    if let Ok(r) = sinch::parse_recipient(body) {
        let size = r.recipient.len() + r.status.len() + opt_len(&r.at);
        within("sinch::parse_recipient", size, body)?;
    }
    Ok(())
}

fn check_infobip(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(logs) = infobip::parse_logs(body) {
        prop_assert_ne!(logs.next_cursor.as_deref(), Some(""));
        for r in &logs.reports {
            prop_assert!(
                r.error_code
                    .as_deref()
                    .is_none_or(|c| c.parse::<i64>().is_ok_and(|id| id != 0)),
                "error id 0 is Infobip's no error: {r:?}"
            );
        }
        let size = reports_size(&logs.reports)?
            + strings_size(&logs.malformed)
            + opt_len(&logs.next_cursor);
        within("infobip::parse_logs", size, body)?;
    }
    Ok(())
}

fn check_telnyx(body: &[u8], phone: Option<&str>) -> Result<(), TestCaseError> {
    if let Ok(message) = telnyx::parse_message(body) {
        within("telnyx::parse_message", message.id.len(), body)?;
        let report = message.report("T1", phone);
        prop_assert_eq!(report.tracking_id.as_str(), "T1");
        within("telnyx::Message::report", reports_size(&[report])?, body)?;
    }
    Ok(())
}

/// Every carrier parser on the same body, whatever it is. Each check also holds the parser's promises about its
/// result, and that its reports, redacted, hold no phone number.
fn check_every_carrier(body: &[u8]) -> Result<(), TestCaseError> {
    check_generic(body)?;
    check_twilio(body)?;
    check_vonage(body)?;
    check_sinch(body)?;
    check_infobip(body)?;
    check_telnyx(body, Some("+1 (844) 555-0001"))?;
    check_telnyx(body, None)
}

// ---------------------------------------------------------------------------------------------------------------
// JSON of the carriers' real shapes, with random values.

/// The field names of every carrier's bodies, so that junk objects often look like the real thing.
const FIELDS: [&str; 32] = [
    "messages",
    "tracking_id",
    "status",
    "error_code",
    "error_message",
    "status_updated_at",
    "next_page_token",
    "sid",
    "date_updated",
    "date_sent",
    "next_page_uri",
    "records",
    "message_id",
    "request_status",
    "ids_not_found",
    "error_code_description",
    "date_finalized",
    "statuses",
    "recipients",
    "recipient",
    "code",
    "at",
    "results",
    "messageId",
    "groupName",
    "name",
    "error",
    "doneAt",
    "cursor",
    "nextCursor",
    "data",
    "to",
];

/// Text of any Unicode: control characters, quotes and backslashes, multi-byte and astral characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A JSON string of any text, or one spelt with escapes (lone surrogates among them, which are not text).
fn json_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => text(24).prop_map(|s| quoted(&s)),
        1 => r#""(\\u[0-9a-fA-F]{4}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\\[\\"/bfnrt]|[a-zé€𝄞 ,%+]){0,12}""#,
    ]
    .boxed()
}

/// A JSON number of any size: past every integer type, past the range of a float or below its precision, and
/// some spellings JSON does not allow.
fn json_number() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| serde_json::to_string(&f).expect("a float serialises")),
        "-?[1-9][0-9]{19,60}",
        "-?[0-9]\\.[0-9]{1,20}[eE][+-]?[0-9]{1,4}",
        "-?0[0-9]{1,3}|[+.][0-9]{1,3}|-",
    ]
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![3 => select(FIELDS.to_vec()).prop_map(quoted), 1 => json_string()].boxed()
}

fn render(fields: &[(String, String)]) -> String {
    let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", fields.join(","))
}

/// Any JSON value, nested a few levels (and now and then a broken one).
fn junk() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        4 => select(vec!["null", "true", "false", "{}", "[]"]).prop_map(str::to_string),
        4 => json_number(),
        4 => json_string(),
        1 => select(vec!["", "{", "]", "nul", "\"", "[1,]", "{\"a\"}"]).prop_map(str::to_string),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(|items| format!("[{}]", items.join(","))),
            vec((key(), inner), 0..5).prop_map(|fields| render(&fields)),
        ]
    })
    .boxed()
}

type Field = Option<(String, String)>;

/// A field of a real shape: mostly a value of its type, else junk, else missing.
fn field(name: &'static str, value: BoxedStrategy<String>) -> BoxedStrategy<Field> {
    let name = quoted(name);
    let junk_name = name.clone();
    prop_oneof![
        6 => value.prop_map(move |v| Some((name.clone(), v))),
        1 => junk().prop_map(move |v| Some((junk_name.clone(), v))),
        1 => Just(None),
    ]
    .boxed()
}

/// An object with the fields, and now and then junk fields (a known name again, or another).
fn object(fields: Vec<BoxedStrategy<Field>>) -> BoxedStrategy<String> {
    (fields, vec((key(), junk()), 0..3))
        .prop_map(|(fields, extra)| {
            let mut all: Vec<(String, String)> = fields.into_iter().flatten().collect();
            all.extend(extra);
            render(&all)
        })
        .boxed()
}

/// An array of up to `max` items, some of them junk.
fn array(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    vec(prop_oneof![5 => item, 1 => junk()], 0..max)
        .prop_map(|items| format!("[{}]", items.join(",")))
        .boxed()
}

fn or_null(value: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![3 => value, 1 => Just("null".to_string())].boxed()
}

/// An error code: a number or a string, as carriers send them.
fn code() -> BoxedStrategy<String> {
    prop_oneof![json_number(), json_string(), Just("0".to_string())].boxed()
}

/// A phone number in any spelling, or text.
fn phone() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "\\+?[0-9]{0,16}|\\+?[0-9]{1,4}[ ()-]{1,2}[0-9]{3,12}".prop_map(|s| quoted(&s)),
        1 => json_string(),
    ]
    .boxed()
}

fn timestamp() -> BoxedStrategy<String> {
    timestamp_text().prop_map(|s| quoted(&s)).boxed()
}

fn two_digits(range: std::ops::RangeInclusive<u32>) -> BoxedStrategy<String> {
    prop_oneof![5 => range.prop_map(|n| format!("{n:02}")), 1 => "[0-9]{1,3}"].boxed()
}

/// Timestamps as the providers spell them (RFC 3339, RFC 2822, ISO 8601 with `+0000`; PostgreSQL's and SQLite's
/// forms of `submitted_at`), with any year, fractions of any length and any offset, and now and then out of
/// range or not a time at all.
fn timestamp_text() -> BoxedStrategy<String> {
    let year = || {
        prop_oneof![
            6 => (1970u32..=2100).prop_map(|y| y.to_string()),
            2 => select(vec!["0000", "0001", "9999", "1969"]).prop_map(str::to_string),
            1 => "[0-9]{4}",
            1 => "[+-]?[0-9]{1,3}|[+-]?[0-9]{5,20}",
        ]
    };
    let time = || (two_digits(0..=24), two_digits(0..=59), two_digits(0..=60));
    let fraction =
        prop_oneof![3 => Just(String::new()), 2 => "\\.[0-9]{1,12}", 1 => "\\.[0-9]{13,40}|\\."];
    let offset = prop_oneof![
        3 => select(vec!["Z", "+00", "+0000", "+00:00", ""]).prop_map(str::to_string),
        3 => "[+-](0[0-9]|1[0-9]|2[0-3])(:?[0-5][0-9])?",
        1 => "[+-][0-9]{1,5}|[+-][0-9]{2}:[0-9]{2}|z| GMT| UTC|[+-]",
    ];
    let iso = (
        year(),
        two_digits(1..=12),
        two_digits(1..=31),
        select(vec!["T", " ", "t"]),
        time(),
        fraction,
        offset,
    )
        .prop_map(|(y, mo, d, sep, (h, mi, s), f, o)| {
            format!("{y}-{mo}-{d}{sep}{h}:{mi}:{s}{f}{o}")
        });
    let rfc2822 = (
        "(Mon|Fri|Sun|Xyz), ",
        two_digits(1..=31),
        " (Jan|May|Dec|Foo) ",
        year(),
        time(),
        " ([+-][0-9]{4}|GMT|UT|EST|A)",
    )
        .prop_map(|(wd, d, mo, y, (h, mi, s), o)| format!("{wd}{d}{mo}{y} {h}:{mi}:{s}{o}"));
    // At the ends of the range a time may read, and an offset carry it past them.
    let edge = select(vec![
        "9999-12-31T23:59:59-01:00",
        "9999-12-31 23:59:59-01",
        "0000-01-01T00:00:00+01:00",
        "0000-01-01 00:00:00+01",
        "+10000-01-01 00:00:00",
        "-0001-01-01 00:00:00",
        "Fri, 31 Dec 9999 23:59:59 -0100",
        "2016-12-31T23:59:60Z",
        "2016-12-31 23:59:60.999999999",
    ])
    .prop_map(str::to_string);
    prop_oneof![6 => iso, 2 => rfc2822, 1 => edge, 1 => text(24)].boxed()
}

fn generic_message() -> BoxedStrategy<String> {
    object(vec![
        field("tracking_id", json_string()),
        field("status", json_string()),
        field("error_code", or_null(code())),
        field("error_message", or_null(json_string())),
        field("status_updated_at", or_null(timestamp())),
    ])
}

fn generic_page() -> BoxedStrategy<String> {
    object(vec![
        field("batch_id", json_string()),
        field("messages", array(generic_message(), 8)),
        field("next_page_token", or_null(json_string())),
    ])
}

fn twilio_message() -> BoxedStrategy<String> {
    let sid = prop_oneof![
        "SM[0-9a-f]{32}|MM[0-9a-fA-F]{32}|SM[+-][0-9a-f]{31}".prop_map(|s| quoted(&s)),
        json_string(),
    ];
    object(vec![
        field("sid", sid.boxed()),
        field("status", json_string()),
        field("error_code", or_null(code())),
        field("error_message", or_null(json_string())),
        field("date_updated", or_null(timestamp())),
        field("date_sent", or_null(timestamp())),
    ])
}

fn twilio_list() -> BoxedStrategy<String> {
    let next = prop_oneof![
        "/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\\.json\\?PageSize=1000&Page=[0-9]{1,3}"
            .prop_map(|s| quoted(&s)),
        select(vec![
            "//evil.example/x",
            "https://evil.example/",
            "",
            "/",
            "x/y"
        ])
        .prop_map(quoted),
        json_string(),
    ];
    object(vec![
        field("messages", array(twilio_message(), 8)),
        field("next_page_uri", or_null(next.boxed())),
    ])
}

fn vonage_records() -> BoxedStrategy<String> {
    let record = object(vec![
        field("message_id", json_string()),
        field("status", json_string()),
        field("error_code", or_null(code())),
        field("error_code_description", or_null(json_string())),
        field("date_finalized", or_null(timestamp())),
        field("date_received", or_null(timestamp())),
    ]);
    let request_status = prop_oneof![
        select(vec!["SUCCESS", "FAILED", "ABORTED", "TRUNCATED", "PENDING"]).prop_map(quoted),
        json_string(),
    ];
    let not_found = prop_oneof![
        "([0-9a-f-]{0,12}[ ,]{0,2}){0,6}".prop_map(|s| quoted(&s)),
        json_string()
    ];
    object(vec![
        field("request_status", or_null(request_status.boxed())),
        field("ids_not_found", or_null(not_found.boxed())),
        field("records", array(record, 8)),
    ])
}

fn sinch_batch() -> BoxedStrategy<String> {
    let status = object(vec![
        field("status", json_string()),
        field("code", or_null(json_number())),
        field("count", json_number()),
        field("recipients", array(phone(), 6)),
    ]);
    object(vec![
        field("type", json_string()),
        field("batch_id", json_string()),
        field("statuses", array(status, 6)),
    ])
}

fn sinch_recipient() -> BoxedStrategy<String> {
    object(vec![
        field("recipient", phone()),
        field("status", json_string()),
        field("code", or_null(json_number())),
        field("at", or_null(timestamp())),
    ])
}

fn infobip_logs() -> BoxedStrategy<String> {
    let status = object(vec![
        field("groupName", or_null(json_string())),
        field("name", or_null(json_string())),
    ]);
    let error = object(vec![
        field("groupName", or_null(json_string())),
        field("id", or_null(json_number())),
        field("name", or_null(json_string())),
        field("description", or_null(json_string())),
        field(
            "permanent",
            or_null(
                select(vec!["true", "false"])
                    .prop_map(str::to_string)
                    .boxed(),
            ),
        ),
    ]);
    let log = object(vec![
        field("messageId", json_string()),
        field("status", status),
        field("error", or_null(error)),
        field("doneAt", or_null(timestamp())),
        field("sentAt", or_null(timestamp())),
    ]);
    let cursor = object(vec![field("nextCursor", or_null(json_string()))]);
    object(vec![
        field("results", array(log, 8)),
        field("cursor", or_null(cursor)),
    ])
}

fn telnyx_message() -> BoxedStrategy<String> {
    let recipient = object(vec![
        field("phone_number", or_null(phone())),
        field("status", json_string()),
    ]);
    let error = object(vec![
        field("code", or_null(code())),
        field("title", or_null(json_string())),
        field("detail", or_null(json_string())),
    ]);
    let data = object(vec![
        field("id", json_string()),
        field("to", array(recipient, 4)),
        field("errors", array(error, 3)),
        field("completed_at", or_null(timestamp())),
        field("sent_at", or_null(timestamp())),
    ]);
    object(vec![field("data", data)])
}

// ---------------------------------------------------------------------------------------------------------------
// Real bodies, edited a few bytes at a time.

const GENERIC_PAGE: &str = concat!(
    r#"{"batch_id":"B1","messages":["#,
    r#"{"tracking_id":"T1","status":"DELIVERED","error_code":null,"error_message":"caf\u00e9","#,
    r#""status_updated_at":"2025-12-01T09:03:12Z"},"#,
    r#"{"tracking_id":"T2","status":"FAILED","error_code":30003,"error_message":null,"status_updated_at":null}"#,
    r#"],"next_page_token":"p2"}"#,
);

const FIXTURES: [&[u8]; 9] = [
    GENERIC_PAGE.as_bytes(),
    include_bytes!("fixtures/carriers/twilio.list.json"),
    include_bytes!("fixtures/carriers/twilio.message.json"),
    include_bytes!("fixtures/carriers/vonage.records.json"),
    include_bytes!("fixtures/carriers/sinch.batch.full.json"),
    include_bytes!("fixtures/carriers/sinch.batch.summary.json"),
    include_bytes!("fixtures/carriers/sinch.recipient.json"),
    include_bytes!("fixtures/carriers/infobip.logs.json"),
    include_bytes!("fixtures/carriers/telnyx.message.json"),
];

/// What an edit puts in: JSON's own characters, escapes, a multi-byte character, bytes that are not UTF-8.
#[rustfmt::skip]
const SPLICES: [&[u8]; 20] = [
    b"{", b"}", b"[", b"]", b"\"", b":", b",", b"0", b"9", b"-", b".", b"e", b"\\", b"\\u", b"null", b"1e999",
    "é".as_bytes(), "𝄞".as_bytes(), b"\xff", b"\xc3",
];

/// A fixture with up to eight edits: a byte replaced, a splice inserted, or a few bytes cut.
fn mutated_fixture() -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<Index>(), 0..3u8, select(SPLICES.to_vec()), 1..8usize);
    (select(FIXTURES.to_vec()), vec(edit, 1..8)).prop_map(|(fixture, edits)| {
        let mut body = fixture.to_vec();
        for (at, op, splice, cut) in edits {
            let at = at.index(body.len().max(1)).min(body.len());
            match op {
                0 if at < body.len() => body[at] = splice[0],
                2 => drop(body.drain(at..(at + cut).min(body.len()))),
                _ => drop(body.splice(at..at, splice.iter().copied())),
            }
        }
        body
    })
}

proptest! {
    #![proptest_config(settings(512))]

    // Each check also holds the parsers' promises about their results, and redacts every report it gets to see
    // that no phone number is left (`check_every_carrier`).
    #[test]
    fn carrier_parsers_never_panic_and_stay_bounded_on_arbitrary_bytes(body in vec(any::<u8>(), 0..4096)) {
        check_every_carrier(&body)?;
    }

    #[test]
    fn carrier_parsers_never_panic_and_stay_bounded_on_arbitrary_text(body in text(1024)) {
        check_every_carrier(body.as_bytes())?;
    }

    #[test]
    fn carrier_parsers_never_panic_and_stay_bounded_on_edited_real_bodies(body in mutated_fixture()) {
        check_every_carrier(&body)?;
    }
}

proptest! {
    #![proptest_config(settings(256))]

    #[test]
    fn generic_parsers_never_panic_and_stay_bounded_on_near_valid_json(
        page in generic_page(),
        message in generic_message(),
    ) {
        check_generic(page.as_bytes())?;
        check_generic(message.as_bytes())?;
    }

    #[test]
    fn twilio_parsers_never_panic_and_stay_bounded_on_near_valid_json(
        list in twilio_list(),
        message in twilio_message(),
    ) {
        check_twilio(list.as_bytes())?;
        check_twilio(message.as_bytes())?;
    }

    #[test]
    fn vonage_parser_never_panics_and_stays_bounded_on_near_valid_json(records in vonage_records()) {
        check_vonage(records.as_bytes())?;
    }

    #[test]
    fn sinch_parsers_never_panic_and_stay_bounded_on_near_valid_json(
        batch in sinch_batch(),
        recipient in sinch_recipient(),
    ) {
        check_sinch(batch.as_bytes())?;
        check_sinch(recipient.as_bytes())?;
    }

    #[test]
    fn infobip_parser_never_panics_and_stays_bounded_on_near_valid_json(logs in infobip_logs()) {
        check_infobip(logs.as_bytes())?;
    }

    #[test]
    fn telnyx_parser_never_panics_and_stays_bounded_on_near_valid_json(
        message in telnyx_message(),
        wanted in proptest::option::of("\\+?[0-9 ()-]{0,16}"),
    ) {
        check_telnyx(message.as_bytes(), wanted.as_deref())?;
    }
}

proptest! {
    #![proptest_config(settings(64))]

    /// One status shared by many recipients: each recipient's entry may cost its own bytes and a constant, not a
    /// copy of the status.
    #[test]
    fn sinch_batch_report_grows_linearly_with_recipients_sharing_a_status(
        status_len in 0..4096usize,
        recipients in 0..1024usize,
    ) {
        let body = format!(
            r#"{{"statuses":[{{"status":"{}","code":0,"recipients":[{}]}}]}}"#,
            "x".repeat(status_len),
            vec![r#""""#; recipients].join(",")
        );
        check_sinch(body.as_bytes())?;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Times: the providers' timestamps (read through a Twilio message, whose `date_updated` is the shared timestamp
// reader's input) and `submitted_at`.

/// The stored form: RFC 3339 in UTC, whole seconds, fixed width (so that SQL orders it as text).
fn check_stored_form(stored: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        stored.len(),
        20,
        "{:?} is not of the stored form's width",
        stored
    );
    let read = timefmt::parse(stored);
    prop_assert!(read.is_ok(), "{:?} does not read back", stored);
    prop_assert_eq!(timefmt::format(read.unwrap()), stored);
    Ok(())
}

proptest! {
    #![proptest_config(settings(512))]

    #[test]
    fn carrier_timestamps_are_read_into_the_fixed_width_utc_form(raw in timestamp_text()) {
        let body = format!(r#"{{"sid":"SM1","status":"sent","date_updated":{}}}"#, quoted(&raw));
        let report = twilio::parse_message(body.as_bytes());
        prop_assert!(report.is_ok(), "{body}");
        if let Some(stored) = report.unwrap().status_updated_at {
            check_stored_form(&stored)?;
        }
    }

    #[test]
    fn submitted_at_is_stored_in_the_fixed_width_form_and_takes_every_rfc_3339_time(
        raw in timestamp_text(),
    ) {
        if let Ok(t) = timefmt::parse_submitted(&raw) {
            check_stored_form(&timefmt::format(t))?;
        }
        if let Ok(t) = timefmt::parse(&raw) {
            check_stored_form(&timefmt::format(t))?;
            prop_assert_eq!(timefmt::parse_submitted(&raw).ok(), Some(t));
        }
    }

    /// A time the carrier spells in no known way is left out; the report is kept.
    #[test]
    fn time_parsers_never_panic_and_an_unreadable_carrier_time_keeps_the_report(raw in text(64)) {
        let _ = timefmt::parse_submitted(&raw);
        let _ = timefmt::parse(&raw);
        let body = format!(r#"{{"sid":"SM1","status":"sent","date_updated":{}}}"#, quoted(&raw));
        prop_assert!(twilio::parse_message(body.as_bytes()).is_ok());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Flags and headers: durations, --now, Retry-After.

const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

proptest! {
    #![proptest_config(settings(512))]

    #[test]
    fn durations_parse_to_the_sum_of_their_parts_or_fail(
        parts in vec(
            (prop_oneof![0..100u64, 0..=u64::from(u32::MAX) + 1, any::<u64>()], 0..8usize),
            1..5,
        ),
        junk_unit in select(vec!["x", "µs", "M", " s", "mss", "é"]),
    ) {
        let raw: String = parts
            .iter()
            .map(|&(n, unit)| format!("{n}{}", UNITS.get(unit).map_or(junk_unit, |u| u.0)))
            .collect();
        let expected = parts.iter().try_fold(0u128, |total, &(n, unit)| {
            let (_, millis) = UNITS.get(unit)?;
            u32::try_from(n).ok()?;
            Some(total + u128::from(n) * u128::from(*millis))
        });
        let parsed = config::parse_duration(&raw);
        let millis = parsed.as_ref().ok().map(Duration::as_millis);
        prop_assert_eq!(millis, expected, "{:?}: {:?}", raw, parsed);
    }

    #[test]
    fn humanized_durations_parse_back(millis in 0..u64::from(u32::MAX), whole in any::<bool>()) {
        let d = if whole { Duration::from_secs(millis) } else { Duration::from_millis(millis) };
        let shown = timefmt::humanize(d);
        prop_assert_eq!(config::parse_duration(&shown).ok(), Some(d), "{}", shown);
    }

    #[test]
    fn duration_flags_stay_in_bounds_or_name_the_flag(
        raw in prop_oneof![text(24), "[0-9]{1,12}(ms|s|m|h|d)([0-9]{1,4}(ms|s|m|h|d))?"],
        min_ms in 0..100_000u64,
        span_ms in 0..10_000_000u64,
    ) {
        let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(min_ms + span_ms));
        match config::bounded_duration(&raw, "--flag-x (env DLR_X)", min, max) {
            Ok(d) => prop_assert!(min <= d && d <= max, "{:?} gave {:?}", raw, d),
            Err(e) => prop_assert!(format!("{e:#}").contains("--flag-x (env DLR_X)"), "{e:#}"),
        }
        match config::busy_timeout(&raw) {
            Ok(d) => prop_assert!(d <= Duration::from_secs(3600), "{:?} gave {:?}", raw, d),
            Err(e) => prop_assert!(format!("{e:#}").contains("--busy-timeout"), "{e:#}"),
        }
    }

    #[test]
    fn now_flag_is_never_past_the_clock_unless_allowed(
        raw in prop_oneof![3 => timestamp_text(), 1 => text(32)],
        system_secs in 0..4_102_444_800i64,
        allow_future in any::<bool>(),
    ) {
        let system = DateTime::<Utc>::from_timestamp(system_secs, 0).expect("in range");
        match config::clock(&raw, allow_future, system) {
            Ok(now) => prop_assert!(allow_future || now <= system + config::FUTURE_TOLERANCE),
            Err(e) => prop_assert!(format!("{e:#}").contains("--now"), "{e:#}"),
        }
    }

    #[test]
    fn retry_after_reads_whole_seconds_and_loopback_check_never_panics(
        raw in prop_oneof![text(32), "[0-9]{1,30}", "[ \t]*[0-9]{1,5}[ \t]*"],
    ) {
        let digits = raw.trim();
        let expected = digits.parse::<u64>().ok().map(Duration::from_secs);
        prop_assert_eq!(retry::parse_retry_after(&raw), expected);
        let _ = dlr_poller::host::is_loopback(&raw);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// All of `poll`'s flags at once, through the command line and the validation that runs before anything is opened.

/// A `--carrier-url` of random parts; the secrets in it (a password before `@`, a query's key).
fn carrier_url() -> impl Strategy<Value = (String, Vec<String>)> {
    let scheme = select(vec![
        "https://", "http://", "HTTPS://", "ftp://", "", "https:/", "//",
    ]);
    let password = "Pw[a-zA-Z0-9]{6}([/?#@:][a-zA-Z0-9]{6})?Qx";
    let userinfo = proptest::option::of(("[a-z]{1,6}", password));
    let host = prop_oneof![
        3 => select(vec!["carrier.example", "127.0.0.1", "localhost", "[::1]", "[::1", "a b", ""])
            .prop_map(str::to_string),
        1 => url_text(4),
    ];
    let port = proptest::option::of(prop_oneof![
        any::<u16>().prop_map(|p| p.to_string()),
        "[0-9]{6,12}",
        url_text(2),
    ]);
    let path = proptest::option::of(url_text(6));
    let query = proptest::option::of(prop_oneof![
        "(api_key|token|x)=K3y[a-zA-Z0-9]{6}",
        url_text(4),
    ]);
    (scheme, userinfo, host, port, path, query, "/{0,3}").prop_map(
        |(scheme, userinfo, host, port, path, query, slashes)| {
            let mut url = scheme.to_string();
            let mut secrets = Vec::new();
            if let Some((user, password)) = userinfo {
                url.push_str(&format!("{user}:{password}@"));
                secrets.push(password);
            }
            url.push_str(&host);
            if let Some(port) = port {
                url.push_str(&format!(":{port}"));
            }
            if let Some(path) = path {
                url.push_str(&format!("/{path}"));
            }
            if let Some(query) = query {
                url.push_str(&format!("?{query}"));
                if let Some((name, key)) = query.split_once("=K3y")
                    && name != "x"
                {
                    secrets.push(format!("K3y{key}"));
                }
            }
            url.push_str(&slashes);
            (url, secrets)
        },
    )
}

proptest! {
    #![proptest_config(settings(256))]

    /// A bad value is an error naming its flag or variable, never repeating a secret of the carrier URL; the
    /// values resolved lie within their flags' bounds, and the resolved config, printed, hides the token.
    #[test]
    fn poll_flags_resolve_within_bounds_or_name_the_flag(
        carrier in prop_oneof![3 => select(names()).prop_map(str::to_string), 1 => text(8)],
        (url, secrets) in proptest::option::of(carrier_url()).prop_map(Option::unzip),
        account in proptest::option::of(prop_oneof!["AC[0-9a-f]{32}", "[a-zA-Z0-9]{8}", text(12)]),
        numbers in vec(prop_oneof!["[0-9]{1,6}", "-?[0-9]{1,25}", text(6)], 3),
        durations in vec(prop_oneof!["[0-9]{1,6}(ms|s|m|h|d)", text(8)], 3),
        now in proptest::option::of(timestamp_text()),
        (allow_future_now, allow_insecure_http) in (any::<bool>(), any::<bool>()),
        token in proptest::option::of(prop_oneof!["Tk[a-z0-9]{8}", text(6)]),
    ) {
        let mut args = vec![
            "dlr-poller".to_string(),
            "poll".to_string(),
            format!("--carrier={carrier}"),
            format!("--concurrency={}", numbers[0]),
            format!("--max-attempts={}", numbers[1]),
            format!("--max-rps={}", numbers[2]),
            format!("--deadline={}", durations[0]),
            format!("--request-timeout={}", durations[1]),
            format!("--catch-up={}", durations[2]),
        ];
        let optional = [("carrier-url", &url), ("carrier-account", &account), ("now", &now)];
        for (flag, value) in optional {
            if let Some(value) = value {
                args.push(format!("--{flag}={value}"));
            }
        }
        for (flag, on) in [("allow-future-now", allow_future_now), ("allow-insecure-http", allow_insecure_http)] {
            if on {
                args.push(format!("--{flag}"));
            }
        }
        let Ok(cli) = Cli::try_parse_from(&args) else {
            return Ok(());
        };
        let Command::Poll(poll) = cli.command else {
            return Err(TestCaseError::fail("`poll` parsed as another command"));
        };
        let url = url.unwrap_or_default();
        match PollConfig::resolve(&poll, token.clone()) {
            Ok(c) => {
                prop_assert!((1..=256).contains(&c.concurrency), "{:?}", c);
                prop_assert!((1..=20).contains(&c.max_attempts), "{:?}", c);
                prop_assert!(c.max_rps.is_none_or(|r| (1..=100_000).contains(&r)), "{:?}", c);
                let deadline = Duration::from_secs(1)..=Duration::from_secs(24 * 3600);
                prop_assert!(deadline.contains(&c.deadline), "{:?}", c);
                let timeout = Duration::from_millis(100)..=Duration::from_secs(600);
                prop_assert!(timeout.contains(&c.request_timeout), "{:?}", c);
                prop_assert!(!c.carrier_url.ends_with('/') && !c.carrier_url.contains('@'), "{:?}", c);
                let shown = format!("{c:?}");
                let token = token.unwrap_or_default();
                prop_assert!(token.trim().is_empty() || !shown.contains(token.trim()), "{}", shown);
            }
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(message.contains("--") || message.contains("env "), "{}", message);
                for secret in secrets.iter().flatten() {
                    for part in fragments(secret, &url) {
                        prop_assert!(!message.contains(part), "{} is shown as {}", url, message);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The --status-map file.

const OUTCOMES: [(&str, Outcome); 4] = [
    ("DELIVERED", Outcome::Delivered),
    ("FAILED", Outcome::Failed),
    ("PENDING", Outcome::Pending),
    ("UNCONFIRMED", Outcome::Unconfirmed),
];

/// A word of a table line: no whitespace, no comment sign.
const WORD: &str = "[^\\s#]{1,10}";

fn blank() -> impl Strategy<Value = &'static str> {
    select(vec![" ", "\t", "  ", "\u{a0}", "\u{3000}"])
}

fn header() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(names()).prop_map(|p| format!("[{p}]")),
        1 => select(names()).prop_map(|p| format!("[ {} ]", p.to_ascii_uppercase())),
        1 => "\\[[^\\]\n]{0,8}\\]?|\\[\\]|\\]",
    ]
    .boxed()
}

/// A line of a `--status-map` file, mostly of a table line's shape.
fn map_line() -> BoxedStrategy<String> {
    let kind = prop_oneof![
        4 => select(vec!["status", "status-group", "code", "code-group"]).prop_map(str::to_string),
        1 => WORD,
    ];
    let value = prop_oneof![
        2 => select(OUTCOMES.map(|o| o.0).to_vec()).prop_map(str::to_string),
        2 => select(Category::ALL.to_vec()).prop_map(|c| c.as_str().to_string()),
        1 => WORD,
    ];
    let entry = (
        kind,
        blank(),
        WORD,
        blank(),
        value,
        vec(WORD, 0..3),
        "( *#.{0,12})?",
    )
        .prop_map(|(kind, b1, key, b2, value, rest, comment)| {
            format!("{kind}{b1}{key}{b2}{value} {}{comment}", rest.join(" "))
        });
    prop_oneof![
        6 => entry,
        2 => header(),
        1 => "#.{0,20}",
        1 => text(40),
        1 => Just(String::new()),
    ]
    .boxed()
}

/// A temporary `--status-map` file holding `content`.
fn status_map(content: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temp file");
    file.write_all(content).expect("writing the temp file");
    file
}

fn check_status_map(
    provider: &str,
    content: &[u8],
    probes: &[String],
) -> Result<(), TestCaseError> {
    let file = status_map(content);
    if let Ok(table) = Table::load(provider, Some(file.path())) {
        for probe in probes {
            let report = Report {
                status: probe.clone(),
                status_group: Some(probe.clone()),
                error_code: Some(probe.clone()),
                error_group: Some(probe.clone()),
                ..Report::default()
            };
            let _ = table.map(&report);
            let _ = table.category(&report);
            let _ = table.meaning(probe);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(settings(256))]

    #[test]
    fn status_map_of_any_bytes_loads_or_fails_cleanly(
        provider in select(names()),
        content in vec(any::<u8>(), 0..2048),
        probes in vec(text(12), 0..4),
    ) {
        check_status_map(provider, &content, &probes)?;
    }

    #[test]
    fn status_map_of_near_valid_lines_loads_or_fails_cleanly(
        provider in select(names()),
        lines in vec((map_line(), select(vec!["\n", "\r\n"])), 0..24),
        probes in vec(WORD, 0..4),
    ) {
        let content: String = lines.iter().map(|(line, end)| format!("{line}{end}")).collect();
        check_status_map(provider, content.as_bytes(), &probes)?;
    }

    /// The provider's own section's entries override the built-in table, the last entry of a word winning;
    /// other providers' sections change nothing.
    #[test]
    fn status_map_entries_are_looked_up_as_written(
        provider in select(names()),
        other in select(names()),
        entries in vec(
            (
                any::<bool>(),
                WORD,
                select(OUTCOMES.to_vec()),
                select(Category::ALL.to_vec()),
                vec(WORD, 0..3),
                blank(),
            ),
            1..12,
        ),
        foreign in vec((WORD, select(OUTCOMES.to_vec())), 0..4),
    ) {
        let mut content = format!("[ {} ]\n", provider.to_ascii_uppercase());
        let mut statuses = HashMap::new();
        let mut codes = HashMap::new();
        for (is_status, key, (outcome_name, outcome), category, meaning, gap) in &entries {
            if *is_status {
                content.push_str(&format!("status{gap}{key}{gap}{outcome_name}  # comment\n"));
                statuses.insert(key.to_ascii_uppercase(), *outcome);
            } else {
                let words = meaning.join(gap);
                content.push_str(&format!("code {key} {category}{gap}{words}\r\n"));
                let meaning = (!meaning.is_empty()).then(|| meaning.join(" "));
                codes.insert(key.to_ascii_uppercase(), (*category, meaning));
            }
        }
        if other != provider {
            content.push_str(&format!("[{other}]\n"));
            for (key, (outcome_name, _)) in &foreign {
                content.push_str(&format!("status {key} {outcome_name}\n"));
            }
        }
        let file = status_map(content.as_bytes());
        let table = Table::load(provider, Some(file.path()));
        prop_assert!(table.is_ok(), "{:#}\n{}", table.err().unwrap(), content);
        let table = table.unwrap();
        for (key, outcome) in &statuses {
            let report = Report { status: key.clone(), ..Report::default() };
            prop_assert_eq!(table.map(&report), Mapped { outcome: *outcome, known: true }, "{}", key);
        }
        for (key, (category, meaning)) in &codes {
            let report = Report { error_code: Some(key.to_ascii_lowercase()), ..Report::default() };
            prop_assert_eq!(table.category(&report), *category, "{}", key);
            prop_assert_eq!(table.meaning(key), meaning.as_deref(), "{}", key);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The --db URL.

/// Text of a URL part: plain characters, `%` escapes (whole, cut short, bogus), multi-byte characters, the URL's
/// own separators.
fn url_text(max: usize) -> BoxedStrategy<String> {
    vec(
        prop_oneof![
            4 => "[a-zA-Z0-9._~-]{1,6}",
            2 => "%[0-9a-fA-F]{2}",
            2 => "%[0-9a-fA-F]?",
            1 => "%[g-zG-Z%]{1,2}",
            2 => "[éü€𝄞ßあ]",
            1 => any::<char>().prop_map(String::from),
            1 => "[@:/?&=#,\\[\\] +]",
        ],
        0..max,
    )
    .prop_map(|pieces| pieces.concat())
    .boxed()
}

fn host() -> BoxedStrategy<String> {
    let name = prop_oneof![
        3 => select(vec![
            "localhost",
            "127.0.0.1",
            "[::1]",
            "db.example.com",
            "10.1.2.3",
            "%2Ftmp%2Fpg",
            "[fe80::1%25eth0]",
        ])
        .prop_map(str::to_string),
        2 => url_text(4),
    ];
    let port = proptest::option::of(prop_oneof![
        any::<u16>().prop_map(|p| p.to_string()),
        "[0-9]{6,30}",
        url_text(3),
    ]);
    (name, port)
        .prop_map(|(name, port)| match port {
            Some(port) => format!("{name}:{port}"),
            None => name,
        })
        .boxed()
}

/// A query parameter: the ones the poller and libpq read, with right and wrong values, and others.
fn parameter() -> BoxedStrategy<String> {
    let known = select(vec![
        "sslrootcert",
        "sslmode",
        "connect_timeout",
        "keepalives_idle",
        "tcp_user_timeout",
        "keepalives",
        "application_name",
        "options",
        "host",
        "hostaddr",
        "port",
        "user",
        "password",
        "dbname",
        "target_session_attrs",
        "channel_binding",
        "load_balance_hosts",
    ]);
    let value = prop_oneof![
        3 => url_text(8),
        1 => select(vec![
            "disable",
            "require",
            "verify-ca",
            "verify-full",
            "allow",
            "prefer",
            "1",
            "0",
            "-1",
            "18446744073709551616",
        ])
        .prop_map(str::to_string),
    ];
    prop_oneof![
        // sslrootcert is the one value the poller decodes itself.
        3 => url_text(8).prop_map(|v| format!("sslrootcert={v}")),
        4 => (known, value.clone()).prop_map(|(k, v)| format!("{k}={v}")),
        1 => (url_text(4), value).prop_map(|(k, v)| format!("{k}={v}")),
        1 => url_text(4),
    ]
    .boxed()
}

/// A `--db` URL of random parts; its userinfo's password, when it has one.
fn db_url() -> impl Strategy<Value = (String, Option<String>)> {
    // A password as it should be, with a URL's separator left unescaped in it, or of any pieces.
    let password = prop_oneof![
        2 => "Pw[a-zA-Z0-9]{8,12}",
        2 => "Pw[a-zA-Z0-9]{6}[/?#@:&=,%\\[\\]][a-zA-Z0-9]{6}Qx",
        1 => url_text(6),
    ];
    // The user name ends at the first ':' and the userinfo at the last '@' before the path.
    let user = url_text(4).prop_map(|u| u.replace(['/', '?', '#', '@', ':'], ""));
    let userinfo = proptest::option::of((user, proptest::option::of(password)));
    (
        select(vec!["postgres", "postgresql"]),
        userinfo,
        vec(host(), 0..3),
        proptest::option::of(url_text(6)),
        vec(parameter(), 0..5),
    )
        .prop_map(|(scheme, userinfo, hosts, db, params)| {
            let mut url = format!("{scheme}://");
            let mut password = None;
            if let Some((user, pass)) = userinfo {
                url.push_str(&user);
                if let Some(pass) = pass {
                    url.push(':');
                    url.push_str(&pass);
                    password = Some(pass);
                }
                url.push('@');
            }
            url.push_str(&hosts.join(","));
            if let Some(db) = db {
                url.push('/');
                url.push_str(&db);
            }
            if !params.is_empty() {
                url.push('?');
                url.push_str(&params.join("&"));
            }
            (url, password)
        })
}

fn submissions_table() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(DEFAULT_SUBMISSIONS.to_string()),
        1 => "[a-zA-Z_][a-zA-Z0-9_$]{0,8}(\\.[a-zA-Z_][a-zA-Z0-9_$]{0,8})?",
        1 => text(12),
    ]
    .boxed()
}

/// The parts of a secret worth looking for in what is shown: split where a URL's separators would cut it, long
/// enough not to turn up by chance, and found in the URL only where the secret is.
fn fragments<'a>(secret: &'a str, url: &str) -> Vec<&'a str> {
    let rest = url.replacen(secret, "", 1);
    secret
        .split(|c: char| "/?#@:&=,%[]".contains(c))
        .filter(|part| part.chars().count() >= 6 && !rest.contains(part))
        .collect()
}

proptest! {
    #![proptest_config(settings(512))]

    /// What is shown of a `--db` URL, parsed or not (the target, or the error naming what is wrong), holds no
    /// part of its password nor of `--db-password-file`'s.
    #[test]
    fn db_urls_parse_or_fail_cleanly_and_never_show_a_password(
        (url, password) in db_url(),
        file_password in proptest::option::of("FileSecret[a-z0-9]{8}"),
        submissions in submissions_table(),
    ) {
        let shown = match Target::parse(&url, file_password.clone(), &submissions) {
            Ok(target) => {
                prop_assert!(matches!(target, Target::Postgres(_)), "{url}");
                format!("{target} {target:?}")
            }
            Err(e) => format!("{e:#} {e:?}"),
        };
        for secret in [password, file_password].iter().flatten() {
            for part in fragments(secret, &url) {
                prop_assert!(!shown.contains(part), "{url} is shown as {shown}");
            }
        }
    }

    #[test]
    fn db_urls_of_arbitrary_text_never_panic(
        scheme in select(vec!["postgres://", "postgresql://", ""]),
        rest in prop_oneof![text(64), url_text(16)],
        password in proptest::option::of(text(8)),
        submissions in submissions_table(),
    ) {
        let db = format!("{scheme}{rest}");
        let parsed = Target::parse(&db, password.clone(), &submissions);
        if scheme.is_empty() && !db.starts_with("postgres://") && !db.starts_with("postgresql://") {
            let plain = password.is_none() && submissions == DEFAULT_SUBMISSIONS;
            prop_assert_eq!(parsed.is_ok(), plain, "{:?}", db);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Percent-encoding: paths to the carrier, the parts of a --db URL.

proptest! {
    #![proptest_config(settings(512))]

    #[test]
    fn percent_decoding_never_panics_and_never_grows(raw in prop_oneof![text(32), url_text(12)]) {
        if let Ok(decoded) = percent::decode(&raw) {
            prop_assert!(decoded.len() <= raw.len(), "{:?} decoded to {:?}", raw, decoded);
        }
    }

    #[test]
    fn percent_encoding_leaves_only_unreserved_characters_and_decodes_back(raw in text(32)) {
        let encoded = percent::encode(&raw);
        prop_assert!(
            encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
            "{:?} encoded as {:?}", raw, encoded
        );
        prop_assert_eq!(percent::decode(&encoded), Ok(raw));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Masking outside text for logs.

proptest! {
    #![proptest_config(settings(256))]

    #[test]
    fn masked_text_keeps_no_phone_number_and_masking_twice_changes_nothing(
        raw in prop_oneof![
            text(64),
            vec(prop_oneof!["[0-9]{1,16}", "[^0-9]{0,3}", "[+%2B]{1,3}", "[é𝄞]"], 0..12)
                .prop_map(|pieces| pieces.concat()),
        ],
    ) {
        let masked = redact::mask_text(&raw);
        prop_assert_eq!(masked.chars().count(), raw.chars().count());
        prop_assert!(no_phone_number(&masked), "{:?} is shown as {:?}", raw, masked);
        prop_assert_eq!(redact::mask_text(&masked), masked.clone());
        let label = redact::request_label(&raw);
        prop_assert!(no_phone_number(&label), "{:?} is labelled {:?}", raw, label);
    }

    #[test]
    fn secret_parameters_in_outside_text_are_never_shown(
        before in prop_oneof![text(16), url_text(6)],
        name in "[a-zA-Z_-]{0,3}(token|secret|key|password|signature|sig|auth|credential|TOKEN|Api_Key)\
                 [a-zA-Z0-9_-]{0,3}",
        secret in "S3[a-zA-Z0-9._~]{6,12}",
        after in prop_oneof![text(16), url_text(6)],
    ) {
        let raw = format!("{before}{name}={secret}{after}");
        let masked = redact::mask_secrets(&raw);
        prop_assert!(!masked.contains(&secret), "{:?} is shown as {:?}", raw, masked);
        prop_assert_eq!(redact::mask_secrets(&masked), masked.clone());
        let label = redact::request_label(&format!("/x?{name}={secret}&{after}"));
        prop_assert!(!label.contains(&secret), "{:?} is labelled {:?}", raw, label);
    }
}
