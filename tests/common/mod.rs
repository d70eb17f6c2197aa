//! Shared helpers for the integration tests: a migrated temp database, the real binary with a clean environment,
//! and readers for the tables the tests assert on.
#![allow(dead_code)]

pub mod pg;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use dlr_poller::timefmt;
use dlr_sandbox::{Fate, Sandbox, SandboxServer, SimMessage, World};
use rusqlite::{Connection, OptionalExtension};
use tempfile::TempDir;

pub const TOKEN: &str = "test-token-5f2b9c";

/// A migrated database: a SQLite file (`path`), or with `pg`, a PostgreSQL database whose dispatcher's table was
/// created as the dispatch system would.
pub struct TestDb {
    pub dir: TempDir,
    pub path: PathBuf,
    pub pg: Option<pg::PgDb>,
}

/// Which store a behaviour test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh migrated database of this backend.
    pub fn db(self) -> TestDb {
        match self {
            Backend::Sqlite => TestDb::new(),
            Backend::Postgres => TestDb::postgres("").expect("PostgreSQL became unavailable"),
        }
    }

    /// Whether tests can run on this backend here (a skipped test says so on stderr).
    pub fn available(self, test: &str) -> bool {
        self == Backend::Sqlite || pg::available(test)
    }
}

/// Runs each named behaviour test, a `fn name(backend: Backend)`, on both backends: as `sqlite::name` and as
/// `postgres::name` (skipped, saying so, where no PostgreSQL is available).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(super::common::Backend::Sqlite)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if super::common::Backend::Postgres
                        .available(concat!(module_path!(), "::", stringify!($name)))
                    {
                        super::$name(super::common::Backend::Postgres)
                    }
                }
            )*
        }
    };
}

/// The dispatcher's table on PostgreSQL, as a dispatch system might create it.
pub const PG_SUBMISSIONS: &str = "CREATE TABLE sms_submissions (tracking_id text PRIMARY KEY, customer_id text, \
    phone_number text, carrier_batch_id text, submitted_at timestamptz NOT NULL); \
    CREATE INDEX ON sms_submissions (submitted_at, tracking_id);";

/// One audit row, in the columns the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub attempt: i64,
    pub polled_at: String,
    pub status: String,
    pub carrier_status: Option<String>,
    pub found: bool,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub confirmed_at: Option<String>,
    pub cycle_id: i64,
}

/// One audit row with every column the whole-life tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polled {
    pub attempt: i64,
    pub status: String,
    pub carrier_status: Option<String>,
    pub found: bool,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub confirmed_at: Option<String>,
    pub category: Option<String>,
    pub entry: String,
}

/// The audit rows written by the cycle whose clock is `at`, by tracking id.
pub fn rows_polled_at(db: &TestDb, at: &str) -> std::collections::HashMap<String, Vec<Polled>> {
    let mut map: std::collections::HashMap<String, Vec<Polled>> = Default::default();
    if let Some(pg) = &db.pg {
        let rows = pg
            .client()
            .query(
                "SELECT tracking_id, poll_attempt, delivery_status, carrier_status, carrier_found, failure_code, \
                 failure_reason, to_char(delivery_confirmed_at AT TIME ZONE 'UTC', \
                 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), failure_category, entry FROM sms_delivery_confirmations \
                 WHERE polled_at = $1::text::timestamptz",
                &[&at],
            )
            .unwrap();
        for r in rows {
            map.entry(r.get(0)).or_default().push(Polled {
                attempt: r.get::<_, i32>(1).into(),
                status: r.get(2),
                carrier_status: r.get(3),
                found: r.get(4),
                code: r.get(5),
                reason: r.get(6),
                confirmed_at: r.get(7),
                category: r.get(8),
                entry: r.get(9),
            });
        }
        return map;
    }
    let conn = db.conn();
    let mut stmt = conn
        .prepare(
            "SELECT tracking_id, poll_attempt, delivery_status, carrier_status, carrier_found, failure_code, \
             failure_reason, delivery_confirmed_at, failure_category, entry FROM sms_delivery_confirmations \
             WHERE polled_at = ?1",
        )
        .unwrap();
    let rows = stmt
        .query_map([at], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Polled {
                    attempt: r.get(1)?,
                    status: r.get(2)?,
                    carrier_status: r.get(3)?,
                    found: r.get(4)?,
                    code: r.get(5)?,
                    reason: r.get(6)?,
                    confirmed_at: r.get(7)?,
                    category: r.get(8)?,
                    entry: r.get(9)?,
                },
            ))
        })
        .unwrap();
    for row in rows {
        let (id, row) = row.unwrap();
        map.entry(id).or_default().push(row);
    }
    map
}

/// A message's tracking row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    pub state: String,
    pub polls: i64,
    pub next_due_at: Option<String>,
}

/// The binary with an empty environment, so that no DLR_* or RUST_LOG of the developer leaks in. Only the
/// coverage tool's profile path is passed on, when set, so that `cargo llvm-cov` sees the binary's runs.
pub fn bin() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("dlr-poller"));
    cmd.env_clear();
    if let Some(profile) = std::env::var_os("LLVM_PROFILE_FILE") {
        cmd.env("LLVM_PROFILE_FILE", profile);
    }
    cmd
}

impl TestDb {
    /// A fresh database, migrated through the real binary.
    pub fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("poller.db");
        let db = TestDb {
            dir,
            path,
            pg: None,
        };
        db.cmd().arg("migrate").assert().code(0);
        db
    }

    /// A fresh PostgreSQL database with the dispatcher's table, migrated through the real binary; `None` when
    /// PostgreSQL is not available here (the test is then skipped, saying so).
    pub fn postgres(test: &str) -> Option<TestDb> {
        let db = TestDb::postgres_empty(test)?;
        db.pg().client().batch_execute(PG_SUBMISSIONS).unwrap();
        db.cmd().arg("migrate").assert().code(0);
        Some(db)
    }

    /// A fresh, empty PostgreSQL database (nothing created, nothing migrated).
    pub fn postgres_empty(test: &str) -> Option<TestDb> {
        Some(TestDb::on_postgres(pg::PgDb::new(test)?))
    }

    /// A TestDb on a given PostgreSQL database (nothing created, nothing migrated).
    pub fn on_postgres(pg: pg::PgDb) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db-password"), format!("{}\n", pg.password)).unwrap();
        TestDb {
            path: dir.path().join("unused.db"),
            dir,
            pg: Some(pg),
        }
    }

    pub fn pg(&self) -> &pg::PgDb {
        self.pg.as_ref().expect("a PostgreSQL test database")
    }

    /// The arguments that point the binary at this database.
    pub fn db_args(&self) -> Vec<OsString> {
        match &self.pg {
            None => vec!["--db".into(), self.path.clone().into()],
            Some(pg) => vec![
                "--db".into(),
                pg.url.clone().into(),
                "--db-password-file".into(),
                self.dir.path().join("db-password").into(),
            ],
        }
    }

    /// The binary pointed at this PostgreSQL database by another URL (TLS options, say), with its password file.
    pub fn cmd_at(&self, url: &str) -> Command {
        let mut cmd = bin();
        cmd.args(["--db", url, "--db-password-file"])
            .arg(self.dir.path().join("db-password"));
        cmd
    }

    /// The binary pointed at this database.
    pub fn cmd(&self) -> Command {
        let mut cmd = bin();
        cmd.args(self.db_args());
        cmd
    }

    /// `poll` against `url` with the cycle clock at `now` and the test token in the environment.
    pub fn poll(&self, url: &str, now: &str) -> Command {
        let mut cmd = self.cmd();
        cmd.env("DLR_CARRIER_TOKEN", TOKEN)
            .args(["poll", "--carrier-url", url, "--now", now]);
        cmd
    }

    /// `poll --json` plus `extra` flags: the exit code, the summary (null when the run printed none) and stderr.
    pub fn poll_json(&self, url: &str, now: &str, extra: &[&str]) -> Run {
        Run::from(
            self.poll(url, now)
                .arg("--json")
                .args(extra)
                .output()
                .unwrap(),
        )
    }

    /// Starts `poll --json` in the background (for signals, crashes and concurrent runs).
    pub fn spawn_poll(&self, url: &str, now: &str, extra: &[&str]) -> Running {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("dlr-poller"));
        cmd.env_clear();
        if let Some(profile) = std::env::var_os("LLVM_PROFILE_FILE") {
            cmd.env("LLVM_PROFILE_FILE", profile);
        }
        cmd.env("DLR_CARRIER_TOKEN", TOKEN)
            .args(self.db_args())
            .args(["poll", "--json", "--carrier-url", url, "--now", now])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Running(Some(cmd.spawn().unwrap()))
    }

    /// Waits (at most `limit`) until `sql` counts at least `n`.
    pub fn wait_for(&self, sql: &str, n: i64, limit: Duration) -> bool {
        wait_until(limit, || self.try_count(sql).unwrap_or(0) >= n)
    }

    /// A connection to the SQLite database (SQLite tests only).
    pub fn conn(&self) -> Connection {
        assert!(self.pg.is_none(), "conn() is for SQLite test databases");
        Connection::open(&self.path).unwrap()
    }

    pub fn submit(&self, tracking_id: &str, batch_id: Option<&str>, submitted_at: &str) {
        if let Some(pg) = &self.pg {
            pg.client()
                .execute(
                    "INSERT INTO sms_submissions (tracking_id, customer_id, phone_number, carrier_batch_id, \
                     submitted_at) VALUES ($1, 'C1', '+4915112345678', $2, $3::text::timestamptz)",
                    &[&tracking_id, &batch_id, &submitted_at],
                )
                .unwrap();
            return;
        }
        self.conn()
            .execute(
                "INSERT INTO sms_submissions (tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at) \
                 VALUES (?1, 'C1', '+4915112345678', ?2, ?3)",
                (tracking_id, batch_id, submitted_at),
            )
            .unwrap();
    }

    /// Writes sandbox messages into sms_submissions, as the dispatch system would.
    pub fn insert_world(&self, messages: &[SimMessage]) {
        if let Some(pg) = &self.pg {
            let mut client = pg.client();
            for chunk in messages.chunks(50_000) {
                let column = |f: &dyn Fn(&SimMessage) -> Option<String>| -> Vec<Option<String>> {
                    chunk.iter().map(f).collect()
                };
                client
                    .execute(
                        "INSERT INTO sms_submissions (tracking_id, customer_id, phone_number, carrier_batch_id, \
                         submitted_at) SELECT a, b, c, d, e::timestamptz FROM \
                         unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(a, b, c, d, e)",
                        &[
                            &column(&|m| Some(m.tracking_id.clone())),
                            &column(&|m| Some(m.customer_id.clone())),
                            &column(&|m| Some(m.phone_number.clone())),
                            &column(&|m| m.batch_id.clone()),
                            &column(&|m| Some(timefmt::format(m.submitted_at))),
                        ],
                    )
                    .unwrap();
            }
            return;
        }
        World::new(messages.to_vec())
            .write_submissions(&mut self.conn())
            .unwrap();
    }

    pub fn audit(&self, tracking_id: &str) -> Vec<Audit> {
        if let Some(pg) = &self.pg {
            let utc = |c: &str| {
                format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
            };
            return pg
                .client()
                .query(
                    &format!(
                        "SELECT poll_attempt, {}, delivery_status, carrier_status, carrier_found, failure_code, \
                         failure_reason, {}, cycle_id FROM sms_delivery_confirmations \
                         WHERE tracking_id = $1 ORDER BY poll_attempt",
                        utc("polled_at"),
                        utc("delivery_confirmed_at")
                    ),
                    &[&tracking_id],
                )
                .unwrap()
                .iter()
                .map(|r| Audit {
                    attempt: r.get::<_, i32>(0).into(),
                    polled_at: r.get(1),
                    status: r.get(2),
                    carrier_status: r.get(3),
                    found: r.get(4),
                    failure_code: r.get(5),
                    failure_reason: r.get(6),
                    confirmed_at: r.get(7),
                    cycle_id: r.get(8),
                })
                .collect();
        }
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT poll_attempt, polled_at, delivery_status, carrier_status, carrier_found, failure_code, \
                 failure_reason, delivery_confirmed_at, cycle_id FROM sms_delivery_confirmations \
                 WHERE tracking_id = ?1 ORDER BY poll_attempt",
            )
            .unwrap();
        stmt.query_map([tracking_id], |r| {
            Ok(Audit {
                attempt: r.get(0)?,
                polled_at: r.get(1)?,
                status: r.get(2)?,
                carrier_status: r.get(3)?,
                found: r.get(4)?,
                failure_code: r.get(5)?,
                failure_reason: r.get(6)?,
                confirmed_at: r.get(7)?,
                cycle_id: r.get(8)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    pub fn tracking(&self, tracking_id: &str) -> Option<Tracking> {
        if let Some(pg) = &self.pg {
            return pg
                .client()
                .query_opt(
                    "SELECT state, polls, to_char(next_due_at AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM message_tracking WHERE tracking_id = $1",
                    &[&tracking_id],
                )
                .unwrap()
                .map(|r| Tracking {
                    state: r.get(0),
                    polls: r.get::<_, i32>(1).into(),
                    next_due_at: r.get(2),
                });
        }
        self.conn()
            .query_row(
                "SELECT state, polls, next_due_at FROM message_tracking WHERE tracking_id = ?1",
                [tracking_id],
                |r| {
                    Ok(Tracking {
                        state: r.get(0)?,
                        polls: r.get(1)?,
                        next_due_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .unwrap()
    }

    /// The one number `sql` selects (write it in SQL both backends speak).
    pub fn count(&self, sql: &str) -> i64 {
        self.try_count(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn try_count(&self, sql: &str) -> Result<i64, String> {
        match &self.pg {
            // Any integer type the query yields, as a bigint; once more on a new connection if the server
            // went away since the last query.
            Some(pg) => {
                let sql = format!("SELECT ({sql})::bigint");
                let query = || pg.client().query_one(&sql, &[])?.try_get::<_, i64>(0);
                query()
                    .or_else(|_| {
                        pg.reset();
                        query()
                    })
                    .map_err(|e| format!("{e:?}"))
            }
            None => self
                .conn()
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| e.to_string()),
        }
    }
}

/// Checks `ready` until it holds, every 10 ms and at least once, for at most `limit`; whether it held.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A carrier that reads requests and never answers them, counting those that reached it: for tests that act
/// while a request is in flight (the sandbox's `hang` fault hangs as well, but counts nothing). It lets go of
/// its connections when dropped.
pub struct HangingCarrier {
    addr: std::net::SocketAddr,
    received: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl HangingCarrier {
    pub fn start() -> HangingCarrier {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (received, stopping) = (received.clone(), stopping.clone());
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                while !stopping.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (received, stopping) = (received.clone(), stopping.clone());
                            connections.push(std::thread::spawn(move || {
                                hold(stream, &received, &stopping)
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                for connection in connections {
                    let _ = connection.join();
                }
            })
        };
        HangingCarrier {
            addr,
            received,
            stopping,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far (each now waiting for an answer that never comes).
    pub fn requests(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

/// Reads one request head from `stream`, counts it, then keeps the connection open without a word until the
/// carrier stops.
fn hold(stream: std::net::TcpStream, received: &AtomicU64, stopping: &AtomicBool) {
    use std::io::{ErrorKind, Read};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
    while !stopping.load(Ordering::SeqCst) {
        match (&stream).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    received.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
    while !stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for HangingCarrier {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A poller running in the background; killed if the test ends before it does.
pub struct Running(Option<Child>);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status();
        assert!(status.unwrap().success(), "kill -{name} failed");
    }

    /// Waits at most `limit` until the signal numbered `number`, sent to the process, is no longer pending: one of
    /// its threads has taken it to run the handler. A second signal sent before that could be handled first (the
    /// kernel hands out pending signals lowest number first). Linux only: reads ShdPnd of /proc/PID/status.
    pub fn wait_taken(&self, number: u32, limit: Duration) -> bool {
        let status = format!("/proc/{}/status", self.pid());
        wait_until(limit, || {
            let pending = std::fs::read_to_string(&status)
                .ok()
                .and_then(|text| {
                    let mask = text.lines().find_map(|l| l.strip_prefix("ShdPnd:"))?;
                    u64::from_str_radix(mask.trim(), 16).ok()
                })
                .unwrap_or(u64::MAX);
            pending & (1 << (number - 1)) == 0
        })
    }

    /// Waits at most `limit` for the process to end; `None` if it did not (it is then killed).
    pub fn wait(mut self, limit: Duration) -> Option<Run> {
        let mut child = self.0.take().unwrap();
        if wait_until(limit, || child.try_wait().unwrap().is_some()) {
            return Some(Run::from(child.wait_with_output().unwrap()));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `poll --json` run.
pub struct Run {
    pub code: Option<i32>,
    pub summary: serde_json::Value,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code(),
            summary: serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Fails, showing all of stderr, unless stderr contains `needle`.
    pub fn assert_stderr_has(&self, needle: &str) {
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in stderr:\n{}",
            self.stderr
        );
    }

    /// The summary's counters named by `keys`, in order.
    pub fn counts(&self, keys: &[&str]) -> Vec<u64> {
        keys.iter()
            .map(|k| {
                self.summary[*k]
                    .as_u64()
                    .unwrap_or_else(|| panic!("summary lacks a count {k:?}: {}", self.summary))
            })
            .collect()
    }
}

/// A batch listing body in the generic wire format.
pub fn listing(batch_id: &str, messages: &[serde_json::Value], next: Option<&str>) -> String {
    serde_json::json!({"batch_id": batch_id, "messages": messages, "next_page_token": next})
        .to_string()
}

/// One message entry of the wire format.
pub fn wire(tracking_id: &str, status: &str) -> serde_json::Value {
    serde_json::json!({
        "tracking_id": tracking_id, "status": status, "error_code": null, "error_message": null,
        "status_updated_at": null
    })
}

/// `batches` batches of `per_batch` messages submitted at `submitted_at` that stay SENT (batch ids B000..).
pub fn sent_world(batches: usize, per_batch: usize, submitted_at: &str) -> Vec<SimMessage> {
    sent_world_named("T", "B", batches * per_batch, per_batch, submitted_at)
}

/// `n` messages that stay SENT, named `{id}00000..` in batches `{batch}000..` of `per_batch`.
pub fn sent_world_named(
    id: &str,
    batch: &str,
    n: usize,
    per_batch: usize,
    submitted_at: &str,
) -> Vec<SimMessage> {
    let submitted_at = timefmt::parse(submitted_at).unwrap();
    (0..n)
        .map(|i| SimMessage {
            tracking_id: format!("{id}{i:05}"),
            customer_id: "C1".into(),
            phone_number: "+4915112345678".into(),
            batch_id: Some(format!("{batch}{:03}", i / per_batch)),
            submitted_at,
            fate: Fate::Stuck {
                word: "SENT".into(),
            },
            listed: true,
            known: true,
        })
        .collect()
}

/// A migrated database holding `messages` as submissions, and a sandbox carrier serving them with its clock at
/// `now`.
pub fn with_sandbox(messages: Vec<SimMessage>, now: &str) -> (TestDb, SandboxServer) {
    with_sandbox_on(TestDb::new(), messages, now)
}

/// [`with_sandbox`] on a given database.
pub fn with_sandbox_on(
    db: TestDb,
    messages: Vec<SimMessage>,
    now: &str,
) -> (TestDb, SandboxServer) {
    db.insert_world(&messages);
    let sandbox = Sandbox::new(World::new(messages), TOKEN, timefmt::parse(now).unwrap());
    let server = SandboxServer::start(std::sync::Arc::new(sandbox), 0).unwrap();
    (db, server)
}

/// The status mapping as the issue states it, written out independently of the code under test.
pub fn expected_status(word: &str) -> &'static str {
    match word.to_ascii_uppercase().as_str() {
        "DELIVERED" => "DELIVERED",
        "FAILED" | "REJECTED" | "BOUNCED" | "UNDELIVERABLE" => "FAILED",
        _ => "PENDING",
    }
}

/// The next slot strictly after `now + 5 min`, if any of the 36 remains: the schedule as the issue states it.
pub fn next_slot(
    submitted: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    (1..=36)
        .map(|k| submitted + chrono::TimeDelta::hours(2 * k))
        .find(|slot| *slot > now + chrono::TimeDelta::minutes(5))
}

/// The audit trail a message should end with when a cycle runs at each of `clocks` and every cycle completes:
/// (polled_at, status) per poll, following the schedule and the carrier's truth independently of the code.
pub fn expected_trail(
    m: &SimMessage,
    clocks: &[chrono::DateTime<chrono::Utc>],
) -> Vec<(String, &'static str)> {
    let mut trail = Vec::new();
    let mut next_due = m.submitted_at + chrono::TimeDelta::hours(2);
    for &now in clocks {
        if next_due > now + chrono::TimeDelta::minutes(5) {
            continue;
        }
        let status = m
            .report_at(now)
            .map_or("PENDING", |r| expected_status(&r.status));
        trail.push((timefmt::format(now), status));
        match (status, next_slot(m.submitted_at, now)) {
            ("PENDING", Some(next)) => next_due = next,
            _ => break,
        }
    }
    trail
}
