//! Whole-life tracking through the real binary against the sandbox carrier: 1,200 messages across the full 72
//! hours of cycles, with faults, checking every message's audit trail against what the sandbox reported at each
//! cycle and against an independent model of the schedule. Plus the deadline.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Backend, TOKEN, expected_status, next_slot, rows_polled_at};
use dlr_poller::timefmt;
use dlr_sandbox::{Sandbox, SandboxServer, SimMessage, World};

/// The test's own model of one message: polls so far, next slot, closed or not.
#[derive(Clone, Debug)]
struct Model {
    polls: i64,
    next_due: DateTime<Utc>,
    closed: Option<&'static str>,
}

on_both_backends!(
    every_message_is_tracked_correctly_for_72_hours,
    the_deadline_stops_new_work_and_the_next_run_finishes_it,
    a_submission_dated_ahead_is_first_due_two_hours_after_its_date,
    a_submission_out_of_range_is_invalid_and_never_polled,
);

fn every_message_is_tracked_correctly_for_72_hours(backend: Backend) {
    let start = timefmt::parse("2025-12-01T09:00:00Z").unwrap();
    let world = World::generate(1_200, 100, start, 42);
    let messages: Vec<SimMessage> = world.messages().to_vec();
    let db = backend.db();
    db.insert_world(&messages);
    let sandbox = Arc::new(Sandbox::new(world, TOKEN, start).with_page_size(40));
    sandbox.faults(|f| f.error_rate = 0.03);
    let server = SandboxServer::start(sandbox.clone(), 0).unwrap();

    let mut model: Vec<Model> = messages
        .iter()
        .map(|m| Model {
            polls: 0,
            next_due: m.submitted_at + TimeDelta::hours(2),
            closed: None,
        })
        .collect();

    // Every two hours on the hour, except: a run 30 minutes after one (nothing new is due), a missed run at
    // +30h (the next run covers both slots), a late run at +40h10m, and one with a dead batch.
    let mut clocks: Vec<DateTime<Utc>> =
        (1..=38).map(|k| start + TimeDelta::hours(2 * k)).collect();
    clocks.retain(|c| *c != start + TimeDelta::hours(30));
    clocks.insert(3, start + TimeDelta::hours(6) + TimeDelta::minutes(30));
    let late = clocks
        .iter()
        .position(|c| *c == start + TimeDelta::hours(40))
        .unwrap();
    clocks[late] += TimeDelta::minutes(10);
    let dead_cycle = start + TimeDelta::hours(10);
    let dead_batch = "B00003";

    for now in clocks {
        let stamp = timefmt::format(now);
        sandbox.set_clock(now);
        let dead = now == dead_cycle;
        sandbox.faults(|f| {
            f.dead_batches = if dead {
                vec![dead_batch.to_string()]
            } else {
                vec![]
            }
        });
        if now == start + TimeDelta::hours(20) {
            sandbox.faults(|f| {
                f.rate_limited_next = 5;
                f.retry_after_secs = 0;
            });
        }
        let out = db.poll_json(&server.url(), &stamp, &["--max-attempts", "6"]);
        let stderr = out.stderr;
        let s = out.summary;

        // What the model expects this cycle.
        let mut expected_due = 0;
        let mut expected_polled = 0;
        let mut dead_due = 0;
        let rows = rows_polled_at(&db, &stamp);
        for (m, state) in messages.iter().zip(model.iter_mut()) {
            let due = state.closed.is_none() && state.next_due <= now + TimeDelta::minutes(5);
            expected_due += due as u64;
            // A dead batch's messages are asked for one by one in the same cycle: polled all the same.
            dead_due += u64::from(dead && due && m.batch_id.as_deref() == Some(dead_batch));
            let got = rows.get(&m.tracking_id).cloned().unwrap_or_default();
            if !due {
                assert!(
                    got.is_empty(),
                    "{} polled at {stamp} though not due: {got:?}",
                    m.tracking_id
                );
                continue;
            }
            expected_polled += 1;
            assert_eq!(
                got.len(),
                1,
                "{} at {stamp}: expected one poll, got {got:?}",
                m.tracking_id
            );
            let row = &got[0];
            assert_eq!(
                row.attempt,
                state.polls + 1,
                "{} poll number",
                m.tracking_id
            );
            let truth = m.report_at(now);
            let want = truth
                .as_ref()
                .map_or("PENDING", |r| expected_status(&r.status));
            assert_eq!(
                row.status, want,
                "{} at {stamp}: truth {truth:?}",
                m.tracking_id
            );
            assert_eq!(row.found, truth.is_some(), "{}", m.tracking_id);
            assert_eq!(
                row.carrier_status.as_ref(),
                truth.as_ref().map(|r| &r.status),
                "{}",
                m.tracking_id
            );
            assert_eq!(
                row.code.as_ref(),
                truth.as_ref().and_then(|r| r.error_code.as_ref()),
                "{}",
                m.tracking_id
            );
            assert_eq!(
                row.reason.as_ref(),
                truth.as_ref().and_then(|r| r.error_message.as_ref()),
                "{}",
                m.tracking_id
            );
            let want_confirmed = truth
                .as_ref()
                .filter(|_| want != "PENDING")
                .and_then(|r| r.status_updated_at.clone());
            assert_eq!(row.confirmed_at, want_confirmed, "{}", m.tracking_id);

            state.polls += 1;
            match (want, next_slot(m.submitted_at, now)) {
                ("DELIVERED", _) => state.closed = Some("DELIVERED"),
                ("FAILED", _) => state.closed = Some("FAILED"),
                (_, Some(next)) => state.next_due = next,
                (_, None) => state.closed = Some("UNCONFIRMED"),
            }
        }
        assert_eq!(
            s["messages_due"].as_u64(),
            Some(expected_due),
            "due at {stamp}"
        );
        assert_eq!(
            s["polled"].as_u64(),
            Some(expected_polled),
            "polled at {stamp}\n{stderr}"
        );
        assert_eq!(out.code, Some(0), "exit at {stamp}: {stderr}");
        if dead {
            assert!(dead_due > 0, "the dead batch has messages due at {stamp}");
            assert_eq!(s["bulk_fallbacks"].as_u64(), Some(1), "{stderr}");
            assert!(s["asked_alone"].as_u64() >= Some(dead_due), "{stderr}");
            assert_eq!(s["batches_failed"].as_u64(), Some(0), "{stderr}");
            assert_eq!(s["fallback_stopped"].as_u64(), Some(0), "{stderr}");
        }
    }

    // Every message ended in the state the model says, with exactly the polls the model counted.
    for (m, state) in messages.iter().zip(&model) {
        let t = db.tracking(&m.tracking_id).unwrap();
        assert_eq!(
            Some(t.state.as_str()),
            state.closed,
            "{} final state",
            m.tracking_id
        );
        assert_eq!(t.polls, state.polls, "{} polls", m.tracking_id);
        assert!(t.next_due_at.is_none());
    }
    let total: i64 = model.iter().map(|m| m.polls).sum();
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        total
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM (SELECT 1 FROM sms_delivery_confirmations GROUP BY tracking_id, cycle_id HAVING COUNT(*) > 1) AS twice"),
        0,
        "no message polled twice in a cycle"
    );
    for state in ["DELIVERED", "FAILED", "UNCONFIRMED"] {
        assert!(
            model.iter().any(|m| m.closed == Some(state)),
            "the world exercises {state}"
        );
    }
    // 36 slots, two of which the missed run at +30h collapsed into one poll.
    assert_eq!(
        model.iter().map(|m| m.polls).max(),
        Some(35),
        "the longest trail spans the whole grid"
    );
    assert!(
        sandbox
            .stats
            .faults
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "faults were injected"
    );
}

fn the_deadline_stops_new_work_and_the_next_run_finishes_it(backend: Backend) {
    let start = timefmt::parse("2025-12-01T09:00:00Z").unwrap();
    let now = "2025-12-01T12:00:00Z";
    let world = World::generate(400, 10, start, 9);
    let (db, server) = common::with_sandbox_on(backend.db(), world.messages().to_vec(), now);
    let sandbox = server.sandbox();
    sandbox.faults(|f| f.latency = Duration::from_millis(150));

    let out = db.poll_json(
        &server.url(),
        now,
        &["--deadline", "1s", "--concurrency", "2"],
    );
    let s = out.summary;
    assert_eq!(out.code, Some(75), "{}", out.stderr);
    assert_eq!(s["outcome"], "partial");
    let polled = s["polled"].as_u64().unwrap();
    assert!(
        polled > 0 && polled < 400,
        "some but not all polled: {polled}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations") as u64,
        polled,
        "what was obtained is kept"
    );

    sandbox.faults(|f| f.latency = Duration::ZERO);
    let out = db.poll_json(&server.url(), now, &[]);
    assert_eq!(out.code, Some(0));
    let s = out.summary;
    assert_eq!(s["messages_due"].as_u64(), Some(400 - polled));
    assert_eq!(s["polled"].as_u64(), Some(400 - polled));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM (SELECT tracking_id FROM sms_delivery_confirmations GROUP BY tracking_id HAVING COUNT(*) = 1) AS once"),
        400,
        "every message polled exactly once across the two runs"
    );
}

/// A submission dated three hours ahead of the cycle's clock (beyond the 5-minute grace) is not polled until two
/// hours after its date, however many cycles run before.
fn a_submission_dated_ahead_is_first_due_two_hours_after_its_date(backend: Backend) {
    let db = backend.db();
    db.submit("AHEAD", Some("B1"), "2025-12-01T12:00:00Z");
    let mut server = mockito::Server::new();
    let listing = server
        .mock("GET", "/batches/B1/messages")
        .with_body(common::listing(
            "B1",
            &[common::wire("AHEAD", "SENT")],
            None,
        ))
        .expect(1)
        .create();
    for now in [
        "2025-12-01T09:00:00Z",
        "2025-12-01T11:00:00Z",
        "2025-12-01T13:00:00Z",
    ] {
        let out = db.poll_json(&server.url(), now, &[]);
        assert_eq!(out.code, Some(0), "{now}: {}", out.stderr);
        assert_eq!(out.counts(&["polled"]), [0], "{now}: {}", out.summary);
    }
    let out = db.poll_json(&server.url(), "2025-12-01T14:00:00Z", &[]);
    assert_eq!(out.counts(&["polled"]), [1], "{}", out.summary);
    listing.assert();
    let tracking = db.tracking("AHEAD").unwrap();
    assert_eq!(
        tracking.next_due_at.as_deref(),
        Some("2025-12-01T16:00:00Z")
    );
}

/// `9999-12-31T23:59:59Z`, a common "held" sentinel: its polls would fall after year 9999. It is INVALID with a
/// reason, counted, and no cycle asks the carrier about it.
fn a_submission_out_of_range_is_invalid_and_never_polled(backend: Backend) {
    let db = backend.db();
    db.submit("HELD", Some("B1"), "9999-12-31T23:59:59Z");
    let mut server = mockito::Server::new();
    let carrier = server
        .mock("GET", mockito::Matcher::Any)
        .with_body(common::listing("B1", &[common::wire("HELD", "SENT")], None))
        .expect(0)
        .create();
    let out = db.poll_json(&server.url(), "2025-12-01T09:00:00Z", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.counts(&["invalid_submissions", "polled"]),
        [1, 0],
        "{}",
        out.summary
    );
    out.assert_stderr_has("out of range");
    for now in [
        "2025-12-01T11:00:00Z",
        "2025-12-01T13:00:00Z",
        "2025-12-04T09:00:00Z",
    ] {
        let out = db.poll_json(&server.url(), now, &[]);
        assert_eq!(out.code, Some(0), "{now}: {}", out.stderr);
        assert_eq!(out.counts(&["polled"]), [0], "{now}: {}", out.summary);
    }
    carrier.assert();
    let tracking = db.tracking("HELD").unwrap();
    assert_eq!(
        (tracking.state.as_str(), tracking.next_due_at),
        ("INVALID", None)
    );
    assert!(db.audit("HELD").is_empty());
}

/// Rows an earlier version wrote for submissions after year 9999 (SQLite: `next_due_at` `+10000-...` sorts before
/// every time as text, and a `submitted_at` in year 10000 cannot be read) neither stop the cycle nor are polled:
/// each is closed once, without a request, and the other messages are polled as usual.
#[test]
fn rows_an_earlier_version_wrote_past_year_9999_are_closed_once() {
    let db = common::TestDb::new();
    db.submit("T1", Some("B1"), "2025-12-01T09:00:00Z");
    let conn = db.conn();
    for (id, submitted_at, next_due_at) in [
        ("HELD", "9999-12-31T23:59:59Z", "+10000-01-01T01:59:59Z"),
        ("FAR", "+10000-01-01T04:59:59Z", "+10000-01-01T06:59:59Z"),
    ] {
        conn.execute(
            "INSERT INTO message_tracking (tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at, \
             state, polls, next_due_at) VALUES (?1, 'C1', '+4915112345678', 'B1', ?2, 'OPEN', 0, ?3)",
            (id, submitted_at, next_due_at),
        )
        .unwrap();
    }
    let mut server = mockito::Server::new();
    let listing = server
        .mock("GET", "/batches/B1/messages")
        .with_body(common::listing("B1", &[common::wire("T1", "SENT")], None))
        .expect(1)
        .create();
    let out = db.poll_json(&server.url(), "2025-12-01T11:00:00Z", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.counts(&["polled", "closed_unanswered"]),
        [1, 2],
        "{}",
        out.summary
    );
    listing.assert();
    for id in ["HELD", "FAR"] {
        let tracking = db.tracking(id).unwrap();
        assert_eq!(tracking.state, "UNCONFIRMED", "{id}: {tracking:?}");
        let trail = db.audit(id);
        assert_eq!(trail.len(), 1, "{id}: {trail:?}");
        assert!(
            trail[0]
                .failure_reason
                .as_deref()
                .is_some_and(|r| r.contains("out of range")),
            "{id}: {trail:?}"
        );
    }
    let out = db.poll_json(&server.url(), "2025-12-01T13:00:00Z", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.counts(&["closed_unanswered"]), [0], "{}", out.summary);
}
