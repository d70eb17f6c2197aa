//! Reading new submissions: the rows of sms_submissions not tracked yet, sorted into messages to poll now,
//! submissions to start tracking without a poll, and rows to read again next cycle.
//!
//! There is no read position to go wrong: a cycle reads every submission of the tracking window (by
//! submitted_at) and takes in those whose tracking id it does not track yet. Whatever the dispatcher did
//! meanwhile (rows committed late or out of id order, deleted and inserted again, replaced, a tracking id filled
//! in later, the table vacuumed), a row of the window that is not tracked is found by the next cycle. Rows older
//! than the window are read once, the first time they are below it (all of them on the first run): a row first
//! seen there is recorded as too old to track and never polled. Every read is a short one of
//! [`READ_CHUNK`] rows.
//!
//! A submission is taken in when it is first due: its tracking row is written together with its first result,
//! one write instead of an insert now and an update two hours later. Until then it is only read.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use chrono::{DateTime, TimeDelta, Utc};

use crate::control::Control;
use crate::domain::{DueMessage, Intake, IntakeKind, LoneJobs, Submission};
use crate::phases::Phase;
use crate::schedule;
use crate::store::{Backend, Span};
use crate::timefmt;

/// Rows read per query: each query is a short read, so the WAL can be checkpointed while a cycle reads.
const READ_CHUNK: usize = 10_000;
/// Messages without a batch id are asked for one by one, in jobs of this many: small, so that the last jobs
/// of a cycle spread over every worker.
const LOOKUP_CHUNK: usize = 10;
/// Batches gathered at once. The dispatch system usually writes a batch's rows together; when batches are
/// interleaved, gathering several keeps them whole (one listing per batch) within this bound.
const OPEN_BATCHES: usize = 64;
/// Messages held while gathering batches, at most (a single larger batch is still handed out whole).
const MAX_HELD: usize = 100_000;
/// A submission dated further ahead than this is reported as being in the future.
const FUTURE_MARGIN: TimeDelta = TimeDelta::hours(1);
/// submitted_at is compared as stored in the queries: a value with an offset (`+02:00`) sorts up to 14 hours
/// away from its instant, so the queries reach this much further back, and the parsed time decides.
const OFFSET_MARGIN: TimeDelta = TimeDelta::days(1);

/// Which submissions a cycle reads, and which of them are too old to track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// A submission first seen with a submitted_at before this is too old to track: 72 h + the catch-up margin
    /// before the cycle's clock.
    pub start: DateTime<Utc>,
    /// The catch-up margin, for the notes.
    pub catch_up: TimeDelta,
    /// The queries' lower bound on submitted_at as stored: `start` less the offset margin.
    pub floor: String,
    /// How far back earlier cycles have read every row (`None`: never).
    pub horizon: Option<String>,
    /// How messages without a batch are cut into jobs: as the carrier's bulk question covers them well.
    pub lone: LoneJobs,
}

impl Window {
    pub fn new(now: DateTime<Utc>, catch_up: TimeDelta, horizon: Option<String>) -> Window {
        let start = now - schedule::INTERVAL * schedule::SLOTS as i32 - catch_up;
        Window {
            start,
            catch_up,
            floor: timefmt::format(start - OFFSET_MARGIN),
            horizon,
            lone: LoneJobs::of(LOOKUP_CHUNK),
        }
    }

    /// The reads of a cycle: the window first (current messages never wait behind old ones), then what is
    /// older than it and was not read before.
    pub fn spans(&self) -> Vec<Span> {
        let mut spans = vec![Span::From(self.floor.clone())];
        match &self.horizon {
            None => spans.extend([Span::Below(self.floor.clone()), Span::Null]),
            Some(h) if *h < self.floor => spans.push(Span::Between(h.clone(), self.floor.clone())),
            Some(_) => {}
        }
        spans
    }
}

/// What becomes of one row of sms_submissions in this cycle.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Tracked already: nothing to do.
    Tracked,
    /// No tracking id: it cannot be tracked or polled (read again next cycle, in case it gets one).
    Untrackable,
    /// Start tracking it without a poll.
    TakeIn(Intake),
    /// Due now: poll it; its tracking row is written with the result.
    Due(DueMessage),
    /// Due at a later cycle: read it again then.
    NotYet,
}

/// Decides what becomes of a row read at `now`. Logs what is wrong with a row that is taken in as INVALID (once:
/// it is tracked afterwards).
pub fn verdict(row: Submission, now: DateTime<Utc>, window: &Window) -> Verdict {
    let Some(tracking_id) = row.tracking_id.filter(|t| Submission::trackable(Some(t))) else {
        return Verdict::Untrackable;
    };
    if row.tracked {
        return Verdict::Tracked;
    }
    let batch_id = row.batch_id.filter(|b| !b.trim().is_empty());
    let intake = |submitted_at, kind| {
        Verdict::TakeIn(Intake {
            tracking_id: tracking_id.clone(),
            customer_id: row.customer_id.clone(),
            phone_number: row.phone_number.clone(),
            batch_id: batch_id.clone(),
            submitted_at,
            kind,
        })
    };
    let submitted_at = match row.submitted_at {
        Ok(at) => at,
        Err(e) => {
            // The dispatcher's value is quoted: a number typed into the wrong column is masked.
            let e = crate::redact::mask_owned(e);
            log::warn!("submission {tracking_id:?} cannot be tracked: {e}");
            return intake(None, IntakeKind::Invalid(e));
        }
    };
    if !schedule::in_range(submitted_at) {
        let reason = format!(
            "submitted_at {} is out of range: its 72 hours of polls would not end before year 10000",
            timefmt::format(submitted_at)
        );
        log::warn!("submission {tracking_id:?} cannot be tracked: {reason}");
        return intake(None, IntakeKind::Invalid(reason));
    }
    if submitted_at < window.start {
        let note = format!(
            "first seen at {}, more than 72h + the catch-up margin ({}) after submission: too old to track",
            timefmt::format(now),
            timefmt::humanize(window.catch_up.to_std().unwrap_or_default())
        );
        return intake(Some(submitted_at), IntakeKind::TooOld(note));
    }
    if schedule::first_due(submitted_at) <= schedule::cutoff(now) {
        return Verdict::Due(DueMessage {
            customer_id: row.customer_id,
            phone_number: row.phone_number,
            tracking_id,
            batch_id,
            submitted_at,
            polls: 0,
            new: true,
        });
    }
    if submitted_at > now + FUTURE_MARGIN {
        // Taken in now, with a warning: it would otherwise be read again every cycle until it is due.
        log::warn!(
            "submission {tracking_id:?} has submitted_at {} in the future (clock {}); it is first due two hours \
             after that",
            timefmt::format(submitted_at),
            timefmt::format(now)
        );
        return intake(Some(submitted_at), IntakeKind::Future);
    }
    Verdict::NotYet
}

/// How reading the new submissions ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadEnd {
    /// Every row was read (the cycle did not stop first): the horizon may move.
    pub complete: bool,
    pub rows: u64,
    /// Rows without a tracking id, or with an unusable submission time (taken in as INVALID now).
    pub invalid: u64,
    /// Rows without a tracking id.
    pub untrackable: u64,
    /// The first of them, as the store names it, for the log.
    pub first_untrackable: Option<String>,
    /// Rows due at a later cycle.
    pub not_yet: u64,
    /// Due messages of interleaved batches, taken in to be polled with the tracked messages.
    pub deferred: u64,
}

/// A job of new messages: their batch id (`None`: look them up one by one) and the messages.
pub type Group = (Option<String>, Vec<DueMessage>);

/// Reads the submissions of `window` not tracked yet, hands due messages to `poll` a batch at a time and
/// submissions to take in to `take_in` a chunk at a time; each returns false when the cycle is stopping.
/// `claimed` counts the due messages found, as they are found.
pub fn read(
    store: &mut dyn Backend,
    window: &Window,
    now: DateTime<Utc>,
    control: &Control,
    claimed: &AtomicU64,
    poll: &mut impl FnMut(Group) -> bool,
    mut take_in: impl FnMut(Vec<Intake>) -> bool,
) -> Result<ReadEnd> {
    let mut end = ReadEnd::default();
    let started = std::time::Instant::now();
    let mut reading = std::time::Duration::ZERO;
    let mut gather = Gatherer::for_intake().with_lone(window.lone);
    let mut open = true;
    for span in window.spans() {
        let mut cursor = span.start();
        loop {
            if control.stopped().is_some() {
                return Ok(end);
            }
            let query = std::time::Instant::now();
            let rows =
                Phase::ReadSubmissions.time(|| store.submissions(&span, &cursor, READ_CHUNK))?;
            reading += query.elapsed();
            let more = rows.len() == READ_CHUNK;
            let mut intakes = Vec::new();
            for (row, at) in rows {
                end.rows += 1;
                let place = row.place.clone();
                cursor = at;
                match verdict(row, now, window) {
                    Verdict::Tracked => {}
                    Verdict::Untrackable => {
                        end.invalid += 1;
                        end.untrackable += 1;
                        if end.first_untrackable.is_none() {
                            end.first_untrackable = place;
                        }
                    }
                    Verdict::TakeIn(intake) => {
                        end.invalid += u64::from(matches!(intake.kind, IntakeKind::Invalid(_)));
                        intakes.push(intake);
                    }
                    Verdict::Due(message) => {
                        claimed.fetch_add(1, Ordering::Relaxed);
                        if open {
                            open = gather.add(message, poll);
                        }
                    }
                    Verdict::NotYet => end.not_yet += 1,
                }
            }
            let deferred = gather.take_deferred();
            claimed.fetch_sub(deferred.len() as u64, Ordering::Relaxed);
            end.deferred += deferred.len() as u64;
            intakes.extend(deferred.into_iter().map(Intake::due));
            if !intakes.is_empty() && !take_in(intakes) {
                return Ok(end);
            }
            if !more {
                break;
            }
        }
    }
    end.complete = open && gather.finish(poll);
    log::debug!(
        "read {} submissions in {:.2}s, {:.2}s of it in the database",
        end.rows,
        started.elapsed().as_secs_f64(),
        reading.as_secs_f64()
    );
    Ok(end)
}

/// Gathers due messages into jobs: a batch's messages together, messages without a batch in chunks.
#[derive(Default)]
pub struct Gatherer {
    open: VecDeque<Group>,
    held: usize,
    /// Messages without a batch per job (0: [`LOOKUP_CHUNK`]).
    chunk: usize,
    /// A job of messages without a batch holds one minute of submissions.
    by_minute: bool,
    /// Gathering new submissions: watch for interleaved batches.
    intake: Option<Interleaving>,
}

/// New submissions come in (submitted_at, tracking_id) order. A send's batches usually follow one another, but
/// batches submitted at the same instant come interleaved (their rows sorted by tracking id): each would then be
/// handed out in many pieces, one listing per piece. Once a batch turns up again after it was handed out, every
/// batched message of the rest of the read is set aside instead, to be taken in and polled with the tracked
/// messages, where each batch is read whole: one more listing for the batches handed out before, one for each
/// of the others.
#[derive(Default)]
struct Interleaving {
    handed: HashSet<String>,
    deferring: bool,
    deferred: Vec<DueMessage>,
}

impl Gatherer {
    /// A gatherer for new submissions, which sets the messages of interleaved batches aside.
    pub fn for_intake() -> Gatherer {
        Gatherer {
            intake: Some(Interleaving::default()),
            ..Gatherer::default()
        }
    }

    /// Hands out messages without a batch in jobs cut as `lone` says.
    pub fn with_lone(mut self, lone: LoneJobs) -> Gatherer {
        self.chunk = lone.chunk;
        self.by_minute = lone.by_minute;
        self
    }

    /// The messages set aside since the last call.
    pub fn take_deferred(&mut self) -> Vec<DueMessage> {
        self.intake
            .as_mut()
            .map(|i| std::mem::take(&mut i.deferred))
            .unwrap_or_default()
    }

    /// Adds a message; hands out the groups that are complete or that no longer fit. False once `poll` is.
    pub fn add(&mut self, message: DueMessage, poll: &mut impl FnMut(Group) -> bool) -> bool {
        if let (Some(i), Some(batch)) = (&mut self.intake, &message.batch_id)
            && (i.deferring || i.handed.contains(batch))
        {
            if !i.deferring {
                i.deferring = true;
                // The batches still open may be interleaved as well.
                let (batched, rest): (VecDeque<Group>, VecDeque<Group>) =
                    self.open.drain(..).partition(|g| g.0.is_some());
                for (_, messages) in batched {
                    self.held -= messages.len();
                    i.deferred.extend(messages);
                }
                self.open = rest;
            }
            i.deferred.push(message);
            return true;
        }
        // Messages come in submission order: a job of one minute is complete once the next minute begins.
        if self.by_minute
            && message.batch_id.is_none()
            && let Some(at) = self.open.iter().rposition(|g| g.0.is_none())
            && self.open[at]
                .1
                .last()
                .is_some_and(|last| last.minute() != message.minute())
        {
            let group = self.open.remove(at).unwrap_or_default();
            self.held -= group.1.len();
            if !poll(group) {
                return false;
            }
        }
        let at = match self.open.iter().rposition(|g| g.0 == message.batch_id) {
            Some(at) => at,
            None => {
                if self.open.len() == OPEN_BATCHES && !self.hand_out_oldest(poll) {
                    return false;
                }
                self.open.push_back((message.batch_id.clone(), Vec::new()));
                self.open.len() - 1
            }
        };
        let group = &mut self.open[at];
        group.1.push(message);
        self.held += 1;
        let chunk = if self.chunk == 0 {
            LOOKUP_CHUNK
        } else {
            self.chunk
        };
        if group.0.is_none() && group.1.len() >= chunk {
            let group = self.open.remove(at).unwrap_or_default();
            self.held -= group.1.len();
            if !poll(group) {
                return false;
            }
        }
        while self.held > MAX_HELD && self.open.len() > 1 {
            if !self.hand_out_oldest(poll) {
                return false;
            }
        }
        true
    }

    fn hand_out_oldest(&mut self, poll: &mut impl FnMut(Group) -> bool) -> bool {
        match self.open.pop_front() {
            Some(group) => {
                self.held -= group.1.len();
                if let (Some(i), Some(batch)) = (&mut self.intake, &group.0) {
                    i.handed.insert(batch.clone());
                }
                poll(group)
            }
            None => true,
        }
    }

    /// Hands out every group still open.
    pub fn finish(&mut self, poll: &mut impl FnMut(Group) -> bool) -> bool {
        while !self.open.is_empty() {
            if !self.hand_out_oldest(poll) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        timefmt::parse(s).unwrap()
    }

    fn row(
        rowid: i64,
        id: Option<&str>,
        batch: Option<&str>,
        submitted: Option<&str>,
    ) -> Submission {
        Submission {
            place: Some(format!("rowid {rowid}")),
            tracking_id: id.map(str::to_string),
            customer_id: Some("C1".into()),
            phone_number: None,
            batch_id: batch.map(str::to_string),
            submitted_at: match submitted {
                None => Err("submitted_at is NULL".to_string()),
                Some(s) => timefmt::parse(s).map_err(|e| format!("{e:#}")),
            },
            tracked: false,
        }
    }

    const NOW: &str = "2025-12-01T11:00:00Z";

    fn window() -> Window {
        Window::new(at(NOW), TimeDelta::hours(24), None)
    }

    #[test]
    fn each_kind_of_row_has_its_verdict() {
        let (now, w) = (at(NOW), window());
        let judge = |r| verdict(r, now, &w);
        let due = judge(row(
            1,
            Some("T1"),
            Some(" "),
            Some("2025-12-01T09:00:00+00:00"),
        ));
        let Verdict::Due(m) = due else {
            panic!("{due:?}")
        };
        assert_eq!((m.new, m.polls, m.batch_id), (true, 0, None));
        assert_eq!(m.customer_id.as_deref(), Some("C1"));
        // Due within the schedule's grace.
        assert!(matches!(
            judge(row(2, Some("T2"), None, Some("2025-12-01T09:04:00Z"))),
            Verdict::Due(_)
        ));
        assert_eq!(
            judge(row(3, Some("T3"), None, Some("2025-12-01T09:06:00Z"))),
            Verdict::NotYet
        );
        assert_eq!(
            judge(row(4, None, None, Some("2025-12-01T09:00:00Z"))),
            Verdict::Untrackable
        );
        assert_eq!(judge(row(5, Some("  "), None, None)), Verdict::Untrackable);
        let Verdict::TakeIn(bad) = judge(row(6, Some("T6"), Some("B"), Some("soon"))) else {
            panic!()
        };
        assert_eq!(
            (bad.submitted_at, bad.batch_id.as_deref()),
            (None, Some("B"))
        );
        let IntakeKind::Invalid(note) = bad.kind else {
            panic!()
        };
        assert!(
            note.contains("\"soon\" is not an RFC 3339 timestamp"),
            "{note}"
        );
        let Verdict::TakeIn(null) = judge(row(7, Some("T7"), None, None)) else {
            panic!()
        };
        assert_eq!(
            null.kind,
            IntakeKind::Invalid("submitted_at is NULL".into())
        );
        let Verdict::TakeIn(future) = judge(row(8, Some("T8"), None, Some("2025-12-01T12:01:00Z")))
        else {
            panic!()
        };
        assert_eq!(future.submitted_at, Some(at("2025-12-01T12:01:00Z")));
        assert_eq!(future.kind, IntakeKind::Future);
        // Up to an hour ahead is clock skew, not the future: it waits for its slot like any other.
        assert_eq!(
            judge(row(9, Some("T9"), None, Some("2025-12-01T11:59:00Z"))),
            Verdict::NotYet
        );
        let mut tracked = row(10, Some("T10"), None, Some("2025-12-01T09:00:00Z"));
        tracked.tracked = true;
        assert_eq!(judge(tracked), Verdict::Tracked);
    }

    #[test]
    fn the_window_is_72_hours_and_the_catch_up_margin() {
        let (now, w) = (at(NOW), window());
        assert_eq!(w.start, at("2025-11-27T11:00:00Z"));
        // 95 hours old: past its last slot, but inside the margin: one overdue poll.
        let overdue = row(1, Some("T1"), None, Some("2025-11-27T12:00:00Z"));
        assert!(matches!(verdict(overdue, now, &w), Verdict::Due(_)));
        // 97 hours old when first seen: recorded, never polled.
        let old = row(2, Some("T2"), Some("B"), Some("2025-11-27T10:00:00Z"));
        let Verdict::TakeIn(old) = verdict(old, now, &w) else {
            panic!()
        };
        let IntakeKind::TooOld(note) = old.kind else {
            panic!()
        };
        assert_eq!(
            note,
            "first seen at 2025-12-01T11:00:00Z, more than 72h + the catch-up margin (24h) after submission: \
             too old to track"
        );
        // A larger margin backfills it.
        let wide = Window::new(now, TimeDelta::days(30), None);
        let old = row(2, Some("T2"), Some("B"), Some("2025-11-27T10:00:00Z"));
        assert!(matches!(verdict(old, now, &wide), Verdict::Due(_)));
    }

    #[test]
    fn the_first_read_covers_the_whole_table_and_later_ones_what_fell_out_of_the_window() {
        let w = window();
        // A day more than the window, for values stored with an offset.
        assert_eq!(w.floor, "2025-11-26T11:00:00Z");
        assert_eq!(
            w.spans(),
            [
                Span::From(w.floor.clone()),
                Span::Below(w.floor.clone()),
                Span::Null
            ]
        );
        let later = Window::new(
            at(NOW),
            TimeDelta::hours(24),
            Some("2025-11-26T09:00:00Z".into()),
        );
        assert_eq!(
            later.spans(),
            [
                Span::From(later.floor.clone()),
                Span::Between("2025-11-26T09:00:00Z".into(), later.floor.clone())
            ]
        );
        let same = Window::new(at(NOW), TimeDelta::hours(24), Some(w.floor.clone()));
        assert_eq!(same.spans(), [Span::From(w.floor.clone())]);
    }

    fn message(id: usize, batch: Option<&str>) -> DueMessage {
        DueMessage {
            tracking_id: format!("T{id}"),
            customer_id: None,
            phone_number: None,
            batch_id: batch.map(str::to_string),
            submitted_at: at(NOW),
            polls: 0,
            new: true,
        }
    }

    fn gather(messages: Vec<DueMessage>) -> Vec<(Option<String>, usize)> {
        let mut out = Vec::new();
        let mut poll = |g: Group| {
            out.push((g.0, g.1.len()));
            true
        };
        let mut gatherer = Gatherer::default();
        for m in messages {
            assert!(gatherer.add(m, &mut poll));
        }
        assert!(gatherer.finish(&mut poll));
        out
    }

    #[test]
    fn interleaved_batches_are_handed_out_whole() {
        let batches = ["A", "B", "C"];
        let messages = (0..300).map(|i| message(i, Some(batches[i % 3]))).collect();
        let out = gather(messages);
        let want: Vec<_> = batches.iter().map(|b| (Some(b.to_string()), 100)).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn messages_without_a_batch_go_in_chunks() {
        let messages = (0..LOOKUP_CHUNK * 2 + 3)
            .map(|i| message(i, None))
            .collect();
        assert_eq!(
            gather(messages),
            [(None, LOOKUP_CHUNK), (None, LOOKUP_CHUNK), (None, 3)]
        );
    }

    #[test]
    fn the_oldest_batch_goes_when_too_many_are_open() {
        let messages = (0..OPEN_BATCHES + 1)
            .map(|i| message(i, Some(&format!("B{i}"))))
            .collect::<Vec<_>>();
        let mut out = Vec::new();
        let mut gatherer = Gatherer::default();
        for m in messages {
            assert!(gatherer.add(m, &mut |g: Group| {
                out.push(g.0);
                true
            }));
        }
        assert_eq!(out, [Some("B0".to_string())]);
    }

    #[test]
    fn the_oldest_batch_goes_when_too_many_messages_are_held() {
        let mut out = Vec::new();
        let mut gatherer = Gatherer::default();
        let (a, b) = (MAX_HELD * 3 / 5, MAX_HELD / 2);
        for i in 0..a + b {
            let batch = if i < a { "A" } else { "B" };
            assert!(gatherer.add(message(i, Some(batch)), &mut |g: Group| {
                out.push((g.0, g.1.len()));
                true
            }));
        }
        assert_eq!(out, [(Some("A".to_string()), a)]);
        assert_eq!(gatherer.held, b);
    }

    #[test]
    fn interleaved_batches_of_new_messages_are_set_aside_once_one_comes_back() {
        let mut out = Vec::new();
        let mut gatherer = Gatherer::for_intake();
        // More batches than can be open at once, each row of a batch after the previous batch's row.
        let batches = OPEN_BATCHES + 2;
        for i in 0..batches * 3 {
            let batch = format!("B{:03}", i % batches);
            assert!(gatherer.add(message(i, Some(&batch)), &mut |g: Group| {
                out.push((g.0, g.1.len()));
                true
            }));
        }
        // Batches B000 and B001 went out with their first row, before B000 came back; everything after that,
        // and the batches still open then, is set aside for the tracked phase.
        assert_eq!(
            out,
            [(Some("B000".to_string()), 1), (Some("B001".to_string()), 1)]
        );
        assert_eq!(gatherer.take_deferred().len(), batches * 3 - 2);
        assert!(gatherer.take_deferred().is_empty());
        // Messages without a batch are looked up as before.
        for i in 0..LOOKUP_CHUNK {
            assert!(gatherer.add(message(i, None), &mut |g: Group| {
                out.push((g.0, g.1.len()));
                true
            }));
        }
        assert_eq!(out.last(), Some(&(None, LOOKUP_CHUNK)));
        assert!(gatherer.finish(&mut |_| true));
    }

    #[test]
    fn batches_that_follow_one_another_are_never_set_aside() {
        let mut gatherer = Gatherer::for_intake();
        let mut handed = 0;
        for i in 0..(OPEN_BATCHES * 4) * 5 {
            let batch = format!("B{:03}", i / 5);
            assert!(gatherer.add(message(i, Some(&batch)), &mut |g: Group| {
                assert_eq!(g.1.len(), 5);
                handed += 1;
                true
            }));
        }
        assert!(gatherer.finish(&mut |g: Group| {
            assert_eq!(g.1.len(), 5);
            handed += 1;
            true
        }));
        assert_eq!(handed, OPEN_BATCHES * 4);
        assert!(gatherer.take_deferred().is_empty());
    }

    #[test]
    fn a_stop_is_passed_on() {
        let mut gatherer = Gatherer::default();
        let mut refuse = |_: Group| false;
        for i in 0..LOOKUP_CHUNK - 1 {
            assert!(gatherer.add(message(i, None), &mut refuse));
        }
        assert!(!gatherer.add(message(99, None), &mut refuse));
    }
}
