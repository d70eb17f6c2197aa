//! One poll cycle: find what is due (new submissions first, then tracked messages), ask the carrier on a bounded
//! pool of worker threads, and write every result through one writer, many batches per transaction.
//!
//! ```text
//!  dispatcher (reads due set, batch by batch) --jobs--> N workers (blocking HTTP) --results--> writer (this thread)
//!      \---------------------------- submissions to take in without a poll -------------------^
//! ```
//! Both channels are bounded, so a slow database slows the workers down instead of growing memory. Failures of
//! one batch are counted, not fatal; the exit code is derived from the counts at the end.
//!
//! Where each part lives: [`dispatch`] hands out the work of a run alone (SQLite's lease), [`rounds`] that of
//! a run sharing the cycle with others (PostgreSQL's rounds), [`ask`] is a worker's questions to the carrier,
//! [`write`] the writer, [`watchdog`] the guard against a database that stops answering. This file holds the
//! cycle's course: take part, start the threads, drain, record the outcome.
//!
//! One result goes through these stages: the carrier's [`Report`](crate::carrier::Report) about a message,
//! the [`Answer`] a worker found for it, the [`PollRecord`](crate::domain::PollRecord) the writer maps it to,
//! and what the store [`Written`](crate::store::Written) says of it.

mod ask;
mod dispatch;
mod rounds;
mod watchdog;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, TimeDelta, Utc};

use self::ask::Fallback;
use self::dispatch::Dispatch;
use self::rounds::Claim;
use self::write::{Drained, Writer};
use crate::carrier::http::Stats;
use crate::carrier::{Carrier, FetchError, Report};
use crate::config::PollConfig;
use crate::control::{Control, Stop};
use crate::domain::{DueMessage, Intake};
use crate::exit::{Exit, ExitContext};
use crate::intake::{ReadEnd, Window};
use crate::phases::Phases;
use crate::redact::error_text;
use crate::store::{self, Backend, Lease, Sharing, Target};
use crate::summary::Summary;
use crate::{schedule, timefmt};

/// Results that may wait for the writer, at least (each is one job: a batch, or a chunk of lookups).
const RESULTS_WAITING: usize = 64;
/// Once the cycle must stop (signal, deadline, abort), how long requests in flight may still finish before the
/// cycle stops waiting for them and saves what it has. Well inside Kubernetes' default 30 s grace period.
const GRACE: Duration = Duration::from_secs(5);
/// How long a batch whose bulk question failed after its retries is asked the per-message way at once: three
/// slots, then its bulk question is tried again.
const FAILING_FOR: TimeDelta = TimeDelta::hours(6);
/// The lease outlives the deadline and the grace by this much, in case the clock or the disk is slow.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// What every part of one cycle shares.
struct Cycle<'a> {
    db: &'a Target,
    config: &'a PollConfig,
    busy_timeout: Duration,
    control: Arc<Control>,
    /// When this run started.
    started: DateTime<Utc>,
}

impl Cycle<'_> {
    /// How long this run may hold the lease or its place in a round.
    fn ttl(&self) -> Duration {
        self.config.deadline + GRACE + LEASE_MARGIN
    }
}

/// How this run takes part in its cycle.
#[derive(Clone, Debug)]
enum Role {
    /// The only run of the cycle: it holds the lease.
    Alone,
    /// The run of a shared round that takes the submissions in and publishes the units, then claims some.
    Coordinate(Claim),
    /// A run that claims units of a round under way.
    Help(Claim),
}

impl Role {
    /// The round this run claims units of, if it shares the cycle.
    fn claim(&self) -> Option<&Claim> {
        match self {
            Role::Coordinate(c) | Role::Help(c) => Some(c),
            Role::Alone => None,
        }
    }
}

/// A unit of work for one worker: one batch, or a chunk of messages without a batch.
struct Job {
    batch_id: Option<String>,
    messages: Vec<DueMessage>,
    /// The unit of a shared round this job is.
    unit: Option<i64>,
}

impl Job {
    /// How the job is named in logs and errors.
    fn label(&self) -> String {
        match &self.batch_id {
            Some(b) => format!("batch {b:?}"),
            None => "messages without a batch".to_string(),
        }
    }
}

/// What became of a message in this cycle.
enum Answer {
    Reported(Report),
    NotFound,
    /// The carrier refused the question about it (a 400, 410, 422..., or an answer about another id): its
    /// outcome for this cycle. `code` is the HTTP status, when there is one.
    Refused {
        code: Option<String>,
        reason: String,
    },
    /// Not answered, and its +72h slot has passed: tracking ends without an answer, for this reason.
    Closed(String),
}

/// A worker's answers for one job. `answers[i]` belongs to `messages[i]`; `None` means not polled (it stays due).
struct Asked {
    job: Job,
    answers: Vec<Option<Answer>>,
    /// The batch listing's failure, when it failed (nothing of the batch was polled).
    batch_error: Option<FetchError>,
    /// Messages the listing reported more than once.
    duplicates: u64,
    /// Listing entries that could not be read, described.
    malformed: Vec<String>,
    /// Failed one-by-one lookups and the first reason.
    lookup_failures: u64,
    lookup_error: Option<FetchError>,
    /// Why each message was not answered, where it was asked about and the asking failed.
    errors: Vec<Option<String>>,
    /// Tracking ids of new messages that were in the job twice (a tracking id repeated in sms_submissions):
    /// dropped from the job, asked for once.
    repeated: Vec<String>,
    /// The cycle stopped (signal, deadline) before every message of the job was asked about.
    cut_short: bool,
    /// Its bulk question failed and its messages were asked the per-message way.
    fell_back: bool,
    /// Messages asked the per-message way because the bulk question failed or its answer lacked them.
    asked_alone: u64,
    /// Its batch's bulk question was asked in this cycle and failed after its retries.
    bulk_failed: bool,
}

/// What reaches the writer.
enum ToWriter {
    /// A worker's answers for one job (boxed: a job's answers are far larger than a list of intakes).
    Answers(Box<Asked>),
    /// New submissions to start tracking without a poll (from the dispatcher).
    TakeIn(Vec<Intake>),
    /// Store everything received so far, then answer whether that worked.
    Flush(SyncSender<bool>),
}

/// What the dispatcher counts while the writer goes on.
#[derive(Default)]
struct DueCounts {
    /// New messages found due and handed out.
    new: AtomicU64,
    /// Tracked messages due.
    tracked: AtomicU64,
}

/// Runs one cycle against the database at `db`. `signal` is set by the signal handlers. Whole-cycle failures
/// (database unusable, another cycle running) are errors; everything else ends in a summary and an exit code.
pub fn run(
    db: &Target,
    config: &PollConfig,
    busy_timeout: Duration,
    signal: Arc<AtomicUsize>,
) -> Result<(Summary, Exit)> {
    let cx = Cycle {
        db,
        config,
        busy_timeout,
        control: Arc::new(Control::new(config.deadline, signal)),
        started: Utc::now(),
    };
    let watchdog = watchdog::start(db, config.deadline)?;
    let outcome = cycle(&cx);
    watchdog.stand_down();
    outcome
}

/// The cycle, under the watchdog: this run takes part in it by the store's way of sharing cycles.
fn cycle(cx: &Cycle) -> Result<(Summary, Exit)> {
    let mut store = store::open(cx.db, false, cx.busy_timeout)?;
    store.check_schema()?;
    match store.sharing() {
        Sharing::Rounds(rounds) => {
            let (role, now) = rounds::join(cx, rounds)?;
            take_part(cx, &mut *store, now, role)
        }
        Sharing::Lease(lease) => {
            take_lease(cx, lease)?;
            let now = cx.config.now.unwrap_or(cx.started);
            let outcome = take_part(cx, &mut *store, now, Some(Role::Alone));
            if let Sharing::Lease(lease) = store.sharing()
                && let Err(e) = lease.release_lease()
            {
                log::warn!("{e:#}; the next run takes it over when it expires");
            }
            outcome
        }
    }
}

/// Takes the cycle lease, or fails (exit 73) naming the live run that holds it.
fn take_lease(cx: &Cycle, lease: &mut dyn store::CycleLease) -> Result<()> {
    match lease.acquire_lease(cx.started, cx.ttl())? {
        Lease::Held(h) => Err(anyhow!(
            "another cycle is running on this database: host {} pid {} since {} (its lease expires {}); this \
             run did nothing",
            h.host,
            h.pid,
            h.acquired_at,
            h.expires_at
        ))
        .exit_code(Exit::Locked),
        Lease::Acquired { took_over: Some(h) } => {
            log::warn!(
                "took over the cycle lease of host {} pid {} (taken {}, expiring {}): that run ended without \
                 releasing it",
                h.host,
                h.pid,
                h.acquired_at,
                h.expires_at
            );
            Ok(())
        }
        Lease::Acquired { took_over: None } => Ok(()),
    }
}

/// The cycle proper, while this run holds the lease or its place in a round: records the cycle's start, polls,
/// and records how it ended. `role` is `None` when the round for this clock is over: nothing is left to do.
fn take_part(
    cx: &Cycle,
    store: &mut dyn Backend,
    now: DateTime<Utc>,
    role: Option<Role>,
) -> Result<(Summary, Exit)> {
    let clock = Instant::now();
    let cycle_id = store.begin_cycle(cx.started, now)?;
    crate::logging::set_cycle(cycle_id);
    let mut summary = Summary {
        cycle_id,
        started_at: timefmt::format_millis(cx.started),
        cycle_now: timefmt::format(now),
        ..Summary::default()
    };
    log::info!(
        "cycle {cycle_id} started at {} (clock {}), deadline {}",
        summary.started_at,
        summary.cycle_now,
        timefmt::humanize(cx.config.deadline)
    );

    let result = match role {
        None => Ok(true),
        Some(role) => poll(cx, store, now, &mut summary, &role),
    };
    // The code recorded is the code the process exits with: an error that carries none is a database error.
    let (result, exit) = match result {
        Ok(complete) => (
            Ok(()),
            exit_from_counts(&summary, cx.control.stopped(), complete),
        ),
        Err(e) => {
            // A database's error may quote the row it failed on (PostgreSQL's "Failing row contains ..."):
            // numbers masked.
            summary.error = Some(error_text(&e));
            let exit = crate::exit::tagged(&e).unwrap_or(Exit::Database);
            (Err(e).exit_code(exit), exit)
        }
    };
    if let Exit::Interrupted(signal) = exit {
        log::warn!(
            "stopped by signal {signal}: {} of {} due messages polled and saved; the rest stay due",
            summary.polled,
            summary.messages_due
        );
    }
    summary.exit_code = Some(exit.code());
    summary.outcome = exit.outcome().to_string();
    summary.finished_at = Some(timefmt::format_millis(Utc::now()));
    summary.duration_seconds = clock.elapsed().as_secs_f64();
    summary.phases = Phases::now();
    log::debug!(
        "time by phase in {:.1}s (the phases overlap): {}",
        summary.duration_seconds,
        summary.phases.line()
    );
    let recorded = store.finish_cycle(&summary);
    result?;
    recorded?;
    Ok((summary, exit))
}

/// Polls what is due: the dispatcher and the workers on threads of their own, the writer on this one. Returns
/// whether every new submission was read (false when the cycle stopped first: more may be due than the summary
/// counts).
fn poll(
    cx: &Cycle,
    store: &mut dyn Backend,
    now: DateTime<Utc>,
    summary: &mut Summary,
    role: &Role,
) -> Result<bool> {
    let mut window = Window::new(now, cx.config.catch_up, store.read_horizon()?);
    let reads = !matches!(role, Role::Help(_));
    if reads {
        log::info!(
            "reading new submissions since {}{}",
            window.floor,
            match &window.horizon {
                None => " and, this once, every older row".to_string(),
                Some(h) if *h < window.floor => format!(" and the older rows since {h}"),
                Some(_) => String::new(),
            }
        );
    }

    let failing = store.failing_bulks(now)?;
    if !failing.is_empty() {
        log::info!(
            "{} batches whose bulk question failed in a recent cycle are asked for one message at a time",
            failing.len()
        );
    }
    let Started {
        dispatcher,
        results,
        counts,
        stats,
        carrier,
        fallback,
    } = start(cx, &mut window, now, role, failing)?;
    let table = cx.config.carrier.table.clone();
    let mut writer = Writer::new(store, table, now, summary, role.claim().cloned());
    let drained = writer.drain(&results, &cx.control);
    if let Some(claim) = role.claim() {
        rounds::hand_back(writer.store(), claim);
    }
    writer.log_refusals();
    if carrier.http.slowed() {
        log::info!("pace at the end of the cycle: {}", carrier.http.pace());
    }
    let repeated = writer.repeated();
    // New messages read and due but not polled are not tracked yet: they count as left due.
    let new_left = writer.new_left(counts.new.load(Ordering::Relaxed).saturating_sub(repeated));
    let failed_bulks = writer.failed_bulks();
    summary.fallback_stopped = u64::from(fallback.stopped());
    summary.http_requests = stats.requests.load(Ordering::Relaxed);
    summary.retries = stats.retries.load(Ordering::Relaxed);
    let due = || {
        (counts.tracked.load(Ordering::Relaxed) + counts.new.load(Ordering::Relaxed))
            .saturating_sub(repeated)
    };
    summary.messages_due = due();
    let drained = drained?;
    // Also forgets the batches whose time is up.
    store.note_failing_bulks(&failed_bulks, now + FAILING_FOR, now)?;
    note_lag(store, now, summary, new_left, role.claim().map(|c| c.round))?;
    if let Drained::Abandoned = drained {
        log::warn!(
            "requests still in flight after {}s were abandoned; their messages stay due",
            GRACE.as_secs()
        );
        return Ok(false);
    }
    let (end, tracked_done) = dispatcher
        .join()
        .map_err(|_| anyhow!("the dispatcher thread panicked"))??;
    summary.messages_due = due();
    summary.invalid_submissions = end.invalid;
    if reads {
        log_read(&end, counts.new.load(Ordering::Relaxed), summary.too_old);
    }
    if end.complete && reads {
        store.save_horizon(&window.floor)?;
    }
    Ok(end.complete && tracked_done)
}

/// Notes in the summary how far behind its grid the cycle leaves the poller: the messages due at its cutoff and
/// not polled (the tracked ones still open, and the new ones read but not polled: how many, and the first slot
/// of the oldest a worker left without an answer), and how long the oldest of them has been due by the cycle's
/// clock. In a shared `round`, the work other live runs hold is theirs to finish, not left. The log says so when
/// anything is left.
fn note_lag(
    store: &mut dyn Backend,
    now: DateTime<Utc>,
    summary: &mut Summary,
    (new_left, new_since): (u64, Option<DateTime<Utc>>),
    round: Option<i64>,
) -> Result<()> {
    let (tracked, oldest) = store.overdue(schedule::cutoff(now), round)?;
    summary.overdue = tracked + new_left;
    let oldest = match (oldest, new_since.filter(|_| new_left > 0)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    summary.lag_seconds = oldest.map_or(0, |at| (now - at).num_seconds().max(0) as u64);
    if summary.overdue > 0 {
        log::warn!(
            "{} messages due are left for the next cycle; the oldest was due {} ago",
            summary.overdue,
            timefmt::humanize_rounded(Duration::from_secs(summary.lag_seconds))
        );
    }
    Ok(())
}

/// The threads of a cycle, started, and what they count.
struct Started {
    dispatcher: JoinHandle<Result<(ReadEnd, bool)>>,
    /// What the workers and the dispatcher send the writer.
    results: Receiver<ToWriter>,
    counts: Arc<DueCounts>,
    stats: Arc<Stats>,
    carrier: Arc<Carrier>,
    /// The watch on falling back from failed bulk questions.
    fallback: Arc<Fallback>,
}

/// Starts the dispatcher (on a connection of its own) and the workers. Threads are detached, not scoped: after a
/// signal the cycle must be able to stop waiting for a request that hangs, save what it has and exit.
fn start(
    cx: &Cycle,
    window: &mut Window,
    now: DateTime<Utc>,
    role: &Role,
    failing: Vec<(String, DateTime<Utc>)>,
) -> Result<Started> {
    let reader = store::open(cx.db, false, cx.busy_timeout)?;
    let stats = Arc::new(Stats::default());
    let carrier = cx
        .config
        .carrier
        .connect(&cx.config.http(), cx.control.clone(), stats.clone());
    window.lone = carrier.profile.lone_jobs();
    let source = match (cx.config.max_rps, cx.config.carrier.provider.pace) {
        (Some(_), _) => "--max-rps",
        (None, Some(_)) => "the provider's published limit",
        (None, None) => "the provider publishes none",
    };
    log::info!(
        "pace: {} ({source}), at most {} requests in flight; slower while the carrier throttles",
        carrier.http.pace(),
        cx.config.concurrency
    );
    let concurrency = cx.config.concurrency;
    let (job_tx, job_rx) = sync_channel::<Job>(concurrency);
    // Room for a few dozen results, so that the workers go on asking while the writer commits a transaction.
    let (out_tx, results) = sync_channel::<ToWriter>((concurrency * 2).max(RESULTS_WAITING));
    let counts = Arc::new(DueCounts::default());
    let to = Dispatch {
        control: cx.control.clone(),
        jobs: job_tx,
        out: out_tx.clone(),
        ahead: std::cell::Cell::new(0),
        window: window.clone(),
        now,
        counts: counts.clone(),
        concurrency,
    };
    let (role, mut reader) = (role.clone(), reader);
    let dispatcher = std::thread::Builder::new()
        .name("dispatch".into())
        .spawn(move || match &role {
            Role::Coordinate(claim) => rounds::dispatch(&mut *reader, &to, claim, true),
            Role::Help(claim) => rounds::dispatch(&mut *reader, &to, claim, false),
            Role::Alone => dispatch::alone(&mut *reader, &to),
        })
        .context("starting the dispatcher thread")?;
    let carrier = Arc::new(carrier);
    let fallback = Arc::new(Fallback::new(failing));
    ask::start_workers(
        carrier.clone(),
        fallback.clone(),
        now,
        concurrency,
        job_rx,
        out_tx,
    )?;
    Ok(Started {
        dispatcher,
        results,
        counts,
        stats,
        carrier,
        fallback,
    })
}

/// Logs what the read of sms_submissions found.
fn log_read(end: &ReadEnd, new_due: u64, too_old: u64) {
    log::info!(
        "read {} rows of sms_submissions: {new_due} new due now, {} due at a later cycle, {too_old} too old to \
         track, {} invalid",
        end.rows,
        end.not_yet,
        end.invalid
    );
    if end.deferred > 0 {
        log::info!(
            "{} new messages of interleaved batches were taken in and polled with the tracked ones, one listing \
             per batch",
            end.deferred
        );
    }
    if let Some(first) = &end.first_untrackable {
        log::warn!(
            "{} rows of sms_submissions have no tracking_id (the first: {first}); they are left out, and \
             read again each cycle in case the dispatcher sets one",
            end.untrackable
        );
    }
}

/// The exit code from the counts: everything polled is success; nothing polled because the carrier kept failing
/// is "unavailable"; anything in between is partial.
/// `complete`: every new submission was read, so that `messages_due` is the whole count.
fn exit_from_counts(s: &Summary, stop: Option<Stop>, complete: bool) -> Exit {
    match stop {
        Some(Stop::Signal(signal)) => return Exit::Interrupted(signal),
        Some(Stop::CredentialsRejected) => return Exit::CredentialsRejected,
        _ => {}
    }
    if complete && s.settled() >= s.messages_due {
        return Exit::Ok;
    }
    if s.settled() == 0 && s.batches_failed + s.lookups_failed > 0 {
        return Exit::CarrierUnavailable;
    }
    Exit::Partial
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_from_counts() {
        let s = |due, polled, batches_failed| Summary {
            messages_due: due,
            polled,
            batches_failed,
            ..Summary::default()
        };
        assert_eq!(exit_from_counts(&s(0, 0, 0), None, true), Exit::Ok);
        assert_eq!(exit_from_counts(&s(10, 10, 0), None, true), Exit::Ok);
        assert_eq!(exit_from_counts(&s(10, 4, 1), None, true), Exit::Partial);
        assert_eq!(
            exit_from_counts(&s(10, 0, 2), None, true),
            Exit::CarrierUnavailable
        );
        assert_eq!(
            exit_from_counts(&s(10, 3, 0), Some(Stop::Deadline), true),
            Exit::Partial
        );
        assert_eq!(
            exit_from_counts(&s(10, 0, 0), Some(Stop::Deadline), true),
            Exit::Partial
        );
        assert_eq!(
            exit_from_counts(&s(10, 9, 0), Some(Stop::CredentialsRejected), true),
            Exit::CredentialsRejected
        );
    }
}
