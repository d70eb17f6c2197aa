//! The carrier conversation through the real binary against mockito: paging, one-by-one fallback, 404s, retries,
//! malformed bodies, rejected credentials, and what each does to the audit trail and the exit code.

mod common;

use std::time::{Duration, Instant};

use common::{Audit, TOKEN, TestDb, listing, wire};
use mockito::Matcher;
use serde_json::json;

const SUBMITTED: &str = "2025-12-01T09:00:00Z";
const FIRST_POLL: &str = "2025-12-01T11:00:00Z";

#[test]
fn pages_are_followed_and_every_result_is_stored() {
    let db = TestDb::new();
    for t in ["T1", "T2", "T3"] {
        db.submit(t, Some("B1"), SUBMITTED);
    }
    let mut server = mockito::Server::new();
    let page1 = server
        .mock("GET", "/v1/batches/B1/messages")
        .match_query(Matcher::Missing)
        .match_header("authorization", format!("Bearer {TOKEN}").as_str())
        .with_header("content-type", "application/json")
        .with_body(listing(
            "B1",
            &[
                json!({"tracking_id": "T1", "status": "DELIVERED", "error_code": null, "error_message": null,
                       "status_updated_at": "2025-12-01T09:03:12Z"}),
                json!({"tracking_id": "T2", "status": "undeliverable", "error_code": 30006,
                       "error_message": "Landline", "status_updated_at": "2025-12-01T09:05:00Z"}),
            ],
            Some("p/2"),
        ))
        .expect(1)
        .create();
    let page2 = server
        .mock("GET", "/v1/batches/B1/messages")
        .match_query(Matcher::UrlEncoded("page_token".into(), "p/2".into()))
        .with_body(listing("B1", &[wire("T3", "QUEUED")], None))
        .expect(1)
        .create();

    let out = db.poll_json(&format!("{}/v1/", server.url()), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    page1.assert();
    page2.assert();
    assert_eq!(
        out.counts(&["messages_due", "polled", "delivered", "failed"]),
        [3, 3, 1, 1]
    );
    assert_eq!(
        out.counts(&["pending", "batches_ok", "http_requests"]),
        [1, 1, 2]
    );

    let t1 = &db.audit("T1")[0];
    assert_eq!(
        (t1.status.as_str(), t1.confirmed_at.as_deref()),
        ("DELIVERED", Some("2025-12-01T09:03:12Z"))
    );
    assert_eq!((t1.attempt, t1.polled_at.as_str()), (1, FIRST_POLL));
    let t2 = &db.audit("T2")[0];
    assert_eq!(t2.status, "FAILED");
    assert_eq!(t2.carrier_status.as_deref(), Some("undeliverable"));
    assert_eq!(
        (t2.failure_code.as_deref(), t2.failure_reason.as_deref()),
        (Some("30006"), Some("Landline"))
    );
    let t3 = &db.audit("T3")[0];
    assert_eq!(
        (t3.status.as_str(), t3.confirmed_at.as_deref()),
        ("PENDING", None)
    );

    assert_eq!(db.tracking("T1").unwrap().state, "DELIVERED");
    assert_eq!(db.tracking("T2").unwrap().state, "FAILED");
    let t3 = db.tracking("T3").unwrap();
    assert_eq!(
        (t3.state.as_str(), t3.next_due_at.as_deref()),
        ("OPEN", Some("2025-12-01T13:00:00Z"))
    );
}

#[test]
fn missing_messages_unknown_batches_and_unbatched_messages_are_asked_one_by_one() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    db.submit("T2", Some("B1"), SUBMITTED);
    db.submit("T3", None, SUBMITTED);
    db.submit("T9", Some("B9"), SUBMITTED);
    let mut server = mockito::Server::new();
    let mocks = [
        server
            .mock("GET", "/batches/B1/messages")
            .with_body(listing("B1", &[wire("T1", "SENT")], None))
            .create(),
        server
            .mock("GET", "/messages/T2")
            .with_body(wire("T2", "DELIVERED").to_string())
            .create(),
        server
            .mock("GET", "/messages/T3")
            .with_status(404)
            .with_body(r#"{"error":"unknown"}"#)
            .create(),
        server
            .mock("GET", "/batches/B9/messages")
            .with_status(404)
            .create(),
        server
            .mock("GET", "/messages/T9")
            .with_body(wire("T9", "TIMEOUT").to_string())
            .create(),
    ];
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for m in &mocks {
        m.assert();
    }
    assert_eq!(out.counts(&["polled", "not_found", "delivered"]), [4, 1, 1]);

    let t3 = &db.audit("T3")[0];
    assert_eq!(
        (t3.status.as_str(), t3.found, t3.carrier_status.as_deref()),
        ("PENDING", false, None)
    );
    assert_eq!(
        db.tracking("T3").unwrap().state,
        "OPEN",
        "a message unknown to the carrier stays tracked"
    );
    assert_eq!(
        db.audit("T9")[0].status,
        "PENDING",
        "TIMEOUT means no confirmation yet"
    );

    let history = db.cmd().args(["history", "T3"]).output().unwrap();
    assert!(String::from_utf8_lossy(&history.stdout).contains("(unknown to carrier)"));
}

#[test]
fn rate_limit_honours_retry_after_then_succeeds() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    let mut server = mockito::Server::new();
    let limited = server
        .mock("GET", "/batches/B1/messages")
        .with_status(429)
        .with_header("retry-after", "1")
        .expect(1)
        .create();
    let ok = server
        .mock("GET", "/batches/B1/messages")
        .with_body(listing("B1", &[wire("T1", "DELIVERED")], None))
        .expect(1)
        .create();
    let started = Instant::now();
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was not waited for"
    );
    limited.assert();
    ok.assert();
    assert_eq!(out.counts(&["retries", "http_requests"]), [1, 2]);
    assert_eq!(db.audit("T1").len(), 1);
}

#[test]
fn server_errors_are_retried() {
    let db = TestDb::new();
    db.submit("T1", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let failing = server
        .mock("GET", "/messages/T1")
        .with_status(502)
        .expect(2)
        .create();
    let ok = server
        .mock("GET", "/messages/T1")
        .with_body(wire("T1", "DELIVERED").to_string())
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    failing.assert();
    ok.assert();
    assert_eq!(out.summary["retries"].as_u64(), Some(2));
    assert_eq!(db.audit("T1")[0].status, "DELIVERED");
}

#[test]
fn malformed_bodies_exhaust_the_attempts_and_nothing_is_polled() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    let mut server = mockito::Server::new();
    let garbage = server
        .mock("GET", "/batches/B1/messages")
        .with_body(r#"{"messages":[{"tracking_id":"T1","status":"DELIV"#)
        .expect(3)
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &["--max-attempts", "3"]);
    assert_eq!(out.code, Some(69), "{}", out.stderr);
    garbage.assert();
    let err = &out.stderr;
    assert!(
        err.contains("batch \"B1\": GET /batches/B1/messages: malformed response"),
        "{err}"
    );
    assert!(err.contains("(after 3 attempts)"), "{err}");
    assert_eq!(
        out.counts(&["polled", "batches_failed", "exit_code"]),
        [0, 1, 69]
    );
    assert!(db.audit("T1").is_empty());
    assert!(
        db.tracking("T1").is_none(),
        "a message is taken in with its first result"
    );

    // It stays due: the next run asks again.
    let good = server
        .mock("GET", "/batches/B1/messages")
        .with_body(listing("B1", &[wire("T1", "DELIVERED")], None))
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    good.assert();
    assert_eq!(db.audit("T1")[0].status, "DELIVERED");
}

#[test]
fn rejected_credentials_stop_the_cycle_at_once() {
    let db = TestDb::new();
    for b in ["B1", "B2", "B3"] {
        db.submit(&format!("T{b}"), Some(b), SUBMITTED);
    }
    let mut server = mockito::Server::new();
    let rejected = server
        .mock("GET", Matcher::Any)
        .with_status(401)
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &["--concurrency", "1"]);
    assert_eq!(out.code, Some(77), "{}", out.stderr);
    rejected.assert();
    out.assert_stderr_has("carrier rejected the credentials (HTTP 401)");
    assert_eq!(out.summary["outcome"], "credentials_rejected");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        0
    );
}

#[test]
fn a_failed_batch_is_partial_and_goes_first_next_cycle() {
    let db = TestDb::new();
    db.submit("A1", Some("A"), SUBMITTED);
    db.submit("Z1", Some("Z"), SUBMITTED);
    let mut server = mockito::Server::new();
    let dead = server
        .mock("GET", "/batches/A/messages")
        .with_status(503)
        .expect(2)
        .create();
    let ok = server
        .mock("GET", "/batches/Z/messages")
        .with_body(listing("Z", &[wire("Z1", "SENT")], None))
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &["--max-attempts", "2"]);
    assert_eq!(out.code, Some(75), "{}", out.stderr);
    dead.assert();
    ok.assert();
    assert_eq!(
        out.counts(&["polled", "batches_failed", "batches_ok"]),
        [1, 1, 1]
    );
    out.assert_stderr_has("its 1 messages stay due");

    // Next cycle: A is overdue (11:00) and Z is due at 13:00; A is asked first, then Z.
    let mut server = mockito::Server::new();
    let a = server
        .mock("GET", "/batches/A/messages")
        .with_body(listing("A", &[wire("A1", "DELIVERED")], None))
        .create();
    let z = server
        .mock("GET", "/batches/Z/messages")
        .with_body(listing("Z", &[wire("Z1", "DELIVERED")], None))
        .create();
    let out = db.poll_json(
        &server.url(),
        "2025-12-01T13:00:00Z",
        &["--concurrency", "1", "-v"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    a.assert();
    z.assert();
    let err = &out.stderr;
    let (first_a, first_z) = (
        err.find("batch \"A\": 1 results stored"),
        err.find("batch \"Z\": 1 results stored"),
    );
    assert!(
        first_a.is_some() && first_z.is_some() && first_a < first_z,
        "A before Z:\n{err}"
    );
    let a1: Vec<Audit> = db.audit("A1");
    assert_eq!(
        (a1.len(), a1[0].attempt, a1[0].polled_at.as_str()),
        (1, 1, "2025-12-01T13:00:00Z")
    );
    assert_eq!(db.audit("Z1").len(), 2);
}

#[test]
fn redirects_are_not_followed() {
    let db = TestDb::new();
    db.submit("T1", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let redirect = server
        .mock("GET", "/messages/T1")
        .with_status(302)
        .with_header("location", "http://elsewhere.example/steal")
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(69), "{}", out.stderr);
    redirect.assert();
    out.assert_stderr_has("redirects are not followed");
}

#[test]
fn unknown_status_words_are_pending_counted_and_logged_once() {
    let db = TestDb::new();
    for t in ["T1", "T2", "T3"] {
        db.submit(t, Some("B1"), SUBMITTED);
    }
    let mut server = mockito::Server::new();
    let m = server
        .mock("GET", "/batches/B1/messages")
        .with_body(listing(
            "B1",
            &[
                wire("T1", "ACCEPTD"),
                wire("T2", "ACCEPTD"),
                wire("T3", "EN_ROUTE"),
            ],
            None,
        ))
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    m.assert();
    assert_eq!(out.summary["unknown_statuses"].as_u64(), Some(3));
    let err = &out.stderr;
    assert_eq!(
        err.matches("carrier status \"ACCEPTD\" is not in the mapping table")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches("carrier status \"EN_ROUTE\" is not in the mapping table")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(db.audit("T1")[0].status, "PENDING");
    assert_eq!(db.audit("T1")[0].carrier_status.as_deref(), Some("ACCEPTD"));
}

#[test]
fn json_summary_has_every_field_and_the_cycle_is_recorded() {
    let db = TestDb::new();
    db.submit("T1", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let m = server
        .mock("GET", "/messages/T1")
        .with_body(wire("T1", "DELIVERED").to_string())
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0));
    m.assert();
    let s = &out.summary;
    for key in [
        "cycle_id",
        "started_at",
        "finished_at",
        "duration_seconds",
        "messages_due",
        "polled",
        "delivered",
        "failed",
        "pending",
        "closed_unconfirmed",
        "unknown_statuses",
        "not_found",
        "batches_ok",
        "batches_failed",
        "http_requests",
        "retries",
        "exit_code",
    ] {
        assert!(s.get(key).is_some(), "summary lacks {key}: {s}");
    }
    assert_eq!(s["cycle_now"], FIRST_POLL);
    assert!(chrono::DateTime::parse_from_rfc3339(s["started_at"].as_str().unwrap()).is_ok());
    assert!(
        out.stderr
            .contains("cycle 1 ok: 1 due, 1 polled (1 delivered"),
        "{}",
        out.stderr
    );

    let cycles = db.cmd().args(["cycles", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&cycles.stdout).unwrap();
    assert_eq!(rows[0]["cycle_id"], s["cycle_id"]);
    assert_eq!(rows[0]["polled"], 1);
    assert_eq!(rows[0]["outcome"], "ok");
    let table = db.cmd().args(["cycles", "--last", "1"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.lines().nth(1).unwrap().contains(" ok "), "{table}");
    assert!(table.contains("100%"), "{table}");
}

#[test]
fn nothing_due_is_success_without_requests() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    let mut server = mockito::Server::new();
    let none = server.mock("GET", Matcher::Any).expect(0).create();
    let out = db.poll_json(&server.url(), "2025-12-01T10:00:00Z", &[]);
    assert_eq!(out.code, Some(0));
    none.assert();
    // Not due yet: read again by the next run, taken in when it is polled.
    assert_eq!(out.counts(&["messages_due", "new_submissions"]), [0, 0]);
    assert!(db.tracking("T1").is_none());
}

#[test]
fn token_and_phone_numbers_never_reach_the_output() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    db.submit("T2", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let _b = server
        .mock("GET", "/batches/B1/messages")
        .with_status(500)
        .expect(1)
        .create();
    let _b2 = server
        .mock("GET", "/batches/B1/messages")
        .with_body(listing("B1", &[wire("T1", "SENT")], None))
        .create();
    let _m = server
        .mock("GET", "/messages/T2")
        .with_body(wire("T2", "SENT").to_string())
        .create();
    for verbosity in [&["-vv"][..], &[]] {
        let out = db
            .poll(&server.url(), FIRST_POLL)
            .env("RUST_LOG", "trace")
            .args(verbosity)
            .arg("--json")
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            all.contains("DEBUG") || all.contains("TRACE"),
            "trace logging is on: {all}"
        );
        assert!(!all.contains(TOKEN), "token leaked:\n{all}");
        assert!(!all.contains("15112345678"), "phone number leaked:\n{all}");
    }
}

#[test]
fn pending_after_the_72h_slot_closes_unconfirmed_and_history_says_so() {
    let db = TestDb::new();
    db.submit("T1", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let m = server
        .mock("GET", "/messages/T1")
        .with_body(wire("T1", "SENT").to_string())
        .expect(1)
        .create();
    // The job never ran for 72 hours: all 36 slots collapse into this one poll, which closes the message.
    let out = db.poll_json(&server.url(), "2025-12-04T09:00:00Z", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    m.assert();
    assert_eq!(out.summary["closed_unconfirmed"].as_u64(), Some(1));
    let t = db.tracking("T1").unwrap();
    assert_eq!(
        (t.state.as_str(), t.polls, t.next_due_at),
        ("UNCONFIRMED", 1, None)
    );

    let out = db.cmd().args(["history", "T1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("UNCONFIRMED: still pending after the 72-hour window"),
        "{text}"
    );
    assert!(
        text.contains("   1  2025-12-04T09:00:00Z  PENDING    SENT"),
        "{text}"
    );
    let out = db.cmd().args(["history", "T1", "--json"]).output().unwrap();
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["state"], "UNCONFIRMED");
    assert_eq!(h["results"].as_array().unwrap().len(), 1);

    // Closed messages are never polled again.
    let out = db.poll_json(&server.url(), "2025-12-04T11:00:00Z", &[]);
    assert_eq!(out.summary["messages_due"].as_u64(), Some(0));
    m.assert();
}

#[test]
fn unusable_submission_rows_are_reported_and_skipped_until_the_dispatcher_fixes_them() {
    let db = TestDb::new();
    db.submit("T1", None, SUBMITTED);
    // Not due until 12:30: the rows after it are read again by the 11:30 run.
    db.submit("LATE", None, "2025-12-01T10:30:00Z");
    db.submit("BAD", None, "yesterday morning");
    db.conn()
        .execute("INSERT INTO sms_submissions (tracking_id, submitted_at) VALUES ('', '2025-12-01T09:00:00Z')", []).unwrap();
    let mut server = mockito::Server::new();
    let m = server
        .mock("GET", "/messages/T1")
        .with_body(wire("T1", "DELIVERED").to_string())
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    m.assert();
    assert_eq!(
        out.counts(&["new_submissions", "invalid_submissions", "polled"]),
        [1, 2, 1]
    );
    let err = &out.stderr;
    assert!(err.contains("submission \"BAD\" cannot be tracked: \"yesterday morning\" is not an RFC 3339 timestamp"), "{err}");
    assert!(err.contains("have no tracking_id"), "{err}");
    assert_eq!(db.tracking("BAD").unwrap().state, "INVALID");
    let text = String::from_utf8_lossy(&db.cmd().args(["history", "BAD"]).output().unwrap().stdout)
        .into_owned();
    assert!(text.contains("INVALID, not tracked"), "{text}");

    // The next run reads them again (LATE is still waiting for its first poll). BAD is tracked as INVALID and
    // not reported again; the row without a tracking id is, in one line, as it may still get one.
    let out = db.poll_json(&server.url(), "2025-12-01T11:30:00Z", &["-v"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.assert_stderr_has(
        "read 4 rows of sms_submissions: 0 new due now, 1 due at a later cycle, 0 too old to track, 1 invalid",
    );
    out.assert_stderr_has("1 rows of sms_submissions have no tracking_id (the first: rowid 4)");
    assert_eq!(out.summary["invalid_submissions"].as_u64(), Some(1));
    assert!(!out.stderr.contains("cannot be tracked"), "{}", out.stderr);

    // The dispatcher fills the tracking id in: the next cycle takes the row in and polls it.
    db.conn()
        .execute(
            "UPDATE sms_submissions SET tracking_id = 'FIXED' WHERE rowid = 4",
            [],
        )
        .unwrap();
    let fixed = server
        .mock("GET", "/messages/FIXED")
        .with_body(wire("FIXED", "DELIVERED").to_string())
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), "2025-12-01T12:00:00Z", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.counts(&["new_submissions", "invalid_submissions", "polled"]),
        [1, 0, 1]
    );
    fixed.assert();
    assert_eq!(db.audit("FIXED")[0].status, "DELIVERED");
}

#[test]
fn new_submissions_are_taken_in_when_first_due() {
    let db = TestDb::new();
    db.submit("A1", Some("A"), SUBMITTED); // due 11:00
    db.submit("B1", Some("B"), "2025-12-01T10:30:00Z"); // due 12:30
    db.submit("C1", Some("C"), SUBMITTED); // due 11:00, after a row that is not due yet
    let mut server = mockito::Server::new();
    let batch = |server: &mut mockito::Server, b: &str, id: &str, n: usize| {
        server
            .mock("GET", format!("/batches/{b}/messages").as_str())
            .with_body(listing(b, &[wire(id, "SENT")], None))
            .expect(n)
            .create()
    };
    let (a, b, c) = (
        batch(&mut server, "A", "A1", 2),
        batch(&mut server, "B", "B1", 1),
        batch(&mut server, "C", "C1", 2),
    );

    let out = db.poll_json(&server.url(), FIRST_POLL, &["-v"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.counts(&["messages_due", "polled", "new_submissions"]),
        [2, 2, 2]
    );
    out.assert_stderr_has("read 3 rows of sms_submissions: 2 new due now, 1 due at a later cycle");
    assert!(db.tracking("B1").is_none(), "B1 is not due: only read");

    // B1 is due: it is taken in; the rows before and after it are tracked already and passed over.
    let out = db.poll_json(&server.url(), "2025-12-01T12:30:00Z", &["-v"]);
    assert_eq!(
        out.counts(&["messages_due", "polled", "new_submissions"]),
        [1, 1, 1]
    );
    out.assert_stderr_has("read 3 rows of sms_submissions: 1 new due now, 0 due at a later cycle");

    // Every row is tracked now: the next cycle takes none in, and polls A1 and C1 from their tracking rows.
    let out = db.poll_json(&server.url(), "2025-12-01T13:00:00Z", &["-v"]);
    assert_eq!(
        out.counts(&["messages_due", "polled", "new_submissions"]),
        [2, 2, 0]
    );
    out.assert_stderr_has("read 3 rows of sms_submissions: 0 new due now, 0 due at a later cycle");
    for m in [&a, &b, &c] {
        m.assert();
    }
    let attempts = |id| -> Vec<i64> { db.audit(id).iter().map(|r| r.attempt).collect() };
    assert_eq!(
        (attempts("A1"), attempts("B1"), attempts("C1")),
        (vec![1, 2], vec![1], vec![1, 2])
    );
}

#[test]
fn interleaved_rows_of_a_batch_are_asked_for_in_one_listing() {
    let db = TestDb::new();
    let ids = ["A1", "B1", "A2", "B2", "A3"];
    for id in ids {
        db.submit(id, Some(&id[..1]), SUBMITTED);
    }
    let mut server = mockito::Server::new();
    let a = server
        .mock("GET", "/batches/A/messages")
        .with_body(listing(
            "A",
            &[wire("A1", "SENT"), wire("A2", "SENT"), wire("A3", "SENT")],
            None,
        ))
        .expect(1)
        .create();
    let b = server
        .mock("GET", "/batches/B/messages")
        .with_body(listing(
            "B",
            &[wire("B1", "SENT"), wire("B2", "SENT")],
            None,
        ))
        .expect(1)
        .create();
    let one_by_one = server
        .mock("GET", Matcher::Regex("^/messages/".into()))
        .expect(0)
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.counts(&["polled", "http_requests"]), [5, 2]);
    a.assert();
    b.assert();
    one_by_one.assert();
}

/// A token rotated at the wrong moment: the +72h poll of a batch and of a lone message is answered 401. Neither
/// is closed: the rejection is the poller's problem, not an answer about the messages, and a re-run with the right
/// token still asks about them and records what the carrier says.
#[test]
fn rejected_credentials_at_the_last_slot_close_nothing() {
    const LAST_SLOT: &str = "2025-12-04T09:00:00Z";
    for (tracking_id, batch_id, path) in [
        ("T1", Some("B1"), "/batches/B1/messages"),
        ("T2", None, "/messages/T2"),
    ] {
        let db = TestDb::new();
        db.submit(tracking_id, batch_id, SUBMITTED);
        let mut server = mockito::Server::new();
        let rejected = server.mock("GET", path).with_status(401).expect(1).create();
        let out = db.poll_json(&server.url(), LAST_SLOT, &[]);
        assert_eq!(out.code, Some(77), "{}", out.stderr);
        rejected.assert();
        assert_eq!(
            db.tracking(tracking_id).map(|t| t.state),
            None,
            "{tracking_id}: not taken in, so still due"
        );
        assert!(
            db.audit(tracking_id).is_empty(),
            "{:?}",
            db.audit(tracking_id)
        );
        rejected.remove();

        let body = match batch_id {
            Some(b) => listing(b, &[wire(tracking_id, "DELIVERED")], None),
            None => wire(tracking_id, "DELIVERED").to_string(),
        };
        let answered = server.mock("GET", path).with_body(body).expect(1).create();
        let out = db.poll_json(&server.url(), LAST_SLOT, &[]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        answered.assert();
        let trail = db.audit(tracking_id);
        assert_eq!(trail.len(), 1, "{trail:?}");
        assert_eq!(trail[0].status, "DELIVERED");
    }
}

/// The same for a message tracked for 72 hours already: the 401 at its last slot leaves it OPEN and due.
#[test]
fn rejected_credentials_leave_a_tracked_message_open_at_its_last_slot() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    let mut server = mockito::Server::new();
    let pending = server
        .mock("GET", "/batches/B1/messages")
        .with_body(listing("B1", &[wire("T1", "SENT")], None))
        .create();
    let out = db.poll_json(&server.url(), FIRST_POLL, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    pending.remove();
    let rejected = server
        .mock("GET", "/batches/B1/messages")
        .with_status(401)
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), "2025-12-04T09:00:00Z", &[]);
    assert_eq!(out.code, Some(77), "{}", out.stderr);
    rejected.assert();
    let tracking = db.tracking("T1").unwrap();
    assert_eq!(tracking.state, "OPEN", "{tracking:?}");
    assert_eq!(
        db.audit("T1").len(),
        1,
        "only the first poll: {:?}",
        db.audit("T1")
    );
}

/// The poller's own deadline closes nothing: at a message's +72h slot, a 429 asking for a pause longer than the
/// time left, or an answer slower than the time left, leaves the message due for the next run.
#[test]
fn the_deadline_at_the_last_slot_closes_nothing() {
    const LAST_SLOT: &str = "2025-12-04T09:00:00Z";
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    let mut server = mockito::Server::new();
    let pause = server
        .mock("GET", "/batches/B1/messages")
        .with_status(429)
        .with_header("retry-after", "600")
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), LAST_SLOT, &["--deadline", "10s"]);
    pause.assert();
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(db.audit("T1").is_empty(), "{:?}", db.audit("T1"));
    pause.remove();

    let slow = server
        .mock("GET", "/batches/B1/messages")
        .with_body_from_request(|_| {
            std::thread::sleep(Duration::from_secs(4));
            listing("B1", &[wire("T1", "DELIVERED")], None).into_bytes()
        })
        .create();
    let out = db.poll_json(
        &server.url(),
        LAST_SLOT,
        &["--deadline", "2s", "--max-attempts", "1"],
    );
    assert_eq!(out.code, Some(75), "{}", out.stderr);
    assert!(db.audit("T1").is_empty(), "{:?}", db.audit("T1"));
    slow.remove();

    let answered = server
        .mock("GET", "/batches/B1/messages")
        .with_body(listing("B1", &[wire("T1", "DELIVERED")], None))
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), LAST_SLOT, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    answered.assert();
    assert_eq!(db.audit("T1")[0].status, "DELIVERED");
}
