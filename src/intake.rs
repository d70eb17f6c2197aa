//! Reading new submissions: the rows of sms_submissions after the read position, sorted into messages to poll
//! now, submissions to start tracking without a poll, and rows to read again next cycle.
//!
//! A submission is taken in when it is first due: its tracking row is written together with its first result,
//! one write instead of an insert now and an update two hours later. Until then it is only read. The read
//! position moves over a row once it is tracked (or cannot be tracked), so a row not yet due, or whose batch
//! failed, is read again by the next cycle.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use chrono::{DateTime, TimeDelta, Utc};

use crate::control::Control;
use crate::schedule;
use crate::store::{DueMessage, Intake, ReadStart, Store, Submission};
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

/// What becomes of one row of sms_submissions in this cycle.
#[derive(Debug, PartialEq)]
pub enum Fate {
    /// Tracked already (or a second row with a tracking id tracked already): nothing to do.
    Tracked,
    /// No tracking id: it cannot be tracked or polled.
    Untrackable,
    /// Start tracking it without a poll: its submission time is unusable, or in the future.
    TakeIn(Intake),
    /// Due now: poll it; its tracking row is written with the result.
    Due(DueMessage),
    /// Due at a later cycle: read it again then.
    NotYet,
}

/// Decides what becomes of a row read at `now`. Logs what is wrong with the row, unless an earlier cycle that
/// read the row has (`start.reported`).
pub fn fate(row: Submission, now: DateTime<Utc>, start: ReadStart) -> Fate {
    let report = row.rowid > start.reported;
    let Some(tracking_id) = row.tracking_id.filter(|t| !t.trim().is_empty()) else {
        if report {
            log::warn!(
                "sms_submissions row {} has no tracking_id; it cannot be tracked",
                row.rowid
            );
        }
        return Fate::Untrackable;
    };
    if let Some(from) = row.tracked_from {
        // On a rescan every tracked row is met again; otherwise this is a second row with the same id.
        if report && !start.rescan && from != row.rowid {
            crate::store::warn_repeated(&tracking_id);
        }
        return Fate::Tracked;
    }
    let batch_id = row.batch_id.filter(|b| !b.trim().is_empty());
    let submitted_at = match row.submitted_at {
        Ok(at) => at,
        Err(e) => {
            log::warn!("submission {tracking_id:?} cannot be tracked: {e}");
            return Fate::TakeIn(Intake {
                rowid: row.rowid,
                tracking_id,
                batch_id,
                submitted_at: None,
                note: Some(e),
            });
        }
    };
    if schedule::first_due(submitted_at) <= schedule::cutoff(now) {
        return Fate::Due(DueMessage {
            tracking_id,
            customer_id: row.customer_id,
            phone_number: row.phone_number,
            batch_id,
            submitted_at,
            polls: 0,
            intake: Some(row.rowid),
        });
    }
    if submitted_at > now + FUTURE_MARGIN {
        // Taken in now, so that the read position does not wait for it.
        log::warn!(
            "submission {tracking_id:?} has submitted_at {} in the future (clock {}); it is first due two hours \
             after that",
            timefmt::format(submitted_at),
            timefmt::format(now)
        );
        return Fate::TakeIn(Intake {
            rowid: row.rowid,
            tracking_id,
            batch_id,
            submitted_at: Some(submitted_at),
            note: None,
        });
    }
    Fate::NotYet
}

/// How reading the new submissions ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadEnd {
    /// Every row after the start was read (the cycle did not stop first).
    pub complete: bool,
    pub rows: u64,
    /// The last rowid read.
    pub last_read: Option<i64>,
    /// Rows without a tracking id or with an unusable submission time (not counting those an earlier cycle
    /// reported).
    pub invalid: u64,
    /// Rows due at a later cycle.
    pub not_yet: u64,
    /// The rowid of the last of the leading rows that are all tracked, or cannot be tracked, or are taken in
    /// by this cycle: where the read position may move.
    pub passed: Option<i64>,
    /// The same, counting also rows handed out for polling: where the position may move once every one of
    /// them is stored.
    pub reached: Option<i64>,
}

/// A job of new messages: their batch id (`None`: look them up one by one) and the messages.
pub type Group = (Option<String>, Vec<DueMessage>);

/// Reads the rows after `start`, hands due messages to `poll` a batch at a time and submissions to take in to
/// `take_in` a chunk at a time; each returns false when the cycle is stopping. `claimed` counts the due
/// messages found, as they are found.
pub fn read(
    store: &Store,
    start: ReadStart,
    now: DateTime<Utc>,
    control: &Control,
    claimed: &AtomicU64,
    poll: &mut impl FnMut(Group) -> bool,
    mut take_in: impl FnMut(Vec<Intake>) -> bool,
) -> Result<ReadEnd> {
    let mut end = ReadEnd::default();
    let mut gather = Gatherer::default();
    let (mut passing, mut reaching) = (true, true);
    let mut after = start.after;
    let mut open = true;
    while open {
        if control.stopped().is_some() {
            return Ok(end);
        }
        let rows = store.submissions_after(after, READ_CHUNK)?;
        let Some(last) = rows.last() else { break };
        after = last.rowid;
        let more = rows.len() == READ_CHUNK;
        let mut intakes = Vec::new();
        for row in rows {
            end.rows += 1;
            let rowid = row.rowid;
            end.last_read = Some(rowid);
            let unreported = rowid > start.reported;
            match fate(row, now, start) {
                Fate::Tracked => {}
                Fate::Untrackable => end.invalid += u64::from(unreported),
                Fate::TakeIn(intake) => {
                    end.invalid += u64::from(unreported && intake.submitted_at.is_none());
                    intakes.push(intake);
                }
                Fate::Due(message) => {
                    passing = false;
                    claimed.fetch_add(1, Ordering::Relaxed);
                    if open {
                        open = gather.add(message, poll);
                    }
                }
                Fate::NotYet => {
                    (passing, reaching) = (false, false);
                    end.not_yet += 1;
                }
            }
            if passing {
                end.passed = Some(rowid);
            }
            if reaching {
                end.reached = Some(rowid);
            }
        }
        if !intakes.is_empty() && !take_in(intakes) {
            return Ok(end);
        }
        if !more {
            break;
        }
    }
    end.complete = open && gather.finish(poll);
    Ok(end)
}

/// Gathers due messages into jobs: a batch's messages together, messages without a batch in chunks.
#[derive(Default)]
pub struct Gatherer {
    open: VecDeque<Group>,
    held: usize,
}

impl Gatherer {
    /// Adds a message; hands out the groups that are complete or that no longer fit. False once `poll` is.
    pub fn add(&mut self, message: DueMessage, poll: &mut impl FnMut(Group) -> bool) -> bool {
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
        if group.0.is_none() && group.1.len() >= LOOKUP_CHUNK {
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
            rowid,
            tracking_id: id.map(str::to_string),
            customer_id: None,
            phone_number: None,
            batch_id: batch.map(str::to_string),
            submitted_at: match submitted {
                None => Err("submitted_at is NULL".to_string()),
                Some(s) => timefmt::parse(s).map_err(|e| format!("{e:#}")),
            },
            tracked_from: None,
        }
    }

    const NOW: &str = "2025-12-01T11:00:00Z";
    const START: ReadStart = ReadStart {
        after: 0,
        rescan: false,
        reported: 0,
    };

    #[test]
    fn each_kind_of_row_has_its_fate() {
        let now = at(NOW);
        let due = fate(
            row(1, Some("T1"), Some(" "), Some("2025-12-01T09:00:00+00:00")),
            now,
            START,
        );
        let Fate::Due(m) = due else { panic!("{due:?}") };
        assert_eq!((m.intake, m.polls, m.batch_id), (Some(1), 0, None));
        // Due within the schedule's grace.
        assert!(matches!(
            fate(
                row(2, Some("T2"), None, Some("2025-12-01T09:04:00Z")),
                now,
                START
            ),
            Fate::Due(_)
        ));
        assert_eq!(
            fate(
                row(3, Some("T3"), None, Some("2025-12-01T09:06:00Z")),
                now,
                START
            ),
            Fate::NotYet
        );
        assert_eq!(
            fate(row(4, None, None, Some("2025-12-01T09:00:00Z")), now, START),
            Fate::Untrackable
        );
        assert_eq!(
            fate(row(5, Some("  "), None, None), now, START),
            Fate::Untrackable
        );
        let Fate::TakeIn(bad) = fate(row(6, Some("T6"), Some("B"), Some("soon")), now, START)
        else {
            panic!()
        };
        assert_eq!(
            (bad.submitted_at, bad.batch_id.as_deref()),
            (None, Some("B"))
        );
        assert!(
            bad.note
                .unwrap()
                .contains("\"soon\" is not an RFC 3339 timestamp")
        );
        let Fate::TakeIn(null) = fate(row(7, Some("T7"), None, None), now, START) else {
            panic!()
        };
        assert_eq!(null.note.as_deref(), Some("submitted_at is NULL"));
        let Fate::TakeIn(future) = fate(
            row(8, Some("T8"), None, Some("2025-12-01T12:01:00Z")),
            now,
            START,
        ) else {
            panic!()
        };
        assert_eq!(future.submitted_at, Some(at("2025-12-01T12:01:00Z")));
        // Up to an hour ahead is clock skew, not the future: it waits for its slot like any other.
        assert_eq!(
            fate(
                row(9, Some("T9"), None, Some("2025-12-01T11:59:00Z")),
                now,
                START
            ),
            Fate::NotYet
        );
        let mut tracked = row(10, Some("T10"), None, Some("2025-12-01T09:00:00Z"));
        tracked.tracked_from = Some(3);
        assert_eq!(fate(tracked, now, START), Fate::Tracked);
    }

    fn message(id: usize, batch: Option<&str>) -> DueMessage {
        DueMessage {
            tracking_id: format!("T{id}"),
            customer_id: None,
            phone_number: None,
            batch_id: batch.map(str::to_string),
            submitted_at: at(NOW),
            polls: 0,
            intake: Some(id as i64),
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
    fn a_stop_is_passed_on() {
        let mut gatherer = Gatherer::default();
        let mut refuse = |_: Group| false;
        for i in 0..LOOKUP_CHUNK - 1 {
            assert!(gatherer.add(message(i, None), &mut refuse));
        }
        assert!(!gatherer.add(message(99, None), &mut refuse));
    }
}
