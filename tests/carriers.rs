//! The provider profiles through the real binary, each against the sandbox speaking that provider's dialect:
//! 72 hours of cycles with faults, every audit row checked against what the provider said and against the
//! issue's own mapping of its words and codes (written out here, independently of the profiles' tables); the
//! quirks (Twilio's terminal `sent`, Infobip's 48-hour window, Sinch's recipients, Vonage's unknown ids, other
//! traffic in listings); `doctor`; and the account checks.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Backend, TOKEN, TestDb, next_slot, rows_polled_at};
use dlr_poller::timefmt;
use dlr_sandbox::{Dialect, Fate, Sandbox, SandboxServer, SimMessage, Truth, World};

/// The outcome the issue gives each provider word: DELIVERED, FAILED, PENDING, or UNCONFIRMED (final without a
/// receipt: recorded PENDING, tracking ends).
fn outcome(dialect: Dialect, word: &str) -> &'static str {
    match (dialect, word) {
        (Dialect::Twilio, "delivered" | "read") => "DELIVERED",
        (Dialect::Twilio, "undelivered" | "failed" | "canceled") => "FAILED",
        (Dialect::Vonage, "delivered") => "DELIVERED",
        (Dialect::Vonage, "expired" | "failed" | "rejected") => "FAILED",
        (Dialect::Vonage, "unknown") => "UNCONFIRMED",
        (Dialect::Sinch, "Delivered") => "DELIVERED",
        (
            Dialect::Sinch,
            "Aborted" | "Cancelled" | "Rejected" | "Deleted" | "Failed" | "Expired",
        ) => "FAILED",
        (Dialect::Sinch, "Unknown") => "UNCONFIRMED",
        (Dialect::Infobip, "DELIVERED_TO_OPERATOR") => "PENDING",
        (Dialect::Infobip, w) if w.starts_with("DELIVERED_") => "DELIVERED",
        (Dialect::Infobip, w)
            if ["UNDELIVERABLE_", "EXPIRED_", "REJECTED_"]
                .iter()
                .any(|g| w.starts_with(g)) =>
        {
            "FAILED"
        }
        (Dialect::Telnyx, "delivered") => "DELIVERED",
        (Dialect::Telnyx, "sending_failed" | "delivery_failed" | "expired" | "cancelled") => {
            "FAILED"
        }
        (Dialect::Telnyx, "delivery_unconfirmed") => "UNCONFIRMED",
        _ => "PENDING",
    }
}

/// The failure category the issue (or, for Sinch and Infobip, the provider's documentation) gives each code the
/// sandbox uses.
fn category(dialect: Dialect, code: &str) -> &'static str {
    match (dialect, code) {
        (Dialect::Twilio, "30005" | "30006") => "INVALID_NUMBER",
        (Dialect::Twilio, "30003") => "NETWORK_ERROR",
        (Dialect::Twilio, "30004" | "30007") => "CARRIER_ERROR",
        (Dialect::Vonage, "3" | "12") => "INVALID_NUMBER",
        (Dialect::Vonage, "2" | "7" | "8") => "NETWORK_ERROR",
        (Dialect::Vonage, "4" | "6" | "14") => "CARRIER_ERROR",
        (Dialect::Vonage, "5" | "10" | "11") => "UNDELIVERABLE",
        (Dialect::Sinch, "402") => "UNDELIVERABLE",
        (Dialect::Sinch, "404" | "406") => "NETWORK_ERROR",
        (Dialect::Sinch, "413") => "CARRIER_ERROR",
        // Infobip: 1 unknown subscriber; 6 absent subscriber; 632 rejected by the operator; an unmapped
        // user error takes its group's category.
        (Dialect::Infobip, "1") => "INVALID_NUMBER",
        (Dialect::Infobip, "6") => "NETWORK_ERROR",
        (Dialect::Infobip, "632" | "9999") => "CARRIER_ERROR",
        (Dialect::Telnyx, "40001" | "40012") => "INVALID_NUMBER",
        (Dialect::Telnyx, "40006") => "NETWORK_ERROR",
        (Dialect::Telnyx, "40002" | "40003" | "40015") => "CARRIER_ERROR",
        (Dialect::Telnyx, "40005" | "40008") => "UNDELIVERABLE",
        _ => "UNKNOWN",
    }
}

/// The flags that select the dialect's profile. The sandbox takes any rate: the providers' default limits
/// (Infobip's 120 requests a minute) would only slow the tests down.
fn profile_args(dialect: Dialect) -> Vec<String> {
    let mut args = vec![
        "--carrier".to_string(),
        dialect.name().to_string(),
        "--max-rps".to_string(),
        "2000".to_string(),
    ];
    if let Some(account) = dialect.account() {
        args.extend(["--carrier-account".to_string(), account.to_string()]);
    }
    args
}

fn serve(world: World, dialect: Dialect, now: DateTime<Utc>, page: usize) -> SandboxServer {
    let sandbox = Sandbox::new(world, TOKEN, now)
        .with_dialect(dialect)
        .with_page_size(page);
    SandboxServer::start(Arc::new(sandbox), 0).unwrap()
}

/// What the poller should record for a message at a cycle, by the test's own reading of the provider.
enum Expect {
    /// A closing entry without a request (the profile cannot ask; beyond the carrier's retention).
    Close,
    /// A poll: the provider's truth, or `None` for "no status" (unknown, no report yet).
    Poll(Option<Truth>),
}

fn expect(dialect: Dialect, m: &SimMessage, now: DateTime<Utc>) -> Expect {
    if dialect == Dialect::Sinch && m.batch_id.is_none() {
        return Expect::Close;
    }
    if dialect == Dialect::Infobip && now - m.submitted_at > TimeDelta::hours(48) {
        return Expect::Close;
    }
    // Sinch: a recipient missing from the full batch report is asked for by its recipient report: the truth.
    Expect::Poll(m.truth_at(now, dialect))
}

#[derive(Clone, Debug)]
struct Model {
    polls: i64,
    next_due: DateTime<Utc>,
    closed: Option<&'static str>,
}

/// The send a 72-hour test tracks: 320 messages in batches of 40, or `n` without batches (as a Twilio
/// dispatcher records them: Twilio has no batch ids), each of which the carrier's listing holds.
#[derive(Clone, Copy)]
enum Send {
    Batches,
    Listed(usize),
}

fn every_message_is_tracked_for_72_hours(dialect: Dialect, backend: Backend) {
    tracked_for_72_hours(dialect, backend, Send::Batches);
}

/// Tracks a send through 38 cycles two hours apart, checking every audit row against the carrier's truth.
/// Returns the requests the carrier served and the results recorded.
fn tracked_for_72_hours(dialect: Dialect, backend: Backend, send: Send) -> (u64, u64) {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let mut world = match send {
        Send::Batches => World::generate_for(dialect, 320, 40, start, 11),
        Send::Listed(n) => World::generate_for(dialect, n, 500, start, 11),
    };
    if let Send::Listed(_) = send {
        world.edit(|m| {
            m.batch_id = None;
            (m.listed, m.known) = (true, true);
            // Sent, so in the listing by DateSent (a message still queued has no DateSent yet).
            if let Fate::Stuck { word } = &mut m.fate
                && matches!(word.as_str(), "queued" | "accepted" | "scheduled")
            {
                *word = "sent".into();
            }
        });
    }
    let messages: Vec<SimMessage> = world.messages().to_vec();
    let others = world.all().count() - messages.len();
    assert!(others > 0, "the account has other traffic");
    let db = backend.db();
    db.insert_world(&messages);
    let server = serve(world, dialect, start, 100);
    let sandbox = server.sandbox();
    sandbox.faults(|f| f.error_rate = 0.03);
    let mut model: Vec<Model> = messages
        .iter()
        .map(|m| Model {
            polls: 0,
            next_due: m.submitted_at + TimeDelta::hours(2),
            closed: None,
        })
        .collect();
    let clocks: Vec<DateTime<Utc>> = (1..=38).map(|k| start + TimeDelta::hours(2 * k)).collect();
    let mut args = profile_args(dialect);
    args.extend(["--max-attempts".into(), "8".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut seen = std::collections::BTreeSet::new();
    for (cycle, now) in clocks.into_iter().enumerate() {
        let stamp = timefmt::format(now);
        sandbox.set_clock(now);
        if cycle == 4 {
            sandbox.faults(|f| {
                f.rate_limited_next = 3;
                f.retry_after_secs = 0;
            });
        }
        let requests_before = sandbox.requests();
        let out = db.poll_json(&server.url(), &stamp, &args);
        assert_eq!(
            out.code,
            Some(0),
            "{} at {stamp}: {}",
            dialect.name(),
            out.stderr
        );
        let rows = rows_polled_at(&db, &stamp);
        let (mut due, mut polled, mut closed) = (0u64, 0u64, 0u64);
        for (m, state) in messages.iter().zip(model.iter_mut()) {
            let is_due = state.closed.is_none() && state.next_due <= now + TimeDelta::minutes(5);
            let got = rows.get(&m.tracking_id).cloned().unwrap_or_default();
            if !is_due {
                assert!(
                    got.is_empty(),
                    "{} polled at {stamp} though not due: {got:?}",
                    m.tracking_id
                );
                continue;
            }
            due += 1;
            assert_eq!(got.len(), 1, "{} at {stamp}: {got:?}", m.tracking_id);
            let row = &got[0];
            assert_eq!(
                row.attempt,
                state.polls + 1,
                "{} poll number",
                m.tracking_id
            );
            state.polls += 1;
            let truth = match expect(dialect, m, now) {
                Expect::Close => {
                    closed += 1;
                    assert_eq!(row.entry, "close", "{} at {stamp}", m.tracking_id);
                    assert!(row.carrier_status.is_none() && !row.found);
                    state.closed = Some("UNCONFIRMED");
                    continue;
                }
                Expect::Poll(truth) => truth,
            };
            polled += 1;
            assert_eq!(row.entry, "poll", "{} at {stamp}", m.tracking_id);
            let want = truth
                .as_ref()
                .map_or("PENDING", |t| outcome(dialect, &t.word));
            seen.insert(want);
            let recorded = if want == "UNCONFIRMED" {
                "PENDING"
            } else {
                want
            };
            assert_eq!(
                row.status, recorded,
                "{} at {stamp}: truth {truth:?}",
                m.tracking_id
            );
            assert_eq!(row.found, truth.is_some(), "{} found", m.tracking_id);
            assert_eq!(
                row.carrier_status.as_ref(),
                truth.as_ref().map(|t| &t.word),
                "{}",
                m.tracking_id
            );
            assert_eq!(
                row.code.as_ref(),
                truth.as_ref().and_then(|t| t.code.as_ref()),
                "{} code",
                m.tracking_id
            );
            if let Some(text) = truth.as_ref().and_then(|t| t.reason.as_ref()) {
                let reason = row.reason.as_deref().unwrap_or_default();
                assert!(
                    reason.contains(text.as_str()),
                    "{} reason {reason:?}",
                    m.tracking_id
                );
            }
            // The carrier's time of a final status, in UTC whatever its form (Sinch's batch report has none).
            if dialect != Dialect::Sinch && matches!(want, "DELIVERED" | "FAILED") {
                assert_eq!(
                    row.confirmed_at,
                    truth.as_ref().and_then(|t| t.at).map(timefmt::format),
                    "{} confirmed at",
                    m.tracking_id
                );
            }
            let want_category = (want == "FAILED").then(|| {
                category(
                    dialect,
                    truth.as_ref().and_then(|t| t.code.as_deref()).unwrap_or(""),
                )
            });
            assert_eq!(
                row.category.as_deref(),
                want_category,
                "{} category",
                m.tracking_id
            );
            state.closed = match (want, next_slot(m.submitted_at, now)) {
                ("DELIVERED", _) => Some("DELIVERED"),
                ("FAILED", _) => Some("FAILED"),
                ("UNCONFIRMED", _) => Some("UNCONFIRMED"),
                (_, Some(next)) => {
                    state.next_due = next;
                    None
                }
                (_, None) => Some("UNCONFIRMED"),
            };
        }
        let s = &out.summary;
        assert_eq!(s["messages_due"].as_u64(), Some(due), "due at {stamp}");
        assert_eq!(
            s["polled"].as_u64(),
            Some(polled),
            "polled at {stamp}\n{}",
            out.stderr
        );
        assert_eq!(
            s["closed_unanswered"].as_u64(),
            Some(closed),
            "closed at {stamp}"
        );
        let failed: u64 = s["failed_by_category"]
            .as_object()
            .map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum());
        assert_eq!(
            Some(failed),
            s["failed"].as_u64(),
            "categories add up at {stamp}"
        );
        if cycle == 0 && dialect != Dialect::Telnyx {
            // Every message is due in the first cycle: the bulk questions must cost fewer requests than
            // asking one by one.
            let requests = sandbox.requests() - requests_before;
            assert!(
                requests < due,
                "{}: {requests} requests for {due} due messages",
                dialect.name()
            );
        }
    }
    for (m, state) in messages.iter().zip(&model) {
        let t = db.tracking(&m.tracking_id).unwrap();
        assert_eq!(
            Some(t.state.as_str()),
            state.closed,
            "{} final state",
            m.tracking_id
        );
        assert_eq!(t.polls, state.polls, "{} polls", m.tracking_id);
    }
    let total: i64 = model.iter().map(|m| m.polls).sum();
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        total
    );
    let results = total as u64;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM message_tracking"),
        messages.len() as i64,
        "the account's other traffic is never tracked"
    );
    for want in ["DELIVERED", "FAILED", "PENDING"] {
        assert!(
            seen.contains(want),
            "{}: the world exercises {want}",
            dialect.name()
        );
    }
    (sandbox.requests(), results)
}

/// A Twilio send without batch ids (Twilio has none) polled for 72 hours: the later polls of its messages still
/// pending (`sent` is the last word of a route without receipts) are asked for through the listing of the
/// minutes they were sent in, shared by the jobs of a cycle, not one lookup each (about 1,050 requests per 1,000
/// results before). Faults on: 3% of requests fail at random, a burst of 429s. (A message still queued has no
/// DateSent and is not listed: it costs a lookup, as before.)
#[test]
fn twilio_later_polls_of_a_send_without_batches_go_through_the_listing() {
    twilio_lone_send(Backend::Sqlite);
}

#[test]
fn twilio_later_polls_of_a_send_without_batches_go_through_the_listing_on_postgres() {
    let name =
        "carriers::twilio_later_polls_of_a_send_without_batches_go_through_the_listing_on_postgres";
    if Backend::Postgres.available(name) {
        twilio_lone_send(Backend::Postgres);
    }
}

fn twilio_lone_send(backend: Backend) {
    let (requests, results) = tracked_for_72_hours(Dialect::Twilio, backend, Send::Listed(5_000));
    let per_thousand = requests * 1_000 / results;
    eprintln!("{requests} requests for {results} results: {per_thousand} per 1,000");
    assert!(
        per_thousand <= 60,
        "{requests} requests for {results} results: {per_thousand} per 1,000"
    );
}

#[test]
fn twilio_tracks_every_message_for_72_hours() {
    every_message_is_tracked_for_72_hours(Dialect::Twilio, Backend::Sqlite);
}

#[test]
fn vonage_tracks_every_message_for_72_hours() {
    every_message_is_tracked_for_72_hours(Dialect::Vonage, Backend::Sqlite);
}

#[test]
fn sinch_tracks_every_message_for_72_hours() {
    every_message_is_tracked_for_72_hours(Dialect::Sinch, Backend::Sqlite);
}

#[test]
fn infobip_tracks_every_message_for_72_hours() {
    every_message_is_tracked_for_72_hours(Dialect::Infobip, Backend::Sqlite);
}

#[test]
fn telnyx_tracks_every_message_for_72_hours() {
    every_message_is_tracked_for_72_hours(Dialect::Telnyx, Backend::Sqlite);
}

#[test]
fn infobip_tracks_every_message_for_72_hours_on_postgres() {
    on_postgres(Dialect::Infobip);
}

/// Twilio's minutes are listed by each job's profile and its messages without a batch go out in runs, which
/// PostgreSQL publishes as units of their own.
#[test]
fn twilio_tracks_every_message_for_72_hours_on_postgres() {
    on_postgres(Dialect::Twilio);
}

fn on_postgres(dialect: Dialect) {
    let name = format!(
        "carriers::{}_tracks_every_message_for_72_hours_on_postgres",
        dialect.name()
    );
    if Backend::Postgres.available(&name) {
        every_message_is_tracked_for_72_hours(dialect, Backend::Postgres);
    }
}

fn stuck(
    dialect: Dialect,
    i: usize,
    word: &str,
    batch: Option<&str>,
    at: DateTime<Utc>,
) -> SimMessage {
    SimMessage {
        tracking_id: dialect.tracking_id(i),
        customer_id: "C1".into(),
        phone_number: format!("+49151{i:08}"),
        batch_id: batch.map(str::to_string),
        submitted_at: at,
        fate: Fate::Stuck { word: word.into() },
        listed: true,
        known: true,
    }
}

/// Twilio's `sent` is often the last word of a route without receipts: PENDING at every slot, then closed
/// UNCONFIRMED by the +72h poll; `unknown`-like final words of other providers close at once.
#[test]
fn a_final_word_without_receipt_closes_at_once_and_twilio_sent_waits_for_72_hours() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    for (dialect, word, polls) in [
        (Dialect::Twilio, "sent", 36),
        (Dialect::Vonage, "unknown", 1),
        (Dialect::Sinch, "Unknown", 1),
        (Dialect::Telnyx, "delivery_unconfirmed", 1),
    ] {
        let m = stuck(dialect, 1, word, Some("B1"), start);
        let db = TestDb::new();
        db.insert_world(std::slice::from_ref(&m));
        let server = serve(World::new(vec![m.clone()]), dialect, start, 100);
        let args = profile_args(dialect);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for k in 1..=36 {
            let now = start + TimeDelta::hours(2 * k);
            server.sandbox().set_clock(now);
            let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
            assert_eq!(out.code, Some(0), "{}", out.stderr);
        }
        let t = db.tracking(&m.tracking_id).unwrap();
        assert_eq!(
            (t.state.as_str(), t.polls),
            ("UNCONFIRMED", polls),
            "{}",
            dialect.name()
        );
        let trail = db.audit(&m.tracking_id);
        assert!(trail.iter().all(|a| a.status == "PENDING"), "{trail:?}");
        assert_eq!(trail.last().unwrap().carrier_status.as_deref(), Some(word));
    }
}

/// Infobip's logs reach back 48 hours: a message still open at a slot past that is closed without a request.
#[test]
fn infobip_closes_what_its_logs_no_longer_hold_without_asking() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let messages: Vec<SimMessage> = (0..30)
        .map(|i| stuck(Dialect::Infobip, i, "PENDING_ENROUTE", Some("B1"), start))
        .collect();
    let db = TestDb::new();
    db.insert_world(&messages);
    let server = serve(World::new(messages.clone()), Dialect::Infobip, start, 100);
    let args = profile_args(Dialect::Infobip);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for k in 1..=24 {
        let now = start + TimeDelta::hours(2 * k);
        server.sandbox().set_clock(now);
        let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
        assert_eq!(out.counts(&["polled"]), [30], "{}", out.stderr);
    }
    let now = start + TimeDelta::hours(50);
    server.sandbox().set_clock(now);
    let before = server.sandbox().requests();
    let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.counts(&["closed_unanswered", "polled"]), [30, 0]);
    assert_eq!(
        server.sandbox().requests(),
        before,
        "no request past the retention"
    );
    let last = db.audit(&messages[0].tracking_id).pop().unwrap();
    assert!(
        last.failure_reason
            .as_deref()
            .unwrap_or_default()
            .contains("retention"),
        "{last:?}"
    );
    assert_eq!(
        db.tracking(&messages[0].tracking_id).unwrap().state,
        "UNCONFIRMED"
    );
}

/// A whole batch costs one request at Sinch (its full report), one per 1,000 logs at Infobip, one per id list
/// at Vonage; Twilio lists the minutes of the send 1,000 to a page (the minute before it, empty, then three
/// pages).
#[test]
fn a_large_batch_costs_a_handful_of_requests() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let now = start + TimeDelta::hours(2);
    for (dialect, most) in [
        (Dialect::Sinch, 1),
        (Dialect::Infobip, 3),
        (Dialect::Vonage, 30),
        (Dialect::Twilio, 4),
    ] {
        let messages: Vec<SimMessage> = (0..2_500)
            .map(|i| stuck(dialect, i, dialect_pending(dialect), Some("B1"), start))
            .collect();
        let requests = sandbox_requests_for_one_cycle(messages, dialect, now);
        assert!(requests <= most, "{}: {requests} requests", dialect.name());
    }
}

/// A send spread over a minute, 50 messages a second: Twilio's first page reaches back 20 seconds, the other 40
/// are listed in parts at once; every message is answered from the listing (one by one would cost thousands).
#[test]
fn a_busy_twilio_minute_is_listed_in_parts_without_losing_a_message() {
    let requests = twilio_send(3_000, TimeDelta::milliseconds(20));
    // The minute before (empty), the first page, three parts, the minute after (the last seconds' messages).
    assert!(requests <= 6, "{requests} requests");
}

/// One Twilio batch sent over 40 minutes, a message a second: its minutes are listed in order, one each, not its
/// 2,400 messages one by one.
#[test]
fn a_twilio_send_of_forty_minutes_costs_a_listing_per_minute() {
    let requests = twilio_send(2_400, TimeDelta::seconds(1));
    // The minute before, the 40 minutes, the one after (the last two seconds' messages).
    assert!(requests <= 42, "{requests} requests");
}

/// A bulk question that fails partway keeps what it answered: a batch of 250 whose third page or id list fails
/// for good has the messages of the first two stored (their records are paid for), and only the rest stays due.
/// The next cycle, the carrier well again, asks for the rest: every message is recorded once.
#[test]
fn a_bulk_question_failing_partway_keeps_what_it_answered() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let now = start + TimeDelta::hours(2);
    for dialect in [Dialect::Generic, Dialect::Vonage, Dialect::Infobip] {
        let n = 250;
        let messages: Vec<SimMessage> = (0..n)
            .map(|i| stuck(dialect, i, dialect_pending(dialect), Some("B1"), start))
            .collect();
        let db = TestDb::new();
        db.insert_world(&messages);
        let server = serve(World::new(messages), dialect, now, 100);
        server.sandbox().faults(|f| f.unavailable_after = Some(2));
        let mut args = profile_args(dialect);
        args.extend(["--max-attempts".to_string(), "2".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();

        let first = db.poll_json(&server.url(), &timefmt::format(now), &args);
        let name = dialect.name();
        assert_eq!(first.code, Some(75), "{name}: {}", first.stderr);
        let [polled, failed] = first.counts(&["polled", "batches_failed"])[..] else {
            unreachable!()
        };
        assert!(polled > 0 && polled < n as u64, "{name}: {polled} polled");
        if dialect != Dialect::Vonage {
            // Two pages of 100.
            assert_eq!(polled, 200, "{name}");
        }
        assert_eq!(failed, 1, "{name}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
            polled as i64,
            "{name}"
        );

        server.sandbox().faults(|f| f.unavailable_after = None);
        let later = timefmt::format(now + TimeDelta::minutes(5));
        let second = db.poll_json(&server.url(), &later, &args);
        assert_eq!(second.code, Some(0), "{name}: {}", second.stderr);
        assert_eq!(second.counts(&["polled"])[0], n as u64 - polled, "{name}");
        assert_eq!(
            db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
            n as i64,
            "{name}"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
            n as i64,
            "{name}"
        );
    }
}

/// A carrier that throttles (HTTP 429) without saying when to come back slows every worker down, and the log
/// names the pace: the one the cycle starts at and where it came from, each slower one, and the one it ends at.
#[test]
fn throttling_without_a_retry_after_slows_the_pace_and_the_log_says_so() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let now = start + TimeDelta::hours(2);
    let dialect = Dialect::Vonage;
    let messages: Vec<SimMessage> = (0..300)
        .map(|i| stuck(dialect, i, dialect_pending(dialect), Some("B1"), start))
        .collect();
    let db = TestDb::new();
    db.insert_world(&messages);
    let server = serve(World::new(messages), dialect, now, 100);
    server.sandbox().faults(|f| f.rate_limited_next = 3);
    let args = profile_args(dialect);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.counts(&["polled"])[0], 300);
    for line in [
        "pace: at most 2000 requests a second (--max-rps), at most 8 requests in flight",
        "the carrier is throttling requests (HTTP 429): pacing at one request per 50 ms",
        "the carrier is throttling requests (HTTP 429): pacing at one request per 100 ms",
        "pace at the end of the cycle: at most ",
    ] {
        assert!(
            out.stderr.contains(line),
            "{line:?} missing from:\n{}",
            out.stderr
        );
    }
}

/// Under a provider's limit too low for one cycle, runs more often than every two hours keep up: each run
/// polls what its budget allows (exit 75), the next picks up where it stopped, and no message is polled twice
/// in a slot. (Infobip, messages without a batch: 50 ids a request, one request a second, a 4-second budget.)
#[test]
fn runs_more_often_than_the_slots_keep_up_under_a_low_limit() {
    keeping_up_under_a_low_limit(Backend::Sqlite);
}

/// The same with PostgreSQL's rounds: each run's round picks up where the last stopped.
#[test]
fn runs_more_often_than_the_slots_keep_up_under_a_low_limit_on_postgres() {
    let name = "carriers::runs_more_often_than_the_slots_keep_up_under_a_low_limit_on_postgres";
    if Backend::Postgres.available(name) {
        keeping_up_under_a_low_limit(Backend::Postgres);
    }
}

fn keeping_up_under_a_low_limit(backend: Backend) {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let dialect = Dialect::Infobip;
    let n = 500;
    let messages: Vec<SimMessage> = (0..n)
        .map(|i| SimMessage {
            submitted_at: start + TimeDelta::seconds(i as i64 % 60),
            ..stuck(dialect, i, dialect_pending(dialect), None, start)
        })
        .collect();
    let db = backend.db();
    db.insert_world(&messages);
    let first_slot = start + TimeDelta::hours(2) + TimeDelta::minutes(1);
    let server = serve(World::new(messages), dialect, first_slot, 100);
    let mut args = profile_args(dialect);
    // The profile's arguments lift the limit for the other tests: set it low again.
    let at = args.iter().position(|a| a == "--max-rps").unwrap();
    args[at + 1] = "1".to_string();
    args.extend(["--deadline".to_string(), "4s".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Runs every 5 minutes after the first slot (all before the second slot, two hours later): each stops at
    // its deadline until everything is polled.
    let mut codes = Vec::new();
    let mut total = 0;
    for k in 0..20 {
        // A run's sessions are gone before the next starts, as they are long gone minutes later.
        if matches!(backend, Backend::Postgres) {
            let sessions =
                "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name LIKE 'dlr-poller:%'";
            assert!(
                common::wait_until(std::time::Duration::from_secs(30), || {
                    db.count(sessions) == 0
                }),
                "the last run's sessions are still there"
            );
        }
        let now = first_slot + TimeDelta::minutes(5 * k);
        server.sandbox().set_clock(now);
        let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
        assert!(matches!(out.code, Some(0 | 75)), "run {k}: {}", out.stderr);
        let polled = out.counts(&["polled"])[0];
        codes.push(out.code);
        total += polled;
        // How far behind the run leaves the grid: every message not polled yet, the oldest due since its first
        // slot (10:00:00 to 10:00:59, two hours after its submission).
        let [overdue, lag] = out.counts(&["overdue", "lag_seconds"])[..] else {
            unreachable!()
        };
        assert_eq!(overdue, n as u64 - total, "run {k}: {}", out.stderr);
        if overdue == 0 {
            assert_eq!(lag, 0, "run {k}");
        } else {
            let since = |t: DateTime<Utc>| (now - t).num_seconds() as u64;
            let (first, last) = (
                start + TimeDelta::hours(2),
                start + TimeDelta::hours(2) + TimeDelta::seconds(59),
            );
            assert!(
                (since(last)..=since(first)).contains(&lag),
                "run {k}: lag {lag}"
            );
            assert!(out.stderr.contains(&format!(
                "{overdue} messages due are left for the next cycle"
            )));
            let check = db
                .cmd()
                .args(["check", "--now", &timefmt::format(now)])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&check.stdout).to_string();
            assert!(
                said.contains(&format!("left {overdue} messages due, the oldest due for ")),
                "{said}"
            );
        }
        if out.code == Some(0) {
            break;
        }
        assert!(polled > 0, "run {k} made no progress: {}", out.stderr);
    }
    assert!(
        codes.len() > 1,
        "the limit should not let one run do it all: {codes:?}"
    );
    assert_eq!(codes.last(), Some(&Some(0)), "{codes:?}");
    assert_eq!(total, n as u64);
    // One result per message for the first slot, none twice.
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
        n as i64
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        n as i64
    );
    // A run between the slots, everything polled: it asks nothing.
    let between = start + TimeDelta::hours(3) + TimeDelta::minutes(50);
    let before = server.sandbox().requests();
    let out = db.poll_json(&server.url(), &timefmt::format(between), &args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.counts(&["messages_due", "polled"]), [0, 0]);
    assert_eq!(server.sandbox().requests(), before);
}

/// `--concurrency` bounds the requests in flight across the process, the parts of a listing included: four
/// workers that each list a busy Twilio minute in parts (each could fan out to four parts at once) never have
/// more than four requests at the carrier between them.
#[test]
fn concurrency_bounds_every_request_in_flight_parts_included() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let dialect = Dialect::Twilio;
    // Eight sends of 3,000 messages, each within a minute of its own (one every 20 ms), ten minutes apart.
    let messages: Vec<SimMessage> = (0..8)
        .flat_map(|send| {
            let batch = format!("B{send}");
            (0..3_000).map(move |i| SimMessage {
                submitted_at: start
                    + TimeDelta::minutes(10 * send)
                    + TimeDelta::milliseconds(20 * i),
                ..stuck(
                    dialect,
                    send as usize * 3_000 + i as usize,
                    "sent",
                    Some(&batch),
                    start,
                )
            })
        })
        .collect();
    let count = messages.len() as u64;
    let now = start + TimeDelta::hours(4);
    let db = TestDb::new();
    db.insert_world(&messages);
    let server = serve(World::new(messages), dialect, now, 1_000);
    server
        .sandbox()
        .faults(|f| f.latency = std::time::Duration::from_millis(20));
    let mut args = profile_args(dialect);
    args.extend(["--concurrency".to_string(), "4".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
    assert_eq!(out.counts(&["polled"])[0], count, "{}", out.stderr);
    let stats = &server.sandbox().stats;
    let most = stats
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        most <= 4,
        "{most} requests in flight at once with --concurrency 4"
    );
    // The listing was in parts (a page per 1,000 messages of a busy minute, not a lookup per message).
    assert!(
        server.sandbox().requests() < 100,
        "{}",
        server.sandbox().requests()
    );
}

/// One Twilio batch of `n` messages, one every `every` from 08:00, polled once when all are due: the requests
/// it cost.
fn twilio_send(n: usize, every: TimeDelta) -> u64 {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let dialect = Dialect::Twilio;
    let messages: Vec<SimMessage> = (0..n)
        .map(|i| SimMessage {
            submitted_at: start + every * i as i32,
            ..stuck(dialect, i, "sent", Some("B1"), start)
        })
        .collect();
    let now = messages[n - 1].submitted_at + TimeDelta::hours(2);
    sandbox_requests_for_one_cycle(messages, dialect, now)
}

/// Polls `messages` (all due at `now`) once in `dialect`, checks that every one was polled, and returns how many
/// requests the sandbox served.
fn sandbox_requests_for_one_cycle(
    messages: Vec<SimMessage>,
    dialect: Dialect,
    now: DateTime<Utc>,
) -> u64 {
    let count = messages.len() as u64;
    let db = TestDb::new();
    db.insert_world(&messages);
    let server = serve(World::new(messages), dialect, now, 1_000);
    let args = profile_args(dialect);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
    assert_eq!(
        out.counts(&["polled"])[0],
        count,
        "{}: {}",
        dialect.name(),
        out.stderr
    );
    server.sandbox().requests()
}

fn dialect_pending(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sinch => "Dispatched",
        Dialect::Infobip => "PENDING_ENROUTE",
        Dialect::Vonage => "accepted",
        _ => "sent",
    }
}

#[test]
fn doctor_probes_each_provider_with_its_own_authentication() {
    let now = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    for dialect in Dialect::ALL {
        let server = serve(World::default(), dialect, now, 100);
        let db = TestDb::new();
        let args = profile_args(dialect);
        let out = db
            .cmd()
            .env("DLR_CARRIER_TOKEN", TOKEN)
            .arg("doctor")
            .args(&args)
            .args(["--carrier-url", &server.url()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}: {stdout}", dialect.name());
        assert!(
            stdout.contains(&format!("carrier {}", dialect.name())),
            "{stdout}"
        );
        assert!(server.sandbox().requests() >= 1);
        let out = db
            .cmd()
            .env("DLR_CARRIER_TOKEN", "wrong")
            .arg("doctor")
            .args(&args)
            .args(["--carrier-url", &server.url()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(77), "{}", dialect.name());
        assert!(!String::from_utf8_lossy(&out.stderr).contains(TOKEN));
    }
}

#[test]
fn a_missing_or_malformed_account_is_a_configuration_error() {
    let db = TestDb::new();
    for (args, needle) in [
        (
            vec!["--carrier", "twilio"],
            "--carrier twilio needs its Account SID: set --carrier-account or env DLR_CARRIER_ACCOUNT",
        ),
        (
            vec!["--carrier", "twilio", "--carrier-account", "AC123"],
            "invalid --carrier-account (env DLR_CARRIER_ACCOUNT) \"AC123\": a twilio Account SID is AC followed \
             by 32 hex digits",
        ),
        (
            vec!["--carrier", "vonage", "--carrier-account", "k"],
            "a vonage API key is 8 letters",
        ),
        (
            vec!["--carrier", "sinch"],
            "--carrier sinch needs its service plan id",
        ),
        (
            vec!["--carrier", "infobip"],
            "no carrier URL: set --carrier-url or env DLR_CARRIER_URL (each Infobip",
        ),
        (
            vec!["--carrier", "acme"],
            "invalid --carrier (env DLR_CARRIER) \"acme\"",
        ),
        (
            vec!["--carrier", "telnyx", "--carrier-account", "x"],
            "takes none",
        ),
    ] {
        let out = db
            .cmd()
            .env("DLR_CARRIER_TOKEN", TOKEN)
            .arg("poll")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = db
        .cmd()
        .env("DLR_CARRIER", "twilio")
        .env("DLR_CARRIER_TOKEN", TOKEN)
        .arg("poll")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "the env var is read");
}

/// A `--status-map` adds words and codes; a bad one is exit 78 naming its line.
#[test]
fn a_status_map_overrides_words_and_a_bad_one_names_its_line() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let now = start + TimeDelta::hours(2);
    let m = stuck(Dialect::Twilio, 1, "en_route", Some("B1"), start);
    let db = TestDb::new();
    db.insert_world(std::slice::from_ref(&m));
    let server = serve(World::new(vec![m.clone()]), Dialect::Twilio, now, 100);
    let map = db.dir.path().join("status.map");
    std::fs::write(
        &map,
        "# ours\n[twilio]\nstatus en_route FAILED\ncode 30099 NETWORK_ERROR\n",
    )
    .unwrap();
    let mut args = profile_args(Dialect::Twilio);
    args.extend(["--status-map".into(), map.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
    assert_eq!(out.counts(&["failed"]), [1], "{}", out.stderr);
    assert_eq!(out.summary["failed_by_category"]["UNKNOWN"], 1);
    std::fs::write(&map, "[twilio]\nstatus en_route MAYBE\n").unwrap();
    let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
    assert_eq!(out.code, Some(78));
    out.assert_stderr_has(&format!("--status-map {}, line 2", map.display()));
    out.assert_stderr_has("\"MAYBE\" is not an outcome");
}

/// A listing every account has, answered 404, means a wrong URL or account: `doctor` says so and fails (exit
/// 69), instead of passing and leaving every poll to read "no such message".
#[test]
fn doctor_names_a_wrong_url_or_account_behind_a_404() {
    for dialect in [Dialect::Twilio, Dialect::Sinch, Dialect::Infobip] {
        let mut server = mockito::Server::new();
        let listing = server
            .mock("GET", mockito::Matcher::Any)
            .with_status(404)
            .expect(1)
            .create();
        let db = TestDb::new();
        let out = db
            .cmd()
            .env("DLR_CARRIER_TOKEN", TOKEN)
            .arg("doctor")
            .args(profile_args(dialect))
            .args(["--carrier-url", &server.url()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(69), "{}: {stdout}", dialect.name());
        assert!(
            stdout.contains("check --carrier-url and --carrier-account"),
            "{}: {stdout}",
            dialect.name()
        );
        listing.assert();
    }
}

/// Ten batches of 100, one of which is dead: its bulk question answers 503 on every attempt while each of its
/// messages can be asked about on its own (a report too large to build in time, a gateway that times out on that
/// one bulk). On every provider whose bulk question is by batch, its messages are asked the per-message way in
/// the same cycle (Sinch by recipient report, Infobip by messageId), with the carrier's truth: nothing is left
/// for later, and the summary says what fell back.
#[test]
fn a_dead_batch_is_asked_the_per_message_way_in_the_same_cycle() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let now = start + TimeDelta::hours(2);
    for dialect in [Dialect::Generic, Dialect::Sinch, Dialect::Infobip] {
        let name = dialect.name();
        let batch = |i: usize| format!("B{:02}", i / 100);
        let messages: Vec<SimMessage> = (0..1_000)
            .map(|i| half_delivered(dialect, i, Some(&batch(i)), start))
            .collect();
        let db = TestDb::new();
        db.insert_world(&messages);
        let server = serve(World::new(messages.clone()), dialect, now, 1_000);
        server
            .sandbox()
            .faults(|f| f.dead_batches = vec!["B03".to_string()]);
        let mut args = profile_args(dialect);
        args.extend(["--max-attempts".to_string(), "3".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
        assert_eq!(out.code, Some(0), "{name}: {}", out.stderr);
        assert_eq!(
            out.counts(&[
                "polled",
                "delivered",
                "batches_failed",
                "bulk_fallbacks",
                "asked_alone",
                "fallback_stopped"
            ]),
            [1_000, 500, 0, 1, 100, 0],
            "{name}: {}",
            out.stderr
        );
        out.assert_stderr_has("batch \"B03\": ");
        out.assert_stderr_has("asking for its 100 messages one by one");
        // Every message of the dead batch has its own truth recorded.
        let dead = messages
            .iter()
            .filter(|m| m.batch_id.as_deref() == Some("B03"));
        assert_truth_of_half_delivered(&db, dead);
        // Nine bulk questions and the dead one's three attempts; then a hundred lookups, or for Infobip, whose
        // question about messages without a batch is a list of ids, one list.
        let requests = server.sandbox().requests();
        let lookups = if dialect == Dialect::Infobip { 1 } else { 100 };
        assert!(
            (12 + lookups..=15 + lookups).contains(&requests),
            "{name}: {requests} requests"
        );
    }
}

/// Twilio has no batches: its bulk question is the listing of a minute of sends, shared by the jobs of the minutes
/// around it. A minute whose listing answers 503 on every attempt while each message can be looked up: it is
/// asked its attempts once in the cycle, not once per job that needs it; the messages only it could have listed
/// are looked up in the same cycle, and the jobs of the next minutes still find theirs in their own minutes.
#[test]
fn a_dead_twilio_minute_is_asked_once_and_its_messages_are_looked_up() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let now = start + TimeDelta::hours(2);
    let dialect = Dialect::Twilio;
    // Three minutes of sends, 100 a minute, without batch ids; half delivered, half still `sent`.
    let messages: Vec<SimMessage> = (0..300)
        .map(|i| {
            let at = start + TimeDelta::milliseconds(600 * i as i64);
            half_delivered(dialect, i, None, at)
        })
        .collect();
    let db = TestDb::new();
    db.insert_world(&messages);
    let server = serve(World::new(messages.clone()), dialect, now, 1_000);
    let sandbox = server.sandbox();
    sandbox.faults(|f| f.dead_batches = vec!["2026-11-02T08:01:00Z".to_string()]);
    // One worker: the first job lists a minute before the dead one, as a send's first job does; then the
    // carrier is known to answer listings, and a failed minute is passed over (see the test below for a carrier
    // that answers none).
    let mut args = profile_args(dialect);
    args.extend(["--max-attempts", "3", "--concurrency", "1"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let [polled, delivered, fell_back, alone, stopped] = out.counts(&[
        "polled",
        "delivered",
        "bulk_fallbacks",
        "asked_alone",
        "fallback_stopped",
    ])[..] else {
        unreachable!()
    };
    assert_eq!(
        (polled, delivered, stopped),
        (300, 150, 0),
        "{}",
        out.stderr
    );
    // The dead minute's three attempts, once.
    assert_eq!(sandbox.stats.faults.load(Ordering::Relaxed), 3);
    // Sent 08:01:00 to 08:02:00 (two seconds after submission): about a hundred messages only the dead minute
    // lists, of the first two minutes' jobs; the third minute's job finds all of its messages elsewhere.
    assert!(
        (1..=2).contains(&fell_back),
        "{fell_back} jobs fell back, {alone} asked alone"
    );
    assert!((95..=105).contains(&alone), "{alone} asked alone");
    assert_eq!(sandbox.stats.message_lookups.load(Ordering::Relaxed), alone);
    out.assert_stderr_has(
        "the listing of messages sent from 2026-11-02T08:01:00Z failed in this cycle",
    );
    assert_truth_of_half_delivered(&db, &messages);
}

/// Message `i` of a world where every other message is delivered half an hour after `at` and the rest stay
/// pending (the provider's usual pending word).
fn half_delivered(
    dialect: Dialect,
    i: usize,
    batch: Option<&str>,
    at: DateTime<Utc>,
) -> SimMessage {
    SimMessage {
        fate: if i.is_multiple_of(2) {
            Fate::Deliver {
                after: TimeDelta::minutes(30),
            }
        } else {
            Fate::Stuck {
                word: dialect_pending(dialect).into(),
            }
        },
        ..stuck(dialect, i, "", batch, at)
    }
}

/// Each of `messages` (of [`half_delivered`]) is tracked as its truth after one cycle.
fn assert_truth_of_half_delivered<'a>(
    db: &TestDb,
    messages: impl IntoIterator<Item = &'a SimMessage>,
) {
    for m in messages {
        let t = db.tracking(&m.tracking_id).unwrap();
        let want = if matches!(m.fate, Fate::Deliver { .. }) {
            "DELIVERED"
        } else {
            "OPEN"
        };
        assert_eq!(t.state, want, "{}", m.tracking_id);
    }
}

/// Vonage's description sets no limit on an id list; an older guide said 20 ids, and the profile sends about a
/// hundred. Where Vonage refuses a list (400), its halves are asked, and the length of a half it answers is the
/// limit for the rest of the cycle: every message is polled with a few requests more, not one each.
#[test]
fn vonage_id_lists_shorten_when_vonage_refuses_them() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let now = start + TimeDelta::hours(2);
    let dialect = Dialect::Vonage;
    let messages: Vec<SimMessage> = (0..1_000)
        .map(|i| half_delivered(dialect, i, Some(&format!("B{}", i / 100)), start))
        .collect();
    let db = TestDb::new();
    db.insert_world(&messages);
    let server = serve(World::new(messages.clone()), dialect, now, 1_000);
    let sandbox = server.sandbox();
    sandbox.faults(|f| f.max_ids = Some(20));
    let args = profile_args(dialect);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.counts(&["polled", "delivered", "lookups_rejected", "bulk_fallbacks"]),
        [1_000, 500, 0, 0],
        "{}",
        out.stderr
    );
    out.assert_stderr_has("asking in lists of at most");
    // Lists of at most 20 ids once the limit is learned (50 requests for 1,000 messages, at 13 ids a list
    // 77), and the refused lists of the jobs asked before that: not a request per message.
    let requests = sandbox.requests();
    assert!((50..=150).contains(&requests), "{requests} requests");
    assert_truth_of_half_delivered(&db, &messages);
}

/// A carrier failing every request: the failed bulk questions fall back to per-message ones only until a few of
/// those fail too, then falling back stops for the cycle. The requests stay those of the bulk questions' attempts
/// and a few lookups, not one per message; nothing is closed, the run exits 69 and says why. The same on Twilio,
/// whose bulk question walks a job's minutes: a job stops at its first failed minute when no listing of the
/// cycle has been answered.
#[test]
fn a_carrier_failing_as_a_whole_is_not_asked_one_message_at_a_time() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let now = start + TimeDelta::hours(2);
    for dialect in [Dialect::Generic, Dialect::Twilio] {
        let name = dialect.name();
        // Ten batches of 100, or on Twilio ten minutes of sends of 100 without batches: ten jobs.
        let messages: Vec<SimMessage> = (0..1_000)
            .map(|i| match dialect {
                Dialect::Twilio => {
                    let at = start + TimeDelta::milliseconds(600 * i as i64);
                    stuck(dialect, i, "sent", None, at)
                }
                _ => stuck(dialect, i, "SENT", Some(&format!("B{:02}", i / 100)), start),
            })
            .collect();
        let db = TestDb::new();
        db.insert_world(&messages);
        let server = serve(World::new(messages), dialect, now, 1_000);
        server.sandbox().faults(|f| f.unavailable_after = Some(0));
        let mut args = profile_args(dialect);
        args.extend(["--max-attempts", "2", "--concurrency", "4"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
        assert_eq!(out.code, Some(69), "{name}: {}", out.stderr);
        assert_eq!(
            out.counts(&["polled", "closed_unanswered", "fallback_stopped"]),
            [0, 0, 1],
            "{name}: {}",
            out.stderr
        );
        if dialect == Dialect::Generic {
            assert_eq!(out.counts(&["batches_failed"]), [10], "{}", out.stderr);
        }
        out.assert_stderr_has("falling back to per-message questions stopped for this cycle");
        // Ten bulk questions of two attempts each (on Twilio each minute listed at most once, and a job's walk
        // ends at its first failed minute: at most the 21 minutes the ten jobs' windows cover), and the lookups
        // begun before the watch stopped falling back: the two that had failed before the third, and at most one
        // in each part of each worker's job (4 workers, 4 parts each at --concurrency 4), two attempts each. A
        // bound of the process, not of the send's 1,000.
        let requests = server.sandbox().requests();
        let bulk = if dialect == Dialect::Twilio { 21 } else { 10 };
        let most = bulk * 2 + (2 + 4 * 4 + 1) * 2;
        assert!(
            (20..=most).contains(&requests),
            "{name}: {requests} requests"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
            0
        );
        // A carrier down is not a dead batch: the next cycle asks the bulk questions again, not each message.
        assert_eq!(
            db.count("SELECT COUNT(*) FROM poller_state WHERE key LIKE 'failing_bulk:%'"),
            0
        );
    }
}

/// A batch whose bulk question failed after its retries is asked for one message at a time at once in the next
/// cycles, instead of paying the bulk's attempts again, for six hours (three slots); then its bulk question is
/// tried again.
#[test]
fn a_batch_whose_bulk_failed_is_asked_one_by_one_at_once_for_a_while() {
    a_failed_bulk_is_remembered(Backend::Sqlite);
}

#[test]
fn a_batch_whose_bulk_failed_is_asked_one_by_one_at_once_for_a_while_on_postgres() {
    let name =
        "carriers::a_batch_whose_bulk_failed_is_asked_one_by_one_at_once_for_a_while_on_postgres";
    if Backend::Postgres.available(name) {
        a_failed_bulk_is_remembered(Backend::Postgres);
    }
}

fn a_failed_bulk_is_remembered(backend: Backend) {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let dialect = Dialect::Generic;
    let messages: Vec<SimMessage> = (0..150)
        .map(|i| {
            let batch = format!("B{}", i / 50);
            stuck(dialect, i, "SENT", Some(&batch), start)
        })
        .collect();
    let db = backend.db();
    db.insert_world(&messages);
    let server = serve(World::new(messages), dialect, start, 1_000);
    let sandbox = server.sandbox();
    sandbox.faults(|f| f.dead_batches = vec!["B1".to_string()]);
    let args = ["--max-attempts", "3"];
    let pages = || {
        sandbox
            .stats
            .batch_pages
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let cycle = |hours: i64| {
        let now = start + TimeDelta::hours(hours);
        sandbox.set_clock(now);
        let before = pages();
        let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
        assert_eq!(out.code, Some(0), "+{hours}h: {}", out.stderr);
        let [polled, fell_back, alone] =
            out.counts(&["polled", "bulk_fallbacks", "asked_alone"])[..]
        else {
            unreachable!()
        };
        assert_eq!(polled, 150, "+{hours}h");
        (pages() - before, fell_back, alone, out.stderr)
    };
    // The first cycle asks B1's bulk question three times, then its messages one by one.
    let (asked, fell_back, alone, _) = cycle(2);
    assert_eq!((asked, fell_back, alone), (2 + 3, 1, 50));
    // The next two: B1's messages at once, its bulk question not asked.
    for hours in [4, 6] {
        let (asked, fell_back, alone, stderr) = cycle(hours);
        assert_eq!((asked, fell_back, alone), (2, 1, 50), "+{hours}h");
        assert!(
            stderr.contains("1 batches whose bulk question failed in a recent cycle"),
            "{stderr}"
        );
        assert!(
            stderr.contains("not asked again before 2026-11-02T16:00:00Z"),
            "{stderr}"
        );
    }
    // Six hours after it failed, the bulk question is tried again: the batch has recovered.
    sandbox.faults(|f| f.dead_batches.clear());
    let (asked, fell_back, alone, _) = cycle(8);
    assert_eq!((asked, fell_back, alone), (3, 0, 0));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poller_state WHERE key LIKE 'failing_bulk:%'"),
        0
    );
}

/// Sinch lists a recipient still in progress only in its recipient report, not in the batch's full report:
/// such a recipient is asked for by its recipient report, and recorded with what Sinch says there, not as
/// unknown to the carrier. Bodies from Sinch's published examples (the full report less one recipient, and
/// that recipient's report).
#[test]
fn a_sinch_recipient_the_full_report_lacks_is_asked_by_its_recipient_report() {
    let start = timefmt::parse("2026-11-02T08:00:00Z").unwrap();
    let now = start + TimeDelta::hours(2);
    let batch = "01FC66621VHDBN119Z8PMV1QPQ";
    let message = |i: usize, phone: &str| SimMessage {
        phone_number: phone.to_string(),
        ..stuck(Dialect::Sinch, i, "Dispatched", Some(batch), start)
    };
    let (listed, lacking) = (message(1, "+44231235675"), message(2, "+44231235674"));
    let db = TestDb::new();
    db.insert_world(&[listed.clone(), lacking.clone()]);
    let mut full: serde_json::Value =
        serde_json::from_slice(include_bytes!("fixtures/carriers/sinch.batch.full.json")).unwrap();
    let delivered = full["statuses"][0]["recipients"].as_array_mut().unwrap();
    delivered.retain(|r| r != "+44231235674");
    let mut server = mockito::Server::new();
    let report = server
        .mock(
            "GET",
            format!("/xms/v1/plan01/batches/{batch}/delivery_report?type=full").as_str(),
        )
        .with_body(full.to_string())
        .expect(1)
        .create();
    let recipient = server
        .mock(
            "GET",
            format!("/xms/v1/plan01/batches/{batch}/delivery_report/%2B44231235674").as_str(),
        )
        .with_body(include_str!("fixtures/carriers/sinch.recipient.json"))
        .expect(1)
        .create();
    let args = [
        "--carrier",
        "sinch",
        "--carrier-account",
        "plan01",
        "--max-rps",
        "100",
    ];
    let out = db.poll_json(&server.url(), &timefmt::format(now), &args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    report.assert();
    recipient.assert();
    assert_eq!(
        out.counts(&["polled", "delivered", "pending", "not_found", "asked_alone"]),
        [2, 1, 1, 0, 1]
    );
    let row = &db.audit(&lacking.tracking_id)[0];
    assert_eq!(
        (
            row.status.as_str(),
            row.carrier_status.as_deref(),
            row.found
        ),
        ("PENDING", Some("Dispatched"), true)
    );
    assert_eq!(row.failure_code, None, "401 with Dispatched is no error");
    assert_eq!(db.audit(&listed.tracking_id)[0].status, "DELIVERED");
}
