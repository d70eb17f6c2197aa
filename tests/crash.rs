//! Crashes: `kill -9` at many different moments of a long multi-cycle run. Afterwards the database is intact, no
//! message has two polls in one cycle or at one clock, no batch is half-written, every committed result agrees
//! with the carrier, and re-running the interrupted cycles ends with every message tracked exactly as if nothing
//! had happened.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use common::{Backend, TOKEN, TestDb, expected_status};
use dlr_poller::timefmt;
use dlr_sandbox::{Sandbox, SandboxServer, SimMessage, World};

const KILLS: usize = 20;

/// Every audit row: tracking id, polled_at, status, batch.
fn results(db: &TestDb) -> Vec<(String, String, String, Option<String>)> {
    if let Some(pg) = &db.pg {
        return pg
            .client()
            .query(
                "SELECT tracking_id, to_char(polled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                 delivery_status, carrier_batch_id FROM sms_delivery_confirmations ORDER BY polled_at",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
    }
    let conn = db.conn();
    let mut stmt = conn
        .prepare("SELECT tracking_id, polled_at, delivery_status, carrier_batch_id FROM sms_delivery_confirmations ORDER BY polled_at")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

on_both_backends!(kill_9_at_random_moments_loses_and_duplicates_nothing);

fn kill_9_at_random_moments_loses_and_duplicates_nothing(backend: Backend) {
    let start = timefmt::parse("2025-12-01T09:00:00Z").unwrap();
    let world = World::generate(600, 50, start, 99);
    let messages: Vec<SimMessage> = world.messages().to_vec();
    let db = backend.db();
    db.insert_world(&messages);
    let sandbox = Arc::new(Sandbox::new(world, TOKEN, start).with_page_size(20));
    sandbox.faults(|f| f.latency = Duration::from_millis(4));
    let server = SandboxServer::start(sandbox.clone(), 0).unwrap();

    let mut hits = 0;
    let mut attempt = 0u64;
    let clocks: Vec<_> = (1..=37).map(|k| start + TimeDelta::hours(2 * k)).collect();
    for &now in &clocks {
        let stamp = timefmt::format(now);
        sandbox.set_clock(now);
        // Kill runs until enough kills have landed mid-run, each after a different delay.
        if hits < KILLS {
            attempt += 1;
            let run = db.spawn_poll(&server.url(), &stamp, &["--concurrency", "3"]);
            // From the moment the cycle is recorded as started (connecting takes longer on some backends), and
            // every third time from its first stored result, so that kills land both before and between batch
            // transactions however loaded the machine is.
            let from = if attempt.is_multiple_of(3) {
                "SELECT COUNT(*) FROM sms_delivery_confirmations a JOIN poll_cycles c ON a.cycle_id = c.id \
                 WHERE c.outcome = 'running'"
            } else {
                "SELECT COUNT(*) FROM poll_cycles WHERE outcome = 'running'"
            };
            db.wait_for(from, 1, Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5 + (attempt * 23) % 160));
            let pid = run.pid();
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            run.signal("KILL");
            let killed = run
                .wait(Duration::from_secs(30))
                .expect("killed process is reaped");
            if alive && killed.code.is_none() {
                hits += 1;
            }
        }
        let run = db.poll_json(&server.url(), &stamp, &["--concurrency", "3"]);
        assert_eq!(
            run.code,
            Some(0),
            "cycle at {stamp} after the kill: {}",
            run.stderr
        );
    }
    assert!(hits >= KILLS, "only {hits} kills landed mid-run");

    if backend == Backend::Sqlite {
        let check: String = db
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
    for (what, sql) in [
        (
            "two polls in one cycle",
            "SELECT tracking_id, cycle_id FROM sms_delivery_confirmations GROUP BY 1, 2 HAVING COUNT(*) > 1",
        ),
        (
            "two polls at one clock",
            "SELECT tracking_id, polled_at FROM sms_delivery_confirmations GROUP BY 1, 2 HAVING COUNT(*) > 1",
        ),
        (
            "tracking disagrees with the audit trail",
            "SELECT t.tracking_id FROM message_tracking t WHERE t.polls != \
            (SELECT COUNT(*) FROM sms_delivery_confirmations a WHERE a.tracking_id = t.tracking_id) \
            OR t.polls != COALESCE((SELECT MAX(poll_attempt) FROM sms_delivery_confirmations a WHERE a.tracking_id = t.tracking_id), 0)",
        ),
        (
            "still open",
            "SELECT tracking_id FROM message_tracking WHERE state = 'OPEN'",
        ),
        (
            "cycles left running",
            "SELECT id FROM poll_cycles WHERE outcome = 'running'",
        ),
    ] {
        let bad = db.count(&format!("SELECT COUNT(*) FROM ({sql}) AS bad"));
        assert_eq!(bad, 0, "{what}");
    }

    // Re-running the killed cycles ended with every message's trail exactly as if nothing had happened.
    for m in &messages {
        let trail: Vec<(String, String)> = db
            .audit(&m.tracking_id)
            .into_iter()
            .map(|a| (a.polled_at, a.status))
            .collect();
        let expected: Vec<(String, String)> = common::expected_trail(m, &clocks)
            .into_iter()
            .map(|(at, status)| (at, status.to_string()))
            .collect();
        assert_eq!(trail, expected, "{}", m.tracking_id);
    }

    // The kills landed at different points: some before any batch was written, some between batches.
    let abandoned = |with_rows: bool| -> i64 {
        let rows = if with_rows { "EXISTS" } else { "NOT EXISTS" };
        db.count(&format!(
            "SELECT COUNT(*) FROM poll_cycles c WHERE outcome = 'abandoned' AND {rows} \
             (SELECT 1 FROM sms_delivery_confirmations a WHERE a.cycle_id = c.id)"
        ))
    };
    eprintln!(
        "{hits} kills landed mid-run in {attempt} attempts; abandoned cycles with results: {}, without: {}",
        abandoned(true),
        abandoned(false)
    );
    assert!(
        abandoned(true) >= 3,
        "kills between batch transactions: {}",
        abandoned(true)
    );
    assert!(
        abandoned(false) >= 1,
        "kills before any result was written: {}",
        abandoned(false)
    );

    // Every stored result is what the carrier said at that clock; and per batch and clock, either every member
    // still open was polled or none was (a batch is written in one transaction).
    let by_id: HashMap<&str, &SimMessage> = messages
        .iter()
        .map(|m| (m.tracking_id.as_str(), m))
        .collect();
    let rows = results(&db);
    let mut polled: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut closed: HashMap<String, String> = HashMap::new();
    for (id, at, status, batch) in &rows {
        let m = by_id[id.as_str()];
        let truth = m.report_at(timefmt::parse(at).unwrap());
        let want = truth
            .as_ref()
            .map_or("PENDING", |r| expected_status(&r.status));
        assert_eq!(status, want, "{id} at {at}");
        if let Some(batch) = batch {
            polled
                .entry((at.clone(), batch.clone()))
                .or_default()
                .push(id.clone());
        }
        let last_slot = m.submitted_at + TimeDelta::hours(72) - TimeDelta::minutes(5);
        if status != "PENDING" || timefmt::parse(at).unwrap() >= last_slot {
            closed.entry(id.clone()).or_insert_with(|| at.clone());
        }
    }
    for ((at, batch), ids) in &polled {
        let open: Vec<&str> = messages
            .iter()
            .filter(|m| m.batch_id.as_deref() == Some(batch.as_str()))
            .filter(|m| closed.get(&m.tracking_id).is_none_or(|c| c >= at))
            .map(|m| m.tracking_id.as_str())
            .collect();
        assert_eq!(
            ids.len(),
            open.len(),
            "batch {batch} at {at}: half-written ({} of {})",
            ids.len(),
            open.len()
        );
    }
}
