//! The polling schedule: which messages a cycle polls, and when each is due next.
//!
//! Every message has its own grid of 36 slots, `submitted_at + 2h * k` for k = 1..=36, so it is checked every
//! two hours for 72 hours whatever the job's own timing. A cycle at `now` polls a message whose next slot is at
//! or before `now + 5 min`; that poll covers every slot up to that point (missed slots collapse into one poll)
//! and the next slot is the first one after it. Pure functions only: the store and the cycle call them.

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::DeliveryStatus;

/// Time between two polls of a message.
pub const INTERVAL: TimeDelta = TimeDelta::hours(2);
/// Polls per message; the last is at +72h.
pub const SLOTS: i64 = 36;
/// How far ahead of `now` a slot still counts as due, so that a run that fires a little early, or a submission
/// a few seconds after the hour, does not push a poll back by a whole interval.
pub const GRACE: TimeDelta = TimeDelta::minutes(5);

/// Whether a submission's schedule fits the stored form: its 36 slots (and the grace after the last) before the
/// end of year 9999, the last instant with an RFC 3339 form, and its submitted_at in year 1 or later. A "held"
/// sentinel such as `9999-12-31T23:59:59Z` does not: its first slot would be in year 10000. The times of a
/// submission out of range are never computed.
pub fn in_range(submitted_at: DateTime<Utc>) -> bool {
    // In Unix seconds (checked for every message read or due): 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const FIRST: i64 = -62_135_596_800;
    const LAST: i64 = 253_402_300_799;
    let latest = LAST - (INTERVAL * SLOTS as i32 + GRACE).num_seconds();
    (FIRST..=latest).contains(&submitted_at.timestamp())
}

/// The time of slot `k` (1-based) of a message.
pub fn slot(submitted_at: DateTime<Utc>, k: i64) -> DateTime<Utc> {
    submitted_at + INTERVAL * k as i32
}

/// When a newly seen message is first due.
pub fn first_due(submitted_at: DateTime<Utc>) -> DateTime<Utc> {
    slot(submitted_at, 1)
}

/// Every slot at or before this instant is due in a cycle at `now`.
pub fn cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    now + GRACE
}

/// What becomes of a message after a poll at `now` that reported `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Still pending: poll again at this slot.
    DueAt(DateTime<Utc>),
    /// DELIVERED or FAILED: tracking ends with that status.
    Final(DeliveryStatus),
    /// Still pending after the poll that covered the +72h slot: tracking ends without a confirmation.
    Unconfirmed,
}

/// Decides the next step for a message polled at `now`.
pub fn after_poll(submitted_at: DateTime<Utc>, now: DateTime<Utc>, status: DeliveryStatus) -> Next {
    if status.is_final() {
        return Next::Final(status);
    }
    match next_slot_after(submitted_at, cutoff(now)) {
        Some(at) => Next::DueAt(at),
        None => Next::Unconfirmed,
    }
}

/// Whether a message's last slot (+72h) is due at `now`: a poll now would be its last, and a message that cannot
/// be polled now is closed without an answer.
pub fn past_last_slot(submitted_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    slot(submitted_at, SLOTS) <= cutoff(now)
}

/// The first slot strictly after `t`, or `None` when `t` is at or past the last slot.
fn next_slot_after(submitted_at: DateTime<Utc>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let elapsed = (t - submitted_at).num_milliseconds();
    let k = elapsed.div_euclid(INTERVAL.num_milliseconds()).max(0) + 1;
    (k <= SLOTS).then(|| slot(submitted_at, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn is_due(next_due: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        next_due <= cutoff(now)
    }

    const SUBMITTED: &str = "2025-12-01T09:00:00Z";

    #[test]
    fn the_last_slot_is_past_from_72_hours_on() {
        let submitted = t(SUBMITTED);
        assert!(!past_last_slot(submitted, t("2025-12-04T08:54:59Z")));
        assert!(past_last_slot(submitted, t("2025-12-04T08:55:00Z")));
        assert!(past_last_slot(submitted, t("2025-12-10T00:00:00Z")));
        // The same instant at which a pending poll closes the message.
        assert_eq!(
            after_poll(submitted, t("2025-12-04T08:55:00Z"), Pending),
            Next::Unconfirmed
        );
        assert_ne!(
            after_poll(submitted, t("2025-12-04T08:54:59Z"), Pending),
            Next::Unconfirmed
        );
    }

    #[test]
    fn a_schedule_past_year_9999_is_out_of_range() {
        assert!(in_range(t(SUBMITTED)));
        assert!(in_range(t("9999-12-28T23:54:59Z")));
        assert!(!in_range(t("9999-12-28T23:55:00Z")));
        assert!(!in_range(t("9999-12-31T23:59:59Z")));
        assert!(in_range(t("0001-01-01T00:00:00Z")));
        assert!(!in_range(t("0000-12-31T23:59:59Z")));
    }

    #[test]
    fn first_poll_is_two_hours_after_submission() {
        assert_eq!(first_due(t(SUBMITTED)), t("2025-12-01T11:00:00Z"));
        assert_eq!(slot(t(SUBMITTED), 36), t("2025-12-04T09:00:00Z"));
    }

    #[test]
    fn on_time_poll_moves_to_the_next_slot() {
        let next = after_poll(t(SUBMITTED), t("2025-12-01T11:00:00Z"), Pending);
        assert_eq!(next, Next::DueAt(t("2025-12-01T13:00:00Z")));
    }

    #[test]
    fn early_cron_within_grace_polls_and_keeps_the_grid() {
        let first = first_due(t(SUBMITTED));
        assert!(is_due(first, t("2025-12-01T10:56:00Z")));
        assert!(is_due(first, t("2025-12-01T10:55:00Z")));
        assert!(!is_due(first, t("2025-12-01T10:54:59Z")));
        let next = after_poll(t(SUBMITTED), t("2025-12-01T10:56:00Z"), Pending);
        assert_eq!(next, Next::DueAt(t("2025-12-01T13:00:00Z")));
    }

    #[test]
    fn submission_seconds_after_the_hour_is_due_at_the_hour() {
        let submitted = t("2025-12-01T09:00:30Z");
        assert!(is_due(first_due(submitted), t("2025-12-01T11:00:00Z")));
        let next = after_poll(submitted, t("2025-12-01T11:00:00Z"), Pending);
        assert_eq!(next, Next::DueAt(t("2025-12-01T13:00:30Z")));
    }

    #[test]
    fn late_cron_polls_and_keeps_the_grid() {
        let next = after_poll(t(SUBMITTED), t("2025-12-01T11:40:00Z"), Pending);
        assert_eq!(next, Next::DueAt(t("2025-12-01T13:00:00Z")));
    }

    #[test]
    fn missed_runs_collapse_into_one_poll() {
        // The job was down for eleven hours: slots 11:00 .. 19:00 are covered by one poll at 20:00.
        let next = after_poll(t(SUBMITTED), t("2025-12-01T20:00:00Z"), Pending);
        assert_eq!(next, Next::DueAt(t("2025-12-01T21:00:00Z")));
        // A poll inside the grace of a slot covers that slot too.
        let next = after_poll(t(SUBMITTED), t("2025-12-01T20:57:00Z"), Pending);
        assert_eq!(next, Next::DueAt(t("2025-12-01T23:00:00Z")));
    }

    #[test]
    fn thirty_minute_cron_polls_only_on_the_two_hour_grid() {
        let submitted = t(SUBMITTED);
        let mut next_due = first_due(submitted);
        let mut polls = Vec::new();
        let mut now = t("2025-12-01T09:00:00Z");
        while now <= t("2025-12-02T09:00:00Z") {
            if is_due(next_due, now) {
                polls.push(now);
                match after_poll(submitted, now, Pending) {
                    Next::DueAt(at) => next_due = at,
                    other => panic!("unexpected {other:?}"),
                }
            }
            now += TimeDelta::minutes(30);
        }
        assert_eq!(polls.len(), 12);
        for (k, at) in polls.iter().enumerate() {
            assert_eq!(*at, slot(submitted, k as i64 + 1));
        }
    }

    #[test]
    fn final_statuses_end_tracking() {
        let now = t("2025-12-01T11:00:00Z");
        assert_eq!(
            after_poll(t(SUBMITTED), now, Delivered),
            Next::Final(Delivered)
        );
        assert_eq!(after_poll(t(SUBMITTED), now, Failed), Next::Final(Failed));
    }

    #[test]
    fn pending_after_the_72h_slot_is_unconfirmed() {
        let submitted = t(SUBMITTED);
        let at_35 = after_poll(submitted, slot(submitted, 35), Pending);
        assert_eq!(at_35, Next::DueAt(slot(submitted, 36)));
        assert_eq!(
            after_poll(submitted, slot(submitted, 36), Pending),
            Next::Unconfirmed
        );
        // The 72h slot is covered by a poll within the grace before it, too.
        let early = slot(submitted, 36) - TimeDelta::minutes(3);
        assert_eq!(after_poll(submitted, early, Pending), Next::Unconfirmed);
        // A message first seen long after its window gets one poll, then closes.
        assert_eq!(
            after_poll(submitted, t("2026-01-01T00:00:00Z"), Pending),
            Next::Unconfirmed
        );
    }

    #[test]
    fn full_grid_is_36_polls() {
        let submitted = t(SUBMITTED);
        let mut now = first_due(submitted);
        let mut polls = 1;
        while let Next::DueAt(at) = after_poll(submitted, now, Pending) {
            assert_eq!(at, now + INTERVAL);
            now = at;
            polls += 1;
        }
        assert_eq!(polls, 36);
    }

    #[test]
    fn poll_before_the_first_slot_keeps_the_first_slot() {
        // A clock that runs behind the submission time: nothing is skipped.
        let next = after_poll(t(SUBMITTED), t("2025-12-01T08:00:00Z"), Pending);
        assert_eq!(next, Next::DueAt(t("2025-12-01T11:00:00Z")));
    }
}
