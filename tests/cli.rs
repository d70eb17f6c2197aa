//! The command line through the real binary: help, usage and configuration errors, database errors, migrate.

mod common;

use common::{TOKEN, TestDb, bin};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_names_every_env_var_and_the_exit_codes() {
    let out = bin().args(["poll", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "DLR_CARRIER_URL",
        "DLR_CARRIER_TOKEN",
        "DLR_POLLER_DB",
        "DLR_POLLER_CONCURRENCY",
        "DLR_POLLER_DEADLINE",
        "--carrier-token-file",
        "--now",
        "--json",
        "[default: 14m]",
        "[default: 8]",
        "75  partial",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = bin()
        .args(["poll", "--carrier-token", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("--carrier-token"));
    let out = bin().output().unwrap();
    assert_eq!(out.status.code(), Some(64), "no subcommand");
}

#[test]
fn missing_url_and_token_are_configuration_errors() {
    let db = TestDb::new();
    let out = db
        .cmd()
        .env("DLR_CARRIER_TOKEN", TOKEN)
        .arg("poll")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains(
            "dlr-poller: error: no carrier URL: set --carrier-url or env DLR_CARRIER_URL"
        )
    );

    let out = db
        .cmd()
        .args(["poll", "--carrier-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out)
            .contains("no carrier token: set env DLR_CARRIER_TOKEN or pass --carrier-token-file")
    );
}

#[test]
fn bad_values_name_their_flag_and_env_var() {
    let db = TestDb::new();
    // (extra flags, extra env, expected message)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["--concurrency", "0"],
            &[],
            "invalid --concurrency (env DLR_POLLER_CONCURRENCY) \"0\"",
        ),
        (
            &[],
            &[("DLR_POLLER_CONCURRENCY", "9999")],
            "invalid --concurrency (env DLR_POLLER_CONCURRENCY) \"9999\"",
        ),
        (
            &["--deadline", "forever"],
            &[],
            "invalid --deadline (env DLR_POLLER_DEADLINE) \"forever\"",
        ),
        (
            &["--now", "2025-13-01"],
            &[],
            "invalid --now: \"2025-13-01\" is not an RFC 3339 timestamp",
        ),
        (
            &["--carrier-url", "carrier.example"],
            &[],
            "invalid --carrier-url (env DLR_CARRIER_URL)",
        ),
        (
            &["--carrier-url", "http://carrier.example"],
            &[],
            "--allow-insecure-http",
        ),
        (
            &["--carrier-token-file", "/nonexistent/token"],
            &[],
            "cannot read --carrier-token-file /nonexistent/token",
        ),
    ];
    for (args, env, expect) in cases {
        let mut cmd = db.cmd();
        cmd.env("DLR_CARRIER_TOKEN", TOKEN)
            .env("DLR_CARRIER_URL", "http://127.0.0.1:9")
            .arg("poll")
            .args(*args);
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expect),
            "{args:?}: expected {expect:?} in {}",
            stderr(&out)
        );
    }
}

#[test]
fn empty_token_is_refused() {
    let db = TestDb::new();
    let out = db
        .cmd()
        .env("DLR_CARRIER_TOKEN", "  ")
        .args(["poll", "--carrier-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("env DLR_CARRIER_TOKEN is empty"));
}

#[test]
fn missing_database_says_run_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let out = bin()
        .arg("--db")
        .arg(&path)
        .env("DLR_CARRIER_TOKEN", TOKEN)
        .args(["poll", "--carrier-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
    assert!(
        stderr(&out).contains("run `dlr-poller migrate`"),
        "{}",
        stderr(&out)
    );
    assert!(!path.exists(), "poll must not create a database");
}

#[test]
fn unmigrated_database_says_run_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE x (y)")
        .unwrap();
    let out = bin()
        .arg("--db")
        .arg(&path)
        .args(["cycles"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
    assert!(
        stderr(&out)
            .contains("schema is at version 0, this dlr-poller needs 4: run `dlr-poller migrate`")
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_a_database_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "this is not a database, just some text that is long enough ".repeat(20),
    )
    .unwrap();
    let out = bin()
        .arg("--db")
        .arg(&path)
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("opening database {}", path.display())),
        "{err}"
    );
    assert!(err.contains("not a database"), "{err}");
}

#[test]
fn migrate_is_idempotent_and_keeps_data() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), "2025-12-01T09:00:00Z");
    let out = db.cmd().arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("up to date (version 4)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM sms_submissions"), 1);
    assert_eq!(db.count("PRAGMA user_version"), 4);
    let mode: String = db
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn migrate_keeps_an_existing_submissions_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dispatch.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE sms_submissions (tracking_id TEXT PRIMARY KEY, customer_id TEXT, phone_number TEXT, \
         carrier_batch_id TEXT, submitted_at TEXT NOT NULL, extra TEXT);
         INSERT INTO sms_submissions VALUES ('T1', 'C', '+1', 'B', '2025-12-01T09:00:00Z', 'x');",
    )
    .unwrap();
    drop(conn);
    bin().arg("--db").arg(&path).arg("migrate").assert().code(0);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let extra: String = conn
        .query_row("SELECT extra FROM sms_submissions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(extra, "x");
}

#[test]
fn db_falls_back_to_the_env_var() {
    let db = TestDb::new();
    let out = bin()
        .env("DLR_POLLER_DB", &db.path)
        .arg("cycles")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("CYCLE"));
}

#[test]
fn history_of_an_unknown_message_is_a_usage_error() {
    let db = TestDb::new();
    let out = db.cmd().args(["history", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("no message with tracking id \"nope\""));
}

#[test]
fn history_of_a_message_not_yet_polled() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), "2025-12-01T09:00:00Z");
    let out = db.cmd().args(["history", "T1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOT YET POLLED"), "{text}");
    assert!(text.contains("+49********678"), "phone is masked: {text}");
}

#[test]
fn cycles_rejects_a_bad_count() {
    let db = TestDb::new();
    let out = db.cmd().args(["cycles", "--last", "0"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "a bad value is a configuration error, as everywhere"
    );
    assert!(stderr(&out).contains("invalid --last \"0\""));
}

#[test]
fn history_json_masks_the_phone_number_too() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), "2025-12-01T09:00:00Z");
    let out = db.cmd().args(["history", "T1", "--json"]).output().unwrap();
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["phone_number"], "+49********678");
}

/// Runs the binary with `args` and its standard output a pipe whose reader is gone before it starts (as after
/// `| head -0` or `| true`): every write to it fails with a broken pipe.
fn with_closed_stdout(args: &[std::ffi::OsString]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("dlr-poller"));
    cmd.env_clear();
    if let Some(profile) = std::env::var_os("LLVM_PROFILE_FILE") {
        cmd.env("LLVM_PROFILE_FILE", profile);
    }
    cmd.env("DLR_CARRIER_TOKEN", TOKEN)
        .args(args)
        .stdout(writer)
        .output()
        .unwrap()
}

/// A closed standard output ends the output quietly: no panic (exit 101), the exit code stays the outcome's,
/// and `poll` still exports its metrics after the cycle is recorded.
#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let db = TestDb::new();
    db.submit("T1", Some("B1"), "2025-12-01T09:00:00Z");
    let mut server = mockito::Server::new();
    server
        .mock("GET", "/batches/B1/messages")
        .with_body(common::listing("B1", &[common::wire("T1", "SENT")], None))
        .create();
    let metrics = db.dir.path().join("dlr_poller.prom");
    let args = |extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut args = db.db_args();
        args.extend(extra.iter().map(Into::into));
        args
    };
    let url = server.url();
    let poll = with_closed_stdout(&args(&[
        "poll",
        "--json",
        "--carrier-url",
        &url,
        "--now",
        "2025-12-01T11:00:00Z",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]));
    assert_eq!(poll.status.code(), Some(0), "{}", stderr(&poll));
    assert!(!stderr(&poll).contains("panicked"), "{}", stderr(&poll));
    assert!(
        std::fs::read_to_string(&metrics)
            .unwrap()
            .contains("dlr_poller_last_run_timestamp_seconds"),
        "metrics exported"
    );
    assert_eq!(db.audit("T1").len(), 1);

    for (extra, code) in [
        (&["cycles", "--json"][..], 0),
        (&["cycles"][..], 0),
        (&["history", "T1"][..], 0),
        (&["history", "T1", "--json"][..], 0),
        (&["check"][..], 0),
        (&["check", "--now", "2099-01-01T00:00:00Z"][..], 2),
        (&["prune", "--older-than", "30d", "--dry-run"][..], 0),
        (&["close", "T1", "--reason", "test"][..], 0),
    ] {
        let out = with_closed_stdout(&args(extra));
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{extra:?}: {}", stderr(&out));
    }
}

/// Every malformed `--db` URL is a configuration error (78) naming the part, never a panic, and never shows the
/// password.
#[test]
fn a_malformed_postgres_url_names_its_part() {
    for (url, part) in [
        (
            "postgres://u@h/db?sslrootcert=%1é",
            "invalid value of sslrootcert",
        ),
        (
            "postgres://u@h/db?sslrootcert=%C3%28",
            "invalid value of sslrootcert",
        ),
        ("postgres://u:s3cr%zzet@h/db", "invalid password"),
        ("postgres://%G1@h/db", "invalid user name"),
        ("postgres://u@h:99999/db", "invalid port \"99999\""),
        ("postgres://u@h:0/db", "invalid port \"0\""),
        ("postgres://u@h1:5432,h2:x/db", "invalid port in --db"),
        ("postgres://u:s3cr/et@h/db", "an '@' after the host"),
        ("postgres://u:s3cr?et@h/db", "an '@' after the host"),
        ("postgres://dbuser:98765432/appdb", "invalid port in --db"),
        ("postgres://u@[::1/db", "a '[' without its ']'"),
        ("postgres://u@[nope]:5432/db", "is not an IPv6 address"),
        ("postgres://u@h/d%zzb", "invalid database name"),
        ("postgres://u@h/db?x=%é", "invalid value of x"),
        (
            "postgres://u@h/db?nothing",
            "invalid query parameter \"nothing\"",
        ),
        ("postgres://u@h/db?foo=bar", "unknown option `foo`"),
        (
            "postgresql://u@h/db?connect_timeout=soon",
            "`connect_timeout`",
        ),
    ] {
        let out = bin().args(["--db", url, "cycles"]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{url}: {err}");
        assert!(err.contains(part), "{url}: expected {part:?} in {err}");
        assert!(
            !err.contains("s3cr") && !err.contains("98"),
            "{url}: the password shows: {err}"
        );
    }
}

/// `generate` writes a man page for the tool and one per command, and the bash, zsh and fish completions, all
/// from the command line's own definitions; it is for packagers, so `--help` does not list it.
#[test]
fn generate_writes_man_pages_and_completions_from_the_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().arg("generate").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let read = |name: &str| {
        std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for command in [
        "migrate", "poll", "doctor", "check", "prune", "history", "close", "cycles",
    ] {
        assert!(
            read(&format!("dlr-poller-{command}.1")).contains(".TH"),
            "{command}"
        );
    }
    let poll = read("dlr-poller-poll.1");
    for needle in [
        "DLR_CARRIER_URL",
        "\\-\\-carrier\\-token\\-file",
        "\\-\\-deadline",
    ] {
        assert!(poll.contains(needle), "the poll page lacks {needle}");
    }
    assert!(read("dlr-poller.1").contains("poll"));
    assert!(read("dlr-poller.bash").contains("--carrier-url"));
    assert!(read("_dlr-poller").contains("--carrier-url"));
    assert!(read("dlr-poller.fish").contains("carrier-url"));
    assert!(!dir.path().join("dlr-poller-generate.1").exists());
    let help = bin().arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("generate"));
}
