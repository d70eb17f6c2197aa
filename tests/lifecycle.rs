//! A message's whole life, whatever the carrier and the database hold: a first run on months of history, the
//! catch-up margin, messages the carrier refuses or never answers (closed after their window), listings that
//! fail for good, closing by hand, a clock in the future, and one exit code per outcome.

mod common;

use common::{Backend, TestDb, listing, wire};
use mockito::Matcher;

on_both_backends!(
    a_first_run_on_months_of_history_asks_only_about_current_messages,
    a_message_seen_late_gets_one_overdue_poll_inside_the_catch_up_margin,
    a_message_the_carrier_refuses_to_answer_about_is_polled_and_closed_after_its_window,
    a_message_never_answered_is_closed_at_the_first_cycle_after_its_window,
    a_listing_refused_for_good_falls_back_to_lookups_in_the_same_cycle,
    of_a_message_listed_twice_the_newer_report_wins_and_times_are_stored_in_utc,
    closing_a_message_by_hand,
    a_clock_in_the_future_is_refused_unless_meant,
    metrics_that_cannot_be_written_do_not_change_the_cycle_outcome,
    check_exits_only_with_nagios_codes,
    the_same_bad_value_gets_the_same_code_in_every_command,
);

const SUBMITTED: &str = "2025-12-01T09:00:00Z";
const NOW: &str = "2025-12-01T11:00:00Z";
/// The +72h slot of a message submitted at SUBMITTED.
const LAST_SLOT: &str = "2025-12-04T09:00:00Z";
const AFTER: &str = "2025-12-04T11:00:00Z";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Answers every one-by-one lookup with `status` and `body`, `n` times.
fn lookups(
    server: &mut mockito::Server,
    ids: &str,
    status: usize,
    body: &str,
    n: usize,
) -> mockito::Mock {
    server
        .mock("GET", Matcher::Regex(format!("^/messages/({ids})$")))
        .with_status(status)
        .with_body(body)
        .expect(n)
        .create()
}

fn a_first_run_on_months_of_history_asks_only_about_current_messages(backend: Backend) {
    let db = backend.db();
    for i in 0..10 {
        db.submit(&format!("OLD{i}"), None, "2025-06-01T09:00:00Z");
        db.submit(&format!("CUR{i}"), None, SUBMITTED);
    }
    let mut server = mockito::Server::new();
    let current = server
        .mock("GET", Matcher::Regex("^/messages/CUR".into()))
        .with_body_from_request(|req| {
            let id = req.path().rsplit('/').next().unwrap().to_string();
            wire(&id, "DELIVERED").to_string().into_bytes()
        })
        .expect(10)
        .create();
    let old = lookups(&mut server, "OLD.*", 200, "{}", 0);
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["messages_due", "polled", "too_old", "http_requests"]),
        [10, 10, 10, 10]
    );
    // The next cycle reads only the window and what fell out of it since.
    let run = db.poll_json(&server.url(), "2025-12-01T13:00:00Z", &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["messages_due", "too_old", "http_requests"]),
        [0, 0, 0]
    );
    current.assert();
    old.assert();

    let out = db.cmd().args(["history", "OLD3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(
            "TOO_OLD, not tracked: first seen at 2025-12-01T11:00:00Z, more than 72h + the catch-up margin (24h) \
             after submission: too old to track"
        ),
        "{text}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations WHERE tracking_id LIKE 'OLD%'"),
        0
    );
}

fn a_message_seen_late_gets_one_overdue_poll_inside_the_catch_up_margin(backend: Backend) {
    let db = backend.db();
    db.submit("H80", None, "2025-11-28T03:00:00Z"); // 80 hours before NOW
    db.submit("H100", None, "2025-11-27T07:00:00Z"); // 100 hours before NOW
    let mut server = mockito::Server::new();
    let h80 = lookups(&mut server, "H80", 200, &wire("H80", "SENT").to_string(), 1);
    let h100 = lookups(
        &mut server,
        "H100",
        200,
        &wire("H100", "SENT").to_string(),
        1,
    );
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["polled", "closed_unconfirmed", "too_old"]),
        [1, 1, 1]
    );
    assert_eq!(
        db.tracking("H80").unwrap().state,
        "UNCONFIRMED",
        "its one poll covered its last slot"
    );
    assert_eq!(db.tracking("H100").unwrap().state, "TOO_OLD");

    // A deliberate backfill with a wider margin (here through the env var) polls what a narrow one would not.
    let wide = backend.db();
    wide.submit("H100", None, "2025-11-27T07:00:00Z");
    let run = common::Run::from(
        wide.poll(&server.url(), NOW)
            .env("DLR_POLLER_CATCH_UP", "48h")
            .arg("--json")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["polled", "too_old"]), [1, 0]);
    h80.assert();
    h100.assert();

    let out = db
        .poll(&server.url(), NOW)
        .args(["--catch-up", "a day"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid --catch-up (env DLR_POLLER_CATCH_UP) \"a day\"")
    );
}

fn a_message_the_carrier_refuses_to_answer_about_is_polled_and_closed_after_its_window(
    backend: Backend,
) {
    let db = backend.db();
    db.submit("M400", None, SUBMITTED);
    db.submit("MOTHER", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let refused = lookups(
        &mut server,
        "M400",
        400,
        r#"{"error":"invalid message id"}"#,
        2,
    );
    let other = lookups(
        &mut server,
        "MOTHER",
        200,
        &wire("SOMEONE_ELSE", "DELIVERED").to_string(),
        2,
    );
    let run = db.poll_json(&server.url(), NOW, &[]);
    // The carrier answered: the refusal is each message's result, and the cycle is a success.
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&[
            "messages_due",
            "polled",
            "pending",
            "lookups_rejected",
            "lookups_failed"
        ]),
        [2, 2, 2, 2, 0]
    );
    assert_eq!(
        run.stderr
            .matches("the carrier refused to answer about 2 messages")
            .count(),
        1,
        "{}",
        run.stderr
    );
    let m400 = &db.audit("M400")[0];
    assert_eq!((m400.status.as_str(), m400.found), ("PENDING", false));
    assert_eq!(m400.failure_code.as_deref(), Some("HTTP 400"));
    assert!(
        m400.failure_reason
            .as_deref()
            .unwrap()
            .contains("invalid message id")
    );
    assert!(
        db.audit("MOTHER")[0]
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("carrier answered for tracking id \"SOMEONE_ELSE\"")
    );

    // The poll at the +72h slot is their last: tracking ends, and later cycles have nothing to do.
    let run = db.poll_json(&server.url(), LAST_SLOT, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["polled", "closed_unconfirmed"]), [2, 2]);
    for id in ["M400", "MOTHER"] {
        assert_eq!(db.tracking(id).unwrap().state, "UNCONFIRMED");
    }
    let run = db.poll_json(&server.url(), AFTER, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["messages_due", "http_requests"]), [0, 0]);
    refused.assert();
    other.assert();
}

fn a_message_never_answered_is_closed_at_the_first_cycle_after_its_window(backend: Backend) {
    let db = backend.db();
    db.submit("M503", None, SUBMITTED);
    db.submit("B503", Some("B"), SUBMITTED);
    let mut server = mockito::Server::new();
    let down = lookups(&mut server, "M503", 503, "down", 3);
    let batch = server
        .mock("GET", "/batches/B/messages")
        .with_status(503)
        .expect(3)
        .create();
    let args = ["--max-attempts", "1"];
    for now in [NOW, "2025-12-01T13:00:00Z"] {
        let run = db.poll_json(&server.url(), now, &args);
        assert_eq!(run.code, Some(69), "{now}: {}", run.stderr);
        assert_eq!(
            run.counts(&["messages_due", "polled", "closed_unanswered"]),
            [2, 0, 0]
        );
    }
    let run = db.poll_json(&server.url(), LAST_SLOT, &args);
    assert_eq!(
        run.code,
        Some(0),
        "closed, every due message is settled: {}",
        run.stderr
    );
    assert_eq!(
        run.counts(&[
            "messages_due",
            "polled",
            "closed_unanswered",
            "lookups_failed",
            "batches_failed",
            "bulk_fallbacks"
        ]),
        // The batch's question failed, and so did the lookup it fell back to.
        [2, 0, 2, 2, 1, 1]
    );
    let out = db.cmd().args(["history", "M503"]).output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("UNCONFIRMED, tracking closed 2025-12-04T09:00:00Z: closed after its +72h slot without an answer; last error: GET /messages/M503: HTTP 503"),
        "{text}"
    );
    assert!(text.contains("(closing entry)"), "{text}");
    let trail = db.audit("B503");
    assert_eq!(trail.len(), 1);
    assert!(
        trail[0]
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("batch \"B\": GET /batches/B/messages: HTTP 503")
    );

    let run = db.poll_json(&server.url(), AFTER, &args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["messages_due", "http_requests"]), [0, 0]);
    down.assert();
    batch.assert();
    let ok = db.cmd().args(["check", "--now", AFTER]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
}

fn a_listing_refused_for_good_falls_back_to_lookups_in_the_same_cycle(backend: Backend) {
    let db = backend.db();
    db.submit("G1", Some("GONE"), SUBMITTED);
    db.submit("G2", Some("GONE"), SUBMITTED);
    db.submit("P1", Some("PAGES"), SUBMITTED);
    let mut server = mockito::Server::new();
    let gone = server
        .mock("GET", "/batches/GONE/messages")
        .with_status(410)
        .with_body("batch expired")
        .expect(1)
        .create();
    // A listing that never ends: each page points at a new one, past the page cap.
    let pages = server
        .mock("GET", Matcher::Regex("^/batches/PAGES/messages".into()))
        .with_body_from_request(|req| {
            let page: u64 = req
                .path_and_query()
                .rsplit('=')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            listing("PAGES", &[], Some(&(page + 1).to_string())).into_bytes()
        })
        .expect(1000)
        .create();
    let each = server
        .mock("GET", Matcher::Regex("^/messages/(G1|G2|P1)$".into()))
        .with_body_from_request(|req| {
            let id = req.path().rsplit('/').next().unwrap().to_string();
            wire(&id, "DELIVERED").to_string().into_bytes()
        })
        .expect(3)
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["polled", "delivered", "batches_failed"]),
        [3, 3, 0]
    );
    run.assert_stderr_has("batch \"GONE\": GET /batches/GONE/messages: carrier answered HTTP 410: batch expired; asking for its 2 messages one by one");
    run.assert_stderr_has("batch \"PAGES\": more than 1000 pages; giving up on the listing; asking for its 1 messages one by one");
    gone.assert();
    pages.assert();
    each.assert();
}

fn of_a_message_listed_twice_the_newer_report_wins_and_times_are_stored_in_utc(backend: Backend) {
    let db = backend.db();
    db.submit("T1", Some("B"), SUBMITTED);
    db.submit("T2", Some("B"), SUBMITTED);
    let at = |id: &str, status: &str, when: &str| {
        let mut m = wire(id, status);
        m["status_updated_at"] = when.into();
        m
    };
    let mut server = mockito::Server::new();
    let m = server
        .mock("GET", "/batches/B/messages")
        .with_body(listing(
            "B",
            &[
                at("T1", "SENT", "2025-12-01T09:05:00Z"),
                at("T1", "DELIVERED", "2025-12-01T11:30:00+02:00"),
                at("T2", "DELIVERED", "2025-12-01T09:30:00Z"),
                at("T2", "SENT", "2025-12-01T09:05:00Z"),
            ],
            None,
        ))
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["delivered", "duplicate_reports"]), [2, 2]);
    for id in ["T1", "T2"] {
        let row = &db.audit(id)[0];
        assert_eq!(row.status, "DELIVERED", "{id}");
        assert_eq!(
            row.confirmed_at.as_deref(),
            Some("2025-12-01T09:30:00Z"),
            "{id}"
        );
    }
    m.assert();
}

fn closing_a_message_by_hand(backend: Backend) {
    let db = backend.db();
    db.submit("T1", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let m = lookups(&mut server, "T1", 200, &wire("T1", "SENT").to_string(), 1);
    assert_eq!(db.poll_json(&server.url(), NOW, &[]).code, Some(0));

    let out = db
        .cmd()
        .args(["close", "T1", "--reason", "carrier ticket 4711"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).starts_with("closed T1: UNCONFIRMED at "),
        "{}",
        stdout(&out)
    );
    let trail = db.audit("T1");
    assert_eq!(trail.len(), 2);
    assert_eq!(
        trail[1].failure_reason.as_deref(),
        Some("closed by hand: carrier ticket 4711")
    );
    let text = stdout(&db.cmd().args(["history", "T1"]).output().unwrap());
    assert!(text.contains("UNCONFIRMED, tracking closed"), "{text}");
    assert!(
        text.contains("closed by hand: carrier ticket 4711"),
        "{text}"
    );

    // Not polled again.
    let run = db.poll_json(&server.url(), "2025-12-01T13:00:00Z", &[]);
    assert_eq!(run.counts(&["messages_due", "http_requests"]), [0, 0]);
    m.assert();

    let again = db
        .cmd()
        .args(["close", "T1", "--reason", "x"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stdout(&again).contains("is not being tracked any more (UNCONFIRMED); nothing changed")
    );
    let unknown = db
        .cmd()
        .args(["close", "NOPE", "--reason", "x"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(64));
    let empty = db
        .cmd()
        .args(["close", "T1", "--reason", " "])
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(78));
    let missing = db.cmd().args(["close", "T1"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(64), "--reason is required");
}

fn a_clock_in_the_future_is_refused_unless_meant(backend: Backend) {
    let db = backend.db();
    db.submit("T1", None, "2098-12-31T20:00:00Z");
    let out = db
        .poll("http://127.0.0.1:9", "2099-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--now 2099-01-01T00:00:00Z is later than the system clock"),
        "{err}"
    );
    assert!(err.contains("--allow-future-now"), "{err}");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_cycles"),
        0,
        "nothing ran"
    );

    let mut server = mockito::Server::new();
    let m = lookups(&mut server, "T1", 200, &wire("T1", "SENT").to_string(), 1);
    let run = db.poll_json(
        &server.url(),
        "2099-01-01T00:00:00Z",
        &["--allow-future-now"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    m.assert();
}

fn metrics_that_cannot_be_written_do_not_change_the_cycle_outcome(backend: Backend) {
    let db = backend.db();
    db.submit("T1", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let _m = lookups(
        &mut server,
        "T1",
        200,
        &wire("T1", "DELIVERED").to_string(),
        1,
    );
    let run = db.poll_json(
        &server.url(),
        NOW,
        &["--metrics-file", "/nonexistent-dir/dlr.prom"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.summary["exit_code"], 0, "the --json summary is printed");
    run.assert_stderr_has("the cycle itself is unaffected");
    assert_eq!(
        db.count("SELECT exit_code FROM poll_cycles"),
        0,
        "recorded code = exit code"
    );
}

fn check_exits_only_with_nagios_codes(backend: Backend) {
    let db = backend.db();
    for args in [
        &["check", "--max-age", "soon"][..],
        &["check", "--now", "yesterday"],
        &["check", "--no-such-flag"],
        &["--busy-timeout", "x", "check"],
    ] {
        let out = db.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}");
    }
    let out = db
        .cmd()
        .args(["check", "--max-age", "soon"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).starts_with("UNKNOWN: invalid --max-age \"soon\""),
        "{}",
        stdout(&out)
    );
    let missing = common::bin()
        .args(["--db", "/nonexistent-dir/x.db", "check"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3));
}

fn the_same_bad_value_gets_the_same_code_in_every_command(backend: Backend) {
    let db = backend.db();
    let bad_now = |cmd: &[&str]| {
        let out = db
            .cmd()
            .env("DLR_CARRIER_TOKEN", "t")
            .args(cmd)
            .args(["--now", "yesterday"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for cmd in [
        &["poll", "--carrier-url", "http://127.0.0.1:9"][..],
        &["prune", "--older-than", "30d"],
    ] {
        let (code, err) = bad_now(cmd);
        assert_eq!(code, Some(78), "{cmd:?}: {err}");
        assert!(err.contains("invalid --now"), "{err}");
    }
    for cmd in [
        &["history", "T1"][..],
        &["cycles"],
        &["migrate"],
        &["close", "T1", "--reason", "x"],
    ] {
        let out = db
            .cmd()
            .args(["--busy-timeout", "x"])
            .args(cmd)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{cmd:?}");
    }
}

#[test]
fn submission_times_in_sqlites_own_form_are_read_as_utc() {
    // A dispatcher that lets a column default (CURRENT_TIMESTAMP) fill submitted_at writes "2025-12-01 09:00:00".
    let db = TestDb::new();
    db.submit("T1", None, "2025-12-01 09:00:00");
    db.submit("OLD", None, "2025-06-01 09:00:00");
    let mut server = mockito::Server::new();
    let m = lookups(
        &mut server,
        "T1",
        200,
        &wire("T1", "DELIVERED").to_string(),
        1,
    );
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["polled", "too_old", "invalid_submissions"]),
        [1, 1, 0]
    );
    m.assert();
    let text = stdout(&db.cmd().args(["history", "T1"]).output().unwrap());
    assert!(
        text.contains("submitted at: 2025-12-01T09:00:00Z"),
        "{text}"
    );
}
