//! The workers: each takes a job (a batch, or a few messages without one), asks the carrier about it, and hands
//! the answers to the writer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::{Answer, Asked, Job, ToWriter};
use crate::carrier::{Bulk, Carrier, FetchError, Listing, Report};
use crate::domain::DueMessage;
use crate::phases::Phase;
use crate::schedule;
use crate::timefmt;

/// Lookups per part of a job's one-by-one questions, at least: fewer go in turn.
const LOOKUPS_PER_PART: usize = 10;
/// Per-message lookups that must fail, none succeeding, before a cycle stops falling back from failed bulk
/// questions.
const FALLBACK_PROBE: u64 = 3;

/// The cycle's watch on falling back from failed bulk questions to per-message ones. A dead batch (one bulk
/// question that keeps failing while the carrier answers about each of its messages) is asked the other way;
/// a carrier failing as a whole is not asked a million times one message at a time: once more fallback lookups
/// have failed than succeeded (at least [`FALLBACK_PROBE`]), falling back stops for the rest of the cycle, and
/// what is left stays due as before.
#[derive(Default)]
pub(super) struct Fallback {
    ok: AtomicU64,
    failed: AtomicU64,
    stopped: AtomicBool,
    /// Batches whose bulk question failed in a recent cycle, and until when it is not asked again: their
    /// messages go the per-message way at once, instead of paying the bulk's attempts again.
    failing: HashMap<String, DateTime<Utc>>,
}

impl Fallback {
    /// A watch that starts with the batches whose bulk question failed recently.
    pub fn new(failing: Vec<(String, DateTime<Utc>)>) -> Fallback {
        Fallback {
            failing: failing.into_iter().collect(),
            ..Fallback::default()
        }
    }

    /// Whether falling back has stopped for this cycle.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Counts a fallback lookup that got an answer (`true`) or failed.
    fn record(&self, answered: bool) {
        if answered {
            self.ok.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        let ok = self.ok.load(Ordering::Relaxed);
        if failed >= FALLBACK_PROBE && failed > ok && !self.stopped.swap(true, Ordering::Relaxed) {
            log::warn!(
                "falling back to per-message questions stopped for this cycle: {failed} of them failed and {ok} \
                 were answered, so the carrier is failing as a whole; the messages of failed bulk questions stay \
                 due"
            );
        }
    }
}

/// Starts `n` workers taking jobs from `jobs` until there are none.
pub(super) fn start_workers(
    carrier: Arc<Carrier>,
    fallback: Arc<Fallback>,
    now: DateTime<Utc>,
    n: usize,
    jobs: Receiver<Job>,
    out: SyncSender<ToWriter>,
) -> Result<()> {
    let jobs = Arc::new(Mutex::new(jobs));
    for i in 0..n {
        let (carrier, fallback, jobs, out) =
            (carrier.clone(), fallback.clone(), jobs.clone(), out.clone());
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || work(&carrier, &fallback, now, &jobs, out))
            .context("starting a worker thread")?;
    }
    Ok(())
}

/// A worker: takes jobs until there are none, asks the carrier, hands the answers to the writer.
fn work(
    carrier: &Carrier,
    fallback: &Fallback,
    now: DateTime<Utc>,
    jobs: &Mutex<Receiver<Job>>,
    out: SyncSender<ToWriter>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let asked = Phase::AskCarrier.time(|| ask(carrier, fallback, now, job));
        if out.send(ToWriter::Answers(Box::new(asked))).is_err() {
            return;
        }
    }
}

/// Asks the carrier about one job's messages. A message the profile cannot ask about, or one past the
/// carrier's retention, is closed without a request. Then the profile's bulk question (a batch listing, an id
/// list, a time window), then one by one for the messages it lacks. A bulk question refused for good (a 4xx, a
/// listing past the page cap) falls back to one-by-one lookups; one that failed after its retries (5xx,
/// timeouts, unreadable pages) does too, in the same cycle, unless the cycle has stopped falling back
/// ([`Fallback`]): then the job fails, and its messages stay due.
fn ask(carrier: &Carrier, fallback: &Fallback, now: DateTime<Utc>, mut job: Job) -> Asked {
    let repeated = drop_repeats(&mut job.messages);
    let mut asked = Asked {
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
        fell_back: false,
        asked_alone: 0,
        bulk_failed: false,
    };
    if carrier.http.control().stopped().is_some() {
        return asked;
    }
    close_unaskable(carrier, now, &mut asked);
    let askable = asked.unanswered();
    let batch_id = asked.job.batch_id.as_deref();
    let label = match batch_id {
        Some(b) => format!("batch {b:?}"),
        None => format!("{} messages without a batch", askable.len()),
    };
    let recently = batch_id
        .and_then(|b| fallback.failing.get(b))
        .filter(|_| !fallback.stopped());
    let bulk = if askable.is_empty() {
        Ok(Bulk::NotOffered)
    } else if let Some(until) = recently {
        Err(FetchError::Failed {
            attempts: 1,
            reason: format!(
                "its bulk question failed in a recent cycle and is not asked again before {}",
                timefmt::format(*until)
            ),
        })
    } else {
        let bulk = carrier.bulk(batch_id, &askable);
        asked.bulk_failed = matches!(bulk, Err(FetchError::Failed { .. }));
        bulk
    };
    // A bulk question that failed partway answered part of the job: that part is kept, and the rest is what the
    // failure concerns.
    let bulk = match bulk {
        Ok(Bulk::Listed(mut listing)) => match listing.unfinished.take() {
            Some(e) => {
                take_listing(&mut asked, listing);
                let rest = asked.answers.iter().filter(|a| a.is_none()).count();
                log::info!(
                    "{label}: the bulk question failed partway; what it answered is kept, {rest} messages are left"
                );
                Err(e)
            }
            None => Ok(Bulk::Listed(listing)),
        },
        other => other,
    };
    // Whether the lookups to come stand in for a bulk question that failed, or for what its answer lacked.
    let mut failed_bulk = None;
    let mut alone = false;
    match bulk {
        Ok(Bulk::Listed(listing)) => {
            take_listing(&mut asked, listing);
            // What the bulk answer lacks is asked the per-message way.
            alone = true;
        }
        Ok(Bulk::NotOffered) => {}
        Ok(Bulk::UnknownBatch) => {
            log::info!("carrier does not know {label}; asking for its messages one by one")
        }
        // A refusal: this question cannot be answered, however often it is asked.
        Err(e) if e.is_permanent() => {
            let left = asked.answers.iter().filter(|a| a.is_none()).count();
            log::warn!("{label}: {e}; asking for its {left} messages one by one");
            asked.fell_back = true;
            alone = true;
        }
        // A question that kept failing: the messages are asked the other way, while the watch allows.
        Err(e @ FetchError::Failed { .. }) if !fallback.stopped() => {
            let left = asked.answers.iter().filter(|a| a.is_none()).count();
            log::warn!("{label}: {e}; asking for its {left} messages one by one");
            asked.fell_back = true;
            alone = true;
            failed_bulk = Some(e);
        }
        Err(e) => {
            fail_rest(&mut asked, &label, e);
            return asked;
        }
    }
    let unanswered = |asked: &Asked| asked.answers.iter().filter(|a| a.is_none()).count() as u64;
    let before = unanswered(&asked);
    if asked.fell_back && asked.job.batch_id.is_some() && carrier.profile.asks_by_ids() {
        by_ids(carrier, &mut asked, failed_bulk.as_ref().map(|_| fallback));
    }
    one_by_one(carrier, &mut asked, failed_bulk.as_ref().map(|_| fallback));
    if alone {
        asked.asked_alone = before - unanswered(&asked) + asked.lookup_failures;
    }
    if let Some(e) = failed_bulk
        && asked.answers.iter().any(|a| a.is_none())
    {
        // The lookups did not answer for every message (they failed too, falling back stopped, or the cycle
        // stopped first): the rest of the job failed with its bulk question, and a job cut short stays so.
        let stopped = matches!(
            asked.lookup_error,
            Some(FetchError::Deadline | FetchError::Stopped)
        );
        fail_rest(&mut asked, &label, e);
        asked.cut_short |= stopped;
    }
    asked
}

impl Asked {
    /// The job's messages still without an answer.
    fn unanswered(&self) -> Vec<&DueMessage> {
        self.job
            .messages
            .iter()
            .zip(&self.answers)
            .filter(|(_, a)| a.is_none())
            .map(|(m, _)| m)
            .collect()
    }
}

/// Marks the messages of a job still without an answer as failed with the job's bulk question: they stay due,
/// and the job counts as failed.
fn fail_rest(asked: &mut Asked, label: &str, e: FetchError) {
    if e.is_carriers_failure() {
        let reason = format!("{label}: {e}");
        for (answer, error) in asked.answers.iter().zip(&mut asked.errors) {
            if answer.is_none() {
                *error = Some(reason.clone());
            }
        }
    }
    asked.cut_short = matches!(e, FetchError::Deadline | FetchError::Stopped);
    asked.batch_error = Some(e);
}

/// Closes, without a request, the messages that cannot be asked about: out of range (tracked by an earlier
/// version), not askable by the profile, or past the carrier's retention.
fn close_unaskable(carrier: &Carrier, now: DateTime<Utc>, asked: &mut Asked) {
    let profile = &*carrier.profile;
    for (message, answer) in asked.job.messages.iter().zip(&mut asked.answers) {
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
}

/// Takes a bulk answer's reports. Reports about messages not due now (closed ones, other slots) are ignored; of
/// a message listed twice, the newer report counts.
fn take_listing(asked: &mut Asked, listing: Listing) {
    asked.malformed.extend(listing.malformed);
    let index: HashMap<&str, usize> = asked
        .job
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.tracking_id.as_str(), i))
        .collect();
    for report in listing.reports {
        let Some(&i) = index.get(report.tracking_id.as_str()) else {
            continue;
        };
        match &asked.answers[i] {
            None => asked.answers[i] = Some(Answer::Reported(report)),
            Some(Answer::Reported(kept)) => {
                asked.duplicates += 1;
                if newer(&report, kept) {
                    asked.answers[i] = Some(Answer::Reported(report));
                }
            }
            Some(_) => {}
        }
    }
    for id in listing.not_found {
        if let Some(&i) = index.get(id.as_str())
            && asked.answers[i].is_none()
        {
            asked.answers[i] = Some(Answer::NotFound);
        }
    }
}

/// Asks about a batch's messages still without an answer by lists of ids, the profile's question about
/// messages without a batch, after its question about the batch failed. What the lists lack, or a list that
/// fails, is left to the lookups one by one.
fn by_ids(carrier: &Carrier, asked: &mut Asked, fallback: Option<&Fallback>) {
    if fallback.is_some_and(Fallback::stopped) {
        return;
    }
    let rest = asked.unanswered();
    if rest.len() < 2 {
        return;
    }
    match carrier.bulk(None, &rest) {
        Ok(Bulk::Listed(mut listing)) => {
            let failed = listing.unfinished.take();
            if let Some(watch) = fallback {
                watch.record(failed.is_none());
            }
            take_listing(asked, listing);
        }
        Ok(_) => {}
        Err(e) => {
            log::debug!(
                "{}: asking by lists of ids failed too: {e}",
                asked.job.label()
            );
            if let Some(watch) = fallback {
                watch.record(false);
            }
        }
    }
}

/// Asks one by one about every message still without an answer. `fallback`: these lookups stand in for a
/// bulk question that failed; each counts toward the cycle's watch, and they stop once it stops falling back.
/// Many lookups (a dead batch of thousands) go in parts at once, at most `--concurrency`, like every request
/// within the process's bound on requests in flight: a thousand at 20 ms take a quarter of a second, not 20.
fn one_by_one(carrier: &Carrier, asked: &mut Asked, fallback: Option<&Fallback>) {
    let todo: Vec<usize> = (0..asked.answers.len())
        .filter(|&i| asked.answers[i].is_none())
        .collect();
    let parts = (todo.len() / LOOKUPS_PER_PART).clamp(1, carrier.http.concurrency().max(1));
    let messages = &asked.job.messages;
    let results: Vec<(usize, Result<Option<Report>, FetchError>)> = if parts == 1 {
        lookups(carrier, messages, &todo, fallback)
    } else {
        let size = todo.len().div_ceil(parts);
        std::thread::scope(|scope| {
            let handles: Vec<_> = todo
                .chunks(size)
                .map(|part| scope.spawn(move || lookups(carrier, messages, part, fallback)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut stopped = false;
    for (i, result) in results {
        match result {
            Ok(Some(report)) => asked.answers[i] = Some(Answer::Reported(report)),
            Ok(None) => asked.answers[i] = Some(Answer::NotFound),
            Err(FetchError::Refused { code, reason }) => {
                asked.answers[i] = Some(Answer::Refused { code, reason })
            }
            Err(e @ (FetchError::Deadline | FetchError::Stopped)) => {
                stopped = true;
                asked.lookup_error.get_or_insert(e);
            }
            Err(e) => {
                asked.lookup_failures += 1;
                if e.is_carriers_failure() {
                    asked.errors[i] = Some(e.to_string());
                }
                asked.lookup_error.get_or_insert(e);
            }
        }
    }
    // A cycle that stopped first leaves the job cut short: what it did not ask stays due, its unit not done.
    asked.cut_short = stopped;
}

/// Lookups of one part, in turn: the message at each of `indices`, until the cycle stops, the credentials are
/// rejected (every further request would fail too) or the watch stops falling back.
fn lookups(
    carrier: &Carrier,
    messages: &[DueMessage],
    indices: &[usize],
    fallback: Option<&Fallback>,
) -> Vec<(usize, Result<Option<Report>, FetchError>)> {
    let mut results = Vec::with_capacity(indices.len());
    for &i in indices {
        if fallback.is_some_and(Fallback::stopped) {
            break;
        }
        let result = carrier.one(&messages[i]);
        if let Some(watch) = fallback {
            match &result {
                Ok(_) | Err(FetchError::Refused { .. }) => watch.record(true),
                Err(FetchError::Failed { .. } | FetchError::Unusable { .. }) => watch.record(false),
                Err(_) => {}
            }
        }
        let last = matches!(&result, Err(e) if !e.is_carriers_failure() && !matches!(e, FetchError::Refused { .. }));
        results.push((i, result));
        if last {
            break;
        }
    }
    results
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
    if messages.iter().all(|m| !m.new) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_new_messages_are_dropped_from_a_job() {
        let message = |id: &str, row: &str, new: bool| DueMessage {
            tracking_id: id.to_string(),
            customer_id: Some(row.to_string()),
            phone_number: None,
            batch_id: None,
            submitted_at: DateTime::UNIX_EPOCH,
            polls: 0,
            new,
        };
        let mut job = vec![
            message("A", "1", true),
            message("B", "2", true),
            message("A", "3", true),
            message("C", "4", true),
            message("B", "5", true),
        ];
        assert_eq!(drop_repeats(&mut job), ["A", "B"]);
        let kept: Vec<_> = job.iter().map(|m| m.customer_id.as_deref()).collect();
        assert_eq!(kept, [Some("1"), Some("2"), Some("4")]);
        // Tracked messages are unique by their primary key: nothing to look for.
        let mut tracked = vec![message("A", "1", false), message("B", "2", false)];
        assert!(drop_repeats(&mut tracked).is_empty());
        assert_eq!(tracked.len(), 2);
    }
}
