//! One poll cycle: find what is due (new submissions first, then tracked messages), ask the carrier on a bounded
//! pool of worker threads, and write every result through one writer, many batches per transaction.
//!
//! ```text
//!  dispatcher (reads due set, batch by batch) --jobs--> N workers (blocking HTTP) --results--> writer (this thread)
//!      \---------------------------- submissions to take in without a poll -------------------^
//! ```
//! Both channels are bounded, so a slow database slows the workers down instead of growing memory. Failures of
//! one batch are counted, not fatal; the exit code is derived from the counts at the end.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, Utc};

use crate::carrier::http::{Http, Stats};
use crate::carrier::table::{Category, Outcome, Table};
use crate::carrier::{Bulk, Carrier, FetchError, Report};
use crate::config::PollConfig;
use crate::control::{Control, Stop};
use crate::exit::{Exit, ExitContext};
use crate::intake::{self, Gatherer, ReadEnd, Window};
use crate::redact::error_text;
use crate::schedule::{self, Next};
use crate::status::DeliveryStatus;
use crate::store::{
    self, Backend, DueMessage, Entry, Intake, Join, Lease, Phase, PollRecord, Target, TrackState,
    Unit, warn_repeated,
};
use crate::summary::Summary;
use crate::timefmt;

/// Results that may wait for the writer, at least (each is one job: a batch, or a chunk of lookups).
const RESULTS_WAITING: usize = 64;
/// Once the cycle must stop (signal, deadline, abort), how long requests in flight may still finish before the
/// cycle stops waiting for them and saves what it has. Well inside Kubernetes' default 30 s grace period.
const GRACE: Duration = Duration::from_secs(5);
/// Submissions to take in that may wait for the writer, at most.
const TAKE_IN_AHEAD: usize = 50_000;
/// Tracked messages of one group read per query.
const DUE_CHUNK: usize = 10_000;
/// The lease outlives the deadline and the grace by this much, in case the clock or the disk is slow.
const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// How long a run's claim on a unit of a shared round lasts without renewal: a run that vanishes without its
/// sessions closing (a host lost) gives its units up after this; one whose sessions close, at once.
const UNIT_LEASE: Duration = Duration::from_secs(30);
/// How often the writer renews this run's claims.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long past the deadline and the grace a cycle may still run before the watchdog ends the process: the
/// deadline itself, within these bounds.
const WATCHDOG_MIN: Duration = Duration::from_secs(10);
const WATCHDOG_MAX: Duration = Duration::from_secs(60);
/// How often a run waiting for the round's intake looks again.
const INTAKE_WAIT: Duration = Duration::from_millis(200);

/// How this run takes part in its cycle.
#[derive(Clone, Debug)]
enum Mode {
    /// The only run of the cycle (SQLite: it holds the lease).
    Alone,
    /// The run of a shared round that takes the submissions in and publishes the units, then claims some.
    Coordinate { round: i64, me: String },
    /// A run that claims units of a round under way.
    Help { round: i64, me: String },
    /// The round for this cycle is over.
    Finished,
}

impl Mode {
    fn shared(&self) -> Option<(i64, &str)> {
        match self {
            Mode::Coordinate { round, me } | Mode::Help { round, me } => Some((*round, me)),
            _ => None,
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

/// What reaches the writer.
enum Output {
    /// A worker's answers for one job (boxed: a job's result is far larger than a list of intakes).
    Answers(Box<Done>),
    /// New submissions to start tracking without a poll (from the dispatcher).
    TakeIn(Vec<Intake>),
    /// Store everything received so far, then answer whether that worked.
    Flush(SyncSender<bool>),
}

/// A worker's result for one job. `answers[i]` belongs to `messages[i]`; `None` means not polled (it stays due).
struct Done {
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
}

/// Runs one cycle against the database at `db`. `signal` is set by the signal handlers. Whole-cycle failures
/// (database unusable, another cycle running) are errors; everything else ends in a summary and an exit code.
pub fn run(
    db: &Target,
    config: &PollConfig,
    busy_timeout: Duration,
    signal: Arc<AtomicUsize>,
) -> Result<(Summary, Exit)> {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    watchdog(db, config.deadline, done.clone())?;
    let outcome = cycle(db, config, busy_timeout, signal);
    done.store(true, Ordering::Relaxed);
    outcome
}

/// Ends the process when the cycle is still running well after its deadline and grace: the workers stop
/// themselves by then, so only a database that stopped answering (a server frozen, a network that swallows
/// packets while the connection stays up) can hold it. Every transaction is whole or absent, so what was
/// committed stays and the next run goes on.
fn watchdog(
    db: &Target,
    deadline: Duration,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let margin = deadline.clamp(WATCHDOG_MIN, WATCHDOG_MAX);
    let limit = deadline + GRACE + margin;
    let db = db.to_string();
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let until = Instant::now() + limit;
            while Instant::now() < until {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !done.load(Ordering::Relaxed) {
                log::error!(
                    "the cycle is still running {}s past its deadline and grace: the database {db} stopped \
                     answering; exiting without recording the cycle (what was committed stays; the next run goes on)",
                    margin.as_secs()
                );
                std::process::exit(Exit::Database.code().into());
            }
        })
        .context("starting the watchdog thread")?;
    Ok(())
}

/// The cycle, under the watchdog.
fn cycle(
    db: &Target,
    config: &PollConfig,
    busy_timeout: Duration,
    signal: Arc<AtomicUsize>,
) -> Result<(Summary, Exit)> {
    let control = Arc::new(Control::new(config.deadline, signal));
    let started = Utc::now();
    let mut store = store::open(db, false, busy_timeout)?;
    store.check_schema()?;
    if store.shares_cycles() {
        return shared(db, config, busy_timeout, &control, &mut *store, started);
    }
    match store.acquire_lease(started, config.deadline + GRACE + LEASE_MARGIN)? {
        Lease::Held(h) => {
            return Err(anyhow!(
                "another cycle is running on this database: host {} pid {} since {} (its lease expires {}); \
                 this run did nothing",
                h.host,
                h.pid,
                h.acquired_at,
                h.expires_at
            ))
            .exit_code(Exit::Locked);
        }
        Lease::Acquired { took_over: Some(h) } => log::warn!(
            "took over the cycle lease of host {} pid {} (taken {}, expiring {}): that run ended without \
             releasing it",
            h.host,
            h.pid,
            h.acquired_at,
            h.expires_at
        ),
        Lease::Acquired { took_over: None } => {}
    }
    let now = config.now.unwrap_or(started);
    let outcome = leased(
        db,
        config,
        busy_timeout,
        &control,
        &mut *store,
        started,
        now,
        Mode::Alone,
    );
    if let Err(e) = store.release_lease() {
        log::warn!("{e:#}; the next run takes it over when it expires");
    }
    outcome
}

/// A cycle on a store whose runs share it (PostgreSQL replicas): this run joins the round for its clock, or
/// starts one and coordinates it.
fn shared(
    db: &Target,
    config: &PollConfig,
    busy_timeout: Duration,
    control: &Arc<Control>,
    store: &mut dyn Backend,
    started: DateTime<Utc>,
) -> Result<(Summary, Exit)> {
    // Unique per run, short enough for a session name.
    let me = format!(
        "{:x}{:x}",
        std::process::id(),
        started.timestamp_nanos_opt().unwrap_or_default()
    );
    let clock = config.now.unwrap_or(started);
    let (mode, now) = match store.join_round(&me, clock, config.deadline + GRACE + LEASE_MARGIN)? {
        Join::Busy {
            round,
            cycle_now,
            coordinator,
        } => {
            return Err(anyhow!(
                "another cycle is running on this database: round {round} with clock {cycle_now}, started by \
                 run {coordinator}; runs join a round only for the same clock (within 5 minutes); this run did \
                 nothing"
            ))
            .exit_code(Exit::Locked);
        }
        Join::Coordinate { round, cycle_now } => {
            log::info!("round {round}: this run takes the submissions in and shares out the work");
            (Mode::Coordinate { round, me }, cycle_now)
        }
        Join::Help { round, cycle_now } => {
            log::info!(
                "round {round} for clock {} is under way: this run takes a share of its work",
                timefmt::format(cycle_now)
            );
            (Mode::Help { round, me }, cycle_now)
        }
        Join::Finished { round, cycle_now } => {
            log::info!(
                "round {round} for clock {} is over: nothing is left to do",
                timefmt::format(cycle_now)
            );
            (Mode::Finished, cycle_now)
        }
    };
    leased(db, config, busy_timeout, control, store, started, now, mode)
}

/// The cycle proper, while this run holds the lease or its place in a round.
#[allow(clippy::too_many_arguments)]
fn leased(
    db: &Target,
    config: &PollConfig,
    busy_timeout: Duration,
    control: &Arc<Control>,
    store: &mut dyn Backend,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
    mode: Mode,
) -> Result<(Summary, Exit)> {
    let clock = Instant::now();
    let cycle_id = store.begin_cycle(started, now)?;
    crate::logging::set_cycle(cycle_id);
    let mut summary = Summary {
        cycle_id,
        started_at: timefmt::format_millis(started),
        cycle_now: timefmt::format(now),
        ..Summary::default()
    };
    log::info!(
        "cycle {cycle_id} started at {} (clock {}), deadline {}",
        summary.started_at,
        summary.cycle_now,
        crate::config::humanize(config.deadline)
    );

    let result = match mode {
        Mode::Finished => Ok(true),
        mode => poll(
            db,
            config,
            busy_timeout,
            control,
            store,
            now,
            &mut summary,
            &mode,
        ),
    };
    // The code recorded is the code the process exits with: an error that carries none is a database error.
    let (result, exit) = match result {
        Ok(complete) => (Ok(()), exit_code(&summary, control.stopped(), complete)),
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
    let recorded = store.finish_cycle(&summary);
    result?;
    recorded?;
    Ok((summary, exit))
}

/// Polls what is due. Returns whether every new submission was read (false when the cycle stopped first:
/// more may be due than the summary counts).
#[allow(clippy::too_many_arguments)]
fn poll(
    db: &Target,
    config: &PollConfig,
    busy_timeout: Duration,
    control: &Arc<Control>,
    store: &mut dyn Backend,
    now: DateTime<Utc>,
    summary: &mut Summary,
    mode: &Mode,
) -> Result<bool> {
    let mut window = Window::new(now, config.catch_up, store.read_horizon()?);
    let reads = !matches!(mode, Mode::Help { .. });
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

    // Threads are detached, not scoped: after a signal the cycle must be able to stop waiting for a request
    // that hangs, save what it has and exit.
    let mut reader = store::open(db, false, busy_timeout)?;
    let stats = Arc::new(Stats::default());
    let (carrier, table) = connect(config, control.clone(), stats.clone())?;
    window.lone_chunk = carrier.profile.lone_chunk();
    let carrier = Arc::new(carrier);
    let (job_tx, job_rx) = sync_channel::<Job>(config.concurrency);
    // Room for a few dozen results, so that the workers go on asking while the writer commits a transaction.
    let (out_tx, out_rx) = sync_channel::<Output>((config.concurrency * 2).max(RESULTS_WAITING));
    let job_rx = Arc::new(Mutex::new(job_rx));
    let claimed = Arc::new(AtomicU64::new(0));
    let tracked_due = Arc::new(AtomicU64::new(0));
    let dispatcher = {
        let (control, out_tx) = (control.clone(), out_tx.clone());
        let (claimed, tracked_due) = (claimed.clone(), tracked_due.clone());
        let (window, mode) = (window.clone(), mode.clone());
        let concurrency = config.concurrency;
        std::thread::Builder::new()
            .name("dispatch".into())
            .spawn(move || {
                let to = Dispatch {
                    control: &control,
                    jobs: job_tx,
                    out: out_tx,
                    ahead: std::cell::Cell::new(0),
                };
                match mode {
                    Mode::Alone => {
                        dispatch(&mut *reader, &window, now, &to, &claimed, &tracked_due)
                    }
                    mode => dispatch_shared(
                        &mut *reader,
                        &window,
                        now,
                        &to,
                        &tracked_due,
                        &mode,
                        concurrency,
                    ),
                }
            })
            .context("starting the dispatcher thread")?
    };
    for i in 0..config.concurrency {
        let (carrier, job_rx, out_tx) = (carrier.clone(), job_rx.clone(), out_tx.clone());
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || work(&carrier, now, &job_rx, out_tx))
            .context("starting a worker thread")?;
    }
    drop(out_tx);

    store.prepare_writer()?;
    let mut writer = Writer {
        store,
        table,
        cycle_id: summary.cycle_id,
        now,
        summary,
        unknown_words: HashSet::new(),
        refusal: None,
        pending: Vec::new(),
        intakes: Vec::new(),
        pending_rows: 0,
        repeated: 0,
        units: Vec::new(),
        shared: mode.shared().map(|(round, me)| (round, me.to_string())),
        renewed: Instant::now(),
    };
    let drained = writer.drain(&out_rx, control);
    if let Some((round, me)) = mode.shared() {
        // Units this run claimed and did not finish go back at once, for another run or the next one.
        match writer.store.release_units(round, me) {
            Ok(0) => {}
            Ok(n) => log::info!("handed back {n} units of round {round} this run did not finish"),
            Err(e) => log::warn!("{e:#}; they are taken over when their claims run out"),
        }
        if let Err(e) = writer.store.end_round(round) {
            log::warn!("{e:#}");
        }
    }
    writer.log_refusals();
    let repeated = writer.repeated;
    summary.http_requests = stats.requests.load(Ordering::Relaxed);
    summary.retries = stats.retries.load(Ordering::Relaxed);
    let due =
        |claimed: u64| (tracked_due.load(Ordering::Relaxed) + claimed).saturating_sub(repeated);
    summary.messages_due = due(claimed.load(Ordering::Relaxed));
    if let Drained::Abandoned = drained? {
        log::warn!(
            "requests still in flight after {}s were abandoned; their messages stay due",
            GRACE.as_secs()
        );
        return Ok(false);
    }
    let (end, tracked_done) = dispatcher
        .join()
        .map_err(|_| anyhow!("the dispatcher thread panicked"))??;
    let claimed = claimed.load(Ordering::Relaxed);
    summary.messages_due = due(claimed);
    summary.invalid_submissions = end.invalid;
    if reads {
        log::info!(
            "read {} rows of sms_submissions: {claimed} new due now, {} due at a later cycle, {} too old to \
             track, {} invalid",
            end.rows,
            end.not_yet,
            summary.too_old,
            end.invalid
        );
    }
    if end.deferred > 0 {
        log::info!(
            "{} new messages of interleaved batches were taken in and polled with the tracked ones, one listing \
             per batch",
            end.deferred
        );
    }
    if let Some(first) = end.first_untrackable {
        log::warn!(
            "{} rows of sms_submissions have no tracking_id (the first: rowid {first}); they are left out, and \
             read again each cycle in case the dispatcher sets one",
            end.untrackable
        );
    }
    if end.complete && reads {
        store.save_horizon(&window.floor)?;
    }
    Ok(end.complete && tracked_done)
}

/// Where the dispatcher sends its work.
struct Dispatch<'a> {
    control: &'a Control,
    jobs: SyncSender<Job>,
    out: SyncSender<Output>,
    /// Submissions sent to be taken in since the writer last stored them all.
    ahead: std::cell::Cell<usize>,
}

impl Dispatch<'_> {
    /// Sends submissions to be taken in. They may come by the million (a first run on history, interleaved
    /// batches, a round's intake): once [`TAKE_IN_AHEAD`] wait for the writer, this waits until it has stored
    /// them, so that memory stays flat. False once the cycle is stopping.
    fn take_in(&self, intakes: Vec<Intake>) -> bool {
        self.ahead.set(self.ahead.get() + intakes.len());
        if self.out.send(Output::TakeIn(intakes)).is_err() {
            return false;
        }
        if self.ahead.get() >= TAKE_IN_AHEAD {
            self.ahead.set(0);
            return self.flush();
        }
        true
    }

    /// Hands a job to the workers; false once the cycle is stopping.
    fn send(&self, job: Job) -> bool {
        self.control.stopped().is_none() && self.jobs.send(job).is_ok()
    }

    /// Waits until the writer has stored everything sent to it so far; false when it cannot (it failed, or the
    /// cycle is over).
    fn flush(&self) -> bool {
        let (done, stored) = sync_channel(1);
        self.out.send(Output::Flush(done)).is_ok() && stored.recv() == Ok(true)
    }
}

/// Reads the new submissions and hands out those due, then the tracked messages due, group by group, until
/// both run out or the cycle must stop. Messages never polled go first: a batch that failed on its first poll is
/// still new in the next cycle, and its first result is the one that says whether the send went out at all.
/// New messages of batches whose rows are interleaved with other batches' are taken in instead, and polled with
/// the tracked ones, one listing per batch. Returns how reading ended, and whether every tracked group was handed
/// out; `tracked_due` counts the tracked messages due.
fn dispatch(
    reader: &mut dyn Backend,
    window: &Window,
    now: DateTime<Utc>,
    to: &Dispatch,
    claimed: &AtomicU64,
    tracked_due: &AtomicU64,
) -> Result<(ReadEnd, bool)> {
    let mut send = |(batch_id, messages)| {
        to.send(Job {
            batch_id,
            messages,
            unit: None,
        })
    };
    let end = intake::read(reader, window, now, to.control, claimed, &mut send, |i| {
        to.take_in(i)
    })?;
    // Every submission taken in must be stored before the tracked messages due are listed.
    if !to.flush() {
        return Ok((end, false));
    }
    let cutoff = schedule::cutoff(now);
    let step = Instant::now();
    let groups = reader.due_groups(cutoff)?;
    let due: u64 = groups.iter().map(|g| g.messages).sum();
    tracked_due.store(due, Ordering::Relaxed);
    log::info!(
        "{due} tracked messages due in {} groups (found in {:.1}s)",
        groups.len(),
        step.elapsed().as_secs_f64()
    );
    for group in groups {
        // Read in chunks, each a short read: a group may hold a whole send.
        let mut gather = Gatherer::default().with_chunk(window.lone_chunk);
        let mut open = true;
        let mut after: Option<String> = None;
        while open && to.control.stopped().is_none() {
            let chunk = reader.due_messages(
                group.batch_id.as_deref(),
                cutoff,
                after.as_deref(),
                DUE_CHUNK,
            )?;
            let more = chunk.len() == DUE_CHUNK;
            after = chunk.last().map(|m| m.tracking_id.clone());
            for m in chunk {
                open = open && gather.add(m, &mut send);
            }
            if !more {
                break;
            }
        }
        if !(open && to.control.stopped().is_none() && gather.finish(&mut send)) {
            return Ok((end, false));
        }
    }
    Ok((end, true))
}

/// The dispatcher of a run in a shared round. The coordinator reads the new submissions and takes every one of
/// them in (none is polled on the spot: the work is shared out as units), then publishes the units; a helper
/// waits for that (taking the intake over if the coordinator died first). Then both claim units, a few at a
/// time, and hand each out as one job, until none is left to claim.
fn dispatch_shared(
    reader: &mut dyn Backend,
    window: &Window,
    now: DateTime<Utc>,
    to: &Dispatch,
    tracked_due: &AtomicU64,
    mode: &Mode,
    concurrency: usize,
) -> Result<(ReadEnd, bool)> {
    let Some((round, me)) = mode.shared() else {
        return Ok((ReadEnd::default(), true));
    };
    let cutoff = schedule::cutoff(now);
    let mut end = ReadEnd {
        complete: true,
        ..ReadEnd::default()
    };
    let mut coordinate = matches!(mode, Mode::Coordinate { .. });
    while !coordinate {
        match reader.round_phase(round)? {
            Phase::Polling => break,
            Phase::Done => return Ok((end, true)),
            Phase::Intake if reader.take_over_round(round, me)? => {
                log::warn!(
                    "round {round}: its coordinator died during the intake; this run takes it over"
                );
                coordinate = true;
            }
            Phase::Intake => {
                if to.control.stopped().is_some() {
                    return Ok((ReadEnd::default(), false));
                }
                std::thread::sleep(INTAKE_WAIT);
            }
        }
    }
    if coordinate {
        end = take_everything_in(reader, window, now, to)?;
        if !end.complete || !to.flush() {
            return Ok((end, false));
        }
        let units = reader.publish_units(round, cutoff, window.lone_chunk)?;
        log::info!("round {round}: {units} units of work published");
    }
    loop {
        if to.control.stopped().is_some() {
            return Ok((end, false));
        }
        let units = reader.claim_units(round, me, concurrency.max(1), UNIT_LEASE)?;
        if units.is_empty() {
            return Ok((end, true));
        }
        for unit in units {
            let messages = unit_messages(reader, &unit, cutoff)?;
            tracked_due.fetch_add(messages.len() as u64, Ordering::Relaxed);
            if messages.is_empty() {
                // Nothing of it is due any more (closed by hand meanwhile, say): nothing to ask.
                reader.record_units(0, now, &[], &[unit.id])?;
                continue;
            }
            let job = Job {
                batch_id: unit.batch_id.clone(),
                messages,
                unit: Some(unit.id),
            };
            if !to.send(job) {
                return Ok((end, false));
            }
        }
    }
}

/// The coordinator's intake: every new submission is taken in, due ones too.
fn take_everything_in(
    reader: &mut dyn Backend,
    window: &Window,
    now: DateTime<Utc>,
    to: &Dispatch,
) -> Result<ReadEnd> {
    let mut due =
        |(_, messages): intake::Group| to.take_in(messages.into_iter().map(Intake::due).collect());
    intake::read(
        reader,
        window,
        now,
        to.control,
        &AtomicU64::new(0),
        &mut due,
        |i| to.take_in(i),
    )
}

/// The messages of a claimed unit still due: a whole batch, read in chunks, or a run of messages without one.
fn unit_messages(
    reader: &mut dyn Backend,
    unit: &Unit,
    cutoff: DateTime<Utc>,
) -> Result<Vec<DueMessage>> {
    let Some(batch) = &unit.batch_id else {
        return reader.unit_messages(unit, cutoff);
    };
    let mut messages = Vec::with_capacity(unit.messages as usize);
    let mut after: Option<String> = None;
    loop {
        let chunk = reader.due_messages(Some(batch), cutoff, after.as_deref(), DUE_CHUNK)?;
        let more = chunk.len() == DUE_CHUNK;
        after = chunk.last().map(|m| m.tracking_id.clone());
        messages.extend(chunk);
        if !more {
            return Ok(messages);
        }
    }
}

/// The carrier of `config`: its profile on the shared transport, and its status table.
pub fn connect(
    config: &PollConfig,
    control: Arc<crate::control::Control>,
    stats: Arc<Stats>,
) -> Result<(Carrier, Table)> {
    let profile = crate::carrier::profile(&config.carrier, config.carrier_account.as_deref())
        .exit_code(Exit::Config)?;
    let table =
        Table::load(&config.carrier, config.status_map.as_deref()).exit_code(Exit::Config)?;
    let http = Http::new(
        config,
        profile.auth(),
        crate::carrier::default_interval(&config.carrier),
        control,
        stats,
    );
    Ok((Carrier { http, profile }, table))
}

/// A worker: takes jobs until there are none, asks the carrier, hands the answers to the writer.
fn work(
    carrier: &Carrier,
    now: DateTime<Utc>,
    jobs: &Mutex<Receiver<Job>>,
    done: SyncSender<Output>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if done
            .send(Output::Answers(Box::new(ask(carrier, now, job))))
            .is_err()
        {
            return;
        }
    }
}

/// Asks the carrier about one job's messages. A message the profile cannot ask about, or one past the
/// carrier's retention, is closed without a request. Then the profile's bulk question (a batch listing, an id
/// list, a time window), then one by one for the messages it lacks. A bulk question that fails for good (a
/// 4xx, a listing past the page cap) falls back to one-by-one lookups; one that keeps failing (the carrier is
/// unwell) fails the job.
fn ask(carrier: &Carrier, now: DateTime<Utc>, mut job: Job) -> Done {
    let (http, profile) = (&carrier.http, &*carrier.profile);
    let control = http.control();
    let repeated = drop_repeats(&mut job.messages);
    let mut done = Done {
        answers: job.messages.iter().map(|_| None).collect(),
        errors: job.messages.iter().map(|_| None).collect(),
        job,
        batch_error: None,
        duplicates: 0,
        malformed: Vec::new(),
        lookup_failures: 0,
        lookup_error: None,
        repeated,
        cut_short: true,
    };
    if control.stopped().is_some() {
        return done;
    }
    for (message, answer) in done.job.messages.iter().zip(&mut done.answers) {
        if !schedule::in_range(message.submitted_at) {
            // Tracked by an earlier version, which took such a submission in: its schedule has no stored form.
            let submitted_at = if timefmt::representable(message.submitted_at) {
                timefmt::format(message.submitted_at)
            } else {
                "after year 9999 or unreadable".to_string()
            };
            *answer = Some(Answer::Closed(format!(
                "closed without a request: its submitted_at ({submitted_at}) is out of range (its polls would not \
                 end before year 10000)"
            )));
        } else if let Some(reason) = carrier.unaskable(message) {
            *answer = Some(Answer::Closed(format!(
                "closed without a request: {} cannot ask about it ({reason})",
                profile.name()
            )));
        } else if let Some(keep) = profile.retention()
            && now - message.submitted_at > keep
        {
            *answer = Some(Answer::Closed(format!(
                "closed without a request: beyond the carrier's retention ({} keeps statuses for {} h)",
                profile.name(),
                keep.num_hours()
            )));
        }
    }
    let askable: Vec<&DueMessage> = done
        .job
        .messages
        .iter()
        .zip(&done.answers)
        .filter(|(_, a)| a.is_none())
        .map(|(m, _)| m)
        .collect();
    let batch_id = done.job.batch_id.as_deref();
    let label = match batch_id {
        Some(b) => format!("batch {b:?}"),
        None => format!("{} messages without a batch", askable.len()),
    };
    let bulk = if askable.is_empty() {
        Ok(Bulk::NotOffered)
    } else {
        carrier.bulk(batch_id, &askable)
    };
    match bulk {
        Ok(Bulk::Listed(listing)) => {
            done.malformed = listing.malformed;
            let index: HashMap<&str, usize> = done
                .job
                .messages
                .iter()
                .enumerate()
                .map(|(i, m)| (m.tracking_id.as_str(), i))
                .collect();
            // Reports about messages not due now (closed ones, other slots) are ignored; of a message listed
            // twice, the newer report counts.
            for report in listing.reports {
                let Some(&i) = index.get(report.tracking_id.as_str()) else {
                    continue;
                };
                match &done.answers[i] {
                    None => done.answers[i] = Some(Answer::Reported(report)),
                    Some(Answer::Reported(kept)) => {
                        done.duplicates += 1;
                        if newer(&report, kept) {
                            done.answers[i] = Some(Answer::Reported(report));
                        }
                    }
                    Some(_) => {}
                }
            }
            for id in listing.not_found {
                if let Some(&i) = index.get(id.as_str())
                    && done.answers[i].is_none()
                {
                    done.answers[i] = Some(Answer::NotFound);
                }
            }
        }
        Ok(Bulk::NotOffered) => {}
        Ok(Bulk::UnknownBatch) => {
            log::info!("carrier does not know {label}; asking for its messages one by one")
        }
        Err(e) if e.is_permanent() => log::warn!(
            "{label}: {e}; asking for its {} messages one by one",
            askable.len()
        ),
        Err(e) => {
            if e.is_carriers_failure() {
                let reason = format!("{label}: {e}");
                for (answer, error) in done.answers.iter().zip(&mut done.errors) {
                    if answer.is_none() {
                        *error = Some(reason.clone());
                    }
                }
            }
            done.cut_short = matches!(e, FetchError::Deadline | FetchError::Stopped);
            done.batch_error = Some(e);
            return done;
        }
    }
    for i in 0..done.answers.len() {
        if done.answers[i].is_some() {
            continue;
        }
        match carrier.one(&done.job.messages[i]) {
            Ok(Some(report)) => done.answers[i] = Some(Answer::Reported(report)),
            Ok(None) => done.answers[i] = Some(Answer::NotFound),
            Err(FetchError::Refused { code, reason }) => {
                done.answers[i] = Some(Answer::Refused { code, reason })
            }
            Err(e @ (FetchError::Deadline | FetchError::Stopped)) => {
                done.lookup_error.get_or_insert(e);
                return done;
            }
            Err(e) => {
                done.lookup_failures += 1;
                if !e.is_carriers_failure() {
                    // Rejected credentials: every further request would fail too.
                    done.lookup_error.get_or_insert(e);
                    break;
                }
                done.errors[i] = Some(e.to_string());
                done.lookup_error.get_or_insert(e);
            }
        }
    }
    done.cut_short = false;
    done
}

/// Whether `report` is newer than `kept`: its status_updated_at is later (a report with a time beats one
/// without).
fn newer(report: &Report, kept: &Report) -> bool {
    let at = |r: &Report| {
        r.status_updated_at
            .as_deref()
            .and_then(|t| timefmt::parse(t).ok())
    };
    match (at(report), at(kept)) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Removes the second and later messages with one tracking id from a job of new messages (rows repeated in
/// sms_submissions); returns their ids.
fn drop_repeats(messages: &mut Vec<DueMessage>) -> Vec<String> {
    if messages.iter().all(|m| m.intake.is_none()) {
        return Vec::new();
    }
    let keep: Vec<bool> = {
        let mut seen = HashSet::with_capacity(messages.len());
        messages
            .iter()
            .map(|m| seen.insert(m.tracking_id.as_str()))
            .collect()
    };
    let mut repeated = Vec::new();
    let mut keep = keep.into_iter();
    messages.retain(|m| {
        let kept = keep.next().unwrap_or(true);
        if !kept {
            repeated.push(m.tracking_id.clone());
        }
        kept
    });
    repeated
}

/// How a job is named in logs and errors.
fn label(job: &Job) -> String {
    match &job.batch_id {
        Some(b) => format!("batch {b:?}"),
        None => "messages without a batch".to_string(),
    }
}

/// Results written per transaction, at least: many batches at a time, so that the index pages they share are
/// written to the WAL once rather than once per batch. That matters most when tracking ids come in no order (UUIDs):
/// every result then lands on another page of the indexes on tracking_id. Fewer are written when no more results
/// are waiting.
const FLUSH_ROWS: usize = 25_000;

/// The single writer: maps answers to statuses and schedule steps and stores them, whole batches per
/// transaction.
struct Writer<'a> {
    store: &'a mut dyn Backend,
    /// The carrier's status and failure table.
    table: Table,
    cycle_id: i64,
    now: DateTime<Utc>,
    summary: &'a mut Summary,
    unknown_words: HashSet<String>,
    /// The first refusal of the cycle (message and reason), logged once at the end with the count.
    refusal: Option<(String, String)>,
    /// Results waiting for the next transaction.
    pending: Vec<Done>,
    /// Submissions to take in, waiting for the next transaction.
    intakes: Vec<Intake>,
    pending_rows: usize,
    /// New messages found to repeat a tracking id: not messages of their own, so not due.
    repeated: u64,
    /// Units of a shared round whose jobs are finished, to be marked done with the next transaction.
    units: Vec<i64>,
    /// The round and this run's token, in a shared round.
    shared: Option<(i64, String)>,
    /// When this run's claims were last renewed.
    renewed: Instant,
}

/// How the writer's loop ended.
enum Drained {
    /// Every worker finished and every result was written.
    All,
    /// The cycle had to stop and requests were still in flight after the grace; what arrived was written.
    Abandoned,
}

impl Writer<'_> {
    /// Receives the workers' results and writes them until every worker is done, or until the grace after a stop
    /// runs out. After a write fails, it stops the cycle, receives without writing, and returns the error.
    fn drain(&mut self, results: &Receiver<Output>, control: &Control) -> Result<Drained> {
        let started = Instant::now();
        let mut writing = Duration::ZERO;
        let mut last_result = Duration::ZERO;
        let mut failure = None;
        let mut give_up_at = None;
        let drained = loop {
            // While results wait to be written, take whatever else is ready without blocking, then write them.
            let next = if self.pending_rows == 0 {
                results.recv_timeout(Duration::from_millis(50))
            } else {
                results.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            };
            let (idle, finished) = match next {
                Ok(output) => {
                    last_result = started.elapsed();
                    if failure.is_none() {
                        match output {
                            Output::Answers(done) => self.accept(*done),
                            Output::TakeIn(intakes) => {
                                self.pending_rows += intakes.len();
                                self.intakes.extend(intakes);
                            }
                            Output::Flush(done) => {
                                let written = self.flush();
                                let _ = done.send(written.is_ok());
                                if let Err(e) = written {
                                    log::error!("{}; stopping the cycle", error_text(&e));
                                    control.abort_store_failed();
                                    failure = Some(e);
                                }
                            }
                        }
                    }
                    (false, false)
                }
                Err(RecvTimeoutError::Timeout) => (true, false),
                Err(RecvTimeoutError::Disconnected) => (true, true),
            };
            if give_up_at.is_none() && control.stopped().is_some() {
                give_up_at = Some(Instant::now() + GRACE);
            }
            let abandon = give_up_at.is_some_and(|at| Instant::now() >= at);
            if failure.is_none() && (self.pending_rows >= FLUSH_ROWS || idle || abandon) {
                let flush = Instant::now();
                let written = self.flush();
                writing += flush.elapsed();
                if let Err(e) = written {
                    log::error!("{}; stopping the cycle", error_text(&e));
                    control.abort_store_failed();
                    failure = Some(e);
                }
            }
            if let Some((round, me)) = &self.shared
                && self.renewed.elapsed() >= RENEW_EVERY
            {
                self.renewed = Instant::now();
                if let Err(e) = self.store.renew_units(*round, me, UNIT_LEASE) {
                    log::warn!("{e:#}");
                }
            }
            if finished {
                break Drained::All;
            }
            if abandon {
                break Drained::Abandoned;
            }
        };
        log::debug!(
            "polling took {:.2}s (the last result arrived after {:.2}s), of which {:.2}s writing results",
            started.elapsed().as_secs_f64(),
            last_result.as_secs_f64(),
            writing.as_secs_f64()
        );
        match failure {
            Some(e) => Err(e),
            None => Ok(drained),
        }
    }

    /// Takes a worker's result: failures are counted and logged at once; answers wait in `pending` for the next
    /// flush. A message that was not answered and whose +72h slot has passed is closed without an answer.
    fn accept(&mut self, mut done: Done) {
        let label = label(&done.job);
        for id in &done.repeated {
            warn_repeated(id);
        }
        self.repeated += done.repeated.len() as u64;
        match &done.batch_error {
            Some(FetchError::Deadline | FetchError::Stopped) => {}
            Some(e) => {
                self.summary.batches_failed += 1;
                log::warn!(
                    "{label}: {e}; its {} messages stay due",
                    done.job.messages.len()
                );
                self.summary
                    .error
                    .get_or_insert_with(|| format!("{label}: {e}"));
            }
            None => {
                if done.job.batch_id.is_some()
                    && done
                        .answers
                        .iter()
                        .any(|a| matches!(a, Some(Answer::Reported(_))))
                {
                    self.summary.batches_ok += 1;
                }
            }
        }
        if let Some(first) = done.malformed.first() {
            self.summary.malformed_reports += done.malformed.len() as u64;
            log::warn!(
                "{label}: {} entries of the carrier's listing could not be read (first: {first}); those messages \
                 are asked for one by one",
                done.malformed.len()
            );
        }
        if done.duplicates > 0 {
            self.summary.duplicate_reports += done.duplicates;
            log::warn!(
                "{label}: the carrier listed {} messages more than once; the newer report counts",
                done.duplicates
            );
        }
        if done.lookup_failures > 0 {
            self.summary.lookups_failed += done.lookup_failures;
            if let Some(e) = &done.lookup_error {
                log::warn!(
                    "{label}: {} one-by-one lookups failed, first: {e}; they stay due",
                    done.lookup_failures
                );
                self.summary
                    .error
                    .get_or_insert_with(|| format!("{label}: {e}"));
            }
        }
        for ((message, answer), error) in done
            .job
            .messages
            .iter()
            .zip(&mut done.answers)
            .zip(&done.errors)
        {
            if let (None, Some(error)) = (&answer, error)
                && schedule::past_last_slot(message.submitted_at, self.now)
            {
                *answer = Some(Answer::Closed(format!(
                    "closed after its +72h slot without an answer; last error: {error}"
                )));
            }
        }
        if let (Some(unit), false) = (done.job.unit, done.cut_short) {
            self.units.push(unit);
        }
        // A carrier that sends a code without text (Sinch) gets the code's documented meaning as the reason.
        for answer in &mut done.answers {
            if let Some(Answer::Reported(r)) = answer
                && r.error_message.is_none()
                && let Some(code) = &r.error_code
            {
                r.error_message = self.table.meaning(code).map(str::to_string);
            }
        }
        let answered = done.answers.iter().filter(|a| a.is_some()).count();
        if answered > 0 {
            self.pending_rows += answered;
            self.pending.push(done);
        }
    }

    /// Takes in the waiting submissions, then writes every pending result in one transaction: whole batches
    /// only, never half of one.
    fn flush(&mut self) -> Result<()> {
        self.pending_rows = 0;
        if !self.intakes.is_empty() {
            let intakes = std::mem::take(&mut self.intakes);
            let (open, too_old) = self.store.take_in(&intakes)?;
            self.summary.new_submissions += open as u64;
            self.summary.too_old += too_old as u64;
        }
        if self.pending.is_empty() {
            if !self.units.is_empty() {
                let units = std::mem::take(&mut self.units);
                self.store
                    .record_units(self.cycle_id, self.now, &[], &units)?;
            }
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut records = Vec::new();
        for done in &pending {
            for (message, answer) in done.job.messages.iter().zip(&done.answers) {
                if let Some(answer) = answer {
                    records.push(self.record(message, answer));
                }
            }
        }
        // In tracking id order, each index on tracking_id is walked once per transaction instead of jumped about
        // in: with ids in no order (UUIDs), a page is then written once per transaction, not once per result.
        records.sort_unstable_by(|a, b| a.message.tracking_id.cmp(&b.message.tracking_id));
        let units = std::mem::take(&mut self.units);
        let written = self
            .store
            .record_units(self.cycle_id, self.now, &records, &units)
            .map_err(|e| {
                let batches: Vec<String> = pending.iter().map(|d| label(&d.job)).collect();
                e.context(format!("storing the results of {}", batches.join(", ")))
            })?;
        self.repeated += written.repeated as u64;
        for (r, &stored) in records.iter().zip(&written.stored) {
            if !stored {
                continue;
            }
            if r.message.intake.is_some() {
                self.summary.new_submissions += 1;
            }
            if r.entry == Entry::Close {
                self.summary.closed_unanswered += 1;
                continue;
            }
            self.summary.polled += 1;
            match r.status {
                DeliveryStatus::Delivered => self.summary.delivered += 1,
                DeliveryStatus::Failed => {
                    self.summary.failed += 1;
                    let category = r.failure_category.unwrap_or(Category::Unknown);
                    *self
                        .summary
                        .failed_by_category
                        .entry(category.as_str().to_string())
                        .or_default() += 1;
                }
                DeliveryStatus::Pending => self.summary.pending += 1,
            }
            if r.state == TrackState::Unconfirmed {
                self.summary.closed_unconfirmed += 1;
            }
            if r.carrier_status.is_none() && r.failure_reason.is_some() {
                self.summary.lookups_rejected += 1;
                if self.refusal.is_none() {
                    self.refusal = Some((
                        r.message.tracking_id.clone(),
                        r.failure_reason.unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        for done in &pending {
            let stored = done.answers.iter().filter(|a| a.is_some()).count();
            log::debug!("{}: {stored} results stored", label(&done.job));
        }
        Ok(())
    }

    fn record<'m>(&mut self, message: &'m DueMessage, answer: &'m Answer) -> PollRecord<'m> {
        let closing = |reason: &'m str| PollRecord {
            message,
            entry: Entry::Close,
            status: DeliveryStatus::Pending,
            carrier_status: None,
            failure_code: None,
            failure_reason: Some(reason),
            failure_category: None,
            confirmed_at: None,
            state: TrackState::Unconfirmed,
            next_due_at: None,
        };
        let (outcome, report, refusal) = match answer {
            Answer::Closed(reason) => return closing(reason),
            Answer::NotFound => {
                self.summary.not_found += 1;
                (Outcome::Pending, None, None)
            }
            Answer::Refused { code, reason } => (
                Outcome::Pending,
                None,
                Some((code.as_deref(), reason.as_str())),
            ),
            Answer::Reported(report) => {
                let mapped = self.table.map(report);
                if !mapped.known {
                    self.summary.unknown_statuses += 1;
                    if self.unknown_words.insert(report.status.clone()) {
                        log::warn!(
                            "carrier status {:?} is not in the mapping table; recorded as PENDING",
                            report.status
                        );
                    }
                }
                (mapped.outcome, Some(report), None)
            }
        };
        let status = outcome.status();
        let (state, next_due_at) =
            match schedule::after_poll(message.submitted_at, self.now, status) {
                // Final without a receipt: asking again cannot change the answer.
                _ if outcome == Outcome::Unconfirmed => (TrackState::Unconfirmed, None),
                Next::DueAt(at) => (TrackState::Open, Some(at)),
                Next::Final(DeliveryStatus::Delivered) => (TrackState::Delivered, None),
                Next::Final(_) => (TrackState::Failed, None),
                Next::Unconfirmed => (TrackState::Unconfirmed, None),
            };
        let failure_code = report
            .and_then(|r| r.error_code.as_deref())
            .or(refusal.and_then(|(code, _)| code));
        let failure_category = (status == DeliveryStatus::Failed)
            .then(|| report.map_or(Category::Unknown, |r| self.table.category(r)));
        PollRecord {
            message,
            entry: Entry::Poll,
            status,
            carrier_status: report.map(|r| r.status.as_str()),
            failure_code,
            failure_reason: report
                .and_then(|r| r.error_message.as_deref())
                .or(refusal.map(|(_, reason)| reason)),
            failure_category,
            // Stored in the schema's one UTC form, whatever offset the carrier used; a time that cannot be
            // read is left out (the carrier's word is kept).
            confirmed_at: report
                .filter(|_| status.is_final())
                .and_then(|r| r.status_updated_at.as_deref())
                .and_then(|t| timefmt::parse(t).ok())
                .map(timefmt::format),
            state,
            next_due_at,
        }
    }

    /// Logs the cycle's refusals once: how many, and the first with the carrier's message.
    fn log_refusals(&self) {
        if let Some((id, reason)) = &self.refusal {
            log::warn!(
                "the carrier refused to answer about {} messages (first: {id:?}: {reason}); recorded as their \
                 result, they are polled again at their next slot",
                self.summary.lookups_rejected
            );
        }
    }
}

/// The exit code from the counts: everything polled is success; nothing polled because the carrier kept failing
/// is "unavailable"; anything in between is partial.
/// `complete`: every new submission was read, so that `messages_due` is the whole count.
fn exit_code(s: &Summary, stop: Option<Stop>, complete: bool) -> Exit {
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
    fn repeated_new_messages_are_dropped_from_a_job() {
        let message = |id: &str, intake: Option<i64>| DueMessage {
            tracking_id: id.to_string(),
            customer_id: None,
            phone_number: None,
            batch_id: None,
            submitted_at: DateTime::UNIX_EPOCH,
            polls: 0,
            intake,
        };
        let mut job = vec![
            message("A", Some(1)),
            message("B", Some(2)),
            message("A", Some(3)),
            message("C", Some(4)),
            message("B", Some(5)),
        ];
        assert_eq!(drop_repeats(&mut job), ["A", "B"]);
        let kept: Vec<_> = job.iter().map(|m| m.intake).collect();
        assert_eq!(kept, [Some(1), Some(2), Some(4)]);
        // Tracked messages are unique by their primary key: nothing to look for.
        let mut tracked = vec![message("A", None), message("B", None)];
        assert!(drop_repeats(&mut tracked).is_empty());
        assert_eq!(tracked.len(), 2);
    }

    #[test]
    fn exit_codes_from_counts() {
        let s = |due, polled, batches_failed| Summary {
            messages_due: due,
            polled,
            batches_failed,
            ..Summary::default()
        };
        assert_eq!(exit_code(&s(0, 0, 0), None, true), Exit::Ok);
        assert_eq!(exit_code(&s(10, 10, 0), None, true), Exit::Ok);
        assert_eq!(exit_code(&s(10, 4, 1), None, true), Exit::Partial);
        assert_eq!(
            exit_code(&s(10, 0, 2), None, true),
            Exit::CarrierUnavailable
        );
        assert_eq!(
            exit_code(&s(10, 3, 0), Some(Stop::Deadline), true),
            Exit::Partial
        );
        assert_eq!(
            exit_code(&s(10, 0, 0), Some(Stop::Deadline), true),
            Exit::Partial
        );
        assert_eq!(
            exit_code(&s(10, 9, 0), Some(Stop::CredentialsRejected), true),
            Exit::CredentialsRejected
        );
    }
}
