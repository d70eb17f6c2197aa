//! Storage: the few operations a cycle, the intake and the reports need, behind one seam with a backend per file:
//! SQLite ([`sqlite`], the embedded default for one host) and PostgreSQL ([`postgres`], the production store and
//! the way to run several replicas). Everything SQL lives in those two files; the rules both follow are here, and the
//! types they speak are the domain's (`crate::domain`).
//!
//! Every error of a backend is tagged as a database error (exit 74), once, by the store [`open`] returns.

mod postgres;
mod sqlite;
mod tagged;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};

use crate::domain::{
    Category, DueMessage, Intake, IntakeKind, LoneJobs, PollRecord, Submission, TrackState,
};
use crate::summary::{COUNTERS, Summary};
use crate::{schedule, timefmt};

pub use self::postgres::PgTarget;
use self::tagged::Tagged;
use crate::exit::{Exit, ExitContext};

/// Where the poller keeps its state: a SQLite file, or a PostgreSQL server.
#[derive(Clone, Debug)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(Box<PgTarget>),
}

impl Target {
    /// Reads `--db`: a `postgres://` or `postgresql://` URL, else a SQLite path. `password` is the content of
    /// `--db-password-file`, when given; `submissions` the dispatcher's table (`--submissions-table`).
    pub fn parse(db: &str, password: Option<String>, submissions: &str) -> Result<Target> {
        if PgTarget::is_url(db) {
            return Ok(Target::Postgres(Box::new(PgTarget::parse(
                db,
                password,
                submissions,
            )?)));
        }
        if submissions != DEFAULT_SUBMISSIONS {
            anyhow::bail!(
                "--submissions-table / DLR_POLLER_SUBMISSIONS_TABLE is for PostgreSQL; a SQLite database keeps its \
                 submissions in {DEFAULT_SUBMISSIONS}"
            );
        }
        if password.is_some() {
            anyhow::bail!(
                "--db-password-file / DLR_POLLER_DB_PASSWORD_FILE is given, but --db / DLR_POLLER_DB is a SQLite \
                 path, which takes no password"
            );
        }
        Ok(Target::Sqlite(PathBuf::from(db)))
    }
}

/// Names the database for logs and errors, without its password.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(path) => write!(f, "{}", path.display()),
            Target::Postgres(pg) => write!(f, "{pg}"),
        }
    }
}

/// Opens the store at `target` (`create`: a SQLite file may be created). A statement waits up to
/// `busy_timeout` for another process's lock.
/// Every error of the store it returns, this one's included, is tagged as a database error (exit 74).
pub fn open(target: &Target, create: bool, busy_timeout: Duration) -> Result<Box<dyn Backend>> {
    let store: Box<dyn Backend> = match target {
        Target::Sqlite(path) => Box::new(Tagged(
            sqlite::Sqlite::open(path, create, busy_timeout).exit_code(Exit::Database)?,
        )),
        Target::Postgres(pg) => Box::new(Tagged(
            postgres::Postgres::open(pg, busy_timeout).exit_code(Exit::Database)?,
        )),
    };
    Ok(store)
}

/// What to tell the operator about an error, beyond the error itself.
pub fn hint(err: &anyhow::Error, target: &Target) -> Option<String> {
    match target {
        Target::Sqlite(path) => sqlite::hint(err, path),
        Target::Postgres(_) => postgres::hint(err),
    }
}

/// The operations behind the seam, which every backend implements in full. A store is one connection, used by
/// one thread; a cycle opens one for its reader and one for its writer.
pub trait Backend: Send {
    /// Brings the schema to the current version; safe when several processes run it at once. Returns (from,
    /// to) versions.
    fn migrate(&mut self) -> Result<(usize, usize)>;
    /// Fails unless the schema is exactly the version this build writes and its tables are all there.
    fn check_schema(&mut self) -> Result<()>;

    /// How the runs of one cycle keep out of each other's way here.
    fn sharing(&mut self) -> Sharing<'_>;

    /// How far back sms_submissions has been read completely (`None`: never; the first read covers the whole
    /// table).
    fn read_horizon(&mut self) -> Result<Option<String>>;
    /// Remembers that every row of sms_submissions from `horizon` on has been read.
    fn save_horizon(&mut self, horizon: &str) -> Result<()>;
    /// Up to `limit` rows of sms_submissions in `span` after `cursor`, each saying whether its tracking id is
    /// tracked already. Each call is one short read.
    fn submissions(
        &mut self,
        span: &Span,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<Vec<(Submission, Cursor)>>;
    /// Starts tracking submissions that are not polled in this cycle. A tracking id tracked already is left as
    /// it is. Returns how many were taken in, by kind: (open, too old).
    fn take_in(&mut self, intakes: &[Intake]) -> Result<(usize, usize)>;
    /// The batches with messages due at `cutoff`, the longest-waiting first, with their message counts.
    fn due_groups(&mut self, cutoff: DateTime<Utc>) -> Result<Vec<DueGroup>>;
    /// Up to `limit` messages of one group due at `cutoff` after `after` (`None`: from the first), in
    /// submission order (submitted_at, then tracking id), with the key of the last one: a carrier listed by time
    /// finds a chunk's messages in a few of its minutes.
    fn due_messages(
        &mut self,
        batch_id: Option<&str>,
        cutoff: DateTime<Utc>,
        after: Option<&DueAfter>,
        limit: usize,
    ) -> Result<(Vec<DueMessage>, Option<DueAfter>)>;

    /// The batches whose bulk question failed in a recent cycle, each until when it is not asked again.
    fn failing_bulks(&mut self, now: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>>;
    /// Remembers that the bulk questions of `batches` failed, until `until`; forgets those remembered that
    /// expired by `now`.
    fn note_failing_bulks(
        &mut self,
        batches: &[String],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// The tracked messages due at `cutoff` and still open, and the slot the oldest of them was due at: how far
    /// behind its grid a cycle leaves the poller. In a shared `round`, messages of units that another live run
    /// holds are being polled, not left: they are not counted.
    fn overdue(
        &mut self,
        cutoff: DateTime<Utc>,
        round: Option<i64>,
    ) -> Result<(u64, Option<DateTime<Utc>>)>;

    /// Records a cycle as started on this connection, which then writes the cycle's results; returns its id.
    fn begin_cycle(&mut self, started_at: DateTime<Utc>, cycle_now: DateTime<Utc>) -> Result<i64>;
    /// Writes results in one transaction: an audit row per result and the tracking update, or for a message
    /// not tracked yet, its tracking row. A message whose tracking row has moved on, or that turns out to be
    /// tracked already, is skipped, never counted twice. Messages not tracked yet reach a store only when its
    /// runs take the cycle alone ([`Sharing::Lease`]): a round takes every submission in before it polls, and a
    /// store of rounds refuses them.
    fn record(
        &mut self,
        cycle_id: i64,
        polled_at: DateTime<Utc>,
        records: &[PollRecord],
    ) -> Result<Written>;
    /// Records how a cycle ended, adds its counts to the running totals, and remembers a success.
    fn finish_cycle(&mut self, s: &Summary) -> Result<()>;

    /// What the metrics need beyond the cycle's own summary.
    fn metrics_data(&mut self, now: DateTime<Utc>) -> Result<MetricsData>;
    /// The most recent cycle that has finished (whatever its outcome).
    fn last_finished_cycle(&mut self) -> Result<Option<Summary>>;
    /// Counts for `doctor`: submissions, messages being tracked, cycles recorded.
    fn counts(&mut self) -> Result<(u64, u64, u64)>;
    /// Deletes (or with `dry_run`, counts) audit rows polled before `cutoff` of messages no longer tracked, and
    /// finished cycle records started before it, `chunk` rows per transaction. Returns (audit rows, cycles).
    fn prune(&mut self, cutoff: DateTime<Utc>, dry_run: bool, chunk: usize) -> Result<(u64, u64)>;
    /// The last `n` cycles, newest first.
    fn cycles(&mut self, n: u64) -> Result<Vec<Summary>>;
    /// Ends the tracking of an open message by hand, with a closing entry that carries `reason`.
    fn close(&mut self, tracking_id: &str, reason: &str, now: DateTime<Utc>) -> Result<Closed>;
    /// A message's tracking state and audit trail; `None` when neither table knows the id.
    fn history(&mut self, tracking_id: &str) -> Result<Option<History>>;
}

/// How the runs of one cycle keep out of each other's way on a store.
pub enum Sharing<'a> {
    /// One run at a time, under a lease (SQLite: one host).
    Lease(&'a mut dyn CycleLease),
    /// Runs share a cycle through rounds of claimed units (PostgreSQL: replicas).
    Rounds(&'a mut dyn Rounds),
}

/// The cycle lease of a store that runs one cycle at a time.
pub trait CycleLease {
    /// Takes the cycle lease, unless a live run holds it.
    fn acquire_lease(&mut self, now: DateTime<Utc>, ttl: Duration) -> Result<Lease>;
    /// Gives the lease up (only if this run still holds it).
    fn release_lease(&mut self) -> Result<()>;
}

/// Rounds: how several runs share one cycle. The run that starts a round takes the new submissions in and
/// publishes the due work as units (a batch, or a few messages without one); every run of the round claims
/// units a few at a time and marks each done in the transaction that stores its results.
pub trait Rounds: Backend {
    /// Joins the round for a cycle at `now`, or starts one (this run then coordinates it). `ttl`: how long the
    /// round may run. Also remembers the round on this connection, for the cycle record.
    fn join_round(&mut self, me: &str, now: DateTime<Utc>, ttl: Duration) -> Result<Join>;
    /// Where a round is.
    fn round_phase(&mut self, round: i64) -> Result<Phase>;
    /// Takes over the intake of a round whose coordinator died before publishing its units; false while it lives.
    fn take_over_round(&mut self, round: i64, me: &str) -> Result<bool>;
    /// Splits the messages due at `cutoff` into the round's units (a batch, or a run of messages without one cut
    /// as `lone` says) and opens the round for polling. Returns the number of units.
    fn publish_units(&mut self, round: i64, cutoff: DateTime<Utc>, lone: LoneJobs) -> Result<u64>;
    /// Claims up to `limit` units nobody holds (or whose holder's lease ran out) for `lease`.
    fn claim_units(
        &mut self,
        round: i64,
        me: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Unit>>;
    /// Extends the lease of the units `me` holds and has not finished; returns how many.
    fn renew_units(&mut self, round: i64, me: &str, lease: Duration) -> Result<u64>;
    /// Hands back the units `me` claimed and did not finish (a run that stops early); returns how many.
    fn release_units(&mut self, round: i64, me: &str) -> Result<u64>;
    /// The messages of a unit without a batch still due at `cutoff`.
    fn unit_messages(&mut self, unit: &Unit, cutoff: DateTime<Utc>) -> Result<Vec<DueMessage>>;
    /// [`Backend::record`] for messages tracked already (a round takes every submission in first), and in the
    /// same transaction marks the round's `units` done.
    fn record_units(
        &mut self,
        cycle_id: i64,
        polled_at: DateTime<Utc>,
        records: &[PollRecord],
        units: &[i64],
    ) -> Result<Written>;
    /// Marks the round done, once every unit is.
    fn end_round(&mut self, round: i64) -> Result<()>;
}

/// The dispatcher's table, unless `--submissions-table` names another.
pub const DEFAULT_SUBMISSIONS: &str = "sms_submissions";

/// How a run takes part in a cycle shared by several runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Join {
    /// A new round: this run takes the submissions in and publishes the work.
    Coordinate {
        round: i64,
        cycle_now: DateTime<Utc>,
    },
    /// A round under way for this cycle: this run helps with its work, on its clock.
    Help {
        round: i64,
        cycle_now: DateTime<Utc>,
    },
    /// The round for this cycle is over: nothing is left to do.
    Finished {
        round: i64,
        cycle_now: DateTime<Utc>,
    },
    /// A round for another clock is under way.
    Busy {
        round: i64,
        cycle_now: String,
        coordinator: String,
    },
}

/// Where a round is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Intake,
    Polling,
    Done,
}

/// Where a read of due messages stopped: the last message's submitted_at as the backend stores it, and its
/// tracking id. Opaque outside the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueAfter {
    at: String,
    id: String,
}

/// One unit of a round's work: a batch, or a run of messages without a batch in submission order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub id: i64,
    pub batch_id: Option<String>,
    /// For messages without a batch: the first and last message's (submitted_at, tracking id).
    pub first: Option<(DateTime<Utc>, String)>,
    pub last: Option<(DateTime<Utc>, String)>,
    pub messages: u64,
}

/// The schema version this build writes, on both backends.
pub const VERSION: usize = 4;

/// Fails for a schema newer than this build knows (`migrate` cannot take it back).
fn refuse_newer(version: usize) -> Result<()> {
    if version > VERSION {
        bail!(
            "database schema version {version} is newer than this dlr-poller knows ({VERSION}); upgrade dlr-poller"
        );
    }
    Ok(())
}

/// Fails unless the schema is at the version this build writes.
fn check_version(version: usize) -> Result<()> {
    if version < VERSION {
        bail!(
            "database schema is at version {version}, this dlr-poller needs {VERSION}: run `dlr-poller migrate`"
        );
    }
    refuse_newer(version)
}

/// The counter columns of `poll_cycles`, in [`COUNTERS`] order.
fn counter_columns() -> String {
    COUNTERS
        .iter()
        .map(|c| c.column)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tracking row an intake starts: its state, first due time and note.
fn starting_row(intake: &Intake) -> (&'static str, Option<DateTime<Utc>>, Option<&str>) {
    match &intake.kind {
        IntakeKind::Future | IntakeKind::Due => (
            TrackState::Open.as_str(),
            intake.submitted_at.map(schedule::first_due),
            None,
        ),
        IntakeKind::Invalid(note) => (TrackState::Invalid.as_str(), None, Some(note)),
        IntakeKind::TooOld(note) => (TrackState::TooOld.as_str(), None, Some(note)),
    }
}

/// What [`Backend::take_in`] returns: of the tracking rows written, by state, how many are open and how many too
/// old.
fn taken_in<'s>(states: impl IntoIterator<Item = &'s str>) -> (usize, usize) {
    states.into_iter().fold((0, 0), |(open, too_old), state| {
        match TrackState::parse(state) {
            Some(TrackState::Open) => (open + 1, too_old),
            Some(TrackState::TooOld) => (open, too_old + 1),
            _ => (open, too_old),
        }
    })
}
/// How far back sms_submissions has been read completely (a submitted_at value).
const HORIZON_KEY: &str = "submissions_horizon";
/// When a cycle last succeeded.
const LAST_SUCCESS_KEY: &str = "last_success_at";
/// The prefix of the poller_state keys of batches whose bulk question failed recently (the batch id follows).
const FAILING_BULK: &str = "failing_bulk:";

/// The batches of poller_state rows `(key, value)` of [`FAILING_BULK`] still failing at `now`.
fn failing_of(rows: Vec<(String, String)>, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    rows.into_iter()
        .filter_map(|(key, until)| {
            let batch = key.strip_prefix(FAILING_BULK)?.to_string();
            let until = timefmt::parse(&until).ok().filter(|u| *u > now)?;
            Some((batch, until))
        })
        .collect()
}
/// Every table the poller reads or writes, besides the dispatcher's.
const TABLES: [&str; 6] = [
    "sms_delivery_confirmations",
    "message_tracking",
    "poll_cycles",
    "poller_lease",
    "poller_state",
    "poller_totals",
];

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

/// Which rows of sms_submissions a read covers, by submitted_at (compared as stored). Every span is read in
/// (submitted_at, tracking_id) order, which neither a VACUUM nor a replaced row changes. Rows whose tracking_id is
/// NULL are in no span: they could not be tracked anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Span {
    /// Rows at or after this value.
    From(String),
    /// Rows in [from, to).
    Between(String, String),
    /// Rows before this value (numbers included: SQLite sorts them before text).
    Below(String),
    /// Rows whose submitted_at is NULL.
    Null,
}

impl Span {
    /// The cursor before a span's first row.
    pub fn start(&self) -> Cursor {
        let submitted_at = match self {
            Span::From(from) | Span::Between(from, _) => Key::Text(from.clone()),
            Span::Below(_) => Key::Min,
            Span::Null => Key::Null,
        };
        Cursor {
            submitted_at,
            tracking_id: Key::Text(String::new()),
        }
    }
}

/// A value of the dispatcher's table, as read: what a chunked read goes on after. The backends' own: SQLite keeps
/// a value of any type in any column, so a key may be a number or bytes there.
#[derive(Clone, Debug, PartialEq)]
enum Key {
    /// Before every value.
    Min,
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Where a chunked read of sms_submissions goes on: after this row. Only the backend that made it reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor {
    /// The row's submitted_at and tracking_id as stored.
    submitted_at: Key,
    tracking_id: Key,
}

/// Who a message was for, copied into its closing entry.
struct Addressee {
    customer_id: Option<String>,
    phone_number: Option<String>,
    batch_id: Option<String>,
}

/// The steps of closing a message by hand, each a statement in one transaction of a backend.
trait CloseSteps {
    /// The message's tracking state, poll count and addressee, locked until the transaction ends.
    fn tracked(&mut self, tracking_id: &str) -> Result<Option<(String, i64, Addressee)>>;
    /// The first row of sms_submissions with this tracking id: its addressee and submitted_at as stored.
    fn submission(&mut self, tracking_id: &str) -> Result<Option<(Addressee, Option<String>)>>;
    /// Ends an open tracking row: UNCONFIRMED, with `note`.
    fn end_tracking(&mut self, tracking_id: &str, note: &str, now: DateTime<Utc>) -> Result<()>;
    /// Writes the tracking row of a submission not taken in yet, closed, with `note`.
    fn take_in_closed(
        &mut self,
        tracking_id: &str,
        to: &Addressee,
        submitted_at: Option<DateTime<Utc>>,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Appends the closing entry to the audit trail: poll attempt `attempt`, written by no cycle (0).
    fn closing_entry(
        &mut self,
        tracking_id: &str,
        to: &Addressee,
        note: &str,
        now: DateTime<Utc>,
        attempt: i64,
    ) -> Result<()>;
}

/// Ends the tracking of an open message by hand: UNCONFIRMED, with a closing entry in the audit trail that
/// carries `reason`. A submission not taken in yet is taken in closed; a message whose tracking has ended is
/// left as it is. Nothing is written unless this returns [`Closed::Now`]; the caller commits.
fn close_by_hand(
    steps: &mut dyn CloseSteps,
    tracking_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Closed> {
    let note = format!("closed by hand: {reason}");
    let (polls, to) = match steps.tracked(tracking_id)? {
        Some((state, _, _)) if state != TrackState::Open.as_str() => {
            return Ok(Closed::Ended(state));
        }
        Some((_, polls, to)) => {
            steps.end_tracking(tracking_id, &note, now)?;
            (polls, to)
        }
        None => {
            let Some((to, submitted_at)) = steps.submission(tracking_id)? else {
                return Ok(Closed::Unknown);
            };
            let submitted_at = submitted_at.and_then(|t| timefmt::parse_submitted(&t).ok());
            steps.take_in_closed(tracking_id, &to, submitted_at, &note, now)?;
            (0, to)
        }
    };
    steps.closing_entry(tracking_id, &to, &note, now, polls + 1)?;
    Ok(Closed::Now)
}

/// What [`Backend::close`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Now,
    /// Tracking had ended already, in this state: nothing changed.
    Ended(String),
    /// Neither sms_submissions nor the tracking table knows the id.
    Unknown,
}

/// What [`Backend::record`] wrote.
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
pub(crate) fn totals_of(s: &Summary) -> Vec<(String, u64)> {
    let categories = Category::ALL.iter().map(|c| {
        (
            format!("messages_failed:{c}"),
            s.failed_by_category.get(c.as_str()).copied().unwrap_or(0),
        )
    });
    let mut totals = vec![
        ("messages_polled:delivered".into(), s.delivered),
        ("messages_polled:failed".into(), s.failed),
        ("messages_polled:pending".into(), s.pending),
        ("messages_closed_unconfirmed:".into(), s.closed_unconfirmed),
        ("messages_not_found:".into(), s.not_found),
        ("unknown_statuses:".into(), s.unknown_statuses),
        ("malformed_reports:".into(), s.malformed_reports),
        ("batches_failed:".into(), s.batches_failed),
        ("lookups_failed:".into(), s.lookups_failed),
        ("lookups_rejected:".into(), s.lookups_rejected),
        ("messages_closed_unanswered:".into(), s.closed_unanswered),
        ("submissions_too_old:".into(), s.too_old),
        ("http_requests:".into(), s.http_requests),
        ("http_retries:".into(), s.retries),
        (format!("cycles:{}", s.outcome), 1),
    ];
    totals.extend(categories);
    totals
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
    /// INVALID_NUMBER, NETWORK_ERROR, CARRIER_ERROR, UNDELIVERABLE or UNKNOWN, for a FAILED result.
    pub failure_category: Option<String>,
    pub delivery_confirmed_at: Option<String>,
    pub cycle_id: i64,
    pub created_at: String,
    /// `poll`, or `close` for a closing entry.
    pub entry: String,
}

/// The error for a table the schema needs and the database lacks; `schema` names the file to recreate it from.
fn missing_table(table: &str, version: usize, schema: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "table {table} is missing from the database (schema version {version}); restore it, or recreate it from \
         {schema}"
    )
}

/// Warns that cycles of earlier runs were found unfinished (and are now marked abandoned).
fn warn_abandoned(cycles: u64) {
    if cycles > 0 {
        log::warn!(
            "{cycles} earlier cycle(s) never finished (killed or crashed); marked abandoned"
        );
    }
}

/// Warns about a result not stored because its message's tracking row moved on since it was read.
fn warn_moved_on(tracking_id: &str) {
    log::warn!(
        "message {tracking_id:?} was updated by another run since it was read; its result is not recorded twice"
    );
}

/// Warns about a submission whose tracking id is tracked already, from another row of sms_submissions.
pub fn warn_repeated(tracking_id: &str) {
    log::warn!("submission {tracking_id:?} appears twice in sms_submissions; tracked once");
}
