//! A cycle shared by several runs (PostgreSQL replicas): rounds of claimed units. The first run for a clock
//! coordinates the round (takes every new submission in, publishes the due work as units); every run claims units
//! a few at a time, and the writer marks each done in the transaction that stores its results.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};

use super::dispatch::{Dispatch, whole_batch};
use super::{Cycle, Job, Role};
use crate::domain::{DueMessage, Intake};
use crate::exit::{Exit, ExitContext};
use crate::intake::{self, ReadEnd};
use crate::phases::Phase as Timed;
use crate::store::{Backend, Join, Phase, Rounds, Sharing, Unit};
use crate::timefmt;

/// How long a run's claim on a unit of a shared round lasts without renewal: a run that vanishes without its
/// sessions closing (a host lost) gives its units up after this; one whose sessions close, at once.
const UNIT_LEASE: Duration = Duration::from_secs(30);
/// How often the writer renews this run's claims.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often a run waiting for the round's intake looks again.
const INTAKE_WAIT: Duration = Duration::from_millis(200);

/// This run's place in a round: the round, and the run's token (its sessions' name).
#[derive(Clone, Debug)]
pub(super) struct Claim {
    pub round: i64,
    pub me: String,
}

/// The store's rounds: every connection of a run that shares its cycle is to a store that has them.
pub(super) fn rounds_of(store: &mut dyn Backend) -> Result<&mut dyn Rounds> {
    match store.sharing() {
        Sharing::Rounds(rounds) => Ok(rounds),
        Sharing::Lease(_) => {
            bail!("this database runs one cycle at a time; rounds are for PostgreSQL")
        }
    }
}

/// Joins the round for this run's clock, or starts one and coordinates it. Returns this run's role (`None`: the
/// round is over, nothing is left to do) and the round's clock; a round for another clock under way is an error
/// (exit 73).
pub(super) fn join(cx: &Cycle, rounds: &mut dyn Rounds) -> Result<(Option<Role>, DateTime<Utc>)> {
    // Unique per run, short enough for a session name.
    let me = format!(
        "{:x}{:x}",
        std::process::id(),
        cx.started.timestamp_nanos_opt().unwrap_or_default()
    );
    let clock = cx.config.now.unwrap_or(cx.started);
    Ok(
        match Timed::Rounds.time(|| rounds.join_round(&me, clock, cx.ttl()))? {
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
                log::info!(
                    "round {round}: this run takes the submissions in and shares out the work"
                );
                (Some(Role::Coordinate(Claim { round, me })), cycle_now)
            }
            Join::Help { round, cycle_now } => {
                log::info!(
                    "round {round} for clock {} is under way: this run takes a share of its work",
                    timefmt::format(cycle_now)
                );
                (Some(Role::Help(Claim { round, me })), cycle_now)
            }
            Join::Finished { round, cycle_now } => {
                log::info!(
                    "round {round} for clock {} is over: nothing is left to do",
                    timefmt::format(cycle_now)
                );
                (None, cycle_now)
            }
        },
    )
}

/// The dispatcher of a run in a shared round. The coordinator (`coordinate`) reads the new submissions and takes
/// every one of them in (none is polled on the spot: the work is shared out as units), then publishes the units;
/// a helper waits for that (taking the intake over if the coordinator died first). Then both claim units, a few
/// at a time, and hand each out as one job, until none is left to claim.
pub(super) fn dispatch(
    reader: &mut dyn Backend,
    to: &Dispatch,
    claim: &Claim,
    coordinate: bool,
) -> Result<(ReadEnd, bool)> {
    let reader = rounds_of(reader)?;
    let Claim { round, me } = claim;
    let round = *round;
    let cutoff = to.cutoff();
    let mut end = ReadEnd {
        complete: true,
        ..ReadEnd::default()
    };
    let mut coordinate = coordinate;
    while !coordinate {
        match Timed::Rounds.time(|| reader.round_phase(round))? {
            Phase::Polling => break,
            Phase::Done => return Ok((end, true)),
            Phase::Intake if Timed::Rounds.time(|| reader.take_over_round(round, me))? => {
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
        end = take_everything_in(reader, to)?;
        if !end.complete || !to.flush() {
            return Ok((end, false));
        }
        let units = Timed::Rounds.time(|| reader.publish_units(round, cutoff, to.window.lone))?;
        log::info!("round {round}: {units} units of work published");
    }
    loop {
        if to.control.stopped().is_some() {
            return Ok((end, false));
        }
        let units = Timed::Rounds
            .time(|| reader.claim_units(round, me, to.concurrency.max(1), UNIT_LEASE))?;
        if units.is_empty() {
            return Ok((end, true));
        }
        for unit in units {
            let messages = unit_messages(reader, &unit, cutoff)?;
            to.counts
                .tracked
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            if messages.is_empty() {
                // Nothing of it is due any more (closed by hand meanwhile, say): nothing to ask.
                reader.record_units(0, to.now, &[], &[unit.id])?;
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
fn take_everything_in(reader: &mut dyn Rounds, to: &Dispatch) -> Result<ReadEnd> {
    let mut due =
        |(_, messages): intake::Group| to.take_in(messages.into_iter().map(Intake::due).collect());
    intake::read(
        reader,
        &to.window,
        to.now,
        &to.control,
        &AtomicU64::new(0),
        &mut due,
        |i| to.take_in(i),
    )
}

/// The messages of a claimed unit still due: a whole batch, read in chunks, or a run of messages without one.
fn unit_messages(
    reader: &mut dyn Rounds,
    unit: &Unit,
    cutoff: DateTime<Utc>,
) -> Result<Vec<DueMessage>> {
    match &unit.batch_id {
        Some(batch) => whole_batch(reader, batch, cutoff, unit.messages as usize),
        None => Timed::ReadDue.time(|| reader.unit_messages(unit, cutoff)),
    }
}

/// Renews this run's claims on its units, every [`RENEW_EVERY`].
pub(super) struct Renewal {
    claim: Claim,
    renewed: Instant,
}

impl Renewal {
    pub fn new(claim: Claim) -> Renewal {
        Renewal {
            claim,
            renewed: Instant::now(),
        }
    }

    /// Renews the claims when they are due for it; a failure is logged (they lapse only 30 s later).
    pub fn tick(&mut self, store: &mut dyn Backend) {
        if self.renewed.elapsed() < RENEW_EVERY {
            return;
        }
        self.renewed = Instant::now();
        let renewed = Timed::Rounds.time(|| {
            rounds_of(store)
                .and_then(|r| r.renew_units(self.claim.round, &self.claim.me, UNIT_LEASE))
        });
        if let Err(e) = renewed {
            log::warn!("{e:#}");
        }
    }
}

/// At the end of this run's part: units it claimed and did not finish go back at once, for another run or the
/// next one, and the round ends once every unit is done.
pub(super) fn hand_back(store: &mut dyn Backend, claim: &Claim) {
    let rounds = match rounds_of(store) {
        Ok(rounds) => rounds,
        Err(e) => return log::warn!("{e:#}"),
    };
    let round = claim.round;
    let _timer = Timed::Rounds.start();
    match rounds.release_units(round, &claim.me) {
        Ok(0) => {}
        Ok(n) => log::info!("handed back {n} units of round {round} this run did not finish"),
        Err(e) => log::warn!("{e:#}; they are taken over when their claims run out"),
    }
    if let Err(e) = rounds.end_round(round) {
        log::warn!("{e:#}");
    }
}
