//! Hostile and broken input through the real binary: carrier responses that are truncated, huge, mislabelled,
//! duplicated, looping or endless, and database rows and states that are not what they should be. Each ends in
//! a clear message naming the culprit, never a panic, and never a lost result.

mod common;

use common::{TestDb, listing, sent_world, wire};
use dlr_sandbox::SimMessage;
use mockito::Matcher;

const SUBMITTED: &str = "2025-12-01T09:00:00Z";
const NOW: &str = "2025-12-01T11:00:00Z";

fn no_panic(run: &common::Run) {
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

/// One batch B1 with messages T1 and T2 due at NOW.
fn two_messages() -> TestDb {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), SUBMITTED);
    db.submit("T2", Some("B1"), SUBMITTED);
    db
}

#[test]
fn truncated_bodies_are_retried_then_reported() {
    let (db, server) = common::with_sandbox(sent_world(1, 3, SUBMITTED), NOW);
    server.sandbox().faults(|f| f.truncated_next = 1);
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(
        run.code,
        Some(0),
        "one truncated body, then a good one: {}",
        run.stderr
    );
    assert_eq!(run.counts(&["polled", "retries"]), [3, 1]);

    server.sandbox().faults(|f| f.truncated_next = 100);
    let run = db.poll_json(
        &server.url(),
        "2025-12-01T13:00:00Z",
        &["--max-attempts", "2"],
    );
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    no_panic(&run);
    run.assert_stderr_has("batch \"B000\": GET /batches/B000/messages:");
}

#[test]
fn huge_bodies_are_refused() {
    let db = two_messages();
    let mut server = mockito::Server::new();
    let huge = format!(
        r#"{{"messages":[],"padding":"{}"}}"#,
        "x".repeat(17 * 1024 * 1024)
    );
    let m = server
        .mock("GET", "/batches/B1/messages")
        .with_body(huge)
        .expect(1)
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    m.assert();
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    run.assert_stderr_has("response body larger than 16 MiB");
}

#[test]
fn malformed_and_mislabelled_bodies_name_the_problem() {
    let cases = [
        (
            "text/html",
            "<html>maintenance</html>",
            "content type text/html",
        ),
        (
            "application/json",
            r#"{"error":"internal","code":500}"#,
            "missing field `messages`",
        ),
        (
            "application/json",
            r#"{"messages":{"T1":"SENT"}}"#,
            "invalid type: map",
        ),
    ];
    for (content_type, body, expect) in cases {
        let db = two_messages();
        let mut server = mockito::Server::new();
        let m = server
            .mock("GET", "/batches/B1/messages")
            .with_header("content-type", content_type)
            .with_body(body)
            .expect(2)
            .create();
        let run = db.poll_json(&server.url(), NOW, &["--max-attempts", "2"]);
        m.assert();
        assert_eq!(run.code, Some(69), "{body}: {}", run.stderr);
        assert!(
            run.stderr.contains(expect),
            "{body}: expected {expect:?} in {}",
            run.stderr
        );
        assert!(db.audit("T1").is_empty());
    }
}

#[test]
fn a_wrong_content_type_with_a_good_body_is_accepted() {
    let db = two_messages();
    let mut server = mockito::Server::new();
    let m = server
        .mock("GET", "/batches/B1/messages")
        .with_header("content-type", "text/plain")
        .with_body(listing(
            "B1",
            &[wire("T1", "DELIVERED"), wire("T2", "SENT")],
            None,
        ))
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    m.assert();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["polled", "delivered"]), [2, 1]);
}

#[test]
fn duplicates_strangers_extra_fields_and_empty_statuses() {
    let db = two_messages();
    let mut server = mockito::Server::new();
    let mut extra = wire("T1", "DELIVERED");
    extra["carrier_internal"] = serde_json::json!({"hops": [1, 2]});
    let m = server
        .mock("GET", "/batches/B1/messages")
        .with_body(listing(
            "B1",
            &[
                extra,
                wire("T1", "FAILED"),
                wire("X999", "DELIVERED"),
                wire("T2", ""),
            ],
            None,
        ))
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    m.assert();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["polled", "duplicate_reports", "unknown_statuses"]),
        [2, 1, 1]
    );
    assert_eq!(
        db.audit("T1")[0].status,
        "DELIVERED",
        "the first report counts"
    );
    run.assert_stderr_has("listed 1 messages more than once");
    run.assert_stderr_has("carrier status \"\" is not in the mapping table");
    assert_eq!(db.audit("T2")[0].status, "PENDING");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations WHERE tracking_id = 'X999'"),
        0
    );
}

#[test]
fn a_page_token_loop_fails_the_batch() {
    let db = two_messages();
    let mut server = mockito::Server::new();
    let first = server
        .mock("GET", "/batches/B1/messages")
        .match_query(Matcher::Missing)
        .with_body(listing("B1", &[wire("T1", "SENT")], Some("again")))
        .create();
    let again = server
        .mock("GET", "/batches/B1/messages")
        .match_query(Matcher::UrlEncoded("page_token".into(), "again".into()))
        .with_body(listing("B1", &[wire("T2", "SENT")], Some("again")))
        .expect(1)
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    first.assert();
    again.assert();
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    run.assert_stderr_has("paging loops (page token \"again\" came back)");
    assert!(
        db.audit("T1").is_empty(),
        "a batch whose listing failed writes nothing"
    );
}

#[test]
fn an_endless_paging_chain_is_cut_off() {
    let db = two_messages();
    let mut server = mockito::Server::new();
    let pages = server
        .mock("GET", "/batches/B1/messages")
        .match_query(Matcher::Any)
        .with_body_from_request(|req| {
            let n: u64 = req
                .path_and_query()
                .rsplit('=')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            listing("B1", &[], Some(&(n + 1).to_string())).into_bytes()
        })
        .expect(dlr_poller::carrier::MAX_PAGES)
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    pages.assert();
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    run.assert_stderr_has("more than 1000 pages");
}

#[test]
fn batch_ids_with_characters_that_need_escaping() {
    let messages: Vec<SimMessage> = sent_world(1, 3, SUBMITTED)
        .into_iter()
        .map(|m| SimMessage {
            batch_id: Some("B 1/ü?#%&x".into()),
            ..m
        })
        .collect();
    let (db, server) = common::with_sandbox(messages, NOW);
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["polled", "batches_ok", "http_requests"]),
        [3, 1, 1]
    );
    assert_eq!(
        server
            .sandbox()
            .stats
            .batch_pages
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn duplicate_submission_rows_are_tracked_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dispatch.db");
    // A dispatch system that created its table without the primary key.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE sms_submissions (tracking_id TEXT, customer_id TEXT, phone_number TEXT, \
             carrier_batch_id TEXT, submitted_at TEXT NOT NULL);
             INSERT INTO sms_submissions VALUES ('T1', 'C', '+1', NULL, '2025-12-01T09:00:00Z');
             INSERT INTO sms_submissions VALUES ('T1', 'C', '+1', NULL, '2025-12-01T09:00:00Z');",
        )
        .unwrap();
    let db = TestDb {
        path: path.clone(),
        dir,
        pg: None,
    };
    db.cmd().arg("migrate").assert().code(0);
    let mut server = mockito::Server::new();
    let m = server
        .mock("GET", "/messages/T1")
        .with_body(wire("T1", "SENT").to_string())
        .expect(1)
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    m.assert();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.assert_stderr_has("submission \"T1\" appears twice in sms_submissions; tracked once");
    assert_eq!(run.counts(&["new_submissions", "polled"]), [1, 1]);
}

#[test]
fn future_submissions_are_flagged_and_wait_for_their_time() {
    let db = TestDb::new();
    db.submit("T1", None, "2030-01-01T00:00:00Z");
    let mut server = mockito::Server::new();
    let none = server.mock("GET", Matcher::Any).expect(0).create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    none.assert();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.assert_stderr_has("submission \"T1\" has submitted_at 2030-01-01T00:00:00Z in the future");
    assert_eq!(
        db.tracking("T1").unwrap().next_due_at.as_deref(),
        Some("2030-01-01T02:00:00Z")
    );
}

#[test]
fn a_missing_table_is_named() {
    let db = TestDb::new();
    db.conn()
        .execute_batch("DROP TABLE sms_submissions")
        .unwrap();
    let run = db.poll_json("http://127.0.0.1:9", NOW, &[]);
    assert_eq!(run.code, Some(74), "{}", run.stderr);
    run.assert_stderr_has("table sms_submissions is missing from the database");
}

#[test]
fn a_database_locked_past_the_busy_timeout_is_a_database_error() {
    let db = two_messages();
    let holder = db.conn();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let run = db.poll_json("http://127.0.0.1:9", NOW, &["--busy-timeout", "300ms"]);
    assert_eq!(run.code, Some(74), "{}", run.stderr);
    run.assert_stderr_has("database is locked");
    assert!(run.stderr.contains(
        "hint: another process held a lock on the database for longer than --busy-timeout"
    ));
    holder.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_bad_busy_timeout_is_a_configuration_error() {
    let db = TestDb::new();
    let out = db
        .cmd()
        .args(["--busy-timeout", "soon", "cycles"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid --busy-timeout (env DLR_POLLER_BUSY_TIMEOUT) \"soon\"")
    );
}

#[test]
fn submissions_that_reuse_rowids_the_poller_passed_are_still_found() {
    let db = TestDb::new();
    for i in 0..10 {
        db.submit(&format!("OLD{i}"), None, SUBMITTED);
    }
    let mut server = mockito::Server::new();
    let any = server
        .mock("GET", Matcher::Regex("^/messages/".into()))
        .with_body_from_request(|req| {
            let id = req.path().rsplit('/').next().unwrap().to_string();
            wire(&id, "DELIVERED").to_string().into_bytes()
        })
        .expect(13)
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.counts(&["new_submissions", "polled"]), [10, 10]);

    // The dispatch system deletes its newest rows (say, a send it rolled back) and vacuums: SQLite hands the
    // next rows rowids at or below the position the poller had reached. Then new submissions arrive.
    let conn = db.conn();
    conn.execute_batch("DELETE FROM sms_submissions WHERE tracking_id IN ('OLD5','OLD6','OLD7','OLD8','OLD9'); VACUUM;")
        .unwrap();
    drop(conn);
    for i in 0..3 {
        db.submit(&format!("NEW{i}"), None, "2025-12-01T10:00:00Z");
    }
    let max_rowid = db.count("SELECT MAX(rowid) FROM sms_submissions");
    assert!(
        max_rowid <= 10,
        "the new rows got rowids the poller had passed already ({max_rowid})"
    );

    let run = db.poll_json(&server.url(), "2025-12-01T12:00:00Z", &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["new_submissions", "invalid_submissions", "polled"]),
        [3, 0, 3]
    );
    for i in 0..3 {
        assert_eq!(db.audit(&format!("NEW{i}"))[0].status, "DELIVERED");
        assert_eq!(db.audit(&format!("NEW{i}"))[0].attempt, 1);
    }
    any.assert();
}

#[test]
fn a_read_only_database_is_a_database_error_naming_the_file() {
    let db = two_messages();
    // Root ignores file modes, so make the file immutable; skip where the filesystem cannot.
    let immutable = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&db.path)
        .status();
    // Without chattr (or a filesystem that supports it) the test cannot set its scene: it fails, saying so.
    assert!(
        immutable.is_ok_and(|s| s.success()),
        "chattr +i failed: this test needs chattr and a filesystem with the immutable attribute"
    );
    let run = db.poll_json("http://127.0.0.1:9", NOW, &[]);
    let _ = std::process::Command::new("chattr")
        .arg("-i")
        .arg(&db.path)
        .status();
    assert_eq!(run.code, Some(74), "{}", run.stderr);
    run.assert_stderr_has("readonly database");
    assert!(
        run.stderr
            .contains(&format!("hint: {} (and its directory", db.path.display())),
        "{}",
        run.stderr
    );
    assert!(db.audit("T1").is_empty());
}

#[test]
fn a_malformed_listing_entry_costs_only_its_own_message() {
    let db = two_messages();
    let mut server = mockito::Server::new();
    let listing_mock = server
        .mock("GET", "/batches/B1/messages")
        .with_body(r#"{"messages":[{"tracking_id":"T1","status":7},{"tracking_id":"T2","status":"DELIVERED"}]}"#)
        .expect(1)
        .create();
    let lookup = server
        .mock("GET", "/messages/T1")
        .with_body(wire("T1", "SENT").to_string())
        .expect(1)
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    listing_mock.assert();
    lookup.assert();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["polled", "malformed_reports", "delivered"]),
        [2, 1, 1]
    );
    assert!(
        run.stderr.contains("1 entries of the carrier's listing could not be read (first: entry 0 (invalid type: integer `7`"),
        "{}",
        run.stderr
    );
    assert_eq!(db.audit("T1")[0].carrier_status.as_deref(), Some("SENT"));
    assert_eq!(db.audit("T2")[0].status, "DELIVERED");
}
