//! PostgreSQL on its own: connecting (passwords, TLS, servers that are down or go away), the dispatcher's table
//! read in place, transactions that commit late, concurrent `migrate`, and carrier text PostgreSQL would refuse.
//! Every test runs against a real throwaway server (see common/pg.rs) and is skipped, saying so, where there is
//! none.

mod common;

use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::pg::{self, PgDb, Server};
use common::{PG_SUBMISSIONS, Run, TOKEN, TestDb, bin, sent_world, wire};
use mockito::Matcher;

const SUBMITTED: &str = "2025-12-01T09:00:00Z";
const NOW: &str = "2025-12-01T11:00:00Z";
const LIMIT: Duration = Duration::from_secs(60);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A carrier that answers every one-by-one lookup with `status`.
fn carrier(status: &'static str) -> mockito::ServerGuard {
    let mut server = mockito::Server::new();
    server
        .mock("GET", Matcher::Regex("^/messages/".into()))
        .with_body_from_request(move |req| {
            let id = req.path().rsplit('/').next().unwrap().to_string();
            wire(&id, status).to_string().into_bytes()
        })
        .create();
    server
}

#[test]
fn connection_failures_name_their_cause_and_never_show_the_password() {
    let Some(db) = TestDb::postgres("connection_failures") else {
        return;
    };
    let pg = db.pg();
    // A wrong password from the file.
    let wrong = db.dir.path().join("wrong");
    std::fs::write(&wrong, "Wr0ngPassw0rd-zz\n").unwrap();
    let out = bin()
        .args(["--db", &pg.url, "--db-password-file"])
        .arg(&wrong)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "check speaks Nagios");
    let out = bin()
        .args(["--db", &pg.url, "--db-password-file"])
        .arg(&wrong)
        .arg("cycles")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("--db-password-file"), "the hint: {err}");
    assert!(!err.contains("Wr0ngPassw0rd-zz"), "{err}");

    // A password in the URL, and a server that is not listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres:S3cretInUrl@127.0.0.1:{closed}/postgres");
    let out = bin()
        .args(["--db", &url, "-v", "migrate"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(err.contains("postgres://postgres:***@127.0.0.1"), "{err}");
    assert!(!err.contains("S3cretInUrl"), "{err}");

    // Configuration mistakes are 78 and name the flag.
    let out = bin()
        .args([
            "--db",
            &pg.url,
            "--db-password-file",
            "/nonexistent/pw",
            "cycles",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("--db-password-file"));
    let out = bin()
        .args(["--db", &format!("{}?sslmode=prefer", pg.url), "cycles"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("sslmode=prefer"), "{}", stderr(&out));
    // A URL that asks for TLS never falls back to plaintext: this server speaks none.
    let out = db
        .cmd_at(&format!("{}?sslmode=require", pg.url))
        .arg("cycles")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
}

/// A CA and a server certificate it signed for `localhost` only, in `dir`: (ca.pem, server.pem, server.key).
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Process::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        &[
            "-subj",
            "/CN=dlr-poller test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    // Another CA, which signed nothing here.
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "other.key", "-out", "other.pem", "-days", "2"],
        &["-subj", "/CN=another CA"],
    ]
    .concat());
}

#[test]
fn tls_with_a_ca_signed_server_certificate() {
    if !pg::available("tls_with_a_ca_signed_server_certificate")
        || std::env::var_os("DLR_POLLER_TEST_PG_URL").is_some() && pg::pg_bin().is_none()
    {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    pg::chown_to_server_user(certs.path());
    let mut perms = std::fs::metadata(certs.path().join("server.key"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(certs.path().join("server.key"), perms).unwrap();
    let server = Server::start(
        &pg::pg_bin().unwrap(),
        Some(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nlog_connections = on",
            certs.path().join("server.pem").display(),
            certs.path().join("server.key").display()
        )),
    );
    let port = server.port;
    let db = TestDb::on_postgres(PgDb::on(server));
    db.pg().client().batch_execute(PG_SUBMISSIONS).unwrap();
    db.submit("T1", None, SUBMITTED);
    let ca = certs.path().join("ca.pem");
    let url =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");
    let run = |url: &str, args: &[&str]| {
        db.cmd_at(url)
            .args(args)
            .env("DLR_CARRIER_TOKEN", TOKEN)
            .output()
            .unwrap()
    };

    let full = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let out = run(&full, &["migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let server = carrier("DELIVERED");
    let out = run(
        &full,
        &[
            "poll",
            "--carrier-url",
            &server.url(),
            "--now",
            NOW,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = db.pg().server.as_ref().unwrap().log();
    assert!(
        log.contains("SSL enabled"),
        "the poller's connections used TLS:\n{log}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        1
    );

    // The certificate names localhost, not 127.0.0.1: verify-full refuses it, verify-ca and require accept it.
    let by_ip = |mode: &str| {
        url(
            "127.0.0.1",
            &format!("sslmode={mode}&sslrootcert={}", ca.display()),
        )
    };
    let out = run(&by_ip("verify-full"), &["cycles"]);
    assert_eq!(out.status.code(), Some(74));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    assert_eq!(run(&by_ip("verify-ca"), &["cycles"]).status.code(), Some(0));
    assert_eq!(
        run(&url("127.0.0.1", "sslmode=require"), &["cycles"])
            .status
            .code(),
        Some(0)
    );
    // A root that did not sign it.
    let other = url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            certs.path().join("other.pem").display()
        ),
    );
    let out = run(&other, &["cycles"]);
    assert_eq!(out.status.code(), Some(74));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    // verify-full without a root file trusts the public roots, which did not sign it either.
    let out = run(&url("localhost", "sslmode=verify-full"), &["cycles"]);
    assert_eq!(out.status.code(), Some(74));
}

#[test]
fn a_submission_committed_late_by_a_long_transaction_is_polled_by_the_next_cycle() {
    let Some(db) = TestDb::postgres_empty("committed_late") else {
        return;
    };
    let pg = db.pg();
    // The dispatcher's ids come from a sequence: the late row takes the lower id.
    pg.client()
        .batch_execute(
            "CREATE TABLE sms_submissions (id bigserial PRIMARY KEY, tracking_id text UNIQUE, customer_id text, \
             phone_number text, carrier_batch_id text, submitted_at timestamptz NOT NULL); \
             CREATE INDEX ON sms_submissions (submitted_at, tracking_id);",
        )
        .unwrap();
    db.cmd().arg("migrate").assert().code(0);
    let mut late = pg.connect();
    let mut open = late.transaction().unwrap();
    open.execute(
        "INSERT INTO sms_submissions (tracking_id, customer_id, submitted_at) VALUES ('LATE', 'C1', $1::text::timestamptz)",
        &[&SUBMITTED],
    )
    .unwrap();
    db.submit("EARLY", None, "2025-12-01T09:00:01Z");
    let server = carrier("SENT");
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["messages_due", "polled"]), [1, 1]);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_submissions WHERE id < 2"),
        0,
        "not visible yet"
    );
    open.commit().unwrap();

    let run = db.poll_json(&server.url(), "2025-12-01T11:30:00Z", &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["messages_due", "polled"]), [1, 1]);
    assert_eq!(db.audit("LATE").len(), 1);
    let run = db.poll_json(&server.url(), "2025-12-01T13:00:00Z", &[]);
    assert_eq!(run.counts(&["messages_due", "polled"]), [2, 2]);
    let at = |id: &str| -> Vec<String> { db.audit(id).into_iter().map(|a| a.polled_at).collect() };
    assert_eq!(
        at("EARLY"),
        ["2025-12-01T11:00:00Z", "2025-12-01T13:00:00Z"]
    );
    assert_eq!(at("LATE"), ["2025-12-01T11:30:00Z", "2025-12-01T13:00:00Z"]);
}

#[test]
fn concurrent_migrate_applies_the_schema_once() {
    let Some(db) = TestDb::postgres_empty("concurrent_migrate") else {
        return;
    };
    db.pg().client().batch_execute(PG_SUBMISSIONS).unwrap();
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let mut cmd = Process::new(assert_cmd::cargo::cargo_bin!("dlr-poller"));
            cmd.env_clear();
            // As `bin()` does: the coverage tool's profile path, when set.
            if let Some(profile) = std::env::var_os("LLVM_PROFILE_FILE") {
                cmd.env("LLVM_PROFILE_FILE", profile);
            }
            cmd.args(db.db_args())
                .arg("migrate")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut migrated = 0;
    for child in runs {
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        migrated += usize::from(err.contains("from schema version 0 to 4"));
    }
    assert_eq!(
        migrated, 1,
        "one run applied the schema, the others found it current"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM poller_schema"), 1);
    db.cmd().arg("cycles").assert().code(0);
}

/// A database at schema version 2 (before failure categories, before due messages were read in submission
/// order) is upgraded in place: its audit rows stay, the new columns and index arrive, and the version is
/// recorded.
#[test]
fn a_version_2_database_upgrades_to_version_4() {
    let Some(db) = TestDb::postgres("upgrade_v2") else {
        return;
    };
    {
        let mut client = db.pg().client();
        client
            .batch_execute(
                "ALTER TABLE sms_delivery_confirmations DROP COLUMN failure_category; \
                 ALTER TABLE poll_cycles DROP COLUMN overdue, DROP COLUMN lag_seconds, DROP COLUMN bulk_fallbacks, \
                   DROP COLUMN asked_alone, DROP COLUMN fallback_stopped; \
                 ALTER TABLE poll_units DROP COLUMN first_at, DROP COLUMN last_at; \
                 DROP INDEX idx_message_tracking_open; \
                 CREATE INDEX idx_message_tracking_open ON message_tracking (carrier_batch_id, tracking_id, \
                   next_due_at) WHERE state = 'OPEN'; \
                 DELETE FROM poller_schema WHERE version = 4; INSERT INTO poller_schema VALUES (2); \
                 INSERT INTO sms_delivery_confirmations (tracking_id, delivery_status, polled_at, poll_attempt, \
                   created_at, cycle_id) VALUES ('T1', 'FAILED', now(), 1, now(), 1);",
            )
            .unwrap();
    }
    let out = db.cmd().arg("cycles").output().unwrap();
    assert_eq!(out.status.code(), Some(74));
    assert!(
        stderr(&out).contains("schema is at version 2, this dlr-poller needs 4"),
        "{}",
        stderr(&out)
    );
    let out = db.cmd().arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("from schema version 2 to 4"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations WHERE failure_category IS NULL"),
        1
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'idx_message_tracking_open' \
             AND indexdef LIKE '%(carrier_batch_id, submitted_at, tracking_id, next_due_at)%'"
        ),
        1
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM information_schema.columns WHERE (table_name, column_name) IN \
             (('poll_units', 'first_at'), ('poll_units', 'last_at'), ('poll_cycles', 'overdue'), \
              ('poll_cycles', 'lag_seconds'), ('poll_cycles', 'bulk_fallbacks'), ('poll_cycles', 'asked_alone'), \
              ('poll_cycles', 'fallback_stopped'))"
        ),
        7
    );
    assert_eq!(db.count("SELECT max(version) FROM poller_schema"), 4);
    let out = db.cmd().arg("migrate").output().unwrap();
    assert!(stderr(&out).contains("up to date (version 4)"));
    db.cmd().arg("cycles").assert().code(0);
}

#[test]
fn the_server_restarting_mid_cycle_is_a_database_error_and_the_next_run_goes_on() {
    let Some(db) = TestDb::postgres("server_restarting") else {
        return;
    };
    if db.pg().server.is_none() {
        pg::skip(
            "server_restarting",
            "needs a server of its own, not DLR_POLLER_TEST_PG_URL",
        );
        return;
    }
    let (db, sandbox) = common::with_sandbox_on(db, sent_world(40, 10, SUBMITTED), NOW);
    sandbox
        .sandbox()
        .faults(|f| f.latency = Duration::from_millis(100));
    let run = db.spawn_poll(&sandbox.url(), NOW, &["--concurrency", "2"]);
    assert!(db.wait_for("SELECT COUNT(*) FROM sms_delivery_confirmations", 20, LIMIT));
    let server = db.pg().server.as_ref().unwrap();
    server.stop();
    let run = run.wait(LIMIT).expect("the run ended");
    assert_eq!(run.code, Some(74), "{}", run.stderr);
    assert!(
        run.stderr.contains("terminating connection")
            || run.stderr.contains("connection closed")
            || run.stderr.contains("server shut down")
            || run.stderr.contains("connection was lost"),
        "{}",
        run.stderr
    );
    server.restart();
    sandbox.sandbox().faults(|f| f.latency = Duration::ZERO);
    let stored = db.count("SELECT COUNT(*) FROM sms_delivery_confirmations");
    assert!((20..400).contains(&stored), "{stored}");
    let next = db.poll_json(&sandbox.url(), NOW, &[]);
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert_eq!(next.counts(&["polled"]), [400 - stored as u64]);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        400
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
        400
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_cycles WHERE outcome = 'abandoned'"),
        1
    );
}

#[test]
fn carrier_text_with_nul_characters_loses_only_those_characters() {
    let Some(db) = TestDb::postgres("nul_characters") else {
        return;
    };
    for id in ["N1", "N2", "N3"] {
        db.submit(id, Some("B1"), SUBMITTED);
    }
    let mut server = mockito::Server::new();
    let entry = |id: &str| {
        serde_json::json!({
            "tracking_id": id, "status": "FAILED", "error_code": "E\u{0}7",
            "error_message": "handset\u{0} busy", "status_updated_at": "2025-12-01T10:00:00Z"
        })
    };
    server
        .mock("GET", Matcher::Regex("^/batches/B1".into()))
        .with_body(common::listing(
            "B1",
            &[entry("N1"), entry("N2"), entry("N3")],
            None,
        ))
        .create();
    let run = db.poll_json(&server.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["polled", "failed"]), [3, 3]);
    let audit = db.audit("N2");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].failure_code.as_deref(), Some("E7"));
    assert_eq!(audit[0].failure_reason.as_deref(), Some("handset busy"));
}

#[test]
fn the_dispatchers_table_is_read_in_place_with_select_only() {
    let Some(db) = TestDb::postgres_empty("read_in_place") else {
        return;
    };
    db.pg()
        .client()
        .batch_execute(
            "CREATE ROLE poller LOGIN PASSWORD 'poller-pw-3c'; \
             CREATE SCHEMA notify; \
             CREATE TABLE notify.sends (tracking_id text PRIMARY KEY, customer_id text, phone_number text, \
               carrier_batch_id text, submitted_at timestamptz NOT NULL); \
             CREATE INDEX ON notify.sends (submitted_at, tracking_id); \
             CREATE TABLE notify.secret (tracking_id text, customer_id text, phone_number text, \
               carrier_batch_id text, submitted_at timestamptz); \
             CREATE TABLE notify.plain (LIKE notify.secret); \
             GRANT USAGE ON SCHEMA notify TO poller; GRANT SELECT ON notify.sends, notify.plain TO poller; \
             CREATE SCHEMA poller AUTHORIZATION poller; \
             INSERT INTO notify.sends VALUES ('S1', 'C1', '+4915112345678', NULL, '2025-12-01T09:00:00Z'), \
               ('S2', 'C1', '+4915112345678', NULL, '2025-12-01T09:00:00Z');",
        )
        .unwrap();
    let password = db.dir.path().join("poller-pw");
    std::fs::write(&password, "poller-pw-3c").unwrap();
    let url = db
        .pg()
        .url
        .replace("postgres://postgres@", "postgres://poller@");
    let poller = |table: &str| {
        let mut cmd = bin();
        cmd.args(["--db", &url, "--db-password-file"])
            .arg(&password)
            .args(["--submissions-table", table])
            .env("DLR_CARRIER_TOKEN", TOKEN);
        cmd
    };
    poller("notify.sends").arg("migrate").assert().code(0);
    // The one index the poller needs is there: no warning. Without it, every command says what to ask for.
    let out = poller("notify.sends").arg("cycles").output().unwrap();
    assert!(!stderr(&out).contains("no index"), "{}", stderr(&out));
    let out = poller("notify.plain").arg("cycles").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "notify.plain has no index on (submitted_at, tracking_id): each cycle's read of it scans the whole \
             table; ask its owners for CREATE INDEX CONCURRENTLY ON notify.plain (submitted_at, tracking_id)"
        ),
        "{}",
        stderr(&out)
    );
    let server = carrier("DELIVERED");
    let run = Run::from(
        poller("notify.sends")
            .args([
                "poll",
                "--json",
                "--carrier-url",
                &server.url(),
                "--now",
                NOW,
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["polled", "delivered"]), [2, 2]);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'poller'"),
        9,
        "the poller's tables are in its own schema"
    );
    let out = poller("notify.sends")
        .args(["history", "S1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A table it may not read is named, with the grant it needs.
    let out = poller("notify.secret")
        .args(["poll", "--carrier-url", &server.url(), "--now", NOW])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
    assert!(stderr(&out).contains("notify.secret"), "{}", stderr(&out));
    assert!(stderr(&out).contains("GRANT SELECT"), "{}", stderr(&out));
    let out = poller("notify.sends; DROP TABLE x")
        .arg("cycles")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

/// `n` replicas of `poll --json` at one clock, started together.
fn replicas(db: &TestDb, url: &str, now: &str, n: usize) -> Vec<common::Running> {
    (0..n)
        .map(|_| db.spawn_poll(url, now, &["--concurrency", "4"]))
        .collect()
}

#[test]
fn four_replicas_share_one_cycle_and_poll_every_message_once() {
    let Some(db) = TestDb::postgres("four_replicas") else {
        return;
    };
    // 99,000 messages in batches of 500 and 1,000 without a batch (asked for one by one).
    let mut messages = sent_world(198, 500, SUBMITTED);
    messages.extend(
        common::sent_world_named("L", "X", 1_000, 1_000, SUBMITTED)
            .into_iter()
            .map(|mut m| {
                m.batch_id = None;
                m
            }),
    );
    let (db, sandbox) = common::with_sandbox_on(db, messages, NOW);
    sandbox
        .sandbox()
        .faults(|f| f.latency = Duration::from_millis(20));
    let runs: Vec<Run> = replicas(&db, &sandbox.url(), NOW, 4)
        .into_iter()
        .map(|r| r.wait(Duration::from_secs(300)).expect("replica finished"))
        .collect();
    for run in &runs {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        // What the other replicas were still polling when this one finished was theirs, not left behind.
        assert_eq!(
            run.counts(&["overdue", "lag_seconds"]),
            [0, 0],
            "{}",
            run.stderr
        );
    }
    let polled: Vec<u64> = runs.iter().map(|r| r.counts(&["polled"])[0]).collect();
    assert_eq!(polled.iter().sum::<u64>(), 100_000, "{polled:?}");
    assert!(
        polled.iter().all(|p| *p > 0),
        "the work was spread over all four: {polled:?}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        100_000
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
        100_000
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM poll_rounds"), 1);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_rounds WHERE phase = 'done'"),
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT cycle_now) FROM poll_cycles WHERE round_id IS NOT NULL"),
        1,
        "one cycle clock for all"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_cycles WHERE outcome = 'ok'"),
        4
    );
    // The carrier was asked once per batch (five pages of the sandbox's 100) and once per message without one,
    // across the four: no unit was asked for by two replicas.
    let requests: u64 = runs.iter().map(|r| r.counts(&["http_requests"])[0]).sum();
    assert_eq!(requests, 198 * 5 + 1_000);

    // A replica that arrives after the work is done has nothing to do, and says so.
    let late = db.poll_json(&sandbox.url(), NOW, &[]);
    assert_eq!(late.code, Some(0), "{}", late.stderr);
    assert_eq!(
        late.counts(&["messages_due", "polled", "http_requests"]),
        [0, 0, 0]
    );
    late.assert_stderr_has("is over: nothing is left to do");
}

#[test]
fn a_replica_killed_mid_cycle_loses_only_its_claims_and_nothing_is_stored_twice() {
    let Some(db) = TestDb::postgres("replica_killed") else {
        return;
    };
    let (db, sandbox) = common::with_sandbox_on(db, sent_world(200, 100, SUBMITTED), NOW);
    sandbox
        .sandbox()
        .faults(|f| f.latency = Duration::from_millis(100));
    let mut runs = replicas(&db, &sandbox.url(), NOW, 4);
    assert!(db.wait_for(
        "SELECT COUNT(*) FROM poll_units WHERE claimed_by IS NOT NULL AND NOT done",
        4,
        LIMIT
    ));
    assert!(db.wait_for(
        "SELECT COUNT(*) FROM sms_delivery_confirmations",
        500,
        LIMIT
    ));
    let victim = runs.remove(1);
    victim.signal("KILL");
    let killed = victim.wait(LIMIT).expect("reaped");
    assert_eq!(killed.code, None, "killed by the signal");
    // The survivors take the dead replica's units over as soon as its session is gone. Were they to wait out
    // their deadline (14 minutes, the default) instead, they would not end within this bound, far below it.
    let bound = Duration::from_secs(300);
    let until = std::time::Instant::now() + bound;
    let runs: Vec<Run> = runs
        .into_iter()
        .map(|r| {
            r.wait(until.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or_else(|| {
                    panic!(
                        "the survivors did not all end within {bound:?} of the kill: they must take the dead \
                         replica's units over, not wait out their deadline"
                    )
                })
        })
        .collect();
    for run in &runs {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        20_000
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
        20_000
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_units WHERE NOT done"),
        0
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_rounds WHERE phase = 'done'"),
        1
    );
    // The next run finds the round over, and records the dead replica's cycle as abandoned.
    let next = db.poll_json(&sandbox.url(), NOW, &[]);
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert_eq!(next.counts(&["polled"]), [0]);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_cycles WHERE outcome = 'abandoned'"),
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_cycles WHERE outcome = 'running'"),
        0
    );
}

#[test]
fn a_run_for_another_clock_while_a_round_runs_exits_73() {
    let Some(db) = TestDb::postgres("another_clock") else {
        return;
    };
    let (db, sandbox) = common::with_sandbox_on(db, sent_world(20, 10, SUBMITTED), NOW);
    sandbox
        .sandbox()
        .faults(|f| f.latency = Duration::from_millis(200));
    let first = db.spawn_poll(&sandbox.url(), NOW, &["--concurrency", "1"]);
    assert!(db.wait_for(
        "SELECT COUNT(*) FROM poll_rounds WHERE phase = 'polling'",
        1,
        LIMIT
    ));
    let other = db.poll_json(&sandbox.url(), "2025-12-01T13:00:00Z", &[]);
    assert_eq!(other.code, Some(73), "{}", other.stderr);
    other.assert_stderr_has(
        "another cycle is running on this database: round 1 with clock 2025-12-01T11:00:00Z",
    );
    let first = first.wait(LIMIT).expect("first run finished");
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        200
    );
}

#[test]
fn a_server_that_stops_answering_cannot_hang_a_run() {
    let Some(db) = TestDb::postgres("server_stops_answering") else {
        return;
    };
    if db.pg().server.is_none() {
        pg::skip(
            "server_stops_answering",
            "needs a server of its own, not DLR_POLLER_TEST_PG_URL",
        );
        return;
    }
    let (db, sandbox) = common::with_sandbox_on(db, sent_world(40, 10, SUBMITTED), NOW);
    sandbox
        .sandbox()
        .faults(|f| f.latency = Duration::from_millis(200));
    let run = db.spawn_poll(
        &sandbox.url(),
        NOW,
        &["--concurrency", "1", "--deadline", "2s"],
    );
    assert!(db.wait_for("SELECT COUNT(*) FROM sms_delivery_confirmations", 10, LIMIT));
    // Freeze the run's server processes: its connections stay up, nothing answers.
    let frozen: Vec<i32> = db
        .pg()
        .client()
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'dlr-poller:%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!frozen.is_empty());
    let signal = |name: &str| {
        for pid in &frozen {
            let _ = Process::new("kill").args([name, &pid.to_string()]).status();
        }
    };
    signal("-STOP");
    // Nothing answers the run any more: only its watchdog can end it, seconds after its 2 s deadline and grace.
    // The bound leaves it room on a busy machine; without the watchdog the run would wait forever.
    let run = run.wait(Duration::from_secs(120));
    signal("-CONT");
    let run = run.expect("the run did not end by itself within 120 s of its server freezing");
    assert_eq!(run.code, Some(74), "{}", run.stderr);
    run.assert_stderr_has("stopped answering; exiting without recording the cycle");
    // What was committed stays; the next run polls the rest, nothing twice.
    sandbox.sandbox().faults(|f| f.latency = Duration::ZERO);
    let stored = db.count("SELECT COUNT(*) FROM sms_delivery_confirmations");
    let next = db.poll_json(&sandbox.url(), NOW, &[]);
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert_eq!(next.counts(&["polled"]), [400 - stored as u64]);
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
        400
    );
}

#[test]
fn a_run_by_hand_after_a_failed_round_retries_what_is_still_due() {
    let Some(db) = TestDb::postgres("rerun_after_failure") else {
        return;
    };
    for id in ["R1", "R2", "R3"] {
        db.submit(id, None, SUBMITTED);
    }
    let mut down = mockito::Server::new();
    down.mock("GET", Matcher::Any).with_status(503).create();
    let run = db.poll_json(&down.url(), NOW, &["--max-attempts", "1"]);
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    // The same clock, moments later: the round is over, but its messages are still due, so they are asked again.
    let up = carrier("DELIVERED");
    let run = db.poll_json(&up.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.counts(&["messages_due", "polled", "delivered"]),
        [3, 3, 3]
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM poll_rounds"), 2);
    // Once nothing is due, a run for that clock has nothing to do.
    let run = db.poll_json(&up.url(), NOW, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.assert_stderr_has("is over: nothing is left to do");
}

#[test]
fn a_unit_whose_messages_were_closed_meanwhile_is_done_without_a_request() {
    let Some(db) = TestDb::postgres("unit_closed_meanwhile") else {
        return;
    };
    for i in 0..60 {
        db.submit(&format!("L{i:05}"), None, SUBMITTED);
    }
    // The carrier holds its answers until the test has closed the last unit's messages (at most LIMIT, should
    // the test fail first).
    let asked = Arc::new(AtomicU64::new(0));
    let answer = Arc::new(AtomicBool::new(false));
    let mut server = mockito::Server::new();
    let lookups = server
        .mock("GET", Matcher::Regex("^/messages/".into()))
        .with_body_from_request({
            let (asked, answer) = (asked.clone(), answer.clone());
            move |req| {
                asked.fetch_add(1, Ordering::SeqCst);
                common::wait_until(LIMIT, || answer.load(Ordering::SeqCst));
                let id = req.path().rsplit('/').next().unwrap().to_string();
                wire(&id, "DELIVERED").to_string().into_bytes()
            }
        })
        .expect(50)
        .create();
    // One worker: the run claims a unit when the one before is handed out. While the first lookup waits for its
    // answer, it can have claimed three of the six (one at the worker, one waiting for it, one being handed
    // out), so the last is still unclaimed.
    let run = db.spawn_poll(&server.url(), NOW, &["--concurrency", "1"]);
    assert!(
        common::wait_until(LIMIT, || asked.load(Ordering::SeqCst) >= 1),
        "the run asked the carrier for its first message"
    );
    // The last unit's ten messages are closed by hand before any run claims it.
    for i in 50..60 {
        db.cmd()
            .args(["close", &format!("L{i:05}"), "--reason", "closed by ops"])
            .assert()
            .code(0);
    }
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM poll_units WHERE first_id = 'L00050' AND claimed_by IS NULL"
        ),
        1,
        "the last unit was not claimed before its messages were closed"
    );
    answer.store(true, Ordering::SeqCst);
    let run = run.wait(LIMIT).expect("finished");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.counts(&["polled"]), [50]);
    lookups.assert();
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_units WHERE NOT done"),
        0
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM poll_rounds WHERE phase = 'done'"),
        1
    );
}

/// A batch larger than one read of due messages (10,000), every message submitted at the same instant: the read
/// goes on from where the last chunk ended, by (submitted_at, tracking id), without skipping or repeating one.
#[test]
fn a_batch_larger_than_a_read_is_read_whole_across_chunks() {
    let Some(db) = TestDb::postgres("batch_across_chunks") else {
        return;
    };
    let (db, sandbox) = common::with_sandbox_on(db, sent_world(1, 10_050, SUBMITTED), NOW);
    let out = db.poll_json(&sandbox.url(), NOW, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.counts(&["messages_due", "polled"]), [10_050, 10_050]);
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
        10_050
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        10_050
    );
}

/// A dispatcher's table without the index the poller asks for is read one query per span, its rows fetched a
/// chunk at a time (the cost, one pass instead of a scan of the table per chunk, is the benchmark's to show):
/// every row is read once, across chunks, and every message is polled once. The warning stays.
#[test]
fn a_table_without_the_index_is_read_in_one_pass_across_chunks() {
    let Some(db) = TestDb::postgres("no_index_one_pass") else {
        return;
    };
    let (db, sandbox) = common::with_sandbox_on(db, sent_world(50, 500, SUBMITTED), NOW);
    db.pg()
        .client()
        .batch_execute(
            "DO $$ DECLARE i text; BEGIN FOR i IN SELECT indexname FROM pg_indexes \
               WHERE tablename = 'sms_submissions' AND indexname NOT LIKE '%pkey' \
             LOOP EXECUTE format('DROP INDEX %I', i); END LOOP; END $$;",
        )
        .unwrap();
    // Half an hour before the first slot: every row is read, none is due.
    let early = "2025-12-01T10:30:00Z";
    let out = db.poll_json(&sandbox.url(), early, &["-v"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.assert_stderr_has("has no index on (submitted_at, tracking_id)");
    out.assert_stderr_has(
        "read 25000 rows of sms_submissions: 0 new due now, 25000 due at a later cycle",
    );
    let out = db.poll_json(&sandbox.url(), NOW, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.counts(&["messages_due", "polled"]), [25_000, 25_000]);
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT tracking_id) FROM sms_delivery_confirmations"),
        25_000
    );
    // The listing of each batch of 500, in the sandbox's pages of 100.
    assert_eq!(sandbox.sandbox().requests(), 250);
}
