//! The cycle summary: the counts a cycle reports on stderr, on stdout with `--json`, and in the cycles table.

use serde::Serialize;

use crate::phases::Phases;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub cycle_id: i64,
    /// Wall clock, RFC 3339.
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_seconds: f64,
    /// The clock the schedule used (`--now` when given).
    pub cycle_now: String,
    pub outcome: String,
    pub exit_code: Option<u8>,
    pub messages_due: u64,
    pub polled: u64,
    pub delivered: u64,
    pub failed: u64,
    /// FAILED results of this cycle by failure category (INVALID_NUMBER, NETWORK_ERROR, ...).
    pub failed_by_category: std::collections::BTreeMap<String, u64>,
    pub pending: u64,
    pub closed_unconfirmed: u64,
    pub unknown_statuses: u64,
    pub not_found: u64,
    pub batches_ok: u64,
    pub batches_failed: u64,
    /// Messages a batch listing reported more than once (the first report counts).
    pub duplicate_reports: u64,
    /// Listing entries that could not be read (their messages were asked for one by one).
    pub malformed_reports: u64,
    /// One-by-one lookups (messages without a batch, or missing from their batch listing) that failed.
    pub lookups_failed: u64,
    /// Messages the carrier refused to answer about (a 400, 410, 422... or an answer about another id): the
    /// carrier did answer, so they count as polled, with the refusal as the result.
    pub lookups_rejected: u64,
    /// Messages closed after their +72h slot without an answer (the carrier kept failing).
    pub closed_unanswered: u64,
    /// New submissions first seen after their tracking window (72h + --catch-up): recorded, never polled.
    pub too_old: u64,
    pub http_requests: u64,
    pub retries: u64,
    pub new_submissions: u64,
    pub invalid_submissions: u64,
    pub error: Option<String>,
    /// Messages due at the cycle's cutoff and not polled when it ended: how far behind its grid it left the
    /// poller (tracked messages still open, new ones read and left without a result; new submissions a stopped
    /// cycle did not read are not counted).
    pub overdue: u64,
    /// How long the oldest of them had been due when the cycle ended, in seconds (0: none).
    pub lag_seconds: u64,
    /// Jobs whose bulk question failed and whose messages were asked the per-message way.
    pub bulk_fallbacks: u64,
    /// Messages asked the per-message way because their bulk question failed or its answer lacked them.
    pub asked_alone: u64,
    /// 1 when the cycle stopped falling back (the carrier failed per-message questions too), else 0.
    pub fallback_stopped: u64,
    /// Where the cycle's time went, by phase (this run's; not kept in `poll_cycles`).
    #[serde(skip_serializing_if = "Phases::is_empty")]
    pub phases: Phases,
}

/// A count of a cycle that `poll_cycles` keeps, in a column named as the field.
pub struct Counter {
    pub column: &'static str,
    pub get: fn(&Summary) -> u64,
    pub set: fn(&mut Summary, u64),
}

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        /// The counts `poll_cycles` keeps, one column each: the one list both backends write and read. Adding a
        /// counter is a field of [`Summary`], its name here, and its column in both schemas (with a migration
        /// each).
        pub const COUNTERS: &[Counter] = &[$(Counter {
            column: stringify!($field),
            get: |s| s.$field,
            set: |s, v| s.$field = v,
        }),*];
    };
}

counters!(
    messages_due,
    polled,
    delivered,
    failed,
    pending,
    closed_unconfirmed,
    unknown_statuses,
    not_found,
    batches_ok,
    batches_failed,
    http_requests,
    retries,
    new_submissions,
    invalid_submissions,
    lookups_failed,
    duplicate_reports,
    malformed_reports,
    too_old,
    closed_unanswered,
    lookups_rejected,
    overdue,
    lag_seconds,
    bulk_fallbacks,
    asked_alone,
    fallback_stopped,
);

impl Summary {
    /// Messages whose due poll is settled: polled, or closed without an answer.
    pub fn settled(&self) -> u64 {
        self.polled + self.closed_unanswered
    }

    /// Settled messages as a share of due ones; 1 when nothing was due.
    pub fn success_rate(&self) -> f64 {
        if self.messages_due == 0 {
            1.0
        } else {
            self.settled() as f64 / self.messages_due as f64
        }
    }

    /// The one-line form logged at the end of a cycle.
    pub fn line(&self) -> String {
        format!(
            "cycle {} {}: {} due, {} polled ({} delivered, {} failed, {} pending, {} closed unconfirmed, \
             {} not found, {} refused, {} unknown statuses), {} closed unanswered, {} too old to track, {} batches ok, \
             {} failed, {} lookups failed, {} HTTP requests, {} retries, {:.1}s",
            self.cycle_id,
            self.outcome,
            self.messages_due,
            self.polled,
            self.delivered,
            self.failed,
            self.pending,
            self.closed_unconfirmed,
            self.not_found,
            self.lookups_rejected,
            self.unknown_statuses,
            self.closed_unanswered,
            self.too_old,
            self.batches_ok,
            self.batches_failed,
            self.lookups_failed,
            self.http_requests,
            self.retries,
            self.duration_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_rate_is_polled_over_due() {
        let mut s = Summary {
            messages_due: 4,
            polled: 3,
            ..Summary::default()
        };
        assert_eq!(s.success_rate(), 0.75);
        s.messages_due = 0;
        s.polled = 0;
        assert_eq!(s.success_rate(), 1.0);
    }
}
