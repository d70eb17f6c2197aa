//! Reliability through the real binary: overlapping runs and the lease, signals, and carriers that hang, throttle
//! or go down halfway. Every background process is bounded in time and killed if the test ends first.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, HangingCarrier, TestDb, sent_world};
use dlr_poller::timefmt;
use dlr_sandbox::{SandboxServer, SimMessage};

on_both_backends!(
    concurrent_starts_run_one_cycle_at_a_time_and_never_poll_twice,
    sigterm_saves_what_was_obtained_records_the_cycle_and_releases_the_lease,
    a_hanging_request_is_abandoned_after_the_grace_and_a_second_signal_exits_at_once,
    a_carrier_that_hangs_is_bounded_by_the_deadline,
    rate_limit_storms_respect_retry_after_and_the_deadline,
    a_carrier_going_down_halfway_keeps_what_was_obtained,
    max_rps_caps_the_request_rate,
);

const SUBMITTED: &str = "2025-12-01T09:00:00Z";
const NOW: &str = "2025-12-01T11:00:00Z";

/// A database with `batches` x `per_batch` messages due at NOW, and a sandbox serving them.
fn setup(backend: Backend, batches: usize, per_batch: usize) -> (TestDb, SandboxServer) {
    setup_with(backend, sent_world(batches, per_batch, SUBMITTED))
}

fn setup_with(backend: Backend, messages: Vec<SimMessage>) -> (TestDb, SandboxServer) {
    common::with_sandbox_on(backend.db(), messages, NOW)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

const LIMIT: Duration = Duration::from_secs(60);

/// SQLite runs one cycle at a time (on PostgreSQL a second run for the same clock helps instead: see
/// tests/postgres.rs).
#[test]
fn a_second_poll_during_a_cycle_exits_73_naming_the_holder_and_writes_nothing() {
    let (db, server) = setup(Backend::Sqlite, 10, 5);
    server
        .sandbox()
        .faults(|f| f.latency = Duration::from_millis(300));
    let first = db.spawn_poll(&server.url(), NOW, &["--concurrency", "1"]);
    assert!(
        db.wait_for("SELECT COUNT(*) FROM poller_lease", 1, LIMIT),
        "first run took the lease"
    );

    let second = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(second.code, Some(73), "{}", second.stderr);
    let expected = format!(
        "another cycle is running on this database: host {} pid {} since ",
        hostname(),
        first.pid()
    );
    second.assert_stderr_has(&expected);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_cycles"),
        1,
        "the second run recorded nothing"
    );

    let first = first.wait(LIMIT).expect("first run finished");
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        50
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poller_lease"),
        0,
        "the lease is released"
    );
}

#[test]
fn leases_of_crashed_runs_are_taken_over_and_live_ones_are_respected() {
    let (db, server) = setup(Backend::Sqlite, 1, 3);
    let lease = |host: &str, pid: i64, expires: &str| {
        db.conn()
            .execute(
                "INSERT OR REPLACE INTO poller_lease VALUES (1, 'x', ?1, ?2, '2025-01-01T00:00:00.000Z', ?3)",
                (host, pid, expires),
            )
            .unwrap();
    };
    // A live holder elsewhere: respected.
    lease("other-host", 1, "2999-01-01T00:00:00.000Z");
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(73), "{}", run.stderr);
    run.assert_stderr_has("host other-host pid 1 since 2025-01-01T00:00:00.000Z");

    // A holder on this host whose process is gone: taken over at once.
    lease(&hostname(), 999_999_999, "2999-01-01T00:00:00.000Z");
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.assert_stderr_has("took over the cycle lease of host");

    // An expired lease elsewhere: taken over.
    lease("other-host", 1, "2000-01-01T00:00:00.000Z");
    let run = db.poll_json(&server.url(), "2025-12-01T13:00:00Z", &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.assert_stderr_has("took over the cycle lease of host other-host pid 1");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        6
    );
}

fn concurrent_starts_run_one_cycle_at_a_time_and_never_poll_twice(backend: Backend) {
    let (db, server) = setup(backend, 12, 10);
    server
        .sandbox()
        .faults(|f| f.latency = Duration::from_millis(20));
    let submitted = timefmt::parse(SUBMITTED).unwrap();
    for round in 1..=4 {
        let now = timefmt::format(submitted + chrono::TimeDelta::hours(2 * round));
        let runs: Vec<_> = (0..8)
            .map(|_| db.spawn_poll(&server.url(), &now, &["--concurrency", "2"]))
            .collect();
        let results: Vec<_> = runs
            .into_iter()
            .map(|r| r.wait(LIMIT).expect("run finished"))
            .collect();
        let codes: Vec<_> = results.iter().map(|r| r.code).collect();
        assert!(
            codes.iter().all(|c| *c == Some(0) || *c == Some(73)),
            "round {round}: {codes:?}"
        );
        assert!(
            codes.contains(&Some(0)),
            "round {round}: one run did the cycle: {codes:?}"
        );
        let polled: u64 = results
            .iter()
            .filter_map(|r| r.summary["polled"].as_u64())
            .sum();
        assert_eq!(
            polled, 120,
            "round {round}: every message polled exactly once across the runs"
        );
        let rows = db.count(&format!(
            "SELECT COUNT(*) FROM sms_delivery_confirmations WHERE polled_at = '{now}'"
        ));
        assert_eq!(rows, 120, "round {round}");
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM (SELECT 1 FROM sms_delivery_confirmations GROUP BY tracking_id, cycle_id HAVING COUNT(*) > 1) AS twice"),
        0
    );
    // Recorded cycles never overlap in time; on PostgreSQL the runs of one round share its cycle, and rounds never
    // overlap.
    let overlapping = db.count(match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM poll_cycles a JOIN poll_cycles b ON a.id < b.id \
             WHERE b.started_at < a.finished_at AND a.started_at < b.finished_at"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM poll_rounds a JOIN poll_rounds b ON a.id < b.id \
             WHERE b.started_at < a.finished_at AND a.started_at < b.finished_at"
        }
    });
    assert_eq!(overlapping, 0);
    if backend == Backend::Postgres {
        assert_eq!(
            db.count("SELECT COUNT(*) FROM poll_rounds"),
            4,
            "one round per clock"
        );
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_cycles WHERE outcome = 'running'"),
        0
    );
}

fn sigterm_saves_what_was_obtained_records_the_cycle_and_releases_the_lease(backend: Backend) {
    let (db, server) = setup(backend, 30, 10);
    server
        .sandbox()
        .faults(|f| f.latency = Duration::from_millis(300));
    let run = db.spawn_poll(&server.url(), NOW, &["--concurrency", "2"]);
    assert!(
        db.wait_for("SELECT COUNT(*) FROM sms_delivery_confirmations", 10, LIMIT),
        "some results came in"
    );
    run.signal("TERM");
    // Well inside Kubernetes' 30 s grace period.
    let run = run
        .wait(Duration::from_secs(25))
        .expect("exited after SIGTERM");
    assert_eq!(run.code, Some(143), "{}", run.stderr);
    run.assert_stderr_has("stopped by signal 15");
    assert_eq!(run.summary["outcome"], "interrupted");
    let polled = run.summary["polled"].as_i64().unwrap();
    assert!((10..300).contains(&polled), "{polled}");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        polled,
        "every obtained result saved"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM poll_cycles WHERE outcome = 'interrupted' AND exit_code = 143"
        ),
        1
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM poller_lease"), 0);

    server.sandbox().faults(|f| f.latency = Duration::ZERO);
    let next = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert_eq!(
        next.counts(&["messages_due", "polled"]),
        [300 - polled as u64, 300 - polled as u64]
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations")
    );
}

fn a_hanging_request_is_abandoned_after_the_grace_and_a_second_signal_exits_at_once(
    backend: Backend,
) {
    let db = backend.db();
    db.insert_world(&sent_world(2, 2, SUBMITTED));
    let carrier = HangingCarrier::start();
    let run = db.spawn_poll(&carrier.url(), NOW, &[]);
    assert!(
        common::wait_until(LIMIT, || carrier.requests() >= 1),
        "a request reached the carrier"
    );
    run.signal("TERM");
    let run = run
        .wait(Duration::from_secs(20))
        .expect("exited after the grace");
    assert_eq!(run.code, Some(143), "{}", run.stderr);
    run.assert_stderr_has("abandoned");
    assert_eq!(db.count("SELECT COUNT(*) FROM poller_lease"), 0);

    let before = carrier.requests();
    let run = db.spawn_poll(&carrier.url(), NOW, &[]);
    assert!(
        common::wait_until(LIMIT, || carrier.requests() > before),
        "a request of the second run reached the carrier"
    );
    run.signal("TERM");
    // SIGINT only once SIGTERM was taken: while both are pending, the kernel hands out SIGINT first.
    assert!(run.wait_taken(15, LIMIT), "the run took SIGTERM");
    run.signal("INT");
    let run = run.wait(Duration::from_secs(20)).expect("exited");
    // 130, not the 143 of the orderly stop after the grace: the second signal ended the process itself.
    assert_eq!(
        run.code,
        Some(130),
        "the second signal ends the process at once: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("abandoned"), "{}", run.stderr);
}

fn a_carrier_that_hangs_is_bounded_by_the_deadline(backend: Backend) {
    let (db, server) = setup(backend, 3, 2);
    server.sandbox().faults(|f| f.hang = true);
    let run = db.spawn_poll(
        &server.url(),
        NOW,
        &["--deadline", "2s", "--request-timeout", "10m"],
    );
    // Bounded by the deadline and the grace, not by the ten-minute request timeout.
    let run = run
        .wait(Duration::from_secs(60))
        .expect("the deadline ends the run");
    assert_eq!(run.code, Some(75), "{}", run.stderr);
    assert_eq!(run.summary["polled"], 0);
}

fn rate_limit_storms_respect_retry_after_and_the_deadline(backend: Backend) {
    let (db, server) = setup(backend, 2, 2);
    server.sandbox().faults(|f| {
        f.rate_limited_next = 1_000;
        f.retry_after_secs = 1;
    });
    let run = db.spawn_poll(
        &server.url(),
        NOW,
        &["--deadline", "3s", "--max-attempts", "10"],
    );
    let run = run.wait(Duration::from_secs(30)).expect("finished");
    // Each batch waits as asked until the pause it is asked for no longer fits before the deadline: then it fails
    // with that reason, and nothing could be polled.
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    assert_eq!(run.counts(&["polled", "batches_failed"]), [0, 2]);
    run.assert_stderr_has("HTTP 429 Too Many Requests with Retry-After 1 s, longer than the ");
    run.assert_stderr_has(" ms left before the deadline; giving up on this request");
    let requests = run.summary["http_requests"].as_u64().unwrap();
    // Two batches, each waiting 1 s between attempts, inside a 3 s deadline: a handful of requests, not a storm.
    assert!((2..=8).contains(&requests), "{requests} requests");
}

fn a_carrier_going_down_halfway_keeps_what_was_obtained(backend: Backend) {
    let (db, server) = setup(backend, 10, 5);
    server.sandbox().faults(|f| f.unavailable_after = Some(4));
    let run = db.poll_json(
        &server.url(),
        NOW,
        &["--concurrency", "1", "--max-attempts", "2"],
    );
    assert_eq!(run.code, Some(75), "{}", run.stderr);
    assert_eq!(
        run.counts(&["polled", "batches_ok", "batches_failed"]),
        [20, 4, 6]
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        20
    );
    run.assert_stderr_has("HTTP 503");
}

fn max_rps_caps_the_request_rate(backend: Backend) {
    // Every message is missing from its listing: 1 listing request + 30 lookups.
    let messages = sent_world(1, 30, SUBMITTED)
        .into_iter()
        .map(|m| SimMessage { listed: false, ..m })
        .collect();
    let (db, server) = setup_with(backend, messages);
    let started = Instant::now();
    let run = db.poll_json(
        &server.url(),
        NOW,
        &["--max-rps", "20", "--concurrency", "8"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(server.sandbox().requests(), 31);
    // 31 requests at 20 per second need at least 1.5 s.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}
