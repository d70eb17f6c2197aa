//! The SQLite backend: one file on one host, the embedded default. This file holds SQL and transaction shape;
//! the store's rules are in `store/mod.rs`, and every error is tagged as a database error by `store::open`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::{
    Addressee, AuditRow, Backend, CloseSteps, Closed, Cursor, CycleLease, DueAfter, DueGroup,
    FAILING_BULK, HORIZON_KEY, History, Key, LAST_SUCCESS_KEY, Lease, LeaseHolder, MetricsData,
    Sharing, Span, TABLES, VERSION, Written, check_version, close_by_hand, counter_columns,
    failing_of, missing_table, refuse_newer, starting_row, taken_in, totals_of, warn_abandoned,
    warn_moved_on, warn_repeated,
};
use crate::domain::{DueMessage, Intake, PollRecord, Submission};
use crate::phases;
use crate::summary::{COUNTERS, Summary};
use crate::timefmt;

/// The current schema, applied as a whole to a new database.
const SCHEMA: &str = include_str!("../../schema.sql");
/// Upgrades of older databases: `UPGRADES[i]` takes version `i + 1` to `i + 2`. Append; never edit a released
/// entry.
const UPGRADES: &[&str] = &[
    include_str!("../migrations/v2.sql"),
    include_str!("../migrations/v3.sql"),
    include_str!("../migrations/v4.sql"),
];
/// Rows reserved up front for one read of sms_submissions.
const READ_RESERVE: usize = 10_000;
/// The writer's page cache, in bytes: it holds the index pages a transaction of many thousand results touches.
const WRITER_CACHE: i64 = 64 << 20;

/// A SQLite database, by one connection.
pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
    /// The lease this run holds, checked in every write transaction.
    lease: Option<String>,
    /// The OS lock behind the lease, held for the life of the process.
    lock: Option<std::fs::File>,
}

impl Sqlite {
    /// Opens an existing database (`create`: or makes a new one) and sets the connection up. A statement waits
    /// up to `busy_timeout` for another writer's lock.
    pub fn open(path: &Path, create: bool, busy_timeout: Duration) -> Result<Sqlite> {
        Sqlite::open_inner(path, create, busy_timeout)
            .with_context(|| format!("opening database {}", path.display()))
    }

    fn open_inner(path: &Path, create: bool, busy_timeout: Duration) -> Result<Sqlite> {
        if !create && !path.exists() {
            bail!(
                "no such file: run `dlr-poller migrate` to create it, or check --db / DLR_POLLER_DB"
            );
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn = Connection::open_with_flags(path, flags)?;
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
        // Every write transaction takes the write lock when it begins, waiting for it up to the busy timeout. A
        // deferred one would read first and then have to upgrade, and in WAL mode SQLite fails such an upgrade at
        // once (SQLITE_BUSY) when another process writes meanwhile, without calling the busy handler.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        Ok(Sqlite {
            conn,
            path: path.to_path_buf(),
            lease: None,
            lock: None,
        })
    }

    fn user_version(&self) -> rusqlite::Result<usize> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .map(|v| v as usize)
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

    fn cycles_where(&self, filter: &str, value: i64, n: u64) -> Result<Vec<Summary>> {
        let run = || -> Result<Vec<Summary>> {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT id, started_at, finished_at, duration_seconds, cycle_now, outcome, exit_code, error, {} \
                 FROM poll_cycles WHERE {filter} ORDER BY id DESC LIMIT ?2",
                counter_columns()
            ))?;
            let rows = stmt
                .query_map([value, n as i64], |r| {
                    let mut s = Summary {
                        cycle_id: r.get(0)?,
                        started_at: r.get(1)?,
                        finished_at: r.get(2)?,
                        duration_seconds: r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                        cycle_now: r.get(4)?,
                        outcome: r.get(5)?,
                        exit_code: r.get(6)?,
                        error: r.get(7)?,
                        // Kept per cycle in the audit rows, not in the cycle record.
                        failed_by_category: Default::default(),
                        ..Summary::default()
                    };
                    for (i, counter) in COUNTERS.iter().enumerate() {
                        (counter.set)(&mut s, r.get::<_, i64>(8 + i)? as u64);
                    }
                    Ok(s)
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        };
        run().context("reading poll_cycles")
    }
}

impl Backend for Sqlite {
    /// Brings the schema to the current version in one transaction: the whole schema on a new database, the
    /// upgrades it has not seen on an older one. The version is read inside the transaction, so several
    /// `migrate` runs at once apply each step once (the others wait for the lock, then find nothing to do).
    /// Returns (from, to) versions.
    fn migrate(&mut self) -> Result<(usize, usize)> {
        let mut run = || -> Result<(usize, usize)> {
            let tx = self.conn.transaction()?;
            let from = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
            refuse_newer(from)?;
            if from == 0 {
                tx.execute_batch(SCHEMA)
                    .with_context(|| format!("applying schema version {VERSION}"))?;
            } else {
                for (i, sql) in UPGRADES.iter().enumerate().skip(from - 1) {
                    tx.execute_batch(sql)
                        .with_context(|| format!("upgrading the schema to version {}", i + 2))?;
                }
            }
            tx.pragma_update(None, "user_version", VERSION as i64)?;
            tx.commit()?;
            Ok((from, VERSION))
        };
        run().context("migrating the schema")
    }

    fn sharing(&mut self) -> Sharing<'_> {
        Sharing::Lease(self)
    }

    /// Fails unless the schema is exactly the version this build writes and its tables are all there.
    fn check_schema(&mut self) -> Result<()> {
        let run = || -> Result<()> {
            let version = self.user_version().context("reading the schema version")?;
            check_version(version)?;
            for table in std::iter::once("sms_submissions").chain(TABLES) {
                let present: bool = self.conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
                    [table],
                    |r| r.get(0),
                )?;
                if !present {
                    return Err(missing_table(table, version, "schema.sql"));
                }
            }
            Ok(())
        };
        run()
    }

    /// How far back sms_submissions has been read completely (`None`: never; the first read covers the whole
    /// table).
    fn read_horizon(&mut self) -> Result<Option<String>> {
        state(&self.conn, HORIZON_KEY).context("reading the read horizon of sms_submissions")
    }

    /// Remembers that every row of sms_submissions from `horizon` on has been read.
    fn save_horizon(&mut self, horizon: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO poller_state (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![HORIZON_KEY, horizon],
            )
            .context("saving the read horizon of sms_submissions")?;
        Ok(())
    }

    /// Up to `limit` rows of sms_submissions in `span` after `cursor`, each saying whether its tracking id is
    /// tracked already. Each call is one short read, so that a long cycle never keeps the WAL from being
    /// checkpointed.
    fn submissions(
        &mut self,
        span: &Span,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<Vec<(Submission, Cursor)>> {
        let run = || -> Result<Vec<(Submission, Cursor)>> {
            // ?1 and ?2 are the cursor, ?3 the span's upper bound, ?4 the limit. The lower bound is the cursor's
            // start: a second lower bound would make SQLite seek by it alone and filter the row value row by row.
            let (filter, to) = match span {
                Span::From(_) => ("(s.submitted_at, s.tracking_id) > (?1, ?2)", None),
                Span::Between(_, to) | Span::Below(to) => (
                    "(s.submitted_at, s.tracking_id) > (?1, ?2) AND s.submitted_at < ?3",
                    Some(to),
                ),
                // Read on the first run only; SQLite scans the index for it.
                Span::Null => (
                    "s.submitted_at IS NULL AND ?1 IS NULL AND s.tracking_id > ?2",
                    None,
                ),
            };
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT s.rowid, s.tracking_id, s.customer_id, s.phone_number, s.carrier_batch_id, s.submitted_at, \
                 EXISTS (SELECT 1 FROM message_tracking t WHERE t.tracking_id = s.tracking_id) \
                 FROM sms_submissions s WHERE {filter} ORDER BY s.submitted_at, s.tracking_id LIMIT ?4"
            ))?;
            let mut query = stmt.query(params![
                value_of(&cursor.submitted_at),
                value_of(&cursor.tracking_id),
                to,
                limit as i64
            ])?;
            let mut rows = Vec::with_capacity(limit.min(READ_RESERVE));
            while let Some(r) = query.next()? {
                let raw: Value = r.get(5)?;
                let submitted_at = match &raw {
                    Value::Null => Err("submitted_at is NULL".to_string()),
                    Value::Text(text) => {
                        timefmt::parse_submitted(text).map_err(|e| format!("{e:#}"))
                    }
                    Value::Blob(bytes) => std::str::from_utf8(bytes)
                        .context("submitted_at is not UTF-8")
                        .and_then(timefmt::parse_submitted)
                        .map_err(|e| format!("{e:#}")),
                    Value::Integer(n) => Err(format!(
                        "submitted_at is the number {n}, not an RFC 3339 timestamp"
                    )),
                    Value::Real(n) => Err(format!(
                        "submitted_at is the number {n}, not an RFC 3339 timestamp"
                    )),
                };
                let tracking_id: Value = r.get(1)?;
                let text_id = as_text(&tracking_id);
                let place = (!Submission::trackable(text_id.as_deref()))
                    .then(|| r.get::<_, i64>(0).map(|rowid| format!("rowid {rowid}")))
                    .transpose()?;
                rows.push((
                    Submission {
                        tracking_id: text_id,
                        place,
                        customer_id: as_text(&r.get(2)?),
                        phone_number: as_text(&r.get(3)?),
                        batch_id: as_text(&r.get(4)?),
                        submitted_at,
                        tracked: r.get(6)?,
                    },
                    Cursor {
                        submitted_at: key_of(raw),
                        tracking_id: key_of(tracking_id),
                    },
                ));
            }
            Ok(rows)
        };
        run().context("reading sms_submissions")
    }

    /// Starts tracking submissions that are not polled in this cycle: OPEN and due at their first slot (dated in
    /// the future), INVALID or TOO_OLD with the reason. A tracking id tracked already is left as it is. Returns
    /// how many were taken in, by kind: (open, too old).
    fn take_in(&mut self, intakes: &[Intake]) -> Result<(usize, usize)> {
        let mut run = || -> Result<(usize, usize)> {
            let tx = self.conn.transaction()?;
            Sqlite::check_lease(&tx, self.lease.as_deref())?;
            let mut states = Vec::with_capacity(intakes.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO message_tracking (tracking_id, customer_id, phone_number, \
                     carrier_batch_id, submitted_at, state, next_due_at, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for i in intakes {
                    let (state, next_due_at, note) = starting_row(i);
                    let inserted = insert.execute(params![
                        i.tracking_id,
                        i.customer_id,
                        i.phone_number,
                        i.batch_id,
                        i.submitted_at.map(timefmt::format),
                        state,
                        next_due_at.map(timefmt::format),
                        note,
                    ])?;
                    if inserted == 1 {
                        states.push(state);
                    }
                }
            }
            tx.commit()?;
            Ok(taken_in(states))
        };
        run().context("taking in new submissions")
    }

    /// The batches with messages due at `cutoff`, the longest-waiting first (so that batches that failed last
    /// cycle go first), with their message counts.
    fn due_groups(&mut self, cutoff: DateTime<Utc>) -> Result<Vec<DueGroup>> {
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
        run().context("finding due messages")
    }

    fn due_messages(
        &mut self,
        batch_id: Option<&str>,
        cutoff: DateTime<Utc>,
        after: Option<&DueAfter>,
        limit: usize,
    ) -> Result<(Vec<DueMessage>, Option<DueAfter>)> {
        let run = || -> Result<(Vec<DueMessage>, Option<DueAfter>)> {
            // Every stored submitted_at sorts after '': the first chunk starts there.
            const COLUMNS: &str = "SELECT tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at, \
                polls FROM message_tracking WHERE state = 'OPEN' AND next_due_at <= ?2 \
                AND (submitted_at, tracking_id) > (?3, ?4) AND ";
            let cutoff = timefmt::format(cutoff);
            let mut stmt = match batch_id {
                Some(_) => self.conn.prepare_cached(&format!(
                    "{COLUMNS} carrier_batch_id = ?1 ORDER BY submitted_at, tracking_id LIMIT ?5"
                ))?,
                None => self.conn.prepare_cached(&format!(
                    "{COLUMNS} carrier_batch_id IS NULL AND ?1 IS NULL ORDER BY submitted_at, tracking_id LIMIT ?5"
                ))?,
            };
            let (at, id) = after.map_or(("", ""), |a| (a.at.as_str(), a.id.as_str()));
            let mut rows = stmt.query(params![batch_id, cutoff, at, id, limit as i64])?;
            let mut messages = Vec::new();
            let mut last = None;
            while let Some(row) = rows.next()? {
                let message = due_message(row)?;
                last = Some((row.get::<_, String>(4)?, message.tracking_id.clone()));
                messages.push(message);
            }
            Ok((messages, last.map(|(at, id)| DueAfter { at, id })))
        };
        run().with_context(|| format!("reading due messages of batch {batch_id:?}"))
    }

    fn failing_bulks(&mut self, now: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>> {
        let run = || -> rusqlite::Result<Vec<(String, String)>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT key, value FROM poller_state WHERE substr(key, 1, length(?1)) = ?1",
            )?;
            stmt.query_map([FAILING_BULK], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        };
        Ok(failing_of(
            run().context("reading the batches whose bulk question failed")?,
            now,
        ))
    }

    fn note_failing_bulks(
        &mut self,
        batches: &[String],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut run = || -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            tx.execute(
                "DELETE FROM poller_state WHERE substr(key, 1, length(?1)) = ?1 AND value <= ?2",
                params![FAILING_BULK, timefmt::format(now)],
            )?;
            {
                let mut note = tx.prepare_cached(
                    "INSERT INTO poller_state (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?;
                for batch in batches {
                    note.execute(params![
                        format!("{FAILING_BULK}{batch}"),
                        timefmt::format(until)
                    ])?;
                }
            }
            tx.commit()
        };
        run().context("remembering the batches whose bulk question failed")
    }

    /// One run at a time on SQLite: no round to leave out.
    fn overdue(
        &mut self,
        cutoff: DateTime<Utc>,
        _round: Option<i64>,
    ) -> Result<(u64, Option<DateTime<Utc>>)> {
        let (count, oldest): (i64, Option<String>) = self
            .conn
            .query_row(
                "SELECT COUNT(*), MIN(next_due_at) FROM message_tracking \
                 WHERE state = 'OPEN' AND next_due_at <= ?1",
                [timefmt::format(cutoff)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .context("counting the messages left due")?;
        let oldest = oldest
            .map(|t| timefmt::parse(&t))
            .transpose()
            .context("reading the oldest next_due_at")?;
        Ok((count as u64, oldest))
    }

    /// Records a cycle as started; returns its id. This connection writes the cycle's results: its page cache
    /// grows to hold the index pages a transaction of many thousand results touches.
    fn begin_cycle(&mut self, started_at: DateTime<Utc>, cycle_now: DateTime<Utc>) -> Result<i64> {
        let mut run = || -> Result<i64> {
            self.conn
                .pragma_update(None, "cache_size", -(WRITER_CACHE / 1024))
                .context("setting the page cache size")?;
            let tx = self.conn.transaction()?;
            // Only the lease holder runs a cycle, so a cycle still marked running belongs to a run that died.
            let abandoned = tx.execute(
                "UPDATE poll_cycles SET outcome = 'abandoned', \
                 error = 'the run ended without finishing the cycle (killed or crashed)' WHERE outcome = 'running'",
                [],
            )?;
            warn_abandoned(abandoned as u64);
            tx.execute(
                "INSERT INTO poll_cycles (started_at, cycle_now, host, pid, outcome) VALUES (?1, ?2, ?3, ?4, 'running')",
                params![
                    timefmt::format_millis(started_at),
                    timefmt::format(cycle_now),
                    crate::host::name(),
                    std::process::id()
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(id)
        };
        run().context("recording the cycle start")
    }

    /// Writes results in one transaction: an audit row per result and the tracking update, or for a message not
    /// tracked yet, its tracking row. A message whose tracking row has moved on (closed, or polled by someone
    /// else), or that turns out to be tracked already, is skipped, never counted twice.
    fn record(
        &mut self,
        cycle_id: i64,
        polled_at: DateTime<Utc>,
        records: &[PollRecord],
    ) -> Result<Written> {
        let mut run = || -> Result<Written> {
            let polled_at = timefmt::format(polled_at);
            let created_at = timefmt::format_millis(Utc::now());
            let tx = self.conn.transaction()?;
            Sqlite::check_lease(&tx, self.lease.as_deref())?;
            let written =
                phases::Phase::UpdateTracking.time(|| write_tracking(&tx, records, &polled_at))?;
            let accepted: Vec<&PollRecord> = records
                .iter()
                .zip(&written.stored)
                .filter(|(_, s)| **s)
                .map(|(r, _)| r)
                .collect();
            phases::Phase::WriteResults
                .time(|| insert_audit_rows(&tx, &accepted, &polled_at, &created_at, cycle_id))?;
            phases::Phase::Commit.time(|| tx.commit())?;
            Ok(written)
        };
        run().context("writing poll results")
    }

    /// Records how a cycle ended, adds its counts to the running totals, and remembers a success.
    fn finish_cycle(&mut self, s: &Summary) -> Result<()> {
        let mut run = || -> Result<()> {
            let tx = self.conn.transaction()?;
            let sets: String = COUNTERS
                .iter()
                .enumerate()
                .map(|(i, c)| format!(", {} = ?{}", c.column, i + 7))
                .collect();
            let mut values: Vec<Value> = vec![
                s.cycle_id.into(),
                s.finished_at.clone().into(),
                s.duration_seconds.into(),
                s.outcome.clone().into(),
                s.exit_code.into(),
                s.error.clone().into(),
            ];
            values.extend(COUNTERS.iter().map(|c| Value::Integer((c.get)(s) as i64)));
            tx.execute(
                &format!(
                    "UPDATE poll_cycles SET finished_at = ?2, duration_seconds = ?3, outcome = ?4, exit_code = ?5, \
                     error = ?6{sets} WHERE id = ?1"
                ),
                rusqlite::params_from_iter(values),
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
        run().context("recording the cycle end")
    }

    /// What the metrics need beyond the cycle's own summary: running totals, the last success, and the
    /// messages whose tracking ended in the 24 hours before `now`, by final state.
    fn metrics_data(&mut self, now: DateTime<Utc>) -> Result<MetricsData> {
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
        run().context("reading metrics data")
    }

    /// The most recent cycle that has finished (whatever its outcome).
    fn last_finished_cycle(&mut self) -> Result<Option<Summary>> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT MAX(id) FROM poll_cycles WHERE outcome NOT IN ('running', 'abandoned')",
                [],
                |r| r.get(0),
            )
            .context("reading poll_cycles")?;
        let Some(id) = id else { return Ok(None) };
        Ok(self.cycles_where("id = ?1", id, 1)?.pop())
    }

    /// Counts for `doctor`: submissions, messages being tracked, cycles recorded.
    fn counts(&mut self) -> Result<(u64, u64, u64)> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM sms_submissions), \
                 (SELECT COUNT(*) FROM message_tracking WHERE state = 'OPEN'), (SELECT COUNT(*) FROM poll_cycles)",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
            )
            .context("counting rows")
    }

    /// Deletes (or with `dry_run`, counts) audit rows polled before `cutoff` of messages no longer tracked, and
    /// finished cycle records started before it, `chunk` rows per transaction so that a running cycle never
    /// waits long. Returns (audit rows, cycles).
    fn prune(&mut self, cutoff: DateTime<Utc>, dry_run: bool, chunk: usize) -> Result<(u64, u64)> {
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
        run().context("pruning old rows")
    }

    /// The last `n` cycles, newest first.
    fn cycles(&mut self, n: u64) -> Result<Vec<Summary>> {
        self.cycles_where("?1 = ?1", 0, n)
    }

    fn close(&mut self, tracking_id: &str, reason: &str, now: DateTime<Utc>) -> Result<Closed> {
        let mut run = || -> Result<Closed> {
            let tx = self.conn.transaction()?;
            let closed = close_by_hand(&mut Closing(&tx), tracking_id, reason, now)?;
            tx.commit()?;
            Ok(closed)
        };
        run().with_context(|| format!("closing {tracking_id:?}"))
    }

    /// A message's tracking state and audit trail; `None` when neither the submissions nor the tracking table
    /// know the id.
    fn history(&mut self, tracking_id: &str) -> Result<Option<History>> {
        let run = || -> Result<Option<History>> {
            let head = self
                .conn
                .query_row(
                    "SELECT COALESCE(t.customer_id, CAST(s.customer_id AS TEXT)), \
                     COALESCE(t.phone_number, CAST(s.phone_number AS TEXT)), \
                     COALESCE(t.carrier_batch_id, CAST(s.carrier_batch_id AS TEXT)), \
                     COALESCE(t.submitted_at, CAST(s.submitted_at AS TEXT)), t.state, COALESCE(t.polls, 0), t.next_due_at, \
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
                 failure_reason, delivery_confirmed_at, cycle_id, created_at, entry, failure_category \
                 FROM sms_delivery_confirmations WHERE tracking_id = ?1 ORDER BY poll_attempt",
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
                        entry: r.get(10)?,
                        failure_category: r.get(11)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(history))
        };
        run().with_context(|| format!("reading the history of {tracking_id:?}"))
    }
}

impl CycleLease for Sqlite {
    /// Takes the cycle lease: an exclusive OS lock on `{db}-lock`, held until this process ends (the kernel
    /// releases it on any death, `kill -9` included, so a re-run never waits for a dead holder), and the lease
    /// row, which names the holder for reports and fences every write. A lease row left by a holder that no
    /// longer holds the lock (it died) is taken over at once. A row of another host that has not expired is
    /// respected: one SQLite database serves one host, but a second host pointed at it by mistake must not run.
    fn acquire_lease(&mut self, now: DateTime<Utc>, ttl: Duration) -> Result<Lease> {
        let host = crate::host::name();
        let pid = std::process::id();
        let me = format!(
            "{host}/{pid}/{}",
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        let lock_path = lock_path(&self.path);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening the lock file {}", lock_path.display()))?;
        let locked = match lock.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("locking {}", lock_path.display()));
            }
        };
        let run = || -> Result<Lease> {
            let tx = self.conn.transaction()?;
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
            if !locked {
                // The lock's holder is alive; its row says who it is (absent only for an instant at its start).
                return Ok(Lease::Held(current.unwrap_or_else(|| LeaseHolder {
                    host,
                    pid: 0,
                    acquired_at: "just now".into(),
                    expires_at: "when it exits".into(),
                })));
            }
            if let Some(held) = &current {
                let expired = timefmt::parse(&held.expires_at).map_or(true, |at| at <= now);
                if held.host != host && !expired {
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
        let lease = run().context("taking the cycle lease")?;
        if matches!(lease, Lease::Acquired { .. }) {
            self.lease = Some(me);
            self.lock = Some(lock);
        }
        Ok(lease)
    }

    /// Gives the lease up (only if this run still holds it).
    fn release_lease(&mut self) -> Result<()> {
        let Some(me) = self.lease.take() else {
            return Ok(());
        };
        self.conn
            .execute(
                "DELETE FROM poller_lease WHERE id = 1 AND holder = ?1",
                [me],
            )
            .context("releasing the cycle lease")?;
        Ok(())
    }
}

/// Moves the tracking rows of `records` on, or writes the first one of a new message. A row that moved on
/// meanwhile, or a new message tracked already (its tracking id repeated in sms_submissions), is not stored.
fn write_tracking(tx: &Connection, records: &[PollRecord], polled_at: &str) -> Result<Written> {
    let mut written = Written::default();
    written.stored.reserve(records.len());
    // A closing entry is not a poll: last_status and last_polled_at stay those of the last poll.
    let mut update = tx.prepare_cached(
        "UPDATE message_tracking SET polls = polls + 1, state = ?3, next_due_at = ?4, \
         last_status = CASE WHEN ?7 IS NULL THEN ?5 ELSE last_status END, \
         last_polled_at = CASE WHEN ?7 IS NULL THEN ?6 ELSE last_polled_at END, \
         closed_at = CASE WHEN ?3 = 'OPEN' THEN NULL ELSE ?6 END, note = COALESCE(?7, note) \
         WHERE tracking_id = ?1 AND polls = ?2 AND state = 'OPEN'",
    )?;
    let mut first = tx.prepare_cached(
        "INSERT OR IGNORE INTO message_tracking (tracking_id, customer_id, phone_number, carrier_batch_id, \
         submitted_at, state, polls, next_due_at, last_status, last_polled_at, closed_at, note) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?9, CASE WHEN ?6 = 'OPEN' THEN NULL ELSE ?9 END, ?10)",
    )?;
    // A batch's messages mostly share their times: format each once.
    let (mut submitted, mut due) = (Formatted::default(), Formatted::default());
    for r in records {
        let m = r.message;
        let next_due_at = r.next_due_at.map(|t| due.of(t));
        let note = r.note();
        let changed = if m.new {
            first.execute(params![
                m.tracking_id,
                m.customer_id,
                m.phone_number,
                m.batch_id,
                submitted.of(m.submitted_at),
                r.state.as_str(),
                next_due_at,
                r.status.as_str(),
                polled_at,
                note,
            ])?
        } else {
            update.execute(params![
                m.tracking_id,
                m.polls,
                r.state.as_str(),
                next_due_at,
                r.status.as_str(),
                polled_at,
                note,
            ])?
        };
        written.stored.push(changed == 1);
        if changed == 1 {
            continue;
        }
        if m.new {
            warn_repeated(&m.tracking_id);
            written.repeated += 1;
        } else {
            warn_moved_on(&m.tracking_id);
        }
    }
    Ok(written)
}

/// Appends an audit row per record.
fn insert_audit_rows(
    tx: &Connection,
    records: &[&PollRecord],
    polled_at: &str,
    created_at: &str,
    cycle_id: i64,
) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO sms_delivery_confirmations (tracking_id, customer_id, phone_number, carrier_batch_id, \
         delivery_status, failure_code, failure_reason, polled_at, delivery_confirmed_at, poll_attempt, created_at, \
         cycle_id, carrier_status, carrier_found, entry, failure_category) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    for r in records {
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
            r.entry.as_str(),
            r.failure_category.map(|c| c.as_str()),
        ])?;
    }
    Ok(())
}

/// Closing by hand, in one SQLite transaction.
struct Closing<'a>(&'a Connection);

/// The addressee in three columns from `at`.
fn addressee(r: &Row, at: usize) -> rusqlite::Result<Addressee> {
    Ok(Addressee {
        customer_id: r.get(at)?,
        phone_number: r.get(at + 1)?,
        batch_id: r.get(at + 2)?,
    })
}

impl CloseSteps for Closing<'_> {
    fn tracked(&mut self, tracking_id: &str) -> Result<Option<(String, i64, Addressee)>> {
        Ok(self
            .0
            .query_row(
                "SELECT state, polls, customer_id, phone_number, carrier_batch_id FROM message_tracking \
                 WHERE tracking_id = ?1",
                [tracking_id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, addressee(r, 2)?)),
            )
            .optional()?)
    }

    fn submission(&mut self, tracking_id: &str) -> Result<Option<(Addressee, Option<String>)>> {
        Ok(self
            .0
            .query_row(
                "SELECT CAST(customer_id AS TEXT), CAST(phone_number AS TEXT), CAST(carrier_batch_id AS TEXT), \
                 CAST(submitted_at AS TEXT) FROM sms_submissions WHERE tracking_id = ?1 ORDER BY rowid LIMIT 1",
                [tracking_id],
                |r| Ok((addressee(r, 0)?, r.get::<_, Option<String>>(3)?)),
            )
            .optional()?)
    }

    fn end_tracking(&mut self, tracking_id: &str, note: &str, now: DateTime<Utc>) -> Result<()> {
        self.0.execute(
            "UPDATE message_tracking SET polls = polls + 1, state = 'UNCONFIRMED', next_due_at = NULL, \
             closed_at = ?2, note = ?3 WHERE tracking_id = ?1",
            params![tracking_id, timefmt::format(now), note],
        )?;
        Ok(())
    }

    fn take_in_closed(
        &mut self,
        tracking_id: &str,
        to: &Addressee,
        submitted_at: Option<DateTime<Utc>>,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO message_tracking (tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at, \
             state, polls, closed_at, note) VALUES (?1, ?2, ?3, ?4, ?5, 'UNCONFIRMED', 1, ?6, ?7)",
            params![
                tracking_id,
                to.customer_id,
                to.phone_number,
                to.batch_id,
                submitted_at.map(timefmt::format),
                timefmt::format(now),
                note
            ],
        )?;
        Ok(())
    }

    fn closing_entry(
        &mut self,
        tracking_id: &str,
        to: &Addressee,
        note: &str,
        now: DateTime<Utc>,
        attempt: i64,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO sms_delivery_confirmations (tracking_id, customer_id, phone_number, carrier_batch_id, \
             delivery_status, failure_reason, polled_at, poll_attempt, created_at, cycle_id, carrier_found, \
             entry) VALUES (?1, ?2, ?3, ?4, 'PENDING', ?5, ?6, ?7, ?8, 0, 0, 'close')",
            params![
                tracking_id,
                to.customer_id,
                to.phone_number,
                to.batch_id,
                note,
                timefmt::format(now),
                attempt,
                timefmt::format_millis(Utc::now())
            ],
        )?;
        Ok(())
    }
}

/// A text column of the dispatcher's table as text: a number (a phone number stored as an integer, say) is
/// written out; a BLOB is read as UTF-8; NULL is `None`.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Text(t) => Some(t.clone()),
        Value::Integer(n) => Some(n.to_string()),
        Value::Real(n) => Some(n.to_string()),
        Value::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
    }
}

/// A cursor's key as SQLite compares it: `Min` is below every value but NULL (numbers sort before text).
fn value_of(key: &Key) -> rusqlite::types::Value {
    match key {
        Key::Min => Value::Real(f64::NEG_INFINITY),
        Key::Null => Value::Null,
        Key::Integer(n) => Value::Integer(*n),
        Key::Real(n) => Value::Real(*n),
        Key::Text(t) => Value::Text(t.clone()),
        Key::Blob(b) => Value::Blob(b.clone()),
    }
}

fn key_of(value: rusqlite::types::Value) -> Key {
    match value {
        Value::Null => Key::Null,
        Value::Integer(n) => Key::Integer(n),
        Value::Real(n) => Key::Real(n),
        Value::Text(t) => Key::Text(t),
        Value::Blob(b) => Key::Blob(b),
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

fn due_message(row: &Row) -> Result<DueMessage> {
    let tracking_id: String = row.get(0)?;
    let submitted_at: String = row.get(4)?;
    // A value that cannot be read (one written by an earlier version for a submission after year 9999,
    // `+10000-01-01T04:59:59Z`) must not stop every cycle: it reads as the last instant there is, out of the
    // schedule's range, and the cycle closes the message without a request.
    let submitted_at = timefmt::parse(&submitted_at).unwrap_or(DateTime::<Utc>::MAX_UTC);
    Ok(DueMessage {
        tracking_id,
        customer_id: row.get(1)?,
        phone_number: row.get(2)?,
        batch_id: row.get(3)?,
        submitted_at,
        polls: row.get(5)?,
        new: false,
    })
}

/// What to tell the operator about an error of this backend.
pub fn hint(err: &anyhow::Error, path: &Path) -> Option<String> {
    if is_busy(err) {
        Some(
            "another process held a lock on the database for longer than --busy-timeout"
                .to_string(),
        )
    } else if is_read_only(err) {
        Some(format!(
            "{} (and its directory, where SQLite keeps the -wal and -shm files) must be writable by this user",
            path.display()
        ))
    } else {
        None
    }
}

/// Whether an error comes from another process holding a lock on the database past the busy timeout.
fn is_busy(err: &anyhow::Error) -> bool {
    has_code(
        err,
        &[
            rusqlite::ErrorCode::DatabaseBusy,
            rusqlite::ErrorCode::DatabaseLocked,
        ],
    )
}

/// Whether an error comes from a database this process cannot write.
fn is_read_only(err: &anyhow::Error) -> bool {
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

/// The file whose OS lock keeps two cycles off one database.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeliveryStatus, Entry, IntakeKind, TrackState};

    const NOW: &str = "2025-12-01T11:00:00Z";

    fn at(s: &str) -> DateTime<Utc> {
        timefmt::parse(s).unwrap()
    }

    /// A migrated database in a temp dir, and a store on it.
    fn store() -> (tempfile::TempDir, PathBuf, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut store = Sqlite::open(&path, true, Duration::from_secs(5)).unwrap();
        store.migrate().unwrap();
        (dir, path, store)
    }

    fn submit(path: &Path, id: &str, batch: Option<&str>, submitted_at: &str) {
        Connection::open(path)
            .unwrap()
            .execute(
                "INSERT INTO sms_submissions (tracking_id, customer_id, phone_number, carrier_batch_id, \
                 submitted_at) VALUES (?1, 'C1', '+4915112345678', ?2, ?3)",
                params![id, batch, submitted_at],
            )
            .unwrap();
    }

    fn message(id: &str, polls: i64, new: bool) -> DueMessage {
        DueMessage {
            tracking_id: id.to_string(),
            customer_id: Some("C1".into()),
            phone_number: Some("+4915112345678".into()),
            batch_id: Some("B".into()),
            submitted_at: at("2025-12-01T09:00:00Z"),
            polls,
            new,
        }
    }

    fn poll_record(m: &DueMessage) -> PollRecord<'_> {
        PollRecord {
            message: m,
            entry: Entry::Poll,
            status: DeliveryStatus::Pending,
            carrier_status: Some("SENT"),
            failure_code: None,
            failure_reason: None,
            failure_category: None,
            confirmed_at: None,
            state: TrackState::Open,
            next_due_at: Some(at("2025-12-01T13:00:00Z")),
        }
    }

    /// Every table's columns and every index's definition, comparable across databases.
    fn shape(conn: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        let mut objects = conn
            .prepare("SELECT type, name, COALESCE(sql, '') FROM sqlite_schema ORDER BY type, name")
            .unwrap();
        let objects: Vec<(String, String, String)> = objects
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (kind, name, sql) in objects {
            if kind == "table" {
                let mut cols = conn
                    .prepare(&format!("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('{name}')"))
                    .unwrap();
                let cols: Vec<String> = cols
                    .query_map([], |r| {
                        Ok(format!(
                            "{}:{}:{}:{:?}:{}",
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, i64>(4)?
                        ))
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                // CHECK constraints are compared by the states and entries they allow.
                let checks: Vec<&str> = [
                    "'TOO_OLD'",
                    "'INVALID'",
                    "'close'",
                    "carrier_found IN (0, 1)",
                    "WITHOUT ROWID",
                ]
                .into_iter()
                .filter(|c| sql.contains(c))
                .collect();
                out.push(format!("table {name} {cols:?} {checks:?}"));
            } else {
                out.push(format!(
                    "{kind} {name} {}",
                    sql.split_whitespace().collect::<Vec<_>>().join(" ")
                ));
            }
        }
        out
    }

    #[test]
    fn a_version_1_database_upgrades_to_the_fresh_schema_and_keeps_its_data() {
        let (_fresh_dir, fresh_path, _fresh) = store();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(include_str!("../migrations/v1.sql"))
                .unwrap();
            conn.execute_batch(
                "PRAGMA user_version = 1;
                 INSERT INTO sms_submissions VALUES ('T1', 'C1', '+4915112345678', 'B1', '2025-12-01T09:00:00Z');
                 INSERT INTO message_tracking (tracking_id, submission_rowid, carrier_batch_id, submitted_at, state, \
                   polls, next_due_at) VALUES ('T1', 1, 'B1', '2025-12-01T09:00:00Z', 'OPEN', 1, '2025-12-01T13:00:00Z');
                 INSERT INTO sms_delivery_confirmations (tracking_id, delivery_status, polled_at, poll_attempt, \
                   created_at, cycle_id) VALUES ('T1', 'PENDING', '2025-12-01T11:00:00Z', 1, '2025-12-01T11:00:01Z', 1);
                 INSERT INTO poller_state VALUES ('submissions_rowid', '1:T1');",
            )
            .unwrap();
        }
        let mut upgraded = Sqlite::open(&path, false, Duration::from_secs(5)).unwrap();
        assert_eq!(upgraded.migrate().unwrap(), (1, VERSION));
        assert_eq!(
            upgraded.migrate().unwrap(),
            (VERSION, VERSION),
            "idempotent"
        );
        upgraded.check_schema().unwrap();
        assert_eq!(
            shape(&upgraded.conn),
            shape(&Connection::open(&fresh_path).unwrap())
        );
        let (customer, phone, state, entry): (String, String, String, String) = upgraded
            .conn
            .query_row(
                "SELECT t.customer_id, t.phone_number, t.state, a.entry FROM message_tracking t \
                 JOIN sms_delivery_confirmations a USING (tracking_id)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            (
                customer.as_str(),
                phone.as_str(),
                state.as_str(),
                entry.as_str()
            ),
            ("C1", "+4915112345678", "OPEN", "poll")
        );
        assert_eq!(
            upgraded.read_horizon().unwrap(),
            None,
            "the old read position is gone"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (_dir, _path, mut store) = store();
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        let err = format!("{:#}", store.migrate().unwrap_err());
        assert!(
            err.contains("schema version 99 is newer than this dlr-poller knows (4)"),
            "{err}"
        );
        assert!(store.check_schema().is_err());
    }

    #[test]
    fn a_write_waits_for_another_writer_instead_of_failing() {
        let (_dir, path, mut store) = store();
        // With the lease held, every write of a cycle reads the lease row before it writes.
        store
            .acquire_lease(at(NOW), Duration::from_secs(60))
            .unwrap();
        // The other process holds the write lock for a moment, as a dispatcher's transaction does.
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO poller_state VALUES ('x', 'y');")
            .unwrap();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            locked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        locked_rx.recv().unwrap();
        let intake = Intake {
            tracking_id: "T1".into(),
            customer_id: None,
            phone_number: None,
            batch_id: None,
            submitted_at: Some(at("2025-12-01T09:00:00Z")),
            kind: IntakeKind::Future,
        };
        assert_eq!(store.take_in(&[intake]).unwrap(), (1, 0));
        holder.join().unwrap();
    }

    #[test]
    fn the_lease_is_held_until_the_process_lets_go_and_a_dead_holder_is_taken_over_at_once() {
        let (_dir, path, mut first) = store();
        let now = at(NOW);
        let ttl = Duration::from_secs(3600);
        assert!(matches!(
            first.acquire_lease(now, ttl).unwrap(),
            Lease::Acquired { took_over: None }
        ));
        let mut second = Sqlite::open(&path, false, Duration::from_secs(5)).unwrap();
        let Lease::Held(holder) = second.acquire_lease(now, ttl).unwrap() else {
            panic!("the lock is held")
        };
        assert_eq!(holder.pid, i64::from(std::process::id()));
        // The first run dies without releasing: its OS lock goes with it, its row stays and is taken over at once,
        // long before its expiry.
        drop(first);
        let Lease::Acquired {
            took_over: Some(dead),
        } = second.acquire_lease(now, ttl).unwrap()
        else {
            panic!("a dead holder's lease is taken over")
        };
        assert_eq!(dead, holder);
        second.release_lease().unwrap();
        assert_eq!(
            second
                .conn
                .query_row("SELECT COUNT(*) FROM poller_lease", [], |r| r
                    .get::<_, i64>(0))
                .unwrap(),
            0
        );
        assert!(lock_path(&path).exists());
    }

    #[test]
    fn a_live_lease_of_another_host_is_respected() {
        let (_dir, _path, mut store) = store();
        store
            .conn
            .execute(
                "INSERT INTO poller_lease VALUES (1, 'x', 'elsewhere', 7, '2025-12-01T10:00:00.000Z', '2025-12-01T12:00:00.000Z')",
                [],
            )
            .unwrap();
        let ttl = Duration::from_secs(60);
        assert!(
            matches!(store.acquire_lease(at(NOW), ttl).unwrap(), Lease::Held(h) if h.host == "elsewhere")
        );
        // Expired: taken over.
        assert!(matches!(
            store.acquire_lease(at("2025-12-01T12:00:00Z"), ttl).unwrap(),
            Lease::Acquired { took_over: Some(h) } if h.pid == 7
        ));
    }

    /// Every tracking id a span yields, read `chunk` rows at a time; `between` runs after each chunk.
    fn read_all(
        store: &mut Sqlite,
        span: &Span,
        chunk: usize,
        mut between: impl FnMut(),
    ) -> Vec<String> {
        let mut cursor = span.start();
        let mut ids = Vec::new();
        loop {
            let rows = store.submissions(span, &cursor, chunk).unwrap();
            let more = rows.len() == chunk;
            for (row, next) in rows {
                ids.push(row.tracking_id.unwrap());
                cursor = next;
            }
            between();
            if !more {
                return ids;
            }
        }
    }

    #[test]
    fn a_chunked_read_sees_every_row_once_while_rows_are_replaced_and_the_table_vacuumed() {
        let (_dir, path, mut store) = store();
        for i in 0..25 {
            submit(
                &path,
                &format!("T{i:02}"),
                Some("B"),
                "2025-12-01T09:00:00Z",
            );
        }
        let other = Connection::open(&path).unwrap();
        let mut round = 0;
        let ids = read_all(
            &mut store,
            &Span::From("2025-11-30T00:00:00Z".into()),
            10,
            || {
                round += 1;
                // The dispatcher replaces rows before and after the cursor, deletes one and vacuums (rowids change).
                other
                .execute_batch(&format!(
                    "INSERT OR REPLACE INTO sms_submissions VALUES ('T{:02}', 'C2', '+1', 'B', '2025-12-01T09:00:00Z');
                     INSERT OR REPLACE INTO sms_submissions VALUES ('T24', 'C2', '+1', 'B', '2025-12-01T09:00:00Z');
                     VACUUM;",
                    round
                ))
                .unwrap();
            },
        );
        let want: Vec<String> = (0..25).map(|i| format!("T{i:02}")).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn spans_split_the_table_by_submitted_at() {
        // The dispatcher's own table, without types or NOT NULL: anything may be in it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE sms_submissions (tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at)",
            )
            .unwrap();
        let mut store = Sqlite::open(&path, true, Duration::from_secs(5)).unwrap();
        store.migrate().unwrap();
        submit(&path, "OLD", None, "2025-06-01T09:00:00Z");
        submit(&path, "EDGE", None, "2025-11-30T00:00:00Z");
        submit(&path, "NEW", None, "2025-12-01T09:00:00Z");
        submit(&path, "GARBAGE", None, "soon");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO sms_submissions (tracking_id, submitted_at) VALUES ('NUMBER', 1764579600);
             INSERT INTO sms_submissions (tracking_id, phone_number, submitted_at) VALUES ('NOTIME', 4915112345678, NULL);",
        )
        .unwrap();
        let floor = "2025-11-30T00:00:00Z".to_string();
        let mut read = |span: Span| read_all(&mut store, &span, 2, || {});
        // Text that is not a time sorts after every time: it is read with the window, and found INVALID there.
        assert_eq!(read(Span::From(floor.clone())), ["EDGE", "NEW", "GARBAGE"]);
        assert_eq!(read(Span::Below(floor.clone())), ["NUMBER", "OLD"]);
        assert_eq!(
            read(Span::Between("2025-06-01T09:00:00Z".into(), floor)),
            ["OLD"]
        );
        assert_eq!(read(Span::Null), ["NOTIME"]);
        let rows = store
            .submissions(&Span::Null, &Span::Null.start(), 10)
            .unwrap();
        assert_eq!(
            rows[0].0.phone_number.as_deref(),
            Some("4915112345678"),
            "a number is read as text"
        );
        assert_eq!(
            rows[0].0.submitted_at,
            Err("submitted_at is NULL".to_string())
        );
        let rows = store
            .submissions(
                &Span::Below("2025-01-01T00:00:00Z".into()),
                &Span::Below(String::new()).start(),
                10,
            )
            .unwrap();
        assert_eq!(
            rows[0].0.submitted_at,
            Err("submitted_at is the number 1764579600, not an RFC 3339 timestamp".to_string())
        );
    }

    #[test]
    fn a_result_is_stored_once_even_when_two_runs_write_it() {
        let (_dir, _path, mut store) = store();
        let now = at(NOW);
        let first = message("T1", 0, true);
        let written = store.record(1, now, &[poll_record(&first)]).unwrap();
        assert_eq!(written.stored, [true]);
        // The same first result again (a tracking id repeated in sms_submissions): not stored, counted.
        let written = store.record(1, now, &[poll_record(&first)]).unwrap();
        assert_eq!(
            (written.stored.as_slice(), written.repeated),
            ([false].as_slice(), 1)
        );
        // The second poll, written twice by runs that both read polls = 1: only the first counts.
        let second = message("T1", 1, false);
        assert_eq!(
            store
                .record(2, now, &[poll_record(&second)])
                .unwrap()
                .stored,
            [true]
        );
        assert_eq!(
            store
                .record(3, now, &[poll_record(&second)])
                .unwrap()
                .stored,
            [false]
        );
        let (rows, polls): (i64, i64) = store
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM sms_delivery_confirmations), (SELECT polls FROM message_tracking)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rows, polls), (2, 2));
    }

    #[test]
    fn a_closing_entry_ends_tracking_and_keeps_the_last_poll() {
        let (_dir, _path, mut store) = store();
        let now = at(NOW);
        let m = message("T1", 0, true);
        store.record(1, now, &[poll_record(&m)]).unwrap();
        let m = message("T1", 1, false);
        let closing = PollRecord {
            entry: Entry::Close,
            carrier_status: None,
            failure_reason: Some(
                "closed after its +72h slot without an answer; last error: HTTP 503",
            ),
            state: TrackState::Unconfirmed,
            next_due_at: None,
            ..poll_record(&m)
        };
        assert_eq!(
            store
                .record(2, at("2025-12-04T09:00:00Z"), &[closing])
                .unwrap()
                .stored,
            [true]
        );
        let history = store.history("T1").unwrap().unwrap();
        assert_eq!(history.state.as_deref(), Some("UNCONFIRMED"));
        assert_eq!(
            history.note.as_deref(),
            Some("closed after its +72h slot without an answer; last error: HTTP 503")
        );
        let entries: Vec<(&str, i64)> = history
            .results
            .iter()
            .map(|r| (r.entry.as_str(), r.poll_attempt))
            .collect();
        assert_eq!(entries, [("poll", 1), ("close", 2)]);
        let last_polled: String = store
            .conn
            .query_row("SELECT last_polled_at FROM message_tracking", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(last_polled, NOW, "a closing entry is not a poll");
    }

    #[test]
    fn closing_by_hand() {
        let (_dir, path, mut store) = store();
        let now = at(NOW);
        submit(&path, "T1", Some("B"), "2025-12-01T09:00:00Z");
        submit(&path, "T2", None, "2025-12-01T09:00:00Z");
        store
            .record(1, now, &[poll_record(&message("T1", 0, true))])
            .unwrap();
        assert_eq!(store.close("T1", "ticket 4711", now).unwrap(), Closed::Now);
        assert_eq!(
            store.close("T1", "again", now).unwrap(),
            Closed::Ended("UNCONFIRMED".into())
        );
        // Not taken in yet: taken in closed, with its submission's details.
        assert_eq!(store.close("T2", "never sent", now).unwrap(), Closed::Now);
        assert_eq!(store.close("NOPE", "x", now).unwrap(), Closed::Unknown);
        for (id, attempts) in [("T1", vec![1, 2]), ("T2", vec![1])] {
            let h = store.history(id).unwrap().unwrap();
            assert_eq!(h.state.as_deref(), Some("UNCONFIRMED"));
            assert_eq!(
                h.results.iter().map(|r| r.poll_attempt).collect::<Vec<_>>(),
                attempts
            );
            let last = h.results.last().unwrap();
            assert_eq!(last.entry, "close");
            assert!(
                last.failure_reason
                    .as_deref()
                    .unwrap()
                    .starts_with("closed by hand: ")
            );
            assert_eq!(h.customer_id.as_deref(), Some("C1"));
        }
        // No longer due.
        assert!(
            store
                .due_messages(Some("B"), at("2099-01-01T00:00:00Z"), None, 10)
                .unwrap()
                .0
                .is_empty()
        );
    }

    #[test]
    fn due_messages_come_in_chunks_in_submission_order() {
        let (_dir, _path, mut store) = store();
        let now = at(NOW);
        // Ids and times in different orders, five messages to a second: the read follows the times, then the ids.
        let messages: Vec<DueMessage> = (0..25)
            .map(|i| DueMessage {
                submitted_at: at("2025-12-01T09:00:00Z") + chrono::TimeDelta::seconds(4 - i / 5),
                ..message(&format!("T{i:02}"), 0, true)
            })
            .collect();
        let records: Vec<PollRecord> = messages.iter().map(poll_record).collect();
        store.record(1, now, &records).unwrap();
        let due_at = at("2025-12-01T13:00:00Z");
        assert!(
            store
                .due_messages(Some("B"), now, None, 10)
                .unwrap()
                .0
                .is_empty(),
            "not due yet"
        );
        let mut after = None;
        let mut seen = Vec::new();
        let mut order = Vec::new();
        loop {
            // Seven at a time: chunks end inside a second, where the ids decide.
            let (chunk, last) = store
                .due_messages(Some("B"), due_at, after.as_ref(), 7)
                .unwrap();
            if chunk.is_empty() {
                assert_eq!(last, None);
                break;
            }
            after = last;
            seen.push(chunk.len());
            assert!(
                chunk
                    .iter()
                    .all(|m| m.polls == 1 && m.phone_number.as_deref() == Some("+4915112345678"))
            );
            order.extend(chunk.into_iter().map(|m| (m.submitted_at, m.tracking_id)));
        }
        assert_eq!(seen, [7, 7, 7, 4]);
        let mut expected: Vec<_> = messages
            .iter()
            .map(|m| (m.submitted_at, m.tracking_id.clone()))
            .collect();
        expected.sort();
        assert_eq!(order, expected);
        assert_eq!(order[0].1, "T20");
        assert_eq!(
            store.due_groups(due_at).unwrap(),
            [DueGroup {
                batch_id: Some("B".into()),
                messages: 25
            }]
        );
    }

    #[test]
    fn submissions_taken_in_without_a_poll() {
        let (_dir, _path, mut store) = store();
        let intake = |id: &str, kind| Intake {
            tracking_id: id.into(),
            customer_id: Some("C1".into()),
            phone_number: None,
            batch_id: None,
            submitted_at: Some(at("2025-06-01T09:00:00Z")),
            kind,
        };
        let taken = store
            .take_in(&[
                intake("OLD", IntakeKind::TooOld("too old to track".into())),
                intake("BAD", IntakeKind::Invalid("submitted_at is NULL".into())),
                intake("LATER", IntakeKind::Future),
                intake("OLD", IntakeKind::TooOld("again".into())),
            ])
            .unwrap();
        assert_eq!(
            taken,
            (1, 1),
            "one open, one too old; a repeated id is taken once"
        );
        for (id, state, note) in [
            ("OLD", "TOO_OLD", Some("too old to track")),
            ("BAD", "INVALID", Some("submitted_at is NULL")),
            ("LATER", "OPEN", None),
        ] {
            let h = store.history(id).unwrap().unwrap();
            assert_eq!(
                (h.state.as_deref(), h.note.as_deref()),
                (Some(state), note),
                "{id}"
            );
        }
        assert_eq!(
            store
                .history("LATER")
                .unwrap()
                .unwrap()
                .next_due_at
                .as_deref(),
            Some("2025-06-01T11:00:00Z")
        );
    }

    #[test]
    fn the_horizon_is_remembered() {
        let (_dir, _path, mut store) = store();
        assert_eq!(store.read_horizon().unwrap(), None);
        store.save_horizon("2025-11-26T11:00:00Z").unwrap();
        store.save_horizon("2025-11-26T13:00:00Z").unwrap();
        assert_eq!(
            store.read_horizon().unwrap().as_deref(),
            Some("2025-11-26T13:00:00Z")
        );
    }
}
