//! The writer: maps answers to statuses and schedule steps and stores them, whole jobs per transaction, on the
//! cycle's own thread.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::rounds::{Claim, Renewal, rounds_of};
use super::{Answer, Asked, GRACE, ToWriter};
use crate::carrier::FetchError;
use crate::carrier::table::{Outcome, Table};
use crate::control::Control;
use crate::domain::Category;
use crate::domain::{DeliveryStatus, DueMessage, Entry, Intake, PollRecord, TrackState};
use crate::phases::Phase;
use crate::redact::error_text;
use crate::schedule::{self, Next};
use crate::store::{Backend, Written, warn_repeated};
use crate::summary::Summary;
use crate::timefmt;

/// Results written per transaction, at least: many batches at a time, so that the index pages they share are
/// written to the WAL once rather than once per batch. That matters most when tracking ids come in no order (UUIDs):
/// every result then lands on another page of the indexes on tracking_id. Fewer are written when no more results
/// are waiting.
const FLUSH_ROWS: usize = 25_000;

/// The single writer: maps answers to statuses and schedule steps and stores them, whole batches per
/// transaction.
pub(super) struct Writer<'a> {
    store: &'a mut dyn Backend,
    /// The carrier's status and failure table.
    table: Arc<Table>,
    cycle_id: i64,
    now: DateTime<Utc>,
    summary: &'a mut Summary,
    unknown_words: HashSet<String>,
    /// The first refusal of the cycle (message and reason), logged once at the end with the count.
    refusal: Option<(String, String)>,
    /// Results waiting for the next transaction.
    pending: Vec<Asked>,
    /// Submissions to take in, waiting for the next transaction.
    intakes: Vec<Intake>,
    pending_rows: usize,
    /// New messages found to repeat a tracking id: not messages of their own, so not due.
    repeated: u64,
    /// Units of a shared round whose jobs are finished, to be marked done with the next transaction.
    units: Vec<i64>,
    /// In a shared round: this run's claims, renewed as the writer goes.
    renewal: Option<Renewal>,
    /// The first slot of the oldest new message a worker left without an answer.
    new_left_since: Option<DateTime<Utc>>,
    /// Results stored for new messages (submissions taken in without a poll are not among them).
    new_stored: u64,
    /// Batches whose bulk question failed after its retries in this cycle while their messages were answered
    /// one by one.
    failed_bulks: Vec<String>,
}

/// How the writer's loop ended.
pub(super) enum Drained {
    /// Every worker finished and every result was written.
    All,
    /// The cycle had to stop and requests were still in flight after the grace; what arrived was written.
    Abandoned,
}

impl<'a> Writer<'a> {
    /// A writer for the cycle at `now` whose record `summary` is; `claim`: this run's place in a shared round.
    pub fn new(
        store: &'a mut dyn Backend,
        table: Arc<Table>,
        now: DateTime<Utc>,
        summary: &'a mut Summary,
        claim: Option<Claim>,
    ) -> Writer<'a> {
        Writer {
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
            renewal: claim.map(Renewal::new),
            new_left_since: None,
            new_stored: 0,
            failed_bulks: Vec::new(),
        }
    }

    /// The store it writes to.
    pub fn store(&mut self) -> &mut dyn Backend {
        self.store
    }

    /// New messages found to repeat a tracking id: not messages of their own, so not due.
    pub fn repeated(&self) -> u64 {
        self.repeated
    }

    /// The batches whose bulk question failed after its retries in this cycle while their messages were
    /// answered one by one.
    pub fn failed_bulks(&mut self) -> Vec<String> {
        std::mem::take(&mut self.failed_bulks)
    }

    /// New messages left without a result, of `due` handed out (`new_left`), and the first slot of the oldest a
    /// worker left without an answer (`None`: none was).
    pub fn new_left(&self, due: u64) -> (u64, Option<DateTime<Utc>>) {
        (due.saturating_sub(self.new_stored), self.new_left_since)
    }

    /// Receives the workers' results and writes them until every worker is done, or until the grace after a stop
    /// runs out. After a write fails, it stops the cycle, receives without writing, and returns the error.
    pub fn drain(&mut self, results: &Receiver<ToWriter>, control: &Control) -> Result<Drained> {
        let started = Instant::now();
        let mut writing = Duration::ZERO;
        let mut last_result = Duration::ZERO;
        let mut failure = None;
        let mut give_up_at = None;
        let drained = loop {
            // While results wait to be written, take whatever else is ready without blocking, then write them.
            let next = if self.pending_rows == 0 {
                Phase::WriterIdle.time(|| results.recv_timeout(Duration::from_millis(50)))
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
                            ToWriter::Answers(done) => self.accept(*done),
                            ToWriter::TakeIn(intakes) => {
                                self.pending_rows += intakes.len();
                                self.intakes.extend(intakes);
                            }
                            ToWriter::Flush(done) => {
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
            if let Some(renewal) = &mut self.renewal {
                renewal.tick(self.store);
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
    fn accept(&mut self, mut done: Asked) {
        self.count_failures(&done);
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
        // New messages left without an answer are not tracked yet: their first slot is known only here.
        for (message, answer) in done.job.messages.iter().zip(&done.answers) {
            if message.new && answer.is_none() {
                let due = schedule::first_due(message.submitted_at);
                self.new_left_since = Some(self.new_left_since.map_or(due, |d| d.min(due)));
            }
        }
        let answered = done.answers.iter().filter(|a| a.is_some()).count();
        if answered > 0 {
            self.pending_rows += answered;
            self.pending.push(done);
        }
    }

    /// Counts and logs what went wrong with a job: repeated ids, a failed bulk question, unreadable or
    /// repeated entries of a listing, failed lookups.
    fn count_failures(&mut self, done: &Asked) {
        let label = done.job.label();
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
                    done.answers.iter().filter(|a| a.is_none()).count()
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
        // A dead batch: its bulk question failed while each of its messages was answered on its own. (When the
        // lookups fail too, the carrier is unwell as a whole, and its bulk questions are the cheaper way back.)
        if let (true, None, Some(batch)) = (done.bulk_failed, &done.batch_error, &done.job.batch_id)
        {
            self.failed_bulks.push(batch.clone());
        }
        self.summary.bulk_fallbacks += u64::from(done.fell_back);
        self.summary.asked_alone += done.asked_alone;
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
    }

    /// Takes in the waiting submissions, then writes every pending result in one transaction: whole batches
    /// only, never half of one.
    fn flush(&mut self) -> Result<()> {
        self.pending_rows = 0;
        if !self.intakes.is_empty() {
            let intakes = std::mem::take(&mut self.intakes);
            let (open, too_old) = Phase::TakeIn.time(|| self.store.take_in(&intakes))?;
            self.summary.new_submissions += open as u64;
            self.summary.too_old += too_old as u64;
        }
        if self.pending.is_empty() {
            if !self.units.is_empty() {
                self.store_results(&[])?;
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
        let written = self.store_results(&records).map_err(|e| {
            let batches: Vec<String> = pending.iter().map(|d| d.job.label()).collect();
            e.context(format!("storing the results of {}", batches.join(", ")))
        })?;
        self.repeated += written.repeated as u64;
        for (r, &stored) in records.iter().zip(&written.stored) {
            if stored {
                self.count(r);
            }
        }
        for done in &pending {
            let stored = done.answers.iter().filter(|a| a.is_some()).count();
            log::debug!("{}: {stored} results stored", done.job.label());
        }
        Ok(())
    }

    /// Counts a stored result in the cycle's summary.
    fn count(&mut self, r: &PollRecord) {
        if r.message.new {
            self.summary.new_submissions += 1;
            self.new_stored += 1;
        }
        if r.entry == Entry::Close {
            self.summary.closed_unanswered += 1;
            return;
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

    /// Writes `records` in one transaction, marking the finished units of a shared round done in it.
    fn store_results(&mut self, records: &[PollRecord]) -> Result<Written> {
        if self.renewal.is_none() {
            return self.store.record(self.cycle_id, self.now, records);
        }
        let units = std::mem::take(&mut self.units);
        rounds_of(self.store)?.record_units(self.cycle_id, self.now, records, &units)
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
    pub fn log_refusals(&self) {
        if let Some((id, reason)) = &self.refusal {
            log::warn!(
                "the carrier refused to answer about {} messages (first: {id:?}: {reason}); recorded as their \
                 result, they are polled again at their next slot",
                self.summary.lookups_rejected
            );
        }
    }
}
