//! Living beside the dispatcher: another process inserting, deleting and replacing submissions in short
//! transactions all through a cycle over 100,000 due messages, with `prune`, `history`, `cycles` and `check`
//! running beside it; and `kill -9` of a cycle followed by an immediate re-run, also from a PID namespace of its
//! own, as in a container.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TOKEN, TestDb, sent_world};
use dlr_poller::timefmt;
use dlr_sandbox::{Sandbox, SandboxServer, SimMessage, World};

const SUBMITTED: &str = "2025-12-01T09:00:00Z";
const NOW: &str = "2025-12-01T11:00:00Z";
const INITIAL: usize = 100_000;
/// Submissions the dispatcher may write during a test, at most.
const DISPATCHED: usize = 40_000;
const DISPATCHER_ENV: &str = "DLR_TEST_DISPATCHER";
const LIMIT: Duration = Duration::from_secs(300);

/// The dispatcher's submissions: batches of 500 the carrier knows, all due at NOW.
fn dispatched() -> Vec<SimMessage> {
    common::sent_world_named("D", "DB", DISPATCHED, 500, SUBMITTED)
}

/// Not a test of its own: the body of the dispatcher process that the tests start (this test binary, run again
/// with DLR_TEST_DISPATCHER set to "db|mode|stop file"). Without the variable it does nothing. Every 10 ms it
/// commits 20 new submissions in one short transaction, until the stop file appears (or two minutes pass). In
/// mode "churn" each transaction also deletes and re-inserts an earlier row, replaces an initial row with
/// INSERT OR REPLACE, and inserts a row without a tracking id that the next transaction fills in; every 50
/// transactions it vacuums the database (every rowid may change).
#[test]
fn dispatcher_process() {
    let Ok(spec) = std::env::var(DISPATCHER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [db, mode, stop] = parts[..] else {
        panic!("bad {DISPATCHER_ENV}: {spec}")
    };
    let churn = mode == "churn";
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let insert = "INSERT INTO sms_submissions (tracking_id, customer_id, phone_number, carrier_batch_id, \
                  submitted_at) VALUES (?1, 'C2', '+4915199999999', ?2, ?3)";
    let until = Instant::now() + Duration::from_secs(120);
    let mut next = 0;
    let mut round = 0;
    while next + 20 <= DISPATCHED && Instant::now() < until && !Path::new(stop).exists() {
        round += 1;
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for i in next..next + 20 {
            conn.execute(
                insert,
                (format!("D{i:05}"), format!("DB{:03}", i / 500), SUBMITTED),
            )
            .unwrap();
        }
        if churn {
            if next >= 20 {
                // A row deleted and written again, at a new rowid.
                let again = format!("D{:05}", next - 20);
                conn.execute(
                    "DELETE FROM sms_submissions WHERE tracking_id = ?1",
                    [&again],
                )
                .unwrap();
                conn.execute(
                    insert,
                    (&again, format!("DB{:03}", (next - 20) / 500), SUBMITTED),
                )
                .unwrap();
                // The row without a tracking id of the last round gets one.
                conn.execute(
                    "UPDATE sms_submissions SET tracking_id = ?1 WHERE tracking_id = ''",
                    [format!("E{round:05}")],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO sms_submissions (tracking_id, customer_id, phone_number, submitted_at) \
                 VALUES ('', 'C3', '+4915188888888', ?1)",
                [SUBMITTED],
            )
            .unwrap();
            let replaced = format!("T{:05}", (round * 7919) % INITIAL);
            conn.execute(
                "INSERT OR REPLACE INTO sms_submissions (tracking_id, customer_id, phone_number, \
                 carrier_batch_id, submitted_at) VALUES (?1, 'C1', '+4915112345678', ?2, ?3)",
                (
                    &replaced,
                    format!("B{:03}", ((round * 7919) % INITIAL) / 500),
                    SUBMITTED,
                ),
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        next += 20;
        if churn && round % 50 == 0 {
            conn.execute_batch("VACUUM").unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The dispatcher process, stopped (and waited for) when dropped.
struct Dispatcher {
    child: Option<Child>,
    stop: PathBuf,
}

impl Dispatcher {
    fn start(db: &TestDb, mode: &str) -> Dispatcher {
        let stop = db.dir.path().join("stop-dispatcher");
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "dispatcher_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                DISPATCHER_ENV,
                format!("{}|{mode}|{}", db.path.display(), stop.display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Dispatcher {
            child: Some(child),
            stop,
        }
    }

    /// Stops it and checks that every one of its transactions went through.
    fn stop(mut self) {
        std::fs::write(&self.stop, "").unwrap();
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the dispatcher failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::fs::write(&self.stop, "");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `prune`, `history`, `cycles` and `check` one after another until told to stop; returns how many ran and
/// the failures (a command that did not exit as it should, with its stderr).
fn ops_beside(db: &TestDb, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let path = db.path.clone();
    std::thread::spawn(move || {
        let (mut runs, mut failures) = (0, Vec::new());
        let commands: [&[&str]; 4] = [
            &["prune", "--older-than", "1d"],
            &["history", "T00001"],
            &["cycles", "--last", "3"],
            &["check"],
        ];
        let until = Instant::now() + LIMIT;
        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
            for args in commands {
                let out = common::bin()
                    .arg("--db")
                    .arg(&path)
                    .args(args)
                    .output()
                    .unwrap();
                runs += 1;
                let ok = match args[0] {
                    // check: 0-2 are verdicts; 3 would mean it could not read the database.
                    "check" => matches!(out.status.code(), Some(0..=2)),
                    _ => out.status.code() == Some(0),
                };
                if !ok {
                    failures.push(format!(
                        "{args:?} exited {:?}: {}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        (runs, failures)
    })
}

fn ids(db: &TestDb, sql: &str) -> HashSet<String> {
    let conn = db.conn();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// 100,000 due messages and 50,000 old audit rows for `prune` to delete; a sandbox carrier that knows them and
/// every submission the dispatcher may write.
fn setup() -> (TestDb, SandboxServer) {
    let initial = sent_world(INITIAL / 500, 500, SUBMITTED);
    let db = TestDb::new();
    db.insert_world(&initial);
    db.conn()
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
             INSERT INTO sms_delivery_confirmations (tracking_id, delivery_status, polled_at, poll_attempt, \
               created_at, cycle_id) SELECT 'GONE' || i, 'DELIVERED', '2025-01-01T00:00:00Z', 1, \
               '2025-01-01T00:00:00Z', 0 FROM n;",
        )
        .unwrap();
    let mut world = initial;
    world.extend(dispatched());
    let sandbox = Sandbox::new(World::new(world), TOKEN, timefmt::parse(NOW).unwrap());
    sandbox.faults(|f| f.latency = Duration::from_millis(20));
    let server = SandboxServer::start(Arc::new(sandbox), 0).unwrap();
    (db, server)
}

fn a_cycle_beside_a_busy_dispatcher(mode: &str) {
    let (db, server) = setup();
    let dispatcher = Dispatcher::start(&db, mode);
    assert!(
        db.wait_for(
            "SELECT COUNT(*) FROM sms_submissions WHERE tracking_id LIKE 'D%'",
            100,
            LIMIT
        ),
        "the dispatcher is writing"
    );
    let before = ids(
        &db,
        "SELECT tracking_id FROM sms_submissions WHERE tracking_id != ''",
    );
    assert!(before.len() > INITIAL);

    let stop = Arc::new(AtomicBool::new(false));
    let ops = ops_beside(&db, stop.clone());
    let cycle = db.spawn_poll(&server.url(), NOW, &["--busy-timeout", "30s"]);
    // The dispatcher's submissions, read in one snapshot with the cycle's state: -1 while no cycle is running.
    let written = || {
        db.count(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM poll_cycles WHERE outcome = 'running') \
             THEN (SELECT COUNT(*) FROM sms_submissions WHERE tracking_id LIKE 'D%') ELSE -1 END",
        )
    };
    let mut at_start = -1;
    assert!(
        common::wait_until(LIMIT, || {
            at_start = written();
            at_start >= 0
        }),
        "the cycle started"
    );
    // Until the dispatcher commits again, or the cycle ends first.
    let mut later = at_start;
    common::wait_until(LIMIT, || {
        later = written();
        later < 0 || later > at_start
    });
    let cycle = cycle.wait(LIMIT).expect("the cycle ended");
    stop.store(true, Ordering::SeqCst);
    let (runs, failures) = ops.join().unwrap();
    dispatcher.stop();
    assert_eq!(cycle.code, Some(0), "{}", cycle.stderr);
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        runs >= 4,
        "prune, history, cycles and check ran beside the cycle"
    );
    assert!(
        later > at_start,
        "the dispatcher kept writing during the cycle: {at_start} of its submissions when the cycle started, \
         {later} (-1: the cycle was over) when the test looked again"
    );
    assert_eq!(
        cycle.counts(&["messages_due"])[0],
        cycle.counts(&["polled"])[0]
    );
    // Every submission committed before the cycle began was polled by it.
    let first = ids(
        &db,
        "SELECT tracking_id FROM sms_delivery_confirmations WHERE cycle_id = 1 AND poll_attempt = 1",
    );
    let missed: Vec<_> = before.difference(&first).take(5).collect();
    assert!(missed.is_empty(), "not polled by the cycle: {missed:?}...");

    // Every submission committed during it is polled by the next one, and nothing twice.
    let next = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM (SELECT DISTINCT tracking_id FROM sms_submissions WHERE tracking_id != '') s \
             WHERE (SELECT COUNT(*) FROM sms_delivery_confirmations a WHERE a.tracking_id = s.tracking_id \
             AND a.poll_attempt = 1) != 1"
        ),
        0,
        "a submission not polled exactly once"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM sms_delivery_confirmations WHERE tracking_id NOT LIKE 'GONE%'"
        ),
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_submissions WHERE tracking_id != ''"),
        "one result per submission, none twice"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM sms_delivery_confirmations WHERE customer_id IS NULL OR phone_number IS NULL"
        ),
        0,
        "every result carries its customer and phone, replaced rows included"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations WHERE tracking_id LIKE 'GONE%'"),
        0,
        "prune deleted the old rows while the cycle ran"
    );
    let check: String = db
        .conn()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_dispatcher_inserting_all_through_a_cycle_loses_nothing() {
    a_cycle_beside_a_busy_dispatcher("insert");
}

#[test]
fn a_dispatcher_deleting_replacing_and_vacuuming_all_through_a_cycle_loses_nothing() {
    a_cycle_beside_a_busy_dispatcher("churn");
}

/// The pid of the one child of `pid` (the poller that `unshare --fork` started).
fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Starts a cycle (through `wrapper` when given), waits until it holds the lease, kills it with SIGKILL and runs
/// the next cycle at once: it must not wait for the dead run's lease to expire.
fn kill_9_then_rerun(wrapper: &[&str]) {
    let (db, server) = common::with_sandbox(sent_world(40, 50, SUBMITTED), NOW);
    server
        .sandbox()
        .faults(|f| f.latency = Duration::from_millis(200));
    let poller = assert_cmd::cargo::cargo_bin!("dlr-poller");
    let (program, args): (&Path, Vec<&str>) = match wrapper {
        [] => (poller, vec![]),
        [first, rest @ ..] => {
            let mut args = rest.to_vec();
            args.push(poller.to_str().unwrap());
            (Path::new(first), args)
        }
    };
    let mut run = Command::new(program)
        .args(args)
        .env_clear()
        .env("DLR_CARRIER_TOKEN", TOKEN)
        .arg("--db")
        .arg(&db.path)
        .args([
            "poll",
            "--carrier-url",
            &server.url(),
            "--now",
            NOW,
            "--concurrency",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let held = db.wait_for(
        "SELECT COUNT(*) FROM poller_lease",
        1,
        Duration::from_secs(60),
    );
    let target = if wrapper.is_empty() {
        Some(run.id())
    } else {
        child_of(run.id())
    };
    let Some(target) = target.filter(|_| held) else {
        let _ = run.kill();
        let out = run.wait_with_output().unwrap();
        panic!(
            "the cycle did not start under {wrapper:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Inside its own PID namespace the poller saw itself as pid 1 or 2: its lease row names a pid that means
    // something else on this host.
    let recorded: i64 = db
        .conn()
        .query_row("SELECT pid FROM poller_lease", [], |r| r.get(0))
        .unwrap();
    if !wrapper.is_empty() {
        assert_ne!(
            recorded,
            i64::from(target),
            "the run was in a PID namespace of its own"
        );
    }
    let status = Command::new("kill")
        .args(["-KILL", &target.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = run.wait();
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poller_lease"),
        1,
        "the dead run left its lease row"
    );

    let rerun = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(rerun.code, Some(0), "{}", rerun.stderr);
    rerun.assert_stderr_has("took over the cycle lease of host");
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
        2000
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        2000
    );
}

#[test]
fn a_rerun_after_kill_9_starts_at_once() {
    kill_9_then_rerun(&[]);
}

#[test]
fn a_rerun_after_kill_9_of_a_run_in_its_own_pid_namespace_starts_at_once() {
    // As a container runtime runs it: `unshare` needs root, which CI has; without it the test fails, saying so.
    kill_9_then_rerun(&["unshare", "--pid", "--fork", "--kill-child"]);
}
