//! Storage: the SQLite database behind the few operations a cycle and the reports need. Everything SQL lives here,
//! so another backend (PostgreSQL for multi-host deployments) replaces this one module.
//!
//! Every error from this module is tagged as a database error (exit 74).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use crate::exit::{Exit, ExitContext};
use crate::schedule;
use crate::status::DeliveryStatus;
use crate::summary::Summary;
use crate::timefmt;

/// The schema, version by version. Append; never edit a released entry. `schema.sql` is version 1.
const MIGRATIONS: &[&str] = &[include_str!("../schema.sql")];

const WATERMARK_KEY: &str = "submissions_rowid";
/// The last sms_submissions rowid a cycle has read: problems of rows up to it have been reported already.
const REPORTED_KEY: &str = "submissions_reported";
/// Every table the poller reads or writes.
const TABLES: [&str; 7] = [
    "sms_submissions",
    "sms_delivery_confirmations",
    "message_tracking",
    "poll_cycles",
    "poller_lease",
    "poller_state",
    "poller_totals",
];
const LAST_SUCCESS_KEY: &str = "last_success_at";

pub struct Store {
    conn: Connection,
    /// The lease this run holds, checked in every write transaction.
    lease: Option<String>,
}

/// Who holds (or held) the cycle lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    pub host: String,
    pub pid: i64,
    pub acquired_at: String,
    pub expires_at: String,
}

/// The result of asking for the lease.
#[derive(Debug)]
pub enum Lease {
    /// Ours now; `took_over` names a crashed holder whose lease was taken over.
    Acquired { took_over: Option<LeaseHolder> },
    /// Another cycle holds it.
    Held(LeaseHolder),
}

/// Messages due in one batch (`batch_id` `None`: messages without a batch, asked for one by one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueGroup {
    pub batch_id: Option<String>,
    pub messages: u64,
}

/// One message due for a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueMessage {
    pub tracking_id: String,
    pub customer_id: Option<String>,
    pub phone_number: Option<String>,
    pub batch_id: Option<String>,
    pub submitted_at: DateTime<Utc>,
    /// Polls so far; this poll is number `polls + 1`.
    pub polls: i64,
    /// For a message not tracked yet: its sms_submissions rowid. Its tracking row is written with its first
    /// result.
    pub intake: Option<i64>,
}

/// The tracking state after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackState {
    Open,
    Delivered,
    Failed,
    Unconfirmed,
}

impl TrackState {
    pub const fn as_str(self) -> &'static str {
        match self {
            TrackState::Open => "OPEN",
            TrackState::Delivered => "DELIVERED",
            TrackState::Failed => "FAILED",
            TrackState::Unconfirmed => "UNCONFIRMED",
        }
    }
}

/// One poll result, ready to be written: an audit row plus the message's new tracking state.
#[derive(Clone, Debug)]
pub struct PollRecord<'a> {
    pub message: &'a DueMessage,
    pub status: DeliveryStatus,
    /// The carrier's word; `None` when the carrier did not know the message.
    pub carrier_status: Option<&'a str>,
    pub failure_code: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    pub confirmed_at: Option<&'a str>,
    pub state: TrackState,
    pub next_due_at: Option<DateTime<Utc>>,
}

/// Where a cycle starts reading sms_submissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStart {
    /// Rows after this rowid are read.
    pub after: i64,
    /// The table was rewritten since the last run: it is read from the start.
    pub rescan: bool,
    /// Rows up to this rowid were read by an earlier cycle, which reported their problems.
    pub reported: i64,
}

/// A row of sms_submissions, as the poller reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub rowid: i64,
    pub tracking_id: Option<String>,
    pub customer_id: Option<String>,
    pub phone_number: Option<String>,
    pub batch_id: Option<String>,
    /// Parsed, or why it cannot be.
    pub submitted_at: Result<DateTime<Utc>, String>,
    /// When the message is tracked already: the row its tracking row came from.
    pub tracked_from: Option<i64>,
}

/// A submission to start tracking without polling it: not due yet (`submitted_at` set), or unusable (`note`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intake {
    pub rowid: i64,
    pub tracking_id: String,
    pub batch_id: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

/// What [`Store::record`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Whether each record was stored.
    pub stored: Vec<bool>,
    /// First results of messages that turned out to be tracked already (their tracking id appears twice in
    /// sms_submissions): not stored, not counted.
    pub repeated: usize,
}

/// Database facts behind the metrics.
#[derive(Debug, Default)]
pub struct MetricsData {
    /// Running totals by name (see [`totals_of`]).
    pub totals: Vec<(String, u64)>,
    pub last_success: Option<DateTime<Utc>>,
    /// Messages whose tracking ended in the last 24 hours, by final state.
    pub closed_24h: Vec<(String, u64)>,
}

/// The running totals a cycle adds to: `family:label` names, read back by the metrics.
fn totals_of(s: &Summary) -> Vec<(String, u64)> {
    vec![
        ("messages_polled:delivered".into(), s.delivered),
        ("messages_polled:failed".into(), s.failed),
        ("messages_polled:pending".into(), s.pending),
        ("messages_closed_unconfirmed:".into(), s.closed_unconfirmed),
        ("messages_not_found:".into(), s.not_found),
        ("unknown_statuses:".into(), s.unknown_statuses),
        ("malformed_reports:".into(), s.malformed_reports),
        ("batches_failed:".into(), s.batches_failed),
        ("lookups_failed:".into(), s.lookups_failed),
        ("http_requests:".into(), s.http_requests),
        ("http_retries:".into(), s.retries),
        (format!("cycles:{}", s.outcome), 1),
    ]
}

/// A message's tracking state and audit trail, for `dlr-poller history`.
#[derive(Debug, serde::Serialize)]
pub struct History {
    pub tracking_id: String,
    pub customer_id: Option<String>,
    pub phone_number: Option<String>,
    pub carrier_batch_id: Option<String>,
    pub submitted_at: Option<String>,
    /// `None` when the poller has not taken the submission in yet.
    pub state: Option<String>,
    pub polls: i64,
    pub next_due_at: Option<String>,
    pub closed_at: Option<String>,
    pub note: Option<String>,
    pub results: Vec<AuditRow>,
}

#[derive(Debug, serde::Serialize)]
pub struct AuditRow {
    pub poll_attempt: i64,
    pub polled_at: String,
    pub delivery_status: String,
    pub carrier_status: Option<String>,
    pub carrier_found: bool,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub delivery_confirmed_at: Option<String>,
    pub cycle_id: i64,
    pub created_at: String,
}

impl Store {
    /// Opens an existing database (`create`: or makes a new one) and sets the connection up. A statement waits
    /// up to `busy_timeout` for another writer's lock.
    pub fn open(path: &Path, create: bool, busy_timeout: Duration) -> Result<Store> {
        Store::open_inner(path, create, busy_timeout)
            .with_context(|| format!("opening database {}", path.display()))
            .exit_code(Exit::Database)
    }

    fn open_inner(path: &Path, create: bool, busy_timeout: Duration) -> Result<Store> {
        if !create && !path.exists() {
            bail!(
                "no such file: run `dlr-poller migrate` to create it, or check --db / DLR_POLLER_DB"
            );
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags)?;
        // Wait for another writer's lock instead of failing at once with SQLITE_BUSY.
        conn.busy_timeout(busy_timeout)?;
        // WAL: readers (the dispatcher, `history`, monitoring) never block the writer and vice versa, and a
        // crash loses at most the transaction in progress. Reading the mode also fails early on a file that is
        // not a SQLite database.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!("database journal mode is {mode}, not WAL");
        }
        // NORMAL is durable across a crash of the process in WAL mode; only a power loss can drop the last
        // commits, and those results are re-polled next cycle.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoint the WAL into the database every 10,000 pages (40 MB) instead of every 1,000: a cycle that
        // writes a million results copies shared index pages back far fewer times.
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        Ok(Store { conn, lease: None })
    }

    fn user_version(&self) -> rusqlite::Result<usize> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .map(|v| v as usize)
    }

    /// Applies the migrations the database has not seen, in one transaction. Returns (from, to) versions.
    pub fn migrate(&mut self) -> Result<(usize, usize)> {
        let mut run = || -> Result<(usize, usize)> {
            let from = self.user_version()?;
            if from > MIGRATIONS.len() {
                bail!(
                    "database schema version {from} is newer than this dlr-poller knows ({}); upgrade dlr-poller",
                    MIGRATIONS.len()
                );
            }
            let tx = self.conn.transaction()?;
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
                tx.execute_batch(sql)
                    .with_context(|| format!("applying schema version {}", i + 1))?;
            }
            tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
            tx.commit()?;
            Ok((from, MIGRATIONS.len()))
        };
        run()
            .context("migrating the schema")
            .exit_code(Exit::Database)
    }

    /// Sets this connection's page cache size, in bytes (SQLite's default is 2 MiB).
    pub fn set_cache_size(&self, bytes: i64) -> Result<()> {
        self.conn
            .pragma_update(None, "cache_size", -(bytes / 1024))
            .context("setting the page cache size")
            .exit_code(Exit::Database)
    }

    /// Fails unless the schema is exactly the version this build writes and its tables are all there.
    pub fn check_schema(&self) -> Result<()> {
        let run = || -> Result<()> {
            let version = self.user_version().context("reading the schema version")?;
            let want = MIGRATIONS.len();
            if version < want {
                bail!(
                    "database schema is at version {version}, this dlr-poller needs {want}: run `dlr-poller migrate`"
                );
            }
            if version > want {
                bail!(
                    "database schema version {version} is newer than this dlr-poller knows ({want}); upgrade dlr-poller"
                );
            }
            for table in TABLES {
                let present: bool = self.conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
                    [table],
                    |r| r.get(0),
                )?;
                if !present {
                    bail!(
                        "table {table} is missing from the database (schema version {version}); restore it, or \
                         recreate it from schema.sql"
                    );
                }
            }
            Ok(())
        };
        run().exit_code(Exit::Database)
    }

    /// Where this cycle starts reading sms_submissions: after the returned rowid. Every row up to the stored
    /// position is tracked already (or cannot be tracked), so only the rows after it are read.
    ///
    /// SQLite may hand out rowids again (after the newest rows are deleted) or renumber them (VACUUM); the
    /// position remembers the tracking id at its rowid, and when that no longer matches, the whole table is read
    /// again (rows already tracked are passed over) and the tracked messages' links to their rows are renewed.
    pub fn read_start(&mut self) -> Result<ReadStart> {
        let run = || -> Result<ReadStart> {
            let (rowid, tracking_id) = Store::position(&self.conn)?;
            let reported = state(&self.conn, REPORTED_KEY)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if rowid == 0 {
                return Ok(ReadStart {
                    after: 0,
                    rescan: false,
                    reported,
                });
            }
            let there = tracking_id_at(&self.conn, rowid)?;
            if there.as_deref() == Some(tracking_id.as_str()) {
                return Ok(ReadStart {
                    after: rowid,
                    rescan: false,
                    reported,
                });
            }
            log::warn!(
                "sms_submissions was rewritten since the last run (rows deleted or rowids renumbered); rescanning \
                 it for submissions not yet tracked"
            );
            self.conn
                .execute(
                    "UPDATE message_tracking SET submission_rowid = COALESCE((SELECT MIN(s.rowid) \
                     FROM sms_submissions s WHERE s.tracking_id = message_tracking.tracking_id), submission_rowid) \
                     WHERE state = 'OPEN'",
                    [],
                )
                .context("refreshing the links to sms_submissions")?;
            // Renumbered rows are reported afresh.
            Ok(ReadStart {
                after: 0,
                rescan: true,
                reported: 0,
            })
        };
        run()
            .context("checking the read position in sms_submissions")
            .exit_code(Exit::Database)
    }

    /// The position reached in sms_submissions: a rowid and the tracking id it had.
    fn position(conn: &Connection) -> rusqlite::Result<(i64, String)> {
        let value = state(conn, WATERMARK_KEY)?.unwrap_or_default();
        let (rowid, tracking_id) = value.split_once(':').unwrap_or((value.as_str(), ""));
        Ok((rowid.parse().unwrap_or(0), tracking_id.to_string()))
    }

    /// Remembers how far sms_submissions has been read: `position` (a rowid, 0 for the start; `None` leaves it
    /// as it is), up to which every row is tracked or cannot be tracked, and `reported`, up to which every row
    /// has been read and its problems reported.
    pub fn save_read(&mut self, position: Option<i64>, reported: i64) -> Result<()> {
        let mut run = || -> Result<()> {
            let tx = self.conn.transaction()?;
            let set = "INSERT INTO poller_state (key, value) VALUES (?1, ?2) \
                       ON CONFLICT (key) DO UPDATE SET value = excluded.value";
            if let Some(rowid) = position {
                // The tracking id there tells a later run whether the rowids were renumbered since.
                let value = format!(
                    "{rowid}:{}",
                    tracking_id_at(&tx, rowid)?.unwrap_or_default()
                );
                tx.execute(set, params![WATERMARK_KEY, value])?;
            }
            tx.execute(set, params![REPORTED_KEY, reported.to_string()])?;
            tx.commit()?;
            Ok(())
        };
        run()
            .context("saving the read position in sms_submissions")
            .exit_code(Exit::Database)
    }

    /// Up to `limit` rows of sms_submissions after rowid `after`, in rowid order, each with the row its tracking
    /// row came from when the message is tracked already.
    pub fn submissions_after(&self, after: i64, limit: usize) -> Result<Vec<Submission>> {
        let run = || -> Result<Vec<Submission>> {
            let mut rows = Vec::with_capacity(limit);
            let mut stmt = self.conn.prepare_cached(
                "SELECT s.rowid, s.tracking_id, s.customer_id, s.phone_number, s.carrier_batch_id, \
                 CAST(s.submitted_at AS TEXT), t.submission_rowid FROM sms_submissions s \
                 LEFT JOIN message_tracking t ON t.tracking_id = s.tracking_id \
                 WHERE s.rowid > ?1 ORDER BY s.rowid LIMIT ?2",
            )?;
            let mut query = stmt.query(params![after, limit as i64])?;
            while let Some(r) = query.next()? {
                let submitted_at = match r.get_ref(5)? {
                    ValueRef::Null => Err("submitted_at is NULL".to_string()),
                    value => std::str::from_utf8(value.as_bytes()?)
                        .context("submitted_at is not UTF-8")
                        .and_then(timefmt::parse)
                        .map_err(|e| format!("{e:#}")),
                };
                rows.push(Submission {
                    rowid: r.get(0)?,
                    tracking_id: r.get(1)?,
                    customer_id: r.get(2)?,
                    phone_number: r.get(3)?,
                    batch_id: r.get(4)?,
                    submitted_at,
                    tracked_from: r.get(6)?,
                });
            }
            Ok(rows)
        };
        run()
            .with_context(|| format!("reading sms_submissions after row {after}"))
            .exit_code(Exit::Database)
    }

    /// Starts tracking submissions that are not polled in this cycle: OPEN and due at their first slot, or
    /// INVALID with the reason. A tracking id tracked already is left as it is, with a warning. Returns how many
    /// were taken in as OPEN.
    pub fn take_in(&mut self, intakes: &[Intake]) -> Result<usize> {
        let mut run = || -> Result<usize> {
            let tx = self.conn.transaction()?;
            Store::check_lease(&tx, self.lease.as_deref())?;
            let mut added = 0;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO message_tracking \
                     (tracking_id, carrier_batch_id, submitted_at, state, next_due_at, note, submission_rowid) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for i in intakes {
                    let (state, next_due_at) = match i.submitted_at {
                        Some(at) => ("OPEN", Some(timefmt::format(schedule::first_due(at)))),
                        None => ("INVALID", None),
                    };
                    let inserted = insert.execute(params![
                        i.tracking_id,
                        i.batch_id,
                        i.submitted_at.map(timefmt::format),
                        state,
                        next_due_at,
                        i.note,
                        i.rowid,
                    ])?;
                    if inserted == 0 {
                        warn_repeated(&i.tracking_id);
                    } else if i.submitted_at.is_some() {
                        added += 1;
                    }
                }
            }
            tx.commit()?;
            Ok(added)
        };
        run()
            .context("taking in new submissions")
            .exit_code(Exit::Database)
    }

    /// The batches with messages due at `cutoff`, the longest-waiting first (so that batches that failed last
    /// cycle go first), with their message counts.
    pub fn due_groups(&self, cutoff: DateTime<Utc>) -> Result<Vec<DueGroup>> {
        let run = || -> Result<Vec<DueGroup>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT carrier_batch_id, COUNT(*), MIN(next_due_at) FROM message_tracking \
                 WHERE state = 'OPEN' AND next_due_at <= ?1 \
                 GROUP BY carrier_batch_id ORDER BY MIN(next_due_at), carrier_batch_id",
            )?;
            let groups = stmt
                .query_map([timefmt::format(cutoff)], |r| {
                    Ok(DueGroup {
                        batch_id: r.get(0)?,
                        messages: r.get::<_, i64>(1)? as u64,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(groups)
        };
        run()
            .context("finding due messages")
            .exit_code(Exit::Database)
    }

    /// Streams the due messages of one group to `each`, which returns false to stop early.
    pub fn due_messages(
        &self,
        batch_id: Option<&str>,
        cutoff: DateTime<Utc>,
        mut each: impl FnMut(DueMessage) -> bool,
    ) -> Result<()> {
        let mut run = || -> Result<()> {
            const COLUMNS: &str = "SELECT t.tracking_id, s.customer_id, s.phone_number, t.carrier_batch_id, \
                t.submitted_at, t.polls FROM message_tracking t \
                LEFT JOIN sms_submissions s ON s.rowid = t.submission_rowid AND s.tracking_id = t.tracking_id \
                WHERE t.state = 'OPEN' AND t.next_due_at <= ?2 AND ";
            let cutoff = timefmt::format(cutoff);
            let mut stmt = match batch_id {
                Some(_) => self
                    .conn
                    .prepare_cached(&format!("{COLUMNS} t.carrier_batch_id = ?1"))?,
                None => self.conn.prepare_cached(&format!(
                    "{COLUMNS} t.carrier_batch_id IS NULL AND ?1 IS NULL"
                ))?,
            };
            let mut rows = stmt.query(params![batch_id, cutoff])?;
            while let Some(row) = rows.next()? {
                if !each(due_message(row)?) {
                    break;
                }
            }
            Ok(())
        };
        run()
            .with_context(|| format!("reading due messages of batch {batch_id:?}"))
            .exit_code(Exit::Database)
    }

    /// Takes the cycle lease for `ttl`, unless a live holder has it. Expired leases are taken over, and so are
    /// leases of a holder on this host whose process no longer exists.
    pub fn acquire_lease(&mut self, now: DateTime<Utc>, ttl: Duration) -> Result<Lease> {
        let host = hostname();
        let pid = std::process::id();
        let me = format!(
            "{host}/{pid}/{}",
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        let mut run = || -> Result<Lease> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current = tx
                .query_row(
                    "SELECT host, pid, acquired_at, expires_at FROM poller_lease WHERE id = 1",
                    [],
                    |r| {
                        Ok(LeaseHolder {
                            host: r.get(0)?,
                            pid: r.get(1)?,
                            acquired_at: r.get(2)?,
                            expires_at: r.get(3)?,
                        })
                    },
                )
                .optional()?;
            if let Some(held) = &current {
                let expired = timefmt::parse(&held.expires_at).map_or(true, |at| at <= now);
                let gone = held.host == host && !process_alive(held.pid);
                if !expired && !gone {
                    return Ok(Lease::Held(held.clone()));
                }
            }
            let expires_at = now + chrono::TimeDelta::from_std(ttl)?;
            tx.execute(
                "INSERT OR REPLACE INTO poller_lease (id, holder, host, pid, acquired_at, expires_at) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                params![me, host, pid, timefmt::format_millis(now), timefmt::format_millis(expires_at)],
            )?;
            tx.commit()?;
            Ok(Lease::Acquired { took_over: current })
        };
        let lease = run()
            .context("taking the cycle lease")
            .exit_code(Exit::Database)?;
        if matches!(lease, Lease::Acquired { .. }) {
            self.lease = Some(me);
        }
        Ok(lease)
    }

    /// Gives the lease up (only if this run still holds it).
    pub fn release_lease(&mut self) -> Result<()> {
        let Some(me) = self.lease.take() else {
            return Ok(());
        };
        self.conn
            .execute(
                "DELETE FROM poller_lease WHERE id = 1 AND holder = ?1",
                [me],
            )
            .context("releasing the cycle lease")
            .exit_code(Exit::Database)?;
        Ok(())
    }

    /// Records a cycle as started; returns its id.
    pub fn begin_cycle(&self, started_at: DateTime<Utc>, cycle_now: DateTime<Utc>) -> Result<i64> {
        let run = || -> Result<i64> {
            // Only the lease holder runs a cycle, so a cycle still marked running belongs to a run that died.
            let abandoned = self.conn.execute(
                "UPDATE poll_cycles SET outcome = 'abandoned', \
                 error = 'the run ended without finishing the cycle (killed or crashed)' WHERE outcome = 'running'",
                [],
            )?;
            if abandoned > 0 {
                log::warn!(
                    "{abandoned} earlier cycle(s) never finished (killed or crashed); marked abandoned"
                );
            }
            self.conn.execute(
                "INSERT INTO poll_cycles (started_at, cycle_now, host, pid, outcome) VALUES (?1, ?2, ?3, ?4, 'running')",
                params![
                    timefmt::format_millis(started_at),
                    timefmt::format(cycle_now),
                    hostname(),
                    std::process::id()
                ],
            )?;
            Ok(self.conn.last_insert_rowid())
        };
        run()
            .context("recording the cycle start")
            .exit_code(Exit::Database)
    }

    /// Writes results in one transaction: an audit row per result and the tracking update, or for a message not
    /// tracked yet, its tracking row. A message whose tracking row has moved on (closed, or polled by someone
    /// else), or that turns out to be tracked already, is skipped, never counted twice.
    pub fn record(
        &mut self,
        cycle_id: i64,
        polled_at: DateTime<Utc>,
        records: &[PollRecord],
    ) -> Result<Written> {
        let mut run = || -> Result<Written> {
            let polled_at = timefmt::format(polled_at);
            let created_at = timefmt::format_millis(Utc::now());
            let tx = self.conn.transaction()?;
            Store::check_lease(&tx, self.lease.as_deref())?;
            let mut written = Written::default();
            let mut accepted = Vec::with_capacity(records.len());
            written.stored.reserve(records.len());
            {
                let mut update = tx.prepare_cached(
                    "UPDATE message_tracking SET polls = polls + 1, state = ?3, next_due_at = ?4, last_status = ?5, \
                     last_polled_at = ?6, closed_at = CASE WHEN ?3 = 'OPEN' THEN NULL ELSE ?6 END \
                     WHERE tracking_id = ?1 AND polls = ?2 AND state = 'OPEN'",
                )?;
                let mut first = tx.prepare_cached(
                    "INSERT OR IGNORE INTO message_tracking (tracking_id, submission_rowid, carrier_batch_id, \
                     submitted_at, state, polls, next_due_at, last_status, last_polled_at, closed_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, CASE WHEN ?5 = 'OPEN' THEN NULL ELSE ?8 END)",
                )?;
                // A batch's messages mostly share their times: format each once.
                let (mut submitted, mut due) = (Formatted::default(), Formatted::default());
                for r in records {
                    let m = r.message;
                    let next_due_at = r.next_due_at.map(|t| due.of(t));
                    let changed = match m.intake {
                        Some(rowid) => first.execute(params![
                            m.tracking_id,
                            rowid,
                            m.batch_id,
                            submitted.of(m.submitted_at),
                            r.state.as_str(),
                            next_due_at,
                            r.status.as_str(),
                            polled_at,
                        ])?,
                        None => update.execute(params![
                            m.tracking_id,
                            m.polls,
                            r.state.as_str(),
                            next_due_at,
                            r.status.as_str(),
                            polled_at,
                        ])?,
                    };
                    written.stored.push(changed == 1);
                    if changed == 1 {
                        accepted.push(r);
                    } else if m.intake.is_some() {
                        warn_repeated(&m.tracking_id);
                        written.repeated += 1;
                    } else {
                        log::warn!(
                            "message {:?} was updated by another run since it was read; its result is not recorded twice",
                            m.tracking_id
                        );
                    }
                }
            }
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO sms_delivery_confirmations (tracking_id, customer_id, phone_number, \
                     carrier_batch_id, delivery_status, failure_code, failure_reason, polled_at, \
                     delivery_confirmed_at, poll_attempt, created_at, cycle_id, carrier_status, carrier_found) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?;
                for r in &accepted {
                    let m = r.message;
                    insert.execute(params![
                        m.tracking_id,
                        m.customer_id,
                        m.phone_number,
                        m.batch_id,
                        r.status.as_str(),
                        r.failure_code,
                        r.failure_reason,
                        polled_at,
                        r.confirmed_at,
                        m.polls + 1,
                        created_at,
                        cycle_id,
                        r.carrier_status,
                        r.carrier_status.is_some(),
                    ])?;
                }
            }
            tx.commit()?;
            Ok(written)
        };
        run()
            .context("writing poll results")
            .exit_code(Exit::Database)
    }

    /// Fails unless this run still holds the cycle lease (when it took one).
    fn check_lease(tx: &Connection, me: Option<&str>) -> Result<()> {
        let Some(me) = me else { return Ok(()) };
        let holder: Option<String> = tx
            .query_row("SELECT holder FROM poller_lease WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        if holder.as_deref() != Some(me) {
            bail!(
                "this run no longer holds the cycle lease (now held by {}); not writing",
                holder.as_deref().unwrap_or("nobody")
            );
        }
        Ok(())
    }

    /// Records how a cycle ended, adds its counts to the running totals, and remembers a success.
    pub fn finish_cycle(&mut self, s: &Summary) -> Result<()> {
        let mut run = || -> Result<()> {
            let tx = self.conn.transaction()?;
            tx.execute(
                "UPDATE poll_cycles SET finished_at = ?2, duration_seconds = ?3, outcome = ?4, exit_code = ?5, \
                 messages_due = ?6, polled = ?7, delivered = ?8, failed = ?9, pending = ?10, \
                 closed_unconfirmed = ?11, unknown_statuses = ?12, not_found = ?13, batches_ok = ?14, \
                 batches_failed = ?15, http_requests = ?16, retries = ?17, new_submissions = ?18, \
                 invalid_submissions = ?19, error = ?20, lookups_failed = ?21, duplicate_reports = ?22, \
                 malformed_reports = ?23 WHERE id = ?1",
                params![
                    s.cycle_id,
                    s.finished_at,
                    s.duration_seconds,
                    s.outcome,
                    s.exit_code,
                    s.messages_due,
                    s.polled,
                    s.delivered,
                    s.failed,
                    s.pending,
                    s.closed_unconfirmed,
                    s.unknown_statuses,
                    s.not_found,
                    s.batches_ok,
                    s.batches_failed,
                    s.http_requests,
                    s.retries,
                    s.new_submissions,
                    s.invalid_submissions,
                    s.error,
                    s.lookups_failed,
                    s.duplicate_reports,
                    s.malformed_reports,
                ],
            )?;
            {
                let mut add = tx.prepare_cached(
                    "INSERT INTO poller_totals (name, value) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                )?;
                for (name, value) in totals_of(s) {
                    add.execute(params![name, value])?;
                }
            }
            if s.exit_code == Some(0) {
                tx.execute(
                    "INSERT INTO poller_state (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![LAST_SUCCESS_KEY, s.finished_at],
                )?;
            }
            tx.commit()?;
            Ok(())
        };
        run()
            .context("recording the cycle end")
            .exit_code(Exit::Database)
    }

    /// What the metrics need beyond the cycle's own summary: running totals, the last success, and the
    /// messages whose tracking ended in the 24 hours before `now`, by final state.
    pub fn metrics_data(&self, now: DateTime<Utc>) -> Result<MetricsData> {
        let run = || -> Result<MetricsData> {
            let mut stmt = self
                .conn
                .prepare("SELECT name, value FROM poller_totals ORDER BY name")?;
            let totals = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let last_success = state(&self.conn, LAST_SUCCESS_KEY)?;
            let mut stmt = self.conn.prepare(
                "SELECT state, COUNT(*) FROM message_tracking WHERE closed_at IS NOT NULL AND closed_at > ?1 \
                 AND state IN ('DELIVERED', 'FAILED', 'UNCONFIRMED') GROUP BY state",
            )?;
            let since = timefmt::format(now - chrono::TimeDelta::hours(24));
            let closed_24h = stmt
                .query_map([since], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(MetricsData {
                totals,
                last_success: last_success.and_then(|t| timefmt::parse(&t).ok()),
                closed_24h,
            })
        };
        run()
            .context("reading metrics data")
            .exit_code(Exit::Database)
    }

    /// The most recent cycle that has finished (whatever its outcome).
    pub fn last_finished_cycle(&self) -> Result<Option<Summary>> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT MAX(id) FROM poll_cycles WHERE outcome NOT IN ('running', 'abandoned')",
                [],
                |r| r.get(0),
            )
            .context("reading poll_cycles")
            .exit_code(Exit::Database)?;
        let Some(id) = id else { return Ok(None) };
        Ok(self.cycles_where("id = ?1", id, 1)?.pop())
    }

    /// Counts for `doctor`: submissions, messages being tracked, cycles recorded.
    pub fn counts(&self) -> Result<(u64, u64, u64)> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM sms_submissions), \
                 (SELECT COUNT(*) FROM message_tracking WHERE state = 'OPEN'), (SELECT COUNT(*) FROM poll_cycles)",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
            )
            .context("counting rows")
            .exit_code(Exit::Database)
    }

    /// Deletes (or with `dry_run`, counts) audit rows polled before `cutoff` of messages no longer tracked, and
    /// finished cycle records started before it, `chunk` rows per transaction so that a running cycle never
    /// waits long. Returns (audit rows, cycles).
    pub fn prune(
        &mut self,
        cutoff: DateTime<Utc>,
        dry_run: bool,
        chunk: usize,
    ) -> Result<(u64, u64)> {
        const AUDIT: &str = "FROM sms_delivery_confirmations WHERE polled_at < ?1 AND NOT EXISTS \
            (SELECT 1 FROM message_tracking t WHERE t.tracking_id = sms_delivery_confirmations.tracking_id \
             AND t.state = 'OPEN')";
        const CYCLES: &str = "FROM poll_cycles WHERE started_at < ?1 AND outcome != 'running'";
        let cutoff = timefmt::format(cutoff);
        let run = || -> Result<(u64, u64)> {
            if dry_run {
                let count = |from: &str| -> rusqlite::Result<u64> {
                    self.conn
                        .query_row(&format!("SELECT COUNT(*) {from}"), [&cutoff], |r| {
                            r.get::<_, i64>(0)
                        })
                        .map(|n| n as u64)
                };
                return Ok((count(AUDIT)?, count(CYCLES)?));
            }
            let mut totals = (0, 0);
            for (from, total) in [(AUDIT, &mut totals.0), (CYCLES, &mut totals.1)] {
                let table = from.split_whitespace().nth(1).unwrap_or_default();
                let sql = format!(
                    "DELETE FROM {table} WHERE rowid IN (SELECT rowid {from} LIMIT {chunk})"
                );
                loop {
                    let deleted = self.conn.execute(&sql, [&cutoff])?;
                    *total += deleted as u64;
                    if deleted < chunk {
                        break;
                    }
                }
            }
            Ok(totals)
        };
        run().context("pruning old rows").exit_code(Exit::Database)
    }

    /// The last `n` cycles, newest first.
    pub fn cycles(&self, n: u64) -> Result<Vec<Summary>> {
        self.cycles_where("?1 = ?1", 0, n)
    }

    fn cycles_where(&self, filter: &str, value: i64, n: u64) -> Result<Vec<Summary>> {
        let run = || -> Result<Vec<Summary>> {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT id, started_at, finished_at, duration_seconds, cycle_now, outcome, exit_code, messages_due, \
                 polled, delivered, failed, pending, closed_unconfirmed, unknown_statuses, not_found, batches_ok, \
                 batches_failed, http_requests, retries, new_submissions, invalid_submissions, error, \
                 lookups_failed, duplicate_reports, malformed_reports FROM poll_cycles WHERE {filter} ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map([value, n as i64], |r| {
                    let count = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
                    Ok(Summary {
                        cycle_id: r.get(0)?,
                        started_at: r.get(1)?,
                        finished_at: r.get(2)?,
                        duration_seconds: r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                        cycle_now: r.get(4)?,
                        outcome: r.get(5)?,
                        exit_code: r.get(6)?,
                        messages_due: count(7)?,
                        polled: count(8)?,
                        delivered: count(9)?,
                        failed: count(10)?,
                        pending: count(11)?,
                        closed_unconfirmed: count(12)?,
                        unknown_statuses: count(13)?,
                        not_found: count(14)?,
                        batches_ok: count(15)?,
                        batches_failed: count(16)?,
                        http_requests: count(17)?,
                        retries: count(18)?,
                        new_submissions: count(19)?,
                        invalid_submissions: count(20)?,
                        error: r.get(21)?,
                        lookups_failed: count(22)?,
                        duplicate_reports: count(23)?,
                        malformed_reports: count(24)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        };
        run()
            .context("reading poll_cycles")
            .exit_code(Exit::Database)
    }

    /// A message's tracking state and audit trail; `None` when neither the submissions nor the tracking table
    /// know the id.
    pub fn history(&self, tracking_id: &str) -> Result<Option<History>> {
        let run = || -> Result<Option<History>> {
            let head = self
                .conn
                .query_row(
                    "SELECT s.customer_id, s.phone_number, COALESCE(t.carrier_batch_id, s.carrier_batch_id), \
                     COALESCE(t.submitted_at, s.submitted_at), t.state, COALESCE(t.polls, 0), t.next_due_at, \
                     t.closed_at, t.note \
                     FROM (SELECT ?1 AS id) q \
                     LEFT JOIN sms_submissions s ON s.tracking_id = q.id \
                     LEFT JOIN message_tracking t ON t.tracking_id = q.id \
                     WHERE s.tracking_id IS NOT NULL OR t.tracking_id IS NOT NULL",
                    [tracking_id],
                    |r| {
                        Ok(History {
                            tracking_id: tracking_id.to_string(),
                            customer_id: r.get(0)?,
                            phone_number: r.get(1)?,
                            carrier_batch_id: r.get(2)?,
                            submitted_at: r.get(3)?,
                            state: r.get(4)?,
                            polls: r.get(5)?,
                            next_due_at: r.get(6)?,
                            closed_at: r.get(7)?,
                            note: r.get(8)?,
                            results: Vec::new(),
                        })
                    },
                )
                .optional()?;
            let Some(mut history) = head else {
                return Ok(None);
            };
            let mut stmt = self.conn.prepare(
                "SELECT poll_attempt, polled_at, delivery_status, carrier_status, carrier_found, failure_code, \
                 failure_reason, delivery_confirmed_at, cycle_id, created_at FROM sms_delivery_confirmations \
                 WHERE tracking_id = ?1 ORDER BY poll_attempt",
            )?;
            history.results = stmt
                .query_map([tracking_id], |r| {
                    Ok(AuditRow {
                        poll_attempt: r.get(0)?,
                        polled_at: r.get(1)?,
                        delivery_status: r.get(2)?,
                        carrier_status: r.get(3)?,
                        carrier_found: r.get(4)?,
                        failure_code: r.get(5)?,
                        failure_reason: r.get(6)?,
                        delivery_confirmed_at: r.get(7)?,
                        cycle_id: r.get(8)?,
                        created_at: r.get(9)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(history))
        };
        run()
            .with_context(|| format!("reading the history of {tracking_id:?}"))
            .exit_code(Exit::Database)
    }
}

/// A value of poller_state.
fn state(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM poller_state WHERE key = ?1",
        [key],
        |r| r.get(0),
    )
    .optional()
}

/// The tracking id of an sms_submissions row ('' when it has none); `None` when there is no such row.
fn tracking_id_at(conn: &Connection, rowid: i64) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT COALESCE(tracking_id, '') FROM sms_submissions WHERE rowid = ?1",
        [rowid],
        |r| r.get(0),
    )
    .optional()
}

/// The stored form of the last time asked for.
#[derive(Default)]
struct Formatted(Option<(DateTime<Utc>, String)>);

impl Formatted {
    fn of(&mut self, t: DateTime<Utc>) -> &str {
        if self.0.as_ref().is_none_or(|(last, _)| *last != t) {
            self.0 = Some((t, timefmt::format(t)));
        }
        self.0.as_ref().map_or("", |(_, s)| s.as_str())
    }
}

/// Warns about a submission whose tracking id is tracked already, from another row of sms_submissions.
pub fn warn_repeated(tracking_id: &str) {
    log::warn!("submission {tracking_id:?} appears twice in sms_submissions; tracked once");
}

fn due_message(row: &Row) -> Result<DueMessage> {
    let tracking_id: String = row.get(0)?;
    let submitted_at: String = row.get(4)?;
    let submitted_at = timefmt::parse(&submitted_at).with_context(|| {
        format!("message_tracking row {tracking_id:?} has a corrupt submitted_at")
    })?;
    Ok(DueMessage {
        tracking_id,
        customer_id: row.get(1)?,
        phone_number: row.get(2)?,
        batch_id: row.get(3)?,
        submitted_at,
        polls: row.get(5)?,
        intake: None,
    })
}

/// Whether a process of this host is still running. Where that cannot be known (no /proc), assume it is: the
/// lease then waits for its expiry.
fn process_alive(pid: i64) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether an error comes from another process holding a lock on the database past the busy timeout.
pub fn is_busy(err: &anyhow::Error) -> bool {
    has_code(
        err,
        &[
            rusqlite::ErrorCode::DatabaseBusy,
            rusqlite::ErrorCode::DatabaseLocked,
        ],
    )
}

/// Whether an error comes from a database this process cannot write.
pub fn is_read_only(err: &anyhow::Error) -> bool {
    has_code(
        err,
        &[
            rusqlite::ErrorCode::ReadOnly,
            rusqlite::ErrorCode::CannotOpen,
        ],
    )
}

fn has_code(err: &anyhow::Error, codes: &[rusqlite::ErrorCode]) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _)) if codes.contains(&f.code)
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
